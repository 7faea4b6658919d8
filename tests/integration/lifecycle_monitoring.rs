//! Issue 18 §4, on the real binary: the token-lifecycle aggregates on `/metrics`, the audit
//! export (`/admin/api/audit/export`, NDJSON, oldest first, bounded with a `Link`), and the
//! monitoring files under `deploy/` checked by promtool and `.ci/check_dashboard.py` against
//! what `/metrics` really emits.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;

use crate::support::{basic_auth, on_both_stores, Req, Service, Store, TempDir};
use crate::webdriver::require_program;

fn create(svc: &Service, admin: &str, name: &str, expires_at: Option<String>) -> String {
    let mut body = serde_json::json!({ "name": name });
    if let Some(e) = expires_at {
        body["expiresAt"] = e.into();
    }
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", admin)
        .json(&body)
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

fn in_seconds(secs: i64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + secs;
    let t = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The value of one exposition line `name{labels}` (or `name`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

on_both_stores!(
    expiring_and_unused_tokens_are_counted_without_ids,
    the_audit_export_is_ndjson_oldest_first_and_bounded,
);

fn expiring_and_unused_tokens_are_counted_without_ids(store: &Store) {
    let svc = store.start(&[]);
    let admin = basic_auth("admin", &svc.initial_password());
    create(&svc, &admin, "half-day", Some(in_seconds(12 * 3600)));
    create(&svc, &admin, "five-days", Some(in_seconds(5 * 86_400)));
    create(&svc, &admin, "twenty-days", Some(in_seconds(20 * 86_400)));
    create(&svc, &admin, "forever", None);
    // The first scrape counts (the figures are then cached for 30 s).
    let r = Req::get("/metrics").send(svc.addr);
    assert_eq!(r.status, 200);
    let text = r.text();
    for (series, want) in [
        ("pa_auth_tokens{status=\"active\"}", 4.0),
        ("pa_auth_tokens_expiring{within=\"1d\"}", 1.0),
        ("pa_auth_tokens_expiring{within=\"7d\"}", 2.0),
        ("pa_auth_tokens_expiring{within=\"30d\"}", 3.0),
        // Every token is new: none idle yet.
        ("pa_auth_tokens_unused{for=\"30d\"}", 0.0),
        ("pa_auth_tokens_unused{for=\"90d\"}", 0.0),
        // The deprecated names still answer, with the same figures.
        ("pa_auth_tokens_expiring_7d", 2.0),
        ("pa_auth_tokens_expiring_30d", 3.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(text.contains("# HELP pa_auth_tokens_expiring_7d Deprecated"));
    for name in ["half-day", "five-days", "twenty-days", "forever"] {
        assert!(!text.contains(name), "a token name in /metrics");
    }
}

fn the_audit_export_is_ndjson_oldest_first_and_bounded(store: &Store) {
    // Events served at once (the default waits two minutes for them to settle).
    let svc = store.start(&["--audit-export-settle", "0"]);
    let admin = basic_auth("admin", &svc.initial_password());
    let secret = create(&svc, &admin, "export-a", None);
    create(&svc, &admin, "export-b", None);
    // A failure-class event too (the admin route refuses an API token: audited at once).
    let r = Req::get("/admin/api/tokens").bearer(&secret).send(svc.addr);
    assert_eq!(r.status, 403);

    let get = |query: &str| {
        Req::get(&format!("/admin/api/audit/export?{query}"))
            .header("Authorization", &admin)
            .send(svc.addr)
    };
    let lines = |r: &crate::support::HttpResponse| -> Vec<serde_json::Value> {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/x-ndjson"));
        let text = r.text();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    };
    // The audit API's items (newest first there) before the export: anything appended in
    // between can only follow them.
    let page = Req::get("/admin/api/audit?limit=1000")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let mut items = page["items"].as_array().unwrap().clone();
    items.reverse();
    let all = lines(&get("since=1970-01-01T00:00:00Z"));
    assert_eq!(
        all[..items.len()],
        items[..],
        "the same objects as the audit API's"
    );
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["event"].as_str()).collect();
    for kind in [
        "server.started",
        "token.created",
        "auth.token_on_admin_route",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // Oldest first: ids (µs ‖ sequence, hex) ascend.
    let ids: Vec<&str> = all.iter().filter_map(|e| e["id"].as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.len(), all.len());
    assert!(get("since=1970-01-01T00:00:00Z").header("Link").is_none());

    // Bounded: two at a time, following the Link until it stops.
    let mut followed = Vec::new();
    let mut r = get("since=1970-01-01T00:00:00%2B00:00&limit=2");
    loop {
        let part = lines(&r);
        assert!(part.len() <= 2);
        followed.extend(part);
        let Some(link) = r.header("Link").map(str::to_owned) else {
            break;
        };
        let url = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("Link {link}"));
        assert!(url.starts_with("/admin/api/audit/export?cursor="), "{url}");
        r = Req::get(url).header("Authorization", &admin).send(svc.addr);
    }
    assert_eq!(followed[..all.len()], all[..], "the parts make the whole");

    // `since` is inclusive: from the second event's own time on, it is there.
    let second_at = all[1]["at"].as_str().unwrap();
    let from_second = lines(&get(&format!("since={second_at}")));
    assert!(from_second.iter().any(|e| e["id"] == all[1]["id"]));
    // Nothing yet after a time in the future: an empty body, still 200.
    assert!(lines(&get("since=2999-01-01T00:00:00Z")).is_empty());

    // Bad requests are 400 naming the field; nothing changes.
    for (query, field) in [
        ("", "since"),
        ("since=yesterday", "since"),
        ("since=2026-01-01", "since"),
        ("cursor=xyz", "cursor"),
        (
            "since=2026-01-01T00:00:00Z&cursor=00000000000000000000000000000000",
            "cursor",
        ),
        ("since=2026-01-01T00:00:00Z&limit=0", "limit"),
        ("since=2026-01-01T00:00:00Z&limit=10001", "limit"),
    ] {
        let body = get(query).assert_error(400, "validation_error");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    // Admin only: no credential 401, an API token 403.
    let r = Req::get("/admin/api/audit/export?since=1970-01-01T00:00:00Z").send(svc.addr);
    r.assert_error(401, "unauthorized");
    let r = Req::get("/admin/api/audit/export?since=1970-01-01T00:00:00Z")
        .bearer(&secret)
        .send(svc.addr);
    r.assert_error(403, "forbidden");
    let r = Req::new("POST", "/admin/api/audit/export")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

/// Outside attack: a puller continuing from the last id lost events written concurrently
/// (an id is given before its event is committed, so a lower id could land after a higher
/// one was read). The export now serves events only once they are settled (two minutes by
/// default): a fresh event is not there yet, and nothing can land before a served one.
#[test]
fn the_audit_export_serves_only_settled_events() {
    let svc = Service::start(&[]);
    let admin = basic_auth("admin", &svc.initial_password());
    create(&svc, &admin, "too-fresh", None);
    let r = Req::get("/admin/api/audit/export?since=1970-01-01T00:00:00Z")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains("too-fresh"), "{}", r.text());
    assert_eq!(r.header("Link"), None);
    let out = std::process::Command::new(crate::support::binary())
        .args(["check-config", "--audit-export-settle", "3601"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Every `pa_auth_*` series a real node emits: a sled node with `--audit-syslog` (for the
/// syslog counters) and `--webhook-url` (for the webhook figures, which exist only then; the
/// receiver is the discard port, nothing is queued to it) and, with PostgreSQL, a cluster
/// node (for the cluster gauges and the propagation histogram). Without PostgreSQL (SKIPPED
/// loudly, a failure under CI=true) the cluster metrics cannot be checked against a scrape
/// and the check falls back to the names in `src/web/metrics.rs` for them.
fn scrapes(dir: &Path) -> Vec<std::path::PathBuf> {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("udp://{}", collector.local_addr().unwrap());
    let mut out = Vec::new();
    let mut save = |name: &str, svc: &Service| {
        // The second scrape: the first is counted in pa_auth_http_requests_total, which
        // shows only the routes and statuses seen so far.
        Req::get("/metrics").send(svc.addr);
        let r = Req::get("/metrics").send(svc.addr);
        assert_eq!(r.status, 200);
        let path = dir.join(name);
        std::fs::write(&path, r.text()).unwrap();
        out.push(path);
    };
    let sled = Service::start(&[
        "--audit-syslog",
        &target,
        "--webhook-url",
        "http://127.0.0.1:9/",
        "--webhook-secret",
        "monitoring-test-secret-0123",
    ]);
    save("sled.prom", &sled);
    if let Some(cluster) = Store::cluster() {
        let node = cluster.start(&[]);
        save("cluster.prom", &node);
    }
    out
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn monitoring_rules_and_dashboard_name_only_emitted_metrics() {
    let dir = TempDir::new("monitoring");
    let scraped = scrapes(dir.path());
    let has_cluster = scraped.iter().any(|p| p.ends_with("cluster.prom"));

    // The dashboard and the rules' expressions against the scrapes (python3 is on every CI
    // image: schemathesis needs it).
    let mut check = Command::new("python3");
    check
        .arg(repo(".ci/check_dashboard.py"))
        .arg(repo("deploy/grafana/pa-auth.json"))
        .arg("--rules")
        .arg(repo("deploy/prometheus/pa-auth.rules.yml"));
    for p in &scraped {
        check.arg("--metrics").arg(p);
    }
    if !has_cluster {
        check
            .arg("--metrics-source")
            .arg(repo("src/web/metrics.rs"));
    }
    let out = check.output().expect("python3");
    assert!(
        out.status.success(),
        "check_dashboard.py:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The rules file is valid Prometheus rules (syntax, PromQL, templates).
    if !require_program("/usr/bin/promtool", "prometheus") {
        return;
    }
    let out = Command::new("/usr/bin/promtool")
        .args(["check", "rules"])
        .arg(repo("deploy/prometheus/pa-auth.rules.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
