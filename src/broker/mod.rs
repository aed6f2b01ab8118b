//! The broker seam: where offsets are assigned, history is kept, and messages fan out
//! across nodes. Two traits, both implemented by [`Memory`] (one node, the default) and
//! [`Redis`] (a cluster):
//!
//! - [`Broker`], the core every front uses through the hub: publish, subscribe (with
//!   recovery from `since`), history, presence, direct sends to a client or a user.
//! - [`Cluster`], what the Pusher front needs on top, handed to it on its own: rooms
//!   (presence members with user info), occupancy summed over nodes, and closing a
//!   user's connections on every node.
//!
//! A broker delivers into a [`Sink`] (the hub's registry, seen through a dozen calls), in
//! offset order per channel, and must pass `tests/broker.rs`.
//!
//! **Writing another broker** (say NATS with JetStream) means implementing [`Broker`]:
//! `publish` (publish to a per-channel subject of a stream keeping `history_size`
//! messages for `history_ttl`; the stream sequence of the channel's subject, or a
//! per-channel counter, is the offset and the stream's creation the epoch), `subscribe`
//! (one subscription per channel with local subscribers; read the stored messages after
//! `since` through `check_since`, replay them into the sink, then `Sink::attach`, and
//! deliver live messages with `Sink::deliver` in offset order, filling gaps from the
//! stream), `history`, `released` (drop the channel's subscription once the sink has no
//! subscriber left), `send`/`send_user` (a per-node and a users subject), `presence_event`
//! and `presence` (a key-value bucket with per-entry expiry), `healthy` and `tracked`;
//! `sweep` has a default. [`Cluster`] is needed only to serve the Pusher front on that
//! broker (a key-value bucket for rooms and occupancy, a subject for `close_user`).
//! `redis/` shows every piece: `pubsub.rs` the ordered delivery and gap filling,
//! `channels.rs` the core operations.

mod memory;
mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use self::redis::Redis;
pub use crate::model::Member;
use crate::model::{ClientId, Disconnect, Message, Payload};
pub use memory::Memory;

/// Checks that messages after `since` can be recovered from a history whose oldest
/// stored offset is `oldest` (`current + 1` when empty), for a channel at `current` in
/// `epoch`. On failure returns the oldest recoverable offset.
pub fn check_since(since: &Since, oldest: u64, current: u64, epoch: &str) -> Result<(), u64> {
    let epoch_ok = since.epoch.as_deref().is_none_or(|e| e == epoch);
    // `since` comes from the client: `u64::MAX` must not wrap (issue #12).
    let reaches = since
        .offset
        .checked_add(1)
        .is_some_and(|next| next >= oldest);
    if !epoch_ok || since.offset > current || !reaches {
        return Err(oldest);
    }
    Ok(())
}

/// The epoch of one life of a channel: `base` (the broker's, new when its data is lost)
/// and the life's number (a channel whose state was freed starts a new life, so offsets
/// that start over again never meet a client's `since` from an older life).
pub fn life_epoch(base: &str, life: u64) -> Arc<str> {
    Arc::from(format!("{base}.{life}"))
}

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backend cannot be reached; nothing was published.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where a channel stands: its last offset and the epoch offsets belong to (a new epoch
/// means offsets restarted, so older offsets cannot be recovered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The channel's last assigned offset (0 = nothing published yet).
    pub offset: u64,
    /// The offset generation.
    pub epoch: Arc<str>,
}

/// A point to recover from: messages after `offset` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last offset the client has.
    pub offset: u64,
    /// The epoch that offset belongs to, when the client knows it.
    pub epoch: Option<String>,
}

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// History no longer reaches back to the requested offset (or the epoch changed).
    #[error("history no longer reaches back to that offset; oldest available is {oldest}")]
    HistoryGone {
        /// The oldest offset still available (what `since` would have to be, plus one).
        oldest: u64,
        /// The channel's position now.
        position: Position,
    },
    /// The client is already subscribed to the channel.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The client is subscribed to the most channels it may be (the number).
    #[error("subscribed to {0} channels already, the most one connection may have (max_channels_per_connection)")]
    TooManyChannels(usize),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Called once a subscription takes effect, before any replayed or live message is
/// queued for the client (so a reply queued here comes first).
pub type Ready<'a> = Box<dyn FnOnce(&Position) + Send + 'a>;

/// A page of history.
#[derive(Debug)]
pub struct History {
    /// Stored messages after `since`, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// The channel's position now.
    pub position: Position,
}

/// A room after a leave: the member removed (`None` when it was not in), the members left.
pub type RoomLeft = (Option<Member>, Vec<Member>);

/// Channels with subscribers and their cluster-wide subscriber counts.
pub type Occupancy = Vec<(Arc<str>, usize)>;

/// What a dead node left in one channel, removed by the node that reaped it
/// (`Cluster::reap`).
#[derive(Debug, Clone)]
pub struct Reaped {
    /// The channel (and room) the dead node had subscribers in.
    pub channel: Arc<str>,
    /// The dead node's room members in it, removed.
    pub removed: Vec<Member>,
    /// The room's members left, on every live node.
    pub rest: Vec<Member>,
    /// The channel's cluster-wide subscriber count once the dead node is gone.
    pub count: usize,
    /// The dead node had subscribers in the channel (not only room members).
    pub occupied: bool,
}

