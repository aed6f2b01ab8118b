//! issue #18: the honest benchmark instrument (item 1) and memory after traffic
//! (item 4), run end to end: the real server binary, `wspush bench` as a child process.

mod support;

use serde_json::Value;
use support::{within, Binary};

const BIN: &str = env!("CARGO_BIN_EXE_wspush");

/// Runs `wspush bench ARGS` (bounded) and parses its last line as JSON.
async fn bench(args: &[&str]) -> Value {
    let out = within(
        "wspush bench",
        tokio::process::Command::new(BIN)
            .arg("bench")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("wspush bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wspush bench {args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// issue #18 item 1: a fixed-rate run states its target and achieved rate, times
// latency from the intended send, checks every subscriber for gaps, duplicates and
// reordering, and splits the server CPU into user, system and softirq on its core.
#[tokio::test]
async fn a_fixed_rate_run_reports_rate_checks_and_the_cpu_split() {
    let server = Binary::serve(&["--quiet", "--no-console"]).await;
    let addr = server.addr.to_string();
    let pid = server.child.id().unwrap().to_string();
    let v = bench(&[
        "fanout",
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--server-cpu",
        "0",
        "--connections",
        "20",
        "--rate",
        "200",
        "--messages",
        "100",
        "--publishers",
        "4",
        "--settle",
        "0.2",
    ])
    .await;
    assert_eq!(v["target_rate"], 200.0);
    assert_eq!(v["latency_from"], "intended");
    assert_eq!(v["published"], 100);
    assert_eq!(v["delivered"], 2000);
    for zero in [
        "lost",
        "gaps",
        "subscribers_with_gaps",
        "duplicates",
        "out_of_order",
    ] {
        assert_eq!(v[zero], 0, "{zero}: {v}");
    }
    let achieved = v["achieved_rate"].as_f64().unwrap();
    assert!(achieved > 0.0 && achieved < 260.0, "{v}");
    assert_eq!(v["rate_missed"], achieved < 190.0, "{v}");
    assert!(v["send_lag_us"]["p99"].is_number(), "{v}");
    assert_eq!(v["server_core"], 0);
    assert_eq!(v["softirq_charged_to_server"], true);
    for f in [
        "server_user_s",
        "server_system_s",
        "server_core_softirq_s",
        "server_cpu_s",
        "server_cpu_without_softirq_s",
    ] {
        assert!(v[f].as_f64().is_some_and(|x| x >= 0.0), "{f}: {v}");
    }
    let with = v["server_cpu_s"].as_f64().unwrap();
    let without = v["server_cpu_without_softirq_s"].as_f64().unwrap();
    let soft = v["server_core_softirq_s"].as_f64().unwrap();
    assert!((with - without - soft.min(with)).abs() < 0.011, "{v}");
}

// issue #18 item 1: a rate the publishers cannot keep is reported as missed (one
// publisher, a rate far above what one request at a time can do on a debug build).
#[tokio::test]
async fn a_run_that_cannot_keep_its_rate_says_it_missed() {
    let server = Binary::serve(&["--quiet", "--no-console"]).await;
    let addr = server.addr.to_string();
    let v = bench(&[
        "fanout",
        "--server",
        &addr,
        "--connections",
        "1",
        "--rate",
        "1000000",
        "--messages",
        "3000",
        "--publishers",
        "1",
        "--settle",
        "0.1",
    ])
    .await;
    assert_eq!(v["rate_missed"], true, "{v}");
    assert!(v["achieved_rate"].as_f64().unwrap() < 500_000.0, "{v}");
    assert_eq!(v["gaps"], 0, "{v}");
}

// issue #18 item 4: `idle --messages` measures the idle memory, then the memory of the
// same connections after they received traffic and went idle again.
#[tokio::test]
async fn idle_with_traffic_measures_memory_before_and_after() {
    let server = Binary::serve(&["--quiet", "--no-console"]).await;
    let addr = server.addr.to_string();
    let pid = server.child.id().unwrap().to_string();
    let v = bench(&[
        "idle",
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--connections",
        "50",
        "--settle",
        "0.2",
        "--messages",
        "20",
        "--rate",
        "max",
    ])
    .await;
    assert_eq!(v["open"], 50, "{v}");
    assert_eq!(v["traffic_published"], 20, "{v}");
    assert_eq!(v["traffic_expected"], 1000, "{v}");
    assert_eq!(v["traffic_delivered"], 1000, "{v}");
    assert!(v["kib_per_connection"].is_number(), "{v}");
    assert!(v["kib_per_connection_after_traffic"].is_number(), "{v}");
    assert_eq!(v["messages_received"], 1000, "{v}");
}
