//! How busy a flusher lane is, and so whether it batches (issue #18 item 2).
//!
//! Batching a client's writes (waiting for the coalescer's tick so one `writev` carries
//! several messages) saves CPU only when the lane is busy; when the core has time to
//! spare it only adds up to a tick of latency. So each lane measures, over windows of
//! `SAMPLE`, the share of wall time it spent writing and how many frames each write
//! carried, and estimates its *demand*: the share of time it would spend if every frame
//! got a write of its own (busy × frames per write; independent of the mode it is in).
//! A lane batches when the demand is above `ENTER` and stops below `LEAVE` (hysteresis,
//! so it does not flap at the edge). A lane whose writes back up batches anyway: its
//! session holds the socket and new frames wait in the outbox.

use std::time::{Duration, Instant};

/// The measuring window.
pub(crate) const SAMPLE: Duration = Duration::from_millis(50);
/// Start batching above this demand (share of one core).
pub(crate) const ENTER: f64 = 0.5;
/// Stop batching below this demand.
pub(crate) const LEAVE: f64 = 0.25;

/// One lane's meter: what it did since the window started, and its mode.
#[derive(Debug)]
pub(crate) struct Meter {
    since: Instant,
    busy: Duration,
    frames: u64,
    writes: u64,
    batching: bool,
}

impl Meter {
    /// A meter starting now, not batching.
    pub(crate) fn new(now: Instant) -> Self {
        Meter {
            since: now,
            busy: Duration::ZERO,
            frames: 0,
            writes: 0,
            batching: false,
        }
    }

    /// Records a stretch of flushing: how long it took, frames written, writes made.
    pub(crate) fn record(&mut self, busy: Duration, frames: u64, writes: u64) {
        self.busy += busy;
        self.frames += frames;
        self.writes += writes;
    }

    /// At `now`: when the window is over, decides the mode from it and starts a new
    /// one. The mode (true = batch).
    pub(crate) fn sample(&mut self, now: Instant) -> bool {
        let span = now.saturating_duration_since(self.since);
        if span < SAMPLE {
            return self.batching;
        }
        let demand = demand(self.busy, span, self.frames, self.writes);
        self.batching = if self.batching {
            demand >= LEAVE
        } else {
            demand > ENTER
        };
        *self = Meter {
            batching: self.batching,
            ..Meter::new(now)
        };
        self.batching
    }
}

/// The share of `span` the lane would spend writing if each frame had a write of its own.
pub(crate) fn demand(busy: Duration, span: Duration, frames: u64, writes: u64) -> f64 {
    if span.is_zero() {
        return 0.0;
    }
    let per_write = if writes == 0 {
        1.0
    } else {
        (frames as f64 / writes as f64).max(1.0)
    };
    busy.as_secs_f64() / span.as_secs_f64() * per_write
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn demand_counts_what_batching_saved() {
        // 10 ms busy in 50 ms, one frame per write: 20 %.
        assert!((demand(ms(10), ms(50), 100, 100) - 0.2).abs() < 1e-9);
        // The same time, but 8 frames per write: unbatched it would be 160 %.
        assert!((demand(ms(10), ms(50), 800, 100) - 1.6).abs() < 1e-9);
        assert_eq!(demand(ms(10), Duration::ZERO, 1, 1), 0.0);
        assert!((demand(ms(5), ms(50), 0, 0) - 0.1).abs() < 1e-9);
    }

    // issue #18 item 2: a lane with time to spare flushes at once; a busy one batches,
    // and keeps batching while batching hides a demand above LEAVE.
    #[test]
    fn a_lane_batches_only_while_busy_with_hysteresis() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        // Light load (100 msg/s to 1k clients: 20 % of the core), one frame a write.
        m.record(ms(10), 500, 500);
        assert!(!m.sample(t0 + ms(20)), "no decision before the window ends");
        assert!(!m.sample(t0 + ms(50)), "20 %: flush at once");
        // Heavy: 40 ms of 50 writing single frames.
        m.record(ms(40), 4000, 4000);
        assert!(m.sample(t0 + ms(100)), "80 %: batch");
        // Batching now: 15 ms busy, 6 frames per write. Still 180 % unbatched.
        m.record(ms(15), 6000, 1000);
        assert!(
            m.sample(t0 + ms(150)),
            "the demand is still there: keep batching"
        );
        // Between LEAVE and ENTER: keep the mode it is in.
        m.record(ms(10), 1500, 1000);
        assert!(m.sample(t0 + ms(200)), "30 % > LEAVE: still batching");
        // The load went away.
        m.record(ms(2), 100, 100);
        assert!(!m.sample(t0 + ms(250)), "4 %: back to flushing at once");
        m.record(ms(18), 1000, 1000);
        assert!(!m.sample(t0 + ms(300)), "36 % < ENTER: not batching yet");
    }
}
