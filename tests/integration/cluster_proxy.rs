//! Issue 17: a cluster behind the shipped proxy configs in their multi-node form. Two
//! pa-auth nodes on one PostgreSQL behind real nginx (and Caddy); client threads send a
//! steady stream of checks with a valid token (200) and an unknown one (401) while one node
//! is killed with SIGKILL and later restarted where the proxy expects it. Counted: every
//! answer that is not the expected status, and when its request started.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::forward_auth::{start_caddy_nodes, start_nginx_nodes, EchoUpstream, Proxy};
use crate::postgres::Postgres;
use crate::support::{basic_auth, Conn, Req, Service, TempDir};

/// Client threads, each with its own keep-alive connection to the proxy.
const CLIENTS: usize = 6;

/// Each client's pause between requests: a steady stream (a few thousand checks a second),
/// not a flood. A flood that starves the machine's cores delays the nodes' followers past
/// --max-staleness, and a node failing closed for want of CPU is not what is tested here.
const PACE: Duration = Duration::from_millis(1);

/// These tests run one at a time: each drives load through a proxy at two nodes.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// After the kill, this long for the proxy to stop choosing the dead node; no failure may
/// start later than that.
const SETTLE: Duration = Duration::from_millis(500);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// This node's count of successful token checks (its `/metrics`).
fn successes(node: SocketAddr) -> u64 {
    let text = Req::get("/metrics").send(node).text();
    text.lines()
        .find_map(|l| l.strip_prefix("pa_auth_authentications_total{result=\"success\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no success counter in {text}"))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answer that was not the expected one.
struct Failure {
    started: Instant,
    what: String,
}

/// Client threads sending checks through the proxy until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<Failure>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Every fifth request carries `unknown` and must get 401; the others carry `valid`
    /// and must get 200 from the API behind the proxy.
    fn start(proxy: SocketAddr, valid: &str, unknown: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|n| {
                let (stop, sent, failures) =
                    (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failures));
                let (valid, unknown) = (valid.to_owned(), unknown.to_owned());
                std::thread::spawn(move || {
                    let mut conn = Conn::open(proxy);
                    let mut i = n;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let (token, want) = if i % 5 == 0 {
                            (&unknown, 401)
                        } else {
                            (&valid, 200)
                        };
                        let started = Instant::now();
                        let path = format!("/api/orders/{i}");
                        let answer = conn.send(&Req::get(&path).bearer(token));
                        // nginx closes a client's connection after 1,000 requests
                        // (keepalive_requests), saying so in the last answer.
                        if answer.as_ref().is_ok_and(|r| {
                            r.header("Connection")
                                .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                        }) {
                            conn = Conn::open(proxy);
                        }
                        let what = match answer {
                            Ok(r) if r.status == want => None,
                            Ok(r) => Some(format!("{} instead of {want}: {}", r.status, r.text())),
                            Err(e) => {
                                conn = Conn::open(proxy);
                                Some(format!("{e} instead of {want}"))
                            }
                        };
                        sent.fetch_add(1, Ordering::SeqCst);
                        if let Some(what) = what {
                            failures.lock().unwrap().push(Failure { started, what });
                        }
                        std::thread::sleep(PACE);
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            threads,
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    fn finish(self) -> Vec<Failure> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        std::mem::take(&mut *self.failures.lock().unwrap())
    }
}

/// A cluster node that can be killed and restarted on the same address.
struct Node {
    svc: Option<Service>,
    data: TempDir,
    listen: String,
    args: Vec<String>,
}

impl Node {
    fn start(url: &str, extra: &[&str]) -> Node {
        let data = TempDir::new("cluster-node");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--database-url".to_owned(), url.to_owned()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut node = Node {
            svc: None,
            data,
            listen,
            args,
        };
        node.restart();
        node
    }

    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let svc = Service::start_listening(&self.data.path().join("data"), &self.listen, &args);
        self.svc = Some(svc);
    }

    fn addr(&self) -> SocketAddr {
        self.listen.parse().expect("listen address")
    }

    fn svc(&self) -> &Service {
        self.svc.as_ref().expect("running")
    }

    fn kill9(&mut self) {
        if let Some(mut svc) = self.svc.take() {
            svc.kill9();
        }
    }
}

