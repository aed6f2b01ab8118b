//! Pusher signatures: channel authorization, user sign-in, signed HTTP API requests and
//! webhooks — all HMAC-SHA256 with the app secret, compared in constant time.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far an API request's `auth_timestamp` may be from our clock, in seconds.
pub const MAX_CLOCK_SKEW: u64 = 600;

/// Hex HMAC-SHA256 of `message` with `secret`.
pub fn sign(secret: &str, message: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// True when `signature` (hex) is the HMAC-SHA256 of `message` with `secret`; the
/// comparison takes the same time wherever the first difference is.
pub fn verify(secret: &str, message: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(message);
    mac.verify_slice(&given).is_ok()
}

/// Checks an `auth` string `KEY:SIGNATURE` for `message`.
fn check_auth(key: &str, secret: &str, message: &[u8], auth: &str) -> bool {
    match auth.split_once(':') {
        Some((k, sig)) => k == key && verify(secret, message, sig),
        None => false,
    }
}

/// Checks a channel subscription's `auth`: a signature of `socket_id:channel` (private)
/// or `socket_id:channel:channel_data` (presence).
pub fn channel_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let message = match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    };
    check_auth(key, secret, message.as_bytes(), auth)
}

/// Checks a `pusher:signin`'s `auth`: a signature of `socket_id::user::user_data`.
pub fn user_auth_ok(key: &str, secret: &str, socket_id: &str, user_data: &str, auth: &str) -> bool {
    let message = format!("{socket_id}::user::{user_data}");
    check_auth(key, secret, message.as_bytes(), auth)
}

/// The string an API request signs: `METHOD\nPATH\nk=v&...` with the query parameters
/// (keys lower-cased, `auth_signature` left out) sorted by key.
pub fn string_to_sign(method: &str, path: &str, query: &BTreeMap<String, String>) -> String {
    let params: Vec<String> = query
        .iter()
        .filter(|(k, _)| k.as_str() != "auth_signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{method}\n{path}\n{}", params.join("&"))
}

/// Hex MD5 of a request body (`body_md5`).
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Parses a query string into decoded key/value pairs (keys lower-cased; `+` is a space).
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).to_ascii_lowercase(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a signed API request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// A required parameter is missing or malformed (400... reported as 401 by Pusher).
    Missing(&'static str),
    /// `auth_key` is not the app's key.
    WrongKey,
    /// `auth_timestamp` is too far from now.
    Expired,
    /// `body_md5` does not match the body.
    BodyMd5,
    /// `auth_signature` is wrong.
    Signature,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Missing(what) => write!(f, "missing or malformed {what}"),
            RequestError::WrongKey => f.write_str("unknown auth_key"),
            RequestError::Expired => write!(
                f,
                "auth_timestamp is more than {MAX_CLOCK_SKEW} s away from the server's clock"
            ),
            RequestError::BodyMd5 => f.write_str("body_md5 does not match the body"),
            RequestError::Signature => f.write_str("invalid auth_signature"),
        }
    }
}

/// Verifies a signed API request against an app's key and secret.
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    now: u64,
) -> Result<(), RequestError> {
    verify_signature(key, secret, method, path, query, !body.is_empty(), now)?;
    verify_body(query, body)
}

/// The part of [`verify_request`] that needs no body: key, timestamp, version and the
/// signature of the query (which covers `body_md5`, required when `has_body`). A request
/// that fails here is refused before its body is read.
pub fn verify_signature(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    has_body: bool,
    now: u64,
) -> Result<(), RequestError> {
    let get = |k: &'static str| query.get(k).ok_or(RequestError::Missing(k));
    if get("auth_key")? != key {
        return Err(RequestError::WrongKey);
    }
    let ts: u64 = get("auth_timestamp")?
        .parse()
        .map_err(|_| RequestError::Missing("auth_timestamp"))?;
    if ts.abs_diff(now) > MAX_CLOCK_SKEW {
        return Err(RequestError::Expired);
    }
    if get("auth_version")? != "1.0" {
        return Err(RequestError::Missing("auth_version (1.0)"));
    }
    if has_body {
        get("body_md5")?;
    }
    let signature = get("auth_signature")?;
    if !verify(
        secret,
        string_to_sign(method, path, query).as_bytes(),
        signature,
    ) {
        return Err(RequestError::Signature);
    }
    Ok(())
}

/// The rest of [`verify_request`]: the body is the one `body_md5` names (when there is a
/// body or a `body_md5`).
pub fn verify_body(query: &BTreeMap<String, String>, body: &[u8]) -> Result<(), RequestError> {
    if !body.is_empty() || query.contains_key("body_md5") {
        let given = query
            .get("body_md5")
            .ok_or(RequestError::Missing("body_md5"))?;
        if !given.eq_ignore_ascii_case(&body_md5(body)) {
            return Err(RequestError::BodyMd5);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked examples of Pusher's "auth signatures" and HTTP API reference pages.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn documented_vectors() {
        assert_eq!(
            sign(SECRET, b"1234.1234:private-foobar"),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert_eq!(
            sign(SECRET, br#"1234.1234::user::{"id":"12345"}"#),
            "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
        assert!(channel_auth_ok(
            KEY,
            SECRET,
            "1234.1234",
            "private-foobar",
            None,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        ));
        assert!(!channel_auth_ok(
            KEY,
            SECRET,
            "1234.1235",
            "private-foobar",
            None,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        ));
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let query = parse_query(
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f",
        );
        assert_eq!(
            sign(
                SECRET,
                string_to_sign("POST", "/apps/3/events", &query).as_bytes()
            ),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("A=1&b=x%20y+z&c=%zz&d");
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x y z");
        assert_eq!(q["c"], "%zz");
        assert_eq!(q["d"], "");
    }
}
