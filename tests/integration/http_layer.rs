//! Issue 2: the HTTP layer on real loopback sockets, with raw bytes for the hostile cases.
//! After every hostile case the server must still answer a normal request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pa_auth::http::{Handler, Request, Response, Server, ServerConfig};

use crate::support::{raw, read_to_close, Conn, Req};

/// Echo handler: reports what it saw; `/panic` panics, `/bad-header` writes CR/LF, `/slow`
/// sleeps, `/early` rejects before reading a body.
struct TestHandler;

impl Handler for TestHandler {
    fn handle(&self, req: &Request<'_>) -> Response {
        match req.path() {
            "/panic" => panic!("test panic"),
            "/bad-header" => Response::new(200).header("X-Name", "a\r\nSet-Cookie: evil=1"),
            "/slow" => {
                std::thread::sleep(Duration::from_millis(700));
                Response::new(200).body(b"slow done".to_vec())
            }
            "/fixed" => Response::new(200).body(b"fixed body".to_vec()),
            "/big" => Response::new(200).body(vec![b'x'; 4 * 1024 * 1024]),
            _ => Response::json(
                200,
                &serde_json::json!({
                    "method": req.method(),
                    "path": req.path(),
                    "query": req.query(),
                    "bodyLen": req.body().len(),
                    "body": String::from_utf8_lossy(req.body()),
                }),
            ),
        }
    }

    fn respond_before_body(&self, req: &Request<'_>) -> Option<Response> {
        (req.path() == "/early").then(|| Response::new(403).body(b"no".to_vec()))
    }

    /// Everything but `/slow` and `/pool/*` runs on the event loops, so most cases here
    /// exercise the loop lane and bodies, `/slow` and `/pool/*` the hand-over to the pool.
    fn serves_inline(&self, req: &Request<'_>) -> bool {
        !(req.path() == "/slow" || req.path().starts_with("/pool/"))
    }
}

fn start(config: ServerConfig) -> Server {
    Server::start("127.0.0.1:0", config, TestHandler).expect("server")
}

fn test_config() -> ServerConfig {
    ServerConfig {
        workers: 8,
        // The service's error format for the layer's own refusals, as `serve` sets it.
        refusal: pa_auth::web::error::refusal,
        ..ServerConfig::default()
    }
}

fn assert_serves(addr: SocketAddr) {
    let r = Req::get("/ok").send(addr);
    assert_eq!(r.status, 200, "server stopped serving normal requests");
    assert_eq!(r.json()["path"], "/ok");
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut conn = Conn::open(addr);
    for i in 0..3 {
        let r = conn.send(&Req::get(&format!("/seq/{i}"))).unwrap();
        assert_eq!(r.json()["path"], format!("/seq/{i}"));
        assert_eq!(r.header("Connection"), Some("keep-alive"));
    }
    // Three requests in one write, one with a body: answers come back in order.
    let mut pipelined = Vec::new();
    pipelined.extend(Req::get("/p/1").to_bytes());
    pipelined.extend(Req::new("POST", "/p/2").body(b"hello").to_bytes());
    pipelined.extend(Req::get("/p/3").to_bytes());
    conn.write(&pipelined);
    for (i, len) in [(1, 0), (2, 5), (3, 0)] {
        let r = conn.read(false).unwrap();
        assert_eq!(r.json()["path"], format!("/p/{i}"));
        assert_eq!(r.json()["bodyLen"], len);
    }
    // The event loop answers a 4 MiB body the client reads slowly, then hands the connection
    // to the pool at /pool/1, which serves it from then on: still in order.
    let mut pipelined = Vec::new();
    for path in ["/big", "/pool/1", "/p/2"] {
        pipelined.extend(Req::get(path).to_bytes());
    }
    conn.write(&pipelined);
    std::thread::sleep(Duration::from_millis(200));
    let big = conn.read(false).unwrap();
    assert_eq!(big.body.len(), 4 * 1024 * 1024);
    for path in ["/pool/1", "/p/2"] {
        assert_eq!(conn.read(false).unwrap().json()["path"], path);
    }
    assert!(server.shutdown());
}

