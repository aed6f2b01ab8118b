//! wss:// and https:// end to end on one port, with a self-signed certificate made in
//! the test (issue #4).

mod support;

use std::sync::Arc;

use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server's certificate")
}

#[tokio::test]
async fn wss_and_https_end_to_end() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wspush-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let der = cert.cert.der().clone();

    let server = TestServer::with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
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
    std::fs::remove_dir_all(&dir).unwrap();
}
