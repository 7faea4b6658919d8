//! The use-cases shared by the web layer and the CLI, owning the invariants: tokens (create,
//! delete, list, lookup, each with its audit event and last-used bookkeeping), API-token
//! authentication, admins (passwords, sessions, login throttle), backup, and the periodic
//! maintenance thread. It reaches storage only through [`crate::store`] and knows nothing of
//! HTTP: callers pass what they know of the client (an [`Actor`], a peer address) as values.

pub mod admins;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod error;
pub mod leak_response;
pub mod maintenance;
pub mod rotation;
pub mod syslog;
pub mod tokens;
pub mod usage;
pub mod view;
pub mod webhooks;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use crate::domain::audit::Actor;
use crate::domain::audit::AuditEvent;
use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::token::TokenId;
use crate::store::{Store, TokenStats};
use admins::Admins;
use auth::failure_log::AuthFailureLog;
use auth::last_used::LastUsedTracker;
use auth::{AuthCounters, FailureSink, VerifiedToken};
pub use error::{Error, Result};
use maintenance::FlushStatus;

/// The service: the store and everything kept in memory beside it. Shared by every request
/// (and by the maintenance thread); all methods take `&self`.
pub struct Service {
    store: Arc<dyn Store>,
    tracker: Arc<LastUsedTracker>,
    /// Usage (day counts, client addresses) since the last flush.
    usage: Arc<auth::usage::UsageTracker>,
    auth_counters: AuthCounters,
    /// Failed authentications, aggregated until the next flush writes them to the audit log.
    auth_failures: Arc<AuthFailureLog>,
    flush_status: Arc<Mutex<FlushStatus>>,
    admins: Admins,
    /// Held shared by every change to tokens or admins, exclusively by an online backup, so
    /// a backup is one consistent snapshot.
    mutation_gate: RwLock<()>,
    /// Token counts for /metrics, recomputed at most every 30 s (a full scan).
    token_stats: Mutex<Option<(Instant, TokenStats)>>,
    /// Whether other nodes share the store (cluster mode), and how fresh this node is.
    shared: bool,
    freshness: Arc<cluster::Freshness>,
    /// `--max-token-lifetime` and `--require-expiry`: what a new token must satisfy, and
    /// which existing ones are flagged (never revoked).
    lifetime_policy: LifetimePolicy,
    /// Where a copy of each audit event goes (`--audit-syslog`), if anywhere.
    audit_copy: syslog::AuditCopy,
    /// The audit export serves events once they are this old.
    export_settle: Duration,
    /// `--webhook-url`: where token lifecycle events are sent, if anywhere.
    webhooks: Option<Arc<webhooks::Webhooks>>,
}

impl Service {
    /// `argon2_slots`: how many Argon2 computations (19 MiB each) may run at once.
    pub fn new(store: Arc<dyn Store>, argon2_slots: usize) -> Service {
        Service::with_max_staleness(store, argon2_slots, Duration::from_secs(2))
    }

    /// With a shared store: how long this node may go without confirming the store's latest
    /// change before it refuses to verify.
    pub fn with_max_staleness(
        store: Arc<dyn Store>,
        argon2_slots: usize,
        max_staleness: Duration,
    ) -> Service {
        let freshness = Arc::new(cluster::Freshness::new(max_staleness));
        let shared_sessions = store.is_shared().then(|| Arc::clone(&store));
        // A shared store is as fresh as its open made it (a store of one node's own is
        // always fresh: nothing to read).
        if let Some(revision) = store
            .is_shared()
            .then(|| store.change_counter().ok())
            .flatten()
        {
            freshness.synced(crate::store::Synced {
                revision,
                confirmed_at: Instant::now(),
                propagation_ms: Vec::new(),
            });
        }
        Service {
            shared: store.is_shared(),
            freshness,
            store,
            tracker: Arc::default(),
            usage: Arc::default(),
            auth_counters: AuthCounters::default(),
            auth_failures: Arc::default(),
            flush_status: Arc::default(),
            admins: Admins::new(argon2_slots, shared_sessions),
            mutation_gate: RwLock::new(()),
            token_stats: Mutex::new(None),
            lifetime_policy: LifetimePolicy::default(),
            audit_copy: syslog::AuditCopy::default(),
            export_settle: Duration::from_secs(120),
            webhooks: None,
        }
    }

    /// This service with a token lifetime policy (the default is none).
    /// The audit export serves events once they are `settle` old.
    pub fn with_audit_export_settle(mut self, settle: Duration) -> Service {
        self.export_settle = settle;
        self
    }

