//! RFC 6455 frames (the codec every WebSocket front shares): encoding server frames once into shared bytes, and an incremental
//! decoder for client frames (header parsing comes from `tungstenite`; message assembly,
//! control-frame rules, UTF-8 and size checks are here, verified by the Autobahn suite).

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::deflate::{InflateError, Inflater};

/// Why a client's frames are refused: how the connection must be failed (each front
/// maps it to its close code: 1002, 1007, 1009).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The framing rules are broken (bad opcode, RSV bits, unmasked frame, fragmented
    /// control frame, bad close payload...).
    Protocol,
    /// Payload data inconsistent with its message: a text message or close reason that
    /// is not valid UTF-8, or a compressed message that does not inflate.
    InvalidUtf8,
    /// A message larger than the configured maximum.
    TooBig,
}

/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest possible server frame header (no mask).
pub const MAX_HEADER: usize = 10;

/// Most bytes reserved up front for a frame still arriving; beyond it the buffer grows
/// with what actually arrives.
const PRESIZE_LIMIT: usize = 64 * 1024;

/// Writes an unmasked, final frame header for `len` payload bytes.
pub fn put_header(buf: &mut impl BufMut, opcode: u8, len: usize) {
    buf.put_u8(0x80 | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

/// Encodes one complete server frame (header + payload) into shared bytes. Server frames
/// are unmasked, so the same bytes can be written to every subscriber.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(MAX_HEADER + payload.len());
    put_header(&mut buf, opcode, payload.len());
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// Encodes a close frame with a code and a (short, UTF-8) reason.
pub fn close(code: u16, reason: &str) -> Bytes {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    encode(OP_CLOSE, &payload)
}

/// One complete event decoded from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message (valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping with its payload, to be answered with a pong.
    Ping(Bytes),
    /// A pong (liveness only).
    Pong,
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// A message being assembled from fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    /// Its frames carry deflate data (RSV1 on the first; permessage-deflate).
    compressed: bool,
    data: Vec<u8>,
    /// Prefix of `data` already known to be valid UTF-8 (text only).
    utf8_valid: usize,
}

/// Incremental decoder. Holds no buffer while idle: bytes are kept only while a frame
/// or a fragmented message is incomplete.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    partial: Vec<u8>,
    fragments: Option<Box<Fragments>>,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    inflater: Option<Box<Inflater>>,
}

