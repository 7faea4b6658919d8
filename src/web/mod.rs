//! The service as an HTTP handler: the shared state ([`App`]) and the router, one readable
//! first-match over (method, path). Handlers are plain functions of (app, request, now);
//! every error becomes a response in one place ([`crate::Error::to_response`]). Only
//! [`App::handle`] reads the clock.

pub mod admin_api;
pub mod admin_auth;
pub mod console;
pub mod error;
pub mod json_body;
pub mod metrics;
pub mod routes;
pub mod views;

use std::sync::{Arc, Mutex, OnceLock};

use crate::service::admins::basic_cache::BasicAuthCache;
use crate::service::admins::login_throttle::{LoginAttempt, LoginThrottle};
use crate::service::admins::sessions::SessionStore;

use crate::domain::audit::AuditEvent;
use crate::domain::time::{now_unix, rfc3339_text};
use crate::domain::token::TokenId;
use crate::http::{Exchange, Handler, HeaderValue, Request, Response, StatsHandle};
use crate::service::admins::passwords;
use crate::service::auth::failure_log::AuthFailureLog;
use crate::service::auth::last_used::LastUsedTracker;
use crate::service::auth::{
    authorization_values, verify_bearer, AuthCounters, FailureSink, VerifiedToken,
};
use crate::service::error::{Error, Result};
use crate::service::maintenance::FlushStatus;
use crate::store::Store;
use crate::web::admin_auth::{authenticate_admin, AdminIdentity};
use crate::web::metrics::RequestCounters;
use crate::web::views::{percent_encode, TokenView};
use routes::{route_of, Body, Guard, Lane, Op, Route};

/// Everything a request handler may touch.
pub struct App {
    pub store: Arc<Store>,
    pub tracker: Arc<LastUsedTracker>,
    pub auth_counters: AuthCounters,
    pub requests: RequestCounters,
    pub sessions: SessionStore,
    pub throttle: LoginThrottle,
    /// The only memory Argon2 may use (a fixed number of 19 MiB slots).
    pub argon2: passwords::Argon2Pool,
    /// Recent successful HTTP Basic checks (cleared on any password change).
    pub basic_cache: BasicAuthCache,
    /// `--public-url`: the origin browsers use when a proxy terminates TLS in front.
    pub public_url: Option<crate::config::PublicUrl>,
    pub flush_status: Arc<Mutex<FlushStatus>>,
    /// Failed authentications, aggregated until the next flush writes them to the audit log.
    pub auth_failures: Arc<AuthFailureLog>,
    /// Held shared by every change to tokens or admins, exclusively by an online backup, so
    /// a backup is one consistent snapshot.
    mutation_gate: std::sync::RwLock<()>,
    pub server_stats: OnceLock<StatsHandle>,
    /// Token counts for /metrics, recomputed at most every 30 s (a full scan).
    token_stats: Mutex<Option<(std::time::Instant, crate::store::TokenStats)>>,
}

