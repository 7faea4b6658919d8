//! pa-auth: the API token service of Permission Assist, as a library the thin `pa-auth`
//! binary (and the fuzz targets) link against. One module per concern; see the README's
//! "Architecture" section for the map.

// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod error;
pub mod http;
pub mod inline_text;
pub mod logging;
pub mod time_format;

pub use error::{Error, Result};
pub mod admin;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod console;
pub mod flusher;
pub mod fuzz_checks;
pub mod json_body;
pub mod last_used;
pub mod metrics;
pub mod redact;
pub mod serve;
pub mod store;
pub mod systemd_notify;
pub mod token_fields;
pub mod tokens;
pub mod views;
