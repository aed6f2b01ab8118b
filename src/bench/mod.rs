//! `wspush bench`: the load generator. Scenarios `idle`, `fanout` and `echo`, each bounded
//! in count and time, print a table and then one JSON line per run.
//!
//! The generator is deliberately lean so it is not the bottleneck: one current-thread
//! runtime (pin it to one core with `taskset`), a small WebSocket client of its own
//! (`wire`: readiness + `try_read` into one shared buffer, many frames per read) and a
//! bare HTTP/1.1 keep-alive publisher (`http`). It measures any server through a small
//! adapter: `--url` says where subscribers connect, `--publish-url` and
//! `--publish-format` how to publish.
//!
//! - [`idle`]: N subscribed connections held open (WebSocket, or SSE streams with `--sse`):
//!   connect rate, server RSS per connection.
//! - [`fanout`]: N subscribers, one channel, publishes at a rate or as fast as it goes:
//!   loss, order, deliveries/s, latency, deliveries per server CPU-second.
//! - [`echo`]: C clients doing sequential round trips: round trips/s, latency, per CPU-s.

mod check;
mod cpu;
pub mod echo;
mod events;
pub mod fanout;
mod http;
pub mod idle;
mod inflate;
mod publish;
mod reader;
mod sse;
mod stats;
mod sys;
mod tls;
mod wire;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// `wspush bench SCENARIO [options]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Open N subscribed connections and hold them: connect rate, server RSS per connection.
    Idle(idle::Options),
    /// N subscribers on one channel, one publisher: loss, order, latency, deliveries per CPU-s.
    Fanout(fanout::Options),
    /// C clients doing sequential round trips against an echoing server.
    Echo(echo::Options),
}

/// Where the server under test is and how to reach it (shared by every scenario).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The server's HOST:PORT; the default URLs are built from it.
    #[arg(long, default_value = "127.0.0.1:8083")]
    pub server: String,
    /// WebSocket URL the clients connect to [default: ws://SERVER/ws?channels=CHANNEL,
    /// or ws://SERVER/ws for echo].
    #[arg(long)]
    pub url: Option<String>,
    /// The channel subscribed to and published on.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// The server's process id: enables server CPU and memory figures (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Spread client source addresses over 127.0.0.1..=127.0.0.K (binds each socket to
    /// 127.0.0.(1 + i % K) before connecting) when ephemeral ports run short.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Handshakes in flight at once while connecting (keep it below the server's listen
    /// backlog, or SYNs are dropped and retried after a second).
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Longest time for opening all connections, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// A name for the server under test, copied into the output (e.g. wspush, uws, ws).
    #[arg(long, default_value = "")]
    pub label: String,
    /// How subscribers subscribe: `wspush` (the channel is in the URL) or `pusher`
    /// (Pusher protocol 7 at /app/KEY, a `pusher:subscribe` after the handshake).
    #[arg(long, value_enum, default_value_t = Protocol::Wspush)]
    pub protocol: Protocol,
    /// The Pusher app (`--protocol pusher`, `--publish-format pusher`).
    #[command(flatten)]
    pub app: PusherApp,
    /// The CPU the server is pinned to, whose softirq time is measured [default: the
    /// server's CPU when its affinity is exactly one].
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// How the kernel accounts softirq time: `charged` to the interrupted process
    /// (tick-based accounting) or `separate` (`CONFIG_IRQ_TIME_ACCOUNTING=y`).
    #[arg(long, value_enum, default_value_t = cpu::SoftirqAccounting::Charged)]
    pub softirq_accounting: cpu::SoftirqAccounting,
    /// Offer permessage-deflate on every WebSocket connection and inflate what comes
    /// compressed (the server needs `serve --compression on`): `shared` offers
    /// `server_no_context_takeover` (the server compresses each message once for all),
    /// `context` does not (a server with `--compression-context-takeover` then keeps a
    /// compressor per connection). `--compression` alone is `shared`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "shared")]
    pub compression: Option<inflate::Offer>,
    /// PEM certificates to trust for wss:// and https:// URLs (e.g. the server's own
    /// self-signed certificate).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// How a subscriber joins its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Plain WebSocket: the channel is in the URL, every message is a payload.
    Wspush,
    /// Pusher protocol 7: subscribe after `pusher:connection_established`; payloads are
    /// the `data` strings of channel events.
    Pusher,
}

/// A Pusher app's credentials (the anchors in bench/anchors/pusher use the defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct PusherApp {
    /// Pusher app id (the HTTP API path /apps/ID).
    #[arg(long, default_value = "1")]
    pub app_id: String,
    /// Pusher app key (the WebSocket path /app/KEY).
    #[arg(long, default_value = "app-key")]
    pub app_key: String,
    /// Pusher app secret (signs HTTP API requests).
    #[arg(long, default_value = "app-secret")]
    pub app_secret: String,
}

