//! Issue #15 part 1: Server-Sent Events (`GET /sse`) and NDJSON streaming (`GET /stream`):
//! the wire format, resume from `Last-Event-ID` and `since` with no gap and no duplicate,
//! `reset`, presence events, the heartbeat, tokens and access, limits, slow and
//! non-reading clients, and delivery across a Redis cluster.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;
use wspush::config::Config;
use wspush::namespace::{Access, Namespace};

/// One parsed event block.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

/// A streaming client over reqwest: its response body, cut into blocks.
struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    client: String,
}

impl Stream {
    /// Opens `url` with `headers`; panics unless the answer is 200.
    async fn open(url: &str, headers: &[(&str, &str)]) -> Stream {
        let mut req = reqwest::Client::new().get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = within("the stream's head", req.send()).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        let client = resp.headers()["x-wspush-client"]
            .to_str()
            .unwrap()
            .to_string();
        Stream {
            resp,
            buf: Vec::new(),
            client,
        }
    }

    /// The next piece ending in `sep` (without it); `None` when the body ended.
    async fn until(&mut self, sep: &[u8]) -> Option<String> {
        within("the next block", async {
            loop {
                if let Some(i) = self.buf.windows(sep.len()).position(|w| w == sep) {
                    let block: Vec<u8> = self.buf.drain(..i + sep.len()).collect();
                    return Some(String::from_utf8(block[..i].to_vec()).unwrap());
                }
                match self.resp.chunk().await {
                    Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
    }

    /// The next SSE block, comments included.
    async fn block(&mut self) -> String {
        self.until(b"\n\n").await.expect("the stream ended")
    }

    /// The next SSE event (comment blocks skipped).
    async fn event(&mut self) -> Event {
        loop {
            let block = self.block().await;
            if block.starts_with(':') {
                continue;
            }
            return parse(&block);
        }
    }

    /// The next NDJSON line (pings skipped).
    async fn line(&mut self) -> Value {
        loop {
            let line = self.until(b"\n").await.expect("the stream ended");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] != "ping" {
                return v;
            }
        }
    }

    /// True once the body ended (within the wait).
    async fn ended(&mut self) -> bool {
        self.until(b"\x00never").await.is_none()
    }
}

fn parse(block: &str) -> Event {
    let mut e = Event {
        id: None,
        event: "message".into(),
        data: String::new(),
    };
    let mut data = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "id" => e.id = Some(value.into()),
            "event" => e.event = value.into(),
            "data" => data.push(value),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    e.data = data.join("\n");
    e
}

fn history(c: &mut Config, size: usize) {
    c.namespaces = vec![Namespace {
        prefix: "".into(),
        history_size: size,
        history_ttl: None,
        presence: false,
        anonymous: Access::Publish,
    }];
}

async fn publish_json(server: &impl Server, channel: &str, data: Value) -> u64 {
    let (status, body) = post(
        &server.http("/api/publish"),
        json!({"channel": channel, "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["offset"].as_u64().unwrap()
}

/// Status and JSON body of a GET that is refused.
async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = within("GET", req.send()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

// issue #15 item 1: one `event: message` per publish with `id: <epoch>:<offset>:<channel>`,
// multi-line data in several data: lines; the stream opens with `subscribed`.
#[tokio::test]
async fn sse_events_carry_the_position_and_split_data_lines() {
    let server = TestServer::start().await;
    let mut s = Stream::open(&server.http("/sse?channels=news"), &[]).await;
    assert_eq!(
        s.resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let sub = s.event().await;
    assert_eq!(sub.event, "subscribed");
    let start: Value = serde_json::from_str(&sub.data).unwrap();
    let epoch = start["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        start,
        json!({"channel": "news", "epoch": epoch, "offset": 0})
    );
    assert_eq!(sub.id, Some(format!("{epoch}:0:news")));

    publish_json(&server, "news", json!({"a": [1, "x"]})).await;
    publish(&server, "news", "line one\nline two\r\nthree").await;
    assert_eq!(
        s.block().await,
        format!("id: {epoch}:1:news\nevent: message\ndata: {{\"a\":[1,\"x\"]}}")
    );
    assert_eq!(
        s.block().await,
        format!("id: {epoch}:2:news\nevent: message\ndata: line one\ndata: line two\ndata: three")
    );
    // A broadcast carries no id: it leaves the page's Last-Event-ID alone.
    let (status, _) = post(
        &server.http("/api/broadcast"),
        json!({"channels": ["*"], "data": "all"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(s.block().await, "event: message\ndata: all");
}

// issue #15 item 1: the same stream as NDJSON, resumed from `since`/`epoch` (one
// channel) or a list of ids, with no gap and no duplicate.
#[tokio::test]
async fn ndjson_stream_resumes_from_since() {
    let server = TestServer::with(|c| history(c, 100)).await;
    let mut s = Stream::open(&server.http("/stream?channels=a,b"), &[]).await;
    assert_eq!(s.resp.headers()["content-type"], "application/x-ndjson");
    let a = s.line().await;
    assert_eq!(
        (a["event"].clone(), a["channel"].clone()),
        (json!("subscribed"), json!("a"))
    );
    let b = s.line().await;
    assert_eq!(b["channel"], "b");
    let (ea, eb) = (a["epoch"].as_str().unwrap(), b["epoch"].as_str().unwrap());
    for i in 1..=3 {
        publish_json(&server, "a", json!(i)).await;
        publish_json(&server, "b", json!({"n": i})).await;
    }
    assert_eq!(
        s.line().await,
        json!({"channel": "a", "offset": 1, "epoch": ea, "data": 1})
    );
    drop(s);

    let one = format!("/stream?channels=a&since=1&epoch={ea}");
    let mut s = Stream::open(&server.http(&one), &[]).await;
    assert_eq!(s.line().await["event"], "subscribed");
    assert_eq!(s.line().await["offset"], 2);
    assert_eq!(s.line().await["offset"], 3);
    drop(s);

    let list = format!("/stream?channels=a,b&since={ea}:3:a,{eb}:1:b");
    let mut s = Stream::open(&server.http(&list), &[]).await;
    publish_json(&server, "a", json!(4)).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let l = s.line().await;
        if l["event"].is_null() {
            got.push((
                l["channel"].as_str().unwrap().to_string(),
                l["offset"].as_u64().unwrap(),
            ));
        }
    }
    let expect = [("b", 2), ("b", 3), ("a", 4)].map(|(c, o)| (c.to_string(), o));
    assert_eq!(got, expect, "b replayed from 1, a live from 3");
    let (status, body) = refused(&server.http("/stream?channels=a,b&since=4"), &[]).await;
    assert_eq!(status, 400, "{body}");
}

/// Reads events until one with data `upto`; the data of every message event seen.
async fn messages_until(s: &mut Stream, upto: &str) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let e = s.event().await;
        if e.event == "message" {
            got.push(e.data.clone());
            if e.data == upto {
                return got;
            }
        }
    }
    panic!("no {upto} in 10000 events");
}

// issue #15 item 1: a reconnect with Last-Event-ID replays everything after it from
// history, then goes live: no gap, no duplicate.
#[tokio::test]
async fn last_event_id_resumes_without_gap_or_duplicate() {
    let server = TestServer::with(|c| history(c, 1000)).await;
    let mut s = Stream::open(&server.http("/sse?channels=news"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    for i in 1..=3 {
        publish(&server, "news", &format!("m{i}")).await;
    }
    let mut last = None;
    for _ in 0..2 {
        last = s.event().await.id;
    }
    drop(s); // the page saw m1 and m2
    for i in 4..=6 {
        publish(&server, "news", &format!("m{i}")).await;
    }
    let last = last.unwrap();
    let mut s = Stream::open(
        &server.http("/sse?channels=news"),
        &[("last-event-id", &last)],
    )
    .await;
    let sub = s.event().await;
    assert_eq!(
        (sub.event.as_str(), sub.id.as_deref()),
        ("subscribed", Some(&*last))
    );
    publish(&server, "news", "m7").await;
    let got = messages_until(&mut s, "m7").await;
    assert_eq!(got, ["m3", "m4", "m5", "m6", "m7"]);
}

// issue #15 item 1: when history no longer reaches back, one `event: reset` with the
// position the stream continues from; channels a reconnect cannot resume are reset too.
#[tokio::test]
async fn reset_when_history_no_longer_reaches_back() {
    let server = TestServer::with(|c| history(c, 2)).await;
    let mut s = Stream::open(&server.http("/sse?channels=news,other"), &[]).await;
    publish(&server, "news", "m1").await;
    let first = messages_id(&mut s).await;
    let epoch = first.split(':').next().unwrap().to_string();
    assert_eq!(first, format!("{epoch}:1:news"));
    drop(s);
    for i in 2..=5 {
        publish(&server, "news", &format!("m{i}")).await;
    }
    let gone = format!("{epoch}:1:news");
    let mut s = Stream::open(
        &server.http("/sse?channels=news,other"),
        &[("last-event-id", &gone)],
    )
    .await;
    let reset = s.event().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id, Some(format!("{epoch}:5:news")));
    let data: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        data,
        json!({"channel": "news", "epoch": epoch, "offset": 5})
    );
    // `other` was not named by Last-Event-ID: it may have missed messages, so reset.
    let other = s.event().await;
    assert_eq!(other.event, "reset");
    assert!(other.data.contains("\"channel\":\"other\""), "{other:?}");
    publish(&server, "news", "m6").await;
    assert_eq!(messages_until(&mut s, "m6").await, ["m6"]);
}

/// The id of the next message event.
async fn messages_id(s: &mut Stream) -> String {
    loop {
        let e = s.event().await;
        if e.event == "message" {
            return e.id.unwrap();
        }
    }
}

// issue #15 item 1: presence join/leave are their own event types.
#[tokio::test]
async fn presence_join_and_leave_are_events() {
    let server = TestServer::with(|c| {
        c.namespaces = vec![Namespace {
            prefix: "room".into(),
            history_size: 0,
            history_ttl: None,
            presence: true,
            anonymous: Access::Publish,
        }]
    })
    .await;
    let mut s = Stream::open(&server.http("/sse?channels=room"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    let other = Stream::open(&server.http("/stream?channels=room"), &[]).await;
    let join = s.event().await;
    assert_eq!(join.event, "join");
    let data: Value = serde_json::from_str(&join.data).unwrap();
    assert_eq!(
        data,
        json!({"channel": "room", "event": "join", "client": other.client})
    );
    drop(other);
    let leave = s.event().await;
    assert_eq!(leave.event, "leave");
    assert!(leave.data.contains(&other_id(&data)), "{leave:?}");
}

fn other_id(v: &Value) -> String {
    v["client"].as_str().unwrap().to_string()
}

// issue #15 item 1: `: ping` every ping_interval on a quiet stream, and a client that
// reads is never dropped for not answering (it cannot answer).
#[tokio::test]
async fn heartbeat_pings_a_quiet_stream_and_keeps_it_open() {
    let server = TestServer::with(|c| {
        c.ping_interval = 1.into();
        c.ping_timeout = 1.into();
    })
    .await;
    let mut s = Stream::open(&server.http("/sse?channels=quiet"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    let start = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(s.block().await, ": ping");
    }
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "pings come once per interval, not in a burst: {:?}",
        start.elapsed()
    );
    publish(&server, "quiet", "still here").await;
    assert_eq!(messages_until(&mut s, "still here").await.len(), 1);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"sse-secret-of-32-bytes-at-least"),
    )
    .unwrap()
}

// issue #15 item 1: `?token=` with the same grants and access policy as /ws; the origin
// rule of a WebSocket handshake; an expired token ends the stream.
#[tokio::test]
async fn tokens_access_and_origin_are_checked_like_ws() {
    let server = TestServer::with(|c| {
        c.jwt_secret = Some("sse-secret-of-32-bytes-at-least".into());
        c.namespaces = vec![Namespace {
            prefix: "".into(),
            history_size: 0,
            history_ttl: None,
            presence: false,
            anonymous: Access::None,
        }];
    })
    .await;
    let alice = |exp_in: u64| {
        token(json!({"sub": "alice", "exp": now() + exp_in,
                     "channels": {"subscribe": ["news"]}}))
    };
    let (status, body) = refused(&server.http("/sse?channels=news"), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let url = format!("/sse?channels=secret&token={}", alice(60));
    let (status, _) = refused(&server.http(&url), &[]).await;
    assert_eq!(status, 403);
    let (status, body) = refused(&server.http("/sse?channels=news&token=garbage"), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let expired = token(json!({"sub": "alice", "exp": now() - 100,
                               "channels": {"subscribe": ["news"]}}));
    let (status, _) = refused(
        &server.http(&format!("/stream?channels=news&token={expired}")),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = refused(
        &server.http(&format!("/sse?channels=news&token={}", alice(60))),
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "{body}");

    let same = format!("http://{}", server.addr);
    let url = server.http(&format!("/sse?channels=news&token={}", alice(2)));
    let mut s = Stream::open(&url, &[("origin", &same)]).await;
    assert_eq!(
        s.resp.headers()["access-control-allow-origin"],
        same.as_str()
    );
    assert_eq!(s.event().await.event, "subscribed");
    // The token expires in 2 s: the sweeper ends the stream as it closes a WebSocket.
    assert!(s.ended().await, "an expired token ends the stream");
}

// issue #15 item 1: the connection limits and the channel cap of WebSocket clients.
#[tokio::test]
async fn connection_and_channel_limits_are_those_of_websocket_clients() {
    let server = TestServer::with(|c| {
        c.max_connections_per_ip = 2;
        c.max_channels_per_connection = 2;
    })
    .await;
    let (status, body) = refused(&server.http("/sse?channels=a,b,c"), &[]).await;
    assert_eq!(status, 400);
    assert!(
        body.to_string().contains("max_channels_per_connection"),
        "{body}"
    );
    let (_ws, _) = connect(&server.ws("?channels=a")).await;
    let _one = Stream::open(&server.http("/sse?channels=a"), &[]).await;
    let (status, body) = refused(&server.http("/stream?channels=a"), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (429, json!("too_many_connections"))
    );
}

// issue #15 item 1: an operator's kick ends the stream and forgets the client.
#[tokio::test]
async fn a_kicked_stream_ends() {
    let server = TestServer::start().await;
    let mut s = Stream::open(&server.http("/sse?channels=a"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    let resp = reqwest::Client::new()
        .delete(server.http(&format!("/api/clients/{}", s.client)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(s.ended().await);
    let (_, clients) = get(&server.http("/api/clients")).await;
    assert_eq!(
        clients.to_string().matches(&s.client).count(),
        0,
        "{clients}"
    );
}

/// Reads a response head byte by byte (no body byte consumed).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    within("the response head", async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "EOF in the head");
            head.push(b[0]);
        }
    })
    .await;
    String::from_utf8(head).unwrap()
}

/// A raw client of `target` with a 4 KiB receive buffer that reads only the response
/// head. A fresh connection's stream is served on the socket (its body ends with the
/// connection); with `keepalive` a first request (`/healthz`) makes the stream the second
/// request of the connection, which hyper serves (chunked).
async fn stalled(addr: SocketAddr, target: &str, keepalive: bool) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = within("connect", socket.connect(addr)).await.unwrap();
    if keepalive {
        let first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        s.write_all(first).await.unwrap();
        let head = read_head(&mut s).await;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
    }
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        head.contains("transfer-encoding: chunked"),
        keepalive,
        "{head}"
    );
    s
}

/// Reads until EOF or reset; the bytes read.
async fn drain_to_end(s: &mut TcpStream) -> usize {
    let mut total = 0;
    within("the connection to end", async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    total
}

fn big(i: usize) -> String {
    format!("{i:05}:{}", "x".repeat(64 * 1024 - 6))
}

// issue #15 item 1: a client that never reads is cut off by the outbox bound (counted
// as a slow consumer) and its connection closed; what it got is bounded.
#[tokio::test]
async fn a_reader_that_stalls_is_cut_off_as_slow() {
    stalled_reader_is_cut_off(false).await;
}

// The same for a stream served by hyper (the second request of a connection).
#[tokio::test]
async fn a_reader_that_stalls_on_a_reused_connection_is_cut_off_as_slow() {
    stalled_reader_is_cut_off(true).await;
}

async fn stalled_reader_is_cut_off(keepalive: bool) {
    let server = TestServer::with(|c| {
        c.queue_max_bytes = 256 * 1024;
        c.max_message_size = 64 * 1024;
        c.max_publish_size = 128 * 1024;
    })
    .await;
    let mut s = stalled(server.addr, "/sse?channels=burst", keepalive).await;
    let mut published = 0;
    while metric(server.addr, "wspush_disconnected_slow_total").await < 1.0 {
        assert!(
            published < 400,
            "400 x 64 KiB never overflowed a 256 KiB outbox"
        );
        publish(&server, "burst", &big(published)).await;
        published += 1;
    }
    let got = drain_to_end(&mut s).await;
    assert!(
        got < published * 64 * 1024,
        "{got} bytes of {published} messages"
    );
    let (_, clients) = get(&server.http("/api/clients")).await;
    assert_eq!(clients["clients"], json!([]), "{clients}");
}

// issue #15 item 1: a kicked client that does not read loses its connection and its slot
// under the per-IP limit: on its own socket, and served by hyper (which no longer polls
// the body of a client that does not read: `sse::Watch` drops the connection).
#[tokio::test]
async fn a_kicked_client_that_does_not_read_loses_its_connection() {
    kicked_non_reader(false).await;
}

#[tokio::test]
async fn a_kicked_client_that_does_not_read_on_a_reused_connection_loses_it() {
    kicked_non_reader(true).await;
}

async fn kicked_non_reader(keepalive: bool) {
    let server = TestServer::with(|c| {
        c.max_connections_per_ip = 1;
        c.queue_max_bytes = 64 * 1024 * 1024;
        c.max_publish_size = 128 * 1024;
    })
    .await;
    let mut s = stalled(server.addr, "/sse?channels=burst", keepalive).await;
    for i in 0..120 {
        publish(&server, "burst", &big(i)).await;
    }
    let (status, _) = refused(&server.http("/sse?channels=x"), &[]).await;
    assert_eq!(status, 429, "one stream per IP");
    let (_, clients) = get(&server.http("/api/clients")).await;
    let id = clients["clients"][0]["id"].as_str().unwrap().to_string();
    let resp = reqwest::Client::new()
        .delete(server.http(&format!("/api/clients/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    within("the slot to be free again", async {
        loop {
            let resp = reqwest::get(server.http("/stream?channels=x"))
                .await
                .unwrap();
            if resp.status().as_u16() == 200 {
                return;
            }
            assert_eq!(resp.status().as_u16(), 429);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drain_to_end(&mut s).await;
}

// issue #15 item 1: SSE clients of every node get every message (the broker path), and
// resume on another node.
#[tokio::test]
async fn a_cluster_delivers_to_sse_clients_of_every_node() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let node = |url: String| {
        TestServer::with(move |c| {
            c.broker = url;
            history(c, 100);
        })
    };
    let (a, b) = (node(url.clone()).await, node(url).await);
    let mut s = Stream::open(&b.http("/sse?channels=news"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    publish(&a, "news", "from a").await;
    let e = s.event().await;
    assert_eq!((e.event.as_str(), e.data.as_str()), ("message", "from a"));
    let id = e.id.unwrap();
    assert!(id.ends_with(":1:news"), "{id}");
    drop(s);
    publish(&a, "news", "missed 1").await;
    publish(&b, "news", "missed 2").await;
    let mut s = Stream::open(&a.http("/sse?channels=news"), &[("last-event-id", &id)]).await;
    publish(&b, "news", "live").await;
    assert_eq!(
        messages_until(&mut s, "live").await,
        ["missed 1", "missed 2", "live"]
    );
}

// issue #15 item 1: a graceful shutdown ends every stream promptly (as it closes
// WebSocket clients with 1001), instead of waiting out the grace for it.
#[tokio::test]
async fn shutdown_ends_the_streams() {
    let server = TestServer::with(|c| c.shutdown_grace = 30.into()).await;
    let mut s = Stream::open(&server.http("/sse?channels=a"), &[]).await;
    assert_eq!(s.event().await.event, "subscribed");
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(s.ended().await);
}

// issue #15 item 1 (benchmark): `wspush bench idle --sse` holds N event streams open and
// reports the server's RSS per stream.
#[tokio::test]
async fn bench_idle_sse_holds_event_streams() {
    let server = TestServer::start().await;
    let out = within(
        "wspush bench idle --sse",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
            .args([
                "bench",
                "idle",
                "--sse",
                "--connections",
                "50",
                "--settle",
                "0.5",
            ])
            .args(["--server", &server.addr.to_string()])
            .args(["--server-pid", &std::process::id().to_string()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("the JSON line");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["scenario"], "idle-sse", "{v}");
    assert_eq!(
        (v["open"].clone(), v["connect_failed"].clone()),
        (json!(50), json!(0)),
        "{v}"
    );
    assert!(v["kib_per_connection"].is_number(), "{v}");
    // The bench exited: its streams' connections are gone, and so are their clients.
    within("the streams to be forgotten", async {
        loop {
            let (_, clients) = get(&server.http("/api/clients")).await;
            if clients["clients"] == json!([]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
