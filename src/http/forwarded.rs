//! What a trusted proxy says about the request it forwards (issue 19, decision 0009): the
//! client's address and the original request's method and URI. Pure functions over the
//! request's headers, no I/O, no allocation, never a panic; every header is bounded.
//!
//! From a peer outside `--trusted-proxies` nothing here is believed: the client is the
//! peer, and the original method and URI are unknown.
//!
//! From a trusted peer:
//! - **Client address.** `X-Forwarded-For` (all its fields, in order, as one list) is read
//!   from the right: each address that is itself a trusted proxy is a hop and is skipped;
//!   the first one that is not is the client. A proxy appends the address it saw, so
//!   everything left of that is what the client wrote and is never read. If every address
//!   is trusted, the leftmost is the client. Only what is walked is bounded: a malformed
//!   entry met on the way (not an IP address; a port, a zone id, an empty entry), more than
//!   [`MAX_HOPS`] hops or more than [`MAX_HEADER_BYTES`] walked make the client **unknown**
//!   (`client_known: false`, `client` the peer for the records): a token with allowed
//!   networks is then refused, never judged by the proxy's own address (a client could
//!   otherwise pad the header it controls until it is ignored, and pass as the proxy — an
//!   outside attack through Envoy, which appends to the client's header). Without
//!   `X-Forwarded-For`, a single well-formed `X-Real-IP` is used the same way (a trusted
//!   address there is taken as it is; a bad one makes the client unknown); with neither,
//!   the peer.
//! - **Method.** `X-Original-Method` (nginx) and `X-Forwarded-Method` (Traefik, Caddy); if
//!   both are present they must agree (a proxy sets the one it knows and passes a client's
//!   copy of the other, so a disagreement means someone is lying: unknown). Each must occur
//!   once and be an RFC 9110 token of at most [`MAX_METHOD_BYTES`]. Envoy's ext_authz HTTP
//!   service sends the original method as the request's own method and the original path
//!   after its `path_prefix`; the shipped Envoy config marks that with `X-PA-Auth-Proxy:
//!   envoy`, and only then (and only without the two headers) is the request's own method
//!   the original one. Anything else: unknown.
//! - **URI.** `X-Original-URI` (nginx), `X-Forwarded-Uri` (Traefik, Caddy), or for Envoy the
//!   request target after `/auth/verify`; at most [`MAX_URI_BYTES`] of visible ASCII.

use std::net::IpAddr;

use super::trusted_proxies::TrustedProxies;

/// Most `X-Forwarded-For` hops walked from the right before the header is given up on.
pub const MAX_HOPS: usize = 16;
/// Longest `X-Forwarded-For` (all fields together) or `X-Real-IP` read, in bytes.
pub const MAX_HEADER_BYTES: usize = 2048;
/// Longest method token taken from a header.
pub const MAX_METHOD_BYTES: usize = 32;
/// Longest original URI taken from a header.
pub const MAX_URI_BYTES: usize = 8192;
/// The prefix Envoy's ext_authz `path_prefix` puts before the original path.
const ENVOY_PREFIX: &str = "/auth/verify";

/// The facts, borrowed from the request's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// The client's address (the peer unless a trusted proxy said otherwise).
    pub client: IpAddr,
    /// False when a trusted proxy's address header could not be read: `client` is then the
    /// peer, for the records only, and no allowed-networks list admits the request.
    pub client_known: bool,
    /// The original request's method; `None`: not known.
    pub method: Option<&'a str>,
    /// The original request's URI (path and query); `None`: not known.
    pub uri: Option<&'a str>,
}

