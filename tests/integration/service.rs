//! Issue 3: the real `pa-auth` binary over loopback HTTP: every route, status and error code
//! of the contract, admin bootstrap, sessions and CSRF, durability across `kill -9` and
//! SIGTERM, immediate deletion under concurrent use, and the offline CLI.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    basic_auth, binary, from_address, on_both_stores, raw, run_cli, Conn, HttpResponse, Req,
    Service, Store, TempDir,
};

fn basic(password: &str) -> String {
    basic_auth("admin", password)
}

fn basic_for(user: &str, password: &str) -> String {
    basic_auth(user, password)
}

/// An admin client using HTTP Basic.
struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn of(svc: &Service) -> Admin {
        Admin {
            addr: svc.addr,
            auth: basic(&svc.initial_password()),
        }
    }
    fn send(&self, req: Req<'_>) -> HttpResponse {
        req.header("Authorization", &self.auth).send(self.addr)
    }
    fn create(&self, body: Value) -> HttpResponse {
        self.send(Req::new("POST", "/admin/api/tokens").json(&body))
    }
    /// Creates a token and returns (id, secret).
    fn token(&self, name: &str) -> (String, String) {
        let r = self.create(json!({"name": name}));
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }
    fn list(&self, query: &str) -> HttpResponse {
        self.send(Req::get(&format!("/admin/api/tokens{query}")))
    }
}

fn api(addr: SocketAddr, secret: &str) -> HttpResponse {
    Req::get("/api/token").bearer(secret).send(addr)
}

fn assert_401(r: &HttpResponse, error_param: Option<&str>) {
    let v = r.assert_error(401, "unauthorized");
    assert_eq!(v["message"], "Invalid or expired authentication token");
    let challenge = r.header("WWW-Authenticate").expect("challenge");
    match error_param {
        None => assert_eq!(challenge, r#"Bearer realm="pa-auth""#),
        Some(p) => assert_eq!(challenge, format!(r#"Bearer realm="pa-auth", error="{p}""#)),
    }
}

// The contract on the embedded store and on a cluster node (issue 17): each test below is
// written once, as `fn name(store: &Store)`, and runs as `name::sled` and `name::cluster`
// (a node on a new database of the tests' shared PostgreSQL).
on_both_stores!(
    public_routes_and_correlation_ids,
    token_lifecycle_matches_the_docs,
    every_kind_of_bad_credential_is_a_401,
    expired_tokens_stop_working_at_the_instant,
    api_paths_authenticate_before_404_and_405,
    admin_routes_refuse_anonymous_and_api_tokens,
    bad_create_requests_are_400_and_store_nothing,
    names_are_unique_ignoring_case_even_concurrently,
    listing_pages_newest_first,
    console_session_with_csrf_and_logout,
    repeated_failed_logins_are_throttled_per_address,
    password_change_and_bootstrap_file,
    regression_issue_3_token_survives_kill_9_right_after_201,
    regression_issue_3_sigterm_flushes_last_used,
    last_used_is_persisted_every_flush_interval,
    regression_issue_3_delete_while_eight_threads_authenticate,
    secrets_never_reach_the_log,
);

fn public_routes_and_correlation_ids(store: &Store) {
    let svc = store.start(&[]);
    let r = Req::get("/healthz").send(svc.addr);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert_eq!(r.header("X-Correlation-Id").map(str::len), Some(32));
    let m = Req::get("/metrics").send(svc.addr);
    assert_eq!(m.status, 200);
    assert!(m
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(m
        .text()
        .contains("pa_auth_authentications_total{result=\"success\"}"));
    Req::get("/nope")
        .send(svc.addr)
        .assert_error(404, "not_found");
    Req::new("POST", "/healthz")
        .send(svc.addr)
        .assert_error(405, "method_not_allowed");
    assert_eq!(
        Req::new("POST", "/healthz").send(svc.addr).header("Allow"),
        Some("GET, HEAD")
    );
}

fn token_lifecycle_matches_the_docs(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let created = admin.create(json!({"name": "  CI deploy ", "expiresAt": "2999-12-31"}));
    assert_eq!(created.status, 201, "{}", created.text());
    let v = created.json();
    let secret = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 49);
    assert!(secret.starts_with("pa_"));
    assert_eq!(v["name"], "CI deploy");
    assert_eq!(v["expiresAt"], "3000-01-01T00:00:00Z");
    assert_eq!(v["lastUsedAt"], Value::Null);
    assert_eq!(v["status"], "active");
    // The contract's six view fields and the secret, plus issue 18's four additive ones
    // (always present, null here) and issue 19's two (anywhere, full), and nothing else.
    assert_eq!(v.as_object().unwrap().len(), 13);
    for added in ["owner", "description", "policy", "previousSecret"] {
        assert_eq!(v[added], Value::Null, "{added}");
    }
    assert_eq!(v["allowedCidrs"], json!([]));
    assert_eq!(v["access"], "full");
    assert!(v["createdAt"].as_str().unwrap().ends_with('Z'));

    // The secret is never shown again.
    let got = admin.send(Req::get(&format!("/admin/api/tokens/{id}")));
    assert_eq!(got.status, 200);
    assert!(got.json().get("token").is_none());
    assert!(!admin.list("").text().contains(&secret));

    // Use it; last-used is visible to the admin at once.
    let me = api(svc.addr, &secret);
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["id"], id.as_str());
    assert!(me.json()["lastUsedAt"].is_string());
    let listed = admin.list("").json();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0]["lastUsedAt"].is_string());
    assert_eq!(listed["nextCursor"], Value::Null);

    // Forward auth, any method, any path below /auth/verify.
    for (method, path) in [
        ("GET", "/auth/verify"),
        ("POST", "/auth/verify/orders/7"),
        ("DELETE", "/auth/verify/x?y=1"),
    ] {
        let r = Req::new(method, path).bearer(&secret).send(svc.addr);
        assert_eq!(r.status, 200, "{method} {path}");
        assert_eq!(r.header("X-PA-Token-Id"), Some(id.as_str()));
        assert_eq!(r.header("X-PA-Token-Name"), Some("CI%20deploy"));
        assert_eq!(
            r.header("PA-Token-Expiration"),
            Some("3000-01-01T00:00:00Z")
        );
    }

    // Delete: immediate.
    assert_eq!(
        admin
            .send(Req::new("DELETE", &format!("/admin/api/tokens/{id}")))
            .status,
        204
    );
    assert_401(&api(svc.addr, &secret), Some("invalid_token"));
    assert_401(
        &Req::get("/auth/verify").bearer(&secret).send(svc.addr),
        Some("invalid_token"),
    );
    admin
        .send(Req::get(&format!("/admin/api/tokens/{id}")))
        .assert_error(404, "not_found");
    admin
        .send(Req::new("DELETE", &format!("/admin/api/tokens/{id}")))
        .assert_error(404, "not_found");
    admin
        .send(Req::get("/admin/api/tokens/not-a-uuid"))
        .assert_error(404, "not_found");
}