    /// This service sending webhooks (`--webhook-url`).
    pub fn with_webhooks(mut self, webhooks: webhooks::Webhooks) -> Service {
        self.webhooks = Some(Arc::new(webhooks));
        self
    }

    /// Starts the thread that delivers webhooks (`None` without `--webhook-url`).
    pub fn start_webhook_sender(&self) -> std::io::Result<Option<webhooks::WebhookSender>> {
        let Some(w) = &self.webhooks else {
            return Ok(None);
        };
        webhooks::WebhookSender::start(
            Arc::clone(w),
            Arc::clone(&self.store),
            Arc::clone(&self.tracker),
        )
        .map(Some)
    }

    /// Webhook delivery figures, for /metrics (`None` without `--webhook-url`).
    pub fn webhook_figures(&self) -> Option<&webhooks::WebhookFigures> {
        self.webhooks.as_deref().map(webhooks::Webhooks::figures)
    }

    pub fn with_lifetime_policy(mut self, policy: LifetimePolicy) -> Service {
        self.lifetime_policy = policy;
        self
    }

    /// The token lifetime policy in force.
    pub fn lifetime_policy(&self) -> &LifetimePolicy {
        &self.lifetime_policy
    }

    /// The store, for what is not a use-case of its own (start-up, shutdown, messages).
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn admins(&self) -> &Admins {
        &self.admins
    }

    pub fn auth_counters(&self) -> &AuthCounters {
        &self.auth_counters
    }

    /// Figures of the last flush round, for metrics.
    pub fn flush_status(&self) -> FlushStatus {
        *crate::sync::lock(&self.flush_status)
    }

    /// Starts the thread that follows the other nodes' changes (cluster mode; `None` for a
    /// store of this node's own).
    pub fn start_follower(&self) -> std::io::Result<Option<cluster::Follower>> {
        if !self.shared {
            return Ok(None);
        }
        cluster::Follower::start(Arc::clone(&self.store), Arc::clone(&self.freshness)).map(Some)
    }

    /// `--serve-stale`: this node keeps verifying from its own copy when it cannot confirm
    /// the latest changes (a token deleted meanwhile may then still be accepted).
    pub fn serve_stale(&self) {
        if self.shared {
            log::warn!(
                "--serve-stale: this node keeps verifying when it cannot confirm the latest \
                 token changes; a token deleted meanwhile may still be accepted here"
            );
            self.freshness.serve_stale();
        }
    }

    /// Whether other nodes share the store (cluster mode).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Whether this node may verify tokens: always with a store of its own; with a shared
    /// one, only while it has confirmed the latest change within `--max-staleness`.
    pub fn is_fresh(&self) -> bool {
        !self.shared || self.freshness.is_fresh()
    }

    /// Cluster figures for /metrics (`None` with a store of this node's own).
    pub fn cluster_status(&self) -> Option<cluster::ClusterStatus> {
        self.shared.then(|| self.freshness.status())
    }

    /// Starts the maintenance thread (last-used and usage flush, failure aggregation, file
    /// modes).
    /// `resolution`: a periodic flush skips a time that moved less than this.
    pub fn start_maintenance(
        &self,
        interval: Duration,
        resolution: Duration,
    ) -> std::io::Result<maintenance::LastUsedFlusher> {
        maintenance::LastUsedFlusher::start(
            maintenance::Housekeeping {
                store: Arc::clone(&self.store),
                tracker: Arc::clone(&self.tracker),
                usage: Arc::clone(&self.usage),
                failures: Arc::clone(&self.auth_failures),
                audit_copy: self.audit_copy.clone(),
                webhooks: self.webhooks.clone(),
            },
            maintenance::Pacing {
                interval,
                resolution,
            },
            Arc::clone(&self.flush_status),
        )
    }

    /// Checks an API token presented in `authorization` (the request's Authorization values)
    /// at `now`: the hot path. A success is recorded as a use (last-used, and usage from
    /// `peer`); a failure is counted and kept
    /// for the audit log's aggregated `auth.failed` events.
    /// A valid token outside its restrictions (allowed networks, read-only) is `Forbidden`
    /// and kept for the aggregated `auth.denied_*` events.
    pub fn authenticate(
        &self,
        authorization: &[&[u8]],
        request: &auth::RequestFacts<'_>,
        now: i64,
    ) -> Result<VerifiedToken> {
        let verified = auth::verify_bearer(
            &*self.store,
            &self.tracker,
            &self.auth_counters,
            Some(self.failure_sink(request.client)),
            authorization,
            request,
            now,
        )?;
        self.usage.record(verified.token.id, request.client, now);
        Ok(verified)
    }

