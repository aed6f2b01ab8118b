//! The fan-out flusher. A fan-out push that finds a client's outbox empty hands the
//! client to the flusher, which writes the queued frames straight to the socket
//! (`Client::flush`: one `writev`, no task wake-up or poll) or, when the socket is backed
//! up, wakes the client's session to carry on.
//!
//! Write coalescing: a client flushed less than `window` ms ago waits (at most `window`
//! ms) for the next tick, so under load one `writev` carries several messages. A quiet
//! client is flushed at once (the flusher task is kicked), so latency at low rates is
//! unchanged.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Client;

const LISTS: usize = 16;
/// Clients flushed between two yields of the flusher task, so a long round does not
/// hold up reads and publishes on the same thread.
const YIELD_EVERY: usize = 64;

type List = Box<[Mutex<Vec<Arc<Client>>>]>;

fn lists() -> List {
    (0..LISTS).map(|_| Mutex::new(Vec::new())).collect()
}

/// Clients waiting for a flush, and the coarse clock that times them.
pub struct Coalescer {
    window: u32,
    clock: AtomicU32,
    started: Instant,
    /// Flush as soon as the flusher runs.
    now: List,
    /// Flush at the next tick.
    later: List,
    kick: Notify,
}

impl Coalescer {
    /// Coalescing over `window_ms` (0 = flush every time at once).
    pub fn new(window_ms: u32) -> Self {
        Coalescer {
            window: window_ms,
            clock: AtomicU32::new(0),
            started: Instant::now(),
            now: lists(),
            later: lists(),
            kick: Notify::new(),
        }
    }

    /// Schedules a flush of `client`: now, or at the next tick if it was flushed less
    /// than a window ago. A client waits in at most one list.
    pub fn wake(&self, client: &Arc<Client>) {
        if client.deferred.swap(true, Relaxed) {
            return;
        }
        let shard = (client.id.0 as usize) % LISTS;
        let now = self.clock.load(Relaxed);
        if self.window > 0 && now.wrapping_sub(client.last_wake.load(Relaxed)) < self.window {
            self.later[shard].lock().push(client.clone());
            return;
        }
        let first = {
            let mut list = self.now[shard].lock();
            list.push(client.clone());
            list.len() == 1
        };
        if first {
            self.kick.notify_one();
        }
    }

    /// How often `tick` should run.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from((self.window / 4).max(1)))
    }

    /// Advances the clock and flushes every client waiting for the tick (and any due
    /// now); the bytes written.
    pub async fn tick(&self) -> usize {
        self.clock
            .store(self.started.elapsed().as_millis() as u32, Relaxed);
        self.flush(&self.now).await + self.flush(&self.later).await
    }

    /// Flushes the clients due now; the bytes written.
    pub async fn flush_now(&self) -> usize {
        self.flush(&self.now).await
    }

    /// Waits until a client is due now.
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    async fn flush(&self, lists: &List) -> usize {
        let (mut done, mut bytes) = (0, 0);
        for list in lists.iter() {
            let due = std::mem::take(&mut *list.lock());
            for client in due {
                bytes += self.flush_one(&client);
                done += 1;
                if done % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
        bytes
    }

    fn flush_one(&self, client: &Client) -> usize {
        client.deferred.store(false, Relaxed);
        client.last_wake.store(self.clock.load(Relaxed), Relaxed);
        client.flush()
    }

    /// Flushes everything waiting, without yielding (at shutdown, before the closes);
    /// the bytes written.
    pub fn flush_all(&self) -> usize {
        let mut bytes = 0;
        for list in self.now.iter().chain(self.later.iter()) {
            let due = std::mem::take(&mut *list.lock());
            for client in due {
                bytes += self.flush_one(&client);
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ClientId, Mode, QueueLimits};
    use std::sync::atomic::Ordering::Relaxed;

    fn client(id: u64) -> Arc<Client> {
        let limits = QueueLimits {
            max_frames: 8,
            max_bytes: 1024,
        };
        Arc::new(Client::new(
            ClientId(id),
            Mode::Raw,
            "127.0.0.1:1".parse().unwrap(),
            limits,
            0,
        ))
    }

    fn waiting(lists: &List) -> usize {
        lists.iter().map(|l| l.lock().len()).sum()
    }

    #[tokio::test]
    async fn a_quiet_client_is_flushed_at_once_a_busy_one_at_the_next_tick() {
        let c = Coalescer::new(20);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.tick().await; // clock ≈ 30 ms; the client was last flushed at 0
        let a = client(1);
        c.wake(&a);
        assert_eq!(
            (waiting(&c.now), waiting(&c.later)),
            (1, 0),
            "quiet: due now"
        );
        c.flush_now().await;
        assert_eq!(a.last_wake.load(Relaxed), c.clock.load(Relaxed));
        assert!(!a.deferred.load(Relaxed));
        // Due again within the window: waits for the tick, once however many pushes.
        c.wake(&a);
        c.wake(&a);
        assert_eq!((waiting(&c.now), waiting(&c.later)), (0, 1));
        c.flush_now().await;
        assert_eq!(waiting(&c.later), 1, "not flushed before the tick");
        c.tick().await;
        assert!(!a.deferred.load(Relaxed));
        assert_eq!(waiting(&c.later), 0);
    }

    #[tokio::test]
    async fn window_zero_always_flushes_at_once() {
        let c = Coalescer::new(0);
        let a = client(2);
        c.wake(&a);
        c.flush_now().await;
        c.wake(&a);
        assert_eq!((waiting(&c.now), waiting(&c.later)), (1, 0));
    }
}
