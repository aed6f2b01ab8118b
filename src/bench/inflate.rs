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

use std::cell::RefCell;
use std::io;

use flate2::{Decompress, FlushDecompress, Status};

/// The tail a sync flush ends with, left off the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

thread_local! {
    /// The inflater of every connection whose server keeps no context (reset per message).
    static SHARED: RefCell<Decompress> = RefCell::new(Decompress::new(false));
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
            None => SHARED.with(|d| {
                let mut d = d.borrow_mut();
                d.reset(false);
                run(&mut d, input, out, max)
            })?,
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
