//! Hot-path counters: plain atomics, read by the metrics endpoint and the console.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::OnceLock;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::model::{Format, FORMATS};

/// Counters updated on the hot path (relaxed atomics, no locks).
#[derive(Debug)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections open now, per wire format (by `Format::slot`).
    open: [AtomicU64; FORMATS],
    /// The formats the server serves, by slot (named in the metrics even at 0).
    formats: [OnceLock<&'static str>; FORMATS],
    /// Time from a publish call until the message is queued for every local subscriber.
    pub publish_latency: Histogram,
    /// Subscriptions held now.
    pub subscriptions: AtomicU64,
    /// Messages published.
    pub published: AtomicU64,
    /// Frames queued to clients.
    pub delivered: AtomicU64,
    /// Frames not queued because their client was already closing.
    pub dropped_closing: AtomicU64,
    /// Clients disconnected because their outbox overflowed.
    pub slow_disconnects: AtomicU64,
    /// Clients dropped for not answering pings.
    pub ping_timeouts: AtomicU64,
    /// Messages received from clients.
    pub upstream_messages: AtomicU64,
    /// Upstream handler failures (webhook errors, publish errors).
    pub upstream_failures: AtomicU64,
    /// Tokens rejected (bad signature, expired, malformed, wrong algorithm).
    pub auth_failures: AtomicU64,
    /// Publishes refused by the per-client rate limit.
    pub rate_limited: AtomicU64,
    /// Handshakes refused by the origin check or connection limits.
    pub rejected_connections: AtomicU64,
    /// Bytes read from WebSocket clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to WebSocket clients.
    pub bytes_out: AtomicU64,
    /// Frames deflated for permessage-deflate clients (once per message and window for
    /// shared frames, once per delivery for connections that keep a context).
    pub deflates: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_total: AtomicU64::new(0),
            open: Default::default(),
            formats: Default::default(),
            // 10 µs .. ~5 s
            publish_latency: Histogram::new(exponential_buckets(0.000_01, 2.5, 15)),
            subscriptions: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped_closing: AtomicU64::new(0),
            slow_disconnects: AtomicU64::new(0),
            ping_timeouts: AtomicU64::new(0),
            upstream_messages: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            deflates: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Names `format` in the per-format gauges (done once per front at start).
    pub fn serve_format(&self, format: &'static Format) {
        let _ = self.formats[format.slot].set(format.name);
    }

    pub(crate) fn connection_opened(&self, format: &'static Format) {
        self.serve_format(format);
        self.connections_total.fetch_add(1, Relaxed);
        self.open[format.slot].fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self, format: &Format) {
        self.open[format.slot].fetch_sub(1, Relaxed);
    }

    /// Open connections per served format: (name, count).
    pub fn open_connections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.formats
            .iter()
            .zip(&self.open)
            .filter_map(|(name, n)| Some((*name.get()?, n.load(Relaxed))))
    }

    /// Connections open now, of every format.
    pub fn connections(&self) -> u64 {
        self.open.iter().map(|n| n.load(Relaxed)).sum()
    }
}
