//! Pusher protocol 7 over WebSocket: the `/app/{key}` upgrade (a `ws::Session` in
//! `Mode::Pusher`), then each client event: ping/pong, subscribe/unsubscribe (with channel
//! auth and presence), sign-in and client events. Errors are `pusher:error` frames; the
//! codes that end a connection go through `CloseReason`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use super::{auth, frame, kind_of, socket_id, valid_channel, Kind, Pusher, Tenant};
use crate::http::{ApiError, AppState};
use crate::hub::{Client, Event, Kind as DataKind, Mode, Payload};
use crate::limits::Permit;
use crate::ws::close::CloseReason;
use crate::ws::{frame as wsframe, Session};

/// `?protocol=7&client=js&version=8.4.0`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// Protocol version.
    pub protocol: Option<String>,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The `pusher:error` frame sent before a close frame with the same code.
pub fn error_frame(code: u16, message: &str) -> Bytes {
    frame(
        "pusher:error",
        None,
        json!({ "code": code, "message": message }),
    )
}

fn error_event(code: Option<u16>, message: &str) -> Bytes {
    frame(
        "pusher:error",
        None,
        json!({ "code": code, "message": message }),
    )
}

/// `GET /app/{key}`: the WebSocket upgrade. Problems the protocol reports in-band (unknown
/// key, disabled app, quota, protocol version) are answered after the upgrade with
/// `pusher:error` and a close frame with the matching code.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    Query(params): Query<ConnectParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
    {
        return Err(ApiError::UpgradeRequired);
    }
    let ws_key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| ApiError::BadRequest("missing or malformed Sec-WebSocket-Key".into()))?;
    let accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let pusher = app.pusher.clone();
    let tenant = pusher.apps.by_key(&key).cloned();
    let stats = &app.hub.registry().stats;
    if let (Some(t), Some(origin)) = (&tenant, headers.get(header::ORIGIN)) {
        let origin = origin.to_str().unwrap_or_default();
        let allowed = &t.app.allowed_origins;
        if !allowed.is_empty()
            && !allowed
                .iter()
                .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            stats.rejected_connections.fetch_add(1, Relaxed);
            return Err(ApiError::Denied("origin not allowed".into()));
        }
    }
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ApiError::UpgradeRequired)?;
    let tracker = app.shutdown.tracker.clone();
    match app.limits.admit(peer.ip()) {
        Err(_) => {
            stats.rejected_connections.fetch_add(1, Relaxed);
            tracker.spawn(refuse(on_upgrade, CloseReason::PusherOverCapacity));
        }
        Ok(permit) => {
            let client = app.hub.registry().register(Mode::Pusher, peer, None);
            let refusal = match (&tenant, params.protocol.as_deref()) {
                (None, _) => Some(CloseReason::PusherUnknownApp),
                (Some(t), _) if !t.app.enabled => Some(CloseReason::PusherAppDisabled),
                (_, None) => Some(CloseReason::PusherNoProtocol),
                (_, Some(p)) if !matches!(p, "5" | "6" | "7") => {
                    Some(CloseReason::PusherUnsupportedProtocol)
                }
                (Some(t), _) => admit(&pusher, &client, t.clone()),
            };
            if let Some(reason) = refusal {
                client.close(reason);
            }
            tracker.spawn(start(app.clone(), client, permit, on_upgrade));
        }
    }
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    Ok(resp)
}

/// Takes a connection into its app: quota, `connection_established`, sign-in deadline.
fn admit(pusher: &Arc<Pusher>, client: &Arc<Client>, tenant: Arc<Tenant>) -> Option<CloseReason> {
    let max = tenant.app.max_connections;
    if tenant.connections.fetch_add(1, Relaxed) >= max && max > 0 {
        tenant.connections.fetch_sub(1, Relaxed);
        return Some(CloseReason::PusherOverQuota);
    }
    let data = json!({
        "socket_id": socket_id(client.id),
        "activity_timeout": pusher.activity_timeout,
    });
    client.push(frame(
        "pusher:connection_established",
        None,
        data.to_string().into(),
    ));
    if tenant.app.user_authentication {
        let (pusher, client) = (pusher.clone(), client.clone());
        let wait = Duration::from_secs(tenant.app.user_authentication_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let signed_in = pusher.with_conn(client.id, |c| c.user.is_some());
            if signed_in == Some(false) {
                client.close(CloseReason::PusherUnauthorized);
            }
        });
    }
    pusher.add_conn(client.id, tenant);
    None
}

