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

use crate::trust;

/// Where the systemd unit's control socket lives (`RuntimeDirectory=pa-auth`).
pub const SYSTEMD_SOCKET: &str = "/run/pa-auth/control.sock";

/// A server that sends nothing for this long (stopped, hung) is given up on.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// However it trickles, an answer must be complete within this.
const ANSWER_DEADLINE: Duration = Duration::from_secs(1800);
/// The largest answer read: a page of tokens, a usage view, … (a backup: below).
const MAX_ANSWER: u64 = 64 << 20;
/// The largest backup read (a few million tokens fit).
const MAX_BACKUP_ANSWER: u64 = 4 << 30;
/// How long a connect may wait for the server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

/// The data dir an offline command opened, and its owner.
pub struct Offline {
    dir: PathBuf,
    owner: u32,
}

/// The flags every command that reaches the admin API shares.
pub struct Target<'a> {
    pub data_dir: Option<&'a Path>,
    pub socket: Option<&'a Path>,
}

/// The way to the handlers.
pub enum Endpoint {
    /// The running server's control socket; `server`: the pid every connection must show
    /// (the server vouched for when the command began).
    Live { socket: PathBuf, server: i32 },
    /// The data dir opened here (its lock taken: no server may hold it).
    Offline(Box<App>, Offline),
}

impl Endpoint {
    /// `--socket PATH`; else, when no data dir was named, systemd's socket (the packaged
    /// service) if it answers; else the data dir: offline if no one holds it, and if a server
    /// does, that server's socket (`<data-dir>/control.sock`, which it links to its socket when
    /// that is elsewhere). The lock decides, so a link left by a killed server, or copied with
    /// the data dir, never sends a command to another server. A socket or data dir found this
    /// way must pass [`trust`]'s checks. `create_missing`: an offline command that creates (a
    /// token, an admin) may start a new data dir; the others need one with data in it.
    pub fn open(target: &Target<'_>, create_missing: bool) -> Result<Endpoint> {
        if let Some(socket) = target.socket {
            let stream = connect(socket)?;
            let pid =
                trust::named_socket(socket, &stream).map_err(|why| refused_socket(socket, &why))?;
            return Ok(Endpoint::Live {
                socket: socket.to_owned(),
                server: pid,
            });
        }
        let named = target.data_dir.is_some() || env_data_dir().is_some();
        if !named {
            let systemd = Path::new(SYSTEMD_SOCKET);
            if let Ok(stream) = connect(systemd) {
                let pid = trust::systemd_server(systemd, &stream)
                    .map_err(|why| refused_socket(systemd, &why))?;
                return Ok(Endpoint::Live {
                    socket: systemd.to_owned(),
                    server: pid,
                });
            }
        }
        let given = data_dir_or_default(target.data_dir);
        // From here on only the real path is used: what was checked cannot change under it.
        let dir = if create_missing || std::fs::symlink_metadata(&given).is_ok() {
            trusted_data_dir(&given, create_missing)?
        } else {
            return Err(no_data(&given));
        };
        let local = dir.join(CONTROL_SOCKET_NAME);
        let held = || -> Result<Endpoint> {
            let none_answers = || {
                Error::Config(format!(
                    "{} is held by a running server and no control socket answers at {}: \
                     give the server's socket with --socket PATH (its --control-socket)",
                    given.display(),
                    local.display()
                ))
            };
            if std::fs::symlink_metadata(&local).is_err() {
                return Err(none_answers());
            }
            // Where the socket leads is checked before anything connects there.
            trust::held_dir_socket_place(&dir, CONTROL_SOCKET_NAME)
                .map_err(|why| refused_socket(&local, &why))?;
            let stream = connect(&local).map_err(|_| none_answers())?;
            let lock = dir.join(crate::store::sled::LOCK_FILE);
            let pid = trust::held_dir_server(&dir, &lock, CONTROL_SOCKET_NAME, &stream)
                .map_err(|why| refused_socket(&local, &why))?;
            Ok(Endpoint::Live {
                socket: local.clone(),
                server: pid,
            })
        };
        // Held (a server, or a cluster node's local files): that server's socket.
        match crate::store::sled::lock_data_dir(&dir) {
            Err(crate::store::Error::DataDirLocked(_)) => return held(),
            Err(e) => return Err(e.into()),
            Ok(lock) => drop(lock),
        }
        if !create_missing && !dir.join("db").exists() {
            return Err(no_data(&given));
        }
        match SledStore::open(&dir, &offline_store_options()) {
            Ok(store) => {
                let service = Arc::new(Service::new(Arc::new(store), 1));
                let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&dir)?);
                Ok(Endpoint::Offline(
                    Box::new(App::new(service, None)),
                    Offline { dir, owner },
                ))
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
            Endpoint::Live { socket, server } => {
                let mut stream = connect(socket)?;
                // The same server as when it was vouched for, on every connection.
                match trust::peer(&stream) {
                    Ok((pid, _)) if pid == *server => {}
                    _ => return Err(refused_socket(socket, "another process answers it now")),
                }
                stream.set_read_timeout(Some(SILENCE_TIMEOUT))?;
                stream.set_write_timeout(Some(SILENCE_TIMEOUT))?;
                let cap = if path == "/admin/api/backup" {
                    MAX_BACKUP_ANSWER
                } else {
                    MAX_ANSWER
                };
                // A server that refuses at once (503 at its limit) may close before reading
                // the request: its answer is read even when the write failed.
                let sent = stream.write_all(&bytes);
                let closed = |e: &std::io::Error| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    )
                };
                match (sent, read_answer(&mut stream, cap)) {
                    (_, Ok(raw)) if !raw.is_empty() => raw,
                    (Err(e), _) if closed(&e) => return Err(unanswered()),
                    (_, Err(Error::Io(e))) if closed(&e) => return Err(unanswered()),
                    (Err(e), _) => return Err(e.into()),
                    (Ok(()), answer) => answer?,
                }
            }
            Endpoint::Offline(app, _) => crate::http::in_process::exchange(
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
        if let Endpoint::Offline(app, place) = self {
            app.service.store().flush()?;
            let me = rustix::process::geteuid().as_raw();
            if place.owner != me {
                eprintln!(
                    "note: files written in {} belong to uid {me}, the data dir to uid {}: a \
                     server run by hand as uid {} needs `chown -R {} {}` first (the shipped \
                     unit's systemd does it at start)",
                    place.dir.display(),
                    place.owner,
                    place.owner,
                    place.owner,
                    place.dir.display()
                );
            }
        }
        Ok(())
    }
}

