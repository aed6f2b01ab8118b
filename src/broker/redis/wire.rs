//! What the Redis broker writes: key and topic names, and the envelopes of messages and
//! events as stored in history and carried over pub/sub. Any change here changes what
//! nodes of different versions understand of each other.
//!
//! **Every Redis key and pub/sub topic name is made by [`Keys`]** (never a literal
//! elsewhere): it puts the operator's `redis_prefix` (default `wspush:`) in front, and
//! gives every key a hash tag so that Redis Cluster keeps together what one script or
//! transaction touches:
//! - a channel's keys (`pos`, `history`, `presence`, `room`) and the base-epoch and
//!   lives counter its epochs come from share the tag `{N}`, N = a stable hash of the
//!   channel name modulo 16384 (a tag of our own, so braces in a channel name change
//!   nothing);
//! - node-wide keys (occupancy, node heartbeats, counts) share the tag `{nodes}`, so a
//!   script summing over nodes touches one slot.
//!
//! New keys go here as a `Keys` method, with one of these tags.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{ClientId, Event, Kind, Payload};
use crate::shard::fnv;

pub(super) fn kind_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "t",
        Kind::Json => "j",
        Kind::Binary => "b",
    }
}

pub(super) fn kind_of(code: &[u8]) -> Option<Kind> {
    match code {
        b"t" => Some(Kind::Text),
        b"j" => Some(Kind::Json),
        b"b" => Some(Kind::Binary),
        _ => None,
    }
}

/// A message as stored and published: `offset:kind:epoch:ms:event_len:event data`,
/// where `event` is the JSON of the payload's event metadata (empty for plain data).
#[derive(Debug)]
pub(super) struct Envelope {
    pub(super) offset: u64,
    pub(super) epoch: Arc<str>,
    pub(super) at_ms: u64,
    pub(super) payload: Payload,
}

pub(super) fn parse_envelope(raw: &[u8]) -> Option<Envelope> {
    let mut parts = raw.splitn(6, |b| *b == b':');
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let kind = kind_of(parts.next()?)?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let at_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let event_len: usize = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let rest = parts.next()?;
    if rest.len() < event_len {
        return None;
    }
    let (event, data) = rest.split_at(event_len);
    Some(Envelope {
        offset,
        epoch: Arc::from(epoch),
        at_ms,
        payload: Payload {
            kind,
            data: Bytes::copy_from_slice(data),
            event: decode_event(event),
        },
    })
}

/// Event metadata as carried through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireEvent {
    n: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
}

pub(super) fn encode_event(payload: &Payload) -> String {
    payload.event.as_ref().map_or_else(String::new, |e| {
        serde_json::to_string(&WireEvent {
            n: e.name.to_string(),
            x: e.exclude.map(|c| c.0),
            u: e.user_id.as_deref().map(str::to_string),
        })
        .expect("event serializes")
    })
}

pub(super) fn decode_event(raw: &[u8]) -> Option<Arc<Event>> {
    let wire: WireEvent = serde_json::from_slice(raw).ok()?;
    Some(Arc::new(Event {
        name: Arc::from(wire.n),
        exclude: wire.x.map(ClientId),
        user_id: wire.u.map(Arc::from),
    }))
}

/// Hash tags a channel's keys are spread over (as many as Redis Cluster has slots).
const TAGS: u64 = 16_384;

/// The key and topic builder: the one place Redis names are made (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

/// The keys of one channel's life, in the order the scripts take them.
pub(super) struct ChannelKeys {
    /// Hash: `o` offset, `e` epoch, `g` the Redis replication id it was written under.
    pub(super) pos: String,
    /// List of envelopes.
    pub(super) history: String,
    /// `replid:base` of the channel's tag (new when the Redis data set changes hands).
    pub(super) base: String,
    /// Counter of lives started under the tag.
    pub(super) lives: String,
}

