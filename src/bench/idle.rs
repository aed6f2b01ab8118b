//! `wspush bench idle`: opens N subscribed connections, holds them (answering pings)
//! for a settle time, and reports the connect rate and the server's RSS per connection.
//!
//! With `--messages M` (issue #18 item 4) it then publishes M messages to them at
//! `--rate`, waits until every connection got every message, lets them go idle for
//! another settle time and reads the RSS again: the memory of connections that have
//! seen traffic (queues and buffers grown and not given back show here).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::publish::{self, How, Plan, Rate};
use super::wire::{Conn, Url};
use super::{round, si, Report, Target};
use super::{sse, sys};

/// How the connections were opened.
struct Opened {
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

/// What the held connections count.
#[derive(Default)]
struct Held {
    /// Connections held (counted as their tasks start).
    open: Cell<usize>,
    closed: Cell<usize>,
    messages: Cell<u64>,
    /// Messages that end the traffic phase (u64::MAX until publishing is over).
    target: Cell<u64>,
    done: Notify,
}

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
    /// After the idle measurement, publish this many messages to the connections, then
    /// measure again once they are idle (0 = no traffic).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Messages per second of the traffic, or `max`.
    #[arg(long, default_value = "100")]
    pub rate: Rate,
    /// Longest wait for the traffic's deliveries, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub publish: How,
    /// Open Server-Sent Events streams (`GET /sse?channels=CHANNEL`) instead of
    /// WebSocket connections (idle only: no `--messages`).
    #[arg(long)]
    pub sse: bool,
}

/// Runs the scenario.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let target = &opts.target;
    if opts.sse && opts.messages > 0 {
        bail!("--messages measures WebSocket connections only (not with --sse)");
    }
    let ws_url = match (&target.url, opts.sse) {
        (None, true) => format!("http://{}/sse?channels={}", target.server, target.channel),
        _ => target.ws_url(true),
    };
    let url = Url::parse(&ws_url, if opts.sse { "http" } else { "ws" }).await?;
    let pid = target.server_pid;
    let rss_before = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));

    let held = Rc::new(Held {
        target: Cell::new(u64::MAX),
        ..Held::default()
    });
    let opened = if opts.sse {
        let start = std::time::Instant::now();
        let timeout = Duration::from_secs_f64(target.connect_timeout);
        let (n, concurrency) = (opts.connections, target.connect_concurrency);
        let (streams, failed, first_error) = sse::open_many(
            &url,
            n,
            target.source_ips,
            concurrency,
            timeout,
            sse::Mode::Sse,
        )
        .await;
        let connected = streams.len();
        for stream in streams {
            let held = held.clone();
            tokio::task::spawn_local(async move {
                held.open.set(held.open.get() + 1);
                stream.hold().await;
                held.closed.set(held.closed.get() + 1);
            });
        }
        Opened {
            connected,
            failed,
            first_error,
            elapsed: start.elapsed(),
        }
    } else {
        let opened = target.open(&url, opts.connections, true).await;
        let connected = opened.conns.len();
        for conn in opened.conns {
            tokio::task::spawn_local(hold(conn, held.clone()));
        }
        Opened {
            connected,
            failed: opened.failed,
            first_error: opened.first_error,
            elapsed: opened.elapsed,
        }
    };
    let connected = opened.connected;
    if connected == 0 {
        bail!(
            "no connection could be opened to {ws_url}: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let closed = || held.closed.get();
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;

    let rss_after = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));
    let hwm = pid.and_then(|p| sys::status_kib(Some(p), "VmHWM"));
    let open = connected - closed();
    let rate = connected as f64 / opened.elapsed.as_secs_f64().max(1e-9);
    let per_conn = rss_before
        .zip(rss_after)
        .map(|(b, a)| (a as f64 - b as f64) / open.max(1) as f64);
    let own_rss = sys::status_kib(None, "VmRSS");
    let traffic = if opts.messages > 0 {
        Some(traffic(&opts, &held).await?)
    } else {
        None
    };
    let traffic_per_conn = traffic.as_ref().and_then(|t| {
        rss_before
            .zip(t.rss)
            .map(|(b, a)| (a as f64 - b as f64) / (connected - closed()).max(1) as f64)
    });

    let mut r = Report::new(if opts.sse { "idle-sse" } else { "idle" }, target, &ws_url);
    r.row(
        "connections",
        format!(
            "{open} open of {} ({} failed, {} closed by the server)",
            opts.connections,
            opened.failed,
            closed()
        ),
    );
    r.row(
        "connect",
        format!("{:.2} s, {}/s", opened.elapsed.as_secs_f64(), si(rate)),
    );
    if let Some(e) = &opened.first_error {
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
    r.field("connect_failed", opened.failed as u64);
    r.field("closed", closed() as u64);
    r.field("first_error", opened.first_error.clone());
    r.field("connect_s", round(opened.elapsed.as_secs_f64(), 3));
    r.field("connects_per_s", round(rate, 0));
    r.field("settle_s", opts.settle);
    r.field("server_rss_before_kib", rss_before);
    r.field("server_rss_after_kib", rss_after);
    r.field("server_peak_rss_kib", hwm);
    r.field("kib_per_connection", per_conn.map(|k| round(k, 3)));
    if let Some(t) = &traffic {
        r.row(
            "traffic",
            format!(
                "{} messages published ({} failed), {} of {} deliveries in {:.2} s",
                t.published, t.failed, t.delivered, t.expected, t.elapsed
            ),
        );
        if let Some(k) = traffic_per_conn {
            r.row(
                "server RSS per connection after traffic",
                format!("{k:.2} KiB"),
            );
        }
        r.field("traffic_published", t.published);
        r.field("traffic_expected", t.expected);
        r.field("traffic_delivered", t.delivered);
        r.field("server_rss_after_traffic_kib", t.rss);
        r.field(
            "kib_per_connection_after_traffic",
            traffic_per_conn.map(|k| round(k, 3)),
        );
    }
    r.field("messages_received", held.messages.get());
    r.field("source_ips", target.source_ips as u64);
    Ok(r)
}

