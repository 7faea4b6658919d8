//! The listener, the bounded worker pool and the per-connection loop.
//!
//! One acceptor thread accepts, enforces the open-connection cap (503 over it) and queues the
//! connection; a fixed pool of worker threads each owns one connection at a time and runs the
//! whole exchange on its own thread (read head → read body → handler → write), so a request
//! is never handed between threads. Each worker owns its buffers, allocated once. Idle
//! keep-alive connections yield their worker when others are waiting. Shutdown stops
//! accepting, lets in-flight requests finish (bounded), closes idle connections and joins.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chunked::ChunkedDecoder;
use super::head::{parse_request_head, Framing, HeadLimits, ParsedHead};
use super::response::{serialize, DateCache};
use super::tls::{Stream, TlsContext};
use super::{CorrelationId, Request, Response};
use crate::error::Error;
use crate::{log_error, log_warn};

/// Limits and pool sizes of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads: connections served at the same time.
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 64,
            max_connections: 4096,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            tls: None,
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
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &Request<'_>) -> Response {
        self(request)
    }
}

struct Queued {
    stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
}

struct Shared {
    config: ServerConfig,
    handler: Box<dyn Handler>,
    queue: Mutex<VecDeque<Queued>>,
    queue_ready: Condvar,
    queued: AtomicUsize,
    open_connections: AtomicUsize,
    shutting_down: AtomicBool,
}

