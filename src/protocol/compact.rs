//! JSON from clients without a `serde_json::Value` tree (issue #12 item 9: a 1 MiB command
//! used to become ~40 MB of `Value` before anything looked at it). Everything here reads
//! the text once and keeps nothing it does not return: [`validate`] applies the rules of
//! parsing into a `Value` (number range, escapes, nesting depth); [`compact`] writes the
//! bytes `Value::to_string()` would give; [`string_fields`] picks a few string fields out
//! of an object.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Checks `text` the way `serde_json::from_slice::<Value>` does (same errors, same
/// nesting limit), keeping nothing.
pub fn validate(text: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    Sink(None).deserialize(&mut de)?;
    de.end()
}

/// The compact form of a JSON value: the bytes `Value::to_string()` gives for it (keys
/// in their order), written while reading. One difference: a key repeated in an object
/// is kept each time (a `Value` keeps its last value only).
pub fn compact(raw: &RawValue) -> Result<Box<RawValue>, serde_json::Error> {
    let mut out = Vec::with_capacity(raw.get().len());
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Sink(Some(&mut out)).deserialize(&mut de)?;
    de.end()?;
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    RawValue::from_string(text)
}

/// The string values of the top-level fields `names` of the JSON object `text` (the last
/// one when a key repeats; `None` when absent or not a string): what indexing a `Value`
/// tree of `text` gives. `None` when `text` is not a JSON object (by a `Value`'s rules).
/// Other fields are skipped without being kept.
pub fn string_fields<const N: usize>(text: &str, names: [&str; N]) -> Option<[Option<String>; N]> {
    validate(text.as_bytes()).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(Fields { names }).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// Reads any value, writing its compact form to the buffer when there is one (after a
/// comma when it is not the first element of an array).
struct Sink<'a>(Option<&'a mut Vec<u8>>);

impl Sink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(out) = self.0.as_deref_mut() {
            out.extend_from_slice(bytes);
        }
    }

    fn put_json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        if let Some(out) = self.0.as_deref_mut() {
            serde_json::to_writer(out, v).expect("a number or string serializes");
        }
    }
}

impl<'de> DeserializeSeed<'de> for Sink<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An array element: a comma first unless it is the first one. (A seed is used only
/// when an element is there, so the comma is never written before the closing `]`.)
struct Element<'a>(Option<&'a mut Vec<u8>>, bool);

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let mut sink = Sink(self.0);
        if !self.1 {
            sink.put(b",");
        }
        d.deserialize_any(sink)
    }
}

impl<'de> Visitor<'de> for Sink<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(mut self, v: bool) -> Result<(), E> {
        self.put(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.put_json(&v);
        Ok(())
    }

    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.put_json(&v);
        Ok(())
    }

    fn visit_f64<E>(mut self, v: f64) -> Result<(), E> {
        self.put_json(&v);
        Ok(())
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        self.put_json(v);
        Ok(())
    }

    fn visit_unit<E>(mut self) -> Result<(), E> {
        self.put(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.put(b"[");
        let mut first = true;
        while seq
            .next_element_seed(Element(self.0.as_deref_mut(), first))?
            .is_some()
        {
            first = false;
        }
        self.put(b"]");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.put(b"{");
        let mut first = true;
        while map
            .next_key_seed(Key(self.0.as_deref_mut(), first))?
            .is_some()
        {
            self.put(b":");
            map.next_value_seed(Sink(self.0.as_deref_mut()))?;
            first = false;
        }
        self.put(b"}");
        Ok(())
    }
}

/// An object key: written (after a comma unless it is the first) as a JSON string.
struct Key<'a>(Option<&'a mut Vec<u8>>, bool);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if let Some(out) = self.0 {
            if !self.1 {
                out.push(b',');
            }
            serde_json::to_writer(out, v).expect("a string serializes");
        }
        Ok(())
    }
}

