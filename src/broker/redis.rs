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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::Script;

use super::Sink;
use super::{
    check_since, Broker, BrokerError, History, Member, Occupancy, Position, Ready, RoomLeft, Since,
    SubscribeError,
};
use crate::model::{ClientId, Disconnect, Event, Kind, Message, Payload, ALL};
use crate::namespace::Namespaces;
use crate::shard::fnv;

/// Assigns the next offset, keeps history, publishes. KEYS: position hash (`o` offset,
/// `e` epoch), history, base epoch, lives counter. ARGV: pub/sub channel, kind, data,
/// history size, history ttl (ms), event metadata (JSON, or empty), keepalive (ms).
/// The position hash lives as long as the history, and at least the keepalive while a
/// node listens; a channel without history that nobody hears keeps nothing.
const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  local base = redis.call('GET', KEYS[3])
  if not base then
    local t = redis.call('TIME')
    base = t[1] .. string.format('%06d', t[2])
    redis.call('SET', KEYS[3], base)
  end
  epoch = base .. '.' .. redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local msg = offset .. ':' .. ARGV[2] .. ':' .. epoch .. ':' .. now .. ':' .. #ARGV[6] .. ':' .. ARGV[6] .. ARGV[3]
local size = tonumber(ARGV[4])
local keep = 0
if size > 0 then
  redis.call('RPUSH', KEYS[2], msg)
  redis.call('LTRIM', KEYS[2], -size, -1)
  keep = tonumber(ARGV[5])
  redis.call('PEXPIRE', KEYS[2], keep)
end
if redis.call('PUBLISH', ARGV[1], msg) > 0 and tonumber(ARGV[7]) > keep then
  keep = tonumber(ARGV[7])
end
if keep == 0 then
  redis.call('DEL', KEYS[1])
elseif redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return {offset, epoch}
"#;

/// Reads a channel's epoch, offset, history length and the stored messages from offset
/// ARGV[1] on (history offsets are contiguous, so the list index follows from the offset).
/// KEYS: as `PUBLISH`. ARGV: from, `1` to start the channel's life if it has none (and
/// keep it at least the keepalive, ARGV[3] ms), `0` to only look: an unknown channel
/// then reads as offset 0 in the epoch its next life gets (unless another starts first).
const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  local base = redis.call('GET', KEYS[3])
  if not base then
    local t = redis.call('TIME')
    base = t[1] .. string.format('%06d', t[2])
    redis.call('SET', KEYS[3], base)
  end
  if ARGV[2] ~= '1' then
    return {base .. '.' .. (tonumber(redis.call('GET', KEYS[4]) or '0') + 1), 0, 0, {}}
  end
  epoch = base .. '.' .. redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch)
end
if ARGV[2] == '1' and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local len = redis.call('LLEN', KEYS[2])
local from = tonumber(ARGV[1])
local entries = {}
if len > 0 and from <= offset then
  local start = len - 1 - (offset - from)
  if start < 0 then start = 0 end
  entries = redis.call('LRANGE', KEYS[2], start, -1)
end
return {epoch, offset, len, entries}
"#;

/// Keeps the position hashes of channels this node listens to alive. KEYS: position
/// hashes. ARGV: keepalive (ms); an expiry is only ever extended.
const TOUCH: &str = r#"
local keep = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < keep then
    redis.call('PEXPIRE', key, keep)
  end
end
return 0
"#;

/// Records a node's subscriber count of a channel and sums it over live nodes.
/// KEYS: the node's occupancy hash, the live-nodes zset. ARGV: node, channel, count,
/// node expiry (ms), now (ms), hash ttl (ms). Returns {before, after} cluster-wide.
const OCCUPANCY_SYNC: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local new = tonumber(ARGV[3])
if new > 0 then
  redis.call('HSET', KEYS[1], ARGV[2], new)
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local total = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf')) do
  total = total + tonumber(redis.call('HGET', 'wspush:occupancy:' .. node, ARGV[2]) or '0')
end
return {total - new + old, total}
"#;

/// Every channel's subscriber count summed over live nodes, as a flat name, count list.
/// KEYS: the live-nodes zset. ARGV: now (ms).
const OCCUPANCY_ALL: &str = r#"
local sums = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local h = redis.call('HGETALL', 'wspush:occupancy:' .. node)
  for i = 1, #h, 2 do
    sums[h[i]] = (sums[h[i]] or 0) + tonumber(h[i + 1])
  end
