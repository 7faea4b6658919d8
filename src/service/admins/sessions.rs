//! Admin sessions for the web console: a random cookie (only its blake3 is kept), a
//! per-session CSRF token, an idle timeout and an absolute lifetime; at most `MAX_SESSIONS`
//! at once. With a store of this node's own they live in memory and do not survive a restart
//! (admins log in again). With a shared store (cluster mode) the store keeps them, so a login
//! on one node works on every node and a logout ends it everywhere; the event loops never wait
//! on that store ([`SessionStore::peek`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::store::{Store, StoredSession};

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
    /// A shared store keeps the sessions instead (cluster mode).
    shared: Option<Arc<dyn Store>>,
}

/// What is known of a cookie without waiting on a shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A live session of this node's.
    Live,
    /// No session.
    Dead,
    /// Only the shared store knows: ask it where waiting is allowed (a worker).
    Ask,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
    /// Sessions kept by `store`, which other nodes share.
    pub fn shared(store: Arc<dyn Store>) -> SessionStore {
        SessionStore {
            sessions: Mutex::default(),
            shared: Some(store),
        }
    }

    /// Starts a session; returns (cookie value, session).
    pub fn create(
        &self,
        username: &str,
        now: Instant,
    ) -> crate::service::Result<(String, Session)> {
        let cookie = random_hex(32);
        let session = Session {
            username: username.to_owned(),
            csrf_token: random_hex(32),
            created: now,
            last_seen: now,
        };
        if let Some(store) = &self.shared {
            let at = crate::domain::time::now_unix_ms();
            let stored = StoredSession {
                username: session.username.clone(),
                csrf_token: session.csrf_token.clone(),
                created_ms: at,
                last_seen_ms: at,
            };
            store.put_session(&key(&cookie), &stored, MAX_SESSIONS)?;
            return Ok((cookie, session));
        }
        let mut map = crate::sync::lock(&self.sessions);
        map.retain(|_, s| is_live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&cookie), session.clone());
        Ok((cookie, session))
    }

    /// The session for a cookie value, refreshed; `None` if unknown or expired. With a
    /// shared store this asks it (a worker may wait; an event loop uses [`Self::peek`]); a
    /// store that cannot answer is an error (503), never "no session": a logout answered
    /// 401 then would leave the session alive.
    pub fn get(&self, cookie: &str, now: Instant) -> crate::service::Result<Option<Session>> {
        if let Some(store) = &self.shared {
            let found = store.session(
                &key(cookie),
                crate::domain::time::now_unix_ms(),
                ms(IDLE_TIMEOUT),
                ms(ABSOLUTE_LIFETIME),
            )?;
            return Ok(found.map(|s| Session {
                username: s.username,
                csrf_token: s.csrf_token,
                created: now,
                last_seen: now,
            }));
        }
        Ok(self.local(cookie, now))
    }

    /// The session for a cookie value in this process's own memory, refreshed.
    fn local(&self, cookie: &str, now: Instant) -> Option<Session> {
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

    /// What is known of a cookie here, without waiting on a shared store.
    pub fn peek(&self, cookie: &str, now: Instant) -> Peek {
        if self.shared.is_some() {
            Peek::Ask
        } else if self.local(cookie, now).is_some() {
            Peek::Live
        } else {
            Peek::Dead
        }
    }

    /// Ends a session (everywhere, with a shared store).
    pub fn remove(&self, cookie: &str) -> crate::service::Result<()> {
        if let Some(store) = &self.shared {
            store.end_session(&key(cookie))?;
        }
        crate::sync::lock(&self.sessions).remove(&key(cookie));
        Ok(())
    }

    /// Ends every session of a user except `keep` (after a password change).
    pub fn remove_user_sessions(
        &self,
        username: &str,
        keep: Option<&str>,
    ) -> crate::service::Result<()> {
        let keep = keep.map(key);
        if let Some(store) = &self.shared {
            store.end_user_sessions(username, keep.as_ref())?;
        }
        crate::sync::lock(&self.sessions).retain(|k, s| s.username != username || Some(*k) == keep);
        Ok(())
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
        let (cookie, s) = store.create("admin", t0).unwrap();
        assert_eq!(
            store.get(&cookie, t0).unwrap().unwrap().csrf_token,
            s.csrf_token
        );
        assert!(store.get("nope", t0).unwrap().is_none());
        assert!(store
            .get(&cookie, t0 + IDLE_TIMEOUT + Duration::from_secs(1))
            .unwrap()
            .is_none());
        let (cookie, _) = store.create("admin", t0).unwrap();
        store.remove_user_sessions("admin", None).unwrap();
        assert!(store.get(&cookie, t0).unwrap().is_none());
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(session_cookie(b"a=b; pa_session=abc; c=d"), Some("abc"));
        assert_eq!(session_cookie(b"pa_session="), None);
        assert_eq!(session_cookie(b"other=1"), None);
        assert_eq!(session_cookie(b"\xff"), None);
    }
}
