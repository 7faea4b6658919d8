//! API-token authentication, the hot path: parse the Authorization header → check the token
//! format → blake3 → the store's in-memory index (one shard's read lock) → expiry against
//! `now` → record last-used in memory. No disk write, no allocation, no global lock. Also the
//! counters of outcomes for metrics, and the aggregation of failures for the audit log.

pub mod bearer_header;
pub mod failure_log;
pub mod last_used;
pub mod usage;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::token::{is_well_formed, TokenHash};
use crate::domain::token_fields::is_expired;
use crate::service::auth::last_used::LastUsedTracker;
use crate::service::error::{AuthFailure, Error};
use crate::store::{IndexedToken, SecretUsed, Store};

/// A token that authenticated (a clone of its index entry; the name is shared, not copied).
#[derive(Debug)]
pub struct VerifiedToken {
    pub token: IndexedToken,
    /// blake3 of the token's current secret: the key of its entry in the authentication
    /// index (also when its previous secret was presented).
    pub hash: TokenHash,
    /// Which of the token's secrets was presented.
    pub secret: SecretUsed,
    /// blake3 of the secret presented.
    pub presented: TokenHash,
}

impl VerifiedToken {
    /// Whether the token's previous secret (a rotation's overlap) was presented.
    pub fn is_previous_secret(&self) -> bool {
        matches!(self.secret, SecretUsed::Previous { .. })
    }
}

/// Counts of authentication outcomes since start (metrics; never per token).
#[derive(Debug, Default)]
pub struct AuthCounters {
    pub success: AtomicU64,
    pub missing: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown: AtomicU64,
    pub expired: AtomicU64,
    /// Valid API tokens sent to admin routes (answered 403; not counted as a success).
    pub token_on_admin_route: AtomicU64,
}