fn every_kind_of_bad_credential_is_a_401(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (_, secret) = admin.token("probe");
    assert_401(&Req::get("/api/token").send(svc.addr), None);
    assert_401(
        &Req::get("/api/token")
            .header("Authorization", "Basic YTpi")
            .send(svc.addr),
        None,
    );
    for bad in [
        "Bearer",
        "Bearer ",
        "Bearer pa_short",
        "Bearer a b",
        &format!("Bearer {secret}x"),
    ] {
        let r = Req::get("/api/token")
            .header("Authorization", bad)
            .send(svc.addr);
        assert_401(&r, Some("invalid_request"));
    }
    // One flipped checksum character: malformed, never looked up.
    let mut flipped = secret.clone().into_bytes();
    flipped[48] = if flipped[48] == b'0' { b'1' } else { b'0' };
    assert_401(
        &api(svc.addr, std::str::from_utf8(&flipped).unwrap()),
        Some("invalid_request"),
    );
    // Two Authorization headers, even both valid.
    let two = Req::get("/api/token")
        .bearer(&secret)
        .bearer(&secret)
        .send(svc.addr);
    assert_401(&two, Some("invalid_request"));
    // Well-formed but unknown.
    let unknown = {
        let r = Admin::of(&svc).create(json!({"name": "tmp"})).json();
        let s = r["token"].as_str().unwrap().to_string();
        admin.send(Req::new(
            "DELETE",
            &format!("/admin/api/tokens/{}", r["id"].as_str().unwrap()),
        ));
        s
    };
    assert_401(&api(svc.addr, &unknown), Some("invalid_token"));
    // Scheme is case-insensitive; query-string tokens are ignored.
    let lower = Req::get("/api/token")
        .header("Authorization", &format!("bearer {secret}"))
        .send(svc.addr);
    assert_eq!(lower.status, 200);
    assert_401(
        &Req::get(&format!("/api/token?access_token={secret}")).send(svc.addr),
        None,
    );
    // A token longer than 512 bytes.
    assert_401(&api(svc.addr, &"a".repeat(600)), Some("invalid_request"));
}

