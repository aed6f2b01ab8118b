//! Write coalescing for fan-out: a client that was woken less than `window` ms ago is
//! not woken again at once; it waits (at most `window` ms) in a list that a flusher task
//! wakes every tick, so under load one `writev` carries several messages. A quiet client
//! is woken immediately, so latency at low rates is unchanged.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Client;

const LISTS: usize = 16;

/// Deferred wake-ups and the coarse clock they are timed by.
pub struct Coalescer {
    window: u32,
    clock: AtomicU32,
    started: Instant,
    lists: Box<[Mutex<Vec<Arc<Client>>>]>,
}

impl Coalescer {
    /// Coalescing over `window_ms` (0 = wake every time at once).
    pub fn new(window_ms: u32) -> Self {
        Coalescer {
            window: window_ms,
            clock: AtomicU32::new(0),
            started: Instant::now(),
            lists: (0..LISTS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Wakes `client` now, or defers the wake-up to the next tick if it was woken
    /// less than a window ago.
    pub fn wake(&self, client: &Arc<Client>) {
        if self.window == 0 {
            return client.notify();
        }
        let now = self.clock.load(Relaxed);
        if now.wrapping_sub(client.last_wake.load(Relaxed)) < self.window {
            if !client.deferred.swap(true, Relaxed) {
                self.lists[(client.id.0 as usize) % LISTS]
                    .lock()
                    .push(client.clone());
            }
            return;
        }
        client.last_wake.store(now, Relaxed);
        client.notify();
    }

    /// How often `tick` should run.
    pub fn period(&self) -> Duration {
        Duration::from_millis(u64::from((self.window / 4).max(1)))
    }

    /// Advances the clock and wakes every deferred client.
    pub fn tick(&self) {
        let now = self.started.elapsed().as_millis() as u32;
        self.clock.store(now, Relaxed);
        for list in self.lists.iter() {
            let due = std::mem::take(&mut *list.lock());
            for client in due {
                client.deferred.store(false, Relaxed);
                client.last_wake.store(now, Relaxed);
                client.notify();
            }
        }
    }

    /// True when coalescing is on.
    pub fn enabled(&self) -> bool {
        self.window > 0
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

    #[test]
    fn a_quiet_client_is_woken_at_once_a_busy_one_at_the_next_tick() {
        let c = Coalescer::new(20);
        std::thread::sleep(Duration::from_millis(30));
        c.tick(); // clock ≈ 30 ms; the client was last woken at 0
        let a = client(1);
        c.wake(&a);
        assert!(!a.deferred.load(Relaxed), "quiet: woken immediately");
        assert_eq!(a.last_wake.load(Relaxed), c.clock.load(Relaxed));
        // Woken again within the window: deferred once, however many pushes.
        c.wake(&a);
        c.wake(&a);
        assert!(a.deferred.load(Relaxed));
        assert_eq!(c.lists.iter().map(|l| l.lock().len()).sum::<usize>(), 1);
        c.tick();
        assert!(!a.deferred.load(Relaxed));
        assert_eq!(c.lists.iter().map(|l| l.lock().len()).sum::<usize>(), 0);
    }

    #[test]
    fn window_zero_never_defers() {
        let c = Coalescer::new(0);
        let a = client(2);
        c.wake(&a);
        c.wake(&a);
        assert!(!a.deferred.load(Relaxed));
        assert!(!c.enabled());
    }
}
