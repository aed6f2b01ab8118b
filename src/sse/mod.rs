//! The HTTP streaming fronts: Server-Sent Events at `GET /sse` and newline-delimited JSON
//! at `GET /stream`, for clients a proxy keeps off WebSocket. Receive-only (publishing
//! goes through the HTTP API); the same tokens, access policy, limits, outbox bound and
//! resume-from-history guarantee as a JSON-mode WebSocket client.

mod feed;
pub mod format;
pub mod resume;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::access::{self, Action, Asker};
use crate::auth::{AuthError, Grant};
use crate::broker::{Position, Since, SubscribeError};
use crate::error::ApiError;
use crate::hub::Client;
use crate::limits::Refused;
use crate::model::Format;
use crate::state::AppState;
use crate::ws::{handshake_channels, origin_allowed};
pub use feed::{Feed, Watch};
use format::{start_frame, Start, NDJSON, SSE};
use resume::Resume;

/// Query parameters of `GET /sse` and `GET /stream`.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Comma-separated channels.
    pub channels: Option<String>,
    /// A JWT authenticating the connection (the same grants as on `/ws`).
    pub token: Option<String>,
    /// Where to resume: a list of `<epoch>:<offset>:<channel>` ids, or an offset (one
    /// channel, with `epoch`).
    pub since: Option<String>,
    /// The epoch of `since` when it is an offset.
    pub epoch: Option<String>,
}

/// The streaming fronts' routes.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/sse", get(sse))
        .route("/stream", get(stream))
        .with_state(app)
}

/// `GET /sse?channels=a,b`: an event stream.
async fn sse(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    open(app, &SSE, peer, req).await
}

/// `GET /stream?channels=a,b`: chunked newline-delimited JSON.
async fn stream(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    open(app, &NDJSON, peer, req).await
}

fn verify(app: &AppState, token: Option<&str>) -> Result<Option<Arc<Grant>>, ApiError> {
    let Some(token) = token else {
        return Ok(None);
    };
    let Some(verifier) = &app.verifier else {
        return Err(ApiError::InvalidToken(AuthError::NotConfigured.to_string()));
    };
    verifier
        .verify(token)
        .map(|g| Some(Arc::new(g)))
        .map_err(|e| {
            app.hub.stats().auth_failures.fetch_add(1, Relaxed);
            ApiError::InvalidToken(e.to_string())
        })
}

/// Checks the request as `/ws` checks a handshake (channels, origin, token, access,
/// connection limits), registers the client, subscribes it (resuming or resetting each
/// channel) and answers with its stream.
async fn open(
    app: AppState,
    format: &'static Format,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let params = Query::<Params>::try_from_uri(req.uri())
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
        .0;
    let channels = handshake_channels(
        params.channels.as_deref().unwrap_or(""),
        app.config.max_channels_per_connection,
    )?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or(""));
    let plan = Resume::plan(
        &channels,
        last_event_id,
        params.since.as_deref(),
        params.epoch.as_deref(),
    )
    .map_err(ApiError::BadRequest)?;
    let stats = app.hub.stats();
    if let Err(why) = origin_allowed(headers, &app.config) {
        stats.rejected_connections.fetch_add(1, Relaxed);
        return Err(ApiError::Denied(why));
    }
    let grant = verify(&app, params.token.as_deref())?;
    for channel in &channels {
        access::check(
            app.hub.namespaces(),
            Asker::Native(grant.as_deref()),
            channel,
            Action::Subscribe,
        )
        .map_err(|denied| ApiError::Denied(denied.to_string()))?;
    }
    let permit = app.limits.admit(peer.ip()).map_err(|refused| {
        stats.rejected_connections.fetch_add(1, Relaxed);
        match refused {
            Refused::Total => ApiError::Unavailable("too many connections".into()),
            Refused::PerIp => ApiError::TooManyFromIp,
        }
    })?;
    let origin = headers.get(header::ORIGIN).cloned();
    let watch = req.extensions().get::<Arc<Watch>>().cloned();

    let client = app.hub.register(format, peer, grant);
    for channel in channels {
        let since = plan.since.get(channel).cloned();
        if let Err(e) = subscribe(&app, &client, channel, since, plan.reconnect).await {
            app.hub.disconnect(&client).await;
            return Err(ApiError::BrokerUnavailable(e.to_string()));
        }
    }
    let id = client.id;
    let feed = Feed::new(app, client, watch, permit);
    let mut resp = (StatusCode::OK, Body::from_stream(feed)).into_response();
    let h = resp.headers_mut();
    let content_type = if format.slot == SSE.slot {
        "text/event-stream; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) must pass this one through as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // One stream per connection: once it ends the connection closes with it.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(
        "x-wspush-client",
        HeaderValue::from_str(&id.to_string()).expect("id is a header value"),
    );
    if let Some(origin) = origin {
        // The origin passed the same rule as a WebSocket handshake: let the page read.
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    Ok(resp)
}

/// Subscribes `client` to `channel`: from `since` when given (the stream starts with
/// `subscribed` at that position, then the replay), live otherwise (`subscribed` at the
/// channel's position, or `reset` when the client reconnects without a position for
/// it). When history no longer reaches back, the client gets `reset` and goes live.
async fn subscribe(
    app: &AppState,
    client: &Arc<Client>,
    channel: &str,
    since: Option<Since>,
    reconnect: bool,
) -> Result<(), SubscribeError> {
    let hub = &app.hub;
    let format = client.format;
    if let Some(since) = since {
        let from = since.clone();
        let ready = Box::new(move |p: &Position| {
            let at = Position {
                offset: from.offset,
                epoch: p.epoch.clone(),
            };
            hub.push(client, start_frame(format, Start::Subscribed, channel, &at));
        });
        match hub.subscribe(client, channel, Some(since), ready).await {
            Ok(_) => return Ok(()),
            Err(SubscribeError::HistoryGone { .. }) => {}
            Err(e) => return Err(e),
        }
    } else if !reconnect {
        let ready = Box::new(move |p: &Position| {
            hub.push(client, start_frame(format, Start::Subscribed, channel, p));
        });
        return hub
            .subscribe(client, channel, None, ready)
            .await
            .map(|_| ());
    }
    let ready = Box::new(move |p: &Position| {
        hub.push(client, start_frame(format, Start::Reset, channel, p));
    });
    hub.subscribe(client, channel, None, ready)
        .await
        .map(|_| ())
}
