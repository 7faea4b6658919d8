//! Leak response over HTTP: the admin API's revoke-by-value (`POST /admin/api/tokens/revoke`)
//! and bulk delete with a dry run (`POST /admin/api/tokens/bulk-delete`), and the
//! GitLab-compatible token revocation API (`GET …/v1/revocable_token_types`, `POST
//! …/v1/revoke_tokens` under `--revocation-api-prefix`) with its own credential and rate
//! limit. Values are read as hashes at once and never echoed, logged or audited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::admin_auth::AdminIdentity;
use crate::domain::audit::Actor;
use crate::domain::leak_response::{read_pasted, FilterInput, TokenFilter, MAX_PASTED};
use crate::domain::token::AuthFailure;
use crate::http::{Request, Response};
use crate::service::error::{Error, FieldError, Result};
use crate::service::leak_response::BulkConfirm;
use crate::service::leak_response::{RevokeOutcome, Revoked};
use crate::service::view::TokenView;
use crate::web::json_body::{is_json_content_type, parse_object};
use crate::web::App;

/// The token types the revocation API revokes. GitLab names a finding's type
/// `(identifier.type + "_" + identifier.value.tr(" ", "_")).downcase` (its
/// `ScanSecurityReportSecretsWorker#revocation_type`); the shipped gitleaks rule
/// (`deploy/secret-scanning/gitleaks.toml`) has the id `pa_auth_api_token` and the
/// description `pa-auth API token`, and analyzer versions differ in which of the two is the
/// identifier's value, so both spellings are listed.
pub const REVOCABLE_TYPES: [&str; 2] = [
    "gitleaks_rule_id_pa_auth_api_token",
    "gitleaks_rule_id_pa-auth_api_token",
];

/// Requests the revocation API answers per second, all callers together, counted before the
/// credential is checked (a flood of guesses costs a counter, not a hash or a log line
/// each); more get 429 with `Retry-After: 1`, which GitLab's contract says to retry.
pub const REVOCATION_API_PER_SECOND: u32 = 20;

/// The revocation API's credential (`--revocation-api-token-file`), kept as its blake3 hash
/// and compared in constant time, and its rate limit.
pub struct RevocationApi {
    credential_hash: [u8; 32],
    /// The authenticated callers' budget: (window start, requests in it).
    window: Mutex<(Instant, u32)>,
    /// Refused credentials: (window start, refusals in it), so a flood logs one line a
    /// second, not one a request.
    refusals: Mutex<(Instant, u64)>,
}

impl std::fmt::Debug for RevocationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevocationApi(<credential redacted>)")
    }
}

impl RevocationApi {
    /// From the credential (already checked by the config:
    /// [`crate::domain::leak_response::check_revocation_credential`]).
    pub fn new(credential: &str) -> RevocationApi {
        RevocationApi {
            credential_hash: *blake3::hash(credential.as_bytes()).as_bytes(),
            window: Mutex::new((Instant::now(), 0)),
            refusals: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Logs a refused credential: the first of each second, with how many the second
    /// before had.
    fn note_refusal(&self, failure: AuthFailure, peer: std::net::IpAddr, now: Instant) {
        let mut r = crate::sync::lock(&self.refusals);
        if now.duration_since(r.0) >= Duration::from_secs(1) {
            let before = r.1;
            *r = (now, 0);
            drop(r);
            log::warn!(
                "revocation API: credential refused ({}) from {peer}{}",
                failure.as_str(),
                if before > 1 {
                    format!(" ({before} refusals in the second before)")
                } else {
                    String::new()
                }
            );
            return;
        }
        r.1 += 1;
    }

    /// Counts a request against the per-second budget; `false` when it is spent.
    fn admit(&self, now: Instant) -> bool {
        let mut window = crate::sync::lock(&self.window);
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= REVOCATION_API_PER_SECOND
    }

    /// Whether `Authorization` carries the credential: as GitLab sends it (the value alone)
    /// or as `Bearer <credential>`. One header only.
    fn accepts(&self, req: &Request<'_>) -> std::result::Result<(), AuthFailure> {
        let mut values = req.headers_named("authorization");
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(AuthFailure::Missing);
        };
        let value = crate::http::head::trim_ows(value);
        let presented = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                crate::http::head::trim_ows(&value[7..])
            }
            _ => value,
        };
        if presented.is_empty() || presented.len() > 512 {
            return Err(AuthFailure::Malformed);
        }
        let hash = blake3::hash(presented);
        if bool::from(hash.as_bytes().ct_eq(&self.credential_hash)) {
            Ok(())
        } else {
            Err(AuthFailure::Unknown)
        }
    }
}

