//! Issue 20: the CLI against the running server through its control socket. Every command
//! answers alike live and offline (same output, same exit codes); the socket refuses users
//! other than root and the service's own (audited); hostile local clients (garbage, huge
//! frames, slow ones, a thousand that connect and hang up) cost bounded memory and threads.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Replaces what differs between two runs (ids, secrets, times, digests) with placeholders.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| c.is_whitespace() || "\",[]{};()".contains(c)) {
        let (core, tail) = word.split_at(
            word.trim_end_matches(|c: char| c.is_whitespace() || "\",[]{};()".contains(c))
                .len(),
        );
        let is_uuid = core.len() == 36 && core.chars().filter(|c| *c == '-').count() == 4;
        let is_secret = core.starts_with("pa_") && core.len() == 49;
        let is_time = core.len() == 20 && core.ends_with('Z') && core.contains('T');
        let is_hex = core.len() >= 32 && core.chars().all(|c| c.is_ascii_hexdigit());
        let is_date = core.len() == 10
            && core.as_bytes().get(4) == Some(&b'-')
            && core.as_bytes().get(7) == Some(&b'-');
        out.push_str(match () {
            _ if is_uuid => "<id>",
            _ if is_secret => "<secret>",
            _ if is_time => "<time>",
            _ if is_hex => "<hex>",
            _ if is_date => "<date>",
            _ => core,
        });
        out.push_str(tail);
    }
    out
}

/// (exit code, stdout, stderr without log timestamps), normalized.
fn cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let (code, out, err) = run_cli(args, stdin);
    let err: Vec<String> = err
        .lines()
        .map(|l| {
            // `2026-12-02T19:29:28Z ERROR message` → `ERROR message`
            l.split_once(' ')
                .filter(|(t, _)| t.ends_with('Z'))
                .map_or(l, |(_, rest)| rest)
                .to_owned()
        })
        .collect();
    (code, normalize(&out), normalize(&err.join("\n")))
}