fn expired_tokens_stop_working_at_the_instant(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = admin.create(json!({"name": "short-lived", "expiresAt": at}));
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(api(svc.addr, &secret).status, 200);
    std::thread::sleep(Duration::from_millis(4200));
    assert_401(&api(svc.addr, &secret), Some("invalid_token"));
    assert_eq!(admin.list("").json()["items"][0]["status"], "expired");
}

fn api_paths_authenticate_before_404_and_405(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (_, secret) = admin.token("paths");
    assert_401(&Req::get("/api/users").send(svc.addr), None);
    Req::get("/api/users")
        .bearer(&secret)
        .send(svc.addr)
        .assert_error(404, "not_found");
    Req::get("/api")
        .bearer(&secret)
        .send(svc.addr)
        .assert_error(404, "not_found");
    assert_401(&Req::new("POST", "/api/token").send(svc.addr), None);
    let r = Req::new("POST", "/api/token")
        .bearer(&secret)
        .send(svc.addr);
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

fn admin_routes_refuse_anonymous_and_api_tokens(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (_, secret) = admin.token("not-admin");
    let r = Req::get("/admin/api/tokens").send(svc.addr);
    r.assert_error(401, "unauthorized");
    assert!(r
        .header("WWW-Authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    Req::get("/admin/api/tokens")
        .bearer(&secret)
        .send(svc.addr)
        .assert_error(403, "forbidden");
    Req::get("/admin/api/tokens")
        .header("Authorization", &basic("wrong password!"))
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    Req::get("/admin/api/tokens")
        .header("Authorization", &basic_for("nobody", "x"))
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    // Unknown admin route: authenticate first, then 404.
    Req::get("/admin/api/nope")
        .send(svc.addr)
        .assert_error(401, "unauthorized");
    admin
        .send(Req::get("/admin/api/nope"))
        .assert_error(404, "not_found");
    admin
        .send(Req::new("PATCH", "/admin/api/tokens"))
        .assert_error(405, "method_not_allowed");
}

fn bad_create_requests_are_400_and_store_nothing(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let cases: Vec<(Req<'_>, Option<&str>)> = vec![
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": ""})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "   "})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "x".repeat(101)})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "a\u{7}b"})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "a\u{202E}b"})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": 42})),
            Some("name"),
        ),
        (
            Req::new("POST", "/admin/api/tokens")
                .json(&json!({"name": "x", "expiresAt": "2001-01-01"})),
            Some("expiresAt"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "x", "expiresAt": "soon"})),
            Some("expiresAt"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "x", "expiresAt": 5})),
            Some("expiresAt"),
        ),
        (
            Req::new("POST", "/admin/api/tokens").json(&json!({"name": "x", "scope": "all"})),
            Some("scope"),
        ),
        (
            Req::new("POST", "/admin/api/tokens")
                .header("Content-Type", "application/json")
                .body(b"{\"name\":\"a\",\"name\":\"b\"}"),
            None,
        ),
        (
            Req::new("POST", "/admin/api/tokens")
                .header("Content-Type", "application/json")
                .body(b"{not json"),
            None,
        ),
        (
            Req::new("POST", "/admin/api/tokens")
                .header("Content-Type", "application/json")
                .body(b"[\"name\"]"),
            None,
        ),
        (
            Req::new("POST", "/admin/api/tokens")
                .header("Content-Type", "text/plain")
                .body(b"{\"name\":\"a\"}"),
            None,
        ),
        (
            Req::new("POST", "/admin/api/tokens").body(b"{\"name\":\"a\"}"),
            None,
        ),
    ];
    for (req, field) in cases {
        let r = admin.send(req);
        let v = r.assert_error(400, "validation_error");
        if let Some(field) = field {
            assert_eq!(v["errors"][0]["field"], field, "{v}");
            assert!(v["errors"][0]["message"].is_string());
        }
    }
    let deep = format!("{{\"name\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let r = admin.send(
        Req::new("POST", "/admin/api/tokens")
            .header("Content-Type", "application/json")
            .body(deep.as_bytes()),
    );
    r.assert_error(400, "validation_error");
    // A 1 MB name is over the body limit before JSON is even parsed.
    let huge = admin.create(json!({"name": "n".repeat(1_000_000)}));
    huge.assert_error(413, "payload_too_large");
    assert_eq!(admin.list("").json()["items"], json!([]), "nothing stored");
    assert_eq!(
        Req::get("/healthz").send(svc.addr).status,
        200,
        "still serving"
    );
}

