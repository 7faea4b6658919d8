//! Per-token usage seen since the last flush: today's request count and the client addresses
//! of the interval, recorded on every successful authentication without touching the disk.
//!
//! Like `last_used`, sharded maps keyed by token id: the common case (a token already used in
//! this interval) takes one shard's read lock and the token's own small mutex — never a lock
//! shared by all tokens — and changes fixed-size arrays in place (no allocation). A token's
//! first use in an interval takes its shard's write lock to insert its cell.
//!
//! Only tokens used since the last flush have a cell: the flusher drains the maps (they keep
//! their capacity up to twice the last interval's tokens, so a burst does not pin memory).
//! A cell is [`CELL_BYTES`] bytes (352; about 420 with its key and the map's own
//! overhead): one per token active in the interval, whatever the traffic.
//!
//! An interval's addresses: the [`ADDRESSES_KEPT`] seen most recently. When an eleventh
//! arrives, the one seen longest ago is evicted and counted in `evicted` (it would not be
//! among the ten kept after the merge anyway, so the persisted list is exact; its uses still
//! count in the day's total).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use crate::domain::token::TokenId;
use crate::domain::usage::{canonical, day_of, AddressUse, Usage, ADDRESSES_KEPT};

/// Bytes of one token's cell in memory (the map adds its key and control bytes).
pub const CELL_BYTES: usize = std::mem::size_of::<Mutex<Pending>>();
const _: () = assert!(
    CELL_BYTES <= 352,
    "the README states the bytes per active token"
);

#[derive(Debug, Clone, Copy)]
struct Slot {
    addr: IpAddr,
    /// Unix seconds, as u32 (until 2106) to keep the cell small.
    first: u32,
    last: u32,
    count: u32,
}

const EMPTY_SLOT: Slot = Slot {
    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    first: 0,
    last: 0,
    count: 0,
};

/// What one token did in the interval. Fixed size: two days (an interval may cross
/// midnight) and ten addresses.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// (day, count), the slot chosen by the day's parity.
    days: [(u32, u32); 2],
    slots: [Slot; ADDRESSES_KEPT],
    used: u8,
    /// Addresses pushed out of `slots` in this interval.
    evicted: u32,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            days: [(0, 0); 2],
            slots: [EMPTY_SLOT; ADDRESSES_KEPT],
            used: 0,
            evicted: 0,
        }
    }

    fn record(&mut self, addr: IpAddr, now: i64) {
        let day = u32::try_from(day_of(now)).unwrap_or(0);
        let d = &mut self.days[(day & 1) as usize];
        if d.0 != day {
            *d = (day, 0);
        }
        d.1 = d.1.saturating_add(1);
        let t = u32::try_from(now).unwrap_or(0);
        let used = usize::from(self.used);
        if let Some(s) = self.slots[..used].iter_mut().find(|s| s.addr == addr) {
            s.last = s.last.max(t);
            s.first = s.first.min(t);
            s.count = s.count.saturating_add(1);
            return;
        }
        let fresh = Slot {
            addr,
            first: t,
            last: t,
            count: 1,
        };
        if used < ADDRESSES_KEPT {
            self.slots[used] = fresh;
            self.used += 1;
        } else {
            let oldest = (0..ADDRESSES_KEPT)
                .min_by_key(|&i| self.slots[i].last)
                .unwrap_or(0);
            self.slots[oldest] = fresh;
            self.evicted = self.evicted.saturating_add(1);
        }
    }

    fn usage(&self, today: i64) -> Usage {
        let mut usage = Usage {
            days: self
                .days
                .iter()
                .filter(|d| d.1 > 0)
                .map(|&(day, count)| (i64::from(day), u64::from(count)))
                .collect(),
            addresses: self.slots[..usize::from(self.used)]
                .iter()
                .map(|s| AddressUse {
                    addr: s.addr,
                    first_seen: i64::from(s.first),
                    last_seen: i64::from(s.last),
                    count: u64::from(s.count),
                })
                .collect(),
        };
        usage.prune(today);
        usage
    }
}

/// One token's usage of an interval, taken by the flusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub id: TokenId,
    pub usage: Usage,
    /// Addresses seen in the interval but pushed out by more recent ones (not in `usage`).
    pub evicted: u32,
}

type Shard = super::by_token::Shard<Mutex<Pending>>;

/// Usage recorded since the last flush, per token.
pub struct UsageTracker {
    shards: Vec<Shard>,
}

impl Default for UsageTracker {
    fn default() -> Self {
        UsageTracker {
            shards: super::by_token::new_shards(),
        }
    }
}

impl UsageTracker {
    fn shard(&self, id: &TokenId) -> &Shard {
        &self.shards[usize::from(id.0[14]) % super::by_token::SHARDS]
    }

    /// Records a use of `id` from `peer` at `now` (unix seconds).
    pub fn record(&self, id: TokenId, peer: IpAddr, now: i64) {
        let peer = canonical(peer);
        let shard = self.shard(&id);
        let map = crate::sync::read(shard);
        if let Some(cell) = map.get(&id) {
            crate::sync::lock(cell).record(peer, now);
            return;
        }
        drop(map);
        let mut map = crate::sync::write(shard);
        let cell = map.entry(id).or_insert_with(|| Mutex::new(Pending::new()));
        crate::sync::lock(cell).record(peer, now);
    }

