//! How a command reaches the admin API's handlers: through the running server's control
//! socket (live), or in this process on the data dir (offline, when no server holds it). Both
//! carry the same HTTP request to the same handlers and bring back the same answer, so a
//! command's output cannot depend on which way it went.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{CONTROL_SOCKET_NAME, DEFAULT_DATA_DIR};
use crate::http::ServerConfig;
use crate::service::error::{Error, Result};
use crate::service::Service;
use crate::store::sled::{SledStore, StoreOptions};
use crate::web::App;

/// Where the systemd unit's control socket lives (`RuntimeDirectory=pa-auth`).
pub const SYSTEMD_SOCKET: &str = "/run/pa-auth/control.sock";

/// A server that sends nothing for this long (stopped, hung) is given up on.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// However it trickles, an answer must be complete within this.
const ANSWER_DEADLINE: Duration = Duration::from_secs(1800);
/// The largest answer read (a backup of a few million tokens fits).
const MAX_ANSWER: u64 = 4 << 30;
/// The largest answer head read.
const MAX_HEAD: usize = 64 * 1024;

/// An answer from the admin API.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Internal(format!("the server's answer is not JSON: {e}")))
    }
}

/// The flags every command that reaches the admin API shares.
pub struct Target<'a> {
    pub data_dir: Option<&'a Path>,
    pub socket: Option<&'a Path>,
}

/// The way to the handlers.
pub enum Endpoint {
    /// The running server's control socket.
    Live(PathBuf),
    /// The data dir opened here (its lock taken: no server may hold it).
    Offline(Box<App>),
}

impl Endpoint {
    /// `--socket PATH`; else, when no data dir was named, systemd's socket (the packaged
    /// service) if it answers; else the data dir: offline if no one holds it, and if a server
    /// does, that server's socket (`<data-dir>/control.sock`, which it links to its socket when
    /// that is elsewhere). The lock decides, so a link left by a killed server, or copied with
    /// the data dir, never sends a command to another server. A socket found this way must
    /// pass [`vouch_for`]. `create_missing`: an offline command that creates (a token, an
    /// admin) may start a new data dir; the others need one with data in it.
    pub fn open(target: &Target<'_>, create_missing: bool) -> Result<Endpoint> {
        if let Some(socket) = target.socket {
            return match UnixStream::connect(socket) {
                Ok(_) => Ok(Endpoint::Live(socket.to_owned())),
                Err(e) => Err(socket_error(socket, &e)),
            };
        }
        let named = target.data_dir.is_some() || env_data_dir().is_some();
        if !named {
            if let Some(live) = live_socket(Path::new(SYSTEMD_SOCKET))? {
                return Ok(live);
            }
        }
        let dir = data_dir_or_default(target.data_dir);
        let local = dir.join(CONTROL_SOCKET_NAME);
        let held = || match live_socket(&local) {
            Ok(Some(live)) => Ok(live),
            Ok(None) => Err(Error::Config(format!(
                "{} is held by a running server and no control socket answers at {}: give \
                 the server's socket with --socket PATH (its --control-socket)",
                dir.display(),
                local.display()
            ))),
            Err(e) => Err(e),
        };
        if dir.exists() {
            trusted_data_dir(&dir, false)?;
            // Held (a server, or a cluster node's local files): that server's socket.
            match crate::store::sled::lock_data_dir(&dir) {
                Err(crate::store::Error::DataDirLocked(_)) => return held(),
                Err(e) => return Err(e.into()),
                Ok(lock) => drop(lock),
            }
        }
        if !create_missing && !dir.join("db").exists() {
            return Err(Error::Config(format!(
                "no pa-auth data in {} and no server holds it (set --data-dir, \
                 PA_AUTH_DATA_DIR or --socket)",
                dir.display()
            )));
        }
        trusted_data_dir(&dir, create_missing)?;
        match SledStore::open(&dir, &offline_store_options()) {
            Ok(store) => {
                let service = Arc::new(Service::new(Arc::new(store), 1));
                Ok(Endpoint::Offline(Box::new(App::new(service, None))))
            }
            Err(crate::store::Error::DataDirLocked(_)) => held(),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one request to the admin API (`body` as JSON) and returns its answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: pa-auth-cli\r\n"
        );
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        let raw = match self {
            Endpoint::Live(socket) => {
                let mut stream =
                    UnixStream::connect(socket).map_err(|e| socket_error(socket, &e))?;
                stream.set_read_timeout(Some(SILENCE_TIMEOUT))?;
                stream.set_write_timeout(Some(SILENCE_TIMEOUT))?;
                let sent = stream.write_all(&bytes).map_err(Error::from);
                match sent.and_then(|()| read_answer(&mut stream)) {
                    Err(Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        ) =>
                    {
                        return Err(unanswered());
                    }
                    other => other?,
                }
            }
            Endpoint::Offline(app) => crate::http::in_process::exchange(
                &**app,
                &offline_server_config(),
                &bytes,
                rustix::process::geteuid().as_raw(),
            ),
        };
        parse_answer(&raw)
    }