/// Over capacity: no session, no permit; the frames are written straight to the socket.
async fn refuse(on_upgrade: OnUpgrade, reason: CloseReason) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let code = reason.code().expect("pusher reasons have codes");
    let _ = io.write_all(&error_frame(code, reason.text())).await;
    let _ = io.write_all(&wsframe::close(code, reason.text())).await;
    let _ = io.shutdown().await;
}

/// Runs the session once the upgrade completes (plain TCP, or TLS through a socket pair).
async fn start(app: AppState, client: Arc<Client>, permit: Permit, on_upgrade: OnUpgrade) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(client = %client.id, error = %e, "upgrade failed");
            app.hub.disconnect(&client).await;
            closed(&app, &client).await;
            return;
        }
    };
    let tracker = app.shutdown.tracker.clone();
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let session = Session::new(parts.io.into_inner(), client, app, permit);
            tracker.spawn(session.run(parts.read_buf));
            return;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => match UnixStream::pair() {
            Ok((near, mut far)) => {
                let mut tls = parts.io.into_inner();
                tracker.spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut far).await;
                });
                let session = Session::new(near, client, app, permit);
                tracker.spawn(session.run(parts.read_buf));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a socket pair for a TLS session");
                app.hub.disconnect(&client).await;
                closed(&app, &client).await;
            }
        },
        Err(_) => {
            tracing::error!(client = %client.id, "upgraded connection of an unknown type");
            app.hub.disconnect(&client).await;
            closed(&app, &client).await;
        }
    }
}

/// A client message: `{"event":..,"channel":..,"data":..}`.
#[derive(Debug, Deserialize)]
struct ClientMessage {
    event: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    data: Value,
}

/// `data` given as an object or as a JSON string holding one.
fn object(data: Value) -> Value {
    match data {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
        other => other,
    }
}

/// Handles one frame from a Pusher client; a close reason ends the connection.
pub async fn handle(app: &AppState, client: &Arc<Client>, payload: Payload) -> Option<CloseReason> {
    let pusher = &app.pusher;
    let registry = app.hub.registry();
    let reply = |f: Bytes| {
        registry.push_frame(client, f);
    };
    let Some(tenant) = pusher.with_conn(client.id, |c| c.tenant.clone()) else {
        return None; // being refused: ignore what it sends
    };
    if payload.kind == DataKind::Binary {
        reply(error_event(None, "binary frames are not Pusher messages"));
        return None;
    }
    let msg: ClientMessage = match serde_json::from_slice(&payload.data) {
        Ok(m) => m,
        Err(e) => {
            reply(error_event(None, &format!("malformed message: {e}")));
            return None;
        }
    };
    match msg.event.as_str() {
        "pusher:ping" => reply(frame("pusher:pong", None, "{}".into())),
        "pusher:pong" => {}
        "pusher:subscribe" => subscribe(pusher, client, &tenant, object(msg.data)).await,
        "pusher:unsubscribe" => {
            if let Some(channel) = object(msg.data)["channel"].as_str() {
                unsubscribe(pusher, client, &tenant, channel).await;
            }
        }
        "pusher:signin" => signin(pusher, client, &tenant, object(msg.data)),
        name if name.starts_with("client-") => {
            client_event(pusher, client, &tenant, name, msg.channel, msg.data).await
        }
        name if name.starts_with("pusher:") => {}
        name => reply(error_event(None, &format!("unknown event {name:?}"))),
    }
    None
}

