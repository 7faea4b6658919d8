//! The service as an [`http::Handler`](crate::http::Handler): [`App`] (the service plus what
//! only the web needs) runs each request as the route table ([`routes::ROUTES`]) says — the
//! guard's credential check, then the operation's handler — and every error becomes a
//! response in one place ([`error`]). Handlers are plain functions of (app, request, now);
//! only [`App::handle`] reads the clock. Also the request log and counters
//! ([`Handler::observe`]), forward-auth, the admin API, the console and `/metrics`.

pub mod admin_api;
pub mod admin_auth;
pub mod console;
pub mod control;
pub mod error;
pub mod forward_auth;
pub mod json_body;
pub mod leak_response;
pub mod metrics;
pub mod public_url;
pub mod routes;

use std::sync::{Arc, OnceLock};

use crate::domain::time::now_unix;
use crate::http::{Exchange, Handler, Request, Response, StatsHandle};
use crate::service::auth::VerifiedToken;
use crate::service::error::{Error, Result};
use crate::service::view::TokenView;
use crate::service::Service;
use crate::web::admin_auth::{authenticate_admin, AdminIdentity};
use crate::web::metrics::RequestCounters;
use routes::{route_of, Body, Guard, Lane, Op, Route};

/// The service as the HTTP server's handler, with what only the web needs beside it.
pub struct App {
    pub service: Arc<Service>,
    pub requests: RequestCounters,
    /// `--public-url`: the origin browsers use when a proxy terminates TLS in front.
    pub public_url: Option<crate::web::public_url::PublicUrl>,
    pub server_stats: OnceLock<StatsHandle>,
    /// `--revocation-api-token-file`: the revocation API's credential and rate limit.
    pub revocation_api: Option<leak_response::RevocationApi>,
    /// Who may use the control socket.
    pub control: control::ControlAccess,
}

impl App {
    pub fn new(
        service: Arc<Service>,
        public_url: Option<crate::web::public_url::PublicUrl>,
    ) -> App {
        App {
            service,
            requests: RequestCounters::default(),
            public_url,
            server_stats: OnceLock::new(),
            revocation_api: None,
            control: control::ControlAccess::for_this_process(),
        }
    }

    /// This app answering the GitLab-compatible revocation API (its routes also need
    /// [`routes::set_revocation_api_prefix`]).
    pub fn with_revocation_api(mut self, api: leak_response::RevocationApi) -> App {
        self.revocation_api = Some(api);
        self
    }

    /// The token's restrictions are checked against the client's address (what a trusted
    /// proxy said, else the peer) and, on forward-auth, the original request's method as a
    /// trusted proxy gave it (unknown otherwise); on pa-auth's own `/api/...` routes the
    /// request's own method is the one that counts.
    fn authenticate(&self, req: &Request<'_>, now: i64) -> Result<VerifiedToken> {
        let (values, n) = authorization_values(req);
        let forwarded = req.forwarded();
        let method = match route_of(req.path()) {
            Route::Verify => forwarded.method,
            _ => Some(req.method()),
        };
        let facts = crate::service::auth::RequestFacts {
            client: forwarded.client,
            client_known: forwarded.client_known,
            method,
        };
        self.service.authenticate(&values[..n], &facts, now)
    }
}

