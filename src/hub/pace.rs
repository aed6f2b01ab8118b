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
//!
//! How long a batching lane lets clients wait (its *stretch*, in ticks of a quarter
//! window) grows with the demand: one tick while one core would write every frame apart,
//! up to three quarters of the window (`MAX_STRETCH` ticks) when it would take several
//! cores. Each write is a syscall and a TCP segment, so at 1,500 msg/s to 1,000 clients
//! a 15 ms wait makes a third of the writes a 5 ms one does (issue #18 item 3: cost per
//! delivery at a fixed load), and the latency it adds stays under the window.

use std::time::{Duration, Instant};

/// The measuring window.
pub(crate) const SAMPLE: Duration = Duration::from_millis(50);
/// Start batching above this demand (share of one core).
pub(crate) const ENTER: f64 = 0.5;
/// Stop batching below this demand.
pub(crate) const LEAVE: f64 = 0.25;
/// The most ticks a batching lane lets a client wait: three quarter windows (15 ms at
/// the default 20 ms). Measured at 1,000 subscribers: at 1,500 msg/s, 2 ticks gave p99
/// 19–23 ms for 2.0 M deliveries per server CPU-s, 3 ticks 28 ms for 2.5 M, 4 ticks
/// 31–33 ms for 2.8–3.1 M; at max rate 4 ticks doubled p99 (74–98 ms) for no gain.
pub(crate) const MAX_STRETCH: u32 = 3;

/// A lane's mode: whether it batches, and for how many ticks a client waits if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Recently flushed clients wait for a tick.
    pub(crate) batching: bool,
    /// Ticks between two flushes of the waiting clients (1 when not batching).
    pub(crate) stretch: u32,
}

impl Mode {
    const AT_ONCE: Mode = Mode {
        batching: false,
        stretch: 1,
    };
}

/// The stretch for a demand (share of one core if every frame were written apart): one
/// tick per core of demand, at least 1 and at most `MAX_STRETCH`.
pub(crate) fn stretch(demand: f64) -> u32 {
    (demand.floor() as u32).clamp(1, MAX_STRETCH)
}

/// One lane's meter: what it did since the window started, and its mode.
#[derive(Debug)]
pub(crate) struct Meter {
    since: Instant,
    busy: Duration,
    frames: u64,
    writes: u64,
    mode: Mode,
}

impl Meter {
    /// A meter starting now, not batching.
    pub(crate) fn new(now: Instant) -> Self {
        Meter {
            since: now,
            busy: Duration::ZERO,
            frames: 0,
            writes: 0,
            mode: Mode::AT_ONCE,
        }
    }

    /// Records a stretch of flushing: how long it took, frames written, writes made.
    pub(crate) fn record(&mut self, busy: Duration, frames: u64, writes: u64) {
        self.busy += busy;
        self.frames += frames;
        self.writes += writes;
    }

    /// At `now`: when the window is over, decides the mode from it and starts a new
    /// one. The mode.
    pub(crate) fn sample(&mut self, now: Instant) -> Mode {
        let span = now.saturating_duration_since(self.since);
        if span < SAMPLE {
            return self.mode;
        }
        let demand = demand(self.busy, span, self.frames, self.writes);
        let batching = if self.mode.batching {
            demand >= LEAVE
        } else {
            demand > ENTER
        };
        let mode = if batching {
            Mode {
                batching,
                stretch: stretch(demand),
            }
        } else {
            Mode::AT_ONCE
        };
        *self = Meter {
            mode,
            ..Meter::new(now)
        };
        mode
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

    // issue #18 item 3: the busier the lane, the longer clients wait (fewer writes),
    // never longer than the window.
    #[test]
    fn the_stretch_grows_with_the_demand_up_to_the_window() {
        assert_eq!(stretch(0.6), 1);
        assert_eq!(stretch(1.9), 1);
        assert_eq!(stretch(2.0), 2);
        assert_eq!(stretch(3.5), 3);
        assert_eq!(stretch(4.0), MAX_STRETCH);
        assert_eq!(stretch(40.0), MAX_STRETCH);
        assert_eq!(stretch(f64::NAN), 1);
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        // 30 ms busy of 50, 8 frames a write: 4.8 cores' worth unbatched.
        m.record(ms(30), 8000, 1000);
        let mode = m.sample(t0 + ms(50));
        assert!(mode.batching);
        assert_eq!(mode.stretch, MAX_STRETCH);
        // 20 ms of 50, 6 frames a write: 2.4 cores.
        m.record(ms(20), 6000, 1000);
        assert_eq!(m.sample(t0 + ms(100)).stretch, 2);
        // Idle: back to flushing at once.
        m.record(ms(1), 10, 10);
        assert_eq!(m.sample(t0 + ms(150)), Mode::AT_ONCE);
    }

    // issue #18 item 2: a lane with time to spare flushes at once; a busy one batches,
    // and keeps batching while batching hides a demand above LEAVE.
    #[test]
    fn a_lane_batches_only_while_busy_with_hysteresis() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        // Light load (100 msg/s to 1k clients: 20 % of the core), one frame a write.
        m.record(ms(10), 500, 500);
        assert!(
            !m.sample(t0 + ms(20)).batching,
            "no decision before the window ends"
        );
        assert!(!m.sample(t0 + ms(50)).batching, "20 %: flush at once");
        // Heavy: 40 ms of 50 writing single frames.
        m.record(ms(40), 4000, 4000);
        assert!(m.sample(t0 + ms(100)).batching, "80 %: batch");
        // Batching now: 15 ms busy, 6 frames per write. Still 180 % unbatched.
        m.record(ms(15), 6000, 1000);
        assert!(
            m.sample(t0 + ms(150)).batching,
            "the demand is still there: keep batching"
        );
        // Between LEAVE and ENTER: keep the mode it is in.
        m.record(ms(10), 1500, 1000);
        assert!(
            m.sample(t0 + ms(200)).batching,
            "30 % > LEAVE: still batching"
        );
        // The load went away.
        m.record(ms(2), 100, 100);
        assert!(
            !m.sample(t0 + ms(250)).batching,
            "4 %: back to flushing at once"
        );
        m.record(ms(18), 1000, 1000);
        assert!(
            !m.sample(t0 + ms(300)).batching,
            "36 % < ENTER: not batching yet"
        );
    }
}
