//! The crate's one implementation of hex (lowercase for hashes, ids, cursors and session
//! secrets, uppercase pairs for percent-encoding, strict parsing of either case) and of
//! base62 (the alphabet, and unbiased random characters for tokens and initial passwords).
//! src/http keeps its own small hex writer for correlation ids: that layer imports nothing
//! from the rest of the crate.

use rand::RngCore;

/// The base62 alphabet, in digit order (token checksums are numbers written in it).
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Fills `out` with base62 characters drawn from `rng`, every character equally likely:
/// rejection sampling keeps only bytes below 248 (= 4 × 62), so `byte % 62` is uniform.
pub(crate) fn fill_random_base62(rng: &mut impl RngCore, out: &mut [u8]) {
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < out.len() {
        rng.fill_bytes(&mut pool);
        for &b in &pool {
            if b < 248 && filled < out.len() {
                out[filled] = BASE62[usize::from(b % 62)];
                filled += 1;
            }
        }
    }
}

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Lowercase hex of `bytes`, two characters a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.extend(lower_hex_pair(b).map(char::from));
    }
    s
}

/// One byte as two lowercase hex characters.
pub(crate) fn lower_hex_pair(b: u8) -> [u8; 2] {
    [LOWER[usize::from(b >> 4)], LOWER[usize::from(b & 0xf)]]
}

/// One byte as two uppercase hex characters (RFC 3986 percent-encoding).
pub(crate) fn upper_hex_pair(b: u8) -> [u8; 2] {
    [UPPER[usize::from(b >> 4)], UPPER[usize::from(b & 0xf)]]
}

/// Exactly `2 * N` hex digits (either case) → `N` bytes; anything else is `None`.
pub(crate) fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

/// The value of one hex digit, either case.
pub(crate) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The value of one lowercase hex digit (the forms we print and accept back, e.g. UUIDs).
pub(crate) fn lower_hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' | b'a'..=b'f' => hex_digit(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_every_byte_in_either_case() {
        let all: Vec<u8> = (0..=255).collect();
        let lower = hex(&all);
        assert_eq!(&lower[..8], "00010203");
        assert_eq!(&lower[lower.len() - 4..], "feff");
        let back: [u8; 256] = decode_hex(&lower).unwrap();
        assert_eq!(back.to_vec(), all);
        let upper = lower.to_uppercase();
        assert_eq!(decode_hex::<256>(&upper), Some(back));
        for b in 0..=255u8 {
            assert_eq!(
                upper_hex_pair(b),
                lower_hex_pair(b).map(|c| c.to_ascii_uppercase())
            );
        }
    }

    /// Yields 0, 1, ..., 255, 0, 1, ... byte by byte.
    struct Counting(u8);

    impl RngCore for Counting {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn base62_sampling_is_unbiased() {
        // Bytes 0..=247 in order, 248..=255 rejected: each character exactly four times.
        let mut out = [0u8; 248];
        fill_random_base62(&mut Counting(0), &mut out);
        for (i, &c) in out.iter().enumerate() {
            assert_eq!(c, BASE62[i % 62], "{i}");
        }
        let mut counts = [0u32; 62];
        for c in out {
            counts[BASE62.iter().position(|&a| a == c).unwrap()] += 1;
        }
        assert_eq!(counts, [4; 62]);
        // The rejected bytes are skipped, not mapped: after 247 comes 0 again.
        let mut out = [0u8; 2];
        fill_random_base62(&mut Counting(247), &mut out);
        assert_eq!(out, [BASE62[247 % 62], BASE62[0]]);
        // Real randomness: only alphabet characters, and lengths beyond one pool.
        let mut out = [0u8; 1000];
        fill_random_base62(&mut rand::rngs::OsRng, &mut out);
        assert!(out.iter().all(|c| BASE62.contains(c)));
    }

    #[test]
    fn parsing_is_strict() {
        assert_eq!(decode_hex::<2>("abc"), None);
        assert_eq!(decode_hex::<2>("abcde"), None);
        assert_eq!(decode_hex::<2>("abcg"), None);
        assert_eq!(decode_hex::<2>("+bcd"), None);
        assert_eq!(decode_hex::<0>(""), Some([]));
        assert_eq!(lower_hex_digit(b'A'), None);
        assert_eq!(lower_hex_digit(b'f'), Some(15));
        assert_eq!(hex_digit(b'F'), Some(15));
        assert_eq!(hex_digit(b'g'), None);
    }
}
