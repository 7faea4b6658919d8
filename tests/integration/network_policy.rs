//! Issue 19 parts 1, 2 and 4 on the real binary and through real nginx and Caddy (the shipped
//! configs): the client's address and the original method reach pa-auth from a trusted
//! proxy only; a token used from outside its allowed networks, and a read-only token for a
//! write, are 403s; a client's own X-Forwarded-For, X-Real-IP or X-Original-Method never
//! changes the verdict; hostile forwarded headers never make pa-auth answer anything but
//! 200/401/403.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::forward_auth::{start_caddy_nodes, start_nginx_nodes, EchoUpstream};
use crate::support::{admin_basic, from_address, run_cli, HttpResponse, Req, Service};

fn create(svc: &Service, auth: &str, body: Value) -> Value {
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", auth)
        .json(&body)
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn secret(token: &Value) -> String {
    token["token"].as_str().unwrap().to_string()
}

/// `method path` with `token` and extra headers, sent from the loopback address `source`.
fn send_from(
    source: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> HttpResponse {
    let mut req = Req::new(method, path).bearer(token);
    for (n, v) in extra {
        req = req.header(n, v);
    }
    from_address(source, to, &req.to_bytes())
}

/// Waits until the audit log has an event of `kind` (the flusher writes aggregated events
/// every --flush-interval), and returns the events of that kind.
fn audit_events(svc: &Service, auth: &str, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = Req::get(&format!("/admin/api/audit?event={kind}"))
            .header("Authorization", auth)
            .send(svc.addr)
            .json();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() || Instant::now() > deadline {
            return items;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a proxy in front of pa-auth must show: the client's address decides allowed
/// networks, the original method decides read-only, and the client's own forwarded headers
/// change nothing. `proxy` reaches pa-auth from loopback (trusted by default); clients come
/// from distinct loopback addresses.
fn check_through_proxy(proxy: SocketAddr, svc: &Service, what: &str) {
    let auth = admin_basic(svc);
    let office = create(
        svc,
        &auth,
        json!({"name": format!("{what} office"), "allowedCidrs": ["127.0.0.2/32", "2001:db8::/32"]}),
    );
    let office_secret = secret(&office);
    // The allowed address passes, with the identity; the API sees full access.
    let r = send_from(
        "127.0.0.2",
        proxy,
        "POST",
        "/api/orders",
        &office_secret,
        &[],
    );
    assert_eq!(r.status, 200, "{what} allowed address: {}", r.text());
    assert_eq!(r.json()["headers"]["x-pa-token-access"], "full", "{what}");
    // Another address: 403, the API never reached.
    let r = send_from(
        "127.0.0.3",
        proxy,
        "GET",
        "/api/orders",
        &office_secret,
        &[],
    );
    assert_eq!(r.status, 403, "{what} denied address: {}", r.text());
    // The contract's error shape, with the correlation id, through the proxy too.
    assert_eq!(r.json()["error"], "forbidden", "{what}: {}", r.text());
    assert!(r.header("x-correlation-id").is_some(), "{what}");
    // A client naming the allowed address itself, in every header a proxy might pass: still 403.
    for spoof in [
        [("X-Forwarded-For", "127.0.0.2"), ("X-Real-IP", "127.0.0.2")],
        [
            ("X-Forwarded-For", "127.0.0.2, 127.0.0.2"),
            ("X-Real-IP", "127.0.0.2"),
        ],
        [("X-Forwarded-For", "garbage"), ("X-Real-IP", "garbage")],
        [
            ("X-Original-Method", "GET"),
            ("X-Forwarded-For", "2001:db8::1"),
        ],
    ] {
        let r = send_from(
            "127.0.0.3",
            proxy,
            "GET",
            "/api/orders",
            &office_secret,
            &spoof,
        );
        assert_eq!(r.status, 403, "{what} spoof {spoof:?}: {}", r.text());
    }

    let reader = create(
        svc,
        &auth,
        json!({"name": format!("{what} reader"), "access": "read"}),
    );
    let reader_secret = secret(&reader);
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = send_from(
            "127.0.0.4",
            proxy,
            method,
            "/api/report",
            &reader_secret,
            &[],
        );
        assert_eq!(r.status, 200, "{what} read-only {method}: {}", r.text());
    }
    let r = send_from(
        "127.0.0.4",
        proxy,
        "GET",
        "/api/report",
        &reader_secret,
        &[],
    );
    assert_eq!(r.json()["headers"]["x-pa-token-access"], "read", "{what}");
    // A method override never reaches the API: a framework honouring it would run this GET
    // as a write.
    let r = send_from(
        "127.0.0.4",
        proxy,
        "GET",
        "/api/report",
        &reader_secret,
        &[
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "DELETE"),
        ],
    );
    assert_eq!(r.status, 200, "{what}");
    let seen = r.json()["headers"].clone();
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(
            seen.get(name).is_none_or(|v| v.as_str() == Some("")),
            "{what} passed {name}: {seen}"
        );
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = send_from(
            "127.0.0.4",
            proxy,
            method,
            "/api/report",
            &reader_secret,
            &[],
        );
        assert_eq!(r.status, 403, "{what} read-only {method}: {}", r.text());
        // The client claiming the write is a read, in each proxy's spelling: still 403.
        let r = send_from(
            "127.0.0.4",
            proxy,
            method,
            "/api/report",
            &reader_secret,
            &[
                ("X-Original-Method", "GET"),
                ("X-Forwarded-Method", "GET"),
                ("X-PA-Auth-Proxy", "envoy"),
            ],
        );
        assert_eq!(r.status, 403, "{what} spoofed {method}: {}", r.text());
    }
    // A bad token is still the 401, never a 403 that would tell it apart.
    let r = send_from("127.0.0.3", proxy, "GET", "/api/orders", "pa_nope", &[]);
    assert_eq!(r.status, 401, "{what}");
}

#[test]
fn issue19_nginx_passes_the_client_address_and_method() {
    // Only nginx's own address is a proxy: the clients' loopback addresses are not.
    let svc = Service::start(&["--flush-interval", "1", "--trusted-proxies", "127.0.0.1/32"]);
    let upstream = EchoUpstream::start();
    let Some(nginx) = start_nginx_nodes(&[svc.addr], upstream.addr(), true) else {
        return;
    };
    check_through_proxy(nginx.addr, &svc, "nginx");
    // The denial is audited with the client's address (not nginx's), aggregated.
    let auth = admin_basic(&svc);
    let events = audit_events(&svc, &auth, "auth.denied_network");
    assert!(
        events
            .iter()
            .any(|e| e["remoteAddr"] == "127.0.0.3" && e["tokenId"].is_string()),
        "{events:?}"
    );
    let events = audit_events(&svc, &auth, "auth.denied_read_only");
    assert!(
        events.iter().any(|e| e["remoteAddr"] == "127.0.0.4"),
        "{events:?}"
    );
}

#[test]
fn issue19_caddy_passes_the_client_address_and_method() {
    let svc = Service::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let upstream = EchoUpstream::start();
    let Some(caddy) = start_caddy_nodes(&[svc.addr], upstream.addr()) else {
        return;
    };
    check_through_proxy(caddy.addr, &svc, "caddy");
}

/// Straight at pa-auth: forwarded headers count only from --trusted-proxies; hostile ones
/// leave the client unknown (no allowed-networks list admits it) and are never answered with
/// anything but 200/401/403.
#[test]
fn issue19_forwarded_headers_only_from_trusted_peers_and_hostile_ones_fail_closed() {
    let svc = Service::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let auth = admin_basic(&svc);
    let lan = secret(&create(
        &svc,
        &auth,
        json!({"name": "lan", "allowedCidrs": ["10.0.0.0/8"]}),
    ));
    let verify = |source: &str, extra: &[(&str, &str)]| {
        send_from(source, svc.addr, "GET", "/auth/verify", &lan, extra).status
    };
    // A trusted peer speaks for the client; another peer does not.
    assert_eq!(verify("127.0.0.1", &[("X-Forwarded-For", "10.1.2.3")]), 200);
    assert_eq!(verify("127.0.0.1", &[("X-Real-IP", "10.1.2.3")]), 200);
    assert_eq!(verify("127.0.0.5", &[("X-Forwarded-For", "10.1.2.3")]), 403);
    assert_eq!(verify("127.0.0.5", &[("X-Real-IP", "10.1.2.3")]), 403);
    // The rightmost untrusted hop: a client's prefix on the left changes nothing.
    assert_eq!(
        verify("127.0.0.1", &[("X-Forwarded-For", "10.0.0.1, 192.0.2.9")]),
        403
    );
    assert_eq!(
        verify(
            "127.0.0.1",
            &[("X-Forwarded-For", "192.0.2.9, 10.0.0.1, 127.0.0.1")]
        ),
        200
    );
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(
        verify("127.0.0.1", &[("X-Forwarded-For", "::ffff:10.0.0.1")]),
        200
    );
    // Hostile values leave the client unknown, which no list admits: a 403, never a
    // 400/431/500.
    let many = vec!["10.0.0.1"; 500].join(",");
    let long = format!("{}, 10.0.0.1", "x".repeat(3000));
    let long_walk = format!("10.0.0.1,{}", vec!["127.0.0.1"; 20].join(","));
    let hostile: Vec<Vec<(&str, &str)>> = vec![
        vec![("X-Forwarded-For", "fe80::1%eth0")],
        vec![("X-Forwarded-For", "10.0.0.1:8080")],
        vec![("X-Forwarded-For", "[10.0.0.1]")],
        vec![("X-Forwarded-For", "10.0.0.1,")],
        vec![("X-Forwarded-For", "not an address")],
        vec![("X-Forwarded-For", "127.0.0.1,garbage")],
        vec![("X-Forwarded-For", &long_walk)],
        vec![("X-Real-IP", "10.0.0.1"), ("X-Real-IP", "10.0.0.2")],
        vec![("X-Forwarded-For", "nonsense"), ("X-Real-IP", "10.0.0.1")],
    ];
    for h in &hostile {
        assert_eq!(verify("127.0.0.1", h), 403, "{h:?}");
    }
    // Many X-Forwarded-For fields and entries: bounded, answered.
    let fields: Vec<(&str, &str)> = (0..90).map(|_| ("X-Forwarded-For", "127.0.0.1")).collect();
    assert_eq!(verify("127.0.0.1", &fields), 403);
    // Whatever the client wrote left of the hop a proxy appended is never read, however
    // long: the appended hop decides (outside attack: padding past the limit once made the
    // whole header ignored and the proxy's own address judged instead).
    assert_eq!(verify("127.0.0.1", &[("X-Forwarded-For", &many)]), 200);
    assert_eq!(verify("127.0.0.1", &[("X-Forwarded-For", &long)]), 200);
    // A token allowed only the proxy's own network: a padded header ending in another
    // client is that client (403); an unreadable one is nobody (403), never the proxy.
    let proxy_only = secret(&create(
        &svc,
        &auth,
        json!({"name": "proxy-net", "allowedCidrs": ["127.0.0.1/32"]}),
    ));
    let as_proxy = |extra: &[(&str, &str)]| {
        send_from(
            "127.0.0.1",
            svc.addr,
            "GET",
            "/auth/verify",
            &proxy_only,
            extra,
        )
        .status
    };
    assert_eq!(as_proxy(&[]), 200, "the proxy itself, no header");
    let padded = format!("{}, 127.0.0.6", "x".repeat(2100));
    assert_eq!(as_proxy(&[("X-Forwarded-For", &padded)]), 403);
    assert_eq!(as_proxy(&[("X-Forwarded-For", &long_walk)]), 403);
    assert_eq!(as_proxy(&[("X-Forwarded-For", "garbage")]), 403);
    assert_eq!(as_proxy(&[("X-Real-IP", "garbage")]), 403);
    // The server keeps serving.
    assert_eq!(verify("127.0.0.1", &[("X-Forwarded-For", "10.9.9.9")]), 200);
}

/// Read-only on pa-auth's own routes and straight at /auth/verify: the request's own method
/// counts on /api/token; forward-auth without a trusted original method refuses.
#[test]
fn issue19_read_only_tokens_straight_at_pa_auth() {
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let t = create(&svc, &auth, json!({"name": "reader", "access": "read"}));
    let s = secret(&t);
    assert_eq!(t["access"], "read");
    // Unknown original method (no proxy header): 403 forbidden, the contract's JSON.
    let r = Req::get("/auth/verify").bearer(&s).send(svc.addr);
    let body = r.assert_error(403, "forbidden");
    assert!(body["message"].as_str().unwrap().contains("read-only"));
    // A trusted proxy's method decides.
    let ok = Req::get("/auth/verify")
        .bearer(&s)
        .header("X-Original-Method", "HEAD")
        .send(svc.addr);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("X-PA-Token-Access"), Some("read"));
    // Envoy's convention, marked by the shipped config.
    let envoy = |method: &str| {
        Req::new(method, "/auth/verify/api/x?y=1")
            .bearer(&s)
            .header("X-PA-Auth-Proxy", "envoy")
            .send(svc.addr)
            .status
    };
    assert_eq!(envoy("GET"), 200);
    assert_eq!(envoy("DELETE"), 403);
    // pa-auth's own read route: its own method.
    assert_eq!(Req::get("/api/token").bearer(&s).send(svc.addr).status, 200);
    // A full token is told full.
    let full = secret(&create(&svc, &auth, json!({"name": "writer"})));
    let r = Req::get("/auth/verify").bearer(&full).send(svc.addr);
    assert_eq!(r.header("X-PA-Token-Access"), Some("full"));
}

