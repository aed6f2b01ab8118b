//! The HTTP server API under `/api`: publish, broadcast, send, channels, clients.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::broker::{Since, SubscribeError};
use crate::error::{ApiError, Json, Query};
use crate::hub::{ClientId, Disconnect, Payload, ALL};
use crate::protocol::json::MAX_HISTORY_LIMIT;
use crate::upstream::decode_base64;
use crate::ws::{members_json, messages_json, valid_channel};

type Answer = Result<axum::Json<Value>, ApiError>;

/// Data as API bodies carry it: `data` (a string is text, other JSON is sent as its
/// serialization) or `data_base64` (binary).
#[derive(Debug, Deserialize)]
pub struct Data {
    data: Option<Value>,
    data_base64: Option<String>,
}

impl Data {
    fn payload(self) -> Result<Payload, ApiError> {
        match (self.data, self.data_base64) {
            (Some(v), None) => Ok(Payload::from_json(&v)),
            (None, Some(b)) => decode_base64(&b)
                .map(|bytes| Payload {
                    kind: crate::hub::Kind::Binary,
                    data: bytes.into(),
                    event: None,
                })
                .map_err(|e| ApiError::BadRequest(format!("data_base64: {e}"))),
            (None, None) => Err(ApiError::BadRequest("missing field `data`".into())),
            (Some(_), Some(_)) => Err(ApiError::BadRequest(
                "give `data` or `data_base64`, not both".into(),
            )),
        }
    }
}

/// `POST /api/publish` body.
#[derive(Debug, Deserialize)]
pub struct Publish {
    channel: String,
    #[serde(flatten)]
    data: Data,
}

/// `POST /api/publish`: `{"offset":N}`.
pub async fn publish(State(app): State<AppState>, Json(req): Json<Publish>) -> Answer {
    valid_channel(&req.channel).map_err(ApiError::BadRequest)?;
    let offset = app.hub.publish(&req.channel, req.data.payload()?).await?;
    Ok(axum::Json(json!({ "offset": offset })))
}

/// `POST /api/broadcast` body.
#[derive(Debug, Deserialize)]
pub struct Broadcast {
    channels: Vec<String>,
    #[serde(flatten)]
    data: Data,
}

/// `POST /api/broadcast`: publishes to each channel (`*` = every client), `{"offsets":{..}}`.
pub async fn broadcast(State(app): State<AppState>, Json(req): Json<Broadcast>) -> Answer {
    if req.channels.is_empty() {
        return Err(ApiError::BadRequest("`channels` is empty".into()));
    }
    for channel in req.channels.iter().filter(|c| *c != ALL) {
        valid_channel(channel).map_err(ApiError::BadRequest)?;
    }
    let payload = req.data.payload()?;
    let mut offsets = BTreeMap::new();
    for channel in &req.channels {
        if !offsets.contains_key(channel) {
            let offset = app.hub.publish(channel, payload.clone()).await?;
            offsets.insert(channel.clone(), offset);
        }
    }
    Ok(axum::Json(json!({ "offsets": offsets })))
}

/// `POST /api/send` body.
#[derive(Debug, Deserialize)]
pub struct Send {
    client: Option<String>,
    user: Option<String>,
    #[serde(flatten)]
    data: Data,
}

/// `POST /api/send`: to one client id, `{"delivered":N}`; an unknown client is 404.
pub async fn send(State(app): State<AppState>, Json(req): Json<Send>) -> Answer {
    let payload = req.data.payload()?;
    match (req.client, req.user) {
        (Some(client), None) => {
            let id: ClientId = client.parse().map_err(|_| {
                ApiError::BadRequest(format!("'{client}' is not a client id (c-N)"))
            })?;
            match app.hub.send(id, payload).await? {
                0 => Err(ApiError::NotFound(format!("no client {id}"))),
                n => Ok(axum::Json(json!({ "delivered": n }))),
            }
        }
        (None, Some(user)) => {
            let n = app.hub.send_user(&user, payload).await?;
            Ok(axum::Json(json!({ "delivered": n })))
        }
        _ => Err(ApiError::BadRequest(
            "give exactly one of `client` or `user`".into(),
        )),
    }
}

/// `GET /api/channels`: channels with subscribers on this node (`"scope":"node"`, with
/// the node's id: in a cluster, ask each node).
pub async fn channels(State(app): State<AppState>) -> Answer {
    let list: Vec<Value> = app
        .hub
        .channel_list()
        .into_iter()
        .map(|(name, n)| json!({ "channel": &*name, "subscribers": n }))
        .collect();
    Ok(axum::Json(
        json!({ "channels": list, "scope": "node", "node": app.hub.node() }),
    ))
}

/// `GET /api/clients`: clients connected to this node (`"scope":"node"`, with the
/// node's id: in a cluster, ask each node).
pub async fn clients(State(app): State<AppState>) -> Answer {
    let list: Vec<Value> = app
        .hub
        .client_list()
        .into_iter()
        .map(|c| {
            let channels: Vec<&str> = c.channels.iter().map(|s| &**s).collect();
            json!({ "id": c.id.to_string(), "mode": c.format, "remote": c.remote.to_string(), "channels": channels })
        })
        .collect();
    Ok(axum::Json(
        json!({ "clients": list, "scope": "node", "node": app.hub.node() }),
    ))
}

/// `?since=&limit=` of `GET /api/history/{channel}`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    since: Option<u64>,
    epoch: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/history/{channel}`: stored messages, `{"messages":[..],"offset":N,"epoch":..}`;
/// 410 `history_gone` when `since` is older than what is kept.
pub async fn history(
    State(app): State<AppState>,
    Path(channel): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Answer {
    valid_channel(&channel).map_err(ApiError::BadRequest)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY_LIMIT as usize).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to {MAX_HISTORY_LIMIT}"
        )));
    }
    let since = q.since.map(|offset| Since {
        offset,
        epoch: q.epoch,
    });
    match app.hub.history(&channel, since, limit).await {
        Ok(page) => Ok(axum::Json(json!({
            "messages": messages_json(&page.messages),
            "offset": page.position.offset,
            "epoch": &*page.position.epoch,
        }))),
        Err(SubscribeError::HistoryGone { oldest, position }) => Err(ApiError::HistoryGone {
            oldest,
            offset: position.offset,
        }),
        Err(e) => Err(ApiError::BrokerUnavailable(e.to_string())),
    }
}

/// `GET /api/presence/{channel}`: `{"clients":[{"client":..,"user":..}]}`.
pub async fn presence(State(app): State<AppState>, Path(channel): Path<String>) -> Answer {
    valid_channel(&channel).map_err(ApiError::BadRequest)?;
    if !app.hub.namespaces().of(&channel).presence {
        return Err(ApiError::BadRequest(format!(
            "presence is not enabled for {channel:?}"
        )));
    }
    let members = app.hub.presence(&channel).await?;
    Ok(axum::Json(json!({ "clients": members_json(&members) })))
}

/// `DELETE /api/clients/{id}`: disconnects the client (close 1008).
pub async fn disconnect(State(app): State<AppState>, Path(id): Path<String>) -> Answer {
    let cid: ClientId = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("'{id}' is not a client id (c-N)")))?;
    // A client of another node is closed by its node (`send` routes the same way).
    match app.hub.close_client(cid, Disconnect::Kicked).await? {
        0 => Err(ApiError::NotFound(format!("no client {cid}"))),
        _ => Ok(axum::Json(json!({ "disconnected": cid.to_string() }))),
    }
}
