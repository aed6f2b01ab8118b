//! Payloads and published messages, with their wire frames encoded once and shared.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;

use super::ClientId;
use crate::ws::frame;

/// What a payload holds, which decides how each wire format carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text: a text frame in raw mode, a JSON string in JSON mode.
    Text,
    /// Serialized JSON (from the HTTP API or JSON clients): a text frame in raw mode,
    /// embedded as-is in JSON mode.
    Json,
    /// Bytes: a binary frame in raw mode, base64 in JSON mode.
    Binary,
}

/// What an event-based front (the Pusher protocol) attaches to published data: the
/// event name, a connection not to deliver to, and the sending user. Raw and JSON
/// subscribers see only the data; events named `pusher:*` or `pusher_internal:*` (protocol
/// events such as presence changes) reach Pusher subscribers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event name (`message` for data published without one).
    pub name: Arc<str>,
    /// The connection that must not receive it (the sender of a client event, or the
    /// `socket_id` given to the Pusher HTTP API). Client ids are unique across nodes.
    pub exclude: Option<ClientId>,
    /// The sender's user id (client events on presence channels).
    pub user_id: Option<Arc<str>>,
}

impl Event {
    /// True for protocol events that only Pusher subscribers understand.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("pusher:") || self.name.starts_with("pusher_internal:")
    }
}

/// The `pusher:ping` event the server sends idle Pusher connections.
pub const PUSHER_PING: &[u8] = br#"{"event":"pusher:ping","data":"{}"}"#;

/// The event name Pusher subscribers see for data published without one (native API,
/// console, JSON clients, upstream).
pub const DEFAULT_EVENT: &str = "message";

/// Published data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// How the bytes are to be read.
    pub kind: Kind,
    /// The data itself.
    pub data: Bytes,
    /// Event metadata (Pusher events); `None` for plain data.
    pub event: Option<Arc<Event>>,
}

impl Payload {
    /// A text payload.
    pub fn text(s: impl Into<String>) -> Self {
        Payload {
            kind: Kind::Text,
            data: Bytes::from(s.into()),
            event: None,
        }
    }

    /// The same data carrying event metadata.
    pub fn with_event(mut self, event: Event) -> Self {
        self.event = Some(Arc::new(event));
        self
    }

    /// The client this payload must not be delivered to, if any.
    pub fn excluded(&self) -> Option<ClientId> {
        self.event.as_ref().and_then(|e| e.exclude)
    }

    /// True when only Pusher subscribers may receive this payload.
    pub fn pusher_only(&self) -> bool {
        self.event.as_ref().is_some_and(|e| e.is_internal())
    }

    /// A payload from a JSON value: strings become text, anything else serialized JSON.
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::String(s) => Payload::text(s.clone()),
            other => Payload {
                kind: Kind::Json,
                data: Bytes::from(other.to_string()),
                event: None,
            },
        }
    }

    /// A payload from JSON text already in compact form (see
    /// [`crate::protocol::compact::compact`]): a JSON string becomes text, anything else
    /// is kept as serialized JSON, so the bytes are those [`Payload::from_json`] gives for
    /// the same value, without a tree.
    pub fn from_raw_json(raw: Box<serde_json::value::RawValue>) -> Self {
        if raw.get().starts_with('"') {
            if let Ok(s) = serde_json::from_str::<String>(raw.get()) {
                return Payload::text(s);
            }
        }
        Payload {
            kind: Kind::Json,
            data: Bytes::from(String::from(Box::<str>::from(raw))),
            event: None,
        }
    }

    /// The data as a JSON value (text as a string, binary as base64).
    pub fn to_json(&self) -> serde_json::Value {
        match self.kind {
            Kind::Text => {
                serde_json::Value::String(String::from_utf8_lossy(&self.data).into_owned())
            }
            Kind::Json => serde_json::from_slice(&self.data).unwrap_or(serde_json::Value::Null),
            Kind::Binary => serde_json::Value::String(
                base64::engine::general_purpose::STANDARD.encode(&self.data),
            ),
        }
    }

    /// The raw-mode frame: exactly the data, text as text and binary as binary.
    pub fn raw_frame(&self) -> Bytes {
        let op = if self.kind == Kind::Binary {
            frame::OP_BINARY
        } else {
            frame::OP_TEXT
        };
        frame::encode(op, &self.data)
    }

    /// How the data reads on a console line.
    pub fn display(&self) -> String {
        match self.kind {
            Kind::Binary => format!("<binary {} bytes>", self.data.len()),
            _ => String::from_utf8_lossy(&self.data).into_owned(),
        }
    }
}

/// A message published to a channel, with its offset. Its frames are built at most
/// once per wire format and then shared by every subscriber.
#[derive(Debug)]
pub struct Message {
    /// The channel (`*` for a broadcast to every client).
    pub channel: Arc<str>,
    /// The channel offset the broker assigned.
    pub offset: u64,
    /// The data.
    pub payload: Payload,
    raw: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
    pusher: OnceLock<Bytes>,
}

