//! Duration options (issue #14 item 8): every duration in the config takes units —
//! `"5s"`, `"500ms"`, `"2m"`, `"1h 30m"` (the `humantime` syntax) — in the TOML file, the
//! `WSPUSH_*` environment and on the command line, and a plain integer still counts in
//! the option's historical unit (seconds for most, milliseconds for `*_ms` options).
//!
//! # Adopting it for a new option
//!
//! An option written the old way, `pub foo_timeout: u64` (seconds) with
//! `default_value_t = 10`, becomes
//!
//! ```ignore
//! #[arg(long, env = "WSPUSH_FOO_TIMEOUT", default_value_t = Secs::from_units(10))]
//! pub foo_timeout: Secs,
//! ```
//!
//! (`Millis` for an option counted in milliseconds; in a serde-only struct such as
//! `[[apps]]`, `#[serde(default = ...)]` returning `Secs::from_units(n)`). Read it with
//! `.get()` (a `std::time::Duration`), `.is_zero()`, or `.whole_secs()` where an integer
//! of seconds must go on the wire. The flag, env and TOML names stay as they were; the
//! printed config (`--print-config`) shows whole values as the integers they were. Tests
//! that set such a field write `c.foo_timeout = 10.into()` (the option's unit) or
//! `"1500ms".parse().unwrap()`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration option whose plain integers count `UNIT_MS` milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval<const UNIT_MS: u64>(Duration);

/// A duration option whose plain integers are seconds.
pub type Secs = Interval<1000>;
/// A duration option whose plain integers are milliseconds.
pub type Millis = Interval<1>;

impl<const UNIT_MS: u64> Interval<UNIT_MS> {
    /// Zero.
    pub const ZERO: Self = Interval(Duration::ZERO);

    /// `n` of the option's unit (saturating).
    pub const fn from_units(n: u64) -> Self {
        Interval(Duration::from_millis(n.saturating_mul(UNIT_MS)))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// True for zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Whole seconds, rounded up (for protocol fields and timers that count seconds).
    pub fn whole_secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }

    /// The value in the option's unit when it is a whole number of them.
    fn units(self) -> Option<u64> {
        let ms = self.0.as_millis();
        (self.0.subsec_nanos().is_multiple_of(1_000_000) && ms.is_multiple_of(u128::from(UNIT_MS)))
            .then(|| u64::try_from(ms / u128::from(UNIT_MS)).ok())
            .flatten()
    }
}

impl<const UNIT_MS: u64> From<u64> for Interval<UNIT_MS> {
    fn from(n: u64) -> Self {
        Self::from_units(n)
    }
}

impl<const UNIT_MS: u64> From<Duration> for Interval<UNIT_MS> {
    fn from(d: Duration) -> Self {
        Interval(d)
    }
}

impl<const UNIT_MS: u64> std::ops::Deref for Interval<UNIT_MS> {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl<const UNIT_MS: u64> FromStr for Interval<UNIT_MS> {
    type Err = String;

    /// `"30"` (the option's unit), `"30s"`, `"500ms"`, `"1m 30s"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u64>()
                .map(Self::from_units)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s).map(Interval).map_err(|e| {
            format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"500ms\", \"5m\" or a plain number")
        })
    }
}

impl<const UNIT_MS: u64> fmt::Display for Interval<UNIT_MS> {
    /// A whole number of units as the plain integer; anything else with units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.units() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "{}", humantime::format_duration(self.0)),
        }
    }
}

impl<const UNIT_MS: u64> Serialize for Interval<UNIT_MS> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.units() {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(&humantime::format_duration(self.0).to_string()),
        }
    }
}

impl<'de, const UNIT_MS: u64> Deserialize<'de> for Interval<UNIT_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const U: u64>;
        impl<const U: u64> Visitor<'_> for V<U> {
            type Value = Interval<U>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a number or a string such as \"30s\" or \"500ms\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Interval::from_units(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map(Interval::from_units)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V::<UNIT_MS>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_integers() {
        let s = |t: &str| t.parse::<Secs>().map(Secs::get);
        assert_eq!(s("30"), Ok(Duration::from_secs(30)));
        assert_eq!(s("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(s("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(s(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert!(s("5 parsecs").is_err() && s("").is_err() && s("-1").is_err());
        assert_eq!(
            "20".parse::<Millis>().map(Millis::get),
            Ok(Duration::from_millis(20))
        );
        assert_eq!(Secs::from_units(25).to_string(), "25");
        assert_eq!("1500ms".parse::<Secs>().unwrap().to_string(), "1s 500ms");
        assert_eq!("1s".parse::<Millis>().unwrap().to_string(), "1000");
        assert_eq!("1500ms".parse::<Secs>().unwrap().whole_secs(), 2);
    }

    #[test]
    fn toml_round_trip_keeps_whole_values_as_integers() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            a: Secs,
            b: Secs,
            c: Millis,
        }
        let t: T = toml::from_str("a = 7\nb = \"2500ms\"\nc = \"2s\"\n").unwrap();
        assert_eq!(t.a.get(), Duration::from_secs(7));
        assert_eq!(t.b.get(), Duration::from_millis(2500));
        assert_eq!(t.c.get(), Duration::from_secs(2));
        let text = toml::to_string(&t).unwrap();
        assert_eq!(text, "a = 7\nb = \"2s 500ms\"\nc = 2000\n");
        assert_eq!(toml::from_str::<T>(&text).unwrap(), t);
        assert!(toml::from_str::<T>("a = -1\nb = 1\nc = 1\n").is_err());
    }
}
