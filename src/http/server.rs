//! The server as a whole: its configuration, the [`Handler`] it calls, the open-connection
//! accounting, and start/shutdown of the two kinds of thread.
//!
//! Event loops (`event_loop.rs`, one per core) own every connection from accept to close,
//! plain and TLS, each a [`super::conn::Conn`] state machine and a buffer, never a thread.
//! They answer quick requests in place ([`Handler::serves_inline`]: token checks, health) and
//! hand a request that may block (admin routes: Argon2, fsync, scans) *complete, body
//! included*, to the request pool (`request_pool.rs`), whose answer comes back to the loop.
//! Every response, including every refusal by the layer itself, passes
//! [`Handler::observe`] once. Shutdown stops accepting, lets in-flight requests finish
//! (bounded), closes idle connections and joins.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::ConnLimits;
use super::error::{plain_refusal, Error, Refusal};
use super::event_loop::{EventLoop, LoopMailbox};
use super::head::ParsedHead;
use super::request_pool::RequestPool;
use super::tls::TlsContext;
use super::trusted_proxies::TrustedProxies;
use super::{CorrelationId, Request, Response};

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

pub(super) struct Shared {
    pub(super) config: ServerConfig,
    pub(super) handler: Box<dyn Handler>,
    pub(super) open_connections: AtomicUsize,
    pub(super) bodies_in_flight: AtomicUsize,
    /// Bodies in flight that no handler vouched for (at most half the places).
    unvouched_bodies: AtomicUsize,
    pub(super) shutting_down: AtomicBool,
    /// Connections and bodies per address (only addresses that are not trusted proxies).
    per_address: Mutex<HashMap<IpAddr, AddressUse>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressUse {
    connections: usize,
    bodies: usize,
}

impl Shared {
    /// Whether a connection may stay open after an answer (not while shutting down).
    pub(super) fn keep_alive_allowed(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }

    fn counts_per_address(&self, addr: IpAddr) -> bool {
        !self.config.trusted_proxies.contains(addr)
    }

    /// Takes an open-connection place for `peer`, or says it is over a cap.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnSlot> {
        let open = self.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        let mut slot = ConnSlot {
            shared: Arc::clone(self),
            peer,
            per_address: false,
            body: false,
            unvouched: false,
        };
        if open > self.config.max_connections {
            return None;
        }
        if self.counts_per_address(peer) {
            // The last eighth of the connections is kept for the trusted proxies: a flood from
            // many addresses that reach pa-auth directly cannot lock the proxy out.
            let reserved = self.config.max_connections / 8;
            if open > self.config.max_connections - reserved {
                return None;
            }
            let mut map = super::sync::lock(&self.per_address);
            let entry = map.entry(peer).or_default();
            if entry.connections >= self.config.max_connections_per_address {
                return None;
            }
            entry.connections += 1;
            slot.per_address = true;
        }
        Some(slot)
    }
}

/// One open connection's place in the counts; given back when dropped, whatever ends the
/// connection.
pub(super) struct ConnSlot {
    shared: Arc<Shared>,
    peer: IpAddr,
    per_address: bool,
    body: bool,
    unvouched: bool,
}

