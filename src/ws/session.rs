//! One WebSocket connection: reads client frames into a buffer lent per read, writes
//! every queued frame with one vectored write per wake-up, and closes with the right code.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{Bucket, Permit};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::close::CloseReason;
use super::commands::{self, JsonState};
use super::frame::{self, Decoder, Incoming};
use super::transport::Transport;
use crate::http::AppState;
use crate::hub::{Client, Kind, Mode, Payload};
use crate::protocol::json;
use serde_json::Value;

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
    /// We close: send a close frame with this reason (or just drop for `Abort`).
    Close(CloseReason),
    /// The client sent a close frame (with this code): answer it.
    ClientClosed(Option<u16>),
    /// The socket failed or hit EOF: nothing more can be sent.
    Gone,
}

/// A live WebSocket connection.
pub struct Session<T> {
    /// Shared with the client's outbox while the fan-out flusher may write to it.
    stream: Arc<T>,
    client: Arc<Client>,
    app: AppState,
    decoder: Decoder,
    pending: VecDeque<Bytes>,
    json: JsonState,
    _permit: Permit,
}

impl<T: Transport> Session<T> {
    /// A session for an upgraded stream.
    pub fn new(stream: T, client: Arc<Client>, app: AppState, permit: Permit) -> Self {
        let decoder = Decoder::new(app.config.max_message_size);
        let stream = Arc::new(stream);
        client.attach(stream.clone());
        Session {
            stream,
            client,
            app,
            decoder,
            pending: VecDeque::new(),
            json: JsonState::default(),
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
            let end = self.serve().await;
            tracing::debug!(client = %self.client.id, ?end, "session ends");
            // Futures used once or rarely are boxed: an idle session's task stays small.
            Box::pin(self.finish(end)).await;
            Box::pin(Self::abandon(&self.app, &self.client)).await;
        }
    }

    /// Forgets a client whose connection ended (or never started): the hub's indexes,
    /// presence, and the protocol front's own state.
    pub async fn abandon(app: &AppState, client: &Arc<Client>) {
        app.hub.disconnect(client).await;
        if client.mode == Mode::Pusher {
            crate::pusher::protocol::closed(app, client).await;
        }
    }

