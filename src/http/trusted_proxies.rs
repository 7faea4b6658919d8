//! Which peers are trusted proxy hops: a list of CIDR prefixes (`--trusted-proxies`, default
//! loopback). Only a request from such a peer may hand pa-auth facts about the client that
//! the client could otherwise forge, such as the correlation id of the request it forwards.
//! From any other peer those headers are ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most prefixes in one list (bounds the per-request check).
pub const MAX_PREFIXES: usize = 100;

/// One IPv4 or IPv6 prefix, e.g. `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Parses `addr/len` or a bare address (a host prefix). Host bits must be zero, so a
    /// typo such as `10.0.0.1/8` is refused rather than silently widened.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr {
            network,
            prefix_len,
        };
        if !cidr.contains(network) || cidr.masked(network) != network {
            return Err(format!("{text:?}: address has bits set beyond the prefix"));
        }
        Ok(cidr)
    }

    /// Whether `addr` lies in this prefix. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// counts as its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.masked(addr) == self.network
            }
            _ => false,
        }
    }

    fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The trusted proxy hops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl Default for TrustedProxies {
    /// Loopback: a proxy on the same host.
    fn default() -> Self {
        TrustedProxies(vec![
            Cidr {
                network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix_len: 8,
            },
            Cidr {
                network: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix_len: 128,
            },
        ])
    }
}

impl TrustedProxies {
    /// No peer is trusted.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// A comma-separated list of prefixes; empty (or `none`) trusts no peer.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        if list.trim().is_empty() || list.trim().eq_ignore_ascii_case("none") {
            return Ok(TrustedProxies::none());
        }
        let prefixes = list
            .split(',')
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if prefixes.len() > MAX_PREFIXES {
            return Err(format!("at most {MAX_PREFIXES} prefixes"));
        }
        Ok(TrustedProxies(prefixes))
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(addr))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_match_v4_v6_and_mapped() {
        let list = TrustedProxies::parse("10.1.0.0/16, 2001:db8::/32,192.0.2.7").unwrap();
        assert!(list.contains(ip("10.1.255.3")));
        assert!(!list.contains(ip("10.2.0.1")));
        assert!(list.contains(ip("2001:db8:ffff::1")));
        assert!(!list.contains(ip("2001:db9::1")));
        assert!(list.contains(ip("192.0.2.7")));
        assert!(list.contains(ip("::ffff:10.1.0.9")), "mapped counts as v4");
        assert!(!list.contains(ip("192.0.2.8")));
        assert_eq!(list.to_string(), "10.1.0.0/16,2001:db8::/32,192.0.2.7/32");
        let all = TrustedProxies::parse("0.0.0.0/0,::/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && all.contains(ip("2001::1")));
    }

    #[test]
    fn default_is_loopback_and_none_is_empty() {
        let d = TrustedProxies::default();
        assert!(d.contains(ip("127.0.0.1")) && d.contains(ip("127.9.9.9")));
        assert!(d.contains(ip("::1")) && d.contains(ip("::ffff:127.0.0.1")));
        assert!(!d.contains(ip("10.0.0.1")));
        assert!(!TrustedProxies::parse("none")
            .unwrap()
            .contains(ip("127.0.0.1")));
        assert!(!TrustedProxies::parse("").unwrap().contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "host",
            "10.0.0.0/",
            "1.2.3.4,",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }
}
