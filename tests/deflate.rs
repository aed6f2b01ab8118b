//! permessage-deflate (RFC 7692), issue #15 part 2: negotiation, inflating client
//! messages (bounded after inflation), compressed fan-out deflated once per message and
//! window, per-connection contexts, and RSV1 rules. Clients are raw sockets with
//! flate2, so the test sees every header bit on the wire.

mod support;

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::json;
use support::{metric, post, proc_kib, raw, within, Binary, JsonClient, Server, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wspush::config::Compression as Mode;
use wspush::frame::{encode_masked, OP_BINARY, OP_CLOSE, OP_TEXT};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A server with compression on (and `tweak` applied).
async fn server(tweak: impl FnOnce(&mut wspush::config::Config)) -> TestServer {
    TestServer::with(|c| {
        c.compression = Mode::On;
        tweak(c);
    })
    .await
}

/// The `Sec-WebSocket-Extensions` value of a response head.
fn extensions(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_string())
    })
}

/// Upgrades `target` offering `offer` (if any); the stream and the agreed extensions.
async fn upgrade(
    addr: SocketAddr,
    target: &str,
    offer: Option<&str>,
) -> (TcpStream, Option<String>) {
    let extra = offer.map_or(String::new(), |o| {
        format!("Sec-WebSocket-Extensions: {o}\r\n")
    });
    let (s, head) = raw::upgrade(addr, target, &extra).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (s, extensions(&head))
}

/// Raw deflate of one message with a sync flush, the tail left off (RFC 7692 §7.2.1).
fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = c.total_in();
    loop {
        let used = (c.total_in() - start) as usize;
        c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() - start == data.len() as u64 && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity() + 64);
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn deflate_once(data: &[u8]) -> Vec<u8> {
    deflate(&mut Compress::new(Compression::default(), false), data)
}

