//! Issue 17: the PostgreSQL store for real. Each test starts Debian's PostgreSQL itself
//! (`initdb`/`pg_ctl`, as the `postgres` user via `runuser` when run as root, on a loopback
//! port in a temp dir). Missing PostgreSQL: a loud SKIPPED, and a failure under CI=true.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{basic_auth, binary, Req, Service, TempDir};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A PostgreSQL server of its own, stopped and removed on drop.
pub struct Postgres {
    pub(crate) bin: PathBuf,
    pub dir: PathBuf,
    port: u16,
    pub as_postgres: bool,
}

impl Postgres {
    /// Starts a fresh server, or `None` (SKIPPED, loudly) when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            let message = "\n!!! PostgreSQL is missing (no /usr/lib/postgresql/*/bin/initdb): \
                           install Debian package `postgresql` to run this test. SKIPPED.\n";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} (CI=true: a missing program is a failure)");
            }
            eprintln!("{message}");
            return None;
        };
        let pg = Postgres::empty(bin);
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "pa",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        Some(pg)
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`: a standby following it), on a
    /// port of its own, started. initdb's trust pg_hba already lets `pa` replicate over
    /// 127.0.0.1, and PostgreSQL 15 defaults to `wal_level = replica`.
    pub fn replica_of(primary: &Postgres) -> Postgres {
        let pg = Postgres::empty(primary.bin.clone());
        pg.run(
            "pg_basebackup",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "pa",
            ],
        );
        pg.start_server();
        pg
    }

    /// A directory of its own (owned by `postgres` when run as root) and a free port; no
    /// data dir yet.
    fn empty(bin: PathBuf) -> Postgres {
        // initdb refuses to run as root: as root, the cluster belongs to `postgres`.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = std::env::temp_dir().join(format!(
            "pa-auth-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to postgres", dir.display());
        }
        Postgres {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        }
    }

    /// A standby becomes a primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// (Re)starts the server on its port.
    pub fn start_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    self.port,
                    self.dir.display()
                ),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server at once (as a crash or a network cut would look to the nodes).
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let mut admin = self.client("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("postgres://pa@127.0.0.1:{}/{name}", self.port)
    }

    pub fn client(&self, name: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(name), postgres::NoTls).expect("connect")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let path = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn create_token(svc: &Service, admin: &str, name: &str) -> (String, String) {
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", admin)
        .json(&serde_json::json!({ "name": name }))
        .send(svc.addr);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_owned(),
        v["token"].as_str().expect("token").to_owned(),
    )
}

/// One verification for a racing thread: its status, or `None` when the exchange failed (a
/// loaded machine may reset a connection; that is no verdict, and must not end the race).
fn race_verify(addr: std::net::SocketAddr, token: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /auth/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn verify(svc: &Service, token: &str) -> u16 {
    Req::get("/auth/verify").bearer(token).send(svc.addr).status
}

/// After a 204 that ended `token`: the node must refuse it. 401, or the 503 of a node that
/// cannot confirm the latest changes (past --max-staleness on a loaded box it fails closed,
/// and the delete does not wait for it: that is the cluster's guarantee). Anything else,
/// and above all 200, fails.
fn refused_after_204(svc: &Service, token: &str, what: &str) {
    let r = Req::get("/auth/verify").bearer(token).send(svc.addr);
    match r.status {
        401 => {}
        503 if r.text().contains("cannot confirm the latest token changes") => {
            eprintln!("{what}: the node was stale and failed closed (503)")
        }
        other => panic!("{what}: answered {other}, not 401: {}", r.text()),
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn postgres_store_serves_the_whole_token_lifecycle_across_restarts() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("lifecycle");
    let local = TempDir::new("pg-local");
    let data = local.path().join("data");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let mut svc = Service::start_in(&data, &args);
    assert!(svc.log_shows("using the database postgres://pa@127.0.0.1"));
    let admin = basic_auth("admin", &svc.initial_password());
    let (id, token) = create_token(&svc, &admin, "deploy");
    // The same name, any case, is taken.
    let dup = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({ "name": "DEPLOY" }))
        .send(svc.addr);
    dup.assert_error(409, "conflict");
    let r = Req::get("/auth/verify").bearer(&token).send(svc.addr);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-PA-Token-Id"), Some(id.as_str()));
    assert_eq!(
        verify(&svc, "pa_0000000000000000000000000000000000000000000000"),
        401
    );
    // Last use reaches the database within a flush interval.
    let mut db = pg.client("lifecycle");
    wait_for("last_used in the database", || {
        db.query_one("SELECT last_used IS NOT NULL FROM pa_auth_tokens", &[])
            .is_ok_and(|row| row.get(0))
    });
    // The secret is not in the database: only its hash.
    let row = db
        .query_one("SELECT hash, name FROM pa_auth_tokens", &[])
        .expect("row");
    let hash: Vec<u8> = row.get(0);
    assert_eq!(hash.len(), 32);
    assert!(!format!("{hash:?}").contains(&token));
    // A restart loads every token from the database (nothing is kept locally).
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    let svc = Service::start_in(&data, &args);
    assert_eq!(verify(&svc, &token), 200);
    let view = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert!(view["lastUsedAt"].is_string(), "{view}");
    let list = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    // Deleted: 401 at once, gone from the database, audited there.
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.status, 204);
    assert_eq!(verify(&svc, &token), 401);
    let left: i64 = db
        .query_one("SELECT count(*) FROM pa_auth_tokens", &[])
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    let audit = Req::get("/admin/api/audit")
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let events: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for kind in ["token.created", "token.deleted", "server.started"] {
        assert!(events.contains(&kind), "{kind} in {events:?}");
    }
    // Every change bumped the revision, in order, each recorded in the change feed.
    let revision: i64 = db
        .query_one("SELECT value FROM pa_auth_meta WHERE key = 'revision'", &[])
        .expect("revision")
        .get(0);
    let changes: i64 = db
        .query_one("SELECT count(*) FROM pa_auth_changes", &[])
        .expect("changes")
        .get(0);
    assert!(revision >= 3 && revision == changes, "{revision} {changes}");
}

/// A database written by a newer release is refused untouched; a URL's password is never
/// shown, even when the database cannot be reached.
#[test]
fn postgres_refuses_a_newer_schema_and_hides_the_password() {
    let Some(pg) = Postgres::start() else { return };
    let other = TempDir::new("pg-other");
    let newer = pg.database("newer");
    let mut db = pg.client("newer");
    db.batch_execute(
        "CREATE TABLE pa_auth_meta (key text PRIMARY KEY, value bigint NOT NULL);
         INSERT INTO pa_auth_meta VALUES ('schema_version', 99), ('revision', 7);",
    )
    .expect("newer schema");
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .args(["--database-url", newer.as_str()])
        .output()
        .expect("newer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer than this release"), "{err}");
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pa_auth_%'",
            &[],
        )
        .expect("tables")
        .get(0);
    assert_eq!(tables, 1, "nothing was changed");
    // A URL with a password never shows it, even when the database cannot be reached.
    let out = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .args([
            "--database-url",
            "postgres://pa:Hunter2Secret@127.0.0.1:1/x",
        ])
        .output()
        .expect("unreachable");
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Hunter2Secret"),
        "{out:?}"
    );
}

/// `--last-used-resolution`: a periodic flush skips a time that moved less than the
/// resolution (fewer database writes on a busy site), this node still shows the exact time,
/// and the final flush on SIGTERM writes it.
#[test]
fn postgres_last_used_resolution_skips_small_moves_until_shutdown() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("resolution");
    let mut svc = Service::start(&[
        "--database-url",
        url.as_str(),
        "--flush-interval",
        "1",
        "--last-used-resolution",
        "3600",
    ]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (id, token) = create_token(&svc, &admin, "busy");
    let mut db = pg.client("resolution");
    let stored = |db: &mut postgres::Client| -> Option<i64> {
        db.query_one(
            "SELECT last_used FROM pa_auth_tokens WHERE name = 'busy'",
            &[],
        )
        .expect("row")
        .get(0)
    };
    assert_eq!(verify(&svc, &token), 200);
    wait_for("the first use written", || stored(&mut db).is_some());
    let first = stored(&mut db).expect("first");
    // Two seconds later: a move smaller than the resolution.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(verify(&svc, &token), 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        stored(&mut db),
        Some(first),
        "skipped by the periodic flushes"
    );
    let view = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    let shown = view["lastUsedAt"].as_str().expect("lastUsedAt").to_owned();
    assert_ne!(
        shown,
        pa_auth::domain::time::format_rfc3339(first),
        "this node shows its own exact time"
    );
    assert_eq!(svc.signal_and_wait("TERM"), Some(0));
    assert!(
        stored(&mut db).expect("final") >= first + 2,
        "the final flush wrote it"
    );
}

/// Outside attack: with --max-staleness above the delete's wait cap, a delete answered 204
/// while a paused node could still accept the token. --max-staleness is now at most 30 s,
/// and a node that neither applies a delete nor goes silent within the cap (here a row that
/// claims a one-hour staleness, as an older release could write) gets the delete answered
/// 503, never 204; once it is gone, the retried delete answers 404.
#[test]
fn postgres_a_delete_not_confirmed_by_every_node_is_never_a_204() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("unconfirmed");
    let out = Command::new(binary())
        .args(["check-config", "--database-url", url.as_str()])
        .args(["--max-staleness", "31"])
        .output()
        .expect("check-config");
    assert!(!out.status.success(), "{out:?}");
    let svc = Service::start(&["--database-url", url.as_str()]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (id, _token) = create_token(&svc, &admin, "doomed");
    let mut db = pg.client("unconfirmed");
    db.execute(
        "INSERT INTO pa_auth_nodes (node_id, applied, seen_at, stale_after_ms) \
         VALUES ('ghost', 0, clock_timestamp(), 3600000)",
        &[],
    )
    .expect("ghost node");
    // The delete waits out its one-minute cap: read with a longer timeout.
    let answer = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(svc.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        write!(
            s,
            "DELETE /admin/api/tokens/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\n\
             Connection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        answer
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("not every node"), "{answer}");
    let audit = Req::get("/admin/api/audit?event=token.deleted")
        .header("Authorization", &admin)
        .send(svc.addr)
        .text();
    assert!(audit.contains("not yet applied by ghost"), "{audit}");
    db.execute("DELETE FROM pa_auth_nodes WHERE node_id = 'ghost'", &[])
        .expect("ghost gone");
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.status, 404, "{}", r.text());
}

/// A database of the first cluster release (schema 1, before the shared login throttle) is
/// upgraded in place at start: its tokens kept, the new table added.
#[test]
fn postgres_upgrades_a_schema_1_database() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("upgrade");
    let args = ["--database-url", url.as_str()];
    let token = {
        let svc = Service::start(&args);
        let admin = basic_auth("admin", &svc.initial_password());
        create_token(&svc, &admin, "kept").1
    };
    let mut db = pg.client("upgrade");
    db.batch_execute(
        "DROP TABLE pa_auth_login_guesses;
         UPDATE pa_auth_meta SET value = 1 WHERE key = 'schema_version';",
    )
    .expect("schema 1");
    let svc = Service::start(&args);
    assert_eq!(verify(&svc, &token), 200);
    let version: i64 = db
        .query_one(
            "SELECT value FROM pa_auth_meta WHERE key = 'schema_version'",
            &[],
        )
        .expect("version")
        .get(0);
    // Straight to the current schema (6 since issue 19's usage and restrictions: 1 → 6 in one
    // upgrade).
    assert_eq!(version, 6);
    let owners: i64 = db
        .query_one(
            "SELECT count(*) FROM pa_auth_tokens WHERE owner IS NULL",
            &[],
        )
        .expect("schema 3's columns")
        .get(0);
    assert_eq!(owners, 1);
    let guesses: i64 = db
        .query_one("SELECT count(*) FROM pa_auth_login_guesses", &[])
        .expect("the new table")
        .get(0);
    assert_eq!(guesses, 0);
    let outbox: i64 = db
        .query_one("SELECT count(*) FROM pa_auth_webhook_outbox", &[])
        .expect("schema 5's webhook outbox")
        .get(0);
    assert_eq!(outbox, 0);
    let usage: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM pa_auth_usage_days) \
                  + (SELECT count(*) FROM pa_auth_usage_addresses)",
            &[],
        )
        .expect("schema 6's usage tables")
        .get(0);
    assert_eq!(usage, 0);
    assert!(svc.log_text().contains("upgraded the pa-auth schema"));
}

/// The `.pab` backup format is the same for both stores: a backup taken from a PostgreSQL
/// node restores into the embedded store, tokens, admins and audit included.
#[test]
fn postgres_backup_restores_into_the_embedded_store() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("backup");
    let svc = Service::start(&["--database-url", url.as_str()]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (_, token) = create_token(&svc, &admin, "ci");
    let backup = Req::get("/admin/api/backup")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(backup.status, 200);
    drop(svc);
    let dir = TempDir::new("pg-restore");
    let file = dir.path().join("site.pab");
    std::fs::write(&file, &backup.body).expect("write backup");
    let data = dir.path().join("data");
    let out = Command::new(binary())
        .args(["restore", "--data-dir"])
        .arg(&data)
        .arg("--from")
        .arg(&file)
        .output()
        .expect("restore");
    assert!(out.status.success(), "{out:?}");
    let svc = Service::start_in(&data, &[]);
    assert_eq!(verify(&svc, &token), 200);
    let r = Req::get("/admin/api/tokens")
        .header("Authorization", &admin)
        .send(svc.addr);
    assert_eq!(r.status, 200, "the admin came along");
}

fn header_of(svc: &Service, token: &str) -> (u16, Option<String>) {
    let r = Req::get("/auth/verify").bearer(token).send(svc.addr);
    (r.status, r.header("X-PA-Token-Id").map(str::to_owned))
}

/// Three nodes on one database: a token made on one works on the others; a token deleted on
/// one is refused by every node before that node answers 204, checked with requests racing
/// the delete on every node.
#[test]
fn postgres_three_nodes_share_tokens_and_a_delete_is_everywhere_before_its_204() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("cluster");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let c = Service::start(&args);
    // The first node created the admin; every node reads it from the database.
    let password = [&a, &b, &c]
        .iter()
        .find_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .expect("one node made the initial admin");
    let admin = basic_auth("admin", password.trim());
    for round in 0..5 {
        let (id, token) = create_token(&a, &admin, &format!("shared-{round}"));
        for node in [&b, &c] {
            wait_for("the token on the other nodes", || {
                verify(node, &token) == 200
            });
            assert_eq!(header_of(node, &token).1.as_deref(), Some(id.as_str()));
        }
        // Race verifications on every node against the delete on B: no request that starts
        // after the 204 is in hand may be accepted anywhere.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = std::sync::Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = [a.addr, b.addr, c.addr]
            .into_iter()
            .map(|addr| {
                let (stop, live, token) = (
                    std::sync::Arc::clone(&stop),
                    std::sync::Arc::clone(&live),
                    token.clone(),
                );
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let status = race_verify(addr, &token);
                        if status == Some(200) && !seen.iter().any(|(_, s)| *s == Some(200)) {
                            live.fetch_add(1, Ordering::SeqCst);
                        }
                        seen.push((started, status));
                    }
                    seen
                })
            })
            .collect();
        // Every racer has seen the token live: the delete races running requests.
        wait_for("every racer running", || live.load(Ordering::SeqCst) == 3);
        let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &admin)
            .send(b.addr);
        let answered = Instant::now();
        assert_eq!(r.status, 204);
        // The 204 is in hand: no node may accept the token now.
        for node in [&a, &b, &c] {
            refused_after_204(node, &token, &format!("round {round}: deleted"));
        }
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        for racer in racers {
            let seen = racer.join().expect("racer");
            let late_accept = seen
                .iter()
                .filter(|(started, status)| *started > answered && *status == Some(200))
                .count();
            assert_eq!(late_accept, 0, "round {round}: accepted after the 204");
        }
    }
    // Admin changes are shared too: a password changed on C works on A.
    let r = Req::new("PUT", "/admin/api/password")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"currentPassword": password.trim(), "newPassword": "a long new passphrase 42"}))
        .send(c.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    // Outside attack: the file of the generated password stayed on the node that made it
    // when the password was changed through another node.
    wait_for("the initial password file gone from every node", || {
        [&a, &b, &c]
            .iter()
            .all(|s| !s.data_dir.join("initial-admin-password").exists())
    });
    let r = Req::get("/admin/api/tokens")
        .header(
            "Authorization",
            &basic_auth("admin", "a long new passphrase 42"),
        )
        .send(a.addr);
    assert_eq!(r.status, 200);
    let metrics = Req::get("/metrics").send(a.addr).text();
    assert!(
        metrics.contains("pa_auth_cluster_applied_revision "),
        "{metrics}"
    );
    // C made no change: every one it holds came through the feed, and each was timed.
    let metrics = Req::get("/metrics").send(c.addr).text();
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pa_auth_cluster_propagation_seconds_count "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("propagation count");
    assert!(count >= 2, "the create and the delete at least: {metrics}");
    assert!(
        metrics.contains("# TYPE pa_auth_cluster_propagation_seconds histogram")
            && metrics.contains(&format!(
                "pa_auth_cluster_propagation_seconds_bucket{{le=\"+Inf\"}} {count}"
            )),
        "{metrics}"
    );
}

/// A node that cannot confirm the database's latest change for --max-staleness answers
/// forward-auth and /healthz with 503 (the load balancer drains it), and recovers by
/// itself once the database is back.
#[test]
fn postgres_a_node_cut_off_from_the_database_fails_closed_and_recovers() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("failclosed");
    let svc = Service::start(&["--database-url", url.as_str(), "--max-staleness", "1"]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (_, token) = create_token(&svc, &admin, "fc");
    assert_eq!(verify(&svc, &token), 200);
    // The explicit opt-in keeps a node verifying from its copy (and says so).
    let lenient = Service::start(&[
        "--database-url",
        url.as_str(),
        "--max-staleness",
        "1",
        "--serve-stale",
    ]);
    assert!(lenient.log_shows("--serve-stale"));
    pg.stop_server();
    wait_for("503 on forward-auth", || verify(&svc, &token) == 503);
    assert_eq!(
        verify(&lenient, &token),
        200,
        "--serve-stale keeps verifying"
    );
    let health = Req::get("/healthz").send(svc.addr);
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "stale");
    let r = Req::get("/auth/verify").bearer(&token).send(svc.addr);
    r.assert_error(503, "service_unavailable");
    assert!(r.header("Retry-After").is_some());
    pg.start_server();
    wait_for("recovery", || verify(&svc, &token) == 200);
    assert_eq!(Req::get("/healthz").send(svc.addr).status, 200);
    let metrics = Req::get("/metrics").send(svc.addr).text();
    assert!(
        !metrics.contains("pa_auth_cluster_sync_errors_total 0\n"),
        "errors were counted: {metrics}"
    );
}

/// A single-node site moves into a cluster (and back) with `pa-auth migrate`, verified:
/// tokens keep working with the same secrets, the admin keeps its password.
#[test]
fn postgres_migrate_moves_a_site_in_and_back() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("migrated");
    let dir = TempDir::new("pg-migrate");
    let sled = dir.path().join("sled");
    let mut one = Service::start_in(&sled, &[]);
    let password = one.initial_password();
    let admin = basic_auth("admin", &password);
    let (id, token) = create_token(&one, &admin, "carried");
    assert_eq!(verify(&one, &token), 200);
    assert_eq!(one.signal_and_wait("TERM"), Some(0));

    let run = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().expect("migrate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "migrate",
        "--from-data-dir",
        sled.to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("migrated and verified 1 tokens, 1 admins"),
        "{err}"
    );
    // Into a database that is no longer empty: refused, nothing changed.
    let (code, err) = run(&[
        "migrate",
        "--from-data-dir",
        sled.to_str().unwrap(),
        "--to",
        &url,
    ]);
    assert_eq!(code, Some(2), "{err}");

    let node = Service::start(&["--database-url", url.as_str()]);
    let r = Req::get("/auth/verify").bearer(&token).send(node.addr);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-PA-Token-Id"), Some(id.as_str()));
    assert_eq!(
        Req::get("/admin/api/tokens")
            .header("Authorization", &admin)
            .send(node.addr)
            .status,
        200
    );
    // A clean stop: the node leaves the database's list of serving nodes at once.
    let mut node = node;
    assert_eq!(node.signal_and_wait("TERM"), Some(0));

    let back = dir.path().join("back");
    let (code, err) = run(&[
        "migrate",
        "--from",
        &url,
        "--to-data-dir",
        back.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let again = Service::start_in(&back, &[]);
    assert_eq!(verify(&again, &token), 200);
    // Outside attack: the URL (and its password) had to be on the command line, readable
    // in /proc for the whole migration. The database side may come from the nodes'
    // PA_AUTH_DATABASE_URL instead.
    let back2 = dir.path().join("back2");
    let out = Command::new(binary())
        .args(["migrate", "--to-data-dir", back2.to_str().unwrap()])
        .env("PA_AUTH_DATABASE_URL", &url)
        .output()
        .expect("migrate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("migrated and verified 1 tokens"), "{err}");
    let from_env = Service::start_in(&back2, &[]);
    assert_eq!(verify(&from_env, &token), 200);
    let (code, err) = run(&["migrate", "--to", &url]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--from"), "{err}");
    // Outside attack: a mistyped source "migrated and verified 0 tokens" (exit 0), creating
    // an empty store at the typo and the schema in the target.
    let typo = dir.path().join("typo");
    let fresh = pg.database("fresh");
    let (code, err) = run(&[
        "migrate",
        "--from-data-dir",
        typo.to_str().unwrap(),
        "--to",
        &fresh,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no pa-auth data"), "{err}");
    assert!(!typo.exists(), "nothing created at the typo");
    let empty = pg.database("empty");
    let (code, err) = run(&[
        "migrate",
        "--from",
        &empty,
        "--to-data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("no pa-auth"), "{err}");
    for db in ["fresh", "empty"] {
        let tables: i64 = pg
            .client(db)
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pa_auth_%'",
                &[],
            )
            .expect("tables")
            .get(0);
        assert_eq!(tables, 0, "{db}: nothing created");
    }
    // Nor may a migration run beside a node serving from the database.
    let serving = Service::start(&["--database-url", url.as_str()]);
    let (code, err) = run(&[
        "migrate",
        "--from",
        &url,
        "--to-data-dir",
        dir.path().join("beside").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("serving"), "{err}");
    drop(serving);
}

/// A console login on one node works on the next request that lands on another, and a
/// logout ends it on every node.
#[test]
fn postgres_console_sessions_work_across_nodes() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("sessions");
    let args = ["--database-url", url.as_str()];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let c = Service::start(&args);
    let password = [&a, &b, &c]
        .iter()
        .find_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .expect("initial admin");
    let login = Req::new("POST", "/admin/api/session")
        .json(&serde_json::json!({"username": "admin", "password": password.trim()}))
        .send(a.addr);
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let csrf = login.json()["csrfToken"].as_str().expect("csrf").to_owned();
    let who = Req::get("/admin/api/session")
        .header("Cookie", &cookie)
        .send(b.addr);
    assert_eq!(who.status, 200, "{}\n{}", who.text(), b.log_text());
    assert_eq!(who.json()["csrfToken"], csrf.as_str());
    let created = Req::new("POST", "/admin/api/tokens")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&serde_json::json!({"name": "from-the-console"}))
        .send(c.addr);
    assert_eq!(created.status, 201, "{}", created.text());
    // The cookie is not in the database, only its hash.
    let mut db = pg.client("sessions");
    let value = cookie.split('=').nth(1).expect("value");
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM pa_auth_sessions WHERE encode(key, 'hex') LIKE '%' || $1 || '%'",
            &[&value],
        )
        .expect("query")
        .get(0);
    assert_eq!(stored, 0);
    let out = Req::new("DELETE", "/admin/api/session")
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send(b.addr);
    assert_eq!(out.status, 204, "{}", out.text());
    for node in [&a, &b, &c] {
        let r = Req::get("/admin/api/session")
            .header("Cookie", &cookie)
            .send(node.addr);
        assert_eq!(r.status, 401, "ended on every node");
    }
}

/// Admin guesses spread over the nodes meet one limit: five wrong passwords alternating
/// between two nodes lock the address out on both (each node alone would have allowed five),
/// and a right password is then refused on either until the lock ends.
#[test]
fn postgres_login_guesses_spread_over_nodes_meet_one_limit() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("throttle");
    let args = ["--database-url", url.as_str()];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let password = [&a, &b]
        .iter()
        .find_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .expect("initial admin");
    let login = |node: &Service, password: &str| {
        Req::new("POST", "/admin/api/session")
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send(node.addr)
    };
    // A right password clears the address's count on every node.
    assert_eq!(login(&b, password.trim()).status, 200);
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r = login(node, "wrong-password");
        assert_eq!(r.status, 401, "guess {i}: {}", r.text());
    }
    let fifth = login(&a, "wrong-password");
    assert_eq!(fifth.status, 401, "{}", fifth.text());
    for node in [&b, &a] {
        let r = login(node, password.trim());
        assert_eq!(r.status, 429, "locked on every node: {}", r.text());
        let retry: u64 = r
            .header("Retry-After")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=30).contains(&retry), "{retry}");
        // HTTP Basic meets the same lock, before any Argon2 check.
        let basic = Req::get("/admin/api/tokens")
            .header("Authorization", &basic_auth("admin", password.trim()))
            .send(node.addr);
        assert_eq!(basic.status, 429, "{}", basic.text());
    }
    // Counted in the database by address, never with a password.
    let mut db = pg.client("throttle");
    let row = db
        .query_one(
            "SELECT addr, guesses, locked_until_ms > 0 FROM pa_auth_login_guesses",
            &[],
        )
        .expect("one address");
    assert_eq!(row.get::<_, String>(0), "127.0.0.1");
    assert_eq!(row.get::<_, i32>(1), 5);
    assert!(row.get::<_, bool>(2));
    // Each node also keeps the lock it saw in memory (its early check, before any body is
    // read, asks no database): removing the shared row does not unlock the address there.
    db.execute("DELETE FROM pa_auth_login_guesses", &[])
        .expect("unlock");
    let r = login(&b, password.trim());
    assert_eq!(r.status, 429, "{}", r.text());
}

/// A failover to a replica that lost commits looks to a node like its revision going
/// backwards: it cannot trust its copy (it may hold tokens the database no longer has), so it
/// reloads every token.
#[test]
fn postgres_a_revision_going_backwards_reloads_every_token() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("failover");
    let svc = Service::start(&["--database-url", url.as_str()]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (_, lost) = create_token(&svc, &admin, "lost-in-failover");
    let (_, kept) = create_token(&svc, &admin, "kept");
    assert_eq!(verify(&svc, &lost), 200);
    // What a promoted replica without the last commits looks like: the token and its
    // revision gone, no change announced.
    let mut db = pg.client("failover");
    db.batch_execute(
        "DELETE FROM pa_auth_tokens WHERE name = 'lost-in-failover';
         DELETE FROM pa_auth_changes WHERE revision > 1;
         UPDATE pa_auth_meta SET value = 1 WHERE key = 'revision';",
    )
    .expect("simulate the failover");
    wait_for("the reload", || verify(&svc, &lost) == 401);
    assert_eq!(verify(&svc, &kept), 200);
    assert!(svc.log_shows("went back"), "{}", svc.log_text());
}

/// TLS to the database through rustls, verified against --database-ca: the right CA
/// connects (and the server sees an encrypted connection), another CA is refused, and
/// `sslmode=require` without a CA is refused at start.
#[test]
fn postgres_tls_to_the_database_is_verified() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("tls");
    let Some((cert, key)) = crate::appliance::make_certificate(&pg.dir, "db") else {
        return;
    };
    let other = TempDir::new("pg-tls-other");
    let Some((wrong_ca, _)) = crate::appliance::make_certificate(other.path(), "other") else {
        return;
    };
    if pg.as_postgres {
        for file in [&cert, &key] {
            assert!(Command::new("chown")
                .arg("postgres:postgres")
                .arg(file)
                .status()
                .is_ok_and(|s| s.success()));
        }
    }
    let conf = pg.data().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
    text.push_str(&format!(
        "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(&conf, text).expect("write postgresql.conf");
    pg.stop_server();
    pg.start_server();
    let tls_url = format!("{url}?sslmode=require");
    let svc = Service::start(&[
        "--database-url",
        tls_url.as_str(),
        "--database-ca",
        cert.to_str().unwrap(),
    ]);
    assert!(svc.log_shows("(TLS)"), "{}", svc.log_text());
    let admin = basic_auth("admin", &svc.initial_password());
    let (_, token) = create_token(&svc, &admin, "over-tls");
    assert_eq!(verify(&svc, &token), 200);
    let mut db = pg.client("tls");
    let encrypted: bool = db
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'pa-auth'",
            &[],
        )
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "every pa-auth connection is encrypted");
    drop(svc);
    let start = |args: &[&str]| {
        let out = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(other.path().join("data"))
            .args(args)
            .output()
            .expect("serve");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = start(&[
        "--database-url",
        tls_url.as_str(),
        "--database-ca",
        wrong_ca.to_str().unwrap(),
    ]);
    assert_ne!(
        code,
        Some(0),
        "a certificate from another CA is refused: {err}"
    );
    let (code, err) = start(&["--database-url", tls_url.as_str()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--database-ca"), "{err}");
    // libpq's verify-full is understood (rustls always verifies the chain and host name).
    let verify_full = format!("{url}?sslmode=verify-full");
    let svc = Service::start(&[
        "--database-url",
        verify_full.as_str(),
        "--database-ca",
        cert.to_str().unwrap(),
    ]);
    assert!(svc.log_shows("(TLS)"), "{}", svc.log_text());
    drop(svc);
    let (code, err) = start(&["--database-url", verify_full.as_str()]);
    assert_eq!(code, Some(2), "verify-full needs a CA: {err}");
    let disable = format!("{url}?sslmode=disable");
    let (code, err) = start(&[
        "--database-url",
        disable.as_str(),
        "--database-ca",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sslmode=disable"), "{err}");
    // Outside attack: with a CA but no sslmode (or "prefer"), a server that does not offer
    // TLS got a plaintext session, logged as "(TLS)". A CA now means TLS or nothing.
    let text = std::fs::read_to_string(&conf).expect("postgresql.conf");
    std::fs::write(&conf, text.replace("ssl = on", "ssl = off")).expect("ssl off");
    pg.stop_server();
    pg.start_server();
    for plain in [url.clone(), format!("{url}?sslmode=prefer")] {
        let (code, err) = start(&[
            "--database-url",
            plain.as_str(),
            "--database-ca",
            cert.to_str().unwrap(),
        ]);
        assert_ne!(code, Some(0), "{plain}: {err}");
    }
}

/// Nodes started at once on an empty database make one first admin between them, and the
/// one password file left is the right one.
#[test]
fn postgres_nodes_starting_together_make_one_first_admin() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("together");
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Service::start(&["--database-url", url.as_str()]))
        })
        .collect();
    let nodes: Vec<Service> = starts
        .into_iter()
        .map(|s| s.join().expect("node"))
        .collect();
    let files: Vec<String> = nodes
        .iter()
        .filter_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .collect();
    assert_eq!(files.len(), 1, "one first admin, one password file");
    let admin = basic_auth("admin", files[0].trim());
    for node in &nodes {
        let r = Req::get("/admin/api/tokens")
            .header("Authorization", &admin)
            .send(node.addr);
        assert_eq!(r.status, 200, "the file's password works on every node");
    }
    let admins: i64 = pg
        .client("together")
        .query_one("SELECT count(*) FROM pa_auth_admins", &[])
        .expect("count")
        .get(0);
    assert_eq!(admins, 1);
}

fn signal(svc: &Service, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(svc.pid().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig}");
}

/// Cluster attack: a node paused (a VM pause, a stalled host) across a delete elsewhere
/// resumed counting itself fresh from a sync it had finished after the pause, and accepted the
/// deleted token for up to one poll. Freshness now counts from when the revision was read; and
/// a node with a larger --max-staleness is waited for as long as it could still verify.
#[test]
fn postgres_a_paused_node_never_accepts_a_token_deleted_meanwhile() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("paused");
    let a = Service::start(&["--database-url", url.as_str()]);
    let admin = basic_auth("admin", &a.initial_password());
    let c = Service::start(&["--database-url", url.as_str()]);
    let slow = Service::start(&["--database-url", url.as_str(), "--max-staleness", "4"]);
    assert!(
        slow.log_shows("another --max-staleness"),
        "{}",
        slow.log_text()
    );
    for (round, (node, pause_ms)) in [(&c, 2300u64), (&c, 2700), (&c, 3100), (&slow, 3000)]
        .into_iter()
        .enumerate()
    {
        let (id, token) = create_token(&a, &admin, &format!("paused-{round}"));
        wait_for("the token on the node", || verify(node, &token) == 200);
        signal(node, "STOP");
        let paused = Instant::now();
        let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &admin)
            .send(a.addr);
        assert_eq!(r.status, 204);
        let left = Duration::from_millis(pause_ms).saturating_sub(paused.elapsed());
        std::thread::sleep(left);
        signal(node, "CONT");
        let until = Instant::now() + Duration::from_millis(800);
        let mut answers = Vec::new();
        while Instant::now() < until {
            answers.push(verify(node, &token));
        }
        assert!(
            !answers.contains(&200),
            "round {round}: the paused node accepted the deleted token: {answers:?}"
        );
    }
    // Stale while paused and caught up at once: said in its log all the same (the attack
    // found 503s with no line saying why).
    wait_for("the pause logged", || {
        c.log_shows("without confirming") || c.log_shows("no confirmation")
    });
}

/// Cluster attack: an old admin password kept working on the other nodes for up to a minute
/// after a change (each node remembers successful Basic checks). A remembered check now holds
/// only while the account's password is still the one checked.
#[test]
fn postgres_a_changed_password_stops_working_on_every_node_at_once() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("password");
    let a = Service::start(&["--database-url", url.as_str()]);
    let old = a.initial_password();
    let b = Service::start(&["--database-url", url.as_str()]);
    let old_auth = basic_auth("admin", &old);
    let list = |svc: &Service, auth: &str| {
        Req::get("/admin/api/tokens")
            .header("Authorization", auth)
            .send(svc.addr)
            .status
    };
    assert_eq!(list(&b, &old_auth), 200, "remembered on b");
    let r = Req::new("PUT", "/admin/api/password")
        .header("Authorization", &old_auth)
        .json(&serde_json::json!({"currentPassword": old, "newPassword": "another long passphrase 7"}))
        .send(a.addr);
    assert_eq!(r.status, 204);
    assert_eq!(
        list(&b, &old_auth),
        401,
        "the old password is refused on b at once"
    );
    assert_eq!(
        list(&b, &basic_auth("admin", "another long passphrase 7")),
        200
    );
}

/// Cluster attack: with the database down, admin requests answered 500 (as a bug would);
/// they answer 503 with Retry-After, and token checks go on until --max-staleness.
#[test]
fn postgres_admin_requests_answer_503_while_the_database_is_down() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("down");
    let svc = Service::start(&["--database-url", url.as_str(), "--max-staleness", "30"]);
    let admin = basic_auth("admin", &svc.initial_password());
    let (_, token) = create_token(&svc, &admin, "before");
    let login = Req::new("POST", "/admin/api/session")
        .json(&serde_json::json!({"username": "admin", "password": svc.initial_password()}))
        .send(svc.addr);
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();
    let csrf = login.json()["csrfToken"].as_str().expect("csrf").to_owned();
    let logout = || {
        Req::new("DELETE", "/admin/api/session")
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .send(svc.addr)
    };
    pg.stop_server();
    let r = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"name": "during"}))
        .send(svc.addr);
    r.assert_error(503, "service_unavailable");
    assert!(r.header("Retry-After").is_some());
    // Outside attack: a logout while the database was down answered 401 (the console took
    // it as signed out) and the session lived on. Now an honest 503.
    logout().assert_error(503, "service_unavailable");
    assert_eq!(verify(&svc, &token), 200, "within --max-staleness");
    pg.start_server();
    wait_for("admin again", || {
        Req::get("/admin/api/tokens")
            .header("Authorization", &admin)
            .send(svc.addr)
            .status
            == 200
    });
    assert_eq!(logout().status, 204);
    let r = Req::get("/admin/api/session")
        .header("Cookie", &cookie)
        .send(svc.addr);
    assert_eq!(r.status, 401, "signed out once the database could say so");
}

/// The password file the first node of a cluster left (whichever node made the admin).
fn cluster_admin(nodes: &[&Service]) -> String {
    let password = nodes
        .iter()
        .find_map(|s| std::fs::read_to_string(s.data_dir.join("initial-admin-password")).ok())
        .expect("one node made the initial admin");
    basic_auth("admin", password.trim())
}

/// Polls `verify` on every node until each refuses `token` with 401, within a generous
/// bound (the box is noisy). `after_204`: the delete was answered, so a node accepting the
/// token at any point fails at once; otherwise (a change written behind the nodes' backs) it
/// may until its next sync.
fn refused_everywhere(nodes: &[&Service], token: &str, after_204: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (n, node) in nodes.iter().enumerate() {
        loop {
            let status = verify(node, token);
            assert!(
                !(after_204 && status == 200),
                "{what}: node {n} accepted the deleted token"
            );
            if status == 401 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: node {n} answers {status}, not 401"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Terminates every node's feed connection (the one that LISTENs and reads the change feed)
/// on database `name`; their number. rust-postgres cannot name a connection, so the feed is
/// told from the pool by what it last ran: every sync ends by recording the node's heartbeat
/// in `pa_auth_nodes`, which only the feed does (LISTEN and the revision read come before).
fn terminate_feeds(db: &mut postgres::Client, name: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'pa-auth' \
         AND (query LIKE 'LISTEN%' OR query LIKE 'INSERT INTO pa_auth_nodes%' \
              OR query LIKE 'SELECT value, clock_timestamp()%')",
        &[&name],
    )
    .expect("pg_terminate_backend")
    .get(0)
}

/// Issue 17: the LISTEN connection killed (`pg_terminate_backend`) and a delete made
/// meanwhile: every node still refuses the token within the poll bound, and keeps following
/// later changes. NOTIFY is lost while a node is not listening; the node must reload on
/// reconnect (or find the change by its poll), never keep serving its old copy.
#[test]
fn postgres_a_killed_listen_connection_misses_no_delete() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("listen");
    let args = ["--database-url", url.as_str()];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let c = Service::start(&args);
    let nodes = [&a, &b, &c];
    let admin = cluster_admin(&nodes);
    let mut db = pg.client("listen");

    // Round 1: the feeds killed, then a delete through the admin API of one node while the
    // others are reconnecting. Its 204 still means refused everywhere.
    let (id, token) = create_token(&a, &admin, "through-the-api");
    for node in nodes {
        wait_for("the token on every node", || verify(node, &token) == 200);
    }
    let mut killed = 0;
    wait_for("three feed connections to terminate", || {
        killed += terminate_feeds(&mut db, "listen");
        killed >= 3
    });
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(a.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    for (n, node) in nodes.iter().enumerate() {
        assert_ne!(verify(node, &token), 200, "node {n} after the 204");
    }
    refused_everywhere(&nodes, &token, true, "deleted through the API");
    for node in nodes {
        assert!(
            node.log_shows("cannot confirm the database's latest change"),
            "the feed of every node was cut: {}",
            node.log_text()
        );
    }

    // Round 2: the feeds killed and, in the same breath, a delete written straight into the
    // database (as another node's would be) with no NOTIFY at all: only the reconnect's
    // reload (or the poll) can tell the nodes.
    let (_, token) = create_token(&b, &admin, "meanwhile");
    for node in nodes {
        wait_for("the token on every node", || verify(node, &token) == 200);
    }
    let mut killed = 0;
    wait_for("three feed connections to terminate", || {
        killed += terminate_feeds(&mut db, "listen");
        killed >= 3
    });
    db.batch_execute(
        "BEGIN;
         WITH gone AS (DELETE FROM pa_auth_tokens WHERE name = 'meanwhile' RETURNING id, hash),
              rev AS (UPDATE pa_auth_meta SET value = value + 1 WHERE key = 'revision'
                      RETURNING value)
         INSERT INTO pa_auth_changes (revision, op, id, hash)
             SELECT rev.value, 'delete', gone.id, gone.hash FROM gone, rev;
         COMMIT;",
    )
    .expect("a delete made meanwhile");
    refused_everywhere(&nodes, &token, false, "deleted while no node listened");

    // The nodes keep following: a token made afterwards works everywhere, and its delete
    // is everywhere before its 204.
    let (id, token) = create_token(&c, &admin, "afterwards");
    for node in nodes {
        wait_for("the later token on every node", || {
            verify(node, &token) == 200
        });
    }
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(b.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    for (n, node) in nodes.iter().enumerate() {
        refused_after_204(node, &token, &format!("node {n} after the 204"));
    }
    for node in nodes {
        assert_eq!(Req::get("/healthz").send(node.addr).status, 200);
    }
}

/// Issue 17: failover. A streaming replica (`pg_basebackup -R`) is promoted after the
/// primary dies; the nodes, given both servers in a multi-host URL with
/// `target_session_attrs=read-write`, fail closed while no writable database answers (past
/// --max-staleness; a node allowed 30 s goes on verifying), then follow the promoted replica
/// by themselves: old tokens verify, a new one made on one node works on another, and a
/// delete is everywhere before its 204.
#[test]
fn postgres_nodes_follow_a_promoted_replica_through_a_multi_host_url() {
    let Some(primary) = Postgres::start() else {
        return;
    };
    primary.database("ha");
    let replica = Postgres::replica_of(&primary);
    let url = format!(
        "postgres://pa@127.0.0.1:{},127.0.0.1:{}/ha?target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let c = Service::start(&args);
    // A node allowed 30 s without the database keeps verifying through a short outage.
    let patient = Service::start(&[
        "--database-url",
        url.as_str(),
        "--flush-interval",
        "1",
        "--max-staleness",
        "30",
    ]);
    let nodes = [&a, &b, &c];
    assert!(
        a.log_shows(&format!(
            "127.0.0.1:{},127.0.0.1:{}/ha",
            primary.port(),
            replica.port()
        )),
        "{}",
        a.log_text()
    );
    let admin = cluster_admin(&nodes);
    let (_, first) = create_token(&a, &admin, "before-1");
    let (gone_id, gone) = create_token(&b, &admin, "before-2");
    for node in [&a, &b, &c, &patient] {
        for token in [&first, &gone] {
            wait_for("the tokens on every node", || verify(node, token) == 200);
        }
    }
    // Nothing is written on the standby (read-write only), and it has every commit.
    let mut on_primary = primary.client("ha");
    let lsn: String = on_primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .expect("lsn")
        .get(0);
    let mut on_replica = replica.client("ha");
    wait_for("the replica to replay every token", || {
        on_replica
            .query_one(
                &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
                &[],
            )
            .is_ok_and(|row| row.get(0))
    });
    let tokens: i64 = on_replica
        .query_one("SELECT count(*) FROM pa_auth_tokens", &[])
        .expect("tokens on the replica")
        .get(0);
    assert_eq!(tokens, 2);
    drop(on_primary);

    // The primary dies. No writable database: past --max-staleness (2 s) every node fails
    // closed, and admin changes answer 503.
    primary.stop_server();
    for node in nodes {
        wait_for("503 with no writable database", || {
            verify(node, &first) == 503
        });
        let health = Req::get("/healthz").send(node.addr);
        assert_eq!(health.status, 503);
        assert_eq!(health.json()["status"], "stale");
    }
    Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"name": "no-primary"}))
        .send(a.addr)
        .assert_error(503, "service_unavailable");
    assert_eq!(
        verify(&patient, &first),
        200,
        "within its --max-staleness a node still verifies"
    );

    // The replica is promoted: the nodes find it through the URL and serve again.
    replica.promote();
    for node in nodes {
        wait_for("serving again after the failover", || {
            verify(node, &first) == 200
        });
        assert_eq!(verify(node, &gone), 200);
        assert_eq!(Req::get("/healthz").send(node.addr).status, 200);
    }
    wait_for("the patient node through the failover", || {
        Req::get("/healthz").send(patient.addr).status == 200
    });
    let (_, made) = create_token(&a, &admin, "after-failover");
    wait_for("the new token on b", || verify(&b, &made) == 200);
    wait_for("the new token on c", || verify(&c, &made) == 200);
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{gone_id}"))
        .header("Authorization", &admin)
        .send(b.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    for (n, node) in [&a, &b, &c, &patient].iter().enumerate() {
        refused_after_204(node, &gone, &format!("node {n} after the 204"));
    }
    assert_eq!(verify(&c, &first), 200);
    // Every node's feed (four) is on the promoted replica now.
    wait_for("one feed per node on the new primary", || {
        // Counted, not terminated: the filter of terminate_feeds.
        let feeds: i64 = on_replica
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'ha' \
                 AND application_name = 'pa-auth' AND (query LIKE 'LISTEN%' \
                 OR query LIKE 'INSERT INTO pa_auth_nodes%' \
                 OR query LIKE 'SELECT value, clock_timestamp()%')",
                &[],
            )
            .expect("pg_stat_activity")
            .get(0);
        feeds == 4
    });
}

/// Issue 18: an edit made on one node is a change the others apply: the view and the name
/// forward-auth sends change on node B after a PATCH on node A; a rename onto a name another
/// node's token has (any case) is a 409, and two nodes renaming two tokens to one name at
/// once make exactly one of them have it.
#[test]
fn postgres_a_patch_on_one_node_is_seen_on_the_other_and_renames_stay_unique() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("ownership");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let admin = cluster_admin(&[&a, &b]);
    let patch = |node: &Service, id: &str, body: serde_json::Value| {
        Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &admin)
            .json(&body)
            .send(node.addr)
    };
    let view = |node: &Service, id: &str| {
        Req::get(&format!("/admin/api/tokens/{id}"))
            .header("Authorization", &admin)
            .send(node.addr)
            .json()
    };
    let name_header = |node: &Service, token: &str| {
        Req::get("/auth/verify")
            .bearer(token)
            .send(node.addr)
            .header("X-PA-Token-Name")
            .map(str::to_owned)
    };
    let (id, token) = create_token(&a, &admin, "deploy");
    wait_for("the token on B", || verify(&b, &token) == 200);

    let r = patch(
        &a,
        &id,
        serde_json::json!({"name": "deploy-prod", "owner": "Team-A", "description": "ci"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // B reads the store for views, and its index follows the feed for forward-auth.
    let seen = view(&b, &id);
    assert_eq!(
        (&seen["name"], &seen["owner"], &seen["description"]),
        (
            &serde_json::json!("deploy-prod"),
            &serde_json::json!("Team-A"),
            &serde_json::json!("ci")
        )
    );
    wait_for("the new name in B's forward-auth answer", || {
        name_header(&b, &token).as_deref() == Some("deploy-prod")
    });
    assert_eq!(name_header(&a, &token).as_deref(), Some("deploy-prod"));
    let listed = Req::get("/admin/api/tokens?owner=team-a")
        .header("Authorization", &admin)
        .send(b.addr)
        .json();
    assert_eq!(listed["items"][0]["id"], id.as_str());

    // A token made on B; A cannot take its name, in any case.
    let (other, _) = create_token(&b, &admin, "Release");
    patch(&a, &id, serde_json::json!({"name": "RELEASE"})).assert_error(409, "conflict");
    patch(&b, &id, serde_json::json!({"name": "release"})).assert_error(409, "conflict");
    assert_eq!(view(&a, &id)["name"], "deploy-prod", "nothing changed");
    // The old name is free everywhere once renamed; the new one taken everywhere.
    create_token(&b, &admin, "deploy");
    let dup = Req::new("POST", "/admin/api/tokens")
        .header("Authorization", &admin)
        .json(&serde_json::json!({"name": "DEPLOY-PROD"}))
        .send(b.addr);
    dup.assert_error(409, "conflict");

    // Two nodes rename two tokens to one name at the same moment: one wins, one gets 409.
    for round in 0..5 {
        let target = format!("contested-{round}");
        let (x, y) = (id.clone(), other.clone());
        let (ta, tb) = (target.clone(), target.to_uppercase());
        let (addr_a, addr_b, auth) = (a.addr, b.addr, admin.clone());
        let auth2 = auth.clone();
        let one = std::thread::spawn(move || {
            Req::new("PATCH", &format!("/admin/api/tokens/{x}"))
                .header("Authorization", &auth)
                .json(&serde_json::json!({ "name": ta }))
                .send(addr_a)
                .status
        });
        let two = std::thread::spawn(move || {
            Req::new("PATCH", &format!("/admin/api/tokens/{y}"))
                .header("Authorization", &auth2)
                .json(&serde_json::json!({ "name": tb }))
                .send(addr_b)
                .status
        });
        let mut statuses = [one.join().expect("a"), two.join().expect("b")];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}");
        let names: Vec<String> = [&id, &other]
            .iter()
            .map(|t| view(&a, t)["name"].as_str().unwrap_or("").to_lowercase())
            .collect();
        assert_eq!(
            names.iter().filter(|n| **n == target).count(),
            1,
            "round {round}: {names:?}"
        );
    }
    let audit = Req::get("/admin/api/audit?event=token.updated")
        .header("Authorization", &admin)
        .send(b.addr)
        .json();
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(6), "{audit}");
}

/// Issue 18: a schema 2 database (no owner or description columns) is upgraded in place to
/// 3 by the first node of the new release; its tokens keep working and can be edited.
#[test]
fn postgres_upgrades_a_schema_2_database() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("upgrade2");
    let args = ["--database-url", url.as_str()];
    let (admin, id, token) = {
        let svc = Service::start(&args);
        let admin = basic_auth("admin", &svc.initial_password());
        let (id, token) = create_token(&svc, &admin, "kept");
        (admin, id, token)
    };
    let mut db = pg.client("upgrade2");
    db.batch_execute(
        "DROP INDEX pa_auth_tokens_owner;
         ALTER TABLE pa_auth_tokens DROP COLUMN owner, DROP COLUMN owner_folded, \
             DROP COLUMN description;
         UPDATE pa_auth_meta SET value = 2 WHERE key = 'schema_version';",
    )
    .expect("schema 2");
    let svc = Service::start(&args);
    assert_eq!(verify(&svc, &token), 200);
    let version: i64 = db
        .query_one(
            "SELECT value FROM pa_auth_meta WHERE key = 'schema_version'",
            &[],
        )
        .expect("version")
        .get(0);
    assert_eq!(version, 6);
    assert!(svc
        .log_text()
        .contains("upgraded the pa-auth schema in the database from 2 to 6"));
    let v = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(svc.addr)
        .json();
    assert_eq!(v["owner"], serde_json::Value::Null);
    let r = Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .json(&serde_json::json!({"owner": "ops"}))
        .send(svc.addr);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["owner"], "ops");
}

/// Issue 18 §4: the PostgreSQL store's one-`SELECT` count of expiring and idle tokens, with
/// creation and last-used times set back in the database (idleness reads the stored times).
#[test]
fn postgres_counts_expiring_and_unused_tokens_in_one_select() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("lifecycle_stats");
    let svc = Service::start(&["--database-url", url.as_str()]);
    let admin = basic_auth("admin", &svc.initial_password());
    for name in ["idle-100d", "idle-40d", "used-yesterday", "soon", "gone"] {
        create_token(&svc, &admin, name);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 86_400i64;
    let old_micros = (now - 100 * day) * 1_000_000;
    let mut db = pg.client("lifecycle_stats");
    for (sql, value, rows) in [
        (
            "UPDATE pa_auth_tokens SET created_micros = $1 WHERE name <> 'soon'",
            old_micros,
            4,
        ),
        (
            "UPDATE pa_auth_tokens SET last_used = $1 WHERE name = 'idle-40d'",
            now - 40 * day,
            1,
        ),
        (
            "UPDATE pa_auth_tokens SET last_used = $1 WHERE name = 'used-yesterday'",
            now - day,
            1,
        ),
        (
            "UPDATE pa_auth_tokens SET expires_at = $1 WHERE name = 'soon'",
            now + 3600,
            1,
        ),
        (
            "UPDATE pa_auth_tokens SET expires_at = $1 WHERE name = 'gone'",
            now - 1,
            1,
        ),
    ] {
        assert_eq!(db.execute(sql, &[&value]).expect(sql), rows, "{sql}");
    }
    // The first scrape counts (then cached for 30 s).
    let text = Req::get("/metrics").send(svc.addr).text();
    for (series, want) in [
        ("pa_auth_tokens{status=\"active\"} ", "4"),
        ("pa_auth_tokens{status=\"expired\"} ", "1"),
        ("pa_auth_tokens_expiring{within=\"1d\"} ", "1"),
        ("pa_auth_tokens_expiring{within=\"7d\"} ", "1"),
        ("pa_auth_tokens_expiring_7d ", "1"),
        // idle-100d and idle-40d; the expired one is not counted, it opens nothing.
        ("pa_auth_tokens_unused{for=\"30d\"} ", "2"),
        ("pa_auth_tokens_unused{for=\"90d\"} ", "1"),
    ] {
        let line = text.lines().find(|l| l.starts_with(series));
        assert_eq!(
            line.and_then(|l| l.strip_prefix(series)),
            Some(want),
            "{series}in\n{text}"
        );
    }
}

/// Issue 18 part 1 on a cluster: a rotation on node A reaches node B (both secrets work
/// there, the header says which); the new secret's first use on B ends the old one on A too
/// (through B's maintenance round and the feed); a delete on B refuses both secrets on
/// every node before its 204.
#[test]
fn postgres_a_rotation_reaches_every_node_and_a_delete_ends_both_secrets_before_its_204() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("rotation");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let a = Service::start(&args);
    let b = Service::start(&args);
    let admin = cluster_admin(&[&a, &b]);
    let secret_of = |svc: &Service, token: &str| {
        let r = Req::get("/auth/verify").bearer(token).send(svc.addr);
        (r.status, r.header("X-PA-Token-Secret").map(str::to_owned))
    };
    let rotate = |svc: &Service, id: &str, body: serde_json::Value| {
        let r = Req::new("POST", &format!("/admin/api/tokens/{id}/rotate"))
            .header("Authorization", &admin)
            .json(&body)
            .send(svc.addr);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    };
    let (id, old) = create_token(&a, &admin, "rotated-on-a");
    let new = rotate(&a, &id, serde_json::json!({"overlap": "1h"}));
    // Waited for like a delete: applied on B before the 201.
    for node in [&a, &b] {
        assert_eq!(secret_of(node, &old), (200, Some("previous".into())));
        assert_eq!(secret_of(node, &new), (200, Some("current".into())));
    }
    let view = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(b.addr)
        .json();
    assert!(view["previousSecret"]["expiresAt"].is_string(), "{view}");

    // Deleted on B: both secrets refused on every node once the 204 is in hand.
    let r = Req::new("DELETE", &format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(b.addr);
    assert_eq!(r.status, 204);
    for token in [&old, &new] {
        for node in [&a, &b] {
            refused_after_204(node, token, "deleted");
        }
    }

    // untilNewSecretUsed: the first use on B ends the old secret on B at once, and on A
    // after B's maintenance round makes it durable (here --flush-interval 1).
    let (id2, old2) = create_token(&a, &admin, "until-used");
    let new2 = rotate(
        &a,
        &id2,
        serde_json::json!({"overlap": "untilNewSecretUsed"}),
    );
    assert_eq!(secret_of(&b, &new2), (200, Some("current".into())));
    assert_eq!(verify(&b, &old2), 401);
    refused_everywhere(
        &[&a, &b],
        &old2,
        false,
        "old secret after the new one's use",
    );
    assert_eq!(verify(&a, &new2), 200);
    let events = Req::get(&format!(
        "/admin/api/audit?event=token.previous_secret_expired&tokenId={id2}"
    ))
    .header("Authorization", &admin)
    .send(a.addr)
    .json();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "ended once, by one node: {events}");
    assert_eq!(items[0]["reason"], "new secret used");

    // No overlap (a leaked secret): the old one is refused on every node at the 201, and a
    // previous secret ended on demand on B is refused on A at the 204.
    let (id3, old3) = create_token(&a, &admin, "leaked");
    let new3 = rotate(&b, &id3, serde_json::json!({"overlap": "0"}));
    for node in [&a, &b] {
        assert_eq!(verify(node, &old3), 401, "the leaked secret still works");
    }
    let newer3 = rotate(&a, &id3, serde_json::json!({"overlap": "1h"}));
    assert_eq!(secret_of(&b, &new3), (200, Some("previous".into())));
    let r = Req::new(
        "DELETE",
        &format!("/admin/api/tokens/{id3}/previous-secret"),
    )
    .header("Authorization", &admin)
    .send(b.addr);
    assert_eq!(r.status, 204, "{}", r.text());
    for node in [&a, &b] {
        refused_after_204(node, &new3, "ended");
        assert_eq!(verify(node, &newer3), 200);
    }
}

/// Issue 19: a schema 5 database (no restriction columns) is upgraded in place to 6, its
/// tokens unrestricted; an edit of allowedCidrs or access on one node reaches the other
/// node's forward-auth index through the feed, and clearing it does too.
#[test]
fn postgres_restrictions_upgrade_in_place_and_reach_every_node() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("restrictions");
    let args = ["--database-url", url.as_str(), "--flush-interval", "1"];
    let (admin, id, token) = {
        let svc = Service::start(&args);
        let admin = basic_auth("admin", &svc.initial_password());
        let (id, token) = create_token(&svc, &admin, "edge");
        (admin, id, token)
    };
    let mut db = pg.client("restrictions");
    db.batch_execute(
        "ALTER TABLE pa_auth_tokens DROP COLUMN allowed_cidrs, DROP COLUMN access;
         UPDATE pa_auth_meta SET value = 5 WHERE key = 'schema_version';",
    )
    .expect("schema 5");
    let a = Service::start(&args);
    let b = Service::start(&args);
    assert!(a
        .log_text()
        .contains("upgraded the pa-auth schema in the database from 5 to 6"));
    assert_eq!(verify(&a, &token), 200);
    wait_for("the token on B", || verify(&b, &token) == 200);
    let patch = |node: &Service, body: serde_json::Value| {
        let r = Req::new("PATCH", &format!("/admin/api/tokens/{id}"))
            .header("Authorization", &admin)
            .json(&body)
            .send(node.addr);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    // Loopback is outside 10/8: B refuses the token once it has applied A's edit.
    let v = patch(&a, serde_json::json!({"allowedCidrs": ["10.0.0.0/8"]}));
    assert_eq!(v["allowedCidrs"], serde_json::json!(["10.0.0.0/8"]));
    assert_eq!(verify(&a, &token), 403);
    wait_for("A's allowedCidrs on B", || verify(&b, &token) == 403);
    let seen = Req::get(&format!("/admin/api/tokens/{id}"))
        .header("Authorization", &admin)
        .send(b.addr)
        .json();
    assert_eq!(seen["allowedCidrs"], serde_json::json!(["10.0.0.0/8"]));
    // A trusted proxy's address for the client inside 10/8 passes on B.
    let inside = Req::get("/auth/verify")
        .bearer(&token)
        .header("X-Forwarded-For", "10.2.3.4")
        .send(b.addr);
    assert_eq!(inside.status, 200, "{}", inside.text());
    // Read-only made on B, cleared networks: A refuses a verify without a trusted method.
    patch(
        &b,
        serde_json::json!({"allowedCidrs": null, "access": "read"}),
    );
    // (Still 403 from the old list until A applies the edit: wait for the GET to pass.)
    let get = |node: &Service| {
        Req::get("/auth/verify")
            .bearer(&token)
            .header("X-Original-Method", "GET")
            .send(node.addr)
    };
    wait_for("B's edit on A", || get(&a).status == 200);
    assert_eq!(verify(&a, &token), 403, "read-only, no trusted method");
    let get = get(&a);
    assert_eq!(get.header("X-PA-Token-Access"), Some("read"));
    // A restart reloads the restrictions from the database.
    drop(a);
    let c = Service::start(&args);
    assert_eq!(verify(&c, &token), 403);
    patch(&c, serde_json::json!({"access": "full"}));
    wait_for("full again on B", || verify(&b, &token) == 200);
}
