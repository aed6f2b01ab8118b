//! Production hardening (issue #4): tokens, channel grants, origins, limits, rate limits,
//! slowloris, bounded memory for slow consumers, config sources, TLS, metrics.

mod support;

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wspush::namespace::{Access, Namespace};

const SECRET: &str = "0123456789abcdef-test-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(secret: &str, claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn alice(exp_in: i64) -> Value {
    json!({
        "sub": "alice",
        "exp": (now() as i64 + exp_in) as u64,
        "channels": {"subscribe": ["news"], "publish": ["chat:*"]},
    })
}

fn ns(prefix: &str, anonymous: Access) -> Namespace {
    Namespace {
        prefix: prefix.into(),
        history_size: 0,
        history_ttl: None,
        presence: false,
        anonymous,
    }
}

async fn jwt_server() -> TestServer {
    TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.namespaces = vec![ns("", Access::None), ns("public:", Access::Subscribe)];
    })
    .await
}

/// Status of a WebSocket handshake to `url` (101 on success).
async fn handshake_status(url: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed oddly: {e}"),
    }
}

#[tokio::test]
async fn tokens_valid_expired_forged_and_malformed() {
    let server = jwt_server().await;
    let url = |token: &str| server.ws(&format!("?channels=news&token={token}"));
    assert_eq!(
        handshake_status(&url(&hs256(SECRET, alice(60))), None).await,
        101
    );
    assert_eq!(
        handshake_status(&url(&hs256(SECRET, alice(-10))), None).await,
        401,
        "expired"
    );
    assert_eq!(
        handshake_status(&url(&hs256("another-secret-of-16+", alice(60))), None).await,
        401,
        "wrong signature"
    );
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(alice(60))
    );
    assert_eq!(handshake_status(&url(&none), None).await, 401, "alg none");
    assert_eq!(
        handshake_status(&url("not.a.jwt"), None).await,
        401,
        "malformed"
    );
    assert_eq!(
        handshake_status(&url("garbage"), None).await,
        401,
        "malformed"
    );
    let no_sub = hs256(SECRET, json!({"exp": now() + 60}));
    assert_eq!(handshake_status(&url(&no_sub), None).await, 401, "no sub");
    // Anonymous: allowed only where the namespace says so.
    assert_eq!(
        handshake_status(&server.ws("?channels=public:x"), None).await,
        101
    );
    assert_eq!(
        handshake_status(&server.ws("?channels=news"), None).await,
        403
    );
    // A token for `news` cannot subscribe to `sports`.
    let sports = server.ws(&format!(
        "?channels=sports&token={}",
        hs256(SECRET, alice(60))
    ));
    assert_eq!(handshake_status(&sports, None).await, 403);

    let (_, metrics) = metrics(&server).await;
    assert!(
        counter(&metrics, "wspush_auth_failures_total") >= 6.0,
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rs256_and_es256_keys_and_algorithm_confusion() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let rsa_public = format!("{fixtures}/rsa-public.pem");
    let server = TestServer::with(|c| {
        c.jwt_public_key = Some(rsa_public.clone().into());
        c.jwt_algorithm = "RS256".into();
    })
    .await;
    let rsa_private = std::fs::read(format!("{fixtures}/rsa-private.pem")).unwrap();
    let rs = encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &alice(60),
        &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        handshake_status(&server.ws(&format!("?token={rs}")), None).await,
        101
    );
    // HS/RS confusion: an HS256 token "signed" with the public key as the HMAC secret.
    let public_pem = std::fs::read_to_string(&rsa_public).unwrap();
    let confused = hs256(&public_pem, alice(60));
    assert_eq!(
        handshake_status(&server.ws(&format!("?token={confused}")), None).await,
        401
    );
    server.shutdown().await;

    let server = TestServer::with(|c| {
        c.jwt_public_key = Some(format!("{fixtures}/ec-public.pem").into());
        c.jwt_algorithm = "ES256".into();
    })
    .await;
    let ec_private = std::fs::read(format!("{fixtures}/ec-private.pem")).unwrap();
    let es = encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &alice(60),
        &EncodingKey::from_ec_pem(&ec_private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        handshake_status(&server.ws(&format!("?token={es}")), None).await,
        101
    );
    // An RS256 token is refused by an ES256 server even when well-formed.
    assert_eq!(
        handshake_status(&server.ws(&format!("?token={rs}")), None).await,
        401
    );
    server.shutdown().await;
}