impl Message {
    /// A message ready to be delivered.
    pub fn new(channel: Arc<str>, offset: u64, payload: Payload) -> Self {
        Message {
            channel,
            offset,
            payload,
            raw: OnceLock::new(),
            json: OnceLock::new(),
            pusher: OnceLock::new(),
        }
    }

    /// The frame for a client of `mode`, encoded on first use and shared after.
    pub fn frame_for(&self, mode: super::Mode) -> &Bytes {
        match mode {
            super::Mode::Raw => self.raw_frame(),
            super::Mode::Json => self.json_frame(),
            super::Mode::Pusher => self.pusher_frame(),
        }
    }

    /// The raw-mode frame, encoded on first use.
    pub fn raw_frame(&self) -> &Bytes {
        self.raw.get_or_init(|| self.payload.raw_frame())
    }

    /// The JSON-mode frame `{"channel":..,"offset":..,"data":..}`, encoded on first use.
    pub fn json_frame(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let mut body = Vec::with_capacity(self.payload.data.len() + self.channel.len() + 48);
            body.extend_from_slice(b"{\"channel\":");
            serde_json::to_writer(&mut body, &*self.channel).expect("string serializes");
            body.extend_from_slice(b",\"offset\":");
            body.extend_from_slice(self.offset.to_string().as_bytes());
            body.extend_from_slice(b",\"data\":");
            match self.payload.kind {
                Kind::Json => body.extend_from_slice(&self.payload.data),
                _ => serde_json::to_writer(&mut body, &self.payload.to_json())
                    .expect("value serializes"),
            }
            if self.payload.kind == Kind::Binary {
                body.extend_from_slice(b",\"encoding\":\"base64\"");
            }
            body.push(b'}');
            frame::encode(frame::OP_TEXT, &body)
        })
    }

    /// The Pusher-protocol frame `{"event":..,"channel":..,"data":".."}` (protocol 7:
    /// `data` is a JSON string: text as is, JSON as its serialization, binary as base64;
    /// `user_id` follows for client events on presence channels), encoded on first use.
    /// The channel is shown without its app scope (see [`pusher_channel`]).
    pub fn pusher_frame(&self) -> &Bytes {
        self.pusher.get_or_init(|| {
            let event = self.payload.event.as_deref();
            let mut body = Vec::with_capacity(self.payload.data.len() + self.channel.len() + 64);
            body.extend_from_slice(b"{\"event\":");
            let name = event.map_or(DEFAULT_EVENT, |e| &*e.name);
            serde_json::to_writer(&mut body, name).expect("string serializes");
            body.extend_from_slice(b",\"channel\":");
            serde_json::to_writer(&mut body, pusher_channel(&self.channel))
                .expect("string serializes");
            body.extend_from_slice(b",\"data\":");
            match self.payload.kind {
                Kind::Text | Kind::Json => match std::str::from_utf8(&self.payload.data) {
                    Ok(text) => serde_json::to_writer(&mut body, text),
                    Err(_) => serde_json::to_writer(&mut body, &self.payload.to_json()),
                },
                Kind::Binary => serde_json::to_writer(&mut body, &self.payload.to_json()),
            }
            .expect("string serializes");
            if let Some(user) = event.and_then(|e| e.user_id.as_deref()) {
                body.extend_from_slice(b",\"user_id\":");
                serde_json::to_writer(&mut body, user).expect("string serializes");
            }
            body.push(b'}');
            frame::encode(frame::OP_TEXT, &body)
        })
    }
}

/// The channel name a Pusher client knows: hub channels of Pusher apps other than the
/// default one are named `SCOPE NAME` (a space, which native channel names cannot hold,
/// so they never collide); the name is what follows the space.
pub fn pusher_channel(channel: &str) -> &str {
    channel.split_once(' ').map_or(channel, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_frame_embeds_json_and_quotes_text() {
        let m = Message::new(
            "news".into(),
            42,
            Payload::from_json(&serde_json::json!({"a": 1})),
        );
        assert_eq!(
            &m.json_frame()[2..],
            br#"{"channel":"news","offset":42,"data":{"a":1}}"#
        );
        let t = Message::new("n\"s".into(), 1, Payload::text("hi"));
        assert_eq!(
            &t.json_frame()[2..],
            br#"{"channel":"n\"s","offset":1,"data":"hi"}"#
        );
        assert_eq!(&t.raw_frame()[..], b"\x81\x02hi");
    }

    #[test]
    fn pusher_frame_has_data_as_a_string_and_no_app_scope() {
        let m = Message::new(
            "pusher:2 presence-x".into(),
            1,
            Payload::from_json(&serde_json::json!({"a": 1})).with_event(Event {
                name: "client-x".into(),
                exclude: None,
                user_id: Some("u1".into()),
            }),
        );
        assert_eq!(
            &m.pusher_frame()[2..],
            br#"{"event":"client-x","channel":"presence-x","data":"{\"a\":1}","user_id":"u1"}"#
        );
        let t = Message::new("news".into(), 1, Payload::text("hi"));
        assert_eq!(
            &t.pusher_frame()[2..],
            br#"{"event":"message","channel":"news","data":"hi"}"#
        );
    }
}
