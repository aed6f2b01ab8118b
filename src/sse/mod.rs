//! The HTTP streaming fronts: Server-Sent Events at `GET /sse` and newline-delimited JSON
//! at `GET /stream`, for clients a proxy keeps off WebSocket. Receive-only (publishing
//! goes through the HTTP API); the same tokens, access policy, limits, outbox bound and
//! resume-from-history guarantee as a JSON-mode WebSocket client.

pub mod direct;
mod feed;
pub mod format;
pub mod resume;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::auth::Grant;
use crate::broker::{Position, Since, SubscribeError};
use crate::error::ApiError;
use crate::hub::Client;
use crate::limits::Permit;
use crate::model::{ClientId, Format};
use crate::state::AppState;
use crate::ws::{handshake_channels, Admission};
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

/// A request that passed every check, holding its connection slot.
pub(crate) struct Admitted {
    format: &'static Format,
    channels: Vec<String>,
    plan: Resume,
    grant: Option<Arc<Grant>>,
    permit: Permit,
    /// The allowed `Origin`, echoed for CORS.
    origin: Option<HeaderValue>,
}

/// Checks a request as `/ws` checks a handshake: channels, resume, origin, token,
/// access, then a connection slot.
pub(crate) fn admit(
    app: &AppState,
    format: &'static Format,
    peer: SocketAddr,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Admitted, ApiError> {
    let params = Query::<Params>::try_from_uri(uri)
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
    let Admission { grant, permit } = crate::ws::admit(
        app,
        peer,
        headers,
        params.token.as_deref(),
        &channels,
        "event stream",
    )?;
    Ok(Admitted {
        format,
        channels: channels.into_iter().map(str::to_string).collect(),
        plan,
        grant,
        permit,
        origin: headers.get(header::ORIGIN).cloned(),
    })
}

impl Admitted {
    /// The response headers of the stream (after the status line).
    pub(crate) fn headers(&self, client: ClientId) -> Vec<(HeaderName, HeaderValue)> {
        let content_type = if self.format.slot == SSE.slot {
            "text/event-stream; charset=utf-8"
        } else {
            "application/x-ndjson"
        };
        let mut h = vec![
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Proxies that buffer responses (nginx) must pass this one through as it comes.
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
            // One stream per connection: once it ends the connection closes with it.
            (header::CONNECTION, HeaderValue::from_static("close")),
            (
                HeaderName::from_static("x-wspush-client"),
                HeaderValue::from_str(&client.to_string()).expect("id is a header value"),
            ),
        ];
        if let Some(origin) = &self.origin {
            // The origin passed the same rule as a WebSocket handshake: let the page read.
            h.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            h.push((header::VARY, HeaderValue::from_static("origin")));
        }
        h
    }

    /// Registers the client (nothing is written to it before its session starts).
    pub(crate) fn register(&self, app: &AppState, peer: SocketAddr) -> Arc<Client> {
        app.hub.register(self.format, peer, self.grant.clone())
    }

    /// Subscribes the client to its channels, resuming or resetting each; on a broker
    /// failure the client is forgotten again.
    pub(crate) async fn subscribe_all(
        &self,
        app: &AppState,
        client: &Arc<Client>,
    ) -> Result<(), ApiError> {
        for channel in &self.channels {
            let since = self.plan.since.get(channel).cloned();
            if let Err(e) = subscribe(app, client, channel, since, self.plan.reconnect).await {
                app.hub.disconnect(client).await;
                return Err(ApiError::BrokerUnavailable(e.to_string()));
            }
        }
        Ok(())
    }
}

/// Checks the request, registers the client, subscribes it and answers with its stream
/// served by hyper (TLS connections, and streams asked for on a reused keep-alive
/// connection; a fresh plain connection is taken off hyper, see `direct`).
async fn open(
    app: AppState,
    format: &'static Format,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, ApiError> {
    let admitted = admit(&app, format, peer, req.headers(), req.uri())?;
    let client = admitted.register(&app, peer);
    admitted.subscribe_all(&app, &client).await?;
    let headers = admitted.headers(client.id);
    let watch = req.extensions().get::<Arc<Watch>>().cloned();
    let feed = Feed::new(app, client, watch, admitted.permit);
    let mut resp = (StatusCode::OK, Body::from_stream(feed)).into_response();
    resp.headers_mut().extend(headers);
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
