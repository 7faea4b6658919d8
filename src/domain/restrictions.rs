//! What a token may do and from where (issue 19): its access (`full`, or `read`: only GET,
//! HEAD and OPTIONS of the request it vouches for) and its allowed networks (IPv4 and IPv6
//! prefixes, none = anywhere). Pure: parsing and normalising the prefixes an admin types,
//! and the two checks forward-auth makes, with no allocation on the checks (decision 0009).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use super::token_fields::FieldError;

/// Most prefixes a token may have (bounds the per-request scan).
pub const MAX_ALLOWED_CIDRS: usize = 100;

/// What a token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Any method.
    #[default]
    Full,
    /// Only the safe methods GET, HEAD and OPTIONS of the original request.
    Read,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "full" => Some(Access::Full),
            "read" => Some(Access::Read),
            _ => None,
        }
    }

    /// Whether a request with this original method may pass. `None`: the method is not
    /// known (no trusted proxy said it), which a read-only token never passes with.
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
    pub fn allows(self, method: Option<&str>) -> bool {
        match self {
            Access::Full => true,
            Access::Read => matches!(method, Some("GET" | "HEAD" | "OPTIONS")),
        }
    }
}

/// One IPv4 or IPv6 prefix. An IPv4 prefix is kept as the IPv4-mapped IPv6 prefix
/// (`::ffff:0:0/96` + its bits), so matching is one masked compare; `v4` keeps the families
/// apart, so an IPv6 prefix such as `::/0` never admits an IPv4 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    bits: [u8; 16],
    /// Length in IPv6 terms (an IPv4 /8 is 104).
    len: u8,
    v4: bool,
}

impl IpPrefix {
    /// Parses `addr/len` or a bare address (a host prefix). Host bits set beyond the prefix
    /// are refused (`10.0.0.1/8` is likely a typo for a host, and silently widening it to
    /// 10.0.0.0/8 would allow 16M addresses nobody asked for), like `--trusted-proxies`.
    /// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/104`) is stored as the IPv4 prefix it
    /// means. Zone ids (`fe80::1%eth0`) are refused: a zone is local to one host.
    pub fn parse(text: &str) -> Result<IpPrefix, String> {
        let text = text.trim();
        if text.len() > 64 {
            return Err("is too long to be an IP prefix".into());
        }
        // Echoed in the error, so never a secret pasted into the wrong field.
        let quoted = format!("{:?}", crate::domain::redact::redact_secrets(text));
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{quoted} is not an IP address or CIDR prefix"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                match l.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{quoted}: prefix length must be 0 to {max}")),
                }
            }
            Some(_) => return Err(format!("{quoted}: prefix length must be 0 to {max}")),
        };
        let (bits, len, v4) = match addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), len + 96, true),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(_) if len >= 96 => (a.octets(), len, true),
                _ => (a.octets(), len, false),
            },
        };
        let prefix = IpPrefix { bits, len, v4 };
        if masked(u128::from_be_bytes(bits), len) != u128::from_be_bytes(bits) {
            return Err(format!(
                "{quoted}: the address has bits set beyond the prefix (did you mean {}?)",
                IpPrefix {
                    bits: masked(u128::from_be_bytes(bits), len).to_be_bytes(),
                    ..prefix
                }
            ));
        }
        Ok(prefix)
    }

    /// Whether `addr` is in this prefix. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
    /// what a dual-stack socket reports for an IPv4 client) is its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (bits, v4) = canonical(addr);
        v4 == self.v4 && masked(bits, self.len) == u128::from_be_bytes(self.bits)
    }
}

impl IpPrefix {
    /// Bytes a store keeps a prefix in: the 16 address bytes (IPv4 mapped), the length in
    /// IPv6 terms, and 4 or 6.
    pub const STORED_LEN: usize = 18;

    pub fn to_bytes(&self) -> [u8; Self::STORED_LEN] {
        let mut out = [0u8; Self::STORED_LEN];
        out[..16].copy_from_slice(&self.bits);
        out[16] = self.len;
        out[17] = if self.v4 { 4 } else { 6 };
        out
    }

