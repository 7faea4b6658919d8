//! One HTTP/1.1 connection as a sans-IO state machine: bytes in, requests out; responses
//! in, bytes out; deadlines as data. It owns parsing, framing (Content-Length and chunked,
//! decoded in place), keep-alive, pipelining, `Expect: 100-continue`, the size limits, the
//! deadlines, error replies and the linger before close. It does no I/O and reads no clock:
//! the driver (`event_loop.rs`) moves bytes between it and a socket (plain or TLS) and passes
//! `now`, so every rule here is unit-tested without a socket.
//!
//! The life of a request: [`Conn::poll`] parses a head from the input; a bodiless request is
//! [`Step::Request`] at once; one with a body is first [`Step::BodyAhead`] so the handler can
//! answer before the body is read (unknown route, no credential: the body is then never read
//! and the connection closes), then its body is read to its own deadline and it becomes a
//! [`Step::Request`]. The driver answers it with [`Conn::respond`] (now, or later when a
//! worker is done; meanwhile the connection reads nothing more). A broken or late request is
//! answered here ([`Step::Rejected`]) and the connection closes after a bounded linger.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::chunked::ChunkedDecoder;
use super::error::{Error, Refusal};
use super::head::{parse_request_head, Framing, HeadLimits, ParsedHead};
pub(crate) use super::response::DateCache;
use super::response::{serialize, CorrelationId, Response};

/// First size of a connection's input buffer; it grows to the head limit, and to head plus
/// body limit only while a body is read.
pub const INITIAL_BUFFER: usize = 4096;
/// Room beyond head and body limits for chunk framing read ahead of the in-place decoder.
const FRAMING_SLACK: usize = 8 * 1024;
/// A closing connection discards what the client still sends for this long, at most.
pub const ERROR_LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const MAX_LINGER_BYTES: usize = 1024 * 1024;

/// The limits and deadlines a connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_head_bytes: usize,
    pub max_body_bytes: u64,
    /// From accept to a complete first head (TLS handshake included); for later requests on
    /// a kept-alive connection, from their first byte. A body has the same time again, from
    /// the end of its head.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// How long output may wait for a client that does not read it.
    pub write_timeout: Duration,
    /// How a refusal of the connection's own is rendered.
    pub refusal: Refusal,
}

/// What the connection needs from its driver next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until more input arrives, output drains, or the next deadline.
    Idle,
    /// A complete request head announcing a body: the driver asks the handler whether it
    /// answers before the body ([`Conn::answer_before_body`]) or not ([`Conn::read_body`]).
    BodyAhead,
    /// A complete request (body included) is ready: [`Conn::request`] shows it and
    /// [`Conn::respond`] answers it.
    Request,
    /// The request was refused with this error, already queued as the answer; the
    /// connection closes after it.
    Rejected(RejectedRequest),
}

/// A refusal by the HTTP layer, for the driver's log line and metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct RejectedRequest {
    pub status: u16,
    pub correlation_id: CorrelationId,
}

#[derive(Debug)]
enum Phase {
    /// Reading a head. `started`: when its deadline clock started (accept for the first
    /// request, the first byte for later ones; `None` while a kept-alive connection idles).
    Head {
        started: Option<Instant>,
    },
    /// Head parsed and a body announced; waiting for the driver's decision.
    BodyAhead,
    /// Reading the body.
    Body {
        deadline: Instant,
        chunked: Option<ChunkedState>,
    },
    /// A complete request is out with the driver; nothing more is read until it answers.
    Dispatched {
        body: Range<usize>,
        consumed: usize,
    },
    /// The last answer is queued: write it and half-close; then, if the client may still be
    /// sending (`linger`: a refusal, an unread body, pipelined requests), discard its input
    /// until `until` so our answer is not destroyed by a reset; else close at once.
    Closing {
        until: Option<Instant>,
        linger: bool,
    },
    Closed,
}

