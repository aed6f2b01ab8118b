//! `wspush bench fanout`: N subscribers on one channel and publishers at a fixed rate or
//! as fast as they go (one publish in flight per publishing connection). Every payload
//! carries its publisher, sequence number and send time; every delivery is checked for
//! loss, order and size, and timed.
//!
//! Subscribers are WebSocket connections (optionally with permessage-deflate,
//! `--compression`), or Server-Sent Events / NDJSON streams (`--sse`, `--ndjson`; issue
//! #15). Every byte they read is counted: bytes on the wire per delivery.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::check::{Checker, Tracker};
use super::cpu;
use super::publish::{self, How, Plan, Rate};
use super::sse::{self, Mode};
use super::stats::{Histogram, Stamp, STAMP_LEN};
use super::sys::{self, wall_ns};
use super::wire::{Conn, Url};
use super::{round, si, Protocol, Report, Target};

/// `wspush bench fanout` options.
#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Messages per second in total, or `max`.
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Messages to publish.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub publish: How,
    /// Longest time spent publishing, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Longest wait for the last deliveries after the last publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Pause between the last connection opening and the first publish, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub settle: f64,
    /// Subscribers are Server-Sent Events streams (`GET /sse?channels=CHANNEL`; `--url
    /// http://...` to point elsewhere) instead of WebSocket connections.
    #[arg(long, conflicts_with_all = ["ndjson", "compression", "protocol"])]
    pub sse: bool,
    /// Subscribers are NDJSON streams (`GET /stream?channels=CHANNEL`).
    #[arg(long, conflicts_with_all = ["compression", "protocol"])]
    pub ndjson: bool,
}

/// What the receivers count (one thread: cells, no atomics).
#[derive(Default)]
struct Shared {
    delivered: Cell<u64>,
    malformed: Cell<u64>,
    /// Bytes the subscribers read from their sockets.
    wire_bytes: Cell<u64>,
    /// Compressed messages received.
    inflated: Cell<u64>,
    closed: Cell<u64>,
    errors: Cell<u64>,
    last_delivery_ns: Cell<u64>,
    latency: RefCell<Histogram>,
    checker: RefCell<Checker>,
    /// Deliveries that end the run (u64::MAX until publishing is over).
    target: Cell<u64>,
    done: Notify,
}

/// One subscriber.
enum Subscriber {
    Ws(Conn),
    Stream(sse::Stream),
}

impl Subscriber {
    async fn recv(&mut self, on_message: &mut impl FnMut(&[u8], u64)) -> io::Result<bool> {
        match self {
            Subscriber::Ws(conn) => conn.recv(on_message).await,
            Subscriber::Stream(stream) => stream.recv(on_message).await,
        }
    }

    /// Bytes read and compressed messages received so far.
    fn counts(&self) -> (u64, u64) {
        match self {
            Subscriber::Ws(conn) => (conn.wire_bytes(), conn.inflated()),
            Subscriber::Stream(stream) => (stream.wire_bytes(), 0),
        }
    }
}

/// The subscribers opened.
struct Opened {
    subscribers: Vec<Subscriber>,
    failed: usize,
    first_error: Option<String>,
    /// With `--compression`: how many agreed on it, and how many of those the server
    /// keeps a compression context for.
    deflate: (usize, usize),
}

impl Options {
    /// The streaming transport asked for, if any.
    fn stream_mode(&self) -> Option<Mode> {
        match (self.sse, self.ndjson) {
            (true, _) => Some(Mode::Sse),
            (_, true) => Some(Mode::Ndjson),
            _ => None,
        }
    }

    /// The subscriber URL.
    fn url(&self) -> String {
        let target = &self.target;
        match (self.stream_mode(), &target.url) {
            (Some(Mode::Sse), None) => {
                format!("http://{}/sse?channels={}", target.server, target.channel)
            }
            (Some(Mode::Ndjson), None) => {
                format!(
                    "http://{}/stream?channels={}",
                    target.server, target.channel
                )
            }
            _ => target.ws_url(true),
        }
    }

