//! `Feed`: a streaming client's response body, fed from its outbox; and `Watch`, through
//! which the HTTP connection's task notices a close even while hyper, backed up by a
//! client that does not read, no longer polls the body.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use parking_lot::Mutex;

use crate::hub::Client;
use crate::limits::Permit;
use crate::model::Disconnect;
use crate::state::AppState;

/// The streaming client of one HTTP connection, if any, for the connection's task
/// (`server::run` puts one in every request's extensions).
#[derive(Debug, Default)]
pub struct Watch {
    client: Mutex<Option<Arc<Client>>>,
}

impl Watch {
    /// Resolves once the connection's streaming client was asked to close (slow, kicked,
    /// timed out, shutting down). Polled by the connection's task beside the connection
    /// itself, so it sees the close even when hyper does not poll the body; the task
    /// then gives the connection a short while to end and drops it.
    pub async fn closing(&self) {
        std::future::poll_fn(|cx| {
            let Some(client) = self.client.lock().clone() else {
                // Nothing streams yet: the task is polled again whenever the connection
                // makes progress, and a feed registers the task's waker when it starts.
                return Poll::Pending;
            };
            loop {
                if client.close_requested().is_some() {
                    return Poll::Ready(());
                }
                // The same task's waker as the feed's: whichever registers it, a push
                // or a close request wakes the connection's task.
                if pin!(client.woken()).poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    fn set(&self, client: Option<Arc<Client>>) {
        *self.client.lock() = client;
    }
}

/// A streaming client's response body: each poll takes what its outbox holds (every
/// queued frame, one chunk), so the outbox bounds a client that does not read exactly as
/// it bounds a WebSocket client. The end: a close request ends the body (a slow consumer's
/// with an error, so hyper drops the connection instead of flushing to it); dropping it
/// unregisters the client.
pub struct Feed {
    app: AppState,
    client: Arc<Client>,
    queue: VecDeque<Bytes>,
    watch: Option<Arc<Watch>>,
    done: bool,
    _permit: Permit,
}

impl Feed {
    /// The body of `client`'s stream (its channels subscribed, its first frames queued).
    pub fn new(
        app: AppState,
        client: Arc<Client>,
        watch: Option<Arc<Watch>>,
        permit: Permit,
    ) -> Self {
        if let Some(watch) = &watch {
            watch.set(Some(client.clone()));
        }
        Feed {
            app,
            client,
            queue: VecDeque::new(),
            watch,
            done: false,
            _permit: permit,
        }
    }

    /// Everything queued, as one chunk.
    fn chunk(&mut self) -> Bytes {
        if self.queue.len() == 1 {
            return self.queue.pop_front().expect("one frame");
        }
        let len = self.queue.iter().map(Bytes::len).sum();
        let mut chunk = BytesMut::with_capacity(len);
        for frame in self.queue.drain(..) {
            chunk.extend_from_slice(&frame);
        }
        if self.queue.capacity() > 64 {
            self.queue = VecDeque::new();
        }
        chunk.freeze()
    }
}

impl Stream for Feed {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let close = this.client.drain(&mut this.queue);
            if !this.queue.is_empty() {
                let chunk = this.chunk();
                let hub = &this.app.hub;
                // hyper takes the chunk: the peer is reading (or its buffers have room).
                this.client.seen(hub.now());
                hub.stats().bytes_out.fetch_add(chunk.len() as u64, Relaxed);
                return Poll::Ready(Some(Ok(chunk)));
            }
            if let Some(reason) = close {
                this.done = true;
                if reason == Disconnect::SlowConsumer {
                    return Poll::Ready(Some(Err(io::Error::other(
                        "slow consumer: its outbox overflowed",
                    ))));
                }
                return Poll::Ready(None);
            }
            if pin!(this.client.woken()).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.set(None);
        }
        let hub = self.app.hub.clone();
        let client = self.client.clone();
        self.app.shutdown.tracker.spawn(async move {
            hub.disconnect(&client).await;
        });
    }
}
