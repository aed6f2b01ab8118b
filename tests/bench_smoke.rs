//! A smoke run of `wspush bench` against the real server binary (issue 6): the fast path
//! delivers everything, in order, byte-exact; echo round trips come back identical.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wspush");

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wspush serve` on a free port (echoing client messages); its guard and address.
fn server() -> (Guard, String) {
    server_with(&[])
}

/// Starts `wspush serve --upstream echo EXTRA...` on a free port.
fn server_with(extra: &[&str]) -> (Guard, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--no-console",
        ])
        .args(["--upstream", "echo"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wspush serve");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server printed its address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (guard, addr)
}

/// Runs `wspush bench ARGS` (killed after `limit`) and parses its last line as JSON.
fn bench(args: &[&str], limit: Duration) -> Value {
    let child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wspush bench");
    let mut guard = Guard(child);
    let deadline = Instant::now() + limit;
    loop {
        if guard.0.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wspush bench {args:?} took longer than {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    guard
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = guard.0.wait().unwrap();
    assert!(
        status.success(),
        "wspush bench {args:?} failed: {err}\n{out}"
    );
    let line = out.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("{\"scenario\":"),
        "last line is not the JSON: {out}"
    );
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn fanout_delivers_everything_in_order() {
    let (server, addr) = server();
    let pid = server.0.id().to_string();
    let v = bench(
        &[
            "fanout",
            "--server",
            &addr,
            "--server-pid",
            &pid,
            "--connections",
            "20",
            "--messages",
            "200",
            "--publishers",
            "4",
            "--settle",
            "0",
            "--drain-timeout",
            "10",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["connections"], 20, "{v}");
    assert_eq!(v["published"], 200, "{v}");
    assert_eq!(v["expected"], 20 * 200, "{v}");
    assert_eq!(v["delivered"], 20 * 200, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["malformed"], 0, "{v}");
    assert_eq!(v["closed"], 0, "{v}");
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_s"].is_number(), "{v}");

    // A fixed rate (1000/s for 100 messages) also arrives whole and in order.
    let v = bench(
        &[
            "fanout",
            "--server",
            &addr,
            "--connections",
            "5",
            "--messages",
            "100",
            "--rate",
            "1000",
            "--settle",
            "0",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        (v["delivered"].as_u64(), v["lost"].as_u64()),
        (Some(500), Some(0)),
        "{v}"
    );
    assert_eq!(v["out_of_order"], 0, "{v}");
}

#[test]
fn pusher_fanout_subscribes_by_protocol_and_publishes_signed_events() {
    let (server, addr) = server_with(&["--pusher-app", "7:bench-key:bench-secret"]);
    let pid = server.0.id().to_string();
    let common = [
        "fanout",
        "--protocol",
        "pusher",
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--app-id",
        "7",
        "--app-key",
        "bench-key",
        "--connections",
        "20",
        "--publishers",
        "4",
        "--settle",
        "0",
    ];
    let v = bench(
        &[
            &common[..],
            &["--app-secret", "bench-secret", "--messages", "200"],
        ]
        .concat(),
        Duration::from_secs(60),
    );
    assert!(
        v["url"]
            .as_str()
            .unwrap()
            .contains("/app/bench-key?protocol=7"),
        "{v}"
    );
    assert_eq!(v["connections"], 20, "{v}");
    assert_eq!(v["published"], 200, "{v}");
    assert_eq!(v["delivered"], 20 * 200, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["malformed"], 0, "{v}");

    // Signed with the wrong secret, every publish is refused (401), none counted.
    let v = bench(
        &[&common[..], &["--app-secret", "wrong", "--messages", "10"]].concat(),
        Duration::from_secs(60),
    );
    assert_eq!(v["published"], 0, "{v}");
    assert_eq!(v["publish_failed"], 10, "{v}");
    assert_eq!(v["delivered"], 0, "{v}");
}

#[test]
fn echo_round_trips_come_back_identical() {
    let (server, addr) = server();
    let pid = server.0.id().to_string();
    let v = bench(
        &[
            "echo",
            "--server",
            &addr,
            "--server-pid",
            &pid,
            "--clients",
            "4",
            "--round-trips",
            "400",
            "--duration",
            "20",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["scenario"], "echo");
    assert_eq!(v["clients"], 4, "{v}");
    assert_eq!(v["round_trips"], 400, "{v}");
    assert_eq!(v["mismatched"], 0, "{v}");
    assert_eq!(v["failed_clients"], 0, "{v}");
}

#[test]
fn idle_holds_connections_and_measures_the_server() {
    let (server, addr) = server();
    let pid = server.0.id().to_string();
    let v = bench(
        &[
            "idle",
            "--server",
            &addr,
            "--server-pid",
            &pid,
            "--connections",
            "50",
            "--settle",
            "0.2",
            "--source-ips",
            "2",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["scenario"], "idle");
    assert_eq!(v["open"], 50, "{v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    assert!(v["kib_per_connection"].is_number(), "{v}");
}
