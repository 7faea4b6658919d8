//! The properties the fuzz targets check, as plain functions that panic on a violation. The
//! cargo-fuzz targets in `fuzz/` call them with generated inputs; a normal test replays every
//! committed corpus file through them, so the README's test command covers the corpora
//! without a nightly toolchain.

use crate::auth::bearer_header::{is_token68, parse_bearer, parse_bearer_value, MAX_TOKEN_BYTES};
use crate::error::AuthFailure;
use crate::http::chunked::ChunkedDecoder;
use crate::http::head::{parse_request_head, Framing, HeadLimits};
use crate::json_body::parse_object;
use crate::token_fields::{parse_expires_at, validate_name, MAX_NAME_CHARS};
use crate::tokens::{is_well_formed, PlaintextToken, RANDOM_LEN, TOKEN_LEN};

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16 * 1024,
    max_body_bytes: 64 * 1024,
};

/// Request head + framing: never panics; a parsed head is self-consistent and stable under
/// re-parsing its own bytes; a chunked body after it decodes in place within the cap.
pub fn check_request_head(data: &[u8]) {
    let Ok(Some(head)) = parse_request_head(data, &LIMITS) else {
        return;
    };
    assert!(head.head_len <= data.len() && head.head_len <= LIMITS.max_head_bytes);
    assert!(head.header_count <= crate::http::head::MAX_HEADERS);
    for h in &head.headers[..head.header_count] {
        assert!(h.name.start as usize + h.name.len as usize <= head.head_len);
        assert!(h.value.start as usize + h.value.len as usize <= head.head_len);
        assert!(!h.name.of(data).is_empty());
    }
    let again = parse_request_head(&data[..head.head_len], &LIMITS);
    let Ok(Some(again)) = again else {
        panic!("head does not re-parse from its own bytes")
    };
    assert_eq!(again.framing, head.framing);
    assert_eq!(again.head_len, head.head_len);
    match head.framing {
        Framing::Length(n) => assert!(n > 0 && n <= LIMITS.max_body_bytes),
        Framing::Chunked => {
            let mut buf = data[head.head_len..].to_vec();
            let end = buf.len();
            let (mut read, mut write) = (0, 0);
            let mut decoder = ChunkedDecoder::new(LIMITS.max_body_bytes);
            if decoder.decode(&mut buf, &mut read, &mut write, end).is_ok() {
                assert!(write <= read && read <= end);
                assert!(write as u64 <= LIMITS.max_body_bytes);
            }
        }
        Framing::Empty => {}
    }
}

/// Authorization parser: never panics; agrees with a simple reference; valid credentials
/// round-trip through `Bearer <token>`.
pub fn check_bearer_header(data: &[u8]) {
    let parsed = parse_bearer_value(data);
    assert_eq!(
        parsed,
        reference_bearer(data),
        "parser and reference disagree on {data:?}"
    );
    if let Ok(token) = parsed {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES && is_token68(token));
        let mut again = b"Bearer ".to_vec();
        again.extend_from_slice(token);
        assert_eq!(parse_bearer_value(&again), Ok(token));
        assert_eq!(parse_bearer(&[data, data]), Err(AuthFailure::Malformed));
    }
}

/// The grammar written out the slow, obvious way over a `String`-free byte walk.
fn reference_bearer(data: &[u8]) -> Result<&[u8], AuthFailure> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = data.iter().position(|b| !is_ows(b)).unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    let v = &data[start..end.max(start)];
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::Missing);
    }
    match v.get(6) {
        None => return Err(AuthFailure::Malformed),
        Some(b' ') => {}
        Some(b'\t') => return Err(AuthFailure::Malformed),
        Some(_) => return Err(AuthFailure::Missing),
    }
    let mut i = 6;
    while v.get(i) == Some(&b' ') {
        i += 1;
    }
    let token = &v[i..];
    let mut seen_pad = false;
    let mut body = 0;
    for &b in token {
        let tchar = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        if b == b'=' {
            seen_pad = true;
        } else if tchar && !seen_pad {
            body += 1;
        } else {
            return Err(AuthFailure::Malformed);
        }
    }
    if body == 0 || token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// Token format: never panics on any bytes; a token built from any 40 random characters is
/// well-formed, and changing any one character of it breaks it.
pub fn check_token_format(data: &[u8]) {
    let _ = is_well_formed(data);
    if data.len() < RANDOM_LEN {
        return;
    }
    let mut random = [0u8; RANDOM_LEN];
    random.copy_from_slice(&data[..RANDOM_LEN]);
    let token = PlaintextToken::from_random_bytes(&random);
    let bytes = token.expose_secret().as_bytes();
    assert_eq!(bytes.len(), TOKEN_LEN);
    assert!(is_well_formed(bytes));
    let position = usize::from(data.get(RANDOM_LEN).copied().unwrap_or(0)) % TOKEN_LEN;
    let replacement = data.get(RANDOM_LEN + 1).copied().unwrap_or(b'x');
    if replacement != bytes[position] {
        let mut flipped = bytes.to_vec();
        flipped[position] = replacement;
        assert!(
            !is_well_formed(&flipped),
            "one changed character still passed"
        );
    }
}

/// Admin JSON bodies (create token, login, password change): never panic, and whatever is
/// accepted obeys the field rules.
pub fn check_admin_json(data: &[u8]) {
    let ct = Some(&b"application/json"[..]);
    if let Ok(o) = parse_object(ct, data, &["name", "expiresAt"]) {
        if let Ok(name) = o.required_str("name").and_then(validate_name) {
            assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
            assert!(!name.chars().any(char::is_control));
            assert_eq!(name.trim(), name);
        }
        if let Ok(Some(at)) = o
            .optional_str("expiresAt")
            .and_then(|e| parse_expires_at(e, 1_796_000_000))
        {
            assert!(at > 1_796_000_000);
        }
    }
    for fields in [
        &["username", "password"][..],
        &["currentPassword", "newPassword"][..],
    ] {
        if let Ok(o) = parse_object(ct, data, fields) {
            for f in fields {
                let _ = o.required_str(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_hold_on_hand_picked_inputs() {
        check_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        check_bearer_header(b"Bearer abc==");
        check_bearer_header(b"bearer\t x");
        check_bearer_header(b"  BEARER   a.b~c  ");
        check_token_format(&[7u8; 42]);
        check_admin_json(br#"{"name":" x ","expiresAt":"2030-01-01"}"#);
    }
}