    async fn open(&self, url: &Url) -> Opened {
        let target = &self.target;
        let Some(mode) = self.stream_mode() else {
            let opened = target.open(url, self.connections, true).await;
            let deflate = opened.conns.iter().filter_map(Conn::deflate);
            let deflate = deflate.fold((0, 0), |(n, kept), keep| (n + 1, kept + keep as usize));
            return Opened {
                subscribers: opened.conns.into_iter().map(Subscriber::Ws).collect(),
                failed: opened.failed,
                first_error: opened.first_error,
                deflate,
            };
        };
        let (streams, failed, first_error) = sse::open_many(
            url,
            self.connections,
            target.source_ips,
            target.connect_concurrency,
            target.connect_timeout(),
            mode,
        )
        .await;
        Opened {
            subscribers: streams.into_iter().map(Subscriber::Stream).collect(),
            failed,
            first_error,
            deflate: (0, 0),
        }
    }

    fn plan(&self) -> Plan {
        Plan {
            messages: self.messages,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration),
        }
    }
}

/// Runs the scenario.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    let how = &opts.publish;
    if how.payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes");
    }
    if !(1..=100).contains(&how.publishers) {
        bail!("--publishers must be 1..=100");
    }
    let target = &opts.target;
    let mode = opts.stream_mode();
    let ws_url = opts.url();
    let url = Url::parse(&ws_url, if mode.is_some() { "http" } else { "ws" }).await?;
    let publish = Url::parse(&how.url(target), "http").await?;

    let opened = opts.open(&url).await;
    let connected = opened.subscribers.len() as u64;
    if connected == 0 {
        bail!(
            "no subscriber could connect to {ws_url}: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let shared = Rc::new(Shared {
        target: Cell::new(u64::MAX),
        ..Shared::default()
    });
    let pusher = target.protocol == Protocol::Pusher;
    let mut trackers = Vec::with_capacity(opened.subscribers.len());
    for sub in opened.subscribers {
        let tracker = Rc::new(RefCell::new(Tracker::default()));
        trackers.push(tracker.clone());
        tokio::task::spawn_local(receive(sub, shared.clone(), tracker, how.payload, pusher));
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;

    let wire_before = (shared.wire_bytes.get(), shared.inflated.get());
    let window = cpu::Window::start(target);
    let own_cpu_before = sys::cpu_seconds(None);
    let start_ns = wall_ns();
    let plan = opts.plan();
    let published = publish::run(target, how, plan, publish).await;
    let publish_time = published.elapsed.get();

    let expected = published.ok.get() * connected;
    shared.target.set(expected);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(opts.drain_timeout);
    while shared.delivered.get() < expected
        && shared.closed.get() < connected
        && tokio::time::timeout_at(drain_deadline, shared.done.notified())
            .await
            .is_ok()
    {}
    let server_cpu = window.stop();
    let wire_bytes = shared.wire_bytes.get() - wire_before.0;
    let inflated = shared.inflated.get() - wire_before.1;
    let own_cpu = sys::cpu_seconds(None)
        .zip(own_cpu_before)
        .map(|(a, b)| a - b);

    let delivered = shared.delivered.get();
    let lost = expected.saturating_sub(delivered);
    let checks = {
        let trackers: Vec<_> = trackers.iter().map(|t| t.borrow()).collect();
        let ok = published.ok_seqs.borrow();
        shared
            .checker
            .borrow()
            .finish(trackers.iter().map(|t| &**t), &ok)
    };
    let last = shared.last_delivery_ns.get();
    let span = last.saturating_sub(start_ns) as f64 / 1e9;
    let per_second = if span > 0.0 {
        delivered as f64 / span
    } else {
        0.0
    };
    let latency = shared.latency.borrow().clone();
    let pid = target.server_pid;
    let rss = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));
    let hwm = pid.and_then(|p| sys::status_kib(Some(p), "VmHWM"));

    let mut r = Report::new("fanout", target, &ws_url);
    let rate = match opts.rate {
        Rate::Max => "max".to_string(),
        Rate::PerSecond(r) => format!("{r}/s"),
    };
    let transport = mode.map_or("websocket", Mode::name);
    let compression = target.compression.map_or("off", |o| o.name());
    let per_delivery = wire_bytes as f64 / delivered.max(1) as f64;
    r.row(
        "subscribers",
        format!(
            "{connected} of {} ({transport}{})",
            opts.connections,
            match target.compression {
                Some(_) => format!(
                    ", permessage-deflate: {} agreed, {} with a server context",
                    opened.deflate.0, opened.deflate.1
                ),
                None => String::new(),
            }
        ),
    );
    r.row(
        "published",
        format!(
            "{} ok, {} failed, rate {rate}, {} publishers, {} B payload, {:.2} s",
            published.ok.get(),
            published.failed.get(),
            how.publishers,
            how.payload,
            publish_time.as_secs_f64()
        ),
    );
    published.report(&mut r, &plan);
    r.row(
        "delivered",
        format!(
            "{delivered} of {expected} (lost {lost}, malformed {})",
            shared.malformed.get()
        ),
    );
    r.row(
        "per subscriber",
        format!(
            "{} gaps in {} subscribers, {} duplicates, {} reordered",
            checks.gaps, checks.subscribers_with_gaps, checks.duplicates, checks.reordered
        ),
    );
    r.row("deliveries/s", si(per_second));
    r.row(
        "bytes on the wire",
        format!(
            "{wire_bytes} B read by the subscribers, {per_delivery:.1} B per delivery \
             ({inflated} compressed messages)"
        ),
    );
    r.row(
        if matches!(opts.rate, Rate::PerSecond(_)) {
            "latency (from the intended send)"
        } else {
            "latency"
        },
        latency.summary(),
    );
    if let Some(own) = own_cpu {
        r.row("generator CPU", format!("{own:.2} s"));
    }
    if let (Some(rss), Some(hwm)) = (rss, hwm) {
        r.row("server RSS", format!("{rss} KiB (peak {hwm} KiB)"));
    }
    if shared.closed.get() > 0 || opened.failed > 0 {
        r.row(
            "connection trouble",
            format!(
                "{} failed to open ({}), {} closed by the server, {} errors",
                opened.failed,
                opened.first_error.as_deref().unwrap_or("-"),
                shared.closed.get(),
                shared.errors.get()
            ),
        );
    }
    if let Some(e) = published.first_error.borrow().as_deref() {
        r.row("first publish error", e);
    }
    r.field("connections", connected);
    r.field("connect_failed", opened.failed as u64);
    r.field("transport", transport);
    r.field("compression", compression);
    r.field("deflate_connections", opened.deflate.0 as u64);
    r.field("deflate_context_connections", opened.deflate.1 as u64);
    r.field(
        "rate",
        match opts.rate {
            Rate::Max => json!("max"),
            Rate::PerSecond(r) => json!(r),
        },
    );
    r.field("payload", how.payload as u64);
    r.field("publishers", how.publishers as u64);
    r.field("published", published.ok.get());
    r.field("publish_failed", published.failed.get());
    r.field("publish_s", round(publish_time.as_secs_f64(), 3));
    r.field("expected", expected);
    r.field("delivered", delivered);
    r.field("lost", lost);
    r.field("gaps", checks.gaps);
    r.field("subscribers_with_gaps", checks.subscribers_with_gaps);
    r.field("out_of_order", checks.reordered);
    r.field("duplicates", checks.duplicates);
    r.field("malformed", shared.malformed.get());
    r.field("closed", shared.closed.get());
    r.field("elapsed_s", round(span, 3));
    r.field("deliveries_per_s", round(per_second, 0));
    r.field("wire_bytes", wire_bytes);
    r.field("wire_bytes_per_delivery", round(per_delivery, 2));
    r.field("compressed_messages", inflated);
    r.field(
        "latency_from",
        if matches!(opts.rate, Rate::PerSecond(_)) {
            "intended"
        } else {
            "send"
        },
    );
    r.field("latency_us", latency.json_us());
    if let Some(cpu) = server_cpu {
        cpu.report(&mut r, delivered, "deliveries");
    }
    r.field("server_rss_kib", rss);
    r.field("server_peak_rss_kib", hwm);
    r.field("client_cpu_s", own_cpu.map(|c| round(c, 2)));
    Ok(r)
}

