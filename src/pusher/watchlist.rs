//! Watchlist events (issue #14 item 12), as Pusher's user features have them: a
//! connection signed in with `user_data.watchlist` (user ids) gets
//! `pusher_internal:watchlist_events` `{"events":[{"name":"online"|"offline",
//! "user_ids":[..]}]}`: at sign-in for the watched users online then, later when a watched
//! user's first connection signs in or its last one leaves, on any node.
//!
//! Two kinds of cluster room per app: `online {user}` (the user's signed-in connections)
//! and `watchers {user}` (the connections watching the user); and one hidden hub channel
//! per watching user, `#watchlist-{user}`, its connections' inbox (so events reach them
//! on any node, through `Hub::publish` like every other event). All are named
//! `pusher-watch:{app id} ...`: a space follows the app id, so no app channel is one.

use std::sync::Arc;

use serde_json::{json, Value};

use super::front::Conn;
use super::protocol::error_event;
use super::{frame, presence, Pusher, Tenant};
use crate::hub::{Client, Event, Payload};

/// Most user ids one watchlist may hold (Pusher's limit).
pub const MAX_WATCHLIST: usize = 100;

/// What starts every watchlist room name (a space follows the app id, so no app's
/// channel name is one).
const PREFIX: &str = "pusher-watch:";

fn online_room(tenant: &Tenant, user: &str) -> String {
    format!("{PREFIX}{} online {user}", tenant.app.id)
}

fn watchers_room(tenant: &Tenant, user: &str) -> String {
    format!("{PREFIX}{} watchers {user}", tenant.app.id)
}

/// The hub channel the connections of a watching user get their events on.
fn inbox(tenant: &Tenant, user: &str) -> String {
    format!("{PREFIX}{} #watchlist-{user}", tenant.app.id)
}

/// A user id of a watchlist (a string or a number, as sign-in ids are).
fn user_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `pusher_internal:watchlist_events` payload for one event.
fn payload(name: &str, users: &[String]) -> Payload {
    let data = json!({ "events": [{ "name": name, "user_ids": users }] });
    Payload::from_json(&data).with_event(Event {
        name: "pusher_internal:watchlist_events".into(),
        exclude: None,
        user_id: None,
    })
}

/// Tells every user watching `user` (their connections, on any node) that it came
/// online or left.
async fn tell_watchers(pusher: &Pusher, tenant: &Tenant, user: &str, name: &str) {
    let watchers = match pusher.cluster.room(&watchers_room(tenant, user)).await {
        Ok(members) => members,
        Err(e) => {
            tracing::warn!(error = %e, "watchlist event not sent");
            return;
        }
    };
    let event = payload(name, &[user.to_string()]);
    for watcher in presence::users(&watchers) {
        if let Err(e) = pusher
            .hub
            .publish(&inbox(tenant, watcher.key()), event.clone())
            .await
        {
            tracing::warn!(error = %e, "watchlist event not sent");
        }
    }
}

/// After a sign-in: the connection is online as its user, and watches its watchlist.
pub(super) async fn signed_in(
    pusher: &Arc<Pusher>,
    conn: &mut Conn,
    client: &Arc<Client>,
    user_data: &Value,
) {
    let Some(id) = conn.user.clone() else {
        return;
    };
    let user = id.key();
    let tenant = conn.tenant.clone();
    let cluster = &pusher.cluster;
    let me = presence::member(client.id, &id, &Value::Null);
    match cluster.room_join(&online_room(&tenant, user), me).await {
        Ok(members) if presence::only_connection(&members, client.id, user) => {
            tell_watchers(pusher, &tenant, user, "online").await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "watchlist: online not recorded"),
    }
    let Some(list) = user_data.get("watchlist").and_then(Value::as_array) else {
        return;
    };
    let mut watched: Vec<String> = list.iter().filter_map(user_id).collect();
    watched.dedup();
    if watched.len() > MAX_WATCHLIST {
        let message = format!("a watchlist holds at most {MAX_WATCHLIST} user ids; the first {MAX_WATCHLIST} are watched");
        pusher.hub.push(client, error_event(None, &message));
        watched.truncate(MAX_WATCHLIST);
    }
    let inbox = inbox(&tenant, user);
    if !client.is_subscribed(&inbox) && !watched.is_empty() {
        if let Err(e) = pusher
            .hub
            .subscribe(client, &inbox, None, Box::new(|_| {}))
            .await
        {
            let message = format!("watchlist events cannot be delivered: {e}");
            pusher.hub.push(client, error_event(None, &message));
            return;
        }
    }
    let mut online = Vec::new();
    for w in &watched {
        let me = presence::member(client.id, &id, &Value::Null);
        if let Err(e) = cluster.room_join(&watchers_room(&tenant, w), me).await {
            tracing::warn!(error = %e, "watchlist: watcher not recorded");
        }
        if cluster
            .room(&online_room(&tenant, w))
            .await
            .is_ok_and(|m| !m.is_empty())
        {
            online.push(w.clone());
        }
        conn.watching.push(Arc::from(w.as_str()));
    }
    if !online.is_empty() {
        let data = json!({ "events": [{ "name": "online", "user_ids": online }] });
        let f = frame(
            "pusher_internal:watchlist_events",
            None,
            data.to_string().into(),
        );
        pusher.hub.push(client, f);
    }
}

/// After a signed-in connection closed (or before it signs in again): it leaves its rooms, and
/// its user's watchers hear `offline` when it was the user's last connection.
pub(super) async fn closed(pusher: &Arc<Pusher>, conn: &mut Conn, client: &Arc<Client>) {
    let tenant = conn.tenant.clone();
    let cluster = &pusher.cluster;
    for w in std::mem::take(&mut conn.watching) {
        let _ = cluster
            .room_leave(&watchers_room(&tenant, &w), client.id)
            .await;
    }
    let Some(id) = conn.user.clone() else {
        return;
    };
    let user = id.key();
    // After a close the hub has forgotten the client already; this is for a re-sign-in.
    pusher.hub.unsubscribe(client, &inbox(&tenant, user)).await;
    if let Ok((Some(_), rest)) = cluster
        .room_leave(&online_room(&tenant, user), client.id)
        .await
    {
        if presence::only_connection(&rest, client.id, user) {
            tell_watchers(pusher, &tenant, user, "offline").await;
        }
    }
}

/// A dead node's members of room `room` were removed (`gone`: users left with no
/// connection): `offline` for an online room. False when `room` is no watchlist room.
pub(super) async fn reaped(pusher: &Arc<Pusher>, room: &str, gone: &[String]) -> bool {
    let Some(rest) = room.strip_prefix(PREFIX) else {
        return false;
    };
    let app = rest.split(' ').next().unwrap_or_default();
    if let Some(tenant) = pusher.apps.by_id(app) {
        if rest.contains(" online ") {
            for user in gone {
                tell_watchers(pusher, tenant, user, "offline").await;
            }
        }
    }
    true
}
