//! Validation of what an admin supplies for a token, shared by the admin API and the CLI:
//! the name (trimmed, 1..100 characters, no control, bidi or zero-width characters, unique
//! ignoring case), the optional `owner` (≤ 200 characters) and `description` (≤ 500
//! characters) under the same text rules except that a description may hold line breaks,
//! and `expiresAt` (a `YYYY-MM-DD` date meaning "through that day, UTC", or an RFC 3339
//! date-time with offset; in the future; stored as whole UTC seconds).

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// One invalid field of a request body or query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON field or query parameter, as the caller spelled it in the contract.
    pub field: String,
    /// What is wrong with it, for humans.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Longest owner, in characters.
pub const MAX_OWNER_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Returns the trimmed name, or why it is refused.
pub fn validate_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(FieldError::new("name", "Name is required"));
    }
    check_text("name", "Name", name, MAX_NAME_CHARS, false)?;
    // A name travels further than any field: views, backups, the X-PA-Token-Name header
    // and the proxy's access log.
    refuse_token("name", "Name", name)?;
    Ok(name.to_owned())
}

/// Returns the trimmed owner (a team, an e-mail address: free text), `None` when it is
/// empty after trimming (an empty owner is no owner), or why it is refused.
pub fn validate_owner(raw: &str) -> Result<Option<String>, FieldError> {
    let owner = raw.trim();
    if owner.is_empty() {
        return Ok(None);
    }
    check_text("owner", "Owner", owner, MAX_OWNER_CHARS, false)?;
    refuse_token("owner", "Owner", owner)?;
    Ok(Some(owner.to_owned()))
}

/// Returns the trimmed description, `None` when it is empty after trimming, or why it is
/// refused. Line breaks (`\n`, `\r\n`) and tabs are kept: a description is prose. Everything
/// that writes one into a single line (logs, the audit log, headers) never does: the audit
/// log records that it changed, not what it says.
pub fn validate_description(raw: &str) -> Result<Option<String>, FieldError> {
    let description = raw.trim();
    if description.is_empty() {
        return Ok(None);
    }
    check_text(
        "description",
        "Description",
        description,
        MAX_DESCRIPTION_CHARS,
        true,
    )?;
    refuse_token("description", "Description", description)?;
    Ok(Some(description.to_owned()))
}

/// The rules every free-text field shares: at most `max` characters (not bytes), no control
/// characters (but line breaks and tabs when `multiline`), no bidi or zero-width characters.
fn check_text(
    field: &str,
    label: &str,
    text: &str,
    max: usize,
    multiline: bool,
) -> Result<(), FieldError> {
    if text.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("{label} must be at most {max} characters"),
        ));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(FieldError::new(
            field,
            format!("{label} must not contain control characters"),
        ));
    }
    if text.chars().any(is_invisible_or_bidi) {
        return Err(FieldError::new(
            field,
            format!("{label} must not contain bidirectional-override or zero-width characters"),
        ));
    }
    Ok(())
}

/// Owners and descriptions are where a secret gets pasted ("replaces pa_…"); it would then
/// sit in the store and every backup. Only a well-formed token is refused (no false positive
/// on a long hash), and the message never echoes it.
fn refuse_token(field: &str, label: &str, text: &str) -> Result<(), FieldError> {
    if contains_token(text) {
        return Err(FieldError::new(
            field,
            format!("{label} must not contain an API token (pa_…): a secret is never stored"),
        ));
    }
    Ok(())
}

/// Whether `text` contains a well-formed pa-auth token anywhere.
pub fn contains_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    let prefix = crate::domain::token::TOKEN_PREFIX.as_bytes();
    bytes
        .windows(crate::domain::token::TOKEN_LEN)
        .any(|w| w.starts_with(prefix) && crate::domain::token::is_well_formed(w))
}

/// The case-insensitive form used for uniqueness.
pub fn fold_name(name: &str) -> String {
    name.to_lowercase()
}

