//! `wspush bench fanout`: N subscribers on one channel and publishers at a fixed rate or
//! as fast as they go (one publish in flight per publishing connection). Every payload
//! carries its publisher, sequence number and send time; every delivery is checked for
//! loss, order and size, and timed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::stats::{self, Histogram, Stamp, STAMP_LEN};
use super::sys::{self, wall_ns};
use super::wire::{Conn, Url};
use super::{round, si, Protocol, PusherApp, Report, Target};
use crate::pusher::auth;

/// How fast to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the publishers go (one publish in flight per publisher).
    Max,
    /// This many messages per second, in total.
    PerSecond(f64),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
            _ => Err(format!("{s:?}: expected `max` or messages per second")),
        }
    }
}

/// How a publish request carries the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// POST JSON `{"channel":CHANNEL,"data":PAYLOAD}` (wspush's /api/publish).
    Wspush,
    /// POST the bare payload as the body (the anchors' /publish).
    Raw,
    /// A signed Pusher HTTP API `POST /apps/APP_ID/events` (event `m`, the payload as
    /// its `data` string).
    Pusher,
}

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
    /// Payload bytes (at least 34: the stamp).
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Publishing connections, each with one publish in flight (at most 100).
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// Publish URL [default: http://SERVER/api/publish, or
    /// http://SERVER/apps/APP_ID/events for the Pusher format].
    #[arg(long)]
    pub publish_url: Option<String>,
    /// How the payload is published [default: `pusher` with `--protocol pusher`, else
    /// `wspush`].
    #[arg(long, value_enum)]
    pub publish_format: Option<Format>,
    /// API key for wspush's publish API (`Authorization: apikey KEY`).
    #[arg(long, env = "WSPUSH_API_KEY")]
    pub api_key: Option<String>,
    /// Longest time spent publishing, in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Longest wait for the last deliveries after the last publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Pause between the last connection opening and the first publish, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub settle: f64,
}

/// What the receivers count (one thread: cells, no atomics).
#[derive(Default)]
struct Shared {
    delivered: Cell<u64>,
    out_of_order: Cell<u64>,
    duplicates: Cell<u64>,
    malformed: Cell<u64>,
    closed: Cell<u64>,
    errors: Cell<u64>,
    last_delivery_ns: Cell<u64>,
    latency: RefCell<Histogram>,
    /// Deliveries that end the run (u64::MAX until publishing is over).
    target: Cell<u64>,
    done: Notify,
}

/// What the publishers did.
#[derive(Default)]
struct Published {
    next: Cell<u64>,
    ok: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
}

impl Options {
    fn format(&self) -> Format {
        self.publish_format.unwrap_or(match self.target.protocol {
            Protocol::Pusher => Format::Pusher,
            Protocol::Wspush => Format::Wspush,
        })
    }
}