/// The visitor of [`string_fields`].
struct Fields<'n, const N: usize> {
    names: [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for Fields<'_, N> {
    type Value = [Option<String>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => found[i] = map.next_value::<StringOrNone>()?.0,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A string, or `None` for any other value (skipped without being kept).
struct StringOrNone(Option<String>);

impl<'de> de::Deserialize<'de> for StringOrNone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrNone;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<StringOrNone, E> {
                Ok(StringOrNone(Some(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringOrNone, E> {
                Ok(StringOrNone(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringOrNone, E> {
                Ok(StringOrNone(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringOrNone, E> {
                Ok(StringOrNone(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringOrNone, E> {
                Ok(StringOrNone(None))
            }
            fn visit_unit<E>(self) -> Result<StringOrNone, E> {
                Ok(StringOrNone(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrNone, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringOrNone(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOrNone, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOrNone(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What a `Value` tree made of `text` serializes to.
    fn via_tree(text: &str) -> Option<String> {
        serde_json::from_str::<Value>(text)
            .ok()
            .map(|v| v.to_string())
    }

    fn via_compact(text: &str) -> Option<String> {
        let raw: &RawValue = serde_json::from_str(text).ok()?;
        compact(raw).ok().map(|r| r.get().to_string())
    }

    #[test]
    fn compact_gives_the_bytes_of_a_value_tree() {
        for text in [
            r#" { "b" : [ 1 , 2.50 , -3 , 1.0E2 , 12345678901234567890123 , -0 ] , "a" : { } } "#,
            r#"[]"#,
            r#"[ [ ] , { } , null , true , false ]"#,
            r#""t\u00e9\/x\n\ud83d\ude00""#,
            r#"{"z":1,"y":{"x":[{"w":"\"q\""}]}}"#,
            "18446744073709551615",
            "-9223372036854775808",
            "1e-400",
            "9e15",
            // Found by fuzz/json_command: serde_json reads this one bit off, and back
            // again; what matters is that the bytes are the tree's.
            "[123456789012345678901234567890,1.2345678931204567e+29]",
        ] {
            assert_eq!(via_compact(text), via_tree(text), "{text}");
            assert!(via_tree(text).is_some(), "{text}");
        }
    }

    #[test]
    fn validate_refuses_what_a_value_refuses() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        for text in [
            "1e400",
            r#""\ud800""#,
            r#""\udc00x""#,
            &deep,
            "[1,]",
            "{} x",
            "",
        ] {
            let tree = serde_json::from_str::<Value>(text).map(|_| ());
            let check = validate(text.as_bytes());
            assert!(tree.is_err() && check.is_err(), "{text:?}");
            assert_eq!(
                tree.unwrap_err().to_string(),
                check.unwrap_err().to_string()
            );
            // A `RawValue` alone accepts some of these; `compact` must not.
            if let Ok(raw) = serde_json::from_str::<&RawValue>(text) {
                assert!(compact(raw).is_err(), "{text:?}");
            }
        }
        validate(br#" {"a":[1,{"b":null}]} "#).unwrap();
    }

    #[test]
    fn string_fields_picks_strings_and_skips_the_rest() {
        let text = r#"{"channel":"a","auth":5,"x":[1,[2]],"channel_data":"{}","channel":"b"}"#;
        let [channel, auth, cd, user] =
            string_fields(text, ["channel", "auth", "channel_data", "user_data"]).unwrap();
        assert_eq!(channel.as_deref(), Some("b"));
        assert_eq!(auth, None);
        assert_eq!(cd.as_deref(), Some("{}"));
        assert_eq!(user, None);
        assert!(string_fields("[1]", ["a"]).is_none());
        assert!(string_fields(r#"{"a":"x"} 1"#, ["a"]).is_none());
        assert!(string_fields("nope", ["a"]).is_none());
        assert!(string_fields(r#"{"a":"x","b":1e400}"#, ["a"]).is_none());
    }
}
