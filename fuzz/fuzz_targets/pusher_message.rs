//! The Pusher client message parser (`pusher::protocol::parse`) and what subscribe,
//! unsubscribe and sign-in read of `data` (`event_data`), checked against the
//! `serde_json::Value` reading they replaced.
//!
//! Input: one text frame's bytes.
//!
//! Invariants: nothing panics; `event_data` gives, for `channel`, `auth`,
//! `channel_data` and `user_data`, exactly the string a `Value` tree of `data` (or of
//! the JSON held in `data` when it is a string) has there; client-event data compacts
//! to the bytes a `Value` tree of it serializes to (unless an object repeats a key).
#![no_main]

#[path = "common/tree.rs"]
mod tree;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wspush::protocol::compact;
use wspush::pusher::protocol::{event_data, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse(data) else {
        return;
    };
    let fields = event_data(msg.data);
    // What the `Value`-based reading gave.
    let tree: Value = match msg.data.map(|raw| serde_json::from_str::<Value>(raw.get())) {
        Some(Ok(Value::String(s))) => serde_json::from_str(&s).unwrap_or(Value::Null),
        Some(Ok(v)) => v,
        Some(Err(_)) | None => Value::Null,
    };
    for name in ["channel", "auth", "channel_data", "user_data"] {
        if tree.is_object() || !fields.is_null() {
            assert_eq!(
                fields[name].as_str(),
                tree[name].as_str(),
                "{name}: {fields} vs {tree}"
            );
        }
    }
    if let Some(raw) = msg.data {
        if let (Ok(small), Some(expected)) = (compact::compact(raw), tree::tree_string(raw.get())) {
            assert_eq!(small.get(), expected);
        }
    }
});
