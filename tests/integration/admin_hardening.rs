//! Issue 14 (admin side): bounded Argon2 memory under a flood of Basic logins, the login
//! throttle under concurrent guesses, API tokens sent to admin routes (counted, audited,
//! throttled), `--public-url` behind a TLS-terminating proxy, and `Expect: 100-continue`
//! on admin routes without any credential.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{basic_auth, read_response, HttpResponse, Req, Service};

/// Sends a request from a chosen loopback source address (per-address throttling).
fn from_address(source: &str, to: SocketAddr, bytes: &[u8]) -> std::io::Result<HttpResponse> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&src.into())?;
    socket.connect(&to.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(bytes)?;
    read_response(&mut BufReader::new(stream), false)
}

/// Runs `n` copies of `f` at once (released together) and collects their results.
fn all_at_once<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

#[test]
fn regression_issue_14_concurrent_wrong_basic_passwords_get_five_guesses() {
    let svc = Service::start(&[]);
    let addr = svc.addr;
    let wrong = Req::get("/admin/api/tokens")
        .header("Authorization", &basic_auth("admin", "wrong password!"))
        .to_bytes();
    let statuses = all_at_once(60, move |_| {
        from_address("127.0.0.9", addr, &wrong)
            .expect("exchange")
            .status
    });
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        unauthorized <= 5,
        "{unauthorized} guesses were checked: {statuses:?}"
    );
    assert_eq!(unauthorized + throttled, 60, "{statuses:?}");
    // Still locked afterwards, even for the right password; other addresses are not.
    let right = Req::get("/admin/api/tokens")
        .header(
            "Authorization",
            &basic_auth("admin", &svc.initial_password()),
        )
        .to_bytes();
    let r = from_address("127.0.0.9", addr, &right).expect("exchange");
    r.assert_error(429, "too_many_requests");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(
        from_address("127.0.0.10", addr, &right)
            .expect("exchange")
            .status,
        200
    );
}
