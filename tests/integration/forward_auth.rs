//! Issue 5: pa-auth protecting a real API behind real nginx (`auth_request`) and Caddy
//! (`forward_auth`), using the shipped configs under `deploy/` with only their addresses
//! replaced. The upstream is an echo server that reports the headers it received.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pa_auth::http::{Request, Response, Server, ServerConfig};
use serde_json::{json, Value};

use crate::support::{admin_basic, try_raw, Conn, HttpResponse, Req, Service, TempDir};
use crate::webdriver::require_program;

/// An upstream API that echoes the request headers and counts hits.
struct EchoUpstream {
    server: Option<Server>,
    hits: Arc<AtomicUsize>,
}

impl EchoUpstream {
    fn start() -> EchoUpstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let handler = move |req: &Request<'_>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).to_lowercase(),
                        Value::String(String::from_utf8_lossy(v).into()),
                    )
                })
                .collect();
            Response::json(200, &json!({"path": req.path(), "headers": headers}))
        };
        let server = Server::start(
            "127.0.0.1:0",
            ServerConfig {
                workers: 8,
                ..ServerConfig::default()
            },
            handler,
        )
        .expect("echo upstream");
        EchoUpstream {
            server: Some(server),
            hits,
        }
    }
    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn deploy_file(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(rel),
    )
    .unwrap()
}

/// A proxy process, killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (a SIGKILLed master leaves
        // them running). SIGKILL only if it does not exit in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Real nginx with `deploy/nginx/pa-auth.conf`; `keepalive` false removes the upstream
/// keep-alive to pa-auth (to test both).
fn start_nginx(pa_auth: SocketAddr, api: SocketAddr, keepalive: bool) -> Option<Proxy> {
    if !require_program("/usr/sbin/nginx", "nginx-light") {
        return None;
    }
    let dir = TempDir::new("nginx");
    let port = free_port();
    let mut site = deploy_file("nginx/pa-auth.conf")
        .replace("server 127.0.0.1:8080;", &format!("server {pa_auth};"))
        .replace("server 127.0.0.1:9000;", &format!("server {api};"))
        .replace("listen 8443;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "/var/log/nginx/api-access.log",
            &dir.path().join("access.log").display().to_string(),
        );
    if !keepalive {
        site = site.replace(
            "keepalive 32;                       # reuse",
            "# no keepalive; reuse",
        );
    }
    std::fs::write(dir.path().join("pa-auth.conf"), site).unwrap();
    let p = dir.path().display();
    let main = format!(
        "daemon off;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
           include {p}/pa-auth.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let mut child = Command::new("/usr/sbin/nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "nginx");
    Some(Proxy {
        child,
        addr,
        _dir: dir,
    })
}

/// Real Caddy with `deploy/caddy/Caddyfile`.
fn start_caddy(pa_auth: SocketAddr, api: SocketAddr) -> Option<Proxy> {
    if !require_program("/usr/bin/caddy", "caddy") {
        return None;
    }
    let dir = TempDir::new("caddy");
    let port = free_port();
    let site = deploy_file("caddy/Caddyfile")
        .replace("api.example.internal {", &format!("http://:{port} {{"))
        .replace(
            "forward_auth 127.0.0.1:8080",
            &format!("forward_auth {pa_auth}"),
        )
        .replace(
            "reverse_proxy 127.0.0.1:9000",
            &format!("reverse_proxy {api}"),
        )
        .replace("output stdout", "output discard");
    let global = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}\n}}\n\n",
        dir.path().join("storage").display()
    );
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, global + &site).unwrap();
    let mut child = Command::new("/usr/bin/caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("caddy");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "caddy");
    Some(Proxy {
        child,
        addr,
        _dir: dir,
    })
}

/// Admin helpers against the pa-auth service.
fn admin_create(svc: &Service, auth: &str, body: Value) -> Value {
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", auth)
        .json(&body)
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn assert_pa_auth_401(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let v = r.json();
    assert_eq!(v["error"], "unauthorized", "{what}");
    assert_eq!(
        v["message"], "Invalid or expired authentication token",
        "{what}"
    );
    let cid = v["correlationId"].as_str().unwrap();
    assert_eq!(cid.len(), 32, "{what}");
    assert_eq!(r.header("X-Correlation-Id"), Some(cid), "{what}");
    assert!(
        r.header("WWW-Authenticate")
            .unwrap_or("")
            .starts_with("Bearer realm=\"pa-auth\""),
        "{what}"
    );
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{what}"
    );
}