#[test]
fn http10_and_connection_close_end_the_connection() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\n\r\n").unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("Connection: close"));

    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert_eq!(
        all.matches("HTTP/1.1 200").count(),
        1,
        "second request must not be served"
    );

    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
        .unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert_eq!(
        all.matches("HTTP/1.1 200").count(),
        2,
        "HTTP/1.0 keep-alive: {all}"
    );
    assert!(server.shutdown());
}

#[test]
fn head_has_headers_but_no_body() {
    let server = start(test_config());
    let addr = server.local_addr();
    let get = Req::get("/fixed").send(addr);
    let mut conn = Conn::open(addr);
    let head = conn.send(&Req::new("HEAD", "/fixed")).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), get.header("Content-Length"));
    assert!(head.body.is_empty());
    // The connection is still in sync: nothing of a body was written.
    assert_eq!(
        conn.send(&Req::get("/after")).unwrap().json()["path"],
        "/after"
    );
    assert!(server.shutdown());
}

#[test]
fn expect_100_continue_only_when_body_is_read() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /accept HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abcd").unwrap();
    let mut reader = std::io::BufReader::new(s);
    let r = crate::support::read_response(&mut reader, false).unwrap();
    assert_eq!(r.json()["bodyLen"], 4);

    // Early rejection: no 100, a final answer, connection closed, body never needed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 60000\r\n\r\n",
    )
    .unwrap();
    let all = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(all.starts_with("HTTP/1.1 403"), "{all}");
    assert!(!all.contains("100 Continue"));
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn huge_content_length_is_413_without_reading() {
    let server = start(test_config());
    let addr = server.local_addr();
    for cl in ["1000000000000", "18446744073709551615", "65537"] {
        let r = raw(
            addr,
            format!("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n").as_bytes(),
        );
        r.assert_error(413, "payload_too_large");
        assert_eq!(r.header("Connection"), Some("close"));
        assert_serves(addr);
    }
    // Exactly the limit is fine.
    let body = vec![b'a'; 64 * 1024];
    let r = Req::new("POST", "/x").body(&body).send(addr);
    assert_eq!(r.json()["bodyLen"], 64 * 1024);
    assert!(server.shutdown());
}

#[test]
fn smuggling_attempts_are_400_and_close() {
    let server = start(test_config());
    let addr = server.local_addr();
    let cases: &[&[u8]] = &[
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(case).unwrap();
        let all = String::from_utf8_lossy(&read_to_close(&mut s)).into_owned();
        assert!(
            all.starts_with("HTTP/1.1 400"),
            "{}: {all}",
            String::from_utf8_lossy(case)
        );
        assert!(all.contains("\"error\":\"validation_error\""));
        assert!(!all.contains("smuggled"), "smuggled request was served");
        assert_eq!(all.matches("HTTP/1.1").count(), 1);
        assert_serves(addr);
    }
    assert!(server.shutdown());
}

