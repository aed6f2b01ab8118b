//! `ApiError`: the one place HTTP statuses and JSON error bodies are made, and `Json`,
//! an extractor whose rejections are JSON errors too.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::broker::BrokerError;

/// An HTTP API error, answered as `{"error":{"code":..,"message":..}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong API key.
    #[error("missing or invalid API key (Authorization: apikey KEY)")]
    Unauthorized,
    /// 403: no API key configured and the request is not local (its client, its Host or
    /// its forwarding headers); the message says which and how to allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 401: a client token was refused.
    #[error("{0}")]
    InvalidToken(String),
    /// 403: a WebSocket handshake that is not allowed (origin, channel permissions).
    #[error("{0}")]
    Denied(String),
    /// 429: too many connections from this address.
    #[error(
        "refused WebSocket: too many connections from this address \
         (max_connections_per_ip); raise --max-connections-per-ip, or list your proxy in \
         --trusted-proxies"
    )]
    TooManyFromIp,
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 405: wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 410: history no longer reaches back to the requested offset.
    #[error("history no longer reaches back that far; oldest available offset is {oldest}")]
    HistoryGone {
        /// Oldest offset still stored.
        oldest: u64,
        /// The channel's offset now.
        offset: u64,
    },
    /// 408: the request body did not arrive in time (`body_timeout`).
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// 413: body too large.
    #[error("request body too large")]
    TooLarge,
    /// 401: a Pusher HTTP API request whose signature (or key, or timestamp) is wrong.
    #[error("{0}")]
    BadSignature(String),
    /// 413: over a Pusher app's limit (event payload, channels per event, batch size).
    #[error("{0}")]
    OverLimit(String),
    /// 415: body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 426: a plain request to a WebSocket endpoint, or a WebSocket version we do not speak.
    #[error("this endpoint needs a WebSocket upgrade (version 13)")]
    UpgradeRequired,
    /// 503: the broker (Redis) cannot be reached; nothing was done.
    #[error("{0}")]
    BrokerUnavailable(String),
    /// 503: the server cannot take this now (connection limit, broker down).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooManyFromIp => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::HistoryGone { .. } => (StatusCode::GONE, "history_gone"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::OverLimit(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::BrokerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError::BrokerUnavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body =
            serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        if let ApiError::HistoryGone { oldest, offset } = self {
            body["error"]["oldest"] = oldest.into();
            body["error"]["offset"] = offset.into();
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if matches!(self, ApiError::UpgradeRequired) {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        resp
    }
}

/// `axum::Json` with JSON rejections.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge)
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// `axum::extract::Query` with JSON rejections.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}