fn subscription_error(
    client: &Client,
    pusher: &Pusher,
    channel: &str,
    kind: &str,
    error: &str,
    status: u16,
) {
    pusher.hub.registry().push_frame(
        client,
        frame(
            "pusher:subscription_error",
            Some(channel),
            json!({ "type": kind, "error": error, "status": status }),
        ),
    );
}

async fn subscribe(pusher: &Arc<Pusher>, client: &Arc<Client>, tenant: &Arc<Tenant>, data: Value) {
    let Some(channel) = data["channel"].as_str() else {
        pusher.hub.registry().push_frame(
            client,
            error_event(None, "pusher:subscribe needs data.channel"),
        );
        return;
    };
    let limits = &tenant.app.limits;
    if let Err(e) = valid_channel(channel, limits.max_channel_name_length) {
        return subscription_error(client, pusher, channel, "InvalidChannel", &e, 400);
    }
    let sid = socket_id(client.id);
    let app = &tenant.app;
    let (kind, cache) = kind_of(channel);
    let auth = data["auth"].as_str().unwrap_or_default();
    let channel_data = data["channel_data"].as_str();
    let signed =
        |cd: Option<&str>| auth::channel_auth_ok(&app.key, &app.secret, &sid, channel, cd, auth);
    let mut member = None;
    match kind {
        Kind::Public => {}
        Kind::Private | Kind::Encrypted => {
            if !signed(None) {
                return subscription_error(client, pusher, channel, "AuthError", "Invalid signature: expected HMAC-SHA256 of socket_id:channel with the app secret", 401);
            }
        }
        Kind::Presence => {
            let Some(cd) = channel_data else {
                return subscription_error(
                    client,
                    pusher,
                    channel,
                    "AuthError",
                    "presence channels need channel_data",
                    401,
                );
            };
            if !signed(Some(cd)) {
                return subscription_error(client, pusher, channel, "AuthError", "Invalid signature: expected HMAC-SHA256 of socket_id:channel:channel_data with the app secret", 401);
            }
            let parsed: Value = serde_json::from_str(cd).unwrap_or(Value::Null);
            let user_id = match &parsed["user_id"] {
                Value::String(s) if !s.is_empty() => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return subscription_error(
                        client,
                        pusher,
                        channel,
                        "AuthError",
                        "channel_data needs a user_id",
                        400,
                    )
                }
            };
            let info = parsed.get("user_info").cloned().unwrap_or(Value::Null);
            if info.to_string().len() > limits.max_presence_user_info_size {
                return subscription_error(
                    client,
                    pusher,
                    channel,
                    "LimitReached",
                    "user_info is too large",
                    413,
                );
            }
            member = Some((user_id, info));
        }
        Kind::User => {
            let user = pusher.with_conn(client.id, |c| c.user.clone()).flatten();
            let wanted = channel.strip_prefix("#server-to-user-").unwrap_or_default();
            if user.as_deref() != Some(wanted) {
                return subscription_error(
                    client,
                    pusher,
                    channel,
                    "AuthError",
                    "sign in as this user first (pusher:signin)",
                    401,
                );
            }
        }
    }
    let hub_channel = tenant.hub_channel(channel);
    if client.is_subscribed(&hub_channel) {
        // Pusher answers a repeated subscribe like the first one.
        let data = match &member {
            Some(_) => presence_data(pusher, &hub_channel, client, &member),
            None => "{}".to_string(),
        };
        pusher.hub.registry().push_frame(
            client,
            frame(
                "pusher_internal:subscription_succeeded",
                Some(channel),
                data.into(),
            ),
        );
        return;
    }
    // Membership and the reply happen when the subscription takes effect (under the
    // channel's delivery order), so no member_added can fall between snapshot and live.
    let joined = parking_lot::Mutex::new(None);
    let registry = pusher.hub.registry();
    let ready = Box::new(|_: &crate::broker::Position| {
        let data = match &member {
            Some((user_id, info)) => {
                match pusher.rooms.join(
                    &hub_channel,
                    client.id,
                    user_id,
                    info.clone(),
                    limits.max_presence_members,
                ) {
                    presence::Join::Joined { new_user, snapshot } => {
                        *joined.lock() = Some(new_user);
                        snapshot.to_string()
                    }
                    presence::Join::Full => {
                        *joined.lock() = None;
                        String::new()
                    }
                }
            }
            None => "{}".to_string(),
        };
        if data.is_empty() {
            return;
        }
        registry.push_frame(
            client,
            frame(
                "pusher_internal:subscription_succeeded",
                Some(channel),
                data.into(),
            ),
        );
        if cache {
            match pusher.rooms.cached(&hub_channel) {
                Some(payload) => {
                    let msg = crate::hub::Message::new(Arc::from(hub_channel.as_str()), 0, payload);
                    registry.push_frame(client, msg.pusher_frame().clone());
                }
                None => {
                    registry.push_frame(
                        client,
                        frame("pusher:cache_miss", Some(channel), Value::Null),
                    );
                }
            }
        }
    });
    if let Err(e) = pusher
        .hub
        .subscribe(client, &hub_channel, None, ready)
        .await
    {
        return subscription_error(client, pusher, channel, "ServerError", &e.to_string(), 503);
    }
    let new_user = joined.into_inner();
    if member.is_some() && new_user.is_none() {
        // The presence channel was full: undo the hub subscription.
        pusher.hub.unsubscribe(client, &hub_channel).await;
        return subscription_error(
            client,
            pusher,
            channel,
            "LimitReached",
            "presence channel is full",
            403,
        );
    }
    pusher.with_conn(client.id, |c| c.channels.push(Arc::from(channel)));
    if registry.subscriber_count(&hub_channel) == 1 {
        pusher.webhooks.emit(
            tenant,
            json!({ "name": "channel_occupied", "channel": channel }),
        );
    }
    if cache && pusher.rooms.cached(&hub_channel).is_none() {
        pusher
            .webhooks
            .emit(tenant, json!({ "name": "cache_miss", "channel": channel }));
    }
    if let (Some(true), Some((user_id, info))) = (new_user, &member) {
        let data = json!({ "user_id": user_id, "user_info": info }).to_string();
        let event = Event {
            name: "pusher_internal:member_added".into(),
            exclude: Some(client.id),
            user_id: None,
        };
        if let Err(e) = pusher
            .publish(tenant, channel, event, Payload::text(data))
            .await
        {
            tracing::warn!(%channel, error = %e, "member_added lost");
        }
        pusher.webhooks.emit(
            tenant,
            json!({ "name": "member_added", "channel": channel, "user_id": user_id }),
        );
    }
}

