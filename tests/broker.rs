//! One broker test-suite, run against the in-memory broker and against Redis (issue #5):
//! offsets, history, recovery, presence, sends and broadcasts behave the same.

mod support;

use serde_json::json;
use support::*;
use wspush::config::Config;
use wspush::namespace::{Access, Namespace};

fn namespaces(c: &mut Config) {
    c.namespaces = vec![
        Namespace {
            prefix: "h:".into(),
            history_size: 3,
            history_ttl: None,
            presence: false,
            anonymous: Access::Publish,
        },
        Namespace {
            prefix: "room:".into(),
            history_size: 100,
            history_ttl: None,
            presence: true,
            anonymous: Access::Publish,
        },
    ];
}

async fn suite(server: TestServer) {
    // Offsets: per channel, from 1, no gaps; raw and JSON subscribers both get them.
    let mut json_client = JsonClient::connect(&server.ws("")).await;
    let r = json_client
        .cmd(json!({"op": "subscribe", "channel": "room:a"}))
        .await;
    assert_eq!(r["offset"], json!(0), "{r}");
    let epoch = r["epoch"].as_str().unwrap().to_string();
    let (mut raw, raw_id) = connect(&server.ws("?channels=room:a")).await;
    for i in 1..=5u64 {
        assert_eq!(publish(&server, "room:a", &format!("m{i}")).await, i);
    }
    assert_eq!(publish(&server, "room:b", "other").await, 1);
    // The raw client's join comes first (room: is a presence namespace).
    assert_eq!(json_client.push().await["event"], json!("join"));
    for i in 1..=5u64 {
        assert_eq!(
            json_client.push().await,
            json!({"channel": "room:a", "offset": i, "data": format!("m{i}")})
        );
        assert_eq!(next_text(&mut raw).await, format!("m{i}"));
    }

    // History: the last N; since; history_gone with the oldest offset.
    for i in 1..=5 {
        publish(&server, "h:x", &format!("h{i}")).await;
    }
    let (status, body) = get(&server.http("/api/history/h:x")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["messages"],
        json!([{"offset": 3, "data": "h3"}, {"offset": 4, "data": "h4"}, {"offset": 5, "data": "h5"}])
    );
    let (status, body) = get(&server.http("/api/history/h:x?since=1")).await;
    assert_eq!((status, body["error"]["oldest"].clone()), (410, json!(3)));

    // Recovery: subscribe with since replays then goes live.
    let mut late = JsonClient::connect(&server.ws("")).await;
    let r = late
        .cmd(json!({"op": "subscribe", "channel": "room:a", "since": 3, "epoch": epoch}))
        .await;
    assert_eq!(r["offset"], json!(5), "{r}");
    publish(&server, "room:a", "m6").await;
    for i in 4..=6u64 {
        assert_eq!(late.push().await["offset"], json!(i));
    }
    let r = late
        .cmd(json!({"op": "subscribe", "channel": "room:b", "since": 0, "epoch": "not-the-epoch"}))
        .await;
    assert_eq!(r["error"]["code"], json!("history_gone"));

    // Presence: join/leave events and the member list.
    let mut watcher = JsonClient::connect(&server.ws("")).await;
    watcher
        .cmd(json!({"op": "subscribe", "channel": "room:p"}))
        .await;
    let mut member = JsonClient::connect(&server.ws("")).await;
    member
        .cmd(json!({"op": "subscribe", "channel": "room:p"}))
        .await;
    assert_eq!(
        watcher.push().await,
        json!({"channel": "room:p", "event": "join", "client": member.id})
    );
    let r = watcher
        .cmd(json!({"op": "presence", "channel": "room:p"}))
        .await;
    assert_eq!(r["clients"].as_array().unwrap().len(), 2, "{r}");
    member
        .cmd(json!({"op": "unsubscribe", "channel": "room:p"}))
        .await;
    assert_eq!(watcher.push().await["event"], json!("leave"));

    // Send to one client; broadcast to all.
    let (status, body) = post(
        &server.http("/api/send"),
        json!({"client": raw_id, "data": "direct"}),
    )
    .await;
    assert_eq!((status, body["delivered"].clone()), (200, json!(1)));
    assert_eq!(next_text(&mut raw).await, "m6");
    assert_eq!(next_text(&mut raw).await, "direct");
    let (status, _) = post(
        &server.http("/api/broadcast"),
        json!({"channels": ["*"], "data": "everyone"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut raw).await, "everyone");
    assert_eq!(watcher.push().await["data"], json!("everyone"));
    let (status, body) = get(&server.http("/healthz")).await;
    assert_eq!((status, body["broker"].clone()), (200, json!("ok")));
    server.shutdown().await;
}

#[tokio::test]
async fn memory_broker_passes_the_suite() {
    suite(TestServer::with(namespaces).await).await;
}

#[tokio::test]
async fn redis_broker_passes_the_suite() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    suite(
        TestServer::with(|c| {
            namespaces(c);
            c.broker = url;
        })
        .await,
    )
    .await;
}
