//! The event-loop lane: where every connection starts and where forward-auth lives.
//!
//! One loop thread per core, each with its own epoll instance (`mio`), accepts from the
//! shared listener and serves its connections without a thread wake-up per request: read
//! until the socket is empty, answer every complete request in the buffer (pipelining
//! included), write, wait. Idle keep-alive connections cost a buffer, not a thread.
//!
//! Only requests the handler calls quick ([`Handler::serves_inline`]: token verification,
//! health) are answered here, and only plain-HTTP requests without a body. Anything else — a
//! body, `Expect`, an admin route, TLS — moves the connection, with the bytes already read,
//! to the worker pool for the rest of its life
//! (`worker_pool.rs`), so a slow handler never stalls the loop. Malformed or late heads are
//! answered here (same errors as the pool) and the connection closes after a bounded linger.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::head::Framing;
use super::response::{serialize, DateCache};
use super::server::{
    checked_response, correlation_id_of, panic_response, parse_head, Carried, Queued, Shared,
};
use super::{CorrelationId, Request};
use crate::error::Error;
use crate::log_warn;

const LISTENER: Token = Token(usize::MAX - 1);
pub(super) const WAKER: Token = Token(usize::MAX);

/// First size of a connection's read buffer; it grows up to the head limit plus this.
const INITIAL_BUFFER: usize = 4096;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// After a last answer: how long unread client bytes are read and discarded.
const ERROR_LINGER: Duration = Duration::from_secs(1);
/// On shutdown, idle connections are closed with this linger.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(100);
/// Requests answered (or reads done) for one connection before the loop turns to the others:
/// a client that pipelines without pause cannot starve its loop's other connections.
const DRIVE_BUDGET: u32 = 64;

/// One event loop; [`EventLoop::run`] consumes its thread.
pub(super) struct EventLoop {
    poll: Poll,
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    conns: Vec<Option<LoopConn>>,
    free: Vec<usize>,
    scratch: Vec<u8>,
    date: DateCache,
    overload: OverloadResponder,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    /// Connections that yielded with work left (edge-triggered: no new event will come).
    again: Vec<usize>,
}

struct LoopConn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    filled: usize,
    /// Answers not yet written (the client reads slower than we answer).
    out: Vec<u8>,
    out_since: Option<Instant>,
    first_request: bool,
    /// Accept time, or the end of the previous request.
    waiting_since: Instant,
    head_started: Option<Instant>,
    closing: Option<Closing>,
}

/// The last answer is queued: write it, half-close, then discard what the client still
/// sends for `linger` (so unread bytes do not turn our answer into a reset).
struct Closing {
    linger: Duration,
    /// Set when the answer is written and the write side shut.
    until: Option<Instant>,
}

enum Outcome {
    Keep,
    /// Still has work (its budget ran out): drive it again after the other ready ones.
    Yield,
    Drop,
    Migrate,
}