/// The revocation API's guard: the credential (one blake3 and a constant-time comparison,
/// cheap enough for any flood), then the rate limit of the authenticated caller — so
/// strangers can spend neither the holder's budget nor (answered before their body, see
/// [`refuse_before_body`]) the body places. Without the flag the routes do not exist (404
/// before this is reached).
pub fn authenticate_revocation_api(app: &App, req: &Request<'_>) -> Result<()> {
    let api = app.revocation_api.as_ref().ok_or(Error::NotFound)?;
    if let Err(failure) = api.accepts(req) {
        api.note_refusal(failure, req.peer().ip(), Instant::now());
        return Err(Error::Unauthorized(failure));
    }
    if !api.admit(Instant::now()) {
        return Err(Error::TooManyRequests {
            retry_after_secs: 1,
        });
    }
    Ok(())
}

/// Before a body is read on the revocation API: a wrong or missing credential is answered
/// at once, so it never holds a body place (as admin routes refuse a missing credential).
pub fn refuse_before_body(app: &App, req: &Request<'_>) -> Option<Error> {
    if super::routes::route_of(req.path()) != super::routes::Route::RevocationApi {
        return None;
    }
    let api = app.revocation_api.as_ref()?;
    api.accepts(req).err().map(|failure| {
        api.note_refusal(failure, req.peer().ip(), Instant::now());
        Error::Unauthorized(failure)
    })
}

/// `GET …/v1/revocable_token_types` → `{"types": ["gitleaks_rule_id_pa_auth_api_token"]}`.
pub fn revocable_token_types() -> Response {
    Response::json(200, &json!({ "types": REVOCABLE_TYPES }))
}

/// `POST …/v1/revoke_tokens` `[{"type", "token", "location"?, "vulnerability"?, …}, …]` → 204 once every
/// known token is deleted (idempotent: unknown and malformed values are accepted and do
/// nothing); 400 for a body that is not such an array, an entry without a string `type` and
/// `token`, a type not in [`REVOCABLE_TYPES`], or more than 1000 entries (GitLab: do not
/// retry). Other fields GitLab sends (`location`, …) are ignored and never stored.
pub fn revocation_revoke_tokens(app: &App, req: &Request<'_>, now: i64) -> Result<Response> {
    if !is_json_content_type(req.header("content-type")) {
        return Err(Error::BadRequest(
            "Content-Type must be application/json".into(),
        ));
    }
    let body: Vec<Value> = serde_json::from_slice(req.body()).map_err(|_| {
        Error::BadRequest("Request body must be a JSON array of {type, token} objects".into())
    })?;
    if body.len() > MAX_PASTED {
        return Err(Error::Validation(vec![FieldError::new(
            "tokens",
            format!("At most {MAX_PASTED} tokens a request"),
        )]));
    }
    let mut values = Vec::with_capacity(body.len());
    let mut errors = Vec::new();
    for (i, entry) in body.iter().enumerate() {
        let kind = entry.get("type").and_then(Value::as_str);
        let token = entry.get("token").and_then(Value::as_str);
        match (kind, token) {
            (Some(kind), Some(token)) if REVOCABLE_TYPES.contains(&kind) => {
                values.push(read_pasted(token));
            }
            (Some(_), Some(_)) => errors.push(FieldError::new(
                format!("[{i}].type"),
                format!(
                    "Unsupported token type (this API revokes {})",
                    REVOCABLE_TYPES.join(", ")
                ),
            )),
            _ => errors.push(FieldError::new(
                format!("[{i}]"),
                "Each entry needs a string type and a string token",
            )),
        }
        if errors.len() >= 20 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let actor = Actor {
        name: "revocation-api".to_owned(),
        remote_addr: Some(req.peer().ip().to_string()),
    };
    app.service.revoke_leaked(
        &actor,
        &values,
        "revoked: leaked (reported to the revocation API)",
        now,
    )?;
    Ok(Response::new(204))
}

/// `POST /admin/api/tokens/revoke` `{"tokens": ["pa_…", …]}` (1 to 1000 strings, pasted as
/// they come: whitespace, quotes, a trailing comma or `Bearer ` around each are fine) →
/// 200 with what was found and deleted, by id and name, and counts of the rest. Never
/// echoes a value.
pub fn revoke_tokens(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let body = parse_object(req.header("content-type"), req.body(), &["tokens"])?;
    let invalid = |message: String| Error::Validation(vec![FieldError::new("tokens", message)]);
    let list = match body.value("tokens") {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(invalid("This field is required".into())),
        Some(_) => return Err(invalid("Must be an array of strings".into())),
    };
    if list.is_empty() || list.len() > MAX_PASTED {
        return Err(invalid(format!("Give 1 to {MAX_PASTED} values")));
    }
    let mut values = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let Some(s) = v.as_str() else {
            return Err(Error::Validation(vec![FieldError::new(
                format!("tokens[{i}]"),
                "Must be a string",
            )]));
        };
        values.push(read_pasted(s));
    }
    let actor = who.actor(req);
    let outcome = app
        .service
        .revoke_leaked(&actor, &values, "revoked: leaked", now)?;
    Ok(Response::json(200, &revoke_answer(&outcome)))
}

