//! The fan-out flusher. A fan-out push that finds a client's outbox empty hands the
//! client to the flusher, which writes the queued frames straight to the socket
//! (`Client::flush`: one `writev`, no task wake-up or poll) or, when the socket is backed
//! up, wakes the client's session to carry on.
//!
//! Write coalescing, adaptive (issue #18 items 2 and 3): a client is flushed at once
//! (the flusher task is kicked) unless its lane is busy (`pace::Meter`: the share of time
//! the lane would spend writing every frame apart is high) and the client was flushed
//! within the lane's flush interval; then it waits for the lane's next flush of waiting
//! clients: every tick (a quarter window) or, the busier the lane, every few ticks up to
//! three quarters of the window (`pace::stretch`), so one `writev` carries several
//! messages. A client whose messages come further apart than that interval gains nothing
//! by waiting and is written at once. Even flushed at once, a lane batches by itself when
//! busy: a client already waiting to be flushed takes new frames into the same write.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::pace::Meter;
use super::Client;

/// Clients flushed between two yields of a flusher task, so a long round does not hold
/// up reads and publishes on the same thread.
const YIELD_EVERY: usize = 64;

/// One flusher task's share of the clients (client id modulo the number of lanes), so
/// that on several cores the writes of a fan-out are spread over several threads.
struct Lane {
    /// Flush as soon as the flusher runs.
    now: Mutex<Vec<Arc<Client>>>,
    /// Flush at the next tick.
    later: Mutex<Vec<Arc<Client>>>,
    kick: Notify,
    /// Busy enough that recently flushed clients wait for the tick (`meter` decides).
    batching: AtomicBool,
    /// Ticks between two flushes of `later` (`meter` decides; 1 when not batching).
    stretch: AtomicU32,
    /// Ticks since `later` was last flushed (only the lane's own task touches it).
    ticks: AtomicU32,
    meter: Mutex<Meter>,
}

impl Lane {
    fn new(now: Instant) -> Self {
        Lane {
            now: Mutex::default(),
            later: Mutex::default(),
            kick: Notify::new(),
            batching: AtomicBool::new(false),
            stretch: AtomicU32::new(1),
            ticks: AtomicU32::new(0),
            meter: Mutex::new(Meter::new(now)),
        }
    }
}