/// The payload of a Pusher channel event: the `data` string's `len` bytes (the payloads
/// are plain ASCII, so they need no JSON unescaping).
fn pusher_payload(message: &[u8], len: usize) -> Option<&[u8]> {
    const DATA: &[u8] = b"\"data\":\"";
    let start = memchr::memmem::find(message, DATA)? + DATA.len();
    let end = start + len;
    (message.get(end) == Some(&b'"')).then(|| &message[start..end])
}

/// One subscriber: checks and times every delivery until the connection ends.
async fn receive(
    mut sub: Subscriber,
    shared: Rc<Shared>,
    tracker: Rc<RefCell<Tracker>>,
    payload: usize,
    pusher: bool,
) {
    let s = &*shared;
    let mut on_message = |message: &[u8], now: u64| {
        let data = if pusher {
            pusher_payload(message, payload).unwrap_or(message)
        } else {
            message
        };
        let Some(stamp) = Stamp::read(data).filter(|_| data.len() == payload) else {
            s.malformed.set(s.malformed.get() + 1);
            return;
        };
        s.delivered.set(s.delivered.get() + 1);
        let verdict = tracker.borrow_mut().record(stamp.source, stamp.seq);
        s.checker.borrow_mut().count(verdict);
        s.latency
            .borrow_mut()
            .record(now.saturating_sub(stamp.sent_ns));
        s.last_delivery_ns.set(now);
    };
    let mut counted = sub.counts();
    loop {
        let received = sub.recv(&mut on_message).await;
        let now = sub.counts();
        s.wire_bytes.set(s.wire_bytes.get() + now.0 - counted.0);
        s.inflated.set(s.inflated.get() + now.1 - counted.1);
        counted = now;
        match received {
            Ok(true) => {
                if s.delivered.get() >= s.target.get() {
                    s.done.notify_one();
                }
            }
            Ok(false) => break,
            Err(_) => {
                s.errors.set(s.errors.get() + 1);
                break;
            }
        }
    }
    s.closed.set(s.closed.get() + 1);
    s.done.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::PusherApp;
    use crate::pusher::auth;

    #[test]
    fn pusher_payloads_come_out_of_channel_events() {
        let event = br#"{"event":"m","channel":"bench","data":"abcdef"}"#;
        assert_eq!(pusher_payload(event, 6), Some(&b"abcdef"[..]));
        assert_eq!(pusher_payload(event, 5), None);
        assert_eq!(pusher_payload(br#"{"event":"m","data":{}}"#, 2), None);
    }

    #[test]
    fn pusher_requests_are_signed_as_the_server_checks_them() {
        let app = PusherApp {
            app_id: "1".into(),
            app_key: "k".into(),
            app_secret: "s".into(),
        };
        let body = br#"{"name":"m","channels":["c"],"data":"x"}"#;
        let signed = publish::pusher_signed_path("/apps/1/events", &app, body);
        let (path, query) = signed.split_once('?').unwrap();
        assert_eq!(path, "/apps/1/events");
        let params = auth::parse_query(query);
        assert_eq!(params["body_md5"], auth::body_md5(body));
        let message = auth::string_to_sign("POST", path, &params);
        assert!(auth::verify(
            "s",
            message.as_bytes(),
            &params["auth_signature"]
        ));
    }
}
