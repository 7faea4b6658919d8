//! pa-auth: the API token service of Permission Assist, as a library the thin `pa-auth`
//! binary (and the fuzz targets) link against. One module per concern; see the README's
//! "Architecture" section for the map.

// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod domain;
pub mod http;
pub mod service;
pub mod store;
pub mod web;

pub mod cli;
pub mod config;
pub mod fuzz_checks;
pub mod logging;
pub mod serve;
pub mod sync;
pub mod systemd_notify;

pub use service::error::{Error, Result};