#[derive(Debug)]
struct ChunkedState {
    decoder: ChunkedDecoder,
    read: usize,
    write: usize,
}

/// One connection's protocol state and buffers.
pub struct Conn {
    input: Vec<u8>,
    /// The head of the request in hand (kept in place: no allocation per request).
    head: ParsedHead,
    /// Where answers are serialised before they join `output` (reused).
    scratch: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    /// Output bytes already written (the rest of `output` is pending).
    written: usize,
    output_since: Option<Instant>,
    phase: Phase,
    /// Accept time, or the end of the previous exchange.
    exchange_start: Instant,
    first_request: bool,
    discarded: usize,
    limits: ConnLimits,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("filled", &self.filled)
            .field("pending_output", &(self.output.len() - self.written))
            .field("phase", &self.phase)
            .finish()
    }
}

impl Conn {
    /// A connection accepted at `now`.
    pub fn new(limits: ConnLimits, now: Instant) -> Conn {
        Conn {
            input: vec![0; INITIAL_BUFFER],
            head: ParsedHead::default(),
            scratch: Vec::new(),
            filled: 0,
            output: Vec::new(),
            written: 0,
            output_since: None,
            phase: Phase::Head { started: Some(now) },
            exchange_start: now,
            first_request: true,
            discarded: 0,
            limits,
        }
    }

    /// Where the driver may read input into, or `None` when no input is wanted now (a request
    /// is with the driver, or the connection is closed). While closing, bytes read here are
    /// discarded.
    pub fn read_space(&mut self) -> Option<&mut [u8]> {
        match self.phase {
            Phase::Dispatched { .. } | Phase::BodyAhead | Phase::Closed => None,
            Phase::Closing { .. } => Some(&mut self.input[..]),
            Phase::Head { .. } | Phase::Body { .. } => {
                if self.filled == self.input.len() {
                    let cap = self.input_cap();
                    if self.input.len() >= cap {
                        return None;
                    }
                    let grown = (self.input.len() * 2).min(cap);
                    self.input.resize(grown, 0);
                }
                Some(&mut self.input[self.filled..])
            }
        }
    }

    fn input_cap(&self) -> usize {
        match self.phase {
            Phase::Body { .. } => {
                self.limits.max_head_bytes + self.limits.max_body_bytes as usize + FRAMING_SLACK
            }
            // One byte over the head limit, so an over-long head is seen as such.
            _ => self.limits.max_head_bytes + 1,
        }
    }

    /// `n` bytes were read into [`Conn::read_space`] at `now`.
    pub fn received(&mut self, n: usize, now: Instant) {
        match &mut self.phase {
            Phase::Closing { .. } => {
                self.discarded += n;
                if self.discarded > MAX_LINGER_BYTES {
                    self.phase = Phase::Closed;
                }
            }
            Phase::Head { started } => {
                self.filled += n;
                if n > 0 {
                    started.get_or_insert(now);
                }
            }
            _ => self.filled += n,
        }
    }

    /// The peer closed its side (end of stream).
    pub fn peer_closed(&mut self) {
        match self.phase {
            // Answers still queued are written; there is nothing more to read.
            Phase::Closing { .. } if self.has_output() => {}
            // A request with the driver is answered only if the connection lives on; the
            // answer could not be read anyway on most clients, so stop here.
            _ => self.phase = Phase::Closed,
        }
    }

    /// Advances as far as the buffered input allows.
    pub fn poll(&mut self, now: Instant, date: &mut DateCache) -> Step {
        match &mut self.phase {
            Phase::Head { .. } => self.poll_head(now, date),
            Phase::Body { .. } => self.poll_body(now, date),
            _ => Step::Idle,
        }
    }

