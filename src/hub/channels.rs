//! `ChannelSet`: the channels one client is subscribed to. Membership costs at most
//! `FEW` comparisons or one hash lookup, whatever the count (a handshake naming thousands
//! of channels once cost the square of the count: issue #12); a client with a few
//! channels keeps them in a small vector, as small as before (idle memory).

use std::collections::HashSet;
use std::sync::Arc;

/// Up to this many channels live in a vector; more move to a hash set.
const FEW: usize = 8;

/// A client's channels.
#[derive(Debug)]
pub(crate) enum ChannelSet {
    /// At most `FEW`, scanned.
    Few(Vec<Arc<str>>),
    /// More, hashed. Boxed so the set is as small as a vector (idle memory per client).
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<Arc<str>>>),
}

impl Default for ChannelSet {
    fn default() -> Self {
        ChannelSet::Few(Vec::new())
    }
}

impl ChannelSet {
    /// True when `channel` is in the set.
    pub(crate) fn contains(&self, channel: &str) -> bool {
        match self {
            ChannelSet::Few(v) => v.iter().any(|c| &**c == channel),
            ChannelSet::Many(s) => s.contains(channel),
        }
    }

    /// Adds `channel`; false when it was there.
    pub(crate) fn insert(&mut self, channel: Arc<str>) -> bool {
        if self.contains(&channel) {
            return false;
        }
        match self {
            ChannelSet::Few(v) if v.len() < FEW => v.push(channel),
            ChannelSet::Few(v) => {
                let mut set: HashSet<Arc<str>> = v.drain(..).collect();
                set.insert(channel);
                *self = ChannelSet::Many(Box::new(set));
            }
            ChannelSet::Many(s) => {
                s.insert(channel);
            }
        }
        true
    }

    /// Removes `channel`; false when it was not there.
    pub(crate) fn remove(&mut self, channel: &str) -> bool {
        match self {
            ChannelSet::Few(v) => match v.iter().position(|c| &**c == channel) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            ChannelSet::Many(s) => s.remove(channel),
        }
    }

    /// How many channels.
    pub(crate) fn len(&self) -> usize {
        match self {
            ChannelSet::Few(v) => v.len(),
            ChannelSet::Many(s) => s.len(),
        }
    }

    /// Every channel.
    pub(crate) fn to_vec(&self) -> Vec<Arc<str>> {
        match self {
            ChannelSet::Few(v) => v.clone(),
            ChannelSet::Many(s) => s.iter().cloned().collect(),
        }
    }

    /// Takes every channel out.
    pub(crate) fn take(&mut self) -> Vec<Arc<str>> {
        match std::mem::take(self) {
            ChannelSet::Few(v) => v,
            ChannelSet::Many(s) => s.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_a_vector_to_a_set_and_keeps_every_channel() {
        let mut set = ChannelSet::default();
        for i in 0..100 {
            assert!(set.insert(Arc::from(format!("c{i}"))));
            assert!(!set.insert(Arc::from(format!("c{i}"))));
        }
        assert!(matches!(set, ChannelSet::Many(_)));
        assert_eq!(set.len(), 100);
        assert!(set.contains("c42") && !set.contains("c100"));
        assert!(set.remove("c42") && !set.remove("c42"));
        assert_eq!(set.take().len(), 99);
        assert_eq!(set.len(), 0);
        let mut few = ChannelSet::default();
        few.insert(Arc::from("a"));
        assert!(matches!(few, ChannelSet::Few(_)) && few.contains("a"));
        assert_eq!(
            std::mem::size_of::<ChannelSet>(),
            std::mem::size_of::<Vec<Arc<str>>>()
        );
    }
}
