//! Payloads and published messages, with their wire frames encoded once and shared.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;

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

/// Published data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// How the bytes are to be read.
    pub kind: Kind,
    /// The data itself.
    pub data: Bytes,
}

impl Payload {
    /// A text payload.
    pub fn text(s: impl Into<String>) -> Self {
        Payload {
            kind: Kind::Text,
            data: Bytes::from(s.into()),
        }
    }

    /// A payload from a JSON value: strings become text, anything else serialized JSON.
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::String(s) => Payload::text(s.clone()),
            other => Payload {
                kind: Kind::Json,
                data: Bytes::from(other.to_string()),
            },
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
}