/// Runs the scenario.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    if opts.payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes");
    }
    if !(1..=100).contains(&opts.publishers) {
        bail!("--publishers must be 1..=100");
    }
    let target = &opts.target;
    let ws_url = target.ws_url(true);
    let url = Url::parse(&ws_url, "ws").await?;
    let format = opts.format();
    let publish_url = opts.publish_url.clone().unwrap_or_else(|| match format {
        Format::Pusher => format!("http://{}/apps/{}/events", target.server, target.app.app_id),
        _ => format!("http://{}/api/publish", target.server),
    });
    let publish = Url::parse(&publish_url, "http").await?;

    let opened = target.open(&url, opts.connections, true).await;
    let connected = opened.conns.len() as u64;
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
    for conn in opened.conns {
        tokio::task::spawn_local(receive(conn, shared.clone(), opts.payload, pusher));
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;

    let pid = target.server_pid;
    let cpu_before = pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let own_cpu_before = sys::cpu_seconds(None);
    let start = Instant::now();
    let start_ns = wall_ns();
    let published = Rc::new(Published::default());
    let publishers = (0..opts.publishers)
        .map(|p| publisher(p as u32, &opts, publish.clone(), published.clone(), start));
    futures_util::future::join_all(publishers).await;
    let publish_time = start.elapsed();

    let expected = published.ok.get() * connected;
    shared.target.set(expected);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(opts.drain_timeout);
    while shared.delivered.get() < expected
        && shared.closed.get() < connected
        && tokio::time::timeout_at(drain_deadline, shared.done.notified())
            .await
            .is_ok()
    {}
    let cpu_after = pid.and_then(|p| sys::cpu_seconds(Some(p)));
    let own_cpu = sys::cpu_seconds(None)
        .zip(own_cpu_before)
        .map(|(a, b)| a - b);
    let server_cpu = cpu_after.zip(cpu_before).map(|(a, b)| a - b);

    let delivered = shared.delivered.get();
    let lost = expected.saturating_sub(delivered);
    let last = shared.last_delivery_ns.get();
    let span = last.saturating_sub(start_ns) as f64 / 1e9;
    let per_second = if span > 0.0 {
        delivered as f64 / span
    } else {
        0.0
    };
    let per_cpu = server_cpu
        .filter(|&c| c > 0.0)
        .map(|c| delivered as f64 / c);
    let latency = shared.latency.borrow().clone();
    let rss = pid.and_then(|p| sys::status_kib(Some(p), "VmRSS"));
    let hwm = pid.and_then(|p| sys::status_kib(Some(p), "VmHWM"));

    let mut r = Report::new("fanout", target, &ws_url);
    let rate = match opts.rate {
        Rate::Max => "max".to_string(),
        Rate::PerSecond(r) => format!("{r}/s"),
    };
    r.row(
        "subscribers",
        format!("{connected} of {}", opts.connections),
    );
    r.row(
        "published",
        format!(
            "{} ok, {} failed, rate {rate}, {} publishers, {} B payload, {:.2} s",
            published.ok.get(),
            published.failed.get(),
            opts.publishers,
            opts.payload,
            publish_time.as_secs_f64()
        ),
    );
    r.row(
        "delivered",
        format!(
            "{delivered} of {expected} (lost {lost}, out of order {}, duplicates {}, malformed {})",
            shared.out_of_order.get(),
            shared.duplicates.get(),
            shared.malformed.get()
        ),
    );
    r.row("deliveries/s", si(per_second));
    r.row("latency", latency.summary());
    if let Some(cpu) = server_cpu {
        r.row("server CPU", format!("{cpu:.2} s"));
    }
    if let Some(per_cpu) = per_cpu {
        r.row("deliveries per server CPU-s", si(per_cpu));
    }
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
    r.field(
        "rate",
        match opts.rate {
            Rate::Max => json!("max"),
            Rate::PerSecond(r) => json!(r),
        },
    );
    r.field("payload", opts.payload as u64);
    r.field("publishers", opts.publishers as u64);
    r.field("published", published.ok.get());
    r.field("publish_failed", published.failed.get());
    r.field("publish_s", round(publish_time.as_secs_f64(), 3));
    r.field("expected", expected);
    r.field("delivered", delivered);
    r.field("lost", lost);
    r.field("out_of_order", shared.out_of_order.get());
    r.field("duplicates", shared.duplicates.get());
    r.field("malformed", shared.malformed.get());
    r.field("closed", shared.closed.get());
    r.field("elapsed_s", round(span, 3));
    r.field("deliveries_per_s", round(per_second, 0));
    r.field("latency_us", latency.json_us());
    r.field("server_cpu_s", server_cpu.map(|c| round(c, 2)));
    r.field("deliveries_per_server_cpu_s", per_cpu.map(|c| round(c, 0)));
    r.field("server_rss_kib", rss);
    r.field("server_peak_rss_kib", hwm);
    r.field("client_cpu_s", own_cpu.map(|c| round(c, 2)));
    Ok(r)
}