fn presence_data(
    pusher: &Pusher,
    hub_channel: &str,
    client: &Client,
    member: &Option<(String, Value)>,
) -> String {
    let (user_id, info) = member.clone().expect("presence member");
    match pusher
        .rooms
        .join(hub_channel, client.id, &user_id, info, usize::MAX)
    {
        presence::Join::Joined { snapshot, .. } => snapshot.to_string(),
        presence::Join::Full => "{}".to_string(),
    }
}

use super::presence;

async fn unsubscribe(
    pusher: &Arc<Pusher>,
    client: &Arc<Client>,
    tenant: &Arc<Tenant>,
    channel: &str,
) {
    let hub_channel = tenant.hub_channel(channel);
    if !pusher.hub.unsubscribe(client, &hub_channel).await {
        return;
    }
    pusher.with_conn(client.id, |c| c.channels.retain(|n| &**n != channel));
    left(pusher, client, tenant, channel).await;
}

/// After a connection left a channel: presence `member_removed`, `channel_vacated`.
async fn left(pusher: &Arc<Pusher>, client: &Client, tenant: &Arc<Tenant>, channel: &str) {
    let hub_channel = tenant.hub_channel(channel);
    if kind_of(channel).0 == Kind::Presence {
        if let Some(user_id) = pusher.rooms.leave(&hub_channel, client.id) {
            let data = json!({ "user_id": user_id }).to_string();
            let event = Event {
                name: "pusher_internal:member_removed".into(),
                exclude: Some(client.id),
                user_id: None,
            };
            if let Err(e) = pusher
                .publish(tenant, channel, event, Payload::text(data))
                .await
            {
                tracing::warn!(%channel, error = %e, "member_removed lost");
            }
            pusher.webhooks.emit(
                tenant,
                json!({ "name": "member_removed", "channel": channel, "user_id": user_id }),
            );
        }
    }
    if pusher.hub.registry().subscriber_count(&hub_channel) == 0 {
        pusher.webhooks.emit(
            tenant,
            json!({ "name": "channel_vacated", "channel": channel }),
        );
    }
}