/// The facts of a request from `peer` with these headers, own method and target.
pub fn forwarded<'a, I>(
    headers: I,
    own_method: &'a str,
    own_target: &'a str,
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> Forwarded<'a>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    if !trusted.contains(peer) {
        return Forwarded {
            client: peer,
            client_known: true,
            method: None,
            uri: None,
        };
    }
    let named = |name: &'static str| {
        headers
            .clone()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    };
    let said = match (named("x-forwarded-for").next(), named("x-real-ip").next()) {
        (Some(_), _) => Some(client_from_forwarded_for(named("x-forwarded-for"), trusted)),
        (None, Some(_)) => Some(client_from_real_ip(named("x-real-ip"))),
        (None, None) => None,
    };
    let (client, client_known) = match said {
        None => (peer, true),
        Some(Some(addr)) => (addr, true),
        Some(None) => (peer, false),
    };
    let envoy = single(named("x-pa-auth-proxy")).is_some_and(|v| v.eq_ignore_ascii_case(b"envoy"));
    let original = single_valid(named("x-original-method"), is_method);
    let forwarded = single_valid(named("x-forwarded-method"), is_method);
    let method = match (original, forwarded) {
        (Header::Absent, Header::Absent) if envoy && is_method(own_method.as_bytes()) => {
            Some(own_method)
        }
        (Header::One(m), Header::Absent) | (Header::Absent, Header::One(m)) => Some(m),
        (Header::One(a), Header::One(b)) if a == b => Some(a),
        _ => None,
    };
    let uri = match (
        single_valid(named("x-original-uri"), is_uri),
        single_valid(named("x-forwarded-uri"), is_uri),
    ) {
        (Header::One(u), Header::Absent) | (Header::Absent, Header::One(u)) => Some(u),
        (Header::One(a), Header::One(b)) if a == b => Some(a),
        (Header::Absent, Header::Absent) if envoy => own_target
            .strip_prefix(ENVOY_PREFIX)
            .filter(|rest| rest.starts_with('/') && is_uri(rest.as_bytes())),
        _ => None,
    };
    Forwarded {
        client,
        client_known,
        method,
        uri,
    }
}

/// A header that may occur at most once with a valid value.
enum Header<'a> {
    Absent,
    One(&'a str),
    /// Duplicated, or not a valid value: not believed.
    Bad,
}

fn single<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

fn single_valid<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    valid: fn(&[u8]) -> bool,
) -> Header<'a> {
    let Some(first) = values.next() else {
        return Header::Absent;
    };
    if values.next().is_some() || !valid(first) {
        return Header::Bad;
    }
    std::str::from_utf8(first).map_or(Header::Bad, Header::One)
}

