//! The admin world: who may manage tokens and how they prove it. HTTP Basic with an admin
//! username/password, or the console's session cookie (with a CSRF check on unsafe methods).
//! API tokens are never admin credentials: one sent here gets 403. Failures are throttled per
//! client address. The route handlers are in [`super::admin_api`].

use std::time::Instant;

use crate::domain::audit::Actor;
use crate::http::Request;
use crate::service::admins::sessions::{session_cookie, Peek, Session};
use crate::service::error::{Error, Result};
use crate::web::authorization_values;
use crate::web::public_url::PublicUrl;
use crate::web::App;

/// How an admin request authenticated.
#[derive(Debug, Clone)]
pub enum AdminCredential {
    /// The console's cookie (its value, to end it on logout).
    Session { cookie: String, session: Session },
    /// HTTP Basic on this request.
    Basic,
    /// The control socket, as local user `uid` ([`crate::web::control`]).
    Local { uid: u32 },
}

/// An authenticated admin.
#[derive(Debug, Clone)]
pub struct AdminIdentity {
    pub username: String,
    pub credential: AdminCredential,
}

impl AdminIdentity {
    /// The admin as the audit log names them: the username and the client's address, or
    /// `cli (uid N)` through the control socket.
    pub fn actor(&self, req: &Request<'_>) -> Actor {
        match self.credential {
            AdminCredential::Local { uid } => Actor::local_cli(uid),
            _ => Actor::admin(&self.username, req.peer().ip()),
        }
    }
}

/// The 401 for an admin request; the console's own requests get no Basic challenge.
pub fn admin_unauthorized(req: &Request<'_>) -> Error {
    let console = req
        .header("x-requested-with")
        .is_some_and(|v| v == b"pa-console");
    Error::AdminUnauthorized {
        basic_challenge: !console,
    }
}

/// Before a body is read on an admin route: the answer that cannot depend on it, if any. A
/// request with a live session goes on. Otherwise a locked-out address gets its 429, and a
/// request with neither an Authorization header nor a live session (an unknown cookie counts
/// as none) its 401, so neither holds a body place.
/// The login itself carries its credential in the body and only meets the lock.
pub fn refuse_before_body(app: &App, req: &Request<'_>) -> Option<Error> {
    // The control socket's caller is known by uid, decided with the request.
    if req.local_uid().is_some() {
        return None;
    }
    let resolved = super::routes::resolve(req.method(), req.path());
    if resolved.endpoint.family != super::routes::Route::AdminApi {
        return None;
    }
    let admins = app.service.admins();
    let now = Instant::now();
    let login = resolved.method.map(|m| m.op) == Some(super::routes::Op::Login);
    // With a shared store only a worker may ask it: a cookie is then taken as maybe live.
    let live_session = req
        .header("cookie")
        .and_then(session_cookie)
        .is_some_and(|cookie| admins.sessions().peek(cookie, now) != Peek::Dead);
    // A live session is a credential already proven: the address's lock is for guesses, and
    // a session checked without a body (GET, DELETE) is not locked out either.
    if live_session && !login {
        return None;
    }
    if let Err(retry_after_secs) = admins.throttle().check(req.peer().ip(), now) {
        return Some(Error::TooManyRequests { retry_after_secs });
    }
    let authorization = req.headers_named("authorization").next().is_some();
    (!login && !live_session && !authorization).then(|| admin_unauthorized(req))
}

/// Whether an admin request's credential is already known good before its body arrives: a
/// live session, or HTTP Basic remembered from a recent successful check. Such bodies may use
/// every body place; others (a login, a first Basic check, a wrong password) only half.
pub fn vouched_before_body(app: &App, req: &Request<'_>) -> bool {
    if let Some(uid) = req.local_uid() {
        return app.control.admits(uid);
    }
    let now = Instant::now();
    let admins = app.service.admins();
    if req
        .header("cookie")
        .and_then(session_cookie)
        .is_some_and(|cookie| admins.sessions().peek(cookie, now) == Peek::Live)
    {
        return true;
    }
    let (values, n) = authorization_values(req);
    match &values[..n] {
        [value] => parse_basic(value)
            .is_some_and(|(user, password)| admins.basic_cache().contains(&user, &password, now)),
        _ => false,
    }
}