impl App {
    pub fn new(
        store: Arc<Store>,
        tracker: Arc<LastUsedTracker>,
        argon2: passwords::Argon2Pool,
    ) -> App {
        App {
            argon2,
            basic_cache: BasicAuthCache::default(),
            public_url: None,
            store,
            tracker,
            auth_counters: AuthCounters::default(),
            requests: RequestCounters::default(),
            sessions: SessionStore::default(),
            throttle: LoginThrottle::default(),
            flush_status: Arc::default(),
            auth_failures: Arc::default(),
            mutation_gate: std::sync::RwLock::new(()),
            server_stats: OnceLock::new(),
            token_stats: Mutex::new(None),
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

    /// Checks an admin password (same cost whether or not the user exists).
    pub fn check_admin_password(&self, username: &str, password: &str) -> Result<bool> {
        if username.len() > 256 || password.len() > passwords::MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let account = self.store.admin(username)?;
        Ok(self
            .argon2
            .verify_password(password, account.as_ref().map(|a| a.password_hash.as_str())))
    }

    /// Every in-process password change goes through here, so remembered Basic checks
    /// never outlive the password they checked.
    pub fn set_admin_password(&self, username: &str, password: &str, now: i64) -> Result<()> {
        self.basic_cache.clear();
        let result =
            admin_api::store_admin_password(&self.store, &self.argon2, username, password, now);
        // Again: a Basic check of the old password may have finished while hashing the new.
        self.basic_cache.clear();
        result
    }

    /// Records a failed admin credential on its reserved attempt (counts against the client's
    /// address) and audits it.
    pub fn record_login_failure(
        &self,
        attempt: LoginAttempt<'_>,
        req: &Request<'_>,
        username: &str,
        now: i64,
    ) {
        let ip = req.peer().ip();
        let lockout = attempt.failure(std::time::Instant::now());
        if let Some(secs) = lockout {
            log::warn!("admin logins from {ip} locked for {secs} s after repeated failures");
        }
        self.audit(
            now,
            AuditEvent {
                event: "admin.login_failed".into(),
                actor: Some(username.chars().take(100).collect()),
                remote_addr: Some(ip.to_string()),
                ..Default::default()
            },
        );
    }

    /// Held while changing tokens or admins (many at once).
    pub fn mutation_shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        crate::sync::read(&self.mutation_gate)
    }

    /// Held while taking a consistent backup (no change meanwhile).
    pub fn mutation_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        crate::sync::write(&self.mutation_gate)
    }

    /// Appends an audit event; a failure is logged, never fails the request.
    pub fn audit(&self, now: i64, event: AuditEvent) {
        if let Err(e) = self.store.append_audit(now, event) {
            log::error!("audit append failed: {e}");
        }
    }

    fn token_stats(&self, now: i64) -> crate::store::TokenStats {
        let mut cached = crate::sync::lock(&self.token_stats);
        match *cached {
            Some((at, stats)) if at.elapsed() < std::time::Duration::from_secs(30) => stats,
            _ => {
                let stats = self.store.token_stats(now).unwrap_or_default();
                *cached = Some((std::time::Instant::now(), stats));
                stats
            }
        }
    }

    fn authenticate(&self, req: &Request<'_>, now: i64) -> Result<VerifiedToken> {
        let (values, n) = authorization_values(req);
        let sink = FailureSink {
            log: &self.auth_failures,
            peer: req.peer().ip(),
        };
        verify_bearer(
            &self.store,
            &self.tracker,
            &self.auth_counters,
            Some(sink),
            &values[..n],
            now,
        )
    }
}

impl Handler for App {
    fn handle(&self, req: &Request<'_>) -> Response {
        let now = now_unix();
        let response = route(self, req, now).unwrap_or_else(|e| {
            let (status, _) = e.status_and_code();
            if status >= 500 {
                log::error!(
                    "{} {} failed (correlation id {}): {e}",
                    req.method(),
                    route_of(req.path()).loggable_path(req.path()),
                    req.correlation_id().as_str()
                );
                if matches!(e, Error::CreationFailed(_) | Error::Store(_) | Error::Io(_)) {
                    log::error!(
                        "the store in {} could not be written: check free disk space and \
                         permissions there. Verification keeps working from memory; if writes \
                         keep failing after space is freed, restart pa-auth (systemd does so on \
                         a non-zero exit)",
                        self.store.data_dir().display()
                    );
                }
            }
            e.to_response(req.correlation_id())
        });
        response
    }

    /// For `Expect: 100-continue`: refuse before the body is sent when the answer cannot
    /// depend on it (no credential at all on an admin route, wrong content type, no such
    /// route).
    fn respond_before_body(&self, req: &Request<'_>) -> Option<Response> {
        let resolved = routes::resolve(req.method(), req.path());
        // Authentication comes first, as when the body has been read.
        let early = if let Some(refusal) = crate::web::admin_auth::refuse_before_body(self, req) {
            Some(refusal)
        } else if resolved.body() == Body::Json
            && !crate::web::json_body::is_json_content_type(req.header("content-type"))
        {
            Some(Error::BadRequest(
                "Content-Type must be application/json".into(),
            ))
        } else if resolved.endpoint.family == Route::NotFound {
            Some(Error::NotFound)
        } else {
            None
        };
        early.map(|e| e.to_response(req.correlation_id()))
    }

