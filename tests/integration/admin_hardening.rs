//! Issue 14 (admin side): bounded Argon2 memory under a flood of Basic logins, the login
//! throttle under concurrent guesses, API tokens sent to admin routes (counted, audited,
//! throttled), `--public-url` behind a TLS-terminating proxy, and `Expect: 100-continue`
//! on admin routes without any credential.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{basic_auth, try_from_address, HttpResponse, Req, Service};

/// Runs `n` copies of `f` at once (released together) and collects their results.
fn all_at_once<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn regression_issue_14_concurrent_wrong_basic_passwords_get_five_guesses() {
    let svc = Service::start(&[]);
    let addr = svc.addr;
    let wrong = Req::get("/admin/api/tokens")
        .header("Authorization", &basic_auth("admin", "wrong password!"))
        .to_bytes();
    let statuses = all_at_once(60, move |_| {
        try_from_address("127.0.0.9", addr, &wrong)
            .expect("exchange")
            .status
    });
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        unauthorized <= 5,
        "{unauthorized} guesses were checked: {statuses:?}"
    );
    assert_eq!(unauthorized + throttled, 60, "{statuses:?}");
    // Still locked afterwards, even for the right password; other addresses are not.
    let right = Req::get("/admin/api/tokens")
        .header(
            "Authorization",
            &basic_auth("admin", &svc.initial_password()),
        )
        .to_bytes();
    let r = try_from_address("127.0.0.9", addr, &right).expect("exchange");
    r.assert_error(429, "too_many_requests");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(
        try_from_address("127.0.0.10", addr, &right)
            .expect("exchange")
            .status,
        200
    );
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("status field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn regression_issue_14_basic_auth_flood_keeps_argon2_memory_bounded() {
    const REQUESTS: usize = 2000;
    const CLIENTS: usize = 64;
    const ADDRESSES: usize = 250;
    const LIMIT_KIB: u64 = 100 * 1024;
    let svc = Service::start(&[]);
    let addr = svc.addr;
    let pid = svc.pid();
    let right = basic_auth("admin", &svc.initial_password());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).0);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let started = std::time::Instant::now();
    // Every fourth request has a wrong password (a full Argon2 run each time; never
    // remembered); the requests are spread over 250 source addresses so that no address
    // reaches the throttle's limit and most guesses really are checked.
    let statuses: Vec<u16> = all_at_once(CLIENTS, move |_| {
        let mut seen = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= REQUESTS {
                return seen;
            }
            let auth = if i.is_multiple_of(4) {
                basic_auth("admin", &format!("wrong password {i}"))
            } else {
                right.clone()
            };
            let source = format!("127.1.0.{}", 1 + i % ADDRESSES);
            let request = Req::get("/admin/api/session")
                .header("Authorization", &auth)
                .to_bytes();
            seen.push(
                try_from_address(&source, addr, &request)
                    .expect("exchange")
                    .status,
            );
        }
    })
    .into_iter()
    .flatten()
    .collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled_peak = sampler.join().expect("sampler");
    let (rss, hwm) = rss_kib(pid);
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    eprintln!(
        "{REQUESTS} Basic requests in {:?}: {} x 200, {} x 401, {} x 429; RSS now {rss} KiB, \
         sampled peak {sampled_peak} KiB, VmHWM {hwm} KiB",
        started.elapsed(),
        count(200),
        count(401),
        count(429)
    );
    assert_eq!(statuses.len(), REQUESTS);
    assert_eq!(
        count(200) + count(401) + count(429),
        REQUESTS,
        "{statuses:?}"
    );
    assert!(count(401) >= 400, "wrong passwords must really be checked");
    assert!(count(200) >= 1000);
    assert!(
        hwm < LIMIT_KIB,
        "peak RSS {hwm} KiB (limit {LIMIT_KIB} KiB)"
    );
    assert!(sampled_peak < LIMIT_KIB);
}

#[test]
fn regression_issue_14_remembered_basic_checks_end_with_the_password() {
    let svc = Service::start(&[]);
    let old = basic_auth("admin", &svc.initial_password());
    let get = |auth: &str| {
        Req::get("/admin/api/tokens")
            .header("Authorization", auth)
            .send(svc.addr)
    };
    assert_eq!(get(&old).status, 200);
    assert_eq!(get(&old).status, 200, "remembered");
    let change = Req::new("PUT", "/admin/api/password")
        .header("Authorization", &old)
        .json(&serde_json::json!({
            "currentPassword": svc.initial_password(),
            "newPassword": "a brand new password"
        }))
        .send(svc.addr);
    assert_eq!(change.status, 204, "{}", change.text());
    get(&old).assert_error(401, "unauthorized");
    assert_eq!(
        get(&basic_auth("admin", "a brand new password")).status,
        200
    );
    // Wrong passwords are never remembered: each one is checked and counted.
    let wrong = basic_auth("admin", "not the password");
    for _ in 0..5 {
        get(&wrong).assert_error(401, "unauthorized");
    }
    get(&wrong).assert_error(429, "too_many_requests");
}

