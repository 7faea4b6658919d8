//! The audit log: time-ordered events (token created/deleted, admin logins, password
//! changes, server start/stop, refused attempts), read newest first as one stream.
//!
//! Events live in two sled trees, chosen by the event's kind alone ([`AuditKind::class`]):
//! - `audit` holds the lifecycle events, which need an authenticated admin (or are the
//!   server's own start/stop), capped by `--audit-retention`;
//! - `audit_failures` holds what anyone who reaches the port can cause (failed
//!   authentications, failed admin logins, API tokens sent to admin routes), capped by
//!   `--audit-failure-retention`.
//!
//! Each cap drops the oldest events of its own tree only, so no flood of failures can push
//! a lifecycle event out. A kind not in [`AuditKind`] counts as a failure: only a kind known
//! to need an admin may take room in the lifecycle tree. Keys are 8 bytes of µs since the
//! epoch and 8 bytes of a store-wide sled id, so they are unique across both trees and one
//! cursor pages through the merged stream. String fields are redacted of token-shaped text
//! on append; events never contain a secret.

use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{AUDIT_FAILURE_TREE, AUDIT_LIFECYCLE_TREE};
use super::SledStore;
use crate::domain::audit::{class_of, AuditClass, AuditEvent};
use crate::store::error::{Error, Result};
use crate::store::records::{stamp_audit, AuditQuery};

/// One audit tree with its own cap: appending past the cap drops its oldest events.
pub(super) struct CappedTree {
    tree: sled::Tree,
    /// Events in the tree (counted at open, kept up to date by appends and imports).
    len: AtomicU64,
    cap: u64,
}

impl CappedTree {
    fn open(db: &sled::Db, name: &str, cap: u64) -> Result<CappedTree> {
        let tree = db.open_tree(name)?;
        let len = AtomicU64::new(tree.len() as u64);
        Ok(CappedTree {
            tree,
            len,
            cap: cap.max(1),
        })
    }

    fn insert(&self, key: [u8; 16], bytes: Vec<u8>) -> Result<()> {
        self.tree.insert(key, bytes)?;
        self.len.fetch_add(1, Ordering::Relaxed);
        self.trim()
    }

