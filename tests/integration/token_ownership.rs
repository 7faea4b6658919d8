//! Issue 18 (token lifecycle), parts 2 and 3, on the real binary: a token's owner and
//! description (create, `PATCH`, the `?owner=` filter, the audit event, a restart, the
//! offline CLI) and the lifetime policy (`--max-token-lifetime`, `--require-expiry`: refused
//! at creation, flagged and counted for tokens made before, never revoked). Each contract
//! test runs on the embedded store and on a cluster node; the two-node cluster tests are in
//! `postgres.rs`.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::support::{basic_auth, on_both_stores, run_cli, HttpResponse, Req, Store, TempDir};

struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn send(&self, req: Req<'_>) -> HttpResponse {
        req.header("Authorization", &self.auth).send(self.addr)
    }
    fn create(&self, body: Value) -> HttpResponse {
        self.send(Req::new("POST", "/admin/api/tokens").json(&body))
    }
    fn patch(&self, id: &str, body: Value) -> HttpResponse {
        self.send(Req::new("PATCH", &format!("/admin/api/tokens/{id}")).json(&body))
    }
    fn view(&self, id: &str) -> Value {
        let r = self.send(Req::get(&format!("/admin/api/tokens/{id}")));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    fn names_of_owner(&self, owner: &str) -> Vec<String> {
        let r = self.send(Req::get(&format!("/admin/api/tokens?owner={owner}")));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The one field a validation error names.
fn invalid_field(r: &HttpResponse) -> String {
    let v = r.assert_error(400, "validation_error");
    v["errors"][0]["field"].as_str().unwrap_or("").to_owned()
}

on_both_stores!(
    owner_and_description_are_created_edited_filtered_and_audited,
    the_lifetime_policy_refuses_new_tokens_and_flags_old_ones,
);

fn owner_and_description_are_created_edited_filtered_and_audited(store: &Store) {
    let temp = TempDir::new("ownership");
    let data = temp.path().join("data");
    let svc = store.start_in(&data, &[]);
    let admin = Admin {
        addr: svc.addr,
        auth: basic_auth("admin", &svc.initial_password()),
    };

    // Create: the fields are optional, trimmed, and in the view (null when unset).
    let r = admin.create(json!({
        "name": "deploy",
        "owner": "  Team-Payments ",
        "description": "Nightly deploys\nfrom CI",
    }));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["owner"], "Team-Payments");
    assert_eq!(created["description"], "Nightly deploys\nfrom CI");
    assert_eq!(created["policy"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["token"].as_str().unwrap().to_owned();
    let plain = admin.create(json!({"name": "plain"})).json();
    assert_eq!(plain["owner"], Value::Null);
    assert_eq!(plain["description"], Value::Null);
    let other = admin
        .create(json!({"name": "other", "owner": "team-payments-ops"}))
        .json();

    // Create refuses what names refuse, field by field, and changes nothing.
    for (body, field) in [
        (json!({"name": "x1", "owner": "o".repeat(201)}), "owner"),
        (json!({"name": "x2", "owner": "a\nb"}), "owner"),
        (json!({"name": "x3", "owner": "evil\u{202E}"}), "owner"),
        (
            json!({"name": "x4", "description": "d".repeat(501)}),
            "description",
        ),
        (
            json!({"name": "x5", "description": "bell\u{7}"}),
            "description",
        ),
        (json!({"name": "x6", "owner": 5}), "owner"),
        (json!({"name": "x7", "team": "a"}), "team"),
    ] {
        assert_eq!(invalid_field(&admin.create(body)), field);
    }
    // A secret pasted into the prose is refused, and not echoed back.
    let r = admin.create(json!({"name": "x8", "description": format!("replaces {secret}")}));
    assert_eq!(invalid_field(&r), "description");
    assert!(!r.text().contains(&secret[3..]), "{}", r.text());
    let r = admin.patch(&id, json!({"owner": secret}));
    assert_eq!(invalid_field(&r), "owner");
    assert!(!r.text().contains(&secret[3..]), "{}", r.text());
    let all = admin.send(Req::get("/admin/api/tokens")).json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3, "nothing made");

    // The owner filter: exact, ignoring case; an empty filter is a mistake, not "all".
    assert_eq!(admin.names_of_owner("TEAM-payments"), ["deploy"]);
    assert_eq!(admin.names_of_owner("team-payments-ops"), ["other"]);
    assert!(admin.names_of_owner("team").is_empty());
    let r = admin.send(Req::get("/admin/api/tokens?owner="));
    assert_eq!(invalid_field(&r), "owner");

    // PATCH: a merge patch of name, owner and description.
    let r = admin.patch(&id, json!({"owner": "team-billing", "description": null}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["name"], &v["owner"], &v["description"]),
        (&json!("deploy"), &json!("team-billing"), &Value::Null)
    );
    assert!(v.get("token").is_none(), "the secret is never shown again");
    assert_eq!(v["createdAt"], created["createdAt"]);
    assert_eq!(admin.names_of_owner("team-payments"), Vec::<String>::new());
    assert_eq!(admin.names_of_owner("Team-Billing"), ["deploy"]);
    let r = admin.patch(&id, json!({"name": "  Deploy-Prod  "}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin.view(&id)["name"], "Deploy-Prod");
    assert_eq!(admin.view(&id)["owner"], "team-billing", "untouched");
    // Forward-auth sends the new name from now on; the secret still works.
    let r = Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-PA-Token-Name"), Some("Deploy-Prod"));

    // Renames keep names unique ignoring case; a change of case is the token's own name.
    admin
        .patch(&id, json!({"name": "PLAIN"}))
        .assert_error(409, "conflict");
    assert_eq!(admin.patch(&id, json!({"name": "deploy-prod"})).status, 200);
    // The old name is free again.
    assert_eq!(admin.create(json!({"name": "deploy"})).status, 201);

    // What PATCH refuses: the secret and expiry are not fields; a name cannot be cleared.
    for (body, field) in [
        (json!({"expiresAt": "2999-01-01"}), "expiresAt"),
        (json!({"token": "pa_x"}), "token"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({}), "name"),
        (json!({"owner": "o".repeat(201)}), "owner"),
        (json!({"description": ["x"]}), "description"),
    ] {
        assert_eq!(invalid_field(&admin.patch(&id, body)), field);
    }
    let r = admin.send(
        Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
            .header("Content-Type", "text/plain")
            .body(b"{\"owner\":\"x\"}"),
    );
    r.assert_error(400, "validation_error");
    assert_eq!(admin.view(&id)["owner"], "team-billing", "nothing changed");
    let unknown = "00000000-0000-4000-8000-000000000000";
    admin
        .patch(unknown, json!({"owner": "x"}))
        .assert_error(404, "not_found");
    admin
        .patch("not-an-id", json!({"owner": "x"}))
        .assert_error(404, "not_found");
    // Without an admin credential: 401; with an API token: 403.
    Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
        .json(&json!({"owner": "x"}))
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
        .bearer(&secret)
        .json(&json!({"owner": "x"}))
        .send(svc.addr)
        .assert_error(403, "forbidden");
    // The 405 for the item route now lists PATCH.
    let r = admin.send(Req::new("PUT", &format!("/admin/api/tokens/{id}")));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, PATCH, DELETE"));

    // The audit log: one token.updated per change that changed something, naming the fields,
    // never the values (the description was prose; the owner is not echoed either).
    assert_eq!(
        admin
            .patch(
                other["id"].as_str().unwrap(),
                json!({"owner": "team-payments-ops"})
            )
            .status,
        200,
        "a no-op edit is fine"
    );
    let r = admin.send(Req::get(&format!(
        "/admin/api/audit?event=token.updated&tokenId={id}"
    )));
    assert_eq!(r.status, 200);
    let events = r.json()["items"].as_array().unwrap().clone();
    let changed: Vec<Value> = events.iter().map(|e| e["changed"].clone()).collect();
    assert_eq!(
        changed,
        [
            json!(["name"]),
            json!(["name"]),
            json!(["owner", "description"])
        ],
        "{events:?}"
    );
    assert_eq!(events[0]["tokenName"], "deploy-prod");
    assert_eq!(events[0]["actor"], "admin");
    let text = r.text();
    assert!(
        !text.contains("team-billing") && !text.contains("Nightly"),
        "{text}"
    );
    let r = admin.send(Req::get(&format!(
        "/admin/api/audit?event=token.updated&tokenId={}",
        other["id"].as_str().unwrap()
    )));
    assert!(
        r.json()["items"].as_array().unwrap().is_empty(),
        "no-op not audited"
    );

    // Durable: a restart shows the same fields and filters the same way.
    drop(svc);
    let svc = store.start_in(&data, &[]);
    let admin = Admin {
        addr: svc.addr,
        auth: admin.auth,
    };
    let v = admin.view(&id);
    assert_eq!(
        (&v["name"], &v["owner"], &v["description"]),
        (&json!("deploy-prod"), &json!("team-billing"), &Value::Null)
    );
    assert_eq!(admin.names_of_owner("team-billing"), ["deploy-prod"]);
    let r = Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    assert_eq!(r.header("X-PA-Token-Name"), Some("deploy-prod"));
    let own = Req::get("/api/token").bearer(&secret).send(svc.addr).json();
    assert_eq!(own["owner"], "team-billing");
}

fn the_lifetime_policy_refuses_new_tokens_and_flags_old_ones(store: &Store) {
    let temp = TempDir::new("policy");
    let data = temp.path().join("data");
    let svc = store.start_in(&data, &[]);
    let auth = basic_auth("admin", &svc.initial_password());
    let admin = Admin {
        addr: svc.addr,
        auth: auth.clone(),
    };
    // Made before any policy: one that never expires, one for ~3 years, one for a week.
    let forever = admin.create(json!({"name": "forever"})).json();
    let long = admin
        .create(json!({"name": "long", "expiresAt": date_in_days(1000)}))
        .json();
    let week = admin
        .create(json!({"name": "week", "expiresAt": date_in_days(7)}))
        .json();
    for v in [&forever, &long, &week] {
        assert_eq!(v["policy"], Value::Null, "no policy, no flag");
    }
    drop(svc);

    let svc = store.start_in(&data, &["--max-token-lifetime", "30", "--require-expiry"]);
    let admin = Admin {
        addr: svc.addr,
        auth,
    };
    // New tokens: an expiry is required, and at most 30 days away (the date form of the
    // 30th day included).
    let r = admin.create(json!({"name": "n1"}));
    assert_eq!(invalid_field(&r), "expiresAt");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--require-expiry"),
        "{}",
        r.text()
    );
    let r = admin.create(json!({"name": "n2", "expiresAt": date_in_days(32)}));
    assert_eq!(invalid_field(&r), "expiresAt");
    assert!(r.text().contains("30 days"), "{}", r.text());
    let ok = admin.create(json!({"name": "n3", "expiresAt": date_in_days(30)}));
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert_eq!(ok.json()["policy"], Value::Null);
    let listed = admin.send(Req::get("/admin/api/tokens")).json();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        4,
        "refusals made nothing"
    );

    // Old tokens are flagged, counted, and still work: never silently revoked.
    let flag = |v: &Value| admin.view(v["id"].as_str().unwrap())["policy"].clone();
    assert_eq!(flag(&forever), "violates-require-expiry");
    assert_eq!(flag(&long), "violates-max-lifetime");
    assert_eq!(flag(&week), Value::Null);
    let metrics = Req::get("/metrics").send(svc.addr).text();
    assert!(
        metrics.contains("\npa_auth_tokens_violating_policy 2\n"),
        "{metrics}"
    );
    for v in [&forever, &long] {
        let r = Req::get("/auth/verify")
            .bearer(v["token"].as_str().unwrap())
            .send(svc.addr);
        assert_eq!(r.status, 200, "flagged, not revoked");
    }
    // The policy does not touch editing: an old token's owner can still be set.
    let r = admin.patch(forever["id"].as_str().unwrap(), json!({"owner": "ops"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["policy"], "violates-require-expiry");
    drop(svc);

    // Only a maximum: a token without expiry is over it.
    let svc = store.start_in(&data, &["--max-token-lifetime", "2000"]);
    let v = Req::get(&format!(
        "/admin/api/tokens/{}",
        forever["id"].as_str().unwrap()
    ))
    .header("Authorization", &admin.auth)
    .send(svc.addr)
    .json();
    assert_eq!(v["policy"], "violates-max-lifetime");
    let long_view = Req::get(&format!(
        "/admin/api/tokens/{}",
        long["id"].as_str().unwrap()
    ))
    .header("Authorization", &admin.auth)
    .send(svc.addr)
    .json();
    assert_eq!(long_view["policy"], Value::Null, "1000 days is within 2000");
}

/// The `YYYY-MM-DD` date `days` from today (UTC).
fn date_in_days(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = (now / 86_400) + days;
    // Civil from days (Howard Hinnant's algorithm).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn offline_cli_sets_edits_and_lists_owners() {
    let temp = TempDir::new("cli-owner");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "nightly",
            "--owner",
            "team-data",
            "--description",
            "exports",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let secret = out.trim().to_owned();
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["owner"], "team-data");
    assert_eq!(list[0]["description"], "exports");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 0);
    assert!(out.contains("OWNER") && out.contains("team-data"), "{out}");

    let (code, _, err) = run_cli(
        &[
            "token",
            "update",
            &id,
            "--name",
            "nightly-export",
            "--description",
            "",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("changed name, description"), "{err}");
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "nightly-export");
    assert_eq!(list[0]["owner"], "team-data", "untouched");
    assert_eq!(
        list[0]["description"],
        Value::Null,
        "an empty value removes it"
    );

    // Refusals: bad text, nothing to change, a bad id are usage errors (2); an unknown id
    // and a taken name are runtime failures (1), as for the other token commands.
    let update = |extra: &[&str]| {
        let mut args = vec!["token", "update"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--data-dir", d]);
        run_cli(&args, None)
    };
    let (code, _, err) = update(&[&id, "--owner", "a\u{7}b"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--owner"), "{err}");
    assert_eq!(update(&[&id]).0, 2);
    assert_eq!(update(&["not-an-id", "--owner", "x"]).0, 2);
    assert_eq!(
        update(&["00000000-0000-4000-8000-000000000000", "--owner", "x"]).0,
        1
    );
    let (code, _, _) = run_cli(
        &["token", "create", "--name", "second", "--data-dir", d],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(update(&[&id, "--name", "SECOND"]).0, 1, "name taken");
    let (code, _, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "third",
            "--description",
            &"x".repeat(501),
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("--description"), "{err}");

    // A backup carries owners and descriptions (format 2) and restores them elsewhere.
    assert_eq!(
        run_cli(
            &[
                "token",
                "update",
                &id,
                "--description",
                "exports, v2",
                "--data-dir",
                d
            ],
            None
        )
        .0,
        0
    );
    let file = temp.path().join("owners.pab");
    let f = file.to_str().unwrap();
    let (code, _, err) = run_cli(&["backup", "--to", f, "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("PA-AUTH-BACKUP 2 "));
    let restored = temp.path().join("restored");
    let r = restored.to_str().unwrap();
    let (code, _, err) = run_cli(&["restore", "--from", f, "--data-dir", r], None);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", r], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    let nightly = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id.as_str())
        .unwrap();
    assert_eq!(nightly["owner"], "team-data");
    assert_eq!(nightly["description"], "exports, v2");

    // The audit log has the CLI's edits, without values.
    let svc = crate::support::Service::start_in(&dir, &[]);
    let admin = Admin {
        addr: svc.addr,
        auth: basic_auth("admin", &svc.initial_password()),
    };
    let r = admin.send(Req::get("/admin/api/audit?event=token.updated"));
    let events = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    // Offline, the CLI is named as through the control socket: `cli (uid N)` (issue 20).
    assert!(
        events[1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("cli (uid "),
        "{events:?}"
    );
    assert_eq!(events[1]["changed"], json!(["name", "description"]));
    assert_eq!(events[0]["changed"], json!(["description"]));
    assert!(!r.text().contains("exports"), "{}", r.text());
    let r = Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    assert_eq!(r.header("X-PA-Token-Name"), Some("nightly-export"));
}
