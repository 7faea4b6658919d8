//! Webhook events as receivers see them: the event types ([`WebhookKind`]), which audit
//! events become webhook events, when a token's lifecycle events fall due (expiring 30, 7 and
//! 1 days before its expiry, expired, unused), the stable event id a receiver de-duplicates
//! on, the JSON body, the `PA-Signature` header (HMAC-SHA256 over the timestamp and the
//! body) and the retry schedule. Delivery and the outbox are the service's and store's.

use serde_json::{json, Value};

use crate::domain::audit::{AuditEvent, AuditKind};

/// One day in seconds.
const DAY: i64 = 86_400;

/// A token's lifecycle event, found by the periodic scan (not by an admin's action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `token.expiring`, `within` days before the token stops working (30, 7 or 1).
    Expiring { days: u8 },
    /// `token.expired`: the first second at which the token no longer works has passed.
    Expired,
    /// `token.unused`: not used (or never, since its creation) for `--unused-after` days.
    Unused { days: u32 },
}

/// The days before expiry at which `token.expiring` is sent.
pub const EXPIRING_DAYS: [u8; 3] = [30, 7, 1];

impl Lifecycle {
    pub fn event_type(self) -> &'static str {
        match self {
            Lifecycle::Expiring { .. } => "token.expiring",
            Lifecycle::Expired => "token.expired",
            Lifecycle::Unused { .. } => "token.unused",
        }
    }
}

/// What the scan knows of one token.
#[derive(Debug, Clone)]
pub struct TokenFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub owner: Option<&'a str>,
    pub created_at: i64,
    /// First second at which it stops working; `None` = never.
    pub expires_at: Option<i64>,
    /// Its last use as stored, or its creation if never used.
    pub last_activity: i64,
    pub last_used_at: Option<i64>,
}

/// The lifecycle events of `token` whose moment falls in `(from, to]`, each with its moment.
/// A moment before the token existed does not count (a token made 5 days before its expiry
/// gets no "30 days left"); an expiry moment also counts only while the token is still
/// unexpired at it, and `token.unused` only while the token works.
pub fn due_between(
    token: &TokenFacts<'_>,
    unused_after_days: Option<u32>,
    from: i64,
    to: i64,
) -> Vec<(Lifecycle, i64)> {
    let mut due = Vec::new();
    let within = |moment: i64| moment > from && moment <= to && moment >= token.created_at;
    if let Some(expires) = token.expires_at {
        for days in EXPIRING_DAYS {
            let moment = expires - i64::from(days) * DAY;
            if within(moment) {
                due.push((Lifecycle::Expiring { days }, moment));
            }
        }
        if within(expires) {
            due.push((Lifecycle::Expired, expires));
        }
    }
    if let Some(days) = unused_after_days.filter(|d| *d > 0) {
        let moment = token.last_activity + i64::from(days) * DAY;
        let works = token.expires_at.is_none_or(|e| moment < e);
        if works && within(moment) {
            due.push((Lifecycle::Unused { days }, moment));
        }
    }
    due
}

/// The earliest moment of the window a scan may still look at: a node that was stopped for
/// longer sends the lifecycle events of the last 7 days only, never a flood of old news.
pub fn earliest_catch_up(now: i64) -> i64 {
    now - 7 * DAY
}

/// The audit events that are also webhook events.
pub fn is_webhook_audit_event(kind: AuditKind) -> bool {
    matches!(
        kind,
        AuditKind::TokenCreated | AuditKind::TokenDeleted | AuditKind::TokenRotated
    )
}

/// A stable id for a lifecycle event: the same token, kind and moment always give the same
/// id, so a scan repeated after a crash and a retried delivery both carry it.
pub fn lifecycle_event_id(token_id: &str, kind: Lifecycle, moment: i64) -> String {
    let detail = match kind {
        Lifecycle::Expiring { days } => format!("expiring:{days}"),
        Lifecycle::Expired => "expired".to_owned(),
        Lifecycle::Unused { days } => format!("unused:{days}"),
    };
    let hash = blake3::hash(format!("{token_id}|{detail}|{moment}").as_bytes());
    format!(
        "evt_{}",
        crate::domain::encoding::hex(&hash.as_bytes()[..16])
    )
}

/// The id of the webhook event that reports audit event `audit_id`.
pub fn audit_event_id(audit_id: &str) -> String {
    format!("evt_{audit_id}")
}

/// The body of a lifecycle event.
pub fn lifecycle_body(token: &TokenFacts<'_>, kind: Lifecycle, moment: i64) -> String {
    let fmt = crate::domain::time::format_rfc3339;
    let mut data = json!({
        "token": {
            "id": token.id,
            "name": token.name,
            "owner": token.owner,
            "expiresAt": token.expires_at.map(fmt),
            "lastUsedAt": token.last_used_at.map(fmt),
        }
    });
    match kind {
        Lifecycle::Expiring { days } => data["within"] = json!(format!("{days}d")),
        Lifecycle::Unused { days } => data["unusedFor"] = json!(format!("{days}d")),
        Lifecycle::Expired => {}
    }
    body(
        &lifecycle_event_id(token.id, kind, moment),
        kind.event_type(),
        &fmt(moment),
        data,
    )
}

/// The body of the webhook event reporting an audit event (as stored: id and time set).
pub fn audit_body(event: &AuditEvent) -> String {
    let data = serde_json::to_value(event).unwrap_or(Value::Null);
    body(&audit_event_id(&event.id), &event.event, &event.at, data)
}

