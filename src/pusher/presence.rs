//! Presence channel membership and the last event of cache channels. Members live in
//! the broker's cluster-wide rooms (`Cluster::room_join`, one room per presence hub
//! channel, `user` = Pusher user id, `info` = `user_info` as JSON text); this module
//! turns them into the protocol's `presence` object. Cached events are kept on this node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::broker::Member;
use crate::hub::{ClientId, Payload};

/// How long a cache channel remembers its last event (Pusher: 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Cached events, by hub channel.
#[derive(Debug)]
pub struct Rooms {
    cache: Mutex<Cache>,
    ttl: Duration,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::with_ttl(CACHE_TTL)
    }
}

/// The cache map and its size after the last sweep.
#[derive(Debug, Default)]
struct Cache {
    events: HashMap<String, (Instant, Payload)>,
    swept: usize,
}

/// A presence member of a connection: user id and `user_info` (JSON text).
pub fn member(client: ClientId, user_id: &str, info: &Value) -> Member {
    Member {
        client,
        user: Some(Arc::from(user_id)),
        info: Some(Arc::from(info.to_string())),
    }
}

/// The distinct user ids of a room, in join order.
pub fn users(members: &[Member]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for m in members {
        if let Some(user) = m.user.as_deref() {
            if !ids.iter().any(|id| id == user) {
                ids.push(user.to_string());
            }
        }
    }
    ids
}

/// True when `client` is the only connection of its `user` among `members`.
pub fn only_connection(members: &[Member], client: ClientId, user: &str) -> bool {
    !members
        .iter()
        .any(|m| m.client != client && m.user.as_deref() == Some(user))
}

/// The `{"presence":{"ids","hash","count"}}` object of `subscription_succeeded`.
pub fn snapshot(members: &[Member]) -> Value {
    let mut ids = Vec::new();
    let mut hash = Map::new();
    for m in members {
        let Some(user) = m.user.as_deref() else {
            continue;
        };
        if !hash.contains_key(user) {
            ids.push(Value::from(user));
            let info = m
                .info
                .as_deref()
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or(Value::Null);
            hash.insert(user.to_string(), info);
        }
    }
    json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } })
}

impl Rooms {
    /// Cached events that expire after `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        Rooms {
            cache: Mutex::default(),
            ttl,
        }
    }

    /// Remembers the last event of a cache channel. Expired events of other channels
    /// are dropped whenever the cache doubled since the last sweep, so it never holds
    /// more than twice the live ones (amortized O(1) per event).
    pub fn cache(&self, channel: &str, payload: Payload) {
        let mut cache = self.cache.lock();
        cache
            .events
            .insert(channel.to_string(), (Instant::now(), payload));
        if cache.events.len() >= (2 * cache.swept).max(1024) {
            let ttl = self.ttl;
            cache.events.retain(|_, (at, _)| at.elapsed() < ttl);
            cache.events.shrink_to_fit();
            cache.swept = cache.events.len();
        }
    }

    /// The last event of a cache channel, unless it expired.
    pub fn cached(&self, channel: &str) -> Option<Payload> {
        let mut cache = self.cache.lock();
        match cache.events.get(channel) {
            Some((at, payload)) if at.elapsed() < self.ttl => Some(payload.clone()),
            Some(_) => {
                cache.events.remove(channel);
                None
            }
            None => None,
        }
    }

    /// How many events are cached (expired ones not swept yet included).
    pub fn cached_count(&self) -> usize {
        self.cache.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_cache_events_are_swept_as_new_ones_come() {
        // issue #12: the cache map is keyed by channel names; expired ones must go.
        let rooms = Rooms::with_ttl(Duration::ZERO);
        for i in 0..100_000 {
            rooms.cache(&format!("cache-{i}"), Payload::text("x"));
        }
        assert!(rooms.cached_count() <= 1024, "{}", rooms.cached_count());
        let rooms = Rooms::with_ttl(Duration::from_secs(60));
        for i in 0..3000 {
            rooms.cache(&format!("cache-{i}"), Payload::text("x"));
        }
        assert_eq!(rooms.cached_count(), 3000);
        assert!(rooms.cached("cache-0").is_some());
    }

    #[test]
    fn snapshots_list_each_user_once_in_join_order() {
        let m = |c, u: &str| member(ClientId(c), u, &json!({ "n": u }));
        let members = [m(1, "alice"), m(2, "bob"), m(3, "alice")];
        assert_eq!(users(&members), ["alice", "bob"]);
        assert_eq!(
            snapshot(&members),
            json!({"presence": {"count": 2, "ids": ["alice", "bob"],
                "hash": {"alice": {"n": "alice"}, "bob": {"n": "bob"}}}})
        );
        assert!(!only_connection(&members, ClientId(1), "alice"));
        assert!(only_connection(&members, ClientId(2), "bob"));
        assert!(only_connection(&members[..2], ClientId(1), "alice"));
    }
}
