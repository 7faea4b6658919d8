//! API token secrets and identities: the `pa_` format (40 base62 characters of OS randomness
//! plus a 6-character base62 CRC-32 checksum), the plaintext type that is shown once, the
//! blake3 hash that is the store key, and the public UUID id. Format checks are pure and never
//! panic; a malformed token is rejected before any store lookup.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;

use crate::domain::encoding::{
    decode_hex, fill_random_base62, hex, lower_hex_digit, lower_hex_pair, BASE62,
};

/// Every token starts with this. Part of the public format: never changes.
pub const TOKEN_PREFIX: &str = "pa_";
/// Random base62 characters after the prefix.
pub const RANDOM_LEN: usize = 40;
/// Base62 checksum characters at the end.
pub const CHECKSUM_LEN: usize = 6;
/// Total length: 3 + 40 + 6.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

/// A token secret in clear. Exists only between generation and the 201 response (or the CLI's
/// stdout); `Debug` never prints it.
pub struct PlaintextToken(String);

impl PlaintextToken {
    /// A new token from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut random = [0u8; RANDOM_LEN];
        fill_random_base62(&mut OsRng, &mut random);
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(TOKEN_PREFIX);
        token.extend(random.iter().map(|&b| char::from(b)));
        token.extend(checksum_digits(&random).iter().map(|&b| char::from(b)));
        PlaintextToken(token)
    }

    /// A token from given random characters (fuzzing and tests: real tokens come from
    /// [`Self::generate`]). Bytes are mapped onto the base62 alphabet.
    #[doc(hidden)]
    pub fn from_random_bytes(random: &[u8; RANDOM_LEN]) -> Self {
        let chars: Vec<u8> = random.iter().map(|b| BASE62[usize::from(b % 62)]).collect();
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(TOKEN_PREFIX);
        token.extend(chars.iter().map(|&b| char::from(b)));
        token.extend(checksum_digits(&chars).iter().map(|&b| char::from(b)));
        PlaintextToken(token)
    }

    /// The secret, for the one place it is shown.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for PlaintextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextToken(<redacted>)")
    }
}

/// blake3 of a token: the only form a secret is stored in, and the store key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &[u8]) -> Self {
        TokenHash(*blake3::hash(token).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex characters (an incident responder pasting a hash).
    pub fn from_hex(s: &str) -> Option<Self> {
        decode_hex(s).map(TokenHash)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// Whether `token` has the exact pa-auth format: prefix, 40 base62, 6 base62 checksum that
/// matches. Pure, constant work for any input, never panics.
pub fn is_well_formed(token: &[u8]) -> bool {
    if token.len() != TOKEN_LEN || !token.starts_with(TOKEN_PREFIX.as_bytes()) {
        return false;
    }
    let body = &token[TOKEN_PREFIX.len()..];
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, checksum) = body.split_at(RANDOM_LEN);
    checksum_digits(random) == checksum
}

/// CRC-32 of the random part as 6 base62 digits, most significant first.
fn checksum_digits(random: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = u64::from(crc32(random));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// CRC-32/ISO-HDLC (zlib's `crc32`): reflected polynomial 0xEDB88320, init and xorout !0.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// A token's public identity: a random (v4) UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub [u8; 16]);

impl TokenId {
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        TokenId(b)
    }

    /// Parses the lowercase hyphenated form only (the one we print).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if s[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = lower_hex_digit(s[i])?;
            let lo = lower_hex_digit(*s.get(i + 1)?)?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Some(TokenId(out))
    }

    /// Hyphenated lowercase form, written without allocating.
    pub fn write_to(&self, out: &mut [u8; 36]) {
        let mut j = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[j] = b'-';
                j += 1;
            }
            out[j..j + 2].copy_from_slice(&lower_hex_pair(*b));
            j += 2;
        }
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 36];
        self.write_to(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Why an API-token credential was refused. Kept for logs, audit and metrics; never told to
/// the caller, who always reads the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization` header, or one with another scheme.
    Missing,
    /// A Bearer credential that is not a well-formed pa-auth token (or two headers).
    Malformed,
    /// Well-formed, but no such token is stored (never existed, or deleted).
    Unknown,
    /// The token exists but `now >= expiresAt`.
    Expired,
}

impl AuthFailure {
    /// Stable lower-case label, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn tokens_checksummed_by_the_hand_written_crc_still_validate() {
        // Produced by the table-driven CRC-32 this crate had before crc32fast.
        for token in [
            "pa_0123456789ABCDEFGHIJabcdefghij01234567893BTHtv",
            "pa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0mipaC",
            "pa_zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9zZ9q1VE8hl",
        ] {
            assert!(is_well_formed(token.as_bytes()), "{token}");
        }
    }

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = PlaintextToken::generate();
        let b = PlaintextToken::generate();
        assert_eq!(a.expose_secret().len(), TOKEN_LEN);
        assert!(a.expose_secret().starts_with("pa_"));
        assert!(is_well_formed(a.expose_secret().as_bytes()));
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn checksum_is_base62_crc32_left_padded() {
        // Independently computed: crc32 of 40 'A's, written in base62 with 6 digits.
        let random = [b'A'; RANDOM_LEN];
        let mut v = u64::from(crc32(&random));
        let mut digits = Vec::new();
        for _ in 0..6 {
            digits.push(BASE62[(v % 62) as usize]);
            v /= 62;
        }
        digits.reverse();
        let token = format!(
            "pa_{}{}",
            "A".repeat(40),
            String::from_utf8(digits).unwrap()
        );
        assert!(is_well_formed(token.as_bytes()));
    }

    #[test]
    fn any_flipped_character_fails() {
        let t = PlaintextToken::generate();
        let bytes = t.expose_secret().as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'0', b'z', b'Q', b'_', b'-'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut m = bytes.to_vec();
                m[i] = replacement;
                assert!(
                    !is_well_formed(&m),
                    "flip at {i} to {}",
                    replacement as char
                );
            }
        }
    }

    #[test]
    fn wrong_lengths_prefixes_and_charsets_fail() {
        let t = PlaintextToken::generate();
        let s = t.expose_secret();
        for len in 0..s.len() {
            assert!(!is_well_formed(&s.as_bytes()[..len]));
        }
        assert!(!is_well_formed(format!("{s}0").as_bytes()));
        assert!(!is_well_formed(s.replacen("pa_", "PA_", 1).as_bytes()));
        assert!(!is_well_formed(s.replacen("pa_", "pb_", 1).as_bytes()));
        assert!(!is_well_formed("pa_\u{e9}".repeat(12).as_bytes()));
    }

    #[test]
    fn debug_is_redacted() {
        let t = PlaintextToken::generate();
        assert!(!format!("{t:?}").contains(&t.expose_secret()[3..]));
        assert!(!format!("{:?}", t.hash()).contains(&t.hash().to_hex()));
    }

    #[test]
    fn token_ids_are_v4_and_round_trip() {
        let id = TokenId::generate();
        let s = id.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(TokenId::parse(&s), Some(id));
        assert_eq!(TokenId::parse(&s.to_uppercase()), None);
        assert_eq!(TokenId::parse("not-a-uuid"), None);
        assert_eq!(TokenId::parse(&s.replace('-', "")), None);
    }

    #[test]
    fn hash_hex_round_trips() {
        let h = PlaintextToken::generate().hash();
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }
}
