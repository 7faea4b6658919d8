//! Routing by path alone: the route families and which one a path belongs to.

use super::metrics::RouteLabel;
use crate::domain::redact::redact_secrets;

/// The route families. Chosen by [`route_of`] from the path alone: never the query string,
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
    NotFound,
}

/// The family of a path: the one routing decision, used by the router, the event-loop
/// lane choice and the early answer to `Expect: 100-continue`.
pub fn route_of(path: &str) -> Route {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match path {
        "/healthz" => Route::Health,
        "/metrics" => Route::Metrics,
        "/openapi.json" => Route::OpenApi,
        "/api/token" => Route::ApiToken,
        _ if under("/auth/verify") => Route::Verify,
        _ if under("/api") => Route::ApiOther,
        _ if under("/admin/api") => Route::AdminApi,
        _ if under("/admin") => Route::Console,
        _ => Route::NotFound,
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
            Route::AdminApi | Route::Console => RouteLabel::Admin,
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
