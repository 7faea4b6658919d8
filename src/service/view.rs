//! The `View` the contract gives a token, for the admin API, `GET /api/token` and the CLI's
//! `--json`: camelCase, RFC 3339 UTC times, and a `status`.

use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::TokenId;

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
