//! The hub: owns clients and channel subscriptions, fans messages out to outboxes, and
//! routes every publish through the broker. Knows nothing about sockets or JSON.

pub mod client;
mod coalesce;
pub mod message;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::auth::Grant;
use crate::broker::{Broker, BrokerError, History, Member, Position, Ready, Since, SubscribeError};
use crate::metrics::Metrics;
use crate::namespace::Namespaces;
use crate::ws::close::CloseReason;
use crate::ws::frame;
pub use client::{Client, ClientId, Mode, Pushed, QueueLimits};
pub use coalesce::Coalescer;
pub use message::{Event, Kind, Message, Payload};
pub use stats::Stats;

/// The pseudo-channel that addresses every connected client.
pub const ALL: &str = "*";

const SHARDS: usize = 64;

/// A map split into independently locked shards.
pub(crate) struct Sharded<K, V>(Box<[Mutex<HashMap<K, V>>]>);

impl<K, V> Sharded<K, V> {
    pub(crate) fn new() -> Self {
        Sharded((0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect())
    }
    pub(crate) fn shard(&self, hash: u64) -> &Mutex<HashMap<K, V>> {
        &self.0[(hash as usize) % SHARDS]
    }
    pub(crate) fn shard_at(&self, index: usize) -> &Mutex<HashMap<K, V>> {
        &self.0[index]
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn shards(&self) -> impl Iterator<Item = &Mutex<HashMap<K, V>>> {
        self.0.iter()
    }
}

/// FNV-1a: a stable, cheap hash to pick a shard.
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// One channel's local subscribers.
type Subscribers = Vec<Arc<Client>>;

/// Local state: connected clients and who is subscribed to what on this node.
/// Brokers deliver into it; it never calls a broker.
pub struct Registry {
    clients: Sharded<ClientId, Arc<Client>>,
    channels: Sharded<Arc<str>, Subscribers>,
    users: Sharded<Arc<str>, Vec<Arc<Client>>>,
    next_id: AtomicU64,
    node: u32,
    started: Instant,
    limits: QueueLimits,
    ping: Bytes,
    /// Counters.
    pub stats: Stats,
    /// Deferred fan-out wake-ups.
    pub coalescer: Coalescer,
}

impl Registry {
    /// An empty registry whose clients' outboxes are bounded by `limits`.
    pub fn new(limits: QueueLimits) -> Self {
        Self::for_node(limits, 0)
    }

    /// A registry whose client ids carry `node` in their high 32 bits, so ids are unique
    /// across the nodes of a cluster (and name the node holding the client).
    pub fn for_node(limits: QueueLimits, node: u32) -> Self {
        Registry {
            node,
            clients: Sharded::new(),
            channels: Sharded::new(),
            users: Sharded::new(),
            next_id: AtomicU64::new((u64::from(node) << 32) + 1),
            started: Instant::now(),
            limits,
            ping: frame::encode(frame::OP_PING, b""),
            stats: Stats::default(),
            coalescer: Coalescer::new(0, 1),
        }
    }

    /// This node's id (0 for a single node).
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Closes the JSON-mode subscribers of a channel (their offsets became invalid).
    pub fn close_json_subscribers(&self, channel: &str, reason: CloseReason) {
        let shard = self.channels.shard(fnv(channel)).lock();
        for client in shard.get(channel).into_iter().flatten() {
            if client.mode == Mode::Json {
                client.close(reason);
            }
        }
    }

    /// Seconds since the registry was made (the clock of `Client::seen`).
    pub fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Registers a new client.
    pub fn register(
        &self,
        mode: Mode,
        remote: SocketAddr,
        grant: Option<Arc<Grant>>,
    ) -> Arc<Client> {
        let id = ClientId(self.next_id.fetch_add(1, Relaxed));
        let client = Arc::new(Client::new(id, mode, remote, self.limits, self.now()));
        if let Some(grant) = grant {
            self.authenticate(&client, grant);
        }
        self.clients.shard(id.0).lock().insert(id, client.clone());
        self.stats.connection_opened(mode);
        client
    }

    /// Gives a client a (new) grant, indexing it under its user id.
    pub fn authenticate(&self, client: &Arc<Client>, grant: Arc<Grant>) {
        let user = grant.user.clone();
        let previous = client.user();
        client.set_grant(grant);
        if previous.as_deref() != Some(&*user) {
            if let Some(previous) = previous {
                self.unbind_user(&previous, client.id);
            }
            self.users
                .shard(fnv(&user))
                .lock()
                .entry(user)
                .or_default()
                .push(client.clone());
        }
    }

    fn unbind_user(&self, user: &str, id: ClientId) {
        let mut shard = self.users.shard(fnv(user)).lock();
        if let Some(list) = shard.get_mut(user) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Removes a client and all its subscriptions.
    pub fn unregister(&self, client: &Client) {
        if let Some(user) = client.user() {
            self.unbind_user(&user, client.id);
        }
        for channel in client.take_channels() {
            self.remove_subscriber(&channel, client.id);
        }
        if self
            .clients
            .shard(client.id.0)
            .lock()
            .remove(&client.id)
            .is_some()
        {
            self.stats.connection_closed(client.mode);
        }
    }

    /// Looks a client up by id.
    pub fn client(&self, id: ClientId) -> Option<Arc<Client>> {
        self.clients.shard(id.0).lock().get(&id).cloned()
    }

    /// Every connected client, ordered by id.
    pub fn clients(&self) -> Vec<Arc<Client>> {
        let mut all: Vec<_> = self
            .clients
            .shards()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Subscribes a client to a channel; false when it already was.
    pub fn subscribe(&self, client: &Arc<Client>, channel: &str) -> bool {
        let mut shard = self.channels.shard(fnv(channel)).lock();
        // Every subscriber shares the channel's one name allocation.
        let name = match shard.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Arc::from(channel),
        };
        if !client.add_channel(&name) {
            return false;
        }
        shard.entry(name).or_default().push(client.clone());
        self.stats.subscriptions.fetch_add(1, Relaxed);
        true
    }

    /// Unsubscribes a client from a channel; false when it was not subscribed.
    pub fn unsubscribe(&self, client: &Client, channel: &str) -> bool {
        if !client.remove_channel(channel) {
            return false;
        }
        self.remove_subscriber(channel, client.id);
        true
    }

    fn remove_subscriber(&self, channel: &str, id: ClientId) {
        let mut shard = self.channels.shard(fnv(channel)).lock();
        if let Some(subs) = shard.get_mut(channel) {
            if let Some(i) = subs.iter().position(|c| c.id == id) {
                subs.swap_remove(i);
                self.stats.subscriptions.fetch_sub(1, Relaxed);
            }
            if subs.is_empty() {
                shard.remove(channel);
            }
        }
    }

    /// Channels with local subscribers and their counts, sorted by name.
    pub fn channels(&self) -> Vec<(Arc<str>, usize)> {
        let mut all: Vec<_> = self
            .channels
            .shards()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    /// Number of channels with local subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.shards().map(|s| s.lock().len()).sum()
    }

    /// Number of local subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.channels
            .shard(fnv(channel))
            .lock()
            .get(channel)
            .map_or(0, Vec::len)
    }

    /// Fans a message out to its channel's local subscribers (or every client for `*`),
    /// each getting the frame of its wire format, encoded once. False when the channel
    /// has no local subscriber.
    pub fn deliver(&self, msg: &Message) -> bool {
        if &*msg.channel == ALL {
            for shard in self.clients.shards() {
                for client in shard.lock().values() {
                    // Pusher connections belong to apps; `*` is not one of their channels.
                    if client.mode != Mode::Pusher {
                        self.fan_out(client, msg);
                    }
                }
            }
            return true;
        }
        let shard = self.channels.shard(fnv(&msg.channel)).lock();
        if let Some(subs) = shard.get(&msg.channel) {
            if msg.payload.event.is_some() {
                // An event: skip the excluded connection, and non-Pusher clients when
                // it is a Pusher protocol event.
                let (exclude, pusher_only) = (msg.payload.excluded(), msg.payload.pusher_only());
                for client in subs {
                    if Some(client.id) != exclude && (!pusher_only || client.mode == Mode::Pusher) {
                        self.fan_out(client, msg);
                    }
                }
                return true;
            }
            for client in subs {
                self.fan_out(client, msg);
            }
            return true;
        }
        false
    }

    /// The fan-out push: queue the frame, wake the session through the coalescer.
    fn fan_out(&self, client: &Arc<Client>, msg: &Message) {
        let (pushed, wake) = client.push_quiet(msg.frame_for(client.mode).clone());
        self.count(pushed);
        if wake {
            self.coalescer.wake(client);
        }
    }

    fn count(&self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.stats.delivered.fetch_add(1, Relaxed),
            Pushed::Overflow => self.stats.slow_disconnects.fetch_add(1, Relaxed),
            Pushed::Closed => self.stats.dropped_closing.fetch_add(1, Relaxed),
        };
    }

    /// Runs lane `lane` of the fan-out flusher (see `Coalescer`; one task per lane)
    /// until the task is dropped: flushes clients due now as soon as they are handed
    /// over, and waiting ones every tick.
    pub async fn run_flusher(&self, lane: usize) {
        let mut tick = tokio::time::interval(self.coalescer.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let written = tokio::select! {
                biased;
                _ = tick.tick() => self.coalescer.tick(lane).await,
                _ = self.coalescer.kicked(lane) => self.coalescer.flush_now(lane).await,
            };
            self.stats.bytes_out.fetch_add(written as u64, Relaxed);
        }
    }

    /// Flushes every client waiting for the flusher (at shutdown, before the closes).
    pub fn flush_all(&self) {
        let written = self.coalescer.flush_all();
        self.stats.bytes_out.fetch_add(written as u64, Relaxed);
    }

    /// Write coalescing over `window_ms` with `lanes` flusher tasks (see `Coalescer`).
    pub fn coalescing(mut self, window_ms: u32, lanes: usize) -> Self {
        self.coalescer = Coalescer::new(window_ms, lanes);
        self
    }

    /// Queues a message for one client in its wire format.
    pub fn push_message(&self, client: &Client, msg: &Message) -> Pushed {
        self.push_frame(client, msg.frame_for(client.mode).clone())
    }

    /// Tells a channel's JSON subscribers that `member` joined or left.
    pub fn deliver_presence(&self, channel: &str, member: &Member, joined: bool) {
        let mut event = serde_json::json!({
            "channel": channel,
            "event": if joined { "join" } else { "leave" },
            "client": member.client.to_string(),
        });
        if let Some(user) = &member.user {
            event["user"] = serde_json::Value::from(&**user);
        }
        let frame = frame::encode(frame::OP_TEXT, event.to_string().as_bytes());
        let shard = self.channels.shard(fnv(channel)).lock();
        for client in shard.get(channel).into_iter().flatten() {
            if client.mode == Mode::Json && client.id != member.client {
                self.push_frame(client, frame.clone());
            }
        }
    }

    /// This node's members of a channel (its subscribers).
    pub fn members(&self, channel: &str) -> Vec<Member> {
        let shard = self.channels.shard(fnv(channel)).lock();
        let mut members: Vec<Member> = shard
            .get(channel)
            .into_iter()
            .flatten()
            .map(|c| Member {
                client: c.id,
                user: c.user(),
                info: None,
            })
            .collect();
        members.sort_by_key(|m| m.client);
        members
    }

    /// Queues a frame for one client, counting the outcome.
    pub fn push_frame(&self, client: &Client, frame: Bytes) -> Pushed {
        let pushed = client.push(frame);
        self.count(pushed);
        pushed
    }

    /// Sends a payload to one local client; the number of clients it reached (0 or 1).
    pub fn send_local(&self, id: ClientId, payload: &Payload) -> usize {
        let Some(client) = self.client(id) else {
            return 0;
        };
        let msg = Message::new(Arc::from(id.to_string()), 0, payload.clone());
        usize::from(self.push_message(&client, &msg) == Pushed::Queued)
    }

    /// Sends a payload to every local connection of a user; how many it reached.
    pub fn send_user_local(&self, user: &str, payload: &Payload) -> usize {
        // One message for all of the user's connections: each wire format encoded once.
        let msg = Message::new(Arc::from(format!("@{user}")), 0, payload.clone());
        self.user_clients(user)
            .iter()
            .filter(|client| self.push_message(client, &msg) == Pushed::Queued)
            .count()
    }

    /// The local connections bound to `user`.
    fn user_clients(&self, user: &str) -> Vec<Arc<Client>> {
        self.users
            .shard(fnv(user))
            .lock()
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Asks every local connection bound to `user` to close with `reason`; how many.
    pub fn close_user_local(&self, user: &str, reason: CloseReason) -> usize {
        let clients = self.user_clients(user);
        for client in &clients {
            client.close(reason);
        }
        clients.len()
    }

    /// Asks every client to close with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for client in self.clients() {
            client.close(reason);
        }
    }

