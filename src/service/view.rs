//! The `View` the contract gives a token, for the admin API, `GET /api/token` and the CLI's
//! `--json`: camelCase, RFC 3339 UTC times, a `status`, and (added by issue 18, always
//! present) `owner` and `description` (`null` when unset) and `policy`: `null`, or why the
//! token is outside the lifetime policy (`violates-max-lifetime`, `violates-require-expiry`).

use serde::Serialize;

use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::time::format_rfc3339;
use crate::domain::token_fields::is_expired;
use crate::service::rotation::PreviousSecretState;
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
    pub owner: Option<String>,
    pub description: Option<String>,
    /// Why this token is outside the lifetime policy; `null` when it is within it (or there
    /// is no policy, or it has expired).
    pub policy: Option<&'static str>,
    /// The previous secret of a rotation while it still works; `null` otherwise.
    pub previous_secret: Option<PreviousSecretView>,
    /// Where the token may be used from, canonical prefixes; `[]`: anywhere (issue 19).
    pub allowed_cidrs: Vec<String>,
    /// `full`, or `read`: only GET, HEAD and OPTIONS of the request it vouches for.
    pub access: &'static str,
}

/// A live previous secret: when it stops working (at the latest) and its last use.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousSecretView {
    pub expires_at: String,
    /// Its last use seen by the node that answers, since that node started.
    pub last_used_at: Option<String>,
}

impl TokenView {
    pub fn new(
        record: &TokenRecord,
        last_used: Option<i64>,
        now: i64,
        policy: &LifetimePolicy,
    ) -> Self {
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
            owner: record.owner.clone(),
            description: record.description.clone(),
            policy: policy
                .violation(record.created_at(), record.expires_at, now)
                .map(|v| v.as_str()),
            previous_secret: None,
            allowed_cidrs: record.restrictions.networks.to_strings(),
            access: record.restrictions.access.as_str(),
        }
    }

    /// The same view, showing the token's live previous secret.
    pub fn with_previous(self, previous: Option<PreviousSecretState>) -> Self {
        TokenView {
            previous_secret: previous.map(|p| PreviousSecretView {
                expires_at: format_rfc3339(p.ends_at),
                last_used_at: p.last_used.map(format_rfc3339),
            }),
            ..self
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
            owner: None,
            description: None,
            restrictions: Default::default(),
        };
        let none = LifetimePolicy::default();
        let v = serde_json::to_value(TokenView::new(&rec, None, 1_796_000_100, &none)).unwrap();
        assert_eq!(v["createdAt"], "2026-11-30T00:53:20Z");
        assert_eq!(v["expiresAt"], "2026-11-30T00:55:00Z");
        assert_eq!(v["lastUsedAt"], serde_json::Value::Null);
        assert_eq!(v["status"], "expired");
        // The contract's six fields, plus issue 18's three (always present).
        assert_eq!(v["owner"], serde_json::Value::Null);
        assert_eq!(v["description"], serde_json::Value::Null);
        assert_eq!(v["policy"], serde_json::Value::Null);
        // And part 1's previous secret (always present, null outside an overlap).
        assert_eq!(v["previousSecret"], serde_json::Value::Null);
        assert_eq!(v["allowedCidrs"], serde_json::json!([]));
        assert_eq!(v["access"], "full");
        assert_eq!(v.as_object().unwrap().len(), 12);
        let rotated = TokenView::new(&rec, None, 1_796_000_000, &none).with_previous(Some(
            PreviousSecretState {
                ends_at: 1_796_000_100,
                last_used: None,
            },
        ));
        let v = serde_json::to_value(rotated).unwrap();
        assert_eq!(
            v["previousSecret"],
            serde_json::json!({"expiresAt": "2026-11-30T00:55:00Z", "lastUsedAt": null})
        );
    }

    #[test]
    fn owner_description_and_policy_are_shown() {
        let rec = TokenRecord {
            id: TokenId::generate(),
            name: "n".into(),
            created_micros: 1_796_000_000_000_000,
            expires_at: None,
            owner: Some("team-a".into()),
            description: Some("deploys".into()),
            restrictions: Default::default(),
        };
        let require = LifetimePolicy {
            max_lifetime_days: None,
            require_expiry: true,
        };
        let v = serde_json::to_value(TokenView::new(&rec, None, 1_796_000_100, &require)).unwrap();
        assert_eq!(v["owner"], "team-a");
        assert_eq!(v["description"], "deploys");
        assert_eq!(v["policy"], "violates-require-expiry");
        let max = LifetimePolicy {
            max_lifetime_days: Some(1),
            require_expiry: false,
        };
        let v = serde_json::to_value(TokenView::new(&rec, None, 1_796_000_100, &max)).unwrap();
        assert_eq!(v["policy"], "violates-max-lifetime");
    }
}
