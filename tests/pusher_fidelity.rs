//! Pusher fidelity (issue #14 items 2 to 8): behaviours Pusher clients and soketi-era SDK
//! code notice. Raw WebSocket frames from tokio-tungstenite, signed HTTP requests from
//! reqwest, a real webhook receiver, the built binary for the config surface.

mod pusher_client;
mod support;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;
use wspush::config::Config;
use wspush::pusher::apps::{parse_flag, Webhook};
use wspush::pusher::auth;

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// App `1` (client events on, the default app) and app `2` (client events off).
fn apps(c: &mut Config) {
    c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
    let mut two = parse_flag("2:key-two:secret-two").unwrap();
    two.client_events = false;
    c.apps = vec![two];
}

/// A Pusher protocol client over a raw WebSocket.
struct Pusher {
    ws: Ws,
    socket_id: String,
    key: &'static str,
    secret: &'static str,
}

/// `data` as the protocol sends it (a JSON string) parsed.
fn data(ev: &Value) -> Value {
    match &ev["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

impl Pusher {
    async fn connect(server: &impl Server) -> Self {
        Self::connect_to(server, KEY, SECRET).await
    }

    async fn connect_to(server: &impl Server, key: &'static str, secret: &'static str) -> Self {
        let url = format!("ws://{}/app/{key}?protocol=7&client=rust", server.addr());
        let (ws, _) = within("pusher connect", tokio_tungstenite::connect_async(url))
            .await
            .unwrap();
        let mut p = Pusher {
            ws,
            socket_id: String::new(),
            key,
            secret,
        };
        let ev = p.next().await;
        assert_eq!(ev["event"], "pusher:connection_established", "{ev}");
        p.socket_id = data(&ev)["socket_id"].as_str().unwrap().to_string();
        p
    }

    async fn send(&mut self, v: Value) {
        within("send", self.ws.send(Message::text(v.to_string())))
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Value {
        let text = next_text(&mut self.ws).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON {text:?}: {e}"))
    }

    /// The next event named `name`, skipping others (at most 50).
    async fn expect(&mut self, name: &str) -> Value {
        for _ in 0..50 {
            let ev = self.next().await;
            if ev["event"] == name {
                return ev;
            }
        }
        panic!("no {name} in 50 events");
    }

    fn sign(&self, message: &str) -> String {
        format!(
            "{}:{}",
            self.key,
            auth::sign(self.secret, message.as_bytes())
        )
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel}}))
            .await;
        self.next().await
    }

    async fn private(&mut self, channel: &str) -> Value {
        let auth = self.sign(&format!("{}:{channel}", self.socket_id));
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}))
            .await;
        self.next().await
    }

    /// Joins a presence channel as `user_id` (any JSON value, as the app's auth gives it).
    async fn presence(&mut self, channel: &str, user_id: Value) -> Value {
        let cd = json!({"user_id": user_id, "user_info": {"name": "n"}}).to_string();
        let auth = self.sign(&format!("{}:{channel}:{cd}", self.socket_id));
        self.send(json!({"event": "pusher:subscribe",
            "data": {"channel": channel, "auth": auth, "channel_data": cd}}))
            .await;
        self.expect("pusher_internal:subscription_succeeded").await
    }

    /// `pusher:signin` with `user_data` `{"id": id}`; the reply.
    async fn sign_in(&mut self, id: Value) -> Value {
        let user_data = json!({ "id": id, "name": "n" }).to_string();
        let auth = self.sign(&format!("{}::user::{user_data}", self.socket_id));
        self.send(
            json!({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}),
        )
        .await;
        self.next().await
    }
}

/// A signed Pusher HTTP API request to app 1.
async fn api(
    server: &impl Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    pusher_client::signed_query(server, method, path, params, &body, (KEY, SECRET)).await
}

