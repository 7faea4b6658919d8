//! What the server calls: the [`Handler`] trait, the [`Exchange`] every answer is reported
//! as, and the one place every handler call goes through (a panic or an unsendable response
//! becomes a logged 500). Also the correlation id a request is answered under.

use std::net::SocketAddr;
use std::time::Duration;

use super::config::ServerConfig;
use super::error::Error;
use super::head::ParsedHead;
use super::{CorrelationId, Request, Response};

/// One answered (or refused) request, as the server reports it to [`Handler::observe`].
#[derive(Debug)]
pub struct Exchange<'a> {
    /// Empty when the request was refused before its request line could be read.
    pub method: &'a str,
    /// The routed path; empty when refused before it could be read.
    pub path: &'a str,
    pub status: u16,
    /// From the complete request to its answer (queueing for a worker included).
    pub duration: Duration,
    pub peer: SocketAddr,
    /// The peer's uid when the request came through the control socket.
    pub local_uid: Option<u32>,
    pub correlation_id: &'a CorrelationId,
    /// Refused by the HTTP layer (400, 408, 413, 431, 503, 505 …), not by the handler.
    pub refused_by_server: bool,
}

/// What the server calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &Request<'_>) -> Response;

    /// Called before reading the body of a request that has one: answer now (the body is
    /// then never read and the connection closes) or return `None` to get the body.
    fn respond_before_body(&self, _request: &Request<'_>) -> Option<Response> {
        None
    }

    /// Whether [`Handler::handle`] answers this request quickly and without blocking — no
    /// disk, no network, no lock held by slow work — so an event loop may run it in place.
    /// `false` (the default) runs it on the request pool.
    fn serves_inline(&self, _request: &Request<'_>) -> bool {
        false
    }

    /// Sees every response the server sends, once, including the server's own refusals:
    /// the one place for the request log line and the request metrics.
    fn observe(&self, _exchange: &Exchange<'_>) {}

    /// Whether a request about to send a body carries a credential the handler has already
    /// verified cheaply (before the body). Bodies nobody vouches for may take only half of
    /// the body places, so unauthenticated clients trickling bodies cannot block an admin's.
    fn vouches_for_body(&self, _request: &Request<'_>) -> bool {
        true
    }

    /// Called once on each event-loop thread as it starts: a handler may set up per-thread
    /// batching of what [`Handler::observe`] produces.
    fn loop_started(&self) {}

    /// Called on an event-loop thread after each turn of the loop (a batch of ready
    /// connections served): the time to write out what was batched.
    fn loop_turn_ended(&self) {}
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &Request<'_>) -> Response {
        self(request)
    }
}

/// The correlation id of a request: a trusted proxy's 32-hex `X-Correlation-Id`, or a new
/// one. A client that could choose its id could make its requests' log lines and audit
/// events collide with someone else's.
pub(super) fn correlation_id_of(
    buf: &[u8],
    head: &ParsedHead,
    peer: SocketAddr,
    config: &ServerConfig,
) -> CorrelationId {
    if !config.trusted_proxies.contains(peer.ip()) {
        return CorrelationId::generate();
    }
    head.headers[..head.header_count]
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"x-correlation-id"))
        .and_then(|h| CorrelationId::from_hex(h.value.of(buf)))
        .unwrap_or_else(CorrelationId::generate)
}

/// Runs the handler, turning a panic or a response with a forbidden header byte into a
/// logged 500: the one place every handler call goes through.
pub(super) fn call_handler(
    config: &ServerConfig,
    handler: &dyn Handler,
    request: &Request<'_>,
    correlation_id: &CorrelationId,
) -> Response {
    let response =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(request)))
            .unwrap_or_else(|_| panic_response(config, correlation_id));
    checked_response(config, response, correlation_id)
}

/// Runs a call into the handler that is not a request's answer (an access-log line, a routing
/// question, a loop hook), turning a panic into `fallback` and an error line: a bug in the
/// application never takes an event loop, and every connection on it, down with it (a
/// panic in the access log's redaction once did).
pub(super) fn guarded<T>(what: &str, fallback: T, call: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        log::error!("{what} panicked; went on without it");
        fallback
    })
}

pub(super) fn panic_response(config: &ServerConfig, correlation_id: &CorrelationId) -> Response {
    log::error!(
        "handler panicked (correlation id {}); answered 500",
        correlation_id.as_str()
    );
    (config.refusal)(&Error::Internal("handler panicked"), correlation_id)
}

/// The handler's response, or a logged 500 if it carries a header with a forbidden byte.
fn checked_response(
    config: &ServerConfig,
    response: Response,
    correlation_id: &CorrelationId,
) -> Response {
    if response.headers_are_valid() {
        return response;
    }
    log::error!(
        "bug: handler produced a header with a forbidden byte (correlation id {}); answering 500",
        correlation_id.as_str()
    );
    (config.refusal)(&Error::Internal("invalid response header"), correlation_id)
}
