//! Raw mode: each published message is one frame holding exactly its data; what a raw
//! client sends goes to the upstream handler (console, echo, republish, webhook).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::close::{Close, CloseReason};
use super::formats::raw_frame;
use super::front::Front;
use crate::hub::Client;
use crate::limits::Bucket;
use crate::model::{Disconnect, Payload};
use crate::state::AppState;

/// The raw-mode front.
#[derive(Clone)]
pub struct Raw(pub AppState);

/// A raw connection's state: its command budget, made when first spent.
#[derive(Debug, Default)]
pub struct RawConn {
    budget: Option<Box<Bucket>>,
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
        if upstream.costs_budget() && !Bucket::take_from(&mut conn.budget, 1.0, rate, burst) {
            stats.rate_limited.fetch_add(1, Relaxed);
            return Some(CloseReason::Policy.into());
        }
        if let Some(reply) = Box::pin(upstream.handle(client.id, &payload)).await {
            client.push_own(raw_frame(&reply));
        }
        None
    }

    fn close(&self, reason: Disconnect) -> Close {
        CloseReason::of(reason).into()
    }

    async fn closed(&self, _conn: RawConn, _client: &Arc<Client>) {}
}
