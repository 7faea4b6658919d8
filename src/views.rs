//! The JSON and header shapes the contract gives a token: the `View` object (camelCase, RFC
//! 3339 UTC times, `status`), and the forward-auth headers, with the admin-typed name
//! percent-encoded so no byte of it can break a header.

use serde::Serialize;

use crate::store::TokenRecord;
use crate::time_format::format_rfc3339;
use crate::token_fields::is_expired;

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
/// visible ASCII only, safe in any header. Takes the string by value and hands it back when
/// nothing needs escaping (the common case on the forward-auth path: no allocation).
pub fn percent_encode(s: Box<str>) -> String {
    if s.bytes().all(is_unreserved) {
        return s.into();
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// RFC 3986 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::TokenId;

    #[test]
    fn names_become_header_safe() {
        assert_eq!(percent_encode("CI deploy".into()), "CI%20deploy");
        assert_eq!(percent_encode("ci-deploy_2.x~".into()), "ci-deploy_2.x~");
        assert_eq!(percent_encode("a\r\nX: y".into()), "a%0D%0AX%3A%20y");
        assert_eq!(percent_encode("é".into()), "%C3%A9");
        assert!(crate::http::is_valid_header_value(&percent_encode(
            "\0\u{7f}\u{202e}".into()
        )));
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
