//! The HTTP layer's configuration: limits, pool sizes, time-outs, TLS, the trusted proxies,
//! and how the layer's own refusals are rendered.

use std::sync::Arc;
use std::time::Duration;

use super::conn::ConnLimits;
use super::error::{plain_refusal, Refusal};
use super::tls::TlsContext;
use super::trusted_proxies::TrustedProxies;

/// Limits and pool sizes of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Event-loop threads: every connection lives on one; default one per core.
    pub event_loops: usize,
    /// Threads that run requests which may block (admin routes): requests run at once.
    pub workers: usize,
    /// Complete requests waiting for a worker; over it the request gets 503.
    pub max_queued_requests: usize,
    /// Open connections, TLS included; over it new ones get 503 (plain HTTP) or are closed
    /// (TLS, where no answer is possible before a handshake). Peers that are not trusted
    /// proxies may use seven eighths of them; the rest is kept for the proxy.
    pub max_connections: usize,
    /// Open connections from one address that is not a trusted proxy (503 over it).
    pub max_connections_per_address: usize,
    /// Request bodies being received at once (each holds up to the body limit in memory);
    /// over it a request with a body gets 503 before its body is read.
    pub max_bodies_in_flight: usize,
    /// The same from one address that is not a trusted proxy.
    pub max_bodies_per_address: usize,
    /// Request head limit (431 over it).
    pub max_head_bytes: usize,
    /// Request body limit (413 over it).
    pub max_body_bytes: u64,
    /// From accept to a complete first head, TLS handshake included; for later requests on a
    /// kept-alive connection, from their first byte; a body has as long again.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// How long a response may wait for a client that does not read it.
    pub write_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Serve HTTPS with this certificate (reloadable) instead of plain HTTP.
    pub tls: Option<Arc<TlsContext>>,
    /// Peers whose `X-Correlation-Id` is adopted and who are exempt from the per-address
    /// limits (the reverse proxy; default loopback).
    pub trusted_proxies: TrustedProxies,
    /// How the layer's own refusals (400, 408, 413, 431, 500, 503, 505) are rendered: the
    /// handler's error format.
    pub refusal: Refusal,
    /// Also listen on this Unix socket (the control socket, mode 0600); its requests carry
    /// the peer's uid ([`super::Request::local_uid`]) and count as one address.
    pub control_socket: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            event_loops: std::thread::available_parallelism().map_or(2, |n| n.get()),
            workers: 16,
            max_queued_requests: 1024,
            max_connections: 4096,
            max_connections_per_address: 256,
            max_bodies_in_flight: 256,
            max_bodies_per_address: 16,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            trusted_proxies: TrustedProxies::default(),
            refusal: plain_refusal,
            control_socket: None,
        }
    }
}

impl ServerConfig {
    pub(super) fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_head_bytes: self.max_head_bytes,
            max_body_bytes: self.max_body_bytes,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            refusal: self.refusal,
        }
    }
}