#[tokio::test]
async fn channel_grants_for_subscribe_and_publish_and_the_connect_command() {
    let server = jwt_server().await;
    let token = hs256(SECRET, alice(60));
    let mut c = JsonClient::connect(&server.ws(&format!("?token={token}"))).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("ok").to_string();
    assert_eq!(
        code(&c.cmd(json!({"op": "subscribe", "channel": "news"})).await),
        "ok"
    );
    assert_eq!(
        code(&c.cmd(json!({"op": "subscribe", "channel": "sports"})).await),
        "forbidden"
    );
    assert_eq!(
        code(
            &c.cmd(json!({"op": "publish", "channel": "news", "data": 1}))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &c.cmd(json!({"op": "publish", "channel": "chat:1", "data": 1}))
                .await
        ),
        "ok"
    );
    assert_eq!(
        code(&c.cmd(json!({"op": "subscribe", "channel": "chat:9"})).await),
        "ok"
    );

    // Anonymous, then `connect` as the first command.
    let mut anon = JsonClient::connect(&server.ws("")).await;
    assert_eq!(
        code(
            &anon
                .cmd(json!({"op": "subscribe", "channel": "news"}))
                .await
        ),
        "forbidden"
    );
    let mut d = JsonClient::connect(&server.ws("")).await;
    let r = d.cmd(json!({"op": "connect", "token": token})).await;
    assert_eq!(r["user"], json!("alice"));
    assert_eq!(
        code(&d.cmd(json!({"op": "subscribe", "channel": "news"})).await),
        "ok"
    );
    // connect when not first: refused.
    assert_eq!(
        code(&anon.cmd(json!({"op": "connect", "token": token})).await),
        "bad_request"
    );
    // A bad token in connect: error, then close 1008.
    let mut e = JsonClient::connect(&server.ws("")).await;
    let r = e.cmd(json!({"op": "connect", "token": "bogus"})).await;
    assert_eq!(code(&r), "unauthorized");
    assert_eq!(close_code(&mut e.ws).await, 1008);

    // Send to a user reaches every connection of that user.
    let (status, body) = post(
        &server.http("/api/send"),
        json!({"user": "alice", "data": "hi alice"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"delivered": 2})));
    server.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_close_with_4001_unless_refreshed() {
    let server = jwt_server().await;
    let short = hs256(SECRET, alice(2));
    let mut expiring = JsonClient::connect(&server.ws(&format!("?token={short}"))).await;
    let mut refreshed = JsonClient::connect(&server.ws(&format!("?token={short}"))).await;
    let r = refreshed
        .cmd(json!({"op": "refresh", "token": hs256(SECRET, alice(120))}))
        .await;
    assert_eq!(r["ok"], json!(true), "{r}");
    let mallory = hs256(SECRET, json!({"sub": "mallory", "exp": now() + 120}));
    let r = refreshed
        .cmd(json!({"op": "refresh", "token": mallory}))
        .await;
    assert_eq!(r["error"]["code"], json!("forbidden"));
    assert_eq!(close_code(&mut expiring.ws).await, 4001);
    // The refreshed one outlives the original expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        refreshed.cmd(json!({"op": "ping"})).await["ok"],
        json!(true)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn origins_are_checked_before_upgrading() {
    let server = TestServer::start().await;
    let same = format!("http://{}", server.addr);
    assert_eq!(handshake_status(&server.ws(""), Some(&same)).await, 101);
    assert_eq!(
        handshake_status(&server.ws(""), Some("http://evil.example")).await,
        403
    );
    assert_eq!(
        handshake_status(&server.ws(""), None).await,
        101,
        "non-browser clients"
    );
    server.shutdown().await;
    let server =
        TestServer::with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    assert_eq!(
        handshake_status(&server.ws(""), Some("https://app.example.com")).await,
        101
    );
    assert_eq!(
        handshake_status(&server.ws(""), Some("https://app.example.com.evil.io")).await,
        403
    );
    let (_, m) = metrics(&server).await;
    assert_eq!(counter(&m, "wspush_rejected_connections_total"), 1.0);
    server.shutdown().await;
}

#[tokio::test]
async fn per_ip_connection_limit() {
    let server = TestServer::with(|c| c.max_connections_per_ip = 2).await;
    let (a, _) = connect(&server.ws("")).await;
    let (_b, _) = connect(&server.ws("")).await;
    assert_eq!(handshake_status(&server.ws(""), None).await, 429);
    drop(a);
    // The slot comes back once the server has seen the first connection close.
    within("slot released", async {
        loop {
            if handshake_status(&server.ws(""), None).await == 101 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn publish_rate_limit_then_close_1008() {
    let server = TestServer::with(|c| {
        c.publish_rate = 0.5;
        c.publish_burst = 3;
        c.max_protocol_errors = 2;
    })
    .await;
    let mut c = JsonClient::connect(&server.ws("")).await;
    for _ in 0..3 {
        let r = c
            .cmd(json!({"op": "publish", "channel": "x", "data": 1}))
            .await;
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    for _ in 0..3 {
        let r = c
            .cmd(json!({"op": "publish", "channel": "x", "data": 1}))
            .await;
        assert_eq!(r["error"]["code"], json!("rate_limited"));
    }
    assert_eq!(close_code(&mut c.ws).await, 1008);
    let (_, m) = metrics(&server).await;
    assert_eq!(counter(&m, "wspush_rate_limited_total"), 3.0);
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_half_sent_handshake_is_dropped() {
    let server = TestServer::with(|c| c.handshake_timeout = 1.into()).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        let mut total = 0;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the server must drop a client that never finishes its handshake");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "dropped before the timeout"
    );
    let _ = n;
    // Others are unaffected.
    let (_ws, _) = connect(&server.ws("")).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_hundred_clients_that_never_read_are_cut_off_and_memory_stays_bounded() {
    const SLOW: usize = 100;
    const MESSAGES: usize = 1600;
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--queue-max-bytes",
        "1048576",
        "--queue-max-frames",
        "256",
    ])
    .await;
    let pid = server.child.id().unwrap();
    let base = proc_kib(pid, "VmRSS:");
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /ws?channels=busy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        // Shrink our receive buffer's effect by never reading after the 101.
        let mut head = [0u8; 129];
        s.read_exact(&mut head[..12]).await.unwrap();
        assert_eq!(&head[..12], b"HTTP/1.1 101");
        slow.push(s);
    }
    let (mut fast, _) = connect(&server.ws("?channels=busy")).await;
    let payload = "z".repeat(64 * 1024);
    let reader = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            assert_eq!(next_text(&mut fast).await.len(), 64 * 1024);
        }
    });
    let api = format!("http://{}/api/publish", server.addr);
    let http = reqwest::Client::new();
    for _ in 0..MESSAGES {
        let r = http
            .post(&api)
            .json(&json!({"channel": "busy", "data": payload}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    tokio::time::timeout(WAIT * 3, reader)
        .await
        .expect("fast client kept up")
        .unwrap();
    // 100 MiB of distinct frames were published to clients that read nothing: a slow
    // client without a bound would keep every one of them alive. With the bound (1 MiB
    // each) they are cut off and the peak stays far below that.
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("RSS base {base} KiB, peak {peak} KiB");
    assert!(
        peak < base + 48 * 1024,
        "peak RSS {peak} KiB vs base {base} KiB"
    );
    let metrics_url = format!("http://{}/metrics", server.addr);
    within("slow clients counted", async {
        loop {
            let text = reqwest::get(&metrics_url)
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if counter(&text, "wspush_disconnected_slow_total") >= SLOW as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn metrics(server: &TestServer) -> (u16, String) {
    let resp = reqwest::get(server.http("/metrics")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test]
async fn metrics_counters_move() {
    let server =
        TestServer::with(|c| c.upstream = "webhook:http://127.0.0.1:9/nothing".parse().unwrap())
            .await;
    let (_, before) = metrics(&server).await;
    assert_eq!(counter(&before, "wspush_messages_published_total"), 0.0);
    let (mut ws, _) = connect(&server.ws("?channels=m")).await;
    publish(&server, "m", "one").await;
    assert_eq!(next_text(&mut ws).await, "one");
    send_text(&mut ws, "to a dead webhook").await;
    within("webhook failure counted", async {
        loop {
            let (_, m) = metrics(&server).await;
            if counter(&m, "wspush_upstream_failures_total") == 1.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (status, m) = metrics(&server).await;
    assert_eq!(status, 200);
    assert_eq!(counter(&m, "wspush_messages_published_total"), 1.0);
    assert_eq!(counter(&m, "wspush_messages_delivered_total"), 1.0);
    assert_eq!(counter(&m, "wspush_connections_raw"), 1.0);
    assert_eq!(counter(&m, "wspush_subscriptions"), 1.0);
    assert_eq!(counter(&m, "wspush_upstream_messages_total"), 1.0);
    assert_eq!(counter(&m, "wspush_publish_latency_seconds_count"), 1.0);
    assert!(counter(&m, "wspush_bytes_out_total") >= 5.0);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_and_api_need_the_key_when_one_is_set() {
    let server = TestServer::with(|c| c.api_key = Some("k".into())).await;
    assert_eq!(metrics(&server).await.0, 401);
    let resp = reqwest::Client::new()
        .get(server.http("/metrics"))
        .header("authorization", "apikey k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    server.shutdown().await;
}

fn wspush(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn config_file_errors_name_the_key_and_line_and_precedence_is_flag_env_file() {
    let dir = std::env::temp_dir().join(format!("wspush-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "ping_interval = 5\npign_timeout = 3\n").unwrap();
    let out = wspush(&["serve", "--config", unknown.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("pign_timeout") && err.contains("line 2"),
        "{err}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:0\"\nmax_message_size = \"big\"\n",
    )
    .unwrap();
    let out = wspush(&["serve", "--config", bad.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("max_message_size") && err.contains("line 2"),
        "{err}"
    );

    let range = dir.join("range.toml");
    std::fs::write(&range, "ping_interval = 0\n").unwrap();
    let out = wspush(&["serve", "--config", range.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ping-interval"));

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "ping_interval = 7\nping_timeout = 9\nmax_publish_size = 111\n[[namespaces]]\nprefix = \"chat:\"\nhistory_size = 10\nhistory_ttl = \"5m\"\n",
    )
    .unwrap();
    let out = wspush(
        &[
            "serve",
            "--config",
            good.to_str().unwrap(),
            "--ping-interval",
            "3",
            "--print-config",
        ],
        &[("WSPUSH_PING_INTERVAL", "4"), ("WSPUSH_PING_TIMEOUT", "5")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(
        printed["ping_interval"].as_integer(),
        Some(3),
        "flag beats env and file"
    );
    assert_eq!(
        printed["ping_timeout"].as_integer(),
        Some(5),
        "env beats file"
    );
    assert_eq!(
        printed["max_publish_size"].as_integer(),
        Some(111),
        "file beats default"
    );
    assert_eq!(printed["namespaces"][0]["prefix"].as_str(), Some("chat:"));
    std::fs::remove_dir_all(&dir).unwrap();
}
