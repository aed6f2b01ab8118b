//! The HTTP streaming fronts' wire formats as the hub sees them: Server-Sent Events
//! (`id:`/`event:`/`data:` blocks) and newline-delimited JSON, each encoded once per
//! message; and the per-connection frames the front adds (`subscribed`, `reset`).

use bytes::Bytes;

use crate::broker::Position;
use crate::model::{Format, Kind, Member, Message, Payload};

/// Server-Sent Events (`GET /sse`): `id: <epoch>:<offset>:<channel>`, `event: message`,
/// the data in `data:` lines; presence as `event: join`/`event: leave`.
pub static SSE: Format = Format {
    name: "sse",
    slot: 3,
    encode: sse_message,
    presence: Some(sse_presence),
    ping: sse_ping,
    broadcasts: true,
    protocol_events: false,
    offsets: true,
};

/// Newline-delimited JSON (`GET /stream`): one object per line, as JSON mode's pushes
/// plus the epoch.
pub static NDJSON: Format = Format {
    name: "ndjson",
    slot: 4,
    encode: ndjson_message,
    presence: Some(ndjson_presence),
    ping: ndjson_ping,
    broadcasts: true,
    protocol_events: false,
    offsets: true,
};

/// The SSE id of a position: `<epoch>:<offset>:<channel>` (an epoch holds no `:`).
pub fn event_id(epoch: &str, offset: u64, channel: &str) -> String {
    format!("{epoch}:{offset}:{channel}")
}

/// Appends `data:` lines for `text`, one per line of it (CR LF, LF and CR all end a
/// line in an event stream, so each becomes a line of its own).
fn data_lines(out: &mut Vec<u8>, text: &[u8]) {
    let mut rest = text;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.extend_from_slice(b"data: ");
        match end {
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                return;
            }
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// The data as text: JSON and text as they are, binary as base64.
fn data_text(payload: &Payload) -> std::borrow::Cow<'_, [u8]> {
    match payload.kind {
        Kind::Binary => match payload.to_json() {
            serde_json::Value::String(s) => s.into_bytes().into(),
            _ => Vec::new().into(),
        },
        _ => (&payload.data[..]).into(),
    }
}

/// One event block. Messages without an epoch (direct sends, which have no offsets)
/// and broadcasts carry no `id:`, so they leave the page's `Last-Event-ID` alone.
fn sse_message(msg: &Message) -> Bytes {
    let data = data_text(&msg.payload);
    let mut out = Vec::with_capacity(data.len() + msg.channel.len() + 64);
    if let Some(epoch) = msg.epoch.as_deref().filter(|_| &*msg.channel != "*") {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(event_id(epoch, msg.offset, &msg.channel).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: message\n");
    data_lines(&mut out, &data);
    out.push(b'\n');
    Bytes::from(out)
}

fn presence_json(channel: &str, member: &Member, joined: bool) -> serde_json::Value {
    let mut event = serde_json::json!({
        "channel": channel,
        "event": if joined { "join" } else { "leave" },
        "client": member.client.to_string(),
    });
    if let Some(user) = &member.user {
        event["user"] = serde_json::Value::from(&**user);
    }
    event
}

fn sse_presence(channel: &str, member: &Member, joined: bool) -> Bytes {
    let event = if joined { "join" } else { "leave" };
    let data = presence_json(channel, member, joined);
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn sse_ping() -> Bytes {
    Bytes::from_static(b": ping\n\n")
}

/// `{"channel":..,"offset":..,"epoch":..,"data":..}` and a newline; binary data as
/// base64 with `"encoding":"base64"`.
fn ndjson_message(msg: &Message) -> Bytes {
    let mut out = crate::ws::formats::message_json(msg, true, 1);
    out.push(b'\n');
    Bytes::from(out)
}

fn ndjson_presence(channel: &str, member: &Member, joined: bool) -> Bytes {
    Bytes::from(format!("{}\n", presence_json(channel, member, joined)))
}

fn ndjson_ping() -> Bytes {
    Bytes::from_static(b"{\"event\":\"ping\"}\n")
}

/// What the front tells a connection about one of its channels, before any message of
/// that channel: where the stream starts, or that history no longer reaches back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Messages after this position follow (replayed first when resuming).
    Subscribed,
    /// History does not reach back to where the client was: reload, then messages after
    /// this position follow.
    Reset,
}

/// The frame announcing `start` of `channel` at `position` in `format`. In SSE it carries
/// the position as its `id:`, so a reconnect resumes from there.
pub fn start_frame(format: &Format, start: Start, channel: &str, position: &Position) -> Bytes {
    let event = match start {
        Start::Subscribed => "subscribed",
        Start::Reset => "reset",
    };
    let mut body = serde_json::json!({
        "channel": channel,
        "epoch": &*position.epoch,
        "offset": position.offset,
    });
    if format.slot == NDJSON.slot {
        body["event"] = event.into();
        return Bytes::from(format!("{body}\n"));
    }
    let id = event_id(&position.epoch, position.offset, channel);
    Bytes::from(format!("id: {id}\nevent: {event}\ndata: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientId;

    fn msg(payload: Payload) -> Message {
        Message::new("news".into(), 7, payload).in_epoch("e1.3".into())
    }

    // issue #15 item 1: one event per publish, the position in its id, each line of the
    // data in a data: line of its own.
    #[test]
    fn sse_blocks_split_lines_and_carry_the_position() {
        let m = msg(Payload::text("one\ntwo\r\nthree\rfour"));
        assert_eq!(
            &m.frame(&SSE)[..],
            &b"id: e1.3:7:news\nevent: message\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
                [..]
        );
        let j = msg(Payload::from_json(&serde_json::json!({"a": [1, 2]})));
        assert_eq!(
            &j.frame(&SSE)[..],
            &b"id: e1.3:7:news\nevent: message\ndata: {\"a\":[1,2]}\n\n"[..]
        );
        let empty = msg(Payload::text(""));
        assert_eq!(
            &empty.frame(&SSE)[..],
            &b"id: e1.3:7:news\nevent: message\ndata: \n\n"[..]
        );
        let direct = Message::new("c-1".into(), 0, Payload::text("hi"));
        assert_eq!(
            &direct.frame(&SSE)[..],
            &b"event: message\ndata: hi\n\n"[..]
        );
    }

    #[test]
    fn ndjson_lines_carry_the_epoch() {
        let m = msg(Payload::from_json(&serde_json::json!({"a": 1})));
        assert_eq!(
            &m.frame(&NDJSON)[..],
            &b"{\"channel\":\"news\",\"offset\":7,\"epoch\":\"e1.3\",\"data\":{\"a\":1}}\n"[..]
        );
        let member = Member {
            client: ClientId(4),
            user: Some("ann".into()),
            info: None,
        };
        assert_eq!(
            &sse_presence("room", &member, true)[..],
            &b"event: join\ndata: {\"channel\":\"room\",\"event\":\"join\",\"client\":\"c-4\",\"user\":\"ann\"}\n\n"[..]
        );
        let position = Position {
            offset: 9,
            epoch: "e1.3".into(),
        };
        assert_eq!(
            &start_frame(&SSE, Start::Reset, "news", &position)[..],
            &b"id: e1.3:9:news\nevent: reset\ndata: {\"channel\":\"news\",\"epoch\":\"e1.3\",\"offset\":9}\n\n"[..]
        );
    }
}
