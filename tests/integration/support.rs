//! Test support: a raw HTTP/1.1 client over std sockets (so hostile bytes can be sent as they
//! are), and a harness that runs the real `pa-auth` binary on 127.0.0.1:0 with a temporary
//! data dir, on the embedded store or as a cluster node on PostgreSQL ([`Store`]).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the contract's error shape: code, message, correlation id in body and header.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(self.header("Content-Type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["error"], code, "body: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        let cid = v["correlationId"].as_str().expect("correlationId");
        assert_eq!(cid.len(), 32);
        assert!(cid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(self.header("X-Correlation-Id"), Some(cid));
        v
    }
}

/// Reads one response from a buffered stream. `head_request` skips the body.
pub fn read_response<R: BufRead>(
    reader: &mut R,
    head_request: bool,
) -> std::io::Result<HttpResponse> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "no response",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (n, v) = h
                .split_once(':')
                .ok_or_else(|| std::io::Error::other("bad header"))?;
            headers.push((n.to_string(), v.trim().to_string()));
        }
        if status == 100 {
            continue;
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; if head_request { 0 } else { len }];
        reader.read_exact(&mut body)?;
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> HttpResponse {
    try_raw(addr, bytes).expect("raw exchange")
}

pub fn try_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(bytes)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, bytes.starts_with(b"HEAD "))
}

/// Sends raw bytes from a chosen loopback source address (all of 127/8 is local: per-address
/// throttling and aggregation) and reads one response.
pub fn try_from_address(
    source: &str,
    to: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<HttpResponse> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&src.into())?;
    socket.connect(&to.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(bytes)?;
    read_response(&mut BufReader::new(stream), bytes.starts_with(b"HEAD "))
}

/// [`try_from_address`] that must succeed.
pub fn from_address(source: &str, to: SocketAddr, bytes: &[u8]) -> HttpResponse {
    try_from_address(source, to, bytes).expect("exchange from a chosen source address")
}

/// Reads everything until the server closes (or 30 s pass).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    all
}

/// A simple request builder for the common case.
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl<'a> Req<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Req {
            method,
            path,
            headers: Vec::new(),
            body: None,
        }
    }
    pub fn get(path: &'a str) -> Self {
        Self::new("GET", path)
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    pub fn json(mut self, v: &serde_json::Value) -> Self {
        self.body = Some(serde_json::to_vec(v).expect("json"));
        self.header("Content-Type", "application/json")
    }
    pub fn body(mut self, b: &[u8]) -> Self {
        self.body = Some(b.to_vec());
        self
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\n",
            self.method, self.path
        )
        .into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if let Some(b) = &self.body {
            out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = &self.body {
            out.extend_from_slice(b);
        }
        out
    }
    pub fn send(&self, addr: SocketAddr) -> HttpResponse {
        raw(addr, &self.to_bytes())
    }
}

/// A keep-alive connection for several requests in a row.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        Conn {
            reader: BufReader::new(s),
        }
    }
    pub fn send(&mut self, req: &Req<'_>) -> std::io::Result<HttpResponse> {
        self.reader.get_mut().write_all(&req.to_bytes())?;
        read_response(&mut self.reader, req.method == "HEAD")
    }
    pub fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }
    pub fn read(&mut self, head: bool) -> std::io::Result<HttpResponse> {
        read_response(&mut self.reader, head)
    }
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh empty directory under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pa-auth")
}

/// The real binary serving on a free loopback port.
pub struct Service {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
    _temp: Option<Arc<TempDir>>,
}

impl Service {
    /// Starts on a new temporary data dir.
    pub fn start(extra: &[&str]) -> Service {
        let temp = Arc::new(TempDir::new("svc"));
        let dir = temp.path().join("data");
        let mut s = Service::start_in(&dir, extra);
        s._temp = Some(temp);
        s
    }

    /// Starts on a given data dir (kept by the caller).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Service {
        Service::start_listening(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts on a given data dir and listen address (a node restarted where a proxy's
    /// configuration expects it).
    pub fn start_listening(data_dir: &Path, listen: &str, extra: &[&str]) -> Service {
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("PA_AUTH_LISTEN")
            .env_remove("PA_AUTH_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pa-auth");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let listening = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1));
                if let Some(rest) = listening {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                log2.lock().expect("log").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("listen addr"),
            Err(_) => {
                let _ = child.kill();
                panic!("pa-auth did not start; log: {:?}", log.lock().expect("log"));
            }
        };
        Service {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
            _temp: None,
        }
    }

