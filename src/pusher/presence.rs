//! Presence channel membership and the last event of cache channels. Members live in
//! the broker's cluster-wide rooms (`Cluster::room_join`, one room per presence hub
//! channel, `user` = Pusher user id, `info` = `user_info` as JSON text); this module
//! turns them into the protocol's `presence` object. Cached events are kept on this node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::UserId;
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

/// A presence member of a connection. The broker's `user` is the id's text (its
/// identity); `info` is the JSON text of `{"user_id": id, "user_info": info}`, so an
/// integer id comes back as an integer on every node (issue #14 item 3).
pub fn member(client: ClientId, user_id: &UserId, info: &Value) -> Member {
    let stored = json!({ "user_id": user_id, "user_info": info });
    Member {
        client,
        user: Some(Arc::from(user_id.key())),
        info: Some(Arc::from(stored.to_string())),
    }
}

/// A member's user id (as the app gave it) and `user_info`. A member stored by an older
/// node (`info` = the bare `user_info`) has a string id.
pub fn user_of(member: &Member) -> Option<(UserId, Value)> {
    let key = member.user.as_deref()?;
    let info: Value = member
        .info
        .as_deref()
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(Value::Null);
    if let Value::Object(o) = &info {
        if o.len() == 2 && o.contains_key("user_info") {
            if let Some(id) = o.get("user_id").and_then(UserId::from_json) {
                if id.key() == key {
                    return Some((id, o["user_info"].clone()));
                }
            }
        }
    }
    Some((UserId::text(key), info))
}

/// The distinct users of a room, in join order.
pub fn users(members: &[Member]) -> Vec<UserId> {
    let mut ids: Vec<UserId> = Vec::new();
    for m in members {
        if m.user
            .as_deref()
            .is_some_and(|u| !ids.iter().any(|id| id.key() == u))
        {
            ids.extend(user_of(m).map(|(id, _)| id));
        }
    }
    ids
}

/// True when `client` is the only connection of the user `key` among `members`.
pub fn only_connection(members: &[Member], client: ClientId, key: &str) -> bool {
    !members
        .iter()
        .any(|m| m.client != client && m.user.as_deref() == Some(key))
}

/// The `{"presence":{"ids","hash","count"}}` object of `subscription_succeeded`; ids keep
/// their JSON type, `hash` is keyed by their text.
pub fn snapshot(members: &[Member]) -> Value {
    let mut ids = Vec::new();
    let mut hash = Map::new();
    for m in members {
        let Some((id, info)) = user_of(m) else {
            continue;
        };
        if !hash.contains_key(id.key()) {
            hash.insert(id.key().to_string(), info);
            ids.push(id.to_json());
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
        let id = |v: Value| UserId::from_json(&v).unwrap();
        let m = |c, u: Value| member(ClientId(c), &id(u.clone()), &json!({ "n": u }));
        let members = [m(1, json!("alice")), m(2, json!(7)), m(3, json!("alice"))];
        let keys: Vec<String> = users(&members).iter().map(|u| u.key().into()).collect();
        assert_eq!(keys, ["alice", "7"]);
        assert_eq!(
            snapshot(&members),
            json!({"presence": {"count": 2, "ids": ["alice", 7],
                "hash": {"alice": {"n": "alice"}, "7": {"n": 7}}}})
        );
        assert!(!only_connection(&members, ClientId(1), "alice"));
        assert!(only_connection(&members, ClientId(2), "7"));
        assert!(only_connection(&members[..2], ClientId(1), "alice"));
        // A member an older node stored: bare user_info, string id.
        let old = Member {
            client: ClientId(4),
            user: Some("8".into()),
            info: Some(r#"{"n":8}"#.into()),
        };
        assert_eq!(user_of(&old), Some((UserId::text("8"), json!({"n": 8}))));
    }
}