impl Decoder {
    /// A decoder that rejects messages larger than `max_message` bytes (close 1009).
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: Vec::new(),
            fragments: None,
            inflater: None,
        }
    }

    /// The decoder of a connection that negotiated permessage-deflate: a message whose
    /// first frame has RSV1 set is inflated, bounded by `max_message` after inflation.
    pub fn with_inflater(mut self, inflater: Inflater) -> Self {
        self.inflater = Some(Box::new(inflater));
        self
    }

    /// Takes bytes that arrived before the session started (read along with the
    /// handshake); the next `feed` decodes them first.
    pub fn preload(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
    }

    /// True when bytes wait to be decoded.
    pub fn has_pending(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Feeds bytes read from the socket (unmasked in place); complete events are
    /// appended to `out`. An error says how the connection must be closed; events
    /// decoded before the error are still in `out`.
    pub fn feed(&mut self, input: &mut [u8], out: &mut Vec<Incoming>) -> Result<(), Violation> {
        if self.partial.is_empty() {
            let used = self.process(input, out)?;
            if used < input.len() {
                self.partial.extend_from_slice(&input[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let used = self.process(&mut buf, out)?;
            if used < buf.len() {
                buf.drain(..used);
                self.partial = buf;
            }
        }
        Ok(())
    }

    /// Decodes every complete frame at the start of `buf`; returns the bytes consumed.
    fn process(&mut self, buf: &mut [u8], out: &mut Vec<Incoming>) -> Result<usize, Violation> {
        let mut pos = 0;
        while pos < buf.len() {
            let mut cursor = Cursor::new(&buf[pos..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(_) => return Err(Violation::Protocol),
            };
            let header_len = cursor.position() as usize;
            // `check_header` bounds `len` by `max_message` (or 125), so it fits a usize.
            let len = self.check_header(&header, len)?;
            if buf.len() - pos - header_len < len {
                // Room for a modest frame at once; a big one grows as its bytes arrive,
                // so announcing a large frame and sending nothing costs the sender, not us.
                let want = (header_len + len).min(PRESIZE_LIMIT);
                if self.partial.capacity() < want {
                    self.partial.reserve_exact(want);
                }
                break;
            }
            let start = pos + header_len;
            let payload = &mut buf[start..start + len];
            if let Some(mask) = header.mask {
                unmask(payload, mask);
            }
            pos = start + len;
            if let Some(event) = self.frame(&header, payload)? {
                let closing = matches!(event, Incoming::Close(_));
                out.push(event);
                if closing {
                    return Ok(buf.len());
                }
            }
        }
        Ok(pos)
    }

    /// Rejects a frame as soon as its header is known to be invalid; the payload length
    /// as a usize, known to be at most `max_message` (data) or 125 (control).
    ///
    /// A length from the wire is never added to anything: what the message already holds
    /// is subtracted from the limit instead (a 1-byte fragment followed by a continuation
    /// announcing 2^64-1 bytes once wrapped `have + len` and passed the check; issue #12).
    fn check_header(&self, header: &FrameHeader, len: u64) -> Result<usize, Violation> {
        if header.rsv2 || header.rsv3 || header.mask.is_none() {
            return Err(Violation::Protocol);
        }
        // RSV1 only on the first frame of a data message, and only once negotiated.
        if header.rsv1
            && (self.inflater.is_none()
                || !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)))
        {
            return Err(Violation::Protocol);
        }
        match header.opcode {
            OpCode::Control(_) if len > 125 || !header.is_final => Err(Violation::Protocol),
            OpCode::Control(_) => Ok(len as usize),
            OpCode::Data(_) => {
                let have = self.fragments.as_ref().map_or(0, |f| f.data.len());
                let room = self.max_message.saturating_sub(have);
                match usize::try_from(len) {
                    Ok(len) if len <= room => Ok(len),
                    _ => Err(Violation::TooBig),
                }
            }
        }
    }

    /// Bytes held for an incomplete frame or message (bounded by `max_message` plus one
    /// frame header and one read; the fuzz target checks it).
    pub fn buffered(&self) -> usize {
        self.partial.len() + self.fragments.as_ref().map_or(0, |f| f.data.len())
    }

    /// Applies one complete, unmasked frame.
    fn frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
    ) -> Result<Option<Incoming>, Violation> {
        match header.opcode {
            OpCode::Data(Data::Continue) => {
                let Some(frag) = self.fragments.as_mut() else {
                    return Err(Violation::Protocol);
                };
                frag.data.extend_from_slice(payload);
                if frag.text && !frag.compressed {
                    check_utf8_prefix(frag)?;
                }
                if !header.is_final {
                    return Ok(None);
                }
                let frag = self.fragments.take().expect("fragments present");
                if frag.compressed {
                    return self.inflated(frag.text, &frag.data).map(Some);
                }
                if frag.text {
                    if frag.utf8_valid != frag.data.len() {
                        return Err(Violation::InvalidUtf8);
                    }
                    Ok(Some(Incoming::Text(Bytes::from(frag.data))))
                } else {
                    Ok(Some(Incoming::Binary(Bytes::from(frag.data))))
                }
            }
            OpCode::Data(kind @ (Data::Text | Data::Binary)) => {
                if self.fragments.is_some() {
                    return Err(Violation::Protocol);
                }
                let text = kind == Data::Text;
                let compressed = header.rsv1;
                if !header.is_final {
                    let mut frag = Box::new(Fragments {
                        text,
                        compressed,
                        data: payload.to_vec(),
                        utf8_valid: 0,
                    });
                    if text && !compressed {
                        check_utf8_prefix(&mut frag)?;
                    }
                    self.fragments = Some(frag);
                    return Ok(None);
                }
                if compressed {
                    return self.inflated(text, payload).map(Some);
                }
                if text {
                    std::str::from_utf8(payload).map_err(|_| Violation::InvalidUtf8)?;
                    Ok(Some(Incoming::Text(Bytes::copy_from_slice(payload))))
                } else {
                    Ok(Some(Incoming::Binary(Bytes::copy_from_slice(payload))))
                }
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                Err(Violation::Protocol)
            }
            OpCode::Control(Control::Ping) => {
                Ok(Some(Incoming::Ping(Bytes::copy_from_slice(payload))))
            }
            OpCode::Control(Control::Pong) => Ok(Some(Incoming::Pong)),
            OpCode::Control(Control::Close) => match payload.len() {
                0 => Ok(Some(Incoming::Close(None))),
                1 => Err(Violation::Protocol),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !CloseCode::from(code).is_allowed() {
                        return Err(Violation::Protocol);
                    }
                    std::str::from_utf8(&payload[2..]).map_err(|_| Violation::InvalidUtf8)?;
                    Ok(Some(Incoming::Close(Some(code))))
                }
            },
        }
    }
}

impl Decoder {
    /// A compressed message, inflated (at most `max_message` bytes) and checked.
    fn inflated(&mut self, text: bool, compressed: &[u8]) -> Result<Incoming, Violation> {
        let inflater = self.inflater.as_mut().expect("RSV1 only once negotiated");
        let data = inflater
            .inflate(compressed, self.max_message)
            .map_err(|e| match e {
                InflateError::TooBig => Violation::TooBig,
                InflateError::Corrupt => Violation::InvalidUtf8,
            })?;
        if text {
            std::str::from_utf8(&data).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Incoming::Text(Bytes::from(data)))
        } else {
            Ok(Incoming::Binary(Bytes::from(data)))
        }
    }
}

