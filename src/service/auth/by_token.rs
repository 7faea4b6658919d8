//! The sharded per-token maps the hot path writes into (last-used times, usage): the id
//! hasher they share and their shape. Token ids are random UUIDs chosen by us, not by
//! callers, so their own bytes are a fine hash (no HashDoS exposure, no SipHash cost on the
//! hot path).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use crate::domain::token::TokenId;

/// Shards a map is split into, so concurrent uses of different tokens rarely share a lock.
pub const SHARDS: usize = 64;

/// Hashes a token id by its own bytes.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// One shard: token id → `V`.
pub type Shard<V> = RwLock<HashMap<TokenId, V, BuildHasherDefault<IdHasher>>>;

/// [`SHARDS`] empty shards.
pub fn new_shards<V>() -> Vec<Shard<V>> {
    (0..SHARDS).map(|_| RwLock::default()).collect()
}
