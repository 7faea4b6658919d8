//! Failed authentications, aggregated per flush interval and written by the flusher as
//! `auth.failed` events into the audit log's failure tree (see `store::audit_log`); valid
//! tokens refused by their restrictions likewise, as `auth.denied_network` (used from
//! outside its allowed networks) and `auth.denied_read_only` (a read-only token for another
//! method), which anyone holding a leaked token can cause as often as a bad one.
//!
//! Detail degrades under a flood so that the events per interval stay bounded however many
//! addresses an attacker holds:
//! 1. the first [`EXACT_BUDGET`] distinct (reason, client address, token id when known) keys
//!    of an interval are counted exactly (`remoteAddr` is the address);
//! 2. past that, a new key is counted per (reason, network, token), the network being the
//!    address's /24 (IPv4) or /64 (IPv6), for the first [`NETWORK_BUDGET`] distinct keys
//!    (`remoteAddr` is the prefix in CIDR form, `203.0.113.0/24`);
//! 3. the rest is one `aggregation_overflow` count.
//!
//! A key already counted keeps its level for the rest of the interval. An IPv4-mapped IPv6
//! address (`::ffff:192.0.2.1`, a dual-stack listener) counts as the IPv4 address. So one
//! interval writes at most [`MAX_EVENTS_PER_INTERVAL`] events.
//!
//! Valid requests never touch this. A failure takes its own thread's one of 16 shard locks
//! (event loops do not queue on each other) and allocates only when its shard's table grows
//! past its largest size so far (drained tables keep their capacity); the budgets are two
//! shared atomics, read on a new key only. A poisoned shard is recovered (`crate::sync`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::token::TokenId;
use crate::service::error::AuthFailure;
use crate::store::Store;

const SHARDS: usize = 16;

/// Exact (reason, address, token) keys per interval.
pub const EXACT_BUDGET: usize = 1_000;
/// (reason, network, token) keys per interval, once the exact budget is spent.
pub const NETWORK_BUDGET: usize = 1_000;
/// Most `auth.failed` events one interval writes: every key, plus one overflow count.
pub const MAX_EVENTS_PER_INTERVAL: usize = EXACT_BUDGET + NETWORK_BUDGET + 1;
/// Prefix lengths of the networks failures are counted by past the exact budget.
pub const IPV4_NETWORK_BITS: u8 = 24;
pub const IPV6_NETWORK_BITS: u8 = 64;

/// This thread's shard: threads are numbered in the order they first record a failure.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Where failures came from, at the level they are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    /// One client address.
    Address(IpAddr),
    /// The network's first address; the prefix length follows from the family.
    Network(IpAddr),
}

impl Source {
    /// The `remoteAddr` text: an address, or a network in CIDR form.
    fn describe(self) -> String {
        match self {
            Source::Address(a) => a.to_string(),
            Source::Network(n @ IpAddr::V4(_)) => format!("{n}/{IPV4_NETWORK_BITS}"),
            Source::Network(n @ IpAddr::V6(_)) => format!("{n}/{IPV6_NETWORK_BITS}"),
        }
    }
}

/// The network a (canonical) address is counted in past the exact budget.
fn network_of(addr: IpAddr) -> IpAddr {
    crate::client_net::prefix(addr, IPV4_NETWORK_BITS, IPV6_NETWORK_BITS)
}

/// Why a request was refused, as the aggregation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The credential itself (`auth.failed`, with its reason).
    Credential(AuthFailure),
    /// A valid token from outside its allowed networks (`auth.denied_network`).
    Network,
    /// A read-only token for a method it may not use (`auth.denied_read_only`).
    ReadOnly,
}

impl From<AuthFailure> for Refusal {
    fn from(f: AuthFailure) -> Refusal {
        Refusal::Credential(f)
    }
}

