//! Raw TCP WebSocket clients for attack tests: the handshake and frames written by hand,
//! so a test can send what no well-behaved library would.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// Sends an upgrade request for `target` (path and query) with `extra` header lines;
/// returns the stream and the response head.
pub async fn upgrade(addr: SocketAddr, target: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match within("a response head", s.read(&mut byte)).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// An upgraded raw connection (asserts the 101).
pub async fn connect(addr: SocketAddr, target: &str) -> TcpStream {
    let (s, head) = upgrade(addr, target, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// One server frame: opcode and payload.
pub type Frame = (u8, Vec<u8>);

/// Reads whole server frames until a close frame or EOF; every frame must be well formed
/// (unmasked, final, a length the stream holds). The frames, and the close code if any.
pub async fn read_to_close(s: &mut TcpStream) -> (Vec<Frame>, Option<u16>) {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    within("the server's close", async {
        loop {
            while let Some((frame, used)) = parse(&buf) {
                buf.drain(..used);
                if frame.0 == 0x8 {
                    let code =
                        (frame.1.len() >= 2).then(|| u16::from_be_bytes([frame.1[0], frame.1[1]]));
                    return (frames, code);
                }
                frames.push(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    assert!(
                        buf.is_empty(),
                        "the stream ends inside a frame ({} bytes)",
                        buf.len()
                    );
                    return (frames, None);
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

/// Parses one unmasked server frame from the start of `buf`.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[0] & 0x70, 0, "RSV bits set");
    assert_eq!(buf[1] & 0x80, 0, "a masked server frame");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    Some(((buf[0] & 0x0f, buf[at..at + len].to_vec()), at + len))
}