    /// Pings clients idle for `interval` seconds and aborts those silent for
    /// `interval + timeout` (they did not answer the previous ping).
    ///
    /// Also closes clients whose token expired (`4001`). Called about once a second.
    pub fn sweep(&self, interval: u32, timeout: u32) {
        // Re-ping a silent client every few seconds of its answer window, so a lost ping
        // (or a sweep that came late) does not cost it the connection.
        let resend = (timeout / 3).clamp(1, 5);
        let now = self.now();
        let unix = crate::auth::unix_now();
        for shard in self.clients.shards() {
            for client in shard.lock().values() {
                let expires = client.expires();
                if expires != 0 && expires <= unix {
                    client.close(CloseReason::TokenExpired);
                    continue;
                }
                let idle = now.saturating_sub(client.last_seen());
                if idle >= interval + timeout {
                    self.stats.ping_timeouts.fetch_add(1, Relaxed);
                    client.close(if client.mode == Mode::Pusher {
                        CloseReason::PusherPongTimeout
                    } else {
                        CloseReason::Abort
                    });
                } else if idle >= interval && now.saturating_sub(client.last_ping()) >= resend {
                    client.pinged(now);
                    client.push(if client.mode == Mode::Pusher {
                        frame::encode(frame::OP_TEXT, message::PUSHER_PING)
                    } else {
                        self.ping.clone()
                    });
                }
            }
        }
    }
}

