//! `GET /metrics`: Prometheus/OpenMetrics text from the hub's atomic counters (read at
//! scrape time, so the hot path pays only relaxed atomic adds) and a publish-latency
//! histogram.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as Prometheus;

use crate::broker::Broker;
use crate::hub::Registry;

/// The metrics registry of one server.
pub struct Metrics {
    prometheus: Prometheus,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics over `hub`'s counters and what `broker` holds.
    pub fn new(hub: Arc<Registry>, broker: Arc<dyn Broker>) -> Self {
        let mut prometheus = Prometheus::with_prefix("wspush");
        prometheus.register(
            "publish_latency_seconds",
            "Time from a publish call until the message is queued for every local subscriber",
            hub.stats.publish_latency.clone(),
        );
        prometheus.register_collector(Box::new(Counters(hub, broker)));
        Metrics { prometheus }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.prometheus)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Reads the hub's atomics (and the broker's channel count) at scrape time.
struct Counters(Arc<Registry>, Arc<dyn Broker>);

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(v as i64);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Counters {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0.stats;
        let e = &mut enc;
        for (format, open) in s.open_connections() {
            let name = format!("connections_{format}");
            let help = format!("{format} connections open now");
            gauge(e, &name, &help, open)?;
        }
        counter(
            e,
            "connections",
            "WebSocket connections accepted",
            s.connections_total.load(Relaxed),
        )?;
        gauge(
            e,
            "subscriptions",
            "Channel subscriptions held now",
            s.subscriptions.load(Relaxed),
        )?;
        gauge(
            e,
            "channels",
            "Channels with local subscribers",
            self.0.channel_count() as u64,
        )?;
        gauge(
            e,
            "channels_tracked",
            "Channels whose state (offsets, history, subscriptions) the broker holds on this node",
            self.1.tracked() as u64,
        )?;
        counter(
            e,
            "messages_published",
            "Messages published",
            s.published.load(Relaxed),
        )?;
        counter(
            e,
            "messages_delivered",
            "Frames queued to clients",
            s.delivered.load(Relaxed),
        )?;
        counter(
            e,
            "messages_dropped_closing",
            "Frames not queued because their client was closing",
            s.dropped_closing.load(Relaxed),
        )?;
        counter(
            e,
            "disconnected_slow",
            "Clients disconnected because their send queue overflowed",
            s.slow_disconnects.load(Relaxed),
        )?;
        counter(
            e,
            "ping_timeouts",
            "Clients dropped for not answering pings",
            s.ping_timeouts.load(Relaxed),
        )?;
        counter(
            e,
            "bytes_in",
            "Bytes read from WebSocket clients",
            s.bytes_in.load(Relaxed),
        )?;
        counter(
            e,
            "bytes_out",
            "Bytes written to WebSocket clients",
            s.bytes_out.load(Relaxed),
        )?;
        counter(
            e,
            "upstream_messages",
            "Messages received from clients",
            s.upstream_messages.load(Relaxed),
        )?;
        counter(
            e,
            "upstream_failures",
            "Upstream handler failures (webhook errors, failed republishes)",
            s.upstream_failures.load(Relaxed),
        )?;
        counter(
            e,
            "auth_failures",
            "Rejected tokens",
            s.auth_failures.load(Relaxed),
        )?;
        counter(
            e,
            "rate_limited",
            "Publishes refused by the per-client rate limit",
            s.rate_limited.load(Relaxed),
        )?;
        counter(
            e,
            "rejected_connections",
            "Handshakes refused (origin, connection limits)",
            s.rejected_connections.load(Relaxed),
        )?;
        counter(
            e,
            "deflate",
            "Frames deflated for permessage-deflate clients (shared frames once per message)",
            s.deflates.load(Relaxed),
        )?;
        Ok(())
    }
}
