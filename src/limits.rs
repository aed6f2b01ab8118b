//! Connection limits: a permit per WebSocket connection (total and per IP), released
//! when the session ends; and `Bucket`, the token bucket of every per-connection rate.
//! "Per IP" is per IPv4 address and per IPv6 /64 (one host usually holds a whole /64),
//! IPv4-mapped IPv6 counting as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What subscribing to or leaving a presence channel costs of the command budget: each
/// one makes an announcement to every member, so one client's churn must not become
/// everyone's traffic.
pub const PRESENCE_COST: f64 = 10.0;

/// A token bucket: refills at `rate` tokens per second up to `burst`; starts full.
/// Made on first use (boxed in the connection's state), so idle connections carry none.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes `cost` tokens if there are that many (after refilling); false otherwise,
    /// taking nothing.
    pub fn take(&mut self, cost: f64, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// `take` on a lazily made bucket.
    pub fn take_from(slot: &mut Option<Box<Bucket>>, cost: f64, rate: f64, burst: f64) -> bool {
        slot.get_or_insert_with(|| Box::new(Bucket::full(burst)))
            .take(cost, rate, burst)
    }
}

/// Open connections per address.
type ByIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `max_connections` already.
    Total,
    /// This IP holds `max_connections_per_ip` already.
    PerIp,
}

/// Counts connections in total and per IP.
#[derive(Debug)]
pub struct Limits {
    total: Arc<Semaphore>,
    per_ip: usize,
    by_ip: ByIp,
}

/// Held by a session; gives its slots back on drop.
#[derive(Debug)]
pub struct Permit {
    _total: OwnedSemaphorePermit,
    ip: Option<Box<(IpAddr, ByIp)>>,
}

impl Limits {
    /// At most `total` connections, and `per_ip` from one address (0 = unlimited).
    pub fn new(total: usize, per_ip: usize) -> Self {
        Limits {
            total: Arc::new(Semaphore::new(total)),
            per_ip,
            by_ip: Arc::default(),
        }
    }

    /// Takes a slot for a connection from `ip` (counted under [`ip_key`]).
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refused> {
        let ip = ip_key(ip);
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        if self.per_ip == 0 {
            return Ok(Permit {
                _total: total,
                ip: None,
            });
        }
        let mut by_ip = self.by_ip.lock();
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        Ok(Permit {
            _total: total,
            ip: Some(Box::new((ip, self.by_ip.clone()))),
        })
    }
}

/// The address a connection counts under: an IPv4 address as it is, an IPv6 address's
/// /64 network (IPv4-mapped ones as IPv4).
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(entry) = &self.ip {
            let (ip, by_ip) = &**entry;
            let mut by_ip = by_ip.lock();
            if let Some(n) = by_ip.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_takes_its_burst_then_refuses_and_takes_nothing() {
        let mut slot = None;
        for _ in 0..10 {
            assert!(Bucket::take_from(&mut slot, 1.0, 0.001, 10.0));
        }
        assert!(!Bucket::take_from(&mut slot, 1.0, 0.001, 10.0));
        let mut b = Bucket::full(5.0);
        assert!(!b.take(6.0, 0.0, 5.0));
        assert!(b.take(5.0, 0.0, 5.0));
    }

    #[test]
    fn per_ip_and_total_slots_come_back_on_drop() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = limits.admit(a).unwrap();
        let _p2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refused::PerIp);
        let _p3 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total);
        drop(p1);
        assert!(limits.admit(a).is_ok());
    }

    // issue #12 item 10: one host holds a whole IPv6 /64; count it once.
    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limits = Limits::new(100, 1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            limits
                .admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
                .unwrap_err(),
            Refused::PerIp
        );
        let _b = limits.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = limits.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerIp
        );
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limits.by_ip.lock().len(), 3);
    }
}
