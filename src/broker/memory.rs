//! The in-memory broker: offsets, history and presence in this process; delivery
//! straight into the local sink (the hub's registry). A channel's state lives only while it has a local
//! subscriber or retained history; freed and used again, it starts a new life under a
//! new epoch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{self, BoxFuture};
use parking_lot::Mutex;

use super::Sink;
use super::{
    check_since, life_epoch, Broker, BrokerError, Cluster, History, Member, Occupancy, Position,
    Ready, RoomLeft, Since, SubscribeError,
};
use crate::model::{ClientId, Disconnect, Message, Payload};
use crate::namespace::Namespaces;
use crate::shard::{fnv, Sharded};

/// Channels `sweep` looks at per call, at most (plus the rest of the last shard).
const SWEEP_BUDGET: usize = 20_000;

/// One node, no setup: offsets and history live in this process.
pub struct Memory {
    sink: Arc<dyn Sink>,
    namespaces: Arc<Namespaces>,
    channels: Sharded<Arc<str>, Chan>,
    /// This process's epoch; a channel life's epoch is `epoch.LIFE`.
    epoch: Arc<str>,
    /// The number the next channel life gets.
    lives: AtomicU64,
    /// The shard `sweep` starts at next.
    cursor: AtomicUsize,
    /// Rooms: members in join order.
    rooms: Mutex<HashMap<Arc<str>, Vec<Member>>>,
    /// The subscriber counts `occupancy_sync` last recorded.
    occupancy: Mutex<HashMap<Arc<str>, usize>>,
    /// Held markers (`Cluster::hold`) and their expiry, with the map's size after the
    /// last sweep.
    held: Mutex<(HashMap<String, std::time::Instant>, usize)>,
}

/// A channel's broker state.
struct Chan {
    name: Arc<str>,
    offset: u64,
    /// Which life of the channel this is (see `Memory::lives`).
    life: u64,
    history: VecDeque<(Instant, Arc<Message>)>,
}

impl Chan {
    /// Drops messages beyond the namespace's size or age limits.
    fn trim(&mut self, size: usize, ttl: Option<std::time::Duration>, now: Instant) {
        while self.history.len() > size {
            self.history.pop_front();
        }
        if let Some(ttl) = ttl {
            while self
                .history
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > ttl)
            {
                self.history.pop_front();
            }
        }
    }

    /// The stored messages after `since`, or the oldest offset available if history
    /// does not reach back that far.
    fn after<'a>(
        &'a self,
        since: &Since,
        epoch: &str,
    ) -> Result<impl Iterator<Item = &'a Arc<Message>> + 'a, u64> {
        let from = since.offset;
        let oldest = self
            .history
            .front()
            .map_or(self.offset + 1, |(_, m)| m.offset);
        check_since(since, oldest, self.offset, epoch)?;
        Ok(self
            .history
            .iter()
            .map(|(_, m)| m)
            .filter(move |m| m.offset > from))
    }
}

impl Memory {
    /// A broker delivering into `sink`, keeping history as `namespaces` say.
    pub fn new(sink: Arc<dyn Sink>, namespaces: Arc<Namespaces>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Memory {
            sink,
            namespaces,
            channels: Sharded::new(),
            rooms: Mutex::default(),
            occupancy: Mutex::default(),
            held: Mutex::default(),
            epoch: Arc::from(format!("{:x}", nanos ^ ((std::process::id() as u64) << 32))),
            lives: AtomicU64::new(1),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The channel's state in its shard, starting a new life when it has none.
    fn live_chan<'s>(&self, shard: &'s mut HashMap<Arc<str>, Chan>, channel: &str) -> &'s mut Chan {
        if !shard.contains_key(channel) {
            let chan = self.new_chan(channel);
            shard.insert(chan.name.clone(), chan);
        }
        shard.get_mut(channel).expect("inserted above")
    }

    /// A new life of `channel`: offsets from 0 under a new epoch.
    fn new_chan(&self, channel: &str) -> Chan {
        Chan {
            name: Arc::from(channel),
            offset: 0,
            life: self.lives.fetch_add(1, Relaxed),
            history: VecDeque::new(),
        }
    }

    fn position(&self, chan: &Chan) -> Position {
        Position {
            offset: chan.offset,
            epoch: life_epoch(&self.epoch, chan.life),
        }
    }

