//! Who counts as one client, by its network address: the keys the HTTP layer's connection
//! and body caps, the login throttle and the failure log count under. One IPv6 host holds a
//! whole /64 (often a /56 or /48), so counting its addresses one by one would hand it as
//! many clients' shares as it likes; an IPv4-mapped IPv6 address (a dual-stack listener's
//! IPv4 peer) is its IPv4 address, never part of one shared /64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `addr` (canonical: IPv4-mapped as IPv4) with all but its first `v4_bits` (IPv4) or
/// `v6_bits` (IPv6) bits cleared.
pub fn prefix(addr: IpAddr, v4_bits: u8, v6_bits: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4_bits.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_bits.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// One client: an IPv4 address, or an IPv6 /64.
pub fn host(addr: IpAddr) -> IpAddr {
    prefix(addr, 32, 64)
}

#[cfg(test)]
mod tests {
    use super::{host, prefix};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_are_addresses_or_networks() {
        assert_eq!(host(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(host(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(prefix(ip("::ffff:203.0.113.7"), 24, 64), ip("203.0.113.0"));
        for v6 in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
            assert_eq!(host(ip(v6)), ip("2001:db8:1:2::"));
        }
        assert_ne!(host(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(prefix(ip("2001:db8:1:ff::1"), 24, 48), ip("2001:db8:1::"));
        assert_eq!(prefix(ip("10.1.2.3"), 0, 0), ip("0.0.0.0"));
        assert_eq!(prefix(ip("::1"), 32, 128), ip("::1"));
    }
}
