//! The server as a whole: start and shutdown of the two kinds of thread, and its live
//! figures. Configuration is in `config.rs`, the handler contract in `handler.rs`, the
//! connection accounting in `admission.rs`.
//!
//! Event loops (`event_loop.rs`, one per core) own every connection from accept to close,
//! plain and TLS, each a [`super::conn::Conn`] state machine and a buffer, never a thread.
//! They answer quick requests in place ([`Handler::serves_inline`]: token checks, health) and
//! hand a request that may block (admin routes: Argon2, fsync, scans) *complete, body
//! included*, to the request pool (`request_pool.rs`), whose answer comes back to the loop.
//! Every response, including every refusal by the layer itself, passes
//! [`Handler::observe`] once. Shutdown stops accepting, lets in-flight requests finish
//! (bounded), closes idle connections and joins.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::admission::Shared;
use super::config::ServerConfig;
use super::control::ControlListener;
use super::event_loop::EventLoop;
use super::handler::Handler;
use super::request_pool::{LoopMailbox, RequestPool};

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
        let mut control = config
            .control_socket
            .as_deref()
            .map(ControlListener::bind)
            .transpose()?;
        let shared = Arc::new(Shared::new(config.clone(), Box::new(handler)));
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
            let event_loop = EventLoop::new(
                listener,
                control.take(),
                Arc::clone(&shared),
                Arc::clone(&pool),
            )?;
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
