//! The one upgrade path of every WebSocket front: the RFC 6455 handshake checks, the
//! origin rule, the 101 response, and the session on the upgraded stream (TCP, or TLS
//! through a socket pair); and `GET /ws`, which picks raw or JSON mode.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

use super::formats::{JSON, RAW};
use super::front::Front;
use super::session::{self, Session};
use super::{json, raw, valid_channel, WsParams, SUBPROTOCOL};
use crate::access::{self, Action, Asker};
use crate::auth::AuthError;
use crate::config::{Compression, Config};
use crate::deflate::{self, Agreed, Deflate, Settings};
use crate::error::ApiError;
use crate::hub::Client;
use crate::limits::{Permit, Refused};
use crate::state::AppState;

/// The channels of a handshake's `?channels=`: trimmed, each valid, duplicates dropped
/// (first occurrence kept), at most `max` of them (0 = no limit).
fn handshake_channels(list: &str, max: usize) -> Result<Vec<&str>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut channels = Vec::new();
    for channel in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        valid_channel(channel).map_err(ApiError::BadRequest)?;
        if !seen.insert(channel) {
            continue;
        }
        if max > 0 && channels.len() == max {
            return Err(ApiError::BadRequest(format!(
                "more than {max} channels (max_channels_per_connection)"
            )));
        }
        channels.push(channel);
    }
    Ok(channels)
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks an RFC 6455 upgrade request (Upgrade, Connection, version 13, a 16-byte
/// base64 key) and returns the `Sec-WebSocket-Accept` value for the 101 response.
pub fn accept_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        == Some(b"13");
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
        || !version_13
    {
        return Err(ApiError::UpgradeRequired);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| ApiError::BadRequest("missing or malformed Sec-WebSocket-Key".into()))?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// True when `origin` is in an allow-list (`*` allows any; a trailing `/` is ignored).
pub fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The 101 response of an accepted upgrade (`accept` from [`accept_key`]).
pub fn switching_protocols(accept: &str) -> Response {
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).expect("base64 is a header value"),
    );
    resp
}

/// The permessage-deflate a handshake agrees on: `None` unless `--compression on` and the
/// client made an offer the server can honour.
pub fn negotiate_deflate(headers: &HeaderMap, config: &Config) -> Option<Agreed> {
    if config.compression == Compression::Off {
        return None;
    }
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let settings = Settings {
        window_bits: config.server_max_window_bits,
        context_takeover: config.compression_context_takeover,
    };
    deflate::negotiate(offers, settings)
}

/// Names the agreed permessage-deflate parameters in a 101 response.
pub fn answer_deflate(resp: &mut Response, agreed: Option<&Agreed>) {
    if let Some(agreed) = agreed {
        let value = HeaderValue::from_str(&agreed.response()).expect("ASCII parameters");
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
}

/// Browser handshakes must come from an allowed origin: listed ones (`*` for any), or by
/// default the same origin as the Host header when that Host cannot be a DNS-rebinding
/// name: `localhost`, `*.localhost`, an IP address or one of `server_names` (a page on
/// `rebind.example`, whose name now resolves to 127.0.0.1, is same-origin with a Host of
/// `rebind.example`). No Origin header (non-browser) passes. A refusal says how to allow it.
fn origin_allowed(headers: &HeaderMap, config: &Config) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("?");
    let allowed = &config.allowed_origins;
    if !allowed.is_empty() {
        if origin_listed(origin, allowed) {
            return Ok(());
        }
        return Err(format!(
            "origin {origin} is not allowed: add it to --allowed-origins"
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if host.is_empty() || !origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "origin {origin} is not allowed: only pages of this server's own origin may \
             connect unless --allowed-origins lists it (--allowed-origins {origin})"
        ));
    }
    let name = crate::net::host_name(host);
    if crate::net::is_loopback_name(&name)
        || crate::net::is_ip_literal(&name)
        || crate::net::is_server_name(&name, &config.server_names)
    {
        return Ok(());
    }
    Err(format!(
        "origin {origin} is not allowed: {name:?} is not localhost, an IP address or a name \
         in --server-names, and a page under a DNS-rebinding name looks same-origin; allow \
         it with --server-names {name} or --allowed-origins {origin}"
    ))
}

