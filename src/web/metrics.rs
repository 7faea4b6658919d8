//! `/metrics` in the Prometheus text format: aggregate counters only (never a token name, id
//! or secret). Request counting is a fixed table of atomics indexed by route and status, so
//! the hot path takes no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which route family a request hit (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    Verify,
    ApiToken,
    ApiOther,
    Admin,
    Health,
    Metrics,
    Other,
}

const ROUTES: [(RouteLabel, &str); 7] = [
    (RouteLabel::Verify, "verify"),
    (RouteLabel::ApiToken, "api_token"),
    (RouteLabel::ApiOther, "api_other"),
    (RouteLabel::Admin, "admin"),
    (RouteLabel::Health, "healthz"),
    (RouteLabel::Metrics, "metrics"),
    (RouteLabel::Other, "other"),
];

const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413, 429, 431, 500, 503, 505,
];

/// Upper bounds (seconds) of the request-duration histogram buckets.
const DURATION_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0,
];

/// Request counts by route and status, and handler durations, since start.
pub struct RequestCounters {
    counts: Vec<AtomicU64>,
    /// One per bucket plus +Inf; not cumulative (summed when rendered).
    durations: Vec<AtomicU64>,
    duration_sum_micros: AtomicU64,
}

impl Default for RequestCounters {
    fn default() -> Self {
        RequestCounters {
            counts: (0..ROUTES.len() * (STATUSES.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: (0..=DURATION_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            duration_sum_micros: AtomicU64::new(0),
        }
    }
}

impl RequestCounters {
    pub fn count(&self, route: RouteLabel, status: u16, duration: std::time::Duration) {
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(b) = self.durations.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
        let r = ROUTES
            .iter()
            .position(|(l, _)| *l == route)
            .unwrap_or(ROUTES.len() - 1);
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len());
        if let Some(c) = self.counts.get(r * (STATUSES.len() + 1) + s) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str("# HELP pa_auth_http_requests_total HTTP requests answered, by route family and status.\n");
        out.push_str("# TYPE pa_auth_http_requests_total counter\n");
        for (ri, (_, route)) in ROUTES.iter().enumerate() {
            for si in 0..=STATUSES.len() {
                let n = self.counts[ri * (STATUSES.len() + 1) + si].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES.get(si).map_or("other".to_owned(), u16::to_string);
                let _ = writeln!(
                    out,
                    "pa_auth_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP pa_auth_http_request_duration_seconds Handler time per request.\n");
        out.push_str("# TYPE pa_auth_http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        let bounds = DURATION_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_owned()]);
        for (i, bound) in bounds.enumerate() {
            cumulative += self.durations[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pa_auth_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "pa_auth_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "pa_auth_http_request_duration_seconds_count {cumulative}"
        );
    }
}

/// Values sampled at scrape time.
pub struct Snapshot<'a> {
    pub auth: &'a crate::service::auth::AuthCounters,
    pub requests: &'a RequestCounters,
    pub tokens: crate::store::TokenStats,
    pub open_connections: usize,
    pub flush: crate::service::maintenance::FlushStatus,
    /// Cluster mode only.
    pub cluster: Option<crate::service::cluster::ClusterStatus>,
    /// With `--audit-syslog`: audit copies (sent, dropped, failed).
    pub audit_copy: Option<(u64, u64, u64)>,
    /// With `--webhook-url`: delivery figures.
    pub webhooks: Option<&'a crate::service::webhooks::WebhookFigures>,
}

/// The webhook outbox and its deliveries: what an alert on a gone receiver needs.
fn render_webhooks(out: &mut String, w: &crate::service::webhooks::WebhookFigures) {
    use std::sync::atomic::Ordering::Relaxed;
    let now_ms = crate::domain::time::now_unix_ms();
    let oldest = w.oldest_queued_ms.load(Relaxed);
    let age = if oldest > 0 {
        ((now_ms - oldest).max(0) as f64) / 1000.0
    } else {
        0.0
    };
    let name = "pa_auth_webhook_deliveries_total";
    let _ = writeln!(
        out,
        "# HELP {name} Webhook delivery attempts by this node, by outcome (dropped: outbox full, receiver no longer configured, or undelivered for 3 days).\n# TYPE {name} counter\n\
         {name}{{outcome=\"delivered\"}} {}\n{name}{{outcome=\"failed\"}} {}\n{name}{{outcome=\"dropped\"}} {}",
        w.delivered.load(Relaxed),
        w.failed_attempts.load(Relaxed),
        w.dropped.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP pa_auth_webhook_pending Webhook events waiting in the outbox (one per receiver), counted every 5 s.\n\
         # TYPE pa_auth_webhook_pending gauge\npa_auth_webhook_pending {}\n\
         # HELP pa_auth_webhook_oldest_pending_seconds Age of the oldest webhook event waiting in the outbox (0: none).\n\
         # TYPE pa_auth_webhook_oldest_pending_seconds gauge\npa_auth_webhook_oldest_pending_seconds {age:.3}\n\
         # HELP pa_auth_webhook_last_delivery_timestamp_seconds Unix time of this node's last delivered webhook (0: none yet).\n\
         # TYPE pa_auth_webhook_last_delivery_timestamp_seconds gauge\npa_auth_webhook_last_delivery_timestamp_seconds {}\n\
         # HELP pa_auth_webhook_sender Whether this node holds the lease to scan and send webhooks (one node of a cluster does).\n\
         # TYPE pa_auth_webhook_sender gauge\npa_auth_webhook_sender {}",
        w.pending.load(Relaxed),
        w.last_delivered_unix.load(Relaxed),
        u8::from(w.sending.load(Relaxed))
    );
}

/// Renders the exposition text.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str("# HELP pa_auth_authentications_total API-token authentications, by result.\n");
    out.push_str("# TYPE pa_auth_authentications_total counter\n");
    for (label, counter) in [
        ("success", &s.auth.success),
        ("missing", &s.auth.missing),
        ("malformed", &s.auth.malformed),
        ("unknown", &s.auth.unknown),
        ("expired", &s.auth.expired),
        // Valid tokens refused by their restrictions (403; issue 19).
        ("denied_network", &s.auth.denied_network),
        ("denied_read_only", &s.auth.denied_read_only),
    ] {
        let _ = writeln!(
            out,
            "pa_auth_authentications_total{{result=\"{label}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pa_auth_token_on_admin_route_total Valid API tokens sent to admin routes (answered 403).\n# TYPE pa_auth_token_on_admin_route_total counter\npa_auth_token_on_admin_route_total {}",
        s.auth.token_on_admin_route.load(Ordering::Relaxed)
    );
    s.requests.render(&mut out);
    out.push_str("# HELP pa_auth_tokens Tokens stored, by status (counted at most every 30 s).\n# TYPE pa_auth_tokens gauge\n");
    let _ = writeln!(
        out,
        "pa_auth_tokens{{status=\"active\"}} {}",
        s.tokens.active
    );
    let _ = writeln!(
        out,
        "pa_auth_tokens{{status=\"expired\"}} {}",
        s.tokens.expired
    );
    let t = &s.tokens;
    let _ = writeln!(
        out,
        "# HELP pa_auth_tokens_expiring Active tokens that expire within the window (counted at most every 30 s).\n\
         # TYPE pa_auth_tokens_expiring gauge\n\
         pa_auth_tokens_expiring{{within=\"1d\"}} {}\n\
         pa_auth_tokens_expiring{{within=\"7d\"}} {}\n\
         pa_auth_tokens_expiring{{within=\"30d\"}} {}",
        t.expiring_1d, t.expiring_7d, t.expiring_30d
    );
    let _ = writeln!(
        out,
        "# HELP pa_auth_tokens_unused Active tokens not used (last used, or created if never used) for at least the period, from the stored last-used times (counted at most every 30 s).\n\
         # TYPE pa_auth_tokens_unused gauge\n\
         pa_auth_tokens_unused{{for=\"30d\"}} {}\n\
         pa_auth_tokens_unused{{for=\"90d\"}} {}",
        t.unused_30d, t.unused_90d
    );
    let gauges = [
        (
            "pa_auth_tokens_expiring_7d",
            "Deprecated: use pa_auth_tokens_expiring{within=\"7d\"}. Active tokens that expire within 7 days.",
            s.tokens.expiring_7d as f64,
        ),
        (
            "pa_auth_tokens_expiring_30d",
            "Deprecated: use pa_auth_tokens_expiring{within=\"30d\"}. Active tokens that expire within 30 days.",
            s.tokens.expiring_30d as f64,
        ),
        (
            "pa_auth_tokens_violating_policy",
            "Active tokens outside the lifetime policy (--max-token-lifetime, --require-expiry): flagged, never revoked (counted at most every 30 s).",
            s.tokens.violating_policy as f64,
        ),
        (
            "pa_auth_open_connections",
            "Open client connections.",
            s.open_connections as f64,
        ),
        (
            "pa_auth_last_flush_timestamp_seconds",
            "Unix time of the last successful last-used flush (0 = none yet).",
            s.flush.last_success_unix as f64,
        ),
        (
            "pa_auth_last_flush_duration_seconds",
            "Duration of the last successful last-used flush.",
            s.flush.last_duration.as_secs_f64(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pa_auth_flush_failures_total Failed last-used flush rounds.\n# TYPE pa_auth_flush_failures_total counter\npa_auth_flush_failures_total {}",
        s.flush.failures
    );
    if let Some((sent, dropped, failed)) = s.audit_copy {
        let name = "pa_auth_audit_syslog_messages_total";
        let _ = writeln!(
            out,
            "# HELP {name} Audit events copied to --audit-syslog, by outcome.\n# TYPE {name} counter\n\
             {name}{{outcome=\"sent\"}} {sent}\n{name}{{outcome=\"dropped\"}} {dropped}\n\
             {name}{{outcome=\"failed\"}} {failed}"
        );
    }
    if let Some(w) = s.webhooks {
        render_webhooks(&mut out, w);
    }
    if let Some(c) = &s.cluster {
        let _ = writeln!(
            out,
            "# HELP pa_auth_cluster_applied_revision The store's latest change this node has applied.\n\
             # TYPE pa_auth_cluster_applied_revision gauge\npa_auth_cluster_applied_revision {}\n\
             # HELP pa_auth_cluster_staleness_seconds Time since this node last confirmed the store's latest change.\n\
             # TYPE pa_auth_cluster_staleness_seconds gauge\npa_auth_cluster_staleness_seconds {:.3}\n\
             # HELP pa_auth_cluster_sync_errors_total Failed attempts to follow the store's changes.\n\
             # TYPE pa_auth_cluster_sync_errors_total counter\npa_auth_cluster_sync_errors_total {}",
            c.applied_revision,
            c.staleness.as_secs_f64(),
            c.sync_errors
        );
        let name = "pa_auth_cluster_propagation_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a change's commit (on any node) to its application on this node, on the database's clock.\n# TYPE {name} histogram"
        );
        let bounds = crate::service::cluster::PROPAGATION_BOUNDS_MS;
        for (bound, count) in bounds.iter().zip(&c.propagation.cumulative) {
            let le = f64::from(*bound) / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let total = c.propagation.cumulative[bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {:.3}\n{name}_count {total}",
            c.propagation.sum.as_secs_f64()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_windows_are_labelled_and_the_old_names_stay_deprecated() {
        let auth = crate::service::auth::AuthCounters::default();
        let requests = RequestCounters::default();
        let text = render(&Snapshot {
            auth: &auth,
            requests: &requests,
            tokens: crate::store::TokenStats {
                expiring_1d: 1,
                expiring_7d: 2,
                expiring_30d: 3,
                unused_30d: 4,
                unused_90d: 5,
                ..Default::default()
            },
            open_connections: 0,
            flush: crate::service::maintenance::FlushStatus::default(),
            cluster: None,
            audit_copy: None,
            webhooks: None,
        });
        for line in [
            "pa_auth_tokens_expiring{within=\"1d\"} 1",
            "pa_auth_tokens_expiring{within=\"7d\"} 2",
            "pa_auth_tokens_expiring{within=\"30d\"} 3",
            "pa_auth_tokens_unused{for=\"30d\"} 4",
            "pa_auth_tokens_unused{for=\"90d\"} 5",
            "pa_auth_tokens_expiring_7d 2",
            "pa_auth_tokens_expiring_30d 3",
            "# TYPE pa_auth_tokens_expiring gauge",
            "# TYPE pa_auth_tokens_unused gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        for old in ["pa_auth_tokens_expiring_7d", "pa_auth_tokens_expiring_30d"] {
            let help = format!("# HELP {old} Deprecated: ");
            assert!(text.contains(&help), "{old} not marked deprecated");
        }
    }
}
