//! Issue 19 part 3, usage you can see, on the real binary: requests per day and the last ten
//! client addresses per token (`GET /admin/api/tokens/{id}/usage`, `token usage`), persisted
//! by the flush and across restarts, `token.new_address` audited once per new address and
//! capped under a flood, removed with the token; on a cluster, two nodes' counts add.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{admin_basic, from_address, on_both_stores, run_cli, Req, Service, Store};

struct Admin {
    addr: SocketAddr,
    auth: String,
}

impl Admin {
    fn of(svc: &Service) -> Admin {
        Admin {
            addr: svc.addr,
            auth: admin_basic(svc),
        }
    }
    fn create(&self, name: &str) -> (String, String) {
        let r = Req::new("POST", "/admin/api/tokens")
            .json(&json!({ "name": name }))
            .header("Authorization", &self.auth)
            .send(self.addr);
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }
    fn usage(&self, id: &str) -> Value {
        let r = Req::get(&format!("/admin/api/tokens/{id}/usage"))
            .header("Authorization", &self.auth)
            .send(self.addr);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
    fn new_address_events(&self, id: &str) -> Vec<Value> {
        let r = Req::get(&format!(
            "/admin/api/audit?event=token.new_address&tokenId={id}&limit=1000"
        ))
        .header("Authorization", &self.auth)
        .send(self.addr);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].as_array().unwrap().clone()
    }
}

