//! Routing by path alone: the one route table ([`ROUTES`]: path, methods, guard, lane, body
//! kind) that the router, the lane choice and the `Expect: 100-continue` pre-check all read,
//! and the route families used for metrics and logs.

use super::metrics::RouteLabel;
use crate::domain::redact::redact_secrets;

/// The route families. Chosen from the path alone: never the query string,
/// a header or the method, so no input outside the path can move a request to another
/// family (issue 14: `?next=://h/healthz` once routed to `/healthz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    OpenApi,
    /// `/auth/verify` and anything under it: forward-auth.
    Verify,
    ApiToken,
    /// Any other `/api` path: authenticate, then 404.
    ApiOther,
    AdminApi,
    /// `/admin` and the console's assets.
    Console,
    /// The GitLab-compatible token revocation API, under `--revocation-api-prefix`.
    RevocationApi,
    NotFound,
}

/// How an endpoint's path is matched.
#[derive(Debug, Clone, Copy)]
pub enum PathMatch {
    /// Exactly this path.
    Exact(&'static str),
    /// This path or anything under it (`/auth/verify`, `/auth/verify/x`, not `/auth/verifyx`).
    Under(&'static str),
    /// This prefix and one more segment (`/admin/api/tokens/{id}`).
    Child(&'static str),
    /// This prefix, one more segment, then exactly this suffix
    /// (`/admin/api/tokens/{id}/rotate`).
    ChildThen(&'static str, &'static str),
    /// `--revocation-api-prefix` then exactly this suffix; nothing when the flag is unset.
    RevocationApi(&'static str),
}

/// `--revocation-api-prefix`, set once at start-up by `serve` (routing reads the table
/// without an `App`, so the one configurable path lives beside it). The config refuses a
/// prefix that overlaps any other route, so where its rows sit in the table cannot matter.
static REVOCATION_API_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Routes the revocation API under `prefix` from now on; `false` if a prefix was set before
/// (it is set once, at start-up).
pub fn set_revocation_api_prefix(prefix: &str) -> bool {
    REVOCATION_API_PREFIX.set(prefix.to_owned()).is_ok()
}

impl PathMatch {
    fn matches(self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Under(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Child(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| !rest.contains('/')),
            PathMatch::ChildThen(prefix, suffix) => path
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|segment| !segment.is_empty() && !segment.contains('/')),
            PathMatch::RevocationApi(suffix) => REVOCATION_API_PREFIX.get().is_some_and(|p| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest == suffix)
            }),
        }
    }
}

/// Where a request runs: on the event loop that read it (memory only: no disk write, no
/// lock held by slow work, no Argon2), or on the request pool (anything that may block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Inline,
    Worker,
}

/// The credential checked before the operation (or before an unlisted method's 405/404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    None,
    /// An API token (`Authorization: Bearer`).
    ApiToken,
    /// An admin: a console session or HTTP Basic.
    Admin,
    /// The revocation API's own credential (`--revocation-api-token-file`): never an admin
    /// or an API token.
    RevocationApi,
    /// Only through the control socket (root or the service's user on the host); over TCP
    /// the route does not exist (an admin gets 404).
    Local,
}

/// What the request body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Ignored.
    None,
    /// A JSON object (`Content-Type: application/json`), checked before the body is read.
    Json,
}

/// What a request asks for; `web::dispatch` runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Health,
    Metrics,
    OpenApi,
    ForwardAuth,
    OwnToken,
    Console,
    Login,
    SessionInfo,
    Logout,
    ListTokens,
    CreateToken,
    LookupToken,
    GetToken,
    UpdateToken,
    DeleteToken,
    RotateToken,
    EndPreviousSecret,
    TokenUsage,
    Backup,
    Audit,
    AuditExport,
    ChangePassword,
    RevokeTokens,
    BulkDeleteTokens,
    RevocableTokenTypes,
    RevocationRevokeTokens,
    /// Set any admin's password, creating the admin if missing (`pa-auth admin set-password`).
    SetAdminPassword,
}

