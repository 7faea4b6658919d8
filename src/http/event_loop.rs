//! The event loops: every connection, plain or TLS, lives on one from accept to close.
//!
//! One loop thread per core, each with its own epoll instance (`mio`), accepts from the
//! shared listener and drives its connections without a thread wake-up per request: move
//! bytes between the socket ([`Transport`]) and the connection's state machine ([`Conn`]),
//! answer every complete request the handler calls quick in place (pipelining included), hand
//! the others, complete, to the request pool, and apply deadlines. A connection is a buffer,
//! never a thread; a slow client costs its buffer and nothing else. A worker's answer comes
//! back through the loop's [`LoopMailbox`]. Every answer and every refusal passes
//! [`Handler::observe`](super::Handler::observe) once.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::admission::{ConnSlot, Shared};
use super::conn::{Conn, RejectedRequest, Step};
use super::control::{peer_uid, ControlListener, LOCAL_PEER};
use super::error::Error;
use super::handler::{call_handler, correlation_id_of, guarded, Exchange};
use super::request_pool::{ConnectionRef, Job, LoopMailbox, RequestPool};
use super::response::{serialize, DateCache};
use super::transport::{Io, Transport};
use super::{CorrelationId, Request, Response};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
const CONTROL: Token = Token(usize::MAX - 2);

/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// On shutdown, idle connections are closed with this linger.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(100);
/// Passes over one connection before the loop turns to the others: a client that pipelines
/// without pause cannot starve its loop's other connections.
const DRIVE_BUDGET: u32 = 64;

/// One event loop; [`EventLoop::run`] consumes its thread.
pub(super) struct EventLoop {
    poll: Poll,
    listener: TcpListener,
    /// The control socket, on one loop only.
    control: Option<ControlListener>,
    shared: Arc<Shared>,
    pool: Arc<RequestPool>,
    mailbox: Arc<LoopMailbox>,
    conns: Vec<Option<LoopConn>>,
    generations: Vec<u64>,
    free: Vec<usize>,
    date: DateCache,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    /// Connections that yielded with work left (edge-triggered: no new event will come).
    again: Vec<usize>,
}

struct LoopConn {
    conn: Conn,
    transport: Transport,
    peer: SocketAddr,
    /// The peer's uid, on the control socket.
    local_uid: Option<u32>,
    slot: ConnSlot,
    generation: u64,
    /// The correlation id of the request in hand, chosen once when its head is complete and
    /// kept through its body and a worker, so every line about it carries the same id.
    in_hand: Option<CorrelationId>,
    /// When the request now with a worker became complete.
    with_worker: Option<Instant>,
}

impl LoopConn {
    /// The request in hand's correlation id (a trusted proxy's, or a new one), chosen once.
    fn correlation_id(&mut self, shared: &Shared) -> Option<CorrelationId> {
        if self.in_hand.is_none() {
            let (buf, head, _) = self.conn.request()?;
            self.in_hand = Some(correlation_id_of(buf, head, self.peer, &shared.config));
        }
        self.in_hand
    }

    /// The request in hand as the handler sees it (its body, unless still `body_pending`),
    /// and where that body lies in the buffer.
    fn request<'s>(
        &'s self,
        shared: &'s Shared,
        correlation_id: CorrelationId,
        body_pending: bool,
    ) -> Option<(Request<'s>, Range<usize>)> {
        let (buf, head, body) = self.conn.request()?;
        let request = Request {
            buf,
            head,
            body: if body_pending {
                &[]
            } else {
                buf.get(body.clone()).unwrap_or(&[])
            },
            body_pending,
            peer: self.peer,
            local_uid: self.local_uid,
            correlation_id,
            tls: self.transport.is_tls(),
            trusted_proxies: &shared.config.trusted_proxies,
        };
        Some((request, body))
    }
}

enum Outcome {
    Keep,
    Yield,
    Drop,
}

impl EventLoop {
    pub(super) fn new(
        listener: TcpListener,
        mut control: Option<ControlListener>,
        shared: Arc<Shared>,
        pool: Arc<RequestPool>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        if let Some(control) = control.as_mut() {
            poll.registry()
                .register(&mut control.listener, CONTROL, Interest::READABLE)?;
        }
        Ok(EventLoop {
            poll,
            listener,
            control,
            shared,
            pool,
            mailbox: Arc::new(LoopMailbox {
                done: Mutex::new(Vec::new()),
                waker,
            }),
            conns: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            date: DateCache::default(),
            accept_paused_until: None,
            accept_backoff: Duration::from_millis(5),
            again: Vec::new(),
        })
    }

    pub(super) fn mailbox(&self) -> Arc<LoopMailbox> {
        Arc::clone(&self.mailbox)
    }

