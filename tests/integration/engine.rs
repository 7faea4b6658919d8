//! Issue 15: the one connection engine, on real sockets against the real binary. Slow TLS
//! handshakes and trickled bodies cost a buffer each and are dropped at their deadlines while
//! HTTPS, the admin API and forward-auth keep answering; the head deadline counts from
//! accept; every refusal by the HTTP layer is logged and counted once.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::appliance::{make_certificate, tls_client};
use crate::support::{admin_basic, raw, Conn, Req, Service, TempDir};

/// The bytes of a real ClientHello for 127.0.0.1 (what a slow client would trickle).
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// One HTTPS request on a new connection; returns the status and how long it took.
fn https_status(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> (u16, Duration) {
    let started = Instant::now();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let status = String::from_utf8_lossy(&response)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i]
}

/// Sockets that send `bytes` one byte every 100 ms (never finishing) until the server closes
/// them; returns how long after connecting each was closed (None: still open at the end).
fn trickle(
    addr: SocketAddr,
    clients: usize,
    bytes: &[u8],
    give_up: Duration,
) -> Vec<Option<Duration>> {
    let started = Instant::now();
    let mut socks: Vec<(TcpStream, Instant, Option<Duration>)> = (0..clients)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, Instant::now(), None)
        })
        .collect();
    let mut sent = 0;
    while started.elapsed() < give_up && socks.iter().any(|s| s.2.is_none()) {
        for (sock, opened, closed) in socks.iter_mut().filter(|s| s.2.is_none()) {
            let mut sink = [0u8; 1024];
            let gone = match sock.read(&mut sink) {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let gone =
                gone || (sent < bytes.len() - 1 && sock.write_all(&bytes[sent..sent + 1]).is_err());
            if gone {
                *closed = Some(opened.elapsed());
            }
        }
        sent = (sent + 1).min(bytes.len() - 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    socks.into_iter().map(|s| s.2).collect()
}

#[test]
fn issue_15_trickled_tls_handshakes_are_dropped_at_the_deadline_while_https_serves() {
    let temp = TempDir::new("engine-tls");
    let Some((cert, key)) = make_certificate(temp.path(), "engine") else {
        return;
    };
    let svc = Service::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--header-timeout",
        "3",
    ]);
    let config = tls_client(&cert);
    let hello = client_hello(&config);
    for clients in [64, 500] {
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let prober = {
            let (stop, latencies, config) = (
                Arc::clone(&stop),
                Arc::clone(&latencies),
                Arc::clone(&config),
            );
            let addr = svc.addr;
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let (status, took) = https_status(addr, &config, "/healthz");
                    assert_eq!(status, 200, "HTTPS failed during the trickle");
                    latencies.lock().unwrap().push(took);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let closed = trickle(svc.addr, clients, &hello, Duration::from_secs(8));
        stop.store(true, Ordering::SeqCst);
        prober.join().unwrap();
        for (i, c) in closed.iter().enumerate() {
            let c = c.unwrap_or_else(|| panic!("trickling client {i} of {clients} never dropped"));
            assert!(
                c >= Duration::from_millis(2_800) && c <= Duration::from_millis(4_500),
                "client {i} of {clients} dropped after {c:?}, deadline 3 s"
            );
        }
        let mut samples = latencies.lock().unwrap().clone();
        assert!(samples.len() >= 20, "too few probes: {}", samples.len());
        let p99 = percentile(&mut samples, 0.99);
        eprintln!(
            "{clients} trickling TLS clients: {} HTTPS probes, p99 {p99:?}",
            samples.len()
        );
        // The goal is p99 under 50 ms (the closing note and README report the measured
        // figure); tests never assert timing goals on a shared machine, only that nothing
        // starves: before issue 15, 64 trickling clients stopped HTTPS entirely.
        assert!(
            p99 < Duration::from_secs(1),
            "HTTPS starved: p99 {p99:?} with {clients} trickling"
        );
    }
}

#[test]
fn issue_15_trickled_bodies_and_idle_connections_do_not_starve_admin_or_forward_auth() {
    let svc = Service::start(&[]);
    let auth = admin_basic(&svc);
    let token = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &auth)
        .json(&json!({"name": "still works"}))
        .send(svc.addr);
    assert_eq!(token.status, 201);
    let secret = token.json()["token"].as_str().unwrap().to_string();
    // 400 idle keep-alive connections (each made one request), 400 trickling bodies.
    let mut idle: Vec<Conn> = (0..400)
        .map(|_| {
            let mut c = Conn::open(svc.addr);
            assert_eq!(c.send(&Req::get("/healthz")).unwrap().status, 200);
            c
        })
        .collect();
    let mut bodies: Vec<TcpStream> = (0..400)
        .map(|i| {
            let mut s = TcpStream::connect(svc.addr).unwrap();
            let path = if i % 2 == 0 { "/admin/api/session" } else { "/anything" };
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{"
            )
            .unwrap();
            s
        })
        .collect();
    let mut admin = Vec::new();
    let mut verify = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(4) {
        round += 1;
        let t = Instant::now();
        let created = Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({"name": format!("leak {round}")}))
            .send(svc.addr);
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_string();
        let t_delete = Instant::now();
        let deleted = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &auth)
            .send(svc.addr);
        assert_eq!(deleted.status, 204);
        admin.push(t_delete.elapsed());
        let _ = t;
        let t = Instant::now();
        assert_eq!(
            Req::get("/auth/verify")
                .bearer(&secret)
                .send(svc.addr)
                .status,
            200
        );
        verify.push(t.elapsed());
        for s in bodies.iter_mut().step_by(7) {
            let _ = s.write_all(b" ");
        }
    }
    let admin_p99 = percentile(&mut admin, 0.99);
    let verify_p99 = percentile(&mut verify, 0.99);
    eprintln!(
        "{} admin deletes p99 {admin_p99:?}, {} verifications p99 {verify_p99:?}",
        admin.len(),
        verify.len()
    );
    // Goals: p99 under 100 ms (reported, not asserted: shared machine). Asserted: nothing
    // starves; before issue 15 the admin request waited as long as the attack lasted.
    assert!(
        admin_p99 < Duration::from_secs(1),
        "admin DELETE starved: p99 {admin_p99:?}"
    );
    assert!(
        verify_p99 < Duration::from_secs(1),
        "forward-auth starved: p99 {verify_p99:?}"
    );
    // The idle ones were closed by the idle timeout or still answer; none is stuck mid-request.
    for c in idle.iter_mut().take(3) {
        let _ = c.send(&Req::get("/healthz"));
    }
    let threads = std::fs::read_to_string(format!("/proc/{}/status", svc.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .map(|n| n.parse::<usize>().unwrap())
        })
        .unwrap();
    assert!(
        threads < 64,
        "{threads} threads: connections must not cost threads"
    );
}

