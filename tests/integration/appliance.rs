//! Issue 7: running like an appliance: sd_notify readiness, HTTPS with a self-signed
//! certificate made in the test (and reloaded on SIGHUP), /metrics in valid Prometheus text,
//! JSON logs that never contain a secret, check-config and --version.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::{admin_basic, binary, run_cli, Req, Service, TempDir};
use crate::webdriver::require_program;

#[test]
fn sd_notify_ready_and_stopping() {
    let temp = TempDir::new("notify");
    let socket_path = temp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(temp.path().join("data"))
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=listening on 127.0.0.1:"));
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command.
pub(crate) fn make_certificate(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    if !require_program("/usr/bin/openssl", "openssl") {
        return None;
    }
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let status = Command::new("/usr/bin/openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Some((cert, key))
}

/// A rustls client that trusts exactly `cert`.
pub(crate) fn tls_client(cert: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One HTTPS request; returns the status line and the peer certificate's subject bytes.
fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &str,
) -> (String, Vec<u8>) {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    (String::from_utf8_lossy(&response).into_owned(), cert)
}

#[test]
fn https_serves_secure_cookies_and_reloads_on_sighup() {
    let temp = TempDir::new("tls");
    let Some((cert, key)) = make_certificate(temp.path(), "first") else {
        return;
    };
    let live_cert = temp.path().join("live.crt");
    let live_key = temp.path().join("live.key");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let mut svc = Service::start(&[
        "--tls-cert",
        live_cert.to_str().unwrap(),
        "--tls-key",
        live_key.to_str().unwrap(),
    ]);
    assert!(svc.log_shows("listening on https://"), "{}", svc.log_text());
    let first = tls_client(&cert);
    let (response, served) = https_get(svc.addr, Arc::clone(&first), "/healthz", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Login over TLS sets a Secure cookie.
    let body =
        serde_json::to_string(&json!({"username": "admin", "password": svc.initial_password()}))
            .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::StreamOwned::new(
        rustls::ClientConnection::new(Arc::clone(&first), name).unwrap(),
        TcpStream::connect(svc.addr).unwrap(),
    );
    write!(
        tls,
        "POST /admin/api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut login = String::new();
    let _ = tls.read_to_string(&mut login);
    let cookie_line = login
        .lines()
        .find(|l| l.starts_with("Set-Cookie:"))
        .unwrap_or("")
        .to_string();
    assert!(cookie_line.contains("; Secure"), "{login}");

    // A connection kept open across the reload keeps working.
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut kept = rustls::StreamOwned::new(
        rustls::ClientConnection::new(Arc::clone(&first), name).unwrap(),
        TcpStream::connect(svc.addr).unwrap(),
    );
    kept.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(kept, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reader = BufReader::new(kept);
    let r = crate::support::read_response(&mut reader, false).unwrap();
    assert_eq!(r.status, 200);

    // Swap the files, SIGHUP: new handshakes see the new certificate.
    let (cert2, key2) = make_certificate(temp.path(), "second").unwrap();
    std::fs::copy(&cert2, &live_cert).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    Command::new("kill")
        .args(["-HUP", &svc.pid().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !svc.log_text().contains("TLS certificate reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged: {}",
            svc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (response, served2) = https_get(svc.addr, tls_client(&cert2), "/healthz", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_ne!(served, served2, "still serving the old certificate");
    reader
        .get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let r = crate::support::read_response(&mut reader, false).unwrap();
    assert_eq!(
        r.status, 200,
        "the connection open across the reload was dropped"
    );

    // A broken file on reload keeps the working certificate.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    Command::new("kill")
        .args(["-HUP", &svc.pid().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !svc.log_text().contains("TLS reload failed") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(https_get(svc.addr, tls_client(&cert2), "/healthz", "")
        .0
        .starts_with("HTTP/1.1 200"));

    // A handshake that stalls, or a client that sends close_notify at once, holds nothing.
    let stalled: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(svc.addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01]).unwrap();
            s
        })
        .collect();
    assert!(https_get(svc.addr, tls_client(&cert2), "/healthz", "")
        .0
        .starts_with("HTTP/1.1 200"));
    drop(stalled);
    // Plain HTTP to the TLS port gets no answer but does not hurt.
    let mut plain = TcpStream::connect(svc.addr).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);
    assert!(!String::from_utf8_lossy(&sink).contains("200 OK"));
    assert!(https_get(svc.addr, tls_client(&cert2), "/healthz", "")
        .0
        .starts_with("HTTP/1.1 200"));
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
}

/// A strict reader of the Prometheus text format (0.0.4) for the lines we emit.
/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted: {line}"));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map_or(n.clone(), str::to_string)
            });
        assert!(
            typed.contains(&name) || typed.contains(&family),
            "sample before TYPE: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[test]
fn metrics_are_valid_prometheus_text_and_aggregate_only() {
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &auth)
        .json(&json!({"name": "metric-secret-name", "expiresAt": "2999-01-01"}))
        .send(svc.addr);
    let secret = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["id"].as_str().unwrap().to_string();
    Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    Req::get("/auth/verify").send(svc.addr);
    Req::get("/auth/verify").bearer("pa_bad").send(svc.addr);
    let text = Req::get("/metrics").send(svc.addr).text();
    let samples = parse_prometheus(&text);
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.2)
    };
    assert_eq!(
        get("pa_auth_authentications_total", Some(("result", "success"))),
        Some(1.0)
    );
    assert_eq!(
        get("pa_auth_authentications_total", Some(("result", "missing"))),
        Some(1.0)
    );
    assert_eq!(
        get(
            "pa_auth_authentications_total",
            Some(("result", "malformed"))
        ),
        Some(1.0)
    );
    assert_eq!(get("pa_auth_tokens", Some(("status", "active"))), Some(1.0));
    assert!(get("pa_auth_http_requests_total", Some(("route", "verify"))).is_some());
    assert!(get("pa_auth_http_request_duration_seconds_count", None).unwrap() >= 4.0);
    assert!(get("pa_auth_open_connections", None).unwrap() >= 1.0);
    assert!(get("pa_auth_last_flush_timestamp_seconds", None).is_some());
    assert!(
        !text.contains("metric-secret-name") && !text.contains(&id) && !text.contains(&secret[3..])
    );
}

#[test]
fn json_logs_carry_correlation_ids_and_never_secrets() {
    let mut svc = Service::start(&["--log-format", "json"]);
    let auth = admin_basic(&svc);
    let mut secrets = Vec::new();
    for i in 0..3 {
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({"name": format!("log-{i}")}))
            .send(svc.addr);
        secrets.push(r.json()["token"].as_str().unwrap().to_string());
    }
    let cid = "0123456789abcdef0123456789abcdef";
    for s in &secrets {
        Req::get("/auth/verify")
            .bearer(s)
            .header("X-Correlation-Id", cid)
            .send(svc.addr);
        Req::get(&format!("/api/token?token={s}"))
            .bearer(s)
            .send(svc.addr);
        Req::get("/auth/verify")
            .bearer(&format!("{s}0"))
            .send(svc.addr);
    }
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let log = svc.log_text();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["time"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains(&format!("\"correlation_id\":\"{cid}\"")));
    for s in &secrets {
        assert!(!log.contains(&s[3..]), "a secret reached the log");
    }
    assert!(!log.contains(&svc.initial_password()));
}

#[test]
fn check_config_and_version() {
    let temp = TempDir::new("check");
    let d = temp.path().join("d");
    let (code, out, _) = run_cli(&["check-config", "--data-dir", d.to_str().unwrap()], None);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("configuration OK: listen http://127.0.0.1:8080"),
        "{out}"
    );
    assert!(
        !d.exists(),
        "check-config must not create or touch the data dir"
    );
    let (code, _, err) = run_cli(&["check-config", "--tls-cert", "/nonexistent.pem"], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("--tls-cert and --tls-key go together"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        &[
            "check-config",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.pem"), "{err}");
    assert_eq!(run_cli(&["check-config", "--log-format", "xml"], None).0, 2);
    assert_eq!(run_cli(&["check-config", "--idle-timeout", "0"], None).0, 2);
    let (code, out, _) = run_cli(&["--version"], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("pa-auth 0.1.0 (commit "), "{out}");
    let (code, out, _) = run_cli(&["--help"], None);
    assert_eq!(code, 0);
    for word in ["serve", "check-config", "token", "admin"] {
        assert!(out.contains(word), "{out}");
    }
}
