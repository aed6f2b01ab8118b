//! Event streams served straight on the TCP socket. A fresh plain connection whose first
//! request is `GET /sse` or `GET /stream` is answered here instead of by hyper: the
//! response is delimited by the connection's close (no chunked framing), so the fan-out
//! flusher writes the shared frames to the socket as it does for a WebSocket, and the
//! connection keeps none of hyper's buffers (about 16 KiB per idle stream).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::IntoResponse;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::format::{NDJSON, SSE};
use super::{admit, Admitted};
use crate::error::ApiError;
use crate::hub::Client;
use crate::limits::Permit;
use crate::model::{Disconnect, Format};
use crate::net::Proxies;
use crate::state::AppState;

/// The longest request head taken off hyper (a longer one is left to hyper).
const MAX_HEAD: usize = 8 * 1024;
/// How long a closing stream may take to flush what is queued.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

thread_local! {
    static DISCARD: RefCell<Vec<u8>> = RefCell::new(vec![0; 4096]);
}

/// The stream format a request line asks for, if it is one of ours.
fn format_of(head: &[u8]) -> Option<&'static Format> {
    for (path, format) in [(&b"GET /sse"[..], &SSE), (b"GET /stream", &NDJSON)] {
        if let Some(rest) = head.strip_prefix(path) {
            if matches!(rest.first(), Some(b'?' | b' ')) {
                return Some(format);
            }
        }
    }
    None
}

/// Serves the connection here when its first request is a stream whose whole head has
/// arrived; otherwise hands the untouched connection back for hyper.
pub async fn serve_or_pass(
    app: &AppState,
    proxies: &Proxies,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: Duration,
) -> Option<TcpStream> {
    // A glance at the request line first, so other connections pay one small peek.
    let mut line = [0u8; 12];
    let Ok(Ok(n)) = tokio::time::timeout(handshake, stream.peek(&mut line)).await else {
        return None; // silent (or failed) past the handshake timeout, as hyper would drop it
    };
    let Some(format) = format_of(&line[..n]) else {
        return Some(stream);
    };
    let mut buf = vec![0u8; MAX_HEAD];
    let Ok(n) = stream.peek(&mut buf).await else {
        return None;
    };
    let mut names = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut names);
    let Ok(httparse::Status::Complete(len)) = req.parse(&buf[..n]) else {
        return Some(stream); // not all here yet, or odd: hyper knows what to do
    };
    let (Ok(uri), Some(1)) = (req.path.unwrap_or("").parse::<Uri>(), req.version) else {
        return Some(stream);
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    drop(buf);
    let mut stream = stream;
    // Take the head off the socket (it is all there: peeked above).
    let mut head = vec![0u8; len];
    if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head)
        .await
        .is_err()
    {
        return None;
    }
    drop(head);
    let remote = proxies.remote(peer, &headers).addr;
    match admit(app, format, remote, &headers, &uri) {
        Ok(admitted) => start(app, admitted, stream, remote).await,
        Err(e) => refuse(stream, e).await,
    }
    None
}

/// Answers a refused request (the error's status and JSON body) and closes.
async fn refuse(mut stream: TcpStream, e: ApiError) {
    let resp = e.into_response();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, write).await;
}

/// Registers the client, writes the response head (before anything can be queued to the
/// socket: nothing writes to it until the session attaches it), subscribes, and runs
/// the session in a task of its own.
async fn start(app: &AppState, admitted: Admitted, mut stream: TcpStream, peer: SocketAddr) {
    let client = admitted.register(app, peer);
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in admitted.headers(client.id) {
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(value.to_str().unwrap_or(""));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let written = tokio::time::timeout(CLOSE_WAIT, stream.write_all(head.as_bytes())).await;
    if !matches!(written, Ok(Ok(()))) {
        app.hub.disconnect(&client).await;
        return;
    }
    if admitted.subscribe_all(app, &client).await.is_err() {
        return; // the broker failed after the head (the client is forgotten): it ends
    }
    let session = Session {
        stream: Arc::new(stream),
        client,
        app: app.clone(),
        pending: VecDeque::new(),
        _permit: admitted.permit,
    };
    // A fresh task: the connection's accept task and its state end here.
    app.shutdown.tracker.spawn(session.run());
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// The hub asked for a close.
    Close(Disconnect),
    /// The client sent bytes after its request (it has nothing to say on a stream).
    Spoke,
    /// The socket failed or hit EOF.
    Gone,
}

/// A stream served on its socket: the outbox is written by the fan-out flusher, or by
/// the session when the socket is backed up (as for a WebSocket session).
struct Session {
    stream: Arc<TcpStream>,
    client: Arc<Client>,
    app: AppState,
    pending: VecDeque<Bytes>,
    _permit: Permit,
}

impl Session {
    /// Serves until the stream ends, then forgets the client. Not an `async fn`, so the
    /// session is kept in its future once (see `ws::Session::run`).
    fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        self.client.attach(self.stream.clone());
        async move {
            let end = self.serve().await;
            tracing::debug!(client = %self.client.id, ?end, "stream ends");
            Box::pin(self.finish(end)).await;
            self.app.hub.disconnect(&self.client).await;
        }
    }

    async fn serve(&mut self) -> End {
        let hub = &self.app.hub;
        loop {
            match self.client.write_step(&mut self.pending, &*self.stream) {
                Ok((written, close)) => {
                    if written > 0 {
                        // The socket takes what the session writes (a ping, at least
                        // once per ping interval): the reader is alive.
                        self.client.seen(hub.now());
                        hub.stats().bytes_out.fetch_add(written as u64, Relaxed);
                    }
                    if let Some(reason) = close {
                        return End::Close(reason);
                    }
                }
                Err(_) => return End::Gone,
            }
            let writing = !self.pending.is_empty();
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        return End::Gone;
                    }
                    let read = DISCARD.with(|buf| self.stream.try_read(&mut buf.borrow_mut()));
                    match read {
                        Ok(0) => return End::Gone,
                        Ok(_) => return End::Spoke,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return End::Gone,
                    }
                }
                _ = self.client.woken() => {
                    if writing {
                        if let Some(reason) = self.client.close_requested() {
                            return End::Close(reason);
                        }
                    }
                }
                ready = self.stream.writable(), if writing => {
                    if ready.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    /// A slow consumer loses what is queued; any other close flushes it first (for at
    /// most `CLOSE_WAIT`). Then the connection closes, which ends the response.
    async fn finish(&mut self, end: End) {
        self.client.detach();
        match end {
            End::Gone | End::Spoke | End::Close(Disconnect::SlowConsumer) => {}
            End::Close(_) => {
                self.client.drain(&mut self.pending);
                let deadline = Instant::now() + CLOSE_WAIT;
                while !self.pending.is_empty() {
                    if self
                        .client
                        .write_pending(&mut self.pending, &*self.stream)
                        .is_err()
                    {
                        return;
                    }
                    if self.pending.is_empty() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, self.stream.writable()).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                if let Some(stream) = Arc::get_mut(&mut self.stream) {
                    let _ = stream.shutdown().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_paths_are_taken() {
        assert!(format_of(b"GET /sse?channels=a HTTP/1.1").is_some());
        assert!(format_of(b"GET /stream HTTP/1.1").is_some());
        assert!(format_of(b"GET /sse2 HTTP/1.1").is_none());
        assert!(format_of(b"GET /ws?channels=a HTTP/1.1").is_none());
        assert!(format_of(b"POST /sse HTTP/1.1").is_none());
    }
}
