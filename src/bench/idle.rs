//! `wspush bench idle`: opens N subscribed connections, holds them (answering pings)
//! for a settle time, and reports the connect rate and the server's RSS per connection.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;

use super::wire::{Conn, Url};
use super::{round, si, Report, Target};
use super::{sse, sys};

/// `wspush bench idle` options.
#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// How long to hold the connections before measuring, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Open Server-Sent Events streams (`GET /sse?channels=CHANNEL`) instead of
    /// WebSocket connections.
    #[arg(long)]
    pub sse: bool,
}

/// Runs the scenario.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let target = &opts.target;
    let ws_url = match (&target.url, opts.sse) {
        (None, true) => format!("http://{}/sse?channels={}", target.server, target.channel),
        _ => target.ws_url(true),
    };
    let url = Url::parse(&ws_url, if opts.sse { "http" } else { "ws" }).await?;
    let pid = target.server_pid;
    let rss_before = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));

    let closed = Rc::new(Cell::new(0usize));
    let messages = Rc::new(Cell::new(0u64));
    let (connected, failed, first_error, elapsed) = if opts.sse {
        let start = std::time::Instant::now();
        let timeout = Duration::from_secs_f64(target.connect_timeout);
        let n = opts.connections;
        let concurrency = target.connect_concurrency;
        let (streams, failed, first) =
            sse::open_many(&url, n, target.source_ips, concurrency, timeout).await;
        let connected = streams.len();
        for stream in streams {
            let closed = closed.clone();
            tokio::task::spawn_local(async move {
                stream.hold().await;
                closed.set(closed.get() + 1);
            });
        }
        (connected, failed, first, start.elapsed())
    } else {
        let opened = target.open(&url, opts.connections, true).await;
        let connected = opened.conns.len();
        for conn in opened.conns {
            tokio::task::spawn_local(hold(conn, closed.clone(), messages.clone()));
        }
        let elapsed = opened.elapsed;
        (connected, opened.failed, opened.first_error, elapsed)
    };
    if connected == 0 {
        bail!(
            "no connection could be opened to {ws_url}: {}",
            first_error.unwrap_or_default()
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;

    let rss_after = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));
    let hwm = pid.and_then(|p| sys::status_kib(Some(p), "VmHWM"));
    let open = connected - closed.get();
    let rate = connected as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_conn = rss_before
        .zip(rss_after)
        .map(|(b, a)| (a as f64 - b as f64) / open.max(1) as f64);
    let own_rss = sys::status_kib(None, "VmRSS");

    let mut r = Report::new(if opts.sse { "idle-sse" } else { "idle" }, target, &ws_url);
    r.row(
        "connections",
        format!(
            "{open} open of {} ({} failed, {} closed by the server)",
            opts.connections,
            failed,
            closed.get()
        ),
    );
    r.row(
        "connect",
        format!("{:.2} s, {}/s", elapsed.as_secs_f64(), si(rate)),
    );
    if let Some(e) = &first_error {
        r.row("first connect error", e);
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        r.row(
            "server RSS",
            format!(
                "{b} KiB before, {a} KiB after (peak {} KiB)",
                hwm.unwrap_or(0)
            ),
        );
    }
    if let Some(k) = per_conn {
        r.row("server RSS per connection", format!("{k:.2} KiB"));
    }
    if let Some(own) = own_rss {
        r.row("generator RSS", format!("{own} KiB"));
    }
    r.field("connections", opts.connections as u64);
    r.field("open", open as u64);
    r.field("connect_failed", failed as u64);
    r.field("closed", closed.get() as u64);
    r.field("first_error", first_error.clone());
    r.field("connect_s", round(elapsed.as_secs_f64(), 3));
    r.field("connects_per_s", round(rate, 0));
    r.field("settle_s", opts.settle);
    r.field("server_rss_before_kib", rss_before);
    r.field("server_rss_after_kib", rss_after);
    r.field("server_peak_rss_kib", hwm);
    r.field("kib_per_connection", per_conn.map(|k| round(k, 3)));
    r.field("messages_received", messages.get());
    r.field("source_ips", target.source_ips as u64);
    Ok(r)
}

/// Keeps a connection open (answering pings) until the server closes it.
async fn hold(mut conn: Conn, closed: Rc<Cell<usize>>, messages: Rc<Cell<u64>>) {
    let mut count = |_: &[u8], _: u64| messages.set(messages.get() + 1);
    while let Ok(true) = conn.recv(&mut count).await {}
    closed.set(closed.get() + 1);
}
