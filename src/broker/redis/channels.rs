//! The core broker over Redis: publish, subscribe with recovery, history, presence and
//! direct sends (`impl Broker for Redis`), with the Lua scripts that keep a channel's
//! offset, epoch and history consistent across nodes.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::pubsub::{Gate, GateState};
use super::wire::{encode_event, kind_code, parse_envelope, Envelope, Keys};
use super::{bounded, now_ms, Inner, Redis, KEEPALIVE_MS, PRESENCE_TTL_MS};
use crate::broker::{
    check_since, Broker, BrokerError, History, Member, Position, Ready, Since, SubscribeError,
};
use crate::model::{ClientId, Disconnect, Message, Payload, ALL};

/// The start of `PUBLISH` and `READ`: the channel's current `epoch` (nil when it has no
/// life), with `base()` and `new_life()`. KEYS: position hash (`o` offset, `e` epoch, `g`
/// replication id), history, base epoch (`replid:base`), lives counter (one tag).
///
/// A life remembers the Redis replication id it was last written under. A replica
/// promoted by a failover gets a new id and keeps its old master's as `master_replid2`,
/// and it may lack the last writes its master acknowledged: a life written under that
/// old id starts over with a new epoch, so an offset is never reused under an epoch a
/// client has seen. (A restart or a slot migration also brings a new id, with the data
/// intact: the life goes on, and only the base of new epochs is renewed.)
macro_rules! life_script {
    () => {
        r#"
local info = redis.call('INFO', 'replication')
local gen = string.match(info, 'master_replid:(%w+)') or ''
local prev = string.match(info, 'master_replid2:(%w+)') or ''
local function base()
  local b = redis.call('GET', KEYS[3])
  if b then
    local g, v = string.match(b, '^(%w*):(.+)$')
    if g == gen then return v end
  end
  local t = redis.call('TIME')
  local v = t[1] .. string.format('%06d', t[2])
  redis.call('SET', KEYS[3], gen .. ':' .. v)
  return v
end
local function new_life()
  local e = base() .. '.' .. redis.call('INCR', KEYS[4])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'g', gen)
  return e
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if epoch then
  local g = redis.call('HGET', KEYS[1], 'g')
  if g == prev then
    epoch = nil
    redis.call('DEL', KEYS[1])
  elseif g ~= gen then
    redis.call('HSET', KEYS[1], 'g', gen)
  end
end
"#
    };
}

/// Assigns the next offset, keeps history, publishes. KEYS: as `life_script!`. ARGV:
/// pub/sub channel, kind, data, history size, history ttl (ms), event metadata (JSON, or
/// empty), keepalive (ms). The position hash lives as long as the history, and at least
/// the keepalive while a node listens; a channel without history that nobody hears
/// keeps nothing.
pub(super) const PUBLISH: &str = concat!(
    life_script!(),
    r#"
if not epoch then
  epoch = new_life()
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
"#
);

/// Reads a channel's epoch, offset, history length and the stored messages from offset
/// ARGV[1] on (history offsets are contiguous, so the list index follows from the offset).
/// KEYS: as `PUBLISH`. ARGV: from, `1` to start the channel's life if it has none (and
/// keep it at least the keepalive, ARGV[3] ms), `0` to only look: an unknown channel
/// then reads as offset 0 in the epoch its next life gets (unless another starts first).
pub(super) const READ: &str = concat!(
    life_script!(),
    r#"
if not epoch then
  if ARGV[2] ~= '1' then
    return {base() .. '.' .. (tonumber(redis.call('GET', KEYS[4]) or '0') + 1), 0, 0, {}}
  end
  epoch = new_life()
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
"#
);

/// Keeps the position hashes of channels this node listens to alive. KEYS: position
/// hashes. ARGV: keepalive (ms); an expiry is only ever extended.
pub(super) const TOUCH: &str = r#"
local keep = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < keep then
    redis.call('PEXPIRE', key, keep)
  end
