//! The audit log: a time-ordered sled tree of events (token created/deleted, admin logins,
//! password changes, server start/stop), read newest first, bounded by a retention cap that
//! drops the oldest. Events never contain a secret.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};

/// One audit event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Opaque, unique, time-ordered id (also the pagination cursor).
    #[serde(default)]
    pub id: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// `token.created`, `token.deleted`, `admin.login`, ...
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For aggregated events (`auth.failed`): how many in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Filters for reading the log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub limit: usize,
    /// Return events strictly older than this id.
    pub before: Option<[u8; 16]>,
    pub token_id: Option<String>,
    pub event: Option<String>,
}

impl Store {
    /// Appends an event that happened at `now` (unix seconds), which also sets its `at`.
    /// Not flushed: the next flush, at most ~0.5 s later by sled's own timer, makes it
    /// durable; token create/delete flush right after anyway.
    pub fn append_audit(&self, now: i64, mut event: AuditEvent) -> Result<()> {
        event.at = crate::time_format::format_rfc3339(now);
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&now.saturating_mul(1_000_000).max(0).to_be_bytes());
        key[8..].copy_from_slice(&self.db.generate_id()?.to_be_bytes());
        event.id = crate::tokens::hex(&key);
        let bytes = serde_json::to_vec(&event).map_err(|e| Error::Internal(e.to_string()))?;
        self.audit.insert(key, bytes)?;
        let len = self.audit_len.fetch_add(1, Ordering::Relaxed) + 1;
        if len > self.audit_cap {
            for _ in 0..(len - self.audit_cap) {
                if self.audit.pop_min()?.is_some() {
                    self.audit_len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Newest first, with optional filters. Returns the events and the cursor for the next page.
    pub fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let iter = match &query.before {
            Some(b) => self.audit.range(..&b[..]),
            None => self.audit.range::<&[u8], _>(..),
        };
        let mut out = Vec::new();
        let mut more = false;
        for entry in iter.rev() {
            let (_, bytes) = entry?;
            let event: AuditEvent = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(format!("audit record: {e}")))?;
            if query
                .token_id
                .as_ref()
                .is_some_and(|t| event.token_id.as_ref() != Some(t))
            {
                continue;
            }
            if query.event.as_ref().is_some_and(|e| &event.event != e) {
                continue;
            }
            if out.len() == query.limit {
                more = true;
                break;
            }
            out.push(event);
        }
        let next = if more {
            out.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }
}

/// Parses an audit cursor (32 hex characters).
pub fn parse_audit_cursor(s: &str) -> Option<[u8; 16]> {
    crate::tokens::decode_hex(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    fn ev(name: &str) -> AuditEvent {
        AuditEvent {
            event: name.into(),
            at: "x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn newest_first_with_filter_and_cursor() {
        let s = TempStore::new();
        for i in 0..5 {
            s.append_audit(i, ev(if i % 2 == 0 { "a" } else { "b" }))
                .unwrap();
        }
        let (all, next) = s
            .audit_events(&AuditQuery {
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["a", "b", "a"]
        );
        let before = parse_audit_cursor(&next.unwrap());
        let (rest, next) = s
            .audit_events(&AuditQuery {
                limit: 3,
                before,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rest.len(), 2);
        assert!(next.is_none());
        let q = AuditQuery {
            limit: 10,
            event: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(s.audit_events(&q).unwrap().0.len(), 2);
    }
}
