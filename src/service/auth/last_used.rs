//! In-memory last-used times, written on every successful authentication without touching the
//! disk. Sharded maps of per-token atomics: the common case (a token already seen) takes one
//! shard's read lock and does an atomic max, so workers never serialise on a global lock. The
//! flusher collects what changed since it last wrote; deleted tokens are forgotten here and
//! skipped by the store.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::token::{TokenHash, TokenId};

const NEVER_FLUSHED: i64 = i64::MIN;

struct Cell {
    seen: AtomicI64,
    flushed: AtomicI64,
    /// The token's index key: lets the flusher check the token still exists, in memory.
    hash: TokenHash,
}

/// A last-used time the store does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unflushed {
    pub id: TokenId,
    pub hash: TokenHash,
    pub seen: i64,
    /// What this process last wrote for the token, if anything: the store holds exactly that.
    pub flushed: Option<i64>,
}

type Shard = super::by_token::Shard<Cell>;

/// Last-used times not yet (or already) persisted, per token.
pub struct LastUsedTracker {
    shards: Vec<Shard>,
}

impl Default for LastUsedTracker {
    fn default() -> Self {
        LastUsedTracker {
            shards: super::by_token::new_shards(),
        }
    }
}

impl LastUsedTracker {
    fn shard(&self, id: &TokenId) -> &Shard {
        &self.shards[usize::from(id.0[15]) % super::by_token::SHARDS]
    }

    /// Records a use at `now` (unix seconds). Never moves a time backwards.
    pub fn record(&self, id: TokenId, hash: &TokenHash, now: i64) {
        let shard = self.shard(&id);
        let map = crate::sync::read(shard);
        if let Some(cell) = map.get(&id) {
            if cell.seen.load(Ordering::Relaxed) < now {
                cell.seen.fetch_max(now, Ordering::Relaxed);
            }
            return;
        }
        drop(map);
        crate::sync::write(shard)
            .entry(id)
            .and_modify(|c| {
                c.seen.fetch_max(now, Ordering::Relaxed);
            })
            .or_insert(Cell {
                seen: AtomicI64::new(now),
                flushed: AtomicI64::new(NEVER_FLUSHED),
                hash: *hash,
            });
    }

    /// The latest recorded use, if any since start.
    pub fn get(&self, id: &TokenId) -> Option<i64> {
        let map = crate::sync::read(self.shard(id));
        map.get(id).map(|c| c.seen.load(Ordering::Relaxed))
    }

    /// Uses recorded since the last [`Self::mark_flushed`] of each token, leaving out times
    /// that moved less than `min_step` seconds since they were last flushed (1: every move;
    /// a token never flushed since start is always in).
    pub fn unflushed(&self, min_step: i64) -> Vec<Unflushed> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let map = crate::sync::read(shard);
            out.extend(map.iter().filter_map(|(id, c)| {
                let seen = c.seen.load(Ordering::Relaxed);
                let flushed = c.flushed.load(Ordering::Relaxed);
                let moved = flushed == NEVER_FLUSHED || seen.saturating_sub(flushed) >= min_step;
                (seen > flushed && moved).then_some(Unflushed {
                    id: *id,
                    hash: c.hash,
                    seen,
                    flushed: (flushed != NEVER_FLUSHED).then_some(flushed),
                })
            }));
        }
        out
    }

    /// Notes that these times are persisted.
    pub fn mark_flushed(&self, batch: &[Unflushed]) {
        for u in batch {
            if let Some(c) = crate::sync::read(self.shard(&u.id)).get(&u.id) {
                c.flushed.fetch_max(u.seen, Ordering::Relaxed);
            }
        }
    }

    /// A rotated token's uses are checked against its new secret's hash from now on (the
    /// flush checks a token still exists by the hash it was recorded with).
    pub fn rehash(&self, id: &TokenId, hash: TokenHash) {
        if let Some(c) = crate::sync::write(self.shard(id)).get_mut(id) {
            c.hash = hash;
        }
    }

    /// Drops a deleted token.
    pub fn forget(&self, id: &TokenId) {
        crate::sync::write(self.shard(id)).remove(id);
    }

    /// Tokens tracked (used at least once since start and not deleted).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| crate::sync::read(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_max_and_reports_unflushed_once() {
        let t = LastUsedTracker::default();
        let a = TokenId::generate();
        let h = TokenHash([7; 32]);
        t.record(a, &h, 10);
        t.record(a, &h, 5);
        assert_eq!(t.get(&a), Some(10));
        let batch = t.unflushed(1);
        let pending = |seen, flushed| Unflushed {
            id: a,
            hash: h,
            seen,
            flushed,
        };
        assert_eq!(batch, vec![pending(10, None)]);
        t.mark_flushed(&batch);
        assert!(t.unflushed(1).is_empty());
        t.record(a, &h, 11);
        assert_eq!(t.unflushed(1), vec![pending(11, Some(10))]);
        t.forget(&a);
        assert_eq!(t.get(&a), None);
        assert!(t.unflushed(1).is_empty());
    }

    #[test]
    fn a_resolution_skips_small_moves_until_they_add_up() {
        let t = LastUsedTracker::default();
        let a = TokenId::generate();
        let h = TokenHash([8; 32]);
        t.record(a, &h, 100);
        // Never flushed since start: written whatever the resolution.
        let first = t.unflushed(60);
        assert_eq!(first.len(), 1);
        t.mark_flushed(&first);
        t.record(a, &h, 159);
        assert!(t.unflushed(60).is_empty(), "moved 59 s: skipped");
        assert_eq!(t.unflushed(1).len(), 1, "a final flush still writes it");
        assert_eq!(t.get(&a), Some(159), "this node's own view is exact");
        t.record(a, &h, 160);
        assert_eq!(t.unflushed(60)[0].seen, 160, "moved 60 s: written");
    }

    #[test]
    fn concurrent_records_keep_the_latest() {
        let t = std::sync::Arc::new(LastUsedTracker::default());
        let ids: Vec<TokenId> = (0..100).map(|_| TokenId::generate()).collect();
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let t = std::sync::Arc::clone(&t);
                let ids = ids.clone();
                std::thread::spawn(move || {
                    for round in 0..100 {
                        for id in &ids {
                            t.record(*id, &TokenHash([0; 32]), round * 4 + w);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(t.len(), 100);
        for id in &ids {
            assert!(t.get(id).unwrap() >= 396);
        }
    }
}