    /// Flushes an offline store (a live server flushes its own).
    pub fn finish(&self) -> Result<()> {
        if let Endpoint::Offline(app) = self {
            app.service.store().flush()?;
        }
        Ok(())
    }
}

/// The socket at `path` if a server answers there (a file left by a killed server does not)
/// and it can be trusted with this command ([`vouch_for`]).
fn live_socket(path: &Path) -> Result<Option<Endpoint>> {
    match UnixStream::connect(path) {
        Ok(stream) => {
            vouch_for(path, &stream).map_err(|why| {
                Error::Config(format!(
                    "refusing the control socket found at {}: {why}; if it is your server's, \
                     name it with --socket",
                    path.display()
                ))
            })?;
            Ok(Some(Endpoint::Live(path.to_owned())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(socket_error(path, &e)),
        Err(_) => Ok(None),
    }
}

/// Whether a socket the CLI found by itself (not named with `--socket`) belongs to a real
/// pa-auth server rather than to another local user who planted one where the CLI looks: the
/// commands send passwords and receive secrets. Its directory (after links) must pass
/// [`trusted_dir`], and the process on the other end (`SO_PEERCRED`) must run as root, as
/// this user, or as that directory's owner (the service's user owns its data dir and runtime
/// dir).
fn vouch_for(path: &Path, stream: &UnixStream) -> std::result::Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let dir = real.parent().ok_or("it has no directory")?;
    let owner = trusted_dir(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let server = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot tell who serves it: {e}"))?
        .uid
        .as_raw();
    if [0, me, owner].contains(&server) {
        Ok(())
    } else {
        Err(format!(
            "it is served by uid {server}, not root, you or {}'s owner",
            dir.display()
        ))
    }
}

/// Whether `dir` (already resolved) is a place only trusted users could have made or changed,
/// like OpenSSH's checks of its files: writable by its owner only; every directory above it
/// owned by root or this user and writable by no one else (or sticky, as `/tmp`, where others
/// cannot replace an entry); and if another user owns it (the service's user owns its data
/// dir), its parent is writable by its owner alone, so no one else could have made it there.
/// Returns its owner.
fn trusted_dir(dir: &Path) -> std::result::Result<u32, String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let meta = |p: &Path| std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()));
    let dir_meta = meta(dir)?;
    if dir_meta.mode() & 0o022 != 0 {
        return Err(format!("{} is writable by others", dir.display()));
    }
    let parent_shared = dir
        .parent()
        .map(|p| meta(p).map(|m| m.mode() & 0o022 != 0))
        .transpose()?
        .unwrap_or(false);
    if ![0, me].contains(&dir_meta.uid()) && parent_shared {
        return Err(format!(
            "{} belongs to uid {} and sits in a directory others can write",
            dir.display(),
            dir_meta.uid()
        ));
    }
    for above in dir.ancestors().skip(1) {
        let m = meta(above)?;
        let sticky = m.mode() & 0o1000 != 0;
        if ![0, me].contains(&m.uid()) {
            return Err(format!("{} belongs to uid {}", above.display(), m.uid()));
        }
        if m.mode() & 0o022 != 0 && !sticky {
            return Err(format!("{} is writable by others", above.display()));
        }
    }
    Ok(dir_meta.uid())
}

