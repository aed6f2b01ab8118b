//! `wspush.v1`: JSON commands from clients (parsed and validated here) and the replies
//! to them (encoded here). Executing commands is the session's job.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::compact;
use crate::broker::Since;
use crate::frame;
use crate::model::valid_channel;

/// Most messages a `history` command returns.
pub const MAX_HISTORY_LIMIT: u64 = 1000;

/// A command's operation.
#[derive(Debug)]
pub enum Op {
    /// `subscribe`, optionally recovering from `since` (+ `epoch`).
    Subscribe {
        /// Channel.
        channel: String,
        /// Where to recover from.
        since: Option<Since>,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// Channel.
        channel: String,
    },
    /// `publish`.
    Publish {
        /// Channel.
        channel: String,
        /// Any JSON value, compact (as `Value::to_string()` writes it), never a tree.
        data: Box<RawValue>,
    },
    /// `presence`.
    Presence {
        /// Channel.
        channel: String,
    },
    /// `history`.
    History {
        /// Channel.
        channel: String,
        /// Messages after this point (all stored when absent).
        since: Option<Since>,
        /// At most this many.
        limit: usize,
    },
    /// `ping`.
    Ping,
    /// `connect`: authenticate with a token (must be the first command).
    Connect {
        /// The JWT.
        token: String,
    },
    /// `refresh`: replace the connection's token before it expires.
    Refresh {
        /// The new JWT (same `sub`).
        token: String,
    },
}

/// A parsed command with its id.
#[derive(Debug)]
pub struct Command {
    /// The client's id for the command (a number or a string), echoed in the reply.
    pub id: Value,
    /// What to do.
    pub op: Op,
}

/// An error reply: a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// `bad_request`, `unknown_op`, `unauthorized`, `not_subscribed`, `already_subscribed`,
    /// `forbidden`, `history_gone`, `too_large`, `rate_limited`, `not_available`,
    /// `broker_unavailable`.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Extra fields (e.g. `oldest` for `history_gone`).
    pub extra: Vec<(&'static str, Value)>,
}

impl Error {
    /// An error without extra fields.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    /// True for errors caused by a malformed command (these count towards the
    /// connection's protocol-error limit).
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self.code,
            "bad_request" | "unknown_op" | "too_large" | "rate_limited"
        )
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::new("bad_request", message)
}

/// A command that could not be parsed: the id when one was readable (`null`
/// otherwise) and the error to answer with.
pub type Rejected = Box<(Value, Error)>;

/// Parses one text frame into a command. Nothing is built but the command: unknown
/// fields are skipped and `data` is kept as compact JSON text (issue #12 item 9). The
/// caller bounds the frame's size first ([`crate::config::Config::command_size_limit`]).
pub fn parse(text: &[u8]) -> Result<Command, Rejected> {
    let anonymous = |e: Error| Box::new((Value::Null, e));
    // The rules (and messages) of parsing into a `Value`, without making one.
    compact::validate(text).map_err(|e| anonymous(bad(format!("not JSON: {e}"))))?;
    let fields: Fields =
        serde_json::from_slice(text).map_err(|_| anonymous(bad("a command is a JSON object")))?;
    let id = match fields.id {
        Some(raw) if matches!(first(raw), b'"' | b'-' | b'0'..=b'9') => {
            serde_json::from_str::<Value>(raw.get()).expect("validated")
        }
        Some(_) => return Err(anonymous(bad("`id` must be a number or a string"))),
        None => return Err(anonymous(bad("missing `id`"))),
    };
    match parse_op(&fields) {
        Ok(op) => Ok(Command { id, op }),
        Err(e) => Err(Box::new((id, e))),
    }
}

