//! Channel namespaces: what a channel keeps (history, presence) and allows (anonymous
//! access), chosen by the longest matching prefix.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What clients without a token may do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing.
    None,
    /// Subscribe only.
    Subscribe,
    /// Subscribe and publish.
    Publish,
}

/// Settings of the channels whose names start with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Channel-name prefix (`""` matches every channel).
    pub prefix: String,
    /// Messages kept per channel (0 = no history).
    #[serde(default)]
    pub history_size: usize,
    /// How long messages are kept (`"5m"`, `"30s"`, `"1h"`, or a number of seconds;
    /// absent = no age limit).
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_ttl: Option<Duration>,
    /// Join/leave events and presence queries.
    #[serde(default)]
    pub presence: bool,
    /// What anonymous clients may do.
    #[serde(default = "default_access")]
    pub anonymous: Access,
}

fn default_access() -> Access {
    Access::Publish
}

impl Namespace {
    /// The settings of channels no namespace matches: no history, no presence, anonymous
    /// clients may publish.
    pub fn fallback() -> Self {
        Namespace {
            prefix: String::new(),
            history_size: 0,
            history_ttl: None,
            presence: false,
            anonymous: default_access(),
        }
    }

    /// True when the channel keeps messages.
    pub fn keeps_history(&self) -> bool {
        self.history_size > 0
    }
}

/// The namespace table, longest prefix first.
#[derive(Debug, Clone)]
pub struct Namespaces {
    sorted: Vec<Namespace>,
    fallback: Namespace,
}

impl Namespaces {
    /// A table from configured namespaces.
    pub fn new(mut list: Vec<Namespace>) -> Self {
        list.sort_by_key(|n| std::cmp::Reverse(n.prefix.len()));
        Namespaces {
            sorted: list,
            fallback: Namespace::fallback(),
        }
    }

    /// Gives namespaces that keep history but set no `history_ttl` a TTL of `max`, so no
    /// channel keeps history (or its offsets) forever.
    pub fn with_history_max_age(mut self, max: Duration) -> Self {
        for ns in &mut self.sorted {
            if ns.keeps_history() && ns.history_ttl.is_none() {
                ns.history_ttl = Some(max);
            }
        }
        self
    }

    /// The namespace of `channel`: the longest matching prefix.
    pub fn of(&self, channel: &str) -> &Namespace {
        self.sorted
            .iter()
            .find(|n| channel.starts_with(&n.prefix))
            .unwrap_or(&self.fallback)
    }
}

/// Parses a duration: `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`, `"1d"` (the `humantime`
/// syntax), or a plain number of seconds. (The same rules as `config::duration`, which
/// this module cannot import: the config imports it.)
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("bad duration {s:?} ({e}; e.g. \"30s\", \"5m\" or seconds)"))
}

mod duration_opt {
    use super::*;

    /// A duration or a plain number of seconds, as TOML gives it.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Seconds(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Given::deserialize(d)? {
            Given::Seconds(n) => Ok(Some(Duration::from_secs(n))),
            Given::Text(s) => parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let ns = Namespaces::new(vec![
            Namespace {
                prefix: "".into(),
                history_size: 1,
                ..Namespace::fallback()
            },
            Namespace {
                prefix: "chat:".into(),
                history_size: 100,
                ..Namespace::fallback()
            },
            Namespace {
                prefix: "chat:vip:".into(),
                history_size: 5,
                ..Namespace::fallback()
            },
        ]);
        assert_eq!(ns.of("chat:vip:1").history_size, 5);
        assert_eq!(ns.of("chat:x").history_size, 100);
        assert_eq!(ns.of("news").history_size, 1);
        assert_eq!(Namespaces::new(vec![]).of("x"), &Namespace::fallback());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}
