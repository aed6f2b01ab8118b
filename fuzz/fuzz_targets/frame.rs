//! The WebSocket frame decoder fed whole frame sequences (fragments, control frames,
//! lengths that lie, unmasked or reserved bits), split at arbitrary points, the way a
//! session feeds it (first bytes through `preload`, the rest one read at a time).
//!
//! Input: `max` (2 bytes, big-endian; `max_message` is `max + 1`), `flags` (1 byte:
//! bit 0 = preload the first piece), `seed` (2 bytes: the sizes of the pieces, 0 = one
//! piece), then the client's byte stream. The seeds in `fuzz/corpus/frame` are made by
//! `fuzz/seeds.py`.
//!
//! Invariants: it never panics; between reads it never holds more than a few times
//! `max_message` of heap (measured with a counting allocator, so no accessor is needed:
//! a `Vec` that grew by doubling may hold up to twice its bytes); once the stream holds
//! the header of a data frame that takes its message past `max_message`, the decoder
//! has failed (`TooBig`, or an error or close that came earlier); and it never says
//! `TooBig` of a stream whose messages all fit.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;
use wspush::frame::Violation;
use wspush::frame::{Decoder, Incoming};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Largest piece fed at once (a session reads at most 64 KiB).
const MAX_CHUNK: usize = 1024;

/// A frame header as RFC 6455 lays it out, read by this target's own parser.
struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    len: u64,
    /// Offset in the stream where the header ends.
    end: usize,
}

/// Every frame header in the stream, in order (the last one's payload may be cut off).
fn headers(stream: &[u8]) -> Vec<Header> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while stream.len() - pos >= 2 {
        let (b0, b1) = (stream[pos], stream[pos + 1]);
        let masked = b1 & 0x80 != 0;
        let (len, ext) = match b1 & 0x7f {
            126 if stream.len() - pos >= 4 => {
                let b = [stream[pos + 2], stream[pos + 3]];
                (u64::from(u16::from_be_bytes(b)), 2)
            }
            127 if stream.len() - pos >= 10 => {
                let b: [u8; 8] = stream[pos + 2..pos + 10].try_into().unwrap();
                (u64::from_be_bytes(b), 8)
            }
            126 | 127 => break,
            l => (u64::from(l), 0),
        };
        let end = pos + 2 + ext + if masked { 4 } else { 0 };
        if end > stream.len() {
            break;
        }
        out.push(Header {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0xf,
            masked,
            len,
            end,
        });
        match usize::try_from(len).ok().and_then(|l| end.checked_add(l)) {
            Some(next) if next <= stream.len() => pos = next,
            _ => break,
        }
    }
    out
}

/// What the stream, read frame by frame, must do.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Every frame is one the decoder takes in stride and no message gets too big.
    NoTooBig,
    /// Fail by this offset: the end of the header of the first data frame that takes a
    /// message past `max_message`, after frames the decoder takes in stride (invalid
    /// UTF-8 may end the stream sooner).
    FailBy(usize),
    /// A frame the decoder refuses or closes on comes first.
    Unknown,
}

fn expect(headers: &[Header], max: usize) -> Expect {
    let mut open: Option<u128> = None;
    for h in headers {
        let len = u128::from(h.len);
        if h.rsv != 0 || !h.masked {
            return Expect::Unknown;
        }
        match h.opcode {
            op @ (0 | 1 | 2) => {
                let have = match (op, open) {
                    (0, Some(have)) => have,
                    (0, None) | (1 | 2, Some(_)) => return Expect::Unknown,
                    _ => 0,
                };
                if have + len > max as u128 {
                    return Expect::FailBy(h.end);
                }
                open = (!h.fin).then_some(have + len);
            }
            9 | 10 if h.fin && len <= 125 => {}
            _ => return Expect::Unknown, // close, reserved, or an illegal control frame
        }
    }
    Expect::NoTooBig
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]])) + 1;
    let preload = data[2] & 1 != 0;
    let mut seed = u32::from(u16::from_be_bytes([data[3], data[4]]));
    let mut stream = data[5..].to_vec();
    let expected = expect(&headers(&stream), max);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let size = if seed == 0 {
            stream.len() - at
        } else {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as usize % MAX_CHUNK + 1
        };
        let end = (at + size).min(stream.len());
        pieces.push(at..end);
        at = end;
    }
    let mut decoder = Decoder::new(max);
    let base = LIVE.load(Relaxed);
    for (i, piece) in pieces.into_iter().enumerate() {
        let fed = piece.end;
        let mut events = Vec::new();
        let result = if i == 0 && preload {
            decoder.preload(&stream[piece]);
            decoder.feed(&mut [], &mut events)
        } else {
            decoder.feed(&mut stream[piece], &mut events)
        };
        let closed = events.iter().any(|e| matches!(e, Incoming::Close(_)));
        drop(events);
        if let Err(reason) = result {
            if reason == Violation::TooBig {
                // Only a message past `max` is too big.
                match expected {
                    Expect::NoTooBig => panic!("TooBig, but no message is too big"),
                    Expect::FailBy(d) => assert!(fed >= d, "TooBig at {fed}, before {d}"),
                    Expect::Unknown => {}
                }
            }
            return;
        }
        if closed {
            return;
        }
        let held = LIVE.load(Relaxed).saturating_sub(base);
        assert!(
            held <= 4 * max + 2 * MAX_CHUNK + 4096,
            "the decoder holds {held} bytes of heap with max_message {max}"
        );
        if let Expect::FailBy(d) = expected {
            assert!(
                fed < d,
                "a frame takes the message past {max} bytes at {d}; {fed} bytes fed and no error"
            );
        }
    }
});
