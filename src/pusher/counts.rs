//! `pusher_internal:subscription_count` (Pusher's subscription counting, issue #14 item
//! 10): for apps with `subscription_count`, a channel's subscribers learn its
//! cluster-wide subscriber count when it changes. Debounced per channel and node: the
//! first change is told at once, later ones within `WINDOW` are told together at its end
//! (one event with the count then). Each node tells the changes it saw, through the hub,
//! so subscribers on every node hear them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use super::{Pusher, Tenant};
use crate::hub::{Event, Payload};

/// The shortest time between two count events of one channel from one node.
pub const WINDOW: Duration = Duration::from_secs(5);

/// Channels in a debounce window (hub channel → changed again within it). Entries live
/// for one window after the last change, so the map holds only changing channels.
#[derive(Debug, Default)]
pub struct Counts {
    pending: Mutex<HashMap<String, bool>>,
}

impl Pusher {
    /// Called after this node saw a channel's subscriber count change.
    pub(super) fn count_changed(self: &Arc<Self>, tenant: &Arc<Tenant>, channel: &str) {
        if !tenant.app.subscription_count {
            return;
        }
        let hub_channel = tenant.hub_channel(channel);
        {
            let mut pending = self.counts.pending.lock();
            if let Some(again) = pending.get_mut(&hub_channel) {
                *again = true;
                return;
            }
            pending.insert(hub_channel.clone(), false);
        }
        let (pusher, tenant, channel) = (self.clone(), tenant.clone(), channel.to_string());
        tokio::spawn(async move {
            loop {
                pusher.send_count(&tenant, &channel).await;
                tokio::time::sleep(WINDOW).await;
                let mut pending = pusher.counts.pending.lock();
                match pending.get_mut(&hub_channel) {
                    Some(again) if *again => *again = false,
                    _ => {
                        pending.remove(&hub_channel);
                        return;
                    }
                }
            }
        });
    }

    /// Publishes the channel's cluster-wide count to its subscribers (none when 0).
    async fn send_count(&self, tenant: &Tenant, channel: &str) {
        let count = match self.cluster.count(&tenant.hub_channel(channel)).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "subscription count not sent");
                return;
            }
        };
        let event = Event {
            name: "pusher_internal:subscription_count".into(),
            exclude: None,
            user_id: None,
        };
        let data = json!({ "subscription_count": count }).to_string();
        if let Err(e) = self
            .publish(tenant, channel, event, Payload::text(data))
            .await
        {
            tracing::warn!(%channel, error = %e, "subscription count not sent");
        }
    }
}
