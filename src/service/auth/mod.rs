//! API-token authentication, the hot path: parse the Authorization header → check the token
//! format → blake3 → the store's in-memory index (one shard's read lock) → expiry against
//! `now` → the token's restrictions (allowed networks against the client address, read-only
//! against the original method) → record last-used in memory. No disk write, no allocation,
//! no global lock. Also the counters of outcomes for metrics, and the aggregation of failures
//! and denials for the audit log.

pub mod bearer_header;
mod by_token;
pub mod failure_log;
pub mod last_used;
pub mod usage;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::token::{is_well_formed, TokenHash};
use crate::domain::token_fields::is_expired;
use crate::service::auth::last_used::LastUsedTracker;
use crate::service::error::{AuthFailure, Error};
use crate::store::{IndexedToken, SecretUsed, Store};

/// A token that authenticated (a clone of its index entry; the name is shared, not copied).
#[derive(Debug)]
pub struct VerifiedToken {
    /// Its `restrictions.networks` is not filled in (anywhere): the list is checked where
    /// it is kept, and the verdict is [`Self::network_allowed`].
    pub token: IndexedToken,
    /// Whether the token's allowed networks admit the request's client.
    pub network_allowed: bool,
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

/// What is known of the request a token is presented for: the client's address (the peer,
/// or what a trusted proxy said) and the original request's method (`None`: unknown, which
/// a read-only token is refused with).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The client's address as recorded (usage, audit): the peer when a trusted proxy's
    /// header could not be read.
    pub client: IpAddr,
    /// False in that case: no allowed-networks list admits the request.
    pub client_known: bool,
    pub method: Option<&'a str>,
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
    /// Valid tokens refused by their restrictions (403; not a success, not a use).
    pub denied_network: AtomicU64,
    pub denied_read_only: AtomicU64,
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

/// Authenticates an API token from the request's Authorization values at `now`, for a
/// request from `request.client` with `request.method`: a valid token outside its
/// restrictions is `Forbidden` (403), counted and recorded for the audit log, and not a use.
pub fn verify_bearer(
    store: &dyn Store,
    tracker: &LastUsedTracker,
    counters: &AuthCounters,
    failures: Option<FailureSink<'_>>,
    authorization: &[&[u8]],
    request: &RequestFacts<'_>,
    now: i64,
) -> Result<VerifiedToken, Error> {
    let client = request.client_known.then_some(request.client);
    match check(store, authorization, client, now) {
        Ok(verified) => {
            if let Some(refusal) = refusal_of(&verified, request) {
                return Err(record_denial(
                    counters,
                    failures,
                    refusal,
                    verified.token.id,
                ));
            }
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

/// Why a valid token may not be used for this request, if it may not. Allocation-free: the
/// network verdict came with the lookup (a scan of at most 100 prefixes under the index
/// shard's lock), then a method compare.
fn refusal_of(
    verified: &VerifiedToken,
    request: &RequestFacts<'_>,
) -> Option<failure_log::Refusal> {
    if !verified.network_allowed {
        return Some(failure_log::Refusal::Network);
    }
    if !verified.token.restrictions.access.allows(request.method) {
        return Some(failure_log::Refusal::ReadOnly);
    }
    None
}

/// Counts a valid token refused by its restrictions and records it for the audit's
/// aggregated `auth.denied_*` events; the 403 to answer with.
fn record_denial(
    counters: &AuthCounters,
    failures: Option<FailureSink<'_>>,
    refusal: failure_log::Refusal,
    token: crate::domain::token::TokenId,
) -> Error {
    let (counter, message) = match refusal {
        failure_log::Refusal::ReadOnly => (
            &counters.denied_read_only,
            "This token is read-only: only GET, HEAD and OPTIONS requests are allowed",
        ),
        _ => (
            &counters.denied_network,
            "This token may not be used from this network",
        ),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(sink) = failures {
        sink.log.record(refusal, sink.peer, Some(token));
    }
    Error::Forbidden(message)
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
    // Never a credential here, so no client to judge.
    match check(store, authorization, None, now) {
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
    client: Option<IpAddr>,
    now: i64,
) -> Result<VerifiedToken, (Error, Option<crate::domain::token::TokenId>)> {
    let refuse = |r| (Error::Unauthorized(r), None);
    let token = bearer_header::parse_bearer(authorization).map_err(refuse)?;
    if !is_well_formed(token) {
        return Err(refuse(AuthFailure::Malformed));
    }
    let presented = TokenHash::of(token);
    let (token, secret, network_allowed) = store
        .lookup_secret(&presented, client)
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
        network_allowed,
        hash,
        secret,
        presented,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    const ANYWHERE_GET: RequestFacts<'static> = RequestFacts {
        client: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        client_known: true,
        method: Some("GET"),
    };

    #[test]
    fn restrictions_refuse_a_valid_token_with_403_and_no_use() {
        use crate::domain::restrictions::{validate_allowed_cidrs, Access, Restrictions};
        let s = TempStore::new();
        let t = LastUsedTracker::default();
        let counters = AuthCounters::default();
        let log = failure_log::AuthFailureLog::default();
        let restrictions = Restrictions {
            access: Access::Read,
            networks: validate_allowed_cidrs(&["10.0.0.0/8", "2001:db8::/32"]).unwrap(),
        };
        let (secret, rec) = s
            .create_token_with("ro", None, None, None, &restrictions, 1)
            .unwrap();
        let header = format!("Bearer {}", secret.expose_secret());
        let go = |client: &str, method: Option<&str>| {
            verify_bearer(
                &*s,
                &t,
                &counters,
                Some(FailureSink {
                    log: &log,
                    peer: client.parse().unwrap(),
                }),
                &[header.as_bytes()],
                &RequestFacts {
                    client: client.parse().unwrap(),
                    client_known: true,
                    method,
                },
                5,
            )
        };
        assert_eq!(go("10.1.2.3", Some("GET")).unwrap().token.id, rec.id);
        assert!(go("::ffff:10.1.2.3", Some("HEAD")).is_ok(), "mapped IPv4");
        assert!(go("2001:db8::7", Some("OPTIONS")).is_ok());
        assert_eq!(t.get(&rec.id), Some(5));
        for (client, method) in [
            ("192.0.2.1", Some("GET")),
            ("10.1.2.3", Some("POST")),
            ("10.1.2.3", None),
            ("10.1.2.3", Some("get")),
        ] {
            assert!(
                matches!(go(client, method), Err(Error::Forbidden(_))),
                "{client} {method:?}"
            );
        }
        assert_eq!(counters.denied_network.load(Ordering::Relaxed), 1);
        assert_eq!(counters.denied_read_only.load(Ordering::Relaxed), 3);
        assert_eq!(counters.success.load(Ordering::Relaxed), 3);
        // An unknown token from outside is still a 401, never a 403: the restriction is
        // only told to a holder of the token.
        let other = crate::domain::token::PlaintextToken::generate();
        let h = format!("Bearer {}", other.expose_secret());
        let refused = verify_bearer(
            &*s,
            &t,
            &counters,
            None,
            &[h.as_bytes()],
            &RequestFacts {
                client: "192.0.2.1".parse().unwrap(),
                client_known: true,
                method: None,
            },
            5,
        );
        assert!(matches!(refused, Err(Error::Unauthorized(_))));
    }

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
            &ANYWHERE_GET,
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
                &ANYWHERE_GET,
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