end
local out = {}
for name, n in pairs(sums) do
  if n > 0 then
    table.insert(out, name)
    table.insert(out, n)
  end
end
return out
"#;

/// The live-nodes zset of the occupancy (node id → expiry ms), on the first shard.
const OCCUPANCY_NODES: &str = "wspush:occupancy:nodes";

/// How long a presence entry lives without being refreshed by its node.
const PRESENCE_TTL_MS: u64 = 30_000;
/// How often a node refreshes its presence entries and prunes dead ones.
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// How long a channel's position outlives its last listening node (refreshed every
/// `PRESENCE_REFRESH` by the nodes that listen).
const KEEPALIVE_MS: u64 = 2 * PRESENCE_TTL_MS;
/// Position hashes refreshed per `TOUCH` call.
const TOUCH_BATCH: usize = 500;
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

fn kind_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "t",
        Kind::Json => "j",
        Kind::Binary => "b",
    }
}

fn kind_of(code: &[u8]) -> Option<Kind> {
    match code {
        b"t" => Some(Kind::Text),
        b"j" => Some(Kind::Json),
        b"b" => Some(Kind::Binary),
        _ => None,
    }
}

/// A message as stored and published: `offset:kind:epoch:ms:event_len:event data`,
/// where `event` is the JSON of the payload's event metadata (empty for plain data).
#[derive(Debug)]
struct Envelope {
    offset: u64,
    epoch: Arc<str>,
    at_ms: u64,
    payload: Payload,
}

fn parse_envelope(raw: &[u8]) -> Option<Envelope> {
    let mut parts = raw.splitn(6, |b| *b == b':');
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let kind = kind_of(parts.next()?)?;
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let at_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let event_len: usize = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let rest = parts.next()?;
    if rest.len() < event_len {
        return None;
    }
    let (event, data) = rest.split_at(event_len);
    Some(Envelope {
        offset,
        epoch: Arc::from(epoch),
        at_ms,
        payload: Payload {
            kind,
            data: Bytes::copy_from_slice(data),
            event: decode_event(event),
        },
    })
}

/// Event metadata as carried through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireEvent {
    n: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
}

fn encode_event(payload: &Payload) -> String {
    payload.event.as_ref().map_or_else(String::new, |e| {
        serde_json::to_string(&WireEvent {
            n: e.name.to_string(),
            x: e.exclude.map(|c| c.0),
            u: e.user_id.as_deref().map(str::to_string),
        })
        .expect("event serializes")
    })
}

fn decode_event(raw: &[u8]) -> Option<Arc<Event>> {
    let wire: WireEvent = serde_json::from_slice(raw).ok()?;
    Some(Arc::new(Event {
        name: Arc::from(wire.n),
        exclude: wire.x.map(ClientId),
        user_id: wire.u.map(Arc::from),
    }))
}

/// Redis keys of a channel (with a hash tag, so Redis Cluster keeps them together), then
/// the server's base epoch and lives counter.
fn keys(channel: &str) -> [String; 4] {
    [
        position_key(channel),
        format!("wspush:{{{channel}}}:history"),
        "wspush:epoch".to_string(),
        "wspush:lives".to_string(),
    ]
}

fn position_key(channel: &str) -> String {
    format!("wspush:{{{channel}}}:pos")
}

fn topic(channel: &str) -> String {
    format!("wspush:c:{channel}")
}

fn presence_key(channel: &str) -> String {
    format!("wspush:{{{channel}}}:presence")
}

fn room_key(room: &str) -> String {
    format!("wspush:{{{room}}}:room")
}

fn occupancy_key(node: u32) -> String {
    format!("wspush:occupancy:{node}")
}

/// A room entry as stored in the room's hash (field: the client id).
#[derive(serde::Serialize, serde::Deserialize)]
struct RoomEntry {
    /// The node holding the connection.
    n: u32,
    /// Expiry (ms) unless its node refreshes it.
    e: u64,
    /// When it joined (ms), for join order.
    j: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<String>,
}

/// The unexpired members of a room's hash, oldest first.
fn room_members(all: HashMap<String, String>, now: u64) -> Vec<Member> {
    let mut entries: Vec<(u64, Member)> = all
        .into_iter()
        .filter_map(|(client, value)| {
            let entry: RoomEntry = serde_json::from_str(&value).ok()?;
            (entry.e > now).then_some(())?;
            let member = Member {
                client: ClientId(client.parse().ok()?),
                user: entry.u.map(Arc::from),
                info: entry.i.map(Arc::from),
            };
            Some((entry.j, member))
        })
        .collect();
    entries.sort_by_key(|(joined, m)| (*joined, m.client));
    entries.into_iter().map(|(_, m)| m).collect()
}