impl AuthCounters {
    fn count(&self, outcome: Result<(), AuthFailure>) {
        let counter = match outcome {
            Ok(()) => &self.success,
            Err(AuthFailure::Missing) => &self.missing,
            Err(AuthFailure::Malformed) => &self.malformed,
            Err(AuthFailure::Unknown) => &self.unknown,
            Err(AuthFailure::Expired) => &self.expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a failed attempt is recorded, and from whom it came.
pub struct FailureSink<'a> {
    pub log: &'a failure_log::AuthFailureLog,
    pub peer: std::net::IpAddr,
}

/// Authenticates an API token from the request's Authorization values at `now`.
pub fn verify_bearer(
    store: &dyn Store,
    tracker: &LastUsedTracker,
    counters: &AuthCounters,
    failures: Option<FailureSink<'_>>,
    authorization: &[&[u8]],
    now: i64,
) -> Result<VerifiedToken, Error> {
    match check(store, authorization, now) {
        Ok(verified) => {
            counters.count(Ok(()));
            tracker.record(verified.token.id, &verified.hash, now);
            match verified.secret {
                SecretUsed::Previous { .. } => store.note_previous_use(&verified.presented, now),
                // The new secret's first use ends the previous secret (`untilNewSecretUsed`),
                // in memory now; the maintenance thread makes it durable and audits it.
                SecretUsed::Current {
                    ends_previous_on_use: true,
                } => {
                    store.take_first_use(&verified.hash);
                }
                SecretUsed::Current { .. } => {}
            }
            Ok(verified)
        }
        Err((error, token)) => Err(record_failure(counters, failures, error, token)),
    }
}

/// Counts a refused credential and records it for the audit's `auth.failed` aggregation;
/// returns the error to answer with.
fn record_failure(
    counters: &AuthCounters,
    failures: Option<FailureSink<'_>>,
    error: Error,
    token: Option<crate::domain::token::TokenId>,
) -> Error {
    if let Error::Unauthorized(reason) = error {
        counters.count(Err(reason));
        if let Some(sink) = failures {
            sink.log.record(reason, sink.peer, token);
        }
    }
    error
}

/// An API token sent to an admin route, where it is never a credential. `Ok(id)` when it is
/// a valid token: counted in `token_on_admin_route`, but not a use (no last-used update, no
/// success count). Otherwise the 401's error, counted and recorded like any failed check, so
/// probing admin routes with tokens leaves the same trail as probing `/auth/verify`.
pub fn check_token_on_admin_route(
    store: &dyn Store,
    counters: &AuthCounters,
    failures: Option<FailureSink<'_>>,
    authorization: &[&[u8]],
    now: i64,
) -> Result<crate::domain::token::TokenId, Error> {
    match check(store, authorization, now) {
        Ok(verified) => {
            counters
                .token_on_admin_route
                .fetch_add(1, Ordering::Relaxed);
            Ok(verified.token.id)
        }
        Err((error, token)) => Err(record_failure(counters, failures, error, token)),
    }
}

/// The checks in order; a failure carries the token id when it is known (expired).
fn check(
    store: &dyn Store,
    authorization: &[&[u8]],
    now: i64,
) -> Result<VerifiedToken, (Error, Option<crate::domain::token::TokenId>)> {
    let refuse = |r| (Error::Unauthorized(r), None);
    let token = bearer_header::parse_bearer(authorization).map_err(refuse)?;
    if !is_well_formed(token) {
        return Err(refuse(AuthFailure::Malformed));
    }
    let presented = TokenHash::of(token);
    let (token, secret) = store
        .lookup_secret(&presented)
        .map_err(|e| (e.into(), None))?
        .ok_or_else(|| refuse(AuthFailure::Unknown))?;
    let hash = match secret {
        // An ended previous secret is no secret of the token any more: unknown, like any
        // secret that was never issued (its end is audited when it is removed).
        SecretUsed::Previous { ends_at, .. } if now >= ends_at => {
            return Err(refuse(AuthFailure::Unknown));
        }
        SecretUsed::Previous { current, .. } => current,
        SecretUsed::Current { .. } => presented,
    };
    if is_expired(token.expires_at, now) {
        return Err((Error::Unauthorized(AuthFailure::Expired), Some(token.id)));
    }
    Ok(VerifiedToken {
        token,
        hash,
        secret,
        presented,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    fn verify(
        s: &dyn Store,
        t: &LastUsedTracker,
        header: &str,
        now: i64,
    ) -> Result<VerifiedToken, Error> {
        verify_bearer(
            s,
            t,
            &AuthCounters::default(),
            None,
            &[header.as_bytes()],
            now,
        )
    }

    fn reason(r: Result<VerifiedToken, Error>) -> AuthFailure {
        match r {
            Err(Error::Unauthorized(f)) => f,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn full_path_with_expiry_boundary_and_last_used() {
        let s = TempStore::new();
        let t = LastUsedTracker::default();
        let (secret, rec) = s.create_token("ci", Some(1000), 1).unwrap();
        let header = format!("Bearer {}", secret.expose_secret());
        let ok = verify(&*s, &t, &header, 999).unwrap();
        assert_eq!(ok.token.id, rec.id);
        assert_eq!(t.get(&rec.id), Some(999));
        assert_eq!(reason(verify(&*s, &t, &header, 1000)), AuthFailure::Expired);
        assert_eq!(reason(verify(&*s, &t, &header, 1001)), AuthFailure::Expired);
        assert_eq!(t.get(&rec.id), Some(999), "failed attempts are not uses");
    }

    #[test]
    fn regression_issue_14_token_on_admin_route_is_counted_not_used() {
        let s = TempStore::new();
        let t = LastUsedTracker::default();
        let counters = AuthCounters::default();
        let (secret, rec) = s.create_token("ci", None, 1).unwrap();
        let header = format!("Bearer {}", secret.expose_secret());
        let id = check_token_on_admin_route(&*s, &counters, None, &[header.as_bytes()], 5);
        assert_eq!(id.unwrap(), rec.id);
        assert_eq!(counters.token_on_admin_route.load(Ordering::Relaxed), 1);
        assert_eq!(counters.success.load(Ordering::Relaxed), 0, "not a success");
        assert_eq!(t.get(&rec.id), None, "not a use");
        let bad = check_token_on_admin_route(&*s, &counters, None, &[b"Bearer pa_x"], 5);
        assert!(matches!(
            bad,
            Err(Error::Unauthorized(AuthFailure::Malformed))
        ));
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn failure_reasons() {
        let s = TempStore::new();
        let t = LastUsedTracker::default();
        let (secret, rec) = s.create_token("ci", None, 1).unwrap();
        let header = format!("Bearer {}", secret.expose_secret());
        assert_eq!(
            reason(verify_bearer(
                &*s,
                &t,
                &AuthCounters::default(),
                None,
                &[],
                5
            )),
            AuthFailure::Missing
        );
        assert_eq!(
            reason(verify(&*s, &t, "Bearer pa_short", 5)),
            AuthFailure::Malformed
        );
        let other = crate::domain::token::PlaintextToken::generate();
        assert_eq!(
            reason(verify(
                &*s,
                &t,
                &format!("Bearer {}", other.expose_secret()),
                5
            )),
            AuthFailure::Unknown
        );
        s.delete_token(rec.id).unwrap();
        assert_eq!(reason(verify(&*s, &t, &header, 5)), AuthFailure::Unknown);
    }
}
