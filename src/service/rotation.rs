//! Rotation with an overlap (decision 0008): a token gets a new secret, same id, name and
//! fields, and its old secret keeps working as the *previous secret* for the overlap the
//! admin chose — for a time, or until the new secret is first used (at most `maxOverlap`).
//! One previous secret a token at a time: a second rotation ends the first one's (audited
//! as replaced). Every end of a previous secret is audited as
//! `token.previous_secret_expired` with its reason: time, first use of the new secret, an
//! admin's end, a replacement. A deleted token's previous secret goes with it (the store's
//! delete) and is not audited on its own.

use super::{Actor, Error, Result, Service};
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::domain::rotation::{Overlap, PreviousSecretEnd};
use crate::domain::token::TokenId;
use crate::store::{Rotated, Store};

/// A live previous secret as the token view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousSecretState {
    /// The first second at which it stops working (at the latest, with
    /// `untilNewSecretUsed`).
    pub ends_at: i64,
    /// Its last use seen by this node since it started (kept in memory only).
    pub last_used: Option<i64>,
}

/// How the audit log describes an overlap.
fn describe(overlap: Overlap) -> String {
    match overlap {
        Overlap::For(0) => "no overlap".to_owned(),
        Overlap::For(secs) => format!("overlap {secs} s"),
        Overlap::UntilNewSecretUsed { max_secs } => {
            format!("overlap until the new secret is used, at most {max_secs} s")
        }
    }
}

/// The event for a previous secret of token `id` that ended for `why`.
fn ended_event(id: TokenId, name: Option<String>, why: PreviousSecretEnd) -> AuditEvent {
    AuditEvent {
        token_id: Some(id.to_string()),
        token_name: name,
        reason: Some(why.as_str().to_owned()),
        ..AuditEvent::of(AuditKind::TokenPreviousSecretExpired)
    }
}

impl Service {
    /// Gives token `id` a new secret (returned once, never kept) with the old one as its
    /// previous secret for `overlap`. Durable when it returns, and in a cluster applied by
    /// every live node (a rotation can take a secret away: the old one with no overlap, or
    /// a replaced previous secret), waited for like a delete. `NotFound` if there is no
    /// such token.
    pub fn rotate_token(
        &self,
        actor: &Actor,
        id: TokenId,
        overlap: Overlap,
        now: i64,
    ) -> Result<Rotated> {
        // A rotation hands out a new credential with the token's expiry: not for a token that
        // can no longer be used, nor one the lifetime policy no longer allows (rotating it
        // would renew a credential the policy forbids; the expiry is immutable).
        let record = self.store.token_by_id(id)?.ok_or(Error::NotFound)?;
        if crate::domain::token_fields::is_expired(record.expires_at, now) {
            return Err(Error::Validation(vec![
                crate::domain::token_fields::FieldError::new(
                    "expiresAt",
                    "The token has expired: create a new one instead",
                ),
            ]));
        }
        if let Some(violation) =
            self.lifetime_policy()
                .violation(record.created_at(), record.expires_at, now)
        {
            return Err(Error::Validation(vec![
                crate::domain::token_fields::FieldError::new(
                    "expiresAt",
                    format!(
                        "The token is outside the lifetime policy ({}): a rotation keeps its \
                         expiry, so create a new token within the policy instead",
                        violation.as_str()
                    ),
                ),
            ]));
        }
        let rotated = {
            let _shared = self.mutation_shared();
            self.store
                .rotate_token(id, overlap.ends_at(now), overlap.until_new_secret_used())?
                .ok_or(Error::NotFound)?
        };
        self.tracker.rehash(&id, rotated.secret.hash());
        // Unlike a delete, never a 503: the new secret exists only in this answer. A node
        // still behind here reports progress it does not make (an honest one is waited for
        // or refuses to verify, see `nodes_behind`); say so loudly.
        let behind = self.nodes_behind()?;
        if !behind.is_empty() {
            log::error!(
                "token {id} is rotated, but these nodes have not applied it and may still \
                 accept a secret it ended: {}",
                behind.join(", ")
            );
        }
        let name = Some(rotated.record.name.clone());
        if rotated.replaced.is_some() {
            self.audit(
                now,
                ended_event(id, name.clone(), PreviousSecretEnd::Replaced).by(actor),
            );
        }
        self.audit(
            now,
            AuditEvent {
                token_id: Some(id.to_string()),
                token_name: name,
                reason: Some(describe(overlap)),
                ..AuditEvent::of(AuditKind::TokenRotated).by(actor)
            },
        );
        Ok(rotated)
    }