/// Inflates one message with `d` (which keeps its context across calls).
fn inflate(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 16);
    let start = d.total_in();
    loop {
        let used = (d.total_in() - start) as usize;
        d.decompress_vec(&input[used..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if d.total_in() - start == input.len() as u64 && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A masked client frame; `rsv1` marks a compressed message.
fn client_frame(opcode: u8, payload: &[u8], rsv1: bool, fin: bool) -> Vec<u8> {
    let mut f = encode_masked(opcode, payload, [0x11, 0x22, 0x33, 0x44]);
    if rsv1 {
        f[0] |= 0x40;
    }
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

/// One server frame: first header byte and payload.
async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    within("a frame", async {
        loop {
            if buf.len() >= 2 {
                let (len, at) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => (
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && buf.len() >= at + len {
                    let frame = (buf[0], buf[at..at + len].to_vec());
                    buf.drain(..at + len);
                    return frame;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF before a whole frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
}

/// The close code the server fails the connection with.
async fn close_code(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    loop {
        let (b0, payload) = read_frame(s, &mut buf).await;
        if b0 & 0x0f == OP_CLOSE {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

// issue #15 part 2: offers, parameters and declines, on both WebSocket fronts.
#[tokio::test]
async fn negotiation_follows_the_offer_and_the_settings() {
    let on = server(|c| c.pusher_app = vec!["1:key:secret".into()]).await;
    let cases: [(Option<&str>, Option<&str>); 6] = [
        (None, None),
        (
            Some(OFFER),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"),
        ),
        // Raw deflate has no 8-bit window: that offer is declined, the next one taken.
        (
            Some("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (Some("permessage-deflate; server_max_window_bits=8"), None),
        (Some("permessage-deflate; bogus_param, x-webkit-deflate-frame"), None),
    ];
    for (offer, want) in cases {
        let (_, got) = upgrade(on.addr, "/ws", offer).await;
        assert_eq!(got.as_deref(), want, "offer {offer:?} on /ws");
        let (_, got) = upgrade(on.addr, "/app/key?protocol=7", offer).await;
        assert_eq!(got.as_deref(), want, "offer {offer:?} on the Pusher front");
    }

    // The server's window is capped by its setting; a client may keep its contexts.
    let keep = server(|c| {
        c.server_max_window_bits = 11;
        c.compression_context_takeover = true;
    })
    .await;
    let (_, got) = upgrade(
        keep.addr,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=13"),
    )
    .await;
    assert_eq!(
        got.as_deref(),
        Some("permessage-deflate; server_max_window_bits=11")
    );
    let (_, got) = upgrade(
        keep.addr,
        "/ws",
        Some("permessage-deflate; server_no_context_takeover"),
    )
    .await;
    assert_eq!(
        got.as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );

    // Off (the default): no extension whatever the offer.
    let off = TestServer::start().await;
    let (_, got) = upgrade(off.addr, "/ws", Some(OFFER)).await;
    assert_eq!(got, None);
}

// issue #15 part 2: a compressed (and fragmented) command is inflated and published;
// the reply comes back compressed, a plain subscriber gets the data as published.
#[tokio::test]
async fn a_compressed_client_message_is_inflated_and_published() {
    let server = server(|_| {}).await;
    let mut plain = JsonClient::connect(&server.ws("")).await;
    let reply = plain
        .cmd(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");

    let (mut s, agreed) = upgrade(server.addr, "/ws?protocol=json", Some(OFFER)).await;
    assert!(agreed.is_some());
    let data = json!({"symbol": "ACME", "price": 101.5, "note": "x".repeat(300)});
    let cmd = json!({"id": 7, "op": "publish", "channel": "news", "data": data}).to_string();
    let compressed = deflate_once(cmd.as_bytes());
    assert!(compressed.len() < cmd.len() / 2);
    // Split over a first frame (RSV1) and a continuation (no RSV1).
    let (a, b) = compressed.split_at(compressed.len() / 2);
    s.write_all(&client_frame(OP_TEXT, a, true, false))
        .await
        .unwrap();
    s.write_all(&client_frame(0, b, false, true)).await.unwrap();

    let mut buf = Vec::new();
    let (b0, payload) = read_frame(&mut s, &mut buf).await;
    // A reply too short for deflate to shrink goes plain (RSV1 clear).
    let body = match b0 {
        0xC1 => inflate(&mut Decompress::new(false), &payload),
        0x81 => payload,
        other => panic!("frame header {other:#x}"),
    };
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["ok"], true, "{reply}");
    let push = within("the push", plain.push()).await;
    assert_eq!(push["data"], data);
}

// issue #15 part 2: one publish reaches plain and compressed subscribers (two windows)
// with exactly the published bytes; each window's frame is deflated once.
#[tokio::test]
async fn fan_out_reaches_compressed_and_plain_subscribers_exactly() {
    let server = server(|_| {}).await;
    let target = "/ws?channels=ticker";
    let (mut plain, none) = upgrade(server.addr, target, None).await;
    assert_eq!(none, None);
    let mut wide = Vec::new();
    for _ in 0..3 {
        wide.push(upgrade(server.addr, target, Some(OFFER)).await.0);
    }
    let (mut narrow, agreed) = upgrade(
        server.addr,
        target,
        Some("permessage-deflate; server_max_window_bits=9"),
    )
    .await;
    assert!(agreed.unwrap().contains("server_max_window_bits=9"));

    let data = json!({"rows": (0..40).map(|i| json!({"id": i, "symbol": "ACME", "bid": 100 + i})).collect::<Vec<_>>()});
    let published = data.to_string();
    let (status, body) = post(
        &server.http("/api/publish"),
        json!({"channel": "ticker", "data": data}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (b0, payload) = read_frame(&mut plain, &mut Vec::new()).await;
    assert_eq!((b0, payload), (0x81, published.as_bytes().to_vec()));
    for s in wide.iter_mut().chain([&mut narrow]) {
        let (b0, payload) = read_frame(s, &mut Vec::new()).await;
        assert_eq!(b0, 0xC1, "compressed");
        assert!(
            payload.len() < published.len() / 3,
            "{} bytes",
            payload.len()
        );
        assert_eq!(
            inflate(&mut Decompress::new(false), &payload),
            published.as_bytes()
        );
    }
    // Two windows (15 and 9), four compressed subscribers: two deflates.
    assert_eq!(metric(server.addr, "wspush_deflate_total").await, 2.0);
}

// issue #15 part 2: N subscribers without context takeover cost one deflate per message.
#[tokio::test]
async fn one_deflate_per_message_for_many_subscribers() {
    const SUBSCRIBERS: usize = 50;
    const MESSAGES: usize = 5;
    let server = server(|_| {}).await;
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subs.push(upgrade(server.addr, "/ws?channels=c", Some(OFFER)).await.0);
    }
    for i in 0..MESSAGES {
        support::publish(&server, "c", &format!("message {i} {}", "abc".repeat(50))).await;
    }
    for s in &mut subs {
        let mut buf = Vec::new();
        for i in 0..MESSAGES {
            let (b0, payload) = read_frame(s, &mut buf).await;
            assert_eq!(b0, 0xC1);
            let text = inflate(&mut Decompress::new(false), &payload);
            assert_eq!(text, format!("message {i} {}", "abc".repeat(50)).as_bytes());
        }
    }
    assert_eq!(
        metric(server.addr, "wspush_deflate_total").await,
        MESSAGES as f64
    );
    let delivered = metric(server.addr, "wspush_messages_delivered_total").await;
    assert_eq!(delivered, (SUBSCRIBERS * MESSAGES) as f64);
}

// issue #15 part 2: a client that keeps its context gets its own compressor (a deflate
// per delivery) and frames that only its own running inflater can read.
#[tokio::test]
async fn a_client_keeping_its_context_gets_its_own_compressor() {
    let server = server(|c| c.compression_context_takeover = true).await;
    let (mut a, agreed) = upgrade(server.addr, "/ws?channels=c", Some("permessage-deflate")).await;
    assert_eq!(agreed.as_deref(), Some("permessage-deflate"));
    let (mut b, _) = upgrade(server.addr, "/ws?channels=c", Some("permessage-deflate")).await;
    let text = r#"{"symbol":"ACME","price":101.5,"volume":1200,"exchange":"XNYS"}"#;
    for _ in 0..3 {
        support::publish(&server, "c", text).await;
    }
    for s in [&mut a, &mut b] {
        let (mut buf, mut ctx, mut sizes) = (Vec::new(), Decompress::new(false), Vec::new());
        for _ in 0..3 {
            let (b0, payload) = read_frame(s, &mut buf).await;
            assert_eq!(b0, 0xC1);
            sizes.push(payload.len());
            assert_eq!(inflate(&mut ctx, &payload), text.as_bytes());
        }
        assert!(
            sizes[1] < sizes[0] / 2,
            "the context shrinks repeats: {sizes:?}"
        );
    }
    assert_eq!(metric(server.addr, "wspush_deflate_total").await, 6.0);
    // The client's own context is honoured too: messages compressed with one running
    // compressor are read back in order (raw mode has no echo here; JSON mode replies).
    let (mut j, _) = upgrade(server.addr, "/ws?protocol=json", Some("permessage-deflate")).await;
    let mut ctx = Compress::new(Compression::default(), false);
    for id in 1..=3 {
        let cmd = json!({"id": id, "op": "publish", "channel": "c", "data": text}).to_string();
        j.write_all(&client_frame(
            OP_TEXT,
            &deflate(&mut ctx, cmd.as_bytes()),
            true,
            true,
        ))
        .await
        .unwrap();
    }
    let (mut buf, mut inflater) = (Vec::new(), Decompress::new(false));
    for id in 1..=3 {
        let (b0, payload) = read_frame(&mut j, &mut buf).await;
        let body = if b0 & 0x40 != 0 {
            inflate(&mut inflater, &payload)
        } else {
            payload
        };
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (reply["id"].as_u64(), reply["ok"].as_bool()),
            (Some(id), Some(true)),
            "{reply}"
        );
    }
}

/// `copies` MiB of zeros as one compressed message: the deflate of 1 MiB repeated (each
/// copy ends on a byte-aligned empty stored block, so copies chain).
fn bomb(copies: usize) -> Vec<u8> {
    let mut one = deflate_once(&vec![0u8; 1 << 20]);
    one.extend_from_slice(&TAIL);
    let mut all = one.repeat(copies);
    all.truncate(all.len() - 4);
    all
}

// issue #15 part 2: a compression bomb is cut off at max_message_size after inflation:
// close 1009, and the server's memory stays flat.
#[tokio::test]
async fn a_compression_bomb_gets_1009_and_memory_stays_flat() {
    let mut server =
        Binary::serve(&["--compression", "on", "--upstream", "echo", "--no-console"]).await;
    let pid = server.child.id().unwrap();
    // 512 MiB inflated from about 0.5 MiB on the wire (under the 1 MiB frame limit).
    let bomb = bomb(512);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    // A first, legitimate compressed echo warms the server up.
    let (mut s, agreed) = upgrade(server.addr, "/ws", Some(OFFER)).await;
    assert!(agreed.is_some());
    s.write_all(&client_frame(
        OP_BINARY,
        &deflate_once(b"hello hello hello"),
        true,
        true,
    ))
    .await
    .unwrap();
    let (b0, payload) = read_frame(&mut s, &mut Vec::new()).await;
    assert_eq!(b0, 0xC2);
    assert_eq!(
        inflate(&mut Decompress::new(false), &payload),
        b"hello hello hello"
    );
    let before = proc_kib(pid, "VmRSS:");
    for _ in 0..4 {
        let (mut s, _) = upgrade(server.addr, "/ws", Some(OFFER)).await;
        s.write_all(&client_frame(OP_BINARY, &bomb, true, true))
            .await
            .unwrap();
        assert_eq!(close_code(&mut s).await, 1009);
    }
    let peak = proc_kib(pid, "VmHWM:");
    eprintln!("bomb: RSS {before} KiB before, peak {peak} KiB after 4 x 512 MiB bombs");
    // The inflated output is bounded by max_message_size (1 MiB) per message: the
    // peak stays within a few MiB of the resting size, not hundreds.
    assert!(
        peak < before + 16 * 1024,
        "RSS {before} KiB before, peak {peak} KiB"
    );
    server.child.start_kill().unwrap();
}

// issue #15 part 2: RSV1 where nothing was negotiated stays a protocol error (1002), and
// so does RSV1 on a continuation or a control frame of a compressed connection.
#[tokio::test]
async fn rsv1_without_negotiation_is_a_protocol_error() {
    for mode in [Mode::Off, Mode::On] {
        let server = TestServer::with(|c| c.compression = mode).await;
        let (mut s, agreed) = upgrade(server.addr, "/ws", None).await;
        assert_eq!(agreed, None);
        s.write_all(&client_frame(OP_TEXT, &deflate_once(b"hi"), true, true))
            .await
            .unwrap();
        assert_eq!(close_code(&mut s).await, 1002, "{mode:?}");
    }
    let server = server(|_| {}).await;
    let bad: [Vec<u8>; 2] = [
        [
            client_frame(OP_TEXT, b"a", false, false),
            client_frame(0, b"b", true, true),
        ]
        .concat(),
        client_frame(0x9, b"", true, true),
    ];
    for frames in bad {
        let (mut s, agreed) = upgrade(server.addr, "/ws", Some(OFFER)).await;
        assert!(agreed.is_some());
        s.write_all(&frames).await.unwrap();
        assert_eq!(close_code(&mut s).await, 1002);
    }
}

// issue #15 part 2: the window setting is checked before anything binds (8 cannot be met
// by raw deflate), and names the option.
#[tokio::test]
async fn server_max_window_bits_is_validated() {
    for (bits, ok) in [(8u8, false), (9, true), (15, true), (16, false)] {
        let config = wspush::config::Config {
            compression: Mode::On,
            server_max_window_bits: bits,
            ..Default::default()
        };
        match wspush::setup::build(config) {
            Ok(_) => assert!(ok, "{bits} accepted"),
            Err(e) => {
                assert!(!ok, "{bits} refused: {e}");
                assert!(e.to_string().contains("server-max-window-bits"), "{e}");
            }
        }
    }
}
