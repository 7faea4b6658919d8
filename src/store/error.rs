//! What can go wrong below the service: the store's own error type. The service turns each
//! into its own error (a taken name into a conflict, the rest into a failed write or a
//! damaged store); nothing here knows about HTTP or exit codes.

use std::fmt;
use std::path::PathBuf;

/// Store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation that failed.
#[derive(Debug)]
pub enum Error {
    /// The embedded database failed.
    Sled(sled::Error),
    /// PostgreSQL refused or failed a statement (cluster mode).
    Database(postgres::Error),
    /// PostgreSQL cannot be reached (down, restarting, the connection lost).
    Unreachable(String),
    /// Stored bytes did not decode: the data dir is damaged or from another version.
    Corrupt(String),
    /// A file-system operation failed.
    Io(std::io::Error),
    /// The data dir cannot be used as configured (not a directory, not writable, ...).
    Config(String),
    /// Another pa-auth process holds the data dir.
    DataDirLocked(PathBuf),
    /// A token with that name (ignoring case) exists.
    NameTaken(String),
    /// A new token could not be stored (a collision, a failed write).
    CreationFailed(String),
    /// A listing cursor that does not name a position.
    InvalidCursor,
    /// An invariant of the store broke.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sled(e) => write!(f, "store error: {e}"),
            Error::Database(e) => match e.as_db_error() {
                // rust-postgres' own Display says only "db error".
                Some(db) => write!(f, "database error {}: {}", db.code().code(), db.message()),
                None => write!(f, "database error: {e}"),
            },
            Error::Unreachable(m) => write!(f, "the database cannot be reached: {m}"),
            Error::Corrupt(m) => write!(f, "stored data is damaged: {m}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Config(m) => write!(f, "{m}"),
            Error::DataDirLocked(p) => write!(
                f,
                "data dir {} is held by another pa-auth process (a running server?); \
                 stop it first or use the admin API",
                p.display()
            ),
            Error::NameTaken(m) => write!(f, "conflict: {m}"),
            Error::CreationFailed(m) => write!(f, "token could not be stored: {m}"),
            Error::InvalidCursor => write!(f, "invalid cursor"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Sled(e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        // Connection-level: no database answer at all, or the server going away (08: connection
        // exceptions; 57P: operator intervention, e.g. shutting down).
        let unreachable = e.is_closed()
            || e.as_db_error().is_none_or(|d| {
                let code = d.code().code();
                code.starts_with("08") || code.starts_with("57P")
            });
        if unreachable {
            Error::Unreachable(match e.as_db_error() {
                Some(d) => d.message().to_owned(),
                None => e.to_string(),
            })
        } else {
            Error::Database(e)
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
