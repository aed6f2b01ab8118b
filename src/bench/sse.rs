//! Event-stream clients for `wspush bench idle --sse`: each sends `GET /sse?channels=..`,
//! reads the `200` head, then only reads (discarding) until the server ends the stream.

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{source, tcp, Url};

/// An open event stream.
pub struct Stream(TcpStream);

impl Stream {
    /// Connects and reads the response head (which must be `200`).
    pub async fn open(url: &Url, source: Option<std::net::Ipv4Addr>) -> io::Result<Stream> {
        let mut stream = tcp(url.addr, source).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
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
        Ok(Stream(stream))
    }

    /// Reads until the server ends the stream; the bytes read.
    pub async fn hold(mut self) -> u64 {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Ok(n @ 1..) = self.0.read(&mut buf).await {
            total += n as u64;
        }
        total
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
) -> (Vec<Stream>, usize, Option<String>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending = std::pin::pin!(futures_util::stream::iter(0..n)
        .map(|i| Stream::open(url, source(i, source_ips)))
        .buffer_unordered(concurrency.max(1)));
    let (mut streams, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
    loop {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(Ok(s))) => streams.push(s),
            Ok(Some(Err(e))) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                failed = n - streams.len();
                first.get_or_insert_with(|| "connect timeout".into());
                break;
            }
        }
    }
    (streams, failed, first)
}
