//! The newest-first listing order, in memory: (creation µs, id) for every token, sorted.
//!
//! Kept in memory instead of as a sled tree because a sled tree costs page-table memory at
//! open and recovery time in proportion to its entries (figures:
//! bench/results/2026-12-02-flush-pacing.md), while this vector costs 24 bytes a token and
//! is filled by the same scan that fills the authentication index. Creation times are
//! strictly increasing (see `SledStore::create_token`), so a create appends and the vector
//! stays sorted without shifting.

use std::sync::RwLock;

use crate::domain::token::TokenId;

/// Position in the order: created µs, then id (the byte order of a listing cursor).
pub type OrderKey = (i64, [u8; 16]);

/// Every token's place in the listing.
#[derive(Default)]
pub struct CreationOrder {
    entries: RwLock<Vec<OrderKey>>,
}

impl CreationOrder {
    /// From unsorted (created, id) pairs, as a start-up scan yields them.
    pub fn from_unsorted(mut entries: Vec<OrderKey>) -> Self {
        entries.sort_unstable();
        entries.dedup();
        entries.shrink_to_fit();
        CreationOrder {
            entries: RwLock::new(entries),
        }
    }

    pub fn insert(&self, created_micros: i64, id: TokenId) {
        let key = (created_micros, id.0);
        let mut entries = crate::sync::write(&self.entries);
        match entries.last() {
            Some(last) if *last >= key => {
                if let Err(i) = entries.binary_search(&key) {
                    entries.insert(i, key);
                }
            }
            _ => entries.push(key),
        }
    }

    pub fn remove(&self, created_micros: i64, id: TokenId) {
        let mut entries = crate::sync::write(&self.entries);
        if let Ok(i) = entries.binary_search(&(created_micros, id.0)) {
            entries.remove(i);
        }
    }

    pub fn clear(&self) {
        crate::sync::write(&self.entries).clear();
    }

    /// Visits every position, oldest first.
    pub fn for_each(&self, mut visit: impl FnMut(&OrderKey)) {
        crate::sync::read(&self.entries).iter().for_each(&mut visit);
    }

    /// Up to `limit` positions, newest first, strictly before `cursor` (all when `None`),
    /// and whether more follow them.
    pub fn newest_before(&self, cursor: Option<OrderKey>, limit: usize) -> (Vec<OrderKey>, bool) {
        let entries = crate::sync::read(&self.entries);
        let end = match cursor {
            Some(c) => entries.partition_point(|k| *k < c),
            None => entries.len(),
        };
        let start = end.saturating_sub(limit);
        (
            entries[start..end].iter().rev().copied().collect(),
            start > 0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_newest_first_and_keeps_order_on_out_of_order_inserts() {
        let ids: Vec<TokenId> = (0..10).map(|_| TokenId::generate()).collect();
        let order =
            CreationOrder::from_unsorted((0..5).rev().map(|i| (i as i64, ids[i].0)).collect());
        for (i, id) in ids.iter().enumerate().skip(5) {
            order.insert(i as i64, *id);
        }
        // A restore may insert an older time after newer ones.
        order.remove(2, ids[2]);
        order.insert(2, ids[2]);
        assert_eq!(order.newest_before(None, 100).0.len(), 10);
        let ids_of = |keys: Vec<OrderKey>| {
            keys.into_iter()
                .map(|(_, id)| TokenId(id))
                .collect::<Vec<_>>()
        };
        let (first, more) = order.newest_before(None, 4);
        assert_eq!(ids_of(first), vec![ids[9], ids[8], ids[7], ids[6]]);
        assert!(more);
        let (rest, more) = order.newest_before(Some((6, ids[6].0)), 100);
        assert_eq!(
            ids_of(rest),
            (0..6).rev().map(|i| ids[i]).collect::<Vec<_>>()
        );
        assert!(!more);
        order.remove(9, ids[9]);
        order.remove(9, ids[9]);
        assert_eq!(ids_of(order.newest_before(None, 1).0), vec![ids[8]]);
        assert_eq!(order.newest_before(None, 100).0.len(), 9);
    }
}
