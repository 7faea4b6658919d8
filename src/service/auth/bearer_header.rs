//! The `Authorization: Bearer <token>` parser (RFC 6750 §2.1, RFC 9110 §11.4): a pure function
//! over the raw header values that never panics on any bytes (fuzz target `bearer_header`).
//! It decides only syntax; whether the token68 is a pa-auth token is [`crate::domain::token`]' call.

use crate::service::error::AuthFailure;

/// Longest token68 accepted; longer is malformed before any hashing.
pub const MAX_TOKEN_BYTES: usize = 512;

/// Extracts the token68 from the request's `Authorization` values.
/// - no header, or another scheme → `Missing` (no Bearer credential was presented);
/// - two or more headers, `Bearer` without a token, bad characters, trailing junk, or a token
///   over 512 bytes → `Malformed`.
pub fn parse_bearer<'a>(values: &[&'a [u8]]) -> Result<&'a [u8], AuthFailure> {
    match values {
        [] => Err(AuthFailure::Missing),
        [one] => parse_bearer_value(one),
        _ => Err(AuthFailure::Malformed),
    }
}

/// Parses one header value.
pub fn parse_bearer_value(value: &[u8]) -> Result<&[u8], AuthFailure> {
    let value = trim_ows(value);
    let scheme_end = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::Missing);
    }
    if rest.first() == Some(&b'\t') {
        // RFC 9110 separates scheme and credentials with SP only.
        return Err(AuthFailure::Malformed);
    }
    let mut token = rest;
    while let [b' ', tail @ ..] = token {
        token = tail;
    }
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !is_token68(token) {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn is_token68(s: &[u8]) -> bool {
    let body_len = s.len() - s.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && s[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Strips optional whitespace (RFC 9110 §5.6.3: spaces and tabs) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Result<&[u8], AuthFailure> {
        parse_bearer_value(v.as_bytes())
    }

    #[test]
    fn accepts_rfc_forms() {
        assert_eq!(one("Bearer abc").unwrap(), b"abc");
        assert_eq!(one("bearer abc").unwrap(), b"abc");
        assert_eq!(one("BEARER    abc").unwrap(), b"abc");
        assert_eq!(one("  Bearer abc  ").unwrap(), b"abc");
        assert_eq!(one("Bearer a.b-c_d~e+f/g==").unwrap(), b"a.b-c_d~e+f/g==");
    }

    #[test]
    fn other_schemes_are_missing() {
        assert_eq!(one("Basic YWRtaW46eA=="), Err(AuthFailure::Missing));
        assert_eq!(one(""), Err(AuthFailure::Missing));
        assert_eq!(one("Token abc"), Err(AuthFailure::Missing));
        assert_eq!(one("Bearerabc"), Err(AuthFailure::Missing));
        assert_eq!(parse_bearer(&[]), Err(AuthFailure::Missing));
    }

    #[test]
    fn malformed_bearer_credentials() {
        for v in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer \"abc\"",
            "Bearer\tabc",
            "Bearer =abc",
            "Bearer ab=c",
            "Bearer abc\u{e9}",
        ] {
            assert_eq!(one(v), Err(AuthFailure::Malformed), "{v:?}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(one(&long), Err(AuthFailure::Malformed));
        let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(one(&max).is_ok());
        assert_eq!(
            parse_bearer(&[b"Bearer a", b"Bearer a"]),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for v in [
            &b"\0"[..],
            b"\xff\xfe",
            b"Bearer \0",
            b"=",
            b"Bearer ====",
            b" ",
        ] {
            let _ = parse_bearer_value(v);
        }
        assert_eq!(
            parse_bearer_value(b"Bearer ===="),
            Err(AuthFailure::Malformed)
        );
    }
}
