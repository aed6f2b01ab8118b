//! `AppState`: what every front, request handler and session shares (the hub, the
//! validated configuration, limits, the token verifier, the upstream handler, metrics
//! and the shutdown tracker), in one allocation so a clone is one pointer.

use std::sync::Arc;

use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::upstream::Upstream;

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
    /// The `/metrics` registry.
    pub metrics: Arc<Metrics>,
    /// The rate limiter of refusal log lines.
    pub refusals: Arc<crate::refusal::Refusals>,
}