/// A running server. Dropping it without [`Server::shutdown`] leaves its threads running.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
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
    /// Binds and starts the acceptor and the worker pool.
    pub fn start(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: impl Handler,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            handler: Box::new(handler),
            queue: Mutex::new(VecDeque::new()),
            queue_ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers.max(1) {
            let shared = Arc::clone(&shared);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("http-worker-{i}"))
                    .stack_size(1024 * 1024)
                    .spawn(move || worker_loop(&shared))?,
            );
        }
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("http-acceptor".into())
            .spawn(move || accept_loop(&listener, &acceptor_shared))?;
        Ok(Server {
            local_addr,
            shared,
            acceptor: Some(acceptor),
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
        StatsHandle(Arc::clone(&self.shared))
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), closes idle
    /// connections and joins the threads. Returns false if the drain timed out.
    pub fn shutdown(mut self) -> bool {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // The acceptor is blocked in accept(); a connection to ourselves wakes it.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        self.shared.queue_ready.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let deadline = Instant::now() + self.shared.config.drain_timeout;
        while Instant::now() < deadline && self.workers.iter().any(|w| !w.is_finished()) {
            self.shared.queue_ready.notify_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        let drained = self.workers.iter().all(JoinHandle::is_finished);
        for worker in self.workers.drain(..).filter(|w| w.is_finished()) {
            let _ = worker.join();
        }
        drained
    }
}

fn accept_loop(listener: &TcpListener, shared: &Shared) {
    let mut backoff = Duration::from_millis(5);
    let mut overload = OverloadResponder::default();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                if shared.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                let open = shared.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
                if open > shared.config.max_connections {
                    shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                    // Over TLS no HTTP answer is possible before a handshake, which the
                    // acceptor must not block on: those connections are just closed.
                    if shared.config.tls.is_none() {
                        overload.reject(stream);
                    }
                    continue;
                }
                let queued = Queued {
                    stream,
                    peer,
                    accepted: Instant::now(),
                };
                match shared.queue.lock() {
                    Ok(mut q) => {
                        q.push_back(queued);
                        shared.queued.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        shared.open_connections.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                }
                shared.queue_ready.notify_one();
            }
            Err(e) => {
                if shared.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                match e.kind() {
                    io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::Interrupted => continue,
                    _ => {
                        // EMFILE/ENFILE/ENOBUFS: wait for descriptors to free up.
                        log_warn!("accept failed: {e}; retrying in {} ms", backoff.as_millis());
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// Answers connections over the cap with a 503 without involving a worker.
#[derive(Default)]
struct OverloadResponder {
    date: DateCache,
    out: Vec<u8>,
}

impl OverloadResponder {
    fn reject(&mut self, mut stream: TcpStream) {
        let cid = CorrelationId::generate();
        let response = Error::Overloaded.to_response(&cid);
        serialize(
            &response,
            &cid,
            self.date.get(crate::time_format::now_unix()),
            false,
            false,
            &mut self.out,
        );
        let _ = stream.set_nonblocking(true);
        // Drain what the client already sent so close() sends FIN, not RST.
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = stream.write_all(&self.out);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

fn worker_loop(shared: &Shared) {
    let mut buffers = WorkerBuffers::new(&shared.config);
    loop {
        let next = {
            let Ok(mut queue) = shared.queue.lock() else {
                return;
            };
            loop {
                if let Some(q) = queue.pop_front() {
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    break Some(q);
                }
                if shared.shutting_down.load(Ordering::SeqCst) {
                    break None;
                }
                queue = match shared
                    .queue_ready
                    .wait_timeout(queue, Duration::from_millis(500))
                {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
        };
        let Some(queued) = next else { return };
        serve_connection(queued, shared, &mut buffers);
        shared.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Buffers a worker owns for its whole life: no per-request allocation for reading.
struct WorkerBuffers {
    read: Vec<u8>,
    out: Vec<u8>,
    date: DateCache,
}

impl WorkerBuffers {
    fn new(config: &ServerConfig) -> Self {
        // Head + body + room for chunk framing read ahead of the in-place decoder.
        let size = config.max_head_bytes + config.max_body_bytes as usize + 8 * 1024;
        WorkerBuffers {
            read: vec![0; size],
            out: Vec::with_capacity(4096),
            date: DateCache::default(),
        }
    }
}

/// Longest single wait on a socket, so idle connections notice shutdown and queue pressure.
const IDLE_SLICE: Duration = Duration::from_millis(200);
/// The same under pressure: other connections are waiting for a worker.
const PRESSURED_SLICE: Duration = Duration::from_millis(20);
/// How long a just-dequeued connection may stay silent while others wait.
const QUEUED_IDLE_SLICE: Duration = Duration::from_millis(5);

enum HeadOutcome {
    Ready(Box<ParsedHead>),
    /// Peer closed or went idle too long: close quietly.
    Closed,
    /// Idle, and the worker is needed elsewhere (shutdown, queued connections).
    ClosedIdle,
    Rejected(Error),
}

struct Connection<'w> {
    stream: Stream,
    peer: SocketAddr,
    buf: &'w mut [u8],
    filled: usize,
    read_timeout: Option<Duration>,
}

impl Connection<'_> {
    fn set_read_timeout(&mut self, timeout: Duration) {
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        if self.read_timeout != timeout {
            let _ = self.stream.tcp().set_read_timeout(timeout);
            self.read_timeout = timeout;
        }
    }

    /// One read into the free part of the buffer. `Ok(0)` is end of stream.
    fn read_more(&mut self, limit: usize) -> io::Result<usize> {
        let end = limit.min(self.buf.len());
        if self.filled >= end {
            return Ok(0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..end])?;
        self.filled += n;
        Ok(n)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn serve_connection(queued: Queued, shared: &Shared, buffers: &mut WorkerBuffers) {
    let Queued {
        stream,
        peer,
        accepted,
    } = queued;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(shared.config.write_timeout));
    let Ok(stream) = Stream::new(stream, shared.config.tls.as_deref()) else {
        return;
    };
    let WorkerBuffers { read, out, date } = buffers;
    let mut conn = Connection {
        stream,
        peer,
        buf: read,
        filled: 0,
        read_timeout: None,
    };
    let mut waiting_since = accepted;
    let mut first_request = true;
    loop {
        let head = match read_head(&mut conn, shared, waiting_since, first_request) {
            HeadOutcome::Ready(head) => head,
            HeadOutcome::Closed => return,
            HeadOutcome::ClosedIdle => {
                conn.stream.shutdown_write();
                // On shutdown, a request crossing our FIN meets an orderly end of stream,
                // not a reset. Under queue pressure the worker is needed at once instead.
                if shared.shutting_down.load(Ordering::Relaxed) {
                    linger(&mut conn.stream, Duration::from_millis(100));
                }
                return;
            }
            HeadOutcome::Rejected(err) => {
                let cid = CorrelationId::generate();
                write_response(
                    &mut conn.stream,
                    &err.to_response(&cid),
                    &cid,
                    false,
                    false,
                    date,
                    out,
                );
                linger_close(&mut conn.stream);
                return;
            }
        };
        match serve_request(&mut conn, &head, shared, date, out) {
            Next::KeepAlive { consumed } => {
                conn.buf.copy_within(consumed..conn.filled, 0);
                conn.filled -= consumed;
                waiting_since = Instant::now();
                first_request = false;
            }
            Next::Close => {
                conn.stream.shutdown_write();
                return;
            }
            Next::LingerClose => {
                linger_close(&mut conn.stream);
                return;
            }
        }
    }
}

fn read_head(
    conn: &mut Connection<'_>,
    shared: &Shared,
    waiting_since: Instant,
    first_request: bool,
) -> HeadOutcome {
    let limits = HeadLimits {
        max_head_bytes: shared.config.max_head_bytes,
        max_body_bytes: shared.config.max_body_bytes,
    };
    // A new connection has the head deadline from accept; a kept-alive one idles first.
    let mut head_started = (first_request || conn.filled > 0).then_some(waiting_since);
    loop {
        if conn.filled > 0 {
            let mut parsed = parse_request_head(&conn.buf[..conn.filled], &limits);
            // RFC 9110 §5.5 lets a recipient replace NUL in a field value with SP instead of
            // rejecting the message. Doing so keeps "every credential problem is a 401": a
            // NUL inside an Authorization value becomes a malformed token, not a 400. Only on
            // the error path, so valid requests pay nothing.
            if parsed.is_err() && replace_nul_in_head(&mut conn.buf[..conn.filled]) {
                parsed = parse_request_head(&conn.buf[..conn.filled], &limits);
            }
            match parsed {
                Ok(Some(head)) => return HeadOutcome::Ready(Box::new(head)),
                Ok(None) => {}
                Err(e) => return HeadOutcome::Rejected(e),
            }
        }
        let now = Instant::now();
        let deadline = match head_started {
            Some(start) => start + shared.config.header_timeout,
            None => waiting_since + shared.config.idle_timeout,
        };
        if now >= deadline {
            return if conn.filled > 0 {
                HeadOutcome::Rejected(Error::RequestTimeout)
            } else {
                HeadOutcome::Closed
            };
        }
        let pressured = shared.queued.load(Ordering::Relaxed) > 0;
        let shutting_down = shared.shutting_down.load(Ordering::Relaxed);
        let slice = if pressured && first_request && conn.filled == 0 {
            // A connection that waited in the queue and still has sent nothing is idle; a
            // real client has its request in the socket by now.
            QUEUED_IDLE_SLICE
        } else if pressured || shutting_down {
            PRESSURED_SLICE
        } else {
            IDLE_SLICE
        };
        conn.set_read_timeout((deadline - now).min(slice));
        match conn.read_more(conn.buf.len()) {
            Ok(0) => return HeadOutcome::Closed,
            Ok(_) => {
                head_started.get_or_insert(now);
            }
            Err(e) if is_timeout(&e) => {
                // Nothing yet: give the worker to a waiting connection, or stop on shutdown.
                // Closed with FIN and a short linger, so a request that crosses our close
                // in flight meets an orderly end of stream, never a reset.
                let idle = conn.filled == 0;
                if idle
                    && (shared.queued.load(Ordering::Relaxed) > 0
                        || shared.shutting_down.load(Ordering::Relaxed))
                {
                    return HeadOutcome::ClosedIdle;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return HeadOutcome::Closed,
        }
    }
}

/// Replaces NUL bytes in the header-field lines (not the request line, not the body) with
/// SP. Returns whether anything changed.
fn replace_nul_in_head(buf: &mut [u8]) -> bool {
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |i| i + 4);
    let fields_start = buf
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head_end, |i| i + 1);
    let mut changed = false;
    for b in buf.iter_mut().take(head_end).skip(fields_start) {
        if *b == 0 {
            *b = b' ';
            changed = true;
        }
    }
    changed
}

enum Next {
    KeepAlive { consumed: usize },
    Close,
    LingerClose,
}

fn serve_request(
    conn: &mut Connection<'_>,
    head: &ParsedHead,
    shared: &Shared,
    date: &mut DateCache,
    out: &mut Vec<u8>,
) -> Next {
    let handler = &*shared.handler;
    let correlation_id = head.headers[..head.header_count]
        .iter()
        .find(|h| {
            h.name
                .of(conn.buf)
                .eq_ignore_ascii_case(b"x-correlation-id")
        })
        .and_then(|h| CorrelationId::from_hex(h.value.of(conn.buf)))
        .unwrap_or_else(CorrelationId::generate);
    let head_only = head.method.of(conn.buf) == b"HEAD";
    let head_len = head.head_len;

    if head.expect_continue {
        let request = Request {
            buf: conn.buf,
            head,
            body: &[],
            body_pending: true,
            peer: conn.peer,
            correlation_id,
            tls: conn.stream.is_tls(),
        };
        let early = catch_unwind(AssertUnwindSafe(|| handler.respond_before_body(&request)))
            .unwrap_or_else(|_| Some(panic_response(&correlation_id)));
        if let Some(response) = early {
            write_response(
                &mut conn.stream,
                &response,
                &correlation_id,
                false,
                head_only,
                date,
                out,
            );
            return Next::LingerClose;
        }
        if conn.stream.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return Next::Close;
        }
    }

    let (body_end, consumed) = match read_body(conn, head, shared) {
        Ok(range) => range,
        Err(BodyError::Closed) => return Next::Close,
        Err(BodyError::Rejected(err)) => {
            write_response(
                &mut conn.stream,
                &err.to_response(&correlation_id),
                &correlation_id,
                false,
                head_only,
                date,
                out,
            );
            return Next::LingerClose;
        }
    };

    let request = Request {
        buf: conn.buf,
        head,
        body: conn.buf.get(head_len..body_end).unwrap_or(&[]),
        body_pending: false,
        peer: conn.peer,
        correlation_id,
        tls: conn.stream.is_tls(),
    };
    let mut response = catch_unwind(AssertUnwindSafe(|| handler.handle(&request)))
        .unwrap_or_else(|_| panic_response(&correlation_id));
    if !response.headers_are_valid() {
        log_error!(
            "bug: handler produced a header with a forbidden byte (correlation id {}); answering 500",
            correlation_id.as_str()
        );
        response = Error::Internal("invalid response header".into()).to_response(&correlation_id);
    }
    let keep_alive =
        head.keep_alive && !response.wants_close() && !shared.shutting_down.load(Ordering::Relaxed);
    if !write_response(
        &mut conn.stream,
        &response,
        &correlation_id,
        keep_alive,
        head_only,
        date,
        out,
    ) {
        return Next::Close;
    }
    if keep_alive {
        Next::KeepAlive { consumed }
    } else {
        Next::Close
    }
}

fn panic_response(correlation_id: &CorrelationId) -> Response {
    log_error!(
        "handler panicked (correlation id {}); answered 500",
        correlation_id.as_str()
    );
    Error::Internal("handler panicked".into()).to_response(correlation_id)
}

enum BodyError {
    Closed,
    Rejected(Error),
}

/// Reads the body after the head into the buffer. Returns (end of decoded body, end of the
/// bytes this request consumed); bytes after that belong to the next request.
fn read_body(
    conn: &mut Connection<'_>,
    head: &ParsedHead,
    shared: &Shared,
) -> Result<(usize, usize), BodyError> {
    let start = head.head_len;
    let deadline = Instant::now() + shared.config.header_timeout;
    let wait = |conn: &mut Connection<'_>| -> Result<(), BodyError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(BodyError::Rejected(Error::RequestTimeout));
        }
        conn.set_read_timeout(deadline - now);
        Ok(())
    };
    match head.framing {
        Framing::Empty => Ok((start, start)),
        Framing::Length(n) => {
            // The parser already capped n at max_body_bytes, so this fits the buffer.
            let end = start + n as usize;
            while conn.filled < end {
                wait(conn)?;
                match conn.read_more(conn.buf.len()) {
                    Ok(0) => return Err(BodyError::Closed),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(BodyError::Closed),
                }
            }
            Ok((end, end))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new(shared.config.max_body_bytes);
            let (mut read, mut write) = (start, start);
            loop {
                decoder
                    .decode(conn.buf, &mut read, &mut write, conn.filled)
                    .map_err(BodyError::Rejected)?;
                if decoder.is_done() {
                    // Keep the pipelined bytes right after the decoded body.
                    let leftover = conn.filled - read;
                    conn.buf.copy_within(read..conn.filled, write);
                    conn.filled = write + leftover;
                    return Ok((write, write));
                }
                // Everything read so far was consumed; collapse and read more.
                conn.filled = write;
                read = write;
                wait(conn)?;
                match conn.read_more(conn.buf.len()) {
                    Ok(0) => return Err(BodyError::Closed),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(BodyError::Closed),
                }
            }
        }
    }
}

/// Serialises and writes one response. Returns false if the client is gone.
fn write_response(
    stream: &mut Stream,
    response: &Response,
    correlation_id: &CorrelationId,
    keep_alive: bool,
    head_only: bool,
    date: &mut DateCache,
    out: &mut Vec<u8>,
) -> bool {
    serialize(
        response,
        correlation_id,
        date.get(crate::time_format::now_unix()),
        keep_alive,
        head_only,
        out,
    );
    stream.send(out).is_ok()
}

/// Closes after an error without reading the rest of the request: stop writing, then read and
/// discard (bounded) so the kernel does not answer the client's unread bytes with a reset that
/// would destroy our error response before the client reads it.
fn linger_close(stream: &mut Stream) {
    stream.shutdown_write();
    linger(stream, Duration::from_secs(1));
}

/// Reads and discards what the client still sends, for at most `how_long` or 1 MiB.
fn linger(stream: &mut Stream, how_long: Duration) {
    let _ = stream
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + how_long;
    let mut sink = [0u8; 8192];
    let mut discarded = 0usize;
    while Instant::now() < deadline && discarded < 1024 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => discarded += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
