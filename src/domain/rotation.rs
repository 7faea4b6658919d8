//! Rotation with an overlap (issue 18 part 1): how long a token's previous secret keeps
//! working after a rotate, as the admin asks for it, and when that ends. Pure: `now` is a
//! parameter, nothing here reads a clock or a store.
//!
//! Durations are a whole number and one unit, `s`, `m`, `h` or `d` (`90s`, `30m`, `24h`,
//! `7d`), or `0` alone; at most 30 days. No fractions, no compound forms (`1h30m`), no
//! spaces: one spelling per length keeps audit lines and scripts unambiguous, and the bound
//! keeps a forgotten old secret from living on for months.

use super::token_fields::FieldError;

/// The longest overlap an admin may ask for (either form).
pub const MAX_OVERLAP_SECS: i64 = 30 * 86_400;
/// The bound of `untilNewSecretUsed` when `maxOverlap` is not given.
pub const DEFAULT_MAX_OVERLAP_SECS: i64 = 7 * 86_400;

/// How long the previous secret keeps working after a rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// For this many seconds (0: the previous secret stops at once).
    For(i64),
    /// Until the new secret is first used, and at most this many seconds.
    UntilNewSecretUsed { max_secs: i64 },
}

impl Overlap {
    /// Reads the request's `overlap` and `maxOverlap` (`maxOverlap` only goes with
    /// `untilNewSecretUsed`). Errors name the field as the caller spelled it.
    pub fn parse(overlap: &str, max_overlap: Option<&str>) -> Result<Overlap, FieldError> {
        if overlap == "untilNewSecretUsed" {
            let max_secs = match max_overlap {
                None => DEFAULT_MAX_OVERLAP_SECS,
                Some(m) => parse_duration(m).map_err(|e| FieldError::new("maxOverlap", e))?,
            };
            if max_secs == 0 {
                return Err(FieldError::new(
                    "maxOverlap",
                    "Must be longer than 0 with untilNewSecretUsed",
                ));
            }
            return Ok(Overlap::UntilNewSecretUsed { max_secs });
        }
        let secs = parse_duration(overlap).map_err(|e| FieldError::new("overlap", e))?;
        if max_overlap.is_some() {
            return Err(FieldError::new(
                "maxOverlap",
                "Only allowed with \"overlap\": \"untilNewSecretUsed\"",
            ));
        }
        Ok(Overlap::For(secs))
    }

    /// The first second at which a previous secret made at `now` stops working, or `None`
    /// when there is no overlap at all.
    pub fn ends_at(self, now: i64) -> Option<i64> {
        match self {
            Overlap::For(0) => None,
            Overlap::For(secs) | Overlap::UntilNewSecretUsed { max_secs: secs } => {
                Some(now.saturating_add(secs))
            }
        }
    }

    /// Whether the previous secret also ends at the new secret's first use.
    pub fn until_new_secret_used(self) -> bool {
        matches!(self, Overlap::UntilNewSecretUsed { .. })
    }
}

/// Seconds in a duration of the module's format; the message says what is wrong.
pub fn parse_duration(text: &str) -> Result<i64, &'static str> {
    const FORMAT: &str =
        "Must be a whole number and a unit, s, m, h or d (e.g. \"30m\", \"24h\", \"7d\"), or 0";
    if text == "0" {
        return Ok(0);
    }
    let Some(unit) = text.bytes().last() else {
        return Err(FORMAT);
    };
    let scale: i64 = match unit {
        b's' => 1,
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        _ => return Err(FORMAT),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FORMAT);
    }
    let secs = digits
        .parse::<i64>()
        .map_err(|_| FORMAT)?
        .saturating_mul(scale);
    if secs > MAX_OVERLAP_SECS {
        return Err("Must be at most 30 days (\"30d\")");
    }
    Ok(secs)
}

/// Why a previous secret stopped working (the `reason` of `token.previous_secret_expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousSecretEnd {
    /// Its overlap ran out (or `maxOverlap` did).
    Time,
    /// The new secret was used for the first time (`untilNewSecretUsed`).
    NewSecretUsed,
    /// An admin ended it (`DELETE …/previous-secret`).
    Ended,
    /// Another rotate made a new previous secret in its place.
    Replaced,
}

impl PreviousSecretEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            PreviousSecretEnd::Time => "overlap ended",
            PreviousSecretEnd::NewSecretUsed => "new secret used",
            PreviousSecretEnd::Ended => "ended by an admin",
            PreviousSecretEnd::Replaced => "replaced by another rotation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_spelling_and_a_bound() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("2s"), Ok(2));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("30d"), Ok(MAX_OVERLAP_SECS));
        assert_eq!(parse_duration("720h"), Ok(MAX_OVERLAP_SECS));
        for bad in [
            "",
            "s",
            "31d",
            "721h",
            "1h30m",
            "1.5h",
            "-1s",
            "+1s",
            " 1s",
            "1s ",
            "1S",
            "1w",
            "1",
            "10",
            "99999999999999999999d",
            "1０s",
            "é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlap_forms_and_their_fields() {
        assert_eq!(Overlap::parse("2s", None), Ok(Overlap::For(2)));
        assert_eq!(
            Overlap::parse("untilNewSecretUsed", None),
            Ok(Overlap::UntilNewSecretUsed {
                max_secs: DEFAULT_MAX_OVERLAP_SECS
            })
        );
        assert_eq!(
            Overlap::parse("untilNewSecretUsed", Some("1h")),
            Ok(Overlap::UntilNewSecretUsed { max_secs: 3_600 })
        );
        let field = |r: Result<Overlap, FieldError>| r.unwrap_err().field;
        assert_eq!(field(Overlap::parse("soon", None)), "overlap");
        assert_eq!(field(Overlap::parse("1h", Some("2h"))), "maxOverlap");
        assert_eq!(
            field(Overlap::parse("untilNewSecretUsed", Some("0"))),
            "maxOverlap"
        );
        assert_eq!(
            field(Overlap::parse("untilNewSecretUsed", Some("40d"))),
            "maxOverlap"
        );
    }

    #[test]
    fn end_times() {
        assert_eq!(Overlap::For(0).ends_at(100), None);
        assert_eq!(Overlap::For(5).ends_at(100), Some(105));
        let until = Overlap::UntilNewSecretUsed { max_secs: 60 };
        assert_eq!(until.ends_at(100), Some(160));
        assert!(until.until_new_secret_used());
        assert!(!Overlap::For(5).until_new_secret_used());
    }
}