/// One method of an endpoint.
#[derive(Debug)]
pub struct Method {
    /// `*` for any method; `HEAD` is matched as `GET`.
    pub name: &'static str,
    pub op: Op,
    pub guard: Guard,
    pub body: Body,
}

/// One row of the route table.
#[derive(Debug)]
pub struct Endpoint {
    pub path: PathMatch,
    pub family: Route,
    pub lane: Lane,
    /// Checked before an unlisted method is answered.
    pub guard: Guard,
    pub methods: &'static [Method],
    /// The `Allow` value of the 405 for an unlisted method; empty: 404 instead.
    pub allow: &'static str,
}

const fn m(name: &'static str, op: Op, guard: Guard, body: Body) -> Method {
    Method {
        name,
        op,
        guard,
        body,
    }
}

const fn endpoint(
    path: PathMatch,
    family: Route,
    lane: Lane,
    guard: Guard,
    methods: &'static [Method],
    allow: &'static str,
) -> Endpoint {
    Endpoint {
        path,
        family,
        lane,
        guard,
        methods,
        allow,
    }
}

use Body::Json;
use Guard::{Admin, ApiToken};
use Lane::{Inline, Worker};
use PathMatch::{Child, ChildThen, Exact, Under};

/// THE route table: every path pa-auth answers, first match wins. Routing, the lane a
/// request runs on, the early answer to `Expect: 100-continue` and the 405s all read it.
pub static ROUTES: [Endpoint; 24] = [
    // First: the hot path, one comparison.
    endpoint(
        Under("/auth/verify"),
        Route::Verify,
        Inline,
        ApiToken,
        &[m("*", Op::ForwardAuth, ApiToken, Body::None)],
        "",
    ),
    endpoint(
        Exact("/healthz"),
        Route::Health,
        Inline,
        Guard::None,
        &[m("GET", Op::Health, Guard::None, Body::None)],
        "GET, HEAD",
    ),
    // A store scan at most every 30 s: may block.
    endpoint(
        Exact("/metrics"),
        Route::Metrics,
        Worker,
        Guard::None,
        &[m("GET", Op::Metrics, Guard::None, Body::None)],
        "GET, HEAD",
    ),
    endpoint(
        Exact("/openapi.json"),
        Route::OpenApi,
        Inline,
        Guard::None,
        &[m("GET", Op::OpenApi, Guard::None, Body::None)],
        "GET, HEAD",
    ),
    // One cached store record after the token check.
    endpoint(
        Exact("/api/token"),
        Route::ApiToken,
        Inline,
        ApiToken,
        &[m("GET", Op::OwnToken, ApiToken, Body::None)],
        "GET, HEAD",
    ),
    // Any other API path: the token is checked, then 404.
    endpoint(Under("/api"), Route::ApiOther, Inline, ApiToken, &[], ""),
    // The GitLab-compatible revocation API (`--revocation-api-prefix`); deletes may block.
    endpoint(
        PathMatch::RevocationApi("/v1/revocable_token_types"),
        Route::RevocationApi,
        Worker,
        Guard::RevocationApi,
        &[m(
            "GET",
            Op::RevocableTokenTypes,
            Guard::RevocationApi,
            Body::None,
        )],
        "GET, HEAD",
    ),
    endpoint(
        PathMatch::RevocationApi("/v1/revoke_tokens"),
        Route::RevocationApi,
        Worker,
        Guard::RevocationApi,
        &[m(
            "POST",
            Op::RevocationRevokeTokens,
            Guard::RevocationApi,
            Json,
        )],
        "POST",
    ),
    endpoint(
        Exact("/admin/api/session"),
        Route::AdminApi,
        Worker,
        Admin,
        &[
            // The login carries its credential in the body.
            m("POST", Op::Login, Guard::None, Json),
            m("GET", Op::SessionInfo, Admin, Body::None),
            m("DELETE", Op::Logout, Admin, Body::None),
        ],
        "GET, POST, DELETE",
    ),
    endpoint(
        Exact("/admin/api/tokens"),
        Route::AdminApi,
        Worker,
        Admin,
        &[
            m("GET", Op::ListTokens, Admin, Body::None),
            m("POST", Op::CreateToken, Admin, Json),
        ],
        "GET, HEAD, POST",
    ),
    endpoint(
        Exact("/admin/api/tokens/lookup"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("POST", Op::LookupToken, Admin, Json)],
        "POST",
    ),
    // Before `{id}`: neither is a token id.
    endpoint(
        Exact("/admin/api/tokens/revoke"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("POST", Op::RevokeTokens, Admin, Json)],
        "POST",
    ),
    endpoint(
        Exact("/admin/api/tokens/bulk-delete"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("POST", Op::BulkDeleteTokens, Admin, Json)],
        "POST",
    ),
    endpoint(
        Child("/admin/api/tokens/"),
        Route::AdminApi,
        Worker,
        Admin,
        &[
            m("GET", Op::GetToken, Admin, Body::None),
            m("PATCH", Op::UpdateToken, Admin, Json),
            m("DELETE", Op::DeleteToken, Admin, Body::None),
        ],
        "GET, HEAD, PATCH, DELETE",
    ),
    endpoint(
        ChildThen("/admin/api/tokens/", "/rotate"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("POST", Op::RotateToken, Admin, Json)],
        "POST",
    ),
    endpoint(
        ChildThen("/admin/api/tokens/", "/previous-secret"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("DELETE", Op::EndPreviousSecret, Admin, Body::None)],
        "DELETE",
    ),
    endpoint(
        ChildThen("/admin/api/tokens/", "/usage"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("GET", Op::TokenUsage, Admin, Body::None)],
        "GET, HEAD",
    ),
    endpoint(
        Exact("/admin/api/backup"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("GET", Op::Backup, Admin, Body::None)],
        "GET, HEAD",
    ),
    endpoint(
        Exact("/admin/api/audit"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("GET", Op::Audit, Admin, Body::None)],
        "GET, HEAD",
    ),
    // Up to 10,000 events read and written out: may block.
    endpoint(
        Exact("/admin/api/audit/export"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("GET", Op::AuditExport, Admin, Body::None)],
        "GET, HEAD",
    ),
    endpoint(
        Exact("/admin/api/password"),
        Route::AdminApi,
        Worker,
        Admin,
        &[m("PUT", Op::ChangePassword, Admin, Json)],
        "PUT",
    ),
    // The host's own: through the control socket only.
    endpoint(
        Exact("/admin/api/admins/password"),
        Route::AdminApi,
        Worker,
        Guard::Local,
        &[m("PUT", Op::SetAdminPassword, Guard::Local, Json)],
        "PUT",
    ),
    // Any other admin API path: the admin is checked, then 404.
    endpoint(Under("/admin/api"), Route::AdminApi, Worker, Admin, &[], ""),
    // The console's page and assets (it answers its own 404/405 by asset).
    endpoint(
        Under("/admin"),
        Route::Console,
        Worker,
        Guard::None,
        &[m("*", Op::Console, Guard::None, Body::None)],
        "",
    ),
];