    /// What this node saw of `id` since the last flush (for a view that is current here).
    pub fn peek(&self, id: &TokenId, today: i64) -> Option<Usage> {
        let map = crate::sync::read(self.shard(id));
        map.get(id).map(|c| crate::sync::lock(c).usage(today))
    }

    /// Takes every token's usage since the last take; the maps are left empty.
    pub fn take(&self, today: i64) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = crate::sync::write(shard);
            let taken = map.len();
            out.extend(map.drain().map(|(id, cell)| {
                // A poisoned cell is recovered like every lock here (`crate::sync`).
                let pending = cell
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                UsageDelta {
                    id,
                    usage: pending.usage(today),
                    evicted: pending.evicted,
                }
            }));
            // Room for as many tokens as this interval had, not for the largest burst ever.
            if map.capacity() > 2 * taken + 16 {
                map.shrink_to(taken);
            }
        }
        out
    }

    /// Puts back what a failed flush could not write, so the next round writes it.
    pub fn give_back(&self, deltas: Vec<UsageDelta>) {
        for d in deltas {
            let mut map = crate::sync::write(self.shard(&d.id));
            let cell = map
                .entry(d.id)
                .or_insert_with(|| Mutex::new(Pending::new()));
            let mut p = crate::sync::lock(cell);
            for &(day, count) in &d.usage.days {
                let day = u32::try_from(day).unwrap_or(0);
                let slot = &mut p.days[(day & 1) as usize];
                if slot.0 != day {
                    *slot = (day, 0);
                }
                slot.1 = slot
                    .1
                    .saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
            }
            for a in &d.usage.addresses {
                // The counts of a re-recorded address, not one use each.
                let start = u32::try_from(a.first_seen).unwrap_or(0);
                let used = usize::from(p.used);
                match p.slots[..used].iter_mut().find(|s| s.addr == a.addr) {
                    Some(s) => {
                        s.first = s.first.min(start);
                        s.count = s.count.saturating_add(u32::try_from(a.count).unwrap_or(0));
                    }
                    None if used < ADDRESSES_KEPT => {
                        p.slots[used] = Slot {
                            addr: a.addr,
                            first: start,
                            last: u32::try_from(a.last_seen).unwrap_or(0),
                            count: u32::try_from(a.count).unwrap_or(u32::MAX),
                        };
                        p.used += 1;
                    }
                    None => p.evicted = p.evicted.saturating_add(1),
                }
            }
            p.evicted = p.evicted.saturating_add(d.evicted);
        }
    }

    /// Drops a deleted token's unflushed usage.
    pub fn forget(&self, id: &TokenId) {
        crate::sync::write(self.shard(id)).remove(id);
    }

    /// Tokens with usage not yet flushed.
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_days_and_addresses_and_drains_on_take() {
        let t = UsageTracker::default();
        let a = TokenId::generate();
        let day = 20_000 * 86_400;
        t.record(a, ip("10.0.0.1"), day - 1);
        t.record(a, ip("10.0.0.1"), day + 5);
        t.record(a, ip("::ffff:10.0.0.2"), day + 6);
        let today = 20_000;
        let peek = t.peek(&a, today).unwrap();
        assert_eq!(peek.days, vec![(19_999, 1), (20_000, 2)]);
        assert_eq!(
            peek.addresses[0].addr,
            ip("10.0.0.2"),
            "mapped: the IPv4 address"
        );
        assert_eq!(peek.addresses[1].count, 2);
        assert_eq!(peek.addresses[1].first_seen, day - 1);
        let taken = t.take(today);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].usage, peek);
        assert!(
            t.is_empty(),
            "only tokens used since the last flush keep a cell"
        );
        t.give_back(taken.clone());
        assert_eq!(t.take(today), taken, "a failed flush loses nothing");
        t.record(a, ip("10.0.0.1"), day);
        t.forget(&a);
        assert!(t.take(today).is_empty());
    }

    #[test]
    fn a_flood_of_addresses_keeps_the_ten_latest_and_counts_the_rest() {
        let t = UsageTracker::default();
        let a = TokenId::generate();
        let now = 20_000 * 86_400;
        for n in 0..5_000u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            t.record(a, addr, now + i64::from(n));
        }
        let taken = t.take(20_000);
        let d = &taken[0];
        assert_eq!(d.usage.days, vec![(20_000, 5_000)]);
        assert_eq!(d.usage.addresses.len(), ADDRESSES_KEPT);
        assert_eq!(d.evicted, 5_000 - 10);
        assert_eq!(
            d.usage.addresses[0].addr,
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 4_999))
        );
    }

    #[test]
    fn concurrent_records_all_count() {
        let t = std::sync::Arc::new(UsageTracker::default());
        let ids: Vec<TokenId> = (0..50).map(|_| TokenId::generate()).collect();
        let handles: Vec<_> = (0..4u8)
            .map(|w| {
                let t = std::sync::Arc::clone(&t);
                let ids = ids.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        for id in &ids {
                            t.record(*id, IpAddr::V4(Ipv4Addr::new(10, 0, 0, w)), 86_400);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let taken = t.take(1);
        assert_eq!(taken.len(), 50);
        for d in taken {
            assert_eq!(d.usage.days, vec![(1, 400)]);
            assert_eq!(d.usage.addresses.len(), 4);
        }
    }
}
