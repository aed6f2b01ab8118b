//! The in-memory broker: offsets, history and presence in this process; delivery
//! straight into the local registry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{self, BoxFuture};
use parking_lot::Mutex;

use super::{
    check_since, Broker, BrokerError, History, Member, Occupancy, Position, Ready, RoomLeft, Since,
    SubscribeError,
};
use crate::hub::{fnv, Client, ClientId, Message, Payload, Registry, Sharded};
use crate::namespace::Namespaces;
use crate::ws::close::CloseReason;

/// One node, no setup: offsets and history live in this process.
pub struct Memory {
    registry: Arc<Registry>,
    namespaces: Arc<Namespaces>,
    channels: Sharded<Arc<str>, Chan>,
    epoch: Arc<str>,
    /// Rooms: members in join order.
    rooms: Mutex<HashMap<Arc<str>, Vec<Member>>>,
    /// The subscriber counts `occupancy_sync` last recorded.
    occupancy: Mutex<HashMap<Arc<str>, usize>>,
}

/// A channel's broker state.
struct Chan {
    name: Arc<str>,
    offset: u64,
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
    /// A broker delivering into `registry`, keeping history as `namespaces` say.
    pub fn new(registry: Arc<Registry>, namespaces: Arc<Namespaces>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Memory {
            registry,
            namespaces,
            channels: Sharded::new(),
            rooms: Mutex::default(),
            occupancy: Mutex::default(),
            epoch: Arc::from(format!("{:x}", nanos ^ ((std::process::id() as u64) << 32))),
        }
    }

    fn with_chan<T>(&self, channel: &str, f: impl FnOnce(&mut Chan, &Self) -> T) -> T {
        let mut shard = self.channels.shard(fnv(channel)).lock();
        if !shard.contains_key(channel) {
            let name: Arc<str> = Arc::from(channel);
            shard.insert(
                name.clone(),
                Chan {
                    name,
                    offset: 0,
                    history: VecDeque::new(),
                },
            );
        }
        f(shard.get_mut(channel).expect("inserted above"), self)
    }

    fn position(&self, chan: &Chan) -> Position {
        Position {
            offset: chan.offset,
            epoch: self.epoch.clone(),
        }
    }

    fn publish_now(&self, channel: &str, payload: Payload) -> u64 {
        let ns = self.namespaces.of(channel);
        self.with_chan(channel, |chan, me| {
            chan.offset += 1;
            let msg = Message::new(chan.name.clone(), chan.offset, payload);
            // Delivering under the channel's lock keeps deliveries in offset order.
            me.registry.deliver(&msg);
            if ns.keeps_history() {
                let now = Instant::now();
                chan.history.push_back((now, Arc::new(msg)));
                chan.trim(ns.history_size, ns.history_ttl, now);
            }
            chan.offset
        })
    }

    fn subscribe_now(
        &self,
        client: &Arc<Client>,
        channel: &str,
        since: Option<Since>,
        ready: Ready<'_>,
    ) -> Result<Position, SubscribeError> {
        if client.is_subscribed(channel) {
            return Err(SubscribeError::AlreadySubscribed);
        }
        let ns = self.namespaces.of(channel);
        self.with_chan(channel, |chan, me| {
            chan.trim(ns.history_size, ns.history_ttl, Instant::now());
            let position = me.position(chan);
            // Under the channel's lock no publish can slip between replay and going live.
            let replay: Vec<Arc<Message>> = match &since {
                None => Vec::new(),
                Some(since) => match chan.after(since, &me.epoch) {
                    Ok(msgs) => msgs.cloned().collect(),
                    Err(oldest) => return Err(SubscribeError::HistoryGone { oldest, position }),
                },
            };
            ready(&position);
            for msg in replay {
                me.registry.push_message(client, &msg);
            }
            me.registry.subscribe(client, channel);
            Ok(position)
        })
    }

    fn history_now(
        &self,
        channel: &str,
        since: Option<Since>,
        limit: usize,
    ) -> Result<History, SubscribeError> {
        let ns = self.namespaces.of(channel);
        self.with_chan(channel, |chan, me| {
            chan.trim(ns.history_size, ns.history_ttl, Instant::now());
            let position = me.position(chan);
            let since = since.unwrap_or(Since {
                offset: chan
                    .history
                    .front()
                    .map_or(chan.offset, |(_, m)| m.offset - 1),
                epoch: None,
            });
            match chan.after(&since, &me.epoch) {
                Ok(msgs) => Ok(History {
                    messages: msgs.take(limit).cloned().collect(),
                    position,
                }),
                Err(oldest) => Err(SubscribeError::HistoryGone { oldest, position }),
            }
        })
    }
}

impl Broker for Memory {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(future::ready(Ok(self.publish_now(channel, payload))))
    }

    fn subscribe<'a>(
        &'a self,
        client: &'a Arc<Client>,
        channel: &'a str,
        since: Option<Since>,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<Position, SubscribeError>> {
        Box::pin(future::ready(
            self.subscribe_now(client, channel, since, ready),
        ))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<Since>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, SubscribeError>> {
        Box::pin(future::ready(self.history_now(channel, since, limit)))
    }

    fn send(
        &self,
        client: ClientId,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self
            .registry
            .send_local(client, &payload))))
    }

    fn send_user<'a>(
        &'a self,
        user: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self
            .registry
            .send_user_local(user, &payload))))
    }

    fn presence_event<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        joined: bool,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.registry.deliver_presence(channel, &member, joined);
        Box::pin(future::ready(Ok(())))
    }

    fn released<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(future::ready(()))
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        Box::pin(future::ready(true))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>> {
        Box::pin(future::ready(Ok(self.registry.members(channel))))
    }

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
        reason: CloseReason,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.registry.close_user_local(user, reason);
        Box::pin(future::ready(Ok(())))
    }

    fn occupancy_sync<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>> {
        let now = self.registry.subscriber_count(channel);
        let mut occupancy = self.occupancy.lock();
        let before = if now == 0 {
            occupancy.remove(channel)
        } else {
            occupancy.insert(Arc::from(channel), now)
        };
        Box::pin(future::ready(Ok((before.unwrap_or(0), now))))
    }

    fn occupancy(&self) -> BoxFuture<'_, Result<Occupancy, BrokerError>> {
        Box::pin(future::ready(Ok(self.registry.channels())))
    }
}