impl Refusal {
    fn kind(self) -> AuditKind {
        match self {
            Refusal::Credential(_) => AuditKind::AuthFailed,
            Refusal::Network => AuditKind::AuthDeniedNetwork,
            Refusal::ReadOnly => AuditKind::AuthDeniedReadOnly,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::Credential(f) => f.as_str(),
            Refusal::Network => "outside_allowed_networks",
            Refusal::ReadOnly => "read_only",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    reason: Refusal,
    source: Source,
    token: Option<TokenId>,
}

#[derive(Default)]
struct Shard {
    counts: HashMap<Key, u64>,
    /// Failures past both budgets.
    overflow: u64,
}

/// The aggregation between two flushes.
pub struct AuthFailureLog {
    shards: Vec<Mutex<Shard>>,
    /// Keys of each level taken this interval, over all shards (reset by the drain).
    exact_keys: AtomicUsize,
    network_keys: AtomicUsize,
}

impl Default for AuthFailureLog {
    fn default() -> Self {
        AuthFailureLog {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            exact_keys: AtomicUsize::new(0),
            network_keys: AtomicUsize::new(0),
        }
    }
}

/// Takes one key from `budget`; the plain load keeps a spent budget from being a contended
/// read-modify-write on every failure.
fn take(used: &AtomicUsize, budget: usize) -> bool {
    used.load(Ordering::Relaxed) < budget && used.fetch_add(1, Ordering::Relaxed) < budget
}

impl AuthFailureLog {
    pub fn record(&self, reason: impl Into<Refusal>, addr: IpAddr, token: Option<TokenId>) {
        let reason = reason.into();
        let addr = addr.to_canonical();
        // Sharded by the recording thread, not by address: behind a reverse proxy every
        // failure comes from one address, and an address-keyed shard would be one lock all
        // event loops queue on during a flood of bad tokens.
        let mut shard = crate::sync::lock(&self.shards[thread_shard()]);
        let exact = Key {
            reason,
            source: Source::Address(addr),
            token,
        };
        if let Some(count) = shard.counts.get_mut(&exact) {
            *count += 1;
            return;
        }
        if take(&self.exact_keys, EXACT_BUDGET) {
            shard.counts.insert(exact, 1);
            return;
        }
        let network = Key {
            source: Source::Network(network_of(addr)),
            ..exact
        };
        if let Some(count) = shard.counts.get_mut(&network) {
            *count += 1;
        } else if take(&self.network_keys, NETWORK_BUDGET) {
            shard.counts.insert(network, 1);
        } else {
            shard.overflow += 1;
        }
    }

    /// Empties every shard and resets the budgets, all under every shard's lock so no key
    /// lands between a drain and a reset; the same key counted on several threads is summed.
    fn drain(&self) -> (HashMap<Key, u64>, u64) {
        let mut guards: Vec<_> = self.shards.iter().map(crate::sync::lock).collect();
        let mut drained: HashMap<Key, u64> = HashMap::new();
        let mut overflow = 0;
        for shard in &mut guards {
            for (key, count) in shard.counts.drain() {
                *drained.entry(key).or_default() += count;
            }
            overflow += std::mem::take(&mut shard.overflow);
        }
        self.exact_keys.store(0, Ordering::Relaxed);
        self.network_keys.store(0, Ordering::Relaxed);
        (drained, overflow)
    }

    /// Writes one `auth.failed` event per key (and one for the overflow count) and resets;
    /// returns the number of events written (at most [`MAX_EVENTS_PER_INTERVAL`]).
    /// `copy` sees each event as appended (for `--audit-syslog`).
    pub fn write_to_audit(
        &self,
        store: &dyn Store,
        now: i64,
        copy: &dyn Fn(&AuditEvent),
    ) -> crate::service::error::Result<usize> {
        let (drained, overflow) = self.drain();
        for (key, count) in &drained {
            let appended = store.append_audit(
                now,
                AuditEvent {
                    event: key.reason.kind().into(),
                    reason: Some(key.reason.reason().into()),
                    remote_addr: Some(key.source.describe()),
                    token_id: key.token.map(|t| t.to_string()),
                    count: Some(*count),
                    ..Default::default()
                },
            )?;
            copy(&appended);
        }
        if overflow > 0 {
            let appended = store.append_audit(
                now,
                AuditEvent {
                    event: AuditKind::AuthFailed.into(),
                    reason: Some("aggregation_overflow".into()),
                    count: Some(overflow),
                    ..Default::default()
                },
            )?;
            copy(&appended);
        }
        Ok(drained.len() + usize::from(overflow > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::StoreOptions;
    use crate::store::test_support::TempStore;
    use crate::store::AuditQuery;
    use std::net::Ipv4Addr;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Distinct IPv4 addresses in distinct /24s: 10.x.y.1.
    fn spread_v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + (i << 8)))
    }

    /// The drained counts as (reason, remoteAddr text, token) → count.
    fn drained(log: &AuthFailureLog) -> (HashMap<(AuthFailure, String), u64>, u64) {
        let (counts, overflow) = log.drain();
        let counts = counts
            .into_iter()
            .filter_map(|(k, n)| match k.reason {
                Refusal::Credential(r) => Some(((r, k.source.describe()), n)),
                _ => None,
            })
            .collect();
        (counts, overflow)
    }

    #[test]
    fn networks_are_slash_24_and_slash_64_and_mapped_addresses_are_ipv4() {
        assert_eq!(
            Source::Network(network_of(addr("203.0.113.77"))).describe(),
            "203.0.113.0/24"
        );
        assert_eq!(
            Source::Network(network_of(addr("2001:db8:1:2:aaaa:bbbb:cccc:dddd"))).describe(),
            "2001:db8:1:2::/64"
        );
        let mapped = addr("::ffff:198.51.100.9").to_canonical();
        assert_eq!(mapped, addr("198.51.100.9"));
        assert_eq!(
            Source::Network(network_of(mapped)).describe(),
            "198.51.100.0/24"
        );

        let log = AuthFailureLog::default();
        let unknown = AuthFailure::Unknown;
        log.record(unknown, addr("::ffff:198.51.100.9"), None);
        log.record(unknown, addr("198.51.100.9"), None);
        // Spend the exact budget; an address counted exactly stays exact.
        for i in 1..EXACT_BUDGET {
            log.record(unknown, spread_v4(i as u32), None);
        }
        log.record(unknown, addr("198.51.100.9"), None);
        for a in [
            "203.0.113.7",
            "203.0.113.200",
            "::ffff:203.0.113.9",
            "203.0.114.1",
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff::9",
            "2001:db8:1:3::1",
        ] {
            log.record(unknown, addr(a), None);
        }
        log.record(AuthFailure::Malformed, addr("203.0.113.8"), None);
        let (counts, overflow) = drained(&log);
        assert_eq!(overflow, 0);
        assert_eq!(counts.len(), EXACT_BUDGET + 5, "{counts:?}");
        let count = |r: AuthFailure, s: &str| counts.get(&(r, s.to_owned())).copied();
        assert_eq!(count(unknown, "198.51.100.9"), Some(3));
        assert_eq!(count(unknown, "203.0.113.0/24"), Some(3));
        assert_eq!(count(unknown, "203.0.114.0/24"), Some(1));
        assert_eq!(count(unknown, "2001:db8:1:2::/64"), Some(2));
        assert_eq!(count(unknown, "2001:db8:1:3::/64"), Some(1));
        assert_eq!(count(AuthFailure::Malformed, "203.0.113.0/24"), Some(1));
        assert_eq!(count(unknown, "203.0.113.7"), None);

        // The drain resets the budgets: the next interval starts exact again.
        log.record(unknown, addr("203.0.113.7"), None);
        let (counts, _) = drained(&log);
        assert_eq!(count_keys(&counts), ["203.0.113.7"]);
    }

    fn count_keys(counts: &HashMap<(AuthFailure, String), u64>) -> Vec<&str> {
        counts.keys().map(|(_, s)| s.as_str()).collect()
    }

    /// Issue 19: a leaked token used from 50,000 addresses outside its networks makes at most
    /// MAX_EVENTS_PER_INTERVAL `auth.denied_network` events an interval, each naming the
    /// token, and read-only refusals are their own event.
    #[test]
    fn denials_are_aggregated_and_bounded_like_failures() {
        let store = TempStore::new();
        let log = AuthFailureLog::default();
        let token = Some(TokenId::generate());
        // Counted before the flood: a key keeps counting once it has its place (a key first
        // seen after both budgets are spent is the overflow count, as for auth.failed).
        log.record(Refusal::ReadOnly, addr("192.0.2.1"), token);
        for i in 0..50_000u32 {
            log.record(Refusal::Network, spread_v4(i), token);
        }
        log.record(Refusal::ReadOnly, addr("192.0.2.1"), token);
        let written = log.write_to_audit(&*store, 100, &|_| {}).unwrap();
        assert!(written <= MAX_EVENTS_PER_INTERVAL, "{written}");
        let query = |event: &str| {
            store
                .audit_events(&AuditQuery {
                    limit: 10_000,
                    event: Some(event.into()),
                    ..Default::default()
                })
                .unwrap()
                .0
        };
        let denied = query("auth.denied_network");
        assert_eq!(denied.len(), MAX_EVENTS_PER_INTERVAL - 2);
        assert!(denied
            .iter()
            .all(|e| e.token_id == token.map(|t| t.to_string())
                && e.reason.as_deref() == Some("outside_allowed_networks")));
        let read_only = query("auth.denied_read_only");
        assert_eq!(read_only.len(), 1);
        assert_eq!(read_only[0].count, Some(2));
        assert_eq!(read_only[0].remote_addr.as_deref(), Some("192.0.2.1"));
        // The overflow past both budgets is one auth.failed overflow count.
        let overflow = query("auth.failed");
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].reason.as_deref(), Some("aggregation_overflow"));
    }

