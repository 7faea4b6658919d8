//! Leak response rules, pure: reading token values as a scanner, a chat message or a
//! responder's clipboard hands them over ([`read_pasted`]), and the bulk-delete filter
//! ([`TokenFilter`]): which tokens it selects, and how it is named in the audit log.

use crate::domain::time::parse_rfc3339_micros;
use crate::domain::token::{is_well_formed, TokenHash};
use crate::domain::token_fields::{fold_name, FieldError};

/// The most values one revoke request (or `pa-auth token revoke` run) takes.
pub const MAX_PASTED: usize = 1000;

/// The most tokens one bulk delete removes: a larger selection is refused (narrow the
/// filter, e.g. with `createdBefore`), so one request's work stays bounded.
pub const MAX_BULK_DELETE: usize = 10_000;

/// The longest `unusedForDays` (100 years).
pub const MAX_UNUSED_DAYS: u32 = 36_500;

/// One pasted value as a token's hash, or `None` when it is not a well-formed pa-auth token
/// (prefix, length, charset, checksum). Forgiving about what surrounds the token when it is
/// pasted: whitespace, quotes (`"`, `'`, `` ` ``), a trailing comma (a JSON or CSV list) and
/// a leading `Bearer ` (a copied header); nothing else. Pure, never panics, keeps nothing.
pub fn read_pasted(raw: &str) -> Option<TokenHash> {
    let surrounding = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',');
    let mut value = raw.trim_matches(surrounding);
    if let Some(rest) = value
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .and_then(|_| value.get(7..))
    {
        value = rest.trim_matches(surrounding);
    }
    is_well_formed(value.as_bytes()).then(|| TokenHash::of(value.as_bytes()))
}

/// Whether a secret may be the revocation API's credential (`--revocation-api-token-file`):
/// 32 to 512 visible ASCII characters, and not a pa-auth token (the revocation API is a
/// world of its own: an API token must never open it).
pub fn check_revocation_credential(secret: &str) -> Result<(), &'static str> {
    if !(32..=512).contains(&secret.len()) {
        return Err("must be 32 to 512 characters");
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters only (no spaces or control characters)");
    }
    if secret.starts_with(crate::domain::token::TOKEN_PREFIX) {
        return Err("must not be a pa-auth API token (use a secret of its own)");
    }
    Ok(())
}

/// Which tokens a bulk delete selects: every given criterion must hold (AND). `all` selects
/// every token and must be given alone, so an empty filter never means "everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// The owner, folded like names (exact match ignoring case).
    pub owner_folded: Option<String>,
    /// Created strictly before this instant (µs since the epoch).
    pub created_before_micros: Option<i64>,
    /// Last used (or, if never used, created) at least this many days before `now`.
    pub unused_for_days: Option<u32>,
    /// Never used with any of its secrets.
    pub never_used: bool,
    /// The name starts with this, ignoring case (folded).
    pub name_prefix_folded: Option<String>,
    pub all: bool,
}

/// The raw criteria as given (API body or CLI flags), before [`TokenFilter::new`].
#[derive(Debug, Clone, Default)]
pub struct FilterInput<'a> {
    pub owner: Option<&'a str>,
    pub created_before: Option<&'a str>,
    pub unused_for_days: Option<u64>,
    pub never_used: bool,
    pub name_prefix: Option<&'a str>,
    pub all: bool,
}

