//! Failed authentications, aggregated: a count per (reason, client address, token id when
//! known) per flush interval, written to the audit log as `auth.failed` events by the
//! flusher. A flood can neither fill the disk (one event per key per interval, at most
//! `MAX_KEYS` keys; the rest are counted as dropped) nor slow valid requests (they never
//! touch this; a failure takes its own thread's one of 16 shard locks, so event loops do
//! not queue on each other).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::AuthFailure;
use crate::store::{AuditEvent, Store};
use crate::tokens::TokenId;

const SHARDS: usize = 16;

/// This thread's shard: threads are numbered in the order they first record a failure.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}
/// Distinct (reason, address, token) keys kept per interval.
pub const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    reason: AuthFailure,
    addr: IpAddr,
    token: Option<TokenId>,
}

/// The aggregation between two flushes.
pub struct AuthFailureLog {
    shards: Vec<Mutex<HashMap<Key, u64>>>,
    dropped: AtomicU64,
}

impl Default for AuthFailureLog {
    fn default() -> Self {
        AuthFailureLog {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl AuthFailureLog {
    pub fn record(&self, reason: AuthFailure, addr: IpAddr, token: Option<TokenId>) {
        // Sharded by the recording thread, not by address: behind a reverse proxy every
        // failure comes from one address, and an address-keyed shard would be one lock all
        // event loops queue on during a flood of bad tokens.
        let Ok(mut shard) = self.shards[thread_shard()].lock() else {
            return;
        };
        let key = Key {
            reason,
            addr,
            token,
        };
        if let Some(count) = shard.get_mut(&key) {
            *count += 1;
        } else if shard.len() < MAX_KEYS / SHARDS {
            shard.insert(key, 1);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes one `auth.failed` event per key (and one for dropped counts) and resets.
    pub fn write_to_audit(&self, store: &Store, now: i64) -> crate::Result<usize> {
        // The same key may have been counted on several threads: sum them.
        let mut drained: HashMap<Key, u64> = HashMap::new();
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                for (key, count) in s.drain() {
                    *drained.entry(key).or_default() += count;
                }
            }
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        for (key, count) in &drained {
            store.append_audit(
                now,
                AuditEvent {
                    event: "auth.failed".into(),
                    reason: Some(key.reason.as_str().into()),
                    remote_addr: Some(key.addr.to_string()),
                    token_id: key.token.map(|t| t.to_string()),
                    count: Some(*count),
                    ..Default::default()
                },
            )?;
        }
        if dropped > 0 {
            store.append_audit(
                now,
                AuditEvent {
                    event: "auth.failed".into(),
                    reason: Some("aggregation_overflow".into()),
                    count: Some(dropped),
                    ..Default::default()
                },
            )?;
        }
        Ok(drained.len())
    }
}
