//! The crate's one error enum, its `Result` alias, and the one place where an error becomes
//! an HTTP response (status, `error` code, message, headers). Every non-2xx response the
//! service writes, from the HTTP layer's framing rejections to a failed store write, goes
//! through [`Error::to_response`], so the JSON error format lives here and nowhere else.

use std::fmt;
use std::path::PathBuf;

use crate::http::{CorrelationId, Response};

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request body or query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON field or query parameter, as the caller spelled it in the contract.
    pub field: String,
    /// What is wrong with it, for humans.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why an API-token credential was refused. Kept for logs, audit and metrics; never told to
/// the caller, who always reads the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization` header, or one with another scheme.
    Missing,
    /// A Bearer credential that is not a well-formed pa-auth token (or two headers).
    Malformed,
    /// Well-formed, but no such token is stored (never existed, or deleted).
    Unknown,
    /// The token exists but `now >= expiresAt`.
    Expired,
}

impl AuthFailure {
    /// Stable lower-case label, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Expired => "expired",
        }
    }
}

/// Everything that can go wrong in pa-auth.
#[derive(Debug)]
pub enum Error {
    /// One or more request fields are invalid (400 `validation_error` with `errors`).
    Validation(Vec<FieldError>),
    /// The request could not be understood at all: bad framing, bad JSON, bad content type
    /// (400 `validation_error`, no field list).
    BadRequest(String),
    /// An API-token credential was refused (401 with the RFC 6750 challenge).
    Unauthorized(AuthFailure),
    /// An admin route without a valid admin credential (401). `basic_challenge` is false for
    /// the console's own requests, so the browser shows our login page, not a Basic prompt.
    AdminUnauthorized { basic_challenge: bool },
    /// Authenticated, but not allowed: an API token on an admin route, or a failed CSRF check.
    Forbidden(&'static str),
    /// No such route or resource.
    NotFound,
    /// The route exists, the method does not; carries the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A token with that name already exists (case-insensitive).
    Conflict(String),
    /// The request body is over the limit (413).
    PayloadTooLarge,
    /// The request head is over the size or field-count limit (431).
    HeadTooLarge,
    /// The client did not send a complete request head in time (408).
    RequestTimeout,
    /// The open-connection cap is reached (503).
    Overloaded,
    /// The request line names an HTTP version other than 1.0 or 1.1 (505).
    HttpVersionNotSupported,
    /// Login throttled; retry after this many seconds (429).
    TooManyRequests { retry_after_secs: u64 },
    /// The token could not be stored (500 `creation_failed`).
    CreationFailed(String),
    /// The embedded store failed.
    Store(sled::Error),
    /// Stored bytes did not decode: the data dir is damaged or from another version.
    Corrupt(String),
    /// A file-system or socket operation failed.
    Io(std::io::Error),
    /// A handler panicked or an invariant broke (500, logged, never detailed to the caller).
    Internal(String),
    /// Bad flags, environment or files: exit code 2 at the command line.
    Config(String),
    /// Another pa-auth process holds the data dir: exit code 2.
    DataDirLocked(PathBuf),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Validation(errors) => {
                write!(f, "validation failed")?;
                for e in errors {
                    write!(f, "; {}: {}", e.field, e.message)?;
                }
                Ok(())
            }
            Error::BadRequest(m) => write!(f, "bad request: {m}"),
            Error::Unauthorized(r) => write!(f, "API token refused ({})", r.as_str()),
            Error::AdminUnauthorized { .. } => write!(f, "admin credentials required"),
            Error::Forbidden(m) => write!(f, "forbidden: {m}"),
            Error::NotFound => write!(f, "not found"),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed (allow: {allow})"),
            Error::Conflict(m) => write!(f, "conflict: {m}"),
            Error::PayloadTooLarge => write!(f, "request body too large"),
            Error::HeadTooLarge => write!(f, "request head too large"),
            Error::RequestTimeout => write!(f, "request head not received in time"),
            Error::Overloaded => write!(f, "too many open connections"),
            Error::HttpVersionNotSupported => write!(f, "HTTP version not supported"),
            Error::TooManyRequests { retry_after_secs } => {
                write!(
                    f,
                    "too many failed logins; retry after {retry_after_secs} s"
                )
            }
            Error::CreationFailed(m) => write!(f, "token could not be stored: {m}"),
            Error::Store(e) => write!(f, "store error: {e}"),
            Error::Corrupt(m) => write!(f, "stored data is damaged: {m}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
            Error::Config(m) => write!(f, "{m}"),
            Error::DataDirLocked(p) => write!(
                f,
                "data dir {} is held by another pa-auth process (a running server?); \
                 stop it first or use the admin API",
                p.display()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// The contract's error body, fields in the documented order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    correlation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldErrorBody<'a>>>,
}

#[derive(serde::Serialize)]
struct FieldErrorBody<'a> {
    field: &'a str,
    message: &'a str,
}

/// The message every API-token 401 carries, whatever the reason (the seed docs' wording).
pub const INVALID_TOKEN_MESSAGE: &str = "Invalid or expired authentication token";

impl Error {
    /// Exit code at the command line: 2 for usage/configuration, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::DataDirLocked(_) | Error::Validation(_) => 2,
            _ => 1,
        }
    }

