//! Admission of a client connection, the same for every native front (`/ws` raw and JSON
//! mode, `/sse`, `/stream`): origin, token, channel access, then a connection slot. Each
//! refusal counts, is logged with its fix (rate-limited, `crate::refusal`) and answers
//! with the same text.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::http::{header, HeaderMap};

use super::upgrade::origin_allowed;
use crate::access::{self, Action, Asker};
use crate::auth::{AuthError, Grant};
use crate::error::ApiError;
use crate::limits::{Permit, Refused};
use crate::refusal::Kind;
use crate::state::AppState;

/// What an admitted connection holds: its token's grant and its connection slot.
pub(crate) struct Admission {
    /// The verified token's grant (`None`: anonymous).
    pub grant: Option<Arc<Grant>>,
    /// The connection slot, released when the client's session ends.
    pub permit: Permit,
}

/// Checks a connection asking for `channels` with `token`; `what` names the transport in
/// the refusal ("WebSocket", "event stream").
pub(crate) fn admit(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    token: Option<&str>,
    channels: &[&str],
    what: &str,
) -> Result<Admission, ApiError> {
    let stats = app.hub.stats();
    let refuse = |key: &str, e: ApiError| {
        app.refusals
            .refused(Kind::WebSocket, key, peer, &e.to_string());
        e
    };
    let by_peer = peer.ip().to_string();
    if let Err(why) = origin_allowed(headers, &app.config) {
        stats.rejected_connections.fetch_add(1, Relaxed);
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("?"));
        let why = why.replacen("refused WebSocket", &format!("refused {what}"), 1);
        return Err(refuse(origin.unwrap_or(""), ApiError::Denied(why)));
    }
    let grant = match (token, &app.verifier) {
        (None, _) => None,
        (Some(_), None) => {
            let why = format!(
                "refused {what}: {}; set --jwt-secret or --jwt-public-key, or connect \
                 without ?token=",
                AuthError::NotConfigured
            );
            return Err(refuse(&by_peer, ApiError::InvalidToken(why)));
        }
        (Some(token), Some(verifier)) => match verifier.verify(token) {
            Ok(grant) => Some(Arc::new(grant)),
            Err(e) => {
                stats.auth_failures.fetch_add(1, Relaxed);
                let why = format!(
                    "refused {what}: invalid token ({e}); sign it with the server's \
                     --jwt-secret (or --jwt-public-key) and give it a future exp"
                );
                return Err(refuse(&by_peer, ApiError::InvalidToken(why)));
            }
        },
    };
    for channel in channels {
        access::check(
            app.hub.namespaces(),
            Asker::Native(grant.as_deref()),
            channel,
            Action::Subscribe,
        )
        .map_err(|denied| {
            let why = format!(
                "refused {what}: {denied}; grant it in the token's `channels` claim or \
                 the namespace's settings (docs/your-own-page.md)"
            );
            refuse(&by_peer, ApiError::Denied(why))
        })?;
    }
    let permit = app.limits.admit(peer.ip()).map_err(|refused| {
        stats.rejected_connections.fetch_add(1, Relaxed);
        refuse(
            &by_peer,
            match refused {
                Refused::Total => ApiError::Unavailable(format!(
                    "refused {what}: the server is full ({} connections, \
                     max_connections); raise --max-connections",
                    app.config.max_connections
                )),
                Refused::PerIp => ApiError::TooManyFromIp,
            },
        )
    })?;
    Ok(Admission { grant, permit })
}
