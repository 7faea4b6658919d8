//! The in-memory authentication index: blake3(secret) → (id, expiry, name) for every stored
//! token, so a verification never touches sled or the disk. Loaded once at start-up, then
//! kept in step by create (after the token is durable) and delete (before the 204 is sent).
//!
//! 256 shards (by one byte of the hash), each a vector sorted by hash behind a read-write
//! lock: a verification takes one shard's read lock and binary-searches (~12 steps with 1M
//! tokens), never a global lock. Sorted vectors instead of hash maps because they hold
//! exactly what is stored: ~72 bytes a token plus its name, where a hash map's power-of-two
//! tables cost up to twice that at 1M tokens. Inserts shift at most one shard (~4k entries
//! at 1M tokens), which only admin actions pay.
//!
//! Measured reason (bench/verify_path.rs): with 1,000,000 tokens, a sled `get` of a cold
//! page cost ~78 µs per verification; this index keeps it under 1 µs.

use std::sync::RwLock;

use crate::tokens::{TokenHash, TokenId};

const SHARDS: usize = 256;
/// Stored expiry meaning "never".
const NEVER: i64 = i64::MIN;

/// What verification needs about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedToken {
    pub id: TokenId,
    pub expires_at: Option<i64>,
    pub name: Box<str>,
}

struct Entry {
    hash: [u8; 32],
    id: TokenId,
    expires: i64,
    name: Box<str>,
}

impl Entry {
    fn to_token(&self) -> IndexedToken {
        IndexedToken {
            id: self.id,
            expires_at: (self.expires != NEVER).then_some(self.expires),
            name: self.name.clone(),
        }
    }
}

/// The index itself.
pub struct TokenIndex {
    shards: Vec<RwLock<Vec<Entry>>>,
}

impl Default for TokenIndex {
    fn default() -> Self {
        TokenIndex {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl TokenIndex {
    fn shard(&self, hash: &TokenHash) -> &RwLock<Vec<Entry>> {
        &self.shards[usize::from(hash.0[0])]
    }

    pub fn get(&self, hash: &TokenHash) -> Option<IndexedToken> {
        let shard = self.shard(hash).read().ok()?;
        let i = shard.binary_search_by(|e| e.hash.cmp(&hash.0)).ok()?;
        Some(shard[i].to_token())
    }

    /// The id stored under `hash`, without copying the name.
    pub fn id_of(&self, hash: &TokenHash) -> Option<TokenId> {
        let shard = self.shard(hash).read().ok()?;
        let i = shard.binary_search_by(|e| e.hash.cmp(&hash.0)).ok()?;
        Some(shard[i].id)
    }

    pub fn insert(&self, hash: TokenHash, token: IndexedToken) {
        let entry = Entry {
            hash: hash.0,
            id: token.id,
            expires: token.expires_at.unwrap_or(NEVER),
            name: token.name,
        };
        if let Ok(mut shard) = self.shard(&hash).write() {
            match shard.binary_search_by(|e| e.hash.cmp(&hash.0)) {
                Ok(i) => shard[i] = entry,
                Err(i) => shard.insert(i, entry),
            }
        }
    }

    pub fn remove(&self, hash: &TokenHash) {
        if let Ok(mut shard) = self.shard(hash).write() {
            if let Ok(i) = shard.binary_search_by(|e| e.hash.cmp(&hash.0)) {
                shard.remove(i);
            }
        }
    }

    /// Bulk load (start-up): appends unsorted entries, then sorts each shard once.
    pub fn load(&self, tokens: impl Iterator<Item = (TokenHash, IndexedToken)>) {
        let mut staged: Vec<Vec<Entry>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (hash, token) in tokens {
            staged[usize::from(hash.0[0])].push(Entry {
                hash: hash.0,
                id: token.id,
                expires: token.expires_at.unwrap_or(NEVER),
                name: token.name,
            });
        }
        for (shard, mut entries) in self.shards.iter().zip(staged) {
            if let Ok(mut s) = shard.write() {
                entries.append(&mut s);
                entries.sort_unstable_by_key(|e| e.hash);
                entries.dedup_by(|a, b| a.hash == b.hash);
                entries.shrink_to_fit();
                *s = entries;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.read().ok().map(|m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: &str) -> IndexedToken {
        IndexedToken {
            id: TokenId::generate(),
            expires_at: Some(5),
            name: n.into(),
        }
    }

    #[test]
    fn insert_get_remove_and_bulk_load() {
        let index = TokenIndex::default();
        let hashes: Vec<TokenHash> = (0..2000)
            .map(|_| crate::tokens::PlaintextToken::generate().hash())
            .collect();
        index.load(hashes[..1000].iter().map(|h| (*h, token("bulk"))));
        for h in &hashes[1000..] {
            index.insert(*h, token("one"));
        }
        assert_eq!(index.len(), 2000);
        for h in &hashes {
            assert!(index.get(h).is_some());
        }
        index.remove(&hashes[5]);
        assert!(index.get(&hashes[5]).is_none());
        assert_eq!(index.len(), 1999);
        let other = crate::tokens::PlaintextToken::generate().hash();
        assert!(index.get(&other).is_none());
    }
}