/// Everything else: 404, on the event loop.
static NOT_FOUND: Endpoint = endpoint(Exact(""), Route::NotFound, Inline, Guard::None, &[], "");

/// The endpoint a path belongs to: the one routing decision, by path alone.
pub fn endpoint_of(path: &str) -> &'static Endpoint {
    ROUTES
        .iter()
        .find(|e| e.path.matches(path))
        .unwrap_or(&NOT_FOUND)
}

/// The family of a path (metrics label, log form, lane).
pub fn route_of(path: &str) -> Route {
    endpoint_of(path).family
}

/// A request matched against the table.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub endpoint: &'static Endpoint,
    /// `None`: the method is not listed (405, or 404 when the endpoint lists none).
    pub method: Option<&'static Method>,
}

impl Resolved {
    /// The credential to check first.
    pub fn guard(&self) -> Guard {
        self.method.map_or(self.endpoint.guard, |m| m.guard)
    }

    pub fn body(&self) -> Body {
        self.method.map_or(Body::None, |m| m.body)
    }
}

/// Matches a request: the endpoint by path, then the method (`HEAD` as `GET`).
pub fn resolve(method: &str, path: &str) -> Resolved {
    let endpoint = endpoint_of(path);
    let method = if method == "HEAD" { "GET" } else { method };
    Resolved {
        endpoint,
        method: endpoint
            .methods
            .iter()
            .find(|m| m.name == "*" || m.name == method),
    }
}

