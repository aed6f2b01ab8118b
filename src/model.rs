//! The nouns every layer shares, and no wire format: client ids, payloads, published
//! messages (with a slot per wire format for its frame, encoded once by the front that
//! owns the format), wire formats as the hub sees them, and the hub's disconnect reasons.

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;

/// A client id, shown as `c-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

impl std::str::FromStr for ClientId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("c-")
            .and_then(|n| n.parse().ok())
            .map(ClientId)
            .ok_or(())
    }
}

/// The pseudo-channel that addresses every connected client whose format takes
/// broadcasts (`Format::broadcasts`), on every node.
pub const ALL: &str = "*";

/// Checks a native channel name a client or API caller gave: 1 to 200 bytes, no
/// whitespace, comma or control character, and not `*`.
pub fn valid_channel(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("channel name is empty".into());
    }
    if name.len() > 200 {
        return Err("channel name longer than 200 bytes".into());
    }
    if name == ALL {
        return Err("'*' is not a channel; use broadcast".into());
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(format!(
            "channel name {name:?} holds whitespace, a comma or a control character"
        ));
    }
    Ok(())
}

/// Why the hub (or an operator, or a broker) ends a client's connection. Each front
/// maps a reason to its own close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The server is shutting down.
    ShuttingDown,
    /// The client's outbox overflowed: it does not read fast enough.
    SlowConsumer,
    /// An operator disconnected it (HTTP API).
    Kicked,
    /// Its token expired and was not refreshed.
    TokenExpired,
    /// It did not answer pings in time.
    PongTimeout,
    /// The offsets of a channel it follows restarted (a new epoch): reconnect and recover.
    Resync,
    /// The connections of its user were terminated (Pusher HTTP API).
    Terminated,
    /// It did not authenticate in time (Pusher user authentication).
    Unauthorized,
    /// It broke a rule of its front (rate, protocol errors).
    Policy,
    /// Its upstream process (`--upstream exec:`) exited: the session ends normally.
    Ended,
}

impl Disconnect {
    /// Every reason, in a fixed order (its index is its wire code between nodes).
    pub const ALL: [Disconnect; 10] = [
        Disconnect::ShuttingDown,
        Disconnect::SlowConsumer,
        Disconnect::Kicked,
        Disconnect::TokenExpired,
        Disconnect::PongTimeout,
        Disconnect::Resync,
        Disconnect::Terminated,
        Disconnect::Unauthorized,
        Disconnect::Policy,
        Disconnect::Ended,
    ];
}

/// How many wire formats a message can hold frames for.
pub const FORMATS: usize = 5;

/// A wire format as the hub sees it: where its frame is cached in a `Message`, how it is
/// encoded (once per message), and what its clients take part in. Each front defines
/// its formats as statics; the hub knows them only through this table.
#[derive(Debug)]
pub struct Format {
    /// Lower-case name for APIs and metrics (`raw`, `json`, `pusher`, `sse`).
    pub name: &'static str,
    /// Its slot in `Message` (unique per format, below `FORMATS`).
    pub slot: usize,
    /// Encodes a message into a frame of this format.
    pub encode: fn(&Message) -> Bytes,
    /// Encodes a presence change (`channel`, member, joined) for this format's
    /// subscribers of presence channels; `None`: its clients get no presence events.
    pub presence: Option<fn(&str, &Member, bool) -> Bytes>,
    /// The keep-alive frame sent to a silent client.
    pub ping: fn() -> Bytes,
    /// Its clients receive broadcasts to `*`.
    pub broadcasts: bool,
    /// Its clients understand protocol events (`Event::is_internal`).
    pub protocol_events: bool,
    /// Its subscriptions carry offsets: when a channel's offsets restart, its clients
    /// are closed with `Disconnect::Resync` so they recover.
    pub offsets: bool,
}