/// One publishing connection: takes the next message number, waits for its slot when
/// rate-limited, stamps and publishes it, until the count or the time is used up.
async fn publisher(id: u32, opts: &Options, url: Url, published: Rc<Published>, start: Instant) {
    let channel = serde_json::Value::from(opts.target.channel.as_str());
    let format = opts.format();
    let (content_type, prefix, suffix) = match format {
        Format::Wspush => (
            "application/json",
            format!("{{\"channel\":{channel},\"data\":\""),
            "\"}",
        ),
        Format::Raw => ("text/plain", String::new(), ""),
        Format::Pusher => (
            "application/json",
            format!("{{\"name\":\"m\",\"channels\":[{channel}],\"data\":\""),
            "\"}",
        ),
    };
    let auth = opts
        .api_key
        .as_ref()
        .map(|k| format!("Authorization: apikey {k}\r\n"))
        .unwrap_or_default();
    let mut client = super::http::Client::new(url.clone(), content_type, &auth);
    let deadline = start + Duration::from_secs_f64(opts.duration);
    let mut body = Vec::with_capacity(prefix.len() + opts.payload + suffix.len());
    body.extend_from_slice(prefix.as_bytes());
    body.extend_from_slice(&stats::payload(opts.payload));
    body.extend_from_slice(suffix.as_bytes());
    let at = prefix.len();
    loop {
        let i = published.next.get();
        if i >= opts.messages || Instant::now() >= deadline {
            return;
        }
        published.next.set(i + 1);
        if let Rate::PerSecond(rate) = opts.rate {
            let slot = start + Duration::from_secs_f64(i as f64 / rate);
            if slot >= deadline {
                return;
            }
            tokio::time::sleep_until(slot).await;
        }
        Stamp {
            source: id,
            seq: i,
            sent_ns: wall_ns(),
        }
        .write(&mut body[at..at + STAMP_LEN]);
        let sent = match format {
            Format::Pusher => {
                let path = pusher_signed_path(&url.path, &opts.target.app, &body);
                client.post_to(&path, &body).await
            }
            _ => client.post(&body).await,
        };
        let error = match sent {
            Ok(status) if (200..300).contains(&status) => {
                published.ok.set(published.ok.get() + 1);
                continue;
            }
            Ok(status) => format!("HTTP status {status}"),
            Err(e) => e.to_string(),
        };
        published.failed.set(published.failed.get() + 1);
        published.first_error.borrow_mut().get_or_insert(error);
    }
}

/// `path?auth_key=..&auth_timestamp=..&auth_version=1.0&body_md5=..&auth_signature=..`:
/// a Pusher HTTP API request path signed with the app secret.
fn pusher_signed_path(path: &str, app: &PusherApp, body: &[u8]) -> String {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Already in sorted key order, as the signature requires.
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={}",
        app.app_key,
        auth::body_md5(body)
    );
    let signature = auth::sign(&app.app_secret, format!("POST\n{path}\n{query}").as_bytes());
    format!("{path}?{query}&auth_signature={signature}")
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
async fn receive(mut conn: Conn, shared: Rc<Shared>, payload: usize, pusher: bool) {
    // Per publisher: the next sequence number expected to be higher than (seq + 1).
    let mut last = [0u64; 100];
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
        let seen = &mut last[stamp.source as usize % 100];
        let n = stamp.seq + 1;
        if n > *seen {
            *seen = n;
        } else if n == *seen {
            s.duplicates.set(s.duplicates.get() + 1);
        } else {
            s.out_of_order.set(s.out_of_order.get() + 1);
        }
        s.latency
            .borrow_mut()
            .record(now.saturating_sub(stamp.sent_ns));
        s.last_delivery_ns.set(now);
    };
    loop {
        match conn.recv(&mut on_message).await {
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

    #[test]
    fn rates() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("100".parse::<Rate>(), Ok(Rate::PerSecond(100.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

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
        let signed = pusher_signed_path("/apps/1/events", &app, body);
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