    /// Ends token `id`'s previous secret now (`DELETE …/previous-secret`): in a cluster, on
    /// every live node before it returns, like a delete (a 503 when a node has not
    /// confirmed it; a retry waits again). `NotFound` if the token has none (or there is no
    /// such token).
    pub fn end_previous_secret(&self, actor: &Actor, id: TokenId, now: i64) -> Result<()> {
        let ended = {
            let _shared = self.mutation_shared();
            self.store.end_previous_secret(id, None)?
        };
        let behind = self.nodes_behind()?;
        if !behind.is_empty() {
            if ended.is_some() {
                let name = self.store.token_by_id(id)?.map(|r| r.name);
                let mut event = ended_event(id, name, PreviousSecretEnd::Ended).by(actor);
                event.reason = Some(format!(
                    "{}; not yet applied by {}",
                    PreviousSecretEnd::Ended.as_str(),
                    behind.join(", ")
                ));
                self.audit(now, event);
            }
            return Err(super::tokens::not_confirmed(id, &behind));
        }
        if ended.is_none() {
            return Err(Error::NotFound);
        }
        let name = self.store.token_by_id(id)?.map(|r| r.name);
        self.audit(
            now,
            ended_event(id, name, PreviousSecretEnd::Ended).by(actor),
        );
        Ok(())
    }

    /// Token `id`'s previous secret while it works at `now`.
    pub fn previous_secret_of(&self, id: TokenId, now: i64) -> Result<Option<PreviousSecretState>> {
        Ok(self
            .store
            .previous_secret(id)?
            .filter(|p| now < p.ends_at)
            .map(|p| PreviousSecretState {
                ends_at: p.ends_at,
                last_used: self.store.previous_last_used(&p.hash),
            }))
    }
}

