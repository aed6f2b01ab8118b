//! Pusher protocol 7 over WebSocket: the `/app/{key}` upgrade (a `ws::Session` in
//! the Pusher front), then each client event: ping/pong, subscribe/unsubscribe (with channel
//! auth and presence), sign-in and client events. Errors are `pusher:error` frames; the
//! codes that end a connection go through `CloseReason`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::close::PusherClose;
use super::format::PUSHER;
use super::front::{Conn, PusherFront};
use super::{channels, frame, socket_id, Tenant};
use crate::error::ApiError;
use crate::frame as wsframe;
use crate::hub::{Client, Kind as DataKind, Payload};
use crate::limits::Bucket;
use crate::model::Disconnect;
use crate::protocol::compact;
use crate::ws::Close;

/// `?protocol=7&client=js&version=8.4.0`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    /// Protocol version.
    pub protocol: Option<String>,
}

/// A `pusher:error` event (`code` null for errors that carry none; with a code, it is
/// sent before a close frame with the same code, or names a refused client event).
pub fn error_event(code: Option<u16>, message: &str) -> Bytes {
    channel_error(None, code, message)
}

/// A `pusher:error` about `channel` (a refused client event): it names the channel, so
/// a handler bound on the channel fires (issue #14 item 5).
pub fn channel_error(channel: Option<&str>, code: Option<u16>, message: &str) -> Bytes {
    frame(
        "pusher:error",
        channel,
        json!({ "code": code, "message": message }),
    )
}

/// `GET /app/{key}`: the WebSocket upgrade. Problems the protocol reports in-band (unknown
/// key, disabled app, quota, protocol version) are answered after the upgrade with
/// `pusher:error` and a close frame with the matching code.
pub async fn upgrade(
    State(front): State<PusherFront>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
    Query(params): Query<ConnectParams>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let accept = crate::ws::accept_key(headers)?;
    let tenant = front.pusher.apps.by_key(&key).cloned();
    let stats = &front.hub.stats();
    if let (Some(t), Some(origin)) = (&tenant, headers.get(header::ORIGIN)) {
        let origin = origin.to_str().unwrap_or_default();
        let allowed = &t.app.allowed_origins;
        if !allowed.is_empty() && !crate::ws::origin_listed(origin, allowed) {
            stats.rejected_connections.fetch_add(1, Relaxed);
            return Err(ApiError::Denied(format!(
                "origin {origin} is not allowed: add it to allowed_origins of app {}",
                t.app.id
            )));
        }
    }
    let agreed = crate::ws::negotiate_deflate(headers, &front.config);
    let mut deflated = None;
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ApiError::UpgradeRequired)?;
    let tracker = front.shutdown.tracker.clone();
    // Problems the protocol reports in-band get no session: the frames are written
    // straight to the upgraded socket.
    let refusal = match (&tenant, params.protocol.as_deref()) {
        (None, _) => Some(PusherClose::UnknownApp),
        (Some(t), _) if !t.app.enabled => Some(PusherClose::AppDisabled),
        (_, None) => Some(PusherClose::NoProtocol),
        (_, Some(p)) if !matches!(p, "5" | "6" | "7") => Some(PusherClose::UnsupportedProtocol),
        _ => None,
    };
    match (refusal, tenant, front.limits.admit(peer.ip())) {
        (Some(refusal), _, _) => {
            tracker.spawn(refuse(on_upgrade, refusal));
        }
        (None, _, Err(_)) => {
            stats.rejected_connections.fetch_add(1, Relaxed);
            tracker.spawn(refuse(on_upgrade, PusherClose::OverCapacity));
        }
        (None, Some(tenant), Ok(permit)) => match admit(tenant) {
            Err(refusal) => {
                tracker.spawn(refuse(on_upgrade, refusal));
            }
            Ok(conn) => {
                // Only a connection that gets a session takes compression.
                deflated = agreed;
                let deflate = agreed.map(crate::deflate::Deflate::new);
                let client = front
                    .hub
                    .register_with_deflate(&PUSHER, peer, None, deflate);
                welcome(&front, &client, &conn);
                let session =
                    crate::ws::start_session(front.clone(), conn, client, permit, on_upgrade);
                tracker.spawn(session);
            }
        },
        (None, None, Ok(_)) => unreachable!("no app is a refusal"),
    }
    let mut resp = crate::ws::switching_protocols(&accept);
    crate::ws::answer_deflate(&mut resp, deflated.as_ref());
    Ok(resp)
}

/// Takes a connection into its app: the quota.
fn admit(tenant: Arc<Tenant>) -> Result<Conn, PusherClose> {
    let max = tenant.app.max_connections;
    if tenant.connections.fetch_add(1, Relaxed) >= max && max > 0 {
        tenant.connections.fetch_sub(1, Relaxed);
        return Err(PusherClose::OverQuota);
    }
    Ok(Conn::new(tenant))
}

/// `pusher:connection_established`, and the sign-in deadline when the app wants one.
fn welcome(front: &PusherFront, client: &Arc<Client>, conn: &Conn) {
    let data = json!({
        "socket_id": socket_id(client.id),
        "activity_timeout": front.pusher.activity_timeout,
    });
    client.push(frame(
        "pusher:connection_established",
        None,
        data.to_string().into(),
    ));
    let app = &conn.tenant.app;
    if app.user_authentication {
        let client = client.clone();
        let wait = app.user_authentication_timeout.get();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if client.user().is_none() {
                client.close(Disconnect::Unauthorized);
            }
        });
    }
}

