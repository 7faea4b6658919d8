//! `--public-url`: the origin browsers use, for the console's cookie (`Secure`) and CSRF
//! (`Origin`) checks when a proxy in front terminates TLS.

/// The origin (scheme, host, port) clients reach pa-auth at, from `--public-url`: behind a
/// proxy that terminates TLS, pa-auth itself sees plain HTTP and the proxy's Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    https: bool,
    /// Lowercase; an IPv6 address keeps its brackets.
    host: String,
    port: u16,
}

impl PublicUrl {
    /// `http://` or `https://`, a host, an optional port, and no path beyond `/` (no query,
    /// fragment or user info). The scheme and host are case-insensitive.
    pub fn parse(url: &str) -> Option<PublicUrl> {
        let authority = url.strip_suffix('/').unwrap_or(url);
        PublicUrl::parse_origin(authority)
    }

    /// An `Origin` header value (RFC 6454 serialization: scheme://host[:port], no path).
    fn parse_origin(origin: &str) -> Option<PublicUrl> {
        let (scheme, authority) = origin.split_once("://")?;
        let (https, default_port) = if scheme.eq_ignore_ascii_case("https") {
            (true, 443)
        } else if scheme.eq_ignore_ascii_case("http") {
            (false, 80)
        } else {
            return None;
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (authority, None),
        };
        let port = match port {
            None => default_port,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().filter(|&n| n != 0)?
            }
            Some(_) => return None,
        };
        let valid_host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        valid_host.then(|| PublicUrl {
            https,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether clients reach pa-auth over HTTPS (so cookies get `Secure`).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether an `Origin` header names this origin (host case-insensitive, default ports
    /// equal to none).
    pub fn matches_origin(&self, origin: &[u8]) -> bool {
        std::str::from_utf8(origin)
            .ok()
            .and_then(PublicUrl::parse_origin)
            .is_some_and(|o| o == *self)
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, default) = if self.https {
            ("https", 443)
        } else {
            ("http", 80)
        };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != default {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}
