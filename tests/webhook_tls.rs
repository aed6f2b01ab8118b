//! https:// webhooks: the upstream webhook and a Pusher app's webhooks reach a TLS
//! receiver whose certificate the server trusts through `SSL_CERT_FILE` (the system CA
//! store's override, as for any private CA). Its own test binary: it sets that variable.

mod support;

use futures_util::SinkExt;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wspush::pusher::apps::{parse_flag, Webhook};
use wspush::pusher::auth;

/// One request as the receiver saw it: path, headers (lower-cased names), body.
type Request = (String, Vec<(String, String)>, String);

/// An https:// receiver on 127.0.0.1 with a certificate for `localhost`, trusted by
/// the server under test through SSL_CERT_FILE. Answers every POST with `reply`.
async fn tls_receiver(reply: &'static str) -> (u16, mpsc::UnboundedReceiver<Request>) {
    let cert = TestCert::localhost("webhook-tls");
    // Read when the server builds its HTTP clients (after this, before it starts).
    std::env::set_var("SSL_CERT_FILE", &cert.cert);
    let acceptor = wspush::tls::acceptor(&cert.cert, &cert.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _cert = cert; // its files live as long as the receiver
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // One request per connection (the answer says `connection: close`).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end - 4]).to_string();
                let mut lines = head.lines();
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or_default()
                    .to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
                let _ = tx.send((path, headers, body));
            });
        }
    });
    (port, rx)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn https_webhooks_reach_a_tls_receiver() {
    let (port, mut requests) = tls_receiver(r#"{"reply":"from the backend"}"#).await;
    let server = TestServer::with(|c| {
        c.upstream = format!("webhook:https://localhost:{port}/upstream")
            .parse()
            .unwrap();
        let mut app = parse_flag("7:tls-key:tls-secret").unwrap();
        app.webhooks = vec![Webhook {
            url: format!("https://localhost:{port}/pusher"),
            events: vec!["channel_occupied".into()],
            batch_ms: 0.into(),
        }];
        c.apps = vec![app];
    })
    .await;

    // The upstream webhook: a client's message is POSTed over TLS, the answer comes back.
    let (mut ws, _) = connect(&server.ws("")).await;
    send_text(&mut ws, "hello backend").await;
    let (path, _, body) = within("the upstream webhook", requests.recv())
        .await
        .unwrap();
    assert_eq!(path, "/upstream");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["data"], "hello backend");
    assert_eq!(next_text(&mut ws).await, "from the backend");

    // A Pusher app's webhook: the first subscriber of a channel occupies it.
    let url = format!("ws://{}/app/tls-key?protocol=7", server.addr);
    let (mut pusher, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let established = next_text(&mut pusher).await;
    assert!(
        established.contains("pusher:connection_established"),
        "{established}"
    );
    pusher
        .send(Message::text(
            json!({"event": "pusher:subscribe", "data": {"channel": "orders"}}).to_string(),
        ))
        .await
        .unwrap();
    let (path, headers, body) = within("the Pusher webhook", requests.recv()).await.unwrap();
    assert_eq!(path, "/pusher");
    assert_eq!(header(&headers, "x-pusher-key"), "tls-key");
    assert_eq!(
        header(&headers, "x-pusher-signature"),
        auth::sign("tls-secret", body.as_bytes())
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["events"][0]["name"], "channel_occupied");
    assert_eq!(body["events"][0]["channel"], "orders");
    server.shutdown().await;
}