/// Where a broker delivers: this node's clients and subscriptions (the hub's registry),
/// seen through what a broker needs and nothing more.
pub trait Sink: Send + Sync + 'static {
    /// This node's id (0 for a single node).
    fn node(&self) -> u32;
    /// Subscribes a local client to a channel; false when it already was, or is gone.
    fn attach(&self, client: ClientId, channel: &str) -> bool;
    /// True when a local client is subscribed to a channel.
    fn is_subscribed(&self, client: ClientId, channel: &str) -> bool;
    /// Local subscribers of a channel.
    fn subscribers(&self, channel: &str) -> usize;
    /// Fans a message out to the channel's local subscribers; false when it had none.
    fn deliver(&self, msg: &Message) -> bool;
    /// Queues one message for one local client (a replay from history).
    fn replay(&self, client: ClientId, msg: &Message);
    /// Tells a channel's local subscribers that a member joined or left.
    fn presence(&self, channel: &str, member: &Member, joined: bool);
    /// This node's members of a channel (its subscribers).
    fn members(&self, channel: &str) -> Vec<Member>;
    /// Channels with local subscribers, and their counts.
    fn channels(&self) -> Vec<(Arc<str>, usize)>;
    /// Sends to one local client; how many it reached (0 or 1).
    fn send(&self, client: ClientId, payload: &Payload) -> usize;
    /// Sends to every local connection of a user; how many it reached.
    fn send_user(&self, user: &str, payload: &Payload) -> usize;
    /// Closes every local connection of a user; how many.
    fn close_user(&self, user: &str, reason: Disconnect) -> usize;
    /// Closes the channel's subscribers whose subscriptions carry offsets: the
    /// channel's offsets restarted, so they reconnect and recover.
    fn resync(&self, channel: &str);
}

/// A message broker: assigns per-channel offsets, keeps history and delivers to
/// subscribers on every node.
pub trait Broker: Send + Sync + 'static {
    /// Publishes to `channel` (`*` = every client); resolves to the assigned offset once
    /// the message is accepted.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// Subscribes a local client. With `since`, every stored message after it is queued
    /// first, then live ones, with no gap and no duplicate.
    fn subscribe<'a>(
        &'a self,
        client: ClientId,
        channel: &'a str,
        since: Option<Since>,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<Position, SubscribeError>>;

    /// Stored messages of a channel after `since` (all stored when `None`), at most `limit`.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<Since>,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, SubscribeError>>;

    /// Sends to one client wherever it is connected; resolves to how many it reached.
    fn send(&self, client: ClientId, payload: Payload)
        -> BoxFuture<'_, Result<usize, BrokerError>>;

    /// Sends to every connection of a user wherever they are; how many it reached.
    fn send_user<'a>(
        &'a self,
        user: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// Announces that `member` joined (`true`) or left a presence channel.
    fn presence_event<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
        joined: bool,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Called after a local subscriber of `channel` went away (a cluster broker drops
    /// its subscription once no local subscriber is left).
    fn released<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()>;

    /// Whether the broker's backend is reachable.
    fn healthy(&self) -> BoxFuture<'_, bool>;

    /// Who is in a presence channel, on every node.
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>>;

    /// How many channels the broker holds state for on this node (offsets, history,
    /// subscriptions): channels with local subscribers or retained history only.
    fn tracked(&self) -> usize;

    /// Frees state that is no longer needed (history past its TTL); called about once a
    /// second, doing a bounded amount of work each time.
    fn sweep(&self) -> BoxFuture<'_, ()> {
        Box::pin(futures_util::future::ready(()))
    }
}

/// The cluster-wide state the Pusher front needs beyond the core [`Broker`]: presence
/// rooms with user info, subscriber counts summed over nodes, and closing a user's
/// connections on every node. Implemented by the same brokers, handed to the Pusher
/// front on its own (the hub holds only the core broker).
pub trait Cluster: Send + Sync + 'static {
    /// Adds `member` to the cluster-wide room `room` (a membership list with user info,
    /// as Pusher presence channels need; unlike `Broker::presence_event` it announces
    /// nothing); every member after the join, on every node, oldest first. Atomic per
    /// room: of two connections of one user joining at once, exactly one sees no other of
    /// its user.
    fn room_join<'a>(
        &'a self,
        room: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>>;

    /// Removes a connection from a room; the member removed (`None` when it was not in)
    /// and every member left, on every node, oldest first. Atomic like `room_join`.
    fn room_leave<'a>(
        &'a self,
        room: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<RoomLeft, BrokerError>>;

    /// Every member of a room, on every node, oldest first.
    fn room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BrokerError>>;

    /// Closes with `reason` every connection bound to `user` (`Registry::authenticate`),
    /// on every node.
    fn close_user<'a>(
        &'a self,
        user: &'a str,
        reason: Disconnect,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Records this node's subscriber count of `channel` (read from the sink) in the
    /// cluster-wide occupancy; the channel's cluster-wide count just before and after.
    /// Atomic: of several nodes syncing at once, one sees the count leave (or reach) 0.
    fn occupancy_sync<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(usize, usize), BrokerError>>;

    /// Every channel with subscribers on some node and its cluster-wide subscriber count,
    /// sorted by name.
    fn occupancy(&self) -> BoxFuture<'_, Result<Occupancy, BrokerError>>;

    /// A channel's cluster-wide subscriber count (read only; records nothing).
    fn count<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>>;

    /// Holds a marker `key` for `ttl_ms` (a delayed webhook waiting for its time).
    fn hold<'a>(&'a self, key: &'a str, ttl_ms: u64) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes a held marker; true when this call removed it. Of several callers on any
    /// nodes, exactly one gets true.
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, BrokerError>>;

    /// Nodes whose heartbeat expired (they died): each is claimed by exactly one live
    /// node, which removes the dead node's room members and occupancy and gets what they
    /// were, to announce it. Empty for a single node.
    fn reap(&self) -> BoxFuture<'_, Result<Vec<Reaped>, BrokerError>>;
}