impl Handler for App {
    fn handle(&self, req: &Request<'_>) -> Response {
        let now = now_unix();
        let response = route(self, req, now).unwrap_or_else(|e| {
            let (status, _) = e.status_and_code();
            // A node that cannot answer now (503) says so once, in its own log lines (the
            // follower's); a line per refused request would flood the log in an outage.
            if status >= 500 && !matches!(e, Error::Unavailable(_)) {
                log::error!(
                    "{} {} failed (correlation id {}): {e}",
                    req.method(),
                    route_of(req.path()).loggable_path(req.path()),
                    req.correlation_id().as_str()
                );
                if self.service.is_shared() {
                    if matches!(e, Error::CreationFailed(_) | Error::Store(_)) {
                        log::error!(
                            "the database could not be written: check that it is up, reachable \
                             and writable. Token checks go on from this node's copy until it \
                             cannot confirm the latest changes for --max-staleness, then answer 503"
                        );
                    }
                } else if matches!(
                    e,
                    Error::CreationFailed(_)
                        | Error::Io(_)
                        | Error::Store(crate::store::Error::Sled(_) | crate::store::Error::Io(_))
                ) {
                    log::error!(
                        "the store in {} could not be written: check free disk space and \
                         permissions there. Verification keeps working from memory; if writes \
                         keep failing after space is freed, restart pa-auth (systemd does so on \
                         a non-zero exit)",
                        self.service.store().data_dir().display()
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
        } else if let Some(refusal) = leak_response::refuse_before_body(self, req) {
            Some(refusal)
        } else if resolved.body() == Body::Json
            && !crate::web::json_body::is_json_content_type(req.header("content-type"))
            && credential_settled(self, req, &resolved)
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
        // Control-socket requests may write an audit event before anything else.
        req.local_uid().is_none() && routes::endpoint_of(req.path()).lane == Lane::Inline
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
            let local;
            let peer: &dyn std::fmt::Display = match exchange.local_uid {
                Some(uid) => {
                    local = format!("local-uid-{uid}");
                    &local
                }
                None => &exchange.peer,
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
                    ("peer", &peer),
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

/// The request's Authorization values (at most two are kept: two already means malformed).
pub(crate) fn authorization_values<'a>(request: &Request<'a>) -> ([&'a [u8]; 2], usize) {
    let mut values: [&[u8]; 2] = [&[], &[]];
    let mut n = 0;
    for v in request.headers_named("authorization") {
        if n < 2 {
            values[n] = v;
        }
        n += 1;
    }
    (values, n.min(2))
}

/// Whether a request's credential is settled before its body arrives: none is needed (the
/// login carries it in the body), or it is already known good (a live session, a remembered
/// Basic check). Only then may a wrong Content-Type be answered early: otherwise the
/// credential is checked first, as when the body has been read, so a guessed password or an
/// API token on an admin route is counted, throttled and audited whatever the body says.
fn credential_settled(app: &App, req: &Request<'_>, resolved: &routes::Resolved) -> bool {
    resolved.guard() == Guard::None || crate::web::admin_auth::vouched_before_body(app, req)
}

/// Runs a request as the route table says: the guard's credential check, then the method's
/// operation (or the endpoint's 405/404).
fn route(app: &App, req: &Request<'_>, now: i64) -> Result<Response> {
    let resolved = routes::resolve(req.method(), req.path());
    let caller = match req.local_uid() {
        Some(uid) => match control::caller(app, req, &resolved, uid, now)? {
            Some(admin) => Caller::Admin(admin),
            None => Caller::Anonymous,
        },
        None => tcp_caller(app, req, &resolved, now)?,
    };
    let Some(method) = resolved.method else {
        return Err(match resolved.endpoint.allow {
            "" => Error::NotFound,
            allow => Error::MethodNotAllowed(allow),
        });
    };
    dispatch(app, req, method.op, &caller, now)
}

/// Who a request over TCP is, as its route's guard checks.
fn tcp_caller(
    app: &App,
    req: &Request<'_>,
    resolved: &routes::Resolved,
    now: i64,
) -> Result<Caller> {
    Ok(match resolved.guard() {
        Guard::None => Caller::Anonymous,
        // A cluster node that lost track of the other nodes' deletes must not vouch for a
        // token: the proxy or load balancer sees 503 and drains it until it catches up.
        Guard::ApiToken if !app.service.is_fresh() => {
            return Err(Error::Unavailable(
                "This node cannot confirm the latest token changes; retry on another node",
            ))
        }
        Guard::ApiToken => Caller::Token(app.authenticate(req, now)?),
        Guard::Admin => Caller::Admin(authenticate_admin(app, req, now)?),
        Guard::RevocationApi => {
            leak_response::authenticate_revocation_api(app, req)?;
            Caller::RevocationApi
        }
        // The host's own routes do not exist over TCP: an admin learns no more than 404.
        Guard::Local => {
            authenticate_admin(app, req, now)?;
            return Err(Error::NotFound);
        }
    })
}

/// Who the guard let through.
enum Caller {
    Anonymous,
    Token(VerifiedToken),
    Admin(AdminIdentity),
    /// The revocation API's own credential.
    RevocationApi,
}

/// The operation -> handler map.
fn dispatch(app: &App, req: &Request<'_>, op: Op, caller: &Caller, now: i64) -> Result<Response> {
    let id = || {
        let rest = req
            .path()
            .strip_prefix("/admin/api/tokens/")
            .unwrap_or_default();
        rest.split_once('/').map_or(rest, |(id, _)| id)
    };
    match (op, caller) {
        (Op::Health, _) => Ok(healthz(app.service.is_fresh())),
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
        (Op::ForwardAuth, Caller::Token(token)) => Ok(forward_auth::answer(token)),
        (Op::OwnToken, Caller::Token(token)) => api_token(app, token, now),
        (Op::Login, _) => admin_api::login(app, req, now),
        (Op::SessionInfo, Caller::Admin(who)) => admin_api::session_info(app, who),
        (Op::Logout, Caller::Admin(who)) => admin_api::logout(app, req, who),
        (Op::ListTokens, Caller::Admin(_)) => admin_api::list_tokens(app, req, now),
        (Op::CreateToken, Caller::Admin(who)) => admin_api::create_token(app, req, who, now),
        (Op::LookupToken, Caller::Admin(who)) => admin_api::lookup_token(app, req, who, now),
        (Op::GetToken, Caller::Admin(_)) => admin_api::get_token(app, id(), now),
        (Op::DeleteToken, Caller::Admin(who)) => admin_api::delete_token(app, req, who, id(), now),
        (Op::UpdateToken, Caller::Admin(who)) => admin_api::update_token(app, req, who, id(), now),
        (Op::RotateToken, Caller::Admin(who)) => admin_api::rotate_token(app, req, who, id(), now),
        (Op::EndPreviousSecret, Caller::Admin(who)) => {
            admin_api::end_previous_secret(app, req, who, id(), now)
        }
        (Op::TokenUsage, Caller::Admin(_)) => admin_api::token_usage(app, id(), now),
        (Op::Backup, Caller::Admin(who)) => admin_api::backup(app, req, who, now),
        (Op::Audit, Caller::Admin(_)) => admin_api::audit(app, req),
        (Op::AuditExport, Caller::Admin(_)) => admin_api::audit_export(app, req),
        (Op::ChangePassword, Caller::Admin(who)) => admin_api::change_password(app, req, who, now),
        (Op::SetAdminPassword, Caller::Admin(who)) => {
            admin_api::set_admin_password(app, req, who, now)
        }
        (Op::RevokeTokens, Caller::Admin(who)) => leak_response::revoke_tokens(app, req, who, now),
        (Op::BulkDeleteTokens, Caller::Admin(who)) => {
            leak_response::bulk_delete(app, req, who, now)
        }
        (Op::RevocableTokenTypes, Caller::RevocationApi) => {
            Ok(leak_response::revocable_token_types())
        }
        (Op::RevocationRevokeTokens, Caller::RevocationApi) => {
            leak_response::revocation_revoke_tokens(app, req, now)
        }
        // A table row whose guard does not give its operation the caller it needs: a bug,
        // refused rather than run.
        _ => Err(Error::Internal(format!(
            "route table: {op:?} without its credential"
        ))),
    }
}

/// `{"status":"ok"}`, or 503 `{"status":"stale"}` on a cluster node that cannot confirm the
/// latest changes (the load balancer drains it).
fn healthz(fresh: bool) -> Response {
    if fresh {
        Response::new(200)
            .header("Content-Type", "application/json")
            .body(&b"{\"status\":\"ok\"}"[..])
    } else {
        Response::new(503)
            .header("Content-Type", "application/json")
            .header("Retry-After", "1")
            .body(&b"{\"status\":\"stale\"}"[..])
    }
}

/// The OpenAPI 3 description of every route, schema and error (`docs/openapi.json`).
fn openapi() -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(include_str!("../../docs/openapi.json").as_bytes())
}

fn metrics(app: &App, now: i64) -> Response {
    let snapshot = crate::web::metrics::Snapshot {
        auth: app.service.auth_counters(),
        requests: &app.requests,
        tokens: app.service.token_stats(now),
        open_connections: app
            .server_stats
            .get()
            .map_or(0, |s| s.stats().open_connections),
        flush: app.service.flush_status(),
        cluster: app.service.cluster_status(),
        audit_copy: app.service.audit_copy_figures(),
        webhooks: app.service.webhook_figures(),
    };
    Response::new(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .body(crate::web::metrics::render(&snapshot).into_bytes())
}

/// `GET /api/token`: the calling token's own view.
fn api_token(app: &App, verified: &VerifiedToken, now: i64) -> Result<Response> {
    let (record, used) = app.service.own_token(verified.token.id)?;
    let view = TokenView::new(&record, used, now, app.service.lifetime_policy())
        .with_previous(app.service.previous_secret_of(record.id, now)?);
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