end
return 0
"#;

/// Position hashes refreshed per `TOUCH` call.
const TOUCH_BATCH: usize = 500;

/// What `READ` returned.
pub(super) struct Snapshot {
    pub(super) epoch: Arc<str>,
    pub(super) offset: u64,
    /// The oldest offset still recoverable (`offset + 1` when nothing is stored).
    pub(super) oldest: u64,
    /// Stored, unexpired messages from the requested offset on.
    pub(super) history: Vec<Envelope>,
}

impl Inner {
    /// The channel's position and its stored messages with offsets `>= from`; with
    /// `start`, a channel without a position starts a life (for a subscription).
    pub(super) async fn snapshot(
        &self,
        channel: &str,
        from: u64,
        start: bool,
    ) -> Result<Snapshot, BrokerError> {
        let mut conn = self.shard(channel).conn.clone();
        let k = self.keys.channel(channel);
        let (epoch, offset, len, raw): (String, u64, u64, Vec<Vec<u8>>) = bounded(
            self.read
                .key(k.pos)
                .key(k.history)
                .key(k.base)
                .key(k.lives)
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

    /// A subscribe with the channel's gate locked: this node's Redis subscription, the
    /// snapshot, the replay after `since`, then the client attached.
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
            let msg = Message::new(Arc::from(channel), env.offset, env.payload.clone())
                .in_epoch(env.epoch.clone());
            self.local.replay(client, &msg);
        }
        self.local.attach(client, channel);
        Ok(position)
    }

    /// Extends the position hashes of the channels this node listens to (so a channel
    /// with subscribers never loses its offsets, whatever its history keeps).
    pub(super) async fn refresh_positions(&self) -> Result<(), BrokerError> {
        // One script call touches one shard, and in a Redis Cluster one hash tag.
        let mut groups: HashMap<(usize, u64), Vec<String>> = HashMap::new();
        for (name, gate) in self.gates.lock().iter() {
            if gate.subscribed.load(Relaxed) {
                let tag = if self.cluster { Keys::tag(name) } else { 0 };
                groups
                    .entry((self.shard_index(name), tag))
                    .or_default()
                    .push(self.keys.position(name));
            }
        }
        for ((index, _), keys) in groups {
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
}

impl Broker for Redis {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(async move {
            let ns = self.inner.namespaces.of(channel);
            let mut conn = self.inner.shard(channel).conn.clone();
            let k = self.inner.keys.channel(channel);
            // History is kept for its TTL (the server gives every history namespace one);
            // a day when a caller's namespaces have none.
            let ttl = ns
                .history_ttl
                .map_or(86_400_000, |t| (t.as_millis() as u64).max(1));
            let (offset, _epoch): (u64, String) = bounded(
                self.inner
                    .publish
                    .key(k.pos)
                    .key(k.history)
                    .key(k.base)
                    .key(k.lives)
                    .arg(self.inner.keys.topic(channel))
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
        })
    }

    fn subscribe<'a>(
        &'a self,
        client: ClientId,
        channel: &'a str,
        since: Option<Since>,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<Position, SubscribeError>> {
        Box::pin(async move {
            if self.inner.local.is_subscribed(client, channel) {
                return Err(SubscribeError::AlreadySubscribed);
            }
            let gate = self.inner.gate(channel);
            let result = {
                let mut state = gate.state.lock().await;
                let result = self
                    .inner
                    .subscribe_locked(client, channel, since, ready, &gate, &mut state)
                    .await;
                if result.is_err() || self.inner.local.subscribers(channel) == 0 {
                    // A failed subscribe (history gone, Redis trouble, refused by the
                    // registry) leaves no Redis subscription behind when no local client
                    // needs it.
                    self.inner.unsubscribe_idle(channel, &gate).await;
                }
                result
            };
            if !gate.subscribed.load(Relaxed) {
                self.inner.forget_gate(channel, gate);
            }
            result
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<Since>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, SubscribeError>> {
        Box::pin(async move {
            let from = since.as_ref().map_or(0, |s| s.offset.saturating_add(1));
            // Reading history of an unknown channel creates nothing.
            let snap = self.inner.snapshot(channel, from, false).await?;
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
                .map(|m| {
                    Arc::new(
                        Message::new(Arc::from(channel), m.offset, m.payload).in_epoch(m.epoch),
                    )
                })
                .collect();
            Ok(History { messages, position })
        })
    }

    fn released<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(gate) = self.inner.gates.lock().get(channel).cloned() else {
                return;
            };
            {
                let _state = gate.state.lock().await;
                self.inner.unsubscribe_idle(channel, &gate).await;
            }
            self.inner.forget_gate(channel, gate);
        })
    }

    fn send(&self, id: ClientId, payload: Payload) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(async move {
            let node = (id.0 >> 32) as u32;
            if node == self.inner.local.node() {
                return Ok(self.inner.local.send(id, &payload));
            }
            let mut body = format!("{}:{}:", id.0, kind_code(payload.kind)).into_bytes();
            body.extend_from_slice(&payload.data);
            let mut conn = self.inner.shards[0].conn.clone();
            let receivers: usize = bounded(
                redis::cmd("PUBLISH")
                    .arg(self.inner.keys.node_topic(node))
                    .arg(body)
                    .query_async(&mut conn),
            )
            .await?;
            Ok(receivers.min(1))
        })
    }

    fn disconnect(
        &self,
        id: ClientId,
        reason: Disconnect,
    ) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(async move {
            let node = (id.0 >> 32) as u32;
            if node == self.inner.local.node() {
                return Ok(self.inner.local.disconnect(id, reason));
            }
            // `id:k:reason` on the node's topic (reasons travel by their index).
            let index = Disconnect::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            let mut conn = self.inner.shards[0].conn.clone();
            let receivers: usize = bounded(
                redis::cmd("PUBLISH")
                    .arg(self.inner.keys.node_topic(node))
                    .arg(format!("{}:k:{index}", id.0))
                    .query_async(&mut conn),
            )
            .await?;
            Ok(receivers.min(1))
        })
    }

