//! A Pusher user id as the app gave it (issue #14 item 3). Laravel and many apps put an
//! integer in `channel_data.user_id` and in sign-in `user_data.id`; Pusher clients
//! compare what comes back with `===`, so an id keeps its JSON type wherever it is echoed
//! (presence `ids`, `member_added`/`member_removed`, client events' `user_id`, the users
//! API, webhooks). Its identity is its text: `2` and `"2"` are one user, as they are one
//! key of the presence `hash` object.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// A user id: a non-empty string or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    /// The id as text: the string itself, or the integer's digits.
    key: Arc<str>,
    /// True when the app gave an integer.
    number: bool,
}

impl UserId {
    /// The id in `value`: a non-empty string or an integer (`None` for anything else).
    pub fn from_json(value: &Value) -> Option<UserId> {
        match value {
            Value::String(s) if !s.is_empty() => Some(UserId::text(s)),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(UserId {
                key: Arc::from(n.to_string()),
                number: true,
            }),
            _ => None,
        }
    }

    /// A string id (an id from a URL path, or a broker member of an older node).
    pub fn text(s: &str) -> UserId {
        UserId {
            key: Arc::from(s),
            number: false,
        }
    }

    /// The id as text: its identity (registry keys, `#server-to-user-{id}`, presence
    /// `hash` keys, the broker's member `user`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The id as the app gave it.
    pub fn to_json(&self) -> Value {
        if self.number {
            if let Ok(n) = self.key.parse::<serde_json::Number>() {
                return Value::Number(n);
            }
        }
        Value::String(self.key.to_string())
    }

    /// The id as JSON text (`7` or `"7"`), as client events carry it
    /// (`crate::model::Event::user_id`).
    pub fn json_text(&self) -> Arc<str> {
        Arc::from(self.to_json().to_string())
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_and_strings_keep_their_type_and_share_identity() {
        let n = UserId::from_json(&json!(42)).unwrap();
        let s = UserId::from_json(&json!("42")).unwrap();
        assert_eq!((n.key(), s.key()), ("42", "42"));
        assert_eq!(json!({ "user_id": n }), json!({"user_id": 42}));
        assert_eq!(json!({ "user_id": s }), json!({"user_id": "42"}));
        assert_eq!(&*n.json_text(), "42");
        assert_eq!(&*s.json_text(), "\"42\"");
        for bad in [json!(""), json!(1.5), json!(null), json!([1]), json!({})] {
            assert_eq!(UserId::from_json(&bad), None, "{bad}");
        }
    }
}