async fn get(server: &impl Server, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, body) = api(server, "GET", path, params, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A webhook receiver answering 200; forwards each event.
async fn webhook_receiver() -> (String, UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
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
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The next webhook event named `name` (skipping others, at most 50).
async fn hook(hooks: &mut UnboundedReceiver<Value>, name: &str) -> Value {
    for _ in 0..50 {
        let e = within("a webhook", hooks.recv()).await.unwrap();
        if e["name"] == name {
            return e;
        }
    }
    panic!("no {name} webhook in 50");
}

// issue #14 item 2: occupied and subscription_count without info=, user_count for
// presence channels (0 when empty); the info= forms still work.
#[tokio::test]
async fn channel_counts_come_without_asking() {
    let server = TestServer::with(apps).await;
    let (mut a, mut b) = (
        Pusher::connect(&server).await,
        Pusher::connect(&server).await,
    );
    a.subscribe("news").await;
    b.subscribe("news").await;
    a.presence("presence-room", json!("u1")).await;
    let list = get(&server, "/apps/1/channels", &[]).await;
    assert_eq!(
        list,
        json!({"channels": {
            "news": {"occupied": true, "subscription_count": 2},
            "presence-room": {"occupied": true, "subscription_count": 1},
        }})
    );
    let list = get(
        &server,
        "/apps/1/channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
    )
    .await;
    assert_eq!(
        list,
        json!({"channels": {"presence-room": {"occupied": true, "subscription_count": 1, "user_count": 1}}})
    );
    assert_eq!(
        get(&server, "/apps/1/channels/news", &[]).await,
        json!({"occupied": true, "subscription_count": 2})
    );
    assert_eq!(
        get(
            &server,
            "/apps/1/channels/news",
            &[("info", "subscription_count")]
        )
        .await,
        json!({"occupied": true, "subscription_count": 2})
    );
    assert_eq!(
        get(&server, "/apps/1/channels/presence-room", &[]).await,
        json!({"occupied": true, "subscription_count": 1, "user_count": 1})
    );
    assert_eq!(
        get(&server, "/apps/1/channels/empty", &[]).await,
        json!({"occupied": false, "subscription_count": 0})
    );
    assert_eq!(
        get(
            &server,
            "/apps/1/channels/presence-empty",
            &[("info", "user_count")]
        )
        .await,
        json!({"occupied": false, "subscription_count": 0, "user_count": 0})
    );
    server.shutdown().await;
}

// issue #14 item 3: integer user ids are accepted and echoed as JSON numbers:
// presence ids/hash, member_added/member_removed, client-event user_id, sign-in, the
// users API and webhooks.
#[tokio::test]
async fn integer_user_ids_stay_numbers_wherever_they_are_echoed() {
    let (url, mut hooks) = webhook_receiver().await;
    let server = TestServer::with(|c| {
        c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
        let mut app = parse_flag("2:hook-key:hook-secret").unwrap();
        app.webhooks = vec![Webhook {
            url,
            events: vec![
                "member_added".into(),
                "member_removed".into(),
                "client_event".into(),
            ],
            batch_ms: Default::default(),
        }];
        c.apps = vec![app];
    })
    .await;
    let (key, secret) = ("hook-key", "hook-secret");
    let mut a = Pusher::connect_to(&server, key, secret).await;
    let mut b = Pusher::connect_to(&server, key, secret).await;
    let ok = a.presence("presence-ids", json!(1)).await;
    assert_eq!(
        data(&ok),
        json!({"presence": {"count": 1, "ids": [1], "hash": {"1": {"name": "n"}}}})
    );
    assert_eq!(hook(&mut hooks, "member_added").await["user_id"], json!(1));
    // A string id "2" and a number 2 are one user, as object keys in the hash.
    let ok = b.presence("presence-ids", json!(2)).await;
    assert_eq!(
        data(&ok),
        json!({"presence": {"count": 2, "ids": [1, 2], "hash": {"1": {"name": "n"}, "2": {"name": "n"}}}})
    );
    let added = a.expect("pusher_internal:member_added").await;
    assert_eq!(
        data(&added),
        json!({"user_id": 2, "user_info": {"name": "n"}})
    );
    assert_eq!(hook(&mut hooks, "member_added").await["user_id"], json!(2));
    b.send(json!({"event": "client-hi", "channel": "presence-ids", "data": {"x": 1}}))
        .await;
    let ev = a.expect("client-hi").await;
    assert_eq!(ev["user_id"], json!(2), "{ev}");
    let e = hook(&mut hooks, "client_event").await;
    assert_eq!(e["user_id"], json!(2), "{e}");
    b.send(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-ids"}}))
        .await;
    let removed = a.expect("pusher_internal:member_removed").await;
    assert_eq!(data(&removed), json!({"user_id": 2}));
    assert_eq!(
        hook(&mut hooks, "member_removed").await["user_id"],
        json!(2)
    );
    // Sign-in with an integer id (Laravel's `user_data.id`).
    let ok = b.sign_in(json!(42)).await;
    assert_eq!(ok["event"], "pusher:signin_success", "{ok}");
    assert_eq!(
        serde_json::from_str::<Value>(data(&ok)["user_data"].as_str().unwrap()).unwrap()["id"],
        json!(42)
    );
    server.shutdown().await;
}

// issue #14 item 3: the users API lists integer ids as numbers.
#[tokio::test]
async fn the_users_api_keeps_integer_ids() {
    let server = TestServer::with(apps).await;
    let mut a = Pusher::connect(&server).await;
    let mut b = Pusher::connect(&server).await;
    a.presence("presence-u", json!(7)).await;
    b.presence("presence-u", json!("alice")).await;
    assert_eq!(
        get(&server, "/apps/1/channels/presence-u/users", &[]).await,
        json!({"users": [{"id": 7}, {"id": "alice"}]})
    );
    server.shutdown().await;
}

// issue #14 item 4: an event to #server-to-user-{id} reaches every connection signed in
// as that user, subscribed or not; string and integer ids alike.
#[tokio::test]
async fn server_to_user_events_reach_every_signed_in_connection() {
    let server = TestServer::with(apps).await;
    let mut a = Pusher::connect(&server).await;
    let mut b = Pusher::connect(&server).await;
    let mut n = Pusher::connect(&server).await;
    let mut other = Pusher::connect(&server).await;
    assert_eq!(
        a.sign_in(json!("7")).await["event"],
        "pusher:signin_success"
    );
    assert_eq!(
        b.sign_in(json!("7")).await["event"],
        "pusher:signin_success"
    );
    assert_eq!(n.sign_in(json!(8)).await["event"], "pusher:signin_success");
    assert_eq!(
        other.sign_in(json!("9")).await["event"],
        "pusher:signin_success"
    );
    // `a` also subscribes itself, as pusher-js does for string ids: one copy, not two.
    let ok = a.subscribe("#server-to-user-7").await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    for (user, data) in [("7", "for seven"), ("8", "for eight")] {
        let (status, body) = api(
            &server,
            "POST",
            "/apps/1/events",
            &[],
            Some(
                json!({"name": "note", "channel": format!("#server-to-user-{user}"), "data": data}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for p in [&mut a, &mut b] {
        let ev = p.next().await;
        assert_eq!(
            ev,
            json!({"event": "note", "channel": "#server-to-user-7", "data": "for seven"})
        );
    }
    let ev = n.next().await;
    assert_eq!(
        ev,
        json!({"event": "note", "channel": "#server-to-user-8", "data": "for eight"})
    );
    // Nothing more for `a` (no duplicate), nothing for user 9.
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(a.next().await["event"], "pusher:pong");
    other
        .send(json!({"event": "pusher:ping", "data": {}}))
        .await;
    assert_eq!(other.next().await["event"], "pusher:pong");
    server.shutdown().await;
}

// issue #14 item 4: signing in again as another user moves the connection to the new
// user's channel.
#[tokio::test]
async fn a_second_sign_in_leaves_the_first_users_channel() {
    let server = TestServer::with(apps).await;
    let mut a = Pusher::connect(&server).await;
    assert_eq!(
        a.sign_in(json!("first")).await["event"],
        "pusher:signin_success"
    );
    assert_eq!(a.sign_in(json!(2)).await["event"], "pusher:signin_success");
    for user in ["first", "2"] {
        let (status, body) = api(
            &server,
            "POST",
            "/apps/1/events",
            &[],
            Some(
                json!({"name": "note", "channel": format!("#server-to-user-{user}"), "data": user}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let ev = a.next().await;
    assert_eq!(
        ev,
        json!({"event": "note", "channel": "#server-to-user-2", "data": "2"})
    );
    a.send(json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(
        a.next().await["event"],
        "pusher:pong",
        "nothing for the first user"
    );
    server.shutdown().await;
}

// issue #14 item 5: a refused client event's pusher:error names its channel.
#[tokio::test]
async fn refused_client_events_name_their_channel() {
    let server = TestServer::with(apps).await;
    let mut off = Pusher::connect_to(&server, "key-two", "secret-two").await;
    off.private("private-x").await;
    off.send(json!({"event": "client-x", "channel": "private-x", "data": {}}))
        .await;
    let err = off.next().await;
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["channel"], "private-x", "{err}");
    assert_eq!(err["data"]["code"], 4301, "{err}");
    // Over the rate (10 per second by default): the refusal names the channel too.
    let mut on = Pusher::connect(&server).await;
    on.private("private-y").await;
    for _ in 0..12 {
        on.send(json!({"event": "client-y", "channel": "private-y", "data": {}}))
            .await;
    }
    let err = on.expect("pusher:error").await;
    assert_eq!(err["channel"], "private-y", "{err}");
    assert_eq!(err["data"]["code"], 4301, "{err}");
    server.shutdown().await;
}

// issue #14 item 6: pusher:cache_miss has no data member.
#[tokio::test]
async fn cache_miss_has_no_data_member() {
    let server = TestServer::with(apps).await;
    let mut a = Pusher::connect(&server).await;
    let ok = a.subscribe("cache-x").await;
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    let text = next_text(&mut a.ws).await;
    assert_eq!(text, r#"{"event":"pusher:cache_miss","channel":"cache-x"}"#);
    server.shutdown().await;
}

/// Reads until the close frame (at most 50 frames), without answering it; its code.
async fn close_frame(ws: &mut Ws) -> u16 {
    use futures_util::StreamExt;
    for _ in 0..50 {
        match within("the close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    panic!("no close frame in 50");
}

// issue #14 item 7: by the time a client reads the close frame, it has left its
// channels, its presence rooms and the occupancy the API reports.
#[tokio::test]
async fn a_closed_client_has_left_before_it_reads_the_close() {
    let server = TestServer::with(apps).await;
    // Server-initiated: terminate_connections; the client does not answer the close
    // (the server waits up to 3 s for that answer).
    let mut a = Pusher::connect(&server).await;
    assert_eq!(
        a.sign_in(json!("gone")).await["event"],
        "pusher:signin_success"
    );
    a.subscribe("news").await;
    a.presence("presence-p", json!("gone")).await;
    let (status, _) = api(
        &server,
        "POST",
        "/apps/1/users/gone/terminate_connections",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(close_frame(&mut a.ws).await, 4009);
    let t = Instant::now();
    assert_eq!(
        get(&server, "/apps/1/channels/news", &[]).await["occupied"],
        false
    );
    assert_eq!(
        get(&server, "/apps/1/channels/presence-p/users", &[]).await,
        json!({"users": []})
    );
    assert_eq!(
        get(&server, "/apps/1/channels", &[]).await,
        json!({"channels": {}})
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // Client-initiated: the reply to its close frame comes after it has left.
    let mut b = Pusher::connect(&server).await;
    b.subscribe("news").await;
    b.presence("presence-p", json!(5)).await;
    within("close", b.ws.send(Message::Close(None)))
        .await
        .unwrap();
    close_frame(&mut b.ws).await;
    assert_eq!(
        get(&server, "/apps/1/channels/presence-p", &[]).await,
        json!({"occupied": false, "subscription_count": 0, "user_count": 0})
    );
    assert_eq!(
        get(&server, "/apps/1/channels", &[]).await,
        json!({"channels": {}})
    );
    server.shutdown().await;
}

/// `wspush serve ARGS --print-config` with `env`: the printed TOML.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Result<toml::Table, String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"));
    cmd.arg("serve").args(args).arg("--print-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    if out.status.code() != Some(0) {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap())
}

// issue #14 item 8: every duration option takes units ("5s", "500ms", "2m") in the
// TOML file, the environment and on the command line; plain integers keep their unit.
#[test]
fn durations_take_units_everywhere_and_integers_keep_their_unit() {
    let dir = std::env::temp_dir().join(format!("wspush-durations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("d.toml");
    std::fs::write(
        &file,
        r#"ping_interval = "30s"
ping_timeout = 7
handshake_timeout = "2500ms"
shutdown_grace = "1m"
write_coalesce_ms = "5ms"
slow_close_grace = "2s"
body_timeout = 3
history_max_age = "1h"
[[namespaces]]
prefix = "chat:"
history_size = 10
history_ttl = 90
[[apps]]
id = "1"
key = "k"
secret = "s"
user_authentication_timeout = "1500ms"
[[apps.webhooks]]
url = "http://127.0.0.1:9/hook"
batch_ms = "1s"
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let p = print_config(&["--config", path], &[("WSPUSH_PING_TIMEOUT", "9s")]).unwrap();
    let int = |k: &str| p[k].as_integer();
    assert_eq!(int("ping_interval"), Some(30), "{p}");
    assert_eq!(int("ping_timeout"), Some(9), "env beats the file: {p}");
    assert_eq!(p["handshake_timeout"].as_str(), Some("2s 500ms"), "{p}");
    assert_eq!(int("shutdown_grace"), Some(60));
    assert_eq!(int("write_coalesce_ms"), Some(5));
    assert_eq!(int("slow_close_grace"), Some(2));
    assert_eq!(int("body_timeout"), Some(3));
    assert_eq!(int("history_max_age"), Some(3600));
    assert_eq!(
        p["namespaces"][0]["history_ttl"].as_str(),
        Some("1m 30s"),
        "{p}"
    );
    let app = &p["apps"][0];
    assert_eq!(
        app["user_authentication_timeout"].as_str(),
        Some("1s 500ms"),
        "{p}"
    );
    assert_eq!(
        app["webhooks"][0]["batch_ms"].as_integer(),
        Some(1000),
        "{p}"
    );
    // Flags take units too.
    let p = print_config(&["--ping-interval", "1m", "--write-coalesce-ms", "1s"], &[]).unwrap();
    assert_eq!(p["ping_interval"].as_integer(), Some(60));
    assert_eq!(p["write_coalesce_ms"].as_integer(), Some(1000));
    // A bad duration names the option.
    let err = print_config(&["--body-timeout", "5 parsecs"], &[]).unwrap_err();
    assert!(err.contains("body-timeout"), "{err}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "shutdown_grace = \"soon\"\n").unwrap();
    let err = print_config(&["--config", bad.to_str().unwrap()], &[]).unwrap_err();
    assert!(err.contains("shutdown_grace"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// issue #14 item 8: a sub-second sign-in deadline is kept to the millisecond.
#[tokio::test]
async fn a_sub_second_user_authentication_timeout_is_honoured() {
    let server = TestServer::with(|c| {
        c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
        let mut strict = parse_flag("2:strict-key:strict-secret").unwrap();
        strict.user_authentication = true;
        strict.user_authentication_timeout = "300ms".parse().unwrap();
        c.apps = vec![strict];
    })
    .await;
    let t = Instant::now();
    let mut p = Pusher::connect_to(&server, "strict-key", "strict-secret").await;
    let err = p.expect("pusher:error").await;
    assert_eq!(err["data"]["code"], 4009);
    assert_eq!(close_frame(&mut p.ws).await, 4009);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(950),
        "{took:?}"
    );
    server.shutdown().await;
}