    fn poll_head(&mut self, now: Instant, date: &mut DateCache) -> Step {
        if self.filled == 0 {
            return Step::Idle;
        }
        let limits = HeadLimits {
            max_head_bytes: self.limits.max_head_bytes,
            max_body_bytes: self.limits.max_body_bytes,
        };
        match parse_request_head(&self.input[..self.filled], &limits) {
            Ok(Some(head)) => self.head = head,
            Ok(None) => return Step::Idle,
            Err(e) => return self.reject(e, now, date),
        }
        match self.head.framing {
            Framing::Empty => {
                let end = self.head.head_len;
                self.phase = Phase::Dispatched {
                    body: end..end,
                    consumed: end,
                };
                Step::Request
            }
            Framing::Length(_) | Framing::Chunked => {
                self.phase = Phase::BodyAhead;
                Step::BodyAhead
            }
        }
    }

    /// The driver's answer to [`Step::BodyAhead`]: the body is wanted. Queues `100 Continue`
    /// when the client asked for it, and starts the body's own deadline.
    pub fn read_body(&mut self, now: Instant, date: &mut DateCache) -> Step {
        let Phase::BodyAhead = self.phase else {
            return Step::Idle;
        };
        if self.head.expect_continue {
            self.queue_output(b"HTTP/1.1 100 Continue\r\n\r\n", now);
        }
        let head_len = self.head.head_len;
        let chunked = (self.head.framing == Framing::Chunked).then(|| ChunkedState {
            decoder: ChunkedDecoder::new(self.limits.max_body_bytes),
            read: head_len,
            write: head_len,
        });
        self.phase = Phase::Body {
            deadline: now + self.limits.header_timeout,
            chunked,
        };
        self.poll_body(now, date)
    }

    fn poll_body(&mut self, now: Instant, date: &mut DateCache) -> Step {
        let Phase::Body { chunked, .. } = &mut self.phase else {
            return Step::Idle;
        };
        let start = self.head.head_len;
        let (body, consumed) = match (self.head.framing, chunked) {
            (Framing::Length(n), _) => {
                // The parser capped n at the body limit, so it fits the grown buffer.
                let end = start + n as usize;
                if self.filled < end {
                    return Step::Idle;
                }
                (start..end, end)
            }
            (Framing::Chunked, Some(state)) => {
                if let Err(e) = state.decoder.decode(
                    &mut self.input,
                    &mut state.read,
                    &mut state.write,
                    self.filled,
                ) {
                    return self.reject(e, now, date);
                }
                if !state.decoder.is_done() {
                    // Everything read so far was consumed: collapse the gap so the buffer
                    // never holds more than the decoded body plus one read of framing.
                    let (read, write) = (state.read, state.write);
                    self.input.copy_within(read..self.filled, write);
                    self.filled -= read - write;
                    state.read = write;
                    return Step::Idle;
                }
                // Keep pipelined bytes right after the decoded body.
                let (read, write) = (state.read, state.write);
                self.input.copy_within(read..self.filled, write);
                self.filled -= read - write;
                (start..write, write)
            }
            _ => (start..start, start),
        };
        self.phase = Phase::Dispatched { body, consumed };
        Step::Request
    }

    /// The request in hand (during [`Step::BodyAhead`] its body is empty and pending): the
    /// buffer, its parsed head and where its body lies.
    pub fn request(&self) -> Option<(&[u8], &ParsedHead, Range<usize>)> {
        match &self.phase {
            Phase::BodyAhead => Some((
                &self.input[..self.filled],
                &self.head,
                self.head.head_len..self.head.head_len,
            )),
            Phase::Dispatched { body, .. } => {
                Some((&self.input[..self.filled], &self.head, body.clone()))
            }
            _ => None,
        }
    }

