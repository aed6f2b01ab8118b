//! permessage-deflate (RFC 7692) on the generator's side (issue #15, the compressed
//! fanout benchmark): the offer its connections make, and inflating the server's
//! compressed (RSV1) messages.
//!
//! Deliberately independent of the server's own `crate::deflate` (only flate2 is
//! shared), so a run checks the server's frames against a second reading of the RFC: each
//! message's compressed payload is raw deflate whose final empty stored block
//! (`00 00 ff ff`) the sender left off; it is put back before inflating. Without a server
//! context every message is a fresh stream and one inflater per thread serves every
//! connection; with one, a connection keeps its own.
//!
//! Without a context, inflating is a pure function of the compressed bytes, and on the
//! server's shared path every subscriber gets the very same bytes: the thread keeps the
//! last few hundred small messages it inflated, keyed by their exact compressed bytes, so
//! a fanout to 1,000 subscribers inflates each message once rather than 1,000 times and
//! the generator does not become the bottleneck (fanout 1k at max rate, noisy shared
//! machine: 0.35 µs of generator CPU per delivery inflating every one, 0.15 µs with
//! this cache, 0.11 µs for plain frames).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;

use flate2::{Decompress, FlushDecompress, Status};

/// The tail a sync flush ends with, left off the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Messages kept inflated per thread (the cache is emptied when full).
const CACHE_ENTRIES: usize = 512;
/// Largest compressed message kept, and largest inflated one.
const CACHE_INPUT_MAX: usize = 2048;
const CACHE_OUTPUT_MAX: usize = 16 * 1024;

thread_local! {
    /// The inflater of every connection whose server keeps no context (reset per message).
    static SHARED: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    /// Context-free messages inflated lately: compressed bytes -> inflated bytes.
    static CACHE: RefCell<HashMap<Vec<u8>, Vec<u8>>> = RefCell::default();
}

/// What the connections offer in `Sec-WebSocket-Extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Offer {
    /// `server_no_context_takeover` offered: the server compresses every message on its
    /// own, once for all such subscribers (its shared compress-once path).
    Shared,
    /// No `server_no_context_takeover`: a server that lets clients keep contexts
    /// (`--compression-context-takeover`) compresses per connection with its own context.
    Context,
}

impl Offer {
    /// The `Sec-WebSocket-Extensions` request header's value. The client never sends a
    /// compressed message, so it asks the server to keep no context of its own.
    pub fn header(self) -> &'static str {
        match self {
            Offer::Shared => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            }
            Offer::Context => "permessage-deflate; client_no_context_takeover",
        }
    }

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Offer::Shared => "shared",
            Offer::Context => "context",
        }
    }
}

/// What a server answered to an offer: `Some(keeps_context)` when it accepted
/// permessage-deflate, from the `Sec-WebSocket-Extensions` value of its 101 response.
pub fn accepted(response: &str) -> Option<bool> {
    let mut params = response.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    Some(!params.any(|p| p.eq_ignore_ascii_case("server_no_context_takeover")))
}

/// Inflates one connection's compressed messages into a buffer it reuses.
#[derive(Debug)]
pub struct Inflate {
    /// The connection's own inflater when the server keeps its context.
    own: Option<Box<Decompress>>,
    out: Vec<u8>,
    max: usize,
}

impl Inflate {
    /// An inflater for a connection whose server keeps its context (`keep`) or not;
    /// messages may inflate to at most `max` bytes.
    pub fn new(keep: bool, max: usize) -> Self {
        Inflate {
            own: keep.then(|| Box::new(Decompress::new(false))),
            out: Vec::new(),
            max,
        }
    }

