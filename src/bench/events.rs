//! Incremental parsers of the HTTP streaming fronts' bodies for the generator (issue
//! #15, the SSE fanout benchmark): a Server-Sent Events stream (`id:`, `event:`, `data:`
//! lines, comments, a blank line dispatching the event; the data is the joined `data:`
//! lines) and newline-delimited JSON. Both take the body in whatever pieces the socket
//! gives and keep only an unfinished line between them.

use std::io;

/// Longest line kept while waiting for its end.
const MAX_LINE: usize = 64 << 20;

/// Splits a byte stream into lines ended by CR LF, LF or CR (the event-stream rule; NDJSON
/// lines end with LF). A CR LF split across two pieces is one line end.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    /// The last piece ended with a CR: an LF opening the next one belongs to it.
    after_cr: bool,
}

impl Lines {
    /// Calls `on_line` for every line `input` completes (without its line end).
    pub fn feed(&mut self, mut input: &[u8], on_line: &mut impl FnMut(&[u8])) -> io::Result<()> {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', input) {
            if self.partial.is_empty() {
                on_line(&input[..i]);
            } else {
                self.partial.extend_from_slice(&input[..i]);
                on_line(&self.partial);
                self.partial.clear();
                if self.partial.capacity() > 64 * 1024 {
                    self.partial = Vec::new();
                }
            }
            let mut end = i + 1;
            if input[i] == b'\r' {
                match input.get(end) {
                    Some(b'\n') => end += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            input = &input[end..];
        }
        if self.partial.len() + input.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "stream line too long",
            ));
        }
        self.partial.extend_from_slice(input);
        Ok(())
    }
}

/// The type of the event being read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No `event:` line, or `event: message` (or an empty one): a message.
    #[default]
    Message,
    /// Any other type (`subscribed`, `reset`, `join`, `leave`).
    Other,
}

/// The event being read.
#[derive(Debug, Default)]
struct Block {
    data: Vec<u8>,
    has_data: bool,
    kind: Kind,
}

impl Block {
    /// Takes one line of the stream; a blank line dispatches a message that has data.
    fn line(&mut self, line: &[u8], on_message: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            if self.has_data && self.kind == Kind::Message {
                on_message(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            self.kind = Kind::Message;
            return;
        }
        if line[0] == b':' {
            return; // a comment (`: ping`)
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.kind = if value.is_empty() || value == b"message" {
                    Kind::Message
                } else {
                    Kind::Other
                };
            }
            _ => {} // id, retry, unknown fields
        }
    }
}

/// An event-stream parser that hands on the data of every `message` event.
#[derive(Debug, Default)]
pub struct EventStream {
    lines: Lines,
    block: Block,
}

impl EventStream {
    /// Parses `input`, calling `on_message(data)` for every message event it completes.
    pub fn feed(&mut self, input: &[u8], on_message: &mut impl FnMut(&[u8])) -> io::Result<()> {
        let EventStream { lines, block } = self;
        lines.feed(input, &mut |line| block.line(line, on_message))
    }
}

/// The string `"data"` of one NDJSON message line (`{"channel":..,"data":"..."}`); `None`
/// for other lines (`subscribed`, `reset`, presence, `ping`), which carry no `"data"`.
/// The generator's payloads are plain ASCII, so the string needs no unescaping; data of
/// another kind comes out as is and fails the stamp check.
pub fn ndjson_data(line: &[u8]) -> Option<&[u8]> {
    const DATA: &[u8] = b"\"data\":";
    let start = memchr::memmem::rfind(line, DATA)? + DATA.len();
    let value = line[start..].strip_suffix(b"}")?;
    Some(
        value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], at: usize) -> Vec<String> {
        let mut parser = EventStream::default();
        let mut got = Vec::new();
        for piece in [&stream[..at], &stream[at..]] {
            parser
                .feed(piece, &mut |d| {
                    got.push(String::from_utf8_lossy(d).into_owned())
                })
                .unwrap();
        }
        got
    }

    // issue #15: the data of every message event, multi-line data joined, comments and
    // other event types skipped, every line ending read, however the stream is split.
    #[test]
    fn event_stream_split_at_every_offset() {
        let stream = b"id: e1:0:bench\nevent: subscribed\ndata: {\"channel\":\"bench\"}\n\n\
            : ping\n\n\
            id: e1:1:bench\nevent: message\ndata: 00 0000000001 stamp abc\n\n\
            event: message\r\ndata: line one\r\ndata: line two\r\n\r\n\
            data:no space\rdata\r\r\
            event: join\ndata: {\"event\":\"join\"}\n\n\
            event: message\nid: x\n\n\
            event:\ndata:  two spaces\n\n\
            data: unfinished";
        let want = [
            "00 0000000001 stamp abc",
            "line one\nline two",
            "no space\n",
            " two spaces",
        ];
        for at in 0..=stream.len() {
            assert_eq!(events(stream, at), want, "split at {at}");
        }
        // One byte at a time.
        let mut parser = EventStream::default();
        let mut got = Vec::new();
        for b in stream.chunks(1) {
            parser
                .feed(b, &mut |d| {
                    got.push(String::from_utf8_lossy(d).into_owned())
                })
                .unwrap();
        }
        assert_eq!(got, want);
    }

    #[test]
    fn ndjson_lines_split_at_every_offset() {
        let stream =
            b"{\"event\":\"subscribed\",\"channel\":\"bench\",\"epoch\":\"e1\",\"offset\":0}\n\
            {\"channel\":\"bench\",\"offset\":1,\"epoch\":\"e1\",\"data\":\"00 0000000001 x\"}\n\
            {\"event\":\"ping\"}\n\
            {\"channel\":\"bench\",\"offset\":2,\"epoch\":\"e1\",\"data\":{\"a\":1}}\n";
        for at in 0..=stream.len() {
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for piece in [&stream[..at], &stream[at..]] {
                lines
                    .feed(piece, &mut |l| {
                        got.push(ndjson_data(l).map(|d| String::from_utf8_lossy(d).into_owned()))
                    })
                    .unwrap();
            }
            assert_eq!(
                got,
                [
                    None,
                    Some("00 0000000001 x".to_string()),
                    None,
                    Some("{\"a\":1}".to_string())
                ],
                "split at {at}"
            );
        }
    }
}
