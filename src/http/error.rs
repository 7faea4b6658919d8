//! The HTTP layer's own refusals: what it answers without asking the handler (framing,
//! limits, time-outs, overload, a handler that panicked). The layer only decides *which*
//! refusal; the response body is the handler's business ([`super::Handler::refusal`]), so the
//! service's one error format covers these too.

use std::fmt;

/// A request the layer refuses by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request could not be understood: bad framing, request line or target (400).
    BadRequest(String),
    /// A header line holds a byte no header may hold (NUL, another control byte, obs-fold).
    /// 400, unless the handler treats requests to `path` (the request line's path, when it
    /// could be read) otherwise; a forward-auth endpoint answers a credential refusal.
    MalformedHeaderField {
        path: Option<String>,
        message: String,
    },
    /// The body is over the limit (413).
    PayloadTooLarge,
    /// The head is over the size or field-count limit (431).
    HeadTooLarge,
    /// No complete head (or body) in time (408).
    RequestTimeout,
    /// The open-connection or queue cap is reached (503).
    Overloaded,
    /// The request line names an HTTP version other than 1.0 or 1.1 (505).
    HttpVersionNotSupported,
    /// The handler panicked or produced an unsendable response (500; never detailed).
    Internal(&'static str),
}

impl Error {
    /// The status the refusal carries.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::MalformedHeaderField { .. } => 400,
            Error::PayloadTooLarge => 413,
            Error::HeadTooLarge => 431,
            Error::RequestTimeout => 408,
            Error::Overloaded => 503,
            Error::HttpVersionNotSupported => 505,
            Error::Internal(_) => 500,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m) => write!(f, "bad request: {m}"),
            Error::MalformedHeaderField { message, .. } => write!(f, "bad request: {message}"),
            Error::PayloadTooLarge => write!(f, "request body too large"),
            Error::HeadTooLarge => write!(f, "request head too large"),
            Error::RequestTimeout => write!(f, "request head not received in time"),
            Error::Overloaded => write!(f, "too many open connections"),
            Error::HttpVersionNotSupported => write!(f, "HTTP version not supported"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// A certificate or key that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Renders a refusal as a response: the handler's error format, set in
/// [`super::ServerConfig::refusal`]. It must not panic.
pub type Refusal = fn(&Error, &super::CorrelationId) -> super::Response;

/// The layer's own rendering, used until a handler supplies its format: the status and a
/// one-line text body.
pub fn plain_refusal(error: &Error, _correlation_id: &super::CorrelationId) -> super::Response {
    let response = super::Response::new(error.status())
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(format!("{error}\n").into_bytes());
    match error {
        Error::Overloaded => response.header("Retry-After", "1").close(),
        Error::Internal(_) => response,
        _ => response.close(),
    }
}
