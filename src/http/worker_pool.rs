//! The worker pool: connections whose requests may block (admin routes, bodies, `Expect`,
//! TLS), each run on one worker thread at a time.
//!
//! A fixed pool of worker threads each owns one connection at a time and runs the whole
//! exchange on its own thread (read head → read body → handler → write), so a request is
//! never handed between threads. Each worker owns its buffers, allocated once. Idle
//! keep-alive connections yield their worker when others are waiting; on shutdown they are
//! closed with FIN and a short linger.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::chunked::ChunkedDecoder;
use super::head::{Framing, ParsedHead};
use super::response::{serialize, DateCache};
use super::server::{
    checked_response, correlation_id_of, panic_response, parse_head, Queued, ServerConfig, Shared,
};
use super::tls::Stream;
use super::{CorrelationId, Request, Response};
use crate::error::Error;

pub(super) fn worker_loop(shared: &Shared) {
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
        carried,
    } = queued;
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
    let waiting_since = accepted;
    let mut first_request = true;
    if let Some(carried) = carried {
        // From an event loop: its unread bytes (the loop's buffer is smaller than ours).
        let n = carried.input.len().min(conn.buf.len());
        conn.buf[..n].copy_from_slice(&carried.input[..n]);
        conn.filled = n;
        first_request = carried.first_request;
    }
    let mut waiting_since = waiting_since;
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
    // A new connection has the head deadline from accept; a kept-alive one idles first.
    let mut head_started = (first_request || conn.filled > 0).then_some(waiting_since);
    loop {
        if conn.filled > 0 {
            match parse_head(&conn.buf[..conn.filled], &shared.config) {
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
    let correlation_id = correlation_id_of(conn.buf, head, conn.peer, &shared.config);
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
            return answer_leaving_body_unread(
                &mut conn.stream,
                &response,
                &correlation_id,
                head_only,
                date,
                out,
            );
        }
        if conn.stream.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return Next::Close;
        }
    }

    let (body_end, consumed) = match read_body(conn, head, shared) {
        Ok(range) => range,
        Err(BodyError::Closed) => return Next::Close,
        Err(BodyError::Rejected(err)) => {
            return answer_leaving_body_unread(
                &mut conn.stream,
                &err.to_response(&correlation_id),
                &correlation_id,
                head_only,
                date,
                out,
            );
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
    let response = catch_unwind(AssertUnwindSafe(|| handler.handle(&request)))
        .unwrap_or_else(|_| panic_response(&correlation_id));
    let response = checked_response(response, &correlation_id);
    let keep_alive = shared.keeps_alive(head, &response);
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
    // One read of more body bytes before the deadline (a timeout or interrupt just returns,
    // so the caller's loop checks the deadline again).
    let read_more = |conn: &mut Connection<'_>| -> Result<(), BodyError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(BodyError::Rejected(Error::RequestTimeout));
        }
        conn.set_read_timeout(deadline - now);
        match conn.read_more(conn.buf.len()) {
            Ok(0) => Err(BodyError::Closed),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(BodyError::Closed),
        }
    };
    match head.framing {
        Framing::Empty => Ok((start, start)),
        Framing::Length(n) => {
            // The parser already capped n at max_body_bytes, so this fits the buffer.
            let end = start + n as usize;
            while conn.filled < end {
                read_more(conn)?;
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
                read_more(conn)?;
            }
        }
    }
}

/// Serialises and writes one response. Returns false if the client is gone.
/// Answers a request whose body stays unread (an early answer before `100 Continue`, or a
/// rejected body): never keep-alive, and the connection then lingers closed.
fn answer_leaving_body_unread(
    stream: &mut Stream,
    response: &Response,
    correlation_id: &CorrelationId,
    head_only: bool,
    date: &mut DateCache,
    out: &mut Vec<u8>,
) -> Next {
    write_response(
        stream,
        response,
        correlation_id,
        false,
        head_only,
        date,
        out,
    );
    Next::LingerClose
}

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
