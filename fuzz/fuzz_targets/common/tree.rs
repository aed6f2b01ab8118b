//! The reference the JSON targets compare with: what a `serde_json::Value` tree of the
//! same text serializes to. (Reading that output back can give another `Value`: without
//! serde_json's `float_roundtrip` some floats parse one bit off, today as before.)

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The compact form a `Value` tree gives for `text`, when `text` is a valid JSON value
/// without a repeated key in any object (a tree keeps only the last one of those, while
/// the tree-less compact form keeps them all).
pub fn tree_string(text: &str) -> Option<String> {
    let tree: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let unique = NoRepeats.deserialize(&mut de).ok()?;
    unique.then(|| tree.to_string())
}

/// True when no object in the value repeats a key.
struct NoRepeats;

impl<'de> DeserializeSeed<'de> for NoRepeats {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoRepeats {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut unique = true;
        while let Some(u) = seq.next_element_seed(NoRepeats)? {
            unique &= u;
        }
        Ok(unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut keys = HashSet::new();
        let mut unique = true;
        while let Some(key) = map.next_key::<String>()? {
            unique &= keys.insert(key);
            unique &= map.next_value_seed(NoRepeats)?;
        }
        Ok(unique)
    }
}
