//! CORS on the HTTP surface (issue #14 item 1): browser code on other origins calls
//! `GET /`, `/healthz` and the signed Pusher API; preflights are answered with 204; the
//! native API and `/metrics`, which trust loopback callers, are open only to origins
//! listed by name.

mod support;

use reqwest::header::HeaderMap;
use support::*;

const APP: &str = "1:app-key:app-secret";

/// `method path` with headers `extra`; status and response headers.
async fn call(
    server: &impl Server,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, HeaderMap) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), server.http(path));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = within("HTTP request", req.send()).await.unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

const FROM: (&str, &str) = ("origin", "https://elsewhere.example");

// issue #14 item 1: the default allows any origin on the public surface and the signed
// Pusher API; preflights get 204 with the methods and headers; 404s carry the headers.
#[tokio::test]
async fn any_origin_may_call_the_public_surface_and_the_pusher_api() {
    let server = Binary::serve(&["--pusher-app", APP]).await;
    for path in ["/", "/healthz", "/no/such/route", "/apps/1/channels"] {
        let (status, h) = call(&server, "GET", path, &[FROM]).await;
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("*"),
            "GET {path} ({status})"
        );
    }
    let (status, _) = call(&server, "GET", "/no/such/route", &[FROM]).await;
    assert_eq!(status, 404);
    let preflight = [
        FROM,
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type,x-pusher-library",
        ),
    ];
    for path in [
        "/apps/1/events",
        "/apps/1/batch_events",
        "/healthz",
        "/nowhere",
    ] {
        let (status, h) = call(&server, "OPTIONS", path, &preflight).await;
        assert_eq!(status, 204, "OPTIONS {path}");
        assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
        let methods = header(&h, "access-control-allow-methods").unwrap_or_default();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let headers = header(&h, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("content-type") && headers.contains("x-pusher-library"),
            "{headers}"
        );
    }
    // The native API trusts loopback callers: a page on any origin must not read it.
    for path in ["/api/channels", "/metrics"] {
        let (_, h) = call(&server, "GET", path, &[FROM]).await;
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            None,
            "GET {path}"
        );
    }
}

// issue #14 item 1: a configured list: only those origins, echoed with Vary: Origin;
// the native API opens to a listed origin; an empty value turns CORS off.
#[tokio::test]
async fn configured_origins_are_the_only_ones_allowed() {
    let server = Binary::serve(&[
        "--pusher-app",
        APP,
        "--cors-allowed-origins",
        "https://app.example,https://admin.example",
    ])
    .await;
    let (_, h) = call(&server, "GET", "/healthz", &[FROM]).await;
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    let listed = ("origin", "https://admin.example");
    for path in ["/healthz", "/apps/1/channels", "/api/channels"] {
        let (_, h) = call(&server, "GET", path, &[listed]).await;
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://admin.example"),
            "{path}"
        );
        assert!(header(&h, "vary")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("origin"));
    }
    let off = Binary::serve(&["--cors-allowed-origins", ""]).await;
    let (_, h) = call(&off, "GET", "/healthz", &[FROM]).await;
    assert_eq!(header(&h, "access-control-allow-origin"), None);
}