    pub fn initial_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("initial-admin-password"))
            .expect("initial password file")
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal with kill(1) and waits for the exit status code.
    pub fn signal_and_wait(&mut self, signal: &str) -> Option<i32> {
        let pid = self.pid().to_string();
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("kill");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("pa-auth did not exit after SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Whether the log shows `needle` within 5 s: stderr is collected by a reader thread,
    /// so a line the server wrote before answering may not be collected yet.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !self.log_text().contains(needle) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("Basic {out}")
}

/// The `Authorization` value for the bootstrap admin of a fresh service.
pub fn admin_basic(svc: &Service) -> String {
    basic_auth("admin", &svc.initial_password())
}

/// Runs the binary with `args` (and optional stdin), without PA_AUTH_DATA_DIR from the
/// environment; returns (exit code, -1 if killed by a signal; stdout; stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("PA_AUTH_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where a served binary keeps its tokens: the embedded sled store, or (cluster mode) a
/// database of its own on the PostgreSQL server these tests share. The contract tests run on
/// both ([`on_both_stores`]).
#[derive(Clone, Debug)]
pub enum Store {
    Sled,
    Cluster { url: String },
}

impl Store {
    /// A new, empty database on the shared PostgreSQL server, or `None` (SKIPPED, loudly)
    /// without PostgreSQL; under CI=true a missing PostgreSQL fails instead.
    pub fn cluster() -> Option<Store> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let pg = shared_postgres()?;
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Some(Store::Cluster {
            url: pg.database(&format!("contract_{n}")),
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Store::Cluster { .. })
    }

    /// `extra` plus this store's own arguments.
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = extra.to_vec();
        if let Store::Cluster { url } = self {
            args.extend(["--database-url", url.as_str()]);
        }
        args
    }

    /// [`Service::start`] on this store.
    pub fn start(&self, extra: &[&str]) -> Service {
        self.check(Service::start(&self.args(extra)))
    }

    /// [`Service::start_in`] on this store: a restart in the same data dir finds the same
    /// database.
    pub fn start_in(&self, data_dir: &Path, extra: &[&str]) -> Service {
        self.check(Service::start_in(data_dir, &self.args(extra)))
    }

    /// A cluster run that is not on the database would prove nothing.
    fn check(&self, svc: Service) -> Service {
        if self.is_cluster() {
            assert!(
                svc.log_shows("using the database postgres://"),
                "not a cluster node: {}",
                svc.log_text()
            );
        }
        svc
    }
}

/// One PostgreSQL server for every cluster run of the contract tests (a database each).
/// Statics are never dropped, so a watcher process started with it stops the server and
/// removes its directory once this test process has exited, however it exits.
fn shared_postgres() -> Option<&'static crate::postgres::Postgres> {
    static SHARED: std::sync::OnceLock<Option<crate::postgres::Postgres>> =
        std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let pg = crate::postgres::Postgres::start()?;
            // Every node holds five connections; a machine with many test threads runs many
            // nodes at once (the default limit is 100).
            pg.client("postgres")
                .batch_execute("ALTER SYSTEM SET max_connections = 500")
                .expect("max_connections");
            pg.stop_server();
            pg.start_server();
            let pg_ctl = pg.bin.join("pg_ctl");
            let stop = format!(
                "{}'{}' -D '{}' -m immediate stop",
                if pg.as_postgres {
                    "runuser -u postgres -- "
                } else {
                    ""
                },
                pg_ctl.display(),
                pg.data().display()
            );
            let script = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{dir}'",
                pid = std::process::id(),
                dir = pg.dir.display()
            );
            // In the background of a shell that exits at once: the watcher outlives this
            // process and is nobody's zombie.
            let started = Command::new("sh")
                .args(["-c", &format!("( {script} ) </dev/null >/dev/null 2>&1 &")])
                .status()
                .is_ok_and(|s| s.success());
            assert!(started, "the shared PostgreSQL's watcher");
            Some(pg)
        })
        .as_ref()
}

/// Turns contract tests written once, as `fn name(store: &Store)`, into two tests each:
/// `name::sled` and `name::cluster` (a cluster node on a new database of the shared
/// PostgreSQL; skipped loudly without it, failed under CI=true).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sled() {
                super::$name(&crate::support::Store::Sled);
            }

            #[test]
            fn cluster() {
                let Some(store) = crate::support::Store::cluster() else {
                    return;
                };
                super::$name(&store);
            }
        }
    )*};
}
pub(crate) use on_both_stores;
