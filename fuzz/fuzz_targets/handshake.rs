//! The `GET /ws` handshake's parsing: the RFC 6455 header checks (`accept_key`), the
//! query string (`WsParams`, as `upgrade` reads it), channel names (`valid_channel` of
//! the native and the Pusher fronts).
//!
//! Input: text; the first line is the request target (`/ws?channels=a,b`), every other
//! line a header `Name: value`. Lines that are not valid are skipped.
//!
//! Invariants: nothing panics; an accepted key is 24 bytes and gives a 28-byte accept
//! value; an accepted channel name is 1 to 200 bytes with no comma, whitespace or
//! control character.
#![no_main]

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use wspush::ws::{accept_key, valid_channel, WsParams};

fn check_channel(name: &str) {
    if valid_channel(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 200, "{name:?}");
        assert!(
            !name
                .chars()
                .any(|c| c == ',' || c.is_whitespace() || c.is_control()),
            "{name:?}"
        );
    }
    let _ = wspush::pusher::valid_channel(name, 200);
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let target = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in lines {
        check_channel(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(accept) = accept_key(&headers) {
        let key = headers
            .get("sec-websocket-key")
            .expect("a key was accepted");
        assert_eq!(key.len(), 24);
        assert_eq!(accept.len(), 28, "{accept}");
    }
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(Query(params)) = Query::<WsParams>::try_from_uri(&uri) else {
        return;
    };
    // As `ws::upgrade` splits them.
    for channel in params.channels.as_deref().unwrap_or("").split(',') {
        let channel = channel.trim();
        if !channel.is_empty() {
            check_channel(channel);
        }
    }
});
