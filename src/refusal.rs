//! Refusals that teach: every refused handshake or API call is logged at `warn` with the
//! reason and the fix (the same text as the JSON error body), at most once per minute per
//! key (an origin, or a client address), so a page retrying forever or an attacker
//! varying its Origin cannot flood the log.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::console::Escaped;

/// How long a key stays quiet after its line.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most keys remembered; past it, new keys share one line per window.
pub const MAX_KEYS: usize = 1024;
/// Most bytes of client text (an origin, a host) quoted in a refusal.
pub const QUOTE_MAX: usize = 200;

/// What was refused, for the log line's `what` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A WebSocket handshake (raw, JSON or Pusher mode).
    WebSocket,
    /// An HTTP API call (or `/metrics`).
    Api,
}

/// The rate limiter of refusal log lines (one per server).
#[derive(Default)]
pub struct Refusals {
    seen: Mutex<HashMap<(Kind, String), Seen>>,
}

/// When a key was last logged and how many of its refusals were not logged since.
struct Seen {
    at: Instant,
    quiet: u64,
}

impl Refusals {
    /// Logs `message` at `warn` unless a refusal with the same `kind` and `key` was
    /// logged less than [`WINDOW`] ago (then it is only counted, and the next line says
    /// how many were not logged). `key` is client input: it is cut and escaped.
    pub fn refused(&self, kind: Kind, key: &str, peer: SocketAddr, message: &str) {
        let Some(quiet) = self.admit(kind, key, Instant::now()) else {
            return;
        };
        let what = match kind {
            Kind::WebSocket => "websocket",
            Kind::Api => "api",
        };
        let message = Escaped(message);
        if quiet > 0 {
            tracing::warn!(
                target: "wspush::refused",
                %peer,
                what,
                "{message} ({quiet} more like it in the last minute were not logged)"
            );
        } else {
            tracing::warn!(target: "wspush::refused", %peer, what, "{message}");
        }
    }

    /// `Some(refusals not logged since the key's last line)` when a line is due now.
    fn admit(&self, kind: Kind, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, s| now.duration_since(s.at) < WINDOW);
        }
        let mut key = (kind, cut(key, QUOTE_MAX).to_string());
        if seen.len() >= MAX_KEYS && !seen.contains_key(&key) {
            // Too many distinct keys this minute: they share one line.
            key.1 = "\u{0}overflow".into();
        }
        match seen.get_mut(&key) {
            Some(s) if now.duration_since(s.at) < WINDOW => {
                s.quiet += 1;
                None
            }
            Some(s) => {
                let quiet = std::mem::take(&mut s.quiet);
                s.at = now;
                Some(quiet)
            }
            None => {
                seen.insert(key, Seen { at: now, quiet: 0 });
                Some(0)
            }
        }
    }
}

/// `text` cut at `max` bytes (at a character boundary).
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Client text quoted in a refusal: in double quotes, escaped, cut at [`QUOTE_MAX`].
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(QUOTE_MAX) + 2);
    out.push('"');
    crate::console::escape(&mut out, text, QUOTE_MAX);
    let _ = write!(out, "\"");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue #16 item 1
    #[test]
    fn one_line_per_key_per_window_and_the_count_of_the_rest() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.admit(Kind::WebSocket, "null", t0), Some(0));
        for _ in 0..99 {
            assert_eq!(r.admit(Kind::WebSocket, "null", t0), None);
        }
        assert_eq!(r.admit(Kind::Api, "null", t0), Some(0));
        assert_eq!(r.admit(Kind::WebSocket, "null", t0 + WINDOW), Some(99));
    }

    // issue #16 item 1: an attacker varying its Origin gets one line a minute, not one each
    #[test]
    fn distinct_keys_past_the_cap_share_one_line() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let logged = (0..MAX_KEYS * 3)
            .filter(|i| {
                r.admit(Kind::WebSocket, &format!("http://{i}.evil"), t0)
                    .is_some()
            })
            .count();
        assert_eq!(logged, MAX_KEYS + 1);
        assert!(r.seen.lock().len() <= MAX_KEYS + 1);
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert_eq!(
            quote(&"x".repeat(300)).len(),
            200 + 2 + "… [+100 bytes]".len()
        );
    }
}
