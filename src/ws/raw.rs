//! Raw mode: each published message is one frame holding exactly its data; what a raw
//! client sends goes to the upstream handler (console, echo, republish, webhook, or the
//! client's own `exec:` process).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::close::{Close, CloseReason};
use super::formats::raw_frame;
use super::front::Front;
use crate::error::ApiError;
use crate::hub::{Client, Kind};
use crate::limits::Bucket;
use crate::model::{Disconnect, Payload};
use crate::state::AppState;
use crate::upstream::exec::{Proc, Start, StartError};

/// The raw-mode front.
#[derive(Clone)]
pub struct Raw(pub AppState);

/// A raw connection's state, allocated when first needed (one pointer in every idle
/// session): its command budget, made when first spent, and its `exec:` process.
#[derive(Default)]
pub struct RawConn(Option<Box<RawState>>);

#[derive(Default)]
struct RawState {
    budget: Option<Box<Bucket>>,
    exec: Option<Proc>,
}

impl RawConn {
    /// The state of a new raw client: with `--upstream exec:`, its process is started
    /// (the process sees `query`, the handshake's query string). Refused (503) when
    /// every process slot is taken or the program cannot start.
    pub fn open(app: &AppState, client: &Arc<Client>, query: &str) -> Result<RawConn, ApiError> {
        let Some(exec) = app.upstream.exec() else {
            return Ok(RawConn::default());
        };
        let unavailable = |e: StartError| ApiError::Unavailable(e.to_string());
        let slot = exec.slot().map_err(unavailable)?;
        let proc = exec
            .start(
                slot,
                Start {
                    client,
                    remote: client.remote,
                    query,
                    max_line: app.config.max_message_size,
                    rate: app.config.command_budget(),
                    tracker: &app.shutdown.tracker,
                    shutdown: app.shutdown.token.clone(),
                },
            )
            .map_err(|e| {
                tracing::error!(client = %client.id, error = %e, "upstream process not started");
                unavailable(e)
            })?;
        Ok(RawConn(Some(Box::new(RawState {
            budget: None,
            exec: Some(proc),
        }))))
    }
}

impl Front for Raw {
    type Conn = RawConn;

    fn app(&self) -> &AppState {
        &self.0
    }

    async fn message<'a>(
        &'a self,
        conn: &'a mut RawConn,
        client: &'a Arc<Client>,
        payload: Payload,
    ) -> Option<Close> {
        let app = &self.0;
        let upstream = &app.upstream;
        let stats = &app.hub.stats();
        if upstream.echoes() {
            stats.upstream_messages.fetch_add(1, Relaxed);
            client.push_own(raw_frame(&payload));
            return None;
        }
        // Republishing and webhooks are work for others: they cost command budget, and
        // a raw client (which has no error replies) that overspends is closed.
        let (rate, burst) = app.config.command_budget();
        if upstream.costs_budget() {
            let state = conn.0.get_or_insert_with(Box::default);
            if !Bucket::take_from(&mut state.budget, 1.0, rate, burst) {
                stats.rate_limited.fetch_add(1, Relaxed);
                return Some(CloseReason::Policy.into());
            }
        }
        if let Some(proc) = conn.0.as_ref().and_then(|state| state.exec.as_ref()) {
            upstream.show(client, &payload);
            if payload.kind == Kind::Binary {
                // A line-based program cannot take bytes: shown and counted, not sent.
                stats.upstream_failures.fetch_add(1, Relaxed);
                return None;
            }
            if proc.send(&payload.data).is_err() {
                // The process does not read what its client sends fast enough.
                return Some(CloseReason::Policy.into());
            }
            return None;
        }
        if let Some(reply) = Box::pin(upstream.handle(client, &payload)).await {
            client.push_own(raw_frame(&reply));
        }
        None
    }

    fn close(&self, reason: Disconnect) -> Close {
        CloseReason::of(reason).into()
    }

    async fn closed(&self, _conn: &mut RawConn, _client: &Arc<Client>) {}
}
