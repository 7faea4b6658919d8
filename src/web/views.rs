//! The JSON and header shapes the contract gives a token: the `View` object (camelCase, RFC
//! 3339 UTC times, `status`), and the forward-auth headers, with the admin-typed name
//! percent-encoded so no byte of it can break a header.

use serde::Serialize;

use crate::domain::text::{InlineText, Text, INLINE_CAPACITY};
use crate::domain::time::format_rfc3339;
use crate::domain::token_fields::is_expired;
use crate::store::TokenRecord;

/// A token as the admin API and `GET /api/token` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub status: &'static str,
}

impl TokenView {
    pub fn new(record: &TokenRecord, last_used: Option<i64>, now: i64) -> Self {
        TokenView {
            id: record.id.to_string(),
            name: record.name.clone(),
            created_at: format_rfc3339(record.created_at()),
            expires_at: record.expires_at.map(format_rfc3339),
            last_used_at: last_used.map(format_rfc3339),
            status: if is_expired(record.expires_at, now) {
                "expired"
            } else {
                "active"
            },
        }
    }
}

/// The view plus the secret, returned once by create.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTokenView<'a> {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: &'a str,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::TokenId;

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
    fn view_shape() {
        let rec = TokenRecord {
            id: TokenId::generate(),
            name: "n".into(),
            created_micros: 1_796_000_000_500_000,
            expires_at: Some(1_796_000_100),
        };
        let v = serde_json::to_value(TokenView::new(&rec, None, 1_796_000_100)).unwrap();
        assert_eq!(v["createdAt"], "2026-11-30T00:53:20Z");
        assert_eq!(v["expiresAt"], "2026-11-30T00:55:00Z");
        assert_eq!(v["lastUsedAt"], serde_json::Value::Null);
        assert_eq!(v["status"], "expired");
        assert_eq!(v.as_object().unwrap().len(), 6);
    }
}