impl TokenFilter {
    /// Validates the criteria; every bad field is reported. `createdBefore` is a date
    /// (`YYYY-MM-DD`: before that day's 00:00 UTC) or an RFC 3339 date-time with offset.
    pub fn new(input: &FilterInput<'_>) -> Result<TokenFilter, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut filter = TokenFilter {
            never_used: input.never_used,
            all: input.all,
            ..TokenFilter::default()
        };
        if let Some(owner) = input.owner {
            match owner.trim() {
                "" => errors.push(FieldError::new("owner", "Must not be empty")),
                o => filter.owner_folded = Some(fold_name(o)),
            }
        }
        if let Some(raw) = input.created_before {
            let raw = raw.trim();
            let micros = if raw.len() == 10 {
                parse_rfc3339_micros(&format!("{raw}T00:00:00Z"))
            } else {
                parse_rfc3339_micros(raw)
            };
            match micros {
                Some(m) => filter.created_before_micros = Some(m),
                None => errors.push(FieldError::new(
                    "createdBefore",
                    "Must be a date (YYYY-MM-DD) or an RFC 3339 date-time with offset",
                )),
            }
        }
        if let Some(days) = input.unused_for_days {
            match u32::try_from(days) {
                Ok(d) if (1..=MAX_UNUSED_DAYS).contains(&d) => filter.unused_for_days = Some(d),
                _ => errors.push(FieldError::new(
                    "unusedForDays",
                    format!("Must be an integer from 1 to {MAX_UNUSED_DAYS}"),
                )),
            }
        }
        if let Some(prefix) = input.name_prefix {
            match prefix.trim() {
                "" => errors.push(FieldError::new("namePrefix", "Must not be empty")),
                p => filter.name_prefix_folded = Some(fold_name(p)),
            }
        }
        let criteria = filter.criteria().len();
        if filter.all && criteria > 0 {
            errors.push(FieldError::new(
                "all",
                "Give all alone: it selects every token, whatever else is given",
            ));
        } else if !filter.all && criteria == 0 && errors.is_empty() {
            errors.push(FieldError::new(
                "all",
                "Give at least one of owner, createdBefore, unusedForDays, neverUsed, \
                 namePrefix, or all: true to select every token",
            ));
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }

    /// The criteria given (not `all`), by field name.
    fn criteria(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.owner_folded.is_some() {
            out.push("owner");
        }
        if self.created_before_micros.is_some() {
            out.push("createdBefore");
        }
        if self.unused_for_days.is_some() {
            out.push("unusedForDays");
        }
        if self.never_used {
            out.push("neverUsed");
        }
        if self.name_prefix_folded.is_some() {
            out.push("namePrefix");
        }
        out
    }

    /// Whether [`TokenFilter::matches`] reads `last_used` (a caller may skip finding it out).
    pub fn needs_last_used(&self) -> bool {
        !self.all && (self.unused_for_days.is_some() || self.never_used)
    }

    /// Whether a token is selected at `now` (unix seconds); `last_used` counts every secret
    /// (only read when [`TokenFilter::needs_last_used`]).
    pub fn matches(
        &self,
        name: &str,
        owner: Option<&str>,
        created_micros: i64,
        last_used: Option<i64>,
        now: i64,
    ) -> bool {
        if self.all {
            return true;
        }
        if let Some(o) = &self.owner_folded {
            if owner.map(str::trim).map(fold_name).as_deref() != Some(o.as_str()) {
                return false;
            }
        }
        if let Some(before) = self.created_before_micros {
            if created_micros >= before {
                return false;
            }
        }
        if let Some(days) = self.unused_for_days {
            let since = last_used.unwrap_or(created_micros.div_euclid(1_000_000));
            if now.saturating_sub(since) < i64::from(days) * 86_400 {
                return false;
            }
        }
        if self.never_used && last_used.is_some() {
            return false;
        }
        if let Some(prefix) = &self.name_prefix_folded {
            if !fold_name(name).starts_with(prefix.as_str()) {
                return false;
            }
        }
        true
    }

