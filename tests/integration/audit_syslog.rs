//! Issue 18: a copy of every audit event to the site's syslog or SIEM (`--audit-syslog`), as
//! RFC 5424 with structured data, over UDP, TCP (octet counting) and a Unix datagram socket;
//! never a secret; and a collector that is down costs nothing but a counted failure.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::support::{basic_auth, Req, Service, TempDir};

fn create(svc: &Service, admin: &str, name: &str) -> (String, String) {
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", admin)
        .json(&serde_json::json!({ "name": name }))
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Reads messages until one has `needle`; all messages read so far.
fn until(mut next: impl FnMut() -> Option<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(m) = next() {
        let found = m.contains(needle);
        seen.push(m);
        if found {
            return seen;
        }
    }
    panic!("no message with {needle:?}; got {seen:#?}");
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_events_reach_a_udp_collector_as_rfc_5424_without_secrets() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let target = format!("udp://{}", collector.local_addr().unwrap());
    let svc = Service::start(&["--audit-syslog", &target, "--flush-interval", "1"]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (id, secret) = create(&svc, &admin, "ci-deploy");
    // A failed authentication, aggregated by the flusher, goes too (as a warning).
    let r = Req::get("/auth/verify").bearer("pa_nope").send(svc.addr);
    assert_eq!(r.status, 401);
    let next = || {
        let mut buf = [0u8; 65536];
        let n = collector.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let seen = until(next, "auth.failed");
    let created = seen
        .iter()
        .find(|m| m.contains(" token.created "))
        .unwrap_or_else(|| panic!("{seen:#?}"));
    // <authpriv.notice>1 TIMESTAMP HOSTNAME pa-auth PID MSGID [SD] JSON
    assert!(created.starts_with("<85>1 "), "{created}");
    let fields: Vec<&str> = created.splitn(7, ' ').collect();
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "{created}"
    );
    assert_eq!(fields[3], "pa-auth");
    assert_eq!(fields[4], svc.pid().to_string());
    assert_eq!(fields[5], "token.created");
    assert!(
        fields[6].starts_with("[pa-auth@32473 id=\"")
            && fields[6].contains(&format!("tokenId=\"{id}\""))
            && fields[6].contains("tokenName=\"ci-deploy\""),
        "{created}"
    );
    let json = &fields[6][fields[6].find("] {").unwrap() + 2..];
    let event: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(event["event"], "token.created");
    assert_eq!(event["tokenId"], id.as_str());
    let failed = seen.iter().find(|m| m.contains(" auth.failed ")).unwrap();
    assert!(failed.starts_with("<84>1 "), "a warning: {failed}");
    for m in &seen {
        assert!(!m.contains(&secret), "a secret in {m}");
        assert!(!m.contains('\n'), "one line: {m}");
    }
    let metrics = Req::get("/metrics").send(svc.addr).text();
    assert!(
        metrics.contains("pa_auth_audit_syslog_messages_total{outcome=\"sent\"}"),
        "{metrics}"
    );
}

#[test]
fn audit_events_reach_a_tcp_collector_octet_counted_and_a_unix_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("syslog-unix");
    let path = dir.path().join("log.sock");
    let unix = UnixDatagram::bind(&path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let tcp = Service::start(&[
        "--audit-syslog",
        &format!("tcp://{}", listener.local_addr().unwrap()),
    ]);
    let admin = basic_auth("admin", &tcp.initial_password());
    create(&tcp, &admin, "over-tcp");
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // RFC 6587 octet counting: "LEN SP MSG".
    let mut next = || {
        let mut len = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            conn.read_exact(&mut byte).ok()?;
            if byte[0] == b' ' {
                break;
            }
            len.push(byte[0]);
        }
        let n: usize = String::from_utf8(len).ok()?.parse().ok()?;
        let mut msg = vec![0u8; n];
        conn.read_exact(&mut msg).ok()?;
        String::from_utf8(msg).ok()
    };
    let seen = until(&mut next, "tokenName=\"over-tcp\"");
    assert!(seen.iter().all(|m| m.starts_with('<')), "{seen:#?}");

    let local = Service::start(&["--audit-syslog", &format!("unix://{}", path.display())]);
    let admin = basic_auth("admin", &local.initial_password());
    create(&local, &admin, "over-unix");
    let next = || {
        let mut buf = [0u8; 65536];
        let n = unix.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    until(next, "tokenName=\"over-unix\"");
}

/// A collector that is down (nothing listening) costs no request and no audit event: the
/// failures are counted, and the audit log has everything.
#[test]
fn a_collector_that_is_down_is_counted_not_waited_for() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let svc = Service::start(&["--audit-syslog", &target]);
    let admin = basic_auth("admin", &svc.initial_password());
    for i in 0..5 {
        create(&svc, &admin, &format!("t{i}"));
    }
    let audit = Req::get("/admin/api/audit?event=token.created")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(audit["items"].as_array().unwrap().len(), 5);
    wait_for("the failures counted", || {
        Req::get("/metrics")
            .send(svc.addr)
            .text()
            .lines()
            .find_map(|l| {
                l.strip_prefix("pa_auth_audit_syslog_messages_total{outcome=\"failed\"} ")
            })
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n >= 5)
    });
    assert!(
        svc.log_shows("sending audit events to"),
        "{}",
        svc.log_text()
    );
    // Refused at start: a target that is no address.
    let out = std::process::Command::new(crate::support::binary())
        .args(["check-config", "--audit-syslog", "http://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