/// The same session of commands against `dir` (live when a server holds it): what each
/// printed and its exit code.
fn session(dir: &Path) -> Vec<(String, (i32, String, String))> {
    let d = dir.to_str().unwrap();
    let mut seen = Vec::new();
    let mut run = |label: &str, args: &[&str], stdin: Option<&str>| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--data-dir", d]);
        let (code, out, err) = cli(&full, stdin);
        // The two runs' directories differ, and the live server's audit log holds more
        // (its start, the requests' own events): neither is the command's doing.
        let tmp = dir.parent().unwrap().to_str().unwrap();
        let steady = |t: &str| {
            let t = t.replace(tmp, "<tmp>");
            if let Some(at) = t.find("\"auditEvents\": ") {
                let end = t[at..].find(',').map_or(t.len(), |e| at + e);
                return format!("{}\"auditEvents\": <n>{}", &t[..at], &t[end..]);
            }
            match t.split_once(" admins, ") {
                Some((head, tail)) if tail.contains("audit events") => {
                    format!("{head} admins, <n> audit events")
                }
                _ => t,
            }
        };
        let result = (code, steady(&out), steady(&err));
        seen.push((label.to_owned(), result.clone()));
        result
    };
    let create = &[
        "token",
        "create",
        "--name",
        "alpha",
        "--expires",
        "2999-01-01",
    ];
    let (code, secret_line, _) = run("create", create, None);
    assert_eq!(code, 0);
    assert_eq!(secret_line, "<secret>\n");
    run(
        "create --json",
        &[
            "token", "create", "--name", "beta", "--owner", "ops", "--json",
        ],
        None,
    );
    run(
        "create conflict",
        &["token", "create", "--name", "ALPHA"],
        None,
    );
    run("create bad name", &["token", "create", "--name", ""], None);
    run(
        "create bad expiry",
        &["token", "create", "--name", "x", "--expires", "yesterday"],
        None,
    );
    run(
        "create bad cidr",
        &[
            "token",
            "create",
            "--name",
            "x",
            "--allowed-cidr",
            "10.0.0.1/8",
        ],
        None,
    );
    run("list", &["token", "list"], None);
    let (_, _, _) = run("list --json", &["token", "list", "--json"], None);
    let (_, list, _) = run_cli(&["token", "list", "--json", "--data-dir", d], None);
    let list: Value = serde_json::from_str(&list).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alpha")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run("get", &["token", "get", &id], None);
    run("get --json", &["token", "get", &id, "--json"], None);
    run(
        "get unknown",
        &["token", "get", "0f8e6c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"],
        None,
    );
    run("get not an id", &["token", "get", "nope"], None);
    run(
        "update",
        &[
            "token", "update", &id, "--owner", "team-a", "--access", "read",
        ],
        None,
    );
    run(
        "update --json",
        &["token", "update", &id, "--description", "nightly", "--json"],
        None,
    );
    run("update nothing", &["token", "update", &id], None);
    run("rotate", &["token", "rotate", &id, "--overlap", "1h"], None);
    run(
        "rotate --json",
        &["token", "rotate", &id, "--until-new-secret-used", "--json"],
        None,
    );
    run("rotate no overlap", &["token", "rotate", &id], None);
    run("usage", &["token", "usage", &id], None);
    run("usage --json", &["token", "usage", &id, "--json"], None);
    run(
        "bulk-delete dry run",
        &["token", "bulk-delete", "--owner", "ops"],
        None,
    );
    run(
        "bulk-delete --json",
        &["token", "bulk-delete", "--owner", "ops", "--json"],
        None,
    );
    run(
        "bulk-delete wrong count",
        &[
            "token",
            "bulk-delete",
            "--owner",
            "ops",
            "--confirm-count",
            "7",
        ],
        None,
    );
    run(
        "bulk-delete",
        &[
            "token",
            "bulk-delete",
            "--owner",
            "ops",
            "--confirm-count",
            "1",
        ],
        None,
    );
    run(
        "revoke",
        &["token", "revoke"],
        Some("pa_notatoken\n\"Bearer pa_garbage\",\n"),
    );
    run("revoke --json", &["token", "revoke", "--json"], Some("x\n"));
    run(
        "set-password weak",
        &["admin", "set-password", "--username", "ops"],
        Some("tiny\n"),
    );
    run(
        "set-password",
        &["admin", "set-password", "--username", "ops"],
        Some("a long enough password 1\n"),
    );
    run(
        "set-password --json",
        &["admin", "set-password", "--username", "ops2", "--json"],
        Some("a long enough password 2\n"),
    );
    let file = dir.parent().unwrap().join("b.pab");
    let f = file.to_str().unwrap();
    run("backup", &["backup", "--to", f], None);
    run("backup exists", &["backup", "--to", f], None);
    std::fs::remove_file(&file).unwrap();
    run("backup --json", &["backup", "--to", f, "--json"], None);
    run("delete", &["token", "delete", &id], None);
    run("delete again", &["token", "delete", &id], None);
    run("delete --json", &["token", "delete", &id, "--json"], None);
    seen
}