#[test]
fn regression_issue_14_api_tokens_on_admin_routes_are_throttled_counted_and_audited() {
    let svc = Service::start(&[]);
    let admin = basic_auth("admin", &svc.initial_password());
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"name": "probe"}))
        .send(svc.addr);
    assert_eq!(created.status, 201);
    let (id, secret) = {
        let v = created.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    };
    let with_bearer = |token: &str| Req::get("/admin/api/tokens").bearer(token).to_bytes();
    let unknown = "pa_0000000000000000000000000000000000000000000000";
    // A valid token: 403 (contract), audited with its id and the caller's address.
    try_from_address("127.0.0.20", svc.addr, &with_bearer(&secret))
        .expect("exchange")
        .assert_error(403, "forbidden");
    let audit = Req::get("/admin/api/audit?event=auth.token_on_admin_route")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["tokenId"], id.as_str(), "{audit}");
    assert_eq!(items[0]["remoteAddr"], "127.0.0.20", "{audit}");
    let metrics = Req::get("/metrics").send(svc.addr).text();
    assert!(
        metrics.contains("\npa_auth_token_on_admin_route_total 1\n"),
        "{metrics}"
    );
    // Not a use of the token.
    let view = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(view["lastUsedAt"], serde_json::Value::Null, "{view}");
    // Every token sent to an admin route is a guess: four more, valid or not, and the
    // address must wait, before its token is even looked at.
    for token in [unknown, &secret, "garbage", unknown] {
        let r = try_from_address("127.0.0.20", svc.addr, &with_bearer(token)).expect("exchange");
        assert!(matches!(r.status, 401 | 403), "{}", r.text());
    }
    for token in [secret.as_str(), unknown] {
        let r = try_from_address("127.0.0.20", svc.addr, &with_bearer(token)).expect("exchange");
        r.assert_error(429, "too_many_requests");
        assert!(r.header("Retry-After").is_some());
    }
    assert!(
        Req::get("/metrics")
            .send(svc.addr)
            .text()
            .contains("\npa_auth_token_on_admin_route_total 2\n"),
        "the throttled attempts were not looked at"
    );
}

/// Logs in through the API; returns (Set-Cookie value, cookie pair, CSRF token).
fn login(svc: &Service) -> (String, String, String) {
    let r = Req::new("POST", "/admin/api/session")
        .json(&serde_json::json!({"username": "admin", "password": svc.initial_password()}))
        .send(svc.addr);
    assert_eq!(r.status, 200, "{}", r.text());
    let set_cookie = r.header("Set-Cookie").expect("Set-Cookie").to_owned();
    let pair = set_cookie.split(';').next().expect("cookie").to_owned();
    let csrf = r.json()["csrfToken"].as_str().expect("csrf").to_owned();
    (set_cookie, pair, csrf)
}

fn create_with_origin(
    svc: &Service,
    cookie: &str,
    csrf: &str,
    origin: &str,
    name: &str,
) -> HttpResponse {
    Req::new("POST", "/admin/api/tokens")
        .header("Cookie", cookie)
        .header("X-CSRF-Token", csrf)
        .header("Origin", origin)
        .json(&serde_json::json!({"name": name}))
        .send(svc.addr)
}

#[test]
fn regression_issue_14_public_url_https_makes_cookies_secure_and_checks_origin() {
    let svc = Service::start(&["--public-url", "https://Auth.Example.com/"]);
    let (set_cookie, cookie, csrf) = login(&svc);
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    // The browser's origin is the proxy's public one, not the Host pa-auth sees.
    for (i, origin) in ["https://auth.example.com", "https://AUTH.example.com:443"]
        .iter()
        .enumerate()
    {
        let r = create_with_origin(&svc, &cookie, &csrf, origin, &format!("ok-{i}"));
        assert_eq!(r.status, 201, "{origin}: {}", r.text());
    }
    for origin in [
        "http://localhost",
        "http://auth.example.com",
        "https://auth.example.com:8443",
        "https://evil.example",
        "null",
    ] {
        create_with_origin(&svc, &cookie, &csrf, origin, "refused").assert_error(403, "forbidden");
    }
    let logout = Req::new("DELETE", "/admin/api/session")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send(svc.addr);
    assert_eq!(logout.status, 204);
    let cleared = logout.header("Set-Cookie").expect("Set-Cookie");
    assert!(
        cleared.contains("Max-Age=0") && cleared.ends_with("; Secure"),
        "{cleared}"
    );
}

