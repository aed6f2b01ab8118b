//! The Pusher HTTP API under `/apps/{app_id}`: events, batch events, channel queries and
//! terminating a user's connections. Every request is signed (see [`super::auth`]).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, Method};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::PusherFront;
use super::{auth, kind_of, parse_socket_id, valid_channel, Kind, Pusher, Tenant};
use crate::error::ApiError;
use crate::hub::{Event, Payload};
use crate::model::Disconnect;

type Answer = Result<axum::Json<Value>, ApiError>;

/// A verified request: its app, query and body.
struct Signed {
    tenant: Arc<Tenant>,
    query: std::collections::BTreeMap<String, String>,
    body: bytes::Bytes,
}

/// Checks the signature, then reads the body (see [`crate::http::read_body`]: bounded in
/// size and time) and checks its `body_md5`; the app is `app_id`'s, or `auth_key`'s when
/// the path has no app id. An unknown app, a wrong key or signature, or a body announced
/// too large is refused before a byte of the body is read.
async fn verified(
    app: &PusherFront,
    app_id: Option<&str>,
    req: Request,
) -> Result<Signed, ApiError> {
    let (parts, body) = req.into_parts();
    let query = auth::parse_query(parts.uri.query().unwrap_or(""));
    let pusher = &app.pusher;
    let tenant = match app_id {
        Some(id) => pusher.apps.by_id(id),
        None => query.get("auth_key").and_then(|k| pusher.apps.by_key(k)),
    }
    .cloned()
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown app {:?}",
            app_id.unwrap_or("(by auth_key)")
        ))
    })?;
    if !tenant.app.enabled {
        return Err(ApiError::Denied("app disabled".into()));
    }
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|n| n.as_bytes() != b"0");
    auth::verify_signature(
        &tenant.app.key,
        &tenant.app.secret,
        parts.method.as_str(),
        parts.uri.path(),
        &query,
        has_body,
        crate::auth::unix_now(),
    )
    .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    let (max, timeout) = (app.config.max_body_size, app.config.body_timeout());
    let body = crate::http::read_body(&parts.headers, body, max, timeout).await?;
    auth::verify_body(&query, &body).map_err(|e| ApiError::BadSignature(e.to_string()))?;
    Ok(Signed {
        tenant,
        query,
        body,
    })
}

