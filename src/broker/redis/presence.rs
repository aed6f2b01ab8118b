//! Presence over Redis: a hash per channel of its members on every node (each entry
//! `node:expiry:user`, refreshed by its node), and the join and leave events of other
//! nodes arriving through the channel's subscription.

use std::collections::HashMap;
use std::sync::Arc;

use super::{now_ms, Inner, PRESENCE_TTL_MS};
use crate::broker::Member;
use crate::model::ClientId;

impl Inner {
    /// A join or leave announced by some node (`j|l:client:user`).
    pub(super) fn presence_arrived(&self, channel: &str, event: &[u8]) {
        let mut parts = event.splitn(3, |b| *b == b':');
        let (Some(kind), Some(client), Some(user)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Some(client) = std::str::from_utf8(client)
            .ok()
            .and_then(|c| c.parse().ok())
        else {
            return;
        };
        let user = std::str::from_utf8(user)
            .ok()
            .filter(|u| !u.is_empty())
            .map(Arc::from);
        let member = Member {
            client: ClientId(client),
            user,
            info: None,
        };
        self.local.presence(channel, &member, kind == b"j");
    }

    /// Rewrites this node's presence entries of `channel` with a new expiry and prunes
    /// expired entries of any node, announcing their leave once.
    pub(super) async fn refresh_channel(&self, channel: &str) -> redis::RedisResult<()> {
        let mut conn = self.shard(channel).conn.clone();
        let key = self.keys.presence(channel);
        let now = now_ms();
        let mut pipe = redis::pipe();
        for member in self.local.members(channel) {
            let user = member.user.as_deref().unwrap_or("");
            let value = format!("{}:{}:{user}", self.local.node(), now + PRESENCE_TTL_MS);
            pipe.hset(&key, member.client.0.to_string(), value).ignore();
        }
        // Entries of nodes that died go with the hash when no node refreshes it.
        pipe.pexpire(&key, (2 * PRESENCE_TTL_MS) as i64).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        for (client, value) in all {
            let mut parts = value.splitn(3, ':');
            let (Some(_node), Some(expires), Some(user)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if expires.parse::<u64>().is_ok_and(|e| e <= now) {
                // HDEL answers 1 on exactly one node: that one announces the leave.
                let removed: u32 = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&client)
                    .query_async(&mut conn)
                    .await?;
                if removed == 1 {
                    let event = format!("e:l:{client}:{user}");
                    redis::cmd("PUBLISH")
                        .arg(self.keys.topic(channel))
                        .arg(event)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
