//! Pusher protocol 7 and the Pusher HTTP API (issue #8), black-box: raw WebSocket frames
//! from tokio-tungstenite, signed HTTP requests from reqwest, a real webhook receiver.

mod pusher_client;
mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use wspush::config::Config;
use wspush::pusher::apps::{parse_flag, Webhook};
use wspush::pusher::auth;

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// Apps: `1` (default, from the flag, client events on), `2` (client events off),
/// `3` (disabled).
fn apps(c: &mut Config) {
    c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
    let mut two = parse_flag("2:key-two:secret-two").unwrap();
    two.client_events = false;
    let mut three = parse_flag("3:key-disabled:s").unwrap();
    three.enabled = false;
    c.apps = vec![two, three];
}

async fn server() -> TestServer {
    TestServer::with(apps).await
}

/// A Pusher protocol client over a raw WebSocket.
struct Pusher {
    ws: Ws,
    socket_id: String,
}

fn decode(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON {text:?}: {e}"))
}

/// `data` as the protocol sends it (a JSON string) parsed.
fn data(ev: &Value) -> Value {
    match &ev["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

impl Pusher {
    async fn connect(server: &impl Server, key: &str) -> Self {
        let mut p = Self::open(server, key, "?protocol=7&client=rust&version=1").await;
        let ev = p.next().await;
        assert_eq!(ev["event"], "pusher:connection_established", "{ev}");
        assert!(ev["data"].is_string(), "data is a JSON string: {ev}");
        let d = data(&ev);
        let sid = d["socket_id"].as_str().unwrap().to_string();
        let (a, b) = sid.split_once('.').unwrap();
        assert!(
            !a.is_empty()
                && !b.is_empty()
                && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit()),
            "socket_id {sid} matches ^\\d+\\.\\d+$"
        );
        assert!(d["activity_timeout"].as_u64().unwrap() > 0);
        p.socket_id = sid;
        p
    }

    async fn open(server: &impl Server, key: &str, query: &str) -> Self {
        let url = format!("ws://{}/app/{key}{query}", server.addr());
        let (ws, _) = within("pusher connect", tokio_tungstenite::connect_async(url))
            .await
            .unwrap();
        Pusher {
            ws,
            socket_id: String::new(),
        }
    }

    async fn send(&mut self, v: Value) {
        within("send", self.ws.send(Message::text(v.to_string())))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Value {
        decode(&next_text(&mut self.ws).await)
    }

    /// The next event named `name`, skipping others.
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let ev = self.next().await;
            if ev["event"] == name {
                return ev;
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        self.subscribe_with(json!({ "channel": channel })).await
    }

    async fn subscribe_with(&mut self, data: Value) -> Value {
        self.send(json!({"event": "pusher:subscribe", "data": data}))
            .await;
        self.next().await
    }

    fn auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        let msg = match channel_data {
            Some(cd) => format!("{}:{channel}:{cd}", self.socket_id),
            None => format!("{}:{channel}", self.socket_id),
        };
        format!("{KEY}:{}", auth::sign(SECRET, msg.as_bytes()))
    }

    async fn private(&mut self, channel: &str) -> Value {
        let auth = self.auth(channel, None);
        self.subscribe_with(json!({"channel": channel, "auth": auth}))
            .await
    }

    async fn presence(&mut self, channel: &str, user: &str) -> Value {
        let cd = json!({"user_id": user, "user_info": {"name": user}}).to_string();
        let auth = self.auth(channel, Some(&cd));
        self.subscribe_with(json!({"channel": channel, "auth": auth, "channel_data": cd}))
            .await
    }

    /// The close code after a `pusher:error` with the same code.
    async fn error_then_close(&mut self) -> (u16, u16) {
        let ev = self.expect("pusher:error").await;
        let code = ev["data"]["code"].as_u64().unwrap() as u16;
        (code, close_code(&mut self.ws).await)
    }
}

/// A signed Pusher HTTP API request.
async fn signed(
    server: &impl Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<Value>,
    creds: (&str, &str),
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    pusher_client::signed_query(server, method, path, params, &body, creds).await
}

async fn trigger(server: &impl Server, body: Value) -> (u16, Value) {
    signed(
        server,
        "POST",
        "/apps/1/events",
        &[],
        Some(body),
        (KEY, SECRET),
    )
    .await
}

#[test]
fn signature_vectors_from_pushers_documentation() {
    // "Generating authentication and authorization strings" (auth signatures page).
    let (key, secret) = ("278d425bdf160c739803", "7ad3773142a6692b25b8");
    assert!(auth::channel_auth_ok(
        key,
        secret,
        "1234.1234",
        "private-foobar",
        None,
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
    ));
    assert!(auth::user_auth_ok(
        key,
        secret,
        "1234.1234",
        r#"{"id":"12345"}"#,
        "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba",
    ));
    // Presence: the same scheme with channel_data appended (computed with Python's hmac).
    assert!(auth::channel_auth_ok(
        key,
        secret,
        "1234.1234",
        "presence-foobar",
        Some(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#),
        "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
    ));
    // HTTP API reference, "Worked authentication example".
    let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    assert_eq!(auth::body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
    let q = auth::parse_query("auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c");
    assert_eq!(
        auth::verify_request(key, secret, "POST", "/apps/3/events", &q, body, 1353088179),
        Ok(())
    );
    assert_eq!(
        auth::verify_request(key, secret, "POST", "/apps/4/events", &q, body, 1353088179),
        Err(auth::RequestError::Signature)
    );
    assert_eq!(
        auth::verify_request(
            key,
            secret,
            "POST",
            "/apps/3/events",
            &q,
            body,
            1353088179 + 601
        ),
        Err(auth::RequestError::Expired)
    );
    // Webhooks: X-Pusher-Signature is the hex HMAC-SHA256 of the body (the documentation's
    // example body; the digest computed with Python's hmac).
    let hook = br#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#;
    assert_eq!(
        auth::sign(secret, hook),
        "709fdb84c03664445f7698120b0edf0acc1ab1c8c6e93a0368c61841d6b998aa"
    );
}

#[tokio::test]
async fn connect_ping_pong_and_public_channels() {
    let server = server().await;
    let mut a = Pusher::connect(&server, KEY).await;
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(a.next().await["event"], "pusher:pong");
    let ok = a.subscribe("news").await;
    assert_eq!(
        ok,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"})
    );
    let (status, body) = trigger(
        &server,
        json!({"name": "flash", "channel": "news", "data": "{\"x\":1}"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        a.next().await,
        json!({"event": "flash", "channel": "news", "data": "{\"x\":1}"})
    );
    a.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}))
        .await;
    trigger(
        &server,
        json!({"name": "late", "channel": "news", "data": "x"}),
    )
    .await;
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        a.next().await["event"],
        "pusher:pong",
        "nothing after unsubscribe"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn idle_clients_get_pusher_ping_and_4201_without_pong() {
    let server = TestServer::with(|c| {
        apps(c);
        c.ping_interval = 1.into();
        c.ping_timeout = 1.into();
    })
    .await;
    let mut a = Pusher::connect(&server, KEY).await;
    let ping = a.next().await;
    assert_eq!(ping["event"], "pusher:ping");
    assert_eq!(a.error_then_close().await, (4201, 4201));
    server.shutdown().await;
}

#[tokio::test]
async fn private_and_encrypted_channels_need_a_valid_signature() {
    let server = server().await;
    let mut a = Pusher::connect(&server, KEY).await;
    for channel in ["private-a", "private-encrypted-a", "presence-a"] {
        let err = a
            .subscribe_with(
                json!({"channel": channel, "auth": format!("{KEY}:{}", "0".repeat(64))}),
            )
            .await;
        assert_eq!(err["event"], "pusher:subscription_error", "{err}");
        assert_eq!(err["channel"], channel);
        assert_eq!(err["data"]["type"], "AuthError");
        assert_eq!(err["data"]["status"], 401);
        assert!(err["data"]["error"].as_str().unwrap().len() > 5);
    }
    let err = a.subscribe("private-a").await;
    assert_eq!(err["event"], "pusher:subscription_error", "missing auth");
    // A signature for another socket is refused too.
    let other = format!("{KEY}:{}", auth::sign(SECRET, b"1.1:private-a"));
    let err = a
        .subscribe_with(json!({"channel": "private-a", "auth": other}))
        .await;
    assert_eq!(err["event"], "pusher:subscription_error");
    assert_eq!(
        a.private("private-a").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(
        a.private("private-encrypted-a").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    // Encrypted payloads are passed through untouched; client events are refused there.
    trigger(
        &server,
        json!({"name": "secret", "channel": "private-encrypted-a", "data": "{\"nonce\":\"n\",\"ciphertext\":\"c\"}"}),
    )
    .await;
    let ev = a.next().await;
    assert_eq!(data(&ev), json!({"nonce": "n", "ciphertext": "c"}));
    server.shutdown().await;
}

#[tokio::test]
async fn presence_members_are_users_added_once_and_removed_with_their_last_connection() {
    let server = server().await;
    let mut alice = Pusher::connect(&server, KEY).await;
    let ok = alice.presence("presence-room", "alice").await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        data(&ok),
        json!({"presence": {"count": 1, "ids": ["alice"], "hash": {"alice": {"name": "alice"}}}})
    );
    let mut bob = Pusher::connect(&server, KEY).await;
    let ok = bob.presence("presence-room", "bob").await;
    assert_eq!(data(&ok)["presence"]["count"], 2);
    assert_eq!(data(&ok)["presence"]["ids"], json!(["alice", "bob"]));
    let added = alice.next().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(added["channel"], "presence-room");
    assert_eq!(
        data(&added),
        json!({"user_id": "bob", "user_info": {"name": "bob"}})
    );
    // Bob's second connection: no member_added for alice.
    let mut bob2 = Pusher::connect(&server, KEY).await;
    assert_eq!(
        data(&bob2.presence("presence-room", "bob").await)["presence"]["count"],
        2
    );
    let (status, users) = signed(
        &server,
        "GET",
        "/apps/1/channels/presence-room/users",
        &[],
        None,
        (KEY, SECRET),
    )
    .await;
    assert_eq!(
        (status, users),
        (200, json!({"users": [{"id": "alice"}, {"id": "bob"}]}))
    );
    let (_, info) = signed(
        &server,
        "GET",
        "/apps/1/channels/presence-room",
        &[("info", "user_count,subscription_count")],
        None,
        (KEY, SECRET),
    )
    .await;
    assert_eq!(
        info,
        json!({"occupied": true, "user_count": 2, "subscription_count": 3})
    );
    // One of bob's connections leaves: still a member.
    bob2.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}))
        .await;
    alice
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(
        alice.next().await["event"],
        "pusher:pong",
        "no member_removed yet"
    );
    drop(bob);
    let removed = alice.expect("pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": "bob"}));
    // A bad channel_data user id is refused.
    let cd = json!({"user_info": {}}).to_string();
    let auth = bob2.auth("presence-x", Some(&cd));
    let err = bob2
        .subscribe_with(json!({"channel": "presence-x", "auth": auth, "channel_data": cd}))
        .await;
    assert_eq!(err["event"], "pusher:subscription_error");
    server.shutdown().await;
}

