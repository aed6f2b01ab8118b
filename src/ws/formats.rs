//! The WebSocket fronts' wire formats as the hub sees them: raw mode (the published
//! bytes as one frame) and JSON mode (`wspush.v1` pushes), each encoded once per message.

use bytes::Bytes;

use crate::frame;
use crate::model::{Format, Kind, Member, Message, Payload};

/// Raw mode: exactly the published data, text as text and binary as binary.
pub static RAW: Format = Format {
    name: "raw",
    slot: 0,
    encode: raw_message,
    presence: None,
    ping,
    broadcasts: true,
    protocol_events: false,
    offsets: false,
};

/// JSON mode: `{"channel":..,"offset":..,"data":..}` pushes and presence events.
pub static JSON: Format = Format {
    name: "json",
    slot: 1,
    encode: json_message,
    presence: Some(json_presence),
    ping,
    broadcasts: true,
    protocol_events: false,
    offsets: true,
};

/// An empty WebSocket ping.
fn ping() -> Bytes {
    frame::encode(frame::OP_PING, b"")
}

/// The raw-mode frame of a payload (also the echo and webhook replies to raw clients).
pub fn raw_frame(payload: &Payload) -> Bytes {
    let op = if payload.kind == Kind::Binary {
        frame::OP_BINARY
    } else {
        frame::OP_TEXT
    };
    frame::encode(op, &payload.data)
}

fn raw_message(msg: &Message) -> Bytes {
    raw_frame(&msg.payload)
}

/// `{"channel":..,"offset":..,"data":..}`: JSON data embedded as is, text as a string,
/// binary as base64 with `"encoding":"base64"`.
fn json_message(msg: &Message) -> Bytes {
    frame::encode(frame::OP_TEXT, &message_json(msg, false, 0))
}

/// The JSON object of a published message, shared by the JSON-mode frame and the NDJSON
/// stream: `{"channel":..,"offset":..[,"epoch":..],"data":..}`, JSON data embedded as
/// is, text as a string, binary as base64 with `"encoding":"base64"`; `spare` bytes of
/// capacity are left for the caller to append.
pub(crate) fn message_json(msg: &Message, with_epoch: bool, spare: usize) -> Vec<u8> {
    let payload = &msg.payload;
    let mut body = Vec::with_capacity(payload.data.len() + msg.channel.len() + 64 + spare);
    body.extend_from_slice(b"{\"channel\":");
    serde_json::to_writer(&mut body, &*msg.channel).expect("string serializes");
    body.extend_from_slice(b",\"offset\":");
    body.extend_from_slice(msg.offset.to_string().as_bytes());
    if let (true, Some(epoch)) = (with_epoch, &msg.epoch) {
        body.extend_from_slice(b",\"epoch\":");
        serde_json::to_writer(&mut body, &**epoch).expect("string serializes");
    }
    body.extend_from_slice(b",\"data\":");
    match payload.kind {
        Kind::Json => body.extend_from_slice(&payload.data),
        _ => serde_json::to_writer(&mut body, &payload.to_json()).expect("value serializes"),
    }
    if payload.kind == Kind::Binary {
        body.extend_from_slice(b",\"encoding\":\"base64\"");
    }
    body.push(b'}');
    body
}

/// `{"channel":..,"event":"join"|"leave","client":..,"user":..}`.
fn json_presence(channel: &str, member: &Member, joined: bool) -> Bytes {
    let mut event = serde_json::json!({
        "channel": channel,
        "event": if joined { "join" } else { "leave" },
        "client": member.client.to_string(),
    });
    if let Some(user) = &member.user {
        event["user"] = serde_json::Value::from(&**user);
    }
    frame::encode(frame::OP_TEXT, event.to_string().as_bytes())
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
            &m.frame(&JSON)[2..],
            br#"{"channel":"news","offset":42,"data":{"a":1}}"#
        );
        let t = Message::new("n\"s".into(), 1, Payload::text("hi"));
        assert_eq!(
            &t.frame(&JSON)[2..],
            br#"{"channel":"n\"s","offset":1,"data":"hi"}"#
        );
        assert_eq!(&t.frame(&RAW)[..], b"\x81\x02hi");
    }
}
