//! The Pusher protocol's wire format as the hub sees it: `{"event":..,"channel":..,
//! "data":".."}` frames, encoded once per message.

use bytes::Bytes;

use crate::frame;
use crate::model::{Format, Kind, Message};

/// Pusher protocol 7 events. Pusher connections belong to apps, so `*` is not one of
/// their channels; they alone understand protocol events (`pusher_internal:*`).
pub static PUSHER: Format = Format {
    name: "pusher",
    slot: 2,
    encode: pusher_message,
    presence: None,
    ping,
    broadcasts: false,
    protocol_events: true,
    offsets: false,
};

/// The `pusher:ping` event the server sends idle Pusher connections.
pub const PUSHER_PING: &[u8] = br#"{"event":"pusher:ping","data":"{}"}"#;

/// The event name Pusher subscribers see for data published without one (native API,
/// console, JSON clients, upstream).
pub const DEFAULT_EVENT: &str = "message";

fn ping() -> Bytes {
    frame::encode(frame::OP_TEXT, PUSHER_PING)
}

/// The channel name a Pusher client knows: hub channels of Pusher apps other than the
/// default one are named `SCOPE NAME` (a space, which native channel names cannot hold,
/// so they never collide); the name is what follows the space.
pub fn pusher_channel(channel: &str) -> &str {
    channel.split_once(' ').map_or(channel, |(_, name)| name)
}

/// `{"event":..,"channel":..,"data":".."}` (protocol 7: `data` is a JSON string: text
/// as is, JSON as its serialization, binary as base64; `user_id` follows for client
/// events on presence channels). The channel is shown without its app scope.
fn pusher_message(msg: &Message) -> Bytes {
    let payload = &msg.payload;
    let event = payload.event.as_deref();
    let mut body = Vec::with_capacity(payload.data.len() + msg.channel.len() + 64);
    body.extend_from_slice(b"{\"event\":");
    let name = event.map_or(DEFAULT_EVENT, |e| &*e.name);
    serde_json::to_writer(&mut body, name).expect("string serializes");
    body.extend_from_slice(b",\"channel\":");
    serde_json::to_writer(&mut body, pusher_channel(&msg.channel)).expect("string serializes");
    body.extend_from_slice(b",\"data\":");
    match payload.kind {
        Kind::Text | Kind::Json => match std::str::from_utf8(&payload.data) {
            Ok(text) => serde_json::to_writer(&mut body, text),
            Err(_) => serde_json::to_writer(&mut body, &payload.to_json()),
        },
        Kind::Binary => serde_json::to_writer(&mut body, &payload.to_json()),
    }
    .expect("string serializes");
    if let Some(user) = event.and_then(|e| e.user_id.as_deref()) {
        // JSON text of the id as the app gave it (`7` or `"alice"`: issue #14 item 3).
        body.extend_from_slice(b",\"user_id\":");
        body.extend_from_slice(user.as_bytes());
    }
    body.push(b'}');
    frame::encode(frame::OP_TEXT, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Payload};

    #[test]
    fn pusher_frame_has_data_as_a_string_and_no_app_scope() {
        let m = Message::new(
            "pusher:2 presence-x".into(),
            1,
            Payload::from_json(&serde_json::json!({"a": 1})).with_event(Event {
                name: "client-x".into(),
                exclude: None,
                user_id: Some("\"u1\"".into()),
            }),
        );
        assert_eq!(
            &m.frame(&PUSHER)[2..],
            br#"{"event":"client-x","channel":"presence-x","data":"{\"a\":1}","user_id":"u1"}"#
        );
        let t = Message::new("news".into(), 1, Payload::text("hi"));
        assert_eq!(
            &t.frame(&PUSHER)[2..],
            br#"{"event":"message","channel":"news","data":"hi"}"#
        );
    }
}