/// The first byte of a raw value (which has no leading whitespace).
fn first(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

/// A JSON string's value; `None` for any other value.
fn string(raw: &RawValue) -> Option<String> {
    if first(raw) == b'"' {
        serde_json::from_str(raw.get()).ok()
    } else {
        None
    }
}

/// The top-level fields of a command that mean something, as raw JSON; a repeated key
/// counts once, its last value (as with a `Value` map).
#[derive(Default)]
struct Fields<'a> {
    id: Option<&'a RawValue>,
    op: Option<&'a RawValue>,
    channel: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    since: Option<&'a RawValue>,
    epoch: Option<&'a RawValue>,
    limit: Option<&'a RawValue>,
    token: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut f = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "id" => &mut f.id,
                        "op" => &mut f.op,
                        "channel" => &mut f.channel,
                        "data" => &mut f.data,
                        "since" => &mut f.since,
                        "epoch" => &mut f.epoch,
                        "limit" => &mut f.limit,
                        "token" => &mut f.token,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

fn parse_op(f: &Fields) -> Result<Op, Error> {
    let op = match f.op {
        Some(raw) => string(raw).ok_or_else(|| bad("`op` must be a string"))?,
        None => return Err(bad("missing `op`")),
    };
    let op = match op.as_str() {
        "subscribe" => Op::Subscribe {
            channel: channel(f)?,
            since: since(f)?,
        },
        "unsubscribe" => Op::Unsubscribe {
            channel: channel(f)?,
        },
        "publish" => Op::Publish {
            channel: channel(f)?,
            data: match f.data {
                Some(raw) => compact::compact(raw).map_err(|e| bad(format!("not JSON: {e}")))?,
                None => return Err(bad("missing `data`")),
            },
        },
        "presence" => Op::Presence {
            channel: channel(f)?,
        },
        "history" => Op::History {
            channel: channel(f)?,
            since: since(f)?,
            limit: match f.limit {
                None => 100,
                Some(raw) => match serde_json::from_str::<u64>(raw.get()) {
                    Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => n as usize,
                    _ => {
                        return Err(bad(format!(
                            "`limit` must be an integer from 1 to {MAX_HISTORY_LIMIT}"
                        )))
                    }
                },
            },
        },
        "ping" => Op::Ping,
        "connect" => Op::Connect { token: token(f)? },
        "refresh" => Op::Refresh { token: token(f)? },
        other => return Err(Error::new("unknown_op", format!("unknown op {other:?}"))),
    };
    Ok(op)
}

fn token(f: &Fields) -> Result<String, Error> {
    match f.token.map(string) {
        Some(Some(t)) if !t.is_empty() => Ok(t),
        Some(_) => Err(bad("`token` must be a non-empty string")),
        None => Err(bad("missing `token`")),
    }
}

fn channel(f: &Fields) -> Result<String, Error> {
    match f.channel.map(string) {
        Some(Some(c)) => {
            valid_channel(&c).map_err(bad)?;
            Ok(c)
        }
        Some(None) => Err(bad("`channel` must be a string")),
        None => Err(bad("missing `channel`")),
    }
}

fn since(f: &Fields) -> Result<Option<Since>, Error> {
    let raw = match f.since {
        Some(raw) if raw.get() != "null" => raw,
        _ => return Ok(None),
    };
    let offset = serde_json::from_str::<u64>(raw.get())
        .map_err(|_| bad("`since` must be a non-negative integer offset"))?;
    let epoch = match f.epoch {
        Some(raw) if raw.get() != "null" => {
            Some(string(raw).ok_or_else(|| bad("`epoch` must be a string"))?)
        }
        _ => None,
    };
    Ok(Some(Since { offset, epoch }))
}

/// `{"id":..,"ok":true, ...fields}` as a text frame.
pub fn ok(id: &Value, fields: Map<String, Value>) -> Bytes {
    let mut obj = Map::with_capacity(fields.len() + 2);
    obj.insert("id".into(), id.clone());
    obj.insert("ok".into(), Value::Bool(true));
    obj.extend(fields);
    frame::encode(frame::OP_TEXT, Value::Object(obj).to_string().as_bytes())
}

/// `{"id":..,"error":{"code":..,"message":.., ...extra}}` as a text frame.
pub fn error(id: &Value, err: &Error) -> Bytes {
    let mut body = Map::new();
    body.insert("code".into(), err.code.into());
    body.insert("message".into(), err.message.clone().into());
    body.extend(err.extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let obj = serde_json::json!({ "id": id, "error": body });
    frame::encode(frame::OP_TEXT, obj.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_str(s: &str) -> Result<Command, Rejected> {
        parse(s.as_bytes())
    }

    #[test]
    fn parses_every_op() {
        let c = parse_str(r#"{"id":2,"op":"subscribe","channel":"news","since":37,"epoch":"e1"}"#)
            .unwrap();
        assert_eq!(c.id, json!(2));
        let Op::Subscribe { channel, since } = c.op else {
            panic!("{c:?}")
        };
        assert_eq!(channel, "news");
        assert_eq!(
            since,
            Some(Since {
                offset: 37,
                epoch: Some("e1".into())
            })
        );
        let c = parse_str(r#"{"id":"a","op":"publish","channel":"n","data":{"x":1}}"#).unwrap();
        assert_eq!(c.id, json!("a"));
        let Op::Publish { channel, data } = c.op else {
            panic!("{c:?}")
        };
        assert_eq!((channel.as_str(), data.get()), ("n", r#"{"x":1}"#));
        let c =
            parse_str(r#"{"id":6,"op":"history","channel":"n","since":30,"limit":100}"#).unwrap();
        assert!(matches!(c.op, Op::History { limit: 100, .. }));
        assert!(matches!(
            parse_str(r#"{"id":7,"op":"ping"}"#).unwrap().op,
            Op::Ping
        ));
    }

    // issue #12 item 9: `data` is kept as compact JSON text, byte for byte what a `Value`
    // tree would have serialized; unknown fields are skipped; the rules are a `Value`'s.
    #[test]
    fn data_is_compact_raw_json_and_the_rules_are_unchanged() {
        let c = parse_str(
            " { \"pad\" : [[1,{\"q\":2}]], \"data\" : { \"b\" : [ 1 , 2.50 , 1E2 ] , \"a\" : \"\\u00e9\" } ,\n \"op\":\"publish\",\"channel\":\"n\",\"id\":1 } ",
        )
        .unwrap();
        let Op::Publish { data, .. } = c.op else {
            panic!("{c:?}")
        };
        assert_eq!(data.get(), r#"{"b":[1,2.5,100.0],"a":"é"}"#);
        // A repeated key counts once, its last value.
        let c = parse_str(r#"{"id":1,"id":"x","op":"fly","op":"ping"}"#).unwrap();
        assert_eq!(c.id, json!("x"));
        assert!(matches!(c.op, Op::Ping));
        let code = |s: &str| parse_str(s).map(|_| ()).unwrap_err().1;
        // A list is not a command, even one that reads like the fields in order.
        assert_eq!(code(r#"[1,"ping"]"#).message, "a command is a JSON object");
        for bad in [
            r#"{"id":1,"op":"ping","x":1e400}"#,
            r#"{"id":1,"op":"ping","x":"\ud800"}"#,
            &(r#"{"id":1,"op":"ping","x":"#.to_string()
                + &"[".repeat(200)
                + &"]".repeat(200)
                + "}"),
        ] {
            let tree = serde_json::from_str::<Value>(bad).unwrap_err();
            assert_eq!(code(bad).message, format!("not JSON: {tree}"), "{bad}");
        }
        assert_eq!(
            code(r#"{"id":null,"op":"ping"}"#).message,
            "`id` must be a number or a string"
        );
        assert_eq!(
            code(r#"{"id":1,"op":"subscribe","channel":"a","since":1.0}"#).message,
            "`since` must be a non-negative integer offset"
        );
        let c = parse_str(r#"{"id":1,"op":"subscribe","channel":"a","since":null,"epoch":5}"#);
        assert!(matches!(c.unwrap().op, Op::Subscribe { since: None, .. }));
    }

    #[test]
    fn errors_carry_the_id_when_readable() {
        let code = |s: &str| *parse_str(s).map(|_| ()).unwrap_err();
        assert_eq!(code("nope").0, Value::Null);
        assert_eq!(code("nope").1.code, "bad_request");
        assert_eq!(code("[1]").1.code, "bad_request");
        assert_eq!(code(r#"{"op":"ping"}"#).1.message, "missing `id`");
        let (id, e) = code(r#"{"id":3,"op":"fly"}"#);
        assert_eq!((id, e.code), (json!(3), "unknown_op"));
        let (id, e) = code(r#"{"id":4,"op":"subscribe"}"#);
        assert_eq!((id, e.code), (json!(4), "bad_request"));
        assert_eq!(
            code(r#"{"id":4,"op":"subscribe","channel":5}"#).1.code,
            "bad_request"
        );
        assert_eq!(
            code(r#"{"id":4,"op":"subscribe","channel":"a","since":-1}"#)
                .1
                .code,
            "bad_request"
        );
        assert_eq!(
            code(r#"{"id":4,"op":"history","channel":"a","limit":0}"#)
                .1
                .code,
            "bad_request"
        );
        assert_eq!(
            code(r#"{"id":4,"op":"publish","channel":"a"}"#).1.code,
            "bad_request"
        );
    }

    #[test]
    fn replies_encode_id_and_fields() {
        let mut f = Map::new();
        f.insert("offset".into(), json!(41));
        assert_eq!(&ok(&json!(1), f)[2..], br#"{"id":1,"ok":true,"offset":41}"#);
        let e = Error::new("forbidden", "no");
        assert_eq!(
            &error(&json!("x"), &e)[2..],
            br#"{"id":"x","error":{"code":"forbidden","message":"no"}}"#
        );
    }
}
