//! `Sharded`: a map split into independently locked shards, and `fnv`, the stable hash
//! that picks a shard (used by the hub's indexes and the in-memory broker).

use std::collections::HashMap;

use parking_lot::Mutex;

const SHARDS: usize = 64;

/// A map split into independently locked shards.
pub(crate) struct Sharded<K, V>(Box<[Mutex<HashMap<K, V>>]>);

impl<K, V> Sharded<K, V> {
    pub(crate) fn new() -> Self {
        Sharded((0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect())
    }
    pub(crate) fn shard(&self, hash: u64) -> &Mutex<HashMap<K, V>> {
        &self.0[(hash as usize) % SHARDS]
    }
    pub(crate) fn shard_at(&self, index: usize) -> &Mutex<HashMap<K, V>> {
        &self.0[index]
    }
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    pub(crate) fn shards(&self) -> impl Iterator<Item = &Mutex<HashMap<K, V>>> {
        self.0.iter()
    }
}

/// FNV-1a: a stable, cheap hash to pick a shard.
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
