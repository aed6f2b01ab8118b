//! Config validated once into the runtime objects the server uses (issue #13 item 5):
//! `setup::build` reads the key and certificate files and builds the verifier, the apps
//! and the TLS acceptor once, before anything binds; the server serves with exactly
//! those; a bad value exits 64 naming its key.

mod support;

use futures_util::StreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use support::*;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use wspush::config::Config;
use wspush::server::{self, ConsoleMode};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

// issue #13 item 5: every option that needs building is checked by `setup::build`, with
// its key named and exit code 64, and before the listener binds: the port given here is
// taken, so a server that bound first would fail with "cannot listen" (exit 1) instead.
#[tokio::test]
async fn bad_runtime_options_exit_64_naming_the_key_before_binding() {
    let cert = TestCert::localhost("setup-bad");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let rsa = format!("{FIXTURES}/rsa-public.pem");
    let ec = format!("{FIXTURES}/ec-public.pem");
    let missing = path(&cert.dir.join("missing.pem"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                missing.clone(),
                "--tls-key".into(),
                path(&cert.key),
            ],
            "invalid value for tls_cert",
        ),
        (
            // The certificate given as its own key: no private key in it.
            vec![
                "--tls-cert".into(),
                path(&cert.cert),
                "--tls-key".into(),
                path(&cert.cert),
            ],
            "invalid value for tls_key",
        ),
        (
            vec!["--jwt-secret".into(), "short".into()],
            "invalid value for jwt_secret",
        ),
        (
            vec!["--jwt-public-key".into(), missing.clone()],
            "invalid value for jwt_public_key",
        ),
        (
            vec![
                "--jwt-public-key".into(),
                rsa.clone(),
                "--jwt-algorithm".into(),
                "HS512".into(),
            ],
            "invalid value for jwt_algorithm",
        ),
        (
            vec![
                "--jwt-public-key".into(),
                ec,
                "--jwt-algorithm".into(),
                "RS256".into(),
            ],
            "invalid value for jwt_public_key",
        ),
        (
            vec![
                "--jwt-public-key".into(),
                rsa,
                "--jwt-secret".into(),
                "x".repeat(32),
            ],
            "invalid value for jwt_secret/jwt_public_key",
        ),
        (
            vec!["--trusted-proxies".into(), "not-an-address".into()],
            "invalid value for trusted-proxies",
        ),
        (
            vec!["--pusher-app".into(), "nope".into()],
            "invalid value for pusher-app",
        ),
        (
            vec!["--pusher-app".into(), "1:k:s 2:k:s".into()],
            "invalid value for apps: app key \"k\" is configured twice",
        ),
        (
            // --print-config checks everything too.
            vec![
                "--tls-cert".into(),
                missing,
                "--tls-key".into(),
                path(&cert.key),
                "--print-config".into(),
            ],
            "invalid value for tls_cert",
        ),
    ];
    for (args, expected) in cases {
        let out = within(
            "wspush serve to exit",
            tokio::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
                .args(["serve", "--no-console", "--listen", &listen])
                .args(&args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: printed {:?}", out.stdout);
    }
    drop(taken);
}

// issue #13 item 5: the server runs on what `setup::build` made, and reads no file
// again: the certificate, its key and the JWT public key are deleted between `build` and
// `server::run`, and wss:// with an RS256 token still works (before, `server::run`
// built the acceptor and verifier a second time from the paths).
#[tokio::test]
async fn server_serves_with_what_build_made_and_reads_no_file_again() {
    let cert = TestCert::localhost("setup-once");
    let public = cert.dir.join("rsa-public.pem");
    std::fs::copy(format!("{FIXTURES}/rsa-public.pem"), &public).unwrap();
    let config = Config {
        tls_cert: Some(cert.cert.clone()),
        tls_key: Some(cert.key.clone()),
        jwt_public_key: Some(public.clone()),
        jwt_algorithm: "RS256".into(),
        pusher_app: vec!["1:once-key:once-secret".into()],
        ..Config::default()
    };
    let runtime = wspush::setup::build(config).expect("valid config");
    assert!(runtime.tls.is_some() && runtime.verifier.is_some());
    for file in [&cert.cert, &cert.key, &public] {
        std::fs::remove_file(file).unwrap();
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, runtime, ConsoleMode::Off, async {
        let _ = stopped.await;
    }));

    let private = std::fs::read(format!("{FIXTURES}/rsa-private.pem")).unwrap();
    let exp = jsonwebtoken::get_current_timestamp() + 60;
    let token = encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "alice", "exp": exp, "channels": ["news"]}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let tls = within("TLS handshake", tls_connect(addr, &cert.der)).await;
    let url = format!(
        "wss://localhost:{}/ws?channels=news&token={token}",
        addr.port()
    );
    let (mut ws, resp) = within("wss handshake", tokio_tungstenite::client_async(url, tls))
        .await
        .expect("wss with an RS256 token is accepted");
    assert_eq!(resp.status(), 101);

    // The Pusher app of the runtime is served too.
    let tls = within("TLS handshake", tls_connect(addr, &cert.der)).await;
    let url = format!("wss://localhost:{}/app/once-key?protocol=7", addr.port());
    let (mut pusher, _) = within(
        "pusher handshake",
        tokio_tungstenite::client_async(url, tls),
    )
    .await
    .unwrap();
    match within("pusher:connection_established", pusher.next()).await {
        Some(Ok(Message::Text(t))) => {
            assert!(t.contains("pusher:connection_established"), "{t}")
        }
        other => panic!("{other:?}"),
    }

    // The token's session lives until the shutdown closes it (1001).
    let _ = stop.send(());
    match within("close frame", ws.next()).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop((ws, pusher));
    within("server shutdown", task).await.unwrap().unwrap();
}
