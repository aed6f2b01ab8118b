//! Tests of the generator's WebSocket client: frame parsing, URLs, source addresses.

use super::*;

fn frames(bytes: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut reader = Reader::default();
    let mut got = Vec::new();
    for piece in bytes.chunks(chunk) {
        reader
            .feed(piece, &mut |e| {
                if let Event::Message(d) = e {
                    got.push(d.to_vec())
                }
            })
            .unwrap();
    }
    assert!(reader.partial.is_empty());
    got
}

#[test]
fn parses_many_frames_split_anywhere() {
    let small = vec![b'a'; 100];
    let mid = vec![b'b'; 300];
    let big = vec![b'c'; 70_000];
    let mut stream = Vec::new();
    for p in [&small, &mid, &big, &small] {
        stream.extend_from_slice(&frame::encode(frame::OP_TEXT, p));
    }
    for chunk in [1, 2, 3, 7, 128, 1000, stream.len()] {
        assert_eq!(
            frames(&stream, chunk),
            vec![small.clone(), mid.clone(), big.clone(), small.clone()]
        );
    }
}

#[test]
fn assembles_fragments_and_reports_ping_and_close() {
    let mut first = frame::encode(frame::OP_TEXT, b"hel").to_vec();
    first[0] &= 0x7f;
    let mut stream = first;
    stream.extend_from_slice(&frame::encode(frame::OP_PING, b"p"));
    stream.extend_from_slice(&frame::encode(0, b"lo"));
    stream.extend_from_slice(&frame::close(1001, "bye"));
    let mut events = Vec::new();
    Reader::default()
        .feed(&stream, &mut |e| {
            events.push(match e {
                Event::Message(d) => format!("msg {}", String::from_utf8_lossy(d)),
                Event::Ping(d) => format!("ping {}", String::from_utf8_lossy(d)),
                Event::Close => "close".into(),
            })
        })
        .unwrap();
    assert_eq!(events, ["ping p", "msg hello", "close"]);
}

#[test]
fn rejects_masked_server_frames() {
    let masked = frame::encode_masked(frame::OP_TEXT, b"x", [1, 2, 3, 4]);
    assert!(Reader::default().feed(&masked, &mut |_| {}).is_err());
}

#[tokio::test]
async fn parses_urls() {
    let u = Url::parse("ws://127.0.0.1:9001/ws?channels=a", "ws")
        .await
        .unwrap();
    assert_eq!(
        (u.host.as_str(), u.path.as_str()),
        ("127.0.0.1:9001", "/ws?channels=a")
    );
    assert_eq!(u.addr.port(), 9001);
    let u = Url::parse("http://127.0.0.1:9?x", "http").await.unwrap();
    assert_eq!(u.path, "/?x");
    assert!(Url::parse("wss://x/", "http").await.is_err());
    let u = Url::parse("wss://127.0.0.1/ws", "ws").await.unwrap();
    assert!(u.tls && u.addr.port() == 443);
    assert!(!Url::parse("ws://127.0.0.1:1/", "ws").await.unwrap().tls);
}

#[test]
fn sources_spread_over_loopback() {
    assert_eq!(source(5, 1), None);
    assert_eq!(source(0, 4), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(source(6, 4), Some(Ipv4Addr::new(127, 0, 0, 3)));
}