    pub(super) fn run(mut self) {
        guarded("the loop-start hook", (), || {
            self.shared.handler.loop_started()
        });
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let timeout = if !self.again.is_empty() {
                Duration::ZERO
            } else if self.conns.len() == self.free.len() && self.accept_paused_until.is_none() {
                Duration::from_secs(1)
            } else {
                SWEEP_EVERY
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!("event loop poll failed: {e}");
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
                    WAKER => self.collect_answers(),
                    LISTENER => {
                        if drain_deadline.is_none() {
                            self.accept_all();
                        }
                    }
                    CONTROL => {
                        if drain_deadline.is_none() {
                            self.accept_control();
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
            guarded("the loop-turn hook", (), || {
                self.shared.handler.loop_turn_ended()
            });
            if let Some(deadline) = drain_deadline {
                if self.conns.len() == self.free.len() || now >= deadline {
                    for idx in 0..self.conns.len() {
                        self.remove(idx);
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
        if let Some(control) = self.control.as_mut() {
            let _ = self.poll.registry().deregister(&mut control.listener);
        }
        let now = Instant::now();
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].as_mut() {
                c.conn.begin_shutdown(now, SHUTDOWN_LINGER);
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
                    // Accepted non-blocking already (accept4 with SOCK_NONBLOCK).
                    self.admit(Transport::Plain(stream.into()), peer, None);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::Interrupted => {}
                    _ => {
                        // EMFILE/ENFILE/ENOBUFS: wait for descriptors to free up.
                        log::warn!(
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

    /// Accepts from the control socket: each connection with its peer's uid, accounted under
    /// one address ([`LOCAL_PEER`]) so together they take at most one address's places.
    fn accept_control(&mut self) {
        loop {
            let Some(control) = self.control.as_ref() else {
                return;
            };
            match control.listener.accept() {
                Ok((stream, _)) => {
                    let stream = std::os::unix::net::UnixStream::from(stream);
                    // No uid, no connection: the handler could not tell who asks.
                    let Ok(uid) = peer_uid(&stream) else {
                        continue;
                    };
                    self.admit(Transport::Local(stream), LOCAL_PEER, Some(uid));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match e.kind() {
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
                    _ => {
                        log::warn!("control socket accept failed: {e}");
                        return;
                    }
                },
            }
        }
    }

    fn admit(&mut self, transport: Transport, peer: SocketAddr, local_uid: Option<u32>) {
        let shared = Arc::clone(&self.shared);
        let Some(slot) = shared.admit(peer.ip()) else {
            // Over a cap. Over TLS no HTTP answer is possible before a handshake, which the
            // loop does not spend on a connection it will not keep: those are just closed.
            if shared.config.tls.is_none() || local_uid.is_some() {
                refuse_overloaded(transport, peer, &shared, &mut self.date);
            } else {
                // Nothing can be said to it, but the refusal is logged and counted like any.
                let refused = RejectedRequest {
                    status: Error::Overloaded.status(),
                    correlation_id: CorrelationId::generate(),
                };
                observe_refusal(&shared, peer, &refused);
            }
            return;
        };
        let now = Instant::now();
        let transport = match (transport, &shared.config.tls) {
            (Transport::Plain(stream), Some(ctx)) => {
                let _ = stream.set_nodelay(true);
                match ctx.accept() {
                    Ok(tls) => Transport::Tls(stream, Box::new(tls)),
                    Err(_) => return,
                }
            }
            (Transport::Plain(stream), None) => {
                let _ = stream.set_nodelay(true);
                Transport::Plain(stream)
            }
            (other, _) => other,
        };
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                self.conns.len() - 1
            }
        };
        if self
            .poll
            .registry()
            .register(
                &mut SourceFd(&transport.raw_fd()),
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(idx);
            return;
        }
        self.generations[idx] += 1;
        self.conns[idx] = Some(LoopConn {
            conn: Conn::new(shared.config.conn_limits(), now),
            transport,
            peer,
            local_uid,
            slot,
            generation: self.generations[idx],
            in_hand: None,
            with_worker: None,
        });
        // The request is often in the socket already.
        self.drive_and_settle(idx);
    }

    fn drive_and_settle(&mut self, idx: usize) {
        let outcome = match self.conns.get_mut(idx).and_then(Option::as_mut) {
            Some(c) => drive(
                c,
                idx,
                &self.shared,
                &self.pool,
                &self.mailbox,
                &mut self.date,
            ),
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
        }
    }

    fn remove(&mut self, idx: usize) {
        if self.conns[idx].take().is_some() {
            // Dropping the connection closes the socket (which leaves the epoll set with it)
            // and gives back its slot.
            self.free.push(idx);
        }
    }

    /// Answers that workers finished: back into their connections, which go on.
    fn collect_answers(&mut self) {
        for done in self.mailbox.take() {
            let idx = done.connection.slot;
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if c.generation != done.connection.generation {
                continue;
            }
            let (Some(started), Some(correlation_id)) = (c.with_worker.take(), c.in_hand) else {
                continue;
            };
            c.conn.restore_buffer(done.buffer);
            answer(
                c,
                &self.shared,
                &done.response,
                &correlation_id,
                started,
                &mut self.date,
            );
            self.drive_and_settle(idx);
        }
    }

    fn sweep(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            if c.conn.deadline().is_some_and(|d| now >= d) {
                if let Some(refused) = c.conn.on_deadline(now, &mut self.date) {
                    observe_refusal(&self.shared, c.peer, &refused);
                }
                if c.conn.is_closed() {
                    self.remove(idx);
                } else {
                    self.drive_and_settle(idx);
                }
            }
        }
    }
}

/// Runs a connection as far as it can go without blocking.
fn drive(
    c: &mut LoopConn,
    idx: usize,
    shared: &Shared,
    pool: &RequestPool,
    mailbox: &Arc<LoopMailbox>,
    date: &mut DateCache,
) -> Outcome {
    for _ in 0..DRIVE_BUDGET {
        let now = Instant::now();
        match c.transport.write_from(&mut c.conn, now) {
            Io::Failed => return Outcome::Drop,
            // The client is not reading: read nothing more from it until it does.
            Io::Blocked if c.conn.has_output() => return Outcome::Keep,
            _ => {}
        }
        if c.conn.take_half_close(now) {
            if c.conn.is_closed() {
                // Nothing more will be read: closing the socket sends the FIN.
                c.transport.close_notify();
            } else {
                c.transport.half_close();
            }
        }
        if c.conn.is_closed() {
            return Outcome::Drop;
        }
        let step = c.conn.poll(now, date);
        if step != Step::Idle {
            on_step(c, step, idx, shared, pool, mailbox, date);
            continue;
        }
        if c.with_worker.is_some() {
            return Outcome::Keep;
        }
        match c.transport.read_into(&mut c.conn, now) {
            Io::Progress => {}
            Io::Blocked => {
                if let Transport::Tls(_, tls) = &c.transport {
                    if tls.wants_write() {
                        continue;
                    }
                }
                return Outcome::Keep;
            }
            Io::Eof => {
                c.conn.peer_closed();
                if c.conn.is_closed() {
                    return Outcome::Drop;
                }
            }
            Io::Failed | Io::Flushed => return Outcome::Drop,
        }
    }
    Outcome::Yield
}

/// Acts on what the connection asks for.
fn on_step(
    c: &mut LoopConn,
    step: Step,
    idx: usize,
    shared: &Shared,
    pool: &RequestPool,
    mailbox: &Arc<LoopMailbox>,
    date: &mut DateCache,
) {
    match step {
        Step::Idle => {}
        Step::Rejected(refused) => observe_refusal(shared, c.peer, &refused),
        Step::BodyAhead => body_ahead(c, idx, shared, pool, mailbox, date),
        Step::Request => request_ready(c, idx, shared, pool, mailbox, date),
    }
}

/// A head announcing a body: answer now if the handler can (the body is never read), else
/// take a body place and read it.
fn body_ahead(
    c: &mut LoopConn,
    idx: usize,
    shared: &Shared,
    pool: &RequestPool,
    mailbox: &Arc<LoopMailbox>,
    date: &mut DateCache,
) {
    let now = Instant::now();
    let Some(correlation_id) = c.correlation_id(shared) else {
        return;
    };
    let handler = &*shared.handler;
    let (early, vouched) = {
        let Some((request, _)) = c.request(shared, correlation_id, true) else {
            return;
        };
        let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.respond_before_body(&request)
        }))
        .unwrap_or_else(|_| {
            Some(super::handler::panic_response(
                &shared.config,
                &correlation_id,
            ))
        });
        if let Some(response) = &early {
            observe(shared, &request, response, now, false);
        }
        let vouched = early.is_none()
            && guarded("vouches_for_body", false, || {
                handler.vouches_for_body(&request)
            });
        (early, vouched)
    };
    let early = match early {
        Some(response) => Some(response),
        None if !c.slot.begin_body(vouched) => {
            let response = (shared.config.refusal)(&Error::Overloaded, &correlation_id);
            if let Some((request, _)) = c.request(shared, correlation_id, true) {
                observe(shared, &request, &response, now, true);
            }
            Some(response)
        }
        None => None,
    };
    match early {
        Some(response) => {
            c.conn
                .answer_before_body(&response, &correlation_id, now, date);
            c.in_hand = None;
        }
        None => {
            let step = c.conn.read_body(now, date);
            on_step(c, step, idx, shared, pool, mailbox, date);
        }
    }
}

/// A complete request: answered here if quick, else handed to the pool.
fn request_ready(
    c: &mut LoopConn,
    idx: usize,
    shared: &Shared,
    pool: &RequestPool,
    mailbox: &Arc<LoopMailbox>,
    date: &mut DateCache,
) {
    let started = Instant::now();
    let Some(correlation_id) = c.correlation_id(shared) else {
        return;
    };
    let handler = &*shared.handler;
    let (inline, body) = {
        let Some((request, body)) = c.request(shared, correlation_id, false) else {
            return;
        };
        // A panic here sends the request to a worker, whose handler call is guarded too.
        if guarded("serves_inline", false, || handler.serves_inline(&request)) {
            (
                Some(call_handler(
                    &shared.config,
                    handler,
                    &request,
                    &correlation_id,
                )),
                body,
            )
        } else {
            (None, body)
        }
    };
    if let Some(response) = inline {
        answer(c, shared, &response, &correlation_id, started, date);
        return;
    }
    let Some((_, head, _)) = c.conn.request() else {
        return;
    };
    let job = Job {
        head: Box::new(head.clone()),
        body,
        peer: c.peer,
        local_uid: c.local_uid,
        correlation_id,
        tls: c.transport.is_tls(),
        reply_to: Arc::clone(mailbox),
        connection: ConnectionRef {
            slot: idx,
            generation: c.generation,
        },
        buffer: c.conn.lend_buffer(),
    };
    match pool.submit(job) {
        Ok(()) => c.with_worker = Some(started),
        Err(job) => {
            c.conn.restore_buffer(job.buffer);
            let response = (shared.config.refusal)(&Error::Overloaded, &correlation_id);
            answer_refused(c, shared, &response, &correlation_id, started, date);
        }
    }
}

/// Sends the answer to the request in hand and reports it.
fn answer(
    c: &mut LoopConn,
    shared: &Shared,
    response: &Response,
    correlation_id: &CorrelationId,
    started: Instant,
    date: &mut DateCache,
) {
    finish(c, shared, response, correlation_id, started, date, false);
}

fn answer_refused(
    c: &mut LoopConn,
    shared: &Shared,
    response: &Response,
    correlation_id: &CorrelationId,
    started: Instant,
    date: &mut DateCache,
) {
    finish(c, shared, response, correlation_id, started, date, true);
}

fn finish(
    c: &mut LoopConn,
    shared: &Shared,
    response: &Response,
    correlation_id: &CorrelationId,
    started: Instant,
    date: &mut DateCache,
    refused_by_server: bool,
) {
    let now = Instant::now();
    if let Some((buf, head, _)) = c.conn.request() {
        let method = std::str::from_utf8(head.method.of(buf)).unwrap_or("");
        let path = std::str::from_utf8(head.path(buf)).unwrap_or("");
        let exchange = Exchange {
            method,
            path,
            status: response.status(),
            duration: now.duration_since(started),
            peer: c.peer,
            local_uid: c.local_uid,
            correlation_id,
            refused_by_server,
        };
        guarded("the access log", (), || shared.handler.observe(&exchange));
    }
    c.conn.respond(
        response,
        correlation_id,
        shared.keep_alive_allowed(),
        now,
        date,
    );
    c.in_hand = None;
    c.slot.end_body();
}

fn observe(
    shared: &Shared,
    request: &Request<'_>,
    response: &Response,
    started: Instant,
    refused_by_server: bool,
) {
    let exchange = Exchange {
        method: request.method(),
        path: request.path(),
        status: response.status(),
        duration: started.elapsed(),
        peer: request.peer(),
        local_uid: request.local_uid(),
        correlation_id: request.correlation_id(),
        refused_by_server,
    };
    guarded("the access log", (), || shared.handler.observe(&exchange));
}

fn observe_refusal(shared: &Shared, peer: SocketAddr, refused: &RejectedRequest) {
    let exchange = Exchange {
        method: "",
        path: "",
        status: refused.status,
        duration: Duration::ZERO,
        peer,
        local_uid: None,
        correlation_id: &refused.correlation_id,
        refused_by_server: true,
    };
    guarded("the access log", (), || shared.handler.observe(&exchange));
}

/// Answers a connection over a cap with a 503 and closes it, without keeping it.
fn refuse_overloaded(
    transport: Transport,
    peer: SocketAddr,
    shared: &Shared,
    date: &mut DateCache,
) {
    let correlation_id = CorrelationId::generate();
    let response = (shared.config.refusal)(&Error::Overloaded, &correlation_id);
    let mut out = Vec::new();
    serialize(
        &response,
        &correlation_id,
        date.get(super::response::now_unix()),
        false,
        false,
        &mut out,
    );
    transport.answer_and_close(&out);
    observe_refusal(
        shared,
        peer,
        &RejectedRequest {
            status: response.status(),
            correlation_id,
        },
    );
}
