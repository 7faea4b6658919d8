//! Issue 14 item 8: the audit log under a flood of failed authentications from many client
//! addresses, and secrets typed where a username goes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{admin_basic, from_address, Req, Service};

/// Every audit event matching `query`, newest first, following the cursors.
fn audit(svc: &Service, auth: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = Req::get(&format!("/admin/api/audit?limit=500{query}{cursor}"))
            .header("Authorization", auth)
            .send(svc.addr)
            .json();
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

/// Lifecycle events survive a flood from 1,250 addresses even with the smallest lifecycle
/// cap (before, the failures shared that cap and pushed them out), and every failure is
/// accounted for, per address or per /24.
#[test]
fn regression_issue14_failure_flood_from_many_addresses_keeps_lifecycle_events() {
    let svc = Service::start(&[
        "--flush-interval",
        "1",
        "--audit-retention",
        "100",
        "--audit-failure-retention",
        "5000",
    ]);
    let auth = admin_basic(&svc);
    let create = |name: &str| {
        Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({ "name": name }))
            .send(svc.addr)
            .json()
    };
    let kept = create("kept");
    let gone = create("gone");
    let path = format!("/admin/api/tokens/{}", gone["id"].as_str().unwrap());
    let deleted = Req::new("DELETE", &path)
        .header("Authorization", &auth)
        .send(svc.addr);
    assert_eq!(deleted.status, 204);

    let unknown = pa_auth::domain::token::PlaintextToken::generate();
    let request = Req::get("/auth/verify")
        .bearer(unknown.expose_secret())
        .to_bytes();
    std::thread::scope(|scope| {
        for x in 0..5u8 {
            let request = &request;
            let to = svc.addr;
            scope.spawn(move || {
                for y in 1..=250u8 {
                    let r = from_address(&format!("127.1.{x}.{y}"), to, request);
                    assert_eq!(r.status, 401);
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(2500));

    for event in ["server.started", "token.created", "token.deleted"] {
        let kept = audit(&svc, &auth, &format!("&event={event}"));
        assert!(!kept.is_empty(), "{event} was pushed out");
    }
    let created = audit(
        &svc,
        &auth,
        &format!("&tokenId={}", kept["id"].as_str().unwrap()),
    );
    assert_eq!(created.len(), 1);

    let failures = audit(&svc, &auth, "&event=auth.failed");
    let mut total = 0;
    for e in &failures {
        assert_eq!(e["reason"], "unknown", "{e}");
        let from = e["remoteAddr"].as_str().unwrap();
        assert!(from.starts_with("127.1."), "{e}");
        let exact = from.parse::<std::net::Ipv4Addr>().is_ok();
        assert!(exact || from.ends_with(".0/24"), "{e}");
        total += e["count"].as_u64().unwrap();
    }
    assert_eq!(total, 1250);
    assert!(failures.len() <= 1250);
}

/// A secret typed as the username of a failed admin login is not kept in the audit log.
#[test]
fn a_secret_as_a_failed_login_username_is_redacted_in_the_audit() {
    let svc = Service::start(&[]);
    let secret = pa_auth::domain::token::PlaintextToken::generate();
    let login = Req::new("POST", "/admin/api/session")
        .json(&json!({"username": secret.expose_secret(), "password": "wrong"}))
        .send(svc.addr);
    assert_eq!(login.status, 401);
    let events = audit(&svc, &admin_basic(&svc), "&event=admin.login_failed");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "pa_[redacted]");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&secret.expose_secret()[3..]), "{text}");
}
