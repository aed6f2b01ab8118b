//! The Pusher Channels front: pusher-js, Laravel Echo and the Pusher server SDKs work
//! against wspush unchanged. Protocol 7 over WebSocket at `/app/{key}` (a `Session` in
//! the Pusher [`front`], handled by [`protocol`] and `channels`), the signed HTTP API under `/apps/{id}`
//! ([`api`]), per-app config ([`apps`]), signatures ([`auth`]), presence and cache channels
//! ([`presence`]) and webhooks ([`webhooks`]).
//!
//! Every event goes through `Hub::publish`: an app's channel `name` is the hub channel
//! `name` for the default app (the first configured), so native publishes reach Pusher
//! subscribers as event `message` and Pusher events reach raw/JSON subscribers as their
//! data; other apps' channels are `pusher:{id} name` in the hub, out of reach of the others.

pub mod api;
pub mod apps;
pub mod auth;
mod channels;
pub mod close;
mod counts;
pub mod format;
pub mod front;
pub mod presence;
pub mod protocol;
mod reaper;
pub mod user;
mod watchlist;
pub mod webhooks;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::broker::{BrokerError, Cluster};
use crate::frame;
use crate::hub::{ClientId, Event, Hub, Payload};
pub use apps::{App, AppLimits, Apps, Tenant, Webhook};
pub use front::{Conn, PusherFront};
pub use user::UserId;

/// The Pusher routes (their state: the front), merged into `http::router`.
pub fn router(front: PusherFront) -> Router {
    Router::new()
        .route("/app/{key}", get(protocol::upgrade))
        .route("/apps/{app_id}/events", post(api::events))
        .route("/apps/{app_id}/batch_events", post(api::batch_events))
        .route("/apps/{app_id}/channels", get(api::channels))
        .route("/apps/{app_id}/channels/{channel}", get(api::channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(api::users))
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(api::terminate),
        )
        // The Python SDK leaves out `/apps/{id}`: the app is found by `auth_key`.
        .route(
            "/users/{user_id}/terminate_connections",
            post(api::terminate_by_key),
        )
        .with_state(front)
}

/// A connection's socket id, `^\d+\.\d+$`: the node and the node-local part of its client
/// id (client ids are unique across a cluster, so socket ids are too).
pub fn socket_id(id: ClientId) -> String {
    format!("{}.{}", id.0 >> 32, id.0 & 0xffff_ffff)
}

/// The client id behind a socket id.
pub fn parse_socket_id(s: &str) -> Option<ClientId> {
    let (node, local) = s.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(node) || !digits(local) {
        return None;
    }
    let (node, local): (u64, u64) = (node.parse().ok()?, local.parse().ok()?);
    (node <= u64::from(u32::MAX) && local <= u64::from(u32::MAX))
        .then_some(ClientId((node << 32) | local))
}

/// What a channel name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anyone may subscribe.
    Public,
    /// `private-`: needs a channel auth signature.
    Private,
    /// `private-encrypted-`: signed, payloads opaque, no client events.
    Encrypted,
    /// `presence-`: signed with `channel_data`; members are tracked.
    Presence,
    /// `#server-to-user-{id}`: only the connection signed in as `id`.
    User,
}

/// The kind of a channel, and whether it is a cache channel.
pub fn kind_of(channel: &str) -> (Kind, bool) {
    let (kind, rest) = if let Some(rest) = channel.strip_prefix("private-encrypted-") {
        (Kind::Encrypted, rest)
    } else if let Some(rest) = channel.strip_prefix("private-") {
        (Kind::Private, rest)
    } else if let Some(rest) = channel.strip_prefix("presence-") {
        (Kind::Presence, rest)
    } else if channel.starts_with("#server-to-user-") {
        (Kind::User, "")
    } else {
        (Kind::Public, channel)
    };
    (kind, rest.starts_with("cache-"))
}

/// Checks a channel name: Pusher's characters (`A-Za-z0-9_-=@,.;`), at most `max` bytes;
/// `#server-to-user-{id}` is also allowed.
pub fn valid_channel(name: &str, max: usize) -> Result<(), String> {
    let body = name.strip_prefix("#server-to-user-").unwrap_or(name);
    if body.is_empty() {
        return Err("channel name is empty".into());
    }
    if name.len() > max {
        return Err(format!("channel name longer than {max} bytes"));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
    {
        return Err(format!(
            "channel name {name:?} holds characters outside A-Za-z0-9_-=@,.;"
        ));
    }
    Ok(())
}

/// A server frame `{"event":..,"channel":..,"data":..}`.
pub fn frame(event: &str, channel: Option<&str>, data: Value) -> Bytes {
    let mut v = json!({ "event": event });
    if let Some(channel) = channel {
        v["channel"] = channel.into();
    }
    v["data"] = data;
    frame::encode(frame::OP_TEXT, v.to_string().as_bytes())
}

/// The Pusher front's state, shared by its handlers (`AppState::pusher`).
pub struct Pusher {
    /// The configured apps.
    pub apps: Apps,
    /// The hub everything is published through.
    pub hub: Hub,
    /// The broker's cluster-wide rooms, occupancy and user termination.
    pub cluster: Arc<dyn Cluster>,
    /// The last events of cache channels (presence members are in the broker's rooms).
    pub rooms: presence::Rooms,
    /// The webhook queue.
    pub webhooks: webhooks::Webhooks,
    /// Seconds of silence after which clients should ping (`activity_timeout`).
    pub activity_timeout: u32,
    /// Channels whose subscription count events are being debounced.
    counts: counts::Counts,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").field("apps", &self.apps).finish()
    }
}