#[tokio::test]
async fn client_events_reach_others_not_the_sender_with_user_id_and_rate_limit() {
    let server = server().await;
    let mut a = Pusher::connect(&server, KEY).await;
    let mut b = Pusher::connect(&server, KEY).await;
    a.presence("presence-chat", "alice").await;
    b.presence("presence-chat", "bob").await;
    a.expect("pusher_internal:member_added").await;
    a.send(json!({"event": "client-typing", "channel": "presence-chat", "data": {"on": true}}))
        .await;
    let ev = b.next().await;
    assert_eq!(ev["event"], "client-typing");
    assert_eq!(ev["user_id"], "alice");
    assert_eq!(data(&ev), json!({"on": true}));
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        a.next().await["event"],
        "pusher:pong",
        "not echoed to the sender"
    );
    // Not on public channels, nor unsubscribed ones, nor encrypted ones.
    a.subscribe("public").await;
    a.private("private-encrypted-x").await;
    for channel in ["public", "private-other", "private-encrypted-x"] {
        a.send(json!({"event": "client-x", "channel": channel, "data": {}}))
            .await;
        let err = a.next().await;
        assert_eq!(err["event"], "pusher:error", "{channel}: {err}");
    }
    // Over 10 per second: 4301, and the connection stays open.
    a.private("private-burst").await;
    for _ in 0..15 {
        a.send(json!({"event": "client-x", "channel": "private-burst", "data": "x"}))
            .await;
    }
    let err = a.expect("pusher:error").await;
    assert_eq!(err["data"]["code"], 4301);
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    a.expect("pusher:pong").await;
    // App 2 has client events off: 4301.
    let mut c = Pusher::connect(&server, "key-two").await;
    let auth = format!(
        "key-two:{}",
        auth::sign(
            "secret-two",
            format!("{}:private-c", c.socket_id).as_bytes()
        )
    );
    c.subscribe_with(json!({"channel": "private-c", "auth": auth}))
        .await;
    c.send(json!({"event": "client-x", "channel": "private-c", "data": {}}))
        .await;
    let err = c.next().await;
    assert_eq!(
        (err["event"].as_str(), err["data"]["code"].as_u64()),
        (Some("pusher:error"), Some(4301))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn cache_channels_replay_the_last_event_or_say_cache_miss() {
    let server = server().await;
    let mut a = Pusher::connect(&server, KEY).await;
    a.subscribe("cache-prices").await;
    let miss = a.next().await;
    assert_eq!(miss["event"], "pusher:cache_miss");
    assert_eq!(miss["channel"], "cache-prices");
    trigger(
        &server,
        json!({"name": "price", "channel": "cache-prices", "data": "42"}),
    )
    .await;
    assert_eq!(a.next().await["event"], "price");
    let mut b = Pusher::connect(&server, KEY).await;
    assert_eq!(
        b.subscribe("cache-prices").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(
        b.next().await,
        json!({"event": "price", "channel": "cache-prices", "data": "42"})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn signin_user_channel_send_to_user_and_terminate() {
    let server = server().await;
    let mut a = Pusher::connect(&server, KEY).await;
    // Not signed in: the user channel is refused.
    let err = a.subscribe("#server-to-user-u7").await;
    assert_eq!(err["event"], "pusher:subscription_error");
    let user_data = json!({"id": "u7", "name": "Seven"}).to_string();
    a.send(json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{}", "0".repeat(64)), "user_data": user_data}}))
        .await;
    assert_eq!(a.next().await["event"], "pusher:error");
    let sig = auth::sign(
        SECRET,
        format!("{}::user::{user_data}", a.socket_id).as_bytes(),
    );
    a.send(json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{sig}"), "user_data": user_data}}))
        .await;
    let ok = a.next().await;
    assert_eq!(ok["event"], "pusher:signin_success");
    assert_eq!(data(&ok)["user_data"], user_data.as_str());
    assert_eq!(
        a.subscribe("#server-to-user-u7").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let (status, _) = trigger(
        &server,
        json!({"name": "dm", "channel": "#server-to-user-u7", "data": "hi"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["event"], "dm");
    // Python SDK form (no /apps/{id}); the app is found by auth_key.
    let (status, body) = signed(
        &server,
        "POST",
        "/users/u7/terminate_connections",
        &[],
        Some(json!({})),
        (KEY, SECRET),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(a.error_then_close().await, (4009, 4009));
    server.shutdown().await;
}

#[tokio::test]
async fn every_connection_error_code_is_an_error_event_then_a_close_frame() {
    let server = TestServer::with(|c| {
        apps(c);
        let mut quota = parse_flag("4:key-quota:s").unwrap();
        quota.max_connections = 1;
        let mut strict = parse_flag("5:key-strict:s").unwrap();
        strict.user_authentication = true;
        strict.user_authentication_timeout = 1.into();
        c.apps.extend([quota, strict]);
    })
    .await;
    let cases = [
        ("nope", "?protocol=7", 4001),
        ("key-disabled", "?protocol=7", 4003),
        (KEY, "", 4008),
        (KEY, "?protocol=99", 4007),
    ];
    for (key, query, code) in cases {
        let mut p = Pusher::open(&server, key, query).await;
        assert_eq!(p.error_then_close().await, (code, code), "{key}{query}");
    }
    let _first = Pusher::connect(&server, "key-quota").await;
    let mut second = Pusher::open(&server, "key-quota", "?protocol=7").await;
    assert_eq!(second.error_then_close().await, (4004, 4004));
    let mut strict = Pusher::connect(&server, "key-strict").await;
    assert_eq!(strict.error_then_close().await, (4009, 4009));
    let mut pending = Pusher::connect(&server, KEY).await;
    server.shutdown().await;
    assert_eq!(pending.error_then_close().await, (4200, 4200));

    let server = TestServer::with(|c| {
        apps(c);
        c.max_connections = 1;
    })
    .await;
    let _one = Pusher::connect(&server, KEY).await;
    let mut over = Pusher::open(&server, KEY, "?protocol=7").await;
    assert_eq!(over.error_then_close().await, (4100, 4100));
    server.shutdown().await;
}

#[tokio::test]
async fn http_api_signatures_limits_and_queries() {
    let server = server().await;
    let ev = json!({"name": "e", "channel": "news", "data": "x"});
    let (status, body) = signed(
        &server,
        "POST",
        "/apps/1/events",
        &[],
        Some(ev.clone()),
        (KEY, "wrong"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].is_string());
    let (status, _) = signed(
        &server,
        "POST",
        "/apps/42/events",
        &[],
        Some(ev.clone()),
        (KEY, SECRET),
    )
    .await;
    assert_eq!(status, 404);
    // The key of app 2 cannot sign for app 1.
    let (status, _) = signed(
        &server,
        "POST",
        "/apps/1/events",
        &[],
        Some(ev.clone()),
        ("key-two", "secret-two"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = reqwest::Client::new()
        .post(server.http("/apps/1/events"))
        .json(&ev)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "unsigned");
    let (status, _) = trigger(&server, json!({"name": "e", "data": "x"})).await;
    assert_eq!(status, 400, "no channel");
    let (status, _) = trigger(
        &server,
        json!({"name": "e", "channel": "bad channel", "data": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = trigger(
        &server,
        json!({"name": "e", "channel": "c", "data": "x".repeat(10 * 1024 + 1)}),
    )
    .await;
    assert_eq!(status, 413);
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let (status, _) = trigger(&server, json!({"name": "e", "channels": many, "data": "x"})).await;
    assert_eq!(status, 413);
    let batch: Vec<Value> = (0..11).map(|_| ev.clone()).collect();
    let (status, _) = signed(
        &server,
        "POST",
        "/apps/1/batch_events",
        &[],
        Some(json!({"batch": batch})),
        (KEY, SECRET),
    )
    .await;
    assert_eq!(status, 413);

    // Events to many channels, excluding a socket, with info.
    let mut a = Pusher::connect(&server, KEY).await;
    let mut b = Pusher::connect(&server, KEY).await;
    for p in [&mut a, &mut b] {
        p.subscribe("c1").await;
        p.presence("presence-p", "u").await;
    }
    let (status, body) = trigger(
        &server,
        json!({"name": "e", "channels": ["c1", "c2"], "data": "hi", "socket_id": a.socket_id, "info": "subscription_count"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": {"c1": {"subscription_count": 2}, "c2": {"subscription_count": 0}}})
    );
    assert_eq!(
        b.next().await,
        json!({"event": "e", "channel": "c1", "data": "hi"})
    );
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        a.next().await["event"],
        "pusher:pong",
        "socket_id was excluded"
    );
    let (status, _) = trigger(
        &server,
        json!({"name": "e", "channel": "c1", "data": "x", "socket_id": "nope"}),
    )
    .await;
    assert_eq!(status, 400);

    let batch = json!({"batch": [
        {"name": "b1", "channel": "c1", "data": "1"},
        {"name": "b2", "channel": "presence-p", "data": "2", "info": "user_count,subscription_count"},
    ]});
    let (status, body) = signed(
        &server,
        "POST",
        "/apps/1/batch_events",
        &[],
        Some(batch),
        (KEY, SECRET),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"batch": [{}, {"subscription_count": 2, "user_count": 1}]})
        )
    );
    assert_eq!(a.next().await["event"], "b1");
    assert_eq!(a.next().await["event"], "b2");

    let get = |path: &'static str, params: &'static [(&'static str, &'static str)]| {
        signed(&server, "GET", path, params, None, (KEY, SECRET))
    };
    assert_eq!(
        get("/apps/1/channels", &[]).await,
        // issue #14 item 2: the counts come without asking.
        (
            200,
            json!({"channels": {
            "c1": {"occupied": true, "subscription_count": 2},
            "presence-p": {"occupied": true, "subscription_count": 2}}})
        )
    );
    assert_eq!(
        get(
            "/apps/1/channels",
            &[("filter_by_prefix", "presence-"), ("info", "user_count")]
        )
        .await,
        (
            200,
            json!({"channels": {"presence-p": {"occupied": true, "subscription_count": 2, "user_count": 1}}})
        )
    );
    assert_eq!(
        get("/apps/1/channels", &[("info", "user_count")]).await.0,
        400
    );
    assert_eq!(
        get("/apps/1/channels/c1", &[]).await,
        (200, json!({"occupied": true, "subscription_count": 2}))
    );
    assert_eq!(
        get("/apps/1/channels/empty", &[("info", "subscription_count")]).await,
        (200, json!({"occupied": false, "subscription_count": 0}))
    );
    assert_eq!(
        get("/apps/1/channels/c1", &[("info", "user_count")])
            .await
            .0,
        400
    );
    assert_eq!(get("/apps/1/channels/c1/users", &[]).await.0, 400);
    // Another app sees none of app 1's channels.
    let (status, body) = signed(
        &server,
        "GET",
        "/apps/2/channels",
        &[],
        None,
        ("key-two", "secret-two"),
    )
    .await;
    assert_eq!((status, body), (200, json!({"channels": {}})));
    server.shutdown().await;
}

#[tokio::test]
async fn the_default_app_shares_channels_with_native_clients_and_other_apps_are_isolated() {
    let server = server().await;
    let mut p = Pusher::connect(&server, KEY).await;
    p.subscribe("news").await;
    let mut other = Pusher::connect(&server, "key-two").await;
    other.subscribe("news").await;
    let (mut raw, _) = connect(&server.ws("?channels=news")).await;
    let mut json_client = JsonClient::connect(&server.ws("")).await;
    json_client
        .cmd(json!({"op": "subscribe", "channel": "news"}))
        .await;

    // Native publish -> Pusher event `message`.
    publish(&server, "news", "from the native API").await;
    assert_eq!(
        p.next().await,
        json!({"event": "message", "channel": "news", "data": "from the native API"})
    );
    assert_eq!(next_text(&mut raw).await, "from the native API");
    json_client.push().await;
    let (_, body) = post(
        &server.http("/api/publish"),
        json!({"channel": "news", "data": {"a": 1}}),
    )
    .await;
    assert!(body["offset"].is_u64());
    assert_eq!(data(&p.next().await), json!({"a": 1}));
    next_text(&mut raw).await;
    json_client.push().await;

    // Pusher event -> raw and JSON subscribers get its data.
    trigger(
        &server,
        json!({"name": "evt", "channel": "news", "data": "{\"b\":2}"}),
    )
    .await;
    assert_eq!(p.next().await["event"], "evt");
    assert_eq!(next_text(&mut raw).await, "{\"b\":2}");
    let push = json_client.push().await;
    assert_eq!(
        (push["channel"].as_str(), push["data"].as_str()),
        (Some("news"), Some("{\"b\":2}"))
    );

    // App 2's `news` is another channel.
    signed(
        &server,
        "POST",
        "/apps/2/events",
        &[],
        Some(json!({"name": "two", "channel": "news", "data": "2"})),
        ("key-two", "secret-two"),
    )
    .await;
    assert_eq!(
        other.next().await,
        json!({"event": "two", "channel": "news", "data": "2"})
    );
    other
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(
        other.next().await["event"],
        "pusher:pong",
        "app 2 got none of app 1's events"
    );
    p.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        p.next().await["event"],
        "pusher:pong",
        "app 1 got none of app 2's events"
    );
    assert_silent(&mut raw, Duration::from_millis(100)).await;

    // Presence channels are Pusher's: a raw client cannot subscribe to one (issue #12),
    // so no presence internals can reach it.
    let (_, head) = support::raw::upgrade(server.addr, "/ws?channels=presence-r", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    p.presence("presence-r", "x").await;
    let mut q = Pusher::connect(&server, KEY).await;
    q.presence("presence-r", "z").await;
    p.expect("pusher_internal:member_added").await;

    let metrics = reqwest::get(server.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("wspush_connections_pusher "))
        .expect("pusher connection gauge");
    assert_eq!(line, "wspush_connections_pusher 3");
    server.shutdown().await;
}

/// A webhook receiver: answers 500 to the first request, then 200; forwards what it gets.
async fn webhook_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, String)>,
) {
    use axum::http::HeaderMap;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (tx, calls) = (tx.clone(), calls.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                let _ = tx.send((h("x-pusher-key"), h("x-pusher-signature"), body));
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_cover_every_event() {
    let (url, mut hooks) = webhook_receiver().await;
    let server = TestServer::with(|c| {
        c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
        let mut app = parse_flag("2:hook-key:hook-secret").unwrap();
        app.webhooks = vec![Webhook {
            url,
            events: vec![],
            batch_ms: 0.into(),
        }];
        c.apps = vec![app];
    })
    .await;
    let mut a = Pusher::open(&server, "hook-key", "?protocol=7").await;
    let sid = data(&a.next().await)["socket_id"]
        .as_str()
        .unwrap()
        .to_string();
    a.socket_id = sid;
    let sub = |p: &Pusher, channel: &str, cd: Option<&str>| {
        let msg = match cd {
            Some(cd) => format!("{}:{channel}:{cd}", p.socket_id),
            None => format!("{}:{channel}", p.socket_id),
        };
        format!("hook-key:{}", auth::sign("hook-secret", msg.as_bytes()))
    };
    let cd = json!({"user_id": "u1"}).to_string();
    let auth = sub(&a, "presence-h", Some(&cd));
    a.subscribe_with(json!({"channel": "presence-h", "auth": auth, "channel_data": cd}))
        .await;
    a.send(json!({"event": "client-x", "channel": "presence-h", "data": {"k": 1}}))
        .await;
    a.subscribe("cache-h").await;
    a.next().await;
    drop(a);
    let mut seen: Vec<Value> = Vec::new();
    let mut bodies: Vec<String> = Vec::new();
    while !seen
        .iter()
        .any(|e| e["name"] == "channel_vacated" && e["channel"] == "presence-h")
    {
        let (key, sig, body) = within("a webhook", hooks.recv()).await.unwrap();
        assert_eq!(key, "hook-key");
        assert_eq!(
            sig,
            auth::sign("hook-secret", body.as_bytes()),
            "signed body"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
        if !bodies.contains(&body) {
            seen.extend(v["events"].as_array().unwrap().iter().cloned());
        }
        bodies.push(body);
    }
    // The first request was answered 500: the same body comes again.
    while bodies.iter().filter(|b| **b == bodies[0]).count() < 2 {
        let (_, _, body) = within("the retry", hooks.recv()).await.unwrap();
        bodies.push(body);
    }
    let names: Vec<&str> = seen.iter().map(|e| e["name"].as_str().unwrap()).collect();
    for name in [
        "channel_occupied",
        "member_added",
        "client_event",
        "cache_miss",
        "member_removed",
        "channel_vacated",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let client_event = seen.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(client_event["event"], "client-x");
    assert_eq!(client_event["user_id"], "u1");
    assert_eq!(client_event["data"], "{\"k\":1}");
    server.shutdown().await;
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_events_client_events_and_presence_joins() {
    let redis = RedisServer::start().await;
    let node = || {
        let url = redis.url();
        TestServer::with(move |c| {
            apps(c);
            c.broker = url;
        })
    };
    let (one, two) = (node().await, node().await);
    let mut a = Pusher::connect(&one, KEY).await;
    let mut b = Pusher::connect(&two, KEY).await;
    assert_ne!(
        a.socket_id, b.socket_id,
        "socket ids are unique across nodes"
    );
    b.presence("presence-x", "bob").await;
    b.subscribe("news").await;
    let (status, _) = trigger(
        &one,
        json!({"name": "e", "channel": "news", "data": "across"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        b.next().await,
        json!({"event": "e", "channel": "news", "data": "across"})
    );
    a.presence("presence-x", "alice").await;
    let added = b.expect("pusher_internal:member_added").await;
    assert_eq!(data(&added)["user_id"], "alice");
    a.send(json!({"event": "client-hi", "channel": "presence-x", "data": {"n": 1}}))
        .await;
    let ev = b.expect("client-hi").await;
    assert_eq!(
        (ev["user_id"].as_str(), data(&ev)),
        (Some("alice"), json!({"n": 1}))
    );
    // Excluding a socket of another node: only that socket is skipped.
    trigger(
        &two,
        json!({"name": "x", "channel": "presence-x", "data": "1", "socket_id": a.socket_id}),
    )
    .await;
    assert_eq!(b.next().await["event"], "x");
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        a.next().await["event"],
        "pusher:pong",
        "excluded on its node"
    );
    drop(a);
    assert_eq!(
        data(&b.expect("pusher_internal:member_removed").await),
        json!({"user_id": "alice"})
    );
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn wss_pusher_connections_work_on_the_tls_port() {
    let cert = TestCert::localhost("pusher-tls");
    let server = TestServer::with(|c| {
        apps(c);
        c.tls_cert = Some(cert.cert.clone());
        c.tls_key = Some(cert.key.clone());
    })
    .await;
    let tls = tls_connect(server.addr, &cert.der).await;
    let url = format!(
        "wss://localhost:{}/app/{KEY}?protocol=7",
        server.addr.port()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    use futures_util::StreamExt;
    let first = match within("connection_established", ws.next()).await {
        Some(Ok(Message::Text(t))) => decode(t.as_str()),
        other => panic!("{other:?}"),
    };
    assert_eq!(first["event"], "pusher:connection_established");
    ws.send(Message::text(
        json!({"event": "pusher:subscribe", "data": {"channel": "secure"}}).to_string(),
    ))
    .await
    .unwrap();
    let ok = match within("subscription", ws.next()).await {
        Some(Ok(Message::Text(t))) => decode(t.as_str()),
        other => panic!("{other:?}"),
    };
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    server.shutdown().await;
}

/// Signs `p` in as `id` and checks `pusher:signin_success`.
async fn sign_in(p: &mut Pusher, id: &str) {
    let user_data = json!({ "id": id }).to_string();
    let sig = auth::sign(
        SECRET,
        format!("{}::user::{user_data}", p.socket_id).as_bytes(),
    );
    p.send(json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{sig}"), "user_data": user_data}}))
        .await;
    assert_eq!(p.next().await["event"], "pusher:signin_success");
}

async fn api_get(server: &TestServer, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    signed(server, "GET", path, params, None, (KEY, SECRET)).await
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_members_counts_terminate_and_send_each_webhook_once() {
    let redis = RedisServer::start().await;
    // A webhook receiver answering 200 to everything; forwards each event.
    let (tx, mut hooks) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                for e in v["events"].as_array().unwrap() {
                    let _ = tx.send(e.clone());
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let node = || {
        let (url, hook_url) = (redis.url(), hook_url.clone());
        TestServer::with(move |c| {
            let mut app = parse_flag(&format!("1:{KEY}:{SECRET}")).unwrap();
            app.client_events = true;
            app.webhooks = vec![Webhook {
                url: hook_url,
                events: vec![],
                batch_ms: 0.into(),
            }];
            c.apps = vec![app];
            c.broker = url;
        })
    };
    let (one, two) = (node().await, node().await);

    // 1. Presence members: the snapshot, member_added and the users API span both nodes.
    let mut a = Pusher::connect(&one, KEY).await;
    a.subscribe("news").await;
    let ok = a.presence("presence-r", "alice").await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        data(&ok),
        json!({"presence": {"count": 1, "ids": ["alice"], "hash": {"alice": {"name": "alice"}}}})
    );
    let mut b = Pusher::connect(&two, KEY).await;
    let ok = b.presence("presence-r", "bob").await;
    assert_eq!(
        data(&ok),
        json!({"presence": {"count": 2, "ids": ["alice", "bob"],
            "hash": {"alice": {"name": "alice"}, "bob": {"name": "bob"}}}})
    );
    let added = a.next().await;
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(
        data(&added),
        json!({"user_id": "bob", "user_info": {"name": "bob"}})
    );
    // Alice's second connection, on the other node: not a new member anywhere.
    let mut a2 = Pusher::connect(&two, KEY).await;
    let ok = a2.presence("presence-r", "alice").await;
    assert_eq!(data(&ok)["presence"]["count"], 2);
    let (status, _) = trigger(
        &one,
        json!({"name": "mark", "channel": "presence-r", "data": "1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.next().await["event"], "mark", "no member_added for alice");
    assert_eq!(b.next().await["event"], "mark", "no member_added for alice");
    for server in [&one, &two] {
        assert_eq!(
            api_get(server, "/apps/1/channels/presence-r/users", &[]).await,
            (200, json!({"users": [{"id": "alice"}, {"id": "bob"}]}))
        );
    }

    // 3. Occupancy: counts and the channel list span both nodes.
    for server in [&one, &two] {
        assert_eq!(
            api_get(
                server,
                "/apps/1/channels/presence-r",
                &[("info", "user_count,subscription_count")]
            )
            .await,
            (
                200,
                json!({"occupied": true, "user_count": 2, "subscription_count": 3})
            )
        );
        assert_eq!(
            api_get(server, "/apps/1/channels", &[]).await,
            // issue #14 item 2: the counts come without asking.
            (
                200,
                json!({"channels": {
                "news": {"occupied": true, "subscription_count": 1},
                "presence-r": {"occupied": true, "subscription_count": 3}}})
            )
        );
        assert_eq!(
            api_get(
                server,
                "/apps/1/channels",
                &[("filter_by_prefix", "presence-"), ("info", "user_count")]
            )
            .await,
            (
                200,
                json!({"channels": {"presence-r": {"occupied": true, "subscription_count": 3, "user_count": 2}}})
            )
        );
    }
    let (status, body) = trigger(
        &two,
        json!({"name": "n", "channel": "news", "data": "1", "info": "subscription_count"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"channels": {"news": {"subscription_count": 1}}})
        )
    );
    assert_eq!(a.next().await["event"], "n");

    // member_removed only when the user's last connection, on any node, leaves.
    drop(a);
    within("node one to record the leave", async {
        loop {
            let (_, v) = api_get(
                &one,
                "/apps/1/channels/presence-r",
                &[("info", "subscription_count")],
            )
            .await;
            if v["subscription_count"] == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    trigger(
        &one,
        json!({"name": "mark2", "channel": "presence-r", "data": "1"}),
    )
    .await;
    assert_eq!(b.next().await["event"], "mark2", "alice is still in");
    drop(a2);
    assert_eq!(
        data(&b.expect("pusher_internal:member_removed").await),
        json!({"user_id": "alice"})
    );
    assert_eq!(
        api_get(&one, "/apps/1/channels/presence-r/users", &[]).await,
        (200, json!({"users": [{"id": "bob"}]}))
    );

    // 2. terminate_connections reaches the user's connections on both nodes.
    let mut c = Pusher::connect(&one, KEY).await;
    let mut d = Pusher::connect(&two, KEY).await;
    sign_in(&mut c, "u9").await;
    sign_in(&mut d, "u9").await;
    let (status, body) = signed(
        &one,
        "POST",
        "/apps/1/users/u9/terminate_connections",
        &[],
        Some(json!({})),
        (KEY, SECRET),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(c.error_then_close().await, (4009, 4009));
    assert_eq!(d.error_then_close().await, (4009, 4009));

    // 4. Webhooks: each event once per cluster.
    drop(b);
    let mut seen: Vec<Value> = Vec::new();
    let vacated = |seen: &[Value], ch: &str| {
        seen.iter()
            .any(|e| e["name"] == "channel_vacated" && e["channel"] == ch)
    };
    while !(vacated(&seen, "presence-r") && vacated(&seen, "news")) {
        seen.push(within("a webhook", hooks.recv()).await.unwrap());
    }
    // Anything sent twice would arrive about as soon as the first.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), hooks.recv()).await {
        seen.push(e);
    }
    let mut events: Vec<String> = seen
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["name"].as_str().unwrap(),
                e["channel"].as_str().unwrap(),
                e["user_id"].as_str().unwrap_or("-")
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "channel_occupied news -",
            "channel_occupied presence-r -",
            "channel_vacated news -",
            "channel_vacated presence-r -",
            "member_added presence-r alice",
            "member_added presence-r bob",
            "member_removed presence-r alice",
            "member_removed presence-r bob",
        ]
    );
    one.shutdown().await;
    two.shutdown().await;
}

/// The built binary serving app 1 (`KEY`/`SECRET`), with `extra` arguments.
async fn binary(extra: &[&str]) -> Binary {
    let app = format!("1:{KEY}:{SECRET}");
    let mut args = vec!["--no-console", "--quiet", "--pusher-app", &app];
    args.extend_from_slice(extra);
    Binary::serve(&args).await
}

/// Issue #12 item 3: Pusher's reserved channels were reachable from `/ws` (raw
/// `?channels=`, JSON subscribe/history/presence/publish) with no auth. One access
/// policy now refuses them on every native front.
#[tokio::test]
async fn private_channels_cannot_be_reached_from_the_native_fronts() {
    let server = binary(&[]).await;
    for query in [
        "private-a,%23server-to-user-42",
        "private-a",
        "%23server-to-user-42",
        "presence-r",
        "private-encrypted-z",
        "private-cache-a",
    ] {
        let (_, head) =
            support::raw::upgrade(server.addr, &format!("/ws?channels={query}"), "").await;
        assert!(head.starts_with("HTTP/1.1 403"), "{query}: {head}");
    }
    let mut p = Pusher::connect(&server, KEY).await;
    assert_eq!(
        p.private("private-a").await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let mut j = JsonClient::connect(&server.ws("")).await;
    for channel in [
        "private-a",
        "presence-r",
        "private-encrypted-z",
        "#server-to-user-42",
    ] {
        for op in ["subscribe", "history", "presence"] {
            let reply = j.cmd(json!({"op": op, "channel": channel})).await;
            assert_eq!(
                reply["error"]["code"], "forbidden",
                "{op} {channel}: {reply}"
            );
        }
    }
    let reply = j
        .cmd(json!({"op": "publish", "channel": "private-a", "data": "forged"}))
        .await;
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    // The authorised Pusher subscriber got no `message` from the anonymous publish: the
    // next thing it sees is the signed API's event.
    trigger(
        &server,
        json!({"name": "evt", "channel": "private-a", "data": "signed"}),
    )
    .await;
    assert_eq!(
        p.next().await,
        json!({"event": "evt", "channel": "private-a", "data": "signed"})
    );
    // A public channel is shared as before.
    let ok = j.cmd(json!({"op": "subscribe", "channel": "news"})).await;
    assert_eq!(ok["ok"], true, "{ok}");
}

/// Issue #12 item 3: namespace rules apply to Pusher public channels too, and a token
/// reaches a reserved channel only when its grant names that kind.
#[tokio::test]
async fn namespaces_rule_pusher_subscribes_and_grants_must_name_reserved_kinds() {
    let dir = std::env::temp_dir().join(format!("wspush-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("closed.toml");
    std::fs::write(
        &file,
        "[[namespaces]]\nprefix = \"\"\nanonymous = \"none\"\n",
    )
    .unwrap();
    let server = binary(&[
        "--config",
        file.to_str().unwrap(),
        "--jwt-secret",
        "jwt-secret-of-16-bytes",
    ])
    .await;
    let mut p = Pusher::connect(&server, KEY).await;
    let refused = p.subscribe("news").await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(refused["channel"], "news");
    publish(&server, "news", "not for anonymous").await;
    p.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(p.next().await["event"], "pusher:pong");

    let token = |channels: Value| {
        let claims =
            json!({"sub": "u1", "exp": wspush::auth::unix_now() + 600, "channels": channels});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret-of-16-bytes"),
        )
        .unwrap()
    };
    let mut star =
        JsonClient::connect(&server.ws(&format!("?token={}", token(json!(["*"]))))).await;
    let reply = star
        .cmd(json!({"op": "subscribe", "channel": "private-a"}))
        .await;
    assert_eq!(
        reply["error"]["code"], "forbidden",
        "`*` does not name private-: {reply}"
    );
    let reply = star
        .cmd(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let named = token(json!(["private-*"]));
    let mut j = JsonClient::connect(&server.ws(&format!("?token={named}"))).await;
    let reply = j
        .cmd(json!({"op": "subscribe", "channel": "private-a"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    trigger(
        &server,
        json!({"name": "evt", "channel": "private-a", "data": "to the grant"}),
    )
    .await;
    assert_eq!(j.push().await["data"], "to the grant");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #12 item 7: every Pusher message costs command budget, checked before parsing:
/// a flood of 1,000 pings gets at most the burst (plus refill) of pongs, then
/// `pusher:error` 4301 for the rest, and the connection carries on.
#[tokio::test]
async fn a_pusher_message_flood_is_refused_with_4301() {
    let server = binary(&[]).await;
    let mut p = Pusher::connect(&server, KEY).await;
    for _ in 0..1000 {
        within(
            "send",
            p.ws.feed(Message::text(r#"{"event":"pusher:ping","data":{}}"#)),
        )
        .await
        .unwrap();
    }
    within("flush", p.ws.flush()).await.unwrap();
    let (mut pongs, mut refused) = (0, 0);
    while pongs + refused < 1000 {
        let ev = p.next().await;
        match ev["event"].as_str() {
            Some("pusher:pong") => pongs += 1,
            Some("pusher:error") => {
                assert_eq!(ev["data"]["code"], 4301, "{ev}");
                refused += 1;
            }
            _ => panic!("unexpected {ev}"),
        }
    }
    assert!((200..=260).contains(&pongs), "{pongs} pongs");
    assert_eq!(refused, 1000 - pongs);
}

/// Issue #12 item 6: `max_channels_per_connection` holds for Pusher subscribes too.
#[tokio::test]
async fn a_pusher_connection_past_its_channel_cap_gets_limit_reached() {
    let server = binary(&["--max-channels-per-connection", "3"]).await;
    let mut p = Pusher::connect(&server, KEY).await;
    for c in ["a", "b", "c"] {
        assert_eq!(
            p.subscribe(c).await["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    let refused = p.subscribe("d").await;
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!(data(&refused)["type"], "LimitReached", "{refused}");
    p.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "a"}}))
        .await;
    assert_eq!(
        p.subscribe("d").await["event"],
        "pusher_internal:subscription_succeeded",
        "room again after an unsubscribe"
    );
}
