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

/// Clients flushed between two yields of a flusher task, so a long round does not hold
/// up reads and publishes on the same thread.
const YIELD_EVERY: usize = 64;

/// One flusher task's share of the clients (client id modulo the number of lanes), so
/// that on several cores the writes of a fan-out are spread over several threads.
#[derive(Default)]
struct Lane {
    /// Flush as soon as the flusher runs.
    now: Mutex<Vec<Arc<Client>>>,
    /// Flush at the next tick.
    later: Mutex<Vec<Arc<Client>>>,
    kick: Notify,
}

/// Clients waiting for a flush, and the coarse clock that times them.
pub struct Coalescer {
    window: u32,
    clock: AtomicU32,
    started: Instant,
    lanes: Box<[Lane]>,
}

impl Coalescer {
    /// Coalescing over `window_ms` (0 = flush every time at once), with `lanes` flusher
    /// tasks (at least one).
    pub fn new(window_ms: u32, lanes: usize) -> Self {
        Coalescer {
            window: window_ms,
            clock: AtomicU32::new(0),
            started: Instant::now(),
            lanes: (0..lanes.max(1)).map(|_| Lane::default()).collect(),
        }
    }

    /// How many flusher tasks to run (`run_lane(0..lanes())`).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Schedules a flush of `client`: now, or at the next tick if it was flushed less
    /// than a window ago. A client waits in at most one list.
    pub fn wake(&self, client: &Arc<Client>) {
        if client.deferred.swap(true, Relaxed) {
            return;
        }
        let lane = &self.lanes[(client.id.0 as usize) % self.lanes.len()];
        let now = self.clock.load(Relaxed);
        if self.window > 0 && now.wrapping_sub(client.last_wake.load(Relaxed)) < self.window {
            lane.later.lock().push(client.clone());
            return;
        }
        let first = {
            let mut list = lane.now.lock();
            list.push(client.clone());
            list.len() == 1
        };
        if first {
            lane.kick.notify_one();
        }
    }

    /// How often a lane ticks.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from((self.window / 4).max(1)))
    }

    /// Advances the clock and flushes every client of lane `i` waiting for the tick (and
    /// any due now); the bytes written.
    pub async fn tick(&self, i: usize) -> usize {
        self.clock
            .store(self.started.elapsed().as_millis() as u32, Relaxed);
        let lane = &self.lanes[i];
        self.flush(&lane.now).await + self.flush(&lane.later).await
    }

    /// Flushes the clients of lane `i` due now; the bytes written.
    pub async fn flush_now(&self, i: usize) -> usize {
        self.flush(&self.lanes[i].now).await
    }

    /// Waits until a client of lane `i` is due now.
    pub async fn kicked(&self, i: usize) {
        self.lanes[i].kick.notified().await
    }

    async fn flush(&self, list: &Mutex<Vec<Arc<Client>>>) -> usize {
        let due = std::mem::take(&mut *list.lock());
        let mut bytes = 0;
        for (done, client) in due.iter().enumerate() {
            bytes += self.flush_one(client);
            if done % YIELD_EVERY == YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
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
        for lane in self.lanes.iter() {
            for list in [&lane.now, &lane.later] {
                let due = std::mem::take(&mut *list.lock());
                for client in due {
                    bytes += self.flush_one(&client);
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ClientId, QueueLimits};
    use crate::model::PLAIN;
    use std::sync::atomic::Ordering::Relaxed;

    fn client(id: u64) -> Arc<Client> {
        let limits = QueueLimits {
            max_frames: 8,
            max_bytes: 1024,
        };
        Arc::new(Client::new(
            ClientId(id),
            &PLAIN,
            "127.0.0.1:1".parse().unwrap(),
            limits,
            0,
        ))
    }

    /// Clients waiting (due now, due at the tick) over every lane.
    fn waiting(c: &Coalescer) -> (usize, usize) {
        let now = c.lanes.iter().map(|l| l.now.lock().len()).sum();
        let later = c.lanes.iter().map(|l| l.later.lock().len()).sum();
        (now, later)
    }

    #[tokio::test]
    async fn a_quiet_client_is_flushed_at_once_a_busy_one_at_the_next_tick() {
        let c = Coalescer::new(20, 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.tick(0).await; // clock ≈ 30 ms; the client was last flushed at 0
        let a = client(1);
        c.wake(&a);
        assert_eq!(waiting(&c), (1, 0), "quiet: due now");
        c.flush_now(0).await;
        assert_eq!(a.last_wake.load(Relaxed), c.clock.load(Relaxed));
        assert!(!a.deferred.load(Relaxed));
        // Due again within the window: waits for the tick, once however many pushes.
        c.wake(&a);
        c.wake(&a);
        assert_eq!(waiting(&c), (0, 1));
        c.flush_now(0).await;
        assert_eq!(waiting(&c), (0, 1), "not flushed before the tick");
        c.tick(0).await;
        assert!(!a.deferred.load(Relaxed));
        assert_eq!(waiting(&c), (0, 0));
    }

    #[tokio::test]
    async fn window_zero_always_flushes_at_once() {
        let c = Coalescer::new(0, 1);
        let a = client(2);
        c.wake(&a);
        c.flush_now(0).await;
        c.wake(&a);
        assert_eq!(waiting(&c), (1, 0));
    }

    #[tokio::test]
    async fn clients_are_spread_over_the_lanes() {
        let c = Coalescer::new(0, 3);
        for id in 0..6 {
            c.wake(&client(id));
        }
        let per_lane: Vec<usize> = c.lanes.iter().map(|l| l.now.lock().len()).collect();
        assert_eq!(per_lane, [2, 2, 2]);
        assert_eq!(c.flush_now(1).await, 0, "nothing queued, nothing written");
        assert_eq!(waiting(&c), (4, 0));
    }
}
