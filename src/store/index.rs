//! The in-memory authentication index: blake3(secret) → (id, expiry, name) for every stored
//! token, so a verification never touches storage (sled's pages, or PostgreSQL). Loaded once at start-up, then
//! kept in step by create (after the token is durable) and delete (before the 204 is sent).
//! During a rotation's overlap a token also has a previous secret: a second, separate entry
//! (hash → the token's current hash and an end time), found only when no current secret
//! matched and only while the token's current entry is there (decision 0008).
//!
//! 256 shards (by one byte of the hash), each a vector sorted by hash behind a read-write
//! lock: a verification takes one shard's read lock and binary-searches (~12 steps with 1M
//! tokens), never a global lock. Sorted vectors instead of hash maps because they hold
//! exactly what is stored, where a hash map's power-of-two tables cost up to twice that at
//! 1M tokens. Names live in one string per shard, not one allocation each: 64 bytes a
//! token plus its name's bytes, less than a box per name cost.
//! Inserts shift at most one shard (~4k entries at 1M tokens), which only admin actions pay;
//! removed names are reclaimed when they are half of a shard's names.
//!
//! Why in memory: a sled `get` of a cold page costs far more per verification than this
//! index does (bench/verify_path.rs; figures: bench/results/2026-12-02-flush-pacing.md).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;

use crate::domain::restrictions::{Access, AllowedNetworks, Restrictions};
use crate::domain::token::{TokenHash, TokenId};
use crate::store::records::{IndexedToken, SecretUsed};

const SHARDS: usize = 256;
/// "No expiry" inside an entry (kept as a plain i64 so an entry stays 64 bytes).
const NEVER: i64 = i64::MIN;
/// Removed-name bytes a shard tolerates before it rewrites its names.
const MIN_RECLAIM: usize = 4096;

struct Entry {
    hash: [u8; 32],
    id: TokenId,
    expires: i64,
    /// The name's place in its shard's `names` (names are at most 100 characters, so their
    /// length fits 16 bits and the entry stays 64 bytes with the flag below).
    name_at: u32,
    name_len: u16,
    /// The token has a previous secret that ends at this secret's first use.
    ends_previous_on_use: bool,
    /// Read-only or full (one byte: the entry stays 64 bytes). Allowed networks, which few
    /// tokens have, sit in the shard's `networks` beside the entries.
    access: Access,
}

/// A token's previous secret during a rotation's overlap: its own hash, the token's current
/// hash (name and expiry are read from the current entry, so a rename or a delete applies to
/// both secrets at once: no current entry, no previous secret), and when it stops working.
/// Few exist at a time (only tokens in an overlap), so they sit apart from the entries and
/// cost nothing to a token that is not being rotated.
struct PreviousEntry {
    hash: [u8; 32],
    current: TokenHash,
    id: TokenId,
    /// The first second at which it stops working.
    ends_at: i64,
    /// It ends at the current secret's first use: when the current entry's mark is taken
    /// ([`TokenIndex::take_first_use`]) it finds nothing, at once, with no other write.
    until_new_secret_used: bool,
    /// Its last use on this node, unix seconds (`NEVER` = none): in memory only.
    last_used: AtomicI64,
}

#[derive(Default)]
struct Shard {
    /// Sorted by hash.
    entries: Vec<Entry>,
    names: String,
    /// Bytes of `names` no entry refers to any more.
    dead: usize,
    /// Previous secrets whose hash falls in this shard, sorted by hash.
    previous: Vec<PreviousEntry>,
    /// The allowed networks of the tokens in this shard that have any, by current hash,
    /// sorted. Empty in a shard with no such token, so they cost a token without a network
    /// policy nothing; one with a policy pays a binary search here and an `Arc` clone.
    networks: Vec<([u8; 32], AllowedNetworks)>,
}

impl Shard {
    fn name(&self, e: &Entry) -> &str {
        let at = e.name_at as usize;
        self.names.get(at..at + e.name_len as usize).unwrap_or("")
    }

    fn token(&self, e: &Entry) -> IndexedToken {
        IndexedToken {
            id: e.id,
            expires_at: (e.expires != NEVER).then_some(e.expires),
            name: self.name(e).into(),
            restrictions: Restrictions {
                access: e.access,
                networks: self.networks_of(&e.hash),
            },
        }
    }