    fn send_user<'a>(
        &'a self,
        user: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let mut body =
                format!("{}:{user}{}:", user.len(), kind_code(payload.kind)).into_bytes();
            body.extend_from_slice(&payload.data);
            let mut conn = self.inner.shards[0].conn.clone();
            bounded(
                redis::cmd("PUBLISH")
                    .arg(self.inner.keys.users_topic())
                    .arg(body)
                    .query_async(&mut conn),
            )
            .await
        })
    }

    fn presence_event<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        joined: bool,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shard(channel).conn.clone();
            let user = member.user.as_deref().unwrap_or("");
            let field = member.client.0.to_string();
            let key = self.inner.keys.presence(channel);
            let mut pipe = redis::pipe();
            if joined {
                let value = format!(
                    "{}:{}:{user}",
                    self.inner.local.node(),
                    now_ms() + PRESENCE_TTL_MS
                );
                pipe.hset(&key, &field, value)
                    .ignore()
                    .pexpire(&key, (2 * PRESENCE_TTL_MS) as i64)
                    .ignore();
            } else {
                pipe.hdel(&key, &field).ignore();
            }
            let event = format!(
                "e:{}:{}:{user}",
                if joined { "j" } else { "l" },
                member.client.0
            );
            pipe.publish(self.inner.keys.topic(channel), event).ignore();
            bounded(pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shard(channel).conn.clone();
            let all: HashMap<String, String> = bounded(
                redis::cmd("HGETALL")
                    .arg(self.inner.keys.presence(channel))
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
        })
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            for shard in &self.inner.shards {
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
        })
    }

    fn tracked(&self) -> usize {
        let gates = self.inner.gates.lock();
        gates.len() - usize::from(gates.contains_key(ALL))
    }
}