#[test]
fn issue_15_head_deadline_counts_from_accept() {
    let svc = Service::start(&["--header-timeout", "3"]);
    let mut s = TcpStream::connect(svc.addr).unwrap();
    let accepted = Instant::now();
    std::thread::sleep(Duration::from_millis(2_800));
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = Vec::new();
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
        if accepted.elapsed() > Duration::from_secs(8) {
            break;
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    // The answer is read at most ~1 s after it was sent (the client sleeps between bytes).
    let dropped = accepted.elapsed();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        dropped < Duration::from_millis(4_100),
        "dropped {dropped:?} after accept, deadline 3 s"
    );
}

#[test]
fn issue_15_every_refusal_is_logged_and_counted_once() {
    let svc = Service::start(&["--header-timeout", "2", "--max-connections", "40"]);
    let cases: [(&[u8], u16); 4] = [
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            400,
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
            413,
        ),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408),
    ];
    for (bytes, status) in cases {
        assert_eq!(raw(svc.addr, bytes).status, status);
    }
    let mut long = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
    long.extend(vec![b'a'; 20_000]);
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw(svc.addr, &long).status, 431);
    // Over the connection cap: 503. 45 connections against a cap of 40: at least five are
    // answered 503 at once (more if a connection above still lingers), each logged and
    // counted once.
    let mut held: Vec<TcpStream> = (0..45)
        .map(|_| TcpStream::connect(svc.addr).unwrap())
        .collect();
    let mut refused = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 16];
        if matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[..12] == b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert!(
        refused >= 5,
        "only {refused} of 45 refused with a cap of 40"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let metrics = Req::get("/metrics").send(svc.addr).text();
    for (status, times) in [
        (400, 1),
        (408, 1),
        (413, 1),
        (431, 1),
        (503, refused),
        (505, 1),
    ] {
        let line =
            format!("pa_auth_http_requests_total{{route=\"other\",status=\"{status}\"}} {times}\n");
        assert!(metrics.contains(&line), "missing {line}\n{metrics}");
        let logged = format!("status={status} ");
        assert!(svc.log_shows(&logged), "no log line with {logged}");
        let n = svc
            .log_text()
            .lines()
            .filter(|l| l.contains(" refused ") && l.contains(&logged))
            .count();
        assert_eq!(
            n,
            times,
            "status {status} logged {n} times:\n{}",
            svc.log_text()
        );
    }
}

/// A connection from a chosen loopback source address, nothing sent.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&src.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Whether the server answered this connection 503 at once (over a cap). Call after giving
/// the server a moment to answer: this only looks at what has arrived.
fn refused_at_once(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    matches!(stream.read(&mut buf), Ok(n) if n >= 12 && &buf[..12] == b"HTTP/1.1 503")
}