/// The admin API: fields validated with their names, canonical in the view, editable by
/// PATCH and rotate, audited as changed fields.
#[test]
fn issue19_admin_api_validates_shows_and_edits_restrictions() {
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let post = |body: Value| {
        Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&body)
            .send(svc.addr)
    };
    let field = |r: HttpResponse| -> String {
        let v = r.assert_error(400, "validation_error");
        v["errors"][0]["field"].as_str().unwrap().to_string()
    };
    assert_eq!(
        field(post(
            json!({"name": "a", "allowedCidrs": ["10.0.0.0/8", "10.0.0.1/8"]})
        )),
        "allowedCidrs[1]"
    );
    assert_eq!(
        field(post(json!({"name": "a", "allowedCidrs": ["fe80::1%eth0"]}))),
        "allowedCidrs[0]"
    );
    assert_eq!(
        field(post(json!({"name": "a", "allowedCidrs": "10.0.0.0/8"}))),
        "allowedCidrs"
    );
    assert_eq!(
        field(post(json!({"name": "a", "allowedCidrs": [7]}))),
        "allowedCidrs[0]"
    );
    let many: Vec<String> = (0..101).map(|i| format!("10.{i}.0.0/16")).collect();
    assert_eq!(
        field(post(json!({"name": "a", "allowedCidrs": many}))),
        "allowedCidrs"
    );
    assert_eq!(
        field(post(json!({"name": "a", "access": "write"}))),
        "access"
    );

    let made = create(
        &svc,
        &auth,
        json!({"name": "edge", "allowedCidrs": ["2001:DB8::/32", "192.0.2.1"], "access": "read"}),
    );
    assert_eq!(
        made["allowedCidrs"],
        json!(["2001:db8::/32", "192.0.2.1/32"])
    );
    let id = made["id"].as_str().unwrap().to_string();
    let patch = |body: Value| {
        Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &auth)
            .json(&body)
            .send(svc.addr)
    };
    let r = patch(json!({"allowedCidrs": null, "access": "full"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["allowedCidrs"], json!([]));
    assert_eq!(r.json()["access"], "full");
    let r = patch(json!({"allowedCidrs": ["127.0.0.0/8"]}));
    assert_eq!(r.json()["allowedCidrs"], json!(["127.0.0.0/8"]));
    assert_eq!(
        field(patch(json!({"allowedCidrs": ["300.0.0.0/8"]}))),
        "allowedCidrs[0]"
    );
    // Rotate with new restrictions: the new secret carries them from its first use.
    let r = Req::new("POST", &format!("/admin/api/tokens/{id}/rotate"))
        .header("Authorization", &auth)
        .json(&json!({"overlap": "0", "allowedCidrs": ["192.0.2.0/24"], "access": "read"}))
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    let rotated = r.json();
    assert_eq!(rotated["allowedCidrs"], json!(["192.0.2.0/24"]));
    let r = Req::get("/auth/verify")
        .bearer(rotated["token"].as_str().unwrap())
        .header("X-Original-Method", "GET")
        .send(svc.addr);
    assert_eq!(r.status, 403, "loopback is outside 192.0.2.0/24");
    // Audited as the changed fields, never their values.
    let audit = Req::get(&format!(
        "/admin/api/audit?event=token.updated&tokenId={id}"
    ))
    .header("Authorization", &auth)
    .send(svc.addr)
    .json();
    let changed: Vec<Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["changed"].clone())
        .collect();
    assert!(
        changed.contains(&json!(["allowedCidrs", "access"])),
        "{changed:?}"
    );
}