/// The revoke answer: ids and names of what was deleted, counts of the rest.
pub fn revoke_answer(outcome: &RevokeOutcome) -> Value {
    let named = |list: &[Revoked]| -> Vec<Value> {
        list.iter()
            .map(|r| json!({"id": r.id.to_string(), "name": r.name}))
            .collect()
    };
    json!({
        "revoked": named(&outcome.revoked),
        "unknown": outcome.unknown,
        "malformed": outcome.malformed,
        "duplicates": outcome.duplicates,
        "failed": named(&outcome.failed),
    })
}

/// `POST /admin/api/tokens/bulk-delete` `{owner?, createdBefore?, unusedForDays?, neverUsed?,
/// namePrefix?, all?, dryRun? (default true), confirmCount?, confirmSelection?}`. A dry run
/// answers the count, a sample and the selection digest; a real run (`dryRun: false`) needs
/// `confirmCount`, re-evaluates the filter and answers 409 if it no longer selects exactly
/// that many (or, given `confirmSelection`, other tokens).
pub fn bulk_delete(
    app: &App,
    req: &Request<'_>,
    who: &AdminIdentity,
    now: i64,
) -> Result<Response> {
    let body = parse_object(
        req.header("content-type"),
        req.body(),
        &[
            "owner",
            "createdBefore",
            "unusedForDays",
            "neverUsed",
            "namePrefix",
            "all",
            "dryRun",
            "confirmCount",
            "confirmSelection",
        ],
    )?;
    let mut errors = Vec::new();
    let e = &mut errors;
    let owner = kept(e, body.optional_str("owner"));
    let created_before = kept(e, body.optional_str("createdBefore"));
    let unused_for_days = kept(e, body.optional_u64("unusedForDays"));
    let never_used = kept(e, body.optional_bool("neverUsed")).unwrap_or(false);
    let name_prefix = kept(e, body.optional_str("namePrefix"));
    let all = kept(e, body.optional_bool("all")).unwrap_or(false);
    let dry_run = kept(e, body.optional_bool("dryRun")).unwrap_or(true);
    let confirm_count = kept(e, body.optional_u64("confirmCount"));
    let confirm_selection = kept(e, body.optional_str("confirmSelection"));
    if confirm_selection.is_some() && confirm_count.is_none() {
        errors.push(FieldError::new(
            "confirmSelection",
            "Only with confirmCount (a real run)",
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let filter = TokenFilter::new(&FilterInput {
        owner,
        created_before,
        unused_for_days,
        never_used,
        name_prefix,
        all,
    })
    .map_err(Error::Validation)?;
    let confirm = match (dry_run, confirm_count) {
        (true, None) => None,
        (false, Some(n)) => Some(BulkConfirm {
            count: n,
            selection: confirm_selection,
        }),
        (true, Some(_)) => {
            return Err(Error::Validation(vec![FieldError::new(
                "confirmCount",
                "Only with dryRun: false (a dry run changes nothing)",
            )]))
        }
        (false, None) => {
            return Err(Error::Validation(vec![FieldError::new(
                "confirmCount",
                "Required with dryRun: false: the count the dry run showed",
            )]))
        }
    };
    let actor = who.actor(req);
    let outcome = app.service.bulk_delete(&actor, &filter, confirm, now)?;
    let policy = app.service.lifetime_policy();
    if confirm.is_none() {
        let sample: Vec<TokenView> = outcome
            .sample
            .iter()
            .map(|(r, used)| {
                let previous = app.service.previous_secret_of(r.id, now)?;
                Ok(TokenView::new(r, *used, now, policy).with_previous(previous))
            })
            .collect::<Result<_>>()?;
        return Ok(Response::json(
            200,
            &json!({
                "dryRun": true,
                "count": outcome.count,
                "sample": sample,
                "selection": outcome.selection,
            }),
        ));
    }
    let failed: Vec<Value> = outcome
        .failed
        .iter()
        .map(|r| json!({"id": r.id.to_string(), "name": r.name}))
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "dryRun": false,
            "count": outcome.count,
            "deleted": outcome.deleted,
            "failed": failed,
        }),
    ))
}

/// A field's value, or `None` with its error kept in `errors` (every bad field is reported).
fn kept<T>(
    errors: &mut Vec<FieldError>,
    r: std::result::Result<Option<T>, FieldError>,
) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok().flatten()
}
