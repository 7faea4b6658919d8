//! Issue 18 part 1, rotation with an overlap, on the real binary and the embedded store:
//! both secrets work during the overlap and forward-auth says which was used; the overlap
//! ends by time, by the new secret's first use (bounded by `maxOverlap`), or by
//! `DELETE …/previous-secret`, each audited with its reason; deleting the token ends both
//! secrets; a restart keeps the state; the offline CLI rotates too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{admin_basic, run_cli, HttpResponse, Req, Service, TempDir};

struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn of(svc: &Service) -> Admin {
        Admin {
            addr: svc.addr,
            auth: admin_basic(svc),
        }
    }
    fn send(&self, req: Req<'_>) -> HttpResponse {
        req.header("Authorization", &self.auth).send(self.addr)
    }
    fn create(&self, name: &str) -> (String, String) {
        let r = self.send(Req::new("POST", "/admin/api/tokens").json(&json!({"name": name})));
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }
    fn rotate(&self, id: &str, body: Value) -> HttpResponse {
        self.send(Req::new("POST", &format!("/admin/api/tokens/{id}/rotate")).json(&body))
    }
    /// Rotates and returns the new secret.
    fn rotated(&self, id: &str, body: Value) -> String {
        let r = self.rotate(id, body);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    }
    fn view(&self, id: &str) -> Value {
        let r = self.send(Req::get(&format!("/admin/api/tokens/{id}")));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    fn end_previous(&self, id: &str) -> HttpResponse {
        self.send(Req::new(
            "DELETE",
            &format!("/admin/api/tokens/{id}/previous-secret"),
        ))
    }
    fn audit(&self, event: &str, id: &str) -> Vec<Value> {
        let r = self.send(Req::get(&format!(
            "/admin/api/audit?event={event}&tokenId={id}"
        )));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().cloned().unwrap_or_default()
    }
    /// Waits (up to 10 s) for a `token.previous_secret_expired` of `id`; its reason.
    fn ended_reason(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.audit("token.previous_secret_expired", id).first() {
                return e["reason"].as_str().unwrap_or("").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no token.previous_secret_expired"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Forward-auth with `secret`: the status and `X-PA-Token-Secret`.
fn verify(addr: SocketAddr, secret: &str) -> (u16, Option<String>) {
    let r = Req::get("/auth/verify").bearer(secret).send(addr);
    (r.status, r.header("X-PA-Token-Secret").map(str::to_owned))
}

fn works_as(addr: SocketAddr, secret: &str, which: &str) {
    assert_eq!(verify(addr, secret), (200, Some(which.to_owned())));
}

fn refused(addr: SocketAddr, secret: &str) {
    assert_eq!(verify(addr, secret).0, 401);
}

#[test]
fn rotate_keeps_both_secrets_for_the_overlap_and_says_which_was_used() {
    let svc = Service::start(&["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("rotating");
    works_as(svc.addr, &old, "current");
    let r = admin.rotate(&id, json!({"overlap": "3s"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let new = created["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(created["id"], id.as_str(), "same id");
    assert_eq!(created["name"], "rotating", "same name");
    assert!(created["previousSecret"]["expiresAt"].is_string());
    works_as(svc.addr, &old, "previous");
    works_as(svc.addr, &new, "current");
    let r = Req::get("/auth/verify").bearer(&old).send(svc.addr);
    assert_eq!(r.header("X-PA-Token-Id"), Some(id.as_str()));
    assert_eq!(r.header("X-PA-Token-Name"), Some("rotating"));
    let view = admin.view(&id);
    assert!(view["previousSecret"]["lastUsedAt"].is_string(), "{view}");
    let rotated = admin.audit("token.rotated", &id);
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["reason"], "overlap 3 s");
    // The overlap ends by time: the old secret is refused from its end on, audited soon
    // after (the maintenance round, --flush-interval 1).
    std::thread::sleep(Duration::from_millis(3200));
    refused(svc.addr, &old);
    works_as(svc.addr, &new, "current");
    assert_eq!(admin.ended_reason(&id), "overlap ended");
    assert_eq!(admin.view(&id)["previousSecret"], Value::Null);
    assert_eq!(admin.end_previous(&id).status, 404, "none left to end");
}

#[test]
fn until_new_secret_used_ends_at_the_first_use_or_at_max_overlap() {
    let svc = Service::start(&["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("first-use");
    let new = admin.rotated(&id, json!({"overlap": "untilNewSecretUsed"}));
    // Used as often as needed before the switch.
    works_as(svc.addr, &old, "previous");
    works_as(svc.addr, &old, "previous");
    works_as(svc.addr, &new, "current");
    // At once, not at the next maintenance round.
    refused(svc.addr, &old);
    assert_eq!(admin.view(&id)["previousSecret"], Value::Null);
    works_as(svc.addr, &new, "current");
    assert_eq!(admin.ended_reason(&id), "new secret used");

    // Never used: maxOverlap ends it.
    let (id2, old2) = admin.create("max-overlap");
    let new2 = admin.rotated(
        &id2,
        json!({"overlap": "untilNewSecretUsed", "maxOverlap": "2s"}),
    );
    works_as(svc.addr, &old2, "previous");
    std::thread::sleep(Duration::from_millis(2200));
    refused(svc.addr, &old2);
    assert_eq!(admin.ended_reason(&id2), "overlap ended");
    works_as(svc.addr, &new2, "current");
}

#[test]
fn the_previous_secret_ends_on_demand_and_with_its_token() {
    let svc = Service::start(&[]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("ended");
    let new = admin.rotated(&id, json!({"overlap": "7d"}));
    works_as(svc.addr, &old, "previous");
    assert_eq!(admin.end_previous(&id).status, 204);
    refused(svc.addr, &old);
    works_as(svc.addr, &new, "current");
    assert_eq!(admin.end_previous(&id).status, 404);
    assert_eq!(admin.ended_reason(&id), "ended by an admin");

    // Rotating again replaces the previous secret: only the last old one works.
    let newer = admin.rotated(&id, json!({"overlap": "1h"}));
    let newest = admin.rotated(&id, json!({"overlap": "1h"}));
    refused(svc.addr, &old);
    refused(svc.addr, &new);
    works_as(svc.addr, &newer, "previous");
    works_as(svc.addr, &newest, "current");
    let reasons: Vec<Value> = admin
        .audit("token.previous_secret_expired", &id)
        .iter()
        .map(|e| e["reason"].clone())
        .collect();
    assert_eq!(reasons[0], "replaced by another rotation", "{reasons:?}");

    // No overlap at all: the old secret stops with the 201.
    let (id0, old0) = admin.create("no-overlap");
    let r = admin.rotate(&id0, json!({"overlap": "0"}));
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["previousSecret"], Value::Null);
    refused(svc.addr, &old0);

    // Deleting the token ends both secrets before its 204.
    let r = admin.send(Req::new("DELETE", &format!("/admin/api/tokens/{id}")));
    assert_eq!(r.status, 204);
    refused(svc.addr, &newer);
    refused(svc.addr, &newest);
    assert_eq!(admin.end_previous(&id).status, 404);
    assert_eq!(admin.rotate(&id, json!({"overlap": "1h"})).status, 404);
}

#[test]
fn rotate_refuses_bad_input_and_changes_nothing() {
    let svc = Service::start(&[]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("strict");
    for (body, field) in [
        (json!({}), "overlap"),
        (json!({"overlap": "1h30m"}), "overlap"),
        (json!({"overlap": "31d"}), "overlap"),
        (json!({"overlap": 60}), "overlap"),
        (json!({"overlap": "1h", "maxOverlap": "2h"}), "maxOverlap"),
        (
            json!({"overlap": "untilNewSecretUsed", "maxOverlap": "0"}),
            "maxOverlap",
        ),
    ] {
        let r = admin.rotate(&id, body.clone());
        let v = r.assert_error(400, "validation_error");
        assert_eq!(v["errors"][0]["field"], field, "{body}");
    }
    admin
        .rotate(&id, json!({"overlap": "1h", "token": "x"}))
        .assert_error(400, "validation_error");
    admin
        .rotate(
            "0b8f5a3c-1111-4222-8333-944445555666",
            json!({"overlap": "1h"}),
        )
        .assert_error(404, "not_found");
    works_as(svc.addr, &old, "current");
    assert!(admin.audit("token.rotated", &id).is_empty());
    // An API token is never an admin credential here either.
    let r = Req::new("POST", &format!("/admin/api/tokens/{id}/rotate"))
        .bearer(&old)
        .json(&json!({"overlap": "1h"}))
        .send(svc.addr);
    r.assert_error(403, "forbidden");
    let r = admin.send(Req::get(&format!("/admin/api/tokens/{id}/rotate")));
    r.assert_error(405, "method_not_allowed");
}

#[test]
fn a_restart_keeps_the_overlap() {
    let temp = TempDir::new("rotation-restart");
    let data = temp.path().join("data");
    let mut svc = Service::start_in(&data, &[]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("kept");
    let new = admin.rotated(&id, json!({"overlap": "1h"}));
    let (id2, old2) = admin.create("kept-until-used");
    let new2 = admin.rotated(&id2, json!({"overlap": "untilNewSecretUsed"}));
    let ends = admin.view(&id)["previousSecret"]["expiresAt"].clone();
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let svc = Service::start_in(&data, &[]);
    let admin = Admin::of(&svc);
    works_as(svc.addr, &old, "previous");
    works_as(svc.addr, &new, "current");
    assert_eq!(admin.view(&id)["previousSecret"]["expiresAt"], ends);
    works_as(svc.addr, &old2, "previous");
    works_as(svc.addr, &new2, "current");
    refused(svc.addr, &old2);
}

/// Outside attack: a token made before `--require-expiry`/`--max-token-lifetime` (flagged as
/// violating them) could be rotated, renewing a never-expiring credential indefinitely; an
/// expired token was "rotated" into a secret that could never work. Both are refused.
#[test]
fn rotation_renews_no_credential_the_policy_or_expiry_forbids() {
    let temp = TempDir::new("rotation-policy");
    let data = temp.path().join("data");
    let mut svc = Service::start_in(&data, &[]);
    let admin = Admin::of(&svc);
    let (id, old) = admin.create("forever");
    let soon = admin.send(
        Req::new("POST", "/admin/api/tokens").json(&json!({"name": "soon", "expiresAt":
            pa_auth::domain::time::format_rfc3339(pa_auth::domain::time::now_unix() + 2)})),
    );
    assert_eq!(soon.status, 201, "{}", soon.text());
    let soon_id = soon.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let svc = Service::start_in(&data, &["--require-expiry", "--max-token-lifetime", "30"]);
    let admin = Admin::of(&svc);
    assert_eq!(admin.view(&id)["policy"], "violates-require-expiry");
    let r = admin.rotate(&id, json!({"overlap": "30d"}));
    let body = r.assert_error(400, "validation_error");
    assert_eq!(body["errors"][0]["field"], "expiresAt", "{body}");
    works_as(svc.addr, &old, "current");
    assert!(admin.view(&id)["previousSecret"].is_null());
    std::thread::sleep(Duration::from_millis(3100));
    let r = admin.rotate(&soon_id, json!({"overlap": "0"}));
    r.assert_error(400, "validation_error");
}

#[test]
fn the_offline_cli_rotates() {
    let temp = TempDir::new("rotation-cli");
    let d = temp.path().join("data");
    let d = d.to_str().unwrap();
    let (code, old, err) = run_cli(&["token", "create", "--name", "cli", "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    let old = old.trim().to_owned();
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, _, err) = run_cli(&["token", "rotate", &id, "--data-dir", d], None);
    assert_eq!(code, 2, "an overlap must be chosen: {err}");
    let (code, _, err) = run_cli(
        &["token", "rotate", &id, "--overlap", "1y", "--data-dir", d],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--overlap"), "{err}");
    let (code, new, err) = run_cli(
        &["token", "rotate", &id, "--overlap", "1h", "--data-dir", d],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let new = new.trim().to_owned();
    assert!(
        new.starts_with("pa_") && new.len() == 49 && new != old,
        "{new}"
    );
    let (code, out, err) = run_cli(
        &[
            "token",
            "rotate",
            &id,
            "--until-new-secret-used",
            "--max-overlap",
            "2d",
            "--json",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], id.as_str());
    let newest = v["token"].as_str().unwrap().to_owned();
    assert!(v["previousSecret"]["expiresAt"].is_string());
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(listed[0]["previousSecret"].is_object());
    // Served: the last old secret works until the new one is used; the first is gone.
    let svc = Service::start_in(std::path::Path::new(d), &[]);
    refused(svc.addr, &old);
    works_as(svc.addr, &new, "previous");
    works_as(svc.addr, &newest, "current");
    refused(svc.addr, &new);
}