#[test]
fn issue_15_per_address_caps_and_the_room_kept_for_the_proxy() {
    let svc = Service::start(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-connections",
        "512",
    ]);
    // Connections: 256 from one address that is not a proxy, the next one refused.
    let mut held: Vec<TcpStream> = (0..256)
        .map(|_| connect_from("127.0.0.2", svc.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect_from("127.0.0.2", svc.addr);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        refused_at_once(&mut extra),
        "257th connection from one address accepted"
    );
    // Seven eighths of 512 is 448: a second address gets 192 more, then nothing.
    let mut second: Vec<TcpStream> = (0..200)
        .map(|_| connect_from("127.0.0.3", svc.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = second
        .iter_mut()
        .map(refused_at_once)
        .filter(|&r| r)
        .count();
    assert_eq!(refused, 8, "the room kept for the proxy was given away");
    // The proxy still gets in.
    assert_eq!(Req::get("/healthz").send(svc.addr).status, 200);
    drop(held.drain(..));
    drop(second);
    std::thread::sleep(Duration::from_millis(300));
    // Bodies in flight: 16 from one address, the 17th refused before its body is read.
    let mut bodies: Vec<TcpStream> = (0..17)
        .map(|_| {
            let mut s = connect_from("127.0.0.4", svc.addr);
            s.write_all(
                b"POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = bodies
        .iter_mut()
        .map(refused_at_once)
        .filter(|&r| r)
        .count();
    assert_eq!(
        refused, 1,
        "bodies in flight from one address are not capped at 16"
    );
    let r = Req::new("POST", "/admin/api/session")
        .json(&json!({"username": "admin", "password": svc.initial_password()}))
        .send(svc.addr);
    assert_eq!(r.status, 200, "the proxy's body was refused: {}", r.text());
}

/// Sixth outside attack (medium): eight addresses of one network, sixteen trickled login
/// bodies each, took all 128 places an unvouched body may have, and every admin login from
/// anywhere got 503 for as long as they kept it up. Bodies in flight are counted per /24
/// (IPv6: /64): that network gets sixteen, and a login from elsewhere goes through.
#[test]
fn many_addresses_of_one_network_cannot_take_every_login_place() {
    let svc = Service::start(&["--trusted-proxies", "none"]);
    let mut held = Vec::new();
    for a in 2..=9 {
        for _ in 0..16 {
            let mut s = connect_from(&format!("127.0.0.{a}"), svc.addr);
            s.write_all(
                b"POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{",
            )
            .unwrap();
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let refused = held.iter_mut().map(refused_at_once).filter(|&r| r).count();
    assert_eq!(refused, 128 - 16, "one /24 held more than 16 bodies");
    let mut login = connect_from("127.0.1.200", svc.addr);
    let body =
        serde_json::to_vec(&json!({"username": "admin", "password": svc.initial_password()}))
            .unwrap();
    write!(
        login,
        "POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    login.write_all(&body).unwrap();
    login
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 12];
    login.read_exact(&mut head).unwrap();
    assert_eq!(
        &head, b"HTTP/1.1 200",
        "a login from another network was refused"
    );
    drop(held);
}

/// The second outside review: wrong Basic passwords and made-up cookies trickling bodies held
/// every body place (an admin's token create got 503), and a request whose body was still
/// arriving at SIGTERM was never answered (the workers had already stopped).
#[test]
fn issue_15_unauthenticated_bodies_take_half_the_places_and_sigterm_answers_a_body_in_flight() {
    let mut svc = Service::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let auth = admin_basic(&svc);
    // One successful check: this Basic credential is now remembered (known good).
    assert_eq!(
        Req::get("/admin/api/tokens")
            .header("Authorization", &auth)
            .send(svc.addr)
            .status,
        200
    );
    let wrong = crate::support::basic_auth("admin", "not the password");
    let trickle = |source: &str, header: &str| {
        let mut s = connect_from(source, svc.addr);
        write!(
            s,
            "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\n{header}\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{{\"na"
        )
        .unwrap();
        s
    };
    // A made-up session cookie and no Authorization: 401 before the body.
    let mut fake = trickle(
        "127.0.3.1",
        "Cookie: pa_session=deadbeefdeadbeefdeadbeefdeadbeef",
    );
    fake.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    fake.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    // 9 networks x 16 wrong-password bodies: only half the 256 places are theirs. (Bodies
    // are counted per /24: each sender is in a network of its own.)
    let mut held = Vec::new();
    for a in 1..=9 {
        for _ in 0..16 {
            held.push(trickle(
                &format!("127.0.{}.1", 10 + a),
                &format!("Authorization: {wrong}"),
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let refused = held.iter_mut().map(refused_at_once).filter(|&r| r).count();
    assert_eq!(
        refused,
        144 - 128,
        "unvouched bodies were not held to half the places"
    );
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &auth)
        .json(&json!({"name": "during the trickle"}))
        .send(svc.addr);
    assert_eq!(created.status, 201, "{}", created.text());
    drop(held);
    // SIGTERM while a request's body is still arriving: it is answered, then the exit.
    let mut s = TcpStream::connect(svc.addr).unwrap();
    let body = br#"{"name":"sent across SIGTERM"}"#;
    write!(
        s,
        "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let rest = body[5..].to_vec();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(&rest).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let started = Instant::now();
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let took = started.elapsed();
    let answer = finisher.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "the drain waited {took:?} for a request it never answered"
    );
}
