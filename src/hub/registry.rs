//! `Registry`: this node's clients and who is subscribed to what, and the fan-out of
//! messages into their outboxes. Brokers deliver into it (it is their `Sink`); it never
//! calls a broker, and knows wire formats only through each client's `Format`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::{Client, Coalescer, Pushed, QueueLimits, Stats, ALL};
use crate::auth::Grant;
use crate::broker::{Member, Sink};
use crate::deflate::Deflate;
use crate::model::{ClientId, Disconnect, Format, Message, Payload, FORMATS};
use crate::shard::{fnv, Sharded};

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
    /// Each format's keep-alive frame, made on first use.
    pings: [OnceLock<Bytes>; FORMATS],
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
            pings: Default::default(),
            stats: Stats::default(),
            coalescer: Coalescer::new(0, 1),
        }
    }

    /// Closes the subscribers of a channel whose subscriptions carry offsets (the
    /// channel's offsets restarted): they reconnect and recover.
    pub(crate) fn resync(&self, channel: &str) {
        let shard = self.channels.shard(fnv(channel)).lock();
        for client in shard.get(channel).into_iter().flatten() {
            if client.format.offsets {
                client.close(Disconnect::Resync);
            }
        }
    }

    /// Seconds since the registry was made (the clock of `Client::seen`).
    pub(crate) fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Registers a new client.
    pub(crate) fn register(
        &self,
        format: &'static Format,
        remote: SocketAddr,
        grant: Option<Arc<Grant>>,
        deflate: Option<Deflate>,
    ) -> Arc<Client> {
        let id = ClientId(self.next_id.fetch_add(1, Relaxed));
        let client = Client::new(id, format, remote, self.limits, self.now());
        let client = Arc::new(client.with_deflate(deflate));
        if let Some(grant) = grant {
            self.authenticate(&client, grant);
        }
        self.clients.shard(id.0).lock().insert(id, client.clone());
        self.stats.connection_opened(format);
        client
    }

    /// Gives a client a (new) grant, indexing it under its user id.
    pub(crate) fn authenticate(&self, client: &Arc<Client>, grant: Arc<Grant>) {
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

    /// Removes a client's subscriptions and its user binding (it stays registered).
    pub(crate) fn leave_all(&self, client: &Client) {
        if let Some(user) = client.user() {
            self.unbind_user(&user, client.id);
        }
        for channel in client.take_channels() {
            self.remove_subscriber(&channel, client.id);
        }
    }

    /// Removes a client and all its subscriptions.
    pub(crate) fn unregister(&self, client: &Client) {
        self.leave_all(client);
        if self
            .clients
            .shard(client.id.0)
            .lock()
            .remove(&client.id)
            .is_some()
        {
            self.stats.connection_closed(client.format);
        }
    }

    /// Looks a client up by id.
    pub(crate) fn client(&self, id: ClientId) -> Option<Arc<Client>> {
        self.clients.shard(id.0).lock().get(&id).cloned()
    }

    /// Every connected client, ordered by id.
    pub(crate) fn clients(&self) -> Vec<Arc<Client>> {
        let mut all: Vec<_> = self
            .clients
            .shards()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Subscribes a client to a channel; false when it already was.
    pub(crate) fn subscribe(&self, client: &Arc<Client>, channel: &str) -> bool {
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
    pub(crate) fn unsubscribe(&self, client: &Client, channel: &str) -> bool {
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
    pub(crate) fn channels(&self) -> Vec<(Arc<str>, usize)> {
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
    pub(crate) fn subscriber_count(&self, channel: &str) -> usize {
        self.channels
            .shard(fnv(channel))
            .lock()
            .get(channel)
            .map_or(0, Vec::len)
    }

    /// Fans a message out to its channel's local subscribers (or, for `*`, every client
    /// whose format takes broadcasts), each getting the frame of its wire format, encoded
    /// once; false when the channel had no local subscriber.
    pub(crate) fn deliver(&self, msg: &Message) -> bool {
        if &*msg.channel == ALL {
            for shard in self.clients.shards() {
                for client in shard.lock().values() {
                    if client.format.broadcasts {
                        self.fan_out(client, msg);
                    }
                }
            }
            return true;
        }
        let shard = self.channels.shard(fnv(&msg.channel)).lock();
        let Some(subs) = shard.get(&msg.channel) else {
            return false;
        };
        if msg.payload.event.is_some() {
            // An event: skip the excluded connection, and clients whose format does not
            // understand protocol events when it is one.
            let (exclude, internal) = (msg.payload.excluded(), msg.payload.protocol_only());
            for client in subs {
                if Some(client.id) != exclude && (!internal || client.format.protocol_events) {
                    self.fan_out(client, msg);
                }
            }
        } else {
            for client in subs {
                self.fan_out(client, msg);
            }
        }
        true
    }

    /// The fan-out push: queue the frame, wake the session through the coalescer.
    fn fan_out(&self, client: &Arc<Client>, msg: &Message) {
        let (pushed, wake) = self.push_message_quiet(client, msg);
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

    /// Queues a message for one client in its wire format, compressed when the client
    /// negotiated permessage-deflate: with the frame every such client of the same
    /// window shares (deflated once per message), or through its own compressor. True
    /// when the client needs a wake-up.
    fn push_message_quiet(&self, client: &Client, msg: &Message) -> (Pushed, bool) {
        let format = client.format;
        let Some(deflate) = client.deflate() else {
            return client.push_quiet(msg.frame(format).clone());
        };
        match deflate.shared_bits() {
            Some(bits) => client.push_quiet(msg.deflated(format, bits, |plain| {
                self.stats.deflates.fetch_add(1, Relaxed);
                crate::deflate::compress_shared(plain, bits)
            })),
            None => {
                let (pushed, ran) =
                    deflate.compress_own(msg.frame(format), |f| client.push_quiet(f));
                if ran {
                    self.stats.deflates.fetch_add(1, Relaxed);
                }
                pushed
            }
        }
    }

    /// Queues a message for one client in its wire format.
    pub(crate) fn push_message(&self, client: &Client, msg: &Message) -> Pushed {
        let (pushed, wake) = self.push_message_quiet(client, msg);
        self.count(pushed);
        if wake {
            client.notify();
        }
        pushed
    }

    /// Tells a channel's subscribers whose format has presence events that `member`
    /// joined or left (each format's event encoded once; never to the member itself).
    pub(crate) fn deliver_presence(&self, channel: &str, member: &Member, joined: bool) {
        let mut frames: [Option<Bytes>; FORMATS] = Default::default();
        // Compressed once per format and window too (permessage-deflate clients).
        let mut deflated: Vec<(usize, u8, Bytes)> = Vec::new();
        let shard = self.channels.shard(fnv(channel)).lock();
        for client in shard.get(channel).into_iter().flatten() {
            let Some(encode) = client.format.presence else {
                continue;
            };
            if client.id != member.client {
                let slot = client.format.slot;
                let frame = frames[slot].get_or_insert_with(|| encode(channel, member, joined));
                match client.deflate().and_then(|d| d.shared_bits()) {
                    Some(bits) => {
                        let i = match deflated.iter().position(|d| (d.0, d.1) == (slot, bits)) {
                            Some(i) => i,
                            None => {
                                self.stats.deflates.fetch_add(1, Relaxed);
                                let compressed = crate::deflate::compress_shared(frame, bits);
                                deflated.push((slot, bits, compressed));
                                deflated.len() - 1
                            }
                        };
                        self.count(client.push_as_is(deflated[i].2.clone()));
                    }
                    None => {
                        self.push_frame(client, frame.clone());
                    }
                }
            }
        }
    }

    /// This node's members of a channel (its subscribers).
    pub(crate) fn members(&self, channel: &str) -> Vec<Member> {
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
    pub(crate) fn push_frame(&self, client: &Client, frame: Bytes) -> Pushed {
        let pushed = client.push(frame);
        self.count(pushed);
        pushed
    }

    /// Sends a payload to one local client; the number of clients it reached (0 or 1).
    pub(crate) fn send_local(&self, id: ClientId, payload: &Payload) -> usize {
        let Some(client) = self.client(id) else {
            return 0;
        };
        let msg = Message::new(Arc::from(id.to_string()), 0, payload.clone());
        usize::from(self.push_message(&client, &msg) == Pushed::Queued)
    }

    /// Sends a payload to every local connection of a user; how many it reached.
    pub(crate) fn send_user_local(&self, user: &str, payload: &Payload) -> usize {
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
    pub(crate) fn close_user_local(&self, user: &str, reason: Disconnect) -> usize {
        let clients = self.user_clients(user);
        for client in &clients {
            client.close(reason);
        }
        clients.len()
    }

    /// Asks every client to close with `reason`.
    pub fn close_all(&self, reason: Disconnect) {
        for client in self.clients() {
            client.close(reason);
        }
    }

    /// Pings clients idle for `interval` seconds (each with its format's keep-alive)
    /// and closes those silent for `interval + timeout` (they did not answer the
    /// previous ping) with `PongTimeout`.
    ///
    /// Also closes clients whose token expired. Called about once a second.
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
                    client.close(Disconnect::TokenExpired);
                    continue;
                }
                let idle = now.saturating_sub(client.last_seen());
                if idle >= interval + timeout {
                    self.stats.ping_timeouts.fetch_add(1, Relaxed);
                    client.close(Disconnect::PongTimeout);
                } else if idle >= interval && now.saturating_sub(client.last_ping()) >= resend {
                    client.pinged(now);
                    let format = client.format;
                    client.push(self.pings[format.slot].get_or_init(format.ping).clone());
                }
            }
        }
    }
}

impl Sink for Registry {
    fn node(&self) -> u32 {
        self.node
    }

    fn attach(&self, client: ClientId, channel: &str) -> bool {
        self.client(client)
            .is_some_and(|client| self.subscribe(&client, channel))
    }

    fn is_subscribed(&self, client: ClientId, channel: &str) -> bool {
        self.client(client)
            .is_some_and(|client| client.is_subscribed(channel))
    }

    fn subscribers(&self, channel: &str) -> usize {
        self.subscriber_count(channel)
    }

    fn deliver(&self, msg: &Message) -> bool {
        Registry::deliver(self, msg)
    }

    fn replay(&self, client: ClientId, msg: &Message) {
        if let Some(client) = self.client(client) {
            self.push_message(&client, msg);
        }
    }

    fn presence(&self, channel: &str, member: &Member, joined: bool) {
        self.deliver_presence(channel, member, joined);
    }

    fn members(&self, channel: &str) -> Vec<Member> {
        Registry::members(self, channel)
    }

    fn channels(&self) -> Vec<(Arc<str>, usize)> {
        Registry::channels(self)
    }

    fn send(&self, client: ClientId, payload: &Payload) -> usize {
        self.send_local(client, payload)
    }

    fn send_user(&self, user: &str, payload: &Payload) -> usize {
        self.send_user_local(user, payload)
    }

    fn close_user(&self, user: &str, reason: Disconnect) -> usize {
        self.close_user_local(user, reason)
    }

    fn disconnect(&self, client: ClientId, reason: Disconnect) -> usize {
        self.client(client).map_or(0, |c| {
            c.close(reason);
            1
        })
    }

    fn resync(&self, channel: &str) {
        Registry::resync(self, channel)
    }
}
