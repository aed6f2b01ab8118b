//! Where a reconnecting stream resumes: the `Last-Event-ID` header (one event id,
//! `<epoch>:<offset>:<channel>`) or the `since` query (a list of such ids, or an offset
//! with `epoch` for a stream of one channel).

use std::collections::HashMap;

use crate::broker::Since;

/// Where each channel of a stream starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Channels with a known position: messages after it are replayed.
    pub since: HashMap<String, Since>,
    /// The client was following the stream before (it sent `Last-Event-ID`): a channel
    /// without a known position may have missed messages, so it gets `reset`.
    pub reconnect: bool,
}

/// Parses one event id: `<epoch>:<offset>:<channel>`.
pub fn parse_id(id: &str) -> Option<(String, Since)> {
    let mut parts = id.trim().splitn(3, ':');
    let epoch = parts.next().filter(|e| !e.is_empty())?;
    let offset = parts.next()?.parse().ok()?;
    let channel = parts.next().filter(|c| !c.is_empty())?;
    Some((
        channel.to_string(),
        Since {
            offset,
            epoch: Some(epoch.to_string()),
        },
    ))
}

impl Resume {
    /// The resume plan of a request on `channels`. `Last-Event-ID` wins over the query
    /// (the query of an `EventSource` URL never changes, so after a reconnect it is
    /// stale: resuming other channels from it would repeat messages). A malformed
    /// query is an error; a malformed header means every channel is reset.
    pub fn plan(
        channels: &[&str],
        last_event_id: Option<&str>,
        since: Option<&str>,
        epoch: Option<&str>,
    ) -> Result<Resume, String> {
        if let Some(last) = last_event_id.filter(|l| !l.trim().is_empty()) {
            let since = parse_id(last)
                .filter(|(channel, _)| channels.contains(&channel.as_str()))
                .into_iter()
                .collect();
            return Ok(Resume {
                since,
                reconnect: true,
            });
        }
        let Some(list) = since.filter(|s| !s.is_empty()) else {
            if epoch.is_some() {
                return Err("`epoch` needs `since`".into());
            }
            return Ok(Resume::default());
        };
        if let Ok(offset) = list.parse::<u64>() {
            let [channel] = channels else {
                return Err(
                    "`since=<offset>` needs exactly one channel; give `since` as a list of \
                     <epoch>:<offset>:<channel> ids"
                        .into(),
                );
            };
            let since = Since {
                offset,
                epoch: epoch.map(str::to_string),
            };
            return Ok(Resume {
                since: HashMap::from([(channel.to_string(), since)]),
                reconnect: false,
            });
        }
        if epoch.is_some() {
            return Err("`epoch` goes with `since=<offset>`, not with a list of ids".into());
        }
        let mut positions = HashMap::new();
        for id in list.split(',').filter(|i| !i.trim().is_empty()) {
            let (channel, since) = parse_id(id)
                .ok_or_else(|| format!("`since` entry {id:?} is not <epoch>:<offset>:<channel>"))?;
            if !channels.contains(&channel.as_str()) {
                return Err(format!(
                    "`since` names {channel:?}, which is not in `channels`"
                ));
            }
            positions.insert(channel, since);
        }
        Ok(Resume {
            since: positions,
            reconnect: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn since(offset: u64, epoch: &str) -> Since {
        Since {
            offset,
            epoch: Some(epoch.into()),
        }
    }

    #[test]
    fn ids_name_epoch_offset_and_channel() {
        assert_eq!(parse_id("e.1:5:a:b"), Some(("a:b".into(), since(5, "e.1"))));
        assert_eq!(parse_id("e.1:x:a"), None);
        assert_eq!(parse_id(":5:a"), None);
        assert_eq!(parse_id("e.1:5:"), None);
    }

    // issue #15 item 1: Last-Event-ID wins; channels it does not name are reset.
    #[test]
    fn the_header_wins_and_marks_a_reconnect() {
        let plan = Resume::plan(&["a", "b"], Some("e.1:5:a"), Some("e.1:9:b"), None).unwrap();
        assert!(plan.reconnect);
        assert_eq!(plan.since, HashMap::from([("a".into(), since(5, "e.1"))]));
        let other = Resume::plan(&["a"], Some("e.1:5:zz"), None, None).unwrap();
        assert!(other.reconnect && other.since.is_empty());
    }

    #[test]
    fn the_query_gives_an_offset_or_a_list() {
        let one = Resume::plan(&["a"], None, Some("4"), Some("e.2")).unwrap();
        assert_eq!(one.since, HashMap::from([("a".into(), since(4, "e.2"))]));
        assert!(!one.reconnect);
        assert!(Resume::plan(&["a", "b"], None, Some("4"), None).is_err());
        let list = Resume::plan(&["a", "b"], None, Some("e.1:3:a,e.2:8:b"), None).unwrap();
        assert_eq!(list.since.len(), 2);
        assert!(Resume::plan(&["a"], None, Some("e.1:3:c"), None).is_err());
        assert!(Resume::plan(&["a"], None, None, Some("e")).is_err());
    }
}
