//! Hostile HTTP (issue #12 items 4 and 10): DNS rebinding against the local-only API and
//! the same-origin WebSocket rule, forwarding headers and trusted proxies (per-IP limits
//! per forwarded client, IPv6 per /64), slow and oversized bodies on both HTTP APIs, a
//! slow request head, and webhooks still pending at shutdown. Every attack goes over raw
//! sockets to a real server.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wspush::pusher::apps::{parse_flag, Webhook};
use wspush::pusher::auth;

const WS_HEADERS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Reads one response from `stream`: its status and JSON body (`Null` when there is none,
/// as after a 101).
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = within("a response", stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = within("a response body", stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    (status, serde_json::from_slice(body).unwrap_or(Value::Null))
}

/// Sends `head` (request line and header lines, each ending in CRLF) and `body` on a new
/// connection; the status, the JSON body and the connection (open after a 101).
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req).await.unwrap();
    let (status, json) = read_response(&mut stream).await;
    (status, json, stream)
}

/// `GET path` with these extra header lines; status and body.
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, Value) {
    let (status, body, _) = exchange(addr, &format!("GET {path} HTTP/1.1\r\n{headers}"), b"").await;
    (status, body)
}

fn host(name: &str, addr: SocketAddr) -> String {
    format!("Host: {name}:{}\r\n", addr.port())
}

