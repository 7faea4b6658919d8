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

use crate::support::{
    admin_basic, on_both_stores, raw, try_raw, Conn, HttpResponse, Req, Service, Store, TempDir,
};
use crate::webdriver::require_program;

/// An upstream API that echoes the request headers and counts hits.
pub(crate) struct EchoUpstream {
    server: Option<Server>,
    hits: Arc<AtomicUsize>,
}

impl EchoUpstream {
    pub(crate) fn start() -> EchoUpstream {
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
                refusal: pa_auth::web::error::refusal,
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
    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }
    pub(crate) fn hits(&self) -> usize {
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
pub(crate) struct Proxy {
    child: Child,
    pub(crate) addr: SocketAddr,
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
    start_nginx_nodes(&[pa_auth], api, keepalive)
}

/// [`start_nginx`] with several pa-auth nodes: the first in the file's `server` line, the
/// others in its commented cluster-mode line, made live once per node.
pub(crate) fn start_nginx_nodes(
    nodes: &[SocketAddr],
    api: SocketAddr,
    keepalive: bool,
) -> Option<Proxy> {
    if !require_program("/usr/sbin/nginx", "nginx-light") {
        return None;
    }
    let dir = TempDir::new("nginx");
    let port = free_port();
    let (first, others) = nodes.split_first().expect("a pa-auth node");
    let cluster_line = "# server 127.0.0.1:8081;";
    let conf = deploy_file("nginx/pa-auth.conf");
    assert!(
        conf.contains(cluster_line),
        "the shipped config lost its cluster-mode line"
    );
    let others: String = others.iter().map(|a| format!("server {a}; ")).collect();
    let mut site = conf
        .replace("server 127.0.0.1:8080;", &format!("server {first};"))
        .replace(cluster_line, &others)
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
    start_caddy_nodes(&[pa_auth], api)
}

/// [`start_caddy`] with several pa-auth nodes, space-separated after the hop's
/// `reverse_proxy` as the file says for cluster mode.
pub(crate) fn start_caddy_nodes(nodes: &[SocketAddr], api: SocketAddr) -> Option<Proxy> {
    let nodes: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    let nodes = nodes.join(" ");
    if !require_program("/usr/bin/caddy", "caddy") {
        return None;
    }
    // Two ports picked by binding :0 and letting go can be taken meanwhile by a parallel
    // test; Caddy then exits at once. Try again with new ports.
    for attempt in 1..=3 {
        let dir = TempDir::new("caddy");
        // Both listeners held while the second is picked, so the two ports differ.
        let (a, b) = (
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (port, hop) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        drop((a, b));
        let site = deploy_file("caddy/Caddyfile")
            .replace(
                "api.example.internal {",
                &format!("http://:{port} {{\n\tbind 127.0.0.1"),
            )
            .replace(":8079", &format!(":{hop}"))
            .replace(
                "reverse_proxy 127.0.0.1:8080",
                &format!("reverse_proxy {nodes}"),
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
        let log = dir.path().join("caddy.log");
        let mut child = Command::new("/usr/bin/caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("caddy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_listening(addr, &mut child, "caddy")
        }));
        if started.is_ok() {
            return Some(Proxy {
                child,
                addr,
                _dir: dir,
            });
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text.lines().last().unwrap_or("").to_string();
        assert!(attempt < 3, "caddy did not start: {last}");
        eprintln!("caddy attempt {attempt} failed: {last}");
    }
    None
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

// The proxies' scenario on the embedded store and on a cluster node (issue 17): each runs
// as `name::sled` and `name::cluster`.
on_both_stores!(
    nginx_auth_request_protects_the_api,
    caddy_forward_auth_protects_the_api,
);

fn nginx_auth_request_protects_the_api(store: &Store) {
    let svc = store.start(&[]);
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

fn caddy_forward_auth_protects_the_api(store: &Store) {
    let svc = store.start(&[]);
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

// ---- Issue 14: hostile clients through the shipped proxy configs ----

/// One request head as a [`Recorder`] read it: names and values as sent, in order, with
/// duplicates and underscores kept.
#[derive(Clone, Debug)]
struct Recorded {
    target: String,
    headers: Vec<(String, String)>,
}

impl Recorded {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A raw HTTP/1.1 server without header limits that records every request head and answers
/// with `respond`: the API behind the proxy, or a stand-in for pa-auth that shows exactly
/// what a proxy sends it.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<Recorded>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn start(respond: fn(&Recorded) -> String) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen2);
                std::thread::spawn(move || Recorder::serve(stream, &seen, respond));
            }
        });
        Recorder { addr, seen, stop }
    }

    fn serve(
        stream: std::net::TcpStream,
        seen: &std::sync::Mutex<Vec<Recorded>>,
        respond: fn(&Recorded) -> String,
    ) {
        use std::io::{BufRead, Read, Write};
        let mut writer = stream.try_clone().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let target = line.split(' ').nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = Vec::new();
                if reader.read_until(b'\n', &mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = String::from_utf8_lossy(&h)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                if h.is_empty() {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.push((n.to_string(), v.trim().to_string()));
                }
            }
            let rec = Recorded { target, headers };
            let len: usize = rec
                .values("content-length")
                .first()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let answer = respond(&rec);
            seen.lock().unwrap().push(rec);
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

fn answer_ok(_: &Recorded) -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".into()
}

/// A Caddy active health check (the shipped Caddyfile probes `/healthz`), not a client's
/// request passed on.
fn is_health_probe(req: &Recorded) -> bool {
    req.target == "/healthz" && req.values("authorization").is_empty()
}

/// A stand-in for pa-auth: `Bearer good` is valid, anything else gets a 401; `/healthz`
/// without credentials is healthy, as pa-auth's is.
fn answer_like_pa_auth(req: &Recorded) -> String {
    if is_health_probe(req) {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
            .into()
    } else if req.values("authorization") == ["Bearer good"] {
        "HTTP/1.1 200 OK\r\nX-PA-Token-Id: fake-id\r\nX-PA-Token-Name: fake\r\nContent-Length: 0\r\n\r\n"
            .into()
    } else {
        let body = r#"{"error":"unauthorized","message":"Invalid or expired authentication token","correlationId":"00000000000000000000000000000000"}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"pa-auth\"\r\n\
             X-Correlation-Id: 00000000000000000000000000000000\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Header lines as raw bytes, control bytes included.
type RawHeaders<'a> = Vec<(&'a str, &'a [u8])>;

/// Raw request bytes: `GET target` with `headers` written as given (control bytes included).
fn raw_request(method: &str, target: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// 120 extra headers, three spellings of each identity header, and 20 KB of cookies in
/// four `Cookie` lines (each under nginx's 8 KiB line buffer).
fn crowded_headers() -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = (0..120)
        .map(|i| (format!("X-Extra-{i}"), format!("value-{i}")))
        .collect();
    for i in 0..4 {
        h.push(("Cookie".into(), format!("c{i}={}", "v".repeat(5000))));
    }
    h
}

/// What the proxy sends pa-auth: only the headers it reads, and never the client's query.
fn check_what_pa_auth_receives(proxy: SocketAddr, fake: &Recorder, allowed: &[&str]) {
    let mut req = Req::get("/api/orders?next=://h/healthz&a=https://h/metrics")
        .header("Authorization", "Bearer good")
        .header("X_PA_Token_Id", "spoofed")
        .header("x-pa_token-name", "spoofed");
    for (n, v) in crowded_headers() {
        req = req.header(&n, &v);
    }
    let r = req.send(proxy);
    assert_eq!(r.status, 200, "{}", r.text());
    let asked = fake.requests();
    let asked = asked
        .iter()
        .rev()
        .find(|r| !is_health_probe(r))
        .expect("pa-auth was asked");
    assert_eq!(
        asked.target, "/auth/verify",
        "the client's query reached pa-auth"
    );
    for (name, _) in &asked.headers {
        assert!(
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name)),
            "{name} sent to pa-auth: {:?}",
            asked.headers.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    assert_eq!(asked.values("authorization"), ["Bearer good"]);

    let r = Req::get("/api/orders?x=1")
        .bearer("pa_not_a_token")
        .send(proxy);
    assert_eq!(r.status, 401, "{}", r.text());
}

/// Every `_`/`-` and case spelling of the identity headers: the API sees pa-auth's alone.
fn check_identity_spellings(
    proxy: SocketAddr,
    svc: &Service,
    upstream: &Recorder,
    reserved_prefix: bool,
) {
    let auth = admin_basic(svc);
    let token = admin_create(svc, &auth, json!({"name": "spelling"}));
    let (id, secret) = (
        token["id"].as_str().unwrap(),
        token["token"].as_str().unwrap(),
    );
    let spoofed = [
        "X_PA_Token_Id",
        "x_pa_token_id",
        "X-PA_Token-Id",
        "X_PA-TOKEN-ID",
        "x-pa_token-name",
        "X_PA_TOKEN_NAME",
        "X-Pa-Token_Name",
        "PA_Token_Expiration",
        "pa_token-expiration",
        "Pa-Token_Expiration",
        "PA-TOKEN-EXPIRATION",
        "X-PA-Token-Secret",
        "x_pa_token_secret",
        "X-PA-TOKEN-ID",
        "x-pa-token-name",
    ];
    let mut req = Req::get("/api/who").bearer(secret);
    for name in spoofed {
        req = req.header(name, "spoofed").header(name, "");
    }
    if reserved_prefix {
        req = req.header("X-PA-Anything", "spoofed");
    }
    let before = upstream.hits();
    let r = req.send(proxy);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.hits(), before + 1);
    let seen = upstream.requests().pop().unwrap();
    let folded = |n: &str| n.to_ascii_lowercase().replace('_', "-");
    for (name, value) in &seen.headers {
        let f = folded(name);
        let identity = [
            "x-pa-token-id",
            "x-pa-token-name",
            "pa-token-expiration",
            "x-pa-token-secret",
        ]
        .contains(&f.as_str())
            || (reserved_prefix && f.starts_with("x-pa-"));
        if identity {
            assert!(!name.contains('_'), "{name}: {value} reached the API");
            assert_ne!(value, "spoofed", "{name} reached the API");
        }
    }
    let count = |want: &str| {
        seen.headers
            .iter()
            .filter(|(n, _)| folded(n) == want)
            .count()
    };
    assert_eq!(seen.values("x-pa-token-id"), [id], "{:?}", seen.headers);
    assert_eq!(count("x-pa-token-id"), 1);
    assert_eq!(seen.values("x-pa-token-name"), ["spelling"]);
    assert_eq!(count("x-pa-token-name"), 1);
    assert_eq!(count("pa-token-expiration"), 0, "{:?}", seen.headers);
    // Which secret was used (rotation, decision 0008): pa-auth's value, never the client's.
    assert_eq!(
        seen.values("x-pa-token-secret"),
        ["current"],
        "{:?}",
        seen.headers
    );
    assert_eq!(count("x-pa-token-secret"), 1);
}

/// A client with many headers or large cookies and a valid token gets its 200.
fn check_crowded_client(proxy: SocketAddr, svc: &Service, upstream: &Recorder) {
    let auth = admin_basic(svc);
    let secret = admin_create(svc, &auth, json!({"name": "crowded"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let all = crowded_headers();
    let (extra, cookies) = all.split_at(120);
    for (what, headers) in [("120 headers", extra), ("20 KB of cookies", cookies)] {
        let mut req = Req::get("/api/crowded").bearer(&secret);
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let before = upstream.hits();
        let r = req.send(proxy);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(upstream.hits(), before + 1, "{what}");
        let seen = upstream.requests().pop().unwrap();
        let sent = headers.iter().filter(|(n, _)| n == &headers[0].0).count();
        assert_eq!(
            seen.values(&headers[0].0).len(),
            sent,
            "{what}: the API lost headers"
        );
    }
}

/// Control bytes and NUL: pa-auth's 401 or the proxy's own 400, never a 500, and the API is
/// not reached without a valid token.
fn check_control_bytes(proxy: SocketAddr, svc: &Service, upstream: &Recorder) {
    let auth = admin_basic(svc);
    let secret = admin_create(svc, &auth, json!({"name": "ctl"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let with_secret = |suffix: &[u8]| {
        let mut v = format!("Bearer {secret}").into_bytes();
        v.extend_from_slice(suffix);
        v
    };
    let (valid_x01, valid_x7f) = (with_secret(b"\x01"), with_secret(b"\x7f"));
    let cases: Vec<(&str, RawHeaders<'_>)> = vec![
        (
            "\\x01 in Authorization",
            vec![("Authorization", b"Bearer pa_\x01abc")],
        ),
        (
            "\\x7f in Authorization",
            vec![("Authorization", b"Bearer \x7f")],
        ),
        (
            "NUL in Authorization",
            vec![("Authorization", b"Bearer pa_x\0y")],
        ),
        ("valid token + \\x01", vec![("Authorization", &valid_x01)]),
        ("valid token + \\x7f", vec![("Authorization", &valid_x7f)]),
        ("\\x01 in another header", vec![("X-Note", b"a\x01b")]),
        ("\\x7f in another header", vec![("X-Note", b"\x7f")]),
        ("NUL in another header", vec![("X-Note", b"a\0b")]),
        (
            "\\x01 beside a malformed token",
            vec![("Authorization", b"Bearer pa_short"), ("X-Note", b"\x01")],
        ),
    ];
    for (what, headers) in cases {
        let before = upstream.hits();
        let r = try_raw(proxy, &raw_request("GET", "/api/ctl", &headers));
        let Ok(r) = r else {
            // The proxy closed the connection without an answer: refused, not a 500.
            assert_eq!(upstream.hits(), before, "{what}: upstream reached");
            continue;
        };
        assert_ne!(r.status, 500, "{what}: {}", r.text());
        match r.status {
            401 => assert_pa_auth_401(&r, what),
            // The proxy's own 400, not one of pa-auth's passed through.
            400 => assert!(
                !r.text().contains("validation_error"),
                "{what}: {}",
                r.text()
            ),
            s => panic!("{what}: status {s}: {}", r.text()),
        }
        assert_eq!(upstream.hits(), before, "{what}: upstream reached");
    }
    // A valid token beside a control byte elsewhere: the API's answer or the proxy's 400.
    let r = raw(
        proxy,
        &raw_request(
            "GET",
            "/api/ctl",
            &[
                ("Authorization", format!("Bearer {secret}").as_bytes()),
                ("X-Note", b"a\x01b"),
            ],
        ),
    );
    assert!(matches!(r.status, 200 | 400), "{}: {}", r.status, r.text());
}

/// Query strings that named a public route after `://` (the bypass of issue 14): pa-auth's
/// 401 and the API untouched, with no token and with a malformed one.
const HOSTILE_QUERIES: &[&str] = &[
    "/api/x?next=://x/healthz",
    "/api/x?a=https://h/metrics",
    "/api/x?x=http://h/openapi.json",
    "/api/x?r=://h/admin/",
    "/api/x?r=://h/admin/api/tokens",
    "/api/x?r=://h/auth/verify",
    "/api/x?u=HTTP://h/healthz",
    "/api/x?next=://x//healthz&y=1",
    "/api/?://h/healthz",
    "/api/x?next=%3A%2F%2Fh%2Fhealthz",
    "/api/x?next=://h/healthz?x=://h/metrics",
    "/api/x;p=://h/healthz",
    "/api//x?next=://h/metrics",
    "/api/x?next=https://h:443/healthz#frag",
];

fn check_hostile_queries(proxy: SocketAddr, upstream: &Recorder) {
    for target in HOSTILE_QUERIES {
        for auth in [None, Some("Bearer pa_not_a_token")] {
            let what = format!("{target} with {auth:?}");
            let mut req = Req::get(target);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let before = upstream.hits();
            let r = req.send(proxy);
            assert_pa_auth_401(&r, &what);
            assert_eq!(upstream.hits(), before, "{what}: upstream reached");
        }
    }
}

fn nginx_allowed() -> &'static [&'static str] {
    // Issue 19: the client's address and the original method, set by nginx.
    &[
        "host",
        "authorization",
        "x-correlation-id",
        "x-real-ip",
        "x-original-method",
    ]
}

fn caddy_allowed() -> &'static [&'static str] {
    &[
        "host",
        "authorization",
        "x-forwarded-for",
        // Issue 19: the original method, from forward_auth through the hop.
        "x-forwarded-method",
        "x-forwarded-proto",
        "x-forwarded-host",
        "accept-encoding",
        "user-agent",
    ]
}

#[test]
fn issue14_nginx_sends_pa_auth_only_what_it_reads() {
    let fake = Recorder::start(answer_like_pa_auth);
    let upstream = Recorder::start(answer_ok);
    let Some(nginx) = start_nginx(fake.addr, upstream.addr, true) else {
        return;
    };
    check_what_pa_auth_receives(nginx.addr, &fake, nginx_allowed());
    let asked = fake.requests().into_iter().next().unwrap();
    let cid = asked.values("x-correlation-id");
    assert!(cid.len() == 1 && cid[0].len() == 32, "{cid:?}");
}

#[test]
fn issue14_caddy_sends_pa_auth_only_what_it_reads() {
    let fake = Recorder::start(answer_like_pa_auth);
    let upstream = Recorder::start(answer_ok);
    let Some(caddy) = start_caddy(fake.addr, upstream.addr) else {
        return;
    };
    check_what_pa_auth_receives(caddy.addr, &fake, caddy_allowed());
}

#[test]
fn issue14_nginx_hostile_clients() {
    let svc = Service::start(&[]);
    let upstream = Recorder::start(answer_ok);
    let Some(nginx) = start_nginx(svc.addr, upstream.addr, true) else {
        return;
    };
    check_identity_spellings(nginx.addr, &svc, &upstream, false);
    check_crowded_client(nginx.addr, &svc, &upstream);
    check_control_bytes(nginx.addr, &svc, &upstream);
    check_hostile_queries(nginx.addr, &upstream);
}

#[test]
fn issue14_caddy_hostile_clients() {
    let svc = Service::start(&[]);
    let upstream = Recorder::start(answer_ok);
    let Some(caddy) = start_caddy(svc.addr, upstream.addr) else {
        return;
    };
    check_identity_spellings(caddy.addr, &svc, &upstream, true);
    check_crowded_client(caddy.addr, &svc, &upstream);
    check_control_bytes(caddy.addr, &svc, &upstream);
    check_hostile_queries(caddy.addr, &upstream);
}

/// Client targets an Envoy or Traefik client could send, hostile queries and paths alike.
fn hostile_client_targets() -> Vec<String> {
    let mut t: Vec<String> = HOSTILE_QUERIES.iter().map(|s| s.to_string()).collect();
    t.extend(
        [
            "/api/x/../../healthz",
            "/api/x/..%2f..%2fhealthz",
            "/api/%2e%2e/%2e%2e/healthz",
            "/api/x%2f..%2f..%2fmetrics",
            "/api/x;/../../healthz",
            "/api//healthz",
            "/API/x?next=://h/healthz",
            "/api/x?next=://h/HEALTHZ",
            "/api/x?next=://h/Metrics",
            "/api/x?next=//h/healthz",
            "/api/x?:///healthz",
            "/api/x#://h/healthz",
            "/api/x?next=://h/auth/verify/../healthz",
        ]
        .map(String::from),
    );
    t
}

fn bad_credentials() -> [Option<&'static str>; 3] {
    [
        None,
        Some("Bearer pa_not_a_token"),
        // Well-formed, checksum right, not in the store.
        Some("Bearer pa_0000000000000000000000000000000000000000000000"),
    ]
}

/// What Envoy's ext_authz (deploy/envoy/envoy.yaml) sends pa-auth: the client's method,
/// `path_prefix` + the client's :path (query included), Content-Length 0, of the client's
/// headers only `allowed_headers` (Authorization, and X-Forwarded-For with the client's
/// address appended by `use_remote_address`), and `headers_to_add` (x-pa-auth-proxy).
pub(crate) fn envoy_check_request(
    method: &str,
    client_target: &str,
    authorization: Option<&str>,
) -> Vec<u8> {
    // Envoy never puts a fragment in :path (it refuses or strips one from the client).
    let client_target = client_target.split('#').next().unwrap_or("");
    let mut out = format!(
        "{method} /auth/verify{client_target} HTTP/1.1\r\nHost: api.example.internal\r\n\
         content-length: 0\r\nx-envoy-internal: true\r\nx-forwarded-proto: https\r\n\
         x-request-id: 3f1b2c1e-8d52-4d0e-9a43-5d3c6c1b2a10\r\nx-envoy-expected-rq-timeout-ms: 1000\r\n\
         x-forwarded-for: 203.0.113.7\r\nx-pa-auth-proxy: envoy\r\n"
    );
    if let Some(a) = authorization {
        out.push_str(&format!("authorization: {a}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// What Traefik's ForwardAuth (deploy/traefik/pa-auth.yml) sends pa-auth: `GET` of the
/// configured address, Authorization (authRequestHeaders) and its own X-Forwarded-*.
pub(crate) fn traefik_check_request(
    method: &str,
    client_target: &str,
    authorization: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "GET /auth/verify HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: api.example.internal\r\n\
         X-Forwarded-Method: {method}\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Uri: {client_target}\r\nAccept-Encoding: gzip\r\n"
    );
    if let Some(a) = authorization {
        out.push_str(&format!("Authorization: {a}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Replays a proxy's check requests at pa-auth: every hostile target and bad credential gets
/// the 401 (a 2xx would let the request through; anything else is a 500 or a leak), and a
/// valid token the 200 with its identity, which shows the replay is faithful.
fn replay_checks(build: fn(&str, &str, Option<&str>) -> Vec<u8>) {
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let token = admin_create(&svc, &auth, json!({"name": "replay"}));
    let valid = format!("Bearer {}", token["token"].as_str().unwrap());
    let mut failures = Vec::new();
    for target in hostile_client_targets() {
        for method in ["GET", "POST", "DELETE"] {
            for cred in bad_credentials() {
                let r = raw(svc.addr, &build(method, &target, cred));
                // The verify route's own 401, not another route's (admin's 401 says so).
                let verify_401 =
                    r.status == 401 && r.text().contains("Invalid or expired authentication token");
                if !verify_401 {
                    failures.push(format!("{method} {target} {cred:?}: {}", r.status));
                }
            }
        }
        let r = raw(svc.addr, &build("GET", &target, Some(&valid)));
        if r.status != 200 || r.header("X-PA-Token-Id") != token["id"].as_str() {
            failures.push(format!(
                "{target} with a valid token: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

#[test]
fn issue14_envoy_check_requests_need_a_valid_token() {
    replay_checks(envoy_check_request);
}

#[test]
fn issue14_traefik_check_requests_need_a_valid_token() {
    replay_checks(traefik_check_request);
}

/// The outside review of issue 14's fixes: a client's own request could still grow the
/// forward-auth request past pa-auth's 16 KiB head limit (an 8 KB URL copied into
/// X-Original-URI beside an 8 KB Authorization through nginx, answered 500; a 16 KB query in
/// X-Forwarded-Uri through Caddy, answered 431 to a valid token). Only Authorization goes now.
#[test]
fn issue14_long_urls_never_turn_into_500_or_431() {
    let svc = Service::start(&[]);
    // A recorder, not the echo server: that one has pa-auth's own 16 KiB head limit.
    let upstream = Recorder::start(answer_ok);
    let auth = admin_basic(&svc);
    let secret = admin_create(&svc, &auth, json!({"name": "long urls"}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let Some(nginx) = start_nginx(svc.addr, upstream.addr, true) else {
        return;
    };
    let path = format!("/api/{}", "a".repeat(8_150));
    let r = Req::get(&path)
        .header("Authorization", &format!("Bearer {}", "b".repeat(8_150)))
        .send(nginx.addr);
    assert_eq!(r.status, 401, "nginx: {}", r.text());
    drop(nginx);
    let Some(caddy) = start_caddy(svc.addr, upstream.addr) else {
        return;
    };
    let target = format!("/api/x?q={}", "a".repeat(16_200));
    let r = Req::get(&target).bearer(&secret).send(caddy.addr);
    assert_eq!(r.status, 200, "caddy: {}", r.text());
}
