//! The request type handlers see: method, path, query, headers, peer address and a bounded
//! body, all borrowed from the connection's buffer (no per-request allocation).

use std::net::SocketAddr;

use super::head::ParsedHead;
use super::CorrelationId;

/// One parsed request. Borrowed from the worker's buffer for the duration of the handler.
#[derive(Debug)]
pub struct Request<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) head: &'a ParsedHead,
    pub(crate) body: &'a [u8],
    pub(crate) body_pending: bool,
    pub(crate) peer: SocketAddr,
    /// On the control socket: the peer's uid (`SO_PEERCRED`).
    pub(crate) local_uid: Option<u32>,
    pub(crate) correlation_id: CorrelationId,
    pub(crate) tls: bool,
    /// `--trusted-proxies`: whose forwarded facts [`Self::forwarded`] believes.
    pub(crate) trusted_proxies: &'a super::TrustedProxies,
}

impl<'a> Request<'a> {
    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        std::str::from_utf8(self.head.method.of(self.buf)).unwrap_or("")
    }

    /// The request target as sent (origin-form path and query).
    pub fn target(&self) -> &'a str {
        std::str::from_utf8(self.head.target.of(self.buf)).unwrap_or("")
    }

    /// The path the request is routed by: never includes the query (see
    /// [`super::head::request_path`] for the four target forms).
    pub fn path(&self) -> &'a str {
        std::str::from_utf8(self.head.path(self.buf)).unwrap_or("")
    }

    /// The raw query string after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers_named(name).next()
    }

    /// Every value of a header, in order.
    pub fn headers_named<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        let buf = self.buf;
        self.head.headers[..self.head.header_count]
            .iter()
            .filter(move |h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |h| h.value.of(buf))
    }

    /// All headers as (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        let buf = self.buf;
        self.head.headers[..self.head.header_count]
            .iter()
            .map(move |h| (h.name.of(buf), h.value.of(buf)))
    }

    /// The decoded body (empty when none, or before it was read; see [`Self::body_pending`]).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// True while a handler is asked whether to answer before the body is read
    /// (`Expect: 100-continue`); the body is then not yet available.
    pub fn body_pending(&self) -> bool {
        self.body_pending
    }

    /// The uid of the local process on the other end when the request came through the
    /// control socket (`peer` is then [`super::LOCAL_PEER`]); `None` over TCP.
    pub fn local_uid(&self) -> Option<u32> {
        self.local_uid
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's address and the original method and URI as a trusted proxy gave them
    /// (see [`super::forwarded`]); from any other peer, the peer and nothing else.
    pub fn forwarded(&self) -> super::forwarded::Forwarded<'a> {
        super::forwarded::forwarded(
            self.headers(),
            self.method(),
            self.target(),
            self.peer.ip(),
            self.trusted_proxies,
        )
    }

    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }

    /// Whether the connection is TLS (for `Secure` cookies).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn http_minor_version(&self) -> u8 {
        self.head.minor_version
    }
}