    /// How the audit log names the filter: field names, with the values that are numbers
    /// or instants; never free text an admin typed (owner, name prefix), so the event stays
    /// bounded and one line.
    pub fn describe(&self) -> String {
        if self.all {
            return "all".to_owned();
        }
        let mut parts = Vec::new();
        for c in self.criteria() {
            parts.push(match c {
                "createdBefore" => format!(
                    "createdBefore {}",
                    crate::domain::time::format_rfc3339(
                        self.created_before_micros
                            .unwrap_or(0)
                            .div_euclid(1_000_000)
                    )
                ),
                "unusedForDays" => {
                    format!("unusedForDays {}", self.unused_for_days.unwrap_or(0))
                }
                other => other.to_owned(),
            });
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::PlaintextToken;

    #[test]
    fn pasted_values_are_read_forgivingly_but_only_as_tokens() {
        let t = PlaintextToken::generate();
        let s = t.expose_secret();
        let hash = Some(t.hash());
        for pasted in [
            s.to_owned(),
            format!("  {s}\n"),
            format!("\"{s}\","),
            format!("'{s}'"),
            format!("`{s}`"),
            format!("Bearer {s}"),
            format!("bearer   {s}"),
            format!("\t\"{s}\" \r\n"),
        ] {
            assert_eq!(read_pasted(&pasted), hash, "{pasted:?}");
        }
        let mut bad_checksum = s.to_owned();
        let last = if s.ends_with('0') { "1" } else { "0" };
        bad_checksum.replace_range(s.len() - 1.., last);
        for bad in [
            String::new(),
            "pa_".to_owned(),
            s[..s.len() - 1].to_owned(),
            format!("{s}x"),
            format!("pb_{}", &s[3..]),
            format!("PA_{}", &s[3..]),
            bad_checksum,
            format!("x{s}"),
            format!("{s} {s}"),
            format!("Token {s}"),
            s.replace('a', "а"),
            "\u{0}".repeat(49),
            "é".repeat(60),
        ] {
            if bad == s {
                continue;
            }
            assert_eq!(read_pasted(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_revocation_credential_is_its_own() {
        assert!(check_revocation_credential(&"x".repeat(32)).is_ok());
        assert!(check_revocation_credential(&"x".repeat(31)).is_err());
        assert!(check_revocation_credential(&"x".repeat(513)).is_err());
        assert!(check_revocation_credential(&format!("{} x", "y".repeat(40))).is_err());
        let t = PlaintextToken::generate();
        assert!(check_revocation_credential(t.expose_secret()).is_err());
    }

    #[test]
    fn a_filter_needs_a_criterion_or_all_alone() {
        assert!(TokenFilter::new(&FilterInput::default()).is_err());
        let all = TokenFilter::new(&FilterInput {
            all: true,
            ..FilterInput::default()
        })
        .unwrap();
        assert!(all.matches("x", None, 0, Some(5), 10));
        assert_eq!(all.describe(), "all");
        let errors = TokenFilter::new(&FilterInput {
            all: true,
            owner: Some("team"),
            ..FilterInput::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].field, "all");
        let errors = TokenFilter::new(&FilterInput {
            owner: Some(" "),
            created_before: Some("2026-13-01"),
            unused_for_days: Some(0),
            name_prefix: Some(""),
            ..FilterInput::default()
        })
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["owner", "createdBefore", "unusedForDays", "namePrefix"]
        );
    }

    #[test]
    fn criteria_all_hold() {
        let day = 86_400;
        let now = 100 * day;
        let f = TokenFilter::new(&FilterInput {
            owner: Some("Team-Data"),
            created_before: Some("1970-03-01"),
            unused_for_days: Some(30),
            name_prefix: Some("CI-"),
            ..FilterInput::default()
        })
        .unwrap();
        let created = 10 * day * 1_000_000;
        assert!(f.matches("ci-deploy", Some("team-data"), created, Some(60 * day), now));
        assert!(!f.matches("ci-deploy", Some("team-data"), created, Some(80 * day), now));
        assert!(!f.matches("deploy", Some("team-data"), created, None, now));
        assert!(!f.matches("ci-deploy", Some("other"), created, None, now));
        assert!(!f.matches("ci-deploy", None, created, None, now));
        // created 1970-03-01 00:00 exactly is not before it
        assert!(!f.matches("ci-x", Some("team-data"), 59 * day * 1_000_000, None, now));
        assert_eq!(
            f.describe(),
            "owner, createdBefore 1970-03-01T00:00:00Z, unusedForDays 30, namePrefix"
        );
        let never = TokenFilter::new(&FilterInput {
            never_used: true,
            ..FilterInput::default()
        })
        .unwrap();
        assert!(never.matches("a", None, 0, None, now));
        assert!(!never.matches("a", None, 0, Some(1), now));
        // Never used: counted from creation.
        let unused = TokenFilter::new(&FilterInput {
            unused_for_days: Some(30),
            ..FilterInput::default()
        })
        .unwrap();
        assert!(!unused.matches("a", None, (now - day) * 1_000_000, None, now));
        assert!(unused.matches("a", None, (now - 31 * day) * 1_000_000, None, now));
    }
}
