//! Hot-path counters: plain atomics, read by the metrics endpoint and the console.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Mode;

/// Counters updated on the hot path (relaxed atomics, no locks).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Raw-mode connections open now.
    pub connections_raw: AtomicU64,
    /// JSON-mode connections open now.
    pub connections_json: AtomicU64,
    /// Pusher-protocol connections open now.
    pub connections_pusher: AtomicU64,
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
}

impl Stats {
    pub(crate) fn connection_opened(&self, mode: Mode) {
        self.connections_total.fetch_add(1, Relaxed);
        self.current(mode).fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self, mode: Mode) {
        self.current(mode).fetch_sub(1, Relaxed);
    }

    fn current(&self, mode: Mode) -> &AtomicU64 {
        match mode {
            Mode::Raw => &self.connections_raw,
            Mode::Json => &self.connections_json,
            Mode::Pusher => &self.connections_pusher,
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> u64 {
        self.connections_raw.load(Relaxed)
            + self.connections_json.load(Relaxed)
            + self.connections_pusher.load(Relaxed)
    }
}