/// The hub handle: cheap to clone, shared by every front and publish source.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    namespaces: Arc<Namespaces>,
    metrics: Arc<Metrics>,
    /// Most channels per client (0 = no limit).
    max_channels: usize,
}

impl Hub {
    /// A hub over a registry and the broker that delivers into it.
    pub fn new(
        registry: Arc<Registry>,
        broker: Arc<dyn Broker>,
        namespaces: Arc<Namespaces>,
    ) -> Self {
        Hub {
            metrics: Arc::new(Metrics::new(registry.clone(), broker.clone())),
            registry,
            broker,
            namespaces,
            max_channels: 0,
        }
    }

    /// Caps the channels one client may be subscribed to (0 = no limit).
    pub fn max_channels_per_client(mut self, max: usize) -> Self {
        self.max_channels = max;
        self
    }

    /// Channel settings.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// Subscribes a client (recovering from `since`); `ready` runs when the subscription
    /// takes effect, before any message for it is queued. Presence channels announce the join.
    pub async fn subscribe(
        &self,
        client: &Arc<Client>,
        channel: &str,
        since: Option<Since>,
        ready: Ready<'_>,
    ) -> Result<Position, SubscribeError> {
        let max = self.max_channels;
        if max > 0 && client.channel_count() >= max && !client.is_subscribed(channel) {
            return Err(SubscribeError::TooManyChannels(max));
        }
        let position = self.broker.subscribe(client, channel, since, ready).await?;
        if self.namespaces.of(channel).presence {
            self.announce(channel, client, true).await;
        }
        Ok(position)
    }

