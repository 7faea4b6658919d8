//! Forward-auth (`/auth/verify[/...]`, any method): the answer a reverse proxy gets for a
//! verified token: 200 with the token's identity headers (id, percent-encoded name, expiry,
//! which secret: `current` or a rotation's `previous`; its access: `full` or `read`),
//! built without allocating. A refused credential is the 401 of [`super::error`]; a valid
//! token outside its restrictions is its 403 (nginx `auth_request` passes a 403 through).

use crate::domain::text::{InlineText, Text, INLINE_CAPACITY};
use crate::domain::time::rfc3339_text;
use crate::http::{HeaderValue, Response};
use crate::service::auth::VerifiedToken;

/// `/auth/verify[/...]`, any method: 200 with identity headers, or the 401.
pub fn answer(verified: &VerifiedToken) -> Response {
    let token = &verified.token;
    // All three values are built inline: no allocation on the answer (bench/
    // syscalls_and_allocs.sh counts them).
    let mut id = [0u8; 36];
    token.id.write_to(&mut id);
    let id = std::str::from_utf8(&id).unwrap_or("");
    let mut response = Response::new(200)
        .header("X-PA-Token-Id", HeaderValue::inline(id))
        .header("X-PA-Token-Name", header_value(percent_encode(&token.name)));
    if let Some(expires) = token.expires_at {
        response = response.header("PA-Token-Expiration", header_value(rfc3339_text(expires)));
    }
    // Which secret was presented, so an operator can see who still uses a rotated-out one
    // (decision 0008).
    let secret = if verified.is_previous_secret() {
        "previous"
    } else {
        "current"
    };
    response
        .header("X-PA-Token-Secret", HeaderValue::inline(secret))
        // So the API behind can refuse writes itself too (issue 19).
        .header(
            "X-PA-Token-Access",
            HeaderValue::inline(token.restrictions.access.as_str()),
        )
}

/// UTF-8 percent-encoding of everything but RFC 3986 unreserved characters: the result is
/// visible ASCII only, safe in any header. Kept inline (no allocation) up to 64 encoded
/// bytes, which covers the usual token name on the forward-auth path.
pub fn percent_encode(s: &str) -> Text {
    if s.bytes().all(is_unreserved) {
        return Text::from(s);
    }
    let encoded_len: usize = s
        .bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum();
    if encoded_len <= INLINE_CAPACITY {
        let mut out = InlineText::empty();
        for b in s.bytes() {
            encode_byte(b, |c| {
                let _ = out.push_ascii(c);
            });
        }
        Text::Inline(out)
    } else {
        let mut out = String::with_capacity(encoded_len);
        for b in s.bytes() {
            encode_byte(b, |c| out.push(char::from(c)));
        }
        Text::Boxed(out.into_boxed_str())
    }
}

/// One byte as itself (unreserved) or as `%XX`.
fn encode_byte(b: u8, mut put: impl FnMut(u8)) {
    if is_unreserved(b) {
        put(b);
    } else {
        let [hi, lo] = crate::domain::encoding::upper_hex_pair(b);
        put(b'%');
        put(hi);
        put(lo);
    }
}

/// RFC 3986 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A header value from a [`Text`]: copied in place when inline, the boxed string moved (not
/// copied again) when it is not.
fn header_value(text: Text) -> HeaderValue {
    match text {
        Text::Inline(t) => HeaderValue::inline(t.as_str()),
        Text::Boxed(b) => HeaderValue::from(String::from(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_header_safe() {
        assert_eq!(&*percent_encode("CI deploy"), "CI%20deploy");
        assert_eq!(&*percent_encode("ci-deploy_2.x~"), "ci-deploy_2.x~");
        assert_eq!(&*percent_encode("a\r\nX: y"), "a%0D%0AX%3A%20y");
        assert_eq!(&*percent_encode("é"), "%C3%A9");
        assert!(crate::http::is_valid_header_value(&percent_encode(
            "\0\u{7f}\u{202e}"
        )));
        // Inline up to 64 encoded bytes, boxed past it; the same text either way.
        let short = "é".repeat(10);
        assert!(matches!(percent_encode(&short), Text::Inline(_)));
        assert_eq!(&*percent_encode(&short), "%C3%A9".repeat(10));
        let long = "é".repeat(100);
        assert!(matches!(percent_encode(&long), Text::Boxed(_)));
        assert_eq!(&*percent_encode(&long), "%C3%A9".repeat(100));
        assert_eq!(&*percent_encode(&"a".repeat(100)), "a".repeat(100));
    }

    #[test]
    fn long_values_move_their_box_short_ones_stay_inline() {
        let long = "é".repeat(100);
        let encoded = percent_encode(&long);
        let Text::Boxed(boxed) = &encoded else {
            panic!("a 600-byte value is boxed")
        };
        let at = boxed.as_ptr();
        match header_value(encoded) {
            HeaderValue::Str(s) => assert_eq!(s.as_ptr(), at, "moved, not copied"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            header_value(percent_encode("ci deploy")),
            HeaderValue::Inline(_)
        ));
    }
}