fn names_are_unique_ignoring_case_even_concurrently(store: &Store) {
    let svc = store.start(&[]);
    let admin = Arc::new(Admin::of(&svc));
    admin.token("Deploy");
    admin
        .create(json!({"name": "deploy"}))
        .assert_error(409, "conflict");
    admin
        .create(json!({"name": " DEPLOY "}))
        .assert_error(409, "conflict");
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            let admin = Arc::clone(&admin);
            std::thread::spawn(move || admin.create(json!({"name": "race"})).status)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        7,
        "{statuses:?}"
    );
}

fn listing_pages_newest_first(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    for i in 0..5 {
        admin.token(&format!("t{i}"));
    }
    let mut names = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = admin.list(&query).json();
        assert!(page["items"].as_array().unwrap().len() <= 2);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(names, ["t4", "t3", "t2", "t1", "t0"]);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?cursor=zz",
        "?limit=1&limit=2",
    ] {
        admin.list(bad).assert_error(400, "validation_error");
    }
    assert_eq!(
        admin.list("?limit=1000").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

fn console_session_with_csrf_and_logout(store: &Store) {
    let svc = store.start(&[]);
    let password = svc.initial_password();
    let login = Req::new("POST", "/admin/api/session")
        .json(&json!({"username": "admin", "password": password}))
        .send(svc.addr);
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie_header = login.header("Set-Cookie").unwrap().to_string();
    assert!(cookie_header.contains("HttpOnly"));
    assert!(cookie_header.contains("SameSite=Strict"));
    assert!(!cookie_header.contains("Secure"), "no TLS here");
    let cookie = cookie_header.split(';').next().unwrap().to_string();
    let csrf = login.json()["csrfToken"].as_str().unwrap().to_string();
    assert_eq!(login.json()["initialPassword"], true);

    let list = Req::get("/admin/api/tokens")
        .header("Cookie", &cookie)
        .send(svc.addr);
    assert_eq!(list.status, 200);
    let create = |extra: &[(&str, &str)]| {
        let mut r = Req::new("POST", "/admin/api/tokens")
            .json(&json!({"name": "from console"}))
            .header("Cookie", &cookie);
        for (k, v) in extra {
            r = r.header(k, v);
        }
        r.send(svc.addr)
    };
    create(&[]).assert_error(403, "forbidden");
    create(&[("X-CSRF-Token", "wrong")]).assert_error(403, "forbidden");
    create(&[("X-CSRF-Token", &csrf), ("Origin", "https://evil.example")])
        .assert_error(403, "forbidden");
    assert_eq!(
        create(&[("X-CSRF-Token", &csrf), ("Origin", "http://localhost")]).status,
        201
    );

    let logout = Req::new("DELETE", "/admin/api/session")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send(svc.addr);
    assert_eq!(logout.status, 204);
    Req::get("/admin/api/tokens")
        .header("Cookie", &cookie)
        .send(svc.addr)
        .assert_error(401, "unauthorized");

    let bad = Req::new("POST", "/admin/api/session")
        .json(&json!({"username": "admin", "password": "nope"}))
        .send(svc.addr);
    bad.assert_error(401, "unauthorized");
    Req::new("POST", "/admin/api/session")
        .json(&json!({"username": "admin"}))
        .send(svc.addr)
        .assert_error(400, "validation_error");
}

fn repeated_failed_logins_are_throttled_per_address(store: &Store) {
    let svc = store.start(&[]);
    let wrong = || {
        Req::new("POST", "/admin/api/session")
            .json(&json!({"username": "admin", "password": "wrong-password"}))
    };
    for _ in 0..5 {
        wrong().send(svc.addr).assert_error(401, "unauthorized");
    }
    let r = wrong().send(svc.addr);
    r.assert_error(429, "too_many_requests");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry));
    // Even the right password waits: the address is locked, not the account.
    let right = Req::new("POST", "/admin/api/session")
        .json(&json!({"username": "admin", "password": svc.initial_password()}));
    right.send(svc.addr).assert_error(429, "too_many_requests");
    // Basic auth from the same address is throttled too.
    Req::get("/admin/api/tokens")
        .header("Authorization", &basic(&svc.initial_password()))
        .send(svc.addr)
        .assert_error(429, "too_many_requests");
    // Another address is unaffected.
    let other = from_address("127.0.0.2", svc.addr, &right.to_bytes());
    assert_eq!(other.status, 200, "{}", other.text());
}