/// An event as `POST /events` and `POST /batch_events` take it.
#[derive(Debug, Deserialize)]
struct EventBody {
    name: String,
    data: Value,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Checks an event against the app's limits; its channels and payload.
fn check(tenant: &Tenant, ev: &EventBody) -> Result<(Vec<String>, Payload), ApiError> {
    let limits = &tenant.app.limits;
    let channels = match (&ev.channel, &ev.channels) {
        (Some(c), None) => vec![c.clone()],
        (None, Some(cs)) if !cs.is_empty() => cs.clone(),
        _ => {
            return Err(ApiError::BadRequest(
                "give `channel` or a non-empty `channels`".into(),
            ))
        }
    };
    if channels.len() > limits.max_event_channels {
        return Err(ApiError::OverLimit(format!(
            "{} channels; at most {} per event",
            channels.len(),
            limits.max_event_channels
        )));
    }
    for c in &channels {
        valid_channel(c, limits.max_channel_name_length).map_err(ApiError::BadRequest)?;
    }
    if ev.name.is_empty() || ev.name.len() > limits.max_event_name_length {
        return Err(ApiError::BadRequest(format!(
            "event name must be 1 to {} bytes",
            limits.max_event_name_length
        )));
    }
    if ev.name.starts_with("pusher:") || ev.name.starts_with("pusher_internal:") {
        return Err(ApiError::BadRequest(
            "event names starting with pusher: are reserved".into(),
        ));
    }
    let payload = Payload::from_json(&ev.data);
    if payload.data.len() > limits.max_payload_size {
        return Err(ApiError::OverLimit(format!(
            "event data is {} bytes; the limit is {}",
            payload.data.len(),
            limits.max_payload_size
        )));
    }
    if let Some(s) = &ev.socket_id {
        parse_socket_id(s)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid socket_id {s:?}")))?;
    }
    Ok((channels, payload))
}

/// The requested `info` attributes of a channel, cluster-wide (`count`: its subscriber
/// count when already known).
async fn channel_info(
    pusher: &Pusher,
    tenant: &Tenant,
    channel: &str,
    info: &str,
    count: Option<usize>,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for attr in info.split(',').map(str::trim) {
        match attr {
            "subscription_count" => {
                let n = match count {
                    Some(n) => n,
                    None => pusher.subscription_count(tenant, channel).await?,
                };
                out.insert(attr.into(), n.into());
            }
            "user_count" if kind_of(channel).0 == Kind::Presence => {
                let users = pusher.users(tenant, channel).await?;
                out.insert(attr.into(), users.len().into());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `occupied` and `subscription_count` of a channel with `n` subscribers.
fn counts(n: usize) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("occupied".into(), (n > 0).into());
    out.insert("subscription_count".into(), n.into());
    out
}

/// Publishes one checked event to each of its channels.
async fn trigger(
    pusher: &Pusher,
    tenant: &Tenant,
    ev: &EventBody,
    channels: &[String],
    payload: Payload,
) -> Result<(), ApiError> {
    let event = Event {
        name: ev.name.as_str().into(),
        exclude: ev.socket_id.as_deref().and_then(parse_socket_id),
        user_id: None,
    };
    for channel in channels {
        pusher
            .publish(tenant, channel, event.clone(), payload.clone())
            .await?;
    }
    Ok(())
}

/// `POST /apps/{id}/events`: `{}` or `{"channels":{name:{info}}}` when `info` is asked.
pub async fn events(
    State(app): State<PusherFront>,
    Path(app_id): Path<String>,
    req: Request,
) -> Answer {
    let signed = verified(&app, Some(&app_id), req).await?;
    let ev: EventBody = parse_json(&signed.body)?;
    let (channels, payload) = check(&signed.tenant, &ev)?;
    trigger(&app.pusher, &signed.tenant, &ev, &channels, payload).await?;
    let Some(info) = ev.info.as_deref() else {
        return Ok(axum::Json(json!({})));
    };
    let mut infos = Map::new();
    for c in &channels {
        let attrs = channel_info(&app.pusher, &signed.tenant, c, info, None).await?;
        infos.insert(c.clone(), Value::Object(attrs));
    }
    Ok(axum::Json(json!({ "channels": infos })))
}

/// `POST /apps/{id}/batch_events`: `{"batch":[{..}]}` with each event's channel info.
pub async fn batch_events(
    State(app): State<PusherFront>,
    Path(app_id): Path<String>,
    req: Request,
) -> Answer {
    #[derive(Deserialize)]
    struct Batch {
        batch: Vec<EventBody>,
    }
    let signed = verified(&app, Some(&app_id), req).await?;
    let batch: Batch = parse_json(&signed.body)?;
    let max = signed.tenant.app.limits.max_batch_size;
    if batch.batch.len() > max {
        return Err(ApiError::OverLimit(format!(
            "{} events; at most {max} per batch",
            batch.batch.len()
        )));
    }
    let mut checked = Vec::with_capacity(batch.batch.len());
    for ev in &batch.batch {
        if ev.channels.is_some() {
            return Err(ApiError::BadRequest(
                "batch events take one `channel` each".into(),
            ));
        }
        checked.push(check(&signed.tenant, ev)?);
    }
    let mut answers = Vec::with_capacity(checked.len());
    for (ev, (channels, payload)) in batch.batch.iter().zip(checked) {
        trigger(&app.pusher, &signed.tenant, ev, &channels, payload).await?;
        let info = ev.info.as_deref().unwrap_or("");
        answers.push(Value::Object(
            channel_info(&app.pusher, &signed.tenant, &channels[0], info, None).await?,
        ));
    }
    Ok(axum::Json(json!({ "batch": answers })))
}

/// `GET /apps/{id}/channels?filter_by_prefix=&info=user_count`.
pub async fn channels(
    State(app): State<PusherFront>,
    Path(app_id): Path<String>,
    req: Request,
) -> Answer {
    let signed = verified(&app, Some(&app_id), req).await?;
    let prefix = signed
        .query
        .get("filter_by_prefix")
        .map_or("", String::as_str);
    let info = signed.query.get("info").map_or("", String::as_str);
    if info.split(',').any(|a| a.trim() == "user_count") && !prefix.starts_with("presence-") {
        return Err(ApiError::BadRequest(
            "info=user_count needs filter_by_prefix=presence-".into(),
        ));
    }
    let mut out = Map::new();
    for (name, n) in app.pusher.channels(&signed.tenant).await? {
        if name.starts_with(prefix) {
            // issue #14 item 2: occupied and subscription_count without asking (soketi's
            // answer, which SDK code written against it reads).
            let mut attrs = counts(n);
            attrs.extend(channel_info(&app.pusher, &signed.tenant, &name, info, Some(n)).await?);
            out.insert(name, Value::Object(attrs));
        }
    }
    Ok(axum::Json(json!({ "channels": out })))
}

/// `GET /apps/{id}/channels/{name}?info=subscription_count,user_count`.
pub async fn channel(
    State(app): State<PusherFront>,
    Path((app_id, name)): Path<(String, String)>,
    req: Request,
) -> Answer {
    let signed = verified(&app, Some(&app_id), req).await?;
    valid_channel(&name, signed.tenant.app.limits.max_channel_name_length)
        .map_err(ApiError::BadRequest)?;
    let info = signed.query.get("info").map_or("", String::as_str);
    if info.contains("user_count") && kind_of(&name).0 != Kind::Presence {
        return Err(ApiError::BadRequest(
            "user_count is only for presence channels".into(),
        ));
    }
    let count = app.pusher.subscription_count(&signed.tenant, &name).await?;
    // issue #14 item 2: the counts with or without `info=` (user_count for presence).
    let presence = kind_of(&name).0 == Kind::Presence;
    let info = if presence { "user_count" } else { "" };
    let mut out = counts(count);
    out.extend(channel_info(&app.pusher, &signed.tenant, &name, info, Some(count)).await?);
    Ok(axum::Json(Value::Object(out)))
}

/// `GET /apps/{id}/channels/{name}/users`: `{"users":[{"id":..}]}` of a presence channel.
pub async fn users(
    State(app): State<PusherFront>,
    Path((app_id, name)): Path<(String, String)>,
    req: Request,
) -> Answer {
    let signed = verified(&app, Some(&app_id), req).await?;
    if kind_of(&name).0 != Kind::Presence {
        return Err(ApiError::BadRequest(
            "users are listed for presence channels only".into(),
        ));
    }
    let users: Vec<Value> = app
        .pusher
        .users(&signed.tenant, &name)
        .await?
        .into_iter()
        .map(|id| json!({ "id": id })) // issue #14 item 3: integers stay integers
        .collect();
    Ok(axum::Json(json!({ "users": users })))
}

/// Closes the user's connections on every node (they are bound to `Pusher::user_key`).
async fn terminate_user(pusher: &Pusher, tenant: &Tenant, user: &str) -> Answer {
    let key = Pusher::user_key(tenant, user);
    pusher
        .cluster
        .close_user(&key, Disconnect::Terminated)
        .await?;
    Ok(axum::Json(json!({})))
}

/// `POST /apps/{id}/users/{user}/terminate_connections`.
pub async fn terminate(
    State(app): State<PusherFront>,
    Path((app_id, user)): Path<(String, String)>,
    req: Request,
) -> Answer {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let signed = verified(&app, Some(&app_id), req).await?;
    terminate_user(&app.pusher, &signed.tenant, &user).await
}

/// `POST /users/{user}/terminate_connections` (the app is found by `auth_key`).
pub async fn terminate_by_key(
    State(app): State<PusherFront>,
    Path(user): Path<String>,
    req: Request,
) -> Answer {
    let signed = verified(&app, None, req).await?;
    terminate_user(&app.pusher, &signed.tenant, &user).await
}