impl Route {
    pub fn label(self) -> RouteLabel {
        match self {
            Route::Health => RouteLabel::Health,
            Route::Metrics => RouteLabel::Metrics,
            Route::Verify => RouteLabel::Verify,
            Route::ApiToken => RouteLabel::ApiToken,
            Route::ApiOther => RouteLabel::ApiOther,
            Route::AdminApi | Route::Console | Route::RevocationApi => RouteLabel::Admin,
            Route::OpenApi | Route::NotFound => RouteLabel::Other,
        }
    }

    /// The path as it may be logged: forward-auth and API paths only as their family (a
    /// client may put a secret anywhere after `/auth/verify/`), anything else with
    /// token-shaped text redacted.
    pub fn loggable_path(self, path: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Route::Verify => "/auth/verify".into(),
            Route::ApiToken => "/api/token".into(),
            Route::ApiOther => "/api".into(),
            _ => redact_secrets(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_decides_family_method_guard_lane_and_body() {
        let r = resolve("GET", "/auth/verify/anything");
        assert_eq!(r.endpoint.family, Route::Verify);
        assert_eq!(r.method.map(|m| m.op), Some(Op::ForwardAuth));
        assert_eq!(r.endpoint.lane, Lane::Inline);
        assert_eq!(
            resolve("HEAD", "/healthz").method.map(|m| m.op),
            Some(Op::Health)
        );
        assert!(resolve("POST", "/healthz").method.is_none());
        assert_eq!(resolve("POST", "/healthz").endpoint.allow, "GET, HEAD");
        let login = resolve("POST", "/admin/api/session");
        assert_eq!((login.guard(), login.body()), (Guard::None, Body::Json));
        let logout = resolve("DELETE", "/admin/api/session");
        assert_eq!((logout.guard(), logout.body()), (Guard::Admin, Body::None));
        assert_eq!(resolve("PATCH", "/admin/api/session").guard(), Guard::Admin);
        assert_eq!(resolve("POST", "/admin/api/tokens").body(), Body::Json);
        assert_eq!(resolve("PUT", "/admin/api/password").body(), Body::Json);
        assert_eq!(
            resolve("POST", "/admin/api/tokens/lookup").body(),
            Body::Json
        );
        assert_eq!(
            resolve("GET", "/admin/api/tokens/abc").method.map(|m| m.op),
            Some(Op::GetToken)
        );
        assert_eq!(resolve("GET", "/admin/api/tokens/a/b").endpoint.allow, "");
        let patch = resolve("PATCH", "/admin/api/tokens/abc");
        assert_eq!(patch.method.map(|m| m.op), Some(Op::UpdateToken));
        assert_eq!((patch.guard(), patch.body()), (Guard::Admin, Body::Json));
        let rotate = resolve("POST", "/admin/api/tokens/abc/rotate");
        assert_eq!(rotate.method.map(|m| m.op), Some(Op::RotateToken));
        assert_eq!((rotate.guard(), rotate.body()), (Guard::Admin, Body::Json));
        assert_eq!(
            resolve("DELETE", "/admin/api/tokens/abc/previous-secret")
                .method
                .map(|m| m.op),
            Some(Op::EndPreviousSecret)
        );
        assert_eq!(
            resolve("GET", "/admin/api/tokens/abc/rotate")
                .endpoint
                .allow,
            "POST"
        );
        for other in [
            "/admin/api/tokens//rotate",
            "/admin/api/tokens/a/b/rotate",
            "/admin/api/tokens/a/rotatex",
        ] {
            assert_eq!(resolve("POST", other).endpoint.allow, "", "{other}");
        }
        assert_eq!(
            resolve("GET", "/api/tokenx").endpoint.family,
            Route::ApiOther
        );
        assert_eq!(resolve("GET", "/apix").endpoint.family, Route::NotFound);
        assert_eq!(
            resolve("GET", "/admin/console.js").endpoint.lane,
            Lane::Worker
        );
        assert_eq!(resolve("GET", "/metrics").endpoint.lane, Lane::Worker);
        let export = resolve("GET", "/admin/api/audit/export");
        assert_eq!(export.method.map(|m| m.op), Some(Op::AuditExport));
        assert_eq!(
            (export.guard(), export.endpoint.lane),
            (Guard::Admin, Lane::Worker)
        );
        assert_eq!(
            resolve("POST", "/admin/api/audit/export").guard(),
            Guard::Admin
        );
        assert_eq!(resolve("GET", "/").endpoint.lane, Lane::Inline);
        for (path, op) in [
            ("/admin/api/tokens/revoke", Op::RevokeTokens),
            ("/admin/api/tokens/bulk-delete", Op::BulkDeleteTokens),
        ] {
            let r = resolve("POST", path);
            assert_eq!(r.method.map(|m| m.op), Some(op));
            assert_eq!((r.guard(), r.body()), (Guard::Admin, Body::Json));
            assert_eq!(resolve("GET", path).endpoint.allow, "POST");
        }
    }

    #[test]
    fn the_revocation_api_answers_only_under_its_prefix_once_set() {
        let types = "/gitlab-revocation/v1/revocable_token_types";
        // Unset (as in every other test of this process), the paths are nobody's.
        if REVOCATION_API_PREFIX.get().is_none() {
            assert_eq!(resolve("GET", types).endpoint.family, Route::NotFound);
        }
        assert!(
            set_revocation_api_prefix("/gitlab-revocation")
                || REVOCATION_API_PREFIX.get().is_some()
        );
        let r = resolve("GET", types);
        assert_eq!(r.method.map(|m| m.op), Some(Op::RevocableTokenTypes));
        assert_eq!(r.guard(), Guard::RevocationApi);
        let revoke = resolve("POST", "/gitlab-revocation/v1/revoke_tokens");
        assert_eq!(
            revoke.method.map(|m| m.op),
            Some(Op::RevocationRevokeTokens)
        );
        assert_eq!(revoke.guard(), Guard::RevocationApi);
        assert_eq!(
            resolve("GET", "/gitlab-revocation/v1/revoke_tokens")
                .endpoint
                .allow,
            "POST"
        );
        for other in [
            "/gitlab-revocation",
            "/gitlab-revocation/v1",
            "/gitlab-revocation/v1/revoke_tokens/",
            "/gitlab-revocation/v1/revoke_tokensx",
            "/gitlab-revocationx/v1/revoke_tokens",
            "/GITLAB-REVOCATION/v1/revoke_tokens",
            "/v1/revoke_tokens",
        ] {
            assert_eq!(
                resolve("POST", other).endpoint.family,
                Route::NotFound,
                "{other}"
            );
        }
    }

    #[test]
    fn every_operation_is_reachable_once_and_admin_ops_need_an_admin() {
        let mut seen = Vec::new();
        for endpoint in &ROUTES {
            for method in endpoint.methods {
                assert!(!seen.contains(&method.op), "{:?} twice", method.op);
                seen.push(method.op);
                if endpoint.family == Route::AdminApi && method.op != Op::Login {
                    // An admin, or the host's own through the control socket (which is one).
                    let guards = [Guard::Admin, Guard::Local];
                    assert!(guards.contains(&method.guard), "{:?}", method.op);
                    assert_eq!(endpoint.lane, Lane::Worker, "{:?}", method.op);
                }
            }
        }
        assert_eq!(seen.len(), 27);
    }
}
