//! Token usage as a use-case: the view of one token's usage (what is stored merged with what
//! this node saw since its last flush), and the flush of each interval's deltas into the
//! store with the `token.new_address` audit events it finds.
//!
//! `token.new_address` is written once per (token, address) the first time the store's usage
//! did not list the address (its last ten: an address that dropped out of them and comes
//! back is new again). Bounded, because a leaked token in use can bring thousands of new
//! addresses per interval: per token and flush at most [`NEW_ADDRESS_EVENTS_PER_TOKEN`]
//! events naming an address, then one more with the `count` of the rest (new addresses not
//! named, and addresses this interval saw but pushed out of its ten in memory); per flush at
//! most [`NEW_ADDRESS_EVENTS_PER_FLUSH`] events in all, then one summary event with the count
//! of those left out. They are failure-class events (anyone holding a token can cause them),
//! so they never push lifecycle events out.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::time::format_rfc3339;
use crate::domain::token::TokenId;
use crate::domain::usage::{day_of, Usage};
use crate::service::auth::usage::UsageTracker;
use crate::store::Store;

/// `token.new_address` events naming an address, per token and flush.
pub const NEW_ADDRESS_EVENTS_PER_TOKEN: usize = 3;
/// `token.new_address` events per flush in all (then one summary).
pub const NEW_ADDRESS_EVENTS_PER_FLUSH: usize = 1_000;

/// A token's usage as the admin API, the console and `token usage --json` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub token_id: String,
    /// Requests in the 90 days shown.
    pub total: u64,
    /// The last 90 UTC days, oldest first, today last, every day present.
    pub days: Vec<DayView>,
    /// The last ten distinct client addresses, most recently seen first.
    pub addresses: Vec<AddressView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DayView {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AddressView {
    pub address: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
}

impl UsageView {
    pub fn new(id: TokenId, usage: &Usage, now: i64) -> UsageView {
        let days: Vec<DayView> = usage
            .daily_counts(day_of(now))
            .into_iter()
            .map(|(day, count)| {
                let mut date = format_rfc3339(day * 86_400);
                date.truncate(10);
                DayView { date, count }
            })
            .collect();
        UsageView {
            token_id: id.to_string(),
            total: days.iter().map(|d| d.count).sum(),
            days,
            addresses: usage
                .addresses
                .iter()
                .map(|a| AddressView {
                    address: a.addr.to_string(),
                    first_seen: format_rfc3339(a.first_seen),
                    last_seen: format_rfc3339(a.last_seen),
                    count: a.count,
                })
                .collect(),
        }
    }
}

impl super::Service {
    /// A token's usage at `now`: as stored, plus what this node saw since its last flush.
    /// `NotFound` if there is no such token.
    pub fn usage_of(&self, id: TokenId, now: i64) -> super::Result<Usage> {
        if self.store.token_by_id(id)?.is_none() {
            return Err(super::Error::NotFound);
        }
        let today = day_of(now);
        let mut usage = self.store.stored_usage(id)?;
        if let Some(pending) = self.usage.peek(&id, today) {
            usage.merge(&pending, today);
        }
        usage.prune(today);
        Ok(usage)
    }
}

/// Outcome of one usage flush.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageFlushReport {
    pub tokens: usize,
    pub new_address_events: usize,
}

/// Writes every token's usage since the last flush into the store, in chunks of 50 paced
/// like the last-used flush (each followed by a pause of four times its time, all within
/// `spread`), then audits the new addresses. A failed write gives the unwritten deltas back
/// to the tracker for the next round.
pub fn flush_usage(
    store: &dyn Store,
    tracker: &UsageTracker,
    now: i64,
    spread: Duration,
    copy: &dyn Fn(&AuditEvent),
) -> crate::service::error::Result<UsageFlushReport> {
    const CHUNK: usize = 50;
    const PAUSE_PER_BUSY: u32 = 4;
    let today = day_of(now);
    let mut deltas = tracker.take(today);
    if deltas.is_empty() {
        return Ok(UsageFlushReport::default());
    }
    let tokens = deltas.len();
    let deadline = Instant::now() + spread;
    let chunks = tokens.div_ceil(CHUNK);
    let mut found: Vec<(TokenId, Vec<IpAddr>, u32)> = Vec::new();
    let mut pause = Duration::ZERO;
    let mut n = 0;
    while !deltas.is_empty() {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let started = Instant::now();
        let rest = deltas.split_off(deltas.len().min(CHUNK));
        let chunk: Vec<(TokenId, Usage)> = deltas.iter().map(|d| (d.id, d.usage.clone())).collect();
        match store.merge_usage_chunk(&chunk, today) {
            Ok(written) => {
                for (id, new) in written {
                    let evicted = deltas.iter().find(|d| d.id == id).map_or(0, |d| d.evicted);
                    if !new.is_empty() || evicted > 0 {
                        found.push((id, new, evicted));
                    }
                }
            }
            Err(e) => {
                let mut unwritten = std::mem::take(&mut deltas);
                unwritten.extend(rest);
                tracker.give_back(unwritten);
                audit_new_addresses(store, &found, now, copy);
                return Err(e.into());
            }
        }
        deltas = rest;
        n += 1;
        let done = Instant::now();
        let left = u32::try_from(chunks.saturating_sub(n))
            .unwrap_or(u32::MAX)
            .max(1);
        pause = (PAUSE_PER_BUSY * (done - started))
            .min(deadline.saturating_duration_since(done) / left);
    }
    store.flush()?;
    let events = audit_new_addresses(store, &found, now, copy);
    Ok(UsageFlushReport {
        tokens,
        new_address_events: events,
    })
}