impl Pusher {
    /// The Pusher front serving `apps` (see `crate::setup::build`) over the hub and the
    /// broker's `cluster` side; starts the webhook worker when an app has webhooks.
    /// Clients are told to ping after `activity_timeout` seconds of silence.
    pub fn new(apps: Apps, hub: Hub, cluster: Arc<dyn Cluster>, activity_timeout: u32) -> Self {
        let hooked = apps.iter().any(|t| !t.app.webhooks.is_empty());
        let webhooks = webhooks::Webhooks::start(hooked, cluster.clone());
        Pusher {
            apps,
            hub,
            cluster,
            rooms: presence::Rooms::default(),
            webhooks,
            activity_timeout,
            counts: counts::Counts::default(),
        }
    }

    /// The registry user a connection of `tenant` signed in as `user` is bound to (so
    /// `Cluster::close_user` reaches it on any node).
    pub fn user_key(tenant: &Tenant, user: &str) -> String {
        format!("pusher:{}:{user}", tenant.app.id)
    }

    /// Publishes an event to an app's channel through the hub (cache channels remember
    /// it); the offset.
    pub async fn publish(
        &self,
        tenant: &Tenant,
        channel: &str,
        event: Event,
        payload: Payload,
    ) -> Result<u64, BrokerError> {
        let hub_channel = tenant.hub_channel(channel);
        let payload = payload.with_event(event);
        let cache = kind_of(channel).1;
        let offset = self.hub.publish(&hub_channel, payload.clone()).await?;
        if cache {
            self.rooms.cache(&hub_channel, payload);
        }
        Ok(offset)
    }

    /// Subscribers of an app's channel on every node.
    pub async fn subscription_count(
        &self,
        tenant: &Tenant,
        channel: &str,
    ) -> Result<usize, BrokerError> {
        let hub_channel = tenant.hub_channel(channel);
        let all = self.cluster.occupancy().await?;
        Ok(all
            .iter()
            .find(|(name, _)| **name == *hub_channel)
            .map_or(0, |(_, n)| *n))
    }

    /// Distinct users in an app's presence channel, on every node, in join order.
    pub async fn users(&self, tenant: &Tenant, channel: &str) -> Result<Vec<UserId>, BrokerError> {
        let members = self.cluster.room(&tenant.hub_channel(channel)).await?;
        Ok(presence::users(&members))
    }

    /// The app's channels with subscribers on some node, with their cluster-wide
    /// subscriber counts.
    pub async fn channels(&self, tenant: &Tenant) -> Result<Vec<(String, usize)>, BrokerError> {
        Ok(self
            .cluster
            .occupancy()
            .await?
            .into_iter()
            .filter_map(|(hub, n)| tenant.app_channel(&hub).map(|name| (name.to_string(), n)))
            .filter(|(name, _)| valid_channel(name, usize::MAX).is_ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_round_trip_and_match_the_protocol_pattern() {
        for id in [ClientId(1), ClientId((7 << 32) | 42)] {
            let s = socket_id(id);
            assert!(s.split_once('.').is_some_and(|(a, b)| !a.is_empty()
                && !b.is_empty()
                && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())));
            assert_eq!(parse_socket_id(&s), Some(id));
        }
        assert_eq!(parse_socket_id("1.x"), None);
        assert_eq!(parse_socket_id("1"), None);
    }

    #[test]
    fn channel_kinds() {
        assert_eq!(kind_of("news"), (Kind::Public, false));
        assert_eq!(kind_of("cache-news"), (Kind::Public, true));
        assert_eq!(kind_of("private-cache-a"), (Kind::Private, true));
        assert_eq!(kind_of("private-encrypted-a"), (Kind::Encrypted, false));
        assert_eq!(kind_of("presence-cache-a"), (Kind::Presence, true));
        assert_eq!(kind_of("#server-to-user-7"), (Kind::User, false));
        assert!(valid_channel("private-a=b@c,d.e;f_g-h", 200).is_ok());
        assert!(valid_channel("a b", 200).is_err());
        assert!(valid_channel("", 200).is_err());
        assert!(valid_channel(&"a".repeat(201), 200).is_err());
    }
}