    #[test]
    fn past_both_budgets_failures_are_one_overflow_count() {
        let log = AuthFailureLog::default();
        let n = EXACT_BUDGET + NETWORK_BUDGET + 500;
        for i in 0..n {
            log.record(AuthFailure::Unknown, spread_v4(i as u32), None);
        }
        // Already-counted networks keep counting past the budgets.
        log.record(AuthFailure::Unknown, spread_v4(EXACT_BUDGET as u32), None);
        let (counts, overflow) = drained(&log);
        assert_eq!(counts.len(), EXACT_BUDGET + NETWORK_BUDGET);
        assert_eq!(overflow, 500);
        assert_eq!(counts.values().sum::<u64>() + overflow, n as u64 + 1);
        let first_network = Source::Network(network_of(spread_v4(EXACT_BUDGET as u32)));
        assert_eq!(counts[&(AuthFailure::Unknown, first_network.describe())], 2);
    }

    /// Issue 14 item 8: a flood of failures from many addresses must not push admin and
    /// token lifecycle events out of the audit log, and each flush interval writes a
    /// bounded number of events. (Before, failures shared the lifecycle events' tree and
    /// cap, and one interval wrote up to 10,000 events.)
    #[test]
    fn regression_issue14_flood_from_50000_addresses_keeps_lifecycle_events() {
        let store = TempStore::with_options(StoreOptions {
            audit_cap: 1_000,
            audit_failure_cap: 3_000,
            ..StoreOptions::default()
        });
        let lifecycle = [
            "server.started",
            "token.created",
            "admin.login",
            "token.deleted",
        ];
        for (i, name) in lifecycle.into_iter().enumerate() {
            let event = AuditEvent {
                event: name.into(),
                actor: Some("admin".into()),
                ..Default::default()
            };
            store.append_audit(i as i64 + 1, event).unwrap();
        }
        let log = AuthFailureLog::default();
        let (intervals, per_interval, threads) = (5, 10_000, 4);
        for interval in 0..intervals {
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let log = &log;
                    scope.spawn(move || {
                        for i in 0..per_interval / threads {
                            let n =
                                (interval * per_interval + t * per_interval / threads + i) as u32;
                            log.record(AuthFailure::Unknown, spread_v4(n), None);
                        }
                    });
                }
            });
            let written = log
                .write_to_audit(&*store, 100 + interval as i64, &|_| {})
                .unwrap();
            assert_eq!(written, MAX_EVENTS_PER_INTERVAL, "interval {interval}");
        }
        let kept = |name: &str| {
            let q = AuditQuery {
                limit: 10,
                event: Some(name.into()),
                ..Default::default()
            };
            store.audit_events(&q).unwrap().0.len()
        };
        for name in lifecycle {
            assert_eq!(kept(name), 1, "{name} was pushed out");
        }
        let q = AuditQuery {
            limit: 5_000,
            ..Default::default()
        };
        let (newest, _) = store.audit_events(&q).unwrap();
        assert_eq!(newest.len(), 3_000 + lifecycle.len());
        let overflow = newest
            .iter()
            .find(|e| e.reason.as_deref() == Some("aggregation_overflow"))
            .unwrap();
        assert_eq!(overflow.count, Some(8_000));
        assert!(newest.iter().any(|e| e
            .remote_addr
            .as_deref()
            .is_some_and(|a| a.ends_with(".0/24"))));
    }
}
