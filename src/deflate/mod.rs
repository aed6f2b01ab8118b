//! permessage-deflate (RFC 7692) on top of the frame codec: the handshake
//! ([`negotiate`]), compressing server frames (once per message for every connection
//! whose server keeps no context, [`compress_shared`]; or through one connection's own
//! compressor, [`Deflate::compress_own`]), and inflating client messages with the output
//! bounded by the message size limit ([`Inflater`]). Raw deflate is flate2's (zlib-rs).
//!
//! Memory: with `server_no_context_takeover` (the default answer) a connection keeps no
//! compressor: each thread keeps one per window size, reset for every message. With
//! context takeover a connection's compressor is made at its first compressed message
//! and lives as long as the connection (about 2^(w+2) + 192 KiB at window w: zlib's
//! window, hash chains, hash heads and symbol buffer). Inflating: with
//! `client_no_context_takeover` each thread keeps one inflater (about 40 KiB), otherwise
//! a connection makes its own at its first compressed message (the same 40 KiB, a 32 KiB
//! window at most). The inflated message is bounded by `max_message_size`.

mod negotiate;

pub use negotiate::{negotiate, Agreed, Settings};

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use parking_lot::Mutex;

/// Smallest window the server compresses with (raw deflate cannot use 8).
pub const MIN_WINDOW_BITS: u8 = 9;
/// Largest window (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;
/// The empty stored block a sync flush ends with, left off the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// The compression level: zlib's default (6).
const LEVEL: u32 = 6;
/// Frame header bits of a final compressed message (FIN, RSV1).
const FIN_RSV1: u8 = 0xC0;
/// Opcodes of the frames compressed (this module sits below the frame codec, which
/// uses it to inflate).
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
/// Largest server frame header.
const MAX_HEADER: usize = 10;

thread_local! {
    /// This thread's compressors for shared frames, by window bits (9..=15).
    static SHARED: RefCell<[Option<Compress>; 7]> = RefCell::default();
    /// This thread's inflater for clients without context takeover.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A connection's permessage-deflate state: what it agreed, and its own compressor when
/// the server keeps its context between messages.
pub struct Deflate {
    /// The agreed parameters.
    pub agreed: Agreed,
    /// The connection's compressor (context takeover only), made at its first message.
    context: Mutex<Option<Compress>>,
}

impl fmt::Debug for Deflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflate")
            .field("agreed", &self.agreed)
            .finish()
    }
}

impl Deflate {
    /// The state of a connection that agreed on `agreed`.
    pub fn new(agreed: Agreed) -> Self {
        Deflate {
            agreed,
            context: Mutex::new(None),
        }
    }

    /// The window bits of its shared frames, when it takes them (the server keeps no
    /// context for it).
    pub fn shared_bits(&self) -> Option<u8> {
        self.agreed
            .server_no_context_takeover
            .then_some(self.agreed.server_window_bits)
    }

    /// Compresses `frame` with the connection's own compressor and hands the result to
    /// `push` while still holding it, so frames are queued in the order their context
    /// was built. The second value is true when a deflate ran.
    pub fn compress_own<R>(&self, frame: &Bytes, push: impl FnOnce(Bytes) -> R) -> (R, bool) {
        let mut context = self.context.lock();
        let compressor = context.get_or_insert_with(|| {
            Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                self.agreed.server_window_bits,
            )
        });
        match compress_frame(frame, compressor) {
            Some(compressed) => (push(compressed), true),
            None => (push(frame.clone()), false),
        }
    }
}

impl Deflate {
    /// Compresses a frame meant for this connection alone (a reply, an echo) and hands
    /// it to `push`: with this thread's shared compressor, or the connection's own
    /// compressor (in order) when it keeps a context.
    pub fn compress_reply<R>(&self, frame: &Bytes, push: impl FnOnce(Bytes) -> R) -> R {
        match self.shared_bits() {
            Some(bits) => push(compress_shared(frame, bits)),
            None => self.compress_own(frame, push).0,
        }
    }
}

