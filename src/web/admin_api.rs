//! Admin API handlers: session login/logout, tokens CRUD with cursor pagination (and an
//! owner filter), editing a token's name, owner and description, the audit log and password
//! change. Plain functions of (app, request, identity, now) → response;
//! routing is in [`crate::web`].

use std::time::Instant;

use serde_json::json;

use super::admin_auth::{admin_unauthorized, cookie_is_secure, AdminCredential, AdminIdentity};
use crate::domain::encoding::hex;
use crate::domain::restrictions::{
    validate_access, validate_allowed_cidrs, Access, AllowedNetworks, Restrictions,
};
use crate::domain::rotation::Overlap;
use crate::domain::token::TokenId;
use crate::domain::token_fields::{
    parse_expires_at, validate_description, validate_name, validate_owner,
};
use crate::http::{Request, Response};
use crate::service::admins::passwords::validate_new_password;
use crate::service::admins::sessions::{ABSOLUTE_LIFETIME, SESSION_COOKIE};
use crate::service::error::{Error, FieldError, Result};
use crate::service::tokens::NewToken;
use crate::service::view::{CreatedTokenView, TokenView};
use crate::store::{parse_audit_cursor, parse_cursor, AuditQuery, TokenUpdate};
use crate::web::json_body::parse_object;
use crate::web::App;

const DEFAULT_LIMIT: usize = 100;

/// `{"items": [...], "nextCursor": null|string}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}
const MAX_LIMIT: usize = 1000;

/// `POST /admin/api/session`: username/password → session cookie.
pub fn login(app: &App, req: &Request<'_>, now: i64) -> Result<Response> {
    let ip = req.peer().ip();
    let service = &app.service;
    let attempt = service.reserve_admin_attempt(ip, Instant::now())?;
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["username", "password"],
    )?;
    let (username, password) =
        collect_fields((body.required_str("username"), body.required_str("password")))?;
    if !service.check_admin_password(username, password)? {
        service.record_login_failure(attempt, ip, username, now);
        return Err(admin_unauthorized(req));
    }
    service.record_login_success(attempt, ip);
    let (cookie, session) = service
        .admins()
        .sessions()
        .create(username, Instant::now())?;
    let initial = service.has_initial_password(username)?;
    service.record_login(username, ip, now);
    let secure = if cookie_is_secure(app, req) {
        "; Secure"
    } else {
        ""
    };
    let set_cookie = format!(
        "{SESSION_COOKIE}={cookie}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ABSOLUTE_LIFETIME.as_secs()
    );
    Ok(Response::json(
        200,
        &json!({
            "username": username,
            "csrfToken": session.csrf_token,
            "initialPassword": initial,
        }),
    )
    .header("Set-Cookie", set_cookie))
}

/// `GET /admin/api/session`: who am I (and the CSRF token, for a reloaded console).
pub fn session_info(app: &App, who: &AdminIdentity) -> Result<Response> {
    let initial = app.service.has_initial_password(&who.username)?;
    let csrf = match &who.credential {
        AdminCredential::Session { session, .. } => Some(session.csrf_token.clone()),
        AdminCredential::Basic | AdminCredential::Local { .. } => None,
    };
    Ok(Response::json(
        200,
        &json!({"username": who.username, "csrfToken": csrf, "initialPassword": initial}),
    ))
}