impl Target {
    /// The subscriber URL: `--url`, else the default for the protocol.
    fn ws_url(&self, subscribe: bool) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None if self.protocol == Protocol::Pusher => format!(
                "ws://{}/app/{}?protocol=7&client=wspush-bench&version=1.0",
                self.server, self.app.app_key
            ),
            None if subscribe => format!("ws://{}/ws?channels={}", self.server, self.channel),
            None => format!("ws://{}/ws", self.server),
        }
    }

    /// Opens `n` connections to `url`, each subscribed to the channel when `subscribe`
    /// and the protocol subscribes after the handshake.
    async fn open(&self, url: &wire::Url, n: usize, subscribe: bool) -> wire::Opened {
        let pusher = (self.protocol == Protocol::Pusher).then_some(self.channel.as_str());
        wire::open_many(
            url,
            n,
            self.source_ips,
            self.connect_concurrency,
            self.connect_timeout(),
            pusher.filter(|_| subscribe),
            self.compression,
        )
        .await
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout)
    }
}

/// Runs one scenario on a thread of its own (a current-thread runtime), printing the
/// table and the JSON line.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench".into())
        .spawn(move || {
            let _ = tx.send(run_blocking(args));
        })
        .context("cannot start the bench thread")?;
    rx.await.context("the bench thread died")?
}

/// Runs one scenario on the calling thread (which must not be inside a runtime).
pub fn run_blocking(args: Args) -> anyhow::Result<()> {
    let target = match &args.scenario {
        Scenario::Idle(opts) => &opts.target,
        Scenario::Fanout(opts) => &opts.target,
        Scenario::Echo(opts) => &opts.target,
    };
    if let Some(ca_file) = &target.ca_file {
        tls::trust(ca_file)?;
    }
    let fd_limit = sys::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let local = tokio::task::LocalSet::new();
    let mut report = local.block_on(&rt, async {
        match args.scenario {
            Scenario::Idle(opts) => idle::run(opts).await,
            Scenario::Fanout(opts) => fanout::run(opts).await,
            Scenario::Echo(opts) => echo::run(opts).await,
        }
    })?;
    if let Some(limit) = fd_limit {
        report.field("client_fd_limit", limit);
    }
    // The whole generator process, connecting included (the scenario's own figure
    // covers only its measuring window).
    report.field(
        "client_process_cpu_s",
        sys::cpu_seconds(None).map(|c| round(c, 2)),
    );
    print!("{}", report.render());
    // Dropping the tasks closes every connection.
    drop(local);
    drop(rt);
    Ok(())
}

/// One run's result: rows for people, ordered fields for the JSON line.
#[derive(Debug, Default)]
pub struct Report {
    title: String,
    rows: Vec<(String, String)>,
    fields: Vec<(String, Value)>,
}

impl Report {
    /// A report whose JSON line starts with `{"scenario":NAME`.
    pub fn new(scenario: &str, target: &Target, url: &str) -> Self {
        let mut report = Report {
            title: format!("wspush bench {scenario}: {url}"),
            ..Report::default()
        };
        report.field("scenario", scenario);
        report.field("label", target.label.as_str());
        report.field("url", url);
        report
    }

    /// Adds a table row.
    pub fn row(&mut self, name: &str, value: impl std::fmt::Display) {
        self.rows.push((name.to_string(), value.to_string()));
    }

    /// Adds a JSON field.
    pub fn field(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.push((name.to_string(), value.into()));
    }

    /// The table, then the JSON line.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = format!("{}\n", self.title);
        for (name, value) in &self.rows {
            let _ = writeln!(out, "  {name:<width$}  {value}");
        }
        out.push_str(&self.json());
        out.push('\n');
        out
    }

    /// The fields as one JSON object, in the order they were added.
    pub fn json(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Rounds to `digits` decimals for the JSON line.
fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// `1234567.0` → `1.23 M`, for the table.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_keeps_field_order_and_parses() {
        let target = Target {
            server: "h:1".into(),
            url: None,
            channel: "c".into(),
            server_pid: None,
            source_ips: 1,
            connect_concurrency: 1,
            connect_timeout: 1.0,
            label: "x".into(),
            protocol: Protocol::Wspush,
            app: PusherApp {
                app_id: "1".into(),
                app_key: "k".into(),
                app_secret: "s".into(),
            },
            server_cpu: None,
            softirq_accounting: cpu::SoftirqAccounting::Charged,
            compression: None,
            ca_file: None,
        };
        let mut r = Report::new("fanout", &target, "ws://h:1/ws");
        r.field("n", 3);
        r.row("n", 3);
        let text = r.render();
        let line = text.lines().last().unwrap();
        assert!(
            line.starts_with(r#"{"scenario":"fanout","label":"x""#),
            "{line}"
        );
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn si_units() {
        assert_eq!(si(2_500_000.0), "2.50 M");
        assert_eq!(si(1500.0), "1.5 k");
    }
}