impl EventLoop {
    pub(super) fn new(
        listener: Arc<TcpListener>,
        shared: Arc<Shared>,
    ) -> io::Result<(Self, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        Ok((
            EventLoop {
                poll,
                listener,
                shared,
                conns: Vec::new(),
                free: Vec::new(),
                scratch: Vec::with_capacity(4096),
                date: DateCache::default(),
                overload: OverloadResponder::default(),
                accept_paused_until: None,
                accept_backoff: Duration::from_millis(5),
                again: Vec::new(),
            },
            waker,
        ))
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let timeout = if !self.again.is_empty() {
                Some(Duration::ZERO)
            } else if self.conns.len() == self.free.len() && self.accept_paused_until.is_none() {
                Some(Duration::from_secs(1))
            } else {
                Some(SWEEP_EVERY)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log_warn!("event loop poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if self.shared.shutting_down.load(Ordering::SeqCst) && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + self.shared.config.drain_timeout);
                self.begin_shutdown();
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => {
                        if drain_deadline.is_none() {
                            self.accept_all();
                        }
                    }
                    Token(idx) => self.drive_and_settle(idx),
                }
            }
            for idx in std::mem::take(&mut self.again) {
                self.drive_and_settle(idx);
            }
            let now = Instant::now();
            if self
                .accept_paused_until
                .is_some_and(|until| now >= until && drain_deadline.is_none())
            {
                self.accept_paused_until = None;
                self.accept_all();
            }
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                self.sweep(now);
            }
            if let Some(deadline) = drain_deadline {
                if self.conns.len() == self.free.len() || now >= deadline {
                    for idx in 0..self.conns.len() {
                        if self.conns[idx].is_some() {
                            self.remove(idx);
                        }
                    }
                    return;
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&self.listener.as_raw_fd()));
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if conn.closing.is_none() && conn.filled == 0 && conn.out.is_empty() {
                // Idle: FIN now, and a short linger so a request crossing it meets an orderly
                // end of stream rather than a reset.
                conn.closing = Some(Closing {
                    linger: SHUTDOWN_LINGER,
                    until: None,
                });
                self.drive_and_settle(idx);
            }
        }
    }

    fn accept_all(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_backoff = Duration::from_millis(5);
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::Interrupted => {}
                    _ => {
                        // EMFILE/ENFILE/ENOBUFS: wait for descriptors to free up.
                        log_warn!(
                            "accept failed: {e}; retrying in {} ms",
                            self.accept_backoff.as_millis()
                        );
                        self.accept_paused_until = Some(Instant::now() + self.accept_backoff);
                        self.accept_backoff = (self.accept_backoff * 2).min(Duration::from_secs(1));
                        return;
                    }
                },
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let shared = &self.shared;
        let open = shared.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        if open > shared.config.max_connections {
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            // Over TLS no HTTP answer is possible before a handshake, which the loop must
            // not block on: those connections are just closed.
            if shared.config.tls.is_none() {
                self.overload.reject(stream);
            }
            return;
        }
        let accepted = Instant::now();
        let _ = stream.set_nodelay(true);
        if shared.config.tls.is_some() {
            // TLS connections are served by the worker pool from the start.
            shared.enqueue(Queued {
                stream,
                peer,
                accepted,
                carried: None,
            });
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if self
            .poll
            .registry()
            .register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(idx);
            shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.conns[idx] = Some(LoopConn {
            stream,
            peer,
            buf: vec![0; INITIAL_BUFFER],
            filled: 0,
            out: Vec::new(),
            out_since: None,
            first_request: true,
            waiting_since: accepted,
            head_started: None,
            closing: None,
        });
        // The request is often in the socket already.
        self.drive_and_settle(idx);
    }

    fn drive_and_settle(&mut self, idx: usize) {
        let outcome = match self.conns.get_mut(idx).and_then(Option::as_mut) {
            Some(conn) => drive(conn, &self.shared, &mut self.scratch, &mut self.date),
            None => return,
        };
        match outcome {
            Outcome::Keep => {}
            Outcome::Yield => {
                if !self.again.contains(&idx) {
                    self.again.push(idx);
                }
            }
            Outcome::Drop => self.remove(idx),
            Outcome::Migrate => self.migrate(idx),
        }
    }

    fn remove(&mut self, idx: usize) {
        if self.conns[idx].take().is_some() {
            self.free.push(idx);
            self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Hands the connection, with its unread bytes, to the pool. Only reached from
    /// `serve_buffered`, which runs when every earlier answer has been written.
    fn migrate(&mut self, idx: usize) {
        let Some(conn) = self.conns[idx].take() else {
            return;
        };
        self.free.push(idx);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
        if conn.stream.set_nonblocking(false).is_err() {
            self.shared.open_connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let mut input = conn.buf;
        input.truncate(conn.filled);
        self.shared.enqueue(Queued {
            stream: conn.stream,
            peer: conn.peer,
            accepted: conn.waiting_since,
            carried: Some(Carried {
                input,
                first_request: conn.first_request,
            }),
        });
    }

    fn sweep(&mut self, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if conn
                .out_since
                .is_some_and(|since| now >= since + config.write_timeout)
            {
                // The client stopped reading our answers.
                self.remove(idx);
                continue;
            }
            if let Some(closing) = &conn.closing {
                if closing.until.is_some_and(|until| now >= until) {
                    self.remove(idx);
                }
                continue;
            }
            let deadline = match conn.head_started {
                Some(start) => start + config.header_timeout,
                None if conn.first_request => conn.waiting_since + config.header_timeout,
                None => conn.waiting_since + config.idle_timeout,
            };
            if now < deadline {
                continue;
            }
            if conn.filled == 0 {
                // Idle too long: close quietly.
                self.remove(idx);
            } else {
                reject(
                    conn,
                    Error::RequestTimeout,
                    &mut self.scratch,
                    &mut self.date,
                );
                self.drive_and_settle(idx);
            }
        }
    }
}

/// Runs a connection as far as it can go without blocking.
fn drive(
    conn: &mut LoopConn,
    shared: &Shared,
    scratch: &mut Vec<u8>,
    date: &mut DateCache,
) -> Outcome {
    let mut budget = DRIVE_BUDGET;
    loop {
        if budget == 0 {
            return Outcome::Yield;
        }
        budget -= 1;
        if !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(0) => return Outcome::Drop,
                Ok(n) => {
                    conn.out.drain(..n);
                    if !conn.out.is_empty() {
                        continue;
                    }
                    conn.out_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Outcome::Drop,
            }
        }
        if let Some(closing) = &mut conn.closing {
            if closing.until.is_none() {
                closing.until = Some(Instant::now() + closing.linger);
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            // Discard what the client still sends until it closes (or the linger ends).
            let mut sink = [0u8; 4096];
            for _ in 0..DRIVE_BUDGET {
                match conn.stream.read(&mut sink) {
                    Ok(0) => return Outcome::Drop,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Outcome::Drop,
                }
            }
            return Outcome::Yield;
        }
        match serve_buffered(conn, shared, scratch, date) {
            Served::Progress => continue,
            Served::Migrate => return Outcome::Migrate,
            Served::Close => return Outcome::Drop,
            Served::NeedMore => {}
        }
        if conn.filled == conn.buf.len() {
            let cap = shared.config.max_head_bytes + INITIAL_BUFFER;
            if conn.buf.len() >= cap {
                // Cannot happen (the parser rejects a head over the limit first); stay bounded.
                reject(conn, Error::HeadTooLarge, scratch, date);
                continue;
            }
            let grown = (conn.buf.len() * 2).min(cap);
            conn.buf.resize(grown, 0);
        }
        match conn.stream.read(&mut conn.buf[conn.filled..]) {
            Ok(0) => return Outcome::Drop,
            Ok(n) => {
                conn.filled += n;
                conn.head_started.get_or_insert_with(Instant::now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Outcome::Drop,
        }
    }
}

enum Served {
    /// Answered at least one request or queued an error: write, then continue.
    Progress,
    /// No complete head in the buffer.
    NeedMore,
    /// The next request must go to the worker pool.
    Migrate,
    /// The last answer was written and the connection ends.
    Close,
}

/// Answers the complete requests at the front of the buffer.
fn serve_buffered(
    conn: &mut LoopConn,
    shared: &Shared,
    scratch: &mut Vec<u8>,
    date: &mut DateCache,
) -> Served {
    if conn.filled == 0 {
        return Served::NeedMore;
    }
    let head = match parse_head(&conn.buf[..conn.filled], &shared.config) {
        Ok(Some(head)) => head,
        Ok(None) => return Served::NeedMore,
        Err(e) => {
            reject(conn, e, scratch, date);
            return Served::Progress;
        }
    };
    if head.framing != Framing::Empty || head.expect_continue {
        return Served::Migrate;
    }
    let correlation_id = correlation_id_of(&conn.buf, &head, conn.peer, &shared.config);
    let request = Request {
        buf: &conn.buf[..conn.filled],
        head: &head,
        body: &[],
        body_pending: false,
        peer: conn.peer,
        correlation_id,
        tls: false,
    };
    let handler = &*shared.handler;
    if !handler.serves_inline(&request) {
        return Served::Migrate;
    }
    let head_only = request.method() == "HEAD";
    let response = catch_unwind(AssertUnwindSafe(|| handler.handle(&request)))
        .unwrap_or_else(|_| panic_response(&correlation_id));
    let response = checked_response(response, &correlation_id);
    let keep_alive = shared.keeps_alive(&head, &response);
    serialize(
        &response,
        &correlation_id,
        date.get(crate::time_format::now_unix()),
        keep_alive,
        head_only,
        scratch,
    );
    let consumed = head.head_len;
    conn.buf.copy_within(consumed..conn.filled, 0);
    conn.filled -= consumed;
    let now = Instant::now();
    conn.first_request = false;
    conn.waiting_since = now;
    conn.head_started = (conn.filled > 0).then_some(now);
    if conn.out.is_empty() {
        match conn.stream.write(scratch) {
            Ok(n) => conn.out.extend_from_slice(&scratch[n..]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.out.extend_from_slice(scratch),
            Err(_) => return Served::Close,
        }
    } else {
        conn.out.extend_from_slice(scratch);
    }
    if !conn.out.is_empty() {
        conn.out_since.get_or_insert(now);
    }
    if !keep_alive {
        if conn.out.is_empty() && conn.filled == 0 {
            let _ = conn.stream.shutdown(Shutdown::Write);
            return Served::Close;
        }
        conn.closing = Some(Closing {
            linger: ERROR_LINGER,
            until: None,
        });
    }
    Served::Progress
}

/// Queues an error answer and closes after it (with a linger).
fn reject(conn: &mut LoopConn, error: Error, scratch: &mut Vec<u8>, date: &mut DateCache) {
    let correlation_id = CorrelationId::generate();
    serialize(
        &error.to_response(&correlation_id),
        &correlation_id,
        date.get(crate::time_format::now_unix()),
        false,
        false,
        scratch,
    );
    conn.out.extend_from_slice(scratch);
    conn.filled = 0;
    let now = Instant::now();
    conn.out_since.get_or_insert(now);
    conn.closing = Some(Closing {
        linger: ERROR_LINGER,
        until: None,
    });
}

/// Answers connections over the cap with a 503 without keeping them.
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
