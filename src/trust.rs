//! Which paths pa-auth trusts, as root perhaps: a data dir or control socket another local user
//! could have planted or can change (in a shared directory, through a link) must never be
//! used — the server would chmod and write through it, the CLI would send it passwords. The
//! rules, like OpenSSH's for its files: every link on the way is root's or yours; every
//! directory on the way is root's or yours and writable by no one else (or sticky, as
//! `/tmp`); the last directory may be another user's (the service's) only where no one else
//! could have made it; and, for a socket the CLI finds by itself, the process answering is the
//! one that holds the data dir's lock (`/proc/locks`), checked on every connection. A leaf:
//! names nothing of the crate.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

type Why = String;

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn lstat(p: &Path) -> Result<std::fs::Metadata, Why> {
    std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// `dir` (resolved, no links) is a place only trusted users could have made or changed:
/// writable by its owner only; every directory above it root's or yours and writable by no
/// one else (or sticky); if another user owns it, its parent is writable by its owner alone.
/// Returns its owner.
pub fn trusted_dir(dir: &Path) -> Result<u32, Why> {
    let me = me();
    let meta = lstat(dir)?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{} is writable by others", dir.display()));
    }
    let parent_shared = match dir.parent() {
        Some(p) => lstat(p)?.mode() & 0o022 != 0,
        None => false,
    };
    if ![0, me].contains(&meta.uid()) && parent_shared {
        return Err(format!(
            "{} belongs to uid {} and sits in a directory others can write",
            dir.display(),
            meta.uid()
        ));
    }
    for above in dir.ancestors().skip(1) {
        let m = lstat(above)?;
        let sticky = m.mode() & 0o1000 != 0;
        if ![0, me].contains(&m.uid()) {
            return Err(format!("{} belongs to uid {}", above.display(), m.uid()));
        }
        if m.mode() & 0o022 != 0 && !sticky {
            return Err(format!("{} is writable by others", above.display()));
        }
    }
    Ok(meta.uid())
}

/// Walks `path` (relative ones from the current directory) one component at a time with
/// `lstat`, following links itself: every link must be root's or yours (`last_link_owner`
/// may own the last component, if it is a link: the server's link to its socket), and every
/// directory passed through root's or yours and writable by no one else (or sticky: there no
/// one else can replace an entry of root's or yours). Returns the real path of what is at the
/// end (it must exist). What it passed through cannot change under the caller afterwards, so
/// the caller uses the returned path, never the one it was given.
pub fn resolve(path: &Path, last_link_owner: Option<u32>) -> Result<PathBuf, Why> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let me = me();
    let mut todo: VecDeque<OsString> = VecDeque::new();
    for part in absolute(path)?.components() {
        match part {
            Component::Normal(name) => todo.push_back(name.to_owned()),
            Component::ParentDir => todo.push_back("..".into()),
            _ => {}
        }
    }
    let mut real = PathBuf::from("/");
    passable(&real, &lstat(&real)?)?;
    let mut hops = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            real.pop();
            continue;
        }
        let candidate = real.join(&name);
        let m = lstat(&candidate)?;
        if m.file_type().is_symlink() {
            let allowed =
                [0, me].contains(&m.uid()) || (todo.is_empty() && last_link_owner == Some(m.uid()));
            if !allowed {
                return Err(format!(
                    "{} is a link of uid {}'s",
                    candidate.display(),
                    m.uid()
                ));
            }
            hops += 1;
            if hops > 40 {
                return Err(format!("{}: too many links", path.display()));
            }
            let target = std::fs::read_link(&candidate).map_err(|e| e.to_string())?;
            if target.is_absolute() {
                real = PathBuf::from("/");
            }
            for part in target.components().rev() {
                match part {
                    Component::Normal(n) => todo.push_front(n.to_owned()),
                    Component::ParentDir => todo.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        if !todo.is_empty() {
            if !m.is_dir() {
                return Err(format!("{} is not a directory", candidate.display()));
            }
            passable(&candidate, &m)?;
        }
        real = candidate;
    }
    Ok(real)
}

/// A directory others cannot change the entries of: root's or yours, writable by no one
/// else, or sticky.
fn passable(dir: &Path, m: &std::fs::Metadata) -> Result<(), Why> {
    if ![0, me()].contains(&m.uid()) {
        return Err(format!("{} belongs to uid {}", dir.display(), m.uid()));
    }
    if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
        return Err(format!("{} is writable by others", dir.display()));
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Why> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
        Ok(cwd.join(path))
    }
}

/// A data dir that exists and may be used: [`resolve`]d, then a [`trusted_dir`]. Returns its
/// real path (use it, not the one given) and its owner.
pub fn data_dir(dir: &Path) -> Result<(PathBuf, u32), Why> {
    let real = resolve(dir, None)?;
    let owner = trusted_dir(&real)?;
    Ok((real, owner))
}

/// Creates `dir` (0700) where no one else can interfere: the part that exists is
/// [`resolve`]d and passable, and each missing directory is made with a plain `mkdir`, which
/// fails if anything appeared there meanwhile. Returns the real path.
pub fn create_dir(dir: &Path) -> Result<PathBuf, Why> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = absolute(dir)?;
    let mut missing = Vec::new();
    let mut existing = dir.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        let name = existing.file_name().ok_or("nothing of the path exists")?;
        if name == ".." {
            return Err(format!("{}: `..` in a path to create", dir.display()));
        }
        missing.push(name.to_owned());
        existing = existing.parent().ok_or("nothing of the path exists")?;
    }
    let mut real = resolve(existing, None)?;
    passable(&real, &lstat(&real)?)?;
    for name in missing.iter().rev() {
        real.push(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&real)
            .map_err(|e| format!("cannot create {}: {e}", real.display()))?;
    }
    Ok(real)
}

