//! The HTTP surface in one function, `router(state)`: the demo page, `/healthz`, the
//! WebSocket endpoint and the API (with its own auth layer).

mod api;
mod error;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::shutdown::Shutdown;
use crate::upstream::Upstream;
pub use error::{ApiError, Json};

const INDEX_HTML: &str = include_str!("../../assets/index.html");
/// The browser library as a classic script (defines `globalThis.wspush`).
const WSPUSH_JS: &str = include_str!("../../assets/wspush.js");
/// The same library as an ES module.
const WSPUSH_MJS: &str = concat!(
    include_str!("../../assets/wspush.js"),
    "\nexport const connect = globalThis.wspush.connect;\nexport default globalThis.wspush;\n"
);

/// Everything a request handler or session may need: one shared allocation, so a
/// clone (one per request and per session) is a single pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `state`.
    pub fn new(state: Shared) -> Self {
        AppState(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What `AppState` holds.
pub struct Shared {
    /// The hub.
    pub hub: Hub,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Upstream handler for client messages.
    pub upstream: Arc<Upstream>,
    /// Tasks to wait for at shutdown.
    pub shutdown: Shutdown,
    /// Connection limits (total and per IP).
    pub limits: Arc<Limits>,
    /// Token verifier, when tokens are configured.
    pub verifier: Option<Arc<Verifier>>,
    /// The Pusher-protocol front: apps, presence, webhooks.
    pub pusher: Arc<crate::pusher::Pusher>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
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
        .merge(crate::pusher::router())
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .with_state(state)
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
        app.hub.metrics().render(),
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
        "connections": app.hub.registry().stats.connections(),
    }));
    (status, body)
}

/// With an API key configured every call needs `Authorization: apikey KEY` (401);
/// without one only loopback peers are answered (403).
async fn authorize(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match &app.config.api_key {
        Some(key) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "));
            if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes())) {
                return ApiError::Unauthorized.into_response();
            }
        }
        None if !peer.ip().is_loopback() => return ApiError::Forbidden.into_response(),
        None => {}
    }
    next.run(req).await
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