/// Characters that make a name display differently from what it is (Trojan-source style
/// spoofing in the console, logs and proxy headers): every format character (Unicode
/// category Cf: bidi controls, zero-width characters, soft hyphen, interlinear annotations,
/// invisible operators, tag characters) and every default-ignorable code point, assigned or
/// not (combining grapheme joiner, Hangul and Khmer fillers, variation selectors, and the
/// reserved U+2065, U+FFF0–FFF8 and U+E0000–E0FFF, which render as nothing), plus line and
/// paragraph separators and the braille blank. Either lets two names that differ look the
/// same. Ranges as of Unicode 15.1 (DerivedCoreProperties.txt and category Cf).
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Parses `expiresAt` as given (`None` = never expires) into the first second at which the
/// token stops working, and requires it to be after `now`.
pub fn parse_expires_at(raw: Option<&str>, now: i64) -> Result<Option<i64>, FieldError> {
    let Some(raw) = raw else { return Ok(None) };
    let invalid = || {
        FieldError::new(
            "expiresAt",
            "Must be a date (YYYY-MM-DD) or an RFC 3339 date-time with offset",
        )
    };
    let instant = if raw.len() == 10 {
        let date = parse_calendar_date(raw).ok_or_else(invalid)?;
        // Works through that whole day, UTC: stops at the next midnight.
        let next = date.next_day().ok_or_else(invalid)?;
        PrimitiveDateTime::new(next, Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp()
    } else {
        // Sub-second precision is truncated: a token never outlives what was asked.
        OffsetDateTime::parse(raw, &Rfc3339)
            .map_err(|_| invalid())?
            .unix_timestamp()
    };
    if instant <= now {
        return Err(FieldError::new("expiresAt", "Must be in the future"));
    }
    Ok(Some(instant))
}

/// Strict `YYYY-MM-DD`.
fn parse_calendar_date(raw: &str) -> Option<Date> {
    let b = raw.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8..10)?).ok()?;
    Date::from_calendar_date(i32::try_from(digits(0..4)?).ok()?, month, day).ok()
}