/// A refused connection (no session, no permit): `pusher:error` and the close frame are
/// written straight to the socket.
async fn refuse(on_upgrade: OnUpgrade, reason: PusherClose) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let _ = io
        .write_all(&error_event(Some(reason.code()), reason.text()))
        .await;
    let _ = io
        .write_all(&wsframe::close(reason.code(), reason.text()))
        .await;
    let _ = io.shutdown().await;
}

/// A client message: `{"event":..,"channel":..,"data":..}`, with `data` left as raw
/// JSON (never a `Value` tree: issue #12 item 9).
#[derive(Debug, Deserialize)]
pub struct ClientMessage<'a> {
    /// The event name.
    pub event: String,
    /// The channel (client events).
    #[serde(default)]
    pub channel: Option<String>,
    /// The data as sent (`None` when absent or `null`).
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// Parses one client frame. Fields other than these three are skipped, not kept.
pub fn parse(text: &[u8]) -> Result<ClientMessage<'_>, serde_json::Error> {
    serde_json::from_slice(text)
}

/// The fields of `data` that subscribe, unsubscribe and sign-in read (`channel`, `auth`,
/// `channel_data`, `user_data`; only strings), as an object; `data` may be an object or a
/// JSON string holding one. Anything else is `Null`.
pub fn event_data(data: Option<&RawValue>) -> Value {
    const NAMES: [&str; 4] = ["channel", "auth", "channel_data", "user_data"];
    let Some(raw) = data else {
        return Value::Null;
    };
    let inner;
    let text = if raw.get().starts_with('"') {
        match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => {
                inner = s;
                inner.as_str()
            }
            Err(_) => return Value::Null,
        }
    } else {
        raw.get()
    };
    match compact::string_fields(text, NAMES) {
        Some(found) => NAMES
            .iter()
            .zip(found)
            .filter_map(|(k, v)| Some((k.to_string(), Value::String(v?))))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        None => Value::Null,
    }
}

/// The message of a `pusher:error` for a connection over its command budget.
fn over_budget(app: &crate::state::Shared) -> String {
    format!(
        "Too many messages: the budget is {} per second (burst {}); presence subscribes and unsubscribes cost {}",
        app.config.command_rate,
        app.config.command_burst,
        crate::ws::PRESENCE_COST
    )
}

/// Handles one frame from a Pusher client; a close ends the connection.
pub async fn handle(
    front: &PusherFront,
    conn: &mut Conn,
    client: &Arc<Client>,
    payload: Payload,
) -> Option<Close> {
    let (app, pusher) = (&front.app, &front.pusher);
    let hub = &app.hub;
    let reply = |f: Bytes| {
        hub.push(client, f);
    };
    let (rate, burst) = app.config.command_budget();
    // Every message costs budget, checked before it is parsed.
    if !Bucket::take_from(&mut conn.budget, 1.0, rate, burst) {
        hub.stats().rate_limited.fetch_add(1, Relaxed);
        reply(error_event(Some(4301), &over_budget(app)));
        return None;
    }
    if payload.kind == DataKind::Binary {
        reply(error_event(None, "binary frames are not Pusher messages"));
        return None;
    }
    let limit = app.config.command_size_limit();
    if payload.data.len() > limit {
        // issue #12 item 9: refused unread, as soketi refuses oversized client events.
        let message = format!(
            "the message is {} bytes; the limit is {limit}",
            payload.data.len()
        );
        reply(error_event(Some(4301), &message));
        return None;
    }
    let msg = match parse(&payload.data) {
        Ok(m) => m,
        Err(e) => {
            reply(error_event(None, &format!("malformed message: {e}")));
            return None;
        }
    };
    let event = msg.event.as_str();
    if matches!(event, "pusher:subscribe" | "pusher:unsubscribe") {
        let data = event_data(msg.data);
        let channel = data["channel"].as_str();
        // A presence join or leave is announced to every member: it costs more.
        let presence = channel.is_some_and(|c| c.starts_with("presence-"));
        let extra = crate::ws::PRESENCE_COST - 1.0;
        if presence && !Bucket::take_from(&mut conn.budget, extra, rate, burst) {
            hub.stats().rate_limited.fetch_add(1, Relaxed);
            reply(error_event(Some(4301), &over_budget(app)));
        } else if event == "pusher:subscribe" {
            channels::subscribe(pusher, conn, client, data).await;
        } else if let Some(channel) = channel {
            channels::unsubscribe(pusher, conn, client, channel).await;
        }
        return None;
    }
    match event {
        "pusher:ping" => reply(frame("pusher:pong", None, "{}".into())),
        "pusher:pong" => {}
        "pusher:signin" => channels::signin(pusher, conn, client, event_data(msg.data)).await,
        name if name.starts_with("client-") => {
            // Checked by the rules of a `Value` and made compact, without a tree.
            let payload = match msg.data.map(compact::compact).transpose() {
                Ok(Some(raw)) => Payload::from_raw_json(raw),
                Ok(None) => Payload::from_json(&Value::Null),
                Err(e) => {
                    reply(error_event(None, &format!("malformed message: {e}")));
                    return None;
                }
            };
            channels::client_event(pusher, conn, client, name, msg.channel, payload).await
        }
        name if name.starts_with("pusher:") => {}
        name => reply(error_event(None, &format!("unknown event {name:?}"))),
    }
    None
}

/// When the connection ends (the hub took the client out of its channels; the close
/// frame is not sent yet): leaves every channel.
/// Called once, when the connection ends.
pub async fn closed(front: &PusherFront, conn: &mut Conn, client: &Arc<Client>) {
    conn.tenant.connections.fetch_sub(1, Relaxed);
    for channel in &conn.channels {
        channels::left(&front.pusher, client, &conn.tenant, channel).await;
    }
    super::watchlist::closed(&front.pusher, conn, client).await;
}