/// One Redis server.
struct Shard {
    client: redis::Client,
    conn: ConnectionManager,
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
}

/// A channel this node subscribes to; its lock orders delivery and subscribes.
struct Gate {
    subscribed: AtomicBool,
    state: tokio::sync::Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Highest offset delivered locally.
    last: Option<u64>,
    /// The epoch `last` belongs to.
    epoch: Option<Arc<str>>,
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
}

/// The cluster broker over one or more Redis servers.
pub struct Redis {
    inner: Arc<Inner>,
}

/// What `READ` returned.
struct Snapshot {
    epoch: Arc<str>,
    offset: u64,
    /// The oldest offset still recoverable (`offset + 1` when nothing is stored).
    oldest: u64,
    /// Stored, unexpired messages from the requested offset on.
    history: Vec<Envelope>,
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
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            touch: Script::new(TOUCH),
            occupancy_sync: Script::new(OCCUPANCY_SYNC),
            occupancy_all: Script::new(OCCUPANCY_ALL),
            rooms: Mutex::new(HashMap::new()),
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
}

impl Inner {
    fn shard_index(&self, channel: &str) -> usize {
        (fnv(channel) % self.shards.len() as u64) as usize
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[self.shard_index(channel)]
    }

    fn gate(&self, channel: &str) -> Arc<Gate> {
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

    fn node_topic(&self) -> String {
        format!("wspush:node:{}", self.local.node())
    }

    /// Keeps one pub/sub connection to a shard alive, re-subscribing after reconnects and
    /// catching every channel up from history.
    async fn run_shard(self: Arc<Self>, index: usize) {
        let mut delay = Duration::from_millis(100);
        loop {
            let shard = &self.shards[index];
            if let Ok(pubsub) = shard.client.get_async_pubsub().await {
                let (mut sink, mut stream) = pubsub.split();
                let mut topics: Vec<String> = self
                    .gates
                    .lock()
                    .iter()
                    .filter(|(name, g)| {
                        g.subscribed.load(Relaxed) && self.shard_index(name) == index
                    })
                    .map(|(name, _)| topic(name))
                    .collect();
                if index == 0 {
                    topics.push(self.node_topic());
                    topics.push("wspush:users".into());
                    topics.push("wspush:close".into());
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
                        tokio::spawn(async move { me.catch_up(&channel, None).await });
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
    async fn dispatch(&self, topic_name: &str, raw: &[u8]) {
        if let Some(channel) = topic_name.strip_prefix("wspush:c:") {
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
        } else if topic_name == "wspush:users" {
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
        } else if topic_name == "wspush:close" {
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
            let (Some(id), Some(kind)) = (
                std::str::from_utf8(id).ok().and_then(|i| i.parse().ok()),
                kind_of(kind),
            ) else {
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
    async fn deliver_in_order(&self, channel: &str, state: &mut GateState, env: Envelope) {
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

    fn deliver(&self, channel: &str, env: Envelope) {
        let msg = Message::new(Arc::from(channel), env.offset, env.payload);
        self.local.deliver(&msg);
    }

    /// Brings local subscribers of `channel` up to the channel's offset from history.
    async fn catch_up(&self, channel: &str, snap: Option<Snapshot>) -> Option<Snapshot> {
        let gate = self.gates.lock().get(channel).cloned()?;
        let mut state = gate.state.lock().await;
        self.catch_up_locked(channel, &mut state, snap).await
    }

    async fn catch_up_locked(
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

    /// The channel's position and its stored messages with offsets `>= from`; with
    /// `start`, a channel without a position starts a life (for a subscription).
    async fn snapshot(
        &self,
        channel: &str,
        from: u64,
        start: bool,
    ) -> Result<Snapshot, BrokerError> {
        let mut conn = self.shard(channel).conn.clone();
        let [position_key, history_key, base_key, lives_key] = keys(channel);
        let (epoch, offset, len, raw): (String, u64, u64, Vec<Vec<u8>>) = bounded(
            self.read
                .key(position_key)
                .key(history_key)
                .key(base_key)
                .key(lives_key)
                .arg(from)
                .arg(if start { "1" } else { "0" })
                .arg(KEEPALIVE_MS)
                .invoke_async(&mut conn),
        )
        .await?;
        let ns = self.namespaces.of(channel);
        let now = now_ms();
        let fresh = |e: &Envelope| {
            ns.history_ttl
                .is_none_or(|ttl| now.saturating_sub(e.at_ms) <= ttl.as_millis() as u64)
        };
        let all: Vec<Envelope> = raw.iter().filter_map(|r| parse_envelope(r)).collect();
        let mut oldest = offset.saturating_add(1) - len.min(offset);
        // Expired entries are gone for recovery too.
        if let Some(last_stale) = all.iter().filter(|e| !fresh(e)).map(|e| e.offset).max() {
            oldest = oldest.max(last_stale.saturating_add(1));
        }
        Ok(Snapshot {
            epoch: Arc::from(epoch),
            offset,
            oldest,
            history: all
                .into_iter()
                .filter(|e| fresh(e) && e.offset >= from)
                .collect(),
        })
    }

    async fn publish_now(&self, channel: &str, payload: Payload) -> Result<u64, BrokerError> {
        let ns = self.namespaces.of(channel);
        let mut conn = self.shard(channel).conn.clone();
        let [position_key, history_key, base_key, lives_key] = keys(channel);
        // History is kept for its TTL (the server gives every history namespace one);
        // a day when a caller's namespaces have none.
        let ttl = ns
            .history_ttl
            .map_or(86_400_000, |t| (t.as_millis() as u64).max(1));
        let (offset, _epoch): (u64, String) = bounded(
            self.publish
                .key(position_key)
                .key(history_key)
                .key(base_key)
                .key(lives_key)
                .arg(topic(channel))
                .arg(kind_code(payload.kind))
                .arg(payload.data.as_ref())
                .arg(ns.history_size)
                .arg(ttl)
                .arg(encode_event(&payload))
                .arg(KEEPALIVE_MS)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(offset)
    }

    /// The pub/sub sink of the channel's shard, waiting (bounded) for a reconnect.
    async fn sink(&self, channel: &str) -> Result<PubSubSink, BrokerError> {
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
    async fn ensure_subscribed(&self, channel: &str, gate: &Gate) -> Result<(), BrokerError> {
        if gate.subscribed.load(Relaxed) {
            return Ok(());
        }
        let mut sink = self.sink(channel).await?;
        gate.subscribed.store(true, Relaxed);
        if let Err(e) = bounded(sink.subscribe(topic(channel))).await {
            gate.subscribed.store(false, Relaxed);
            return Err(e);
        }
        Ok(())
    }

    async fn subscribe_now(
        &self,
        client: ClientId,
        channel: &str,
        since: Option<Since>,
        ready: Ready<'_>,
    ) -> Result<Position, SubscribeError> {
        if self.local.is_subscribed(client, channel) {
            return Err(SubscribeError::AlreadySubscribed);
        }
        let gate = self.gate(channel);
        let result = {
            let mut state = gate.state.lock().await;
            let result = self
                .subscribe_locked(client, channel, since, ready, &gate, &mut state)
                .await;
            if result.is_err() || self.local.subscribers(channel) == 0 {
                // A failed subscribe (history gone, Redis trouble, refused by the
                // registry) leaves no Redis subscription behind when no local client
                // needs it.
                self.unsubscribe_idle(channel, &gate).await;
            }
            result
        };
        if !gate.subscribed.load(Relaxed) {
            self.forget_gate(channel, gate);
        }
        result
    }

    async fn subscribe_locked(
        &self,
        client: ClientId,
        channel: &str,
        since: Option<Since>,
        ready: Ready<'_>,
        gate: &Gate,
        state: &mut GateState,
    ) -> Result<Position, SubscribeError> {
        let fresh = !gate.subscribed.load(Relaxed);
        self.ensure_subscribed(channel, gate).await?;
        if fresh {
            // Everything after this read arrives through the subscription.
            state.last = None;
            state.epoch = None;
        }
        let after = |offset: u64| offset.saturating_add(1);
        let from = match (&since, state.last) {
            (Some(s), Some(last)) => after(s.offset).min(after(last)),
            (Some(s), None) => after(s.offset),
            (None, Some(last)) => after(last),
            (None, None) => u64::MAX,
        };
        let snap = self.snapshot(channel, from, true).await?;
        let snap = self
            .catch_up_locked(channel, state, Some(snap))
            .await
            .expect("a given snapshot is used");
        let position = Position {
            offset: snap.offset,
            epoch: snap.epoch.clone(),
        };
        let replay: Vec<&Envelope> = match &since {
            None => Vec::new(),
            Some(since) => {
                if let Err(oldest) = check_since(since, snap.oldest, snap.offset, &snap.epoch) {
                    return Err(SubscribeError::HistoryGone { oldest, position });
                }
                let upto = state.last.unwrap_or(snap.offset);
                snap.history
                    .iter()
                    .filter(|m| m.offset > since.offset && m.offset <= upto)
                    .collect()
            }
        };
        ready(&position);
        for env in replay {
            let msg = Message::new(Arc::from(channel), env.offset, env.payload.clone());
            self.local.replay(client, &msg);
        }
        self.local.attach(client, channel);
        Ok(position)
    }

    async fn history_now(
        &self,
        channel: &str,
        since: Option<Since>,
        limit: usize,
    ) -> Result<History, SubscribeError> {
        let from = since.as_ref().map_or(0, |s| s.offset.saturating_add(1));
        // Reading history of an unknown channel creates nothing.
        let snap = self.snapshot(channel, from, false).await?;
        let position = Position {
            offset: snap.offset,
            epoch: snap.epoch.clone(),
        };
        let since = since.unwrap_or(Since {
            offset: snap.oldest.saturating_sub(1),
            epoch: None,
        });
        if let Err(oldest) = check_since(&since, snap.oldest, snap.offset, &snap.epoch) {
            return Err(SubscribeError::HistoryGone { oldest, position });
        }
        let messages = snap
            .history
            .into_iter()
            .filter(|m| m.offset > since.offset)
            .take(limit)
            .map(|m| Arc::new(Message::new(Arc::from(channel), m.offset, m.payload)))
            .collect();
        Ok(History { messages, position })
    }

    /// Drops this node's Redis subscription to `channel` when no local client is
    /// subscribed (call with the gate's state locked).
    async fn unsubscribe_idle(&self, channel: &str, gate: &Gate) {
        if channel == ALL || self.local.subscribers(channel) > 0 || !gate.subscribed.load(Relaxed) {
            return;
        }
        gate.subscribed.store(false, Relaxed);
        let sink = self.shard(channel).sink.lock().clone();
        if let Some(mut sink) = sink {
            let _ = tokio::time::timeout(CALL_TIMEOUT, sink.unsubscribe(topic(channel))).await;
        }
    }

    /// Removes an unsubscribed gate from the map unless another task holds it.
    fn forget_gate(&self, channel: &str, gate: Arc<Gate>) {
        let mut gates = self.gates.lock();
        // Only the map and this caller hold it: no subscribe is waiting on it.
        if Arc::strong_count(&gate) == 2 && !gate.subscribed.load(Relaxed) {
            gates.remove(channel);
        }
    }

    async fn released_now(&self, channel: &str) {
        let Some(gate) = self.gates.lock().get(channel).cloned() else {
            return;
        };
        {
            let _state = gate.state.lock().await;
            self.unsubscribe_idle(channel, &gate).await;
        }
        self.forget_gate(channel, gate);
    }

    /// Extends the position hashes of the channels this node listens to (so a channel
    /// with subscribers never loses its offsets, whatever its history keeps).
    async fn refresh_positions(&self) -> Result<(), BrokerError> {
        let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); self.shards.len()];
        for (name, gate) in self.gates.lock().iter() {
            if gate.subscribed.load(Relaxed) {
                by_shard[self.shard_index(name)].push(position_key(name));
            }
        }
        for (index, keys) in by_shard.iter().enumerate() {
            for batch in keys.chunks(TOUCH_BATCH) {
                let mut conn = self.shards[index].conn.clone();
                let mut call = self.touch.prepare_invoke();
                for key in batch {
                    call.key(key);
                }
                call.arg(KEEPALIVE_MS);
                bounded(call.invoke_async::<()>(&mut conn)).await?;
            }
        }
        Ok(())
    }

    fn presence_arrived(&self, channel: &str, event: &[u8]) {
        // `j|l:client:user`
        let mut parts = event.splitn(3, |b| *b == b':');
        let (Some(kind), Some(client), Some(user)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Some(client) = std::str::from_utf8(client)
            .ok()
            .and_then(|c| c.parse().ok())
        else {
            return;
        };
        let user = std::str::from_utf8(user)
            .ok()
            .filter(|u| !u.is_empty())
            .map(Arc::from);
        let member = Member {
            client: ClientId(client),
            user,
            info: None,
        };
        self.local.presence(channel, &member, kind == b"j");
    }

    async fn presence_event_now(
        &self,
        channel: &str,
        member: Member,
        joined: bool,
    ) -> Result<(), BrokerError> {
        let mut conn = self.shard(channel).conn.clone();
        let user = member.user.as_deref().unwrap_or("");
        let field = member.client.0.to_string();
        let mut pipe = redis::pipe();
        if joined {
            let value = format!(
                "{}:{}:{user}",
                self.local.node(),
                now_ms() + PRESENCE_TTL_MS
            );
            pipe.hset(presence_key(channel), &field, value)
                .ignore()
                .pexpire(presence_key(channel), (2 * PRESENCE_TTL_MS) as i64)
                .ignore();
        } else {
            pipe.hdel(presence_key(channel), &field).ignore();
        }
        let event = format!(
            "e:{}:{}:{user}",
            if joined { "j" } else { "l" },
            member.client.0
        );
        pipe.publish(topic(channel), event).ignore();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn presence_now(&self, channel: &str) -> Result<Vec<Member>, BrokerError> {
        let mut conn = self.shard(channel).conn.clone();
        let all: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(presence_key(channel))
                .query_async(&mut conn),
        )
        .await?;
        let now = now_ms();
        let mut members: Vec<Member> = all
            .into_iter()
            .filter_map(|(client, value)| {
                let mut parts = value.splitn(3, ':');
                let (_node, expires, user) = (
                    parts.next()?,
                    parts.next()?.parse::<u64>().ok()?,
                    parts.next()?,
                );
                let client = ClientId(client.parse().ok()?);
                (expires > now).then(|| Member {
                    client,
                    user: (!user.is_empty()).then(|| Arc::from(user)),
                    info: None,
                })
            })
            .collect();
        members.sort_by_key(|m| m.client);
        Ok(members)
    }

    /// Refreshes this node's presence entries and prunes (with leave events) entries whose
    /// node stopped refreshing them: a dead node's clients leave within `PRESENCE_TTL_MS`.
    async fn refresh_presence(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PRESENCE_REFRESH);
        loop {
            tick.tick().await;
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
        }
    }

    /// Rewrites this node's room entries with a new expiry and drops expired ones.
    async fn refresh_rooms(&self) -> redis::RedisResult<()> {
        let now = now_ms();
        type Values = Vec<(u64, String)>;
        let rooms: Vec<(Arc<str>, Values)> = {
            let mut rooms = self.rooms.lock();
            rooms
                .iter_mut()
                .map(|(room, entries)| {
                    let values = entries
                        .iter_mut()
                        .map(|(client, entry)| {
                            entry.e = now + PRESENCE_TTL_MS;
                            (*client, serde_json::to_string(&*entry).expect("serializes"))
                        })
                        .collect();
                    (room.clone(), values)
                })
                .collect()
        };
        for (room, values) in rooms {
            let mut conn = self.shard(&room).conn.clone();
            let key = room_key(&room);
            let mut pipe = redis::pipe();
            for (client, value) in values {
                pipe.hset(&key, client, value).ignore();
            }
            pipe.pexpire(&key, (2 * PRESENCE_TTL_MS) as i64).ignore();
            let all: HashMap<String, String> = pipe
                .hgetall(&key)
                .query_async::<(HashMap<String, String>,)>(&mut conn)
                .await?
                .0;
            for (client, value) in all {
                let expired =
                    serde_json::from_str::<RoomEntry>(&value).map_or(true, |e| e.e <= now);
                if expired {
                    redis::cmd("HDEL")
                        .arg(&key)
                        .arg(&client)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Rewrites this node's subscriber counts in the cluster-wide occupancy.
    async fn refresh_occupancy(&self) -> redis::RedisResult<()> {
        let node = self.local.node();
        let key = occupancy_key(node);
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for (channel, n) in self.local.channels() {
            pipe.hset(&key, &*channel, n).ignore();
        }
        pipe.pexpire(&key, (2 * PRESENCE_TTL_MS) as i64).ignore();
        pipe.zadd(OCCUPANCY_NODES, node, now + PRESENCE_TTL_MS)
            .ignore();
        let mut conn = self.shards[0].conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    async fn room_join_now(&self, room: &str, member: Member) -> Result<Vec<Member>, BrokerError> {
        let now = now_ms();
        let entry = RoomEntry {
            n: self.local.node(),
            e: now + PRESENCE_TTL_MS,
            j: now,
            u: member.user.as_deref().map(str::to_string),
            i: member.info.as_deref().map(str::to_string),
        };
        let value = serde_json::to_string(&entry).expect("serializes");
        self.rooms
            .lock()
            .entry(Arc::from(room))
            .or_default()
            .insert(member.client.0, entry);
        let key = room_key(room);
        let mut conn = self.shard(room).conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, member.client.0, value)
            .ignore()
            .pexpire(&key, (2 * PRESENCE_TTL_MS) as i64)
            .ignore()
            .hgetall(&key);
        let (all,): (HashMap<String, String>,) = bounded(pipe.query_async(&mut conn)).await?;
        Ok(room_members(all, now))
    }

    async fn room_leave_now(&self, room: &str, client: ClientId) -> Result<RoomLeft, BrokerError> {
        {
            let mut rooms = self.rooms.lock();
            if let Some(entries) = rooms.get_mut(room) {
                entries.remove(&client.0);
                if entries.is_empty() {
                    rooms.remove(room);
                }
            }
        }
        let key = room_key(room);
        let mut conn = self.shard(room).conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hget(&key, client.0)
            .hdel(&key, client.0)
            .ignore()
            .hgetall(&key);
        let (gone, all): (Option<String>, HashMap<String, String>) =
            bounded(pipe.query_async(&mut conn)).await?;
        let gone = gone
            .and_then(|v| serde_json::from_str::<RoomEntry>(&v).ok())
            .map(|e| Member {
                client,
                user: e.u.map(Arc::from),
                info: e.i.map(Arc::from),
            });
        Ok((gone, room_members(all, now_ms())))
    }

    async fn room_now(&self, room: &str) -> Result<Vec<Member>, BrokerError> {
        let mut conn = self.shard(room).conn.clone();
        let all: HashMap<String, String> = bounded(
            redis::cmd("HGETALL")
                .arg(room_key(room))
                .query_async(&mut conn),
        )
        .await?;
        Ok(room_members(all, now_ms()))
    }

    async fn close_user_now(&self, user: &str, reason: Disconnect) -> Result<(), BrokerError> {
        let index = Disconnect::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        let mut conn = self.shards[0].conn.clone();
        bounded(
            redis::cmd("PUBLISH")
                .arg("wspush:close")
                .arg(format!("{index}:{user}"))
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn occupancy_sync_now(&self, channel: &str) -> Result<(usize, usize), BrokerError> {
        let node = self.local.node();
        let now = now_ms();
        let mut conn = self.shards[0].conn.clone();
        bounded(
            self.occupancy_sync
                .key(occupancy_key(node))
                .key(OCCUPANCY_NODES)
                .arg(node)
                .arg(channel)
                .arg(self.local.subscribers(channel))
                .arg(now + PRESENCE_TTL_MS)
                .arg(now)
                .arg(2 * PRESENCE_TTL_MS)
                .invoke_async(&mut conn),
        )
        .await
    }

    async fn occupancy_now(&self) -> Result<Occupancy, BrokerError> {
        let mut conn = self.shards[0].conn.clone();
        let flat: Vec<(String, usize)> = bounded(
            self.occupancy_all
                .key(OCCUPANCY_NODES)
                .arg(now_ms())
                .invoke_async(&mut conn),
        )
        .await?;
        let mut all: Vec<(Arc<str>, usize)> =
            flat.into_iter().map(|(c, n)| (Arc::from(c), n)).collect();
        all.sort();
        Ok(all)
    }

    async fn refresh_channel(&self, channel: &str) -> redis::RedisResult<()> {
        let mut conn = self.shard(channel).conn.clone();
        let key = presence_key(channel);
        let now = now_ms();
        let mut pipe = redis::pipe();
        for member in self.local.members(channel) {
            let user = member.user.as_deref().unwrap_or("");
            let value = format!("{}:{}:{user}", self.local.node(), now + PRESENCE_TTL_MS);
            pipe.hset(&key, member.client.0.to_string(), value).ignore();
        }
        // Entries of nodes that died go with the hash when no node refreshes it.
        pipe.pexpire(&key, (2 * PRESENCE_TTL_MS) as i64).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        for (client, value) in all {
            let mut parts = value.splitn(3, ':');
            let (Some(_node), Some(expires), Some(user)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if expires.parse::<u64>().is_ok_and(|e| e <= now) {
                // HDEL answers 1 on exactly one node: that one announces the leave.
                let removed: u32 = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&client)
                    .query_async(&mut conn)
                    .await?;
                if removed == 1 {
                    let event = format!("e:l:{client}:{user}");
                    redis::cmd("PUBLISH")
                        .arg(topic(channel))
                        .arg(event)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn send_now(&self, id: ClientId, payload: Payload) -> Result<usize, BrokerError> {
        let node = (id.0 >> 32) as u32;
        if node == self.local.node() {
            return Ok(self.local.send(id, &payload));
        }
        let mut body = format!("{}:{}:", id.0, kind_code(payload.kind)).into_bytes();
        body.extend_from_slice(&payload.data);
        let mut conn = self.shards[0].conn.clone();
        let receivers: usize = bounded(
            redis::cmd("PUBLISH")
                .arg(format!("wspush:node:{node}"))
                .arg(body)
                .query_async(&mut conn),
        )
        .await?;
        Ok(receivers.min(1))
    }

    async fn send_user_now(&self, user: &str, payload: Payload) -> Result<usize, BrokerError> {
        let mut body = format!("{}:{user}{}:", user.len(), kind_code(payload.kind)).into_bytes();
        body.extend_from_slice(&payload.data);
        let mut conn = self.shards[0].conn.clone();
        bounded(
            redis::cmd("PUBLISH")
                .arg("wspush:users")
                .arg(body)
                .query_async(&mut conn),
        )
        .await
    }

    async fn healthy_now(&self) -> bool {
        for shard in &self.shards {
            if !shard.up.load(Relaxed) {
                return false;
            }
            let mut conn = shard.conn.clone();
            let ping = tokio::time::timeout(
                Duration::from_secs(1),
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await;
            if !matches!(ping, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }
}

impl Broker for Redis {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(self.inner.publish_now(channel, payload))
    }

    fn subscribe<'a>(
        &'a self,
        client: ClientId,
        channel: &'a str,
        since: Option<Since>,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<Position, SubscribeError>> {
        Box::pin(self.inner.subscribe_now(client, channel, since, ready))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<Since>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, SubscribeError>> {
        Box::pin(self.inner.history_now(channel, since, limit))
    }

    fn send(
        &self,
        client: ClientId,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(self.inner.send_now(client, payload))
    }

    fn send_user<'a>(
        &'a self,
        user: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(self.inner.send_user_now(user, payload))
    }

    fn presence_event<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        joined: bool,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.presence_event_now(channel, member, joined))
    }

    fn released<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.inner.released_now(channel))
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.inner.healthy_now())
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(self.inner.presence_now(channel))
    }

    fn room_join<'a>(
        &'a self,
        room: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(self.inner.room_join_now(room, member))
    }

    fn room_leave<'a>(
        &'a self,
        room: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<RoomLeft, BrokerError>> {
        Box::pin(self.inner.room_leave_now(room, client))
    }

    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(self.inner.room_now(room))
    }

    fn close_user<'a>(
        &'a self,
        user: &'a str,
        reason: Disconnect,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.close_user_now(user, reason))
    }

    fn occupancy_sync<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        Box::pin(self.inner.occupancy_sync_now(channel))
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Occupancy, BrokerError>> {
        Box::pin(self.inner.occupancy_now())
    }

    fn tracked(&self) -> usize {
        let gates = self.inner.gates.lock();
        gates.len() - usize::from(gates.contains_key(ALL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_binary_data_with_colons() {
        let env = parse_envelope(b"42:b:1732000001:1700000000000:0:a:b\x00c").unwrap();
        assert_eq!(env.offset, 42);
        assert_eq!(&*env.epoch, "1732000001");
        assert_eq!(env.at_ms, 1_700_000_000_000);
        assert_eq!(env.payload.kind, Kind::Binary);
        assert_eq!(&env.payload.data[..], b"a:b\x00c");
        assert!(env.payload.event.is_none());
        assert!(parse_envelope(b"x:t:e:1:0:d").is_none());
        let event = encode_event(&Payload::text("x").with_event(Event {
            name: "client-typing".into(),
            exclude: Some(ClientId(7)),
            user_id: Some("u1".into()),
        }));
        let raw = format!("1:t:9:9:{}:{event}hello", event.len());
        let env = parse_envelope(raw.as_bytes()).unwrap();
        let e = env.payload.event.unwrap();
        assert_eq!(
            (&*e.name, e.exclude, e.user_id.as_deref()),
            ("client-typing", Some(ClientId(7)), Some("u1"))
        );
        assert_eq!(&env.payload.data[..], b"hello");
    }
}
