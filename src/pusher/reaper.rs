//! When a node dies (issue #14 item 11): a live node that claims it (`Cluster::reap`,
//! once cluster-wide) announces what it left: `pusher_internal:member_removed` to the
//! presence channels' other subscribers and the `member_removed` / `channel_vacated`
//! webhooks, as if its connections had closed, and watchlist `offline` events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{kind_of, presence, watchlist, Kind, Pusher, UserId};
use crate::broker::Reaped;
use crate::hub::{Event, Payload};

impl Pusher {
    /// Looks for dead nodes every `every` until the front is dropped.
    pub fn start_reaper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pusher) = weak.upgrade() else { return };
                match pusher.cluster.reap().await {
                    Ok(reaped) => {
                        for r in reaped {
                            pusher.reaped(r).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "dead nodes not reaped"),
                }
            }
        });
    }

    /// Announces what a dead node left in one channel or room.
    async fn reaped(self: &Arc<Self>, r: Reaped) {
        // The users whose last connection was on the dead node.
        let gone: Vec<UserId> = presence::users(&r.removed)
            .into_iter()
            .filter(|user| !r.rest.iter().any(|m| m.user.as_deref() == Some(user.key())))
            .collect();
        let keys: Vec<String> = gone.iter().map(|u| u.key().to_string()).collect();
        if watchlist::reaped(self, &r.channel, &keys).await {
            return;
        }
        let Some((tenant, channel)) = self.apps.of_hub_channel(&r.channel) else {
            return;
        };
        let (tenant, channel) = (tenant.clone(), channel.to_string());
        if kind_of(&channel).0 == Kind::Presence {
            for user_id in gone {
                let event = Event {
                    name: "pusher_internal:member_removed".into(),
                    exclude: None,
                    user_id: None,
                };
                let data = json!({ "user_id": user_id }).to_string();
                let payload = Payload::text(data);
                if let Err(e) = self.publish(&tenant, &channel, event, payload).await {
                    tracing::warn!(%channel, error = %e, "member_removed lost");
                }
                let hook =
                    json!({ "name": "member_removed", "channel": channel, "user_id": user_id });
                self.webhooks.emit(&tenant, hook);
            }
        }
        if r.occupied {
            if r.count == 0 {
                let hook = json!({ "name": "channel_vacated", "channel": channel });
                self.webhooks.emit(&tenant, hook);
            }
            self.count_changed(&tenant, &channel);
        }
    }
}
