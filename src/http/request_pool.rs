//! The request pool: threads that run requests whose handler may block (Argon2, an fsync, a
//! store scan, a backup). An event loop hands over a *complete* request — its connection's
//! buffer, head and body — and gets the buffer back with the response through its mailbox.
//! Workers never hold a connection, so no client, however slow, can occupy one; the queue is
//! bounded and a request that finds it full gets 503 from the loop at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::admission::Shared;
use super::handler::call_handler;
use super::head::ParsedHead;
use super::{CorrelationId, Request, Response};

/// Where workers leave answers for a loop, and how they wake it.
pub(super) struct LoopMailbox {
    pub(super) done: Mutex<Vec<Done>>,
    pub(super) waker: mio::Waker,
}

impl LoopMailbox {
    pub(super) fn deliver(&self, done: Done) {
        super::sync::lock(&self.done).push(done);
        let _ = self.waker.wake();
    }

    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }

    pub(super) fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *super::sync::lock(&self.done))
    }
}

/// A complete request on its way to a worker.
pub(super) struct Job {
    pub(super) buffer: Vec<u8>,
    pub(super) head: Box<ParsedHead>,
    pub(super) body: Range<usize>,
    pub(super) peer: SocketAddr,
    pub(super) local_uid: Option<u32>,
    pub(super) correlation_id: CorrelationId,
    pub(super) tls: bool,
    /// Where the answer goes: the loop's mailbox and the connection there.
    pub(super) reply_to: Arc<LoopMailbox>,
    pub(super) connection: ConnectionRef,
}

/// A connection on a loop: its slot and the generation of that slot (a slot reused by a
/// later connection must not get this answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnectionRef {
    pub(super) slot: usize,
    pub(super) generation: u64,
}

/// A worker's answer, on its way back to the loop.
pub(super) struct Done {
    pub(super) connection: ConnectionRef,
    pub(super) buffer: Vec<u8>,
    pub(super) response: Response,
}

pub(super) struct RequestPool {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    capacity: usize,
    /// Set once every event loop has stopped: workers finish the queue and exit.
    closed: std::sync::atomic::AtomicBool,
}

impl RequestPool {
    pub(super) fn new(capacity: usize) -> Self {
        RequestPool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queues a job, or gives it back when the queue is full.
    pub(super) fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let mut queue = super::sync::lock(&self.queue);
        if queue.len() >= self.capacity {
            return Err(Box::new(job));
        }
        queue.push_back(job);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    pub(super) fn queued(&self) -> usize {
        super::sync::lock(&self.queue).len()
    }

    pub(super) fn wake_all(&self) {
        self.ready.notify_all();
    }

    /// No more jobs will come: workers exit once the queue is empty.
    pub(super) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.ready.notify_all();
    }

    /// A worker thread's life: run jobs until the pool is closed and its queue empty.
    pub(super) fn work(&self, shared: &Shared) {
        loop {
            let job = {
                let mut queue = super::sync::lock(&self.queue);
                loop {
                    if let Some(job) = queue.pop_front() {
                        break job;
                    }
                    if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    queue =
                        super::sync::wait_timeout(&self.ready, queue, Duration::from_millis(500));
                }
            };
            run(job, shared);
        }
    }
}

fn run(job: Job, shared: &Shared) {
    let Job {
        buffer,
        head,
        body,
        peer,
        local_uid,
        correlation_id,
        tls,
        reply_to,
        connection,
    } = job;
    let response = {
        let request = Request {
            buf: &buffer,
            head: &head,
            body: buffer.get(body).unwrap_or(&[]),
            body_pending: false,
            peer,
            local_uid,
            correlation_id,
            tls,
            trusted_proxies: &shared.config.trusted_proxies,
        };
        call_handler(&shared.config, &*shared.handler, &request, &correlation_id)
    };
    reply_to.deliver(Done {
        connection,
        buffer,
        response,
    });
}
