//! pa-auth: the API token service of Permission Assist, as a library the thin `pa-auth`
//! binary (and the fuzz targets) link against. One module per concern; see the README's
//! "Architecture" section for the map.

// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod error;
pub mod http;
pub mod logging;
pub mod time_format;

pub use error::{Error, Result};
pub mod auth;
pub mod store;
pub mod token_fields;
pub mod tokens;
