//! Issue 9: nothing lost, nothing resurrected, everything attributable. Real processes:
//! rounds of `kill -9` during a storm of creates, deletes and authentications; SIGTERM
//! under load; a full disk; damaged stores; backup and restore; leaked-token lookup; the
//! aggregated audit of failed authentications.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{basic_auth, run_cli, Conn, Req, Service, TempDir};

/// A console session: cookie + CSRF token (one Argon2 check per session, not per request).
#[derive(Clone)]
struct Session {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

impl Session {
    fn login(addr: SocketAddr, password: &str) -> Session {
        let r = Req::new("POST", "/admin/api/session")
            .json(&json!({"username": "admin", "password": password}))
            .send(addr);
        assert_eq!(r.status, 200, "{}", r.text());
        let cookie = r
            .header("Set-Cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Session {
            addr,
            cookie,
            csrf: r.json()["csrfToken"].as_str().unwrap().to_string(),
        }
    }
    fn req<'a>(&self, r: Req<'a>) -> Req<'a> {
        r.header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
    }
}

#[derive(Default)]
struct Ledger {
    /// 201 received: (id, secret).
    created: Vec<(String, String)>,
    /// 204 received.
    deleted: HashSet<String>,
    /// Delete sent, no answer: may or may not have happened.
    ambiguous: HashSet<String>,
}

#[test]
fn regression_issue_9_kill_9_storm_loses_and_resurrects_nothing() {
    let rounds: usize = std::env::var("PA_AUTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let temp = TempDir::new("storm");
    let dir = temp.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut password = None;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut checked_present = 0;
    let mut checked_gone = 0;
    for round in 0..rounds {
        let mut svc = Service::start_in(&dir, &["--flush-interval", "1"]);
        let pw = password
            .get_or_insert_with(|| svc.initial_password())
            .clone();

        // Everything the ledger promises holds after the previous crash.
        {
            let l = ledger.lock().unwrap();
            for (id, secret) in &l.created {
                let status = Req::get("/auth/verify")
                    .bearer(secret)
                    .send(svc.addr)
                    .status;
                if l.deleted.contains(id) {
                    assert_eq!(
                        status, 401,
                        "round {round}: token {id} came back after its 204"
                    );
                    checked_gone += 1;
                } else if !l.ambiguous.contains(id) {
                    assert_eq!(status, 200, "round {round}: token {id} lost after its 201");
                    checked_present += 1;
                }
            }
        }

        let session = Session::login(svc.addr, &pw);
        let stop = Arc::new(AtomicBool::new(false));
        let creator = {
            let (s, l, stop) = (session.clone(), Arc::clone(&ledger), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let req = s.req(
                        Req::new("POST", "/admin/api/tokens")
                            .json(&json!({"name": format!("r{round}-{n}")})),
                    );
                    match crate::support::try_raw(s.addr, &req.to_bytes()) {
                        Ok(r) if r.status == 201 => {
                            let v = r.json();
                            l.lock().unwrap().created.push((
                                v["id"].as_str().unwrap().into(),
                                v["token"].as_str().unwrap().into(),
                            ));
                        }
                        _ => break,
                    }
                }
            })
        };
        let deleter = {
            let (s, l, stop) = (session.clone(), Arc::clone(&ledger), Arc::clone(&stop));
            let offset = next();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let target = {
                        let l = l.lock().unwrap();
                        let live: Vec<&String> = l
                            .created
                            .iter()
                            .map(|(id, _)| id)
                            .filter(|id| !l.deleted.contains(*id) && !l.ambiguous.contains(*id))
                            .collect();
                        if live.len() < 3 {
                            None
                        } else {
                            Some(live[((offset + i) % live.len() as u64) as usize].clone())
                        }
                    };
                    i += 1;
                    let Some(id) = target else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    l.lock().unwrap().ambiguous.insert(id.clone());
                    let path = format!("/admin/api/tokens/{id}");
                    let req = s.req(Req::new("DELETE", &path));
                    match crate::support::try_raw(s.addr, &req.to_bytes()) {
                        Ok(r) if r.status == 204 => {
                            let mut l = l.lock().unwrap();
                            l.ambiguous.remove(&id);
                            l.deleted.insert(id);
                        }
                        _ => break,
                    }
                }
            })
        };
        let verifier = {
            let (addr, l, stop) = (svc.addr, Arc::clone(&ledger), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let secret = l.lock().unwrap().created.last().map(|c| c.1.clone());
                    let Some(secret) = secret else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if crate::support::try_raw(
                        addr,
                        &Req::get("/auth/verify").bearer(&secret).to_bytes(),
                    )
                    .is_err()
                    {
                        break;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100 + next() % 400));
        svc.kill9();
        stop.store(true, Ordering::SeqCst);
        for t in [creator, deleter, verifier] {
            t.join().unwrap();
        }
    }
    // One last check after the final crash.
    let svc = Service::start_in(&dir, &[]);
    let l = ledger.lock().unwrap();
    for (id, secret) in &l.created {
        let status = Req::get("/auth/verify")
            .bearer(secret)
            .send(svc.addr)
            .status;
        if l.deleted.contains(id) {
            assert_eq!(status, 401, "token {id} came back after its 204");
        } else if !l.ambiguous.contains(id) {
            assert_eq!(status, 200, "token {id} lost after its 201");
        }
    }
    eprintln!(
        "crash storm: {rounds} kill -9 rounds, {} tokens created (201), {} deleted (204), {} ambiguous deletes; checks: {checked_present} present, {checked_gone} gone; nothing lost",
        l.created.len(),
        l.deleted.len(),
        l.ambiguous.len()
    );
    assert!(
        l.created.len() > rounds,
        "the storm created too little to mean anything"
    );
}