#[test]
fn every_cli_command_answers_alike_live_and_offline() {
    let offline_temp = TempDir::new("cli-off");
    let offline_dir = offline_temp.path().join("data");
    // The offline run starts from an initialised data dir, as the live one does.
    drop(Service::start_in(&offline_dir, &[]));
    let offline = session(&offline_dir);

    let live_temp = TempDir::new("cli-live");
    let live_dir = live_temp.path().join("data");
    let mut svc = Service::start_in(&live_dir, &[]);
    let admin = basic_auth("admin", &svc.initial_password());
    let live = session(&live_dir);
    for ((label, off), (_, on)) in offline.iter().zip(&live) {
        assert_eq!(off, on, "{label}: offline and live differ");
    }
    assert_eq!(offline.len(), live.len());
    // Exit codes as documented: 0 done, 1 could not (no such token, conflict), 2 usage.
    let code = |label: &str| live.iter().find(|(l, _)| l == label).unwrap().1 .0;
    for (label, expected) in [
        ("create", 0),
        ("create conflict", 1),
        ("create bad name", 2),
        ("create bad cidr", 2),
        ("get unknown", 1),
        ("get not an id", 2),
        ("update nothing", 2),
        ("rotate no overlap", 2),
        ("bulk-delete wrong count", 1),
        ("set-password weak", 2),
        ("backup exists", 2),
        ("delete again", 1),
        ("delete", 0),
    ] {
        assert_eq!(code(label), expected, "{label}: {:?}", live);
    }
    let text = |label: &str| {
        let (_, out, err) = &live.iter().find(|(l, _)| l == label).unwrap().1;
        format!("{out}{err}")
    };
    assert!(
        text("create bad cidr").contains("--allowed-cidr"),
        "{}",
        text("create bad cidr")
    );
    assert!(text("get unknown").contains("no token with id"));

    // Live means live: the server saw every change at once, and named the actor.
    let uid = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let audit = Req::get("/admin/api/audit?event=token.created")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(
        audit["items"][0]["actor"],
        format!("cli (uid {})", uid.unwrap())
    );
    let (code, out, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "now",
            "--data-dir",
            live_dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let secret = out.trim();
    let check = Req::get("/auth/verify").bearer(secret).send(svc.addr);
    assert_eq!(
        check.status, 200,
        "a token made through the socket works at once"
    );
    let list = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "now")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, err) = run_cli(
        &[
            "token",
            "delete",
            &id,
            "--data-dir",
            live_dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        Req::get("/auth/verify")
            .bearer(secret)
            .send(svc.addr)
            .status,
        401,
        "deleted through the socket: refused at once"
    );
    // --socket names the socket directly; a wrong one says so.
    let sock = live_dir.join("control.sock");
    let (code, out, _) = run_cli(
        &[
            "token",
            "list",
            "--json",
            "--socket",
            sock.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        serde_json::from_str::<Value>(&out).unwrap().is_array(),
        "{out}"
    );
    let (code, _, err) = run_cli(
        &["token", "list", "--socket", "/nonexistent/control.sock"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("no server answers"), "{err}");
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    assert!(!sock.exists(), "the socket is removed at shutdown");
}

/// A user who is neither root nor the service's: refused by the file's mode, and — should an
/// operator widen it — by the peer's uid, audited.
#[test]
fn the_socket_refuses_other_users() {
    if !root_or_skip("the_socket_refuses_other_users") {
        return;
    }
    let temp = TempDir::new("cli-uid");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = temp.path().join("data");
    let svc = Service::start_in(&dir, &[]);
    let admin = basic_auth("admin", &svc.initial_password());
    let sock = dir.join("control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(binary())
            .args(args)
            .env_remove("PA_AUTH_DATA_DIR")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = sock.to_str().unwrap();
    let (code, err) = as_nobody(&["token", "list", "--socket", s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    // An operator widens the directory and the socket: the uid check still refuses.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = as_nobody(&["token", "list", "--socket", s]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("only root and the service's own user"),
        "{err}"
    );
    let (code, err) = as_nobody(&["token", "create", "--name", "sneaky", "--socket", s]);
    assert_eq!(code, 1, "{err}");
    let tokens = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(
        tokens["items"].as_array().unwrap().len(),
        0,
        "nothing created"
    );
    let audit = Req::get("/admin/api/audit?event=control.refused")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(audit["items"][0]["actor"], "uid 65534", "{audit}");
}

/// Whether the test runs as root (to drop privileges, plant other users' files); off CI it
/// says loudly that it is skipped, and under CI it fails (CI runs as root).
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI runs as root: {test} must run"
    );
    eprintln!("SKIPPED: {test} needs root to drop privileges");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false)
}

fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

fn exchange(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_socket_clients_cost_bounded_memory_and_threads() {
    let temp = TempDir::new("cli-hostile");
    let dir = temp.path().join("data");
    let svc = Service::start_in(&dir, &["--header-timeout", "2"]);
    let sock = dir.join("control.sock");
    let d = dir.to_str().unwrap();
    // Garbage, a huge head, a huge body: clear refusals, the server goes on.
    assert!(exchange(&sock, b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge_head = format!(
        "GET /admin/api/tokens HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert!(exchange(&sock, huge_head.as_bytes()).starts_with("HTTP/1.1 431"));
    let huge_body = "POST /admin/api/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{";
    assert!(exchange(&sock, huge_body.as_bytes()).starts_with("HTTP/1.1 413"));
    // Not a way around the worlds: no forward-auth, no console login on the socket.
    assert!(
        exchange(&sock, b"GET /auth/verify HTTP/1.1\r\nHost: x\r\n\r\n")
            .starts_with("HTTP/1.1 404")
    );
    let login = "POST /admin/api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    assert!(exchange(&sock, login.as_bytes()).starts_with("HTTP/1.1 404"));
    // Over TCP the host's own route does not exist.
    let admin = basic_auth("admin", &svc.initial_password());
    let over_tcp = Req::new("PUT", "/admin/api/admins/password")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"username": "x", "password": "a long enough password"}))
        .send(svc.addr);
    assert_eq!(over_tcp.status, 404);

    let pid = svc.pid();
    let (rss_before, threads_before) = (status_field(pid, "VmRSS:"), status_field(pid, "Threads:"));
    // Slow clients hold a connection each, trickling a head; meanwhile the CLI still works.
    let mut slow: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(b"GET /admin/api/tok").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let (code, _, err) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 0, "the CLI is served beside slow clients: {err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A thousand clients that connect and hang up, half of them mid-request.
    for i in 0..1000 {
        let mut s = UnixStream::connect(&sock).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"POST /admin/api/tokens HTTP/1.1\r\nContent-Length: 50\r\n\r\n{");
        }
        drop(s);
    }
    // The slow ones are cut at the header timeout.
    std::thread::sleep(Duration::from_secs(3));
    let mut cut = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        cut += usize::from(buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"));
    }
    assert_eq!(cut, slow.len(), "every slow client was cut off");
    let (code, _, err) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    let (rss_after, threads_after) = (status_field(pid, "VmRSS:"), status_field(pid, "Threads:"));
    assert!(
        threads_after <= threads_before,
        "threads {threads_before} -> {threads_after}: socket clients must not cost threads"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    eprintln!(
        "control socket under 100 slow + 1000 hang-up clients: RSS {rss_before} -> {rss_after} KiB, threads {threads_before} -> {threads_after}"
    );
}

/// Another local user plants a socket where the CLI looks (`./pa-auth-data/control.sock` in a
/// shared, sticky directory like /tmp) to catch the password `admin set-password` sends: the
/// CLI refuses a socket it cannot vouch for, and sends it nothing.
#[test]
fn a_socket_planted_by_another_user_is_refused() {
    if !root_or_skip("a_socket_planted_by_another_user_is_refused") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let temp = TempDir::new("cli-planted");
    let shared = temp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let planted = shared.join("pa-auth-data");
    let caught = temp.path().join("caught");
    // The other user's listener: accepts, records what it is sent.
    let script = format!(
        "import os,socket,sys\nos.makedirs({dir:?}, mode=0o755)\ns=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen(8)\nprint('ready',flush=True)\nwhile True:\n  c,_=s.accept()\n  c.settimeout(2)\n  try:\n    d=c.recv(65536)\n  except Exception:\n    d=b''\n  open({caught:?},'ab').write(d)\n  c.close()\n",
        dir = planted.to_str().unwrap(),
        sock = planted.join("control.sock").to_str().unwrap(),
        caught = caught.to_str().unwrap(),
    );
    std::fs::write(&caught, b"").unwrap();
    std::fs::set_permissions(&caught, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut fake = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (installed by .ci/run)");
    let mut ready = [0u8; 6];
    fake.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    let set_password = |dir: &Path, extra: &[&str]| {
        std::process::Command::new(binary())
            .args(["admin", "set-password", "--username", "admin"])
            .args(extra)
            .current_dir(dir)
            .env_remove("PA_AUTH_DATA_DIR")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(b"the operator's new password\n")?;
                child.wait_with_output()
            })
            .unwrap()
    };
    // (a) In the shared directory: the planted data dir is refused, nothing is written there.
    let out = set_password(&shared, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refusing the data dir"), "{err}");
    assert!(
        !planted.join("db").exists(),
        "nothing written into the planted dir"
    );
    // (b) A real data dir, held by a server without a socket, with a link to the other user's
    // socket (as if the server had made it): the socket is refused, and sent nothing.
    let real = temp.path().join("real");
    let svc = Service::start_in(&real, &["--control-socket", "none"]);
    std::os::unix::fs::symlink(planted.join("control.sock"), real.join("control.sock")).unwrap();
    let out = set_password(temp.path(), &["--data-dir", real.to_str().unwrap()]);
    drop(svc);
    std::thread::sleep(Duration::from_millis(300));
    let _ = fake.kill();
    let _ = fake.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refusing the control socket"), "{err}");
    let got = std::fs::read(&caught).unwrap();
    assert!(got.is_empty(), "the planted socket was sent {got:?}");
}

/// A fake pa-auth for the attacks below: holds the data dir's lock (unless told not to),
/// listens on its control socket, records what it is sent and says 204 to everything.
const FAKE: &str = r#"
import fcntl, os, socket, sys
d, caught, mode = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(d, mode=0o700, exist_ok=True)
if mode in ("both", "lock"):
    f = open(os.path.join(d, "pa-auth.lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
if mode == "lock":
    print("ready", flush=True)
    sys.stdin.read()
    sys.exit(0)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, "control.sock"))
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except Exception:
        data = b""
    open(caught, "ab").write(data)
    c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    c.close()
"#;

fn fake(dir: &Path, caught: &Path, mode: &str, uid: Option<u32>) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c",
        FAKE,
        dir.to_str().unwrap(),
        caught.to_str().unwrap(),
        mode,
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().expect("python3 (installed by .ci/run)");
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    child
}