/// Checks a data dir before it is opened offline (created first, 0700, when a command may
/// start one): a store another user could have planted or can change is refused, rather than
/// written to with this user's rights (a password hash, a lock file through a link).
fn trusted_data_dir(dir: &Path, create_missing: bool) -> Result<()> {
    if create_missing && !dir.exists() {
        crate::store::create_private_dir(dir)?;
    }
    let real = std::fs::canonicalize(dir)?;
    trusted_dir(&real)
        .map(|_| ())
        .map_err(|why| Error::Config(format!("refusing the data dir {}: {why}", dir.display())))
}

fn socket_error(path: &Path, e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::Config(format!(
            "cannot use the control socket {}: permission denied (only root and the \
             service's user may use it)",
            path.display()
        ))
    } else {
        Error::Config(format!(
            "no server answers on the control socket {}: {e}",
            path.display()
        ))
    }
}

fn env_data_dir() -> Option<String> {
    std::env::var("PA_AUTH_DATA_DIR")
        .ok()
        .filter(|v| !v.is_empty())
}

/// `--data-dir`, else `PA_AUTH_DATA_DIR`, else `./pa-auth-data`.
pub fn data_dir_or_default(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| env_data_dir().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// How an offline command opens the store.
pub fn offline_store_options() -> StoreOptions {
    StoreOptions::default()
}

/// The limits an in-process request meets: the server's own, with room for a backup answer.
fn offline_server_config() -> ServerConfig {
    ServerConfig {
        refusal: crate::web::error::refusal,
        ..ServerConfig::default()
    }
}

/// The server closed the connection without an answer (it was stopping, or died).
fn unanswered() -> Error {
    Error::Failed(
        "the server closed the connection without answering (stopping?): check whether the \
         command was done (e.g. token list) before running it again"
            .into(),
    )
}

/// Reads one answer from the socket, bounded: a head of at most [`MAX_HEAD`], then exactly
/// the body its Content-Length announces (at most [`MAX_ANSWER`]), within [`ANSWER_DEADLINE`].
fn read_answer(stream: &mut UnixStream) -> Result<Vec<u8>> {
    let started = std::time::Instant::now();
    let late = || Error::Failed("the server's answer did not come in time".into());
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_len = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if raw.len() > MAX_HEAD {
            return Err(Error::Failed(
                "the server's answer head is too large".into(),
            ));
        }
        if started.elapsed() > ANSWER_DEADLINE {
            return Err(late());
        }
        match stream.read(&mut chunk) {
            Ok(0) => break raw.len(),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            Err(e) => return Err(e.into()),
        }
    };
    let length = content_length(&raw[..head_len]).unwrap_or(0);
    if length > MAX_ANSWER {
        return Err(Error::Failed(format!(
            "the server's answer announces {length} bytes, more than this command reads"
        )));
    }
    let want = head_len as u64 + length;
    while (raw.len() as u64) < want {
        if started.elapsed() > ANSWER_DEADLINE {
            return Err(late());
        }
        let room = usize::try_from(want - raw.len() as u64).unwrap_or(usize::MAX);
        let take = room.min(chunk.len());
        match stream.read(&mut chunk[..take]) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(raw)
}

fn content_length(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Status and body of a complete HTTP/1.1 answer (the server always sends Content-Length).
fn parse_answer(raw: &[u8]) -> Result<Answer> {
    let broken = |what: &str| Error::Internal(format!("the server's answer is {what}"));
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut answer = httparse::Response::new(&mut headers);
    let head_len = match answer.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if raw.is_empty() => return Err(unanswered()),
        _ => return Err(broken("not HTTP")),
    };
    let status = answer.code.ok_or_else(|| broken("without a status"))?;
    let length = answer
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(raw.len() - head_len);
    let body = raw
        .get(head_len..head_len + length)
        .ok_or_else(|| broken("cut short"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}
