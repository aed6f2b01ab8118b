//! Hostile input to the parsers (issue #12 item 9 and the fuzzing follow-ups): oversized
//! JSON-mode and Pusher messages are refused before any parse, commands are parsed
//! without building a `serde_json::Value` tree of their data, and every crash the fuzz
//! targets (`fuzz/`) found stays fixed.

mod support;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1 << 20;

/// A field `"pad"` holding a JSON array of zeros, `len` bytes long: the shape that
/// costs a `Value` tree the most (two bytes of input per 80-byte `Value`).
fn padding(len: usize) -> String {
    let mut pad = String::with_capacity(len + 2);
    pad.push('[');
    while pad.len() + 2 < len {
        pad.push_str("0,");
    }
    pad.push_str("0]");
    pad
}

/// The next text frame parsed as JSON (pings skipped).
async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON {text:?}: {e}"))
}

/// `{head}{pad}` then spaces and `}`: exactly `size` bytes.
fn exactly(size: usize, head: &str, pad: &str) -> String {
    let mut text = format!("{head}{pad}");
    assert!(text.len() < size);
    text.extend(std::iter::repeat_n(' ', size - text.len() - 1));
    text.push('}');
    text
}

/// Sends `count` JSON-mode `ping` commands of exactly `size` bytes each (padded),
/// waiting for each reply; returns the replies (up to the first error).
async fn padded_pings(ws: &mut Ws, count: usize, size: usize) -> Vec<Value> {
    let pad = padding(size - 64);
    let mut replies = Vec::new();
    for id in 0..count {
        let cmd = exactly(size, &format!(r#"{{"id":{id},"op":"ping","pad":"#), &pad);
        within("send", ws.send(Message::text(cmd))).await.unwrap();
        let reply = next_json(ws).await;
        let stop = reply.get("error").is_some();
        replies.push(reply);
        if stop {
            break;
        }
    }
    replies
}

// issue #12 item 9: 200 commands of 1 MiB each, read and parsed one after the other (so
// the server holds one at a time). Before: each was parsed into a `Value` tree of ~38 MB
// before anything looked at it. Now they are parsed into a typed command (`data` kept as
// raw JSON, unknown fields skipped), so the peak stays near the 1 MiB frames themselves.
#[tokio::test]
async fn two_hundred_one_mib_commands_cost_no_parse_tree() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--max-command-size",
        &(2 * MIB).to_string(),
    ])
    .await;
    let pid = server.child.id().unwrap();
    let (mut ws, _) = connect(&server.ws("?protocol=json")).await;
    let base = proc_kib(pid, "VmRSS:");
    let replies = padded_pings(&mut ws, 200, MIB).await;
    assert_eq!(
        replies.len(),
        200,
        "last reply: {}",
        replies.last().unwrap()
    );
    assert!(replies.iter().all(|r| r["ok"] == true));
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("200 x 1 MiB JSON commands: RSS base {base} KiB, peak {peak} KiB");
    assert!(
        peak < base + 16 * 1024,
        "peak RSS {peak} KiB vs base {base} KiB"
    );
}

// issue #12 item 9: a command larger than `max_command_size` (default: max_publish_size
// + 4 KiB) is refused before it is parsed: `too_large` with a null id (it was not read),
// counted as a protocol error, so a client that keeps sending them is closed (1008).
// Before: each 1 MiB ping was parsed into a ~40 MB tree and answered `ok`.
#[tokio::test]
async fn an_oversized_command_is_refused_unread_and_repeating_it_closes_1008() {
    let server = Binary::serve(&["--quiet", "--no-console", "--max-protocol-errors", "3"]).await;
    let (mut ws, _) = connect(&server.ws("?protocol=json")).await;
    let limit = 64 * 1024 + 4096;
    // At the limit: parsed and answered.
    let replies = padded_pings(&mut ws, 1, limit).await;
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    for _ in 0..3 {
        let replies = padded_pings(&mut ws, 1, MIB).await;
        let error = &replies[0]["error"];
        assert_eq!(replies[0]["id"], Value::Null, "{}", replies[0]);
        assert_eq!(error["code"], "too_large", "{}", replies[0]);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&limit.to_string()),
            "{error}"
        );
    }
    // One past `max_protocol_errors`: the error, then close 1008.
    let replies = padded_pings(&mut ws, 1, limit + 1).await;
    assert_eq!(replies[0]["error"]["code"], "too_large");
    assert_eq!(close_code(&mut ws).await, 1008);
}

