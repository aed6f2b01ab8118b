//! The generator's incremental parser of server WebSocket frames: many frames per read,
//! frames split across reads, fragmented messages assembled, and (when the connection
//! negotiated permessage-deflate) compressed messages inflated (issue #15).

use std::io;

use super::inflate::Inflate;
use crate::frame;

/// Largest server message accepted (compressed, and again inflated).
pub const MAX_MESSAGE: u64 = 64 << 20;

/// RSV1: the message is compressed (RFC 7692).
const RSV1: u8 = 0x40;
/// RSV2 and RSV3: never used.
const RSV23: u8 = 0x30;

/// One event parsed from the server.
pub enum Event<'a> {
    /// A whole data message (inflated when it was compressed).
    Message(&'a [u8]),
    /// A ping and its payload.
    Ping(&'a [u8]),
    /// A close frame.
    Close,
}

/// What a connection's parser keeps between frames.
#[derive(Debug, Default)]
struct State {
    /// The frames so far of a fragmented message, and whether it is compressed.
    fragments: Option<(bool, Vec<u8>)>,
    /// Set when the connection negotiated permessage-deflate.
    inflate: Option<Inflate>,
    /// Compressed messages received.
    inflated: u64,
}

/// Incremental parser of server frames. Holds no bytes between complete frames.
#[derive(Debug, Default)]
pub struct Reader {
    partial: Vec<u8>,
    state: State,
}

impl Reader {
    /// A parser for a connection that negotiated permessage-deflate (or not, `None`).
    pub fn new(inflate: Option<Inflate>) -> Self {
        Reader {
            partial: Vec::new(),
            state: State {
                inflate,
                ..State::default()
            },
        }
    }

    /// Compressed messages received so far.
    pub fn inflated(&self) -> u64 {
        self.state.inflated
    }

    /// Parses `input`, calling `on` for every complete event.
    pub fn feed(&mut self, input: &[u8], on: &mut impl FnMut(Event<'_>)) -> io::Result<()> {
        if self.partial.is_empty() {
            let used = parse(input, &mut self.state, on)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let used = parse(&buf, &mut self.state, on)?;
            buf.drain(..used);
            if !buf.is_empty() || buf.capacity() <= 4096 {
                self.partial = buf;
            }
        }
        Ok(())
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Hands a whole message to `on`, inflated first when it is compressed.
fn message(
    state: &mut State,
    compressed: bool,
    data: &[u8],
    on: &mut impl FnMut(Event<'_>),
) -> io::Result<()> {
    if !compressed {
        on(Event::Message(data));
        return Ok(());
    }
    let inflate = state
        .inflate
        .as_mut()
        .ok_or_else(|| protocol("RSV1 set without permessage-deflate"))?;
    state.inflated += 1;
    on(Event::Message(inflate.inflate(data)?));
    Ok(())
}

/// Parses every complete frame at the start of `buf`; the bytes consumed.
fn parse(buf: &[u8], state: &mut State, on: &mut impl FnMut(Event<'_>)) -> io::Result<usize> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        if rest.len() < 2 {
            return Ok(pos);
        }
        let (b0, b1) = (rest[0], rest[1]);
        if b1 & 0x80 != 0 {
            return Err(protocol("the server sent a masked frame"));
        }
        let (len, header) = match b1 & 0x7f {
            126 if rest.len() < 4 => return Ok(pos),
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as u64, 4),
            127 if rest.len() < 10 => return Ok(pos),
            127 => (
                u64::from_be_bytes(rest[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (n as u64, 2),
        };
        if len > MAX_MESSAGE {
            return Err(protocol("server frame too large"));
        }
        let end = header + len as usize;
        if rest.len() < end {
            return Ok(pos);
        }
        let payload = &rest[header..end];
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let rsv1 = b0 & RSV1 != 0;
        if b0 & RSV23 != 0 || (rsv1 && (opcode & 0x8 != 0 || state.inflate.is_none())) {
            return Err(protocol("reserved bits set"));
        }
        match opcode {
            frame::OP_TEXT | frame::OP_BINARY if state.fragments.is_some() => {
                return Err(protocol("new message inside a fragmented one"))
            }
            frame::OP_TEXT | frame::OP_BINARY if fin => message(state, rsv1, payload, on)?,
            frame::OP_TEXT | frame::OP_BINARY => state.fragments = Some((rsv1, payload.to_vec())),
            0 if rsv1 => return Err(protocol("RSV1 on a continuation frame")),
            0 => {
                let Some((_, data)) = state.fragments.as_mut() else {
                    return Err(protocol("continuation without a message"));
                };
                if (data.len() + payload.len()) as u64 > MAX_MESSAGE {
                    return Err(protocol("server message too large"));
                }
                data.extend_from_slice(payload);
                if fin {
                    let (compressed, data) = state.fragments.take().expect("fragments present");
                    message(state, compressed, &data, on)?;
                }
            }
            frame::OP_PING => on(Event::Ping(payload)),
            frame::OP_PONG => {}
            frame::OP_CLOSE => {
                on(Event::Close);
                return Ok(buf.len());
            }
            _ => return Err(protocol("reserved opcode")),
        }
        pos += end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::inflate::tests::deflate;
    use flate2::{Compress, Compression};

    fn frames_with(reader: &mut Reader, bytes: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader
                .feed(piece, &mut |e| {
                    if let Event::Message(d) = e {
                        got.push(d.to_vec())
                    }
                })
                .unwrap();
        }
        got
    }

    fn frames(bytes: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut reader = Reader::default();
        let got = frames_with(&mut reader, bytes, chunk);
        assert!(reader.partial.is_empty());
        got
    }

    #[test]
    fn parses_many_frames_split_anywhere() {
        let small = vec![b'a'; 100];
        let mid = vec![b'b'; 300];
        let big = vec![b'c'; 70_000];
        let mut stream = Vec::new();
        for p in [&small, &mid, &big, &small] {
            stream.extend_from_slice(&frame::encode(frame::OP_TEXT, p));
        }
        for chunk in [1, 2, 3, 7, 128, 1000, stream.len()] {
            assert_eq!(
                frames(&stream, chunk),
                vec![small.clone(), mid.clone(), big.clone(), small.clone()]
            );
        }
    }

    #[test]
    fn assembles_fragments_and_reports_ping_and_close() {
        let mut first = frame::encode(frame::OP_TEXT, b"hel").to_vec();
        first[0] &= 0x7f;
        let mut stream = first;
        stream.extend_from_slice(&frame::encode(frame::OP_PING, b"p"));
        stream.extend_from_slice(&frame::encode(0, b"lo"));
        stream.extend_from_slice(&frame::close(1001, "bye"));
        let mut events = Vec::new();
        Reader::default()
            .feed(&stream, &mut |e| {
                events.push(match e {
                    Event::Message(d) => format!("msg {}", String::from_utf8_lossy(d)),
                    Event::Ping(d) => format!("ping {}", String::from_utf8_lossy(d)),
                    Event::Close => "close".into(),
                })
            })
            .unwrap();
        assert_eq!(events, ["ping p", "msg hello", "close"]);
    }

    #[test]
    fn rejects_masked_server_frames() {
        let masked = frame::encode_masked(frame::OP_TEXT, b"x", [1, 2, 3, 4]);
        assert!(Reader::default().feed(&masked, &mut |_| {}).is_err());
    }

    /// A server frame with RSV1 set around `payload` (already compressed).
    fn compressed(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = frame::encode(opcode, payload).to_vec();
        f[0] |= RSV1;
        if !fin {
            f[0] &= 0x7f;
        }
        f
    }

    // issue #15: compressed messages (shared and with a context, whole and fragmented,
    // between plain ones) come out inflated, however the stream is split.
    #[test]
    fn inflates_compressed_messages_split_at_every_offset() {
        let a = b"00 0000000001 1700000000000000001 abcdefghijklmnopqrstuvwxyzabcdefghijklmnop";
        let b = b"01 0000000002 1700000000000000002 abcdefghijklmnopqrstuvwxyzabcdefghijklmnop";
        let plain = b"a short plain message";
        for keep in [false, true] {
            let mut c = Compress::new(Compression::default(), false);
            let za = deflate(&mut c, a);
            if !keep {
                // Without a context each message is compressed on its own.
                c.reset();
            }
            let zb = deflate(&mut c, b);
            check(&za, &zb, keep, a, b, plain);
        }

        fn check(za: &[u8], zb: &[u8], keep: bool, a: &[u8], b: &[u8], plain: &[u8]) {
            let mut stream = compressed(frame::OP_TEXT, true, za);
            stream.extend_from_slice(&frame::encode(frame::OP_TEXT, plain));
            // The second one in two fragments: RSV1 on the first only.
            let cut = zb.len() / 2;
            stream.extend_from_slice(&compressed(frame::OP_TEXT, false, &zb[..cut]));
            stream.extend_from_slice(&frame::encode(0, &zb[cut..]));
            let want = vec![a.to_vec(), plain.to_vec(), b.to_vec()];
            for at in 0..=stream.len() {
                let mut reader = Reader::new(Some(Inflate::new(keep, 1 << 20)));
                let mut got = frames_with(&mut reader, &stream[..at], stream.len().max(1));
                got.extend(frames_with(&mut reader, &stream[at..], stream.len().max(1)));
                assert_eq!(got, want, "split at {at}, keep {keep}");
                assert!(reader.partial.is_empty());
                assert_eq!(reader.inflated(), 2);
            }
            for chunk in [1, 2, 5] {
                let mut reader = Reader::new(Some(Inflate::new(keep, 1 << 20)));
                assert_eq!(frames_with(&mut reader, &stream, chunk), want);
            }
        }
    }

    #[test]
    fn rsv_bits_are_checked() {
        let mut c = Compress::new(Compression::default(), false);
        let z = compressed(frame::OP_TEXT, true, &deflate(&mut c, b"hello"));
        assert!(
            Reader::default().feed(&z, &mut |_| {}).is_err(),
            "not negotiated"
        );
        let mut reader = Reader::new(Some(Inflate::new(false, 100)));
        assert!(reader.feed(&z, &mut |_| {}).is_ok());
        let mut ping = frame::encode(frame::OP_PING, b"p").to_vec();
        ping[0] |= RSV1;
        assert!(reader.feed(&ping, &mut |_| {}).is_err(), "control frame");
        let mut rsv2 = frame::encode(frame::OP_TEXT, b"x").to_vec();
        rsv2[0] |= 0x20;
        let mut reader = Reader::new(Some(Inflate::new(false, 100)));
        assert!(reader.feed(&rsv2, &mut |_| {}).is_err());
    }
}