/// `DELETE /admin/api/session`: ends the cookie session (a no-op for Basic).
pub fn logout(app: &App, req: &Request<'_>, who: &AdminIdentity) -> Result<Response> {
    if let AdminCredential::Session { cookie, .. } = &who.credential {
        app.service.admins().sessions().remove(cookie)?;
    }
    let secure = if cookie_is_secure(app, req) {
        "; Secure"
    } else {
        ""
    };
    Ok(Response::new(204).header(
        "Set-Cookie",
        format!("{SESSION_COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    ))
}

/// `GET /admin/api/tokens?limit=&cursor=&owner=`: `owner` keeps the tokens whose owner is
/// exactly that, ignoring case (and surrounding spaces, as owners are stored trimmed).
pub fn list_tokens(app: &App, req: &Request<'_>, now: i64) -> Result<Response> {
    let params = QueryParams::parse(req.query())?;
    let limit = params.limit()?;
    let cursor =
        match params.get("cursor") {
            None => None,
            Some(c) => Some(parse_cursor(c).ok_or_else(|| {
                Error::Validation(vec![FieldError::new("cursor", "Invalid cursor")])
            })?),
        };
    let owner = match params.get("owner") {
        None => None,
        Some(o) => Some(
            validate_owner(o)
                .map_err(|e| Error::Validation(vec![e]))?
                .ok_or_else(|| {
                    Error::Validation(vec![FieldError::new(
                        "owner",
                        "Must not be empty (leave it out to list every token)",
                    )])
                })?,
        ),
    };
    let page = app
        .service
        .list_tokens(limit, cursor.as_ref(), owner.as_deref())?;
    let policy = app.service.lifetime_policy();
    let items: Vec<TokenView> = page
        .items
        .iter()
        .map(|(r, used)| {
            let previous = app.service.previous_secret_of(r.id, now)?;
            Ok(TokenView::new(r, *used, now, policy).with_previous(previous))
        })
        .collect::<Result<_>>()?;
    Ok(Response::json(
        200,
        &Page {
            items,
            next_cursor: page.next_cursor.map(|c| hex(&c)),
        },
    ))
}

/// The restriction fields of a create, PATCH or rotate body: `allowedCidrs` (a list of
/// prefixes, at most 100; `null` or `[]` = anywhere) and `access` (`"read"` | `"full"`).
/// `None` for a field that is absent.
fn restriction_fields(
    body: &crate::web::json_body::JsonObject,
) -> std::result::Result<(Option<AllowedNetworks>, Option<Access>), Vec<FieldError>> {
    let networks = match body.optional_str_list("allowedCidrs") {
        Ok(Some(list)) => validate_allowed_cidrs(&list).map(Some),
        // `null` clears, like `[]`; absent leaves it.
        Ok(None) if body.has("allowedCidrs") => Ok(Some(AllowedNetworks::anywhere())),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let access = body
        .optional_str("access")
        .and_then(|a| a.map(validate_access).transpose());
    both(one(networks), one(access))
}

/// `POST /admin/api/tokens` `{"name","expiresAt"?,"owner"?,"description"?,"allowedCidrs"?,
/// "access"?}` → 201 view + secret, after it is durable. An expiry outside the lifetime
/// policy is a validation error on `expiresAt`.
pub fn create_token(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &[
            "name",
            "expiresAt",
            "owner",
            "description",
            "allowedCidrs",
            "access",
        ],
    )?;
    let name = body.required_str("name").and_then(validate_name);
    let expires = body
        .optional_str("expiresAt")
        .and_then(|e| parse_expires_at(e, now));
    let owner = body
        .optional_str("owner")
        .and_then(|o| o.map(validate_owner).transpose().map(Option::flatten));
    let description = body
        .optional_str("description")
        .and_then(|d| d.map(validate_description).transpose().map(Option::flatten));
    let (((name, expires_at), (owner, description)), (networks, access)) = both(
        both(
            both(one(name), one(expires)),
            both(one(owner), one(description)),
        ),
        restriction_fields(&body),
    )
    .map_err(Error::Validation)?;
    let new = NewToken {
        name,
        expires_at,
        owner,
        description,
        restrictions: Restrictions {
            access: access.unwrap_or_default(),
            networks: networks.unwrap_or_default(),
        },
    };
    let (secret, record) = app.service.create_token(&who.actor(req), &new, now)?;
    let view = CreatedTokenView {
        view: TokenView::new(&record, None, now, app.service.lifetime_policy()),
        token: secret.expose_secret(),
    };
    Ok(Response::json(201, &view).header("Location", format!("/admin/api/tokens/{}", record.id)))
}

/// `GET /admin/api/tokens/{id}`.
pub fn get_token(app: &App, id: &str, now: i64) -> Result<Response> {
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    let (record, used) = app.service.token(id)?;
    let view = TokenView::new(&record, used, now, app.service.lifetime_policy())
        .with_previous(app.service.previous_secret_of(id, now)?);
    Ok(Response::json(200, &view))
}

/// `GET /admin/api/tokens/{id}/usage` → 200: requests per UTC day for the last 90 days and
/// the last ten client addresses (stored, plus what this node saw since its last flush);
/// 404 for no such token.
pub fn token_usage(app: &App, id: &str, now: i64) -> Result<Response> {
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    let usage = app.service.usage_of(id, now)?;
    Ok(Response::json(
        200,
        &crate::service::usage::UsageView::new(id, &usage, now),
    ))
}

/// `POST /admin/api/tokens/{id}/rotate` `{"overlap": "<duration>" | "untilNewSecretUsed",
/// "maxOverlap"?, "allowedCidrs"?, "access"?}` → 201 with the view and the new secret (shown
/// once, as create shows it), after it is durable. New restrictions are applied (and
/// audited as `token.updated`) before the rotation, so the new secret never works without
/// them; they apply to the previous secret too (it is the same token). The old secret keeps working as the previous secret for the
/// overlap; a previous secret already there is replaced (decision 0008). 404 for no such
/// token.
pub fn rotate_token(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    id: &str,
    now: i64,
) -> Result<Response> {
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["overlap", "maxOverlap", "allowedCidrs", "access"],
    )?;
    let overlap = body.required_str("overlap");
    let max_overlap = body.optional_str("maxOverlap");
    let ((overlap, max_overlap), (networks, access)) = both(
        both(one(overlap), one(max_overlap)),
        restriction_fields(&body),
    )
    .map_err(Error::Validation)?;
    let overlap = Overlap::parse(overlap, max_overlap).map_err(|e| Error::Validation(vec![e]))?;
    if networks.is_some() || access.is_some() {
        let update = TokenUpdate {
            networks,
            access,
            ..TokenUpdate::default()
        };
        app.service
            .update_token(&who.actor(req), id, &update, now)?;
    }
    let rotated = app
        .service
        .rotate_token(&who.actor(req), id, overlap, now)?;
    let used = app.service.last_used_of(id)?;
    let view = CreatedTokenView {
        view: TokenView::new(&rotated.record, used, now, app.service.lifetime_policy())
            .with_previous(app.service.previous_secret_of(id, now)?),
        token: rotated.secret.expose_secret(),
    };
    Ok(Response::json(201, &view).header("Location", format!("/admin/api/tokens/{id}")))
}

/// `DELETE /admin/api/tokens/{id}/previous-secret`: the previous secret stops working now
/// (204); 404 when the token has none.
pub fn end_previous_secret(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    id: &str,
    now: i64,
) -> Result<Response> {
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    app.service.end_previous_secret(&who.actor(req), id, now)?;
    Ok(Response::new(204))
}

/// `PATCH /admin/api/tokens/{id}` with any of `{"name", "owner", "description",
/// "allowedCidrs", "access"}` (a JSON merge patch, RFC 7396, of those: an absent field stays,
/// `null` clears owner, description or allowedCidrs; a name cannot be cleared; `access: null`
/// is full) → 200 with the view. The secret and the expiry are
/// not editable: they are not fields here, so sending them is an unknown field. 404 for no
/// such token, 409 for a name another token has.
pub fn update_token(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    id: &str,
    now: i64,
) -> Result<Response> {
    // An id that cannot exist is a 404 before the body is judged, like GET and DELETE.
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["name", "owner", "description", "allowedCidrs", "access"],
    )?;
    if body.is_empty() {
        return Err(Error::Validation(vec![FieldError::new(
            "name",
            "Give at least one of name, owner, description, allowedCidrs or access",
        )]));
    }
    let name = match body.patch_str("name") {
        Ok(None) => Ok(None),
        Ok(Some(Some(n))) => validate_name(n).map(Some),
        Ok(Some(None)) => Err(FieldError::new(
            "name",
            "A token always has a name: give a new one, or leave the field out",
        )),
        Err(e) => Err(e),
    };
    let owner = body.patch_str("owner").and_then(|o| {
        o.map(|o| o.map(validate_owner).transpose().map(Option::flatten))
            .transpose()
    });
    let description = body.patch_str("description").and_then(|d| {
        d.map(|d| d.map(validate_description).transpose().map(Option::flatten))
            .transpose()
    });
    let ((name, (owner, description)), (networks, access)) = both(
        both(one(name), both(one(owner), one(description))),
        restriction_fields(&body),
    )
    .map_err(Error::Validation)?;
    let access = match (access, body.has("access")) {
        (None, true) => Some(Access::Full),
        (a, _) => a,
    };
    let update = TokenUpdate {
        name,
        owner,
        description,
        networks,
        access,
    };
    let updated = app
        .service
        .update_token(&who.actor(req), id, &update, now)?;
    let used = app.service.last_used_of(id)?;
    let view = TokenView::new(&updated.after, used, now, app.service.lifetime_policy())
        .with_previous(app.service.previous_secret_of(id, now)?);
    Ok(Response::json(200, &view))
}

/// `DELETE /admin/api/tokens/{id}`: gone from the store and the in-memory tracker before 204.
pub fn delete_token(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    id: &str,
    now: i64,
) -> Result<Response> {
    let id = TokenId::parse(id).ok_or(Error::NotFound)?;
    app.service.delete_token(&who.actor(req), id, now)?;
    Ok(Response::new(204))
}

/// `GET /admin/api/audit?limit=&cursor=&tokenId=&event=`.
pub fn audit(app: &App, req: &Request<'_>) -> Result<Response> {
    let params = QueryParams::parse(req.query())?;
    let before =
        match params.get("cursor") {
            None => None,
            Some(c) => Some(parse_audit_cursor(c).ok_or_else(|| {
                Error::Validation(vec![FieldError::new("cursor", "Invalid cursor")])
            })?),
        };
    let query = AuditQuery {
        limit: params.limit()?,
        before,
        token_id: params.get("tokenId").map(str::to_owned),
        event: params.get("event").map(str::to_owned),
    };
    let (items, next) = app.service.audit_events(&query)?;
    Ok(Response::json(
        200,
        &Page {
            items,
            next_cursor: next,
        },
    ))
}

/// Events per export response unless `limit` says otherwise, and the most it may ask for.
const EXPORT_DEFAULT_LIMIT: usize = 1000;
const EXPORT_MAX_LIMIT: usize = 10_000;

/// `GET /admin/api/audit/export?since=<RFC 3339>|cursor=<event id>&limit=`: audit events of
/// both classes, oldest first, as NDJSON (one event a line, the audit API's item JSON).
/// `since` starts at that instant (inclusive); `cursor` continues after that event
/// (exclusive). At most `limit` (1..=10000, default 1000) events; when more follow, a
/// `Link: <…?cursor=<last id>&limit=N>; rel="next"` header says where to continue.
pub fn audit_export(app: &App, req: &Request<'_>) -> Result<Response> {
    let params = QueryParams::parse(req.query())?;
    let invalid = |field: &str, message: &str| {
        Error::Validation(vec![FieldError::new(field.to_owned(), message.to_owned())])
    };
    let from: [u8; 16] = match (params.get("since"), params.get("cursor")) {
        (Some(since), None) => {
            let micros = crate::domain::time::parse_rfc3339_micros(since)
                .ok_or_else(|| invalid("since", "Must be an RFC 3339 date-time with offset"))?;
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&micros.max(0).to_be_bytes());
            key
        }
        (None, Some(cursor)) => {
            let id =
                parse_audit_cursor(cursor).ok_or_else(|| invalid("cursor", "Invalid cursor"))?;
            // Strictly after that event: the next key up (none after the last possible key).
            match u128::from_be_bytes(id).checked_add(1) {
                Some(next) => next.to_be_bytes(),
                None => return Ok(ndjson(&[], None)),
            }
        }
        (Some(_), Some(_)) => {
            return Err(invalid("cursor", "Give either since or cursor, not both"))
        }
        (None, None) => {
            return Err(invalid(
                "since",
                "Required (or cursor, to continue an export)",
            ))
        }
    };
    let limit = match params.get("limit") {
        None => EXPORT_DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=EXPORT_MAX_LIMIT).contains(n) && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    &format!("Must be an integer from 1 to {EXPORT_MAX_LIMIT}"),
                )
            })?,
    };
    let mut events = app.service.audit_export(&from, limit + 1)?;
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| {
            format!(
                "</admin/api/audit/export?cursor={}&limit={limit}>; rel=\"next\"",
                e.id
            )
        })
    } else {
        None
    };
    Ok(ndjson(&events, next))
}

