//! What the Pusher front needs cluster-wide, over Redis (`impl Cluster for Redis`):
//! rooms (a hash per room of members with user info, entries refreshed by their node),
//! occupancy (a hash per node of its subscriber counts, summed over the live nodes by a
//! script), and closing a user's connections on every node (a pub/sub message).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::wire::{held_key, node_rooms_key, occupancy_key, room_key, OCCUPANCY_NODES};
use super::{bounded, now_ms, Inner, Redis};
use crate::broker::{BrokerError, Cluster, Member, Occupancy, Reaped, RoomLeft};
use crate::model::{ClientId, Disconnect};

/// Records a node's subscriber count of a channel and sums it over live nodes.
/// KEYS: the node's occupancy hash, the live-nodes zset. ARGV: node, channel, count,
/// node expiry (ms), now (ms), hash ttl (ms). Returns {before, after} cluster-wide.
pub(super) const OCCUPANCY_SYNC: &str = r#"
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
pub(super) const OCCUPANCY_ALL: &str = r#"
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

/// A channel's subscriber count summed over live nodes. KEYS: the live-nodes zset.
/// ARGV: now (ms), channel, the occupancy key of node 0 (the others replace its `0`).
pub(super) const OCCUPANCY_ONE: &str = r#"
local total = 0
local base = string.sub(ARGV[3], 1, -2)
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  total = total + tonumber(redis.call('HGET', base .. node, ARGV[2]) or '0')
end
return total
"#;

/// Claims the nodes whose heartbeat expired (never this node): each is removed from the
/// live-nodes zset by exactly one caller. KEYS: the zset. ARGV: now (ms), this node.
pub(super) const REAP_NODES: &str = r#"
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local claimed = {}
for _, n in ipairs(dead) do
  if n ~= ARGV[2] and redis.call('ZREM', KEYS[1], n) == 1 then
    table.insert(claimed, n)
  end
end
return claimed
"#;

/// Removes a dead node's entries from a room; the removed ones as a flat field, value
/// list. KEYS: the room's hash. ARGV: the node.
pub(super) const REAP_ROOM: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local removed = {}
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  if ok and type(e) == 'table' and e.n == tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(removed, all[i])
    table.insert(removed, all[i + 1])
  end
end
return removed
"#;

/// A room entry as stored in the room's hash (field: the client id).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RoomEntry {
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