/// What the traffic phase did.
struct Traffic {
    published: u64,
    failed: u64,
    expected: u64,
    delivered: u64,
    elapsed: f64,
    /// The server's RSS once the connections were idle again.
    rss: Option<u64>,
}

/// Publishes `--messages` to the held connections, waits for the deliveries (bounded),
/// lets them go idle for `--settle` and reads the server's RSS.
async fn traffic(opts: &Options, held: &Held) -> anyhow::Result<Traffic> {
    let target = &opts.target;
    let url = Url::parse(&opts.publish.url(target), "http").await?;
    let plan = Plan {
        messages: opts.messages,
        rate: opts.rate,
        duration: Duration::from_secs_f64(opts.drain_timeout),
    };
    let start = Instant::now();
    let before = held.messages.get();
    let published = publish::run(target, &opts.publish, plan, url).await;
    let open = held.open.get().saturating_sub(held.closed.get());
    let expected = published.ok.get() * open as u64;
    held.target.set(before + expected);
    let deadline = start + Duration::from_secs_f64(opts.drain_timeout);
    while held.messages.get() < before + expected
        && tokio::time::timeout_at(deadline, held.done.notified())
            .await
            .is_ok()
    {}
    let delivered = held.messages.get() - before;
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;
    Ok(Traffic {
        published: published.ok.get(),
        failed: published.failed.get(),
        expected,
        delivered,
        elapsed,
        rss: target
            .server_pid
            .and_then(|p| sys::status_kib(Some(p), "VmRSS")),
    })
}

/// Keeps a connection open (answering pings) until the server closes it.
async fn hold(mut conn: Conn, held: Rc<Held>) {
    let h = &*held;
    h.open.set(h.open.get() + 1);
    let mut count = |_: &[u8], _: u64| h.messages.set(h.messages.get() + 1);
    while let Ok(true) = conn.recv(&mut count).await {
        if h.messages.get() >= h.target.get() {
            h.done.notify_one();
        }
    }
    h.closed.set(h.closed.get() + 1);
}