/// Connects to a control socket, giving up after [`CONNECT_TIMEOUT`] (a listener that
/// never accepts fills its backlog and would block a plain connect forever).
fn connect(path: &Path) -> Result<UnixStream> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    let address = socket2::SockAddr::unix(path)?;
    socket
        .connect_timeout(&address, CONNECT_TIMEOUT)
        .map_err(|e| socket_error(path, &e))?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

/// A data dir an offline command may use, checked by [`trust`] (made first, 0700, when
/// `create_missing` and it is not there): its real path, to be used from then on.
pub fn trusted_data_dir(given: &Path, create_missing: bool) -> Result<PathBuf> {
    if std::fs::symlink_metadata(given).is_ok() {
        return trust::data_dir(given).map(|(real, _)| real).map_err(|why| {
            Error::Config(format!("refusing the data dir {}: {why}", given.display()))
        });
    }
    if !create_missing {
        return Err(no_data(given));
    }
    trust::create_dir(given).map_err(|why| {
        Error::Config(format!(
            "refusing to create the data dir {}: {why}",
            given.display()
        ))
    })
}

fn no_data(dir: &Path) -> Error {
    Error::Config(format!(
        "no pa-auth data in {} and no server holds it (set --data-dir, PA_AUTH_DATA_DIR or \
         --socket)",
        dir.display()
    ))
}

fn refused_socket(path: &Path, why: &str) -> Error {
    Error::Config(format!(
        "refusing the control socket {}: {why}",
        path.display()
    ))
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
/// the body its Content-Length announces (at most `cap`), within [`ANSWER_DEADLINE`].
fn read_answer(stream: &mut UnixStream, cap: u64) -> Result<Vec<u8>> {
    let started = std::time::Instant::now();
    // One read, within the whole answer's deadline; a silent server is given up on.
    let read = |stream: &mut UnixStream, into: &mut [u8]| -> Result<usize> {
        let late = || Error::Failed("the server's answer did not come in time".into());
        if started.elapsed() > ANSWER_DEADLINE {
            return Err(late());
        }
        stream.read(into).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
            _ => e.into(),
        })
    };
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
        match read(stream, &mut chunk)? {
            0 => break raw.len(),
            n => raw.extend_from_slice(&chunk[..n]),
        }
    };
    let length = content_length(&raw[..head_len]).unwrap_or(0);
    if length > cap {
        return Err(Error::Failed(format!(
            "the server's answer announces {length} bytes, more than this command reads"
        )));
    }
    let want = head_len as u64 + length;
    while (raw.len() as u64) < want {
        let room = usize::try_from(want - raw.len() as u64).unwrap_or(usize::MAX);
        let take = room.min(chunk.len());
        match read(stream, &mut chunk[..take])? {
            0 => break,
            n => raw.extend_from_slice(&chunk[..n]),
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
    let length = content_length(&raw[..head_len])
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(raw.len() - head_len);
    let body = raw
        .get(head_len..head_len + length)
        .ok_or_else(|| broken("cut short"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}
