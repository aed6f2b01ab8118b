//! A connected client as the hub sees it: its id, mode, subscriptions and bounded outbox.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::auth::Grant;
use crate::ws::close::CloseReason;

/// A client id, shown as `c-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("c-")
            .and_then(|n| n.parse().ok())
            .map(ClientId)
            .ok_or(())
    }
}

/// Which wire format a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bare data frames.
    Raw,
    /// `wspush.v1` JSON objects.
    Json,
    /// Pusher Channels protocol 7 (`/app/{key}`).
    Pusher,
}

impl Mode {
    /// Lower-case name for APIs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Json => "json",
            Mode::Pusher => "pusher",
        }
    }
}

/// Bounds of a client's outbox; overflowing either closes the client with 1013.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most frames queued.
    pub max_frames: u32,
    /// Most bytes queued.
    pub max_bytes: u32,
}

/// What `Client::push` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for writing.
    Queued,
    /// The outbox overflowed: the client is being disconnected as too slow.
    Overflow,
    /// The client is already closing; the frame was not queued.
    Closed,
}

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Bytes>,
    bytes: u32,
    close: Option<CloseReason>,
    channels: Vec<Arc<str>>,
    grant: Option<Arc<Grant>>,
}

/// A connected client. Shared (`Arc`) between the hub's indexes and its session task.
#[derive(Debug)]
pub struct Client {
    /// The client id.
    pub id: ClientId,
    /// Wire format.
    pub mode: Mode,
    /// The peer address.
    pub remote: SocketAddr,
    /// Seconds since the hub started when the client last sent anything.
    last_seen: AtomicU32,
    /// When the server last pinged the client (seconds since the hub started).
    last_ping: AtomicU32,
    /// When the client's token expires (Unix seconds; 0 = no token).
    expires: AtomicU64,
    limits: QueueLimits,
    outbox: Mutex<Outbox>,
    /// When the session was last woken for fan-out (coarse ms, see `Coalescer`), and
    /// whether it waits in the coalescer's list.
    pub(crate) last_wake: AtomicU32,
    pub(crate) deferred: AtomicBool,
    /// The session's waker, and whether a wake-up is pending for it.
    wake: AtomicWaker,
    woken: AtomicBool,
}

impl Client {
    /// A client with an empty outbox.
    pub fn new(
        id: ClientId,
        mode: Mode,
        remote: SocketAddr,
        limits: QueueLimits,
        now: u32,
    ) -> Self {
        Client {
            id,
            mode,
            remote,
            expires: AtomicU64::new(0),
            last_ping: AtomicU32::new(0),
            last_seen: AtomicU32::new(now),
            limits,
            outbox: Mutex::new(Outbox::default()),
            last_wake: AtomicU32::new(0),
            deferred: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            woken: AtomicBool::new(false),
        }
    }

    /// Queues a frame; wakes the session when the outbox was empty.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let (pushed, wake) = self.push_quiet(frame);
        if wake {
            self.notify();
        }
        pushed
    }

    /// Queues a frame without waking the session; true when it needs a wake-up (the
    /// outbox was empty). An overflow still wakes it at once, to close.
    pub(crate) fn push_quiet(&self, frame: Bytes) -> (Pushed, bool) {
        let mut out = self.outbox.lock();
        if out.close.is_some() {
            return (Pushed::Closed, false);
        }
        let bytes = out.bytes.saturating_add(frame.len() as u32);
        if out.queue.len() as u32 >= self.limits.max_frames || bytes > self.limits.max_bytes {
            out.close = Some(CloseReason::SlowConsumer);
            out.queue = VecDeque::new();
            out.bytes = 0;
            drop(out);
            self.notify();
            return (Pushed::Overflow, false);
        }
        let was_empty = out.queue.is_empty();
        out.queue.push_back(frame);
        out.bytes = bytes;
        (Pushed::Queued, was_empty)
    }

    /// Asks the session to close with `reason` once what is queued is written.
    /// The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut out = self.outbox.lock();
        if out.close.is_none() {
            out.close = Some(reason);
            drop(out);
            self.notify();
        }
    }

    /// Moves every queued frame into `into`; returns the close reason if one is set.
    pub fn drain(&self, into: &mut VecDeque<Bytes>) -> Option<CloseReason> {
        let mut out = self.outbox.lock();
        if into.is_empty() {
            std::mem::swap(into, &mut out.queue);
        } else {
            into.extend(out.queue.drain(..));
        }
        out.bytes = 0;
        out.close
    }

    /// The close reason, if a close was requested.
    pub fn close_requested(&self) -> Option<CloseReason> {
        self.outbox.lock().close
    }

    /// Waits until something was queued or a close was requested.
    ///
    /// Only the client's own session may wait (one waker slot).
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.wake.register(cx.waker());
            if self.woken.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn notify(&self) {
        self.woken.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// Records activity from the peer.
    pub fn seen(&self, now: u32) {
        if self.last_seen.load(Ordering::Relaxed) != now {
            self.last_seen.store(now, Ordering::Relaxed);
        }
    }

    /// Records that the server pinged the client at `now`.
    pub fn pinged(&self, now: u32) {
        self.last_ping.store(now, Ordering::Relaxed);
    }

    /// When the server last pinged the client.
    pub fn last_ping(&self) -> u32 {
        self.last_ping.load(Ordering::Relaxed)
    }

    /// When the peer last sent anything (seconds since the hub started).
    pub fn last_seen(&self) -> u32 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Channels the client is subscribed to.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.outbox.lock().channels.clone()
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<Arc<str>> {
        self.outbox.lock().grant.as_ref().map(|g| g.user.clone())
    }

    /// What the client's token grants, if it has one.
    pub fn grant(&self) -> Option<Arc<Grant>> {
        self.outbox.lock().grant.clone()
    }

    /// Sets (or refreshes) the client's token grant.
    pub(crate) fn set_grant(&self, grant: Arc<Grant>) {
        self.expires.store(grant.exp, Ordering::Relaxed);
        self.outbox.lock().grant = Some(grant);
    }

    /// When the token expires (Unix seconds), 0 without a token.
    pub fn expires(&self) -> u64 {
        self.expires.load(Ordering::Relaxed)
    }

    /// True when subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.outbox.lock().channels.iter().any(|c| &**c == channel)
    }

    /// Records a subscription; false when already subscribed.
    pub(crate) fn add_channel(&self, channel: &Arc<str>) -> bool {
        let mut out = self.outbox.lock();
        if out.channels.iter().any(|c| c == channel) {
            return false;
        }
        out.channels.push(channel.clone());
        true
    }

    /// Forgets a subscription; false when it was not subscribed.
    pub(crate) fn remove_channel(&self, channel: &str) -> bool {
        let mut out = self.outbox.lock();
        let before = out.channels.len();
        out.channels.retain(|c| &**c != channel);
        out.channels.len() != before
    }

    /// Forgets every subscription, returning them.
    pub(crate) fn take_channels(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.outbox.lock().channels)
    }
}
