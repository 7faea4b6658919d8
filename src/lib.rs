//! pa-auth: the API token service of Permission Assist, as a library the thin `pa-auth`
//! binary (and the fuzz targets) link against.
//!
//! Layers, each depending only on those to its left (decision 0005; `tests/integration/
//! layers.rs` fails on an import that breaks the rule):
//! [`domain`] ← [`store`] ← [`service`] ← [`web`] (and the CLI); [`http`] stands alone and
//! [`web`] plugs the service into it. [`sync`] (the poisoned-lock policy), [`logging`],
//! [`progress`] (count, rate and ETA of long operations), [`tls_client`] (TLS to
//! PostgreSQL and webhook receivers) and [`client_net`] (who counts as one client by
//! address; the one leaf [`http`] names too) are leaves any layer above the domain may use. The
//! rest is the binary's glue: [`cli`], [`config`], [`serve`], [`systemd_notify`],
//! [`fuzz_checks`].

// Tests may unwrap: a panic there is a failed test, not a crashed server.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod domain;
pub mod http;
pub mod service;
pub mod store;
pub mod web;

pub mod client_net;
pub mod logging;
pub mod progress;
pub mod sync;
pub mod tls_client;
pub mod trust;

pub mod cli;
pub mod config;
pub mod fuzz_checks;
pub mod serve;
pub mod systemd_notify;

pub use service::error::{Error, Result};