#[test]
fn regression_issue_9_sigterm_under_load_drains_without_resets() {
    let temp = TempDir::new("drain");
    let dir = temp.path().join("data");
    let mut svc = Service::start_in(&dir, &["--flush-interval", "3600"]);
    let password = svc.initial_password();
    let auth = basic_auth("admin", &password);
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &auth)
        .json(&json!({"name": "load"}))
        .send(svc.addr)
        .json();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    let ok = Arc::new(AtomicUsize::new(0));
    let resets = Arc::new(Mutex::new(Vec::new()));
    let addr = svc.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (secret, ok, resets) = (secret.clone(), Arc::clone(&ok), Arc::clone(&resets));
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                loop {
                    match conn.send(&Req::get("/auth/verify").bearer(&secret)) {
                        Ok(r) => {
                            assert_eq!(r.status, 200);
                            ok.fetch_add(1, Ordering::SeqCst);
                            if r.header("Connection") == Some("close") {
                                return;
                            }
                        }
                        Err(e) => {
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::BrokenPipe
                            ) {
                                resets.lock().unwrap().push(e.to_string());
                            }
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let before = ok.load(Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let stop_time = started.elapsed();
    for c in clients {
        c.join().unwrap();
    }
    assert!(before > 0);
    assert!(
        resets.lock().unwrap().is_empty(),
        "connections saw resets: {:?}",
        resets.lock().unwrap()
    );
    assert!(
        stop_time < Duration::from_secs(15),
        "stop took {stop_time:?}"
    );
    assert!(svc.log_shows("stopped cleanly"), "{}", svc.log_text());
    // Last-used was flushed by the shutdown (the interval was an hour).
    let svc = Service::start_in(&dir, &[]);
    let v = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &auth)
        .send(svc.addr)
        .json();
    assert!(v["lastUsedAt"].is_string(), "{v}");
}

/// A small tmpfs mounted for one test (needs root), unmounted on drop. Missing the
/// capability is a loud skip locally and a failure under CI=true.
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn new(at: &Path, size: &str, what: &str) -> Option<TmpfsMount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let msg = format!("\n!!! cannot mount a tmpfs (needs root): {what} SKIPPED\n");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("{msg}");
            return None;
        }
        Some(TmpfsMount(at.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn dir_digest(dir: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((
                    p.display().to_string(),
                    bytes.len() as u64,
                    blake3::hash(&bytes).as_bytes().to_vec(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn damaged_stores_are_refused_and_left_untouched() {
    let temp = TempDir::new("damaged");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap().to_string();
    assert_eq!(
        run_cli(&["token", "create", "--name", "x", "--data-dir", &d], None).0,
        0
    );

    // A leftover half-written snapshot.
    let leftover = dir.join("db").join("snap.0000000000001234.generating");
    std::fs::write(&leftover, b"partial").unwrap();
    let before = dir_digest(&dir);
    let (code, _, err) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &d],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(".generating") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(dir_digest(&dir), before, "files changed");
    std::fs::remove_file(&leftover).unwrap();

    // The store vanished: never start empty.
    let moved = temp.path().join("db-moved");
    std::fs::rename(dir.join("db"), &moved).unwrap();
    let (code, _, err) = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &d],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Refusing to start with an empty store"),
        "{err}"
    );
    assert!(!dir.join("db").exists(), "created an empty store");
    std::fs::rename(&moved, dir.join("db")).unwrap();

    // Truncated main file.
    let db_file = dir.join("db").join("db");
    let len = std::fs::metadata(&db_file).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&db_file)
        .unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let before = dir_digest(&dir);
    let (code, _, err) = run_cli(&["token", "list", "--data-dir", &d], None);
    assert_ne!(code, 0, "a truncated store opened: {err}");
    assert!(!err.is_empty());
    assert_eq!(dir_digest(&dir), before, "a refused open changed files");
}

#[test]
fn unwritable_and_busy_data_dirs_exit_2() {
    let temp = TempDir::new("readonly");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap().to_string();
    assert_eq!(
        run_cli(&["token", "create", "--name", "x", "--data-dir", &d], None).0,
        0
    );
    // A read-only mount (root ignores permission bits, so use a real read-only tmpfs).
    let mnt = temp.path().join("ro");
    let Some(_mounted) = TmpfsMount::new(&mnt, "4m", "read-only data dir case") else {
        return;
    };
    let ro_dir = mnt.join("data");
    assert_eq!(
        run_cli(
            &[
                "token",
                "create",
                "--name",
                "y",
                "--data-dir",
                ro_dir.to_str().unwrap()
            ],
            None
        )
        .0,
        0
    );
    assert!(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let (code, _, err) = run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            ro_dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not writable") || err.contains("Read-only") || err.contains("read-only"),
        "{err}"
    );
}

#[test]
fn disk_full_fails_creation_cleanly_and_auth_keeps_working() {
    let temp = TempDir::new("diskfull");
    let mnt = temp.path().join("small");
    let Some(_mounted) = TmpfsMount::new(&mnt, "24m", "disk-full test") else {
        return;
    };
    let dir = mnt.join("data");
    let mut svc = Service::start_in(&dir, &["--flush-interval", "1"]);
    let auth = basic_auth("admin", &svc.initial_password());
    let create = |name: &str| {
        Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({"name": name}))
            .send(svc.addr)
    };
    let first = create("before-full").json();
    let secret = first["token"].as_str().unwrap().to_string();
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failed = None;
    for i in 0..200 {
        let r = create(&format!("while-full-{i}"));
        if r.status != 201 {
            failed = Some(r);
            break;
        }
    }
    let r = failed.expect("creation never failed on a full disk");
    r.assert_error(500, "creation_failed");
    assert_eq!(
        Req::get("/auth/verify")
            .bearer(&secret)
            .send(svc.addr)
            .status,
        200,
        "auth must keep working"
    );
    assert!(
        svc.log_text().to_lowercase().contains("no space") || svc.log_text().contains("disk"),
        "log must say what happened: {}",
        svc.log_text()
    );
    // Free the space: pa-auth either recovers or exits non-zero for systemd to restart it.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let after = crate::support::try_raw(
        svc.addr,
        &Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({"name": "after-free"}))
            .to_bytes(),
    );
    match after {
        Ok(r) if r.status == 201 => eprintln!("disk full: recovered once space was freed"),
        other => {
            eprintln!(
                "disk full: did not recover ({:?}); checking for a non-zero exit",
                other.map(|r| r.status)
            );
            let code = svc.signal_and_wait("TERM");
            assert_ne!(code, Some(0), "neither recovered nor exited non-zero");
        }
    }
    assert!(
        svc.log_text().contains("check free disk space"),
        "the log must say what to do"
    );
}