    fn networks_of(&self, hash: &[u8; 32]) -> AllowedNetworks {
        if self.networks.is_empty() {
            return AllowedNetworks::anywhere();
        }
        match self.networks.binary_search_by(|(h, _)| h.cmp(hash)) {
            Ok(i) => self.networks[i].1.clone(),
            Err(_) => AllowedNetworks::anywhere(),
        }
    }

    /// Keeps (or forgets, for anywhere) the allowed networks of the token at `hash`.
    fn set_networks(&mut self, hash: &[u8; 32], networks: &AllowedNetworks) {
        match self.networks.binary_search_by(|(h, _)| h.cmp(hash)) {
            Ok(i) if networks.is_anywhere() => {
                self.networks.remove(i);
            }
            Ok(i) => self.networks[i].1 = networks.clone(),
            Err(_) if networks.is_anywhere() => {}
            Err(i) => self.networks.insert(i, (*hash, networks.clone())),
        }
    }

    /// Where `hash` is (`Ok`) or would go (`Err`), as a binary search would answer.
    ///
    /// Hashes are uniform, so a hash's rank in its shard is close to its value: start at
    /// the position its next 8 bytes predict and widen by doubling until the hash is
    /// bracketed (typically within ±40 places at 1M tokens), then bisect that bracket. With
    /// 1M tokens this touches 2-3 cache lines of one region instead of ~12 scattered over a
    /// 250 KB shard, which is what the lookup costs when most tokens are not in the CPU
    /// caches (bench/verify_path.rs, the 100,000-token rotation). Any input finds the right
    /// answer; a hash far from its prediction only costs more steps.
    fn find(&self, hash: &[u8; 32]) -> Result<usize, usize> {
        let entries = &self.entries;
        let n = entries.len();
        if n < 64 {
            return entries.binary_search_by(|e| e.hash.cmp(hash));
        }
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&hash[1..9]);
        let predicted = u64::from_be_bytes(prefix);
        // (value / 2^64) * n, in integers; always < n.
        let guess = ((u128::from(predicted) * n as u128) >> 64) as usize;
        let (lo, hi) = match entries[guess].hash.cmp(hash) {
            std::cmp::Ordering::Equal => return Ok(guess),
            std::cmp::Ordering::Less => {
                // Target is after `guess`: find hi with entries[hi] >= hash (or n).
                let (mut lo, mut step) = (guess + 1, 1);
                loop {
                    let probe = guess + step;
                    if probe >= n {
                        break (lo, n);
                    }
                    if entries[probe].hash >= *hash {
                        break (lo, probe + 1);
                    }
                    lo = probe + 1;
                    step *= 2;
                }
            }
            std::cmp::Ordering::Greater => {
                // Target is before `guess`: find lo with entries[lo] < hash (or 0).
                let (mut hi, mut step) = (guess, 1);
                loop {
                    let Some(probe) = guess.checked_sub(step) else {
                        break (0, hi);
                    };
                    if entries[probe].hash < *hash {
                        break (probe + 1, hi);
                    }
                    hi = probe + 1;
                    step *= 2;
                }
            }
        };
        match entries[lo..hi].binary_search_by(|e| e.hash.cmp(hash)) {
            Ok(i) => Ok(lo + i),
            Err(i) => Err(lo + i),
        }
    }

    /// An entry for a token, its name appended to this shard's names (the caller places
    /// the entry). `None` past 4 GiB of names in one shard (unreachable in practice).
    fn new_entry(
        &mut self,
        hash: &TokenHash,
        id: TokenId,
        expires_at: Option<i64>,
        name: &str,
        access: Access,
    ) -> Option<Entry> {
        let name_at = u32::try_from(self.names.len()).ok()?;
        let name_len = u16::try_from(name.len()).ok()?;
        self.names.push_str(name);
        Some(Entry {
            hash: hash.0,
            id,
            expires: expires_at.unwrap_or(NEVER),
            name_at,
            name_len,
            ends_previous_on_use: false,
            access,
        })
    }

    /// Moves `other`'s entries and names in behind ours (or takes its vectors when we have
    /// none). Previous secrets are not part of a batch: they are set after a load.
    fn append(&mut self, other: Shard) {
        if self.entries.is_empty() && self.names.is_empty() && self.previous.is_empty() {
            *self = other;
            return;
        }
        let Ok(base) = u32::try_from(self.names.len()) else {
            return;
        };
        self.names.push_str(&other.names);
        self.dead += other.dead;
        self.networks.extend(other.networks);
        self.entries.extend(other.entries.into_iter().map(|mut e| {
            e.name_at = e.name_at.saturating_add(base);
            e
        }));
    }

    fn forget_name(&mut self, e: &Entry) {
        self.dead += e.name_len as usize;
        if self.dead >= MIN_RECLAIM && self.dead * 2 >= self.names.len() {
            let mut names = String::with_capacity(self.names.len() - self.dead);
            for live in &mut self.entries {
                let at = live.name_at as usize;
                let name = self
                    .names
                    .get(at..at + live.name_len as usize)
                    .unwrap_or("");
                live.name_at = u32::try_from(names.len()).unwrap_or(u32::MAX);
                names.push_str(name);
            }
            self.names = names;
            self.dead = 0;
        }
    }
}