/// One forward-auth request with `token` from the loopback address `source`.
fn verify_from(source: &str, to: SocketAddr, token: &str) {
    let req = format!(
        "GET /auth/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let r = from_address(source, to, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

fn addresses(usage: &Value) -> Vec<(String, u64)> {
    usage["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_owned(),
                a["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn usage_is_counted_persisted_audited_and_removed_with_its_token(store: &Store) {
    let dir = crate::support::TempDir::new("usage");
    let data = dir.path().join("data");
    let mut svc = store.start_in(&data, &["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let (id, token) = admin.create("usage-ci");
    let (other_id, _) = admin.create("unused");
    for _ in 0..3 {
        verify_from("127.0.0.2", svc.addr, &token);
    }
    for _ in 0..2 {
        verify_from("127.0.0.3", svc.addr, &token);
    }
    // This node's own uses show at once, before any flush.
    let usage = admin.usage(&id);
    assert_eq!(usage["total"], 5);
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    assert_eq!(days[89]["count"], 5, "today is last");
    // Most recently seen first; uses within one second tie, ordered by address.
    assert_eq!(
        addresses(&usage),
        [("127.0.0.2".to_owned(), 3), ("127.0.0.3".to_owned(), 2)]
    );
    assert_eq!(admin.usage(&other_id)["total"], 0);
    // After a flush: one token.new_address per address, naming it.
    wait_for("two token.new_address events", || {
        admin.new_address_events(&id).len() == 2
    });
    let mut seen: Vec<String> = admin
        .new_address_events(&id)
        .iter()
        .map(|e| e["remoteAddr"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["127.0.0.2", "127.0.0.3"]);
    // A known address again: counted, not audited again.
    verify_from("127.0.0.2", svc.addr, &token);
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(admin.new_address_events(&id).len(), 2);
    assert_eq!(admin.usage(&id)["total"], 6);

    // Across a restart: what was flushed is there.
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    drop(svc);
    let svc = store.start_in(&data, &["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let usage = admin.usage(&id);
    assert_eq!(usage["total"], 6, "{usage}");
    assert_eq!(
        addresses(&usage),
        [("127.0.0.2".to_owned(), 4), ("127.0.0.3".to_owned(), 2)]
    );

    // Deleted with its token.
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin.auth)
        .send(svc.addr);
    assert_eq!(r.status, 204);
    let r = Req::get(&format!("/admin/api/tokens/{id}/usage"))
        .header("Authorization", &admin.auth)
        .send(svc.addr);
    r.assert_error(404, "not_found");
    let r = Req::get("/admin/api/tokens/not-a-uuid/usage")
        .header("Authorization", &admin.auth)
        .send(svc.addr);
    r.assert_error(404, "not_found");
    let r = Req::get(&format!("/admin/api/tokens/{other_id}/usage")).send(svc.addr);
    r.assert_error(401, "unauthorized");
}

on_both_stores!(usage_is_counted_persisted_audited_and_removed_with_its_token);

/// The offline CLI reads what the server flushed (`token usage ID [--json]`).
#[test]
fn the_cli_shows_usage_offline() {
    let dir = crate::support::TempDir::new("usage-cli");
    let data = dir.path().join("data");
    let mut svc = Service::start_in(&data, &["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let (id, token) = admin.create("cli-usage");
    verify_from("127.0.0.4", svc.addr, &token);
    verify_from("127.0.0.4", svc.addr, &token);
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let data = data.to_str().unwrap();
    let (code, out, err) = run_cli(&["token", "usage", &id, "--json", "--data-dir", data], None);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 2);
    assert_eq!(v["addresses"][0]["address"], "127.0.0.4");
    let (code, out, _) = run_cli(&["token", "usage", &id, "--data-dir", data], None);
    assert_eq!(code, 0);
    assert!(out.contains("2 requests in the last 90 days"), "{out}");
    assert!(out.contains("127.0.0.4"), "{out}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (code, _, err) = run_cli(&["token", "usage", unknown, "--data-dir", data], None);
    assert_eq!(code, 1, "{err}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A leaked token used from 5,000 addresses: the usage keeps ten, the audit gets a bounded
/// number of `token.new_address` events with the rest counted, and memory stays flat.
#[test]
fn a_token_used_from_five_thousand_addresses_stays_bounded() {
    let svc = Service::start(&["--flush-interval", "1"]);
    let admin = Admin::of(&svc);
    let (id, token) = admin.create("leaked");
    verify_from("127.0.0.2", svc.addr, &token);
    let before = rss_kib(svc.pid());
    let started = Instant::now();
    for n in 0..5_000u32 {
        let source = format!("127.1.{}.{}", n / 250, n % 250 + 1);
        verify_from(&source, svc.addr, &token);
    }
    let rounds = started.elapsed().as_secs() + 3;
    std::thread::sleep(Duration::from_millis(2_500));
    let usage = admin.usage(&id);
    assert_eq!(usage["total"], 5_001);
    assert_eq!(usage["addresses"].as_array().unwrap().len(), 10);
    let events = admin.new_address_events(&id);
    // At most three naming an address and one count per flush round.
    assert!(
        u64::try_from(events.len()).unwrap() <= 4 * rounds,
        "{} events in {rounds} rounds",
        events.len()
    );
    let named = events
        .iter()
        .filter(|e| e["remoteAddr"].is_string())
        .count();
    let counted: u64 = events.iter().filter_map(|e| e["count"].as_u64()).sum();
    assert!(
        u64::try_from(named).unwrap() + counted >= 5_001,
        "every new address is named or counted: {named} + {counted}"
    );
    let grown = rss_kib(svc.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB");
}

/// Two nodes on one database: each flushes its own traffic, and the counts add.
#[test]
fn two_cluster_nodes_add_their_counts() {
    let Some(store) = Store::cluster() else {
        return;
    };
    let a = store.start(&["--flush-interval", "1"]);
    let b = store.start(&["--flush-interval", "1"]);
    let admin_a = Admin::of(&a);
    let (id, token) = admin_a.create("shared");
    // Node b learns of the token at its next sync.
    wait_for("node b to know the token", || {
        let req = format!("GET /auth/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        from_address("127.0.0.9", b.addr, req.as_bytes()).status == 200
    });
    for _ in 0..3 {
        verify_from("127.0.0.5", a.addr, &token);
    }
    for _ in 0..4 {
        verify_from("127.0.0.6", b.addr, &token);
        verify_from("127.0.0.5", b.addr, &token);
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let usage = admin_a.usage(&id);
    assert_eq!(usage["total"], 12, "{usage}");
    let mut got = addresses(&usage);
    got.sort();
    assert_eq!(
        got,
        [
            ("127.0.0.5".to_owned(), 7),
            ("127.0.0.6".to_owned(), 4),
            ("127.0.0.9".to_owned(), 1)
        ]
    );
    // Each address audited once, whichever node saw it first.
    let events = admin_a.new_address_events(&id);
    assert_eq!(events.len(), 3, "{events:?}");
}