impl Keys {
    /// A builder for `prefix` (validated by the config: no braces).
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: Arc::from(prefix),
        }
    }

    /// The hash tag of a channel (or room): `{N}`.
    pub(super) fn tag(channel: &str) -> u64 {
        fnv(channel) % TAGS
    }

    /// The keys of a channel's life.
    pub(super) fn channel(&self, channel: &str) -> ChannelKeys {
        let (p, t) = (&self.prefix, Self::tag(channel));
        ChannelKeys {
            pos: format!("{p}{{{t}}}:pos:{channel}"),
            history: format!("{p}{{{t}}}:history:{channel}"),
            base: format!("{p}{{{t}}}:epoch"),
            lives: format!("{p}{{{t}}}:lives"),
        }
    }

    /// A channel's position hash.
    pub(super) fn position(&self, channel: &str) -> String {
        self.channel(channel).pos
    }

    /// A channel's presence hash.
    pub(super) fn presence(&self, channel: &str) -> String {
        format!(
            "{}{{{}}}:presence:{channel}",
            self.prefix,
            Self::tag(channel)
        )
    }

    /// A Pusher presence room's hash.
    pub(super) fn room(&self, room: &str) -> String {
        format!("{}{{{}}}:room:{room}", self.prefix, Self::tag(room))
    }

    /// The live-nodes zset of the occupancy (node id → expiry ms).
    pub(super) fn occupancy_nodes(&self) -> String {
        format!("{}{{nodes}}:occupancy", self.prefix)
    }

    /// A node's occupancy hash (channel → local subscribers); scripts build it from
    /// [`Keys::occupancy_prefix`] and the node id.
    pub(super) fn occupancy(&self, node: u32) -> String {
        format!("{}{node}", self.occupancy_prefix())
    }

    /// What precedes the node id in [`Keys::occupancy`].
    pub(super) fn occupancy_prefix(&self) -> String {
        format!("{}{{nodes}}:occupancy:", self.prefix)
    }

    /// The rooms a node has (or had) members in, for the node that reaps it (a node-wide
    /// key: the reaper's pipeline touches it with the node's occupancy hash).
    pub(super) fn node_rooms(&self, node: u32) -> String {
        format!("{}{{nodes}}:rooms:{node}", self.prefix)
    }

    /// A held marker (`Cluster::hold`), tagged like a channel named `key`.
    pub(super) fn held(&self, key: &str) -> String {
        format!("{}{{{}}}:held:{key}", self.prefix, Self::tag(key))
    }

    /// The pub/sub topic of a channel's messages and presence events.
    pub(super) fn topic(&self, channel: &str) -> String {
        format!("{}c:{channel}", self.prefix)
    }

    /// The channel a topic name carries, if it is a channel topic.
    pub(super) fn channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&*self.prefix)?.strip_prefix("c:")
    }

    /// The pub/sub topic of direct sends and kicks to one node's clients.
    pub(super) fn node_topic(&self, node: u32) -> String {
        format!("{}node:{node}", self.prefix)
    }

    /// The pub/sub topic of sends to a user's connections on every node.
    pub(super) fn users_topic(&self) -> String {
        format!("{}users", self.prefix)
    }

    /// The pub/sub topic closing a user's connections on every node.
    pub(super) fn close_topic(&self) -> String {
        format!("{}close", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_binary_data_with_colons() {
        let env = parse_envelope(b"42:b:1732000001:1700000000000:0:a:b\x00c").unwrap();
        assert_eq!(env.offset, 42);
        assert_eq!(&*env.epoch, "1732000001");
        assert_eq!(env.at_ms, 1_700_000_000_000);
        assert_eq!(env.payload.kind, Kind::Binary);
        assert_eq!(&env.payload.data[..], b"a:b\x00c");
        assert!(env.payload.event.is_none());
        assert!(parse_envelope(b"x:t:e:1:0:d").is_none());
        let event = encode_event(&Payload::text("x").with_event(Event {
            name: "client-typing".into(),
            exclude: Some(ClientId(7)),
            user_id: Some("u1".into()),
        }));
        let raw = format!("1:t:9:9:{}:{event}hello", event.len());
        let env = parse_envelope(raw.as_bytes()).unwrap();
        let e = env.payload.event.unwrap();
        assert_eq!(
            (&*e.name, e.exclude, e.user_id.as_deref()),
            ("client-typing", Some(ClientId(7)), Some("u1"))
        );
        assert_eq!(&env.payload.data[..], b"hello");
    }

    // issue #17 item 3: every key of a channel, and its epoch keys, share one hash tag,
    // whatever braces the channel name holds; the prefix is the operator's.
    #[test]
    fn a_channels_keys_share_one_hash_tag_and_the_prefix() {
        fn tag(key: &str) -> &str {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            &key[open + 1..close]
        }
        let keys = Keys::new("staging:");
        for channel in ["news", "}{", "{x}", "a}b{c"] {
            let k = keys.channel(channel);
            let t = tag(&k.pos);
            assert!(!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()));
            for key in [&k.history, &k.base, &k.lives, &keys.presence(channel)] {
                assert_eq!(tag(key), t, "{key}");
            }
            assert!(k.pos.starts_with("staging:{"));
            assert_eq!(keys.channel_of(&keys.topic(channel)), Some(channel));
        }
        assert_eq!(tag(&keys.occupancy(7)), tag(&keys.occupancy_nodes()));
        assert_eq!(keys.channel_of("wspush:c:news"), None);
    }
}