/// `GET /ws`: validates the handshake, registers the client and its channels (so it
/// receives everything published after the 101), then hands the socket to a session.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let accept = accept_key(headers)?;
    let params = Query::<WsParams>::try_from_uri(req.uri())
        .map_err(|e| ApiError::BadRequest(e.body_text()))?
        .0;
    let subprotocol = has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let json = subprotocol || params.protocol.as_deref() == Some("json");
    let channels = handshake_channels(
        params.channels.as_deref().unwrap_or(""),
        app.config.max_channels_per_connection,
    )?;
    let stats = &app.hub.stats();
    if let Err(why) = origin_allowed(headers, &app.config) {
        stats.rejected_connections.fetch_add(1, Relaxed);
        return Err(ApiError::Denied(why));
    }
    let grant = match (&params.token, &app.verifier) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::InvalidToken(AuthError::NotConfigured.to_string()))
        }
        (Some(token), Some(verifier)) => match verifier.verify(token) {
            Ok(grant) => Some(Arc::new(grant)),
            Err(e) => {
                stats.auth_failures.fetch_add(1, Relaxed);
                return Err(ApiError::InvalidToken(e.to_string()));
            }
        },
    };
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
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(ApiError::UpgradeRequired)?;

    let format = if json { &JSON } else { &RAW };
    let agreed = negotiate_deflate(req.headers(), &app.config);
    let client = app
        .hub
        .register_with_deflate(format, peer, grant, agreed.map(Deflate::new));
    for channel in channels {
        // A fresh client cannot already be subscribed, and no `since` means no history check.
        if let Err(e) = app
            .hub
            .subscribe(&client, channel, None, Box::new(|_| {}))
            .await
        {
            app.hub.disconnect(&client).await;
            return Err(ApiError::BrokerUnavailable(e.to_string()));
        }
    }
    let id = client.id;
    let tracker = app.shutdown.tracker.clone();
    // Two fronts, two session types: the branch picks the monomorphized session.
    if json {
        tracker.spawn(start_session(
            json::Json(app),
            Default::default(),
            client,
            permit,
            on_upgrade,
        ));
    } else {
        tracker.spawn(start_session(
            raw::Raw(app),
            Default::default(),
            client,
            permit,
            on_upgrade,
        ));
    }
    let mut resp = switching_protocols(&accept);
    answer_deflate(&mut resp, agreed.as_ref());
    let h = resp.headers_mut();
    h.insert(
        "x-wspush-client",
        HeaderValue::from_str(&id.to_string()).expect("id is a header value"),
    );
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(resp)
}

/// Runs a client's session once its upgrade completes: on the TCP stream itself, or for
/// TLS on one end of a socket pair whose other end a pump task joins to the TLS stream.
/// Shared by every WebSocket front (raw/JSON at `/ws`, Pusher at `/app/{key}`).
pub async fn start_session<F: Front>(
    front: F,
    conn: F::Conn,
    client: Arc<Client>,
    permit: Permit,
    on_upgrade: OnUpgrade,
) {
    let abandon = |front: F, conn: F::Conn, client: Arc<Client>| async move {
        front.app().hub.disconnect(&client).await;
        front.closed(conn, &client).await;
    };
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(client = %client.id, error = %e, "upgrade failed");
            return abandon(front, conn, client).await;
        }
    };
    // A fresh task per session keeps the upgrade's state out of its memory.
    let tracker = front.app().shutdown.tracker.clone();
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let session = Session::new(parts.io.into_inner(), client, front, conn, permit);
            tracker.spawn(session.run(parts.read_buf));
            return;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => match UnixStream::pair() {
            Ok((near, far)) => {
                tracker.spawn(pump(parts.io.into_inner(), far));
                let session = Session::new(near, client, front, conn, permit);
                tracker.spawn(session.run(parts.read_buf));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a socket pair for a TLS session");
                abandon(front, conn, client).await;
            }
        },
        Err(_) => {
            tracing::error!(client = %client.id, "upgraded connection of an unknown type");
            abandon(front, conn, client).await;
        }
    }
}

/// Joins a TLS stream to the far end of a session's socket pair. Once the session has
/// ended (its end is closed), the client gets `CLOSE_WAIT` to finish; then the TCP
/// connection is dropped, so no descriptor outlives its session (and its permit) for
/// long, whatever the client does.
async fn pump(tls: TlsStream<TcpStream>, far: UnixStream) {
    use tokio::io::AsyncWriteExt;
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut far_read, mut far_write) = far.into_split();
    let from_client = async {
        let _ = tokio::io::copy(&mut tls_read, &mut far_write).await;
        let _ = far_write.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut far_read, &mut tls_write).await;
        let _ = tls_write.shutdown().await;
    };
    tokio::pin!(from_client, to_client);
    tokio::select! {
        // The client finished first: the session sees EOF and ends; let it write its last.
        _ = &mut from_client => to_client.await,
        // The session ended: the client has a short while to read and close.
        _ = &mut to_client => {
            let _ = tokio::time::timeout(session::CLOSE_WAIT, from_client).await;
        }
    }
}
