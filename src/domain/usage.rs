//! A token's usage as kept and shown: requests per UTC day for the last [`DAYS_KEPT`] days,
//! and the last [`ADDRESSES_KEPT`] distinct client addresses with first and last seen and a
//! count. The merge rules live here, so every store and every node applies the same ones:
//! counts add (per day, per address), an address's first seen is the earliest and its last
//! seen the latest, and of all addresses only the [`ADDRESSES_KEPT`] seen most recently stay
//! (ties by address, so the order never depends on who merged first). Days older than the
//! window are dropped by every merge. Merging deltas in any order gives the same days; the
//! address list is the same as long as no address drops out of the ten and comes back (it then
//! starts afresh, and counts as a new address again).
//!
//! Also the compact encoding the embedded store keeps per token: at most
//! [`MAX_ENCODED_LEN`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Days of counts kept, today included.
pub const DAYS_KEPT: i64 = 90;
/// Distinct client addresses kept per token.
pub const ADDRESSES_KEPT: usize = 10;
const SECONDS_PER_DAY: i64 = 86_400;

/// The UTC day (days since 1970-01-01) of a unix time.
pub fn day_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(SECONDS_PER_DAY)
}

/// The first day still kept on `today`.
pub fn first_kept_day(today: i64) -> i64 {
    today - (DAYS_KEPT - 1)
}

/// An IPv4-mapped IPv6 address (a dual-stack listener) is the IPv4 address it carries.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Uses of a token from one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressUse {
    pub addr: IpAddr,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
}

/// A token's usage, or a delta of it (what one node saw in one flush interval).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// (day, count), ascending by day, each day once, no zero counts.
    pub days: Vec<(i64, u64)>,
    /// Most recently seen first, each address once, at most [`ADDRESSES_KEPT`].
    pub addresses: Vec<AddressUse>,
}

impl Usage {
    /// Adds `delta` as of `today`: see the module doc for the rules. Returns the addresses
    /// of `delta` this usage did not list before (new to the token, as far as it knows).
    pub fn merge(&mut self, delta: &Usage, today: i64) -> Vec<IpAddr> {
        for &(day, count) in &delta.days {
            match self.days.binary_search_by_key(&day, |d| d.0) {
                Ok(i) => self.days[i].1 = self.days[i].1.saturating_add(count),
                Err(i) => self.days.insert(i, (day, count)),
            }
        }
        let mut new = Vec::new();
        for a in &delta.addresses {
            match self.addresses.iter_mut().find(|k| k.addr == a.addr) {
                Some(k) => {
                    k.first_seen = k.first_seen.min(a.first_seen);
                    k.last_seen = k.last_seen.max(a.last_seen);
                    k.count = k.count.saturating_add(a.count);
                }
                None => {
                    new.push(a.addr);
                    self.addresses.push(*a);
                }
            }
        }
        self.prune(today);
        new
    }

