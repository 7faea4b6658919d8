//! Moving bytes between a non-blocking socket and a [`Conn`]: plain TCP, TLS through a
//! rustls `ServerConnection` (rustls does no I/O of its own: records are read and written here,
//! so a handshake is just more bytes on the loop, under the same deadline as the head), or the
//! local control socket (a Unix stream, plain).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use rustls::ServerConnection;

use super::conn::Conn;

/// What a read or write pass achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Io {
    /// Moved bytes (more may be possible).
    Progress,
    /// Nothing more now: the socket would block, or the connection wants no input.
    Blocked,
    /// Everything pending was written.
    Flushed,
    /// The peer closed.
    Eof,
    /// A socket or TLS error: drop the connection.
    Failed,
}

pub(super) enum Transport {
    Plain(TcpStream),
    Tls(TcpStream, Box<ServerConnection>),
    /// The control socket (`--control-socket`): a local peer, plain.
    Local(UnixStream),
}

impl Transport {
    /// The socket, for the poller.
    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Plain(tcp) | Transport::Tls(tcp, _) => tcp.as_raw_fd(),
            Transport::Local(unix) => unix.as_raw_fd(),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Transport::Plain(tcp) | Transport::Tls(tcp, _) => tcp.shutdown(Shutdown::Write),
            Transport::Local(unix) => unix.shutdown(Shutdown::Write),
        };
    }

    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(..))
    }

    /// One read into the connection: plaintext from TLS records already decrypted, else one
    /// socket read (decrypting what came).
    pub(super) fn read_into(&mut self, conn: &mut Conn, now: std::time::Instant) -> Io {
        match self {
            Transport::Plain(tcp) => read_plain(tcp, conn, now),
            Transport::Local(unix) => read_plain(unix, conn, now),
            Transport::Tls(tcp, tls) => loop {
                let Some(space) = conn.read_space() else {
                    return Io::Blocked;
                };
                match tls.reader().read(space) {
                    Ok(0) => return Io::Eof,
                    Ok(n) => {
                        conn.received(n, now);
                        return Io::Progress;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed without close_notify: a close like any other.
                    Err(_) => return Io::Eof,
                }
                match tls.read_tls(tcp) {
                    Ok(0) => return Io::Eof,
                    Ok(_) => {
                        if tls.process_new_packets().is_err() {
                            // Send the alert rustls queued, then give up on the connection.
                            let _ = tls.write_tls(tcp);
                            return Io::Failed;
                        }
                    }
                    Err(e) => match io_error(&e) {
                        Io::Progress => {}
                        other => return other,
                    },
                }
            },
        }
    }

    /// Writes the connection's output (and, for TLS, pending handshake records) until done or
    /// the socket would block.
    pub(super) fn write_from(&mut self, conn: &mut Conn, now: std::time::Instant) -> Io {
        match self {
            Transport::Plain(tcp) => write_plain(tcp, conn, now),
            Transport::Local(unix) => write_plain(unix, conn, now),
            Transport::Tls(tcp, tls) => loop {
                let mut moved = false;
                if conn.has_output() {
                    if let Ok(n) = tls.writer().write(conn.output()) {
                        if n > 0 {
                            conn.wrote(n, now);
                            moved = true;
                        }
                    }
                }
                if tls.wants_write() {
                    match tls.write_tls(tcp) {
                        Ok(_) => continue,
                        Err(e) => match io_error(&e) {
                            Io::Progress => continue,
                            other => return other,
                        },
                    }
                }
                if !conn.has_output() {
                    return Io::Flushed;
                }
                if !moved {
                    // rustls's buffer is full and nothing is left to send: wait for the socket.
                    return Io::Blocked;
                }
            },
        }
    }

    /// Half-closes: close_notify for TLS, then FIN.
    pub(super) fn half_close(&mut self) {
        self.close_notify();
        self.shutdown_write();
    }

    /// Sends `answer` on a plain connection that will not be kept, after draining what the
    /// client already sent (so close() sends FIN, not RST); a TLS connection is just closed.
    pub(super) fn answer_and_close(mut self, answer: &[u8]) {
        fn drain_and_send(socket: &mut (impl Read + Write), answer: &[u8]) {
            let mut sink = [0u8; 4096];
            for _ in 0..4 {
                if !matches!(socket.read(&mut sink), Ok(n) if n > 0) {
                    break;
                }
            }
            let _ = socket.write_all(answer);
        }
        match &mut self {
            Transport::Plain(tcp) => drain_and_send(tcp, answer),
            Transport::Local(unix) => drain_and_send(unix, answer),
            Transport::Tls(..) => return,
        }
        self.shutdown_write();
    }

    /// TLS: sends close_notify (best effort; the socket is about to close or half-close).
    pub(super) fn close_notify(&mut self) {
        if let Transport::Tls(tcp, tls) = self {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(tcp).is_err() {
                    break;
                }
            }
        }
    }
}

fn read_plain(socket: &mut impl Read, conn: &mut Conn, now: std::time::Instant) -> Io {
    let Some(space) = conn.read_space() else {
        return Io::Blocked;
    };
    match socket.read(space) {
        Ok(0) => Io::Eof,
        Ok(n) => {
            conn.received(n, now);
            Io::Progress
        }
        Err(e) => io_error(&e),
    }
}

fn write_plain(socket: &mut impl Write, conn: &mut Conn, now: std::time::Instant) -> Io {
    while conn.has_output() {
        match socket.write(conn.output()) {
            Ok(0) => return Io::Failed,
            Ok(n) => conn.wrote(n, now),
            Err(e) => match io_error(&e) {
                Io::Progress => {}
                other => return other,
            },
        }
    }
    Io::Flushed
}

fn io_error(e: &io::Error) -> Io {
    match e.kind() {
        io::ErrorKind::WouldBlock => Io::Blocked,
        io::ErrorKind::Interrupted => Io::Progress,
        _ => Io::Failed,
    }
}