impl ConnSlot {
    /// Takes a place for a body about to be received; `false` when over a cap. A body nobody
    /// vouched for ([`Handler::vouches_for_body`]) may use only half the places.
    pub(super) fn begin_body(&mut self, vouched: bool) -> bool {
        if self.body {
            return true;
        }
        let shared = &self.shared;
        let n = shared.bodies_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if n > shared.config.max_bodies_in_flight {
            shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if !vouched {
            let u = shared.unvouched_bodies.fetch_add(1, Ordering::SeqCst) + 1;
            if u > shared.config.max_bodies_in_flight / 2 {
                shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
                shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
                return false;
            }
        }
        if self.per_address {
            let allowed = {
                let mut map = super::sync::lock(&shared.per_address);
                let entry = map.entry(self.peer).or_default();
                let ok = entry.bodies < shared.config.max_bodies_per_address;
                if ok {
                    entry.bodies += 1;
                }
                ok
            };
            if !allowed {
                shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
                if !vouched {
                    shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
                }
                return false;
            }
        }
        self.body = true;
        self.unvouched = !vouched;
        true
    }

    /// The body's request was answered (or the connection ended).
    pub(super) fn end_body(&mut self) {
        if !std::mem::take(&mut self.body) {
            return;
        }
        let shared = &self.shared;
        shared.bodies_in_flight.fetch_sub(1, Ordering::SeqCst);
        if std::mem::take(&mut self.unvouched) {
            shared.unvouched_bodies.fetch_sub(1, Ordering::SeqCst);
        }
        if self.per_address {
            if let Some(entry) = super::sync::lock(&shared.per_address).get_mut(&self.peer) {
                entry.bodies = entry.bodies.saturating_sub(1);
            }
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.end_body();
        let shared = &self.shared;
        shared.open_connections.fetch_sub(1, Ordering::SeqCst);
        if self.per_address {
            let mut map = super::sync::lock(&shared.per_address);
            if let Some(entry) = map.get_mut(&self.peer) {
                entry.connections = entry.connections.saturating_sub(1);
                if entry.connections == 0 && entry.bodies == 0 {
                    map.remove(&self.peer);
                }
            }
        }
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its threads running.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<RequestPool>,
    mailboxes: Vec<Arc<LoopMailbox>>,
    loops: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// Live figures of a running server.
#[derive(Debug, Clone, Copy)]
pub struct ServerStats {
    pub open_connections: usize,
    /// Complete requests waiting for a worker.
    pub queued_requests: usize,
}

/// A cheap, clonable view of a server's live figures (for metrics).
#[derive(Clone)]
pub struct StatsHandle(Arc<Shared>, Arc<RequestPool>);

impl StatsHandle {
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            open_connections: self.0.open_connections.load(Ordering::Relaxed),
            queued_requests: self.1.queued(),
        }
    }
}

impl Server {
    /// Binds and starts the event loops and the request pool.
    pub fn start(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
        })?;
        // One listener per loop on the same port (SO_REUSEPORT): the kernel spreads new
        // connections over them, so a connection wakes one loop, not every loop.
        let first = bind_listener(addr)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..config.event_loops.max(1) {
            listeners.push(bind_listener(local_addr)?);
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            handler: Box::new(handler),
            open_connections: AtomicUsize::new(0),
            bodies_in_flight: AtomicUsize::new(0),
            unvouched_bodies: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            per_address: Mutex::new(HashMap::new()),
        });
        let pool = Arc::new(RequestPool::new(config.max_queued_requests));
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers.max(1) {
            let (shared, pool) = (Arc::clone(&shared), Arc::clone(&pool));
            workers.push(
                std::thread::Builder::new()
                    .name(format!("http-worker-{i}"))
                    .stack_size(1024 * 1024)
                    .spawn(move || pool.work(&shared))?,
            );
        }
        let mut mailboxes = Vec::with_capacity(config.event_loops);
        let mut loops = Vec::with_capacity(config.event_loops);
        for i in 0..config.event_loops.max(1) {
            let Some(listener) = listeners.pop() else {
                break;
            };
            let event_loop = EventLoop::new(listener, Arc::clone(&shared), Arc::clone(&pool))?;
            mailboxes.push(event_loop.mailbox());
            loops.push(
                std::thread::Builder::new()
                    .name(format!("http-loop-{i}"))
                    .spawn(move || event_loop.run())?,
            );
        }
        Ok(Server {
            local_addr,
            shared,
            pool,
            mailboxes,
            loops,
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> ServerStats {
        self.stats_handle().stats()
    }

    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared), Arc::clone(&self.pool))
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), closes idle
    /// connections and joins the threads. Returns false if the drain timed out.
    pub fn shutdown(self) -> bool {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for mailbox in &self.mailboxes {
            mailbox.wake();
        }
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        // The loops drain first: a request still receiving its body may reach a worker after
        // the signal, so the workers keep serving until every loop is done.
        while Instant::now() < deadline && self.loops.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pool.close();
        while Instant::now() < deadline && self.workers.iter().any(|t| !t.is_finished()) {
            self.pool.wake_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        let threads = self.loops.into_iter().chain(self.workers);
        let (finished, busy): (Vec<_>, Vec<_>) = threads.partition(JoinHandle::is_finished);
        for thread in finished {
            let _ = thread.join();
        }
        busy.is_empty()
    }
}

/// A non-blocking listening socket with SO_REUSEPORT (only sockets of the same user can join
/// it), a 1,024-connection backlog, and mio's accept (non-blocking sockets from accept4).
fn bind_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
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
