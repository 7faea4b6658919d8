//! Redaction of anything shaped like an API token in text that leaves the process as a
//! record (log lines, audit events). A secret pasted into a path, a query string, a username
//! or a token name must not survive there. The rule is deliberately wider than the token
//! format: `pa_` followed by 16 or more base62 characters, so a truncated or mistyped secret
//! is hidden too.

use std::borrow::Cow;

use crate::tokens::TOKEN_PREFIX;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "pa_[redacted]";

/// Shortest run of base62 characters after `pa_` that is treated as (part of) a secret.
const MIN_SECRET_RUN: usize = 16;

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

/// Byte range of the next token-like run at or after `from`.
fn next_secret(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut at = from;
    while let Some(offset) = text.get(at..)?.find(TOKEN_PREFIX) {
        let start = at + offset;
        let run_start = start + TOKEN_PREFIX.len();
        let run = bytes[run_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if run >= MIN_SECRET_RUN {
            return Some((start, run_start + run));
        }
        at = run_start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::PlaintextToken;

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
    }
}
