//! The `wspush.v1` command parser (`protocol::json::parse`) and the tree-less JSON
//! helpers under it (`protocol::compact`), checked against `serde_json::Value`.
//!
//! Input: one text frame's bytes.
//!
//! Invariants: nothing panics; `validate` accepts exactly what parsing into a `Value`
//! accepts; the compact form of a value is the bytes a `Value` tree of it serializes to
//! (unless an object repeats a key); a parsed command's `data` is valid JSON; replies
//! encode.
#![no_main]

#[path = "common/tree.rs"]
mod tree;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use wspush::protocol::{compact, json};

fuzz_target!(|data: &[u8]| {
    let tree = serde_json::from_slice::<Value>(data);
    assert_eq!(
        compact::validate(data).is_ok(),
        tree.is_ok(),
        "validate and Value disagree: {tree:?}"
    );
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(data) {
        let small = compact::compact(raw);
        assert_eq!(small.is_ok(), tree.is_ok(), "{small:?}");
        if let (Ok(small), Some(expected)) = (small, tree::tree_string(raw.get())) {
            assert_eq!(small.get(), expected);
        }
    }
    match json::parse(data) {
        Ok(cmd) => {
            if let json::Op::Publish { data, .. } = &cmd.op {
                serde_json::from_str::<Value>(data.get()).expect("data is JSON");
            }
            let _ = json::ok(&cmd.id, serde_json::Map::new());
        }
        Err(rejected) => {
            let (id, err) = *rejected;
            let _ = json::error(&id, &err);
        }
    }
});