/// The coalescing decision: does a client whose outbox just got its first frame wait
/// for its lane's next flush? Only when the lane is busy and the client was flushed less
/// than `interval` ms ago (`now` and `last_flush` on the coarse clock), `interval` being
/// how often the lane flushes waiting clients (0: coalescing off). A client flushed
/// longer ago than that would get its next message no sooner by waiting (nothing more
/// would come to share the write), so it is written at once: a busy lane with many
/// clients each getting 100 msg/s adds no latency to them (issue #18 item 2).
pub(crate) fn waits_for_tick(interval: u32, now: u32, last_flush: u32, busy: bool) -> bool {
    interval > 0 && busy && now.wrapping_sub(last_flush) < interval
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
        let started = Instant::now();
        Coalescer {
            window: window_ms,
            clock: AtomicU32::new(0),
            started,
            lanes: (0..lanes.max(1)).map(|_| Lane::new(started)).collect(),
        }
    }

    /// How many flusher tasks to run (`run_lane(0..lanes())`).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Schedules a flush of `client`: now, or at its lane's next flush of waiting clients
    /// if the lane is busy and the client was flushed less than that flush interval ago
    /// (`waits_for_tick`). A client waits in at most one list.
    pub fn wake(&self, client: &Arc<Client>) {
        if client.deferred.swap(true, Relaxed) {
            return;
        }
        let lane = &self.lanes[(client.id.0 as usize) % self.lanes.len()];
        let now = self.clock.load(Relaxed);
        let last = client.last_wake.load(Relaxed);
        let interval = if self.window == 0 {
            0
        } else {
            self.period_ms() * lane.stretch.load(Relaxed)
        };
        if waits_for_tick(interval, now, last, lane.batching.load(Relaxed)) {
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
        Duration::from_millis(u64::from(self.period_ms()))
    }

    fn period_ms(&self) -> u32 {
        (self.window / 4).max(1)
    }

    /// Advances the clock, flushes the clients of lane `i` due now and, every
    /// `stretch` ticks, those waiting; once a measuring window is over, decides whether
    /// the lane batches and its stretch. The bytes written.
    pub async fn tick(&self, i: usize) -> usize {
        self.clock
            .store(self.started.elapsed().as_millis() as u32, Relaxed);
        let lane = &self.lanes[i];
        let mut bytes = self.flush(lane, &lane.now).await;
        let ticks = lane.ticks.load(Relaxed) + 1;
        if ticks >= lane.stretch.load(Relaxed) {
            lane.ticks.store(0, Relaxed);
            bytes += self.flush(lane, &lane.later).await;
        } else {
            lane.ticks.store(ticks, Relaxed);
        }
        let mode = lane.meter.lock().sample(Instant::now());
        lane.batching.store(mode.batching, Relaxed);
        lane.stretch.store(mode.stretch, Relaxed);
        bytes
    }

    /// Flushes the clients of lane `i` due now; the bytes written.
    pub async fn flush_now(&self, i: usize) -> usize {
        let lane = &self.lanes[i];
        self.flush(lane, &lane.now).await
    }

    /// Whether lane `i` batches now (see `pace`).
    pub fn batching(&self, i: usize) -> bool {
        self.lanes[i].batching.load(Relaxed)
    }

    /// Ticks between two flushes of lane `i`'s waiting clients (see `pace::stretch`).
    pub fn stretch(&self, i: usize) -> u32 {
        self.lanes[i].stretch.load(Relaxed)
    }

    /// Waits until a client of lane `i` is due now.
    pub async fn kicked(&self, i: usize) {
        self.lanes[i].kick.notified().await
    }

    /// Flushes the clients in `list`, timing the work (not the yields) for the lane's
    /// meter; the bytes written.
    async fn flush(&self, lane: &Lane, list: &Mutex<Vec<Arc<Client>>>) -> usize {
        let due = std::mem::take(&mut *list.lock());
        if due.is_empty() {
            return 0;
        }
        let (mut bytes, mut frames, mut writes) = (0, 0, 0);
        let mut busy = Duration::ZERO;
        for chunk in due.chunks(YIELD_EVERY) {
            let start = Instant::now();
            for client in chunk {
                let flushed = self.flush_one(client);
                bytes += flushed.bytes;
                frames += flushed.frames as u64;
                writes += u64::from(flushed.bytes > 0);
            }
            busy += start.elapsed();
            if chunk.len() == YIELD_EVERY {
                tokio::task::yield_now().await;
            }
        }
        lane.meter.lock().record(busy, frames, writes);
        bytes
    }

    fn flush_one(&self, client: &Client) -> super::client::Flushed {
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
                    bytes += self.flush_one(&client).bytes;
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::pace;
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

    // issue #18 item 2: the decision, case by case.
    #[test]
    fn only_a_recently_flushed_client_of_a_busy_lane_waits_for_the_tick() {
        // (flush interval, now, last flush, lane busy) -> waits
        let cases = [
            ((5, 100, 97, true), true),
            ((5, 100, 97, false), false), // the core has time: at once
            ((5, 100, 90, true), false),  // 100 msg/s to this client: waiting shares nothing
            ((15, 100, 90, true), true),  // a lane flushing every 15 ms: it shares a write
            ((0, 100, 99, true), false),  // coalescing off
            ((5, 1, u32::MAX - 2, true), true), // the coarse clock wrapped
        ];
        for ((interval, now, last, busy), waits) in cases {
            assert_eq!(
                waits_for_tick(interval, now, last, busy),
                waits,
                "{interval} {now} {last} {busy}"
            );
        }
    }

    // issue #18 item 2: at a low rate (lane not busy) a client written a moment ago is
    // flushed at once again, not at the next tick.
    #[tokio::test]
    async fn an_idle_lane_flushes_a_recently_written_client_at_once() {
        let c = Coalescer::new(20, 1);
        let a = client(1);
        assert!(!c.batching(0));
        c.wake(&a);
        c.flush_now(0).await;
        c.wake(&a); // within the window
        assert_eq!(waiting(&c), (1, 0), "due now, not at the tick");
        c.flush_now(0).await;
        assert_eq!(waiting(&c), (0, 0));
    }

    #[tokio::test]
    async fn a_busy_lane_makes_a_recently_written_client_wait_for_the_tick() {
        let c = Coalescer::new(20, 1);
        c.lanes[0].batching.store(true, Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.tick(0).await; // clock ≈ 30 ms; the client was last flushed at 0
        c.lanes[0].batching.store(true, Relaxed);
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

    // issue #18 item 2: the lane's meter sees the flusher's writes: a lane writing
    // continuously for a whole window starts batching at the next tick.
    #[tokio::test]
    async fn a_lane_that_writes_all_the_time_starts_batching() {
        let c = Coalescer::new(20, 1);
        let t0 = Instant::now();
        c.lanes[0].meter.lock().record(pace::SAMPLE, 1000, 1000);
        while t0.elapsed() < pace::SAMPLE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.tick(0).await;
        assert!(c.batching(0));
    }

    // issue #18 item 3: a lane that would need several cores to write every frame apart
    // lets waiting clients wait several ticks (up to `MAX_STRETCH`), so each write carries
    // more messages; once the load is gone it flushes at once again.
    #[tokio::test]
    async fn a_very_busy_lane_flushes_waiting_clients_every_few_ticks() {
        let c = Coalescer::new(20, 1);
        let t0 = Instant::now();
        // 5 cores' worth: 50 ms busy of 50, 5 frames a write.
        c.lanes[0].meter.lock().record(pace::SAMPLE, 5000, 1000);
        while t0.elapsed() < pace::SAMPLE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.tick(0).await;
        assert!(c.batching(0));
        assert_eq!(c.stretch(0), pace::MAX_STRETCH);
        let a = client(1);
        a.last_wake.store(c.clock.load(Relaxed), Relaxed);
        c.wake(&a);
        assert_eq!(waiting(&c), (0, 1), "flushed just now: waits");
        let mut ticks = 0;
        while waiting(&c).1 == 1 && ticks < 10 {
            c.tick(0).await;
            ticks += 1;
        }
        assert_eq!(waiting(&c), (0, 0));
        assert!(
            (2..=pace::MAX_STRETCH).contains(&ticks),
            "waited {ticks} ticks"
        );
    }

    // issue #18 item 2: in a busy lane a client waits only if it was flushed within the
    // lane's flush interval (a quarter window times the stretch): one whose messages come
    // further apart would share no write by waiting. README and --help promise at most
    // 15 ms of waiting at the default 20 ms window.
    #[tokio::test]
    async fn a_busy_lane_delays_only_clients_flushed_within_its_interval() {
        let c = Coalescer::new(20, 1);
        assert_eq!(c.period_ms() * pace::MAX_STRETCH, 15);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.tick(0).await; // the clock is now about 30 ms
        let now = c.clock.load(Relaxed);
        let lane = &c.lanes[0];
        lane.batching.store(true, Relaxed);
        let a = client(1);
        // Flushed 10 ms ago, the lane flushing waiting clients every 5 ms: at once.
        a.last_wake.store(now - 10, Relaxed);
        lane.stretch.store(1, Relaxed);
        c.wake(&a);
        assert_eq!(waiting(&c), (1, 0));
        c.flush_now(0).await;
        // The same, the lane flushing every 15 ms: it waits for the lane's flush.
        a.last_wake.store(now - 10, Relaxed);
        lane.stretch.store(pace::MAX_STRETCH, Relaxed);
        c.wake(&a);
        assert_eq!(waiting(&c), (0, 1));
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