/// The body of an `admin.login_failed` burst: `count` failed admin logins within
/// `window_secs`, ending at `at`, from these addresses (at most 10 named).
pub fn login_burst_body(
    id: &str,
    at: i64,
    count: u64,
    window_secs: u64,
    addresses: &[String],
) -> String {
    body(
        id,
        AuditKind::AdminLoginFailed.name(),
        &crate::domain::time::format_rfc3339(at),
        json!({ "count": count, "windowSeconds": window_secs, "remoteAddrs": addresses }),
    )
}

fn body(id: &str, event_type: &str, occurred_at: &str, data: Value) -> String {
    json!({ "id": id, "type": event_type, "occurredAt": occurred_at, "data": data }).to_string()
}

/// The body of a `token.denied_network` event, from the aggregated `auth.denied_network`
/// audit event it reports (as stored: id and time set): which token, from which address
/// (or network, when the aggregation counted by network), and how often in the interval.
pub fn denied_network_body(event: &AuditEvent) -> String {
    body(
        &audit_event_id(&event.id),
        DENIED_NETWORK_EVENT,
        &event.at,
        json!({
            "token": { "id": event.token_id },
            "remoteAddr": event.remote_addr,
            "count": event.count,
        }),
    )
}

/// The webhook event type of a token used from outside its allowed networks.
pub const DENIED_NETWORK_EVENT: &str = "token.denied_network";

/// The `PA-Signature` header value for `body` sent at unix second `t`:
/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!("t={t},v1={}", crate::domain::encoding::hex(tag.as_ref()))
}

/// How long to wait before attempt `attempts + 1` after `attempts` failed ones: 10 s, then
/// doubling, at most an hour.
pub fn retry_after_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(20);
    (10_000i64 << exp).min(3_600_000)
}

/// An event still undelivered this long after it was queued is dropped (and counted): the
/// outbox stays bounded while a receiver is gone for good.
pub const GIVE_UP_AFTER_MS: i64 = 3 * DAY * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(created: i64, expires: Option<i64>, activity: i64) -> TokenFacts<'static> {
        TokenFacts {
            id: "t1",
            name: "ci",
            owner: None,
            created_at: created,
            expires_at: expires,
            last_activity: activity,
            last_used_at: None,
        }
    }

    #[test]
    fn each_expiry_moment_falls_in_exactly_one_window() {
        let t = facts(0, Some(100 * DAY), 0);
        let mut all = Vec::new();
        let mut from = 0;
        while from < 200 * DAY {
            let to = from + 3_600 * 7;
            all.extend(due_between(&t, None, from, to));
            from = to;
        }
        let kinds: Vec<_> = all.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            vec![
                Lifecycle::Expiring { days: 30 },
                Lifecycle::Expiring { days: 7 },
                Lifecycle::Expiring { days: 1 },
                Lifecycle::Expired
            ]
        );
        assert_eq!(all[1].1, 93 * DAY);
    }

    #[test]
    fn no_warning_for_a_moment_before_the_token_existed() {
        let t = facts(95 * DAY, Some(100 * DAY), 95 * DAY);
        let due = due_between(&t, None, 0, 100 * DAY);
        assert_eq!(
            due.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![Lifecycle::Expiring { days: 1 }, Lifecycle::Expired]
        );
    }

    #[test]
    fn unused_counts_from_the_last_use_and_only_while_the_token_works() {
        let t = facts(0, None, 10 * DAY);
        assert_eq!(
            due_between(&t, Some(30), 39 * DAY, 41 * DAY),
            vec![(Lifecycle::Unused { days: 30 }, 40 * DAY)]
        );
        assert!(due_between(&t, None, 39 * DAY, 41 * DAY).is_empty());
        let expired = facts(0, Some(20 * DAY), 10 * DAY);
        assert!(due_between(&expired, Some(30), 39 * DAY, 41 * DAY).is_empty());
    }

    #[test]
    fn lifecycle_ids_are_stable_and_distinct() {
        let a = lifecycle_event_id("t1", Lifecycle::Expiring { days: 7 }, 5);
        assert_eq!(
            a,
            lifecycle_event_id("t1", Lifecycle::Expiring { days: 7 }, 5)
        );
        assert_ne!(
            a,
            lifecycle_event_id("t1", Lifecycle::Expiring { days: 1 }, 5)
        );
        assert_ne!(
            a,
            lifecycle_event_id("t2", Lifecycle::Expiring { days: 7 }, 5)
        );
        assert_ne!(
            a,
            lifecycle_event_id("t1", Lifecycle::Expiring { days: 7 }, 6)
        );
        assert!(a.starts_with("evt_") && a.len() == 36);
    }

    #[test]
    fn signature_matches_a_known_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("t=0,v1="));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let tag = ring::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            crate::domain::encoding::hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"id":"evt_1"}"#;
        let expected = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret"),
            b"1700000000.{\"id\":\"evt_1\"}",
        );
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, body),
            format!(
                "t=1700000000,v1={}",
                crate::domain::encoding::hex(expected.as_ref())
            )
        );
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_after_ms(1), 10_000);
        assert_eq!(retry_after_ms(2), 20_000);
        assert_eq!(retry_after_ms(50), 3_600_000);
    }
}
