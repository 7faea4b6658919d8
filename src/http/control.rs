//! The local control socket (`--control-socket`): a Unix stream listener the CLI reaches the
//! running server through. Binding (a stale file from a killed server is replaced, a live one
//! is not), mode 0600, the peer's credentials (`SO_PEERCRED`, read once at accept), and the
//! file's removal at shutdown. Who may use it is the handler's decision: the layer only reports
//! the peer's uid with each request ([`super::Request::local_uid`]).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A bound control socket; the file is removed when this is dropped.
pub(super) struct ControlListener {
    pub(super) listener: mio::net::UnixListener,
    path: PathBuf,
}

impl ControlListener {
    /// Binds `path` with mode 0600. A file already there is replaced only if nothing answers
    /// on it (a server killed with `kill -9` leaves its socket behind); a live one is an error.
    pub(super) fn bind(path: &Path) -> io::Result<ControlListener> {
        use std::os::unix::fs::MetadataExt;
        // In a directory others can write, another user could put a link or a socket of
        // their own at the path, before or after the bind.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let meta = std::fs::metadata(dir)?;
        let me = rustix::process::geteuid().as_raw();
        if meta.mode() & 0o022 != 0 || meta.uid() != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not this user's alone (owner uid {}, mode {:o}): put the control \
                     socket in a directory only the service's user owns and can write",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
        if let Ok(there) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            // Only a socket (a killed server's) or a link (the data dir's link to a socket
            // kept elsewhere, from another configuration) is replaced: never another file.
            let kind = there.file_type();
            if !kind.is_socket() && !kind.is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if kind.is_socket() && UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        // The directory (the data dir, or systemd's RuntimeDirectory) is 0700 already; the
        // mode is for an operator who widens it. Every connection's uid is checked anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlListener {
            listener: mio::net::UnixListener::from_std(listener),
            path: path.to_owned(),
        })
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt;
        // Still our socket (never a file put there since).
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The uid of the process at the other end of a control connection, as the kernel recorded it
/// when it connected (`SO_PEERCRED`: it cannot be forged by what the peer sends).
pub(super) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(cred.uid.as_raw())
}

/// The address control connections are accounted under (and shown as, where an address is
/// needed): one address for all of them, so they share one per-address cap.
pub const LOCAL_PEER: std::net::SocketAddr = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));