    /// Drops the oldest events until the tree is within its cap.
    fn trim(&self) -> Result<()> {
        while self.len.load(Ordering::Relaxed) > self.cap {
            if self.tree.pop_min()?.is_none() {
                self.len.store(0, Ordering::Relaxed);
                break;
            }
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The two audit trees (see the module doc).
pub(super) struct AuditTrees {
    lifecycle: CappedTree,
    failures: CappedTree,
}

impl AuditTrees {
    /// Opens both trees and applies the caps at once (a lowered cap takes effect at start).
    pub(super) fn open(db: &sled::Db, lifecycle_cap: u64, failure_cap: u64) -> Result<Self> {
        let trees = AuditTrees {
            lifecycle: CappedTree::open(db, AUDIT_LIFECYCLE_TREE, lifecycle_cap)?,
            failures: CappedTree::open(db, AUDIT_FAILURE_TREE, failure_cap)?,
        };
        trees.lifecycle.trim()?;
        trees.failures.trim()?;
        Ok(trees)
    }

    fn of_class(&self, class: AuditClass) -> &CappedTree {
        match class {
            AuditClass::Lifecycle => &self.lifecycle,
            AuditClass::Failure => &self.failures,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lifecycle.tree.is_empty() && self.failures.tree.is_empty()
    }

    pub(super) fn clear(&self) -> Result<()> {
        for t in [&self.lifecycle, &self.failures] {
            t.tree.clear()?;
            t.len.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Both trees as one stream in key order, newest first or oldest first, from (not
    /// including) `before` when newest first.
    fn merged(
        &self,
        before: Option<&[u8; 16]>,
        newest_first: bool,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> {
        let range = |t: &sled::Tree| match before {
            Some(b) => t.range(..&b[..]),
            None => t.iter(),
        };
        merge_sorted(
            range(&self.lifecycle.tree),
            range(&self.failures.tree),
            newest_first,
        )
    }
}

/// Merges two sled iterators (each ascending by key) into one, descending when
/// `descending`. Keys never repeat across the two, so ties do not arise.
fn merge_sorted(
    a: sled::Iter,
    b: sled::Iter,
    descending: bool,
) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> {
    let boxed = |i: sled::Iter| -> Box<dyn Iterator<Item = _>> {
        if descending {
            Box::new(i.rev())
        } else {
            Box::new(i)
        }
    };
    let (mut a, mut b) = (boxed(a).peekable(), boxed(b).peekable());
    std::iter::from_fn(move || {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (_, Some(Err(_))) => false,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => (ka > kb) == descending,
        };
        if take_a {
            a.next()
        } else {
            b.next()
        }
    })
}

/// Replaces token-shaped text in a field with the redaction marker.
fn decode(bytes: &[u8]) -> Result<AuditEvent> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("audit record: {e}")))
}

impl SledStore {
    /// Appends an event that happened at `now` (unix seconds), which also sets its `at`,
    /// into the tree of its kind. Not flushed: the next flush, at most ~0.5 s later by
    /// sled's own timer, makes it durable; token create/delete flush right after anyway.
    pub fn append_audit(&self, now: i64, mut event: AuditEvent) -> Result<AuditEvent> {
        let key = stamp_audit(&mut event, now, self.db.generate_id()?);
        let bytes = serde_json::to_vec(&event).map_err(|e| Error::Internal(e.to_string()))?;
        self.audit
            .of_class(class_of(&event.event))
            .insert(key, bytes)?;
        Ok(event)
    }

    /// Newest first across both trees, with optional filters. Returns the events and the
    /// cursor for the next page.
    pub fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let mut out = Vec::new();
        let mut more = false;
        for entry in self.audit.merged(query.before.as_ref(), true) {
            let (_, bytes) = entry?;
            let event = decode(&bytes)?;
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

    /// At most `limit` events of both trees, oldest first, from the key `from` on
    /// (inclusive).
    pub fn audit_events_from(&self, from: &[u8; 16], limit: usize) -> Result<Vec<AuditEvent>> {
        let merged = merge_sorted(
            self.audit.lifecycle.tree.range(&from[..]..),
            self.audit.failures.tree.range(&from[..]..),
            false,
        );
        let mut out = Vec::new();
        for entry in merged.take(limit) {
            let (_, bytes) = entry?;
            out.push(decode(&bytes)?);
        }
        Ok(out)
    }

    /// Every audit event of both trees with its 16-byte key, oldest first.
    pub fn export_audit(&self) -> Result<Vec<([u8; 16], AuditEvent)>> {
        let mut out = Vec::new();
        for entry in self.audit.merged(None, false) {
            let (key, bytes) = entry?;
            let key: [u8; 16] = key
                .as_ref()
                .try_into()
                .map_err(|_| Error::Corrupt("audit key".into()))?;
            out.push((key, decode(&bytes)?));
        }
        Ok(out)
    }

    /// Restores audit events with their original keys, each into the tree of its kind
    /// (so a backup from before the split comes back split). Caps apply at the next append
    /// or start.
    pub fn import_audit(&self, events: &[([u8; 16], AuditEvent)]) -> Result<()> {
        for class in [AuditClass::Lifecycle, AuditClass::Failure] {
            let mut batch = sled::Batch::default();
            let mut n = 0u64;
            for (key, event) in events.iter().filter(|(_, e)| class_of(&e.event) == class) {
                let bytes =
                    serde_json::to_vec(event).map_err(|e| Error::Internal(e.to_string()))?;
                batch.insert(&key[..], bytes);
                n += 1;
            }
            let tree = self.audit.of_class(class);
            tree.tree.apply_batch(batch)?;
            tree.len.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::AuditKind;
    use crate::store::records::parse_audit_cursor;
    use crate::store::test_support::StoreOptions;
    use crate::store::test_support::TempStore;

    fn ev(name: &str) -> AuditEvent {
        AuditEvent {
            event: name.into(),
            at: "x".into(),
            ..Default::default()
        }
    }

    fn names(events: &[AuditEvent]) -> Vec<&str> {
        events.iter().map(|e| e.event.as_str()).collect()
    }

    fn tree_names(tree: &CappedTree) -> Vec<String> {
        tree.tree
            .iter()
            .map(|e| decode(&e.unwrap().1).unwrap().event)
            .collect()
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
        assert_eq!(names(&all), ["a", "b", "a"]);
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

    #[test]
    fn export_reads_both_trees_oldest_first_from_a_key_inclusive() {
        let s = TempStore::new();
        let kinds = [
            "token.created",
            "auth.failed",
            "token.deleted",
            "admin.login_failed",
        ];
        let mut stored = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            stored.push(s.append_audit(10 + i as i64, ev(kind)).unwrap());
        }
        let all = s.audit_events_from(&[0; 16], 100).unwrap();
        assert_eq!(names(&all), kinds);
        // From an event's own key: that event first (inclusive), then the later ones.
        let from = parse_audit_cursor(&stored[1].id).unwrap();
        let rest = s.audit_events_from(&from, 2).unwrap();
        assert_eq!(names(&rest), ["auth.failed", "token.deleted"]);
        assert!(s.audit_events_from(&[0xff; 16], 10).unwrap().is_empty());
    }

    #[test]
    fn the_kind_alone_picks_the_tree_and_unknown_kinds_are_failures() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::from_name(kind.name()), Some(kind));
        }
        let failures: Vec<_> = AuditKind::ALL
            .into_iter()
            .filter(|k| k.class() == AuditClass::Failure)
            .map(AuditKind::name)
            .collect();
        assert_eq!(
            failures,
            [
                "auth.failed",
                "admin.login_failed",
                "auth.token_on_admin_route",
                "token.new_address",
                "auth.denied_network",
                "auth.denied_read_only",
                "control.refused"
            ]
        );
        assert_eq!(class_of("token.created"), AuditClass::Lifecycle);
        assert_eq!(class_of("server.started"), AuditClass::Lifecycle);
        assert_eq!(class_of("something.new"), AuditClass::Failure);

        let s = TempStore::new();
        s.append_audit(1, ev("token.created")).unwrap();
        s.append_audit(2, ev("admin.login_failed")).unwrap();
        s.append_audit(3, ev("something.new")).unwrap();
        assert_eq!(tree_names(&s.audit.lifecycle), ["token.created"]);
        assert_eq!(
            tree_names(&s.audit.failures),
            ["admin.login_failed", "something.new"]
        );
    }

    /// Events are built from [`AuditKind`] only: no event name is written as a string in
    /// the sources (so none lands in a tree by the unknown-kind fallback), and every kind is
    /// written by some part of the crate.
    #[test]
    fn every_event_is_built_from_a_known_kind_and_every_kind_is_used() {
        fn scan(dir: &std::path::Path, sources: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    scan(&path, sources);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    sources.push((path.display().to_string(), text));
                }
            }
        }
        let mut sources = Vec::new();
        scan(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut sources,
        );
        for (path, text) in &sources {
            for part in text.split("event: \"").skip(1) {
                let name = part.split('"').next().unwrap_or("");
                assert!(
                    !name.contains('.'),
                    "{path}: the event name {name:?} is a string; use AuditKind"
                );
            }
        }
        for kind in AuditKind::ALL {
            let used = format!("AuditKind::{kind:?}");
            assert!(
                sources
                    .iter()
                    .any(|(path, text)| !path.ends_with("domain/audit.rs")
                        && !path.ends_with("audit_log.rs")
                        && text.contains(&used)),
                "{used} is never written"
            );
        }
    }

    #[test]
    fn one_newest_first_stream_with_cursors_across_both_trees() {
        let s = TempStore::new();
        let token = "7d3c2b1a-0000-4000-8000-000000000001";
        // Interleaved in time; several events share a second (the sled id orders them).
        let written = [
            (1, "server.started"),
            (2, "auth.failed"),
            (2, "token.created"),
            (2, "auth.failed"),
            (3, "admin.login_failed"),
            (4, "token.deleted"),
            (4, "auth.failed"),
            (5, "admin.login"),
            (6, "auth.failed"),
            (6, "auth.failed"),
        ];
        for (at, name) in written {
            let mut e = ev(name);
            if name != "admin.login_failed" && at % 2 == 0 {
                e.token_id = Some(token.into());
            }
            s.append_audit(at, e).unwrap();
        }
        assert_eq!(s.audit.lifecycle.tree.len(), 4);
        assert_eq!(s.audit.failures.tree.len(), 6);
        let expected: Vec<&str> = written.iter().rev().map(|(_, n)| *n).collect();
        for limit in 1..=4 {
            let (mut seen, mut cursor) = (Vec::new(), None);
            loop {
                let (page, next) = s
                    .audit_events(&AuditQuery {
                        limit,
                        before: cursor,
                        ..Default::default()
                    })
                    .unwrap();
                assert!(page.len() <= limit);
                seen.extend(page);
                match next {
                    Some(n) => cursor = parse_audit_cursor(&n),
                    None => break,
                }
            }
            assert_eq!(names(&seen), expected, "limit {limit}");
            let mut ids: Vec<_> = seen.iter().map(|e| e.id.clone()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), expected.len());
        }
        let q = AuditQuery {
            limit: 3,
            token_id: Some(token.into()),
            ..Default::default()
        };
        let (page, next) = s.audit_events(&q).unwrap();
        assert_eq!(names(&page), ["auth.failed", "auth.failed", "auth.failed"]);
        let q = AuditQuery {
            before: parse_audit_cursor(&next.unwrap()),
            ..q
        };
        let (page, next) = s.audit_events(&q).unwrap();
        assert_eq!(
            names(&page),
            ["token.deleted", "auth.failed", "token.created"]
        );
        let q = AuditQuery {
            before: parse_audit_cursor(&next.unwrap()),
            ..q
        };
        let (page, next) = s.audit_events(&q).unwrap();
        assert_eq!((names(&page), next), (vec!["auth.failed"], None));
        let exported: Vec<_> = s.export_audit().unwrap();
        let oldest_first: Vec<&str> = written.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            exported
                .iter()
                .map(|(_, e)| e.event.as_str())
                .collect::<Vec<_>>(),
            oldest_first
        );
    }