/// The scenario for one proxy: both nodes in rotation, one killed under load, the other
/// carrying every request, the killed one restarted and back in rotation; no failure but
/// those in flight at the kill.
fn node_killed_under_load(name: &str, start_proxy: fn(&[SocketAddr], SocketAddr) -> Option<Proxy>) {
    let _serial = one_at_a_time();
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database(name);
    let a = Node::start(&url, &[]);
    let mut b = Node::start(&url, &[]);
    let (valid, unknown) = shared_tokens(&a, &b);
    let api = EchoUpstream::start();
    let Some(proxy) = start_proxy(&[a.addr(), b.addr()], api.addr()) else {
        return;
    };
    let load = Load::start(proxy.addr, &valid, &unknown);
    both_in_rotation(&load, &a, &b);

    let killed_at = Instant::now();
    b.kill9();
    let sent_at_kill = load.sent();
    let a_at_kill = successes(a.addr());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        load.sent() > sent_at_kill + 100,
        "the clients kept going through the proxy"
    );
    assert!(successes(a.addr()) > a_at_kill + 100, "the survivor served");

    // Back on its address: the proxy takes it into rotation again (nginx after its
    // fail_timeout of 10 s, Caddy at its next health check).
    b.restart();
    wait_for(
        "checks through the proxy on the restarted node",
        Duration::from_secs(30),
        || successes(b.addr()) > 50,
    );
    let failures = load.finish();
    assert!(api.hits() > 0, "the API behind the proxy was reached");
    let late: Vec<&Failure> = failures
        .iter()
        .filter(|f| f.started > killed_at + SETTLE)
        .collect();
    assert!(
        late.is_empty(),
        "{name}: failures after the kill settled: {:?}",
        show(&late, killed_at)
    );
    assert!(
        failures.len() <= CLIENTS,
        "{name}: more failures than requests in flight at the kill: {:?}",
        show(&failures.iter().collect::<Vec<_>>(), killed_at)
    );
    eprintln!(
        "{name}: {} failed requests around the kill (at most {CLIENTS} allowed)",
        failures.len()
    );
    // The restarted node answers as it should.
    let r = Req::get("/auth/verify").bearer(&valid).send(b.addr());
    assert_eq!(r.status, 200);
    let r = Req::get("/auth/verify").bearer(&unknown).send(b.addr());
    assert_eq!(r.status, 401);
    drop(proxy);
}

/// Failures as text, each with when its request started relative to `moment` (the first
/// 20, and how many in all).
fn show(list: &[&Failure], moment: Instant) -> Vec<String> {
    let mut shown: Vec<String> = list
        .iter()
        .take(20)
        .map(|f| {
            let at = f.started.checked_duration_since(moment).map_or_else(
                || format!("-{:?}", moment - f.started),
                |d| format!("+{d:?}"),
            );
            let what: String = f.what.chars().take(120).collect();
            format!("{at}: {what}")
        })
        .collect();
    shown.push(format!("{} in all", list.len()));
    shown
}

/// Waits until the proxy's checks reach both nodes: before that, losing one proves nothing.
fn both_in_rotation(load: &Load, a: &Node, b: &Node) {
    let (a0, b0) = (successes(a.addr()), successes(b.addr()));
    wait_for("checks on both nodes", Duration::from_secs(20), || {
        successes(a.addr()) > a0 + 50 && successes(b.addr()) > b0 + 50
    });
    assert!(load.sent() > 100);
    std::thread::sleep(Duration::from_millis(300));
}

/// A valid token, and a well-formed one that was real and is deleted (refused after a
/// lookup, not for its shape), both known to both nodes.
fn shared_tokens(a: &Node, b: &Node) -> (String, String) {
    let password = std::fs::read_to_string(a.svc().data_dir.join("initial-admin-password"))
        .expect("the first node made the initial admin");
    let admin = basic_auth("admin", password.trim());
    let create = |name: &str| {
        let r = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &admin)
            .json(&serde_json::json!({ "name": name }))
            .send(a.addr());
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    };
    let (_, valid) = create("steady");
    let (gone_id, unknown) = create("deleted");
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{gone_id}"))
        .header("Authorization", &admin)
        .send(b.addr());
    assert_eq!(r.status, 204);
    for node in [a, b] {
        wait_for("the token on both nodes", Duration::from_secs(10), || {
            Req::get("/auth/verify")
                .bearer(&valid)
                .send(node.addr())
                .status
                == 200
        });
        let r = Req::get("/auth/verify").bearer(&unknown).send(node.addr());
        assert_eq!(r.status, 401);
    }
    (valid, unknown)
}