/// The scenario every shipped proxy config must pass.
fn exercise_proxy(proxy: SocketAddr, svc: &Service, upstream: &EchoUpstream) {
    let auth = admin_basic(svc);
    let token = admin_create(svc, &auth, json!({"name": "billing export"}));
    let (id, secret) = (
        token["id"].as_str().unwrap().to_string(),
        token["token"].as_str().unwrap().to_string(),
    );
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expiring = admin_create(
        svc,
        &auth,
        json!({"name": "short", "expiresAt": soon.format(&time::format_description::well_known::Rfc3339).unwrap()}),
    );
    let expiring_secret = expiring["token"].as_str().unwrap().to_string();

    // Valid token: the upstream is reached with pa-auth's identity, never the client's.
    let before = upstream.hits();
    let r = Req::get("/api/orders?x=1")
        .bearer(&secret)
        .header("X-PA-Token-Id", "spoofed-id")
        .header("X-PA-Token-Name", "spoofed")
        .header("PA-Token-Expiration", "2999-01-01T00:00:00Z")
        .send(proxy);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), before + 1, "{:?} {}", r.headers, r.text());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-pa-token-id"], id.as_str());
    assert_eq!(seen["x-pa-token-name"], "billing%20export");
    assert!(
        seen.get("pa-token-expiration").is_none(),
        "spoofed expiration reached upstream: {seen}"
    );
    assert_eq!(r.json()["path"], "/api/orders");
    // An expiring token's real expiration does reach the upstream.
    let r = Req::get("/api/orders")
        .bearer(&expiring_secret)
        .header("PA-Token-Expiration", "spoofed")
        .send(proxy);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["headers"]["pa-token-expiration"],
        expiring["expiresAt"]
    );

    // Every bad credential: pa-auth's 401, upstream not reached.
    std::thread::sleep(Duration::from_millis(3200));
    let before = upstream.hits();
    let cases: Vec<(&str, Req<'_>)> = vec![
        (
            "missing",
            Req::get("/api/orders").header("X-PA-Token-Id", id.as_str()),
        ),
        (
            "malformed",
            Req::get("/api/orders").bearer("pa_not_a_token"),
        ),
        (
            "unknown",
            Req::get("/api/orders").bearer(&{
                let mut s = secret.clone();
                s.replace_range(3..4, if &s[3..4] == "A" { "B" } else { "A" });
                s
            }),
        ),
        ("expired", Req::get("/api/orders").bearer(&expiring_secret)),
    ];
    for (what, req) in cases {
        assert_pa_auth_401(&req.send(proxy), what);
    }
    assert_eq!(
        upstream.hits(),
        before,
        "upstream reached by a refused request"
    );

    // Deleted mid-test: refused on the very next request.
    let mut conn = Conn::open(proxy);
    assert_eq!(
        conn.send(&Req::get("/api/a").bearer(&secret))
            .unwrap()
            .status,
        200
    );
    let del = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &auth)
        .send(svc.addr);
    assert_eq!(del.status, 204);
    let r = conn.send(&Req::get("/api/a").bearer(&secret)).unwrap();
    assert_pa_auth_401(&r, "deleted");
}

fn thousand_sequential(proxy: SocketAddr, secret: &str) {
    let mut conn = Conn::open(proxy);
    for i in 0..1000 {
        let r = conn
            .send(&Req::get(&format!("/api/n/{i}")).bearer(secret))
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

#[test]
fn nginx_auth_request_protects_the_api() {
    let svc = Service::start(&[]);
    let upstream = EchoUpstream::start();
    let Some(nginx) = start_nginx(svc.addr, upstream.addr(), true) else {
        return;
    };
    exercise_proxy(nginx.addr, &svc, &upstream);
    // The access log names the token (one token per integration → attributable calls).
    let auth = admin_basic(&svc);
    let t = admin_create(&svc, &auth, json!({"name": "logged"}));
    assert_eq!(
        Req::get("/api/x")
            .bearer(t["token"].as_str().unwrap())
            .send(nginx.addr)
            .status,
        200
    );
    // nginx writes the line just after the response; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(nginx._dir.path().join("access.log")).unwrap_or_default();
        if log.contains("token_name=logged") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("token_name=logged"), "{log}");
}

#[test]
fn nginx_thousand_requests_with_and_without_keepalive_to_pa_auth() {
    let svc = Service::start(&[]);
    let upstream = EchoUpstream::start();
    let auth = admin_basic(&svc);
    let secret = admin_create(&svc, &auth, json!({"name": "load"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    for keepalive in [true, false] {
        let Some(nginx) = start_nginx(svc.addr, upstream.addr(), keepalive) else {
            return;
        };
        thousand_sequential(nginx.addr, &secret);
    }
}

#[test]
fn caddy_forward_auth_protects_the_api() {
    let svc = Service::start(&[]);
    let upstream = EchoUpstream::start();
    let Some(caddy) = start_caddy(svc.addr, upstream.addr()) else {
        return;
    };
    exercise_proxy(caddy.addr, &svc, &upstream);
    let auth = admin_basic(&svc);
    let secret = admin_create(&svc, &auth, json!({"name": "caddy-load"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    thousand_sequential(caddy.addr, &secret);
    assert!(try_raw(caddy.addr, &Req::get("/api/x").to_bytes()).is_ok());
}