    async fn serve(&mut self) -> End {
        if self.decoder.has_pending() {
            let mut events = Vec::new();
            let decoded = self.decoder.feed(&mut [], &mut events);
            if let Some(end) = Box::pin(self.handle(events)).await {
                return end;
            }
            if let Err(reason) = decoded {
                return End::Close(reason);
            }
        }
        loop {
            // Write what is queued (frames pushed while the socket was backed up raised
            // no new wake-up), unless a close was requested.
            match self.client.write_step(&mut self.pending, &*self.stream) {
                Ok((written, close)) => {
                    self.count_out(written);
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
                    // Boxed: only a connection with data in flight holds read state.
                    if let Some(end) = Box::pin(self.read()).await {
                        return end;
                    }
                }
                _ = self.client.woken() => {
                    // While the socket is backed up, leave new frames in the outbox (whose
                    // bounds then cut a slow client off); only a close request is taken.
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

    fn count_out(&self, written: usize) {
        if written > 0 {
            self.app
                .hub
                .registry()
                .stats
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
                    self.app
                        .hub
                        .registry()
                        .stats
                        .bytes_in
                        .fetch_add(n as u64, Relaxed);
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
            let registry = self.app.hub.registry();
            self.client.seen(registry.now());
        }
        if let Some(end) = self.handle(events).await {
            return Some(end);
        }
        decoded.err().map(End::Close)
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
            if self.client.mode == Mode::Pusher {
                if let Some(reason) = Box::pin(crate::pusher::protocol::handle(
                    &self.app,
                    &self.client,
                    payload,
                ))
                .await
                {
                    return Some(End::Close(reason));
                }
                continue;
            }
            if self.client.mode == Mode::Json {
                if let Some(end) = Box::pin(self.command(payload)).await {
                    return Some(end);
                }
                continue;
            }
            let upstream = &self.app.upstream;
            if upstream.echoes() {
                self.app
                    .hub
                    .registry()
                    .stats
                    .upstream_messages
                    .fetch_add(1, Relaxed);
                self.client.push_own(payload.raw_frame());
                continue;
            }
            // Republishing and webhooks are work for others: they cost command budget,
            // and a raw client (which has no error replies) that overspends is closed.
            let (rate, burst) = self.app.config.command_budget();
            if upstream.costs_budget()
                && !Bucket::take_from(&mut self.json.budget, 1.0, rate, burst)
            {
                self.app
                    .hub
                    .registry()
                    .stats
                    .rate_limited
                    .fetch_add(1, Relaxed);
                return Some(End::Close(CloseReason::Policy));
            }
            if let Some(reply) = Box::pin(upstream.handle(self.client.id, &payload)).await {
                self.client.push_own(reply.raw_frame());
            }
        }
        None
    }

    /// Runs one JSON-mode command; too many malformed ones close the connection (1008).
    async fn command(&mut self, payload: Payload) -> Option<End> {
        let (rate, burst) = self.app.config.command_budget();
        let limit = self.app.config.command_size_limit();
        let result = if !Bucket::take_from(&mut self.json.budget, 1.0, rate, burst) {
            // Refused before parsing: a flood costs the server as little as possible.
            let stats = &self.app.hub.registry().stats;
            stats.rate_limited.fetch_add(1, Relaxed);
            Err((Value::Null, commands::over_budget(&self.app)))
        } else if payload.kind == Kind::Binary {
            Err((
                Value::Null,
                json::Error::new("bad_request", "binary frames are not wspush.v1 commands"),
            ))
        } else if payload.data.len() > limit {
            // issue #12 item 9: refused unread (so its id is unknown).
            let message = format!(
                "the command is {} bytes; the limit is {limit} (max_command_size)",
                payload.data.len()
            );
            Err((Value::Null, json::Error::new("too_large", message)))
        } else {
            match json::parse(&payload.data) {
                Ok(cmd) => {
                    let id = cmd.id.clone();
                    commands::execute(&self.app, &self.client, &mut self.json, cmd)
                        .await
                        .map_err(|e| (id, e))
                }
                Err(rejected) => Err(*rejected),
            }
        };
        let (id, err) = result.err()?;
        self.app
            .hub
            .registry()
            .push_frame(&self.client, json::error(&id, &err));
        if err.code == "unauthorized" {
            return Some(End::Close(CloseReason::Policy));
        }
        if err.is_protocol_error() {
            self.json.protocol_errors += 1;
            if self.json.protocol_errors > self.app.config.max_protocol_errors {
                return Some(End::Close(CloseReason::Policy));
            }
        }
        None
    }

    /// Writes everything pending, waiting for the socket until `deadline`.
    async fn flush(&mut self, deadline: Instant) -> bool {
        loop {
            match self.client.write_pending(&mut self.pending, &*self.stream) {
                Ok(n) => self.count_out(n),
                Err(_) => return false,
            }
            if self.pending.is_empty() {
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
        // From here on only the session writes (and the socket closes with it).
        self.client.detach();
        match end {
            End::Gone | End::Close(CloseReason::Abort) => {}
            End::ClientClosed(code) => {
                let reply = match code {
                    Some(code) => frame::close(code, ""),
                    None => frame::encode(frame::OP_CLOSE, b""),
                };
                // What is queued goes first (a flush may have left half a frame there).
                self.client.drain(&mut self.pending);
                self.pending.push_back(reply);
                self.flush(Instant::now() + CLOSE_WAIT).await;
            }
            End::Close(mut reason) => {
                if self.client.mode == Mode::Pusher && reason == CloseReason::GoingAway {
                    reason = CloseReason::PusherGoingAway;
                }
                // How long the client has to take the close frame (and answer it).
                let wait = if reason == CloseReason::SlowConsumer {
                    // The client is not reading: what is queued is given up, not waited
                    // for, except the rest of a frame already partly written (issue #12).
                    self.client.give_up(&mut self.pending);
                    Duration::from_secs(self.app.config.slow_close_grace)
                } else {
                    // Flush what was queued before the close (e.g. the error replies).
                    self.client.drain(&mut self.pending);
                    CLOSE_WAIT
                };
                let code = reason.code().expect("only Abort has no code");
                if self.client.mode == Mode::Pusher && code >= 4000 {
                    // Pusher clients learn why from a `pusher:error` before the close frame.
                    self.pending
                        .push_back(crate::pusher::protocol::error_frame(code, reason.text()));
                }
                self.pending.push_back(frame::close(code, reason.text()));
                let mut deadline = Instant::now() + wait;
                if !self.flush(deadline).await {
                    return;
                }
                if reason.fails_connection() {
                    // Failing the connection: we close TCP first, then let the peer finish.
                    if let Some(stream) = Arc::get_mut(&mut self.stream) {
                        let _ = stream.shutdown().await;
                    }
                }
                // A slow consumer's grace covers both; other closes wait afresh.
                if reason != CloseReason::SlowConsumer {
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
