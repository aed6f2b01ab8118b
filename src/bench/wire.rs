//! A small WebSocket client for the generator: TCP connect (from a chosen source
//! address; TLS for wss://, see `tls`), the HTTP upgrade (offering permessage-deflate
//! when asked), then server frames parsed straight out of one shared read buffer
//! (`reader`: many frames per read, frames split across reads). Pings are answered.
//! Every byte read after the handshake is counted (bytes on the wire).

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

use super::inflate::{self, Inflate, Offer};
use super::reader::{Event, Reader, MAX_MESSAGE};
use super::tls::Stream;
use crate::frame;

/// Bytes read per `try_read`; one buffer per thread, not per connection.
const READ_BUF: usize = 128 * 1024;

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

/// Waits until `stream` has input and hands what it holds to `on_chunk(bytes, now_ns)`
/// (a few reads per wake-up, into the thread's shared buffer) until `on_chunk` returns
/// false or the socket would block; `Ok(false)` at EOF or when `on_chunk` said stop.
pub async fn read_ready(
    stream: &TcpStream,
    on_chunk: &mut impl FnMut(&[u8], u64) -> io::Result<bool>,
) -> io::Result<bool> {
    loop {
        stream.readable().await?;
        let read = READ.with(|buf| -> io::Result<Option<bool>> {
            let mut buf = buf.borrow_mut();
            let mut progressed = false;
            // A few reads per wake-up while the socket keeps filling the buffer.
            for _ in 0..4 {
                match stream.try_read(&mut buf) {
                    Ok(0) => return Ok(Some(false)),
                    Ok(n) => {
                        progressed = true;
                        if !on_chunk(&buf[..n], super::sys::wall_ns())? {
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
        })?;
        if let Some(open) = read {
            return Ok(open);
        }
    }
}

/// `read_ready` for a plain or a TLS connection (one TLS read per wake-up, fed while
/// the thread's buffer is borrowed, never across an await).
pub async fn read_stream(
    stream: &mut Stream,
    on_chunk: &mut impl FnMut(&[u8], u64) -> io::Result<bool>,
) -> io::Result<bool> {
    let tls = match stream {
        Stream::Plain(stream) => return read_ready(stream, on_chunk).await,
        Stream::Tls(tls) => tls,
    };
    std::future::poll_fn(|cx| {
        READ.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut **tls).poll_read(cx, &mut read) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Ok(false)),
                Poll::Ready(Ok(())) => Poll::Ready(on_chunk(read.filled(), super::sys::wall_ns())),
            }
        })
    })
    .await
}

/// An open WebSocket client connection.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    reader: Reader,
    /// Bytes read after the handshake's response head.
    wire_bytes: u64,
    /// The server agreed on permessage-deflate: `Some(keeps_context)`.
    deflate: Option<bool>,
    /// Frames that came with the handshake response, fed on the first `recv`.
    leftover: Vec<u8>,
    replies: Vec<u8>,
    closed: bool,
    /// Pusher protocol: `pusher:ping` messages are answered, not passed on.
    pusher: bool,
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The value of header `name` (lower case) in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
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
    /// Connects (TLS for wss://) and performs the opening handshake, offering
    /// permessage-deflate with `offer` (and failing when the server does not take it).
    pub async fn open(
        url: &Url,
        source: Option<Ipv4Addr>,
        offer: Option<Offer>,
    ) -> io::Result<Conn> {
        let mut stream = Stream::connect(url, source).await?;
        let extensions = offer
            .map(|o| format!("Sec-WebSocket-Extensions: {}\r\n", o.header()))
            .unwrap_or_default();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {extensions}\r\n",
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
        let answer = String::from_utf8_lossy(&head[..end]);
        let deflate = header(&answer, "sec-websocket-extensions").and_then(inflate::accepted);
        if offer.is_some() && deflate.is_none() {
            return Err(protocol(
                "the server did not accept permessage-deflate (serve --compression on)",
            ));
        }
        let inflate = deflate.map(|keep| Inflate::new(keep, MAX_MESSAGE as usize));
        Ok(Conn {
            stream,
            reader: Reader::new(inflate),
            wire_bytes: (head.len() - end) as u64,
            deflate,
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
        let Conn {
            stream,
            reader,
            replies,
            closed,
            pusher,
            wire_bytes,
            ..
        } = self;
        let open = read_stream(stream, &mut |chunk, now| {
            *wire_bytes += chunk.len() as u64;
            reader.feed(chunk, &mut |event| {
                handle(event, now, *pusher, replies, closed, on_message)
            })?;
            Ok(!*closed)
        })
        .await?;
        if !open {
            self.closed = true;
        }
        if !self.replies.is_empty() {
            let replies = std::mem::take(&mut self.replies);
            self.stream.write_all(&replies).await?;
            self.stream.flush().await?;
        }
        Ok(open)
    }

    /// Bytes read from the socket after the handshake's response head, so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Compressed messages received so far.
    pub fn inflated(&self) -> u64 {
        self.reader.inflated()
    }

    /// `Some(keeps_context)` when the server agreed on permessage-deflate.
    pub fn deflate(&self) -> Option<bool> {
        self.deflate
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
    offer: Option<Offer>,
) -> Opened {
    let start = tokio::time::Instant::now();
    let (conns, failed, first_error) = open_all(n, concurrency, timeout, |i| async move {
        let mut conn = Conn::open(url, source(i, source_ips), offer).await?;
        if let Some(channel) = pusher_channel {
            conn.pusher_subscribe(channel).await?;
        }
        Ok(conn)
    })
    .await;
    Opened {
        conns,
        failed,
        first_error,
        elapsed: start.elapsed(),
    }
}

/// Runs `open(i)` for `i` in `0..n`, `concurrency` at a time, for at most `timeout`:
/// what opened, how many did not (all the rest on timeout) and the first error.
pub async fn open_all<T, F, Fut>(
    n: usize,
    concurrency: usize,
    timeout: Duration,
    open: F,
) -> (Vec<T>, usize, Option<String>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending = pin!(futures_util::stream::iter(0..n)
        .map(open)
        .buffer_unordered(concurrency.max(1)));
    let (mut opened, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
    loop {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(Ok(conn))) => opened.push(conn),
            Ok(Some(Err(e))) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                failed = n - opened.len();
                first.get_or_insert_with(|| "connect timeout".to_string());
                break;
            }
        }
    }
    (opened, failed, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_urls() {
        let u = Url::parse("ws://127.0.0.1:9001/ws?channels=a", "ws")
            .await
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:9001", "/ws?channels=a")
        );
        assert_eq!(u.addr.port(), 9001);
        let u = Url::parse("http://127.0.0.1:9?x", "http").await.unwrap();
        assert_eq!(u.path, "/?x");
        assert!(Url::parse("wss://x/", "http").await.is_err());
        let u = Url::parse("wss://127.0.0.1/ws", "ws").await.unwrap();
        assert!(u.tls && u.addr.port() == 443);
        assert!(!Url::parse("ws://127.0.0.1:1/", "ws").await.unwrap().tls);
    }

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source(5, 1), None);
        assert_eq!(source(0, 4), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source(6, 4), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