    /// Inflates one message's compressed payload (its frames' payloads joined).
    pub fn inflate(&mut self, input: &[u8]) -> io::Result<&[u8]> {
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            // Do not keep a big message's buffer behind every connection.
            self.out = Vec::new();
        }
        let (out, max) = (&mut self.out, self.max);
        match &mut self.own {
            Some(d) => run(d, input, out, max)?,
            None => {
                let hit = CACHE.with(|c| c.borrow().get(input).map(|o| out.extend_from_slice(o)));
                if hit.is_none() {
                    SHARED.with(|d| {
                        let mut d = d.borrow_mut();
                        d.reset(false);
                        run(&mut d, input, out, max)
                    })?;
                    if input.len() <= CACHE_INPUT_MAX && out.len() <= CACHE_OUTPUT_MAX {
                        CACHE.with(|c| {
                            let mut c = c.borrow_mut();
                            if c.len() >= CACHE_ENTRIES {
                                c.clear();
                            }
                            c.insert(input.to_vec(), out.clone());
                        });
                    }
                }
            }
        }
        Ok(&self.out)
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Inflates `input` and the tail into `out`, at most `max` bytes.
fn run(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>, max: usize) -> io::Result<()> {
    for chunk in [input, &TAIL[..]] {
        let start = d.total_in();
        loop {
            if out.capacity() - out.len() < 256 {
                if out.len() > max {
                    return Err(corrupt("compressed message inflates past the limit"));
                }
                out.reserve(out.len().max(1024));
            }
            let before = (d.total_in(), d.total_out());
            let used = (d.total_in() - start) as usize;
            let status = d
                .decompress_vec(&chunk[used..], out, FlushDecompress::Sync)
                .map_err(|e| corrupt(&format!("bad deflate data: {e}")))?;
            if status == Status::StreamEnd {
                // A final block ended the stream: the next message starts a new one.
                d.reset(false);
                return Ok(());
            }
            let used = (d.total_in() - start) as usize;
            if used == chunk.len() && out.len() < out.capacity() {
                break;
            }
            if (d.total_in(), d.total_out()) == before && out.len() < out.capacity() {
                return Err(corrupt("deflate data makes no progress"));
            }
        }
    }
    if out.len() > max {
        return Err(corrupt("compressed message inflates past the limit"));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// `data` deflated with a sync flush and the tail taken off, as a sender does.
    pub fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    #[test]
    fn messages_inflate_with_and_without_a_context() {
        let msg = b"00 0000000001 1700000000000000000 abcdefghijklmnopqrstuvwxyzabcdefghijkl";
        // No context: every message compressed afresh.
        let mut inflate = Inflate::new(false, 1 << 20);
        for _ in 0..3 {
            let mut c = Compress::new(Compression::default(), false);
            let z = deflate(&mut c, msg);
            assert!(z.len() < msg.len());
            assert_eq!(inflate.inflate(&z).unwrap(), msg);
        }
        // A context: later messages refer back to earlier ones.
        let mut c = Compress::new(Compression::default(), false);
        let mut inflate = Inflate::new(true, 1 << 20);
        let (a, b) = (deflate(&mut c, msg), deflate(&mut c, msg));
        assert!(b.len() < a.len() / 2);
        assert_eq!(inflate.inflate(&a).unwrap(), msg);
        assert_eq!(inflate.inflate(&b).unwrap(), msg);
    }

    // The per-thread cache of context-free messages gives back exactly what inflating
    // gives, for every message, however many there are.
    #[test]
    fn cached_messages_inflate_exactly() {
        let messages: Vec<Vec<u8>> = (0..2000)
            .map(|i| {
                format!("{i:02} {i:010} 1700000000000000000 abcdefghijklmnopqrstuvwxyz")
                    .into_bytes()
            })
            .collect();
        let compressed: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| deflate(&mut Compress::new(Compression::default(), false), m))
            .collect();
        let mut inflate = Inflate::new(false, 1 << 20);
        for round in 0..3 {
            for (m, z) in messages.iter().zip(&compressed) {
                assert_eq!(inflate.inflate(z).unwrap(), &m[..], "round {round}");
            }
        }
        assert!(CACHE.with(|c| c.borrow().len()) <= CACHE_ENTRIES);
        assert!(
            inflate.inflate(&[0xff, 0xff]).is_err(),
            "errors are not cached"
        );
        assert!(inflate.inflate(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn big_bad_and_final_messages() {
        let big = vec![b'x'; 300_000];
        let mut c = Compress::new(Compression::default(), false);
        let z = deflate(&mut c, &big);
        assert_eq!(Inflate::new(false, 1 << 20).inflate(&z).unwrap(), &big[..]);
        assert!(Inflate::new(false, 1000).inflate(&z).is_err(), "a bomb");
        assert!(Inflate::new(false, 1000).inflate(&[0xff, 0xff]).is_err());
        // A sender may end a message with a final block (and then a new stream).
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(128);
        c.compress_vec(b"hello", &mut z, FlushCompress::Finish)
            .unwrap();
        let mut inflate = Inflate::new(true, 100);
        assert_eq!(inflate.inflate(&z).unwrap(), b"hello");
        assert_eq!(inflate.inflate(&z).unwrap(), b"hello");
    }

    #[test]
    fn answers_are_read() {
        assert_eq!(
            accepted("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            Some(false)
        );
        assert_eq!(accepted("permessage-deflate"), Some(true));
        assert_eq!(accepted("x-webkit-deflate-frame"), None);
        assert_eq!(accepted(""), None);
    }
}
