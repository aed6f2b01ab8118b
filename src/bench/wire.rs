//! A small WebSocket client for the generator: TCP connect (from a chosen source
//! address; TLS for wss://, see `tls`), the HTTP upgrade, then server frames parsed
//! straight out of one shared read buffer (many frames per read, frames split across
//! reads). Pings are answered.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::tls::Stream;
use crate::frame;

/// Bytes read per `try_read`; one buffer per thread, not per connection.
const READ_BUF: usize = 128 * 1024;
/// Largest server message accepted.
const MAX_MESSAGE: u64 = 64 << 20;

thread_local! {
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// A parsed `scheme://host:port/path?query` URL.
#[derive(Debug, Clone)]
pub struct Url {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host:port` as written (the Host header).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// wss:// or https://: TLS over the connection.
    pub tls: bool,
}

impl Url {
    /// Parses and resolves `url`, which must use `scheme` (`ws` or `http`) or its TLS
    /// form (`wss`, `https`).
    pub async fn parse(url: &str, scheme: &str) -> anyhow::Result<Url> {
        let expected = || format!("{url}: expected a {scheme}:// or {scheme}s:// URL");
        let rest = url.strip_prefix(scheme).with_context(expected)?;
        let (tls, rest) = match rest.strip_prefix('s') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let rest = rest.strip_prefix("://").with_context(expected)?;
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if host.is_empty() {
            bail!("{url}: no host");
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:{}", if tls { 443 } else { 80 })
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host}: no IPv4 address"))?;
        Ok(Url {
            addr,
            host: host.to_string(),
            path,
            tls,
        })
    }
}

/// The source address of connection `i` when spreading over `k` loopback addresses.
pub fn source(i: usize, k: u8) -> Option<Ipv4Addr> {
    (k > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % k as usize) as u8))
}

/// Opens a TCP connection, from `source` when given.
pub async fn tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        // No SO_REUSEADDR: a port whose 4-tuple is still in TIME_WAIT from an earlier run
        // would be picked, and its SYN dropped (PAWS) and retried a second later. Let
        // TIME_WAIT drain between big runs (bench/run.sh waits for it).
        socket.bind(SocketAddr::new(ip.into(), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One event parsed from the server.
enum Event<'a> {
    Message(&'a [u8]),
    Ping(&'a [u8]),
    Close,
}

/// Incremental parser of server frames. Holds no bytes between complete frames.
#[derive(Debug, Default)]
pub struct Reader {
    partial: Vec<u8>,
    fragments: Option<Vec<u8>>,
}

impl Reader {
    /// Parses `input`, calling `on` for every complete event.
    fn feed(&mut self, input: &[u8], on: &mut impl FnMut(Event<'_>)) -> io::Result<()> {
        if self.partial.is_empty() {
            let used = parse(input, &mut self.fragments, on)?;
            self.partial.extend_from_slice(&input[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(input);
            let used = parse(&buf, &mut self.fragments, on)?;
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

/// Parses every complete frame at the start of `buf`; the bytes consumed.
fn parse(
    buf: &[u8],
    fragments: &mut Option<Vec<u8>>,
    on: &mut impl FnMut(Event<'_>),
) -> io::Result<usize> {
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
        match b0 & 0x0f {
            frame::OP_TEXT | frame::OP_BINARY if fragments.is_some() => {
                return Err(protocol("new message inside a fragmented one"))
            }
            frame::OP_TEXT | frame::OP_BINARY if fin => on(Event::Message(payload)),
            frame::OP_TEXT | frame::OP_BINARY => *fragments = Some(payload.to_vec()),
            0 => {
                let Some(data) = fragments.as_mut() else {
                    return Err(protocol("continuation without a message"));
                };
                data.extend_from_slice(payload);
                if fin {
                    let data = fragments.take().expect("fragments present");
                    on(Event::Message(&data));
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

/// An open WebSocket client connection.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    reader: Reader,
    /// Frames that came with the handshake response, fed on the first `recv`.
    leftover: Vec<u8>,
    replies: Vec<u8>,
    closed: bool,
    /// Pusher protocol: `pusher:ping` messages are answered, not passed on.
    pusher: bool,
}

/// The Pusher event name of a message (setup only: parses the JSON).
fn pusher_event(data: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some(value.get("event")?.as_str()?.to_string())
}

/// True for a short message naming the `pusher:ping` event.
fn is_pusher_ping(data: &[u8]) -> bool {
    data.len() < 128 && memchr::memmem::find(data, b"\"pusher:ping\"").is_some()
}

const PUSHER_PONG: &[u8] = br#"{"event":"pusher:pong","data":{}}"#;

impl Conn {
    /// Connects and performs the opening handshake.
    pub async fn open(url: &Url, source: Option<Ipv4Addr>) -> io::Result<Conn> {
        let mut stream = Stream::connect(url, source).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            url.path, url.host
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut head = Vec::with_capacity(512);
        let end = loop {
            if head.len() > 16 * 1024 {
                return Err(protocol("handshake response too long"));
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let status = head.split(|&b| b == b'\r').next().unwrap_or_default();
        if !status.starts_with(b"HTTP/1.1 101") {
            return Err(protocol(&format!(
                "handshake refused: {}",
                String::from_utf8_lossy(status)
            )));
        }
        Ok(Conn {
            stream,
            reader: Reader::default(),
            leftover: head[end..].to_vec(),
            replies: Vec::new(),
            closed: false,
            pusher: false,
        })
    }

    /// Pusher protocol 7: waits for `pusher:connection_established`, subscribes to
    /// `channel` and waits for `pusher_internal:subscription_succeeded`, so that nothing
    /// published afterwards can be missed. From then on `pusher:ping` is answered.
    pub async fn pusher_subscribe(&mut self, channel: &str) -> io::Result<()> {
        self.pusher = true;
        let mut subscribed = false;
        loop {
            let mut events = Vec::new();
            if !self
                .recv(&mut |data: &[u8], _| events.push((pusher_event(data), data.to_vec())))
                .await?
            {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed while subscribing",
                ));
            }
            for (event, data) in events {
                match event.as_deref() {
                    Some("pusher:connection_established") if !subscribed => {
                        let subscribe = serde_json::json!({
                            "event": "pusher:subscribe",
                            "data": {"channel": channel},
                        });
                        self.send_text(subscribe.to_string().as_bytes(), [1, 2, 3, 4])
                            .await?;
                        subscribed = true;
                    }
                    Some("pusher_internal:subscription_succeeded") if subscribed => return Ok(()),
                    Some("pusher:error" | "pusher:subscription_error") => {
                        return Err(protocol(&format!(
                            "subscribe refused: {}",
                            String::from_utf8_lossy(&data)
                        )))
                    }
                    _ => {}
                }
            }
        }
    }

    /// Waits for input and calls `on_message(data, now_ns)` for every complete message
    /// it holds (`now_ns`: the wall clock after the read). `Ok(false)` once the
    /// connection has ended (EOF or a close frame).
    pub async fn recv(&mut self, on_message: &mut impl FnMut(&[u8], u64)) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        if !self.leftover.is_empty() {
            let leftover = std::mem::take(&mut self.leftover);
            self.feed(&leftover, on_message)?;
            return Ok(!self.closed);
        }
        loop {
            let Conn {
                stream,
                reader,
                replies,
                closed,
                pusher,
                ..
            } = self;
            let read = match stream {
                Stream::Plain(stream) => {
                    stream.readable().await?;
                    READ.with(|buf| -> io::Result<Option<bool>> {
                        let mut buf = buf.borrow_mut();
                        let mut progressed = false;
                        // A few reads per wake-up while the socket keeps filling the buffer.
                        for _ in 0..4 {
                            match stream.try_read(&mut buf) {
                                Ok(0) => {
                                    *closed = true;
                                    return Ok(Some(false));
                                }
                                Ok(n) => {
                                    progressed = true;
                                    let now = super::sys::wall_ns();
                                    reader.feed(&buf[..n], &mut |event| {
                                        handle(event, now, *pusher, replies, closed, on_message)
                                    })?;
                                    if *closed {
                                        return Ok(Some(false));
                                    }
                                    if n < buf.len() {
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(progressed.then_some(true))
                    })?
                }
                // One TLS read per wake-up, fed while the shared buffer is borrowed (never
                // across an await).
                Stream::Tls(tls) => {
                    std::future::poll_fn(|cx| {
                        READ.with(|buf| {
                            let mut buf = buf.borrow_mut();
                            let mut read = ReadBuf::new(&mut buf);
                            match Pin::new(&mut **tls).poll_read(cx, &mut read) {
                                Poll::Pending => Poll::Pending,
                                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                                    *closed = true;
                                    Poll::Ready(Ok(Some(false)))
                                }
                                Poll::Ready(Ok(())) => {
                                    let now = super::sys::wall_ns();
                                    let fed = reader.feed(read.filled(), &mut |event| {
                                        handle(event, now, *pusher, replies, closed, on_message)
                                    });
                                    Poll::Ready(fed.map(|()| Some(!*closed)))
                                }
                            }
                        })
                    })
                    .await?
                }
            };
            if !self.replies.is_empty() {
                let replies = std::mem::take(&mut self.replies);
                self.stream.write_all(&replies).await?;
                self.stream.flush().await?;
            }
            if let Some(open) = read {
                return Ok(open);
            }
        }
    }

    fn feed(&mut self, input: &[u8], on_message: &mut impl FnMut(&[u8], u64)) -> io::Result<()> {
        let now = super::sys::wall_ns();
        let Conn {
            reader,
            replies,
            closed,
            pusher,
            ..
        } = self;
        reader.feed(input, &mut |event| {
            handle(event, now, *pusher, replies, closed, on_message)
        })
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, payload: &[u8], mask: [u8; 4]) -> io::Result<()> {
        let bytes = frame::encode_masked(frame::OP_TEXT, payload, mask);
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }
}

fn handle(
    event: Event<'_>,
    now: u64,
    pusher: bool,
    replies: &mut Vec<u8>,
    closed: &mut bool,
    on_message: &mut impl FnMut(&[u8], u64),
) {
    match event {
        Event::Message(data) if pusher && is_pusher_ping(data) => replies.extend_from_slice(
            &frame::encode_masked(frame::OP_TEXT, PUSHER_PONG, [7, 7, 7, 7]),
        ),
        Event::Message(data) => on_message(data, now),
        Event::Ping(data) => {
            replies.extend_from_slice(&frame::encode_masked(frame::OP_PONG, data, [7, 7, 7, 7]))
        }
        Event::Close => *closed = true,
    }
}

/// The outcome of opening many connections.
#[derive(Debug)]
pub struct Opened {
    /// The open connections.
    pub conns: Vec<Conn>,
    /// How many failed (or were still pending at the deadline).
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Opens `n` connections with at most `concurrency` handshakes in flight, for at most
/// `timeout`; the i-th from `source(i, source_ips)`. With `pusher_channel`, each is
/// subscribed to it by the Pusher protocol before it counts as open.
pub async fn open_many(
    url: &Url,
    n: usize,
    source_ips: u8,
    concurrency: usize,
    timeout: Duration,
    pusher_channel: Option<&str>,
) -> Opened {
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    let mut pending = pin!(futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut conn = Conn::open(url, source(i, source_ips)).await?;
            if let Some(channel) = pusher_channel {
                conn.pusher_subscribe(channel).await?;
            }
            Ok::<_, io::Error>(conn)
        })
        .buffer_unordered(concurrency.max(1)));
    loop {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(Ok(conn))) => conns.push(conn),
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                failed = n - conns.len();
                first_error.get_or_insert_with(|| "connect timeout".to_string());
                break;
            }
        }
    }
    Opened {
        conns,
        failed,
        first_error,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