/// One JSON object a line, `application/x-ndjson`, with the `Link` to the next part if any.
fn ndjson(events: &[crate::domain::audit::AuditEvent], next: Option<String>) -> Response {
    let mut body = Vec::with_capacity(events.len() * 256);
    for event in events {
        // An event is plain strings and numbers: serializing cannot fail.
        if serde_json::to_writer(&mut body, event).is_ok() {
            body.push(b'\n');
        }
    }
    let response = Response::new(200).header("Content-Type", "application/x-ndjson");
    match next {
        Some(link) => response.header("Link", link),
        None => response,
    }
    .body(body)
}

/// `PUT /admin/api/password` `{"currentPassword","newPassword"}` → 204.
pub fn change_password(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let ip = req.peer().ip();
    let service = &app.service;
    let attempt = service.reserve_admin_attempt(ip, Instant::now())?;
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["currentPassword", "newPassword"],
    )?;
    let (current, new) = collect_fields((
        body.required_str("currentPassword"),
        body.required_str("newPassword"),
    ))?;
    if !service.check_admin_password(&who.username, current)? {
        service.record_login_failure(attempt, ip, &who.username, now);
        return Err(Error::Validation(vec![FieldError::new(
            "currentPassword",
            "Current password is wrong",
        )]));
    }
    service.record_login_success(attempt, ip);
    validate_new_password(new, "newPassword").map_err(|e| Error::Validation(vec![e]))?;
    if new == current {
        return Err(Error::Validation(vec![FieldError::new(
            "newPassword",
            "Must differ from the current password",
        )]));
    }
    let keep = match &who.credential {
        AdminCredential::Session { cookie, .. } => Some(cookie.as_str()),
        AdminCredential::Basic | AdminCredential::Local { .. } => None,
    };
    service.change_admin_password(&who.actor(req), &who.username, new, keep, now)?;
    Ok(Response::new(204))
}

