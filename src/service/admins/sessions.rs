//! Admin sessions for the web console: a random cookie (only its blake3 is kept, in memory),
//! a per-session CSRF token, an idle timeout and an absolute lifetime. Sessions do not survive
//! a restart (admins log in again); there are at most `MAX_SESSIONS` at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// Cookie name.
pub const SESSION_COOKIE: &str = "pa_session";
/// A session ends after this long without use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// ... and after this long whatever happens.
pub const ABSOLUTE_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
const MAX_SESSIONS: usize = 1000;

/// A logged-in admin.
#[derive(Clone)]
pub struct Session {
    pub username: String,
    pub csrf_token: String,
    created: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The live sessions, keyed by blake3 of the cookie value.
#[derive(Default)]
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    crate::domain::encoding::hex(&raw)
}

fn key(cookie: &str) -> [u8; 32] {
    *blake3::hash(cookie.as_bytes()).as_bytes()
}

impl SessionStore {
    /// Starts a session; returns (cookie value, session).
    pub fn create(&self, username: &str, now: Instant) -> (String, Session) {
        let cookie = random_hex(32);
        let session = Session {
            username: username.to_owned(),
            csrf_token: random_hex(32),
            created: now,
            last_seen: now,
        };
        let mut map = crate::sync::lock(&self.sessions);
        map.retain(|_, s| is_live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&cookie), session.clone());
        (cookie, session)
    }

    /// The session for a cookie value, refreshed; `None` if unknown or expired.
    pub fn get(&self, cookie: &str, now: Instant) -> Option<Session> {
        let mut map = crate::sync::lock(&self.sessions);
        let k = key(cookie);
        let live = map.get(&k).is_some_and(|s| is_live(s, now));
        if !live {
            map.remove(&k);
            return None;
        }
        let s = map.get_mut(&k)?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&self, cookie: &str) {
        crate::sync::lock(&self.sessions).remove(&key(cookie));
    }

    /// Ends every session of a user except `keep` (after a password change).
    pub fn remove_user_sessions(&self, username: &str, keep: Option<&str>) {
        let keep = keep.map(key);
        crate::sync::lock(&self.sessions).retain(|k, s| s.username != username || Some(*k) == keep);
    }
}

fn is_live(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last_seen) < IDLE_TIMEOUT
        && now.saturating_duration_since(s.created) < ABSOLUTE_LIFETIME
}

/// The value of our cookie in a `Cookie` header, if present.
pub fn session_cookie(cookie_header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(cookie_header).ok()?;
    text.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty() && value.len() <= 128).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_timeouts() {
        let store = SessionStore::default();
        let t0 = Instant::now();
        let (cookie, s) = store.create("admin", t0);
        assert_eq!(store.get(&cookie, t0).unwrap().csrf_token, s.csrf_token);
        assert!(store.get("nope", t0).is_none());
        assert!(store
            .get(&cookie, t0 + IDLE_TIMEOUT + Duration::from_secs(1))
            .is_none());
        let (cookie, _) = store.create("admin", t0);
        store.remove_user_sessions("admin", None);
        assert!(store.get(&cookie, t0).is_none());
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(session_cookie(b"a=b; pa_session=abc; c=d"), Some("abc"));
        assert_eq!(session_cookie(b"pa_session="), None);
        assert_eq!(session_cookie(b"other=1"), None);
        assert_eq!(session_cookie(b"\xff"), None);
    }
}
