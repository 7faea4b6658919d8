//! The webhook outbox in sled: `webhook_outbox` (a sled id, u64 big-endian, so keys sort in
//! queue order → the entry as JSON) and the lifecycle scan mark in `meta`
//! ([`WEBHOOK_SCAN_MARK_KEY`], i64 unix seconds). Queueing is one transaction over both
//! trees, then a flush: an event queued is an event that survives `kill -9`. The outbox is
//! small (the service bounds it), so finding due entries reads it whole.

use sled::transaction::abort;
use sled::Transactional;

use super::layout::WEBHOOK_SCAN_MARK_KEY;
use super::{be_i64, be_u64, SledStore, TokenRecordRef};
use crate::store::error::{Error, Result};
use crate::store::records::{OutboxBacklog, OutboxEntry, ScanMark, TokenRecord};

/// The mark moved under a scan: it must not queue what another scan already did.
struct MarkMoved;

impl From<MarkMoved> for Error {
    fn from(_: MarkMoved) -> Error {
        Error::Internal("scan mark moved".into())
    }
}

impl SledStore {
    pub fn enqueue_webhooks(
        &self,
        entries: &[OutboxEntry],
        scan: Option<ScanMark>,
    ) -> Result<bool> {
        let mut keyed = Vec::with_capacity(entries.len());
        for entry in entries {
            let json = serde_json::to_vec(entry)
                .map_err(|e| Error::Internal(format!("encoding an outbox entry: {e}")))?;
            keyed.push((self.db.generate_id()?.to_be_bytes(), json));
        }
        let outcome = (&self.webhook_outbox, &self.meta).transaction(|(outbox, meta)| {
            if let Some(scan) = scan {
                let mark = meta.get(WEBHOOK_SCAN_MARK_KEY)?.and_then(|v| be_i64(&v));
                if mark != scan.expected {
                    return abort(MarkMoved);
                }
                meta.insert(WEBHOOK_SCAN_MARK_KEY, &scan.to.to_be_bytes())?;
            }
            for (key, json) in &keyed {
                outbox.insert(&key[..], json.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            Err(sled::transaction::TransactionError::Abort(MarkMoved)) => return Ok(false),
            Err(sled::transaction::TransactionError::Storage(e)) => return Err(Error::Sled(e)),
        }
        self.db.flush()?;
        Ok(true)
    }

    pub fn webhook_scan_mark(&self) -> Result<Option<i64>> {
        Ok(self
            .meta
            .get(WEBHOOK_SCAN_MARK_KEY)?
            .and_then(|v| be_i64(&v)))
    }

    pub fn lifecycle_candidates(
        &self,
        from: i64,
        to: i64,
        unused_after_days: Option<u32>,
    ) -> Result<Vec<(TokenRecord, Option<i64>)>> {
        const DAY: i64 = 86_400;
        let mut found = Vec::new();
        for entry in self.records.iter() {
            let (key, bytes) = entry?;
            let Some(r) = TokenRecordRef::decode(&key, &bytes) else {
                continue;
            };
            // An expiry moment (30, 7, 1 or 0 days before it) may fall in the window.
            let expiry = r.expires_at.is_some_and(|e| e > from && e - 30 * DAY <= to);
            // The last-used lookup only where it can matter: a token old enough to have
            // been unused that long by the end of the window.
            let created_at = r.created_micros.div_euclid(1_000_000);
            let unused = unused_after_days.is_some_and(|d| created_at + i64::from(d) * DAY <= to);
            if expiry || unused {
                let last_used = if unused {
                    self.stored_last_used(r.id)?
                } else {
                    None
                };
                found.push((r.to_owned_record(), last_used));
            }
        }
        Ok(found)
    }

    pub fn due_webhooks(
        &self,
        now_ms: i64,
        url: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let mut due = Vec::new();
        for item in self.webhook_outbox.iter() {
            if due.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let entry = decode(&key, &value)?;
            if entry.next_attempt_ms <= now_ms && url.is_none_or(|u| u == entry.url) {
                due.push(entry);
            }
        }
        Ok(due)
    }

    pub fn webhook_attempted(&self, seq: u64, retry: Option<(u32, i64)>) -> Result<()> {
        let key = seq.to_be_bytes();
        match retry {
            None => {
                self.webhook_outbox.remove(key)?;
            }
            Some((attempts, next_attempt_ms)) => {
                let Some(value) = self.webhook_outbox.get(key)? else {
                    return Ok(());
                };
                let mut entry = decode(&key, &value)?;
                entry.attempts = attempts;
                entry.next_attempt_ms = next_attempt_ms;
                let json = serde_json::to_vec(&entry)
                    .map_err(|e| Error::Internal(format!("encoding an outbox entry: {e}")))?;
                self.webhook_outbox.insert(key, json)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    pub fn webhook_backlog(&self) -> Result<OutboxBacklog> {
        let mut backlog = OutboxBacklog::default();
        for item in self.webhook_outbox.iter() {
            let (key, value) = item?;
            let entry = decode(&key, &value)?;
            backlog.pending += 1;
            backlog.oldest_queued_ms = Some(
                backlog
                    .oldest_queued_ms
                    .map_or(entry.queued_ms, |o| o.min(entry.queued_ms)),
            );
        }
        Ok(backlog)
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<OutboxEntry> {
    let mut entry: OutboxEntry = serde_json::from_slice(value)
        .map_err(|e| Error::Corrupt(format!("undecodable webhook outbox entry: {e}")))?;
    entry.seq = be_u64(key).ok_or_else(|| Error::Corrupt("bad webhook outbox key".into()))?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use crate::store::records::{OutboxEntry, ScanMark};
    use crate::store::test_support::TempStore;

    fn entry(id: &str, next: i64) -> OutboxEntry {
        OutboxEntry {
            seq: 0,
            event_id: id.into(),
            url: "http://127.0.0.1:9/".into(),
            body: format!("{{\"id\":\"{id}\"}}"),
            attempts: 0,
            next_attempt_ms: next,
            queued_ms: next,
        }
    }

    #[test]
    fn entries_come_back_in_queue_order_when_due_and_leave_when_delivered() {
        let s = TempStore::new();
        assert!(s
            .enqueue_webhooks(&[entry("a", 10), entry("b", 5), entry("c", 50)], None)
            .unwrap());
        let due = s.due_webhooks(20, None, 10).unwrap();
        assert_eq!(
            due.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        s.webhook_attempted(due[0].seq, None).unwrap();
        s.webhook_attempted(due[1].seq, Some((1, 100))).unwrap();
        assert!(s.due_webhooks(60, None, 10).unwrap()[0].event_id == "c");
        let later = s.due_webhooks(100, None, 10).unwrap();
        assert_eq!(later.len(), 2);
        assert_eq!(later[0].attempts, 1);
        let backlog = s.webhook_backlog().unwrap();
        assert_eq!(backlog.pending, 2);
        assert_eq!(backlog.oldest_queued_ms, Some(5));
    }

    #[test]
    fn a_scan_queues_only_from_the_mark_it_read() {
        let s = TempStore::new();
        assert_eq!(s.webhook_scan_mark().unwrap(), None);
        let first = ScanMark {
            expected: None,
            to: 100,
        };
        assert!(s.enqueue_webhooks(&[entry("x", 0)], Some(first)).unwrap());
        // A second scan that read the old mark queues nothing.
        assert!(!s.enqueue_webhooks(&[entry("y", 0)], Some(first)).unwrap());
        assert_eq!(s.webhook_scan_mark().unwrap(), Some(100));
        assert_eq!(s.due_webhooks(0, None, 10).unwrap().len(), 1);
    }
}