/// `PUT /admin/api/admins/password` (control socket only): sets `username`'s password,
/// creating the admin if missing — `pa-auth admin set-password` on the host.
pub fn set_admin_password(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["username", "password"],
    )?;
    let (username, password) =
        collect_fields((body.required_str("username"), body.required_str("password")))?;
    // New accounts get plain names: no look-alikes (spaces, bidi controls) and nothing that
    // could pass for another actor in the audit log or break HTTP Basic (`:`).
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-');
    if username.is_empty() || username.len() > 64 || !username.chars().all(plain) {
        return Err(Error::Validation(vec![FieldError::new(
            "username",
            "1..64 of A-Z a-z 0-9 . _ @ + -",
        )]));
    }
    validate_new_password(password, "password").map_err(|e| Error::Validation(vec![e]))?;
    // A new account whose name differs from an existing one only in case would be another
    // admin that reads the same in a log.
    let admins = app.service.store().export_admins()?;
    if let Some((existing, _)) = admins
        .iter()
        .find(|(name, _)| name != username && name.eq_ignore_ascii_case(username))
    {
        return Err(Error::Conflict(format!(
            "An admin named {existing:?} exists; names may not differ only in case"
        )));
    }
    app.service
        .change_admin_password(&who.actor(req), username, password, None, now)?;
    Ok(Response::new(204))
}

