//! HTTP streaming clients: `wspush bench idle --sse` holds event streams (reading and
//! discarding), `wspush bench fanout --sse`/`--ndjson` (issue #15) parses them: each
//! sends `GET /sse?channels=..` (or `/stream`), reads the `200` head, then hands the data
//! of every message event (NDJSON: the `"data"` string of every message line) on, until
//! the server ends the stream. The body must be unframed (wspush serves a fresh plain
//! connection's stream straight on the socket, `Connection: close`): a chunked body is
//! refused.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::events::{ndjson_data, EventStream, Lines};
use super::wire::{read_ready, source, tcp, Url};

/// Which streaming body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// Newline-delimited JSON.
    Ndjson,
}

impl Mode {
    /// The transport's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sse => "sse",
            Mode::Ndjson => "ndjson",
        }
    }
}

/// The body parser of a stream.
#[derive(Debug)]
enum Parser {
    Sse(EventStream),
    Ndjson(Lines),
}

/// An open event stream.
pub struct Stream {
    stream: TcpStream,
    parser: Parser,
    /// Bytes read after the response head.
    wire_bytes: u64,
    closed: bool,
}

impl Stream {
    /// Connects and reads the response head (which must be `200`, unchunked).
    pub async fn open(
        url: &Url,
        source: Option<std::net::Ipv4Addr>,
        mode: Mode,
    ) -> io::Result<Stream> {
        let mut stream = tcp(url.addr, source).await?;
        let accept = match mode {
            Mode::Sse => "text/event-stream",
            Mode::Ndjson => "application/x-ndjson",
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n\r\n",
            url.path, url.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(512);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(io::Error::other("response head too long"));
            }
            let mut b = [0u8; 1];
            if stream.read(&mut b).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(io::Error::other(format!(
                "refused: {}",
                String::from_utf8_lossy(status)
            )));
        }
        let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if lower.contains("\r\ntransfer-encoding: chunked") {
            return Err(io::Error::other(
                "the stream came chunked (the generator reads unframed streams only)",
            ));
        }
        Ok(Stream {
            stream,
            parser: match mode {
                Mode::Sse => Parser::Sse(EventStream::default()),
                Mode::Ndjson => Parser::Ndjson(Lines::default()),
            },
            wire_bytes: 0,
            closed: false,
        })
    }

    /// Reads until the server ends the stream; the bytes read.
    pub async fn hold(mut self) -> u64 {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Ok(n @ 1..) = self.stream.read(&mut buf).await {
            total += n as u64;
        }
        total
    }

    /// Waits for input and calls `on_message(data, now_ns)` for the data of every
    /// message it completes. `Ok(false)` once the server has ended the stream.
    pub async fn recv(&mut self, on_message: &mut impl FnMut(&[u8], u64)) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let Stream {
            stream,
            parser,
            wire_bytes,
            ..
        } = self;
        let open = read_ready(stream, &mut |chunk, now| {
            *wire_bytes += chunk.len() as u64;
            match parser {
                Parser::Sse(events) => events.feed(chunk, &mut |data| on_message(data, now))?,
                Parser::Ndjson(lines) => lines.feed(chunk, &mut |line| {
                    if let Some(data) = ndjson_data(line) {
                        on_message(data, now)
                    }
                })?,
            }
            Ok(true)
        })
        .await?;
        self.closed = !open;
        Ok(open)
    }

    /// Bytes read after the response head, so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }
}

/// Opens `n` streams, `concurrency` at a time, for at most `timeout`: the streams, the
/// failures and the first error.
pub async fn open_many(
    url: &Url,
    n: usize,
    source_ips: u8,
    concurrency: usize,
    timeout: Duration,
    mode: Mode,
) -> (Vec<Stream>, usize, Option<String>) {
    super::wire::open_all(n, concurrency, timeout, |i| {
        Stream::open(url, source(i, source_ips), mode)
    })
    .await
}