fn is_unsafe_method(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Authenticates an admin request, or says why not (401, 403, 429).
pub fn authenticate_admin(app: &App, req: &Request<'_>, now: i64) -> Result<AdminIdentity> {
    let instant = Instant::now();
    let service = &app.service;
    let admins = service.admins();
    if let Some(cookie) = req.header("cookie").and_then(session_cookie) {
        if let Some(session) = admins.sessions().get(cookie, instant)? {
            if is_unsafe_method(req.method()) {
                check_csrf(req, &session, app.public_url.as_ref())?;
            }
            return Ok(AdminIdentity {
                username: session.username.clone(),
                credential: AdminCredential::Session {
                    cookie: cookie.to_owned(),
                    session,
                },
            });
        }
    }
    let (values, n) = authorization_values(req);
    let values = &values[..n];
    if let [value] = values {
        if let Some((username, password)) = parse_basic(value) {
            let ip = req.peer().ip();
            let throttled = |retry_after_secs| Error::TooManyRequests { retry_after_secs };
            admins.throttle().check(ip, instant).map_err(throttled)?;
            // A credential that passed a full check within the last minute is no guess: it
            // takes no place in the throttle and costs no Argon2 run.
            if service.remembered_basic(&username, &password, instant)? {
                return Ok(AdminIdentity {
                    username,
                    credential: AdminCredential::Basic,
                });
            }
            let attempt = service.reserve_admin_attempt(ip, instant)?;
            if service.check_basic(&username, &password, instant)? {
                service.record_login_success(attempt, ip);
                return Ok(AdminIdentity {
                    username,
                    credential: AdminCredential::Basic,
                });
            }
            service.record_login_failure(attempt, ip, &username, now);
            return Err(admin_unauthorized(req));
        }
    }
    if values.is_empty() {
        return Err(admin_unauthorized(req));
    }
    // Anything else presented here (an API token, a broken Basic value) is a guess at an
    // admin route: throttled and counted like a wrong password, so the 403-versus-401
    // answer cannot be used to test tokens without leaving a trail.
    let ip = req.peer().ip();
    let attempt = service.reserve_admin_attempt(ip, instant)?;
    service.count_guess_failure(attempt, ip);
    match service.token_on_admin_route(values, ip, now) {
        Ok(_) => Err(Error::Forbidden(
            "API tokens cannot be used on admin routes",
        )),
        Err(Error::Unauthorized(_)) => Err(admin_unauthorized(req)),
        Err(other) => Err(other),
    }
}

/// Whether the session cookie must be `Secure`: under pa-auth's own TLS, or when clients
/// reach it over HTTPS through a proxy (`--public-url https://...`).
pub fn cookie_is_secure(app: &App, req: &Request<'_>) -> bool {
    req.is_tls() || app.public_url.as_ref().is_some_and(PublicUrl::is_https)
}

/// CSRF defence for cookie-authenticated unsafe requests: the session's token must come back
/// in `X-CSRF-Token`, and a present `Origin` must be the public URL's origin when one is
/// configured (behind a proxy the Host header is the proxy's business), else this host.
fn check_csrf(req: &Request<'_>, session: &Session, public_url: Option<&PublicUrl>) -> Result<()> {
    let sent = req.header("x-csrf-token").unwrap_or(&[]);
    if !crate::service::admins::passwords::constant_time_eq(sent, session.csrf_token.as_bytes()) {
        return Err(Error::Forbidden(
            "CSRF check failed: missing or wrong X-CSRF-Token",
        ));
    }
    let same_origin = match (req.header("origin"), public_url) {
        (None, _) => true,
        (Some(origin), Some(public)) => public.matches_origin(origin),
        (Some(origin), None) => {
            let host = req.header("host").unwrap_or(&[]);
            origin
                .strip_prefix(b"https://")
                .or_else(|| origin.strip_prefix(b"http://"))
                .is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host))
        }
    };
    if !same_origin {
        return Err(Error::Forbidden("CSRF check failed: cross-origin request"));
    }
    Ok(())
}

/// `Basic base64(user:password)` → (user, password). `None` if not Basic or undecodable.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = crate::http::head::trim_ows(value);
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64_decode(crate::http::head::trim_ows(rest))?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 with padding (RFC 4648 §4), strict: canonical only (no missing padding,
/// no non-zero bits in the last character, no other alphabet or whitespace); bounded input.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    use base64ct::{Base64, Encoding};
    if input.is_empty() || input.len() > 4096 {
        return None;
    }
    Base64::decode_vec(std::str::from_utf8(input).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        assert_eq!(
            parse_basic(b"Basic YWRtaW46czNjcmV0OndpdGg6Y29sb25z"),
            Some(("admin".into(), "s3cret:with:colons".into()))
        );
        assert_eq!(parse_basic(b"basic YTpi"), Some(("a".into(), "b".into())));
        assert_eq!(parse_basic(b"Basic YQ=="), None, "no colon");
        assert_eq!(parse_basic(b"Basic !!!!"), None);
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic"), None);
        assert_eq!(base64_decode(b"YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode(b"YQ==YQ=="), None);
        // Refused as before: missing padding, other alphabets, whitespace, empty, oversized.
        assert_eq!(base64_decode(b"YWI"), None);
        assert_eq!(base64_decode(b"YQ="), None);
        assert_eq!(base64_decode(b"-_8="), None);
        assert_eq!(base64_decode(b"YW Jj"), None);
        assert_eq!(base64_decode(b""), None);
        assert_eq!(base64_decode(&b"AAAA".repeat(1025)), None);
        assert_eq!(base64_decode(b"+/8="), Some(vec![0xfb, 0xff]));
        // Refused since base64ct: non-zero bits after the last byte (RFC 4648 §3.5).
        assert_eq!(base64_decode(b"YR=="), None);
        assert_eq!(base64_decode(b"YWJ="), None);
    }
}