impl Inner {
    /// Names rooms in this node's room list (`replace`: the list is exactly these).
    pub(super) async fn record_rooms(
        &self,
        rooms: &[&str],
        replace: bool,
    ) -> redis::RedisResult<()> {
        let key = node_rooms_key(self.local.node());
        let mut pipe = redis::pipe();
        pipe.atomic();
        if replace {
            pipe.del(&key).ignore();
        }
        if !rooms.is_empty() {
            pipe.sadd(&key, rooms).ignore();
            pipe.pexpire(&key, (2 * self.ttl()) as i64).ignore();
        }
        let mut conn = self.shards[0].conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Removes a dead node's members from a room; the members removed.
    async fn reap_room(&self, room: &str, node: u32) -> Result<Vec<Member>, BrokerError> {
        let mut conn = self.shard(room).conn.clone();
        let flat: Vec<(String, String)> = bounded(
            self.reap_room
                .key(room_key(room))
                .arg(node)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(flat
            .into_iter()
            .filter_map(|(client, value)| {
                let e: RoomEntry = serde_json::from_str(&value).ok()?;
                Some(Member {
                    client: ClientId(client.parse().ok()?),
                    user: e.u.map(Arc::from),
                    info: e.i.map(Arc::from),
                })
            })
            .collect())
    }

    /// Rewrites this node's room entries with a new expiry and drops expired ones.
    pub(super) async fn refresh_rooms(&self) -> redis::RedisResult<()> {
        let (now, ttl) = (now_ms(), self.ttl());
        type Values = Vec<(u64, String)>;
        let rooms: Vec<(Arc<str>, Values)> = {
            let mut rooms = self.rooms.lock();
            rooms
                .iter_mut()
                .map(|(room, entries)| {
                    let values = entries
                        .iter_mut()
                        .map(|(client, entry)| {
                            entry.e = now + ttl;
                            (*client, serde_json::to_string(&*entry).expect("serializes"))
                        })
                        .collect();
                    (room.clone(), values)
                })
                .collect()
        };
        let names: Vec<&str> = rooms.iter().map(|(room, _)| &**room).collect();
        self.record_rooms(&names, true).await?;
        for (room, values) in rooms {
            let mut conn = self.shard(&room).conn.clone();
            let key = room_key(&room);
            let mut pipe = redis::pipe();
            for (client, value) in values {
                pipe.hset(&key, client, value).ignore();
            }
            pipe.pexpire(&key, (2 * ttl) as i64).ignore();
            let all: HashMap<String, String> = pipe
                .hgetall(&key)
                .query_async::<(HashMap<String, String>,)>(&mut conn)
                .await?
                .0;
            for (client, value) in all {
                // A dead node's entries are left to the node that reaps it (which
                // announces them) for one more TTL; then they go anyway.
                let expired = serde_json::from_str::<RoomEntry>(&value)
                    .map_or(true, |e| e.e.saturating_add(ttl) <= now);
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
    pub(super) async fn refresh_occupancy(&self) -> redis::RedisResult<()> {
        let node = self.local.node();
        let key = occupancy_key(node);
        let (now, ttl) = (now_ms(), self.ttl());
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        for (channel, n) in self.local.channels() {
            pipe.hset(&key, &*channel, n).ignore();
        }
        pipe.pexpire(&key, (2 * ttl) as i64).ignore();
        pipe.zadd(OCCUPANCY_NODES, node, now + ttl).ignore();
        let mut conn = self.shards[0].conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }
}

impl Cluster for Redis {
    fn room_join<'a>(
        &'a self,
        room: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(async move {
            let (now, ttl) = (now_ms(), self.inner.ttl());
            let entry = RoomEntry {
                n: self.inner.local.node(),
                e: now + ttl,
                j: now,
                u: member.user.as_deref().map(str::to_string),
                i: member.info.as_deref().map(str::to_string),
            };
            let value = serde_json::to_string(&entry).expect("serializes");
            self.inner
                .rooms
                .lock()
                .entry(Arc::from(room))
                .or_default()
                .insert(member.client.0, entry);
            let key = room_key(room);
            let mut conn = self.inner.shard(room).conn.clone();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset(&key, member.client.0, value)
                .ignore()
                .pexpire(&key, (2 * ttl) as i64)
                .ignore()
                .hgetall(&key);
            let (all,): (HashMap<String, String>,) = bounded(pipe.query_async(&mut conn)).await?;
            // Named in this node's room list, so a node that reaps it finds the room.
            bounded(self.inner.record_rooms(&[room], false)).await?;
            Ok(room_members(all, now))
        })
    }

    fn room_leave<'a>(
        &'a self,
        room: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<RoomLeft, BrokerError>> {
        Box::pin(async move {
            {
                let mut rooms = self.inner.rooms.lock();
                if let Some(entries) = rooms.get_mut(room) {
                    entries.remove(&client.0);
                    if entries.is_empty() {
                        rooms.remove(room);
                    }
                }
            }
            let key = room_key(room);
            let mut conn = self.inner.shard(room).conn.clone();
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
        })
    }

    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shard(room).conn.clone();
            let all: HashMap<String, String> = bounded(
                redis::cmd("HGETALL")
                    .arg(room_key(room))
                    .query_async(&mut conn),
            )
            .await?;
            Ok(room_members(all, now_ms()))
        })
    }

    fn close_user<'a>(
        &'a self,
        user: &'a str,
        reason: Disconnect,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let index = Disconnect::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            let mut conn = self.inner.shards[0].conn.clone();
            bounded(
                redis::cmd("PUBLISH")
                    .arg("wspush:close")
                    .arg(format!("{index}:{user}"))
                    .query_async::<()>(&mut conn),
            )
            .await
        })
    }

    fn occupancy_sync<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        Box::pin(async move {
            let node = self.inner.local.node();
            let (now, ttl) = (now_ms(), self.inner.ttl());
            let mut conn = self.inner.shards[0].conn.clone();
            bounded(
                self.inner
                    .occupancy_sync
                    .key(occupancy_key(node))
                    .key(OCCUPANCY_NODES)
                    .arg(node)
                    .arg(channel)
                    .arg(self.inner.local.subscribers(channel))
                    .arg(now + ttl)
                    .arg(now)
                    .arg(2 * ttl)
                    .invoke_async(&mut conn),
            )
            .await
        })
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Occupancy, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shards[0].conn.clone();
            let flat: Vec<(String, usize)> = bounded(
                self.inner
                    .occupancy_all
                    .key(OCCUPANCY_NODES)
                    .arg(now_ms())
                    .invoke_async(&mut conn),
            )
            .await?;
            let mut all: Vec<(Arc<str>, usize)> =
                flat.into_iter().map(|(c, n)| (Arc::from(c), n)).collect();
            all.sort();
            Ok(all)
        })
    }

    fn count<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shards[0].conn.clone();
            bounded(
                self.inner
                    .occupancy_one
                    .key(OCCUPANCY_NODES)
                    .arg(now_ms())
                    .arg(channel)
                    .arg(occupancy_key(0))
                    .invoke_async(&mut conn),
            )
            .await
        })
    }

    fn hold<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shard(key).conn.clone();
            bounded(
                redis::cmd("SET")
                    .arg(held_key(key))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async::<()>(&mut conn),
            )
            .await
        })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(async move {
            let mut conn = self.inner.shard(key).conn.clone();
            let n: u64 =
                bounded(redis::cmd("DEL").arg(held_key(key)).query_async(&mut conn)).await?;
            Ok(n == 1)
        })
    }

    fn reap(&self) -> BoxFuture<'_, Result<Vec<Reaped>, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.shards[0].conn.clone();
            let dead: Vec<u32> = bounded(
                inner
                    .reap_nodes
                    .key(OCCUPANCY_NODES)
                    .arg(now_ms())
                    .arg(inner.local.node())
                    .invoke_async(&mut conn),
            )
            .await?;
            let mut out = Vec::new();
            for node in dead {
                let (occupancy, rooms) = (occupancy_key(node), node_rooms_key(node));
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hgetall(&occupancy)
                    .smembers(&rooms)
                    .del(&occupancy)
                    .ignore()
                    .del(&rooms)
                    .ignore();
                let (channels, rooms): (HashMap<String, usize>, Vec<String>) =
                    bounded(pipe.query_async(&mut conn)).await?;
                let counts: HashMap<Arc<str>, usize> =
                    self.occupancy().await?.into_iter().collect();
                let mut names: Vec<&String> = channels.keys().chain(rooms.iter()).collect();
                names.sort();
                names.dedup();
                tracing::warn!(node, channels = names.len(), "reaping a dead node");
                for name in names {
                    let removed = inner.reap_room(name, node).await?;
                    let occupied = channels.contains_key(name);
                    if removed.is_empty() && !occupied {
                        continue;
                    }
                    let rest = if removed.is_empty() {
                        Vec::new()
                    } else {
                        self.room(name).await?
                    };
                    out.push(Reaped {
                        channel: Arc::from(name.as_str()),
                        removed,
                        rest,
                        count: counts.get(name.as_str()).copied().unwrap_or(0),
                        occupied,
                    });
                }
            }
            Ok(out)
        })
    }
}
