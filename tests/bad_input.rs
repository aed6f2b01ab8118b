//! Every bad input gets the exact status or close code, changes nothing, and the server
//! keeps serving others (issue #2).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw_post(url: &str, content_type: &str, body: &'static str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test]
async fn bad_api_calls_get_json_4xx_and_change_nothing() {
    let server = TestServer::with(|c| c.max_body_size = 4096).await;
    let (mut sub, _) = connect(&server.ws("?channels=news")).await;
    let publish_url = server.http("/api/publish");

    let (s, b) = raw_post(&publish_url, "application/json", "{not json").await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = raw_post(&publish_url, "application/json", r#"{"data":"no channel"}"#).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = raw_post(&publish_url, "application/json", r#"{"channel":"news"}"#).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = raw_post(
        &publish_url,
        "application/json",
        r#"{"channel":42,"data":"x"}"#,
    )
    .await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = raw_post(
        &publish_url,
        "text/plain",
        r#"{"channel":"news","data":"x"}"#,
    )
    .await;
    assert_eq!((s, code(&b)), (415, "unsupported_media_type"));
    let (s, b) = post(&publish_url, json!({"channel": "has space", "data": "x"})).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = post(&publish_url, json!({"channel": "*", "data": "x"})).await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = post(
        &publish_url,
        json!({"channel": "news", "data": "x".repeat(5000)}),
    )
    .await;
    assert_eq!((s, code(&b)), (413, "too_large"));
    let (s, b) = post(
        &publish_url,
        json!({"channel": "news", "data_base64": "@@@"}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "bad_request"));

    let (s, b) = post(
        &server.http("/api/send"),
        json!({"client": "c-999999", "data": "x"}),
    )
    .await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = post(
        &server.http("/api/send"),
        json!({"client": "nobody", "data": "x"}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = post(
        &server.http("/api/broadcast"),
        json!({"channels": [], "data": "x"}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let (s, b) = post(
        &server.http("/api/broadcast"),
        json!({"channels": ["ok", "not ok"], "data": "x"}),
    )
    .await;
    assert_eq!((s, code(&b)), (400, "bad_request"));
    let resp = reqwest::Client::new()
        .delete(server.http("/api/clients/c-999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let (s, b) = get(&server.http("/api/nope")).await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, b) = get(&server.http("/api/publish")).await;
    assert_eq!((s, code(&b)), (405, "method_not_allowed"));

    // Nothing was published by any of that: the first good publish is offset 1 and is
    // the first frame the subscriber sees ("ok" from the rejected broadcast got nothing either).
    assert_eq!(publish(&server, "news", "first").await, 1);
    assert_eq!(next_text(&mut sub).await, "first");
    assert_eq!(publish(&server, "ok", "o").await, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let server = TestServer::with(|c| c.api_key = Some("s3cret".into())).await;
    let client = reqwest::Client::new();
    let body = json!({"channel": "news", "data": "x"});
    let url = server.http("/api/publish");
    let resp = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&b), "unauthorized");
    let resp = client
        .post(&url)
        .header("authorization", "apikey wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .post(&url)
        .header("authorization", "apikey s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The key guards /api only: the page and health stay public.
    assert_eq!(get(&server.http("/healthz")).await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_websocket_handshakes_are_rejected() {
    let server = TestServer::with(|c| c.max_connections = 2).await;
    let (s, b) = get(&server.http("/ws")).await;
    assert_eq!((s, code(&b)), (426, "upgrade_required"));
    let err = tokio_tungstenite::connect_async(server.ws("?channels=bad%20name"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let (_a, _) = connect(&server.ws("")).await;
    let (_b, _) = connect(&server.ws("")).await;
    let err = tokio_tungstenite::connect_async(server.ws(""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    server.shutdown().await;
}

/// A raw TCP WebSocket client that completes the handshake and then speaks frames by hand.
async fn raw_ws(server: &TestServer, query: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("handshake", s.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads server frames until a close frame; returns its code.
async fn raw_close_code(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    within("close frame", async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF before a close frame");
            buf.extend_from_slice(&chunk[..n]);
            // Server frames here are small: 2-byte header, length < 126.
            while buf.len() >= 2 && buf.len() >= 2 + (buf[1] & 0x7f) as usize {
                let len = (buf[1] & 0x7f) as usize;
                if buf[0] & 0x0f == 0x8 {
                    return u16::from_be_bytes([buf[2], buf[3]]);
                }
                buf.drain(..2 + len);
            }
        }
    })
    .await
}

#[tokio::test]
async fn protocol_violations_get_the_right_close_codes_and_others_keep_receiving() {
    use wspush::ws::frame::{encode_masked, OP_BINARY, OP_TEXT};
    let server = TestServer::with(|c| c.max_message_size = 1024).await;
    let (mut bystander, _) = connect(&server.ws("?channels=keep")).await;

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "oversize message",
            encode_masked(OP_BINARY, &[7u8; 2000], [1, 2, 3, 4]),
            1009,
        ),
        (
            "invalid utf-8",
            encode_masked(OP_TEXT, &[0xff, 0xfe], [1, 2, 3, 4]),
            1007,
        ),
        (
            "unmasked frame",
            wspush::ws::frame::encode(OP_TEXT, b"hi").to_vec(),
            1002,
        ),
        (
            "reserved opcode",
            encode_masked(0x3, b"", [1, 2, 3, 4]),
            1002,
        ),
        (
            "rsv bit set",
            {
                let mut f = encode_masked(OP_TEXT, b"x", [0; 4]);
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        (
            "continuation without start",
            {
                let mut f = encode_masked(OP_TEXT, b"x", [0; 4]);
                f[0] = 0x80;
                f
            },
            1002,
        ),
        (
            "fragmented ping",
            {
                let mut f = encode_masked(0x9, b"x", [0; 4]);
                f[0] &= 0x7f;
                f
            },
            1002,
        ),
        (
            "close code 999",
            encode_masked(0x8, &999u16.to_be_bytes(), [0; 4]),
            1002,
        ),
    ];
    for (what, frame, expected) in cases {
        let mut s = raw_ws(&server, "").await;
        s.write_all(&frame).await.unwrap();
        assert_eq!(raw_close_code(&mut s).await, expected, "{what}");
        // ...and the server closes the TCP connection.
        let mut rest = [0u8; 64];
        let n = within("EOF", s.read(&mut rest)).await.unwrap_or(0);
        assert_eq!(n, 0, "{what}: connection left open");
    }
    publish(&server, "keep", "still here").await;
    assert_eq!(next_text(&mut bystander).await, "still here");
    server.shutdown().await;
}

#[tokio::test]
async fn ping_pong_fragmentation_and_close_handshake() {
    use wspush::ws::frame::{encode_masked, OP_TEXT};
    let server = TestServer::with(|c| c.upstream = "echo".parse().unwrap()).await;
    let mut s = raw_ws(&server, "").await;
    // A ping is answered with a pong carrying the same payload.
    s.write_all(&encode_masked(0x9, b"are you there", [5, 6, 7, 8]))
        .await
        .unwrap();
    let mut head = [0u8; 15];
    within("pong", s.read_exact(&mut head)).await.unwrap();
    assert_eq!(&head[..2], &[0x8a, 13]);
    assert_eq!(&head[2..], b"are you there");
    // A text message in three fragments, with a ping between them, echoes as one frame.
    let mut first = encode_masked(OP_TEXT, b"frag", [1, 1, 1, 1]);
    first[0] &= 0x7f;
    let mut middle = encode_masked(0x0, b"men", [2, 2, 2, 2]);
    middle[0] &= 0x7f;
    let last = encode_masked(0x0, b"ted", [3, 3, 3, 3]);
    s.write_all(&first).await.unwrap();
    s.write_all(&encode_masked(0x9, b"", [0; 4])).await.unwrap();
    s.write_all(&middle).await.unwrap();
    s.write_all(&last).await.unwrap();
    let mut got = [0u8; 2 + 2 + 10];
    within("pong and echo", s.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got[..2], &[0x8a, 0]);
    assert_eq!(&got[2..4], &[0x81, 10]);
    assert_eq!(&got[4..], b"fragmented");
    // Client-initiated close: the server answers with the same code and closes TCP.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    s.write_all(&encode_masked(0x8, &close, [9, 9, 9, 9]))
        .await
        .unwrap();
    assert_eq!(raw_close_code(&mut s).await, 1000);
    let mut rest = [0u8; 8];
    assert_eq!(within("EOF", s.read(&mut rest)).await.unwrap(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let server = TestServer::with(|c| {
        c.ping_interval = 1.into();
        c.ping_timeout = 1.into();
    })
    .await;
    let mut s = raw_ws(&server, "?channels=quiet").await;
    // The server pings this silent client, then drops it when no pong comes.
    let mut saw_ping = false;
    let gone = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => saw_ping |= buf[..n].windows(2).any(|w| w == [0x89, 0x00]),
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "silent client was not dropped");
    assert!(saw_ping, "no ping was sent before dropping");
    let (_, clients) = get(&server.http("/api/clients")).await;
    assert_eq!(clients["clients"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_keep_up() {
    let server = TestServer::with(|c| {
        c.queue_max_frames = 64;
        c.queue_max_bytes = 1 << 20;
        c.max_message_size = 1 << 20;
    })
    .await;
    let mut slow = raw_ws(&server, "?channels=busy").await;
    let (mut fast, _) = connect(&server.ws("?channels=busy")).await;
    let payload = "p".repeat(16 * 1024);
    let reader = tokio::spawn(async move {
        for _ in 0..1000 {
            assert_eq!(next_text(&mut fast).await.len(), 16 * 1024);
        }
        fast
    });
    for _ in 0..1000 {
        publish(&server, "busy", &payload).await;
    }
    let _fast = within("fast client to get all 1000", reader).await.unwrap();
    // The slow client was disconnected rather than buffered: it is gone from the server.
    within("slow client removal", async {
        loop {
            let (_, clients) = get(&server.http("/api/clients")).await;
            if clients["clients"].as_array().unwrap().len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // What reached it before the cut is a prefix of the stream, then the connection ends.
    let mut sink = vec![0u8; 1 << 16];
    let total = within("slow client EOF", async {
        let mut total = 0usize;
        loop {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        total < 1000 * 16 * 1024,
        "slow client got everything ({total} bytes)"
    );
    server.shutdown().await;
}

/// Regression: pings went out only every `ping_interval` seconds, so a client whose
/// silence began between two of those sweeps reached `interval + timeout` unpinged and
/// was dropped although it answers every ping.
#[tokio::test]
async fn a_client_that_answers_pings_is_never_dropped() {
    let server = TestServer::with(|c| {
        c.ping_interval = 2.into();
        c.ping_timeout = 2.into();
    })
    .await;
    // Connect off the sweep's beat.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (mut ws, _) = connect(&server.ws("?channels=alive")).await;
    // Keep reading (tungstenite answers pings while reading) across several sweeps.
    let mut pings = 0;
    let _ = tokio::time::timeout(Duration::from_secs(9), async {
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut ws).await {
            if matches!(m, tokio_tungstenite::tungstenite::Message::Ping(_)) {
                pings += 1;
            }
        }
    })
    .await;
    assert!(
        pings >= 2,
        "the server pinged the idle client ({pings} pings)"
    );
    publish(&server, "alive", "still connected").await;
    assert_eq!(next_text(&mut ws).await, "still connected");
    server.shutdown().await;
}