    /// Drops days before the window and all but the [`ADDRESSES_KEPT`] most recent
    /// addresses; sorts both.
    pub fn prune(&mut self, today: i64) {
        let first = first_kept_day(today);
        self.days.retain(|&(day, count)| day >= first && count > 0);
        self.days.sort_unstable_by_key(|d| d.0);
        self.addresses
            .sort_unstable_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.addr.cmp(&b.addr)));
        self.addresses.truncate(ADDRESSES_KEPT);
    }

    /// The count of each of the [`DAYS_KEPT`] days ending `today`, oldest first (zeros
    /// included).
    pub fn daily_counts(&self, today: i64) -> Vec<(i64, u64)> {
        let first = first_kept_day(today);
        (first..=today)
            .map(|day| {
                let count = self
                    .days
                    .binary_search_by_key(&day, |d| d.0)
                    .map_or(0, |i| self.days[i].1);
                (day, count)
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.addresses.is_empty()
    }

    /// The embedded store's value: `1` ‖ days (u8) ‖ per day: day (u32) ‖ count (u64) ‖
    /// addresses (u8) ‖ per address: family (`4`|`6`) ‖ 16 bytes (IPv4 in the first four) ‖
    /// first seen (i64) ‖ last seen (i64) ‖ count (u64). Big-endian. Call after
    /// [`Usage::prune`] (at most 90 days and 10 addresses).
    pub fn encode(&self) -> Vec<u8> {
        let days = &self.days[..self.days.len().min(usize::from(u8::MAX))];
        let addrs = &self.addresses[..self.addresses.len().min(ADDRESSES_KEPT)];
        let mut out = Vec::with_capacity(3 + days.len() * DAY_LEN + addrs.len() * ADDR_LEN);
        out.push(ENCODING_VERSION);
        out.push(u8::try_from(days.len()).unwrap_or(u8::MAX));
        for &(day, count) in days {
            out.extend_from_slice(&u32::try_from(day).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.push(u8::try_from(addrs.len()).unwrap_or(0));
        for a in addrs {
            let mut bytes = [0u8; 16];
            let family = match a.addr {
                IpAddr::V4(v4) => {
                    bytes[..4].copy_from_slice(&v4.octets());
                    4
                }
                IpAddr::V6(v6) => {
                    bytes = v6.octets();
                    6
                }
            };
            out.push(family);
            out.extend_from_slice(&bytes);
            out.extend_from_slice(&a.first_seen.to_be_bytes());
            out.extend_from_slice(&a.last_seen.to_be_bytes());
            out.extend_from_slice(&a.count.to_be_bytes());
        }
        out
    }

    /// The inverse of [`Usage::encode`]; `None` for anything it did not write.
    pub fn decode(bytes: &[u8]) -> Option<Usage> {
        let mut r = Reader(bytes);
        if r.take::<1>()?[0] != ENCODING_VERSION {
            return None;
        }
        let days = usize::from(r.take::<1>()?[0]);
        let mut usage = Usage::default();
        for _ in 0..days {
            let day = i64::from(u32::from_be_bytes(r.take()?));
            usage.days.push((day, u64::from_be_bytes(r.take()?)));
        }
        let addrs = usize::from(r.take::<1>()?[0]);
        if addrs > ADDRESSES_KEPT {
            return None;
        }
        for _ in 0..addrs {
            let family = r.take::<1>()?[0];
            let bytes: [u8; 16] = r.take()?;
            let addr = match family {
                4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
                6 => IpAddr::V6(Ipv6Addr::from(bytes)),
                _ => return None,
            };
            usage.addresses.push(AddressUse {
                addr,
                first_seen: i64::from_be_bytes(r.take()?),
                last_seen: i64::from_be_bytes(r.take()?),
                count: u64::from_be_bytes(r.take()?),
            });
        }
        r.0.is_empty().then_some(usage)
    }
}

const ENCODING_VERSION: u8 = 1;
const DAY_LEN: usize = 4 + 8;
const ADDR_LEN: usize = 1 + 16 + 8 + 8 + 8;
/// The most the embedded store keeps per token: 1,493 bytes (90 days, 10 addresses).
pub const MAX_ENCODED_LEN: usize = 3 + DAY_LEN * DAYS_KEPT as usize + ADDR_LEN * ADDRESSES_KEPT;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn seen(addr: &str, first: i64, last: i64, count: u64) -> AddressUse {
        AddressUse {
            addr: ip(addr),
            first_seen: first,
            last_seen: last,
            count,
        }
    }

    #[test]
    fn counts_add_and_addresses_merge_by_first_last_and_count() {
        let today = 20_000;
        let mut u = Usage::default();
        let a = Usage {
            days: vec![(today - 1, 3), (today, 2)],
            addresses: vec![seen("10.0.0.1", 100, 200, 5)],
        };
        assert_eq!(u.merge(&a, today), vec![ip("10.0.0.1")]);
        let b = Usage {
            days: vec![(today, 4)],
            addresses: vec![seen("10.0.0.1", 50, 150, 1), seen("::1", 300, 300, 1)],
        };
        assert_eq!(u.merge(&b, today), vec![ip("::1")], "only ::1 is new");
        assert_eq!(u.days, vec![(today - 1, 3), (today, 6)]);
        assert_eq!(
            u.addresses,
            vec![seen("::1", 300, 300, 1), seen("10.0.0.1", 50, 200, 6)]
        );
    }

    #[test]
    fn merging_deltas_in_either_order_gives_the_same_usage() {
        let today = 20_000;
        let deltas: Vec<Usage> = (0..30)
            .map(|n: i64| Usage {
                days: vec![(today - n % 5, u64::try_from(n).unwrap() + 1)],
                addresses: vec![seen(
                    &format!("192.0.2.{}", n % 13),
                    1_000 + n,
                    2_000 + n * 7 % 31,
                    1,
                )],
            })
            .collect();
        // One merge per node then one of the two (what a cluster does), against every
        // delta merged one by one in the reverse order.
        let mut forward = Usage::default();
        for d in &deltas {
            forward.merge(d, today);
        }
        let mut backward = Usage::default();
        for d in deltas.iter().rev() {
            backward.merge(d, today);
        }
        assert_eq!(forward.days, backward.days);
        let total: u64 = forward.days.iter().map(|d| d.1).sum();
        assert_eq!(total, (1..=30).sum::<u64>());
        assert_eq!(forward.addresses.len(), ADDRESSES_KEPT);
        let last_seen = |u: &Usage| -> Vec<(IpAddr, i64)> {
            u.addresses.iter().map(|a| (a.addr, a.last_seen)).collect()
        };
        assert_eq!(last_seen(&forward), last_seen(&backward));
    }

    #[test]
    fn the_window_and_the_address_list_stay_bounded() {
        let mut u = Usage::default();
        // A year of daily use from a new address each day, merged day by day.
        for day in 0..365 {
            let delta = Usage {
                days: vec![(day, 1)],
                addresses: vec![AddressUse {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::try_from(day).unwrap())),
                    first_seen: day * 86_400,
                    last_seen: day * 86_400,
                    count: 1,
                }],
            };
            assert_eq!(u.merge(&delta, day).len(), 1);
            assert!(u.days.len() <= 90 && u.addresses.len() <= ADDRESSES_KEPT);
            assert!(u.encode().len() <= MAX_ENCODED_LEN);
        }
        assert_eq!(u.days.first().unwrap().0, 364 - 89);
        assert_eq!(u.encode().len(), MAX_ENCODED_LEN);
        assert_eq!(MAX_ENCODED_LEN, 1_493);
        let counts = u.daily_counts(364);
        assert_eq!(counts.len(), 90);
        assert!(counts.iter().all(|d| d.1 == 1));
        // Ten days later, an untouched record shows only what is still in the window.
        assert_eq!(u.daily_counts(374).iter().filter(|d| d.1 > 0).count(), 80);
    }

    #[test]
    fn an_address_that_dropped_out_is_new_again() {
        let mut u = Usage::default();
        let one = |addr: &str, t: i64| Usage {
            days: vec![(0, 1)],
            addresses: vec![seen(addr, t, t, 1)],
        };
        u.merge(&one("10.0.0.100", 1), 0);
        for n in 0..10 {
            u.merge(&one(&format!("10.0.0.{n}"), 10 + n), 0);
        }
        assert!(u.addresses.iter().all(|a| a.addr != ip("10.0.0.100")));
        assert_eq!(u.merge(&one("10.0.0.100", 50), 0), vec![ip("10.0.0.100")]);
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let mut u = Usage {
            days: vec![(19_000, 7), (19_001, u64::MAX)],
            addresses: vec![seen("2001:db8::1", -5, 9, 2), seen("203.0.113.9", 1, 2, 3)],
        };
        u.prune(19_001);
        assert_eq!(Usage::decode(&u.encode()), Some(u.clone()));
        let bytes = u.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Usage::decode(&bytes[..cut]), None);
        }
        assert_eq!(Usage::decode(&[2, 0, 0]), None);
        assert_eq!(Usage::decode(&[1, 0, 11]), None);
        assert_eq!(
            canonical(ip("::ffff:192.0.2.1")),
            ip("192.0.2.1"),
            "a dual-stack listener's IPv4 client"
        );
    }
}
