//! This node's Redis subscriptions: one pub/sub connection per shard (re-established
//! with backoff), one subscription per channel with local subscribers (its `Gate`), and
//! delivery into the sink exactly once and in offset order per channel, gaps (a lost
//! connection, a reconnect) filled from history first.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubSink;

use super::channels::Snapshot;
use super::wire::{kind_of, parse_envelope, Envelope};
use super::{bounded, unavailable, Inner, CALL_TIMEOUT};
use crate::broker::BrokerError;
use crate::model::{ClientId, Disconnect, Message, Payload, ALL};

/// Attempts of a catch-up after a reconnect (about 30 s with the backoff).
const CATCH_UP_TRIES: usize = 18;

/// A channel this node subscribes to; its lock orders delivery and subscribes.
pub(super) struct Gate {
    pub(super) subscribed: AtomicBool,
    pub(super) state: tokio::sync::Mutex<GateState>,
}

#[derive(Default)]
pub(super) struct GateState {
    /// Highest offset delivered locally.
    pub(super) last: Option<u64>,
    /// The epoch `last` belongs to.
    pub(super) epoch: Option<Arc<str>>,
}

impl Inner {
    pub(super) fn gate(&self, channel: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock();
        if let Some(g) = gates.get(channel) {
            return g.clone();
        }
        let gate = Arc::new(Gate {
            subscribed: AtomicBool::new(false),
            state: tokio::sync::Mutex::new(GateState::default()),
        });
        gates.insert(Arc::from(channel), gate.clone());
        gate
    }

    pub(super) fn node_topic(&self) -> String {
        self.keys.node_topic(self.local.node())
    }

