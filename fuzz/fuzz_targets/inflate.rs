//! The frame decoder of a connection that negotiated permessage-deflate (issue #15 part
//! 2), fed client streams whose compressed messages (RSV1) hold arbitrary deflate data:
//! bombs, corrupt blocks, final blocks, fragments.
//!
//! Input: `max` (2 bytes, big-endian; `max_message` is `max + 1`), `flags` (1 byte: bit 0
//! = the client keeps its context), then the client's byte stream, fed in one piece.
//!
//! Invariants: it never panics; no message it yields is larger than `max_message` after
//! inflation; and between feeds the decoder holds a bounded heap (a few `max_message`
//! plus the inflater's state and window).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;
use wspush::deflate::Inflater;
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

/// Heap an inflater may keep (zlib-rs state and a 32 KiB window, with slack).
const INFLATER: usize = 128 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = usize::from(u16::from_be_bytes([data[0], data[1]])) + 1;
    let keep = data[2] & 1 != 0;
    let mut stream = data[3..].to_vec();
    let base = LIVE.load(Relaxed);
    let mut decoder = Decoder::new(max).with_inflater(Inflater::new(!keep));
    let mut events = Vec::new();
    let result = decoder.feed(&mut stream, &mut events);
    for event in &events {
        if let Incoming::Text(m) | Incoming::Binary(m) = event {
            assert!(m.len() <= max, "a {}-byte message past max_message {max}", m.len());
        }
    }
    drop(events);
    if result.is_ok() {
        let held = LIVE.load(Relaxed).saturating_sub(base);
        assert!(
            held <= 4 * max + stream.len() + INFLATER,
            "the decoder holds {held} bytes of heap with max_message {max}"
        );
    }
});
