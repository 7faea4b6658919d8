//! Audit events to the site's syslog or SIEM (`--audit-syslog`), for sites with no e-mail and
//! no internet: every event the audit log takes is also sent as one RFC 5424 message, with
//! the event's fields as structured data and the event as JSON for the message. Token ids,
//! names and client addresses are sent as the audit log holds them; secrets never are (the
//! audit log holds none: `store::records::stamp_audit` redacts anything shaped like one).
//!
//! Sending never slows the request that caused the event: events go through a bounded queue
//! to one thread that sends them; a full queue drops the newest and counts it, a failed send
//! is counted and the connection made again for the next event (UDP and Unix datagrams are
//! fire and forget; TCP uses RFC 6587 octet counting). The audit log stays the record of
//! truth; this is a copy for the site's collectors.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::domain::audit::{class_of, AuditClass, AuditEvent};

/// Events waiting to be sent; past this the newest are dropped (and counted).
const QUEUE: usize = 10_000;
/// How long a TCP connect or write may take before the event is counted as failed.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// A message over this (bytes) is sent without its JSON copy: the structured data has the
/// fields, and a UDP datagram this size still passes every collector.
const MAX_MESSAGE: usize = 8_000;
/// The SD-ID's enterprise number: 32473, the one RFC 5612 reserves for documentation, as
/// pa-auth has none of its own.
const SD_ID: &str = "pa-auth@32473";
/// syslog facility `authpriv` (10), shifted into the PRI value.
const FACILITY: u8 = 10 << 3;

/// Where messages go: `udp://host:port`, `tcp://host:port` or `unix:///path` (a datagram
/// socket such as `/dev/log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        let host_port = |rest: &str| {
            let ok = rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if ok {
                Ok(rest.to_owned())
            } else {
                Err(format!(
                    "expected udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH, got {text:?}"
                ))
            }
        };
        if let Some(rest) = text.strip_prefix("udp://") {
            host_port(rest).map(Target::Udp)
        } else if let Some(rest) = text.strip_prefix("tcp://") {
            host_port(rest).map(Target::Tcp)
        } else if let Some(path) = text.strip_prefix("unix://").filter(|p| p.starts_with('/')) {
            Ok(Target::Unix(PathBuf::from(path)))
        } else {
            Err(format!(
                "expected udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH, got {text:?}"
            ))
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Udp(a) => write!(f, "udp://{a}"),
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Figures for /metrics.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    pub sent: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Sends that failed (the collector unreachable, a refused connection).
    pub failed: AtomicU64,
}