/// A Pusher client of the app `1:app-key:app-secret`, past `connection_established`.
async fn pusher_client(addr: std::net::SocketAddr) -> Ws {
    let url = format!("ws://{addr}/app/app-key?protocol=7&client=test&version=1");
    let (mut ws, _) = within("pusher connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["event"], "pusher:connection_established", "{ev}");
    ws
}

/// Sends `pusher:ping` messages of exactly `size` bytes (padded) and returns what
/// answers each.
async fn padded_pusher_pings(ws: &mut Ws, count: usize, size: usize) -> Vec<Value> {
    let pad = padding(size - 64) + "}";
    let mut answers = Vec::new();
    for _ in 0..count {
        let msg = exactly(size, r#"{"event":"pusher:ping","data":{"pad":"#, &pad);
        within("send", ws.send(Message::text(msg))).await.unwrap();
        answers.push(next_json(ws).await);
    }
    answers
}

// issue #12 item 9, Pusher front: a message larger than `max_command_size` is answered
// `pusher:error` 4301 (as soketi answers oversized client events) without being parsed,
// and the connection carries on. Before: a 1 MiB `pusher:ping` was parsed into a tree.
#[tokio::test]
async fn an_oversized_pusher_message_gets_4301_unread_and_the_connection_carries_on() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--pusher-app",
        "1:app-key:app-secret",
    ])
    .await;
    let mut ws = pusher_client(server.addr).await;
    let limit = 64 * 1024 + 4096;
    let mut answers = padded_pusher_pings(&mut ws, 3, MIB).await;
    answers.extend(padded_pusher_pings(&mut ws, 1, limit + 1).await);
    for ev in &answers {
        assert_eq!(ev["event"], "pusher:error", "{ev}");
        assert_eq!(ev["data"]["code"], 4301, "{ev}");
        let message = ev["data"]["message"].as_str().unwrap();
        assert!(message.contains(&limit.to_string()), "{ev}");
    }
    let answers = padded_pusher_pings(&mut ws, 1, limit).await;
    assert_eq!(answers[0]["event"], "pusher:pong", "{}", answers[0]);
}

// issue #12 item 9, Pusher front: 200 messages of 1 MiB each, within a raised limit, are
// parsed without a tree (unknown fields skipped, `data` kept raw).
#[tokio::test]
async fn two_hundred_one_mib_pusher_messages_cost_no_parse_tree() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--pusher-app",
        "1:app-key:app-secret",
        "--max-command-size",
        &(2 * MIB).to_string(),
    ])
    .await;
    let pid = server.child.id().unwrap();
    let mut ws = pusher_client(server.addr).await;
    let base = proc_kib(pid, "VmRSS:");
    let answers = padded_pusher_pings(&mut ws, 200, MIB).await;
    assert!(answers.iter().all(|ev| ev["event"] == "pusher:pong"));
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("200 x 1 MiB Pusher messages: RSS base {base} KiB, peak {peak} KiB");
    assert!(
        peak < base + 16 * 1024,
        "peak RSS {peak} KiB vs base {base} KiB"
    );
}

// issue #12 item 9: published data keeps the bytes a `Value` tree gave (compact, keys in
// order), for raw, JSON and Pusher subscribers alike, now that no tree is made.
#[tokio::test]
async fn published_data_keeps_its_bytes_without_a_tree() {
    let server = TestServer::with(|c| c.pusher_app = vec!["1:app-key:app-secret".into()]).await;
    let (mut raw, _) = connect(&server.ws("?channels=news")).await;
    let mut sub = JsonClient::connect(&server.ws("")).await;
    assert_eq!(
        sub.cmd(json!({"op": "subscribe", "channel": "news"})).await["ok"],
        true
    );
    let mut publisher = JsonClient::connect(&server.ws("")).await;
    publisher
        .send_raw(
            "{ \"id\" : 1 , \"op\" : \"publish\" , \"channel\" : \"news\" , \"data\" : { \"b\" : [ 1 , 2.50 , 1E2 ] , \"a\" : \"\\u00e9\" } }",
        )
        .await;
    assert_eq!(publisher.reply(json!(1)).await["ok"], true);
    assert_eq!(next_text(&mut raw).await, r#"{"b":[1,2.5,100.0],"a":"é"}"#);
    let push = next_text(&mut sub.ws).await;
    assert!(
        push.ends_with(r#","data":{"b":[1,2.5,100.0],"a":"é"}}"#),
        "{push}"
    );
    // A string is text, unquoted for raw subscribers.
    publisher
        .send_raw(r#"{"id":2,"op":"publish","channel":"news","data":"t\u00e9\n"}"#)
        .await;
    assert_eq!(publisher.reply(json!(2)).await["ok"], true);
    assert_eq!(next_text(&mut raw).await, "té\n");
    server.shutdown().await;
}
