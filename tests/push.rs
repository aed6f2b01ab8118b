//! Publishing reaches exactly the right raw clients, byte for byte, in order (issue #2).

mod support;

use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn publish_broadcast_and_send_reach_exactly_their_targets() {
    let server = TestServer::start().await;
    let (mut a, _) = connect(&server.ws("?channels=news")).await;
    let (mut b, _) = connect(&server.ws("?channels=news,alerts")).await;
    let (mut c, c_id) = connect(&server.ws("?channels=sports")).await;
    let (mut d, _) = connect(&server.ws("")).await;

    assert_eq!(publish(&server, "news", "n1").await, 1);
    assert_eq!(next_text(&mut a).await, "n1");
    assert_eq!(next_text(&mut b).await, "n1");

    assert_eq!(publish(&server, "sports", "s1").await, 1);
    assert_eq!(next_text(&mut c).await, "s1");
    assert_eq!(publish(&server, "news", "n2").await, 2);
    // a's next frame is n2: s1 never reached it.
    assert_eq!(next_text(&mut a).await, "n2");
    assert_eq!(next_text(&mut b).await, "n2");

    let (status, body) = post(
        &server.http("/api/broadcast"),
        json!({"channels": ["*"], "data": "to all"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for ws in [&mut a, &mut b, &mut c, &mut d] {
        assert_eq!(next_text(ws).await, "to all");
    }

    let (status, body) = post(
        &server.http("/api/send"),
        json!({"client": c_id, "data": "just c"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"delivered": 1})));
    assert_eq!(next_text(&mut c).await, "just c");

    let (status, body) = post(
        &server.http("/api/broadcast"),
        json!({"channels": ["alerts", "sports"], "data": "marker"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"offsets": {"alerts": 1, "sports": 2}}))
    );
    assert_eq!(next_text(&mut b).await, "marker");
    assert_eq!(next_text(&mut c).await, "marker");
    // Neither a (news) nor d (nothing) got "just c" or "marker".
    assert_silent(&mut a, Duration::from_millis(200)).await;
    assert_silent(&mut d, Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn frames_hold_exactly_the_data_text_as_text_binary_as_binary() {
    let server = TestServer::start().await;
    let (mut ws, _) = connect(&server.ws("?channels=bytes")).await;
    let raw = vec![0u8, 1, 2, 255, 254, 0, 10];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let (status, _) = post(
        &server.http("/api/publish"),
        json!({"channel": "bytes", "data_base64": b64}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next_msg(&mut ws).await, Message::Binary(raw.into()));

    post(
        &server.http("/api/publish"),
        json!({"channel": "bytes", "data": {"k": [1, 2]}}),
    )
    .await;
    assert_eq!(next_text(&mut ws).await, r#"{"k":[1,2]}"#);

    let unicode = "ünïcødé ✓ \u{1F600}";
    publish(&server, "bytes", unicode).await;
    assert_eq!(next_text(&mut ws).await, unicode);

    let big = "x".repeat(200_000);
    publish(&server, "bytes", &big).await;
    assert_eq!(next_text(&mut ws).await, big);
    server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_clients_each_get_a_hundred_messages_in_order() {
    const CLIENTS: usize = 1000;
    const MESSAGES: usize = 100;
    let server = TestServer::start().await;
    let url = server.ws("?channels=load");
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(connect(&url).await.0);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(MESSAGES);
                while got.len() < MESSAGES {
                    match tokio::time::timeout(WAIT * 3, ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => got.push(t.as_str().to_string()),
                        Ok(Some(Ok(_))) => {}
                        other => panic!("after {} messages: {other:?}", got.len()),
                    }
                }
                // Nothing extra (no duplicates) once the last one arrived.
                assert_silent(&mut ws, Duration::from_millis(100)).await;
                got
            })
        })
        .collect();
    for i in 0..MESSAGES {
        assert_eq!(
            publish(&server, "load", &format!("m{i}")).await,
            i as u64 + 1
        );
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), expected);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_every_frame_whole_when_it_reads_again() {
    // 200 x 32 KiB (6.4 MB, inside the 8 MiB outbox bound) to a client that reads
    // nothing meanwhile: the socket backs up in the middle of frames, the fan-out flusher
    // hands over to the session, which finishes them; a reading client is not held up.
    const MESSAGES: usize = 200;
    let server = TestServer::start().await;
    // A small receive buffer, so the server's writes stop part-way through frames.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(
        server.ws("?channels=burst"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let (mut reader, _) = connect(&server.ws("?channels=burst")).await;
    let body = |i: usize| format!("{i:05}:{}", "x".repeat(32 * 1024 - 6));
    let reading = tokio::spawn(async move {
        for i in 0..MESSAGES {
            assert_eq!(next_text(&mut reader).await, body(i), "reader, message {i}");
        }
        reader
    });
    for i in 0..MESSAGES {
        publish(&server, "burst", &body(i)).await;
    }
    let _reader = within("the reading client got all", reading).await.unwrap();
    for i in 0..MESSAGES {
        let got = next_text(&mut stalled).await;
        assert_eq!(got.len(), 32 * 1024, "message {i} whole");
        assert_eq!(got, body(i), "message {i} in order");
    }
    assert_silent(&mut stalled, Duration::from_millis(100)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_1001_to_every_client() {
    let server = TestServer::start().await;
    let (mut a, _) = connect(&server.ws("?channels=x")).await;
    let (mut b, _) = connect(&server.ws("")).await;
    publish(&server, "x", "before").await;
    assert_eq!(next_text(&mut a).await, "before");
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    within("shutdown", stopping).await.unwrap();
}
