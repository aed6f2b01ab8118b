//! The Redis broker: many nodes sharing Redis act as one server. Channels are sharded
//! over one or more Redis servers by a stable hash of the name. Per channel, one Lua
//! script assigns the offset, appends to history and publishes, atomically, so every node
//! sees the same offsets in the same order. A node holds one Redis subscription per
//! channel with local subscribers; it delivers each message once, in offset order, and
//! fills any gap (a lost pub/sub connection) from history. A channel's offset and epoch
//! live in one hash that expires with the channel's history (and is not kept at all for
//! a channel without history nobody listens to); nodes with subscribers keep it alive.
//! Each life of that hash gets a new epoch (the Redis server's base epoch and a counter),
//! so offsets that start over are never taken for the old ones.
//!
//! Files by concern: this one holds the broker's state, its connections and the
//! periodic refresh; [`wire`] the key names and envelopes; [`pubsub`] the subscription
//! tasks and ordered delivery; [`channels`] the core [`Broker`](crate::broker::Broker)
//! operations and their scripts; [`presence`] presence entries; [`cluster`] the
//! [`Cluster`](crate::broker::Cluster) needs of the Pusher front (rooms, occupancy,
//! closing users).

mod channels;
mod cluster;
mod presence;
mod pubsub;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::Script;

use super::{BrokerError, Sink};
use crate::model::ALL;
use crate::namespace::Namespaces;
use crate::shard::fnv;
use cluster::RoomEntry;
use pubsub::Gate;

/// How long a presence entry lives without being refreshed by its node.
const PRESENCE_TTL_MS: u64 = 30_000;
/// How often a node refreshes its presence entries and prunes dead ones.
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// How long a channel's position outlives its last listening node (refreshed every
/// `PRESENCE_REFRESH` by the nodes that listen).
const KEEPALIVE_MS: u64 = 2 * PRESENCE_TTL_MS;
/// Bound on any single Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// Runs one Redis call within `CALL_TIMEOUT`, a failure or timeout being `Unavailable`.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| unavailable("redis timed out"))?
        .map_err(unavailable)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One Redis server.
struct Shard {
    client: redis::Client,
    conn: ConnectionManager,
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
}

struct Inner {
    local: Arc<dyn Sink>,
    namespaces: Arc<Namespaces>,
    shards: Vec<Shard>,
    gates: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    publish: Script,
    read: Script,
    touch: Script,
    occupancy_sync: Script,
    occupancy_all: Script,
    /// This node's room entries (room → client → entry), rewritten with a new expiry
    /// by `refresh_presence`.
    rooms: Mutex<HashMap<Arc<str>, HashMap<u64, RoomEntry>>>,
    /// How long this node's heartbeat, room entries and occupancy live without a
    /// refresh (ms); refreshed every third of it (at most every `PRESENCE_REFRESH`).
    node_ttl: AtomicU64,
    /// Wakes the refresh loop when `node_ttl` changes.
    ttl_changed: tokio::sync::Notify,
    reap_room: Script,
    reap_nodes: Script,
    occupancy_one: Script,
}

/// The cluster broker over one or more Redis servers.
pub struct Redis {
    inner: Arc<Inner>,
}

impl Redis {
    /// Connects to every Redis URL (channels are sharded over them in this order; keep
    /// the order the same on every node) and starts the subscription tasks.
    pub async fn connect(
        urls: &[String],
        sink: Arc<dyn Sink>,
        namespaces: Arc<Namespaces>,
    ) -> Result<Self, BrokerError> {
        let mut shards = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(Duration::from_secs(2))
                .set_number_of_retries(1)
                .set_max_delay(1000);
            let conn = tokio::time::timeout(
                CALL_TIMEOUT,
                client.get_connection_manager_with_config(config),
            )
            .await
            .map_err(|_| unavailable(format!("{url}: connect timed out")))?
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
            shards.push(Shard {
                client,
                conn,
                sink: Mutex::new(None),
                up: AtomicBool::new(false),
            });
        }
        let inner = Arc::new(Inner {
            local: sink,
            namespaces,
            shards,
            gates: Mutex::new(HashMap::new()),
            publish: Script::new(channels::PUBLISH),
            read: Script::new(channels::READ),
            touch: Script::new(channels::TOUCH),
            occupancy_sync: Script::new(cluster::OCCUPANCY_SYNC),
            occupancy_all: Script::new(cluster::OCCUPANCY_ALL),
            rooms: Mutex::new(HashMap::new()),
            node_ttl: AtomicU64::new(PRESENCE_TTL_MS),
            ttl_changed: tokio::sync::Notify::new(),
            reap_room: Script::new(cluster::REAP_ROOM),
            reap_nodes: Script::new(cluster::REAP_NODES),
            occupancy_one: Script::new(cluster::OCCUPANCY_ONE),
        });
        // Broadcasts are a channel every node always subscribes to.
        inner.gate(ALL).subscribed.store(true, Relaxed);
        for index in 0..inner.shards.len() {
            tokio::spawn(inner.clone().run_shard(index));
        }
        tokio::spawn(inner.clone().refresh_presence());
        // Start serving once every shard's subscriptions are in place.
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        while !inner.shards.iter().all(|s| s.up.load(Relaxed)) {
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("redis pub/sub did not connect"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Redis { inner })
    }

    /// Sets how long (ms) this node's heartbeat, room entries and occupancy live in
    /// Redis without a refresh: a node silent that long is taken for dead, and a live
    /// node reaps it (`Cluster::reap`). Refreshed every third of it.
    pub fn set_node_ttl(&self, ms: u64) {
        self.inner.node_ttl.store(ms.max(300), Relaxed);
        self.inner.ttl_changed.notify_one();
    }
}

impl Inner {
    fn shard_index(&self, channel: &str) -> usize {
        (fnv(channel) % self.shards.len() as u64) as usize
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[self.shard_index(channel)]
    }

    /// Refreshes this node's presence entries and prunes (with leave events) entries whose
    /// node stopped refreshing them: a dead node's clients leave within `PRESENCE_TTL_MS`.
    async fn refresh_presence(self: Arc<Self>) {
        loop {
            let channels: Vec<Arc<str>> = self
                .local
                .channels()
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| self.namespaces.of(name).presence)
                .collect();
            for channel in channels {
                let _ = self.refresh_channel(&channel).await;
            }
            let _ = self.refresh_rooms().await;
            let _ = self.refresh_occupancy().await;
            let _ = self.refresh_positions().await;
            let every = Duration::from_millis(self.ttl() / 3).min(PRESENCE_REFRESH);
            // A new TTL (set after connecting) takes effect at once.
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.ttl_changed.notified() => {}
            }
        }
    }

    /// The node TTL in ms (see `Redis::set_node_ttl`).
    fn ttl(&self) -> u64 {
        self.node_ttl.load(Relaxed)
    }
}