    #[test]
    fn an_import_puts_each_event_in_the_tree_of_its_kind() {
        let s = TempStore::new();
        let key = |n: u8| [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, n];
        let events = [
            (key(1), ev("token.created")),
            (key(2), ev("auth.failed")),
            (key(3), ev("admin.password_changed")),
        ];
        s.import_audit(&events).unwrap();
        assert_eq!(
            tree_names(&s.audit.lifecycle),
            ["token.created", "admin.password_changed"]
        );
        assert_eq!(tree_names(&s.audit.failures), ["auth.failed"]);
        assert_eq!(s.audit.lifecycle.len.load(Ordering::Relaxed), 2);
        assert_eq!(s.audit.failures.len.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn each_cap_evicts_only_its_own_tree() {
        let s = TempStore::with_options(StoreOptions {
            audit_cap: 3,
            audit_failure_cap: 5,
            ..StoreOptions::default()
        });
        s.append_audit(1, ev("token.created")).unwrap();
        for i in 0..50 {
            s.append_audit(2 + i, ev("auth.failed")).unwrap();
        }
        assert_eq!(s.audit.failures.tree.len(), 5);
        assert_eq!(tree_names(&s.audit.lifecycle), ["token.created"]);
        for name in ["token.deleted", "admin.login", "server.stopped"] {
            s.append_audit(60, ev(name)).unwrap();
        }
        assert_eq!(
            tree_names(&s.audit.lifecycle),
            ["token.deleted", "admin.login", "server.stopped"]
        );
        assert_eq!(s.audit.failures.tree.len(), 5);
    }

    #[test]
    fn caps_apply_at_open_and_offline_opens_drop_nothing() {
        let dir = std::env::temp_dir().join(format!(
            "pa-auth-unit-{}-{}",
            std::process::id(),
            crate::domain::token::TokenId::generate()
        ));
        {
            let s = SledStore::open(&dir, &StoreOptions::default()).unwrap();
            for i in 0..20 {
                s.append_audit(i, ev("token.created")).unwrap();
                s.append_audit(i, ev("auth.failed")).unwrap();
            }
        }
        let capped = StoreOptions {
            audit_cap: 10,
            audit_failure_cap: 4,
            ..StoreOptions::default()
        };
        {
            let s = SledStore::open(&dir, &capped).unwrap();
            assert_eq!(s.audit.lifecycle.tree.len(), 10);
            assert_eq!(s.audit.failures.tree.len(), 4);
            let newest = s.audit_events(&AuditQuery {
                limit: 1,
                ..Default::default()
            });
            assert_eq!(newest.unwrap().0[0].at, "1970-01-01T00:00:19Z");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_typed_as_a_login_username_is_redacted() {
        let s = TempStore::new();
        let secret = crate::domain::token::PlaintextToken::generate();
        let text = secret.expose_secret();
        s.append_audit(
            1,
            AuditEvent {
                event: AuditKind::AdminLoginFailed.into(),
                actor: Some(text.to_owned()),
                token_name: Some(format!("name {text}")),
                reason: Some(format!("{text}!")),
                remote_addr: Some("192.0.2.1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let (events, _) = s
            .audit_events(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let stored = serde_json::to_string(&events).unwrap();
        assert!(!stored.contains(&text[3..]), "{stored}");
        let e = &events[0];
        assert_eq!(e.actor.as_deref(), Some(crate::domain::redact::REDACTED));
        assert_eq!(
            e.token_name,
            Some(format!("name {}", crate::domain::redact::REDACTED))
        );
        assert_eq!(
            e.reason,
            Some(format!("{}!", crate::domain::redact::REDACTED))
        );
        assert_eq!(e.remote_addr.as_deref(), Some("192.0.2.1"));
    }
}
