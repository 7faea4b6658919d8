//! Wall-clock reading and the RFC 3339 forms the contract uses (UTC, `Z`, second precision).
//! Only the edges call [`now_unix`]; everything else takes `now` as a parameter.

use time::format_description::well_known::Rfc3339;

use crate::domain::text::{InlineText, Text};
use time::OffsetDateTime;

/// Seconds since the Unix epoch, from the wall clock.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the Unix epoch, from the wall clock (what a shared store's times use).
pub fn now_unix_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// An RFC 3339 date-time with offset (`2026-11-30T08:29:58Z`, `…+02:00`, fractions allowed)
/// as microseconds since the Unix epoch; `None` if it is not one.
pub fn parse_rfc3339_micros(raw: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).ok()
}

/// `2026-11-30T08:29:58Z`.
pub fn format_rfc3339(unix_seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// [`format_rfc3339`] without allocating, for the forward-auth path (`PA-Token-Expiration`):
/// time's calendar fields written into inline text for years 0–9999, the general formatter
/// outside them.
pub fn rfc3339_text(unix_seconds: i64) -> Text {
    let Some(t) = OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
    else {
        return Text::from(format_rfc3339(unix_seconds));
    };
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, second) = t.to_hms();
    let mut out = InlineText::empty();
    let mut put = |n: u32, width: u32, after: u8| {
        for d in (0..width).rev() {
            let digit = (n / 10u32.pow(d)) % 10;
            let _ = out.push_ascii(b'0' + digit as u8);
        }
        let _ = out.push_ascii(after);
    };
    put(year.unsigned_abs(), 4, b'-');
    put(u32::from(u8::from(month)), 2, b'-');
    put(u32::from(day), 2, b'T');
    put(u32::from(hour), 2, b':');
    put(u32::from(minute), 2, b':');
    put(u32::from(second), 2, b'Z');
    Text::Inline(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every day from 1970 to past 2400 (its first, last and a pseudo-random second), random
    /// seconds over years 0–9999 and past their ends: the same bytes as time's own RFC 3339
    /// formatter (checked against the hand-written civil-date math it replaced, which is gone),
    /// and inline within years 0–9999.
    #[test]
    fn inline_fields_match_the_general_formatter_day_by_day() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let last_day = 15_340_i64 + 365 * 430; // well past 2400-12-31
        for day in 0..=last_day {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = day * 86_400 + (x % 86_400) as i64;
            for t in [day * 86_400, t, day * 86_400 + 86_399] {
                let text = rfc3339_text(t);
                assert_eq!(&*text, format_rfc3339(t), "{t}");
                assert!(matches!(text, Text::Inline(_)), "{t}");
            }
        }
        // Random seconds over years 0–9999 and a little beyond either end.
        let mut samples = vec![
            -62_167_219_200,
            -62_167_219_201,
            253_402_300_799,
            253_402_300_800,
            i64::MIN,
            i64::MAX,
        ];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x % 316_000_000_000) as i64 - 62_300_000_000);
        }
        for t in samples {
            assert_eq!(&*rfc3339_text(t), format_rfc3339(t), "{t}");
        }
    }

    #[test]
    fn inline_form_matches_the_general_formatter() {
        let mut samples = vec![
            0,
            -1,
            86_399,
            951_782_400,   // 2000-02-29
            4_107_542_399, // 2100-02-28T23:59:59
            1_796_000_000,
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // 10000: the general formatter's business
            -62_167_219_200, // 0000-01-01
            -62_167_219_201,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x % 300_000_000_000) as i64 - 62_000_000_000);
        }
        for t in samples {
            assert_eq!(&*rfc3339_text(t), format_rfc3339(t), "{t}");
        }
        assert!(matches!(rfc3339_text(1_796_000_000), Text::Inline(_)));
    }

    #[test]
    fn formats_utc_with_z_and_whole_seconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
    }
}