    /// Lends the input buffer (holding the request in hand) to a worker; the connection reads
    /// nothing until [`Conn::restore_buffer`] gives it back.
    pub fn lend_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.input)
    }

    pub fn restore_buffer(&mut self, buffer: Vec<u8>) {
        self.input = buffer;
    }

    /// Answers the request in hand (a [`Step::Request`], or a [`Step::BodyAhead`] answered
    /// before its body: that connection then closes, its body unread). `keep_alive` is the
    /// driver's permission (not shutting down); the request and the response have their say.
    pub fn respond(
        &mut self,
        response: &Response,
        correlation_id: &CorrelationId,
        keep_alive: bool,
        now: Instant,
        date: &mut DateCache,
    ) {
        let phase = std::mem::replace(&mut self.phase, Phase::Closed);
        let (consumed, body_read) = match phase {
            Phase::Dispatched { consumed, .. } => (consumed, true),
            Phase::BodyAhead => (0, false),
            other => {
                self.phase = other;
                return;
            }
        };
        let keep_alive = keep_alive && body_read && self.head.keep_alive && !response.wants_close();
        let head_only = self.head.method.of(&self.input) == b"HEAD";
        let mut bytes = std::mem::take(&mut self.scratch);
        serialize(
            response,
            correlation_id,
            date.get(super::response::now_unix()),
            keep_alive,
            head_only,
            &mut bytes,
        );
        self.queue_output(&bytes, now);
        self.scratch = bytes;
        if keep_alive {
            self.input.copy_within(consumed..self.filled, 0);
            self.filled -= consumed;
            self.first_request = false;
            self.exchange_start = now;
            self.phase = Phase::Head {
                started: (self.filled > 0).then_some(now),
            };
            if self.input.len() > INITIAL_BUFFER && self.filled <= INITIAL_BUFFER {
                // A body grew the buffer: give the memory back between requests.
                self.input.truncate(INITIAL_BUFFER.max(self.filled));
                self.input.shrink_to_fit();
            }
        } else {
            let unread = !body_read || self.filled > consumed;
            self.filled = 0;
            self.phase = Phase::Closing {
                until: None,
                linger: unread,
            };
        }
    }

    /// Answers the request in hand before reading its body (see [`Conn::respond`]).
    pub fn answer_before_body(
        &mut self,
        response: &Response,
        correlation_id: &CorrelationId,
        now: Instant,
        date: &mut DateCache,
    ) {
        self.respond(response, correlation_id, false, now, date);
    }

    /// Queues `error` as the last answer; the connection closes after it.
    fn reject(&mut self, error: Error, now: Instant, date: &mut DateCache) -> Step {
        let correlation_id = CorrelationId::generate();
        let response = (self.limits.refusal)(&error, &correlation_id);
        let mut bytes = Vec::new();
        serialize(
            &response,
            &correlation_id,
            date.get(super::response::now_unix()),
            false,
            false,
            &mut bytes,
        );
        self.queue_output(&bytes, now);
        self.filled = 0;
        self.phase = Phase::Closing {
            until: None,
            linger: true,
        };
        Step::Rejected(RejectedRequest {
            status: response.status(),
            correlation_id,
        })
    }

    fn queue_output(&mut self, bytes: &[u8], now: Instant) {
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        self.output.extend_from_slice(bytes);
        self.output_since.get_or_insert(now);
    }

    /// Output waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    pub fn has_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// `n` output bytes were written at `now`.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.written = (self.written + n).min(self.output.len());
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            self.output_since = None;
            if self.output.capacity() > 64 * 1024 {
                self.output.shrink_to(INITIAL_BUFFER);
            }
        } else {
            self.output_since = Some(now);
        }
    }

    /// Whether the driver should half-close now (the last answer is written), starting the
    /// linger. True once.
    pub fn take_half_close(&mut self, now: Instant) -> bool {
        let pending = self.has_output();
        match &mut self.phase {
            Phase::Closing {
                until,
                linger: true,
            } if until.is_none() && !pending => {
                *until = Some(now + ERROR_LINGER);
                true
            }
            Phase::Closing {
                until: None,
                linger: false,
            } if !pending => {
                self.phase = Phase::Closed;
                true
            }
            _ => false,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Shutdown: an idle connection starts closing now (FIN and a short linger); one with a
    /// request under way finishes it (the driver answers without keep-alive).
    pub fn begin_shutdown(&mut self, now: Instant, linger: Duration) {
        let idle_head = matches!(self.phase, Phase::Head { .. }) && self.filled == 0;
        if idle_head && !self.has_output() {
            self.phase = Phase::Closing {
                until: Some(now + linger),
                linger: true,
            };
        }
    }

    /// The next instant at which [`Conn::on_deadline`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        let write = self
            .output_since
            .filter(|_| self.has_output())
            .map(|since| since + self.limits.write_timeout);
        let phase = match &self.phase {
            Phase::Head { started: None } => Some(self.exchange_start + self.limits.idle_timeout),
            Phase::Head {
                started: Some(start),
            } => Some(*start + self.limits.header_timeout),
            Phase::Body { deadline, .. } => Some(*deadline),
            Phase::Closing { until, .. } => *until,
            _ => None,
        };
        match (write, phase) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies every deadline that has passed at `now`: a late head or body gets 408, an idle
    /// connection or an ended linger closes, a client that stopped reading is dropped.
    pub fn on_deadline(&mut self, now: Instant, date: &mut DateCache) -> Option<RejectedRequest> {
        if self
            .output_since
            .is_some_and(|since| self.has_output() && now >= since + self.limits.write_timeout)
        {
            self.phase = Phase::Closed;
            return None;
        }
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        match self.phase {
            Phase::Head { started: None } | Phase::Closing { .. } => {
                self.phase = Phase::Closed;
                None
            }
            Phase::Head { .. } if self.filled == 0 => {
                // Nothing sent (or only a TLS handshake): nothing to answer.
                self.phase = Phase::Closed;
                None
            }
            Phase::Head { .. } | Phase::Body { .. } => {
                match self.reject(Error::RequestTimeout, now, date) {
                    Step::Rejected(r) => Some(r),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// What [`feed`] asks for each complete request: its buffer, head and body range in, the
/// response and the correlation id it goes out under.
pub(crate) type Answerer<'a> =
    dyn FnMut(&[u8], &ParsedHead, Range<usize>) -> (Response, CorrelationId) + 'a;

/// Feeds `bytes` to `conn` in pieces whose sizes `next_split` chooses (capped by the room the
/// connection has), answering every complete request with what `answer` makes of it (its
/// buffer, head and body range), and returns everything the connection wrote. With
/// `close_at_end`, the end of `bytes` is the peer closing, and the answers still owed are
/// written before it ends. The one driver of a connection without a socket: the fuzz targets'
/// [`serve_stream`] and the command line's offline path (`super::in_process`).
pub(crate) fn feed(
    conn: &mut Conn,
    bytes: &[u8],
    next_split: &mut dyn FnMut(usize) -> usize,
    close_at_end: bool,
    answer: &mut Answerer<'_>,
) -> Vec<u8> {
    let now = Instant::now();
    let mut date = DateCache::default();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut closed_by_peer = false;
    loop {
        let mut step = conn.poll(now, &mut date);
        loop {
            match step {
                Step::Idle | Step::Rejected(_) => break,
                Step::BodyAhead => step = conn.read_body(now, &mut date),
                Step::Request => {
                    let Some((buf, head, body)) = conn.request() else {
                        break;
                    };
                    let (response, correlation_id) = answer(buf, head, body);
                    conn.respond(&response, &correlation_id, true, now, &mut date);
                    step = conn.poll(now, &mut date);
                }
            }
        }
        out.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.wrote(n, now);
        if conn.is_closed() {
            break;
        }
        if fed == bytes.len() {
            if !close_at_end || closed_by_peer {
                break;
            }
            conn.peer_closed();
            closed_by_peer = true;
            continue;
        }
        let Some(space) = conn.read_space() else {
            break;
        };
        let n = next_split(fed).min(bytes.len() - fed).min(space.len());
        space[..n].copy_from_slice(&bytes[fed..fed + n]);
        conn.received(n, now);
        fed += n;
    }
    out
}

/// For the fuzz targets and tests: feeds `bytes` to one [`Conn`] in pieces whose sizes `next_split`
/// chooses, answering every request 200 with its path, and reading every body. Returns the
/// requests seen (method, path, body) and the statuses written, comma-separated.
pub fn serve_stream(
    bytes: &[u8],
    next_split: &mut dyn FnMut(usize) -> usize,
) -> (Vec<(String, String, Vec<u8>)>, String) {
    let limits = ConnLimits {
        max_head_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        header_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(5),
        write_timeout: std::time::Duration::from_secs(10),
        refusal: super::error::plain_refusal,
    };
    let mut conn = Conn::new(limits, Instant::now());
    let mut seen = Vec::new();
    let out = feed(
        &mut conn,
        bytes,
        next_split,
        false,
        &mut |buf, head, body| {
            let method = String::from_utf8_lossy(head.method.of(buf)).into_owned();
            let path = String::from_utf8_lossy(head.path(buf)).into_owned();
            seen.push((method, path.clone(), buf.get(body).unwrap_or(&[]).to_vec()));
            (
                Response::new(200).body(path.into_bytes()),
                CorrelationId::generate(),
            )
        },
    );
    let text = String::from_utf8_lossy(&out);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12))
        .collect::<Vec<_>>()
        .join(",");
    (seen, statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnLimits = ConnLimits {
        max_head_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        refusal: super::super::error::plain_refusal,
    };

    fn run(bytes: &[u8], split: usize) -> (Vec<(String, String, Vec<u8>)>, String) {
        super::serve_stream(bytes, &mut |_| split)
    }

    #[test]
    fn pipelined_requests_with_both_framings_in_any_split() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n\
            GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        let whole = run(stream, stream.len());
        assert_eq!(whole.1, "200,200,200,200");
        assert_eq!(whole.0[2].2, b"abcde");
        assert_eq!(whole.0[3].1, "/d");
        for split in [1, 2, 3, 7, 64] {
            assert_eq!(run(stream, split), whole, "split {split}");
        }
    }

    #[test]
    fn broken_requests_are_rejected_and_nothing_after_them_is_served() {
        let (seen, statuses) = run(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            5,
        );
        assert!(seen.is_empty());
        assert_eq!(statuses, "400");
        let (_, statuses) = run(
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            3,
        );
        assert_eq!(statuses, "400");
    }

    #[test]
    fn expect_continue_and_answers_before_the_body() {
        let now = Instant::now();
        let mut date = DateCache::default();
        let mut conn = Conn::new(LIMITS, now);
        let raw =
            b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        conn.read_space().unwrap()[..raw.len()].copy_from_slice(raw);
        conn.received(raw.len(), now);
        assert_eq!(conn.poll(now, &mut date), Step::BodyAhead);
        assert_eq!(conn.read_body(now, &mut date), Step::Idle);
        assert_eq!(conn.output(), b"HTTP/1.1 100 Continue\r\n\r\n");
        // Refused before the body: answered, closing, never reads the body as a request.
        let mut conn = Conn::new(LIMITS, now);
        conn.read_space().unwrap()[..raw.len()].copy_from_slice(raw);
        conn.received(raw.len(), now);
        assert_eq!(conn.poll(now, &mut date), Step::BodyAhead);
        let cid = CorrelationId::generate();
        conn.answer_before_body(&Response::new(404), &cid, now, &mut date);
        assert!(conn.output().starts_with(b"HTTP/1.1 404"));
        assert!(String::from_utf8_lossy(conn.output()).contains("Connection: close"));
        let n = conn.output().len();
        conn.wrote(n, now);
        assert!(conn.take_half_close(now));
        assert!(!conn.take_half_close(now));
    }

    #[test]
    fn first_head_deadline_counts_from_accept_not_from_the_first_byte() {
        let accepted = Instant::now();
        let mut date = DateCache::default();
        let mut conn = Conn::new(LIMITS, accepted);
        assert_eq!(conn.deadline(), Some(accepted + LIMITS.header_timeout));
        let late = accepted + Duration::from_millis(9_500);
        conn.read_space().unwrap()[0] = b'G';
        conn.received(1, late);
        assert_eq!(conn.deadline(), Some(accepted + LIMITS.header_timeout));
        assert!(conn.on_deadline(late, &mut date).is_none());
        let r = conn.on_deadline(accepted + LIMITS.header_timeout, &mut date);
        assert_eq!(r.map(|r| r.status), Some(408));
        // A silent connection is closed without an answer.
        let mut silent = Conn::new(LIMITS, accepted);
        assert!(silent
            .on_deadline(accepted + LIMITS.header_timeout, &mut date)
            .is_none());
        assert!(silent.is_closed());
    }

    #[test]
    fn kept_alive_connections_idle_then_get_the_head_time_from_their_first_byte() {
        let t0 = Instant::now();
        let mut date = DateCache::default();
        let mut conn = Conn::new(LIMITS, t0);
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        conn.read_space().unwrap()[..raw.len()].copy_from_slice(raw);
        conn.received(raw.len(), t0);
        assert_eq!(conn.poll(t0, &mut date), Step::Request);
        let cid = CorrelationId::generate();
        let t1 = t0 + Duration::from_secs(1);
        conn.respond(&Response::new(200), &cid, true, t1, &mut date);
        let n = conn.output().len();
        conn.wrote(n, t1);
        assert_eq!(conn.deadline(), Some(t1 + LIMITS.idle_timeout));
        let t2 = t1 + Duration::from_secs(4);
        conn.read_space().unwrap()[0] = b'G';
        conn.received(1, t2);
        assert_eq!(conn.deadline(), Some(t2 + LIMITS.header_timeout));
        let mut idle = Conn::new(LIMITS, t0);
        idle.read_space().unwrap()[..raw.len()].copy_from_slice(raw);
        idle.received(raw.len(), t0);
        idle.poll(t0, &mut date);
        idle.respond(&Response::new(200), &cid, true, t0, &mut date);
        let n = idle.output().len();
        idle.wrote(n, t0);
        assert!(idle
            .on_deadline(t0 + LIMITS.idle_timeout, &mut date)
            .is_none());
        assert!(idle.is_closed());
    }

    #[test]
    fn body_has_its_own_deadline_and_a_reader_that_stops_is_dropped() {
        let t0 = Instant::now();
        let mut date = DateCache::default();
        let mut conn = Conn::new(LIMITS, t0);
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab";
        conn.read_space().unwrap()[..raw.len()].copy_from_slice(raw);
        conn.received(raw.len(), t0);
        assert_eq!(conn.poll(t0, &mut date), Step::BodyAhead);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(conn.read_body(t1, &mut date), Step::Idle);
        assert_eq!(conn.deadline(), Some(t1 + LIMITS.header_timeout));
        let r = conn.on_deadline(t1 + LIMITS.header_timeout, &mut date);
        assert_eq!(r.map(|r| r.status), Some(408));
        // Unread output past the write timeout: closed.
        let t2 = t1 + LIMITS.header_timeout + LIMITS.write_timeout;
        conn.on_deadline(t2, &mut date);
        assert!(conn.is_closed());
    }

    #[test]
    fn buffers_stay_within_the_limits() {
        let now = Instant::now();
        let mut date = DateCache::default();
        let mut conn = Conn::new(LIMITS, now);
        let mut total = 0;
        while let Some(space) = conn.read_space() {
            let n = space.len();
            space.fill(b'a');
            conn.received(n, now);
            total += n;
            if let Step::Rejected(r) = conn.poll(now, &mut date) {
                assert_eq!(r.status, 431);
                break;
            }
        }
        assert!(total <= LIMITS.max_head_bytes + 1, "{total}");
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000));
        let (_, statuses) = run(long.as_bytes(), 1000);
        assert_eq!(statuses, "431");
    }
}