    /// An API token presented on an admin route: `Ok(id)` when it is a valid token (never a
    /// credential there; audited), else the credential refusal, counted like any failure.
    pub fn token_on_admin_route(
        &self,
        authorization: &[&[u8]],
        peer: IpAddr,
        now: i64,
    ) -> Result<TokenId> {
        let id = auth::check_token_on_admin_route(
            &*self.store,
            &self.auth_counters,
            Some(self.failure_sink(peer)),
            authorization,
            now,
        )?;
        self.audit(
            now,
            AuditEvent {
                token_id: Some(id.to_string()),
                remote_addr: Some(peer.to_string()),
                ..AuditEvent::of(crate::domain::audit::AuditKind::AuthTokenOnAdminRoute)
            },
        );
        Ok(id)
    }

    /// Where a refused credential from `peer` is recorded for the audit log.
    fn failure_sink(&self, peer: IpAddr) -> FailureSink<'_> {
        FailureSink {
            log: &self.auth_failures,
            peer,
        }
    }

    /// Latest last-used time: in memory if used since start, else as persisted.
    pub fn last_used_of(&self, id: TokenId) -> Result<Option<i64>> {
        let stored = self.store.stored_last_used(id)?;
        Ok(match (self.tracker.get(&id), stored) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        })
    }

    /// Appends an audit event. A failure is logged, never fails the caller: the change it
    /// records is already durable, and refusing to report it would mislead.
    pub fn audit(&self, now: i64, event: AuditEvent) {
        match self.store.append_audit(now, event) {
            Ok(appended) => {
                self.audit_copy.send(&appended);
                if let Some(w) = &self.webhooks {
                    w.on_audit(&*self.store, &appended, now);
                }
            }
            Err(e) => log::error!("audit append failed: {e}"),
        }
    }

    /// From now on, every audit event appended is also sent to `sink` (`--audit-syslog`).
    pub fn copy_audit_to(&self, sink: syslog::SyslogSink) {
        self.audit_copy.open(sink);
    }

    /// Sends the audit copies still queued, then stops sending (at shutdown, last).
    pub fn close_audit_copy(&self) {
        self.audit_copy.close();
    }

    /// (sent, dropped, failed) audit copies, with `--audit-syslog`.
    pub fn audit_copy_figures(&self) -> Option<(u64, u64, u64)> {
        self.audit_copy.figures()
    }

    /// A page of the audit log, newest first, and the cursor of the next.
    pub fn audit_events(
        &self,
        query: &crate::store::AuditQuery,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        Ok(self.store.audit_events(query)?)
    }

    /// At most `limit` audit events of both classes, oldest first, from the key `from` on
    /// (inclusive): the export.
    ///
    /// Only events older than the settle time are served: ids are given before an event is
    /// committed (and a request may append its event well after its timestamp; nodes' clocks
    /// differ), so a recent event with a lower id can still appear after one with a higher
    /// id has been read. A puller continuing from the last id it got would skip it for good.
    /// Once events are settled, nothing lands before them any more.
    pub fn audit_export(&self, from: &[u8; 16], limit: usize) -> Result<Vec<AuditEvent>> {
        let now_micros = i128::from(crate::domain::time::now_unix()) * 1_000_000;
        let settle = i128::try_from(self.export_settle.as_micros()).unwrap_or(i128::MAX);
        let cutoff = now_micros.saturating_sub(settle);
        let mut events = self.store.audit_events_from(from, limit)?;
        let settled = events
            .iter()
            .take_while(|e| {
                crate::store::parse_audit_cursor(&e.id).is_some_and(|key| {
                    let mut micros = [0u8; 8];
                    micros.copy_from_slice(&key[..8]);
                    i128::from(u64::from_be_bytes(micros)) <= cutoff
                })
            })
            .count();
        events.truncate(settled);
        Ok(events)
    }

    /// Token counts for metrics, at most 30 s old.
    pub fn token_stats(&self, now: i64) -> TokenStats {
        let mut cached = crate::sync::lock(&self.token_stats);
        match *cached {
            Some((at, stats)) if at.elapsed() < Duration::from_secs(30) => stats,
            _ => {
                let stats = self
                    .store
                    .token_stats(now, &self.lifetime_policy)
                    .unwrap_or_else(|e| {
                        // Zeros on the scrape, and the reason in the log, not nowhere.
                        log::error!("counting tokens for /metrics failed: {e}");
                        TokenStats::default()
                    });
                *cached = Some((Instant::now(), stats));
                stats
            }
        }
    }

    /// Held while changing tokens or admins (many at once).
    fn mutation_shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        crate::sync::read(&self.mutation_gate)
    }

    /// Held while taking a consistent backup (no change meanwhile).
    fn mutation_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        crate::sync::write(&self.mutation_gate)
    }
}
