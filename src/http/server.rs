//! The server as a whole: its configuration, the [`Handler`] it calls, and the two lanes
//! that share one listener.
//!
//! Every connection starts on an event loop (`event_loop.rs`, one per core), which answers
//! quick bodiless requests (forward-auth, health) without a thread wake-up per request.
//! Requests that may block (admin routes, bodies, `Expect`, TLS) move their connection to
//! the worker pool (`worker_pool.rs`), which runs it on one thread at a time. Both lanes share
//! the open-connection cap (503 over it) and the shutdown flag. Shutdown stops accepting, lets
//! in-flight requests finish (bounded), closes idle connections and joins.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::event_loop::EventLoop;
use super::head::{parse_request_head, HeadLimits, ParsedHead};
use super::tls::TlsContext;
use super::trusted_proxies::TrustedProxies;
use super::{CorrelationId, Request, Response};
use crate::error::Error;
use crate::log_error;

/// Limits and pool sizes of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Event-loop threads (the lane every connection starts on); default: one per core.
    pub event_loops: usize,
    /// Worker threads for requests that may block (admin, bodies, TLS): connections served
    /// there at the same time.
    pub workers: usize,
    /// Open connections (served plus queued); over it new ones get 503.
    pub max_connections: usize,
    /// Request head limit (431 over it).
    pub max_head_bytes: usize,
    /// Request body limit (413 over it).
    pub max_body_bytes: u64,
    /// Time for a client to send a complete head (and, separately, a body) from its first byte.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// How long a response write may block on a client that does not read.
    pub write_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Serve HTTPS with this certificate (reloadable) instead of plain HTTP.
    pub tls: Option<Arc<TlsContext>>,
    /// Peers whose `X-Correlation-Id` is adopted (default loopback).
    pub trusted_proxies: TrustedProxies,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            event_loops: std::thread::available_parallelism().map_or(2, |n| n.get()),
            workers: 64,
            max_connections: 4096,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            tls: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// What the server calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &Request<'_>) -> Response;

    /// Called before reading the body of an `Expect: 100-continue` request: answer now (the
    /// body is then never read and the connection closes) or return `None` to get the body.
    fn respond_before_body(&self, _request: &Request<'_>) -> Option<Response> {
        None
    }

    /// Whether [`Handler::handle`] answers this (bodiless, plain-HTTP) request quickly and
    /// without blocking — no disk, no network, no lock held by slow work — so an event loop
    /// may run it inline. `false` (the default) sends the connection to the worker pool.
    fn serves_inline(&self, _request: &Request<'_>) -> bool {
        false
    }
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &Request<'_>) -> Response {
        self(request)
    }
}

/// A connection waiting for a pool worker.
pub(super) struct Queued {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// When the current request's wait began (accept, or the end of the previous request).
    pub(super) accepted: Instant,
    /// What an event loop had read when it handed the connection over.
    pub(super) carried: Option<Carried>,
}

/// The state an event loop hands over with a connection.
pub(super) struct Carried {
    /// Bytes read and not yet consumed: at least one complete request head. (Answers to
    /// earlier requests are always written before a hand-over.)
    pub(super) input: Vec<u8>,
    pub(super) first_request: bool,
}

pub(super) struct Shared {
    pub(super) config: ServerConfig,
    pub(super) handler: Box<dyn Handler>,
    pub(super) queue: Mutex<VecDeque<Queued>>,
    pub(super) queue_ready: Condvar,
    pub(super) queued: AtomicUsize,
    pub(super) open_connections: AtomicUsize,
    pub(super) shutting_down: AtomicBool,
}

impl Shared {
    /// Whether the connection stays open after answering `head` with `response`.
    pub(super) fn keeps_alive(&self, head: &ParsedHead, response: &Response) -> bool {
        head.keep_alive && !response.wants_close() && !self.shutting_down.load(Ordering::Relaxed)
    }

    /// Queues a connection for the worker pool (it already counts as open).
    pub(super) fn enqueue(&self, queued: Queued) {
        match self.queue.lock() {
            Ok(mut q) => {
                q.push_back(queued);
                self.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.open_connections.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
        self.queue_ready.notify_one();
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its threads running.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    wakers: Vec<mio::Waker>,
    threads: Vec<JoinHandle<()>>,
}

/// Live figures of a running server.
#[derive(Debug, Clone, Copy)]
pub struct ServerStats {
    pub open_connections: usize,
    pub queued_connections: usize,
}

/// A cheap, clonable view of a server's live figures (for metrics).
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            open_connections: self.0.open_connections.load(Ordering::Relaxed),
            queued_connections: self.0.queued.load(Ordering::Relaxed),
        }
    }
}

impl Server {
    /// Binds and starts the event loops and the worker pool.
    pub fn start(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = Arc::new(listener);
        let shared = Arc::new(Shared {
            config: config.clone(),
            handler: Box::new(handler),
            queue: Mutex::new(VecDeque::new()),
            queue_ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(config.workers + config.event_loops);
        for i in 0..config.workers.max(1) {
            let shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-worker-{i}"))
                    .stack_size(1024 * 1024)
                    .spawn(move || super::worker_pool::worker_loop(&shared))?,
            );
        }
        let mut wakers = Vec::with_capacity(config.event_loops);
        for i in 0..config.event_loops.max(1) {
            let (event_loop, waker) = EventLoop::new(Arc::clone(&listener), Arc::clone(&shared))?;
            wakers.push(waker);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-loop-{i}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        Ok(Server {
            local_addr,
            shared,
            wakers,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> ServerStats {
        self.stats_handle().stats()
    }

    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared))
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), closes idle
    /// connections and joins the threads. Returns false if the drain timed out.
    pub fn shutdown(mut self) -> bool {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        while Instant::now() < deadline && self.threads.iter().any(|t| !t.is_finished()) {
            self.shared.queue_ready.notify_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        let drained = self.threads.iter().all(JoinHandle::is_finished);
        for thread in self.threads.drain(..).filter(|t| t.is_finished()) {
            let _ = thread.join();
        }
        drained
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

pub(super) fn panic_response(correlation_id: &CorrelationId) -> Response {
    log_error!(
        "handler panicked (correlation id {}); answered 500",
        correlation_id.as_str()
    );
    Error::Internal("handler panicked".into()).to_response(correlation_id)
}

/// The handler's response, or a logged 500 if it carries a header with a forbidden byte.
pub(super) fn checked_response(response: Response, correlation_id: &CorrelationId) -> Response {
    if response.headers_are_valid() {
        return response;
    }
    log_error!(
        "bug: handler produced a header with a forbidden byte (correlation id {}); answering 500",
        correlation_id.as_str()
    );
    Error::Internal("invalid response header".into()).to_response(correlation_id)
}

/// Parses the request head at the front of `buf` with the configured limits, for both lanes.
/// A NUL or other control byte anywhere in the head is refused (400; 401 on forward-auth,
/// see [`parse_request_head`]), as nginx and Caddy do: RFC 9110 §5.5 would allow replacing
/// NUL with SP, but then `Bearer\0<token>` would authenticate and `chunked\0` would frame.
pub(super) fn parse_head(buf: &[u8], config: &ServerConfig) -> Result<Option<ParsedHead>, Error> {
    let limits = HeadLimits {
        max_head_bytes: config.max_head_bytes,
        max_body_bytes: config.max_body_bytes,
    };
    parse_request_head(buf, &limits)
}