    /// True when nothing needs the channel's state: no retained history and no local
    /// subscriber (subscribes take the channel's shard lock, so none slips in).
    fn idle(&self, chan: &Chan) -> bool {
        chan.history.is_empty() && self.sink.subscribers(&chan.name) == 0
    }

    /// The stored messages of `chan` after `since`, at most `limit`.
    fn page(
        &self,
        chan: &Chan,
        since: Option<Since>,
        limit: usize,
    ) -> Result<History, SubscribeError> {
        let position = self.position(chan);
        let since = since.unwrap_or(Since {
            offset: chan
                .history
                .front()
                .map_or(chan.offset, |(_, m)| m.offset - 1),
            epoch: None,
        });
        match chan.after(&since, &position.epoch) {
            Ok(msgs) => Ok(History {
                messages: msgs.take(limit).cloned().collect(),
                position,
            }),
            Err(oldest) => Err(SubscribeError::HistoryGone { oldest, position }),
        }
    }
}

// Nothing here waits: every body runs when called and returns a ready future.
impl Broker for Memory {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        let ns = self.namespaces.of(channel);
        let mut shard = self.channels.shard(fnv(channel)).lock();
        let chan = self.live_chan(&mut shard, channel);
        chan.offset += 1;
        let msg = Message::new(chan.name.clone(), chan.offset, payload);
        // Delivering under the channel's lock keeps deliveries in offset order.
        let heard = self.sink.deliver(&msg);
        if ns.keeps_history() {
            let now = Instant::now();
            chan.history.push_back((now, Arc::new(msg)));
            chan.trim(ns.history_size, ns.history_ttl, now);
        }
        let offset = chan.offset;
        if !heard && chan.history.is_empty() {
            // Nobody listens and nothing is kept: the offset is of no use to anyone.
            shard.remove(channel);
        }
        Box::pin(future::ready(Ok(offset)))
    }

    fn subscribe<'a>(
        &'a self,
        client: ClientId,
        channel: &'a str,
        since: Option<Since>,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<Position, SubscribeError>> {
        if self.sink.is_subscribed(client, channel) {
            return Box::pin(future::ready(Err(SubscribeError::AlreadySubscribed)));
        }
        let ns = self.namespaces.of(channel);
        let mut shard = self.channels.shard(fnv(channel)).lock();
        let chan = self.live_chan(&mut shard, channel);
        chan.trim(ns.history_size, ns.history_ttl, Instant::now());
        let position = self.position(chan);
        // Under the channel's lock no publish can slip between replay and going live.
        let replay: Result<Vec<Arc<Message>>, u64> = match &since {
            None => Ok(Vec::new()),
            Some(since) => chan
                .after(since, &position.epoch)
                .map(|msgs| msgs.cloned().collect()),
        };
        let replay = match replay {
            Ok(replay) => replay,
            Err(oldest) => {
                if self.idle(chan) {
                    shard.remove(channel);
                }
                let gone = SubscribeError::HistoryGone { oldest, position };
                return Box::pin(future::ready(Err(gone)));
            }
        };
        ready(&position);
        for msg in replay {
            self.sink.replay(client, &msg);
        }
        self.sink.attach(client, channel);
        if self.idle(chan) {
            // The sink refused the subscription.
            shard.remove(channel);
        }
        Box::pin(future::ready(Ok(position)))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<Since>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, SubscribeError>> {
        let ns = self.namespaces.of(channel);
        let mut shard = self.channels.shard(fnv(channel)).lock();
        let Some(chan) = shard.get_mut(channel) else {
            // Unknown: nothing stored, and nothing is created. The epoch is the one the
            // channel's next life gets (unless another life starts first).
            let unknown = Chan {
                name: Arc::from(""),
                offset: 0,
                life: self.lives.load(Relaxed),
                history: VecDeque::new(),
            };
            return Box::pin(future::ready(self.page(&unknown, since, limit)));
        };
        chan.trim(ns.history_size, ns.history_ttl, Instant::now());
        let page = self.page(chan, since, limit);
        if self.idle(chan) {
            shard.remove(channel);
        }
        Box::pin(future::ready(page))
    }

    fn send(
        &self,
        client: ClientId,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self.sink.send(client, &payload))))
    }

    fn send_user<'a>(
        &'a self,
        user: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self.sink.send_user(user, &payload))))
    }

    fn presence_event<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        joined: bool,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.sink.presence(channel, &member, joined);
        Box::pin(future::ready(Ok(())))
    }

    /// Frees `channel`'s state if nothing needs it any more.
    fn released<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        let ns = self.namespaces.of(channel);
        let mut shard = self.channels.shard(fnv(channel)).lock();
        if let Some(chan) = shard.get_mut(channel) {
            chan.trim(ns.history_size, ns.history_ttl, Instant::now());
            if self.idle(chan) {
                shard.remove(channel);
            }
        }
        Box::pin(future::ready(()))
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        Box::pin(future::ready(true))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(future::ready(Ok(self.sink.members(channel))))
    }

    fn tracked(&self) -> usize {
        self.channels.shards().map(|s| s.lock().len()).sum()
    }

    /// Trims the history of a few shards' channels and frees the idle ones.
    fn sweep(&self) -> BoxFuture<'_, ()> {
        let shards = self.channels.len();
        let mut seen = 0;
        for _ in 0..shards {
            let index = self.cursor.fetch_add(1, Relaxed) % shards;
            let mut shard = self.channels.shard_at(index).lock();
            seen += shard.len();
            let now = Instant::now();
            shard.retain(|name, chan| {
                let ns = self.namespaces.of(name);
                chan.trim(ns.history_size, ns.history_ttl, now);
                !self.idle(chan)
            });
            // Give back the table of a burst of channels that is gone.
            if shard.capacity() > 64 && shard.capacity() > 4 * shard.len() {
                shard.shrink_to_fit();
            }
            if seen >= SWEEP_BUDGET {
                break;
            }
        }
        Box::pin(future::ready(()))
    }
}