    /// Keeps one pub/sub connection to a shard alive, re-subscribing after reconnects and
    /// catching every channel up from history.
    pub(super) async fn run_shard(self: Arc<Self>, index: usize) {
        let mut delay = Duration::from_millis(100);
        loop {
            let shard = &self.shards[index];
            if let Ok(pubsub) = shard.source.pubsub().await {
                let (mut sink, mut stream) = pubsub.split();
                let mut topics: Vec<String> = self
                    .gates
                    .lock()
                    .iter()
                    .filter(|(name, g)| {
                        g.subscribed.load(Relaxed) && self.shard_index(name) == index
                    })
                    .map(|(name, _)| self.keys.topic(name))
                    .collect();
                if index == 0 {
                    topics.push(self.node_topic());
                    topics.push(self.keys.users_topic());
                    topics.push(self.keys.close_topic());
                }
                if topics.is_empty() || sink.subscribe(&topics).await.is_ok() {
                    *shard.sink.lock() = Some(sink);
                    shard.up.store(true, Relaxed);
                    delay = Duration::from_millis(100);
                    tracing::info!(
                        shard = index,
                        channels = topics.len(),
                        "redis subscriptions established"
                    );
                    // Anything published while we were not subscribed is recovered from history.
                    let channels: Vec<Arc<str>> = self
                        .gates
                        .lock()
                        .iter()
                        .filter(|(name, g)| {
                            g.subscribed.load(Relaxed) && self.shard_index(name) == index
                        })
                        .map(|(name, _)| name.clone())
                        .collect();
                    for channel in channels {
                        let me = self.clone();
                        tokio::spawn(async move { me.catch_up_retrying(&channel).await });
                    }
                    while let Some(msg) = stream.next().await {
                        self.dispatch(msg.get_channel_name(), msg.get_payload_bytes())
                            .await;
                    }
                }
                shard.up.store(false, Relaxed);
                *shard.sink.lock() = None;
                tracing::warn!(shard = index, "redis pub/sub connection lost; reconnecting");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Handles one pub/sub message.
    pub(super) async fn dispatch(&self, topic_name: &str, raw: &[u8]) {
        if let Some(channel) = self.keys.channel_of(topic_name) {
            if let Some(event) = raw.strip_prefix(b"e:") {
                self.presence_arrived(channel, event);
            } else if let Some(env) = parse_envelope(raw) {
                // A message for a channel just given up finds no gate, and makes none.
                let Some(gate) = self.gates.lock().get(channel).cloned() else {
                    return;
                };
                let mut state = gate.state.lock().await;
                if gate.subscribed.load(Relaxed) {
                    self.deliver_in_order(channel, &mut state, env).await;
                }
            }
        } else if topic_name == self.keys.users_topic() {
            // `len:user` then `kind:data`.
            let mut parts = raw.splitn(2, |b| *b == b':');
            let (Some(len), Some(rest)) = (parts.next(), parts.next()) else {
                return;
            };
            let Some(len) = std::str::from_utf8(len)
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return;
            };
            if rest.len() < len + 2 {
                return;
            }
            let (user, rest) = rest.split_at(len);
            if let (Ok(user), Some(kind)) = (std::str::from_utf8(user), kind_of(&rest[..1])) {
                let payload = Payload {
                    kind,
                    data: Bytes::copy_from_slice(&rest[2..]),
                    event: None,
                };
                self.local.send_user(user, &payload);
            }
        } else if topic_name == self.keys.close_topic() {
            // `reason:user`
            let text = String::from_utf8_lossy(raw);
            if let Some((reason, user)) = text.split_once(':') {
                // Reasons travel by their index in `Disconnect::ALL`.
                let reason = reason
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| Disconnect::ALL.get(i).copied())
                    .unwrap_or(Disconnect::Kicked);
                self.local.close_user(user, reason);
            }
        } else if topic_name == self.node_topic() {
            let mut parts = raw.splitn(3, |b| *b == b':');
            let (Some(id), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let Some(id) = std::str::from_utf8(id).ok().and_then(|i| i.parse().ok()) else {
                return;
            };
            if kind == b"k" {
                // A disconnect: `id:k:reason`.
                let reason = std::str::from_utf8(data)
                    .ok()
                    .and_then(|r| r.parse::<usize>().ok())
                    .and_then(|i| Disconnect::ALL.get(i).copied())
                    .unwrap_or(Disconnect::Kicked);
                self.local.disconnect(ClientId(id), reason);
                return;
            }
            let Some(kind) = kind_of(kind) else {
                return;
            };
            let payload = Payload {
                kind,
                data: Bytes::copy_from_slice(data),
                event: None,
            };
            self.local.send(ClientId(id), &payload);
        }
    }

    /// Delivers one message after everything before it, exactly once.
    pub(super) async fn deliver_in_order(
        &self,
        channel: &str,
        state: &mut GateState,
        env: Envelope,
    ) {
        if state.epoch.as_ref().is_some_and(|e| *e != env.epoch) {
            tracing::warn!(%channel, "channel epoch changed (Redis lost its data?): JSON subscribers must resync");
            self.local.resync(channel);
            state.last = None;
        }
        state.epoch = Some(env.epoch.clone());
        match state.last {
            Some(last) if env.offset <= last => return,
            Some(last) if env.offset > last.saturating_add(1) => {
                // A gap: fill it from history first.
                if let Ok(snap) = self.snapshot(channel, last.saturating_add(1), false).await {
                    for missing in snap
                        .history
                        .into_iter()
                        .filter(|m| m.offset > last && m.offset < env.offset)
                    {
                        self.deliver(channel, missing);
                    }
                }
            }
            _ => {}
        }
        state.last = Some(env.offset);
        self.deliver(channel, env);
    }

    pub(super) fn deliver(&self, channel: &str, env: Envelope) {
        let msg = Message::new(Arc::from(channel), env.offset, env.payload).in_epoch(env.epoch);
        self.local.deliver(&msg);
    }

    /// [`Inner::catch_up`] after a reconnect, tried again (bounded) while Redis does not
    /// answer yet: the command connection may still point at a server that just went
    /// away (a Sentinel failover), and a message published meanwhile must not be missed.
    pub(super) async fn catch_up_retrying(&self, channel: &str) {
        let mut delay = Duration::from_millis(100);
        for _ in 0..CATCH_UP_TRIES {
            let Some(gate) = self.gates.lock().get(channel).cloned() else {
                return;
            };
            if !gate.subscribed.load(Relaxed) || self.catch_up(channel, None).await.is_some() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        tracing::warn!(%channel, "could not catch up from history after a reconnect");
    }

    /// Brings local subscribers of `channel` up to the channel's offset from history.
    pub(super) async fn catch_up(&self, channel: &str, snap: Option<Snapshot>) -> Option<Snapshot> {
        let gate = self.gates.lock().get(channel).cloned()?;
        let mut state = gate.state.lock().await;
        self.catch_up_locked(channel, &mut state, snap).await
    }

    pub(super) async fn catch_up_locked(
        &self,
        channel: &str,
        state: &mut GateState,
        snap: Option<Snapshot>,
    ) -> Option<Snapshot> {
        let snap = match snap {
            Some(s) => s,
            None => self
                .snapshot(
                    channel,
                    state.last.map_or(u64::MAX, |l| l.saturating_add(1)),
                    true,
                )
                .await
                .ok()?,
        };
        if state.epoch.as_ref().is_some_and(|e| *e != snap.epoch) {
            self.local.resync(channel);
            state.last = None;
        }
        state.epoch = Some(snap.epoch.clone());
        match state.last {
            None => state.last = Some(snap.offset),
            Some(last) if last < snap.offset => {
                let mut reached = last;
                for env in snap.history.iter().filter(|m| m.offset > last) {
                    reached = env.offset;
                    self.deliver(
                        channel,
                        Envelope {
                            offset: env.offset,
                            epoch: env.epoch.clone(),
                            at_ms: env.at_ms,
                            payload: env.payload.clone(),
                        },
                    );
                }
                state.last = Some(reached);
            }
            _ => {}
        }
        Some(snap)
    }

    /// The pub/sub sink of the channel's shard, waiting (bounded) for a reconnect.
    pub(super) async fn sink(&self, channel: &str) -> Result<PubSubSink, BrokerError> {
        let shard = self.shard(channel);
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            if let Some(sink) = shard.sink.lock().clone() {
                return Ok(sink);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("redis pub/sub is not connected"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Makes sure this node's Redis subscription to `channel` exists.
    pub(super) async fn ensure_subscribed(
        &self,
        channel: &str,
        gate: &Gate,
    ) -> Result<(), BrokerError> {
        if gate.subscribed.load(Relaxed) {
            return Ok(());
        }
        let mut sink = self.sink(channel).await?;
        gate.subscribed.store(true, Relaxed);
        if let Err(e) = bounded(sink.subscribe(self.keys.topic(channel))).await {
            gate.subscribed.store(false, Relaxed);
            return Err(e);
        }
        Ok(())
    }

    /// Drops this node's Redis subscription to `channel` when no local client is
    /// subscribed (call with the gate's state locked).
    pub(super) async fn unsubscribe_idle(&self, channel: &str, gate: &Gate) {
        if channel == ALL || self.local.subscribers(channel) > 0 || !gate.subscribed.load(Relaxed) {
            return;
        }
        gate.subscribed.store(false, Relaxed);
        let sink = self.shard(channel).sink.lock().clone();
        if let Some(mut sink) = sink {
            let _ = tokio::time::timeout(CALL_TIMEOUT, sink.unsubscribe(self.keys.topic(channel)))
                .await;
        }
    }

    /// Removes an unsubscribed gate from the map unless another task holds it.
    pub(super) fn forget_gate(&self, channel: &str, gate: Arc<Gate>) {
        let mut gates = self.gates.lock();
        // Only the map and this caller hold it: no subscribe is waiting on it.
        if Arc::strong_count(&gate) == 2 && !gate.subscribed.load(Relaxed) {
            gates.remove(channel);
        }
    }
}