fn password_change_and_bootstrap_file(store: &Store) {
    let svc = store.start(&[]);
    let file = svc.data_dir.join("initial-admin-password");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&svc.data_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let initial = svc.initial_password();
    assert!(
        !svc.log_text().contains(&initial),
        "initial password must never be logged"
    );
    assert!(
        svc.log_text().contains("initial-admin-password"),
        "the log names the file"
    );
    let admin = Admin::of(&svc);
    let change = |current: &str, new: &str| {
        admin.send(
            Req::new("PUT", "/admin/api/password")
                .json(&json!({"currentPassword": current, "newPassword": new})),
        )
    };
    let v = change("not it", "a much better password").assert_error(400, "validation_error");
    assert_eq!(v["errors"][0]["field"], "currentPassword");
    let v = change(&initial, "short").assert_error(400, "validation_error");
    assert_eq!(v["errors"][0]["field"], "newPassword");
    assert_eq!(change(&initial, "a much better password").status, 204);
    assert!(!file.exists(), "initial password file removed once changed");
    admin
        .send(Req::get("/admin/api/tokens"))
        .assert_error(401, "unauthorized");
    let new_admin = Admin {
        addr: svc.addr,
        auth: basic("a much better password"),
    };
    assert_eq!(new_admin.send(Req::get("/admin/api/tokens")).status, 200);
    let audit = new_admin
        .send(Req::get("/admin/api/audit?event=admin.password_changed"))
        .json();
    assert_eq!(audit["items"][0]["actor"], "admin");
}

fn regression_issue_3_token_survives_kill_9_right_after_201(store: &Store) {
    let temp = TempDir::new("kill9");
    let dir = temp.path().join("data");
    let mut svc = store.start_in(&dir, &[]);
    let admin = Admin::of(&svc);
    let (_, secret) = admin.token("durable");
    svc.kill9();
    let svc = store.start_in(&dir, &[]);
    assert_eq!(api(svc.addr, &secret).status, 200);
}

fn regression_issue_3_sigterm_flushes_last_used(store: &Store) {
    let temp = TempDir::new("sigterm");
    let dir = temp.path().join("data");
    let mut svc = store.start_in(&dir, &["--flush-interval", "3600"]);
    let password = svc.initial_password();
    let admin = Admin::of(&svc);
    let (id, secret) = admin.token("flushed");
    assert_eq!(api(svc.addr, &secret).status, 200);
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    assert!(svc.log_shows("stopped cleanly"), "{}", svc.log_text());
    let svc = store.start_in(&dir, &[]);
    let admin = Admin {
        addr: svc.addr,
        auth: basic(&password),
    };
    let v = admin
        .send(Req::get(&format!("/admin/api/tokens/{id}")))
        .json();
    assert!(v["lastUsedAt"].is_string(), "{v}");
}

