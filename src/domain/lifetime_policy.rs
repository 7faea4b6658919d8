//! The token lifetime policy an operator sets on `serve` (`--max-token-lifetime DAYS`,
//! `--require-expiry`): what a new token's `expiresAt` must satisfy, and whether a token that
//! already exists is outside it. Pure: every check takes `now` or the token's own times.
//!
//! The limit is counted in whole UTC days so that the date form works as an admin expects:
//! with `--max-token-lifetime 90`, `expiresAt: "<today + 90 days>"` is accepted, although a
//! date means "through that day" and is stored as the next midnight. Precisely, a token may
//! stop working at the latest at the first UTC midnight after `from + DAYS × 86 400 s`,
//! where `from` is the creation time.
//!
//! A token that existed before the policy and is outside it is flagged, never changed or
//! revoked: revoking is an admin's decision. An expired token is not flagged (it no longer
//! opens anything).

use crate::domain::token_fields::{is_expired, FieldError};

const DAY: i64 = 86_400;

/// `--max-token-lifetime` and `--require-expiry`. The default is no policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// Longest lifetime in days; `None` = no limit (`--max-token-lifetime 0`).
    pub max_lifetime_days: Option<u32>,
    /// Whether a token must have an expiry at all.
    pub require_expiry: bool,
}

/// Why an existing token is outside the policy (the view's `policy` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyViolation {
    /// It never expires, and `--require-expiry` is on.
    RequireExpiry,
    /// It lives longer than `--max-token-lifetime` allows (or forever, with only that set).
    MaxLifetime,
}

impl PolicyViolation {
    /// The value the token view shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyViolation::RequireExpiry => "violates-require-expiry",
            PolicyViolation::MaxLifetime => "violates-max-lifetime",
        }
    }
}

impl LifetimePolicy {
    /// Whether any rule is on.
    pub fn is_active(&self) -> bool {
        self.require_expiry || self.max_lifetime_days.is_some()
    }

    /// The last instant a token created at `from` may stop working at, when there is a limit.
    pub fn latest_expiry(&self, from: i64) -> Option<i64> {
        let days = i64::from(self.max_lifetime_days?);
        let end = from.saturating_add(days.saturating_mul(DAY));
        Some(end.div_euclid(DAY).saturating_add(1).saturating_mul(DAY))
    }

    /// Checks a new token's expiry (already parsed and in the future) at creation time `now`.
    pub fn check_new(&self, expires_at: Option<i64>, now: i64) -> Result<(), FieldError> {
        match (expires_at, self.latest_expiry(now)) {
            (None, _) if self.require_expiry => Err(FieldError::new(
                "expiresAt",
                "An expiry is required: this server refuses tokens that never expire \
                 (--require-expiry)",
            )),
            (None, Some(_)) => Err(FieldError::new(
                "expiresAt",
                format!(
                    "An expiry is required: tokens may live at most {} days on this server \
                     (--max-token-lifetime)",
                    self.max_lifetime_days.unwrap_or(0)
                ),
            )),
            (Some(e), Some(latest)) if e > latest => Err(FieldError::new(
                "expiresAt",
                format!(
                    "Must be at most {} days from now (through {}; --max-token-lifetime)",
                    self.max_lifetime_days.unwrap_or(0),
                    crate::domain::time::format_rfc3339(latest - DAY)
                        .get(..10)
                        .unwrap_or("")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether an existing token, created at `created_at` (unix seconds), is outside the
    /// policy at `now`. Expired tokens are not.
    pub fn violation(
        &self,
        created_at: i64,
        expires_at: Option<i64>,
        now: i64,
    ) -> Option<PolicyViolation> {
        if is_expired(expires_at, now) {
            return None;
        }
        match (expires_at, self.latest_expiry(created_at)) {
            (None, _) if self.require_expiry => Some(PolicyViolation::RequireExpiry),
            (None, Some(_)) => Some(PolicyViolation::MaxLifetime),
            (Some(e), Some(latest)) if e > latest => Some(PolicyViolation::MaxLifetime),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token_fields::parse_expires_at;

    const NOW: i64 = 1_796_000_000; // 2026-11-30T00:53:20Z

    fn days(n: u32) -> LifetimePolicy {
        LifetimePolicy {
            max_lifetime_days: Some(n),
            require_expiry: false,
        }
    }

    #[test]
    fn no_policy_allows_everything() {
        let off = LifetimePolicy::default();
        assert!(!off.is_active());
        assert!(off.check_new(None, NOW).is_ok());
        assert!(off.check_new(Some(i64::MAX), NOW).is_ok());
        assert_eq!(off.violation(NOW, None, NOW), None);
    }

    #[test]
    fn require_expiry_refuses_never() {
        let p = LifetimePolicy {
            max_lifetime_days: None,
            require_expiry: true,
        };
        let e = p.check_new(None, NOW).unwrap_err();
        assert_eq!(e.field, "expiresAt");
        assert!(e.message.contains("--require-expiry"), "{}", e.message);
        assert!(p.check_new(Some(NOW + 100 * 365 * DAY), NOW).is_ok());
        assert_eq!(
            p.violation(NOW, None, NOW),
            Some(PolicyViolation::RequireExpiry)
        );
        assert_eq!(p.violation(NOW, Some(NOW + 10), NOW), None);
    }

    #[test]
    fn the_date_form_of_the_last_allowed_day_is_accepted() {
        let p = days(30);
        // 2026-11-30 + 30 days = 2026-12-30: through that day is allowed, the next is not.
        let last = parse_expires_at(Some("2026-12-30"), NOW).unwrap();
        assert!(p.check_new(last, NOW).is_ok());
        let after = parse_expires_at(Some("2026-12-31"), NOW).unwrap();
        let e = p.check_new(after, NOW).unwrap_err();
        assert_eq!(e.field, "expiresAt");
        assert!(e.message.contains("30 days"), "{}", e.message);
        assert!(e.message.contains("2026-12-30"), "{}", e.message);
        let never = p.check_new(None, NOW).unwrap_err();
        assert!(
            never.message.contains("--max-token-lifetime"),
            "{}",
            never.message
        );
        // Exactly the limit instant passes, one second more fails.
        let latest = p.latest_expiry(NOW).unwrap();
        assert!(p.check_new(Some(latest), NOW).is_ok());
        assert!(p.check_new(Some(latest + 1), NOW).is_err());
    }

    #[test]
    fn existing_tokens_are_judged_from_their_creation() {
        let p = days(7);
        let created = NOW - 3 * DAY;
        let latest = p.latest_expiry(created).unwrap();
        assert_eq!(p.violation(created, Some(latest), NOW), None);
        assert_eq!(
            p.violation(created, Some(latest + 1), NOW),
            Some(PolicyViolation::MaxLifetime)
        );
        assert_eq!(
            p.violation(created, None, NOW),
            Some(PolicyViolation::MaxLifetime)
        );
        // Expired: no longer a risk, not flagged.
        assert_eq!(p.violation(created - 100 * DAY, Some(NOW), NOW), None);
        let both = LifetimePolicy {
            max_lifetime_days: Some(7),
            require_expiry: true,
        };
        assert_eq!(
            both.violation(created, None, NOW),
            Some(PolicyViolation::RequireExpiry)
        );
        assert_eq!(
            PolicyViolation::MaxLifetime.as_str(),
            "violates-max-lifetime"
        );
    }
}
