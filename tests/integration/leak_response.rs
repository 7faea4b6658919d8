//! Issue 19 parts 5 and 6 on the real binary: revoking leaked tokens by value (the admin API,
//! the GitLab-compatible revocation API, through a real nginx), and bulk delete with a dry
//! run and a confirmed count. Hostile inputs: 1001 values, a 10 MB body, non-strings,
//! duplicates, garbage, the same token twice; no secret in any answer, audit event or log
//! line. The contract tests run on the embedded store and on a cluster node.

use std::net::SocketAddr;

use pa_auth::domain::token::PlaintextToken;
use serde_json::{json, Value};

use crate::support::{
    basic_auth, on_both_stores, raw, run_cli, HttpResponse, Req, Service, Store, TempDir,
};

struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn of(svc: &Service) -> Admin {
        Admin {
            addr: svc.addr,
            auth: basic_auth("admin", &svc.initial_password()),
        }
    }
    fn send(&self, req: Req<'_>) -> HttpResponse {
        req.header("Authorization", &self.auth).send(self.addr)
    }
    fn post(&self, path: &str, body: Value) -> HttpResponse {
        self.send(Req::new("POST", path).json(&body))
    }
    /// Creates a token: (id, secret).
    fn create(&self, body: Value) -> (String, String) {
        let r = self.post("/admin/api/tokens", body);
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }
    fn audit(&self, event: &str) -> Vec<Value> {
        let r = self.send(Req::get(&format!(
            "/admin/api/audit?event={event}&limit=1000"
        )));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().unwrap().clone()
    }
    fn names(&self) -> Vec<String> {
        let r = self.send(Req::get("/admin/api/tokens?limit=1000"));
        let mut names: Vec<String> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

fn works(addr: SocketAddr, secret: &str) -> bool {
    let status = Req::get("/api/token").bearer(secret).send(addr).status;
    assert!(status == 200 || status == 401, "{status}");
    status == 200
}

fn field_of(r: &HttpResponse) -> String {
    let v = r.assert_error(400, "validation_error");
    v["errors"][0]["field"].as_str().unwrap_or("").to_owned()
}

on_both_stores!(
    revoke_deletes_each_known_token_and_echoes_no_secret,
    bulk_delete_shows_a_dry_run_and_deletes_only_the_confirmed_count,
);

fn revoke_deletes_each_known_token_and_echoes_no_secret(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (id_a, a) = admin.create(json!({"name": "leaked-a"}));
    let (id_b, b) = admin.create(json!({"name": "leaked-b"}));
    let (_, c) = admin.create(json!({"name": "kept"}));
    let never_issued = PlaintextToken::generate().expose_secret().to_owned();
    assert!(works(svc.addr, &a) && works(svc.addr, &b));

    // Pasted as a scanner or a chat gives them: quotes, a comma, a header, whitespace;
    // garbage, an unknown token, the same token twice.
    let r = admin.post(
        "/admin/api/tokens/revoke",
        json!({"tokens": [
            format!(" \"{a}\","),
            format!("Bearer {b}"),
            never_issued,
            "not a token",
            // The last character changed (a checksum that no longer holds); never to itself.
            format!(
                "{}{}",
                &c[..c.len() - 1],
                if c.ends_with('X') { 'Y' } else { 'X' }
            ),
            a,
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let revoked: Vec<(&str, &str)> = v["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        revoked,
        [(id_a.as_str(), "leaked-a"), (id_b.as_str(), "leaked-b")]
    );
    assert_eq!(
        (
            &v["unknown"],
            &v["malformed"],
            &v["duplicates"],
            &v["failed"]
        ),
        (&json!(1), &json!(2), &json!(1), &json!([]))
    );
    for secret in [&a, &b, &c, &never_issued] {
        assert!(
            !r.text().contains(secret.as_str()),
            "the answer echoes a value"
        );
    }
    // Gone at once (on this node, and a cluster delete waited for every node).
    assert!(!works(svc.addr, &a) && !works(svc.addr, &b));
    assert!(works(svc.addr, &c));
    assert_eq!(admin.names(), ["kept"]);

    // Audited: one token.deleted per token with the reason, one token.revoke with counts.
    let deleted = admin.audit("token.deleted");
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted
        .iter()
        .all(|e| e["reason"] == "revoked: leaked" && e["actor"] == "admin"));
    let op = admin.audit("token.revoke");
    assert_eq!(op.len(), 1);
    assert_eq!(op[0]["count"], 2);
    assert_eq!(
        op[0]["reason"],
        "revoked: leaked: 2 revoked, 1 unknown, 2 malformed, 1 duplicate, 0 failed"
    );
    // Repeating it is harmless: now all unknown.
    let again = admin.post("/admin/api/tokens/revoke", json!({"tokens": [a, b]}));
    assert_eq!(again.status, 200);
    assert_eq!(
        (&again.json()["revoked"], &again.json()["unknown"]),
        (&json!([]), &json!(2))
    );

    // Hostile bodies: each a 400 naming the field, nothing changes.
    let too_many: Vec<String> = (0..1001).map(|i| format!("v{i}")).collect();
    for (body, field) in [
        (json!({"tokens": too_many}), "tokens"),
        (json!({"tokens": []}), "tokens"),
        (json!({}), "tokens"),
        (json!({"tokens": c}), "tokens"),
        (json!({"tokens": [c, 5]}), "tokens[1]"),
        (json!({"tokens": [null]}), "tokens[0]"),
        (json!({"tokens": [c], "reason": "x"}), "reason"),
        // A secret pasted where the body's object belongs, or as a key: never echoed.
        (json!(c), ""),
        (json!([c]), ""),
        (json!({c.as_str(): 1}), "pa_[redacted]"),
    ] {
        let r = admin.post("/admin/api/tokens/revoke", body);
        assert_eq!(field_of(&r), field, "{}", r.text());
        assert!(!r.text().contains(c.as_str()));
    }
    assert!(works(svc.addr, &c));
    // 1000 values fit the 64 KiB body and are all read.
    let mut thousand: Vec<String> = (0..999)
        .map(|_| PlaintextToken::generate().expose_secret().to_owned())
        .collect();
    thousand.push(c.clone());
    let r = admin.post("/admin/api/tokens/revoke", json!({"tokens": thousand}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unknown"], 999);
    assert_eq!(r.json()["revoked"][0]["name"], "kept");
    assert!(!works(svc.addr, &c));
    // A 10 MB body is refused before it is read.
    let head = format!(
        "POST /admin/api/tokens/revoke HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        admin.auth,
        10 * 1024 * 1024
    );
    raw(svc.addr, head.as_bytes()).assert_error(413, "payload_too_large");
    // Only POST; only an admin; an API token is refused and audited as such.
    let r = admin.send(Req::get("/admin/api/tokens/revoke"));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    Req::new("POST", "/admin/api/tokens/revoke")
        .json(&json!({"tokens": [a]}))
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    let (_, api) = admin.create(json!({"name": "api"}));
    Req::new("POST", "/admin/api/tokens/revoke")
        .bearer(&api)
        .json(&json!({"tokens": [api]}))
        .send(svc.addr)
        .assert_error(403, "forbidden");
    assert!(works(svc.addr, &api));

    // No value in any audit event or log line.
    let audit = admin.send(Req::get("/admin/api/audit?limit=1000")).text();
    let log = svc.log_text();
    for secret in [&a, &b, &c, &api] {
        assert!(!audit.contains(secret.as_str()), "audit holds a secret");
        assert!(!log.contains(secret.as_str()), "log holds a secret");
    }
}

fn bulk_delete_shows_a_dry_run_and_deletes_only_the_confirmed_count(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let bulk = |body: Value| admin.post("/admin/api/tokens/bulk-delete", body);
    let (_, ci1) = admin.create(json!({"name": "CI-1", "owner": "team-ci"}));
    admin.create(json!({"name": "ci-2", "owner": "team-ci"}));
    admin.create(json!({"name": "other", "owner": "team-x"}));
    assert!(works(svc.addr, &ci1));

    // A dry run (the default) counts and shows a sample, and changes nothing.
    let r = bulk(json!({"namePrefix": "ci-"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((&v["dryRun"], &v["count"]), (&json!(true), &json!(2)));
    let sample: Vec<&str> = v["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(sample, ["ci-2", "CI-1"], "newest first");
    assert_eq!(admin.names().len(), 3);
    // Criteria are ANDed: never used, with the prefix.
    let r = bulk(json!({"namePrefix": "ci-", "neverUsed": true, "dryRun": true}));
    assert_eq!(r.json()["count"], 1);
    let r =
        bulk(json!({"namePrefix": "ci-", "neverUsed": true, "dryRun": false, "confirmCount": 1}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"dryRun": false, "count": 1, "deleted": 1, "failed": []})
    );
    assert_eq!(admin.names(), ["CI-1", "other"]);

    // A stale count (a token created since the dry run) deletes nothing: 409 with the count.
    assert_eq!(bulk(json!({"owner": "TEAM-CI"})).json()["count"], 1);
    admin.create(json!({"name": "ci-3", "owner": "team-ci"}));
    let r = bulk(json!({"owner": "team-ci", "dryRun": false, "confirmCount": 1}));
    let e = r.assert_error(409, "conflict");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("now selects 2 tokens"),
        "{e}"
    );
    assert_eq!(admin.names().len(), 3);

    // Filters that are not one: each a 400 naming the field.
    for (body, field) in [
        (json!({}), "all"),
        (json!({"neverUsed": false}), "all"),
        (json!({"all": true, "owner": "team-ci"}), "all"),
        (json!({"all": false}), "all"),
        (json!({"owner": "team-ci", "dryRun": false}), "confirmCount"),
        (
            json!({"owner": "team-ci", "confirmCount": 2}),
            "confirmCount",
        ),
        (
            json!({"owner": "team-ci", "dryRun": false, "confirmCount": -1}),
            "confirmCount",
        ),
        (json!({"unusedForDays": 0}), "unusedForDays"),
        (json!({"unusedForDays": "30"}), "unusedForDays"),
        (json!({"unusedForDays": 1.5}), "unusedForDays"),
        (json!({"createdBefore": "yesterday"}), "createdBefore"),
        (json!({"owner": " "}), "owner"),
        (json!({"namePrefix": 7}), "namePrefix"),
        (json!({"all": "true"}), "all"),
        (json!({"filter": {"all": true}}), "filter"),
    ] {
        let r = bulk(body.clone());
        assert_eq!(field_of(&r), field, "{body}: {}", r.text());
    }
    // Created before a date in the past, unused for a year: none of these.
    assert_eq!(
        bulk(json!({"createdBefore": "2020-01-01"})).json()["count"],
        0
    );
    assert_eq!(bulk(json!({"unusedForDays": 365})).json()["count"], 0);

    // Everything, explicitly.
    let n = bulk(json!({"all": true})).json()["count"].as_u64().unwrap();
    assert_eq!(n, 3);
    let r = bulk(json!({"all": true, "dryRun": false, "confirmCount": n}));
    assert_eq!(r.json()["deleted"], 3, "{}", r.text());
    assert!(admin.names().is_empty());
    assert!(!works(svc.addr, &ci1));

    // One token.deleted per token, one token.bulk_delete per real run (none for dry runs or
    // refused runs).
    let deleted = admin.audit("token.deleted");
    assert_eq!(deleted.len(), 4);
    assert!(deleted.iter().all(|e| e["reason"] == "bulk delete"));
    let ops = admin.audit("token.bulk_delete");
    let reasons: Vec<&str> = ops.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "filter: all; 3 selected, 3 deleted, 0 failed",
            "filter: neverUsed, namePrefix; 1 selected, 1 deleted, 0 failed",
        ]
    );
    let r = admin.send(Req::get("/admin/api/tokens/bulk-delete"));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

/// Revoke-then-verify through the shipped nginx config: the leaked token opens the API
/// until the revoke's 200, and never after.
#[test]
fn a_revoked_token_is_refused_through_nginx() {
    let svc = Service::start(&[]);
    let upstream = crate::forward_auth::EchoUpstream::start();
    let Some(nginx) = crate::forward_auth::start_nginx_nodes(&[svc.addr], upstream.addr(), true)
    else {
        return;
    };
    let admin = Admin::of(&svc);
    let (_, leaked) = admin.create(json!({"name": "leaked-in-ci"}));
    let (_, other) = admin.create(json!({"name": "other"}));
    assert_eq!(
        Req::get("/api/x").bearer(&leaked).send(nginx.addr).status,
        200
    );
    let r = admin.post("/admin/api/tokens/revoke", json!({"tokens": [leaked]}));
    assert_eq!(r.json()["revoked"][0]["name"], "leaked-in-ci");
    for _ in 0..20 {
        let r = Req::get("/api/x").bearer(&leaked).send(nginx.addr);
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_eq!(
        Req::get("/api/x").bearer(&other).send(nginx.addr).status,
        200
    );
}

const REVOCATION_CREDENTIAL: &str = "gitlab-revocation-credential-0123456789abcdef";

fn revocation_api_flags(dir: &TempDir) -> [String; 4] {
    let file = dir.path().join("revocation-credential");
    std::fs::write(&file, format!("{REVOCATION_CREDENTIAL}\n")).unwrap();
    [
        "--revocation-api-prefix".into(),
        "/gitlab-revocation".into(),
        "--revocation-api-token-file".into(),
        file.display().to_string(),
    ]
}

/// The GitLab Token Revocation API contract (docs.gitlab.com/development/sec/
/// token_revocation_api): `GET /v1/revocable_token_types`, `POST /v1/revoke_tokens`, the
/// pre-shared credential in `Authorization` as GitLab sends it (the value alone), 204 when
/// accepted, 400 for an unsupported type, 429 when rate-limited. Its own world: neither an
/// admin credential nor an API token opens it, and its credential opens nothing else.
#[test]
fn the_gitlab_revocation_api_revokes_reported_tokens() {
    let dir = TempDir::new("revocation");
    let flags = revocation_api_flags(&dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let svc = Service::start(&flags);
    let admin = Admin::of(&svc);
    let (id, leaked) = admin.create(json!({"name": "pushed-to-gitlab"}));
    let (_, api) = admin.create(json!({"name": "api"}));
    let types = "/gitlab-revocation/v1/revocable_token_types";
    let revoke = "/gitlab-revocation/v1/revoke_tokens";
    let as_gitlab = |req: Req<'_>| {
        req.header("Authorization", REVOCATION_CREDENTIAL)
            .send(svc.addr)
    };

    let r = as_gitlab(Req::get(types).header("Content-Type", "application/json"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"types": ["gitleaks_rule_id_pa_auth_api_token", "gitleaks_rule_id_pa-auth_api_token"]})
    );
    let r = Req::get(types)
        .header("Authorization", &format!("Bearer {REVOCATION_CREDENTIAL}"))
        .send(svc.addr);
    assert_eq!(r.status, 200);
    // Nobody else: no credential, a wrong one, the admin's, an API token, two headers.
    for auth in [
        None,
        Some("wrong-credential-wrong-credential-wrong".to_owned()),
        Some(admin.auth.clone()),
        Some(format!("Bearer {api}")),
        Some(format!("{REVOCATION_CREDENTIAL}x")),
    ] {
        let req = Req::new("POST", revoke).json(&json!([{"type": "x", "token": leaked}]));
        let req = match &auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        };
        req.send(svc.addr).assert_error(401, "unauthorized");
    }
    Req::get(types)
        .header("Authorization", REVOCATION_CREDENTIAL)
        .header("Authorization", REVOCATION_CREDENTIAL)
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    // …and its credential opens nothing else.
    Req::get("/admin/api/tokens")
        .header("Authorization", REVOCATION_CREDENTIAL)
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    Req::get("/api/token")
        .bearer(REVOCATION_CREDENTIAL)
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    assert!(works(svc.addr, &leaked));

    // Bad reports: 400 (GitLab does not retry), nothing revoked.
    for body in [
        json!([{"type": "gitleaks_rule_id_gitlab_personal_access_token", "token": leaked}]),
        json!({"type": "gitleaks_rule_id_pa_auth_api_token", "token": leaked}),
        json!([{"type": "gitleaks_rule_id_pa_auth_api_token"}]),
        json!([{"type": "gitleaks_rule_id_pa_auth_api_token", "token": 5}]),
        json!([leaked]),
    ] {
        let r = as_gitlab(Req::new("POST", revoke).json(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(!r.text().contains(leaked.as_str()));
    }
    assert!(works(svc.addr, &leaked));

    // The report GitLab sends: 204, the token is gone; again: 204 (idempotent).
    let report = json!([
        {"type": "gitleaks_rule_id_pa_auth_api_token", "token": leaked,
         "location": "https://gitlab.example.com/g/p/-/blob/abc/deploy.sh"},
        {"type": "gitleaks_rule_id_pa-auth_api_token", "token": "pa_notreallyatoken",
         "vulnerability": {"id": 7, "title": "pa-auth API token"}},
    ]);
    for _ in 0..2 {
        let r = as_gitlab(Req::new("POST", revoke).json(&report));
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert!(!works(svc.addr, &leaked));
    assert!(works(svc.addr, &api));
    let deleted = admin.audit("token.deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["tokenId"], id.as_str());
    assert_eq!(deleted[0]["actor"], "revocation-api");
    assert_eq!(
        deleted[0]["reason"],
        "revoked: leaked (reported to the revocation API)"
    );
    assert_eq!(admin.audit("token.revoke").len(), 2);
    let r = as_gitlab(Req::get(revoke));
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));

    // The credential holder's burst gets 429 + Retry-After (strangers are refused before
    // they can count: see strangers_cannot_spend_the_revocation_apis_budget_or_body_places).
    let statuses: Vec<(u16, Option<String>)> = (0..60)
        .map(|_| {
            let r = as_gitlab(Req::get(types));
            (r.status, r.header("retry-after").map(str::to_owned))
        })
        .collect();
    assert!(
        statuses
            .iter()
            .any(|(s, ra)| *s == 429 && ra.as_deref() == Some("1")),
        "{statuses:?}"
    );
    let log = svc.log_text();
    assert!(!log.contains(leaked.as_str()) && !log.contains(REVOCATION_CREDENTIAL));
}

/// Without the flags the revocation API's paths are nobody's; half a configuration, a
/// prefix that overlaps another route or a weak credential is refused at start (exit 2).
#[test]
fn the_revocation_api_is_opt_in_and_its_configuration_is_checked() {
    let svc = Service::start(&[]);
    let r = Req::get("/gitlab-revocation/v1/revocable_token_types")
        .header("Authorization", REVOCATION_CREDENTIAL)
        .send(svc.addr);
    r.assert_error(404, "not_found");
    let dir = TempDir::new("revocation-config");
    let good = dir.path().join("good");
    std::fs::write(&good, REVOCATION_CREDENTIAL).unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too-short\n").unwrap();
    let api_token = dir.path().join("api-token");
    std::fs::write(&api_token, PlaintextToken::generate().expose_secret()).unwrap();
    let good = good.display().to_string();
    let data = dir.path().join("data").display().to_string();
    for (args, says) in [
        (
            vec!["--revocation-api-prefix", "/gitlab-revocation"],
            "go together",
        ),
        (
            vec!["--revocation-api-token-file", good.as_str()],
            "go together",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/admin/revocation",
                "--revocation-api-token-file",
                &good,
            ],
            "overlaps",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/api/revocation",
                "--revocation-api-token-file",
                &good,
            ],
            "overlaps",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/auth/verify",
                "--revocation-api-token-file",
                &good,
            ],
            "overlaps",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "gitlab",
                "--revocation-api-token-file",
                &good,
            ],
            "expected a path",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/a/../admin",
                "--revocation-api-token-file",
                &good,
            ],
            "expected a path",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/a/",
                "--revocation-api-token-file",
                &good,
            ],
            "expected a path",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/a",
                "--revocation-api-token-file",
                &short.display().to_string(),
            ],
            "32 to 512",
        ),
        (
            vec![
                "--revocation-api-prefix",
                "/a",
                "--revocation-api-token-file",
                &api_token.display().to_string(),
            ],
            "not be a pa-auth API token",
        ),
    ] {
        let mut all = vec!["check-config", "--data-dir", data.as_str()];
        all.extend(args.iter().map(|s| &**s));
        let (code, _, err) = run_cli(&all, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains(REVOCATION_CREDENTIAL));
    }
    let (code, _, err) = run_cli(
        &[
            "check-config",
            "--data-dir",
            &data,
            "--revocation-api-prefix",
            "/gitlab-revocation",
            "--revocation-api-token-file",
            &good,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
}

/// The offline CLI: `token revoke` reads values from stdin and never prints one;
/// `token bulk-delete` is a dry run until `--confirm-count` matches.
#[test]
fn the_cli_revokes_from_stdin_and_bulk_deletes_with_a_confirmed_count() {
    let dir = TempDir::new("leak-cli");
    let data = dir.path().join("data").display().to_string();
    let create = |name: &str| {
        let (code, out, err) = run_cli(
            &["token", "create", "--name", name, "--data-dir", &data],
            None,
        );
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    };
    let leaked = create("leaked");
    let ci1 = create("ci-1");
    create("ci-2");
    let stdin = format!(
        "  \"{leaked}\",\n\nnot-a-token\n{leaked}\n{}\n",
        PlaintextToken::generate().expose_secret()
    );
    let (code, out, err) = run_cli(&["token", "revoke", "--data-dir", &data], Some(&stdin));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("revoked ") && out.contains("\"leaked\""),
        "{out}"
    );
    assert!(
        err.contains("1 revoked, 1 unknown, 1 malformed, 1 duplicate, 0 failed"),
        "{err}"
    );
    assert!(!out.contains(leaked.as_str()) && !err.contains(leaked.as_str()));
    let (code, _, err) = run_cli(&["token", "revoke", "--data-dir", &data], Some("\n"));
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run_cli(
        &[
            "token",
            "bulk-delete",
            "--name-prefix",
            "CI-",
            "--data-dir",
            &data,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 tokens selected (dry run"), "{out}");
    assert!(err.contains("--confirm-count 2"), "{err}");
    let (code, _, err) = run_cli(
        &[
            "token",
            "bulk-delete",
            "--name-prefix",
            "ci-",
            "--confirm-count",
            "1",
            "--data-dir",
            &data,
        ],
        None,
    );
    assert_eq!(code, 1, "a stale count deletes nothing");
    assert!(err.contains("now selects 2 tokens"), "{err}");
    for bad in [
        vec!["token", "bulk-delete"],
        vec!["token", "bulk-delete", "--all", "--owner", "x"],
        vec![
            "token",
            "bulk-delete",
            "--all",
            "--dry-run",
            "--confirm-count",
            "2",
        ],
        vec!["token", "bulk-delete", "--unused-for-days", "0"],
    ] {
        let mut args = bad.clone();
        args.extend(["--data-dir", data.as_str()]);
        let (code, _, err) = run_cli(&args, None);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
    let (code, out, err) = run_cli(
        &[
            "token",
            "bulk-delete",
            "--name-prefix",
            "ci-",
            "--confirm-count",
            "2",
            "--data-dir",
            &data,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "2 tokens deleted");
    let (_, list, _) = run_cli(&["token", "list", "--json", "--data-dir", &data], None);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap(),
        json!([]),
        "{list}"
    );
    assert!(!list.contains(ci1.as_str()));
}

/// The regex each shipped secret-scanning file holds, read out of the file as the tool would
/// read it: (file, pattern for python3's `re`).
fn shipped_patterns() -> Vec<(&'static str, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/secret-scanning");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let between = |text: &str, start: &str, end: &str| -> String {
        let from = text
            .find(start)
            .unwrap_or_else(|| panic!("{start} missing"))
            + start.len();
        let len = text[from..].find(end).unwrap();
        text[from..from + len].to_owned()
    };
    let gitleaks = read("gitleaks.toml");
    // In the GitLab file the rule sits in a TOML basic string: `\\b` there is `\b`.
    let gitlab = read("gitlab-secret-detection-ruleset.toml").replace("\\\\", "\\");
    let trufflehog = read("trufflehog.yml");
    let github = read("github-secret-scanning.yml");
    let github_pattern = format!(
        "(?:{})({})(?={})",
        between(&github, "before_secret: '", "'"),
        between(&github, "secret_format: '", "'"),
        between(&github, "after_secret: '", "'"),
    )
    // Hyperscan's \A and \z are python's \A and \Z.
    .replace("\\z", "\\Z");
    vec![
        ("gitleaks.toml", between(&gitleaks, "regex = '''", "'''")),
        (
            "gitlab-secret-detection-ruleset.toml",
            between(&gitlab, "regex = '''", "'''"),
        ),
        ("trufflehog.yml", between(&trufflehog, "token: '", "'")),
        ("github-secret-scanning.yml", github_pattern),
    ]
}

/// Runs `pattern` over each line of `lines` with python3's `re`: each line's matches.
fn python_matches(pattern: &str, lines: &[String]) -> Vec<Vec<String>> {
    let script = "import json, re, sys\n\
                  p = re.compile(sys.argv[1])\n\
                  out = []\n\
                  for line in sys.stdin.read().split('\\n'):\n\
                  \x20   out.append([m.group(m.lastindex or 0) for m in p.finditer(line)])\n\
                  print(json.dumps(out))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, pattern])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed on {pattern}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue 19 part 5: the secret-scanning patterns shipped in `deploy/secret-scanning/` find
/// every generated token wherever it sits, and no near miss; the checksum script keeps the
/// real ones and drops a matching string with a wrong checksum.
#[test]
fn the_shipped_secret_scanning_patterns_find_tokens_and_not_near_misses() {
    if !crate::webdriver::require_program("/usr/bin/python3", "python3") {
        return;
    }
    let tokens: Vec<String> = (0..100)
        .map(|_| PlaintextToken::generate().expose_secret().to_owned())
        .collect();
    let mut found = Vec::new();
    let mut expected = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        found.push(match i % 6 {
            0 => t.clone(),
            1 => format!("PA_AUTH_TOKEN={t}"),
            2 => format!("  \"token\": \"{t}\","),
            3 => format!("Authorization: Bearer {t}"),
            4 => format!("curl -H 'Authorization: Bearer {t}' https://api"),
            _ => format!("x {t}."),
        });
        expected.push(vec![t.clone()]);
    }
    let t = &tokens[0];
    let body = &t[3..];
    let near_misses: Vec<String> = vec![
        format!("pb_{body}"),
        format!("PA_{body}"),
        format!("pa-{body}"),
        format!("pa{body}"),
        format!("pa_{}", &body[1..]),
        format!("{t}0"),
        format!("{t}_"),
        format!("x{t}"),
        format!("_{t}"),
        format!("9{t}"),
        format!("pa_{}-{}", &body[..20], &body[21..]),
        format!("pa_{}é{}", &body[..20], &body[21..]),
        format!("pa_{}", "0".repeat(45)),
        "pa_".to_owned(),
    ];
    let lines: Vec<String> = found.iter().chain(&near_misses).cloned().collect();
    expected.extend(near_misses.iter().map(|_| Vec::new()));
    for (file, pattern) in shipped_patterns() {
        let got = python_matches(&pattern, &lines);
        for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{file}: {pattern} on {:?}", lines[i]);
        }
    }

    // A regex cannot check the checksum; the script can: it keeps the real tokens (and the
    // GitHub file's test string) and drops a lookalike whose last character is off.
    let github = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/secret-scanning/github-secret-scanning.yml"),
    )
    .unwrap();
    let test_string = github
        .split("test_string: 'PA_AUTH_TOKEN=")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    assert!(pa_auth::domain::token::is_well_formed(
        test_string.as_bytes()
    ));
    let mut lookalike = tokens[1].clone();
    let last = if lookalike.ends_with('A') { "B" } else { "A" };
    lookalike.replace_range(48.., last);
    assert!(!pa_auth::domain::token::is_well_formed(
        lookalike.as_bytes()
    ));
    let report = format!(
        "{}\nlookalike: {lookalike}\n{test_string} {}\n",
        found.join("\n"),
        tokens[2]
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/secret-scanning/pa-auth-check-candidates.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(report.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let kept: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut want = tokens.clone();
    want.push(test_string);
    assert_eq!(kept, want, "the real ones, once each, in order");
}

/// Two cluster nodes: a revoke or a bulk delete answered by one node is in force on every
/// node when its 200 is in hand (the one delete's wait), and a leaked *previous* secret of a
/// rotated token revokes the token with both its secrets.
#[test]
fn on_a_cluster_a_revoke_and_a_bulk_delete_are_everywhere_before_the_answer() {
    let Some(pg) = crate::postgres::Postgres::start() else {
        return;
    };
    let url = pg.database("leak_response");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let password = [&a, &b]
        .iter()
        .find_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .expect("one node made the initial admin");
    let on_a = Admin {
        addr: a.addr,
        auth: basic_auth("admin", password.trim()),
    };
    let on_b = Admin {
        addr: b.addr,
        auth: on_a.auth.clone(),
    };
    let (id, old) = on_a.create(json!({"name": "rotated-then-leaked"}));
    let r = on_a.post(
        &format!("/admin/api/tokens/{id}/rotate"),
        json!({"overlap": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let new = r.json()["token"].as_str().unwrap().to_owned();
    let (_, bulk1) = on_a.create(json!({"name": "bulk-1"}));
    let (_, bulk2) = on_a.create(json!({"name": "bulk-2"}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ![&old, &new, &bulk1, &bulk2]
        .iter()
        .all(|t| works(b.addr, t))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw the tokens"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // The old secret leaks; revoked on B: both secrets refused on both nodes at once.
    let r = on_b.post("/admin/api/tokens/revoke", json!({"tokens": [old]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"][0]["id"], id.as_str());
    for node in [a.addr, b.addr] {
        assert!(
            !works(node, &old) && !works(node, &new),
            "accepted after the 200"
        );
    }

    // A bulk delete on B: refused on A at once.
    let n = on_b.post(
        "/admin/api/tokens/bulk-delete",
        json!({"namePrefix": "bulk-"}),
    );
    assert_eq!(n.json()["count"], 2, "{}", n.text());
    let r = on_b.post(
        "/admin/api/tokens/bulk-delete",
        json!({"namePrefix": "bulk-", "dryRun": false, "confirmCount": 2}),
    );
    assert_eq!(r.json()["deleted"], 2, "{}", r.text());
    for node in [a.addr, b.addr] {
        assert!(
            !works(node, &bulk1) && !works(node, &bulk2),
            "accepted after the 200"
        );
    }
    // Both nodes' audit logs are the database's: one operation event each.
    assert_eq!(on_a.audit("token.revoke").len(), 1);
    assert_eq!(on_a.audit("token.bulk_delete").len(), 1);
}

/// Outside attack (medium): a `kill -9` in the middle of a bulk delete left up to all of its
/// deleted tokens without a `token.deleted` event (the events were written after the last
/// delete). Each is now written as its delete lands: after the crash, every token that is
/// gone is audited, but for at most the one deleted last.
#[test]
fn a_bulk_delete_killed_midway_leaves_every_deleted_token_audited() {
    let temp = TempDir::new("bulk-kill");
    let dir = temp.path().join("data");
    let mut svc = Service::start_in(&dir, &[]);
    let admin = Admin::of(&svc);
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            admin
                .create(json!({"name": format!("bulk-{i:03}"), "owner": "bulk"}))
                .0,
        );
    }
    let (addr, auth) = (admin.addr, admin.auth.clone());
    let delete = std::thread::spawn(move || {
        let _ = Req::new("POST", "/admin/api/tokens/bulk-delete")
            .header("Authorization", &auth)
            .json(&json!({"owner": "bulk", "dryRun": false, "confirmCount": 200}))
            .send(addr);
    });
    // Kill once some, not all, are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = admin.names().len();
        if left < 190 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bulk delete never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    svc.kill9();
    let _ = delete.join();
    let svc = Service::start_in(&dir, &[]);
    let admin = Admin::of(&svc);
    let left: std::collections::HashSet<String> = admin.names().into_iter().collect();
    let audited: std::collections::HashSet<String> = admin
        .audit("token.deleted")
        .iter()
        .filter_map(|e| e["tokenName"].as_str().map(str::to_owned))
        .collect();
    let gone: Vec<String> = (0..200)
        .map(|i| format!("bulk-{i:03}"))
        .filter(|n| !left.contains(n))
        .collect();
    assert!(!gone.is_empty());
    let unaudited: Vec<&String> = gone.iter().filter(|n| !audited.contains(*n)).collect();
    assert!(
        unaudited.len() <= 1,
        "{} gone, unaudited: {unaudited:?}",
        gone.len()
    );
    drop(ids);
}

/// Outside attack (medium): a real run checked only the count, so a dry run's three tokens
/// could become another three (one deleted, a critical one created with the same owner) and
/// the critical one went. With the dry run's selection confirmed, that is a 409 and nothing
/// is deleted; the console always confirms it.
#[test]
fn a_bulk_delete_confirms_the_tokens_the_dry_run_showed_not_only_their_count() {
    let svc = Service::start(&[]);
    let admin = Admin::of(&svc);
    let (a, _) = admin.create(json!({"name": "legacy-a", "owner": "legacy"}));
    admin.create(json!({"name": "legacy-b", "owner": "legacy"}));
    admin.create(json!({"name": "legacy-c", "owner": "legacy"}));
    let dry = admin.post("/admin/api/tokens/bulk-delete", json!({"owner": "legacy"}));
    assert_eq!(dry.status, 200, "{}", dry.text());
    let dry = dry.json();
    assert_eq!(dry["count"], 3);
    let selection = dry["selection"].as_str().unwrap().to_owned();
    // Meanwhile: one of them deleted, a critical one made with the same owner.
    let r = admin.send(Req::new("DELETE", &format!("/admin/api/tokens/{a}")));
    assert_eq!(r.status, 204);
    admin.create(json!({"name": "PROD-CRITICAL", "owner": "legacy"}));
    let real = admin.post(
        "/admin/api/tokens/bulk-delete",
        json!({"owner": "legacy", "dryRun": false, "confirmCount": 3, "confirmSelection": selection}),
    );
    assert_eq!(real.status, 409, "{}", real.text());
    assert!(admin.names().contains(&"PROD-CRITICAL".to_owned()));
    // A fresh dry run's selection deletes exactly what it showed.
    let dry = admin
        .post("/admin/api/tokens/bulk-delete", json!({"owner": "legacy"}))
        .json();
    let real = admin.post(
        "/admin/api/tokens/bulk-delete",
        json!({"owner": "legacy", "dryRun": false, "confirmCount": dry["count"], "confirmSelection": dry["selection"]}),
    );
    assert_eq!(real.status, 200, "{}", real.text());
    assert_eq!(real.json()["deleted"], 3);
}

/// Outside attack (medium): strangers could block the revocation API. The per-second budget
/// was counted before the credential, so a flood of wrong credentials made GitLab's own
/// calls 429; and a wrong credential's body was waited for (a trickled body held a place).
/// Now the credential is checked first, before the body, and only its holder's calls count.
#[test]
fn strangers_cannot_spend_the_revocation_apis_budget_or_body_places() {
    let dir = TempDir::new("revocation-flood");
    let flags = revocation_api_flags(&dir);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let svc = Service::start(&flags);
    let revoke = "/gitlab-revocation/v1/revoke_tokens";
    for _ in 0..100 {
        let r = Req::new("POST", revoke)
            .header("Authorization", "wrong-credential")
            .json(&json!([]))
            .send(svc.addr);
        assert_eq!(r.status, 401);
    }
    let r = Req::new("POST", revoke)
        .header("Authorization", REVOCATION_CREDENTIAL)
        .json(&json!([]))
        .send(svc.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    // A wrong credential announcing a body it never sends: answered at once, not after the
    // body timeout.
    let started = std::time::Instant::now();
    let r = raw(
        svc.addr,
        format!(
            "POST {revoke} HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The flood is in the log as a few lines, not a hundred.
    let lines = svc
        .log_text()
        .lines()
        .filter(|l| l.contains("revocation API: credential refused"))
        .count();
    assert!(lines <= 5, "{lines} log lines");
}
