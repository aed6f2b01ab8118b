//! Measurement helpers: a log-linear latency histogram and the stamp (publisher, sequence
//! number, send time) written into every benchmark payload.

use serde_json::{json, Value};

/// Sub-buckets per power of two: 64 (relative error under 1.6%).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS) as usize + 1) * SUB as usize;

/// A histogram of nanosecond values with ~1.6% resolution and the exact maximum.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    // v >> shift is in SUB..2*SUB.
    (shift as u64 * SUB + (v >> shift)) as usize
}

/// The middle of a bucket's range.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let top = i - shift * SUB;
    let low = top << shift;
    low + ((1u64 << shift) - 1) / 2
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// The value below which a fraction `q` of the recorded values lie (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99, p99.9 and max in microseconds, as a JSON object.
    pub fn json_us(&self) -> Value {
        let us = |ns: u64| super::round(ns as f64 / 1e3, 1);
        json!({
            "p50": us(self.quantile(0.5)),
            "p90": us(self.quantile(0.9)),
            "p99": us(self.quantile(0.99)),
            "p999": us(self.quantile(0.999)),
            "max": us(self.max),
        })
    }

    /// The same percentiles for the table.
    pub fn summary(&self) -> String {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            duration(self.quantile(0.5)),
            duration(self.quantile(0.9)),
            duration(self.quantile(0.99)),
            duration(self.quantile(0.999)),
            duration(self.max)
        )
    }
}

/// Nanoseconds for people: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e6 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Bytes of the stamp at the start of a payload: `PP SSSSSSSSSS TTTTTTTTTTTTTTTTTTT `.
pub const STAMP_LEN: usize = 34;

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which publisher (or client) sent it, 0..=99.
    pub source: u32,
    /// Sequence number.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp over the start of `payload` (printable ASCII digits and spaces).
    pub fn write(&self, payload: &mut [u8]) {
        put_digits(&mut payload[0..2], self.source as u64);
        payload[2] = b' ';
        put_digits(&mut payload[3..13], self.seq);
        payload[13] = b' ';
        put_digits(&mut payload[14..33], self.sent_ns);
        payload[33] = b' ';
    }

    /// Reads a stamp back; `None` when the payload does not start with one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        if payload.len() < STAMP_LEN || payload[2] != b' ' || payload[13] != b' ' {
            return None;
        }
        Some(Stamp {
            source: digits(&payload[0..2])? as u32,
            seq: digits(&payload[3..13])?,
            sent_ns: digits(&payload[14..33])?,
        })
    }
}

/// A payload of `len` bytes: room for the stamp, then printable filler.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Parses ASCII decimal digits (any length up to 19); `None` on anything else.
fn digits(s: &[u8]) -> Option<u64> {
    let head = s.len() % 8;
    let mut acc = s[..head].iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + (b - b'0') as u64)
    })?;
    for chunk in s[head..].chunks_exact(8) {
        acc = acc
            .wrapping_mul(100_000_000)
            .wrapping_add(eight_digits(chunk)?);
    }
    Some(acc)
}

/// Eight ASCII digits at once (SWAR): the receive path parses 29 digits per delivery.
fn eight_digits(chunk: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(chunk.try_into().ok()?);
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Every byte is 0x30..=0x39: high nibble 3, and adding 6 does not carry out of it.
    if v & HIGH != ZEROS || (v.wrapping_add(0x0606_0606_0606_0606) & HIGH) != ZEROS {
        return None;
    }
    let mut x = v & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF;
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_values_round_trip_within_two_percent() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            65_432,
            1_000_000,
            123_456_789_012,
            u64::MAX / 3,
        ] {
            let back = value(index(v));
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {back}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 10_000.0, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.total, 1000);
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }

    #[test]
    fn stamp_round_trip() {
        let mut p = payload(128);
        let s = Stamp {
            source: 7,
            seq: 123_456,
            sent_ns: 1_700_000_000_123_456_789,
        };
        s.write(&mut p);
        assert!(p.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(b"not a stamp at all, not at all, no"), None);
        let mut bad = p.clone();
        bad[20] = b':';
        assert_eq!(Stamp::read(&bad), None);
        bad[20] = b'/';
        assert_eq!(Stamp::read(&bad), None);
    }

    #[test]
    fn digit_parsing() {
        for n in [
            0u64,
            7,
            12_345_678,
            99_999_999,
            1_234_567_890,
            1_700_000_000_123_456_789,
        ] {
            let mut buf = vec![0u8; 19];
            put_digits(&mut buf, n);
            assert_eq!(digits(&buf), Some(n));
            put_digits(&mut buf[..10], n % 10_000_000_000);
            assert_eq!(digits(&buf[..10]), Some(n % 10_000_000_000));
        }
        assert_eq!(digits(b"1234a678"), None);
    }
}