/// A WebSocket handshake to `/ws` with these extra header lines; the status, the body and
/// the connection (kept open by the caller to hold its slot).
async fn ws_handshake(addr: SocketAddr, headers: &str) -> (u16, Value, TcpStream) {
    exchange(
        addr,
        &format!("GET /ws HTTP/1.1\r\n{WS_HEADERS}{headers}"),
        b"",
    )
    .await
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

// issue #12 item 4: without an API key, a page under a DNS-rebinding name (which now
// resolves to 127.0.0.1) reached the API and /metrics from loopback: publish, kick, list
// clients with their addresses. Before: 200 to each of these.
#[tokio::test]
async fn without_a_key_a_rebinding_host_is_refused_with_the_fix() {
    let server = TestServer::start().await;
    let a = server.addr;
    let rebind = host("rebind.example", a);
    let publish = br#"{"channel":"news","data":"pwned"}"#;
    let (status, body, _) = exchange(
        a,
        &format!("POST /api/publish HTTP/1.1\r\n{rebind}Content-Type: application/json\r\n"),
        publish,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let text = message(&body);
    assert!(
        text.contains("rebind.example") && text.contains("--api-key"),
        "the message names the Host and the fix: {text}"
    );
    for (method, path) in [
        ("GET", "/api/clients"),
        ("GET", "/api/channels"),
        ("DELETE", "/api/clients/c-1"),
        ("GET", "/metrics"),
    ] {
        let (status, body, _) =
            exchange(a, &format!("{method} {path} HTTP/1.1\r\n{rebind}"), b"").await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(message(&body).contains("API key"), "{body}");
    }
    // No Host at all (HTTP/1.0) is not local either.
    let (status, _, _) = exchange(a, "GET /api/channels HTTP/1.0\r\n", b"").await;
    assert_eq!(status, 403);
    // An absolute URI naming another host does not pass on a loopback Host header.
    let (status, _) = get_with(
        a,
        &format!("http://rebind.example:{}/api/channels", a.port()),
        &host("localhost", a),
    )
    .await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_key_loopback_hosts_and_server_names_are_answered() {
    let server = TestServer::with(|c| c.server_names = vec!["push.example.com".into()]).await;
    let a = server.addr;
    for name in [
        "127.0.0.1",
        "localhost",
        "LocalHost",
        "[::1]",
        "app.localhost",
        "push.example.com",
    ] {
        let (status, body) = get_with(a, "/api/channels", &host(name, a)).await;
        assert_eq!(status, 200, "Host {name}: {body}");
    }
    for bare in ["localhost", "127.0.0.1"] {
        let (status, _) = get_with(a, "/metrics", &format!("Host: {bare}\r\n")).await;
        assert_eq!(status, 200, "Host {bare} without a port");
    }
    let (status, _) = get_with(a, "/api/channels", &host("other.example.com", a)).await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

// issue #12 item 4: behind a reverse proxy on the same host every request is loopback.
// Before: 200 with X-Forwarded-For.
#[tokio::test]
async fn without_a_key_forwarded_requests_are_refused() {
    let server = TestServer::start().await;
    let a = server.addr;
    for forwarding in [
        "X-Forwarded-For: 203.0.113.9",
        "X-Forwarded-For: 127.0.0.1",
        "Forwarded: for=203.0.113.9;proto=https",
        "X-Real-IP: 203.0.113.9",
    ] {
        let (status, body) = get_with(
            a,
            "/api/clients",
            &format!("{}{forwarding}\r\n", host("127.0.0.1", a)),
        )
        .await;
        assert_eq!(status, 403, "{forwarding}: {body}");
        let text = message(&body);
        assert!(
            text.contains("--api-key") && text.contains("--trusted-proxies"),
            "{text}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn with_a_key_the_host_and_forwarding_rules_do_not_apply() {
    let server = TestServer::with(|c| c.api_key = Some("s3cret".into())).await;
    let a = server.addr;
    let extra = format!(
        "{}X-Forwarded-For: 203.0.113.9\r\nAuthorization: apikey s3cret\r\n",
        host("push.example.com", a)
    );
    let (status, body) = get_with(a, "/api/channels", &extra).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get_with(a, "/api/channels", &host("rebind.example", a)).await;
    assert_eq!(status, 401, "no key: 401 whatever the Host");
    server.shutdown().await;
}

// issue #12 item 4: a page on rebind.example opening ws://rebind.example:PORT/ws sends a
// Host and an Origin that agree. Before: 101.
#[tokio::test]
async fn websocket_same_origin_needs_a_name_that_cannot_rebind() {
    let server = TestServer::with(|c| c.server_names = vec!["push.example.com".into()]).await;
    let a = server.addr;
    let port = a.port();
    let (status, body, _) = ws_handshake(
        a,
        &format!(
            "{}Origin: http://rebind.example:{port}\r\n",
            host("rebind.example", a)
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let text = message(&body);
    assert!(
        text.contains("--server-names rebind.example")
            && text.contains(&format!("--allowed-origins http://rebind.example:{port}")),
        "the message says how to allow it: {text}"
    );
    for name in ["127.0.0.1", "localhost", "[::1]", "push.example.com"] {
        let (status, body, _) = ws_handshake(
            a,
            &format!("{}Origin: http://{name}:{port}\r\n", host(name, a)),
        )
        .await;
        assert_eq!(status, 101, "{name}: {body}");
    }
    // A foreign origin is still refused, with the option to use.
    let (status, body, _) = ws_handshake(
        a,
        &format!("{}Origin: https://evil.example\r\n", host("127.0.0.1", a)),
    )
    .await;
    assert_eq!(status, 403);
    assert!(message(&body).contains("--allowed-origins https://evil.example"));
    server.shutdown().await;

    // Listing the origin allows it.
    let server =
        TestServer::with(|c| c.allowed_origins = vec!["http://rebind.example".into()]).await;
    let (status, _, _) = ws_handshake(
        server.addr,
        "Host: rebind.example\r\nOrigin: http://rebind.example\r\n",
    )
    .await;
    assert_eq!(status, 101);
    server.shutdown().await;
}

// issue #12 items 4 and 10: behind a trusted proxy, the per-IP limit, the client's remote
// address and the API's local-only rule use the forwarded client (the rightmost untrusted
// hop); IPv6 clients count per /64.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let server = TestServer::with(|c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.max_connections_per_ip = 1;
    })
    .await;
    let a = server.addr;
    let local = host("127.0.0.1", a);
    let xff = |ip: &str| format!("{local}X-Forwarded-For: {ip}\r\n");
    let mut held = Vec::new();
    for ip in [
        "203.0.113.1",
        "203.0.113.2",
        "2001:db8::1",
        "2001:db8:0:1::1",
    ] {
        let (status, body, conn) = ws_handshake(a, &xff(ip)).await;
        assert_eq!(status, 101, "{ip}: {body}");
        held.push(conn);
    }
    for ip in [
        "203.0.113.1",
        "6.6.6.6, 203.0.113.2",
        "2001:db8::2",
        "[2001:db8::ffff]:4711",
    ] {
        let (status, body, _) = ws_handshake(a, &xff(ip)).await;
        assert_eq!(status, 429, "{ip} is already connected: {body}");
    }
    let (status, _, _) = ws_handshake(
        a,
        &format!("{local}Forwarded: for=\"[2001:db8:0:2::5]:80\"\r\n"),
    )
    .await;
    assert_eq!(status, 101, "another /64 through Forwarded");

    // The API lists the forwarded addresses, and is local only for local clients.
    let (status, body) = get_with(a, "/api/clients", &local).await;
    assert_eq!(status, 200, "{body}");
    let remotes: Vec<&str> = body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["remote"].as_str().unwrap())
        .collect();
    for r in ["203.0.113.1:0", "203.0.113.2:0", "[2001:db8::1]:0"] {
        assert!(remotes.contains(&r), "{r} in {remotes:?}");
    }
    let (status, body) = get_with(a, "/api/clients", &xff("203.0.113.1")).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("203.0.113.1"), "{body}");
    let (status, _) = get_with(a, "/api/clients", &xff("127.0.0.1, 203.0.113.1")).await;
    assert_eq!(
        status, 403,
        "a spoofed loopback hop on the left is not believed"
    );
    let (status, _) = get_with(a, "/api/clients", &xff("127.0.0.1")).await;
    assert_eq!(status, 200, "a local client through the local proxy");
    server.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_are_ignored() {
    let server = TestServer::with(|c| c.max_connections_per_ip = 1).await;
    let a = server.addr;
    let local = host("127.0.0.1", a);
    let (status, _, _held) =
        ws_handshake(a, &format!("{local}X-Forwarded-For: 203.0.113.1\r\n")).await;
    assert_eq!(status, 101);
    let (status, _, _) = ws_handshake(a, &format!("{local}X-Forwarded-For: 203.0.113.2\r\n")).await;
    assert_eq!(status, 429, "both are 127.0.0.1");
    server.shutdown().await;
}

/// Sends `head` and the first `sent` bytes of `body` at once, then the rest a byte every
/// 200 ms from a task; the response, and how long it took to come.
async fn slow_body(
    addr: SocketAddr,
    head: &str,
    body: Vec<u8>,
    sent: usize,
) -> (u16, Value, Duration) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let head = format!("{head}Content-Length: {}\r\n\r\n", body.len());
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.write_all(&body[..sent]).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in &body[sent..] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let (status, json) = read_response(&mut rd).await;
    trickle.abort();
    (status, json, start.elapsed())
}

// issue #12 item 10: a body sent a byte at a time held a connection and its task for as
// long as the client liked. Before: no answer after 25 s (100-byte body, 1 byte/s).
#[tokio::test]
async fn a_slow_api_body_gets_408() {
    let server = TestServer::with(|c| c.body_timeout = 1.into()).await;
    let a = server.addr;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\n{}Content-Type: application/json\r\n",
        host("127.0.0.1", a)
    );
    let mut body = br#"{"channel":"news","data":""#.to_vec();
    body.resize(200, b'x');
    let (status, json, took) = slow_body(a, &head, body, 10).await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["error"]["code"], "timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.shutdown().await;
}

// issue #12 item 10: the request head is bounded by handshake_timeout (hyper's header
// read timeout); a head sent a byte per second is cut. Before and after: cut at 10 s by
// default (here 2 s).
#[tokio::test]
async fn a_slow_request_head_is_cut_at_the_handshake_timeout() {
    let server = TestServer::with(|c| c.handshake_timeout = 2.into()).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match within("the server to cut the slow head", rd.read(&mut chunk)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    trickle.abort();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "the request was not served: {got:?}"
    );
    server.shutdown().await;
}

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

/// The query string of a signed Pusher API request with this body.
fn signed_query(method: &str, path: &str, body: &[u8]) -> String {
    let mut q = BTreeMap::new();
    q.insert("auth_key".to_string(), KEY.to_string());
    q.insert(
        "auth_timestamp".to_string(),
        wspush::auth::unix_now().to_string(),
    );
    q.insert("auth_version".to_string(), "1.0".to_string());
    q.insert("body_md5".to_string(), auth::body_md5(body));
    let sig = auth::sign(SECRET, auth::string_to_sign(method, path, &q).as_bytes());
    q.insert("auth_signature".to_string(), sig);
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn pusher_app(c: &mut wspush::config::Config) {
    c.pusher_app = vec![format!("1:{KEY}:{SECRET}")];
}

// issue #12 item 10: the Pusher API read the whole body, with no time limit, before it
// checked anything. Before: still open after 40 s.
#[tokio::test]
async fn a_slow_pusher_api_body_gets_408() {
    let server = TestServer::with(|c| {
        pusher_app(c);
        c.body_timeout = 1.into();
    })
    .await;
    let a = server.addr;
    let mut body = br#"{"name":"e","channel":"news","data":""#.to_vec();
    body.resize(200, b'x');
    let path = "/apps/1/events";
    let head = format!(
        "POST {path}?{} HTTP/1.1\r\n{}Content-Type: application/json\r\n",
        signed_query("POST", path, &body),
        host("127.0.0.1", a)
    );
    let (status, json, took) = slow_body(a, &head, body, 10).await;
    assert_eq!(status, 408, "{json}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server.shutdown().await;
}

// issue #12 item 10: before, a 1 GB Content-Length was answered only once the body (up
// to max_body_size) had arrived — here nothing after 5 s; an unsigned one too.
#[tokio::test]
async fn an_oversized_or_unsigned_pusher_body_is_refused_before_it_is_read() {
    let server = TestServer::with(|c| {
        pusher_app(c);
        c.max_body_size = 64 * 1024;
    })
    .await;
    let a = server.addr;
    let path = "/apps/1/events";
    let local = host("127.0.0.1", a);
    // Only the head is sent: the answer cannot depend on the body.
    let head_only = |path: &'static str, query: String, length: u64| async move {
        let mut stream = TcpStream::connect(a).await.unwrap();
        let req = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut stream).await
    };
    let (status, body) = head_only(path, signed_query("POST", path, b"{}"), 1 << 30).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = head_only(path, format!("auth_key={KEY}"), 1000).await;
    assert_eq!(status, 401, "unsigned: {body}");
    let (status, body) = head_only(
        path,
        signed_query("POST", path, b"{}").replace("auth_signature=", "auth_signature=00"),
        1000,
    )
    .await;
    assert_eq!(status, 401, "bad signature: {body}");
    let (status, _) = head_only("/apps/9/events", String::new(), 1000).await;
    assert_eq!(status, 404, "unknown app");

    // A chunked body that never ends is cut at max_body_size.
    let mut stream = TcpStream::connect(a).await.unwrap();
    let req = format!(
        "POST {path}?{} HTTP/1.1\r\n{local}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        signed_query("POST", path, b"{}")
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let endless = tokio::spawn(async move {
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        for _ in 0..1000 {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let (status, _) = read_response(&mut rd).await;
    endless.abort();
    assert_eq!(status, 413);

    server.shutdown().await;
}

/// A webhook receiver: records each body; answers 200, or never when `hang`.
async fn receiver(hang: bool) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                if hang {
                    std::future::pending::<()>().await;
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

/// A server whose app `1` batches webhooks for a minute, so they are pending at shutdown.
async fn webhook_server(url: String, grace: u64) -> TestServer {
    TestServer::with(move |c| {
        let mut app = parse_flag(&format!("1:{KEY}:{SECRET}")).unwrap();
        app.webhooks = vec![Webhook {
            url,
            events: vec![],
            batch_ms: 60_000.into(),
        }];
        c.apps = vec![app];
        c.shutdown_grace = grace.into();
    })
    .await
}

/// A Pusher client subscribed to `news`; a task keeps reading it (so it answers the
/// server's close frame at shutdown).
async fn subscriber(server: &TestServer) -> tokio::task::JoinHandle<()> {
    let url = format!("ws://{}/app/{KEY}?protocol=7", server.addr);
    let (mut ws, _) = within("pusher connect", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.contains("connection_established"));
    let sub = json!({"event": "pusher:subscribe", "data": {"channel": "news"}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    assert!(next_text(&mut ws).await.contains("subscription_succeeded"));
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

// issue #12 item 10: webhooks waiting in a batch (or the queue) were lost at shutdown.
// Before: nothing arrived.
#[tokio::test]
async fn pending_webhooks_are_sent_at_shutdown() {
    let (url, mut hooks) = receiver(false).await;
    let server = webhook_server(url, 3).await;
    let reader = subscriber(&server).await;
    assert!(hooks.try_recv().is_err(), "batched for a minute: pending");
    server.shutdown().await;
    let mut names = Vec::new();
    while let Ok(body) = hooks.try_recv() {
        let v: Value = serde_json::from_str(&body).unwrap();
        for e in v["events"].as_array().unwrap() {
            names.push(format!("{} {}", e["name"].as_str().unwrap(), e["channel"]));
        }
    }
    assert_eq!(
        names,
        ["channel_occupied \"news\"", "channel_vacated \"news\""],
        "both sent, in order, in one batch by the time the server has stopped"
    );
    reader.abort();
}

#[tokio::test]
async fn webhooks_cannot_hold_shutdown_past_the_grace() {
    let (url, mut hooks) = receiver(true).await;
    let server = webhook_server(url, 1).await;
    let reader = subscriber(&server).await;
    let start = Instant::now();
    server.shutdown().await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(hooks.try_recv().is_ok(), "the webhook was attempted");
    reader.abort();
}