/// After the session ended (and the hub forgot the client): leaves every channel.
pub async fn closed(app: &AppState, client: &Arc<Client>) {
    let pusher = &app.pusher;
    let Some(conn) = pusher.remove_conn(client.id) else {
        return;
    };
    conn.tenant.connections.fetch_sub(1, Relaxed);
    for channel in &conn.channels {
        left(pusher, client, &conn.tenant, channel).await;
    }
}

fn signin(pusher: &Arc<Pusher>, client: &Arc<Client>, tenant: &Arc<Tenant>, data: Value) {
    let registry = pusher.hub.registry();
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
        registry.push_frame(
            client,
            error_event(Some(4009), "Invalid signature for pusher:signin"),
        );
        return;
    }
    let parsed: Value = serde_json::from_str(user_data).unwrap_or(Value::Null);
    let Some(id) = parsed["id"].as_str().filter(|s| !s.is_empty()) else {
        registry.push_frame(
            client,
            error_event(Some(4009), "user_data needs a non-empty string id"),
        );
        return;
    };
    let id: Arc<str> = Arc::from(id);
    pusher.with_conn(client.id, |c| c.user = Some(id));
    registry.push_frame(
        client,
        frame(
            "pusher:signin_success",
            None,
            json!({ "user_data": user_data }).to_string().into(),
        ),
    );
}

async fn client_event(
    pusher: &Arc<Pusher>,
    client: &Arc<Client>,
    tenant: &Arc<Tenant>,
    name: &str,
    channel: Option<String>,
    data: Value,
) {
    let registry = pusher.hub.registry();
    let refuse = |code: Option<u16>, msg: &str| {
        registry.push_frame(client, error_event(code, msg));
    };
    let app = &tenant.app;
    if !app.client_events {
        return refuse(Some(4301), "Client events are not enabled for this app");
    }
    let Some(channel) = channel else {
        return refuse(None, "a client event needs a channel");
    };
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
    if name.len() > app.limits.max_event_name_length {
        return refuse(None, "event name too long");
    }
    let payload = Payload::from_json(&data);
    if payload.data.len() > app.limits.max_payload_size {
        return refuse(None, "event data too large");
    }
    let rate = app.limits.client_events_per_second;
    if pusher.with_conn(client.id, |c| c.take_token(rate)) != Some(true) {
        registry.stats.rate_limited.fetch_add(1, Relaxed);
        return refuse(Some(4301), "Client event rejected: over the rate limit");
    }
    let user_id = if kind == Kind::Presence {
        pusher.rooms.user_of(&hub_channel, client.id)
    } else {
        None
    };
    let event = Event {
        name: name.into(),
        exclude: Some(client.id),
        user_id: user_id.as_deref().map(Arc::from),
    };
    if let Err(e) = pusher
        .publish(tenant, &channel, event, payload.clone())
        .await
    {
        return refuse(None, &format!("not delivered: {e}"));
    }
    let mut hook = json!({ "name": "client_event", "channel": channel, "event": name, "data": match data { Value::String(s) => s, other => other.to_string() }, "socket_id": socket_id(client.id) });
    if let Some(user_id) = user_id {
        hook["user_id"] = user_id.into();
    }
    pusher.webhooks.emit(tenant, hook);
}