/// Turns per-field results into values or one validation error listing every bad field.
fn collect_fields<A, B>(
    fields: (
        std::result::Result<A, FieldError>,
        std::result::Result<B, FieldError>,
    ),
) -> Result<(A, B)> {
    match fields {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(Error::Validation(
            a.err().into_iter().chain(b.err()).collect(),
        )),
    }
}

/// Per-field results as one, every error kept (for more than two fields: nest `both`).
fn both<A, B>(
    a: std::result::Result<A, Vec<FieldError>>,
    b: std::result::Result<B, Vec<FieldError>>,
) -> std::result::Result<(A, B), Vec<FieldError>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(a.err().into_iter().chain(b.err()).flatten().collect()),
    }
}

/// One field's result, for [`both`].
fn one<T>(r: std::result::Result<T, FieldError>) -> std::result::Result<T, Vec<FieldError>> {
    r.map_err(|e| vec![e])
}

/// Decoded `key=value` pairs of a query string; a repeated known key is an error.
struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    fn parse(query: Option<&str>) -> Result<QueryParams> {
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            let (Some(k), Some(v)) = (k, v) else {
                return Err(Error::BadRequest(
                    "Query string is not valid percent-encoded UTF-8".into(),
                ));
            };
            if out.iter().any(|(existing, _)| *existing == k) {
                return Err(Error::Validation(vec![FieldError::new(
                    k,
                    "Given more than once",
                )]));
            }
            out.push((k, v));
        }
        Ok(QueryParams(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn limit(&self) -> Result<usize> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n) && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    Error::Validation(vec![FieldError::new(
                        "limit",
                        format!("Must be an integer from 1 to {MAX_LIMIT}"),
                    )])
                }),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = crate::domain::encoding::hex_digit(*b.get(i + 1)?)?;
                let lo = crate::domain::encoding::hex_digit(*b.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `POST /admin/api/tokens/lookup` `{"token": "pa_…"}` or `{"tokenHash": "<64 hex>"}`: which
/// token is this leaked string? 200 with its view, or 404. Neither value is logged or
/// audited; the audit records only that a lookup happened and what it found.
pub fn lookup_token(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &["token", "tokenHash"],
    )?;
    let token = body
        .optional_str("token")
        .map_err(|e| Error::Validation(vec![e]))?;
    let hash_hex = body
        .optional_str("tokenHash")
        .map_err(|e| Error::Validation(vec![e]))?;
    let hash = match (token, hash_hex) {
        (Some(t), None) => {
            let t = t.trim();
            if !crate::domain::token::is_well_formed(t.as_bytes()) {
                return Err(Error::Validation(vec![FieldError::new(
                    "token",
                    "Not a pa-auth token (pa_ + 46 characters with a valid checksum)",
                )]));
            }
            crate::domain::token::TokenHash::of(t.as_bytes())
        }
        (None, Some(h)) => {
            crate::domain::token::TokenHash::from_hex(h.trim()).ok_or_else(|| {
                Error::Validation(vec![FieldError::new(
                    "tokenHash",
                    "Must be 64 hexadecimal characters",
                )])
            })?
        }
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "token",
                "Give exactly one of token or tokenHash",
            )]))
        }
    };
    let (record, used) = app.service.lookup_token(&who.actor(req), &hash, now)?;
    Ok(Response::json(
        200,
        &TokenView::new(&record, used, now, app.service.lifetime_policy()),
    ))
}