/// The `token.new_address` events of one flush, within the caps (see the module doc).
fn new_address_events(found: &[(TokenId, Vec<IpAddr>, u32)]) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut left_out: u64 = 0;
    for (id, new, evicted) in found {
        let mut per_token = Vec::new();
        for addr in new.iter().take(NEW_ADDRESS_EVENTS_PER_TOKEN) {
            per_token.push(AuditEvent {
                token_id: Some(id.to_string()),
                remote_addr: Some(addr.to_string()),
                ..AuditEvent::of(AuditKind::TokenNewAddress)
            });
        }
        let rest =
            new.len().saturating_sub(NEW_ADDRESS_EVENTS_PER_TOKEN) as u64 + u64::from(*evicted);
        if rest > 0 {
            per_token.push(AuditEvent {
                token_id: Some(id.to_string()),
                count: Some(rest),
                reason: Some("more addresses in this interval, not listed".into()),
                ..AuditEvent::of(AuditKind::TokenNewAddress)
            });
        }
        for e in per_token {
            if events.len() < NEW_ADDRESS_EVENTS_PER_FLUSH {
                events.push(e);
            } else {
                left_out += e.count.unwrap_or(1);
            }
        }
    }
    if left_out > 0 {
        events.push(AuditEvent {
            count: Some(left_out),
            reason: Some("aggregation_overflow".into()),
            ..AuditEvent::of(AuditKind::TokenNewAddress)
        });
    }
    events
}

fn audit_new_addresses(
    store: &dyn Store,
    found: &[(TokenId, Vec<IpAddr>, u32)],
    now: i64,
    copy: &dyn Fn(&AuditEvent),
) -> usize {
    let mut written = 0;
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    for mut event in new_address_events(found) {
        if let Some(id) = &event.token_id {
            let name = match names.iter().find(|(i, _)| i == id) {
                Some((_, name)) => name.clone(),
                None => {
                    let name = TokenId::parse(id)
                        .and_then(|id| store.token_by_id(id).ok().flatten())
                        .map(|r| r.name);
                    names.push((id.clone(), name.clone()));
                    name
                }
            };
            event.token_name = name;
        }
        match store.append_audit(now, event) {
            Ok(appended) => {
                copy(&appended);
                written += 1;
            }
            Err(e) => log::error!("writing token.new_address to the audit log failed: {e}"),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    #[test]
    fn events_are_capped_per_token_and_per_flush() {
        let many: Vec<IpAddr> = (0..50u32)
            .map(|n| IpAddr::V4(std::net::Ipv4Addr::from(n)))
            .collect();
        let one = TokenId::generate();
        let events = new_address_events(&[(one, many.clone(), 7)]);
        assert_eq!(events.len(), NEW_ADDRESS_EVENTS_PER_TOKEN + 1);
        assert_eq!(events.last().unwrap().count, Some(47 + 7));
        let found: Vec<_> = (0..1_000)
            .map(|_| (TokenId::generate(), many.clone(), 0))
            .collect();
        let events = new_address_events(&found);
        assert_eq!(events.len(), NEW_ADDRESS_EVENTS_PER_FLUSH + 1);
        let summary = events.last().unwrap();
        assert_eq!(summary.reason.as_deref(), Some("aggregation_overflow"));
        assert!(summary.count.unwrap() > 0);
    }

    #[test]
    fn a_flood_of_addresses_writes_bounded_usage_and_events() {
        let s = TempStore::new();
        let (_, rec) = s.create_token("leaked", None, 1).unwrap();
        let tracker = UsageTracker::default();
        let now = 20_000 * 86_400;
        let audited = std::cell::RefCell::new(Vec::new());
        for round in 0..3u32 {
            for n in 0..5_000u32 {
                let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + round * 5_000 + n));
                tracker.record(rec.id, addr, now + i64::from(n));
            }
            let copy = |e: &AuditEvent| audited.borrow_mut().push(e.clone());
            let report = flush_usage(&*s, &tracker, now + 5_000, Duration::ZERO, &copy).unwrap();
            assert_eq!(report.new_address_events, NEW_ADDRESS_EVENTS_PER_TOKEN + 1);
        }
        let usage = s.stored_usage(rec.id).unwrap();
        assert_eq!(usage.days, vec![(20_000, 15_000)]);
        assert_eq!(usage.addresses.len(), 10);
        assert!(usage.encode().len() <= crate::domain::usage::MAX_ENCODED_LEN);
        let audited = audited.into_inner();
        assert_eq!(audited.len(), 3 * (NEW_ADDRESS_EVENTS_PER_TOKEN + 1));
        assert_eq!(audited[0].token_name.as_deref(), Some("leaked"));
        assert!(tracker.is_empty());
    }
}
