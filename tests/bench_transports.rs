//! `wspush bench fanout` over the other transports (issue #15, the benchmark items): SSE
//! and NDJSON subscribers, and WebSocket subscribers with permessage-deflate, against
//! the real server binary. Every run must deliver everything, in order; a compressible
//! payload must take fewer bytes on the wire compressed than plain.

mod support;

use std::process::Stdio;

use serde_json::Value;
use support::{within, Binary};

/// Runs `wspush bench fanout` against `server` with 20 subscribers and 200 messages,
/// plus `extra`; its exit status, stderr and the JSON line (when it printed one).
async fn fanout(server: &Binary, extra: &[&str]) -> (bool, String, Option<Value>) {
    let addr = server.addr.to_string();
    let pid = server.child.id().expect("server running").to_string();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wspush"));
    cmd.args(["bench", "fanout", "--server", &addr, "--server-pid", &pid])
        .args([
            "--connections",
            "20",
            "--messages",
            "200",
            "--publishers",
            "4",
        ])
        .args([
            "--settle",
            "0",
            "--drain-timeout",
            "10",
            "--connect-timeout",
            "10",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within("wspush bench fanout", cmd.output())
        .await
        .expect("wspush bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = stdout
        .lines()
        .last()
        .filter(|l| l.starts_with("{\"scenario\":"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")));
    (out.status.success(), format!("{stderr}{stdout}"), json)
}

/// A run that must have delivered all 20 x 200 messages whole and in order.
async fn delivered_all(server: &Binary, extra: &[&str]) -> Value {
    let (ok, output, json) = fanout(server, extra).await;
    assert!(ok, "wspush bench fanout {extra:?} failed: {output}");
    let v = json.unwrap_or_else(|| panic!("no JSON line: {output}"));
    assert_eq!(v["connections"], 20, "{v}");
    assert_eq!(v["published"], 200, "{v}");
    for (field, want) in [
        ("expected", 4000),
        ("delivered", 4000),
        ("lost", 0),
        ("gaps", 0),
        ("duplicates", 0),
        ("out_of_order", 0),
        ("malformed", 0),
        ("closed", 0),
    ] {
        assert_eq!(v[field], want, "{field} of {extra:?}: {v}");
    }
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_s"].is_number(), "{v}");
    v
}

fn per_delivery(v: &Value) -> f64 {
    v["wire_bytes_per_delivery"].as_f64().expect("a number")
}

// issue #15 (benchmark: fanout 1k over SSE beside WebSocket): SSE and NDJSON subscribers
// get every message, checked for loss, gaps and order as WebSocket ones are, and the
// bytes they read are counted.
#[tokio::test]
async fn fanout_over_sse_and_ndjson_delivers_everything_in_order() {
    let server = Binary::serve(&["--quiet", "--no-console"]).await;
    let ws = delivered_all(&server, &[]).await;
    assert_eq!(ws["transport"], "websocket", "{ws}");
    // A WebSocket delivery of a 128-byte payload: a 4-byte header and the payload.
    assert_eq!(
        per_delivery(&ws),
        132.0,
        "plain WebSocket bytes per delivery: {ws}"
    );
    let sse = delivered_all(&server, &["--sse"]).await;
    assert_eq!(sse["transport"], "sse", "{sse}");
    assert!(per_delivery(&sse) > per_delivery(&ws), "{sse}");
    let ndjson = delivered_all(&server, &["--ndjson"]).await;
    assert_eq!(ndjson["transport"], "ndjson", "{ndjson}");
    assert!(per_delivery(&ndjson) > 128.0, "{ndjson}");
}

// issue #15 (benchmark: fanout 1k with compression, bytes on the wire beside the
// uncompressed figure): subscribers that negotiate permessage-deflate inflate every
// message back to the exact payload, and a compressible payload costs fewer bytes on the
// wire than the plain run's.
#[tokio::test]
async fn compressed_fanout_inflates_everything_in_fewer_bytes() {
    let server = Binary::serve(&["--quiet", "--no-console", "--compression", "on"]).await;
    let plain = delivered_all(&server, &["--payload", "512"]).await;
    assert_eq!(plain["compression"], "off", "{plain}");
    assert_eq!(plain["compressed_messages"], 0, "{plain}");
    let shared = delivered_all(&server, &["--payload", "512", "--compression"]).await;
    assert_eq!(shared["compression"], "shared", "{shared}");
    assert_eq!(shared["deflate_connections"], 20, "{shared}");
    assert_eq!(shared["deflate_context_connections"], 0, "{shared}");
    assert_eq!(shared["compressed_messages"], 4000, "{shared}");
    assert!(
        per_delivery(&shared) < per_delivery(&plain) / 2.0,
        "compressed {} vs plain {} bytes per delivery",
        per_delivery(&shared),
        per_delivery(&plain)
    );
    // Asking for a context: this server keeps none (no --compression-context-takeover)
    // and says so; the run is the same.
    let context = delivered_all(&server, &["--payload", "512", "--compression", "context"]).await;
    assert_eq!(context["deflate_context_connections"], 0, "{context}");
    assert_eq!(context["compressed_messages"], 4000, "{context}");
}

// issue #15: a server that keeps a compression context per connection: the generator
// keeps one inflater per connection and reads every message; the context shrinks the
// similar messages further than the shared frames do.
#[tokio::test]
async fn fanout_with_server_contexts_inflates_in_order() {
    let server = Binary::serve(&[
        "--quiet",
        "--no-console",
        "--compression",
        "on",
        "--compression-context-takeover",
    ])
    .await;
    let shared = delivered_all(&server, &["--compression"]).await;
    let context = delivered_all(&server, &["--compression", "context"]).await;
    assert_eq!(context["deflate_context_connections"], 20, "{context}");
    assert!(
        per_delivery(&context) < per_delivery(&shared),
        "{context} vs {shared}"
    );
}

// issue #15: asking for compression from a server that does not offer it fails plainly
// instead of measuring plain frames as compressed ones.
#[tokio::test]
async fn compression_refused_by_the_server_is_an_error() {
    let server = Binary::serve(&["--quiet", "--no-console"]).await;
    let (ok, output, _) = fanout(&server, &["--compression"]).await;
    assert!(!ok, "{output}");
    assert!(
        output.contains("did not accept permessage-deflate"),
        "{output}"
    );
}
