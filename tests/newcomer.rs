//! The first ten minutes (issue #16): the startup banner, refusals that say why and how
//! to fix it (in the log, rate-limited, and in the JSON body), origin rules for pages
//! opened from a file or a dev server, and extra raw-mode paths.

mod support;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A handshake with an `Origin` header: the socket, or the refusal's status and body.
async fn handshake(url: &str, origin: Option<&str>) -> Result<Ws, (u16, serde_json::Value)> {
    let mut req = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match within("a handshake", tokio_tungstenite::connect_async(req)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body)
                .unwrap_or_else(|_| panic!("a JSON body, got {:?}", String::from_utf8_lossy(body)));
            Err((resp.status().as_u16(), json))
        }
        Err(e) => panic!("handshake failed without a response: {e}"),
    }
}

/// A handshake that must be refused: its status and body.
async fn refused(url: &str, origin: Option<&str>) -> (u16, serde_json::Value) {
    match handshake(url, origin).await {
        Ok(_) => panic!("{origin:?} was accepted"),
        Err(refusal) => refusal,
    }
}

fn message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

const NULL_REFUSAL: &str = "refused WebSocket from origin \"null\" (a page opened from a file, \
                            or a sandboxed frame): allow it with --allowed-origins null";

// issue #16 item 2: the banner says where the newcomer is. Before: only
// `listening on http://ADDR` on stdout, nothing on stderr.
#[tokio::test]
async fn the_banner_names_the_urls_and_the_rules() {
    let mut server = Binary::serve_logged(&["--ws-path", "/websocket/demo.php"]).await;
    let a = server.addr;
    for want in [
        format!("  demo page:  http://{a}/"),
        format!("  WebSocket:  ws://{a}/ws  (raw mode"),
        format!("ws://{a}/websocket/demo.php  (raw mode, --ws-path)"),
        format!("  HTTP API:   http://{a}/api/publish  (loopback only: set --api-key"),
        "  origins:    pages of this server's own origin only".to_string(),
        "  broker:     memory".to_string(),
        "  history:    off".to_string(),
        "  console:    on".to_string(),
        "  upstream:   none".to_string(),
    ] {
        let line = server.expect_stderr(|l| l.contains(&want)).await;
        assert!(!line.is_empty());
    }
    let all = server.stderr_now().join("\n");
    assert!(!all.contains("refused"), "{all}");
    let mut server = Binary::serve_logged(&["--api-key", "k", "--no-console"]).await;
    server.expect_stderr(|l| l.contains("apikey KEY")).await;
    server
        .expect_stderr(|l| l == "  console:    off (--no-console)")
        .await;
}

