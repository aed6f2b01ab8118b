//! Issue #14 item 9: the per-app limits Pusher documents, with Pusher's defaults, each
//! configurable in `[[apps]]`: connections (4004), the `enabled` switch (4003), channel
//! names (164), event names (200), payloads (10 KB: HTTP 413, `pusher:error` 4301),
//! channels per trigger (100), events per batch (10), presence members (100) and
//! `user_info` (1 KB).

mod pusher_client;
mod support;

use serde_json::{json, Value};
use support::*;
use wspush::config::Config;
use wspush::pusher::apps::{parse_flag, AppLimits};

use pusher_client::{data, signed, Pusher};

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// App 1 with Pusher's default limits (client events on), app 2 at most 2 connections,
/// app 3 disabled.
fn apps(c: &mut Config) {
    c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
    let mut two = parse_flag("2:key-two:secret-two").unwrap();
    two.max_connections = 2;
    let mut three = parse_flag("3:key-three:secret-three").unwrap();
    three.enabled = false;
    c.apps = vec![two, three];
}

async fn trigger(server: &TestServer, body: Value) -> (u16, Value) {
    let body = body.to_string();
    signed(server, "POST", "/apps/1/events", Some(&body), (KEY, SECRET)).await
}

#[test]
fn defaults_are_pushers_and_each_is_configurable_in_apps() {
    // issue #14 item 9
    let l = AppLimits::default();
    assert_eq!(
        (
            l.max_channel_name_length,
            l.max_event_name_length,
            l.max_payload_size,
            l.max_event_channels,
            l.max_batch_size,
            l.max_presence_members,
            l.max_presence_user_info_size,
        ),
        (164, 200, 10 * 1024, 100, 10, 100, 1024)
    );
    let toml = r#"
        [[apps]]
        id = "1"
        key = "k"
        secret = "s"
        enabled = false
        max_connections = 7
        subscription_count = true
        webhook_delay_ms = 250
        [apps.limits]
        max_channel_name_length = 50
    "#;
    let config: Config = toml::from_str(toml).unwrap();
    let app = &config.apps[0];
    assert!(!app.enabled && app.subscription_count);
    assert_eq!(
        (app.max_connections, app.webhook_delay_ms),
        (7, wspush::config::Millis::from_units(250))
    );
    assert_eq!(app.limits.max_channel_name_length, 50);
    assert_eq!(app.limits.max_event_name_length, 200);
    let defaults: Config =
        toml::from_str("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"").unwrap();
    let app = &defaults.apps[0];
    assert!(app.enabled && !app.subscription_count);
    assert_eq!(
        (app.max_connections, app.webhook_delay_ms),
        (0, wspush::config::Millis::from_units(3000))
    );
    assert_eq!(app.limits, AppLimits::default());
}

#[tokio::test]
async fn connections_over_quota_get_4004_and_a_disabled_app_4003() {
    // issue #14 item 9
    let server = TestServer::with(apps).await;
    let _a = Pusher::connect(&server, "key-two", "secret-two").await;
    let _b = Pusher::connect(&server, "key-two", "secret-two").await;
    let mut c = Pusher::open(&server, "key-two", "secret-two").await;
    let (ev, code) = c.error_then_close().await;
    assert_eq!(
        ev["data"],
        json!({"code": 4004, "message": "App over connection quota"})
    );
    assert_eq!(code, 4004);
    let mut d = Pusher::open(&server, "key-three", "secret-three").await;
    let (ev, code) = d.error_then_close().await;
    assert_eq!(ev["data"], json!({"code": 4003, "message": "App disabled"}));
    assert_eq!(code, 4003);
    // The API of a disabled app is refused too.
    let (status, body) = signed(
        &server,
        "GET",
        "/apps/3/channels",
        None,
        ("key-three", "secret-three"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn channel_names_longer_than_164_get_a_subscription_error() {
    // issue #14 item 9: Pusher allows 164 characters (wspush allowed 200).
    let server = TestServer::with(apps).await;
    let mut p = Pusher::connect(&server, KEY, SECRET).await;
    let ok = "a".repeat(164);
    let ev = p.subscribe(&ok).await;
    assert_eq!(
        ev["event"], "pusher_internal:subscription_succeeded",
        "{ev}"
    );
    let long = "b".repeat(165);
    let ev = p.subscribe(&long).await;
    assert_eq!(ev["event"], "pusher:subscription_error", "{ev}");
    assert_eq!(ev["channel"], long.as_str());
    let d = data(&ev);
    assert_eq!(d["status"], 400, "{d}");
    assert_eq!(d["error"], "channel name longer than 164 bytes", "{d}");
    // The API refuses it too.
    let (status, body) = trigger(&server, json!({"name": "e", "channel": long, "data": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "channel name longer than 164 bytes"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_events_over_the_name_or_payload_limit_get_4301() {
    // issue #14 item 9: refused client events were errors without a code.
    let server = TestServer::with(apps).await;
    let mut a = Pusher::connect(&server, KEY, SECRET).await;
    let mut b = Pusher::connect(&server, KEY, SECRET).await;
    for p in [&mut a, &mut b] {
        let ev = p.private("private-limits").await;
        assert_eq!(ev["event"], "pusher_internal:subscription_succeeded");
    }
    let long_name = format!("client-{}", "n".repeat(194));
    a.send(json!({"event": long_name, "channel": "private-limits", "data": {}}))
        .await;
    let ev = a.next().await;
    assert_eq!(ev["event"], "pusher:error", "{ev}");
    assert_eq!(ev["data"]["code"], 4301, "{ev}");
    assert_eq!(
        ev["data"]["message"],
        "Event name is too long: at most 200 bytes"
    );
    let big = "x".repeat(10 * 1024 + 1);
    a.send(json!({"event": "client-big", "channel": "private-limits", "data": big}))
        .await;
    let ev = a.next().await;
    assert_eq!(ev["event"], "pusher:error", "{ev}");
    assert_eq!(ev["data"]["code"], 4301, "{ev}");
    assert_eq!(
        ev["data"]["message"],
        "Event data is too large: at most 10240 bytes"
    );
    // At both limits: delivered to the other subscriber.
    let name = format!("client-{}", "n".repeat(193));
    let fits = "y".repeat(10 * 1024);
    a.send(json!({"event": name, "channel": "private-limits", "data": fits}))
        .await;
    let ev = b.next().await;
    assert_eq!(ev["event"], name.as_str());
    assert_eq!(ev["data"].as_str().unwrap().len(), 10 * 1024);
    server.shutdown().await;
}

#[tokio::test]
async fn the_http_api_answers_over_limit_events_with_json_errors() {
    // issue #14 item 9
    let server = TestServer::with(apps).await;
    let big = "x".repeat(10 * 1024 + 1);
    let (status, body) = trigger(&server, json!({"name": "e", "channel": "c", "data": big})).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert_eq!(
        body["error"]["message"],
        "event data is 10241 bytes; the limit is 10240"
    );
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let (status, body) = trigger(
        &server,
        json!({"name": "e", "channels": channels, "data": "x"}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"]["message"],
        "101 channels; at most 100 per event"
    );
    let (status, body) = trigger(
        &server,
        json!({"name": "n".repeat(201), "channel": "c", "data": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "event name must be 1 to 200 bytes"
    );
    let batch: Vec<Value> = (0..11)
        .map(|i| json!({"name": "e", "channel": format!("c{i}"), "data": "x"}))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let (status, answer) = signed(
        &server,
        "POST",
        "/apps/1/batch_events",
        Some(&body),
        (KEY, SECRET),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "11 events; at most 10 per batch"
    );
    // At the limits: accepted.
    let channels: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let (status, body) = trigger(
        &server,
        json!({"name": "e", "channels": channels, "data": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn presence_user_info_takes_at_most_1kb() {
    // issue #14 item 9
    let server = TestServer::with(apps).await;
    // App 1 (100 members by default): 1 KB of user_info fits, one byte more does not.
    let mut p = Pusher::connect(&server, KEY, SECRET).await;
    let info = "i".repeat(1024 - 2);
    let ev = p
        .presence_with("presence-info", json!({"user_id": "a", "user_info": info}))
        .await;
    assert_eq!(
        ev["event"], "pusher_internal:subscription_succeeded",
        "{ev}"
    );
    let mut q = Pusher::connect(&server, KEY, SECRET).await;
    let info = "i".repeat(1024 - 1);
    let ev = q
        .presence_with("presence-info", json!({"user_id": "b", "user_info": info}))
        .await;
    assert_eq!(ev["event"], "pusher:subscription_error", "{ev}");
    assert_eq!(
        data(&ev),
        json!({"type": "LimitReached", "error": "user_info is too large", "status": 413})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_member_past_the_limit_gets_limit_reached() {
    // issue #14 item 9: app 2 with max_presence_members = 2.
    let server = TestServer::with(|c| {
        c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
        let mut app = parse_flag("2:key-two:secret-two").unwrap();
        app.limits.max_presence_members = 2;
        c.apps = vec![app];
    })
    .await;
    let mut ps = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let mut p = Pusher::connect(&server, "key-two", "secret-two").await;
        let ev = p.presence("presence-small", user).await;
        ps.push((p, ev));
    }
    assert_eq!(ps[1].1["event"], "pusher_internal:subscription_succeeded");
    let refused = &ps[2].1;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(
        data(refused),
        json!({"type": "LimitReached", "error": "presence channel is full", "status": 403})
    );
    // Another connection of a member already in is not a new member.
    let mut again = Pusher::connect(&server, "key-two", "secret-two").await;
    let ev = again.presence("presence-small", "u1").await;
    assert_eq!(
        ev["event"], "pusher_internal:subscription_succeeded",
        "{ev}"
    );
    server.shutdown().await;
}
