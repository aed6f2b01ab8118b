//! Pusher protocol 7 over WebSocket: the `/app/{key}` upgrade (a `ws::Session` in
//! `Mode::Pusher`), then each client event: ping/pong, subscribe/unsubscribe (with channel
//! auth and presence), sign-in and client events. Errors are `pusher:error` frames; the
//! codes that end a connection go through `CloseReason`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{channels, frame, socket_id, Pusher, Tenant};
use crate::http::{ApiError, AppState};
use crate::hub::{Client, Kind as DataKind, Mode, Payload};
use crate::limits::Bucket;
use crate::ws::close::CloseReason;
use crate::ws::frame as wsframe;

/// `?protocol=7&client=js&version=8.4.0`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// Protocol version.
    pub protocol: Option<String>,
}

/// The `pusher:error` frame sent before a close frame with the same code.
pub fn error_frame(code: u16, message: &str) -> Bytes {
    frame(
        "pusher:error",
        None,
        json!({ "code": code, "message": message }),
    )
}

pub(super) fn error_event(code: Option<u16>, message: &str) -> Bytes {
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
    let accept = crate::ws::accept_key(headers)?;
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
            return Err(ApiError::Denied(format!(
                "origin {origin} is not allowed: add it to allowed_origins of app {}",
                t.app.id
            )));
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
            tracker.spawn(crate::ws::start_session(
                app.clone(),
                client,
                permit,
                on_upgrade,
            ));
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

/// The channel named in a subscribe/unsubscribe's `data` (an object or a JSON string).
fn object_channel(data: &Value) -> Option<String> {
    match data {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?["channel"]
            .as_str()
            .map(str::to_string),
        other => other["channel"].as_str().map(str::to_string),
    }
}

/// The message of a `pusher:error` for a connection over its command budget.
fn over_budget(app: &AppState) -> String {
    format!(
        "Too many messages: the budget is {} per second (burst {}); presence subscribes and unsubscribes cost {}",
        app.config.command_rate,
        app.config.command_burst,
        crate::ws::PRESENCE_COST
    )
}

/// Handles one frame from a Pusher client; a close reason ends the connection.
pub async fn handle(app: &AppState, client: &Arc<Client>, payload: Payload) -> Option<CloseReason> {
    let pusher = &app.pusher;
    let registry = app.hub.registry();
    let reply = |f: Bytes| {
        registry.push_frame(client, f);
    };
    let (rate, burst) = app.config.command_budget();
    let charge = |cost: f64| {
        pusher
            .with_conn(client.id, |c| {
                Bucket::take_from(&mut c.budget, cost, rate, burst)
            })
            .unwrap_or(false)
    };
    let Some(tenant) = pusher.with_conn(client.id, |c| c.tenant.clone()) else {
        return None; // being refused: ignore what it sends
    };
    // Every message costs budget, checked before it is parsed.
    if !charge(1.0) {
        registry.stats.rate_limited.fetch_add(1, Relaxed);
        reply(error_event(Some(4301), &over_budget(app)));
        return None;
    }
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
    let churn = matches!(
        msg.event.as_str(),
        "pusher:subscribe" | "pusher:unsubscribe"
    ) && object_channel(&msg.data).is_some_and(|c| c.starts_with("presence-"));
    if churn && !charge(crate::ws::PRESENCE_COST - 1.0) {
        registry.stats.rate_limited.fetch_add(1, Relaxed);
        reply(error_event(Some(4301), &over_budget(app)));
        return None;
    }
    match msg.event.as_str() {
        "pusher:ping" => reply(frame("pusher:pong", None, "{}".into())),
        "pusher:pong" => {}
        "pusher:subscribe" => channels::subscribe(pusher, client, &tenant, object(msg.data)).await,
        "pusher:unsubscribe" => {
            if let Some(channel) = object(msg.data)["channel"].as_str() {
                channels::unsubscribe(pusher, client, &tenant, channel).await;
            }
        }
        "pusher:signin" => channels::signin(pusher, client, &tenant, object(msg.data)),
        name if name.starts_with("client-") => {
            channels::client_event(pusher, client, &tenant, name, msg.channel, msg.data).await
        }
        name if name.starts_with("pusher:") => {}
        name => reply(error_event(None, &format!("unknown event {name:?}"))),
    }
    None
}

/// After the session ended (and the hub forgot the client): leaves every channel.
pub async fn closed(app: &AppState, client: &Arc<Client>) {
    let pusher = &app.pusher;
    let Some(conn) = pusher.remove_conn(client.id) else {
        return;
    };
    conn.tenant.connections.fetch_sub(1, Relaxed);
    for channel in &conn.channels {
        channels::left(pusher, client, &conn.tenant, channel).await;
    }
}
