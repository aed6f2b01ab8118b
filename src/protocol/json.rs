//! `wspush.v1`: JSON commands from clients (parsed and validated here) and the replies
//! to them (encoded here). Executing commands is the session's job.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::broker::Since;
use crate::ws::frame;
use crate::ws::valid_channel;

/// Most messages a `history` command returns.
pub const MAX_HISTORY_LIMIT: u64 = 1000;

/// A command's operation.
#[derive(Debug, PartialEq)]
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
        /// Any JSON value.
        data: Value,
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
#[derive(Debug, PartialEq)]
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

/// Parses one text frame into a command.
pub fn parse(text: &[u8]) -> Result<Command, Rejected> {
    let anonymous = |e: Error| Box::new((Value::Null, e));
    let value: Value =
        serde_json::from_slice(text).map_err(|e| anonymous(bad(format!("not JSON: {e}"))))?;
    let Value::Object(mut obj) = value else {
        return Err(anonymous(bad("a command is a JSON object")));
    };
    let id = match obj.remove("id") {
        Some(id @ (Value::Number(_) | Value::String(_))) => id,
        Some(_) => return Err(anonymous(bad("`id` must be a number or a string"))),
        None => return Err(anonymous(bad("missing `id`"))),
    };
    match parse_op(&mut obj) {
        Ok(op) => Ok(Command { id, op }),
        Err(e) => Err(Box::new((id, e))),
    }
}

fn parse_op(obj: &mut Map<String, Value>) -> Result<Op, Error> {
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => return Err(bad("`op` must be a string")),
        None => return Err(bad("missing `op`")),
    };
    let op = match op.as_str() {
        "subscribe" => Op::Subscribe {
            channel: channel(obj)?,
            since: since(obj)?,
        },
        "unsubscribe" => Op::Unsubscribe {
            channel: channel(obj)?,
        },
        "publish" => Op::Publish {
            channel: channel(obj)?,
            data: obj.remove("data").ok_or_else(|| bad("missing `data`"))?,
        },
        "presence" => Op::Presence {
            channel: channel(obj)?,
        },
        "history" => Op::History {
            channel: channel(obj)?,
            since: since(obj)?,
            limit: match obj.get("limit") {
                None => 100,
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => n as usize,
                    _ => {
                        return Err(bad(format!(
                            "`limit` must be an integer from 1 to {MAX_HISTORY_LIMIT}"
                        )))
                    }
                },
            },
        },
        "ping" => Op::Ping,
        "connect" => Op::Connect { token: token(obj)? },
        "refresh" => Op::Refresh { token: token(obj)? },
        other => return Err(Error::new("unknown_op", format!("unknown op {other:?}"))),
    };
    Ok(op)
}

fn token(obj: &Map<String, Value>) -> Result<String, Error> {
    match obj.get("token") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        Some(_) => Err(bad("`token` must be a non-empty string")),
        None => Err(bad("missing `token`")),
    }
}

fn channel(obj: &Map<String, Value>) -> Result<String, Error> {
    match obj.get("channel") {
        Some(Value::String(c)) => {
            valid_channel(c).map_err(bad)?;
            Ok(c.clone())
        }
        Some(_) => Err(bad("`channel` must be a string")),
        None => Err(bad("missing `channel`")),
    }
}

fn since(obj: &Map<String, Value>) -> Result<Option<Since>, Error> {
    let offset = match obj.get("since") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("`since` must be a non-negative integer offset"))?,
    };
    let epoch = match obj.get("epoch") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => return Err(bad("`epoch` must be a string")),
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
        assert_eq!(
            c.op,
            Op::Subscribe {
                channel: "news".into(),
                since: Some(Since {
                    offset: 37,
                    epoch: Some("e1".into())
                })
            }
        );
        let c = parse_str(r#"{"id":"a","op":"publish","channel":"n","data":{"x":1}}"#).unwrap();
        assert_eq!(
            c.op,
            Op::Publish {
                channel: "n".into(),
                data: json!({"x":1})
            }
        );
        let c =
            parse_str(r#"{"id":6,"op":"history","channel":"n","since":30,"limit":100}"#).unwrap();
        assert!(matches!(c.op, Op::History { limit: 100, .. }));
        assert_eq!(parse_str(r#"{"id":7,"op":"ping"}"#).unwrap().op, Op::Ping);
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