#[test]
fn regression_issue_14_without_public_url_cookies_follow_the_connection() {
    let svc = Service::start(&[]);
    let (set_cookie, cookie, csrf) = login(&svc);
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    // Origin is compared with the Host header (localhost in these requests).
    assert_eq!(
        create_with_origin(&svc, &cookie, &csrf, "http://localhost", "same-host").status,
        201
    );
    create_with_origin(&svc, &cookie, &csrf, "https://auth.example.com", "other")
        .assert_error(403, "forbidden");
    // A bad --public-url is a configuration error (exit 2) naming the flag.
    let (code, _, stderr) = crate::support::run_cli(
        &["check-config", "--public-url", "https://x.example/admin"],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--public-url"), "{stderr}");
}

/// Sends a head with `Expect: 100-continue` and no body; returns what the server wrote
/// before closing or going quiet for 3 s.
fn expect_continue(svc: &Service, head: &str) -> String {
    let mut s = TcpStream::connect(svc.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // The complete 401 (head and JSON body) is enough.
                if got.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn regression_issue_14_expect_continue_without_credential_gets_401_at_once() {
    let svc = Service::start(&[]);
    for (method, path) in [
        ("POST", "/admin/api/tokens"),
        ("PUT", "/admin/api/password"),
        ("POST", "/admin/api/tokens/lookup"),
        ("DELETE", "/admin/api/tokens/x"),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nCookie: theme=dark\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        );
        let got = expect_continue(&svc, &head);
        assert!(got.starts_with("HTTP/1.1 401 "), "{method} {path}: {got:?}");
        assert!(!got.contains("100 Continue"), "{got:?}");
        assert!(got.contains("WWW-Authenticate: Basic"), "{got:?}");
    }
    // The login carries its credential in the body: it is asked for.
    let got = expect_continue(
        &svc,
        "POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 100 Continue"), "{got:?}");
    // An unknown session cookie is no credential (issue 15: it held a body place): 401 now.
    let got = expect_continue(
        &svc,
        "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nCookie: pa_session=abc\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 401"), "{got:?}");
    // An Authorization header (checked once the body is in: Argon2 never runs on a loop) waits.
    let got = expect_continue(
        &svc,
        "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46d3Jvbmc=\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 100 Continue"), "{got:?}");
}

/// Issue 16 review: a wrong Content-Type answered before the credential was checked hid an
/// API token on an admin route (no 403, no audit, no throttle) and a wrong password (no
/// failed login counted). The credential is checked first unless it is already known good.
#[test]
fn regression_issue_16_a_wrong_content_type_does_not_hide_a_credential_failure() {
    let svc = Service::start(&[]);
    let admin = basic_auth("admin", &svc.initial_password());
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"name": "probe"}))
        .send(svc.addr);
    assert_eq!(created.status, 201);
    let secret = created.json()["token"].as_str().unwrap().to_owned();
    for path in ["/admin/api/tokens", "/admin/api/tokens/lookup"] {
        for expect in ["", "Expect: 100-continue\r\n"] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\
                 Content-Type: text/plain\r\n{expect}Content-Length: 2\r\n\r\n"
            );
            let got = if expect.is_empty() {
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(b"{}");
                try_from_address("127.0.0.31", svc.addr, &bytes)
                    .expect("exchange")
                    .status
                    .to_string()
            } else {
                expect_continue(&svc, &head)
            };
            assert!(
                got.starts_with("403") || got.starts_with("HTTP/1.1 100 Continue"),
                "{path} {expect:?}: {got:?}"
            );
        }
    }
    let audit = Req::get("/admin/api/audit?event=auth.token_on_admin_route")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert!(
        audit["items"].as_array().is_some_and(|a| a.len() >= 2),
        "{audit}"
    );
    // A known-good credential with the wrong type is answered at once, as before.
    let got = expect_continue(
        &svc,
        &format!(
            "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\n\
             Content-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n"
        ),
    );
    assert!(got.starts_with("HTTP/1.1 400 "), "{got:?}");
}

/// Issue 16 attack: an address locked out by guesses (anyone behind the same proxy can cause
/// it) also refused a live console session's writes with a body (create, password change,
/// lookup) while its GETs and DELETEs passed. A live session is a proven credential.
#[test]
fn regression_issue_16_a_live_session_is_not_locked_out_by_guesses_from_its_address() {
    let svc = Service::start(&[]);
    let from = "127.0.0.61";
    let body =
        serde_json::json!({"username": "admin", "password": svc.initial_password()}).to_string();
    let login = try_from_address(
        from,
        svc.addr,
        format!(
            "POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("login");
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let csrf = login.json()["csrfToken"].as_str().expect("csrf").to_owned();
    let wrong = basic_auth("admin", "wrong-password-0");
    let guess = Req::get("/admin/api/tokens")
        .header("Authorization", &wrong)
        .to_bytes();
    let mut locked = false;
    for _ in 0..8 {
        let r = try_from_address(from, svc.addr, &guess).expect("guess");
        locked |= r.status == 429;
    }
    assert!(locked, "the address is locked out");
    let create = r#"{"name":"during-lockout"}"#;
    let r = try_from_address(
        from,
        svc.addr,
        format!(
            "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
            create.len()
        )
        .as_bytes(),
    )
    .expect("create");
    assert_eq!(r.status, 201, "{}", r.text());
    // A guess is still refused from there.
    let r = try_from_address(from, svc.addr, &guess).expect("guess");
    r.assert_error(429, "too_many_requests");
}