/// Entries gathered off-lock by one start-up reader, merged with [`TokenIndex::load`].
pub struct IndexBatch {
    shards: Vec<Shard>,
}

impl Default for IndexBatch {
    fn default() -> Self {
        IndexBatch {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl IndexBatch {
    /// Room for about `tokens` tokens spread over the shards, so filling it never reallocates.
    pub fn with_capacity(tokens: usize) -> Self {
        // A shard's share varies by ~1.6% at 1M tokens (binomial); names average under 24
        // bytes in practice and grow on their own past that.
        let per_shard = tokens / SHARDS + tokens / SHARDS / 16 + 16;
        IndexBatch {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    entries: Vec::with_capacity(per_shard),
                    names: String::with_capacity(per_shard * 24),
                    dead: 0,
                    previous: Vec::new(),
                    networks: Vec::new(),
                })
                .collect(),
        }
    }

    pub fn push(
        &mut self,
        hash: TokenHash,
        id: TokenId,
        expires_at: Option<i64>,
        name: &str,
        restrictions: &Restrictions,
    ) {
        let shard = &mut self.shards[usize::from(hash.0[0])];
        if let Some(entry) = shard.new_entry(&hash, id, expires_at, name, restrictions.access) {
            shard.entries.push(entry);
            if !restrictions.networks.is_anywhere() {
                // Sorted when the batch is loaded.
                shard.networks.push((hash.0, restrictions.networks.clone()));
            }
        }
    }
}

/// The index itself.
pub struct TokenIndex {
    shards: Vec<RwLock<Shard>>,
}

impl Default for TokenIndex {
    fn default() -> Self {
        TokenIndex {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl TokenIndex {
    fn shard(&self, hash: &TokenHash) -> &RwLock<Shard> {
        &self.shards[usize::from(hash.0[0])]
    }

    pub fn get(&self, hash: &TokenHash) -> Option<IndexedToken> {
        let shard = crate::sync::read(self.shard(hash));
        let i = shard.find(&hash.0).ok()?;
        Some(shard.token(&shard.entries[i]))
    }

    /// The token whose current or previous secret hashes to `hash`, and which secret it is.
    /// A previous secret is found only while its token's current entry is there; its end
    /// time is the caller's to check (time is a parameter). No allocation beyond
    /// [`Self::get`]'s: the previous secrets are looked at only when no current one matched.
    pub fn lookup(&self, hash: &TokenHash) -> Option<(IndexedToken, SecretUsed)> {
        self.lookup_with(hash, Shard::token)
    }

    /// [`Self::lookup`] for a request from `client`, the hot path: the allowed-networks
    /// check is made here, under the shard's read lock, and the token comes back without
    /// its list (`restrictions.networks` is anywhere), so a verification never touches the
    /// list's reference count. The `bool`: whether `client` may use the token.
    #[inline]
    pub fn lookup_from(
        &self,
        hash: &TokenHash,
        client: Option<std::net::IpAddr>,
    ) -> Option<(IndexedToken, SecretUsed, bool)> {
        self.lookup_with(
            hash,
            #[inline(always)]
            |shard, e| {
                let allowed = shard.networks.is_empty()
                    || match shard.networks.binary_search_by(|(h, _)| h.cmp(&e.hash)) {
                        Ok(i) => shard.networks[i].1.permits(client),
                        Err(_) => true,
                    };
                let token = IndexedToken {
                    id: e.id,
                    expires_at: (e.expires != NEVER).then_some(e.expires),
                    name: shard.name(e).into(),
                    restrictions: Restrictions {
                        access: e.access,
                        networks: AllowedNetworks::anywhere(),
                    },
                };
                (token, allowed)
            },
        )
        .map(|((token, allowed), secret)| (token, secret, allowed))
    }

    /// The lookup, with `read` taking what it needs from the current entry under its lock.
    #[inline(always)]
    fn lookup_with<R>(
        &self,
        hash: &TokenHash,
        read: impl Fn(&Shard, &Entry) -> R,
    ) -> Option<(R, SecretUsed)> {
        let (current, id, ends_at, until_new_secret_used) = {
            let shard = crate::sync::read(self.shard(hash));
            if let Ok(i) = shard.find(&hash.0) {
                let e = &shard.entries[i];
                let secret = SecretUsed::Current {
                    ends_previous_on_use: e.ends_previous_on_use,
                };
                return Some((read(&shard, e), secret));
            }
            if shard.previous.is_empty() {
                return None;
            }
            let i = shard
                .previous
                .binary_search_by(|p| p.hash.cmp(&hash.0))
                .ok()?;
            let p = &shard.previous[i];
            (p.current, p.id, p.ends_at, p.until_new_secret_used)
        };
        let shard = crate::sync::read(self.shard(&current));
        let e = &shard.entries[shard.find(&current.0).ok()?];
        if e.id != id || (until_new_secret_used && !e.ends_previous_on_use) {
            return None;
        }
        Some((read(&shard, e), SecretUsed::Previous { current, ends_at }))
    }

    /// Keeps `hash` as the previous secret of the token whose current secret is `current`
    /// until `ends_at`, replacing any previous secret it had (at most one a token: the
    /// caller names the one to replace in `replaces`). With `until_new_secret_used`, the
    /// current entry is marked so its first use is seen ([`Self::take_first_use`]).
    pub fn set_previous(
        &self,
        hash: TokenHash,
        current: TokenHash,
        id: TokenId,
        ends_at: i64,
        until_new_secret_used: bool,
    ) {
        {
            let mut shard = crate::sync::write(self.shard(&hash));
            let entry = PreviousEntry {
                hash: hash.0,
                current,
                id,
                ends_at,
                until_new_secret_used,
                last_used: AtomicI64::new(NEVER),
            };
            match shard.previous.binary_search_by(|p| p.hash.cmp(&hash.0)) {
                Ok(i) => shard.previous[i] = entry,
                Err(i) => shard.previous.insert(i, entry),
            }
        }
        let mut shard = crate::sync::write(self.shard(&current));
        if let Ok(i) = shard.find(&current.0) {
            shard.entries[i].ends_previous_on_use = until_new_secret_used;
        }
    }

    /// Forgets the previous secret `hash` (ended, or its token deleted) and the current
    /// entry's first-use mark; its last use on this node, if it was there.
    pub fn remove_previous(&self, hash: &TokenHash) -> Option<Option<i64>> {
        let removed = {
            let mut shard = crate::sync::write(self.shard(hash));
            let i = shard
                .previous
                .binary_search_by(|p| p.hash.cmp(&hash.0))
                .ok()?;
            shard.previous.remove(i)
        };
        let mut shard = crate::sync::write(self.shard(&removed.current));
        if let Ok(i) = shard.find(&removed.current.0) {
            shard.entries[i].ends_previous_on_use = false;
        }
        let used = removed.last_used.load(Ordering::Relaxed);
        Some((used != NEVER).then_some(used))
    }

    /// Forgets token `id`'s previous secret, wherever it is (a node applying another node's
    /// rotation or end, which names the token, not the previous hash). Looks at every shard
    /// that holds any previous secret: an admin change's cost, never a verification's.
    pub fn remove_previous_of(&self, id: TokenId) {
        let found = self.shards.iter().find_map(|shard| {
            let shard = crate::sync::read(shard);
            shard
                .previous
                .iter()
                .find(|p| p.id == id)
                .map(|p| TokenHash(p.hash))
        });
        if let Some(hash) = found {
            self.remove_previous(&hash);
        }
    }

    /// Whether the first use of `current` has ended its previous secret: the token is there
    /// and its mark has been taken (so a previous secret made `until_new_secret_used`
    /// beside it finds nothing any more).
    pub fn first_use_taken(&self, current: &TokenHash) -> bool {
        let shard = crate::sync::read(self.shard(current));
        shard
            .find(&current.0)
            .is_ok_and(|i| !shard.entries[i].ends_previous_on_use)
    }

    /// Whether this is the first use of `current` that ends a previous secret: true for
    /// exactly one caller (the mark is taken under the shard's lock). Taking it ends the
    /// previous secret in memory at once; the store makes it durable later.
    pub fn take_first_use(&self, current: &TokenHash) -> bool {
        let mut shard = crate::sync::write(self.shard(current));
        match shard.find(&current.0) {
            Ok(i) => std::mem::take(&mut shard.entries[i].ends_previous_on_use),
            Err(_) => false,
        }
    }

    /// Notes a use of the previous secret `hash` at `now` (never moves backwards).
    pub fn note_previous_use(&self, hash: &TokenHash, now: i64) {
        let shard = crate::sync::read(self.shard(hash));
        if let Ok(i) = shard.previous.binary_search_by(|p| p.hash.cmp(&hash.0)) {
            shard.previous[i]
                .last_used
                .fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The last use on this node of the previous secret `hash`.
    pub fn previous_last_used(&self, hash: &TokenHash) -> Option<i64> {
        let shard = crate::sync::read(self.shard(hash));
        let i = shard
            .previous
            .binary_search_by(|p| p.hash.cmp(&hash.0))
            .ok()?;
        let used = shard.previous[i].last_used.load(Ordering::Relaxed);
        (used != NEVER).then_some(used)
    }

    /// The id stored under `hash`, without copying the name.
    pub fn id_of(&self, hash: &TokenHash) -> Option<TokenId> {
        let shard = crate::sync::read(self.shard(hash));
        let i = shard.find(&hash.0).ok()?;
        Some(shard.entries[i].id)
    }

    pub fn insert(&self, hash: TokenHash, token: IndexedToken) {
        let mut shard = crate::sync::write(self.shard(&hash));
        let Some(entry) = shard.new_entry(
            &hash,
            token.id,
            token.expires_at,
            &token.name,
            token.restrictions.access,
        ) else {
            return;
        };
        shard.set_networks(&hash.0, &token.restrictions.networks);
        match shard.find(&hash.0) {
            Ok(i) => {
                let old = std::mem::replace(&mut shard.entries[i], entry);
                shard.forget_name(&old);
            }
            Err(i) => shard.entries.insert(i, entry),
        }
    }

    /// Replaces the entry of `hash` with `token` only if there is one: an edit (a rename)
    /// that races a delete must never put the deleted token back. Checked and replaced
    /// under the shard's lock.
    pub fn update_existing(&self, hash: TokenHash, token: IndexedToken) {
        let mut shard = crate::sync::write(self.shard(&hash));
        let Ok(i) = shard.find(&hash.0) else {
            return;
        };
        let Some(mut entry) = shard.new_entry(
            &hash,
            token.id,
            token.expires_at,
            &token.name,
            token.restrictions.access,
        ) else {
            return;
        };
        shard.set_networks(&hash.0, &token.restrictions.networks);
        entry.ends_previous_on_use = shard.entries[i].ends_previous_on_use;
        let old = std::mem::replace(&mut shard.entries[i], entry);
        shard.forget_name(&old);
    }

    pub fn remove(&self, hash: &TokenHash) {
        let mut shard = crate::sync::write(self.shard(hash));
        if let Ok(i) = shard.find(&hash.0) {
            let old = shard.entries.remove(i);
            shard.forget_name(&old);
        }
        shard.set_networks(&hash.0, &AllowedNetworks::anywhere());
    }

    /// Bulk load (start-up): merges the batches (the scan and the snapshot give one) into
    /// each shard, then sorts each shard once. The first batch's vectors are kept (size it
    /// for every token with [`IndexBatch::with_capacity`]) so a 1M-token load does not
    /// leave ~60 MiB of freed copies scattered through the heap.
    /// Replaces every entry with `batch`'s, shard by shard: a reader sees each shard either
    /// as it was or as it is now (a full reload after a node lost track of changes).
    /// Previous secrets go too: the caller sets again those its store still holds.
    pub fn replace(&self, batch: IndexBatch) {
        let mut parts = batch.shards.into_iter();
        for shard in &self.shards {
            let mut part = parts.next().unwrap_or_default();
            part.entries.sort_unstable_by_key(|e| e.hash);
            part.entries.dedup_by(|a, b| a.hash == b.hash);
            part.entries.shrink_to_fit();
            part.networks.sort_unstable_by_key(|(h, _)| *h);
            part.networks.dedup_by(|a, b| a.0 == b.0);
            part.names.shrink_to_fit();
            *crate::sync::write(shard) = part;
        }
    }

    pub fn load(&self, batches: Vec<IndexBatch>) {
        let mut batches: Vec<_> = batches.into_iter().map(|b| b.shards.into_iter()).collect();
        for shard in &self.shards {
            let parts: Vec<Shard> = batches.iter_mut().filter_map(Iterator::next).collect();
            let mut s = crate::sync::write(shard);
            let mut merged = std::mem::take(&mut *s);
            for part in parts {
                merged.append(part);
            }
            merged.entries.sort_unstable_by_key(|e| e.hash);
            merged.entries.dedup_by(|a, b| a.hash == b.hash);
            merged.entries.shrink_to_fit();
            merged.networks.sort_unstable_by_key(|(h, _)| *h);
            merged.networks.dedup_by(|a, b| a.0 == b.0);
            merged.names.shrink_to_fit();
            *s = merged;
        }
    }

    /// Visits every entry, shard by shard in hash order (each shard's read lock in turn).
    pub fn for_each(
        &self,
        mut visit: impl FnMut(&[u8; 32], TokenId, Option<i64>, &str, &Restrictions),
    ) {
        for shard in &self.shards {
            let shard = crate::sync::read(shard);
            for e in &shard.entries {
                let restrictions = Restrictions {
                    access: e.access,
                    networks: shard.networks_of(&e.hash),
                };
                visit(
                    &e.hash,
                    e.id,
                    (e.expires != NEVER).then_some(e.expires),
                    shard.name(e),
                    &restrictions,
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::sync::read(s).entries.len())
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
            restrictions: Restrictions::default(),
        }
    }

    #[test]
    fn a_rename_updates_a_present_entry_and_never_brings_one_back() {
        let index = TokenIndex::default();
        let h = crate::domain::token::PlaintextToken::generate().hash();
        let t = token("before");
        index.insert(h, t.clone());
        index.update_existing(
            h,
            IndexedToken {
                name: "after".into(),
                ..t.clone()
            },
        );
        assert_eq!(&*index.get(&h).unwrap().name, "after");
        index.remove(&h);
        index.update_existing(h, t);
        assert!(index.get(&h).is_none(), "a deleted token stays deleted");
    }

    #[test]
    fn a_previous_secret_is_a_second_entry_that_dies_with_its_token() {
        let index = TokenIndex::default();
        let old = crate::domain::token::PlaintextToken::generate().hash();
        let new = crate::domain::token::PlaintextToken::generate().hash();
        let t = token("rotated");
        index.insert(old, t.clone());
        // Rotate: the new secret becomes the entry, the old one a previous secret.
        index.remove(&old);
        index.insert(new, t.clone());
        index.set_previous(old, new, t.id, 50, true);
        assert_eq!(
            index.lookup(&new),
            Some((
                t.clone(),
                SecretUsed::Current {
                    ends_previous_on_use: true
                }
            ))
        );
        assert_eq!(
            index.lookup(&old),
            Some((
                t.clone(),
                SecretUsed::Previous {
                    current: new,
                    ends_at: 50
                }
            ))
        );
        assert_eq!(index.get(&old), None, "not a current secret");
        assert_eq!(index.len(), 1, "a previous secret is not a token");
        index.note_previous_use(&old, 7);
        index.note_previous_use(&old, 3);
        assert_eq!(index.previous_last_used(&old), Some(7));
        // A rename reaches both secrets and keeps the first-use mark.
        index.update_existing(
            new,
            IndexedToken {
                name: "renamed".into(),
                ..t.clone()
            },
        );
        assert_eq!(&*index.lookup(&old).unwrap().0.name, "renamed");
        // The first use is taken once, and ends the previous secret at once.
        assert!(!index.first_use_taken(&new));
        assert!(index.take_first_use(&new));
        assert!(!index.take_first_use(&new));
        assert!(index.first_use_taken(&new));
        assert_eq!(index.lookup(&old), None);
        assert_eq!(index.remove_previous(&old), Some(Some(7)));
        assert_eq!(index.remove_previous(&old), None);
        assert_eq!(index.lookup(&old), None);
        // A deleted token's previous secret finds nothing, even before it is removed.
        index.set_previous(old, new, t.id, 50, false);
        assert!(index.lookup(&old).is_some());
        index.remove(&new);
        assert_eq!(index.lookup(&old), None);
        assert_eq!(index.lookup(&new), None);
    }

    #[test]
    fn restrictions_follow_insert_update_remove_and_load() {
        use crate::domain::restrictions::{validate_allowed_cidrs, Access};
        let index = TokenIndex::default();
        let h = crate::domain::token::PlaintextToken::generate().hash();
        let plain = token("t");
        let restricted = IndexedToken {
            restrictions: Restrictions {
                access: Access::Read,
                networks: validate_allowed_cidrs(&["10.0.0.0/8"]).unwrap(),
            },
            ..plain.clone()
        };
        index.insert(h, restricted.clone());
        assert_eq!(index.get(&h), Some(restricted.clone()));
        index.update_existing(h, plain.clone());
        assert_eq!(index.get(&h), Some(plain.clone()));
        assert!(index.shards[usize::from(h.0[0])]
            .read()
            .unwrap()
            .networks
            .is_empty());
        index.update_existing(h, restricted.clone());
        index.remove(&h);
        assert!(index.shards[usize::from(h.0[0])]
            .read()
            .unwrap()
            .networks
            .is_empty());
        let mut batch = IndexBatch::default();
        batch.push(h, plain.id, plain.expires_at, "t", &restricted.restrictions);
        index.load(vec![batch]);
        assert_eq!(index.get(&h), Some(restricted.clone()));
        // The hot path's lookup: the verdict for the client, the list left behind; a
        // previous secret is judged by its token's list.
        let inside: Option<std::net::IpAddr> = Some("10.9.8.7".parse().unwrap());
        let outside: Option<std::net::IpAddr> = Some("192.0.2.1".parse().unwrap());
        let (t, _, allowed) = index.lookup_from(&h, inside).unwrap();
        assert!(allowed);
        assert_eq!(t.restrictions.access, Access::Read);
        assert!(
            t.restrictions.networks.is_anywhere(),
            "the list is not handed out"
        );
        assert!(!index.lookup_from(&h, outside).unwrap().2);
        assert!(
            !index.lookup_from(&h, None).unwrap().2,
            "an unknown client: refused"
        );
        let old = crate::domain::token::PlaintextToken::generate().hash();
        index.set_previous(old, h, plain.id, 50, false);
        assert!(!index.lookup_from(&old, outside).unwrap().2);
        assert!(index.lookup_from(&old, inside).unwrap().2);
        // A token without a list in a shard where others have one: anywhere.
        let mut other = [0u8; 32];
        other[0] = h.0[0];
        other[31] = h.0[31].wrapping_add(1);
        index.insert(TokenHash(other), plain.clone());
        assert!(index.lookup_from(&TokenHash(other), outside).unwrap().2);
        assert!(index.lookup_from(&TokenHash(other), None).unwrap().2);
    }

    #[test]
    fn an_entry_stays_64_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn insert_get_remove_and_bulk_load() {
        let index = TokenIndex::default();
        let hashes: Vec<TokenHash> = (0..2000)
            .map(|_| crate::domain::token::PlaintextToken::generate().hash())
            .collect();
        let mut batches = vec![IndexBatch::default(), IndexBatch::default()];
        for (i, h) in hashes[..1000].iter().enumerate() {
            batches[i % 2].push(
                *h,
                TokenId::generate(),
                Some(5),
                &format!("bulk{i}"),
                &Restrictions::default(),
            );
        }
        index.load(batches);
        for h in &hashes[1000..] {
            index.insert(*h, token("one"));
        }
        assert_eq!(index.len(), 2000);
        for (i, h) in hashes[..1000].iter().enumerate() {
            assert_eq!(&*index.get(h).unwrap().name, format!("bulk{i}"));
        }
        for h in &hashes[1000..] {
            assert_eq!(&*index.get(h).unwrap().name, "one");
        }
        index.remove(&hashes[5]);
        assert!(index.get(&hashes[5]).is_none());
        assert_eq!(index.len(), 1999);
        let other = crate::domain::token::PlaintextToken::generate().hash();
        assert!(index.get(&other).is_none());
    }

    #[test]
    fn names_survive_removals_and_reclaiming() {
        let index = TokenIndex::default();
        // All in one shard, so its names are rewritten several times.
        let hashes: Vec<TokenHash> = (0..3000u32)
            .map(|i| {
                let mut h = [0u8; 32];
                h[1..5].copy_from_slice(&i.to_be_bytes());
                TokenHash(h)
            })
            .collect();
        for (i, h) in hashes.iter().enumerate() {
            index.insert(*h, token(&format!("name-{i}-{}", "x".repeat(i % 7))));
        }
        let inserted: usize = index.shards[0].read().unwrap().names.len();
        for (i, h) in hashes.iter().enumerate() {
            if i % 3 != 2 {
                index.remove(h);
            }
        }
        // Replacing an entry retires its old name too.
        index.insert(hashes[1], token("replaced"));
        for (i, h) in hashes.iter().enumerate() {
            let got = index.get(h).map(|t| t.name.to_string());
            let want = match i {
                1 => Some("replaced".to_string()),
                _ if i % 3 != 2 => None,
                _ => Some(format!("name-{i}-{}", "x".repeat(i % 7))),
            };
            assert_eq!(got, want, "entry {i}");
        }
        let kept = index.shards[0].read().unwrap().names.len();
        // Without reclaiming, the names would only have grown.
        assert!(
            kept < inserted * 2 / 3,
            "removed names were reclaimed: {kept} of {inserted}"
        );
    }

    #[test]
    fn predicted_search_answers_like_a_binary_search() {
        let index = TokenIndex::default();
        let mut hashes: Vec<TokenHash> = (0..20_000)
            .map(|_| crate::domain::token::PlaintextToken::generate().hash())
            .collect();
        // Skewed hashes too (not what blake3 gives, but any input must be answered right):
        // a run of near-identical ones at the bottom and top of shard 7.
        for i in 0..300u32 {
            let mut low = [7u8; 32];
            low[1..5].copy_from_slice(&i.to_be_bytes());
            let mut high = [0xffu8; 32];
            high[0] = 7;
            high[28..].copy_from_slice(&i.to_be_bytes());
            hashes.push(TokenHash(low));
            hashes.push(TokenHash(high));
        }
        for h in &hashes {
            index.insert(*h, token("t"));
        }
        let mut probes = hashes.clone();
        probes.extend((0..20_000).map(|_| crate::domain::token::PlaintextToken::generate().hash()));
        probes.extend([
            TokenHash([7; 32]),
            TokenHash([0; 32]),
            TokenHash([0xff; 32]),
        ]);
        for probe in &probes {
            let shard = index.shard(probe).read().unwrap();
            let expected = shard.entries.binary_search_by(|e| e.hash.cmp(&probe.0));
            assert_eq!(shard.find(&probe.0), expected, "{:?}", probe.0);
        }
    }
}