    /// The prefix [`Self::to_bytes`] wrote; `None` for bytes it never writes.
    pub fn from_bytes(bytes: &[u8]) -> Option<IpPrefix> {
        let bytes: &[u8; Self::STORED_LEN] = bytes.try_into().ok()?;
        let bits: [u8; 16] = bytes[..16].try_into().ok()?;
        let (len, v4) = (bytes[16], bytes[17] == 4);
        let mapped = Ipv6Addr::from(bits).to_ipv4_mapped().is_some();
        let sound = len <= 128
            && matches!(bytes[17], 4 | 6)
            && (!v4 || (mapped && len >= 96))
            && masked(u128::from_be_bytes(bits), len) == u128::from_be_bytes(bits);
        sound.then_some(IpPrefix { bits, len, v4 })
    }
}

fn canonical(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from_be_bytes(a.to_ipv6_mapped().octets()), true),
        IpAddr::V6(a) => (u128::from(a), a.to_ipv4_mapped().is_some()),
    }
}

fn masked(bits: u128, len: u8) -> u128 {
    bits & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl fmt::Display for IpPrefix {
    /// The canonical spelling: `10.0.0.0/8`, `2001:db8::/32`, a host as `/32` or `/128`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.bits);
        match (self.v4, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => write!(f, "{}/{}", v4, self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

/// A token's allowed networks: `None` = anywhere. Shared (`Arc`), so the index hands a
/// verification its list without copying or allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Option<Arc<[IpPrefix]>>);

impl AllowedNetworks {
    /// Anywhere.
    pub fn anywhere() -> AllowedNetworks {
        AllowedNetworks(None)
    }

    /// No address at all: what a stored list that cannot be read stands for (fail closed).
    pub fn nowhere() -> AllowedNetworks {
        AllowedNetworks(Some(Arc::from(Vec::new())))
    }

    /// From parsed prefixes; an empty list is anywhere.
    pub fn from_prefixes(prefixes: Vec<IpPrefix>) -> AllowedNetworks {
        if prefixes.is_empty() {
            AllowedNetworks(None)
        } else {
            AllowedNetworks(Some(prefixes.into()))
        }
    }

    pub fn prefixes(&self) -> &[IpPrefix] {
        self.0.as_deref().unwrap_or(&[])
    }

    pub fn is_anywhere(&self) -> bool {
        self.0.is_none()
    }

    /// Whether this is a list (possibly [`Self::nowhere`]) rather than anywhere: a
    /// store writes it as a list.
    pub fn is_list(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a request from `client` may use the token: a linear scan of at most
    /// [`MAX_ALLOWED_CIDRS`] prefixes, no allocation. `None`: the client's address is not
    /// known (a trusted proxy's address header could not be read), which only anywhere
    /// admits — never the proxy's own address in its stead.
    pub fn permits(&self, client: Option<IpAddr>) -> bool {
        match (&self.0, client) {
            (None, _) => true,
            (Some(list), Some(addr)) => list.iter().any(|p| p.contains(addr)),
            (Some(_), None) => false,
        }
    }

    /// The prefixes in their canonical spelling.
    pub fn to_strings(&self) -> Vec<String> {
        self.prefixes().iter().map(ToString::to_string).collect()
    }
}

/// A token's restrictions: access and allowed networks. The default restricts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    pub access: Access,
    pub networks: AllowedNetworks,
}

impl Restrictions {
    pub fn is_unrestricted(&self) -> bool {
        self.access == Access::Full && self.networks.is_anywhere()
    }
}

/// Validates `allowedCidrs` as typed: at most [`MAX_ALLOWED_CIDRS`] prefixes, each valid;
/// duplicates (after normalising) are dropped, the order kept. An error names the field
/// (`allowedCidrs[3]`) and says what is wrong.
pub fn validate_allowed_cidrs<S: AsRef<str>>(raw: &[S]) -> Result<AllowedNetworks, FieldError> {
    if raw.len() > MAX_ALLOWED_CIDRS {
        return Err(FieldError::new(
            "allowedCidrs",
            format!("At most {MAX_ALLOWED_CIDRS} prefixes"),
        ));
    }
    let mut out: Vec<IpPrefix> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let prefix = IpPrefix::parse(text.as_ref())
            .map_err(|m| FieldError::new(format!("allowedCidrs[{i}]"), m))?;
        if !out.contains(&prefix) {
            out.push(prefix);
        }
    }
    Ok(AllowedNetworks::from_prefixes(out))
}

/// Parses `access` as typed.
pub fn validate_access(raw: &str) -> Result<Access, FieldError> {
    Access::parse(raw).ok_or_else(|| FieldError::new("access", "Must be \"read\" or \"full\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known client address.
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn nets(list: &[&str]) -> AllowedNetworks {
        validate_allowed_cidrs(list).unwrap()
    }

    #[test]
    fn prefixes_match_their_family_and_mapped_v4_is_v4() {
        let n = nets(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]);
        assert!(n.permits(ip("10.255.0.1")));
        assert!(n.permits(ip("::ffff:10.0.0.1")), "mapped counts as IPv4");
        assert!(!n.permits(ip("11.0.0.1")));
        assert!(n.permits(ip("2001:db8:1::5")));
        assert!(!n.permits(ip("2001:db9::5")));
        assert!(n.permits(ip("192.0.2.7")) && !n.permits(ip("192.0.2.8")));
        // An IPv6 prefix never admits an IPv4 client, even ::/0.
        let v6 = nets(&["::/0"]);
        assert!(v6.permits(ip("2001::1")));
        assert!(!v6.permits(ip("10.0.0.1")) && !v6.permits(ip("::ffff:10.0.0.1")));
        let v4 = nets(&["0.0.0.0/0"]);
        assert!(v4.permits(ip("1.2.3.4")) && !v4.permits(ip("::1")));
        // A mapped prefix is the IPv4 prefix it means.
        let mapped = nets(&["::ffff:10.0.0.0/104"]);
        assert_eq!(mapped.to_strings(), ["10.0.0.0/8"]);
        assert!(mapped.permits(ip("10.1.2.3")));
        assert!(AllowedNetworks::anywhere().permits(ip("1.1.1.1")));
        // An unknown client (a proxy's unreadable header): only anywhere admits it.
        assert!(AllowedNetworks::anywhere().permits(None));
        // A token pasted where a prefix belongs is not echoed back.
        let token = crate::domain::token::PlaintextToken::generate();
        let error = IpPrefix::parse(token.expose_secret()).unwrap_err();
        assert!(!error.contains(token.expose_secret()), "{error}");
        assert!(!v4.permits(None) && !n.permits(None));
    }

    #[test]
    fn canonical_spelling_and_duplicates() {
        let n = nets(&[
            " 10.0.0.0/8",
            "10.0.0.0/8",
            "2001:DB8:0::/32",
            "::1",
            "1.2.3.4",
        ]);
        assert_eq!(
            n.to_strings(),
            ["10.0.0.0/8", "2001:db8::/32", "::1/128", "1.2.3.4/32"]
        );
        assert!(nets(&[] as &[&str]).is_anywhere());
        for p in n.prefixes() {
            assert_eq!(IpPrefix::from_bytes(&p.to_bytes()), Some(*p));
        }
        assert_eq!(IpPrefix::from_bytes(&[0xff; 18]), None);
    }

    #[test]
    fn bad_prefixes_name_their_place() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/08x",
            "fe80::1%eth0",
            "fe80::%eth0/64",
            "host",
            "",
            "1.2.3.4/0032",
            "::ffff:10.0.0.1/104",
        ] {
            let e = validate_allowed_cidrs(&["10.0.0.0/8", bad]).unwrap_err();
            assert_eq!(e.field, "allowedCidrs[1]", "{bad}");
        }
        let e = validate_allowed_cidrs(&["10.0.0.1/8"]).unwrap_err();
        assert!(e.message.contains("10.0.0.0/8"), "{}", e.message);
        let many: Vec<String> = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
        assert_eq!(
            validate_allowed_cidrs(&many).unwrap_err().field,
            "allowedCidrs"
        );
        assert_eq!(
            validate_allowed_cidrs(&many[..100])
                .unwrap()
                .prefixes()
                .len(),
            100
        );
    }

    #[test]
    fn read_access_allows_only_safe_known_methods() {
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert!(Access::Read.allows(Some(m)));
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "get", "TRACE", ""] {
            assert!(!Access::Read.allows(Some(m)), "{m}");
        }
        assert!(!Access::Read.allows(None), "unknown method: refused");
        assert!(Access::Full.allows(None) && Access::Full.allows(Some("POST")));
        assert_eq!(validate_access("read").unwrap(), Access::Read);
        assert_eq!(validate_access("READ").unwrap_err().field, "access");
    }
}
