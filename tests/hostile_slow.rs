//! Issue #12 item 8: a client that stops reading until its outbox overflows gets a
//! well-formed stream: whole frames, then a close frame 1013 it has time to read, then
//! the connection ends. Against the built binary, with a raw TCP client.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Payload of each published message.
const PAYLOAD: usize = 64 * 1024;
/// Most messages published while waiting for the overflow.
const MAX_PUBLISHES: usize = 300;

const HANDSHAKE: &[u8] = b"GET /ws?channels=burst HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw WebSocket client with a 4 KiB receive buffer, subscribed to `burst`; the
/// response head is read byte by byte so no frame byte is consumed.
async fn stalled_client(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = within("connect", socket.connect(addr)).await.unwrap();
    s.write_all(HANDSHAKE).await.unwrap();
    let mut head = Vec::new();
    within("the 101 response", async {
        while !head.ends_with(b"\r\n\r\n") {
            assert!(head.len() < 4096, "response head too long");
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "EOF in the response head");
            head.push(b[0]);
        }
    })
    .await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    s
}

fn body(i: usize) -> String {
    format!("{i:05}:{}", "x".repeat(PAYLOAD - 6))
}

/// One server frame: first byte (FIN, RSV, opcode) and payload.
struct Frame {
    head: u8,
    payload: Vec<u8>,
}

/// Parses the whole frames at the start of `buf`; returns them and the bytes used.
fn parse(buf: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            break;
        }
        assert_eq!(rest[1] & 0x80, 0, "server frames are not masked");
        let (len, hdr) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (
                u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        assert!(len <= 1 << 20, "frame length {len} is garbage");
        if rest.len() < hdr + len {
            break;
        }
        frames.push(Frame {
            head: rest[0],
            payload: rest[hdr..hdr + len].to_vec(),
        });
        at += hdr + len;
    }
    (frames, at)
}

async fn slow_count(addr: SocketAddr) -> f64 {
    metric(addr, "wspush_disconnected_slow_total").await
}

/// Publishes distinct 64 KiB messages to `burst` until the server has cut a client
/// off as slow; the number published.
async fn publish_until_overflow(addr: SocketAddr) -> usize {
    let http = reqwest::Client::new();
    let api = format!("http://{addr}/api/publish");
    for i in 0..MAX_PUBLISHES {
        let r = within(
            "publish",
            http.post(&api)
                .json(&serde_json::json!({"channel": "burst", "data": body(i)}))
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        if i % 2 == 1 && slow_count(addr).await >= 1.0 {
            return i + 1;
        }
    }
    panic!("{MAX_PUBLISHES} x 64 KiB never overflowed a 256 KiB outbox");
}

// issue #12 item 8
#[tokio::test]
async fn a_slow_consumer_gets_whole_frames_then_close_1013() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--queue-max-bytes",
        "262144",
        "--max-message-size",
        "65536",
    ])
    .await;
    let mut client = stalled_client(server.addr).await;
    let published = publish_until_overflow(server.addr).await;

    // Now read everything the server sends, until its close frame (or EOF).
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (frames, used) = within("the close frame", async {
        loop {
            let (frames, used) = parse(&buf);
            if frames.last().is_some_and(|f| f.head & 0x0f == 0x8) {
                return (frames, used);
            }
            let n = client.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                let (frames, used) = parse(&buf);
                panic!(
                    "EOF without a close frame: {} whole frames, then {} bytes of a cut frame \
                     (first bytes {:02x?})",
                    frames.len(),
                    buf.len() - used,
                    &buf[used..(used + 4).min(buf.len())]
                );
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert_eq!(used, buf.len(), "nothing follows the close frame");
    let (close, data) = frames.split_last().unwrap();
    eprintln!(
        "published {published}, received {} whole frames then close",
        data.len()
    );
    for (i, f) in data.iter().enumerate() {
        assert_eq!(f.head, 0x81, "frame {i} is a final text frame");
        assert_eq!(f.payload.len(), PAYLOAD, "frame {i} whole");
        assert!(f.payload == body(i).as_bytes(), "frame {i} in order");
    }
    assert!(data.len() < published, "the overflow dropped the rest");
    assert_eq!(close.head, 0x88, "a final close frame");
    assert!(close.payload.len() >= 2);
    let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
    assert_eq!(code, 1013, "close code");
    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());

    // Answer the close (masked, empty mask): the server drops the connection.
    client
        .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .await
        .unwrap();
    let rest = within("EOF after the close handshake", async {
        let mut rest = 0;
        loop {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return rest,
                Ok(n) => rest += n,
            }
        }
    })
    .await;
    assert_eq!(rest, 0, "no bytes after the close frame");
}

// issue #12 item 8: the grace period is configurable and bounds how long a client that
// never reads again keeps its connection.
#[tokio::test]
async fn a_slow_consumer_that_never_reads_is_dropped_after_the_grace() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--queue-max-bytes",
        "262144",
        "--max-message-size",
        "65536",
        "--slow-close-grace",
        "1",
    ])
    .await;
    let _client = stalled_client(server.addr).await;
    publish_until_overflow(server.addr).await;
    let cut = Instant::now();
    within("the connection to be dropped", async {
        while metric(server.addr, "wspush_connections_raw").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let took = cut.elapsed();
    eprintln!("dropped {took:?} after the overflow");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "dropped after {took:?}, not after the 1 s grace"
    );
}