    /// Only an admin request with a credential already known good (a live session, a
    /// remembered Basic check) is vouched for: everything else that sends a body shares half
    /// the body places.
    fn vouches_for_body(&self, req: &Request<'_>) -> bool {
        route_of(req.path()) == Route::AdminApi
            && crate::web::admin_auth::vouched_before_body(self, req)
    }

    /// Token checks, health and not-found answers run on the event loops: they read memory
    /// (and, for `/api/token`, one cached store record) and never wait on a disk write, a
    /// lock held by slow work, or Argon2. Admin routes and `/metrics` (a store scan) go to
    /// the worker pool.
    fn serves_inline(&self, req: &Request<'_>) -> bool {
        routes::endpoint_of(req.path()).lane == Lane::Inline
    }

    /// The one place every response is counted and logged, the server's own refusals (400,
    /// 408, 413, 431, 503, 505) included: a line per request with the path only (never the
    /// query, which may carry a pasted secret), and forward-auth and API paths only as their
    /// family.
    fn observe(&self, exchange: &Exchange<'_>) {
        let family = route_of(exchange.path);
        self.requests
            .count(family.label(), exchange.status, exchange.duration);
        if crate::logging::enabled(crate::logging::Level::Info) {
            let path = match exchange.path {
                "" => "-".into(),
                path => family.loggable_path(path),
            };
            let method = match exchange.method {
                "" => "-",
                method => method,
            };
            crate::logging::write_event(
                crate::logging::Level::Info,
                if exchange.refused_by_server {
                    "refused"
                } else {
                    "request"
                },
                &[
                    ("method", &method),
                    ("path", &path),
                    ("status", &exchange.status),
                    ("duration_us", &exchange.duration.as_micros()),
                    ("peer", &exchange.peer),
                    ("correlation_id", &exchange.correlation_id.as_str()),
                ],
            );
        }
    }
    /// Request lines from an event loop are written once per turn of the loop (one `write`
    /// for all the requests it served), like a buffered access log.
    fn loop_started(&self) {
        crate::logging::batch_this_thread();
    }

    fn loop_turn_ended(&self) {
        crate::logging::flush_thread();
    }
}

/// Runs a request as the route table says: the guard's credential check, then the method's
/// operation (or the endpoint's 405/404).
fn route(app: &App, req: &Request<'_>, now: i64) -> Result<Response> {
    let resolved = routes::resolve(req.method(), req.path());
    let caller = match resolved.guard() {
        Guard::None => Caller::Anonymous,
        Guard::ApiToken => Caller::Token(app.authenticate(req, now)?),
        Guard::Admin => Caller::Admin(authenticate_admin(app, req, now)?),
    };
    let Some(method) = resolved.method else {
        return Err(match resolved.endpoint.allow {
            "" => Error::NotFound,
            allow => Error::MethodNotAllowed(allow),
        });
    };
    dispatch(app, req, method.op, &caller, now)
}

/// Who the guard let through.
enum Caller {
    Anonymous,
    Token(VerifiedToken),
    Admin(AdminIdentity),
}

