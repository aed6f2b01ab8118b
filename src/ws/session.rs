//! One WebSocket connection: reads client frames into a buffer lent per read, writes
//! every queued frame with one vectored write per wake-up, and closes with the right code.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::close::Close;
use super::front::Front;
use super::transport::Transport;
use crate::deflate::Inflater;
use crate::frame::{self, Decoder, Incoming};
use crate::hub::{Client, Kind, Payload};
use crate::limits::Permit;
use crate::model::Disconnect;

/// Bytes read from a socket per `read` call; the buffer is per thread, not per connection.
const READ_BUF: usize = 64 * 1024;
/// How long a closing connection may take to flush and answer our close frame.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(3);

thread_local! {
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// How a session's main loop ended.
#[derive(Debug)]
enum End {
    /// We close: send this close frame (or just drop when it has no code).
    Close(Close),
    /// The client sent a close frame (with this code): answer it.
    ClientClosed(Option<u16>),
    /// The socket failed or hit EOF: nothing more can be sent.
    Gone,
}

/// The frames a session holds for its socket: boxed on purpose (one pointer in the
/// idle session's state instead of the deque's 32 bytes; see issue #18 item 4).
#[allow(clippy::box_collection)]
type Held = Option<Box<VecDeque<Bytes>>>;

/// What a parked session was woken for.
#[derive(Clone, Copy)]
enum Ready {
    /// The socket is readable.
    Read,
    /// Frames were queued or a close was requested.
    Woken,
    /// The socket is writable again.
    Write,
    /// Polling the socket failed.
    Failed,
}

/// A live WebSocket connection of front `F`.
pub struct Session<T, F: Front> {
    /// Shared with the client's outbox while the fan-out flusher may write to it.
    stream: Arc<T>,
    client: Arc<Client>,
    front: F,
    /// The front's state (told the connection ended, once, before its close frame).
    conn: F::Conn,
    decoder: Decoder,
    /// Frames taken from the outbox that the backed-up socket has not taken yet. Boxed
    /// (8 bytes, not 32): an idle session holds none.
    pending: Held,
    _permit: Permit,
}

impl<T: Transport, F: Front> Session<T, F> {
    /// A session for an upgraded stream.
    pub fn new(stream: T, client: Arc<Client>, front: F, conn: F::Conn, permit: Permit) -> Self {
        let mut decoder = Decoder::new(front.app().config.max_message_size);
        if let Some(deflate) = client.deflate() {
            let inflater = Inflater::new(deflate.agreed.client_no_context_takeover);
            decoder = decoder.with_inflater(inflater);
        }
        let stream = Arc::new(stream);
        client.attach(stream.clone());
        Session {
            stream,
            client,
            front,
            conn,
            decoder,
            pending: None,
            _permit: permit,
        }
    }

    /// Serves the connection until it closes, then unregisters the client.
    ///
    /// Not an `async fn`: that would keep the session in its future twice (once as the
    /// argument, once as the local it is moved to; rust-lang/rust#62958), and an idle
    /// connection is mostly this future.
    pub fn run(mut self, leftover: Bytes) -> impl std::future::Future<Output = ()> + Send {
        // Keep no handshake leftovers in the session's state: the decoder holds them
        // until the first decode (and the slice may pin hyper's whole read buffer).
        self.decoder.preload(&leftover);
        drop(leftover);
        async move {
            // The main loop, inline: a separate `serve(&mut self)` future would add its
            // pointer to the session to the idle state (issue #18 item 4).
            let end = 'serve: {
                if self.decoder.has_pending() {
                    // Boxed: a state the session is in once, at most.
                    if let Some(end) = Box::pin(self.handle_preloaded()).await {
                        break 'serve end;
                    }
                }
                loop {
                    // Write what is queued (frames pushed while the socket was backed up
                    // raised no new wake-up), unless a close was requested.
                    match self.write_step() {
                        Ok((written, close)) => {
                            self.count_out(written);
                            if let Some(reason) = close {
                                break 'serve End::Close(self.front.close(reason));
                            }
                        }
                        Err(_) => break 'serve End::Gone,
                    }
                    // A TLS transport may hold records of frames already taken (issue
                    // #18 item 5): then the socket's writability is awaited too.
                    let writing = self.pending.is_some() || self.stream.holds_output();
                    match ready(&*self.stream, &self.client, writing).await {
                        Ready::Failed => break 'serve End::Gone,
                        Ready::Read => {
                            // Boxed: only a connection with data in flight holds read
                            // state.
                            if let Some(end) = Box::pin(self.read()).await {
                                break 'serve end;
                            }
                        }
                        Ready::Woken => {
                            // While the socket is backed up, leave new frames in the
                            // outbox (whose bounds then cut a slow client off); only a
                            // close request is taken.
                            if writing {
                                if let Some(reason) = self.client.close_requested() {
                                    break 'serve End::Close(self.front.close(reason));
                                }
                            }
                        }
                        Ready::Write => {}
                    }
                }
            };
            // Boxed: what a session does once it ends (leave, close frames, disconnect)
            // must not widen the state its future is in while idle (issue #18 item 4).
            Box::pin(self.end(end)).await;
        }
    }

    /// After the main loop: unregisters the client, sends the closing frames, and
    /// disconnects.
    async fn end(mut self, end: End) {
        tracing::debug!(client = %self.client.id, ?end, "session ends");
        // From here on only the session writes (and the socket closes with it).
        self.client.detach();
        // Leave before the close frame goes out (issue #14 item 7): by the time the
        // client sees it, its channels, presence rooms and occupancy are updated, so
        // an API query made then is already true.
        // It stays registered (and counted) until its socket is done with.
        let hub = &self.front.app().hub.clone();
        hub.leave_all(&self.client).await;
        self.front.closed(&mut self.conn, &self.client).await;
        self.finish(end).await;
        hub.disconnect(&self.client).await;
    }

    /// The client's write step (see `Client::write_step`) with the frames the session
    /// holds; they stay boxed only while the socket leaves some unwritten.
    fn write_step(&mut self) -> io::Result<(usize, Option<Disconnect>)> {
        let step = match &mut self.pending {
            Some(held) => self.client.write_step(held, &*self.stream),
            None => {
                let mut held = VecDeque::new();
                let step = self.client.write_step(&mut held, &*self.stream);
                if !held.is_empty() {
                    self.pending = Some(Box::new(held));
                }
                return step;
            }
        };
        if self.pending.as_ref().is_some_and(|held| held.is_empty()) {
            self.pending = None;
        }
        step
    }

    /// Acts on what arrived with the handshake (decoded now, before the first read).
    async fn handle_preloaded(&mut self) -> Option<End> {
        let mut events = Vec::new();
        let decoded = self.decoder.feed(&mut [], &mut events);
        if let Some(end) = self.handle(events).await {
            return Some(end);
        }
        decoded.err().map(|reason| End::Close(reason.into()))
    }

    fn count_out(&self, written: usize) {
        if written > 0 {
            self.front
                .app()
                .hub
                .stats()
                .bytes_out
                .fetch_add(written as u64, Relaxed);
        }
    }

    /// Reads what the socket has and acts on every complete event.
    async fn read(&mut self) -> Option<End> {
        let mut events = Vec::new();
        let decoded = READ.with(|buf| {
            let mut buf = buf.borrow_mut();
            match self.stream.try_read(&mut buf) {
                Ok(0) => Err(End::Gone),
                Ok(n) => {
                    let stats = &self.front.app().hub.stats();
                    stats.bytes_in.fetch_add(n as u64, Relaxed);
                    Ok(self.decoder.feed(&mut buf[..n], &mut events))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Ok(())),
                Err(_) => Err(End::Gone),
            }
        });
        let decoded = match decoded {
            Ok(d) => d,
            Err(end) => return Some(end),
        };
        if !events.is_empty() {
            self.client.seen(self.front.app().hub.now());
        }
        if let Some(end) = self.handle(events).await {
            return Some(end);
        }
        decoded.err().map(|reason| End::Close(reason.into()))
    }

    /// Acts on decoded events in order.
    async fn handle(&mut self, events: Vec<Incoming>) -> Option<End> {
        for event in events {
            let payload = match event {
                Incoming::Text(data) => Payload {
                    kind: Kind::Text,
                    data,
                    event: None,
                },
                Incoming::Binary(data) => Payload {
                    kind: Kind::Binary,
                    data,
                    event: None,
                },
                Incoming::Ping(data) => {
                    self.client.push_own(frame::encode(frame::OP_PONG, &data));
                    continue;
                }
                Incoming::Pong => continue,
                Incoming::Close(code) => return Some(End::ClientClosed(code)),
            };
            let front = &self.front;
            let conn = &mut self.conn;
            if let Some(close) = Box::pin(front.message(conn, &self.client, payload)).await {
                return Some(End::Close(close));
            }
        }
        None
    }

    /// Writes everything pending, waiting for the socket until `deadline`.
    async fn flush(&mut self, deadline: Instant) -> bool {
        loop {
            match self
                .client
                .write_pending(held(&mut self.pending), &*self.stream)
            {
                Ok(n) => self.count_out(n),
                Err(_) => return false,
            }
            if held(&mut self.pending).is_empty() && !self.stream.holds_output() {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.stream.writable()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Sends the closing frames the way the connection ended.
    async fn finish(&mut self, end: End) {
        match end {
            End::Gone => {}
            End::Close(Close { code: None, .. }) => {}
            End::ClientClosed(code) => {
                let reply = match code {
                    Some(code) => frame::close(code, ""),
                    None => frame::encode(frame::OP_CLOSE, b""),
                };
                // What is queued goes first (a flush may have left half a frame there).
                self.client.drain(held(&mut self.pending));
                held(&mut self.pending).push_back(reply);
                self.flush(Instant::now() + CLOSE_WAIT).await;
            }
            End::Close(close) => {
                let code = close.code.expect("matched above");
                // How long the client has to take the close frame (and answer it).
                let slow = close.is_slow_consumer();
                let wait = if slow {
                    // The client is not reading: what is queued is given up, not waited
                    // for, except the rest of a frame already partly written (issue #12).
                    self.client.give_up(held(&mut self.pending));
                    self.front.app().config.slow_close_grace.get()
                } else {
                    // Flush what was queued before the close (e.g. the error replies).
                    self.client.drain(held(&mut self.pending));
                    CLOSE_WAIT
                };
                if let Some(farewell) = self.front.farewell(close) {
                    held(&mut self.pending).push_back(farewell);
                }
                held(&mut self.pending).push_back(frame::close(code, close.text));
                let mut deadline = Instant::now() + wait;
                if !self.flush(deadline).await {
                    return;
                }
                if close.fail {
                    // Failing the connection: we close TCP first, then let the peer finish.
                    if let Some(stream) = Arc::get_mut(&mut self.stream) {
                        let _ = stream.shutdown().await;
                    }
                }
                // A slow consumer's grace covers both; other closes wait afresh.
                if !slow {
                    deadline = Instant::now() + CLOSE_WAIT;
                }
                self.await_close(deadline).await;
            }
        }
    }

    /// After our close frame: discard input until the client's close frame, EOF or
    /// `deadline`.
    async fn await_close(&mut self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                let mut events = Vec::new();
                let done = READ.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    match self.stream.try_read(&mut buf) {
                        Ok(0) => true,
                        Ok(n) => self.decoder.feed(&mut buf[..n], &mut events).is_err(),
                        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                    }
                });
                if done || events.iter().any(|e| matches!(e, Incoming::Close(_))) {
                    return;
                }
            }
        })
        .await;
    }
}

/// Waits for the socket to be readable, the client to be woken (frames queued or a
/// close requested), or, when `writing`, the socket to be writable; in that order
/// when several are. One poll function over the socket's and the client's waker
/// slots: no waiter lists or per-branch futures in the idle session's state.
fn ready<'a, T: Transport>(
    stream: &'a T,
    client: &'a Client,
    writing: bool,
) -> impl std::future::Future<Output = Ready> + Send + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
            return Poll::Ready(if ready.is_ok() {
                Ready::Read
            } else {
                Ready::Failed
            });
        }
        if client.poll_woken(cx).is_ready() {
            return Poll::Ready(Ready::Woken);
        }
        if writing {
            if let Poll::Ready(ready) = stream.poll_write_ready(cx) {
                return Poll::Ready(if ready.is_ok() {
                    Ready::Write
                } else {
                    Ready::Failed
                });
            }
        }
        Poll::Pending
    })
}

/// The frames a session holds, once it closes (and writes them itself).
fn held(pending: &mut Held) -> &mut VecDeque<Bytes> {
    pending.get_or_insert_with(Default::default)
}
