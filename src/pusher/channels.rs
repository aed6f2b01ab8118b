//! What a Pusher connection does with channels: subscribe (with channel auth, presence
//! and cache replay), unsubscribe, leave on disconnect, sign in, and client events.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::{json, Value};

use super::format::PUSHER;
use super::front::Conn;
use super::presence;
use super::protocol::{channel_error, error_event};
use super::{auth, frame, kind_of, socket_id, valid_channel, Kind, Pusher, Tenant, UserId};
use crate::access::{self, Action, Asker};
use crate::auth::Grant;
use crate::broker::Position;
use crate::broker::SubscribeError;
use crate::hub::{Client, Event, Message, Payload};
use crate::limits::Bucket;

/// Why a subscription is refused: `type`, `error`, `status` of `pusher:subscription_error`.
type Refusal = (&'static str, String, u16);

fn auth_error(message: &str) -> Refusal {
    ("AuthError", message.to_string(), 401)
}

fn subscription_error(pusher: &Pusher, client: &Client, channel: &str, refusal: Refusal) {
    let (kind, error, status) = refusal;
    let data = json!({ "type": kind, "error": error, "status": status });
    let f = frame("pusher:subscription_error", Some(channel), data);
    pusher.hub.push(client, f);
}

/// A presence member: user id and info.
type Member = (UserId, Value);

/// Checks the subscription's signature; the presence member it declares.
fn authorize(
    conn: &Conn,
    client: &Client,
    tenant: &Tenant,
    channel: &str,
    data: &Value,
) -> Result<Option<Member>, Refusal> {
    let app = &tenant.app;
    let sid = socket_id(client.id);
    let auth = data["auth"].as_str().unwrap_or_default();
    let signed =
        |cd: Option<&str>| auth::channel_auth_ok(&app.key, &app.secret, &sid, channel, cd, auth);
    match kind_of(channel).0 {
        Kind::Public => Ok(None),
        Kind::Private | Kind::Encrypted if signed(None) => Ok(None),
        Kind::Private | Kind::Encrypted => Err(auth_error(
            "Invalid signature: expected HMAC-SHA256 of socket_id:channel with the app secret",
        )),
        Kind::Presence => {
            let cd = data["channel_data"]
                .as_str()
                .ok_or_else(|| auth_error("presence channels need channel_data"))?;
            if !signed(Some(cd)) {
                return Err(auth_error("Invalid signature: expected HMAC-SHA256 of socket_id:channel:channel_data with the app secret"));
            }
            let parsed: Value = serde_json::from_str(cd).unwrap_or(Value::Null);
            // A string or an integer (Laravel), kept as given (issue #14 item 3).
            let user_id = UserId::from_json(&parsed["user_id"]).ok_or_else(|| {
                auth_error("channel_data needs a user_id (a string or an integer)")
            })?;
            let info = parsed.get("user_info").cloned().unwrap_or(Value::Null);
            if info.to_string().len() > app.limits.max_presence_user_info_size {
                return Err(("LimitReached", "user_info is too large".into(), 413));
            }
            Ok(Some((user_id, info)))
        }
        Kind::User => {
            let wanted = channel.strip_prefix("#server-to-user-").unwrap_or_default();
            if conn.user.as_ref().map(UserId::key) == Some(wanted) {
                Ok(None)
            } else {
                Err(auth_error("sign in as this user first (pusher:signin)"))
            }
        }
    }
}

/// `pusher:subscribe`.
pub(super) async fn subscribe(
    pusher: &Arc<Pusher>,
    conn: &mut Conn,
    client: &Arc<Client>,
    data: Value,
) {
    let tenant = &conn.tenant.clone();
    let hub = &pusher.hub;
    let Some(channel) = data["channel"].as_str() else {
        hub.push(
            client,
            error_event(None, "pusher:subscribe needs data.channel"),
        );
        return;
    };
    let limits = &tenant.app.limits;
    if let Err(e) = valid_channel(channel, limits.max_channel_name_length) {
        let refusal = ("InvalidChannel", e, 400);
        return subscription_error(pusher, client, channel, refusal);
    }
    let member = match authorize(conn, client, tenant, channel, &data) {
        Ok(member) => member,
        Err(refusal) => return subscription_error(pusher, client, channel, refusal),
    };
    // The one access policy: Pusher auth covers every kind but public, whose access the
    // channel's namespace decides as for every other front.
    let signed = kind_of(channel).0 != Kind::Public;
    let namespaces = pusher.hub.namespaces();
    if let Err(denied) = access::check(
        namespaces,
        Asker::Pusher { signed },
        channel,
        Action::Subscribe,
    ) {
        return subscription_error(pusher, client, channel, auth_error(&denied.to_string()));
    }
    let cache = kind_of(channel).1;
    let hub_channel = tenant.hub_channel(channel);
    let cluster = &*pusher.cluster;
    let already = client.is_subscribed(&hub_channel);
    // Presence: join the cluster-wide room first; the reply's snapshot is who is in it
    // then. (A member whose join lands between this and the subscription taking effect
    // on this node is in neither: the window is one Redis round trip.)
    let mut new_user = false;
    let snapshot = match &member {
        None => None,
        Some((user_id, info)) => {
            let members = if already {
                cluster.room(&hub_channel).await
            } else {
                let joiner = presence::member(client.id, user_id, info);
                cluster.room_join(&hub_channel, joiner).await
            };
            let members = match members {
                Ok(members) => members,
                Err(e) => {
                    let refusal = ("ServerError", e.to_string(), 503);
                    return subscription_error(pusher, client, channel, refusal);
                }
            };
            if !already {
                new_user = presence::only_connection(&members, client.id, user_id.key());
                if new_user && presence::users(&members).len() > limits.max_presence_members {
                    let _ = cluster.room_leave(&hub_channel, client.id).await;
                    let refusal = ("LimitReached", "presence channel is full".to_string(), 403);
                    return subscription_error(pusher, client, channel, refusal);
                }
            }
            Some(presence::snapshot(&members).to_string())
        }
    };
    let succeeded = |data: String| {
        let f = frame(
            "pusher_internal:subscription_succeeded",
            Some(channel),
            data.into(),
        );
        hub.push(client, f);
    };
    // The reply is queued when the subscription takes effect, before any live event.
    let ready = Box::new(|_: &Position| {
        succeeded(snapshot.clone().unwrap_or_else(|| "{}".to_string()));
        if cache {
            let f = match pusher.rooms.cached(&hub_channel) {
                Some(payload) => Message::new(Arc::from(hub_channel.as_str()), 0, payload)
                    .frame(&PUSHER)
                    .clone(),
                // issue #14 item 6: no `data` member.
                None => {
                    let ev = json!({ "event": "pusher:cache_miss", "channel": channel });
                    crate::frame::encode(crate::frame::OP_TEXT, ev.to_string().as_bytes())
                }
            };
            hub.push(client, f);
        }
    });
    if already {
        // Pusher answers a repeated subscribe like the first one.
        ready(&Position {
            offset: 0,
            epoch: Arc::from(""),
        });
        return;
    }
    if let Err(e) = pusher
        .hub
        .subscribe(client, &hub_channel, None, ready)
        .await
    {
        if member.is_some() {
            let _ = cluster.room_leave(&hub_channel, client.id).await;
        }
        let refusal = match e {
            SubscribeError::TooManyChannels(_) => ("LimitReached", e.to_string(), 403),
            e => ("ServerError", e.to_string(), 503),
        };
        return subscription_error(pusher, client, channel, refusal);
    }
    {
        let c = &mut *conn;
        c.channels.push(Arc::from(channel));
        if let Some((user_id, _)) = &member {
            c.presence.push((Arc::from(channel), user_id.clone()));
        }
    }
    occupied(pusher, tenant, channel, &hub_channel).await;
    pusher.count_changed(tenant, channel); // issue #14 item 10
    if cache && pusher.rooms.cached(&hub_channel).is_none() {
        pusher
            .webhooks
            .emit(tenant, json!({ "name": "cache_miss", "channel": channel }));
    }
    if let (true, Some((user_id, info))) = (new_user, &member) {
        let data = json!({ "user_id": user_id, "user_info": info });
        announce_member(
            pusher,
            client,
            tenant,
            channel,
            "member_added",
            user_id,
            data,
        )
        .await;
    }
}

/// Records a subscription in the cluster-wide occupancy: exactly one node sees the
/// channel leave 0 and sends `channel_occupied` (not for `#server-to-user-{id}`, which
/// every signed-in connection is in).
async fn occupied(pusher: &Pusher, tenant: &Arc<Tenant>, channel: &str, hub_channel: &str) {
    let user = kind_of(channel).0 == Kind::User;
    match pusher.cluster.occupancy_sync(hub_channel).await {
        Ok((0, after)) if after > 0 && !user => pusher.webhooks.emit(
            tenant,
            json!({ "name": "channel_occupied", "channel": channel }),
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(%channel, error = %e, "occupancy not recorded"),
    }
}

/// Tells a presence channel's other subscribers (`pusher_internal:member_added` /
/// `member_removed`, never the connection that caused it) and the app's webhooks.
async fn announce_member(
    pusher: &Arc<Pusher>,
    client: &Client,
    tenant: &Arc<Tenant>,
    channel: &str,
    what: &str,
    user_id: &UserId,
    data: Value,
) {
    let event = Event {
        name: format!("pusher_internal:{what}").into(),
        exclude: Some(client.id),
        user_id: None,
    };
    let payload = Payload::text(data.to_string());
    if let Err(e) = pusher.publish(tenant, channel, event, payload).await {
        tracing::warn!(%channel, error = %e, "{what} lost");
    }
    let hook = json!({ "name": what, "channel": channel, "user_id": user_id });
    pusher.webhooks.emit(tenant, hook);
}

/// `pusher:unsubscribe`.
pub(super) async fn unsubscribe(
    pusher: &Arc<Pusher>,
    conn: &mut Conn,
    client: &Arc<Client>,
    channel: &str,
) {
    let tenant = &conn.tenant.clone();
    if !pusher
        .hub
        .unsubscribe(client, &tenant.hub_channel(channel))
        .await
    {
        return;
    }
    conn.channels.retain(|n| &**n != channel);
    conn.presence.retain(|(n, _)| &**n != channel);
    left(pusher, client, tenant, channel).await;
}

/// After a connection left a channel: presence `member_removed`, `channel_vacated`.
pub(super) async fn left(
    pusher: &Arc<Pusher>,
    client: &Client,
    tenant: &Arc<Tenant>,
    channel: &str,
) {
    let hub_channel = tenant.hub_channel(channel);
    let cluster = &*pusher.cluster;
    if kind_of(channel).0 == Kind::Presence {
        // Only the user's last connection in the room, on any node, removes the member.
        let last = match cluster.room_leave(&hub_channel, client.id).await {
            Ok((Some(gone), rest)) => presence::user_of(&gone)
                .map(|(user, _)| user)
                .filter(|user| presence::only_connection(&rest, client.id, user.key())),
            Ok((None, _)) => None,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "presence leave not recorded");
                None
            }
        };
        if let Some(user_id) = last {
            let data = json!({ "user_id": user_id });
            announce_member(
                pusher,
                client,
                tenant,
                channel,
                "member_removed",
                &user_id,
                data,
            )
            .await;
        }
    }
    let user = kind_of(channel).0 == Kind::User;
    match cluster.occupancy_sync(&hub_channel).await {
        Ok((before, 0)) if before > 0 && !user => pusher.webhooks.emit(
            tenant,
            json!({ "name": "channel_vacated", "channel": channel }),
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(%channel, error = %e, "occupancy not recorded"),
    }
    pusher.count_changed(tenant, channel); // issue #14 item 10
}

/// `pusher:signin`: checks `auth` over `socket_id::user::user_data`, then the connection
/// is that user (for terminate) and receives `#server-to-user-{id}`.
pub(super) async fn signin(
    pusher: &Arc<Pusher>,
    conn: &mut Conn,
    client: &Arc<Client>,
    data: Value,
) {
    let tenant = &conn.tenant.clone();
    let hub = &pusher.hub;
    let auth = data["auth"].as_str().unwrap_or_default();
    let user_data = data["user_data"].as_str().unwrap_or_default();
    let app = &tenant.app;
    if !auth::user_auth_ok(
        &app.key,
        &app.secret,
        &socket_id(client.id),
        user_data,
        auth,
    ) {
        hub.push(
            client,
            error_event(Some(4009), "Invalid signature for pusher:signin"),
        );
        return;
    }
    let parsed: Value = serde_json::from_str(user_data).unwrap_or(Value::Null);
    // A string or an integer (Laravel): issue #14 item 3.
    let Some(id) = UserId::from_json(&parsed["id"]) else {
        let e = error_event(
            Some(4009),
            "user_data needs an id: a non-empty string or an integer",
        );
        hub.push(client, e);
        return;
    };
    // Bound in the registry so `terminate_connections` reaches it from any node.
    let key = super::Pusher::user_key(tenant, id.key());
    let grant = Grant::for_user(Arc::from(key));
    hub.authenticate(client, Arc::new(grant));
    super::watchlist::closed(pusher, conn, client).await; // a second sign-in replaces the first
    if let Some(old) = conn.user.take().filter(|old| old.key() != id.key()) {
        let channel = format!("#server-to-user-{}", old.key());
        unsubscribe(pusher, conn, client, &channel).await;
    }
    conn.user = Some(id.clone());
    // Subscribed first: once the client reads the success, events for its user reach it.
    to_user(pusher, conn, client, &id).await;
    let data = json!({ "user_data": user_data }).to_string();
    hub.push(client, frame("pusher:signin_success", None, data.into()));
    super::watchlist::signed_in(pusher, conn, client, &parsed).await; // issue #14 item 12
}

/// Subscribes a signed-in connection to `#server-to-user-{id}` itself (no reply), so
/// events for its user reach it whether or not the client subscribes (pusher-js does for
/// string ids only): issue #14 item 4. A later `pusher:subscribe` is answered as usual.
async fn to_user(pusher: &Arc<Pusher>, conn: &mut Conn, client: &Arc<Client>, id: &UserId) {
    let tenant = &conn.tenant.clone();
    let channel = format!("#server-to-user-{}", id.key());
    let hub_channel = tenant.hub_channel(&channel);
    let max = tenant.app.limits.max_channel_name_length;
    if valid_channel(&channel, max).is_err() || client.is_subscribed(&hub_channel) {
        // No event can be addressed to it, or it is there already.
        return;
    }
    if let Err(e) = pusher
        .hub
        .subscribe(client, &hub_channel, None, Box::new(|_: &Position| {}))
        .await
    {
        tracing::warn!(%channel, error = %e, "signed-in connection not subscribed to its user channel");
        return;
    }
    conn.channels.push(Arc::from(channel.as_str()));
    occupied(pusher, tenant, &channel, &hub_channel).await;
}

/// A `client-*` event: only when the app allows them, on a private or presence channel the
/// sender joined, within the rate limit; never echoed to the sender.
pub(super) async fn client_event(
    pusher: &Arc<Pusher>,
    conn: &mut Conn,
    client: &Arc<Client>,
    name: &str,
    channel: Option<String>,
    payload: Payload,
) {
    let tenant = &conn.tenant.clone();
    let hub = &pusher.hub;
    let Some(channel) = channel else {
        hub.push(client, error_event(None, "a client event needs a channel"));
        return;
    };
    // issue #14 item 5: every refusal names the channel.
    let refuse = |code: Option<u16>, msg: &str| {
        hub.push(client, channel_error(Some(&channel), code, msg));
    };
    let app = &tenant.app;
    if !app.client_events {
        return refuse(Some(4301), "Client events are not enabled for this app");
    }
    let kind = kind_of(&channel).0;
    if !matches!(kind, Kind::Private | Kind::Presence) {
        return refuse(
            None,
            "client events are only allowed on private and presence channels",
        );
    }
    let hub_channel = tenant.hub_channel(&channel);
    if !client.is_subscribed(&hub_channel) {
        return refuse(
            None,
            "subscribe to the channel before sending client events",
        );
    }
    // issue #14 item 9: over a limit is a 4301-class error, naming the limit.
    let limits = &app.limits;
    if name.len() > limits.max_event_name_length {
        let max = limits.max_event_name_length;
        return refuse(
            Some(4301),
            &format!("Event name is too long: at most {max} bytes"),
        );
    }
    if payload.data.len() > limits.max_payload_size {
        let max = limits.max_payload_size;
        return refuse(
            Some(4301),
            &format!("Event data is too large: at most {max} bytes"),
        );
    }
    let rate = f64::from(app.limits.client_events_per_second);
    if !Bucket::take_from(&mut conn.events, 1.0, rate, rate) {
        hub.stats().rate_limited.fetch_add(1, Relaxed);
        return refuse(Some(4301), "Client event rejected: over the rate limit");
    }
    let user_id = match kind {
        Kind::Presence => conn
            .presence
            .iter()
            .find(|(n, _)| **n == *channel)
            .map(|(_, user)| user.clone()),
        _ => None,
    };
    let event = Event {
        name: name.into(),
        exclude: Some(client.id),
        user_id: user_id.as_ref().map(UserId::json_text),
    };
    let data = payload.data.clone();
    if let Err(e) = pusher.publish(tenant, &channel, event, payload).await {
        return refuse(None, &format!("not delivered: {e}"));
    }
    let data = String::from_utf8_lossy(&data);
    let mut hook = json!({
        "name": "client_event",
        "channel": channel,
        "event": name,
        "data": data,
        "socket_id": socket_id(client.id),
    });
    if let Some(user_id) = user_id {
        hook["user_id"] = user_id.to_json();
    }
    pusher.webhooks.emit(tenant, hook);
}