    /// Status and `error` code of the JSON body.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Error::Validation(_) | Error::BadRequest(_) => (400, "validation_error"),
            Error::Unauthorized(_) | Error::AdminUnauthorized { .. } => (401, "unauthorized"),
            Error::Forbidden(_) => (403, "forbidden"),
            Error::NotFound => (404, "not_found"),
            Error::MethodNotAllowed(_) => (405, "method_not_allowed"),
            Error::RequestTimeout => (408, "request_timeout"),
            Error::Conflict(_) => (409, "conflict"),
            Error::PayloadTooLarge => (413, "payload_too_large"),
            Error::TooManyRequests { .. } => (429, "too_many_requests"),
            Error::HeadTooLarge => (431, "request_header_fields_too_large"),
            Error::CreationFailed(_) => (500, "creation_failed"),
            Error::Overloaded => (503, "service_unavailable"),
            Error::HttpVersionNotSupported => (505, "http_version_not_supported"),
            Error::Store(_)
            | Error::Corrupt(_)
            | Error::Io(_)
            | Error::Internal(_)
            | Error::Config(_)
            | Error::DataDirLocked(_) => (500, "server_error"),
        }
    }

    /// The caller-facing message: never internals, never a secret.
    fn public_message(&self) -> String {
        match self {
            Error::Validation(_) => "Request validation failed".into(),
            Error::BadRequest(m) => m.clone(),
            Error::Unauthorized(_) => INVALID_TOKEN_MESSAGE.into(),
            Error::AdminUnauthorized { .. } => "Admin authentication required".into(),
            Error::Forbidden(m) => (*m).into(),
            Error::NotFound => "Not found".into(),
            Error::MethodNotAllowed(allow) => format!("Method not allowed; allowed: {allow}"),
            Error::Conflict(m) => m.clone(),
            Error::PayloadTooLarge => "Request body is larger than allowed".into(),
            Error::HeadTooLarge => "Request head is larger than allowed".into(),
            Error::RequestTimeout => "Request head was not received in time".into(),
            Error::Overloaded => "Server is at its connection limit; retry shortly".into(),
            Error::HttpVersionNotSupported => "Only HTTP/1.0 and HTTP/1.1 are supported".into(),
            Error::TooManyRequests { .. } => "Too many failed login attempts; retry later".into(),
            Error::CreationFailed(_) => "The token could not be stored".into(),
            _ => "Internal server error".into(),
        }
    }

    /// The HTTP response for this error: JSON body, `X-Correlation-Id` (added by the server),
    /// and the headers the contract asks for per status. The one error→HTTP mapping.
    pub fn to_response(&self, correlation_id: &CorrelationId) -> Response {
        let (status, code) = self.status_and_code();
        let errors: Option<Vec<FieldErrorBody<'_>>> = match self {
            Error::Validation(list) => Some(
                list.iter()
                    .map(|e| FieldErrorBody {
                        field: &e.field,
                        message: &e.message,
                    })
                    .collect(),
            ),
            _ => None,
        };
        let body = ErrorBody {
            error: code,
            message: self.public_message(),
            correlation_id: correlation_id.as_str(),
            errors,
        };
        let mut response = Response::json(status, &body);
        match self {
            Error::Unauthorized(reason) => {
                let challenge = match reason {
                    AuthFailure::Missing => r#"Bearer realm="pa-auth""#,
                    AuthFailure::Malformed => r#"Bearer realm="pa-auth", error="invalid_request""#,
                    AuthFailure::Unknown | AuthFailure::Expired => {
                        r#"Bearer realm="pa-auth", error="invalid_token""#
                    }
                };
                response = response.header("WWW-Authenticate", challenge);
            }
            Error::AdminUnauthorized { basic_challenge } => {
                let challenge = if *basic_challenge {
                    r#"Basic realm="pa-auth admin", charset="UTF-8""#
                } else {
                    r#"Session realm="pa-auth admin""#
                };
                response = response.header("WWW-Authenticate", challenge);
            }
            Error::MethodNotAllowed(allow) => response = response.header("Allow", *allow),
            Error::TooManyRequests { retry_after_secs } => {
                response = response.header("Retry-After", retry_after_secs.to_string());
            }
            Error::BadRequest(_)
            | Error::PayloadTooLarge
            | Error::HeadTooLarge
            | Error::RequestTimeout
            | Error::Overloaded
            | Error::HttpVersionNotSupported => response = response.close(),
            _ => {}
        }
        if status == 503 {
            response = response.header("Retry-After", "1");
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(r: &Response) -> serde_json::Value {
        serde_json::from_slice(r.body_bytes()).unwrap()
    }

    #[test]
    fn every_error_maps_to_contract_status_and_code() {
        let cid = CorrelationId::from_hex(b"0123456789abcdef0123456789abcdef").unwrap();
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                Error::Validation(vec![FieldError::new("name", "required")]),
                400,
                "validation_error",
            ),
            (Error::BadRequest("x".into()), 400, "validation_error"),
            (
                Error::Unauthorized(AuthFailure::Missing),
                401,
                "unauthorized",
            ),
            (
                Error::AdminUnauthorized {
                    basic_challenge: true,
                },
                401,
                "unauthorized",
            ),
            (Error::Forbidden("no"), 403, "forbidden"),
            (Error::NotFound, 404, "not_found"),
            (Error::MethodNotAllowed("GET"), 405, "method_not_allowed"),
            (Error::Conflict("dup".into()), 409, "conflict"),
            (Error::PayloadTooLarge, 413, "payload_too_large"),
            (
                Error::TooManyRequests {
                    retry_after_secs: 7,
                },
                429,
                "too_many_requests",
            ),
            (Error::CreationFailed("disk".into()), 500, "creation_failed"),
            (Error::Internal("secret detail".into()), 500, "server_error"),
        ];
        for (err, status, code) in cases {
            let r = err.to_response(&cid);
            assert_eq!(r.status(), status, "{err}");
            let v = body_json(&r);
            assert_eq!(v["error"], code);
            assert_eq!(v["correlationId"], cid.as_str());
            assert!(v["message"].is_string());
        }
    }

    #[test]
    fn unauthorized_challenges_follow_rfc6750() {
        let cid = CorrelationId::generate();
        let get = |f| {
            Error::Unauthorized(f)
                .to_response(&cid)
                .header_value("WWW-Authenticate")
                .map(str::to_owned)
        };
        assert_eq!(
            get(AuthFailure::Missing).unwrap(),
            r#"Bearer realm="pa-auth""#
        );
        assert!(get(AuthFailure::Malformed)
            .unwrap()
            .ends_with(r#"error="invalid_request""#));
        assert!(get(AuthFailure::Unknown)
            .unwrap()
            .ends_with(r#"error="invalid_token""#));
        assert!(get(AuthFailure::Expired)
            .unwrap()
            .ends_with(r#"error="invalid_token""#));
        let v = body_json(&Error::Unauthorized(AuthFailure::Expired).to_response(&cid));
        assert_eq!(v["message"], INVALID_TOKEN_MESSAGE);
    }

    #[test]
    fn internals_never_reach_the_caller() {
        let cid = CorrelationId::generate();
        let r = Error::Internal("path /var/lib/x leaked".into()).to_response(&cid);
        assert!(!String::from_utf8_lossy(r.body_bytes()).contains("/var/lib"));
        let r = Error::CreationFailed("ENOSPC".into()).to_response(&cid);
        assert!(!String::from_utf8_lossy(r.body_bytes()).contains("ENOSPC"));
    }

    #[test]
    fn validation_lists_fields_and_extra_headers_are_set() {
        let cid = CorrelationId::generate();
        let r = Error::Validation(vec![FieldError::new("expiresAt", "must be in the future")])
            .to_response(&cid);
        let v = body_json(&r);
        assert_eq!(v["errors"][0]["field"], "expiresAt");
        let r = Error::MethodNotAllowed("GET, DELETE").to_response(&cid);
        assert_eq!(r.header_value("Allow"), Some("GET, DELETE"));
        let r = Error::TooManyRequests {
            retry_after_secs: 30,
        }
        .to_response(&cid);
        assert_eq!(r.header_value("Retry-After"), Some("30"));
    }
}