fn set_password_in(cwd: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(binary())
        .args(["admin", "set-password", "--username", "admin"])
        .args(extra)
        .current_dir(cwd)
        .env_remove("PA_AUTH_DATA_DIR")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"the operator's new password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Second outside attack: (1) another user's link in a shared directory to a server of
/// theirs (holding its own lock) in a home-like directory of theirs; (2) a data dir whose lock
/// one process holds while another answers its socket. Both refused, nothing sent.
#[test]
fn links_of_other_users_and_servers_not_holding_the_lock_are_refused() {
    if !root_or_skip("links_of_other_users_and_servers_not_holding_the_lock_are_refused") {
        return;
    }
    let temp = TempDir::new("cli-links");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let caught = temp.path().join("caught");
    std::fs::write(&caught, b"").unwrap();
    std::fs::set_permissions(&caught, std::fs::Permissions::from_mode(0o666)).unwrap();
    // (1) /home/nob (theirs, under a root directory) and a link to it from a shared one.
    let homes = temp.path().join("home");
    std::fs::create_dir(&homes).unwrap();
    std::fs::set_permissions(&homes, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = homes.join("nob");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let mut theirs = fake(&home, &caught, "both", Some(65534));
    let shared = temp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("pa-auth-data");
    std::os::unix::fs::symlink(&home, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let (code, err) = set_password_in(&shared, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("refusing"), "{err}");
    let (code, err) = set_password_in(temp.path(), &["--data-dir", link.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    let _ = theirs.kill();
    let _ = theirs.wait();
    // (2) A root data dir: one process holds the lock, another answers the socket.
    let dir = temp.path().join("data");
    let mut holder = fake(&dir, &caught, "lock", None);
    let mut answerer = fake(&dir, &caught, "socket", None);
    let (code, err) = set_password_in(temp.path(), &["--data-dir", dir.to_str().unwrap()]);
    let _ = answerer.kill();
    let _ = answerer.wait();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not by the one holding the data dir"), "{err}");
    let got = std::fs::read(&caught).unwrap();
    assert!(got.is_empty(), "a fake server was sent {got:?}");
}

/// The server refuses a data dir or a socket directory that is not its user's alone.
#[test]
fn the_server_refuses_directories_other_users_own() {
    if !root_or_skip("the_server_refuses_directories_other_users_own") {
        return;
    }
    let temp = TempDir::new("srv-owner");
    let theirs = temp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&theirs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("belongs to uid 65534"), "{err}");
    let sockets = temp.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    std::os::unix::fs::chown(&sockets, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data"))
        .arg("--control-socket")
        .arg(sockets.join("c.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("control socket's directory"), "{err}");
    // Third outside attack: another user's link on the way to the data dir or the socket
    // (root would chmod, write and delete wherever it points). Refused; the target untouched.
    let victim = temp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(victim.join("c.sock"), b"a root file").unwrap();
    std::fs::set_permissions(
        victim.join("c.sock"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let link = theirs.join("lnk");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    for extra in [
        vec!["--data-dir".to_owned(), link.display().to_string()],
        vec![
            "--data-dir".to_owned(),
            temp.path().join("data2").display().to_string(),
            "--control-socket".to_owned(),
            link.join("c.sock").display().to_string(),
        ],
    ] {
        let out = std::process::Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains("refusing"), "{err}");
    }
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the link's target was not chmod-ed");
    assert_eq!(
        std::fs::read(victim.join("c.sock")).unwrap(),
        b"a root file"
    );
}

/// A new admin whose name differs from an existing one only in case is refused (409, exit 1).
#[test]
fn admin_names_differing_only_in_case_are_refused() {
    let temp = TempDir::new("cli-case");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap();
    let _svc = Service::start_in(&dir, &[]);
    let (code, _, err) = run_cli(
        &[
            "admin",
            "set-password",
            "--username",
            "Admin",
            "--data-dir",
            d,
        ],
        Some("a long enough password 9\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("differ only in case"), "{err}");
    let (code, _, err) = run_cli(
        &[
            "admin",
            "set-password",
            "--username",
            "admin",
            "--data-dir",
            d,
        ],
        Some("a long enough password 9\n"),
    );
    assert_eq!(code, 0, "the account itself: {err}");
}

/// Fourth outside attack: `restore` (and `migrate`'s embedded side) took any path, another
/// user's link included, and chmod-ed and wrote through it. Now the same rules as everywhere.
#[test]
fn restore_refuses_a_data_dir_through_another_users_link() {
    if !root_or_skip("restore_refuses_a_data_dir_through_another_users_link") {
        return;
    }
    let temp = TempDir::new("restore-link");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = temp.path().join("data");
    let d = data.to_str().unwrap();
    let (code, _, err) = run_cli(&["token", "create", "--name", "x", "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    let file = temp.path().join("b.pab");
    let (code, _, err) = run_cli(
        &["backup", "--to", file.to_str().unwrap(), "--data-dir", d],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let victim = temp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = temp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = shared.join("r");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let (code, _, err) = run_cli(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            link.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing"), "{err}");
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written there"
    );
    let (code, _, err) = run_cli(
        &[
            "migrate",
            "--from-data-dir",
            d,
            "--to-data-dir",
            link.join("m").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written there"
    );
}

/// Fourth outside attack: TCP connections up to the server's limit locked root out of the
/// control socket. Its connections have their own budget now.
#[test]
fn a_full_tcp_side_leaves_the_control_socket_its_own_places() {
    let temp = TempDir::new("cli-full");
    let dir = temp.path().join("data");
    let svc = Service::start_in(&dir, &["--max-connections", "16", "--header-timeout", "30"]);
    let held: Vec<std::net::TcpStream> = (0..40)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(svc.addr).ok()?;
            let _ = s.write_all(b"GET /auth/verify HTTP/1.1\r\nHost: x\r\n");
            Some(s)
        })
        .collect();
    assert!(!held.is_empty());
    let (code, _, err) = run_cli(
        &["token", "list", "--data-dir", dir.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "the operator still gets in: {err}");
    drop(held);
}

/// Fifth outside attack: (1) the service user swapped the socket root names with `--socket`
/// for a link to another (root's) server — refused; (2) `restore --force` replaces a store
/// start-up calls damaged.
#[test]
fn a_named_socket_cannot_be_redirected_and_a_forced_restore_replaces_a_damaged_store() {
    if !root_or_skip(
        "a_named_socket_cannot_be_redirected_and_a_forced_restore_replaces_a_damaged_store",
    ) {
        return;
    }
    let temp = TempDir::new("cli-named");
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root_dir = temp.path().join("root-data");
    let svc = Service::start_in(&root_dir, &[]);
    let team = temp.path().join("team");
    std::fs::create_dir(&team).unwrap();
    std::os::unix::fs::chown(&team, Some(65534), Some(65534)).unwrap();
    let link = team.join("control.sock");
    std::os::unix::fs::symlink(root_dir.join("control.sock"), &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let (code, _, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "for-the-team",
            "--socket",
            link.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing the control socket"), "{err}");
    let admin = basic_auth("admin", &svc.initial_password());
    let tokens = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(
        tokens["items"].as_array().unwrap().len(),
        0,
        "nothing made on root's server"
    );
    drop(svc);

    // A store whose recorded generation is ahead of it: start-up calls it damaged.
    let d = root_dir.to_str().unwrap();
    let (code, _, err) = run_cli(
        &["token", "create", "--name", "kept", "--data-dir", d],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let file = temp.path().join("b.pab");
    let (code, _, err) = run_cli(
        &["backup", "--to", file.to_str().unwrap(), "--data-dir", d],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let state = root_dir.join("pa-auth.state");
    let text = std::fs::read_to_string(&state).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["generation"] = serde_json::json!(v["generation"].as_u64().unwrap() + 5);
    std::fs::write(&state, v.to_string()).unwrap();
    let (code, _, err) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_ne!(code, 0, "damaged: {err}");
    let restore = |force: bool| {
        let mut args = vec!["restore", "--from", file.to_str().unwrap(), "--data-dir", d];
        if force {
            args.push("--force");
        }
        run_cli(&args, None)
    };
    assert_ne!(restore(false).0, 0);
    let (code, _, err) = restore(true);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(&["token", "list", "--data-dir", d], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kept"), "{out}");
}

/// The last look, as an outside tester through the shipped proxies: hostile requests through
/// nginx and Caddy (a query string naming /healthz, two Authorization headers, headers
/// claiming a local peer, the host-only path) get nothing through, and a thousand slow
/// clients at once leave pa-auth's threads and memory where they were while the operator's
/// CLI goes on working through the socket.
#[test]
fn through_the_shipped_proxies_nothing_gets_through_and_the_operator_gets_in() {
    use crate::forward_auth::{start_caddy_nodes, start_nginx_nodes, EchoUpstream};
    let temp = TempDir::new("cli-proxies");
    let dir = temp.path().join("data");
    let svc = Service::start_in(&dir, &[]);
    let upstream = EchoUpstream::start();
    let (Some(nginx), Some(caddy)) = (
        start_nginx_nodes(&[svc.addr], upstream.addr(), true),
        start_caddy_nodes(&[svc.addr], upstream.addr()),
    ) else {
        return;
    };
    let pid = svc.pid();
    let (rss_before, threads_before) = (status_field(pid, "VmRSS:"), status_field(pid, "Threads:"));
    for front in [nginx.addr, caddy.addr] {
        for req in [
            Req::get("/api/x?next=://x/healthz"),
            Req::get("/api/healthz?x=/healthz"),
            Req::get("/api/x")
                .header("Authorization", "Bearer pa_x")
                .header("Authorization", "Bearer pa_y"),
            Req::get("/api/x")
                .header("X-Forwarded-For", "0.0.0.0")
                .header("X-Real-IP", "0.0.0.0"),
        ] {
            let status = req.send(front).status;
            assert!(
                !(200..300).contains(&status),
                "{front}: {status} for {:?}",
                String::from_utf8_lossy(&req.to_bytes()[..40])
            );
        }
    }
    assert_eq!(upstream.hits(), 0, "nothing reached the API");
    // The host-only route is not proxied at all (the shipped configs send only /api to
    // pa-auth's check): whatever the front answers for it, pa-auth never sees it.
    for front in [nginx.addr, caddy.addr] {
        for path in [
            "/admin/api/admins/password",
            "/api/../admin/api/admins/password",
            "/api/%2e%2e/admin/api/admins/password",
        ] {
            let _ = Req::new("PUT", path)
                .json(&serde_json::json!({"username": "admin", "password": "x".repeat(20)}))
                .send(front);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !svc.log_shows("/admin/api/admins/password"),
        "the host-only route reached pa-auth through a proxy"
    );
    let admin = basic_auth("admin", &svc.initial_password());
    assert_eq!(
        Req::get("/admin/api/tokens")
            .header("Authorization", &admin)
            .send(svc.addr)
            .status,
        200,
        "the admin's password is unchanged"
    );
    // A thousand slow clients at once through each front: a head trickled, never finished.
    let mut slow = Vec::new();
    for front in [nginx.addr, caddy.addr] {
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(front) {
                let _ = s.write_all(b"GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pa_");
                slow.push(s);
            }
        }
    }
    let (code, _, err) = run_cli(
        &["token", "list", "--data-dir", dir.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "the operator gets in meanwhile: {err}");
    drop(slow);
    let (rss_after, threads_after) = (status_field(pid, "VmRSS:"), status_field(pid, "Threads:"));
    assert!(
        threads_after <= threads_before,
        "threads {threads_before} -> {threads_after}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    eprintln!(
        "through nginx and Caddy, 1,000 slow clients: pa-auth RSS {rss_before} -> {rss_after} KiB, threads {threads_before} -> {threads_after}"
    );
}