/// What a server (perhaps root) may use as its data dir or its control socket's directory:
/// [`resolve`]d, a [`trusted_dir`], and its own user's. Returns the real path.
pub fn server_dir(dir: &Path) -> Result<PathBuf, Why> {
    let (real, owner) = data_dir(dir)?;
    if owner != me() {
        return Err(format!("{} belongs to uid {owner}", real.display()));
    }
    Ok(real)
}

/// The process that holds `lock` (an exclusive `flock`), from `/proc/locks`.
fn lock_holder(lock: &Path) -> Result<i32, Why> {
    let m = lstat(lock)?;
    if !m.file_type().is_file() {
        return Err(format!("{} is not a regular file", lock.display()));
    }
    let (dev, ino) = (m.dev(), m.ino());
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let locks = std::fs::read_to_string("/proc/locks").map_err(|e| format!("/proc/locks: {e}"))?;
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (a blocked waiter has `->`).
        if fields.get(1) != Some(&"FLOCK") || fields.contains(&"->") {
            continue;
        }
        let (Some(pid), Some(id)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let mut parts = id.split(':');
        let same = matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(ma), Some(mi), Some(i))
                if u64::from_str_radix(ma, 16).ok() == Some(major)
                    && u64::from_str_radix(mi, 16).ok() == Some(minor)
                    && i.parse::<u64>().ok() == Some(ino)
        );
        if same {
            return pid.parse().map_err(|_| "/proc/locks: a bad pid".to_owned());
        }
    }
    Err(format!("no process holds {}", lock.display()))
}

/// Who answers on a connection: (pid, uid), as the kernel recorded them.
pub fn peer(stream: &UnixStream) -> Result<(i32, u32), Why> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot tell who serves it: {e}"))?;
    Ok((cred.pid.as_raw_nonzero().get(), cred.uid.as_raw()))
}

/// The server holding `dir` (its lock held) answers on `<dir>/<socket_name>` (a
/// socket or the server's link to one): the socket's way and place are trusted, and the
/// process on `stream` is the lock's holder, running as root, you, or the owner of the data
/// dir or the socket's directory. Returns the server's pid, which every later connection
/// must show.
pub fn held_dir_server(
    dir: &Path,
    lock: &Path,
    socket_name: &str,
    stream: &UnixStream,
) -> Result<i32, Why> {
    let (owner, socket_owner) = held_dir_socket_place(dir, socket_name)?;
    let holder = lock_holder(lock)?;
    let (pid, uid) = peer(stream)?;
    if pid != holder {
        return Err(format!(
            "it is served by process {pid}, not by the one holding the data dir ({holder})"
        ));
    }
    if ![0, me(), owner, socket_owner].contains(&uid) {
        return Err(format!("it is served by uid {uid}"));
    }
    Ok(pid)
}

/// Where a held data dir's socket leads is trusted (checked before connecting): returns the
/// owners of the data dir and of the socket's real directory.
pub fn held_dir_socket_place(dir: &Path, socket_name: &str) -> Result<(u32, u32), Why> {
    let (real_dir, owner) = data_dir(dir)?;
    let real = resolve(&real_dir.join(socket_name), Some(owner))?;
    if !lstat(&real)?.file_type().is_socket() {
        return Err(format!("{} is not a socket", real.display()));
    }
    let socket_dir = real.parent().ok_or("a socket without a directory")?;
    let socket_owner = trusted_dir(socket_dir)?;
    if ![owner, me()].contains(&socket_owner) {
        return Err(format!(
            "{} belongs to uid {socket_owner}, not to the data dir's owner",
            socket_dir.display()
        ));
    }
    Ok((owner, socket_owner))
}

/// The packaged service's socket (`/run/pa-auth/control.sock`): a socket, not a link, in a
/// trusted directory, answered by root, you, or that directory's owner (the service's user).
pub fn systemd_server(socket: &Path, stream: &UnixStream) -> Result<i32, Why> {
    if resolve(socket, None)? != socket {
        return Err(format!("{} is reached through a link", socket.display()));
    }
    if !lstat(socket)?.file_type().is_socket() {
        return Err(format!("{} is not a socket", socket.display()));
    }
    let dir = socket.parent().ok_or("a socket without a directory")?;
    let owner = trusted_dir(dir)?;
    let (pid, uid) = peer(stream)?;
    if ![0, me(), owner].contains(&uid) {
        return Err(format!("it is served by uid {uid}"));
    }
    Ok(pid)
}

/// A socket named with `--socket`: the operator chose the place, which may be another user's
/// (a server run as that user); but no one else's link may redirect it (its directory is
/// [`resolve`]d, and the name there must be the socket itself), and the process answering
/// must be the one that place belongs to: its directory's owner, or root or you when the
/// directory is root's or yours. So a service user cannot point root's commands for its
/// server at another server. Returns the server's pid.
pub fn named_socket(socket: &Path, stream: &UnixStream) -> Result<i32, Why> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = socket.file_name().ok_or("a socket path without a name")?;
    let real_dir = resolve(dir, None)?;
    let real = real_dir.join(name);
    let m = lstat(&real)?;
    if !m.file_type().is_socket() {
        return Err(format!("{} is not a socket (a link?)", real.display()));
    }
    let owner = lstat(&real_dir)?.uid();
    let (pid, uid) = peer(stream)?;
    let trusted_place = [0, me()].contains(&owner);
    if uid == owner || (trusted_place && [0, me()].contains(&uid)) {
        Ok(pid)
    } else {
        Err(format!(
            "it is served by uid {uid}, but {} belongs to uid {owner}",
            real_dir.display()
        ))
    }
}