#[test]
fn bad_request_lines_and_bytes_get_clear_errors() {
    let server = start(test_config());
    let addr = server.local_addr();
    raw(addr, b"GET / HTTP/1.1\nHost: x\n\n").assert_error(400, "validation_error");
    raw(addr, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").assert_error(505, "http_version_not_supported");
    raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").assert_error(505, "http_version_not_supported");
    raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n")
        .assert_error(400, "validation_error");
    raw(addr, b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n").assert_error(400, "validation_error");
    // Issue 14, item 12: NUL in a field value is refused, never replaced by SP (which let
    // `Bearer\0<token>` authenticate and `chunked\0` frame a body).
    raw(addr, b"GET /nul HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n")
        .assert_error(400, "validation_error");
    raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-\xff: b\r\n\r\n")
        .assert_error(400, "validation_error");
    raw(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .assert_error(400, "validation_error");
    raw(addr, b"GET / HTTP/1.1\r\n\r\n").assert_error(400, "validation_error");
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn oversized_heads_are_431() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    raw(addr, many.as_bytes()).assert_error(431, "request_header_fields_too_large");
    // A 200 MB header line: the server answers 431 after 16 KiB and stops reading.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ");
            let chunk = vec![b'a'; 1024 * 1024];
            for _ in 0..200 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut reader = std::io::BufReader::new(s);
    let r = crate::support::read_response(&mut reader, false).unwrap();
    r.assert_error(431, "request_header_fields_too_large");
    drop(reader);
    let _ = writer.join();
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn chunked_bodies_are_decoded_and_capped() {
    let server = start(test_config());
    let addr = server.local_addr();
    let mut conn = Conn::open(addr);
    conn.write(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = conn.read(false).unwrap();
    assert_eq!(r.json()["body"], "Wikipedia");
    assert_eq!(conn.read(false).unwrap().json()["path"], "/next");

    // One-byte chunks of a 64 KiB body fit; one more byte does not.
    let mut big = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..(64 * 1024) {
        big.extend_from_slice(b"1\r\nz\r\n");
    }
    let mut over = big.clone();
    big.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(addr, &big).json()["bodyLen"], 64 * 1024);
    over.extend_from_slice(b"1\r\nz\r\n0\r\n\r\n");
    raw(addr, &over).assert_error(413, "payload_too_large");
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn slowloris_is_dropped_at_the_header_deadline() {
    let config = ServerConfig {
        header_timeout: Duration::from_secs(1),
        ..test_config()
    };
    let server = start(config);
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = b"GET /slow-loris HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut answer = Vec::new();
    for b in request.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 1024];
        if let Ok(n) = s.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || !answer.is_empty() {
                break;
            }
        }
        let _ = s.set_nonblocking(false);
    }
    let _ = s.set_nonblocking(false);
    answer.extend(read_to_close(&mut s));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let server = start(config);
    let addr = server.local_addr();
    let mut conn = Conn::open(addr);
    conn.send(&Req::get("/a")).unwrap();
    let rest = read_to_close(conn.stream());
    assert!(rest.is_empty(), "idle close sends nothing");
    assert!(server.shutdown());
}

#[test]
fn connection_cap_answers_503_and_recovers() {
    let config = ServerConfig {
        max_connections: 20,
        ..test_config()
    };
    let server = start(config);
    let addr = server.local_addr();
    // Twenty clients that started a head and stalled hold every allowed connection.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /stalled HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = raw(addr, &Req::get("/over").to_bytes());
    r.assert_error(503, "service_unavailable");
    assert!(r.header("Retry-After").is_some());
    drop(stalled);
    std::thread::sleep(Duration::from_millis(300));
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn two_thousand_idle_connections_do_not_starve_a_real_client() {
    let server = start(test_config());
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_serves(addr);
    assert!(server.stats().open_connections <= 2001);
    drop(idle);
    assert!(server.shutdown());
}

#[test]
fn a_client_pipelining_without_pause_does_not_starve_its_loop() {
    // One event loop, so the flooder and the normal client share it.
    let server = start(ServerConfig {
        event_loops: 1,
        ..test_config()
    });
    let addr = server.local_addr();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flood = TcpStream::connect(addr).unwrap();
    let mut drain = flood.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
    });
    let writer = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let batch = Req::get("/flood").to_bytes().repeat(256);
            let until = std::time::Instant::now() + Duration::from_secs(4);
            while std::time::Instant::now() < until && flood.write_all(&batch).is_ok() {}
            flooding.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = flood.shutdown(std::net::Shutdown::Both);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // Twenty requests on a fresh connection are all answered while the flood goes on.
    let mut conn = Conn::open(addr);
    for i in 0..20 {
        let r = conn.send(&Req::get(&format!("/during/{i}"))).unwrap();
        assert_eq!(r.json()["path"], format!("/during/{i}"));
    }
    assert!(
        flooding.load(std::sync::atomic::Ordering::SeqCst),
        "the other connection was only served after the flood ended"
    );
    writer.join().unwrap();
    reader.join().unwrap();
    assert!(server.shutdown());
}

#[test]
fn client_reset_mid_response_leaves_the_server_serving() {
    let server = start(test_config());
    let addr = server.local_addr();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&Req::get("/big").to_bytes()).unwrap();
        let mut buf = [0u8; 100];
        let _ = s.read(&mut buf);
        drop(s);
    }
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn handler_panic_is_500_and_the_worker_lives() {
    let server = start(ServerConfig {
        workers: 1,
        ..test_config()
    });
    let addr = server.local_addr();
    let mut conn = Conn::open(addr);
    for _ in 0..3 {
        conn.send(&Req::get("/panic"))
            .unwrap()
            .assert_error(500, "server_error");
        // A 500 from a panic keeps the connection usable.
        assert_eq!(conn.send(&Req::get("/fine")).unwrap().status, 200);
    }
    assert_serves(addr);
    assert!(server.shutdown());
}