/// The offline CLI sets and edits restrictions; they survive a clean restart (the index
/// snapshot), a `kill -9` (the scan), and a backup (format 3) restored into another data dir.
#[test]
fn issue19_cli_restart_and_backup_keep_restrictions() {
    let temp = crate::support::TempDir::new("restrictions-cli");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap();
    let (code, secret, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "edge",
            "--allowed-cidr",
            "10.0.0.0/8",
            "--allowed-cidr",
            "2001:db8::/32",
            "--access",
            "read",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let secret = secret.trim().to_string();
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        list[0]["allowedCidrs"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    assert_eq!(list[0]["access"], "read");
    // Refusals are usage errors naming the flag.
    for bad in [
        vec!["--allowed-cidr", "10.0.0.1/8"],
        vec!["--access", "write"],
        vec!["--allowed-cidr", "10.0.0.0/8", "--allow-anywhere"],
    ] {
        let mut args = vec!["token", "update", id.as_str()];
        args.extend_from_slice(&bad);
        args.extend_from_slice(&["--data-dir", d]);
        let (code, _, err) = run_cli(&args, None);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("--a"), "{err}");
    }
    let (code, _, err) = run_cli(
        &[
            "token",
            "update",
            &id,
            "--allowed-cidr",
            "127.0.0.0/8",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("allowedCidrs"), "{err}");

    let verify = |svc: &Service, method: Option<&str>| {
        let mut req = Req::get("/auth/verify").bearer(&secret);
        if let Some(m) = method {
            req = req.header("X-Original-Method", m);
        }
        req.send(svc.addr).status
    };
    let mut svc = Service::start_in(&dir, &[]);
    assert_eq!(verify(&svc, Some("GET")), 200);
    assert_eq!(verify(&svc, Some("POST")), 403);
    // A clean stop writes the index snapshot; the next start reads it.
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let mut svc = Service::start_in(&dir, &[]);
    assert_eq!(verify(&svc, Some("GET")), 200);
    assert_eq!(verify(&svc, Some("DELETE")), 403);
    svc.kill9();
    drop(svc);

    // Rotate with new restrictions, offline: 10/8 only, full.
    let (code, _, err) = run_cli(
        &[
            "token",
            "rotate",
            &id,
            "--overlap",
            "0",
            "--allowed-cidr",
            "10.0.0.0/8",
            "--access",
            "full",
            "--data-dir",
            d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["allowedCidrs"], json!(["10.0.0.0/8"]));
    assert_eq!(list[0]["access"], "full");

    let file = temp.path().join("restricted.pab");
    let f = file.to_str().unwrap();
    let (code, _, err) = run_cli(&["backup", "--to", f, "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("PA-AUTH-BACKUP 3 "), "{}", &text[..40]);
    assert!(text.contains(r#""allowedCidrs":["10.0.0.0/8"]"#));
    let restored = temp.path().join("restored");
    let r = restored.to_str().unwrap();
    let (code, _, err) = run_cli(&["restore", "--from", f, "--data-dir", r], None);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_cli(&["token", "list", "--json", "--data-dir", r], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["allowedCidrs"], json!(["10.0.0.0/8"]));
}

/// What Traefik's ForwardAuth and Envoy's ext_authz send (replayed: neither is in Debian),
/// judged for a read-only token and for allowed networks: the client (203.0.113.7 in both
/// replays) and the original method come from their headers.
#[test]
fn issue19_traefik_and_envoy_checks_carry_address_and_method() {
    use crate::forward_auth::{envoy_check_request, traefik_check_request};
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let reader = secret(&create(
        &svc,
        &auth,
        json!({"name": "reader", "access": "read", "allowedCidrs": ["203.0.113.0/24"]}),
    ));
    let elsewhere = secret(&create(
        &svc,
        &auth,
        json!({"name": "elsewhere", "allowedCidrs": ["10.0.0.0/8"]}),
    ));
    for (proxy, build) in [
        (
            "traefik",
            traefik_check_request as fn(&str, &str, Option<&str>) -> Vec<u8>,
        ),
        ("envoy", envoy_check_request),
    ] {
        let status = |method: &str, token: &str| {
            crate::support::raw(
                svc.addr,
                &build(method, "/api/x?y=1", Some(&format!("Bearer {token}"))),
            )
            .status
        };
        assert_eq!(status("GET", &reader), 200, "{proxy}");
        assert_eq!(status("HEAD", &reader), 200, "{proxy}");
        assert_eq!(status("POST", &reader), 403, "{proxy}");
        assert_eq!(status("DELETE", &reader), 403, "{proxy}");
        assert_eq!(
            status("GET", &elsewhere),
            403,
            "{proxy}: 203.0.113.7 is outside"
        );
    }
}