/// An RFC 9110 method token of at most [`MAX_METHOD_BYTES`].
fn is_method(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_METHOD_BYTES
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII of at most [`MAX_URI_BYTES`], starting with `/`.
fn is_uri(v: &[u8]) -> bool {
    v.first() == Some(&b'/') && v.len() <= MAX_URI_BYTES && v.iter().all(|&b| b.is_ascii_graphic())
}

/// The rightmost untrusted address of every `X-Forwarded-For` field taken as one list;
/// `None` when it cannot be read (malformed on the way, too long or too many hops walked).
/// What lies left of the client is never read, whatever its length.
fn client_from_forwarded_for<'a, I>(fields: I, trusted: &TrustedProxies) -> Option<IpAddr>
where
    I: Iterator<Item = &'a [u8]>,
{
    // Fields are few (the head has at most 100); walk them from the last, each from its end.
    let mut fields_rev: [&[u8]; 100] = [&[]; 100];
    let mut n = 0;
    for f in fields {
        if n == fields_rev.len() {
            return None;
        }
        fields_rev[n] = f;
        n += 1;
    }
    let mut hops = 0usize;
    let mut walked = 0usize;
    let mut leftmost = None;
    for field in fields_rev[..n].iter().rev() {
        for entry in field.rsplit(|&b| b == b',') {
            hops += 1;
            walked = walked.saturating_add(entry.len() + 1);
            if hops > MAX_HOPS || walked > MAX_HEADER_BYTES {
                return None;
            }
            let addr = parse_addr(entry)?;
            if !trusted.contains(addr) {
                return Some(addr);
            }
            leftmost = Some(addr);
        }
    }
    leftmost
}

/// One well-formed `X-Real-IP`.
fn client_from_real_ip<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<IpAddr> {
    let v = single(values)?;
    if v.len() > MAX_HEADER_BYTES {
        return None;
    }
    parse_addr(v)
}

/// A bare IPv4 or IPv6 address between optional spaces: no port, no brackets, no zone id
/// (a zone is local to the host that wrote it).
fn parse_addr(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if text.is_empty() || text.len() > 45 {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn facts<'a>(
        headers: &'a [(&'a str, &'a str)],
        method: &'a str,
        target: &'a str,
        peer: &str,
    ) -> Forwarded<'a> {
        forwarded(
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            method,
            target,
            ip(peer),
            &TrustedProxies::parse("127.0.0.0/8,::1,10.9.0.0/16").unwrap(),
        )
    }

    #[test]
    fn an_untrusted_peer_says_nothing() {
        let h = [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/x"),
            ("X-PA-Auth-Proxy", "envoy"),
        ];
        let f = facts(&h, "GET", "/auth/verify/x", "203.0.113.5");
        assert_eq!(f.client, ip("203.0.113.5"));
        assert_eq!((f.method, f.uri), (None, None));
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        // nginx appends the address it saw to whatever the client sent.
        let h = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")];
        assert_eq!(
            facts(&h, "GET", "/", "127.0.0.1").client,
            ip("198.51.100.7")
        );
        // Trusted hops on the right are skipped; the client's garbage on the left is never read.
        let h = [
            ("X-Forwarded-For", "junk, 10.0.0.0/8, 198.51.100.7,10.9.1.1"),
            ("x-forwarded-for", "127.0.0.1"),
        ];
        assert_eq!(
            facts(&h, "GET", "/", "127.0.0.1").client,
            ip("198.51.100.7")
        );
        // All trusted: the leftmost.
        let h = [("X-Forwarded-For", "10.9.0.1, 10.9.0.2")];
        assert_eq!(facts(&h, "GET", "/", "::1").client, ip("10.9.0.1"));
        // IPv6 and mapped IPv4 as written.
        let h = [("X-Forwarded-For", "2001:db8::1")];
        assert_eq!(facts(&h, "GET", "/", "127.0.0.1").client, ip("2001:db8::1"));
        let h = [("X-Forwarded-For", "::ffff:10.0.0.1")];
        assert_eq!(
            facts(&h, "GET", "/", "127.0.0.1").client,
            ip("::ffff:10.0.0.1")
        );
        // X-Real-IP only without X-Forwarded-For.
        let h = [("X-Real-IP", "198.51.100.9")];
        assert_eq!(
            facts(&h, "GET", "/", "127.0.0.1").client,
            ip("198.51.100.9")
        );
        let h = [
            ("X-Real-IP", "198.51.100.9"),
            ("X-Forwarded-For", "192.0.2.1"),
        ];
        assert_eq!(facts(&h, "GET", "/", "127.0.0.1").client, ip("192.0.2.1"));
    }

    #[test]
    fn hostile_forwarded_for_leaves_the_client_unknown() {
        let peer = "127.0.0.2";
        let unknown = |h: &[(&str, &str)]| {
            let f = facts(h, "GET", "/", peer);
            f.client == ip(peer) && !f.client_known
        };
        let many_hops = format!("198.51.100.7{}", ",10.9.0.1".repeat(MAX_HOPS));
        let many_fields: Vec<(&str, &str)> =
            (0..101).map(|_| ("X-Forwarded-For", "10.9.0.1")).collect();
        for bad in [
            "",
            " ",
            "198.51.100.7,",
            "198.51.100.7:443",
            "[2001:db8::1]",
            "fe80::1%eth0",
            "unknown",
            "198.51.100.7 198.51.100.8",
            "1.2.3.4.5",
            "\u{0}1.2.3.4",
            many_hops.as_str(),
            "10.9.0.1, 10.9.0.2, junk",
        ] {
            assert!(unknown(&[("X-Forwarded-For", bad)]), "{bad:?}");
        }
        assert!(unknown(&many_fields));
        // A malformed header: never X-Real-IP's word instead.
        assert!(unknown(&[
            ("X-Forwarded-For", "nonsense"),
            ("X-Real-IP", "198.51.100.9"),
        ]));
        // Two X-Real-IP, or a bad one: unknown too.
        assert!(unknown(&[
            ("X-Real-IP", "198.51.100.9"),
            ("X-Real-IP", "198.51.100.8")
        ]));
        assert!(unknown(&[("X-Real-IP", "nonsense")]));
        // Neither header: the peer, known.
        assert!(facts(&[], "GET", "/", peer).client_known);
    }

    /// Outside attack (high): behind Envoy, which appends the client to the client's own
    /// header, a client padded X-Forwarded-For past the length limit; the whole header was
    /// ignored and the client judged as the proxy (inside "internal only" lists). Only what
    /// is walked from the right is bounded now: the client is found whatever lies left of it.
    #[test]
    fn a_padded_forwarded_for_still_names_the_rightmost_client() {
        let peer = "127.0.0.1";
        for pad in ["1.1.1.1,".repeat(300), format!("{},", "x".repeat(3000))] {
            let h = format!("{pad}198.51.100.7");
            let headers = [("X-Forwarded-For", h.as_str())];
            let f = facts(&headers, "GET", "/", peer);
            assert_eq!((f.client, f.client_known), (ip("198.51.100.7"), true));
        }
        // Sixteen hops walked (fifteen trusted, then the client): still found.
        let h = format!("198.51.100.7,{}", vec!["10.9.0.1"; 15].join(","));
        assert!(facts(&[("X-Forwarded-For", h.as_str())], "GET", "/", peer).client_known);
    }

    #[test]
    fn method_and_uri_from_each_proxy() {
        let nginx = [
            ("X-Original-Method", "POST"),
            ("X-Original-URI", "/api/x?y=1"),
        ];
        let f = facts(&nginx, "GET", "/auth/verify", "127.0.0.1");
        assert_eq!((f.method, f.uri), (Some("POST"), Some("/api/x?y=1")));
        let traefik = [
            ("X-Forwarded-Method", "DELETE"),
            ("X-Forwarded-Uri", "/api/z"),
        ];
        let f = facts(&traefik, "GET", "/auth/verify", "127.0.0.1");
        assert_eq!((f.method, f.uri), (Some("DELETE"), Some("/api/z")));
        let envoy = [("x-pa-auth-proxy", "envoy")];
        let f = facts(&envoy, "PUT", "/auth/verify/api/a?b", "127.0.0.1");
        assert_eq!((f.method, f.uri), (Some("PUT"), Some("/api/a?b")));
        // Without the marker the request's own method is never the original one.
        let f = facts(&[], "GET", "/auth/verify/api/a", "127.0.0.1");
        assert_eq!((f.method, f.uri), (None, None));
    }

    #[test]
    fn disagreeing_duplicated_or_bad_methods_are_unknown() {
        for h in [
            vec![("X-Original-Method", "GET"), ("X-Forwarded-Method", "POST")],
            vec![("X-Original-Method", "GET"), ("X-Original-Method", "GET")],
            vec![("X-Original-Method", "")],
            vec![("X-Original-Method", "GET POST")],
            vec![("X-Original-Method", "G\u{e9}T")],
            vec![("X-Forwarded-Method", &*"A".repeat(33))],
            // A client's copy of one header beside a bad proxy value: not believed either.
            vec![("X-Original-Method", "GET"), ("X-Forwarded-Method", "P O")],
        ] {
            let f = facts(&h, "GET", "/auth/verify", "127.0.0.1");
            assert_eq!(f.method, None, "{h:?}");
        }
        // Agreement is fine; the envoy marker does not override a header.
        let h = [
            ("X-Original-Method", "GET"),
            ("X-Forwarded-Method", "GET"),
            ("X-PA-Auth-Proxy", "envoy"),
        ];
        assert_eq!(
            facts(&h, "POST", "/auth/verify/x", "127.0.0.1").method,
            Some("GET")
        );
        let h = [("X-Original-Method", "POST"), ("X-PA-Auth-Proxy", "envoy")];
        assert_eq!(
            facts(&h, "GET", "/auth/verify/x", "127.0.0.1").method,
            Some("POST")
        );
    }
}
