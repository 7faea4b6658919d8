//! The service's error: what a use-case can answer instead of its result. The web layer maps
//! each to a status and the contract's JSON body (`crate::web::error`); the CLI to a message
//! and an exit code ([`Error::exit_code`]).

use std::fmt;
use std::path::PathBuf;

pub use crate::domain::token::AuthFailure;
pub use crate::domain::token_fields::FieldError;

/// Service result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// This node cannot answer now (a cluster node that lost track of the database): 503.
    Unavailable(&'static str),
    /// Login throttled; retry after this many seconds (429).
    TooManyRequests { retry_after_secs: u64 },
    /// The token could not be stored (500 `creation_failed`).
    CreationFailed(String),
    /// The store failed (a damaged store, a failed write).
    Store(crate::store::Error),
    /// A file-system or socket operation failed.
    Io(std::io::Error),
    /// A handler panicked or an invariant broke (500, logged, never detailed to the caller).
    Internal(String),
    /// Bad flags, environment or files: exit code 2 at the command line.
    Config(String),
    /// Another pa-auth process holds the data dir: exit code 2.
    DataDirLocked(PathBuf),
    /// A command that could not do what was asked (no such token, a name taken, a refused
    /// request), as the command line says it: exit code 1.
    Failed(String),
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
            Error::Unavailable(m) => write!(f, "unavailable: {m}"),
            Error::TooManyRequests { retry_after_secs } => {
                write!(
                    f,
                    "too many failed logins; retry after {retry_after_secs} s"
                )
            }
            Error::CreationFailed(m) => write!(f, "token could not be stored: {m}"),
            Error::Store(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
            Error::Config(m) | Error::Failed(m) => write!(f, "{m}"),
            Error::DataDirLocked(p) => write!(
                f,
                "data dir {} is held by another pa-auth process (a running server?); \
                 stop it first, or reach the server through its control socket (--socket)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::Error as S;
        match e {
            S::NameTaken(m) => Error::Conflict(m),
            S::CreationFailed(m) => Error::CreationFailed(m),
            S::Config(m) => Error::Config(m),
            S::DataDirLocked(p) => Error::DataDirLocked(p),
            S::InvalidCursor => {
                Error::Validation(vec![FieldError::new("cursor", "Invalid cursor")])
            }
            S::Unreachable(_) => {
                // Logged where it is met; the caller retries on this or another node.
                log::warn!("{e}");
                Error::Unavailable("The database cannot be reached; retry shortly")
            }
            other => Error::Store(other),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Store(crate::store::Error::Sled(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// Exit code at the command line: 2 for usage/configuration, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::DataDirLocked(_) | Error::Validation(_) => 2,
            _ => 1,
        }
    }
}