fn last_used_is_persisted_every_flush_interval(store: &Store) {
    let temp = TempDir::new("interval");
    let dir = temp.path().join("data");
    let mut svc = store.start_in(&dir, &["--flush-interval", "1"]);
    let password = svc.initial_password();
    let admin = Admin::of(&svc);
    let (id, secret) = admin.token("interval");
    assert_eq!(api(svc.addr, &secret).status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    svc.kill9();
    let svc = store.start_in(&dir, &[]);
    let admin = Admin {
        addr: svc.addr,
        auth: basic(&password),
    };
    let v = admin
        .send(Req::get(&format!("/admin/api/tokens/{id}")))
        .json();
    assert!(
        v["lastUsedAt"].is_string(),
        "lost more than one interval: {v}"
    );
}

fn regression_issue_3_delete_while_eight_threads_authenticate(store: &Store) {
    let svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (id, secret) = admin.token("contended");
    let deleted_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let late_successes = Arc::new(AtomicUsize::new(0));
    let early_successes = Arc::new(AtomicUsize::new(0));
    let addr = svc.addr;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (secret, deleted_at, stop) =
                (secret.clone(), Arc::clone(&deleted_at), Arc::clone(&stop));
            let (late, early) = (Arc::clone(&late_successes), Arc::clone(&early_successes));
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let r = conn
                        .send(&Req::get("/auth/verify").bearer(&secret))
                        .unwrap();
                    let after_delete = deleted_at.lock().unwrap().is_some_and(|d| started > d);
                    match (r.status, after_delete) {
                        (200, true) => late.fetch_add(1, Ordering::SeqCst),
                        (200, false) => early.fetch_add(1, Ordering::SeqCst),
                        _ => 0,
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = admin.send(Req::new("DELETE", &format!("/admin/api/tokens/{id}")));
    *deleted_at.lock().unwrap() = Some(Instant::now());
    assert_eq!(r.status, 204);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        early_successes.load(Ordering::SeqCst) > 0,
        "the token worked before deletion"
    );
    assert_eq!(
        late_successes.load(Ordering::SeqCst),
        0,
        "a deleted token authenticated"
    );
}

fn secrets_never_reach_the_log(store: &Store) {
    let mut svc = store.start(&[]);
    let admin = Admin::of(&svc);
    let (_, secret) = admin.token("quiet");
    api(svc.addr, &secret);
    Req::get("/api/token")
        .bearer(&format!("{secret}x"))
        .send(svc.addr);
    assert_eq!(svc.signal_and_wait("INT"), Some(0));
    let log = svc.log_text();
    assert!(!log.contains(&secret[3..]), "secret in log");
}

#[test]
fn offline_cli_manages_tokens_and_refuses_a_held_data_dir() {
    let temp = TempDir::new("cli");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "nightly",
            "--expires",
            "2999-01-01",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let secret = out.trim().to_string();
    assert_eq!(out, format!("{secret}\n"), "secret alone on stdout");
    assert_eq!(secret.len(), 49);
    let (code, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "nightly");
    assert!(!out.contains(&secret));
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (code, out, _) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 0);
    assert!(out.contains("nightly") && out.contains(&id));
    assert_eq!(
        run_cli(
            &["token", "create", "--name", "NIGHTLY", "--data-dir", d],
            None
        )
        .0,
        1,
        "conflict is a runtime failure"
    );
    assert_eq!(
        run_cli(
            &[
                "token",
                "create",
                "--name",
                "x",
                "--expires",
                "yesterday",
                "--data-dir",
                d
            ],
            None
        )
        .0,
        2
    );
    assert_eq!(
        run_cli(&["admin", "set-password", "--data-dir", d], Some("tiny\n")).0,
        2
    );
    assert_eq!(
        run_cli(
            &["admin", "set-password", "--data-dir", d],
            Some("offline password 1\n")
        )
        .0,
        0
    );

    // A running server without a control socket holds the dir: commands exit 2 and say so
    // (with its socket they go through it: tests/integration/control_socket.rs).
    let mut svc = Service::start_in(&dir, &["--control-socket", "none"]);
    assert_eq!(api(svc.addr, &secret).status, 200);
    let admin = Admin {
        addr: svc.addr,
        auth: basic("offline password 1"),
    };
    assert_eq!(admin.list("").status, 200);
    let (code, _, err) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("held by a running server") && err.contains("--socket"),
        "{err}"
    );
    assert_eq!(
        run_cli(&["token", "delete", &id, "--data-dir", d], None).0,
        2
    );
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));

    assert_eq!(
        run_cli(&["token", "delete", "not-an-id", "--data-dir", d], None).0,
        2
    );
    assert_eq!(
        run_cli(&["token", "delete", &id, "--data-dir", d], None).0,
        0
    );
    assert_eq!(
        run_cli(&["token", "delete", &id, "--data-dir", d], None).0,
        1
    );
    assert_eq!(
        run_cli(
            &[
                "token",
                "list",
                "--data-dir",
                temp.path().join("nothing").to_str().unwrap()
            ],
            None
        )
        .0,
        2
    );
    assert_eq!(run_cli(&["no-such-command"], None).0, 2);
    assert_eq!(
        run_cli(&["serve", "--listen", "nowhere", "--data-dir", d], None).0,
        2
    );
    let (code, out, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("pa-auth "));
}