/// Whether a token with this expiry is expired at `now` (`now >= expiresAt`).
pub fn is_expired(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_some_and(|e| now >= e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000; // 2026-11-30T00:53:20Z

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  ci deploy  ").unwrap(), "ci deploy");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"x".repeat(100)).is_ok());
        assert!(
            validate_name(&"é".repeat(100)).is_ok(),
            "characters, not bytes"
        );
        assert!(validate_name(&"x".repeat(101)).is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name("a\u{7f}b").is_err());
        assert!(validate_name("evil\u{202E}gpj.exe").is_err());
        assert!(validate_name("zero\u{200B}width").is_err());
        assert!(
            validate_name("<img src=x onerror=alert(1)>").is_ok(),
            "rendered as text, kept"
        );
        assert_eq!(fold_name("CI Deploy"), fold_name("ci deploy"));
    }

    /// Outside attack (issue 18): a live secret was accepted as a name (and then sent in
    /// X-PA-Token-Name and the proxy's access log), and invisible characters let a name look
    /// like another token's.
    #[test]
    fn names_refuse_secrets_and_invisible_characters() {
        let secret = crate::domain::token::PlaintextToken::generate();
        let err = validate_name(&format!("old {}", secret.expose_secret())).unwrap_err();
        assert!(
            !err.message.contains(secret.expose_secret()),
            "never echoed"
        );
        for invisible in [
            '\u{00AD}',
            '\u{034F}',
            '\u{180E}',
            '\u{3164}',
            '\u{115F}',
            '\u{2028}',
            // Outside attack: tag characters and interlinear annotation marks (Cf) showed
            // "x\u{E0041}y" as "xy" in a browser.
            '\u{E0041}',
            '\u{E0001}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{2800}',
            '\u{E0100}',
            '\u{0600}',
            '\u{13430}',
            '\u{1D173}',
            // Seventh: reserved default-ignorable code points render as nothing too.
            '\u{E0000}',
            '\u{E0002}',
            '\u{E0080}',
            '\u{E0FFF}',
            '\u{2065}',
            '\u{FFF0}',
        ] {
            assert!(
                validate_name(&format!("payments{invisible}-prod")).is_err(),
                "{:?}",
                invisible
            );
        }
    }

    #[test]
    fn owners_and_descriptions_follow_the_name_rules() {
        assert_eq!(
            validate_owner("  team-payments@example.com ").unwrap(),
            Some("team-payments@example.com".into())
        );
        assert_eq!(validate_owner("   ").unwrap(), None, "blank is no owner");
        assert!(validate_owner(&"é".repeat(200)).unwrap().is_some());
        assert_eq!(validate_owner(&"x".repeat(201)).unwrap_err().field, "owner");
        assert!(validate_owner("a\nb").is_err(), "an owner is one line");
        assert!(validate_owner("ops\u{202E}moc.live").is_err());
        assert!(validate_owner("ops\u{200B}").is_err());

        assert_eq!(
            validate_description(" rotates nightly\nowned by CI \t").unwrap(),
            Some("rotates nightly\nowned by CI".into())
        );
        assert_eq!(validate_description("").unwrap(), None);
        assert!(validate_description(&"x".repeat(500)).is_ok());
        let long = validate_description(&"x".repeat(501)).unwrap_err();
        assert_eq!(long.field, "description");
        assert!(long.message.contains("500"), "{}", long.message);
        assert!(validate_description("bell\u{7}").is_err());
        assert!(validate_description("nul\u{0}").is_err());
        assert!(validate_description("esc\u{1b}[2J").is_err());
        assert!(validate_description("evil\u{2066}x").is_err());
        let secret = crate::domain::token::PlaintextToken::generate();
        let pasted = format!("replaces {} from 2025", secret.expose_secret());
        let e = validate_description(&pasted).unwrap_err();
        assert!(!e.message.contains(secret.expose_secret()), "not echoed");
        assert!(validate_owner(secret.expose_secret()).is_err());
        assert!(
            validate_description(&format!("commit {}", "a1".repeat(20))).is_ok(),
            "a long hash is not a token"
        );
        // The name's rules did not change.
        assert!(validate_name("a\tb").is_err());
        assert_eq!(
            validate_name(&"x".repeat(101)).unwrap_err().message,
            "Name must be at most 100 characters"
        );
    }

    #[test]
    fn date_means_through_that_day_utc() {
        let e = parse_expires_at(Some("2026-12-01"), NOW).unwrap().unwrap();
        assert_eq!(
            crate::domain::time::format_rfc3339(e),
            "2026-12-02T00:00:00Z"
        );
    }

    #[test]
    fn datetime_with_offset_is_normalised_to_utc_seconds() {
        let e = parse_expires_at(Some("2026-12-01T10:00:00.9+02:00"), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            crate::domain::time::format_rfc3339(e),
            "2026-12-01T08:00:00Z"
        );
        assert!(
            parse_expires_at(Some("2026-12-01T10:00:00"), NOW).is_err(),
            "offset required"
        );
    }

    #[test]
    fn must_be_in_the_future() {
        assert_eq!(parse_expires_at(None, NOW).unwrap(), None);
        assert!(
            parse_expires_at(Some("2026-11-29"), NOW).is_err(),
            "yesterday"
        );
        // Today still works until tomorrow 00:00Z.
        assert!(parse_expires_at(Some("2026-11-30"), NOW).is_ok());
        assert!(
            parse_expires_at(Some("2026-11-30T00:53:20Z"), NOW).is_err(),
            "exactly now"
        );
        assert!(parse_expires_at(Some("2026-11-30T00:53:21Z"), NOW).is_ok());
        for bad in [
            "tomorrow",
            "2026-13-01",
            "2026-02-30",
            "",
            "2026-12-01T25:00:00Z",
        ] {
            let err = parse_expires_at(Some(bad), NOW).unwrap_err();
            assert_eq!(err.field, "expiresAt");
        }
    }

    #[test]
    fn expiry_boundary_is_inclusive_of_the_instant() {
        let at = NOW + 10;
        assert!(!is_expired(Some(at), at - 1));
        assert!(is_expired(Some(at), at));
        assert!(is_expired(Some(at), at + 1));
        assert!(!is_expired(None, i64::MAX));
    }
}