/// The compressed form of a server frame for every connection with no server context
/// and a window of `bits` (a frame that is not a whole data frame, or that deflate does
/// not shrink, is returned as is).
pub fn compress_shared(frame: &Bytes, bits: u8) -> Bytes {
    let bits = bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    SHARED.with(|all| {
        let mut all = all.borrow_mut();
        let slot = &mut all[usize::from(bits - MIN_WINDOW_BITS)];
        let compressor = match slot {
            Some(c) => {
                c.reset();
                c
            }
            None => slot.insert(Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                bits,
            )),
        };
        // Without a context a message may go plain (RSV1 clear) when deflate does not
        // make it smaller (short messages), at no cost to later ones.
        match compress_frame(frame, compressor) {
            Some(compressed) if compressed.len() < frame.len() => compressed,
            _ => frame.clone(),
        }
    })
}

/// The payload range of a whole, final, unmasked text or binary server frame.
fn data_payload(frame: &[u8]) -> Option<(u8, usize)> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    let opcode = b0 & 0x0f;
    if b0 & 0xf0 != 0x80 || !(opcode == OP_TEXT || opcode == OP_BINARY) || b1 & 0x80 != 0 {
        return None;
    }
    let header = match b1 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (frame.len() >= header).then_some((opcode, header))
}

/// Deflates the payload of a data frame into a new frame with RSV1 set.
fn compress_frame(frame: &[u8], compressor: &mut Compress) -> Option<Bytes> {
    let (opcode, header) = data_payload(frame)?;
    let input = &frame[header..];
    // Room for the header in front, so the frame is built without a copy.
    let mut out = Vec::with_capacity(MAX_HEADER + input.len() / 2 + 64);
    out.resize(MAX_HEADER, 0);
    let start_in = compressor.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let used = (compressor.total_in() - start_in) as usize;
        compressor
            .compress_vec(&input[used..], &mut out, FlushCompress::Sync)
            .expect("deflating into memory does not fail");
        let used = (compressor.total_in() - start_in) as usize;
        // A sync flush is complete once every byte is in and output room is left.
        if used == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    debug_assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    let len = out.len() - MAX_HEADER;
    let at = match len {
        0..=125 => {
            out[MAX_HEADER - 1] = len as u8;
            MAX_HEADER - 2
        }
        126..=0xffff => {
            out[MAX_HEADER - 3] = 126;
            out[MAX_HEADER - 2..MAX_HEADER].copy_from_slice(&(len as u16).to_be_bytes());
            MAX_HEADER - 4
        }
        _ => {
            out[1] = 127;
            out[2..MAX_HEADER].copy_from_slice(&(len as u64).to_be_bytes());
            0
        }
    };
    out[at] = FIN_RSV1 | opcode;
    let frame = if out.capacity() > out.len() + out.len() / 4 + 64 {
        // Do not keep a mostly empty allocation queued behind every subscriber.
        Bytes::copy_from_slice(&out[at..])
    } else {
        Bytes::from(out).slice(at..)
    };
    Some(frame)
}

/// Why a compressed message cannot be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// It is not valid deflate data.
    Corrupt,
}

/// Inflates a connection's compressed messages.
#[derive(Debug)]
pub struct Inflater {
    /// The client keeps its context: so does this inflater (made at the first message).
    keep: bool,
    context: Option<Box<Decompress>>,
}

impl Inflater {
    /// An inflater for a client that agreed on `client_no_context_takeover` or not.
    pub fn new(client_no_context_takeover: bool) -> Self {
        Inflater {
            keep: !client_no_context_takeover,
            context: None,
        }
    }

