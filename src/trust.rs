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

/// Every link on the way to `path`, as written, is root's or yours (`also` may own the last
/// component, if it is a link: the server's link to its socket). Links are followed (at most
/// 40), each checked where it sits.
fn links_on_the_way(path: &Path, also: Option<u32>) -> Result<(), Why> {
    let me = me();
    let mut pending: Vec<PathBuf> = vec![absolute(path)?];
    let mut hops = 0;
    while let Some(path) = pending.pop() {
        let mut walked = PathBuf::from("/");
        let parts: Vec<Component<'_>> = path.components().collect();
        for (i, part) in parts.iter().enumerate() {
            match part {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    walked.pop();
                    continue;
                }
                Component::Normal(name) => walked.push(name),
                Component::Prefix(_) => return Err("not a Unix path".into()),
            }
            let m = match std::fs::symlink_metadata(&walked) {
                Ok(m) => m,
                // What does not exist yet holds no link.
                Err(_) => break,
            };
            if m.file_type().is_symlink() {
                let last = i + 1 == parts.len();
                let allowed = [0, me].contains(&m.uid()) || (last && also == Some(m.uid()));
                if !allowed {
                    return Err(format!(
                        "{} is a link of uid {}'s",
                        walked.display(),
                        m.uid()
                    ));
                }
                hops += 1;
                if hops > 40 {
                    return Err(format!("{}: too many links", path.display()));
                }
                let target = std::fs::read_link(&walked).map_err(|e| e.to_string())?;
                let base = walked.parent().map(Path::to_owned).unwrap_or_default();
                let mut rest = base.join(target);
                for later in &parts[i + 1..] {
                    rest.push(later.as_os_str());
                }
                pending.push(rest);
                break;
            }
        }
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

/// A data dir the CLI may open or use: no untrusted link on the way, and its real directory
/// [`trusted_dir`]. Returns the real directory's owner.
pub fn data_dir(dir: &Path) -> Result<u32, Why> {
    links_on_the_way(dir, None)?;
    let real = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    trusted_dir(&real)
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

/// The server holding `dir` (its lock held) answers on `socket` (`<dir>/control.sock`, a
/// socket or the server's link to one): the socket's way and place are trusted, and the
/// process on `stream` is the lock's holder, running as root, you, or the owner of the data
/// dir or the socket's directory. Returns the server's pid, which every later connection
/// must show.
pub fn held_dir_server(
    dir: &Path,
    lock: &Path,
    socket: &Path,
    stream: &UnixStream,
) -> Result<i32, Why> {
    let (owner, socket_owner) = held_dir_socket_place(dir, socket)?;
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
pub fn held_dir_socket_place(dir: &Path, socket: &Path) -> Result<(u32, u32), Why> {
    let owner = data_dir(dir)?;
    links_on_the_way(socket, Some(owner))?;
    let real = std::fs::canonicalize(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    if !lstat(&real)?.file_type().is_socket() {
        return Err(format!("{} is not a socket", real.display()));
    }
    let socket_dir = real.parent().ok_or("a socket without a directory")?;
    Ok((owner, trusted_dir(socket_dir)?))
}

/// A place to create a directory in: no untrusted link on the way, and the deepest part that
/// exists already a [`trusted_dir`] (checked before anything is created there).
pub fn place_to_create(dir: &Path) -> Result<(), Why> {
    links_on_the_way(dir, None)?;
    let dir = absolute(dir)?;
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .ok_or("nothing of the path exists")?;
    let real =
        std::fs::canonicalize(existing).map_err(|e| format!("{}: {e}", existing.display()))?;
    trusted_dir(&real).map(|_| ())
}

/// What a server (perhaps root) may use as its data dir or its control socket's directory:
/// no link on the way but root's or its user's, and a [`trusted_dir`] owned by its user.
pub fn server_dir(dir: &Path) -> Result<(), Why> {
    links_on_the_way(dir, None)?;
    let real = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let owner = trusted_dir(&real)?;
    if owner != me() {
        return Err(format!("{} belongs to uid {owner}", real.display()));
    }
    Ok(())
}

/// The packaged service's socket (`/run/pa-auth/control.sock`): a socket, not a link, in a
/// trusted directory, answered by root, you, or that directory's owner (the service's user).
pub fn systemd_server(socket: &Path, stream: &UnixStream) -> Result<i32, Why> {
    links_on_the_way(socket, None)?;
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