#[test]
fn http_hygiene_holds_on_the_real_binary() {
    let svc = Service::start(&["--header-timeout", "1"]);
    let r = raw(
        svc.addr,
        b"POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n",
    );
    r.assert_error(413, "payload_too_large");
    let r = raw(
        svc.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    );
    r.assert_error(400, "validation_error");
    let admin = Admin::of(&svc);
    // A name full of header-breaking bytes is stored and sent percent-encoded.
    let (_, secret) = admin.token("a\"b;c=d<e>é");
    let v = Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    assert_eq!(
        v.header("X-PA-Token-Name"),
        Some("a%22b%3Bc%3Dd%3Ce%3E%C3%A9")
    );
    assert_eq!(Req::get("/healthz").send(svc.addr).status, 200);
}

#[test]
fn expect_continue_on_admin_routes() {
    use std::io::{Read, Write};
    let svc = Service::start(&[]);
    let auth = basic(&svc.initial_password());
    let body = br#"{"name":"via-expect"}"#;
    let head = format!(
        "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(svc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body).unwrap();
    let r = crate::support::read_response(&mut std::io::BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    // Refused before the body: wrong content type, or a path that does not exist. (Without
    // any credential an admin route answers 401 first: admin_hardening.rs.)
    for (path, ct, status) in [
        ("/admin/api/tokens", "text/plain", 400),
        ("/nowhere", "application/json", 404),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: {ct}\r\nExpect: 100-continue\r\nContent-Length: 50000\r\n\r\n"
        );
        let mut s = std::net::TcpStream::connect(svc.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let all = String::from_utf8_lossy(&crate::support::read_to_close(&mut s)).into_owned();
        assert!(all.starts_with(&format!("HTTP/1.1 {status}")), "{all}");
        assert!(!all.contains("100 Continue"));
    }
}

#[test]
fn running_out_of_file_descriptors_recovers() {
    // The real binary under a tiny descriptor limit: accept fails with EMFILE, is logged and
    // retried, and service resumes once clients go away.
    let temp = TempDir::new("emfile");
    let dir = temp.path().join("data");
    let script = format!(
        "ulimit -n 48; exec {} serve --listen 127.0.0.1:0 --workers 4 --data-dir {}",
        binary(),
        dir.display()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .parse()
        .unwrap();
    let hogs: Vec<std::net::TcpStream> = (0..80)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        log.lock().unwrap().contains("accept failed"),
        "{}",
        log.lock().unwrap()
    );
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < deadline {
        if crate::support::try_raw(addr, &Req::get("/healthz").to_bytes())
            .is_ok_and(|r| r.status == 200)
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "did not recover after descriptors freed up");
}

/// Issue 8: a clean stop saves the in-memory index (`index.snapshot`) and the next start
/// uses it once; a token deleted, one created and one kept across two restarts answer as
/// they should, and a kill -9 leaves no snapshot to trust.
#[test]
fn restarts_through_the_index_snapshot_keep_every_answer() {
    let temp = TempDir::new("snapshot");
    let dir = temp.path().join("data");
    let snapshot = dir.join("index.snapshot");
    let mut svc = Service::start_in(&dir, &[]);
    let password = svc.initial_password();
    let admin = Admin::of(&svc);
    let (_, kept) = admin.token("kept");
    let (gone_id, gone) = admin.token("gone");
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    assert!(snapshot.exists(), "a clean stop saves the index");

    let mut svc = Service::start_in(&dir, &[]);
    assert!(!snapshot.exists(), "the snapshot is used once");
    let admin = Admin {
        addr: svc.addr,
        auth: basic(&password),
    };
    assert_eq!(api(svc.addr, &kept).status, 200);
    let path = format!("/admin/api/tokens/{gone_id}");
    assert_eq!(admin.send(Req::new("DELETE", &path)).status, 204);
    let (_, new) = admin.token("new");
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));

    let mut svc = Service::start_in(&dir, &[]);
    assert_eq!(api(svc.addr, &kept).status, 200);
    assert_eq!(api(svc.addr, &new).status, 200);
    assert_eq!(api(svc.addr, &gone).status, 401);
    svc.kill9();
    assert!(!snapshot.exists(), "nothing to trust after kill -9");
    let svc = Service::start_in(&dir, &[]);
    assert_eq!(api(svc.addr, &new).status, 200);
    assert_eq!(api(svc.addr, &gone).status, 401);
}