// issue #16 item 1: a page opened from a file (Origin: null) is refused with the reason
// and the fix, in the JSON body and in one warn line. Before: 403 and nothing logged.
#[tokio::test]
async fn a_refused_origin_is_logged_with_its_fix_once_a_minute() {
    let mut server = Binary::serve_logged(&[]).await;
    let url = server.ws("?channels=news");
    let (status, body) = refused(&url, Some("null")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(message(&body), NULL_REFUSAL);
    let line = server
        .expect_stderr(|l| l.contains("refused WebSocket"))
        .await;
    assert!(
        line.contains(" WARN ") && line.contains(NULL_REFUSAL),
        "{line}"
    );
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    // 100 more attempts within the minute: no more lines for that origin.
    for _ in 0..100 {
        let (status, _) = refused(&url, Some("null")).await;
        assert_eq!(status, 403);
    }
    // Another origin is another key: its line comes after everything above.
    let (status, body) = refused(&url, Some("http://localhost:5173")).await;
    assert_eq!(status, 403);
    let dev = message(&body);
    assert!(
        dev.contains(
            "--allowed-origins http://localhost:5173 (or http://localhost:* for any port)"
        ),
        "{dev}"
    );
    let marker = server
        .expect_stderr(|l| l.contains("refused WebSocket"))
        .await;
    assert!(
        marker.contains(&dev),
        "the next refusal line is the other origin's: {marker}"
    );
    assert!(server.stderr_now().iter().all(|l| !l.contains("refused")));

    // A wrong token says what to check, in the body and the log (another key: the peer).
    let mut server = Binary::serve_logged(&["--jwt-secret", &"s".repeat(32)]).await;
    let (status, body) = refused(&server.ws("?token=nope"), None).await;
    assert_eq!(status, 401);
    let text = message(&body);
    assert!(
        text.starts_with("refused WebSocket: invalid token") && text.contains("--jwt-secret"),
        "{text}"
    );
    let line = server
        .expect_stderr(|l| l.contains("refused WebSocket"))
        .await;
    assert!(line.contains(&text), "{line}");
}

// issue #16 item 1: the API's refusals teach too (a forwarded request without a key, a
// wrong key), logged once per client address per minute.
#[tokio::test]
async fn refused_api_calls_are_logged_with_their_fix() {
    let mut server = Binary::serve_logged(&[]).await;
    let http = reqwest::Client::new();
    let url = server.http("/api/channels");
    for _ in 0..5 {
        let resp = http
            .get(&url)
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let body: serde_json::Value = resp.json().await.unwrap();
        let text = message(&body);
        assert!(
            text.starts_with("refused API call /api/channels: without an API key"),
            "{text}"
        );
        assert!(text.contains("--api-key"), "{text}");
    }
    let line = server
        .expect_stderr(|l| l.contains("refused API call"))
        .await;
    assert!(
        line.contains(" WARN ") && line.contains("--api-key"),
        "{line}"
    );

    let mut server = Binary::serve_logged(&["--api-key", "right"]).await;
    let resp = http
        .get(server.http("/api/channels"))
        .header("authorization", "apikey wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    let line = server
        .expect_stderr(|l| l.contains("refused API call"))
        .await;
    assert!(line.contains(&message(&body)), "{line}");
    assert!(message(&body).contains("apikey KEY"));
}

// issue #16 item 1: `null` and host patterns in --allowed-origins.
#[tokio::test]
async fn allowed_origins_take_null_and_patterns() {
    let server = TestServer::with(|c| {
        c.allowed_origins = vec![
            "null".into(),
            "http://localhost:*".into(),
            "https://*.example.com".into(),
        ]
    })
    .await;
    let url = server.ws("");
    for ok in [
        "null",
        "http://localhost:5173",
        "http://localhost:3000",
        "http://localhost",
        "https://app.example.com",
        "https://a.b.example.com",
    ] {
        assert!(handshake(&url, Some(ok)).await.is_ok(), "{ok} is allowed");
    }
    for bad in [
        "https://localhost:5173",
        "http://localhost.evil.com:80",
        "http://evil-localhost:1",
        "https://example.com",
        "https://evilexample.com",
        "http://app.example.com",
    ] {
        let (status, body) = refused(&url, Some(bad)).await;
        assert_eq!(status, 403, "{bad}");
        assert!(
            message(&body).contains("not in --allowed-origins"),
            "{body}"
        );
    }
    server.shutdown().await;
}

// issue #16 item 4: extra paths serve raw mode, so a page written for the old server
// connects unchanged. Before: 404.
#[tokio::test]
async fn ws_paths_serve_raw_mode() {
    let server = TestServer::with(|c| {
        c.ws_paths = vec!["/websocket/demo.php".into(), "/push".into()];
    })
    .await;
    let a = server.addr;
    let (mut old, _) = connect(&format!("ws://{a}/websocket/demo.php?channels=news")).await;
    let (mut other, _) = connect(&format!("ws://{a}/push?channels=news")).await;
    publish(&server, "news", "hello old page").await;
    assert_eq!(next_text(&mut old).await, "hello old page");
    assert_eq!(next_text(&mut other).await, "hello old page");
    old.send(Message::Close(None)).await.unwrap();

    let (status, _) = get(&format!("http://{a}/websocket/other.php")).await;
    assert_eq!(status, 404);
    // A plain GET of the extra path asks for an upgrade, like /ws.
    let (status, _) = get(&format!("http://{a}/push")).await;
    assert_eq!(status, 426);
    server.shutdown().await;

    // Paths that cannot be served are refused at startup (exit 64), naming the option.
    for bad in ["/ws", "no-slash", "/a b", "/api/x", "/{id}"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
            .args(["serve", "--listen", "127.0.0.1:0", "--ws-path", bad])
            .output();
        let out = within("wspush exits", out).await.unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ws-path"), "{bad}: {err}");
    }
}

// issue #16 item 7: docs/configuration.md is generated from the same clap definitions as
// `wspush serve --help`; a stale copy fails here. Regenerate with
// `cargo run -q -- config-reference > docs/configuration.md` (or WSPUSH_BLESS=1).
#[test]
fn the_configuration_reference_is_current() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
        .arg("config-reference")
        .output()
        .unwrap();
    assert!(out.status.success());
    let fresh = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    if std::env::var_os("WSPUSH_BLESS").is_some() {
        std::fs::write(path, &fresh).unwrap();
    }
    let stored = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        stored == fresh,
        "docs/configuration.md is stale: run `cargo run -q -- config-reference > \
         docs/configuration.md`"
    );
    // Every option of --help is in it.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in help.split_whitespace().filter(|w| w.starts_with("--")) {
        let flag = flag.trim_end_matches([',', '.', ')']);
        if flag == "--help" {
            continue;
        }
        assert!(fresh.contains(&format!("`{flag}")), "{flag} is missing");
    }
}

// issue #16 item 7: the example configuration in docs/ is valid as it stands.
#[test]
fn the_example_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/wspush.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wspush"))
        .args(["serve", "--config", path, "--print-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("ws_paths = [\"/websocket/demo.php\"]"),
        "{printed}"
    );
}

// issue #16 item 1: a full server and a forbidden channel say why and what to change.
#[tokio::test]
async fn a_full_server_and_a_forbidden_channel_teach_too() {
    let mut server = Binary::serve_logged(&["--max-connections", "1"]).await;
    let (_first, _) = connect(&server.ws("")).await;
    let (status, body) = refused(&server.ws(""), None).await;
    assert_eq!(status, 503);
    let text = message(&body);
    assert_eq!(
        text,
        "refused WebSocket: the server is full (1 connections, max_connections); raise \
         --max-connections"
    );
    let line = server
        .expect_stderr(|l| l.contains("refused WebSocket"))
        .await;
    assert!(line.contains(&text), "{line}");

    let server = TestServer::with(|c| {
        c.namespaces = vec![wspush::namespace::Namespace {
            prefix: "private:".into(),
            anonymous: wspush::namespace::Access::None,
            ..wspush::namespace::Namespace::fallback()
        }]
    })
    .await;
    let (status, body) = refused(&server.ws("?channels=private:x"), None).await;
    assert_eq!(status, 403);
    let text = message(&body);
    assert!(
        text.starts_with("refused WebSocket: ")
            && text.contains("\"private:x\"")
            && text.contains("grant it in the token's `channels` claim"),
        "{text}"
    );
    server.shutdown().await;
}