/// The operation -> handler map.
fn dispatch(app: &App, req: &Request<'_>, op: Op, caller: &Caller, now: i64) -> Result<Response> {
    let id = || {
        req.path()
            .strip_prefix("/admin/api/tokens/")
            .unwrap_or_default()
    };
    match (op, caller) {
        (Op::Health, _) => Ok(healthz()),
        (Op::Metrics, _) => Ok(metrics(app, now)),
        (Op::OpenApi, _) => Ok(openapi()),
        (Op::Console, _) => {
            let method = if req.method() == "HEAD" {
                "GET"
            } else {
                req.method()
            };
            crate::web::console::serve_asset(method, req.path())
        }
        (Op::ForwardAuth, Caller::Token(token)) => Ok(forward_auth(token)),
        (Op::OwnToken, Caller::Token(token)) => api_token(app, token, now),
        (Op::Login, _) => admin_api::login(app, req, now),
        (Op::SessionInfo, Caller::Admin(who)) => admin_api::session_info(app, who),
        (Op::Logout, Caller::Admin(who)) => admin_api::logout(app, req, who),
        (Op::ListTokens, Caller::Admin(_)) => admin_api::list_tokens(app, req, now),
        (Op::CreateToken, Caller::Admin(who)) => admin_api::create_token(app, req, who, now),
        (Op::LookupToken, Caller::Admin(who)) => admin_api::lookup_token(app, req, who, now),
        (Op::GetToken, Caller::Admin(_)) => admin_api::get_token(app, id(), now),
        (Op::DeleteToken, Caller::Admin(who)) => admin_api::delete_token(app, req, who, id(), now),
        (Op::Backup, Caller::Admin(who)) => admin_api::backup(app, req, who, now),
        (Op::Audit, Caller::Admin(_)) => admin_api::audit(app, req),
        (Op::ChangePassword, Caller::Admin(who)) => admin_api::change_password(app, req, who, now),
        // A table row whose guard does not give its operation the caller it needs: a bug,
        // refused rather than run.
        _ => Err(Error::Internal(format!(
            "route table: {op:?} without its credential"
        ))),
    }
}

fn healthz() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(&b"{\"status\":\"ok\"}"[..])
}

/// The OpenAPI 3 description of every route, schema and error (`docs/openapi.json`).
fn openapi() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(include_str!("../../docs/openapi.json").as_bytes())
}

fn metrics(app: &App, now: i64) -> Response {
    let snapshot = crate::web::metrics::Snapshot {
        auth: &app.auth_counters,
        requests: &app.requests,
        tokens: app.token_stats(now),
        open_connections: app
            .server_stats
            .get()
            .map_or(0, |s| s.stats().open_connections),
        flush: *crate::sync::lock(&app.flush_status),
    };
    Response::new(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .body(crate::web::metrics::render(&snapshot).into_bytes())
}

/// `/auth/verify[/...]`, any method: 200 with identity headers, or the 401.
fn forward_auth(verified: &VerifiedToken) -> Response {
    let token = &verified.token;
    // All three values are built inline: no allocation on the answer (bench/
    // syscalls_and_allocs.sh counts them).
    let mut id = [0u8; 36];
    token.id.write_to(&mut id);
    let id = std::str::from_utf8(&id).unwrap_or("");
    let mut response = Response::new(200)
        .header("X-PA-Token-Id", HeaderValue::inline(id))
        .header(
            "X-PA-Token-Name",
            HeaderValue::inline(&percent_encode(&token.name)),
        );
    if let Some(expires) = token.expires_at {
        response = response.header(
            "PA-Token-Expiration",
            HeaderValue::inline(&rfc3339_text(expires)),
        );
    }
    response
}

/// `GET /api/token`: the calling token's own view.
fn api_token(app: &App, verified: &VerifiedToken, now: i64) -> Result<Response> {
    let id = verified.token.id;
    // Deleted between verification and here: as good as never authenticated.
    let record = app.store.token_by_id(id)?.ok_or(Error::Unauthorized(
        crate::service::error::AuthFailure::Unknown,
    ))?;
    let view = TokenView::new(&record, app.last_used_of(id)?, now);
    Ok(Response::json(200, &view))
}

/// The [`App`] behind an `Arc`, as the HTTP server's handler.
#[derive(Clone)]
pub struct SharedApp(pub Arc<App>);

impl Handler for SharedApp {
    fn handle(&self, req: &Request<'_>) -> Response {
        self.0.handle(req)
    }
    fn respond_before_body(&self, req: &Request<'_>) -> Option<Response> {
        self.0.respond_before_body(req)
    }
    fn serves_inline(&self, req: &Request<'_>) -> bool {
        self.0.serves_inline(req)
    }
    fn vouches_for_body(&self, req: &Request<'_>) -> bool {
        self.0.vouches_for_body(req)
    }
    fn observe(&self, exchange: &Exchange<'_>) {
        self.0.observe(exchange)
    }
    fn loop_started(&self) {
        self.0.loop_started()
    }
    fn loop_turn_ended(&self) {
        self.0.loop_turn_ended()
    }
}
