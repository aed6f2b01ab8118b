//! The HTTP surface in one function, `router(state)`: the demo page, `/healthz`, the
//! WebSocket endpoint and the API (with its own auth layer: an API key, or local requests
//! only), whose bodies are read bounded in size and time.

mod api;
pub mod cors;

use std::net::SocketAddr;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::Config;
pub use crate::error::{ApiError, Json};
use crate::net::{self, Remote};
use crate::refusal::Kind;
pub use crate::state::{AppState, Shared};

const INDEX_HTML: &str = include_str!("../../assets/index.html");
/// The browser library as a classic script (defines `globalThis.wspush`).
const WSPUSH_JS: &str = include_str!("../../assets/wspush.js");
/// The same library as an ES module.
const WSPUSH_MJS: &str = concat!(
    include_str!("../../assets/wspush.js"),
    "\nexport const connect = globalThis.wspush.connect;\nexport default globalThis.wspush;\n"
);

/// The whole HTTP surface: the native routes and the fronts' routes (`fronts`, each
/// with its own state), on one router.
pub fn router(state: AppState, fronts: Router) -> Router {
    let api = Router::new()
        .route("/publish", post(api::publish))
        .route("/broadcast", post(api::broadcast))
        .route("/send", post(api::send))
        .route("/channels", get(api::channels))
        .route("/clients", get(api::clients))
        .route("/clients/{id}", delete(api::disconnect))
        .route("/history/{channel}", get(api::history))
        .route("/presence/{channel}", get(api::presence))
        .fallback(|| async { ApiError::NotFound("no such API call".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_size))
        .layer(middleware::from_fn_with_state(state.clone(), buffer_body))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route(
            "/metrics",
            get(metrics).route_layer(middleware::from_fn_with_state(state.clone(), authorize)),
        )
        .route("/wspush.js", get(|| async { javascript(WSPUSH_JS) }))
        .route("/wspush.mjs", get(|| async { javascript(WSPUSH_MJS) }))
        .route("/ws", get(crate::ws::upgrade))
        .nest("/api", api)
        .fallback(ws_path_or_not_found)
        .with_state(state.clone())
        .merge(fronts)
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(cors::Cors::new(&state.config.cors_allowed_origins)),
            cors::layer,
        ))
}

/// What no route serves: raw mode at the extra paths of `ws_paths` (a page written for
/// another server connects unchanged), 404 otherwise.
async fn ws_path_or_not_found(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path();
    if req.method() == axum::http::Method::GET && state.config.ws_paths.iter().any(|p| p == path) {
        return crate::ws::upgrade(state, peer, req).await.into_response();
    }
    ApiError::NotFound("not found".into()).into_response()
}

async fn index() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        INDEX_HTML,
    )
}

fn javascript(body: &'static str) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.render(),
    )
}

async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    let healthy = app.hub.healthy().await;
    let status = if healthy {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = axum::Json(serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "broker": if healthy { "ok" } else { "unavailable" },
        "connections": app.hub.stats().connections(),
    }));
    (status, body)
}

/// With an API key configured every call needs `Authorization: apikey KEY` (401);
/// without one only local requests are answered (403, see [`local_only`]).
async fn authorize(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &app.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("apikey "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes())) {
            let e = ApiError::Unauthorized;
            let msg = format!("refused API call {}: {e}", full_path(&req));
            let key = peer.ip().to_string();
            app.refusals.refused(Kind::Api, &key, peer, &msg);
            return e.into_response();
        }
        return next.run(req).await;
    }
    // `server::run` puts the `Remote` in; a bare router judges the TCP peer.
    let remote = req
        .extensions()
        .get::<Remote>()
        .copied()
        .unwrap_or_else(|| net::Proxies::default().remote(peer, req.headers()));
    if let Err(why) = local_only(&app.config, &remote, &req) {
        let why = format!("refused API call {}: {why}", full_path(&req));
        let key = remote.addr.ip().to_string();
        app.refusals.refused(Kind::Api, &key, remote.addr, &why);
        return ApiError::Forbidden(why).into_response();
    }
    next.run(req).await
}

/// The request's path as the client sent it (before `/api` was stripped by the nesting).
fn full_path(req: &Request) -> &str {
    req.extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path(), |uri| uri.path())
}

/// Without an API key the API (and `/metrics`) answers a request only when it is local:
/// no forwarding headers unless the peer is a trusted proxy (a reverse proxy on the same
/// host is loopback too), a loopback peer and client, and a loopback `Host` or one of
/// `server_names` (a page under a DNS-rebinding name reaches a loopback server with its
/// own name as Host). Otherwise the reason and the fix.
fn local_only(config: &Config, remote: &Remote, req: &Request) -> Result<(), String> {
    const FIX: &str = "set an API key (--api-key / WSPUSH_API_KEY) to call it from elsewhere";
    if remote.forwarded && !remote.via_proxy {
        return Err(format!(
            "without an API key the API refuses forwarded requests (Forwarded, X-Forwarded-For, \
             X-Real-IP): a proxy's clients are not local; {FIX}, or list the proxy in \
             --trusted-proxies"
        ));
    }
    // Behind a proxy both must be loopback: a proxy on another host forwarding for its
    // own 127.0.0.1 does not make that client local here.
    if let Some(ip) = [remote.peer.ip(), remote.addr.ip()]
        .into_iter()
        .find(|ip| !ip.is_loopback())
    {
        return Err(format!(
            "without an API key the API answers only loopback clients, not {ip}; {FIX}"
        ));
    }
    let uri_host = req.uri().authority().map(|a| a.as_str().to_string());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?").to_string());
    if uri_host.is_none() && host.is_none() {
        return Err(format!(
            "without an API key the API needs a Host header naming localhost; {FIX}"
        ));
    }
    for host in uri_host.iter().chain(&host) {
        let name = net::host_name(host);
        if !net::is_loopback_name(&name) && !net::is_server_name(&name, &config.server_names) {
            return Err(format!(
                "without an API key the API answers only requests to localhost, 127.0.0.1 or \
                 [::1] (or a name in --server-names), not Host {host:?}: a web page can reach a \
                 local server under its own name (DNS rebinding); {FIX}"
            ));
        }
    }
    Ok(())
}

/// Reads a request body whole, bounded in size and time: refused before reading when its
/// `Content-Length` is over `max` (413), cut off as soon as it passes `max` (413), and
/// abandoned when it has not all arrived within `timeout` (408), so a slow or endless body
/// holds a connection only that long.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(ApiError::TooLarge);
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::BodyTimeout(
            timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ApiError::TooLarge),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Buffers an `/api` request's body with [`read_body`] before the handler parses it.
async fn buffer_body(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let (max, timeout) = (app.config.max_body_size, app.config.body_timeout());
    match read_body(&parts.headers, body, max, timeout).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