#[test]
fn header_injection_by_a_handler_becomes_500() {
    let server = start(test_config());
    let addr = server.local_addr();
    let r = Req::get("/bad-header").send(addr);
    r.assert_error(500, "server_error");
    assert!(r.header("Set-Cookie").is_none());
    assert!(r.header("X-Name").is_none());
    assert!(server.shutdown());
}

#[test]
fn responses_carry_date_and_no_server_banner() {
    let server = start(test_config());
    let r = Req::get("/x").send(server.local_addr());
    assert!(r.header("Date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(r.header("Server").is_none());
    assert_eq!(r.header("X-Correlation-Id").map(str::len), Some(32));
    // A proxy's 32-hex request id is adopted as the correlation id.
    let cid = "0123456789abcdef0123456789abcdef";
    let r = Req::get("/x")
        .header("X-Correlation-Id", cid)
        .send(server.local_addr());
    assert_eq!(r.header("X-Correlation-Id"), Some(cid));
    assert!(server.shutdown());
}

#[test]
fn shutdown_lets_in_flight_requests_finish() {
    let server = start(test_config());
    let addr = server.local_addr();
    let client = std::thread::spawn(move || Req::get("/slow").send(addr));
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.shutdown(), "drain timed out");
    let r = client.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");
}

/// A handler whose every hook but the answer panics on `/hooks-panic`: the access log
/// (`observe`), the lane question (`serves_inline`) and the body vouching. Found as a class
/// after a panic in the access log's redaction stopped an event loop: every call into the
/// handler is guarded, and the server keeps answering on every connection.
struct PanickyHooks;

impl Handler for PanickyHooks {
    fn handle(&self, _req: &Request<'_>) -> Response {
        Response::new(200).body(b"ok".to_vec())
    }

    fn serves_inline(&self, req: &Request<'_>) -> bool {
        if req.path() == "/hooks-panic" {
            panic!("serves_inline panic");
        }
        true
    }

    fn vouches_for_body(&self, req: &Request<'_>) -> bool {
        if req.path() == "/hooks-panic" {
            panic!("vouches_for_body panic");
        }
        false
    }

    fn observe(&self, exchange: &pa_auth::http::Exchange<'_>) {
        if exchange.path == "/hooks-panic" {
            panic!("observe panic");
        }
    }
}

#[test]
fn a_panicking_hook_never_stops_an_event_loop() {
    let config = ServerConfig {
        event_loops: 1,
        ..test_config()
    };
    let server = Server::start("127.0.0.1:0", config, PanickyHooks).expect("server");
    let addr = server.local_addr();
    for _ in 0..5 {
        let r = Req::new("POST", "/hooks-panic").body(b"x").send(addr);
        assert!(matches!(r.status, 200 | 500), "{}", r.status);
        let r = Req::get("/hooks-panic").send(addr);
        assert!(matches!(r.status, 200 | 500), "{}", r.status);
    }
    // The one loop still answers.
    assert_eq!(Req::get("/fine").send(addr).status, 200);
    server.shutdown();
}
