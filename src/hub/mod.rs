//! The hub: owns clients and channel subscriptions, fans messages out to outboxes, and
//! routes every publish through the broker. Knows no wire format: each client's `Format`
//! (defined by its front) encodes what it receives.

mod channels;
pub mod client;
mod coalesce;
mod pace;
mod registry;
mod stats;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::{Broker, BrokerError, History, Member, Position, Ready, Since, SubscribeError};
pub use crate::model::{ClientId, Disconnect, Event, Format, Kind, Message, Payload, ALL};
use crate::namespace::Namespaces;
pub use client::{Client, Flushed, Pushed, QueueLimits};
pub use coalesce::Coalescer;
pub use registry::Registry;
pub use stats::Stats;

/// A client as the console and the API list it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Its id.
    pub id: ClientId,
    /// Its wire format's name.
    pub format: &'static str,
    /// Its address.
    pub remote: std::net::SocketAddr,
    /// The channels it is subscribed to.
    pub channels: Vec<Arc<str>>,
}

/// The hub handle: cheap to clone, shared by every front and publish source.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    namespaces: Arc<Namespaces>,
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
        let position = self
            .broker
            .subscribe(client.id, channel, since, ready)
            .await?;
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
        self.leave_all(client).await;
        self.registry.unregister(client);
    }

    /// Takes a closing client out of every channel and its user binding, announcing its
    /// leaves; it stays registered (and counted as connected) until `disconnect`. A
    /// session calls this before it sends its close frame, so what the client sees last
    /// is already true of the channels (issue #14 item 7).
    pub async fn leave_all(&self, client: &Arc<Client>) {
        let channels = client.channels();
        self.registry.leave_all(client);
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

    /// The local registry (for the server's flusher and sweeper, and the metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This node's counters.
    pub fn stats(&self) -> &Stats {
        &self.registry.stats
    }

    /// Registers a new client of `format` (with its token grant, if any).
    pub fn register(
        &self,
        format: &'static Format,
        remote: std::net::SocketAddr,
        grant: Option<Arc<crate::auth::Grant>>,
    ) -> Arc<Client> {
        self.registry.register(format, remote, grant, None)
    }

    /// Registers a new client that negotiated permessage-deflate (`None`: it did not).
    pub fn register_with_deflate(
        &self,
        format: &'static Format,
        remote: std::net::SocketAddr,
        grant: Option<Arc<crate::auth::Grant>>,
        deflate: Option<crate::deflate::Deflate>,
    ) -> Arc<Client> {
        self.registry.register(format, remote, grant, deflate)
    }

    /// Gives a client a (new) grant, binding it to the grant's user.
    pub fn authenticate(&self, client: &Arc<Client>, grant: Arc<crate::auth::Grant>) {
        self.registry.authenticate(client, grant)
    }

    /// Queues a frame of the front's own (a reply, an error) for one client.
    pub fn push(&self, client: &Client, frame: bytes::Bytes) -> Pushed {
        self.registry.push_frame(client, frame)
    }

    /// Looks a local client up by id.
    pub fn client(&self, id: ClientId) -> Option<Arc<Client>> {
        self.registry.client(id)
    }

    /// This node's clients, ordered by id: what the console and the API list.
    pub fn client_list(&self) -> Vec<ClientInfo> {
        self.registry
            .clients()
            .into_iter()
            .map(|c| ClientInfo {
                id: c.id,
                format: c.format.name,
                remote: c.remote,
                channels: c.channels(),
            })
            .collect()
    }

    /// Channels with local subscribers and their counts, sorted by name.
    pub fn channel_list(&self) -> Vec<(Arc<str>, usize)> {
        self.registry.channels()
    }

    /// Local subscribers of a channel.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.registry.subscriber_count(channel)
    }

    /// Seconds since the hub started (the clock of `Client::seen`).
    pub fn now(&self) -> u32 {
        self.registry.now()
    }

    /// Publishes to a channel (`*` = every client) through the broker; the offset.
    pub async fn publish(&self, channel: &str, payload: Payload) -> Result<u64, BrokerError> {
        self.registry.stats.published.fetch_add(1, Relaxed);
        let start = Instant::now();
        let offset = self.broker.publish(channel, payload).await?;
        self.registry
            .stats
            .publish_latency
            .observe(start.elapsed().as_secs_f64());
        Ok(offset)
    }

    /// Whether the broker is reachable.
    pub async fn healthy(&self) -> bool {
        self.broker.healthy().await
    }

    /// Sends to every connection of a user; how many it reached.
    pub async fn send_user(&self, user: &str, payload: Payload) -> Result<usize, BrokerError> {
        self.broker.send_user(user, payload).await
    }

    /// Sends to one client wherever it is connected; how many clients it reached.
    pub async fn send(&self, id: ClientId, payload: Payload) -> Result<usize, BrokerError> {
        self.broker.send(id, payload).await
    }

    /// Closes one client wherever it is connected: 1 when it was connected here or its
    /// node was reached, else 0.
    pub async fn close_client(
        &self,
        id: ClientId,
        reason: Disconnect,
    ) -> Result<usize, BrokerError> {
        self.broker.disconnect(id, reason).await
    }

    /// This node's id (the high 32 bits of its client ids; 0 without a cluster).
    pub fn node(&self) -> u32 {
        crate::broker::Sink::node(&*self.registry)
    }
}
