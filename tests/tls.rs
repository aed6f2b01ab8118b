//! wss:// and https:// end to end on one port, with a self-signed certificate made in
//! the test (issue #4).

mod support;

use futures_util::StreamExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_and_https_end_to_end() {
    let cert = TestCert::localhost("tls");
    let der = cert.der.clone();

    let server = TestServer::with(|c| {
        c.tls_cert = Some(cert.cert.clone());
        c.tls_key = Some(cert.key.clone());
    })
    .await;
    let port = server.addr.port();

    // wss:// subscriber.
    let tls = tls_connect(server.addr, &der).await;
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws?channels=secure"), tls)
            .await
            .unwrap();
    assert!(resp.headers().contains_key("x-wspush-client"));

    // https:// publish on the same port.
    let mut https = tls_connect(server.addr, &der).await;
    let body = r#"{"channel":"secure","data":"over tls"}"#;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    https.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within("https answer", https.read_to_string(&mut answer))
        .await
        .ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"offset":1}"#), "{answer}");

    match within("wss message", ws.next()).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "over tls"),
        other => panic!("{other:?}"),
    }
    // Plain ws:// to a TLS port does not get a WebSocket.
    assert!(tokio_tungstenite::connect_async(server.ws(""))
        .await
        .is_err());
    server.shutdown().await;
}
