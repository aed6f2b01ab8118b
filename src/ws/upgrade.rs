//! The one upgrade path of every WebSocket front: the RFC 6455 handshake checks, the
//! origin rule, the 101 response, and the session on the upgraded stream (TCP, or a TLS
//! session on its TCP socket); and `GET /ws`, which picks raw or JSON mode.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::admit::{admit, Admission};
use super::formats::{JSON, RAW};
use super::front::Front;
use super::session::Session;
use super::tls::Tls;
use super::{json, raw, valid_channel, WsParams, SUBPROTOCOL};
use crate::config::{Compression, Config};
use crate::deflate::{self, Agreed, Deflate, Settings};
use crate::error::ApiError;
use crate::hub::Client;
use crate::limits::Permit;
use crate::state::AppState;

/// The channels of a handshake's `?channels=`: trimmed, each valid, duplicates dropped
/// (first occurrence kept), at most `max` of them (0 = no limit).
pub(crate) fn handshake_channels(list: &str, max: usize) -> Result<Vec<&str>, ApiError> {
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

/// True when `origin` is in an allow-list: `*` allows any, `null` the opaque origin
/// of a page opened from a file, `SCHEME://HOST[:PORT]` that origin (a trailing `/` is
/// ignored), where a `*.` host prefix stands for any subdomain and a `*` port for any port.
pub fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|rule| origin_matches(origin, rule))
}

fn origin_matches(origin: &str, rule: &str) -> bool {
    let rule = rule.trim().trim_end_matches('/');
    if rule == "*" || rule.eq_ignore_ascii_case(origin) {
        return true;
    }
    if !rule.contains('*') {
        return false;
    }
    let (Some((r_scheme, r_rest)), Some((o_scheme, o_rest))) =
        (rule.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    let split_port = |rest: &str| -> (String, Option<String>) {
        match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h.to_ascii_lowercase(), Some(p.to_string())),
            _ => (rest.to_ascii_lowercase(), None),
        }
    };
    let (r_host, r_port) = split_port(r_rest);
    let (o_host, o_port) = split_port(o_rest);
    let host_ok = match r_host.strip_prefix("*.") {
        Some(domain) => o_host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => r_host == o_host,
    };
    let port_ok = match r_port.as_deref() {
        Some("*") => true,
        r => r == o_port.as_deref(),
    };
    r_scheme.eq_ignore_ascii_case(o_scheme) && host_ok && port_ok
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
/// `rebind.example`). No Origin header (non-browser) passes. A refusal says why and how
/// to allow it (the log line and the JSON body).
pub(crate) fn origin_allowed(headers: &HeaderMap, config: &Config) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("?");
    let shown = crate::refusal::quote(origin);
    let allowed = &config.allowed_origins;
    if origin_listed(origin, allowed) {
        return Ok(());
    }
    if origin.eq_ignore_ascii_case("null") {
        return Err(
            "refused WebSocket from origin \"null\" (a page opened from a file, or a \
             sandboxed frame): allow it with --allowed-origins null"
                .into(),
        );
    }
    // The rule to suggest: the origin itself, when it looks like one.
    let suggest = if crate::config::valid_origin_rule(origin) && !origin.contains('*') {
        origin.to_string()
    } else {
        "ORIGIN".to_string()
    };
    if !allowed.is_empty() {
        return Err(format!(
            "refused WebSocket from origin {shown}: it is not in --allowed-origins; add it: \
             --allowed-origins {suggest}"
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if host.is_empty() || !origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host)) {
        let any_port = match suggest.rsplit_once(':') {
            Some((rest, port)) if port.parse::<u16>().is_ok() && rest.contains("://") => {
                format!(" (or {rest}:* for any port)")
            }
            _ => String::new(),
        };
        return Err(format!(
            "refused WebSocket from origin {shown}: only pages of this server's own origin \
             (Host {}) may connect by default; allow it with --allowed-origins {suggest}{any_port}",
            crate::refusal::quote(host)
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
        "refused WebSocket from origin {shown}: {} is not localhost, an IP address or a name \
         in --server-names, and a page under a DNS-rebinding name looks same-origin; allow \
         it with --server-names {name} or --allowed-origins {suggest}",
        crate::refusal::quote(&name)
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
    // Every refusal from here on is logged with its fix (rate-limited), as its body says.
    let refuse = |key: &str, e: ApiError| {
        let kind = crate::refusal::Kind::WebSocket;
        app.refusals.refused(kind, key, peer, &e.to_string());
        e
    };
    let by_peer = peer.ip().to_string();
    let Admission { grant, permit } = admit(
        &app,
        peer,
        headers,
        params.token.as_deref(),
        &channels,
        "WebSocket",
    )?;
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
    let raw_conn = if json {
        raw::RawConn::default()
    } else {
        match raw::RawConn::open(&app, &client, req.uri().query().unwrap_or("")) {
            Ok(conn) => conn,
            Err(e) => {
                app.hub.disconnect(&client).await;
                return Err(refuse(&by_peer, e));
            }
        }
    };
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
            raw_conn,
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
/// TLS on the TLS session and its TCP socket, taken apart (no copy task, no socket pair:
/// issue #18 item 5).
/// Shared by every WebSocket front (raw/JSON at `/ws`, Pusher at `/app/{key}`).
pub async fn start_session<F: Front>(
    front: F,
    conn: F::Conn,
    client: Arc<Client>,
    permit: Permit,
    on_upgrade: OnUpgrade,
) {
    let abandon = |front: F, mut conn: F::Conn, client: Arc<Client>| async move {
        front.app().hub.disconnect(&client).await;
        front.closed(&mut conn, &client).await;
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
            let task = session.run(parts.read_buf);
            // What an idle connection mostly is (issue #18 item 4: see ws/sizes.rs).
            tracing::trace!(bytes = std::mem::size_of_val(&task), "session task");
            tracker.spawn(task);
            return;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => {
            // Plaintext rustls decrypted but hyper did not read stays in the TLS session
            // and is read first; what hyper read (`read_buf`) is fed before that.
            let (tcp, tls) = parts.io.into_inner().into_inner();
            let session = Session::new(Tls::new(tcp, tls), client, front, conn, permit);
            tracker.spawn(session.run(parts.read_buf));
        }
        Err(_) => {
            tracing::error!(client = %client.id, "upgraded connection of an unknown type");
            abandon(front, conn, client).await;
        }
    }
}
