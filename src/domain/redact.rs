//! Redaction of anything shaped like an API token in text that leaves the process as a
//! record (log lines, audit events). A secret pasted into a path, a query string, a username
//! or a token name must not survive there. The rule is deliberately wider than the token
//! format, so a truncated, mistyped or re-encoded secret is hidden too: `pa` followed by `_`,
//! `-` or `%5F` (any case) and 16 or more base62 characters; and any run of 40 or more
//! letters and digits (a secret's 46 characters without their prefix).

use std::borrow::Cow;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "pa_[redacted]";

/// Shortest run of base62 characters after a `pa_`-like prefix treated as (part of) a secret.
const MIN_SECRET_RUN: usize = 16;
/// Shortest run of letters and digits treated as a secret without any prefix.
const MIN_BARE_RUN: usize = 40;

/// `text` with every token-like run replaced by [`REDACTED`]; borrowed when nothing matched,
/// so the common case allocates nothing.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let Some(first) = next_secret(text, 0) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut found = Some(first);
    while let Some((start, end)) = found {
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        found = next_secret(text, end);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Byte range of the next token-like text at or after `from`: a run of ASCII letters and
/// digits, with the `pa_`-like prefix before it when there is one.
fn next_secret(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut at = from;
    while at < bytes.len() {
        if !bytes[at].is_ascii_alphanumeric() {
            at += 1;
            continue;
        }
        let start = at;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
        let run = &bytes[start..end];
        let before = &bytes[..start];
        let prefixed = |prefix: &[u8]| {
            before.len() >= prefix.len()
                && before[before.len() - prefix.len()..].eq_ignore_ascii_case(prefix)
        };
        // A prefix may lie partly inside the previous match (a run that ends in `pa` right
        // before `_`): the match then starts where that one ended, never before it (a range
        // starting before the previous end panicked the copy: found by the fuzzer).
        if (prefixed(b"pa_") || prefixed(b"pa-")) && run.len() >= MIN_SECRET_RUN {
            return Some(((start - 3).max(from), end));
        }
        if prefixed(b"pa%")
            && run.len() >= 2 + MIN_SECRET_RUN
            && run[..2].eq_ignore_ascii_case(b"5f")
        {
            return Some(((start - 3).max(from), end));
        }
        if run.len() >= MIN_BARE_RUN {
            return Some((start, end));
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::PlaintextToken;

    /// Regression (fuzz target `admin_json`, through the JSON body's error redaction): a
    /// bare run ending in `pa`, then `_` and a run: the second match's prefix lay inside the
    /// first, and the copy between them panicked.
    #[test]
    fn a_match_ending_in_pa_does_not_lend_its_tail_as_a_prefix() {
        let text = format!("{}pa_{}!", "i".repeat(40), "n".repeat(20));
        assert_eq!(redact_secrets(&text), format!("{REDACTED}{REDACTED}!"));
        let crash = std::fs::read("../fuzz/corpus/admin_json/regression-redact-overlap")
            .or_else(|_| std::fs::read("fuzz/corpus/admin_json/regression-redact-overlap"))
            .unwrap_or_default();
        let _ = redact_secrets(&String::from_utf8_lossy(&crash));
    }

    /// The class of the bug above: any mix of prefixes, runs and separators, never a panic,
    /// and nothing left that the rule would still redact.
    #[test]
    fn any_mix_of_prefixes_and_runs_is_redacted_without_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let pieces = [
            "pa",
            "_",
            "-",
            "%5F",
            "%",
            "i",
            "iiiiiiiiiiiiiiii",
            "P",
            "é",
            " ",
            "!",
        ];
        for _ in 0..20_000 {
            let n = rng.gen_range(0..60);
            let text: String = (0..n)
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect();
            let once = redact_secrets(&text).into_owned();
            assert!(
                next_secret(&once.replace(REDACTED, " "), 0).is_none(),
                "{text:?} -> {once:?}"
            );
        }
    }

    #[test]
    fn hides_every_token_like_run_and_keeps_the_rest() {
        let secret = PlaintextToken::generate();
        let s = secret.expose_secret();
        let text = format!("/auth/verify/{s}?next={s}&pa_short=1 pa_");
        let redacted = redact_secrets(&text);
        assert!(!redacted.contains(&s[3..]), "{redacted}");
        assert_eq!(
            redacted,
            format!("/auth/verify/{REDACTED}?next={REDACTED}&pa_short=1 pa_")
        );
        assert!(matches!(redact_secrets("/healthz"), Cow::Borrowed(_)));
        assert_eq!(
            redact_secrets("xpa_0123456789abcdefZ"),
            "x".to_owned() + REDACTED
        );
        assert_eq!(
            redact_secrets("pa_pa_0123456789abcdefZ"),
            "pa_".to_owned() + REDACTED
        );
        assert_eq!(redact_secrets("é pa_ é"), "é pa_ é");
        // The outside review's spellings: another case, `-`, percent-encoded, no prefix.
        let body = &s[3..];
        for text in [
            format!("/x/PA_{body}"),
            format!("/x/pa-{body}"),
            format!("/x/pa%5F{body}"),
            format!("/x/{body}"),
            format!("x{body}"),
        ] {
            let r = redact_secrets(&text);
            assert!(!r.contains(&body[..20]), "{text} -> {r}");
            assert!(r.contains(REDACTED), "{text} -> {r}");
        }
        // Ordinary identifiers stay: a UUID, a 32-hex correlation id.
        for keep in [
            "/admin/api/tokens/0b7f4a52-8f3e-4f7e-9a43-6d2d35a5c0e1",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(redact_secrets(keep), keep);
        }
    }
}