/// Ends durably every previous secret that has ended (its time is up at `now`, or its new
/// secret's first use ended it in memory) and audits each with why (`copy` also gets each
/// event appended: the syslog copy). Run by the maintenance thread, so a refusal never
/// waits for it and the hot path never writes; on a shared store each secret is ended by
/// one node only (the store ends it only if it is still the same).
pub fn end_overdue_previous_secrets(
    store: &dyn Store,
    now: i64,
    copy: &dyn Fn(&AuditEvent),
) -> crate::store::Result<usize> {
    let mut ended = 0;
    for (id, p, why) in store.ended_previous_secrets(now)? {
        if store.end_previous_secret(id, Some(&p.hash))?.is_none() {
            continue;
        }
        ended += 1;
        let name = store.token_by_id(id)?.map(|r| r.name);
        match store.append_audit(now, ended_event(id, name, why)) {
            Ok(appended) => copy(&appended),
            Err(e) => log::error!("audit append failed: {e}"),
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{shared_temp_store, TempDir};

    fn service() -> (Service, TempDir) {
        let (store, dir) = shared_temp_store();
        (Service::new(store, 1), dir)
    }

    fn bearer(secret: &crate::domain::token::PlaintextToken) -> String {
        format!("Bearer {}", secret.expose_secret())
    }

    fn events(s: &Service, kind: AuditKind) -> Vec<AuditEvent> {
        let q = crate::store::AuditQuery {
            limit: 100,
            event: Some(kind.name().to_owned()),
            ..Default::default()
        };
        s.store().audit_events(&q).unwrap().0
    }

    #[test]
    fn both_secrets_work_until_the_overlap_ends_by_time() {
        let (s, _dir) = service();
        let actor = Actor::local_cli(0);
        let peer = &crate::service::auth::RequestFacts {
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            client_known: true,
            method: Some("GET"),
        };
        let new = crate::service::tokens::NewToken {
            name: "ci".into(),
            ..Default::default()
        };
        let (old, rec) = s.create_token(&actor, &new, 100).unwrap();
        let rotated = s
            .rotate_token(&actor, rec.id, Overlap::For(10), 100)
            .unwrap();
        let old_h = bearer(&old);
        let new_h = bearer(&rotated.secret);
        let v = s.authenticate(&[old_h.as_bytes()], peer, 105).unwrap();
        assert!(v.is_previous_secret());
        assert_eq!(v.token.id, rec.id);
        assert!(!s
            .authenticate(&[new_h.as_bytes()], peer, 105)
            .unwrap()
            .is_previous_secret());
        let state = s.previous_secret_of(rec.id, 105).unwrap().unwrap();
        assert_eq!((state.ends_at, state.last_used), (110, Some(105)));
        assert!(s.authenticate(&[old_h.as_bytes()], peer, 110).is_err());
        assert_eq!(s.previous_secret_of(rec.id, 110).unwrap(), None);
        assert_eq!(
            end_overdue_previous_secrets(s.store(), 109, &|_| {}).unwrap(),
            0
        );
        assert_eq!(
            end_overdue_previous_secrets(s.store(), 110, &|_| {}).unwrap(),
            1
        );
        let ended = events(&s, AuditKind::TokenPreviousSecretExpired);
        assert_eq!(ended[0].reason.as_deref(), Some("overlap ended"));
        assert_eq!(events(&s, AuditKind::TokenRotated).len(), 1);
        assert!(s.end_previous_secret(&actor, rec.id, 111).is_err());
    }

    #[test]
    fn until_new_secret_used_ends_at_its_first_use() {
        let (s, _dir) = service();
        let actor = Actor::local_cli(0);
        let peer = &crate::service::auth::RequestFacts {
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            client_known: true,
            method: Some("GET"),
        };
        let new = crate::service::tokens::NewToken {
            name: "ci".into(),
            ..Default::default()
        };
        let (old, rec) = s.create_token(&actor, &new, 100).unwrap();
        let overlap = Overlap::UntilNewSecretUsed { max_secs: 60 };
        let rotated = s.rotate_token(&actor, rec.id, overlap, 100).unwrap();
        let (old_h, new_h) = (bearer(&old), bearer(&rotated.secret));
        assert!(s.authenticate(&[old_h.as_bytes()], peer, 101).is_ok());
        assert!(s.authenticate(&[new_h.as_bytes()], peer, 102).is_ok());
        assert!(s.authenticate(&[old_h.as_bytes()], peer, 103).is_err());
        assert!(s.authenticate(&[new_h.as_bytes()], peer, 103).is_ok());
        assert_eq!(s.previous_secret_of(rec.id, 103).unwrap(), None);
        assert_eq!(
            end_overdue_previous_secrets(s.store(), 103, &|_| {}).unwrap(),
            1
        );
        let ended = events(&s, AuditKind::TokenPreviousSecretExpired);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].reason.as_deref(), Some("new secret used"));
        // An admin's end, and a replacement, say so.
        let again = s
            .rotate_token(&actor, rec.id, Overlap::For(60), 104)
            .unwrap();
        s.rotate_token(&actor, rec.id, Overlap::For(60), 105)
            .unwrap();
        s.end_previous_secret(&actor, rec.id, 106).unwrap();
        assert!(s
            .authenticate(&[bearer(&again.secret).as_bytes()], peer, 106)
            .is_err());
        let reasons: Vec<_> = events(&s, AuditKind::TokenPreviousSecretExpired)
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "ended by an admin",
                "replaced by another rotation",
                "new secret used"
            ]
        );
    }
}
