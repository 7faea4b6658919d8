//! The one place where an error becomes an HTTP response: status, the contract's `error`
//! code and JSON body (`error`, `message`, `correlationId`, `errors`), and the headers each
//! status needs. The service's errors ([`Error`]) and the HTTP layer's own refusals
//! ([`http::Error`], through [`refusal`]) both end here, so the error format lives here and
//! nowhere else.

use crate::http::{self, CorrelationId, Response};
use crate::service::error::{AuthFailure, Error, FieldError};

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
    /// Status and `error` code of the JSON body.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Error::Validation(_) | Error::BadRequest(_) => (400, "validation_error"),
            Error::Unauthorized(_) | Error::AdminUnauthorized { .. } => (401, "unauthorized"),
            Error::Forbidden(_) => (403, "forbidden"),
            Error::NotFound => (404, "not_found"),
            Error::MethodNotAllowed(_) => (405, "method_not_allowed"),
            Error::Conflict(_) => (409, "conflict"),
            Error::TooManyRequests { .. } => (429, "too_many_requests"),
            Error::Unavailable(_) => (503, "service_unavailable"),
            Error::CreationFailed(_) => (500, "creation_failed"),
            Error::Store(_)
            | Error::Io(_)
            | Error::Internal(_)
            | Error::Config(_)
            | Error::DataDirLocked(_)
            | Error::Failed(_) => (500, "server_error"),
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
            Error::TooManyRequests { .. } => "Too many failed login attempts; retry later".into(),
            Error::CreationFailed(_) => "The token could not be stored".into(),
            Error::Unavailable(m) => (*m).into(),
            _ => "Internal server error".into(),
        }
    }

    /// The HTTP response for this error: JSON body, `X-Correlation-Id` (added by the server),
    /// and the headers the contract asks for per status.
    pub fn to_response(&self, correlation_id: &CorrelationId) -> Response {
        let (status, code) = self.status_and_code();
        let errors = match self {
            Error::Validation(list) => Some(list.as_slice()),
            _ => None,
        };
        let mut response = json_error(status, code, self.public_message(), errors, correlation_id);
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
            Error::BadRequest(_) => response = response.close(),
            Error::Unavailable(_) => response = response.header("Retry-After", "1"),
            _ => {}
        }
        response
    }
}

/// The HTTP layer's own refusals, in the same format (the server's
/// [`http::ServerConfig::refusal`]). The connection closes after each.
pub fn refusal(error: &http::Error, correlation_id: &CorrelationId) -> Response {
    let (code, message) = match error {
        http::Error::MalformedHeaderField {
            path: Some(path), ..
        } if super::routes::route_of(path) == super::routes::Route::Verify => {
            // Every credential problem on forward-auth is a 401: a proxy turns any other
            // status into a 500 for its client.
            return Error::Unauthorized(AuthFailure::Malformed)
                .to_response(correlation_id)
                .close();
        }
        http::Error::BadRequest(m) | http::Error::MalformedHeaderField { message: m, .. } => {
            ("validation_error", m.clone())
        }
        http::Error::PayloadTooLarge => (
            "payload_too_large",
            "Request body is larger than allowed".into(),
        ),
        http::Error::HeadTooLarge => (
            "request_header_fields_too_large",
            "Request head is larger than allowed".into(),
        ),
        http::Error::RequestTimeout => (
            "request_timeout",
            "Request head was not received in time".into(),
        ),
        http::Error::Overloaded => (
            "service_unavailable",
            "Server is at its connection limit; retry shortly".into(),
        ),
        http::Error::HttpVersionNotSupported => (
            "http_version_not_supported",
            "Only HTTP/1.0 and HTTP/1.1 are supported".into(),
        ),
        http::Error::Internal(_) => {
            return Error::Internal(String::new()).to_response(correlation_id);
        }
    };
    let response = json_error(error.status(), code, message, None, correlation_id).close();
    if error.status() == 503 {
        response.header("Retry-After", "1")
    } else {
        response
    }
}

/// The contract's error body as a response.
fn json_error(
    status: u16,
    code: &'static str,
    message: String,
    errors: Option<&[FieldError]>,
    correlation_id: &CorrelationId,
) -> Response {
    let errors = errors.map(|list| {
        list.iter()
            .map(|e| FieldErrorBody {
                field: &e.field,
                message: &e.message,
            })
            .collect()
    });
    let body = ErrorBody {
        error: code,
        message,
        correlation_id: correlation_id.as_str(),
        errors,
    };
    Response::json(status, &body)
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
    fn layer_refusals_share_the_format_and_forward_auth_gets_its_401() {
        let cid = CorrelationId::generate();
        let r = refusal(&http::Error::PayloadTooLarge, &cid);
        assert_eq!(r.status(), 413);
        assert_eq!(body_json(&r)["error"], "payload_too_large");
        assert_eq!(body_json(&r)["correlationId"], cid.as_str());
        let r = refusal(&http::Error::Overloaded, &cid);
        assert_eq!(r.header_value("Retry-After"), Some("1"));
        let bad_field = |path: &str| http::Error::MalformedHeaderField {
            path: Some(path.into()),
            message: "malformed request head: invalid header value".into(),
        };
        for path in ["/auth/verify", "/auth/verify/a"] {
            let r = refusal(&bad_field(path), &cid);
            assert_eq!(r.status(), 401, "{path}");
            assert!(r.header_value("WWW-Authenticate").is_some());
        }
        for path in ["/healthz", "/auth/verifyx", "/x", "/admin/api/tokens"] {
            assert_eq!(refusal(&bad_field(path), &cid).status(), 400, "{path}");
        }
        let r = refusal(&http::Error::Internal("detail"), &cid);
        assert_eq!(r.status(), 500);
        assert!(!String::from_utf8_lossy(r.body_bytes()).contains("detail"));
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
