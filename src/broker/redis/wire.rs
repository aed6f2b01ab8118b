//! What the Redis broker writes: key and topic names, and the envelopes of messages and
//! events as stored in history and carried over pub/sub. Any change here changes what
//! nodes of different versions understand of each other.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{ClientId, Event, Kind, Payload};

/// The live-nodes zset of the occupancy (node id → expiry ms), on the first shard.
pub(super) const OCCUPANCY_NODES: &str = "wspush:occupancy:nodes";

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

/// Redis keys of a channel (with a hash tag, so Redis Cluster keeps them together), then
/// the server's base epoch and lives counter.
pub(super) fn keys(channel: &str) -> [String; 4] {
    [
        position_key(channel),
        format!("wspush:{{{channel}}}:history"),
        "wspush:epoch".to_string(),
        "wspush:lives".to_string(),
    ]
}

pub(super) fn position_key(channel: &str) -> String {
    format!("wspush:{{{channel}}}:pos")
}

pub(super) fn topic(channel: &str) -> String {
    format!("wspush:c:{channel}")
}

pub(super) fn presence_key(channel: &str) -> String {
    format!("wspush:{{{channel}}}:presence")
}

pub(super) fn room_key(room: &str) -> String {
    format!("wspush:{{{room}}}:room")
}

pub(super) fn occupancy_key(node: u32) -> String {
    format!("wspush:occupancy:{node}")
}

/// The rooms a node has (or had) members in, for the node that reaps it.
pub(super) fn node_rooms_key(node: u32) -> String {
    format!("wspush:rooms:{node}")
}

/// A held marker (`Cluster::hold`).
pub(super) fn held_key(key: &str) -> String {
    format!("wspush:{{{key}}}:held")
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
}