/// `GET /admin/api/backup`: a consistent, checksummed snapshot (`.pab`) of tokens, admins
/// and the audit log. Token and admin changes wait while it is taken.
pub fn backup(app: &App, req: &Request<'_>, who: &AdminIdentity, now: i64) -> Result<Response> {
    let mut backup = Vec::new();
    if req.method() == "HEAD" {
        // Same headers (and length) as GET, but nothing is handed over: not audited.
        backup = app.service.backup_snapshot(now)?;
    } else {
        app.service.backup(&who.actor(req), now, |bytes| {
            backup = bytes;
            Ok(())
        })?;
    }
    let bytes = backup;
    let date = crate::domain::time::format_rfc3339(now).replace(':', "");
    Ok(Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Disposition",
            format!("attachment; filename=\"pa-auth-{date}.pab\""),
        )
        .body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let q = QueryParams::parse(Some("limit=5&cursor=ab%63&x")).unwrap();
        assert_eq!(q.limit().unwrap(), 5);
        assert_eq!(q.get("cursor"), Some("abc"));
        assert!(QueryParams::parse(Some("limit=1&limit=2")).is_err());
        assert!(QueryParams::parse(Some("a=%zz")).is_err());
        for bad in ["0", "1001", "-1", "+5", "abc", ""] {
            let q = QueryParams::parse(Some(&format!("limit={bad}"))).unwrap();
            assert!(q.limit().is_err(), "{bad}");
        }
        assert_eq!(QueryParams::parse(None).unwrap().limit().unwrap(), 100);
    }
}
