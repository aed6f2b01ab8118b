//! JSON mode (`wspush.v1`): every command and error code over a real socket, offsets,
//! history, recovery and presence (issue #3).

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use wspush::namespace::{Access, Namespace};

fn ns(prefix: &str, history: usize, presence: bool, anonymous: Access) -> Namespace {
    Namespace {
        prefix: prefix.into(),
        history_size: history,
        history_ttl: None,
        presence,
        anonymous,
    }
}

async fn server() -> TestServer {
    TestServer::with(|c| {
        c.namespaces = vec![
            ns("chat:", 100, true, Access::Publish),
            ns("news:", 3, false, Access::Subscribe),
            ns("private:", 0, false, Access::None),
        ];
        c.max_publish_size = 1000;
        c.max_protocol_errors = 3;
    })
    .await
}

#[tokio::test]
async fn subscribe_publish_and_pushes_with_offsets_for_json_and_raw_clients() {
    let server = server().await;
    let mut a = JsonClient::connect(&server.ws("")).await;
    let (mut raw, _) = connect(&server.ws("?channels=chat:1")).await;
    let reply = a.cmd(json!({"op": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(reply["ok"], json!(true));
    assert_eq!(reply["offset"], json!(0));
    let epoch = reply["epoch"].as_str().expect("epoch").to_string();

    assert_eq!(publish(&server, "chat:1", "from http").await, 1);
    assert_eq!(
        a.push().await,
        json!({"channel": "chat:1", "offset": 1, "data": "from http"})
    );
    assert_eq!(next_text(&mut raw).await, "from http");

    let reply = a
        .cmd(json!({"op": "publish", "channel": "chat:1", "data": {"any": ["json", 1]}}))
        .await;
    assert_eq!(reply, json!({"id": 2, "ok": true, "offset": 2}));
    assert_eq!(
        a.push().await,
        json!({"channel": "chat:1", "offset": 2, "data": {"any": ["json", 1]}})
    );
    assert_eq!(next_text(&mut raw).await, r#"{"any":["json",1]}"#);

    assert_eq!(
        a.cmd(json!({"op": "ping"})).await,
        json!({"id": 3, "ok": true})
    );
    assert_eq!(
        a.cmd(json!({"op": "unsubscribe", "channel": "chat:1"}))
            .await,
        json!({"id": 4, "ok": true})
    );
    publish(&server, "chat:1", "after unsubscribe").await;
    assert_eq!(next_text(&mut raw).await, "after unsubscribe");
    // The JSON client got nothing after unsubscribing: its next frame is the ping reply.
    assert_eq!(
        a.cmd(json!({"op": "ping"})).await,
        json!({"id": 5, "ok": true})
    );
    let reply = a.cmd(json!({"op": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(
        (reply["offset"].clone(), reply["epoch"].as_str()),
        (json!(3), Some(epoch.as_str()))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_subprotocol_selects_json_mode() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = server().await;
    let mut req = server.ws("").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "wspush.v1".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "wspush.v1");
    send_text(&mut ws, r#"{"id":"p","op":"ping"}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"id":"p","ok":true}"#);
    server.shutdown().await;
}

#[tokio::test]
async fn every_error_code_and_the_connection_stays_open() {
    let server = server().await;
    let mut c = JsonClient::connect(&server.ws("")).await;
    let code = |v: &Value| {
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {v}"))
            .to_string()
    };

    c.send_raw("this is not json").await;
    let r = c.reply(Value::Null).await;
    assert_eq!(code(&r), "bad_request");
    let r = c.cmd(json!({"op": "teleport"})).await;
    assert_eq!((r["id"].clone(), code(&r)), (json!(1), "unknown_op".into()));
    // Malformed commands: three allowed before the close, so drop back to a clean count by
    // checking the remaining codes on a fresh connection.
    let mut c = JsonClient::connect(&server.ws("")).await;
    let r = c
        .cmd(json!({"op": "unsubscribe", "channel": "chat:1"}))
        .await;
    assert_eq!(code(&r), "not_subscribed");
    c.cmd(json!({"op": "subscribe", "channel": "chat:1"})).await;
    let r = c.cmd(json!({"op": "subscribe", "channel": "chat:1"})).await;
    assert_eq!(code(&r), "already_subscribed");
    let r = c
        .cmd(json!({"op": "publish", "channel": "news:x", "data": 1}))
        .await;
    assert_eq!(code(&r), "forbidden");
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "private:x"}))
        .await;
    assert_eq!(code(&r), "forbidden");
    let r = c
        .cmd(json!({"op": "history", "channel": "private:x"}))
        .await;
    assert_eq!(code(&r), "forbidden");
    let r = c.cmd(json!({"op": "presence", "channel": "news:x"})).await;
    assert_eq!(code(&r), "not_available");
    for _ in 0..5 {
        publish(&server, "news:x", "n").await;
    }
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "news:x", "since": 0}))
        .await;
    assert_eq!(code(&r), "history_gone");
    assert_eq!(
        (r["error"]["oldest"].clone(), r["error"]["offset"].clone()),
        (json!(3), json!(5))
    );
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "news:x", "since": 4, "epoch": "another-epoch"}))
        .await;
    assert_eq!(
        code(&r),
        "history_gone",
        "an unknown epoch cannot be recovered"
    );
    let r = c
        .cmd(json!({"op": "publish", "channel": "chat:1", "data": "x".repeat(2000)}))
        .await;
    assert_eq!(code(&r), "too_large");
    // Still open and working after all of that.
    assert_eq!(c.cmd(json!({"op": "ping"})).await["ok"], json!(true));
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_commands_are_answered_with_their_id_then_too_many_close_1008() {
    let server = server().await;
    let mut c = JsonClient::connect(&server.ws("")).await;
    let cases = [
        json!({"op": "subscribe"}),
        json!({"op": "subscribe", "channel": 7}),
        json!({"op": "history", "channel": "chat:1", "limit": "ten"}),
    ];
    for (i, cmd) in cases.into_iter().enumerate() {
        let r = c.cmd(cmd).await;
        assert_eq!(r["id"], json!(i as u64 + 1));
        assert_eq!(r["error"]["code"], json!("bad_request"));
        assert!(r["error"]["message"].as_str().unwrap().len() > 5);
    }
    // The fourth malformed command is one too many (max_protocol_errors = 3).
    c.send_raw(r#"{"id":9,"op":"subscribe","channel":""}"#)
        .await;
    let r = c.reply(json!(9)).await;
    assert_eq!(r["error"]["code"], json!("bad_request"));
    assert_eq!(close_code(&mut c.ws).await, 1008);
    server.shutdown().await;
}

#[tokio::test]
async fn history_keeps_the_last_n_and_the_api_serves_it() {
    let server = server().await;
    for i in 1..=5 {
        publish(&server, "news:h", &format!("m{i}")).await;
    }
    let mut c = JsonClient::connect(&server.ws("")).await;
    let r = c.cmd(json!({"op": "history", "channel": "news:h"})).await;
    assert_eq!(
        r["messages"],
        json!([{"offset": 3, "data": "m3"}, {"offset": 4, "data": "m4"}, {"offset": 5, "data": "m5"}])
    );
    assert_eq!(r["offset"], json!(5));
    let r = c
        .cmd(json!({"op": "history", "channel": "news:h", "since": 3, "limit": 1}))
        .await;
    assert_eq!(r["messages"], json!([{"offset": 4, "data": "m4"}]));

    let (status, body) = get(&server.http("/api/history/news:h?since=4")).await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"], json!([{"offset": 5, "data": "m5"}]));
    let (status, body) = get(&server.http("/api/history/news:h?since=1")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (410, json!("history_gone"))
    );
    assert_eq!(body["error"]["oldest"], json!(3));
    let (status, body) = get(&server.http("/api/history/news:h?since=abc")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_request"))
    );
    // A channel without history keeps nothing.
    publish(&server, "plain", "x").await;
    let (_, body) = get(&server.http("/api/history/plain")).await;
    assert_eq!(body["messages"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn history_ttl_expires_old_messages() {
    let server = TestServer::with(|c| {
        c.namespaces = vec![Namespace {
            history_ttl: Some(Duration::from_millis(300)),
            ..ns("ttl:", 100, false, Access::Publish)
        }]
    })
    .await;
    publish(&server, "ttl:a", "old").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    publish(&server, "ttl:a", "new").await;
    let (_, body) = get(&server.http("/api/history/ttl:a")).await;
    assert_eq!(body["messages"], json!([{"offset": 2, "data": "new"}]));
    server.shutdown().await;
}

#[tokio::test]
async fn subscribe_since_replays_then_goes_live_without_gap_or_duplicate() {
    let server = server().await;
    let mut c = JsonClient::connect(&server.ws("")).await;
    for i in 1..=4 {
        publish(&server, "chat:r", &format!("m{i}")).await;
    }
    let r = c
        .cmd(json!({"op": "subscribe", "channel": "chat:r", "since": 2}))
        .await;
    assert_eq!(r["offset"], json!(4));
    publish(&server, "chat:r", "m5").await;
    for i in 3..=5 {
        assert_eq!(
            c.push().await,
            json!({"channel": "chat:r", "offset": i, "data": format!("m{i}")})
        );
    }
    // since == current offset: nothing to replay, not an error.
    let mut d = JsonClient::connect(&server.ws("")).await;
    let r = d
        .cmd(json!({"op": "subscribe", "channel": "chat:r", "since": 5}))
        .await;
    assert_eq!(r["ok"], json!(true));
    server.shutdown().await;
}

#[tokio::test]
async fn presence_join_leave_and_queries() {
    let server = server().await;
    let mut a = JsonClient::connect(&server.ws("")).await;
    let mut b = JsonClient::connect(&server.ws("")).await;
    a.cmd(json!({"op": "subscribe", "channel": "chat:room"}))
        .await;
    b.cmd(json!({"op": "subscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(
        a.push().await,
        json!({"channel": "chat:room", "event": "join", "client": b.id})
    );
    let r = a
        .cmd(json!({"op": "presence", "channel": "chat:room"}))
        .await;
    let mut ids: Vec<&str> = r["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![a.id.as_str(), b.id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    let (status, body) = get(&server.http("/api/presence/chat:room")).await;
    assert_eq!(status, 200);
    assert_eq!(body["clients"].as_array().unwrap().len(), 2);

    b.cmd(json!({"op": "unsubscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(
        a.push().await,
        json!({"channel": "chat:room", "event": "leave", "client": b.id})
    );
    b.cmd(json!({"op": "subscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(a.push().await["event"], json!("join"));
    let b_id = b.id.clone();
    drop(b);
    assert_eq!(
        a.push().await,
        json!({"channel": "chat:room", "event": "leave", "client": b_id})
    );
    let (_, body) = get(&server.http("/api/presence/chat:room")).await;
    assert_eq!(body["clients"], json!([{"client": a.id, "user": null}]));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_leaves_after_the_ping_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with(|c| {
        c.namespaces = vec![ns("chat:", 0, true, Access::Publish)];
        c.ping_interval = 1.into();
        c.ping_timeout = 1.into();
    })
    .await;
    let mut a = JsonClient::connect(&server.ws("")).await;
    a.cmd(json!({"op": "subscribe", "channel": "chat:p"})).await;
    // A peer that joins and then goes silent (never answers pings, never closes).
    let mut ghost = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    ghost
        .write_all(b"GET /ws?channels=chat:p HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = ghost.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    let join = a.push().await;
    assert_eq!(join["event"], json!("join"));
    // Keep answering the server's pings on `a` (tungstenite does this while reading).
    let leave = a.push().await;
    assert_eq!(leave["event"], json!("leave"));
    assert_eq!(leave["client"], join["client"]);
    drop(ghost);
    server.shutdown().await;
}

/// Many subscribers, continuous publishing, forced disconnects: every client that
/// reconnects with `since` ends with exactly 1..=N, no gap, no duplicate.
#[tokio::test]
async fn recovery_race_under_continuous_publishing_and_forced_disconnects() {
    const CLIENTS: usize = 20;
    const MESSAGES: u64 = 1500;
    let server =
        TestServer::with(|c| c.namespaces = vec![ns("race:", 100_000, false, Access::Publish)])
            .await;
    let ws_url = server.ws("");
    let http = server.http("");

    let mut readers = Vec::new();
    for n in 0..CLIENTS {
        let ws_url = ws_url.clone();
        let http = http.clone();
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            let mut epoch: Option<String> = None;
            let mut round = 0;
            while seen.last().copied().unwrap_or(0) < MESSAGES {
                round += 1;
                let mut c = JsonClient::connect(&ws_url).await;
                let mut sub = json!({"op": "subscribe", "channel": "race:x"});
                if let Some(&last) = seen.last() {
                    sub["since"] = last.into();
                    sub["epoch"] = epoch.clone().into();
                }
                let r = c.cmd(sub).await;
                assert_eq!(r["ok"], json!(true), "client {n}: {r}");
                epoch = Some(r["epoch"].as_str().unwrap().to_string());
                // Read a while, then get kicked by the API mid-stream (every other round).
                let quota = 50 + (n * 13 + round * 7) % 200;
                let mut got = 0;
                loop {
                    let frame = tokio::time::timeout(WAIT, c.ws.next())
                        .await
                        .expect("stream stalled");
                    match frame {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap();
                            seen.push(v["offset"].as_u64().unwrap());
                            got += 1;
                            if seen.last() == Some(&MESSAGES) {
                                break;
                            }
                            if got == quota && round % 2 == 1 {
                                let del = reqwest::Client::new()
                                    .delete(format!("{http}/api/clients/{}", c.id))
                                    .send()
                                    .await
                                    .unwrap();
                                assert_eq!(del.status().as_u16(), 200);
                            }
                        }
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(_)) => break,
                    }
                }
            }
            (seen, round)
        }));
    }
    let publisher = {
        let http = http.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 1..=MESSAGES {
                let r = client
                    .post(format!("{http}/api/publish"))
                    .json(&json!({"channel": "race:x", "data": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    within("publisher", publisher).await.unwrap();
    let mut reconnects = 0;
    for reader in readers {
        let (seen, rounds) = tokio::time::timeout(WAIT * 6, reader)
            .await
            .expect("reader finished")
            .unwrap();
        reconnects += rounds - 1;
        let first = seen[0];
        let expected: Vec<u64> = (first..=MESSAGES).collect();
        assert_eq!(seen, expected, "gap or duplicate");
    }
    assert!(
        reconnects >= CLIENTS,
        "the test must really force reconnects ({reconnects})"
    );
    server.shutdown().await;
}