    /// Inflates one message (the compressed payloads of its frames, joined); fails
    /// as soon as the output passes `max` bytes, so a bomb costs at most `max`.
    pub fn inflate(&mut self, input: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        if self.keep {
            let d = self
                .context
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            return inflate_with(d, input, max);
        }
        INFLATER.with(|d| {
            let mut d = d.borrow_mut();
            let d = match &mut *d {
                Some(d) => {
                    d.reset(false);
                    d
                }
                None => d.insert(Decompress::new(false)),
            };
            inflate_with(d, input, max)
        })
    }
}

fn inflate_with(d: &mut Decompress, input: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let limit = max.saturating_add(1);
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(256, limit.max(256)));
    for chunk in [input, &TAIL[..]] {
        let (start_in, mut last) = (d.total_in(), (d.total_in(), d.total_out()));
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                let more = out.capacity().max(1024).min(limit - out.len());
                out.reserve_exact(more);
            }
            let used = (d.total_in() - start_in) as usize;
            let status = d
                .decompress_vec(&chunk[used..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                // A final block ends the message's stream: the next one starts afresh.
                d.reset(false);
                return Ok(out);
            }
            let used = (d.total_in() - start_in) as usize;
            if used == chunk.len() && out.len() < out.capacity() {
                break;
            }
            let now = (d.total_in(), d.total_out());
            if now == last && out.len() < out.capacity() {
                return Err(InflateError::Corrupt);
            }
            last = now;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP_PING: u8 = 0x9;

    /// A plain server frame (the codec's `frame::encode`, which sits above this module).
    fn encode(opcode: u8, payload: &[u8]) -> Bytes {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        Bytes::from(f)
    }

    /// The payload of an unmasked server frame.
    fn payload(frame: &[u8]) -> &[u8] {
        match frame[1] {
            126 => &frame[4..],
            127 => &frame[10..],
            _ => &frame[2..],
        }
    }

    fn inflate_frame(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0xf0, 0xc0, "FIN and RSV1");
        let mut inflater = Inflater::new(true);
        let data = inflater.inflate(payload(frame), 1 << 20).unwrap();
        (frame[0] & 0x0f, data)
    }

    #[test]
    fn shared_frames_inflate_back_for_every_window() {
        let json =
            br#"{"rows":[{"symbol":"ACME","price":101.5},{"symbol":"ACME","price":101.75}]}"#;
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            for payload in [&json[..], &[7u8; 70_000][..]] {
                let frame = compress_shared(&encode(OP_TEXT, payload), bits);
                assert_eq!(inflate_frame(&frame), (OP_TEXT, payload.to_vec()), "{bits}");
            }
        }
    }

    #[test]
    fn a_connection_context_shrinks_repeated_messages() {
        let agreed = negotiate(
            ["permessage-deflate"].into_iter(),
            Settings {
                window_bits: 15,
                context_takeover: true,
            },
        )
        .unwrap();
        let deflate = Deflate::new(agreed);
        assert_eq!(deflate.shared_bits(), None);
        let frame = encode(
            OP_BINARY,
            br#"{"symbol":"ACME","price":101.5,"volume":1200}"#,
        );
        let (first, _) = deflate.compress_own(&frame, |f| f);
        let (second, ran) = deflate.compress_own(&frame, |f| f);
        assert!(ran);
        assert!(second.len() < first.len() / 2, "{second:?} {first:?}");
        let mut inflater = Inflater::new(false);
        for f in [&first, &second] {
            assert_eq!(inflater.inflate(payload(f), 1000).unwrap(), payload(&frame));
        }
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let bomb = compress_shared(&encode(OP_BINARY, &vec![0u8; 1 << 20]), 15);
        let mut inflater = Inflater::new(true);
        assert_eq!(
            inflater.inflate(payload(&bomb), 1000),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Corrupt)
        );
        let control = encode(OP_PING, b"x");
        assert_eq!(compress_shared(&control, 15), control);
        // Too short to shrink: sent plain.
        let short = encode(OP_TEXT, br#"{"id":1,"ok":true}"#);
        assert_eq!(compress_shared(&short, 15), short);
    }
}
