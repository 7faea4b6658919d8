//! Issue 14: regression tests for the outside security review's findings that live in the
//! HTTP layer and the request log (each failed on the code before the fix). The proxy-level
//! ones are in `forward_auth.rs`, the admin ones beside the admin tests.

use crate::support::{raw, Req, Service};

/// Item 6: a secret in a forward-auth path, an API path or any query never reaches the log.
#[test]
fn issue_14_secrets_in_paths_and_queries_are_never_logged() {
    let svc = Service::start(&[]);
    let secret = pa_auth::domain::token::PlaintextToken::generate();
    let s = secret.expose_secret();
    let targets = [
        format!("/auth/verify/{s}"),
        format!("/auth/verify?token={s}"),
        format!("/api/orders/{s}"),
        format!("/api/token?x={s}"),
        format!("/nothing/{s}"),
        format!("/admin/{s}"),
        // A truncated secret is still hidden.
        format!("/nothing/{}", &s[..30]),
    ];
    for target in &targets {
        let r = Req::get(target).send(svc.addr);
        assert!(r.status >= 400, "{target}: {}", r.status);
    }
    // The last request's line proves the log caught up.
    assert!(
        svc.log_shows("path=/admin/pa_[redacted]"),
        "{}",
        svc.log_text()
    );
    assert!(svc.log_shows("path=/nothing/pa_[redacted]"));
    let log = svc.log_text();
    assert!(!log.contains(&s[3..20]), "a secret reached the log:\n{log}");
    assert!(log.contains("path=/auth/verify "), "{log}");
    assert!(log.contains("path=/api "), "{log}");
}

/// Item 10: a client-chosen correlation id is adopted only from a trusted proxy.
#[test]
fn issue_14_correlation_id_only_from_trusted_proxies() {
    let chosen = "0123456789abcdef0123456789abcdef";
    let ask = |svc: &Service| {
        let r = Req::get("/healthz")
            .header("X-Correlation-Id", chosen)
            .send(svc.addr);
        assert_eq!(r.status, 200);
        r.header("X-Correlation-Id").unwrap_or("").to_string()
    };
    // Default: loopback is trusted (the proxy on the same host).
    let svc = Service::start(&[]);
    assert_eq!(ask(&svc), chosen);
    drop(svc);
    for list in ["none", "10.0.0.0/8,2001:db8::/32"] {
        let svc = Service::start(&["--trusted-proxies", list]);
        let id = ask(&svc);
        assert_ne!(id, chosen, "adopted from an untrusted peer with {list}");
        assert_eq!(id.len(), 32);
    }
}

/// Item 12 through the real binary, on both lanes' entry: NUL is refused, never replaced.
#[test]
fn issue_14_nul_is_refused_everywhere() {
    let svc = Service::start(&[]);
    let r = raw(
        svc.addr,
        b"POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\0\r\n\r\n0\r\n\r\n",
    );
    r.assert_error(400, "validation_error");
    let r = raw(
        svc.addr,
        b"GET /auth/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\0pa_x\r\n\r\n",
    );
    r.assert_error(401, "unauthorized");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="pa-auth", error="invalid_request""#)
    );
    assert_eq!(r.header("Connection"), Some("close"));
}

/// The outside review of the fixes: the server's own refusals lacked the headers every
/// response promises, and a secret spelled `PA_…`, `pa%5F…` or without its prefix reached the
/// log.
#[test]
fn issue_14_refusals_carry_the_common_headers_and_variant_secrets_are_redacted() {
    let svc = Service::start(&[]);
    for r in [
        raw(
            svc.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
        ),
        Req::get("/healthz").send(svc.addr),
        Req::get("/auth/verify").send(svc.addr),
    ] {
        assert_eq!(r.header("Cache-Control"), Some("no-store"), "{}", r.status);
        assert_eq!(r.header_count("Cache-Control"), 1);
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(r.header_count("X-Content-Type-Options"), 1);
    }
    let secret = pa_auth::domain::token::PlaintextToken::generate();
    let body = &secret.expose_secret()[3..];
    for target in [
        format!("/x/PA_{body}"),
        format!("/x/pa%5F{body}"),
        format!("/x/{body}"),
    ] {
        assert_eq!(Req::get(&target).send(svc.addr).status, 404);
    }
    assert!(svc.log_shows("path=/x/pa_[redacted]"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = svc.log_text();
    assert!(
        !log.contains(&body[..20]),
        "a secret reached the log:\n{log}"
    );
}