/// The sending side; the thread stops (after sending what is queued) when this is dropped.
pub struct SyslogSink {
    queue: Option<SyncSender<AuditEvent>>,
    counters: Arc<SyslogCounters>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogSink {
    pub fn start(target: Target) -> std::io::Result<SyslogSink> {
        let (queue, events) = sync_channel(QUEUE);
        let counters = Arc::new(SyslogCounters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("audit-syslog".into())
            .spawn(move || run(&target, &events, &thread_counters))?;
        Ok(SyslogSink {
            queue: Some(queue),
            counters,
            thread: Some(thread),
        })
    }

    /// Queues a copy of `event` to be sent; never waits.
    pub fn send(&self, event: &AuditEvent) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(event.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn counters(&self) -> &SyslogCounters {
        &self.counters
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        // Closing the queue lets the thread send what is left, then end.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the service sends a copy of each audit event it appends: nowhere, or a syslog
/// sink. Cloned into the maintenance thread (aggregated failures); closed at shutdown,
/// which sends what is queued.
#[derive(Clone, Default)]
pub struct AuditCopy(Arc<std::sync::RwLock<Option<SyslogSink>>>);

impl AuditCopy {
    pub fn send(&self, event: &AuditEvent) {
        if let Some(sink) = crate::sync::read(&self.0).as_ref() {
            sink.send(event);
        }
    }

    /// Starts sending copies to `sink`.
    pub fn open(&self, sink: SyslogSink) {
        *crate::sync::write(&self.0) = Some(sink);
    }

    /// Sends what is queued, then stops.
    pub fn close(&self) {
        let sink = crate::sync::write(&self.0).take();
        drop(sink);
    }

    /// (sent, dropped, failed), when a sink is open.
    pub fn figures(&self) -> Option<(u64, u64, u64)> {
        crate::sync::read(&self.0).as_ref().map(|s| {
            let c = s.counters();
            (
                c.sent.load(Ordering::Relaxed),
                c.dropped.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
            )
        })
    }
}

enum Connection {
    None,
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

fn run(target: &Target, events: &Receiver<AuditEvent>, counters: &SyslogCounters) {
    let hostname = hostname();
    let pid = std::process::id();
    let mut conn = Connection::None;
    let mut warned = false;
    for event in events {
        let message = format_message(&event, &hostname, pid);
        match deliver(target, &mut conn, message.as_bytes()) {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                warned = false;
            }
            Err(e) => {
                conn = Connection::None;
                counters.failed.fetch_add(1, Ordering::Relaxed);
                if !warned {
                    log::warn!("sending audit events to {target} failed ({e}); counting failures in /metrics until it works again");
                    warned = true;
                }
            }
        }
    }
}

fn deliver(target: &Target, conn: &mut Connection, message: &[u8]) -> std::io::Result<()> {
    if matches!(conn, Connection::None) {
        *conn = match target {
            Target::Udp(addr) => {
                let peer = addr
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let bind = if peer.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(bind)?;
                socket.connect(peer)?;
                Connection::Udp(socket)
            }
            Target::Tcp(addr) => {
                let peer = addr
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))?;
                let stream = TcpStream::connect_timeout(&peer, TCP_TIMEOUT)?;
                stream.set_write_timeout(Some(TCP_TIMEOUT))?;
                Connection::Tcp(stream)
            }
            Target::Unix(_) => Connection::Unix(UnixDatagram::unbound()?),
        };
    }
    match (conn, target) {
        (Connection::Udp(socket), _) => socket.send(message).map(|_| ()),
        (Connection::Tcp(stream), _) => {
            // RFC 6587 octet counting: "LEN SP MSG", so a message may hold any byte.
            let mut framed = format!("{} ", message.len()).into_bytes();
            framed.extend_from_slice(message);
            stream.write_all(&framed)
        }
        (Connection::Unix(socket), Target::Unix(path)) => socket.send_to(message, path).map(|_| ()),
        _ => Err(std::io::Error::other("no connection")),
    }
}

/// This host's name for the HOSTNAME field ("-" when unknown).
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean = printable_ascii(name.trim(), 255);
    if clean.is_empty() {
        "-".into()
    } else {
        clean
    }
}

/// Printable US-ASCII without spaces (what RFC 5424's header fields allow), at most `max`.
fn printable_ascii(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME pa-auth PROCID MSGID [SD] JSON`.
/// Failures (anyone can cause them) are `warning`, lifecycle events `notice`, both in the
/// `authpriv` facility.
pub fn format_message(event: &AuditEvent, hostname: &str, pid: u32) -> String {
    let severity = match class_of(&event.event) {
        AuditClass::Failure => 4,
        AuditClass::Lifecycle => 5,
    };
    let msgid = printable_ascii(&event.event, 32);
    let timestamp = if event.at.is_empty() { "-" } else { &event.at };
    let mut out = format!(
        "<{}>1 {timestamp} {hostname} pa-auth {pid} {} [{SD_ID}",
        FACILITY + severity,
        if msgid.is_empty() { "-" } else { &msgid }
    );
    let count = event.count.map(|c| c.to_string());
    for (name, value) in [
        ("id", Some(&event.id)),
        ("actor", event.actor.as_ref()),
        ("tokenId", event.token_id.as_ref()),
        ("tokenName", event.token_name.as_ref()),
        ("remoteAddr", event.remote_addr.as_ref()),
        ("reason", event.reason.as_ref()),
        ("count", count.as_ref()),
    ] {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                // RFC 5424 §6.3.3: these three are escaped in a PARAM-VALUE.
                '"' | '\\' | ']' => {
                    out.push('\\');
                    out.push(c);
                }
                // A line break would split the message for line-based collectors.
                c if c.is_control() => out.push('\u{FFFD}'),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    let json = serde_json::to_string(event).unwrap_or_default();
    if out.len() + 1 + json.len() <= MAX_MESSAGE {
        out.push(' ');
        out.push_str(&json);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::AuditKind;

    #[test]
    fn targets_parse_and_refuse() {
        assert_eq!(
            Target::parse("udp://127.0.0.1:514"),
            Ok(Target::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            Target::parse("tcp://siem.example:6514"),
            Ok(Target::Tcp("siem.example:6514".into()))
        );
        assert_eq!(
            Target::parse("unix:///dev/log"),
            Ok(Target::Unix("/dev/log".into()))
        );
        for bad in [
            "",
            "udp://",
            "udp://host",
            "tcp://:514",
            "http://x:1",
            "unix://rel",
            "udp://h:99999",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_is_rfc_5424_with_escaped_structured_data() {
        let event = AuditEvent {
            id: "00ab".into(),
            at: "2026-12-02T10:00:00Z".into(),
            actor: Some("ad\"m]i\\n\nx".into()),
            token_id: Some("t1".into()),
            token_name: Some("ci deploy".into()),
            ..AuditEvent::of(AuditKind::TokenCreated)
        };
        let m = format_message(&event, "host-1", 42);
        assert!(
            m.starts_with(
                "<85>1 2026-12-02T10:00:00Z host-1 pa-auth 42 token.created [pa-auth@32473 id=\"00ab\" \
                 actor=\"ad\\\"m\\]i\\\\n\u{FFFD}x\" tokenId=\"t1\" tokenName=\"ci deploy\"] {"
            ),
            "{m}"
        );
        assert!(!m.contains('\n'));
        let failed = AuditEvent {
            count: Some(3),
            ..AuditEvent::of(AuditKind::AuthFailed)
        };
        let m = format_message(&failed, "h", 1);
        assert!(
            m.starts_with("<84>1 - h pa-auth 1 auth.failed [pa-auth@32473 count=\"3\"]"),
            "{m}"
        );
        // An oversized event still goes, without its JSON copy.
        let big = AuditEvent {
            reason: Some("r".repeat(9_000)),
            ..AuditEvent::of(AuditKind::TokenDeleted)
        };
        let m = format_message(&big, "h", 1);
        assert!(m.ends_with("\"]"), "{}", &m[m.len() - 20..]);
    }
}
