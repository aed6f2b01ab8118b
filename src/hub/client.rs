//! A connected client as the hub sees it: its id, wire format, subscriptions and bounded
//! outbox.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use super::channels::ChannelSet;
use crate::auth::Grant;
use crate::deflate::Deflate;
use crate::model::{ClientId, Disconnect, Format};

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

/// What one fan-out flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Bytes written.
    pub bytes: usize,
    /// Whole frames written.
    pub frames: usize,
}

/// Frames handed to one `writev`.
pub const MAX_IOV: usize = 256;

/// The write half of a client's socket, shared by its session and the fan-out flusher.
/// Every write happens under the client's outbox lock, so the two never interleave.
pub trait Writer: Send + Sync {
    /// Writes what fits without waiting.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Writes what the writer holds of bytes it already took (a TLS session's records
    /// the socket did not take) as far as the socket takes it; true when nothing is left.
    fn flush_buffered(&self) -> io::Result<bool> {
        Ok(true)
    }
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Bytes>,
    bytes: u32,
    close: Option<Disconnect>,
    /// Subscribed channels (bounded-cost membership whatever the count).
    channels: ChannelSet,
    grant: Option<Arc<Grant>>,
    /// The socket, while the flusher may write to it directly.
    writer: Option<Arc<dyn Writer>>,
    /// The session holds unwritten frames (the socket is backed up): only it writes.
    busy: bool,
    /// The next byte for the socket is inside a frame: the front frame (of the session's
    /// pending frames, or of the queue when the session holds none) is partly written.
    /// Whatever is given up, that frame must be finished or the stream is corrupt.
    mid_frame: bool,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.queue.len())
            .field("bytes", &self.bytes)
            .field("close", &self.close)
            .field("direct", &self.writer.is_some())
            .field("busy", &self.busy)
            .field("mid_frame", &self.mid_frame)
            .finish()
    }
}

/// Writes as much of `frames` as the socket takes now, many frames per syscall, dropping
/// what was written (a partly written frame keeps its rest at the front, and
/// `mid_frame` says so). The bytes written; `WouldBlock` is not an error.
fn write_frames(
    writer: &dyn Writer,
    frames: &mut VecDeque<Bytes>,
    mid_frame: &mut bool,
) -> io::Result<usize> {
    let mut total = 0;
    while !frames.is_empty() {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (slot, frame) in iov.iter_mut().zip(frames.iter()) {
            *slot = IoSlice::new(frame);
            n += 1;
        }
        let mut written = match writer.try_write_vectored(&iov[..n]) {
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        };
        total += written;
        while written > 0 {
            let front = frames.front_mut().expect("written bytes were queued");
            if front.len() <= written {
                written -= front.len();
                frames.pop_front();
                *mid_frame = false;
            } else {
                front.advance(written);
                written = 0;
                *mid_frame = true;
            }
        }
    }
    Ok(total)
}

/// A connected client. Shared (`Arc`) between the hub's indexes and its session task.
#[derive(Debug)]
pub struct Client {
    /// The client id.
    pub id: ClientId,
    /// Its wire format.
    pub format: &'static Format,
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
    /// permessage-deflate, when the connection negotiated it.
    deflate: Option<Box<Deflate>>,
}

impl Client {
    /// A client with an empty outbox.
    pub fn new(
        id: ClientId,
        format: &'static Format,
        remote: SocketAddr,
        limits: QueueLimits,
        now: u32,
    ) -> Self {
        Client {
            id,
            format,
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
            deflate: None,
        }
    }

    /// The same client with permessage-deflate negotiated (before it is shared).
    pub fn with_deflate(mut self, deflate: Option<Deflate>) -> Self {
        self.deflate = deflate.map(Box::new);
        self
    }

    /// Its permessage-deflate state, when it negotiated compression.
    pub fn deflate(&self) -> Option<&Deflate> {
        self.deflate.as_deref()
    }

