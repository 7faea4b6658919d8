//! The crate's one implementation of hex: lowercase for hashes, ids, cursors and session
//! secrets, uppercase pairs for percent-encoding, and strict parsing of either case.
//! src/http keeps its own small hex writer for correlation ids: that layer imports nothing
//! from the rest of the crate.

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