impl Cluster for Memory {
    fn room_join<'a>(
        &'a self,
        room: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        let mut rooms = self.rooms.lock();
        let members = rooms.entry(Arc::from(room)).or_default();
        members.retain(|m| m.client != member.client);
        members.push(member);
        Box::pin(future::ready(Ok(members.clone())))
    }

    fn room_leave<'a>(
        &'a self,
        room: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<RoomLeft, BrokerError>> {
        let mut rooms = self.rooms.lock();
        let Some(members) = rooms.get_mut(room) else {
            return Box::pin(future::ready(Ok((None, Vec::new()))));
        };
        let gone = members
            .iter()
            .position(|m| m.client == client)
            .map(|i| members.remove(i));
        let left = members.clone();
        if left.is_empty() {
            rooms.remove(room);
        }
        Box::pin(future::ready(Ok((gone, left))))
    }

    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        let members = self.rooms.lock().get(room).cloned().unwrap_or_default();
        Box::pin(future::ready(Ok(members)))
    }

    fn close_user<'a>(
        &'a self,
        user: &'a str,
        reason: Disconnect,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.sink.close_user(user, reason);
        Box::pin(future::ready(Ok(())))
    }

    fn occupancy_sync<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        let now = self.sink.subscribers(channel);
        let mut occupancy = self.occupancy.lock();
        let before = if now == 0 {
            occupancy.remove(channel)
        } else {
            occupancy.insert(Arc::from(channel), now)
        };
        Box::pin(future::ready(Ok((before.unwrap_or(0), now))))
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Occupancy, BrokerError>> {
        Box::pin(future::ready(Ok(self.sink.channels())))
    }

    fn count<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self.sink.subscribers(channel))))
    }

    fn hold<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (held, swept) = &mut *self.held.lock();
        let now = std::time::Instant::now();
        // Keyed by client input: expired markers go whenever the map doubled.
        if held.len() >= (2 * *swept).max(1024) {
            held.retain(|_, until| *until > now);
            *swept = held.len();
        }
        held.insert(
            key.to_string(),
            now + std::time::Duration::from_millis(ttl_ms),
        );
        Box::pin(future::ready(Ok(())))
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BrokerError>> {
        let now = std::time::Instant::now();
        let taken = self
            .held
            .lock()
            .0
            .remove(key)
            .is_some_and(|until| until > now);
        Box::pin(future::ready(Ok(taken)))
    }

    fn reap(&self) -> BoxFuture<'_, Result<Vec<crate::broker::Reaped>, BrokerError>> {
        Box::pin(future::ready(Ok(Vec::new())))
    }
}
