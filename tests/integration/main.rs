//! One integration-test binary (each costs link time): the HTTP layer in-process, and the
//! real `pa-auth` binary over loopback HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_hardening;
mod appliance;
mod audit_integrity;
mod audit_syslog;
mod cluster_proxy;
mod console_browser;
mod control_socket;
mod engine;
mod forward_auth;
mod fuzz_corpus;
mod hostile;
mod http_layer;
mod layers;
mod leak_response;
mod lifecycle_monitoring;
mod network_policy;
mod postgres;
mod progress;
mod reliability;
mod rotation;
mod security_review;
mod service;
mod support;
mod token_ownership;
mod usage;
mod webdriver;
mod webhooks;