    /// Queues a frame (compressed when the client negotiated permessage-deflate); wakes
    /// the session when the outbox was empty.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let (pushed, wake) = match self.deflate() {
            None => self.push_quiet(frame),
            Some(deflate) => deflate.compress_reply(&frame, |f| self.push_quiet(f)),
        };
        if wake {
            self.notify();
        }
        pushed
    }

    /// Queues a frame exactly as given (already compressed for this client, or plain);
    /// wakes the session when the outbox was empty.
    pub(crate) fn push_as_is(&self, frame: Bytes) -> Pushed {
        let (pushed, wake) = self.push_quiet(frame);
        if wake {
            self.notify();
        }
        pushed
    }

    /// Queues a frame without waking the session; true when it needs a wake-up or a
    /// flush (the outbox was empty). An overflow still wakes it at once, to close.
    pub(crate) fn push_quiet(&self, frame: Bytes) -> (Pushed, bool) {
        let mut out = self.outbox.lock();
        if out.close.is_some() {
            return (Pushed::Closed, false);
        }
        let bytes = out.bytes.saturating_add(frame.len() as u32);
        if out.queue.len() as u32 >= self.limits.max_frames || bytes > self.limits.max_bytes {
            out.close = Some(Disconnect::SlowConsumer);
            // Give up what is queued, but the front frame may be partly written (by the
            // flusher): the session keeps it if so, when it finishes (`give_up`).
            out.queue.truncate(1);
            out.queue.shrink_to_fit();
            out.bytes = out.queue.front().map_or(0, |f| f.len() as u32);
            drop(out);
            self.notify();
            return (Pushed::Overflow, false);
        }
        let was_empty = out.queue.is_empty();
        out.queue.push_back(frame);
        out.bytes = bytes;
        (Pushed::Queued, was_empty)
    }

    /// Queues a frame of the session's own (a pong, an echo reply) without a wake-up:
    /// the session writes it on its next turn. Bounded like every push.
    /// Compressed when the client negotiated permessage-deflate (control frames never).
    pub fn push_own(&self, frame: Bytes) -> Pushed {
        match self.deflate() {
            None => self.push_quiet(frame).0,
            Some(deflate) => deflate.compress_reply(&frame, |f| self.push_quiet(f).0),
        }
    }

    /// Asks the session to close with `reason` once what is queued is written.
    /// The first reason wins.
    pub fn close(&self, reason: Disconnect) {
        let mut out = self.outbox.lock();
        if out.close.is_none() {
            out.close = Some(reason);
            drop(out);
            self.notify();
        }
    }

    /// Lets the fan-out flusher write queued frames straight to `writer`.
    pub fn attach(&self, writer: Arc<dyn Writer>) {
        self.outbox.lock().writer = Some(writer);
    }

    /// Takes the socket back from the flusher: from now on only the session writes.
    pub fn detach(&self) {
        self.outbox.lock().writer = None;
    }

    /// The fan-out flush: writes the queued frames straight to the socket when the
    /// session is parked with nothing of its own to write; otherwise (the socket is
    /// backed up, a close is due, or a write fell short) wakes the session to carry on.
    /// What was written.
    pub fn flush(&self) -> Flushed {
        let mut guard = self.outbox.lock();
        let out = &mut *guard;
        if out.busy || (out.queue.is_empty() && out.close.is_none()) {
            // The session is on it already, or there is nothing to write.
            return Flushed::default();
        }
        let (Some(writer), None) = (&out.writer, out.close) else {
            drop(guard);
            self.notify();
            return Flushed::default();
        };
        let queued = out.queue.len();
        let written = write_frames(&**writer, &mut out.queue, &mut out.mid_frame);
        // Written means on the socket: what a TLS writer still holds needs the session.
        let done = out.queue.is_empty() && matches!(writer.flush_buffered(), Ok(true));
        let frames = queued - out.queue.len();
        if done {
            out.bytes = 0;
            // An idle client keeps no queue (issue #18 item 4: a 64-slot queue kept
            // after traffic is 2 KiB); the next push allocates a small one again.
            out.queue = VecDeque::new();
        } else {
            // Backed up (or failed): the session takes over, waiting for the socket.
            out.busy = true;
        }
        drop(guard);
        if !done {
            self.notify();
        }
        Flushed {
            bytes: written.unwrap_or(0),
            frames,
        }
    }

    /// The session's write step: when it holds nothing, it takes the queue (unless a
    /// close was requested: that reason is returned); then writes what it holds as far
    /// as the socket takes it. Holding the outbox lock, so a flush never interleaves.
    pub fn write_step(
        &self,
        pending: &mut VecDeque<Bytes>,
        writer: &dyn Writer,
    ) -> io::Result<(usize, Option<Disconnect>)> {
        let mut out = self.outbox.lock();
        let mut total = 0;
        loop {
            if pending.is_empty() {
                if let Some(reason) = out.close {
                    out.busy = false;
                    return Ok((total, Some(reason)));
                }
                std::mem::swap(pending, &mut out.queue);
                out.bytes = 0;
                if pending.is_empty() {
                    break;
                }
            }
            let written = write_frames(writer, pending, &mut out.mid_frame);
            out.busy = !pending.is_empty();
            total += written?;
            if out.busy {
                return Ok((total, None));
            }
        }
        out.busy = false;
        // Frames taken but held by the writer (TLS records): out as far as they go; the
        // session waits for the socket while the writer holds some (`holds_output`).
        writer.flush_buffered()?;
        // Nothing held: neither the session nor the outbox keeps a buffer (the swap
        // above may have left either one with the other's).
        *pending = VecDeque::new();
        if out.queue.is_empty() {
            out.queue = VecDeque::new();
        }
        Ok((total, None))
    }

    /// The session's write once the flusher is detached (closing): writes `pending` as
    /// far as the socket takes it. The bytes written.
    pub fn write_pending(
        &self,
        pending: &mut VecDeque<Bytes>,
        writer: &dyn Writer,
    ) -> io::Result<usize> {
        let mut out = self.outbox.lock();
        let written = write_frames(writer, pending, &mut out.mid_frame)?;
        if pending.is_empty() {
            writer.flush_buffered()?;
        }
        Ok(written)
    }

    /// Gives up every frame queued or held in `pending` (the client does not read),
    /// except the rest of a frame already partly written: cutting that one would leave
    /// the client a corrupt stream. What remains in `pending` must be written before
    /// anything else (the close frame).
    pub fn give_up(&self, pending: &mut VecDeque<Bytes>) {
        let mut out = self.outbox.lock();
        if pending.is_empty() {
            std::mem::swap(pending, &mut out.queue);
        }
        out.queue = VecDeque::new();
        out.bytes = 0;
        pending.truncate(usize::from(out.mid_frame));
    }

    /// Moves every queued frame into `into`; returns the close reason if one is set.
    pub fn drain(&self, into: &mut VecDeque<Bytes>) -> Option<Disconnect> {
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
    pub fn close_requested(&self) -> Option<Disconnect> {
        self.outbox.lock().close
    }

    /// Waits until something was queued or a close was requested.
    ///
    /// Only the client's own session may wait (one waker slot).
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| self.poll_woken(cx)).await
    }

    /// Polls for a wake-up (see `woken`); registers the task to be woken otherwise.
    pub fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.wake.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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
        self.outbox.lock().channels.to_vec()
    }

    /// How many channels the client is subscribed to.
    pub fn channel_count(&self) -> usize {
        self.outbox.lock().channels.len()
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
        self.outbox.lock().channels.contains(channel)
    }

    /// Records a subscription; false when already subscribed.
    pub(crate) fn add_channel(&self, channel: &Arc<str>) -> bool {
        self.outbox.lock().channels.insert(channel.clone())
    }

    /// Forgets a subscription; false when it was not subscribed.
    pub(crate) fn remove_channel(&self, channel: &str) -> bool {
        self.outbox.lock().channels.remove(channel)
    }

    /// Forgets every subscription, returning them.
    pub(crate) fn take_channels(&self) -> Vec<Arc<str>> {
        self.outbox.lock().channels.take()
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