    /// Unsubscribes a client; false when it was not subscribed.
    pub async fn unsubscribe(&self, client: &Arc<Client>, channel: &str) -> bool {
        if !self.registry.unsubscribe(client, channel) {
            return false;
        }
        self.broker.released(channel).await;
        if self.namespaces.of(channel).presence {
            self.announce(channel, client, false).await;
        }
        true
    }

    /// Removes a client that went away, announcing its leaves.
    pub async fn disconnect(&self, client: &Arc<Client>) {
        let channels = client.channels();
        self.registry.unregister(client);
        for channel in channels {
            self.broker.released(&channel).await;
            if self.namespaces.of(&channel).presence {
                self.announce(&channel, client, false).await;
            }
        }
    }

    async fn announce(&self, channel: &str, client: &Client, joined: bool) {
        let member = Member {
            client: client.id,
            user: client.user(),
            info: None,
        };
        if let Err(e) = self.broker.presence_event(channel, member, joined).await {
            tracing::warn!(%channel, client = %client.id, error = %e, "presence event lost");
        }
    }

    /// Stored messages of a channel.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<Since>,
        limit: usize,
    ) -> Result<History, SubscribeError> {
        self.broker.history(channel, since, limit).await
    }

    /// Who is in a presence channel.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Member>, BrokerError> {
        self.broker.presence(channel).await
    }

    /// The local registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The broker (for cluster-wide rooms, occupancy and `close_user`).
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Publishes to a channel (`*` = every client) through the broker; the offset.
    pub async fn publish(&self, channel: &str, payload: Payload) -> Result<u64, BrokerError> {
        self.registry.stats.published.fetch_add(1, Relaxed);
        let start = Instant::now();
        let offset = self.broker.publish(channel, payload).await?;
        self.metrics.observe_publish(start.elapsed());
        Ok(offset)
    }

    /// Whether the broker is reachable.
    pub async fn healthy(&self) -> bool {
        self.broker.healthy().await
    }

    /// The metrics of this server.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sends to every connection of a user; how many it reached.
    pub async fn send_user(&self, user: &str, payload: Payload) -> Result<usize, BrokerError> {
        self.broker.send_user(user, payload).await
    }

    /// Sends to one client wherever it is connected; how many clients it reached.
    pub async fn send(&self, id: ClientId, payload: Payload) -> Result<usize, BrokerError> {
        self.broker.send(id, payload).await
    }
}