/// A presence member: a client and its user, with optional info (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The connection.
    pub client: ClientId,
    /// Its user, if it authenticated.
    pub user: Option<Arc<str>>,
    /// What the member declared about itself (Pusher `user_info`), as JSON.
    pub info: Option<Arc<str>>,
}

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
    /// The sender's user id as JSON text, `7` or `"alice"` (client events on presence
    /// channels; the Pusher front writes it into its frames as is).
    pub user_id: Option<Arc<str>>,
}

impl Event {
    /// True for protocol events that only Pusher subscribers understand.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("pusher:") || self.name.starts_with("pusher_internal:")
    }
}

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

    /// True when only clients of formats that understand protocol events may receive
    /// this payload.
    pub fn protocol_only(&self) -> bool {
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
}

/// A message's compressed frames, by (format slot, parameter key).
type Deflated = Mutex<Vec<(u8, Bytes)>>;

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
    /// The epoch its offset belongs to (`None` for direct sends, which have no offsets).
    pub epoch: Option<Arc<str>>,
    frames: [OnceLock<Bytes>; FORMATS],
    /// Compressed frames (permessage-deflate), by format and window: made only when a
    /// subscriber negotiated compression.
    deflated: OnceLock<Box<Deflated>>,
}

impl Message {
    /// A message ready to be delivered.
    pub fn new(channel: Arc<str>, offset: u64, payload: Payload) -> Self {
        Message {
            channel,
            offset,
            payload,
            epoch: None,
            frames: Default::default(),
            deflated: OnceLock::new(),
        }
    }

    /// The same message, its offset belonging to `epoch` (brokers set it, so a format
    /// whose frames name the position, SSE, can say which life of the channel it is).
    pub fn in_epoch(mut self, epoch: Arc<str>) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// The frame of `format`, encoded on first use and shared after.
    pub fn frame(&self, format: &Format) -> &Bytes {
        self.frames[format.slot].get_or_init(|| (format.encode)(self))
    }

    /// The frame of `format` compressed for connections of one parameter set (`key`,
    /// e.g. the window size): `compress` turns the plain frame into it at most once per
    /// format and key, and every such subscriber shares it.
    pub fn deflated(
        &self,
        format: &Format,
        key: u8,
        compress: impl FnOnce(&Bytes) -> Bytes,
    ) -> Bytes {
        let key = (format.slot as u8) << 4 | (key & 0x0f);
        let mut cache = self.deflated.get_or_init(Box::default).lock();
        if let Some((_, frame)) = cache.iter().find(|(k, _)| *k == key) {
            return frame.clone();
        }
        let frame = compress(self.frame(format));
        cache.push((key, frame.clone()));
        frame
    }
}

/// A format for unit tests of the hub (frames are the raw data).
#[cfg(test)]
pub(crate) static PLAIN: Format = Format {
    name: "plain",
    slot: 0,
    encode: |m| m.payload.data.clone(),
    presence: None,
    ping: Bytes::new,
    broadcasts: true,
    protocol_events: false,
    offsets: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn count(m: &Message) -> Bytes {
        Bytes::from(format!("{}:{}", m.channel, m.offset))
    }

    static COUNTED: Format = Format {
        name: "test",
        slot: 3,
        encode: count,
        presence: None,
        ping: Bytes::new,
        broadcasts: true,
        protocol_events: false,
        offsets: false,
    };

    #[test]
    fn a_frame_is_encoded_once_per_format() {
        let m = Message::new("news".into(), 7, Payload::text("hi"));
        let a = m.frame(&COUNTED).clone();
        let b = m.frame(&COUNTED);
        assert_eq!(&a[..], b"news:7");
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the same bytes, not a second encoding"
        );
    }

    #[test]
    fn client_ids_read_back() {
        assert_eq!("c-42".parse::<ClientId>(), Ok(ClientId(42)));
        assert_eq!(ClientId(7).to_string(), "c-7");
        assert!("42".parse::<ClientId>().is_err());
    }
}