#[test]
fn backup_and_restore_round_trip() {
    let temp = TempDir::new("backup");
    let dir = temp.path().join("data");
    let d = dir.to_str().unwrap().to_string();
    let mut svc = Service::start_in(&dir, &[]);
    let auth = basic_auth("admin", &svc.initial_password());
    let mk = |name: &str| {
        Req::new("POST", "/admin/api/tokens")
            .header("Authorization", &auth)
            .json(&json!({"name": name}))
            .send(svc.addr)
            .json()
    };
    let kept = mk("kept");
    let gone = mk("gone");
    Req::new(
        "DELETE",
        &format!("/admin/api/tokens/{}", gone["id"].as_str().unwrap()),
    )
    .header("Authorization", &auth)
    .send(svc.addr);
    Req::get("/auth/verify")
        .bearer(kept["token"].as_str().unwrap())
        .send(svc.addr);
    // Online backup.
    let online = Req::get("/admin/api/backup")
        .header("Authorization", &auth)
        .send(svc.addr);
    assert_eq!(online.status, 200);
    assert_eq!(
        online.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert!(online.body.starts_with(b"PA-AUTH-BACKUP 1 "));
    assert!(
        !online.text().contains(kept["token"].as_str().unwrap()),
        "a secret in the backup"
    );
    Req::new("GET", "/admin/api/backup")
        .bearer(kept["token"].as_str().unwrap())
        .send(svc.addr)
        .assert_error(403, "forbidden");
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let online_file = temp.path().join("online.pab");
    std::fs::write(&online_file, &online.body).unwrap();

    // Offline backup of the stopped dir, 0600.
    let offline_file = temp.path().join("offline.pab");
    let (code, _, err) = run_cli(
        &[
            "backup",
            "--to",
            offline_file.to_str().unwrap(),
            "--data-dir",
            &d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::metadata(&offline_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    for file in [&online_file, &offline_file] {
        let target = temp.path().join(format!(
            "restored-{}",
            file.file_stem().unwrap().to_string_lossy()
        ));
        let t = target.to_str().unwrap().to_string();
        // A damaged file changes nothing.
        let mut damaged = std::fs::read(file).unwrap();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x20;
        let bad = temp.path().join("damaged.pab");
        std::fs::write(&bad, &damaged).unwrap();
        let (code, _, err) = run_cli(
            &["restore", "--from", bad.to_str().unwrap(), "--data-dir", &t],
            None,
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("checksum"), "{err}");
        assert!(!target.exists(), "a bad restore created the target");

        let (code, _, err) = run_cli(
            &[
                "restore",
                "--from",
                file.to_str().unwrap(),
                "--data-dir",
                &t,
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        // Non-empty target: refused without --force.
        let (code, _, err) = run_cli(
            &[
                "restore",
                "--from",
                file.to_str().unwrap(),
                "--data-dir",
                &t,
            ],
            None,
        );
        assert_eq!(code, 2, "{err}");
        assert_eq!(
            run_cli(
                &[
                    "restore",
                    "--force",
                    "--from",
                    file.to_str().unwrap(),
                    "--data-dir",
                    &t
                ],
                None
            )
            .0,
            0
        );

        let restored = Service::start_in(&target, &[]);
        assert_eq!(
            Req::get("/auth/verify")
                .bearer(kept["token"].as_str().unwrap())
                .send(restored.addr)
                .status,
            200
        );
        assert_eq!(
            Req::get("/auth/verify")
                .bearer(gone["token"].as_str().unwrap())
                .send(restored.addr)
                .status,
            401
        );
        let v = Req::get(&format!(
            "/admin/api/tokens/{}",
            kept["id"].as_str().unwrap()
        ))
        .header("Authorization", &auth)
        .send(restored.addr);
        assert_eq!(v.status, 200, "the admin can log in with the same password");
        assert!(v.json()["lastUsedAt"].is_string());
        let audit = Req::get("/admin/api/audit?event=token.deleted")
            .header("Authorization", &auth)
            .send(restored.addr)
            .json();
        assert_eq!(audit["items"][0]["tokenName"], "gone");
    }
}

/// Outside attack (medium): a backup is checksummed, not signed, so an edited one with a
/// second record for a token's secret (another id and name) restored, and that token came
/// back after its delete at the next start. The restore now refuses the file whole; the
/// same holds for every rule the API keeps (`service::backup` unit tests go through them).
#[test]
fn a_forged_backup_with_a_second_record_for_a_secret_is_refused() {
    let temp = TempDir::new("forged");
    let source = temp.path().join("source");
    let s = source.to_str().unwrap().to_string();
    let (code, out, err) = run_cli(
        &[
            "token",
            "create",
            "--name",
            "t1",
            "--json",
            "--data-dir",
            &s,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let file = temp.path().join("b.pab");
    let f = file.to_str().unwrap().to_string();
    let (code, _, err) = run_cli(&["backup", "--to", &f, "--data-dir", &s], None);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    let token_line = *lines
        .iter()
        .find(|l| l.contains("\"type\":\"token\""))
        .unwrap();
    let mut twin: Value = serde_json::from_str(token_line).unwrap();
    twin["id"] = json!("11111111-1111-4111-8111-111111111111");
    twin["name"] = json!("other");
    let twin = twin.to_string();
    lines.push(&twin);
    let mut body = format!("{}\n", text.lines().next().unwrap());
    for line in lines {
        body.push_str(line);
        body.push('\n');
    }
    let forged = format!("{body}BLAKE3 {}\n", blake3::hash(body.as_bytes()).to_hex());
    std::fs::write(&file, forged).unwrap();
    let target = temp.path().join("target");
    let (code, _, err) = run_cli(
        &[
            "restore",
            "--from",
            &f,
            "--data-dir",
            target.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a second token with the same secret"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!target.exists(), "a refused restore created the target");
    assert!(!err.contains(created["token"].as_str().unwrap()));
}

/// Outside attack (low): `admin set-password` read stdin to its end before anything
/// checked it (300 MB piped in took 1.2 GB), and silently used the first of two lines.
#[test]
fn set_password_reads_one_bounded_line_from_stdin() {
    use std::process::Stdio;
    let temp = TempDir::new("stdin");
    let d = temp.path().join("data");
    let d = d.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pa-auth"))
        .args([
            "admin",
            "set-password",
            "--username",
            "ops",
            "--data-dir",
            d,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // 64 MiB offered; the command stops reading long before (the write then fails).
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        (0..64)
            .take_while(|_| stdin.write_all(&chunk).is_ok())
            .count()
    });
    let out = child.wait_with_output().unwrap();
    let written = writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("longer than 1024 bytes"), "{err}");
    assert!(written < 64, "the command read all of stdin");
    let (code, _, err) = run_cli(
        &[
            "admin",
            "set-password",
            "--username",
            "ops",
            "--data-dir",
            d,
        ],
        Some("first-line-password\nsecond line\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than one line"), "{err}");
    let (code, _, err) = run_cli(
        &[
            "admin",
            "set-password",
            "--username",
            "ops",
            "--data-dir",
            d,
        ],
        Some("first-line-password\r\n"),
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn leaked_token_lookup_and_aggregated_failures_in_the_audit() {
    let svc = Service::start(&["--flush-interval", "1"]);
    let auth = basic_auth("admin", &svc.initial_password());
    let t = Req::new("POST", "/admin/api/tokens").header("Authorization", &auth).json(&json!({"name": "leaky", "expiresAt": (time::OffsetDateTime::now_utc() + time::Duration::seconds(2)).format(&time::format_description::well_known::Rfc3339).unwrap()})).send(svc.addr).json();
    let secret = t["token"].as_str().unwrap().to_string();
    let id = t["id"].as_str().unwrap().to_string();
    let lookup = |body: Value| {
        Req::new("POST", "/admin/api/tokens/lookup")
            .header("Authorization", &auth)
            .json(&body)
            .send(svc.addr)
    };
    let found = lookup(json!({"token": secret}));
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["id"], id.as_str());
    let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
    assert_eq!(lookup(json!({"tokenHash": hash})).json()["id"], id.as_str());
    let other = pa_auth::domain::token::PlaintextToken::generate();
    lookup(json!({"token": other.expose_secret()})).assert_error(404, "not_found");
    lookup(json!({"token": "pa_nope"})).assert_error(400, "validation_error");
    lookup(json!({})).assert_error(400, "validation_error");

    // Failures of every kind, then one expired (its token id is known).
    for _ in 0..25 {
        Req::get("/auth/verify")
            .bearer(other.expose_secret())
            .send(svc.addr);
    }
    Req::get("/auth/verify").send(svc.addr);
    Req::get("/auth/verify").bearer("pa_x").send(svc.addr);
    std::thread::sleep(Duration::from_millis(2100));
    Req::get("/auth/verify").bearer(&secret).send(svc.addr);
    std::thread::sleep(Duration::from_millis(2500));
    let audit = Req::get("/admin/api/audit?event=auth.failed&limit=100")
        .header("Authorization", &auth)
        .send(svc.addr)
        .json();
    let items = audit["items"].as_array().unwrap();
    let count_of = |reason: &str| {
        items
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count_of("unknown"), 25, "{audit}");
    assert_eq!(count_of("missing"), 1);
    assert_eq!(count_of("malformed"), 1);
    let expired: Vec<&Value> = items.iter().filter(|e| e["reason"] == "expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["tokenId"], id.as_str());
    assert_eq!(expired[0]["remoteAddr"], "127.0.0.1");
    let text = audit.to_string();
    assert!(
        !text.contains(&secret[3..]) && !text.contains(&other.expose_secret()[3..]),
        "a secret in the audit log"
    );
    let lookups = Req::get("/admin/api/audit?event=token.lookup")
        .header("Authorization", &auth)
        .send(svc.addr)
        .json();
    assert!(!lookups.to_string().contains(&secret[3..]));
    // Found by secret, found by hash, not found; refused bodies are not lookups.
    assert_eq!(lookups["items"].as_array().unwrap().len(), 3);
}

/// Issue 16 attack: an offline backup that could not be written was audited as
/// `backup.created`. Only a delivered backup is audited, and a HEAD of the online backup
/// delivers nothing.
#[test]
fn regression_issue_16_only_a_delivered_backup_is_audited() {
    let temp = TempDir::new("backup-audit");
    let data = temp.path().join("data");
    let d = data.to_str().unwrap().to_string();
    let mut svc = Service::start_in(&data, &[]);
    let admin = basic_auth("admin", &svc.initial_password());
    let head = Req::new("HEAD", "/admin/api/backup")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(head.status, 200);
    let count = |svc: &Service| {
        Req::get("/admin/api/audit?event=backup.created")
            .header("Authorization", &admin)
            .send(svc.addr)
            .json()["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(&svc), 0, "a HEAD is not a backup");
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let nowhere = temp.path().join("no-such-dir").join("x.pab");
    let (code, _, err) = run_cli(
        &[
            "backup",
            "--to",
            nowhere.to_str().unwrap(),
            "--data-dir",
            &d,
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("no-such-dir"),
        "the message names the file: {err}"
    );
    let written = temp.path().join("ok.pab");
    let (code, _, err) = run_cli(
        &[
            "backup",
            "--to",
            written.to_str().unwrap(),
            "--data-dir",
            &d,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let svc = Service::start_in(&data, &[]);
    assert_eq!(count(&svc), 1, "only the written backup");
}