/// A TCP relay between a node and PostgreSQL that can be cut (every connection closed, new
/// ones closed at once) and restored: one node loses the database, the others keep it.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay");
        let addr = listener.local_addr().expect("relay address");
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (cut2, open2) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let mut streams = open2.lock().unwrap();
                for s in [&client, &server] {
                    streams.push(s.try_clone().expect("clone"));
                }
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The other way a node drops out: cut off from the database, it fails closed (503 on its
/// checks and /healthz) while the other node keeps the database. Through nginx not one
/// client request fails (`proxy_next_upstream … http_503` asks the other node; without it
/// auth_request turns the 503 into a 500). Through Caddy, which retries transport errors
/// only, checks can reach the client as the node's 503 until the next health check drains
/// it: none later than `drained_within` after the node went stale.
fn node_cut_off_from_the_database(
    name: &str,
    start_proxy: fn(&[SocketAddr], SocketAddr) -> Option<Proxy>,
    drained_within: Option<Duration>,
) {
    let _serial = one_at_a_time();
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database(name);
    let pg_addr: SocketAddr = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("database address");
    let relay = Relay::start(pg_addr);
    let relayed = url.replace(&pg_addr.to_string(), &relay.addr.to_string());
    // The default --max-staleness (2 s) on both.
    let a = Node::start(&url, &[]);
    let b = Node::start(&relayed, &[]);
    let (valid, unknown) = shared_tokens(&a, &b);
    let api = EchoUpstream::start();
    let Some(proxy) = start_proxy(&[a.addr(), b.addr()], api.addr()) else {
        return;
    };
    let load = Load::start(proxy.addr, &valid, &unknown);
    both_in_rotation(&load, &a, &b);

    relay.cut();
    wait_for(
        "the cut-off node to fail closed",
        Duration::from_secs(10),
        || Req::get("/healthz").send(b.addr()).status == 503,
    );
    let stale_at = Instant::now();
    assert_eq!(
        Req::get("/auth/verify")
            .bearer(&valid)
            .send(b.addr())
            .status,
        503,
        "a stale node refuses to vouch"
    );
    let a_at_stale = successes(a.addr());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        successes(a.addr()) > a_at_stale + 100,
        "the other node served"
    );

    relay.restore();
    wait_for("the node to catch up", Duration::from_secs(15), || {
        Req::get("/healthz").send(b.addr()).status == 200
    });
    let b_back = successes(b.addr());
    wait_for(
        "checks through the proxy on the recovered node",
        Duration::from_secs(30),
        || successes(b.addr()) > b_back + 50,
    );
    let failures = load.finish();
    assert!(api.hits() > 0, "the API behind the proxy was reached");
    match drained_within {
        None => assert!(
            failures.is_empty(),
            "{name}: client requests failed: {:?}\nA: {}\nB: {}",
            show(&failures.iter().collect::<Vec<_>>(), stale_at),
            a.svc().log_text(),
            b.svc().log_text()
        ),
        Some(limit) => {
            let wrong: Vec<&Failure> = failures
                .iter()
                .filter(|f| f.started > stale_at + limit || !f.what.starts_with("503 "))
                .collect();
            assert!(
                wrong.is_empty(),
                "{name}: failures other than the stale node's 503 before it was drained: {:?}",
                show(&wrong, stale_at)
            );
        }
    }
    eprintln!(
        "{name}: {} failed requests while a node was stale",
        failures.len()
    );
    drop(proxy);
}

/// nginx, the shipped config with two pa-auth servers in `upstream pa_auth`.
#[test]
fn cluster_nginx_loses_a_node_under_load_without_failing_clients() {
    node_killed_under_load("nginx_kill", |nodes, api| {
        start_nginx_nodes(nodes, api, true)
    });
}

/// Caddy, the shipped Caddyfile with both nodes after the hop's `reverse_proxy`.
#[test]
fn cluster_caddy_loses_a_node_under_load_without_failing_clients() {
    node_killed_under_load("caddy_kill", start_caddy_nodes);
}

#[test]
fn cluster_nginx_skips_a_node_that_fails_closed() {
    node_cut_off_from_the_database(
        "nginx_stale",
        |nodes, api| start_nginx_nodes(nodes, api, true),
        None,
    );
}

/// Caddy's health checks every second drain the stale node; 1.5 s allows for the probe
/// in flight.
#[test]
fn cluster_caddy_drains_a_node_that_fails_closed() {
    node_cut_off_from_the_database(
        "caddy_stale",
        start_caddy_nodes,
        Some(Duration::from_millis(1500)),
    );
}
