//! The in-memory broker: offsets per channel, delivery straight into the local registry.

use std::sync::Arc;

use futures_util::future::{self, BoxFuture};

use super::{Broker, BrokerError};
use crate::hub::{fnv, ClientId, Message, Payload, Registry, Sharded};

/// One node, no setup: offsets live in this process.
pub struct Memory {
    registry: Arc<Registry>,
    offsets: Sharded<Arc<str>, Chan>,
}

/// A channel's broker state.
struct Chan {
    name: Arc<str>,
    offset: u64,
}

impl Memory {
    /// A broker delivering into `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Memory {
            registry,
            offsets: Sharded::new(),
        }
    }

    fn publish_now(&self, channel: &str, payload: Payload) -> u64 {
        let mut shard = self.offsets.shard(fnv(channel)).lock();
        if !shard.contains_key(channel) {
            let name: Arc<str> = Arc::from(channel);
            shard.insert(name.clone(), Chan { name, offset: 0 });
        }
        let chan = shard.get_mut(channel).expect("inserted above");
        chan.offset += 1;
        let msg = Message::new(chan.name.clone(), chan.offset, payload);
        // Delivering under the channel's lock keeps deliveries in offset order.
        self.registry.deliver(&msg);
        msg.offset
    }
}

impl Broker for Memory {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<u64, BrokerError>> {
        Box::pin(future::ready(Ok(self.publish_now(channel, payload))))
    }

    fn send(
        &self,
        client: ClientId,
        payload: Payload,
    ) -> BoxFuture<'_, Result<usize, BrokerError>> {
        Box::pin(future::ready(Ok(self
            .registry
            .send_local(client, &payload))))
    }
}
