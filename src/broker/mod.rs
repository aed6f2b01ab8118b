//! The broker seam: where offsets are assigned and messages fan out across nodes.
//! `Memory` (one node) is the default; every implementation delivers into the local
//! `Registry` in offset order per channel.

mod memory;

use futures_util::future::BoxFuture;

use crate::hub::{ClientId, Payload};
pub use memory::Memory;

/// Why a broker call failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backend cannot be reached; nothing was published.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A message broker: assigns per-channel offsets and delivers to subscribers on every
/// node.
pub trait Broker: Send + Sync + 'static {
    /// Publishes to `channel` (`*` = every client); resolves to the assigned offset once
    /// the message is accepted.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>>;

    /// Sends to one client wherever it is connected; resolves to how many it reached.
    fn send(&self, client: ClientId, payload: Payload)
        -> BoxFuture<'_, Result<usize, BrokerError>>;
}
