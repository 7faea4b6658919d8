//! A webhook receiver (`--webhook-url`): its URL, checked when the server starts, and one
//! delivery to it — an HTTP/1.1 POST over TCP, or TLS when the URL is `https://` (verified
//! against `--webhook-ca`, else the system's authorities). Only a 2xx answer counts as
//! delivered; a redirect is not followed (the receiver's address is the operator's choice,
//! not the network's). Every step has a timeout, and nothing of the answer but its status
//! line and headers is read.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connect may take, and the whole exchange after it (sending the event and
/// reading the answer's head): a receiver that trickles its answer a byte at a time is cut
/// off at this deadline, not once per byte.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read to find its status.
const MAX_ANSWER_HEAD: usize = 16 * 1024;
/// The longest URL accepted.
const MAX_URL: usize = 2048;

/// A receiver's URL, split for the request.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiverUrl {
    /// As given: what the outbox records, so a receiver dropped from the configuration can
    /// be recognised.
    pub raw: String,
    https: bool,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    target: String,
}

impl std::fmt::Debug for ReceiverUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl ReceiverUrl {
    pub fn parse(raw: &str) -> Result<ReceiverUrl, String> {
        let bad = |why: &str| {
            // The URL is not echoed: its user info, path or query may be a secret (a
            // receiver's token in the path is common).
            Err(format!(
                "{why}: expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH"
            ))
        };
        if raw.len() > MAX_URL {
            return Err(format!("a webhook URL is at most {MAX_URL} characters"));
        }
        if raw.bytes().any(|b| b <= b' ' || b == 0x7f || !b.is_ascii()) {
            return bad("no spaces, control or non-ASCII characters (percent-encode them)");
        }
        let (https, rest) = if let Some(rest) = raw.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = raw.strip_prefix("http://") {
            (false, rest)
        } else {
            return bad("the scheme must be http or https");
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if target.contains('#') {
            return bad("no fragment");
        }
        if authority.contains('@') {
            return bad("no user name or password in the URL (the signature authenticates)");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return bad("an unclosed IPv6 address");
            };
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return bad("no host");
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return bad("a port from 1 to 65535"),
            },
        };
        let target = if target.is_empty() {
            "/".to_owned()
        } else if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_owned()
        };
        Ok(ReceiverUrl {
            raw: raw.to_owned(),
            https,
            host: host.to_owned(),
            port,
            target,
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The URL without its path and query (which may hold a receiver's own secret), for
    /// logs and errors.
    pub fn shown(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// POSTs `body` with `headers`; `Ok(status)` for a 2xx answer, else why not.
    pub fn post(
        &self,
        tls: Option<&Arc<rustls::ClientConfig>>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<u16, String> {
        let tcp = DeadlineStream {
            inner: self.connect()?,
            deadline: Instant::now() + TIMEOUT,
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pa-auth/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.target,
            self.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let status = if self.https {
            let Some(config) = tls else {
                return Err("no TLS configuration for an https receiver".into());
            };
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| format!("host name: {e}"))?;
            let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, tcp), &head, body)?
        } else {
            exchange(tcp, &head, body)?
        };
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(format!("answered {status}"))
        }
    }

    fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn connect(&self) -> Result<TcpStream, String> {
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", self.host))?;
        let mut last = format!("{} resolves to no address", self.host);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(last)
    }
}

/// A connection that fails every read and write once its deadline has passed, and gives each
/// one only the time left (so TLS, which reads as often as it needs, is bounded too).
struct DeadlineStream {
    inner: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn time_left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the receiver took over 10 s",
            ));
        }
        Ok(left)
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.time_left()?;
        self.inner.set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.time_left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the request and reads the answer's head; its status code.
fn exchange(mut stream: impl Read + Write, head: &str, body: &[u8]) -> Result<u16, String> {
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending: {e}"))?;
    let mut buf = vec![0u8; MAX_ANSWER_HEAD];
    let mut filled = 0;
    loop {
        let n = stream
            .read(&mut buf[filled..])
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the receiver closed the connection without an answer".into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        match answer.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                return answer
                    .code
                    .ok_or_else(|| "an answer without a status".into())
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => {}
            Ok(httparse::Status::Partial) => return Err("an answer head over 16 KiB".into()),
            Err(e) => return Err(format!("an unreadable answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts() {
        let u = ReceiverUrl::parse("https://hooks.example.com/pa?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (true, "hooks.example.com", 443, "/pa?x=1")
        );
        assert_eq!(u.shown(), "https://hooks.example.com:443");
        let u = ReceiverUrl::parse("http://[::1]:8099").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8099, "/")
        );
        assert_eq!(u.host_header(), "[::1]:8099");
        let u = ReceiverUrl::parse("http://127.0.0.1:9?k=v").unwrap();
        assert_eq!(u.target, "/?k=v");
    }

    #[test]
    fn a_trickling_receiver_is_cut_off_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            ReceiverUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            // One byte of an answer every 300 ms: never a whole head.
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: "
                .iter()
                .chain(std::iter::repeat(&b'a'))
            {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let started = Instant::now();
        let outcome = url.post(None, &[], b"{}");
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn hostile_urls_are_refused() {
        for bad in [
            "ftp://x/",
            "http://",
            "http://:80/",
            "http://user:pw@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://host/a b",
            "http://host/\r\nX: y",
            "http://host/#frag",
            "http://[::1/",
            "http://hôst/",
            "//host/",
        ] {
            assert!(ReceiverUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ReceiverUrl::parse(&format!("http://h/{}", "a".repeat(3000))).is_err());
    }
}
