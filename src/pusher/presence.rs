//! Presence channel membership (per connection, grouped by user id) and the last event
//! of cache channels, both kept on this node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::hub::{ClientId, Payload};

/// How long a cache channel remembers its last event (Pusher: 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// One connection's membership of a presence channel.
#[derive(Debug, Clone)]
struct Member {
    client: ClientId,
    user_id: String,
    user_info: Value,
}

/// Presence members and cached events, by hub channel.
#[derive(Debug, Default)]
pub struct Rooms {
    presence: Mutex<HashMap<String, Vec<Member>>>,
    cache: Mutex<HashMap<String, (Instant, Payload)>>,
}

/// What a join changed.
#[derive(Debug)]
pub enum Join {
    /// Joined; `new_user` when no other connection of the user was in the channel.
    Joined {
        /// The user was not in the channel before.
        new_user: bool,
        /// `{"presence":{"ids","hash","count"}}` including the joiner.
        snapshot: Value,
    },
    /// The channel already has the most members allowed.
    Full,
}

impl Rooms {
    /// Adds a connection to a presence channel.
    pub fn join(
        &self,
        channel: &str,
        client: ClientId,
        user_id: &str,
        user_info: Value,
        max_members: usize,
    ) -> Join {
        let mut rooms = self.presence.lock();
        let members = rooms.entry(channel.to_string()).or_default();
        let new_user = !members.iter().any(|m| m.user_id == user_id);
        if new_user && distinct_users(members) >= max_members {
            if members.is_empty() {
                rooms.remove(channel);
            }
            return Join::Full;
        }
        members.retain(|m| m.client != client);
        members.push(Member {
            client,
            user_id: user_id.to_string(),
            user_info,
        });
        Join::Joined {
            new_user,
            snapshot: snapshot(members),
        }
    }

    /// Removes a connection from a presence channel; the user id when that was the user's
    /// last connection in it (so `member_removed` is due).
    pub fn leave(&self, channel: &str, client: ClientId) -> Option<String> {
        let mut rooms = self.presence.lock();
        let members = rooms.get_mut(channel)?;
        let i = members.iter().position(|m| m.client == client)?;
        let gone = members.swap_remove(i);
        let last = !members.iter().any(|m| m.user_id == gone.user_id);
        if members.is_empty() {
            rooms.remove(channel);
        }
        last.then_some(gone.user_id)
    }

    /// The user id a connection has in a presence channel.
    pub fn user_of(&self, channel: &str, client: ClientId) -> Option<String> {
        let rooms = self.presence.lock();
        rooms
            .get(channel)?
            .iter()
            .find(|m| m.client == client)
            .map(|m| m.user_id.clone())
    }

    /// The distinct user ids of a presence channel, in join order.
    pub fn users(&self, channel: &str) -> Vec<String> {
        let rooms = self.presence.lock();
        let mut ids: Vec<String> = Vec::new();
        for m in rooms.get(channel).into_iter().flatten() {
            if !ids.contains(&m.user_id) {
                ids.push(m.user_id.clone());
            }
        }
        ids
    }

    /// Remembers the last event of a cache channel.
    pub fn cache(&self, channel: &str, payload: Payload) {
        self.cache
            .lock()
            .insert(channel.to_string(), (Instant::now(), payload));
    }

    /// The last event of a cache channel, unless it expired.
    pub fn cached(&self, channel: &str) -> Option<Payload> {
        let mut cache = self.cache.lock();
        match cache.get(channel) {
            Some((at, payload)) if at.elapsed() < CACHE_TTL => Some(payload.clone()),
            Some(_) => {
                cache.remove(channel);
                None
            }
            None => None,
        }
    }
}

fn distinct_users(members: &[Member]) -> usize {
    let mut ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// The `presence` object of `subscription_succeeded`.
fn snapshot(members: &[Member]) -> Value {
    let mut ids = Vec::new();
    let mut hash = Map::new();
    for m in members {
        if !hash.contains_key(&m.user_id) {
            ids.push(Value::from(m.user_id.clone()));
            hash.insert(m.user_id.clone(), m.user_info.clone());
        }
    }
    json!({ "presence": { "count": ids.len(), "ids": ids, "hash": hash } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_join_once_and_leave_with_their_last_connection() {
        let rooms = Rooms::default();
        let join = |c, u: &str| rooms.join("presence-a", ClientId(c), u, json!({"n": u}), 2);
        assert!(matches!(
            join(1, "alice"),
            Join::Joined { new_user: true, .. }
        ));
        match join(2, "alice") {
            Join::Joined { new_user, snapshot } => {
                assert!(!new_user);
                assert_eq!(snapshot["presence"]["count"], 1);
            }
            Join::Full => panic!("not full"),
        }
        assert!(matches!(
            join(3, "bob"),
            Join::Joined { new_user: true, .. }
        ));
        assert!(matches!(join(4, "carol"), Join::Full));
        assert_eq!(rooms.users("presence-a"), ["alice", "bob"]);
        assert_eq!(rooms.leave("presence-a", ClientId(1)), None);
        assert_eq!(
            rooms.leave("presence-a", ClientId(2)),
            Some("alice".to_string())
        );
        assert_eq!(
            rooms.user_of("presence-a", ClientId(3)).as_deref(),
            Some("bob")
        );
    }
}