/// Fails fast when the text assembled so far holds bytes that can never become UTF-8.
fn check_utf8_prefix(frag: &mut Fragments) -> Result<(), Violation> {
    match std::str::from_utf8(&frag.data[frag.utf8_valid..]) {
        Ok(_) => frag.utf8_valid = frag.data.len(),
        Err(e) if e.error_len().is_some() => return Err(Violation::InvalidUtf8),
        Err(e) => frag.utf8_valid += e.valid_up_to(),
    }
    Ok(())
}

/// XORs a payload with the client's mask, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let done = payload.len() - payload.len() % 8;
    for chunk in payload[..done].chunks_exact_mut(8) {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in payload[done..].iter_mut().enumerate() {
        *b ^= mask[(done + i) % 4];
    }
}

/// Encodes a masked client frame (for the CLI client, the load generator and tests).
pub fn encode_masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAX_HEADER + 4 + payload.len());
    buf.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        buf.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(0x80 | 126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(0x80 | 127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    buf.extend_from_slice(&mask);
    let start = buf.len();
    buf.extend_from_slice(payload);
    unmask(&mut buf[start..], mask);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], chunk: usize) -> (Vec<Incoming>, Result<(), Violation>) {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            let mut piece = piece.to_vec();
            if let Err(e) = d.feed(&mut piece, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn decodes_masked_text_split_anywhere() {
        let frame = encode_masked(OP_TEXT, "héllo wörld".as_bytes(), [1, 2, 3, 4]);
        for chunk in 1..frame.len() + 1 {
            let (out, res) = decode_all(&frame, chunk);
            assert_eq!(res, Ok(()));
            assert_eq!(out, vec![Incoming::Text(Bytes::from("héllo wörld"))]);
        }
    }

    #[test]
    fn unmask_roundtrip_on_odd_lengths() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut buf = data.clone();
            unmask(&mut buf, [9, 8, 7, 6]);
            unmask(&mut buf, [9, 8, 7, 6]);
            assert_eq!(buf, data);
        }
    }

    #[test]
    fn rejects_unmasked_and_oversize() {
        let unmasked = encode(OP_TEXT, b"x").to_vec();
        let (_, res) = decode_all(&unmasked, 100);
        assert_eq!(res, Err(Violation::Protocol));
        let mut d = Decoder::new(4);
        let mut big = encode_masked(OP_BINARY, b"12345", [0; 4]);
        assert_eq!(d.feed(&mut big, &mut Vec::new()), Err(Violation::TooBig));
    }

    /// Issue #12 item 1: a continuation announcing 2^64-1 bytes after a 1-byte fragment.
    #[test]
    fn continuation_length_cannot_wrap_the_size_check() {
        for announced in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 20) as u64] {
            let mut d = Decoder::new(1 << 20);
            let mut first = encode_masked(OP_TEXT, b"x", [1, 2, 3, 4]);
            first[0] &= 0x7f; // not final
            let mut next = vec![0x80, 0x80 | 127];
            next.extend_from_slice(&announced.to_be_bytes());
            next.extend_from_slice(&[0, 0, 0, 0]);
            next.extend_from_slice(&[b'a'; 64]);
            let mut out = Vec::new();
            assert_eq!(d.feed(&mut first, &mut out), Ok(()));
            assert_eq!(
                d.feed(&mut next, &mut out),
                Err(Violation::TooBig),
                "{announced}"
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn an_announced_frame_reserves_little_until_its_bytes_arrive() {
        let mut d = Decoder::new(1 << 20);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(d.feed(&mut header, &mut Vec::new()), Ok(()));
        assert!(
            d.partial.capacity() <= PRESIZE_LIMIT,
            "{}",
            d.partial.capacity()
        );
    }

    #[test]
    fn fails_fast_on_invalid_utf8_fragment() {
        let mut first = encode_masked(OP_TEXT, &[0xce, 0xba, 0xff], [1, 1, 1, 1]);
        first[0] &= 0x7f; // not final
        let (_, res) = decode_all(&first, 100);
        assert_eq!(res, Err(Violation::InvalidUtf8));
    }

    #[test]
    fn header_encoding_lengths() {
        assert_eq!(encode(OP_TEXT, &[0; 125]).len(), 127);
        assert_eq!(encode(OP_TEXT, &[0; 126]).len(), 130);
        assert_eq!(encode(OP_TEXT, &[0; 65536]).len(), 65546);
    }
}
