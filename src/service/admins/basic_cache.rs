//! A short-lived memory of successful HTTP Basic checks, so a script calling the admin API in
//! a loop pays for Argon2 once a minute rather than on every request. Entries are keyed by a
//! blake3 keyed hash (random key per process) of username and password — the password itself
//! is never kept — and hold the username and an expiry. Only successful checks are
//! remembered; at most `MAX_ENTRIES`, each for `TTL`; the whole memory is forgotten whenever
//! any admin password changes. A poisoned lock is recovered (`crate::sync`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// How long a successful Basic check is remembered.
pub const TTL: Duration = Duration::from_secs(60);
/// Most credentials remembered at once.
pub const MAX_ENTRIES: usize = 1024;

struct Entry {
    username: String,
    /// The account's password hash when the check passed: with a shared store, a remembered
    /// check holds only while it is still the account's (another node may change it).
    stamp: String,
    expires: Instant,
}

/// Remembered successful Basic credentials.
pub struct BasicAuthCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Default for BasicAuthCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        BasicAuthCache {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl BasicAuthCache {
    fn fingerprint(&self, username: &str, password: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update(&(username.len() as u64).to_le_bytes());
        h.update(username.as_bytes());
        h.update(password.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Runs `read` on the live entry for this exact username and password, if any.
    fn with_entry<R>(
        &self,
        username: &str,
        password: &str,
        now: Instant,
        read: impl FnOnce(&Entry) -> R,
    ) -> Option<R> {
        let key = self.fingerprint(username, password);
        let entries = crate::sync::lock(&self.entries);
        entries
            .get(&key)
            .filter(|e| e.expires > now && e.username == username)
            .map(read)
    }

    /// Whether this exact username and password passed a full check less than `TTL` ago.
    pub fn contains(&self, username: &str, password: &str, now: Instant) -> bool {
        self.with_entry(username, password, now, |_| ()).is_some()
    }

    /// The stamp of a remembered check of this exact username and password, if any.
    pub fn remembered(&self, username: &str, password: &str, now: Instant) -> Option<String> {
        self.with_entry(username, password, now, |e| e.stamp.clone())
    }

    /// Forgets one credential (its account's password changed elsewhere).
    pub fn forget(&self, username: &str, password: &str) {
        let key = self.fingerprint(username, password);
        crate::sync::lock(&self.entries).remove(&key);
    }

    /// Remembers a credential that just passed a full check, with the account's password
    /// hash at that moment.
    pub fn insert(&self, username: &str, password: &str, stamp: &str, now: Instant) {
        let key = self.fingerprint(username, password);
        let mut entries = crate::sync::lock(&self.entries);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX_ENTRIES {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                username: username.to_owned(),
                stamp: stamp.to_owned(),
                expires: now + TTL,
            },
        );
    }

    /// Forgets everything (an admin password changed).
    pub fn clear(&self) {
        crate::sync::lock(&self.entries).clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        crate::sync::lock(&self.entries).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_successes_for_a_while_and_forgets_on_clear() {
        let c = BasicAuthCache::default();
        let now = Instant::now();
        assert!(!c.contains("admin", "pw", now));
        c.insert("admin", "pw", "h", now);
        assert!(c.contains("admin", "pw", now + Duration::from_secs(59)));
        assert!(!c.contains("admin", "pw", now + TTL), "expired");
        assert!(!c.contains("admin", "pW", now), "another password");
        assert!(!c.contains("admiN", "pw", now), "another user");
        assert!(!c.contains("adm", "inpw", now), "split elsewhere");
        c.clear();
        assert!(!c.contains("admin", "pw", now));
    }

    #[test]
    fn bounded_and_never_keeps_the_password() {
        let c = BasicAuthCache::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(
                "admin",
                &format!("password {i}"),
                "h",
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(!c.contains("admin", "password 0", now), "oldest evicted");
        assert!(c.contains("admin", &format!("password {}", MAX_ENTRIES + 9), now));
        // Keys are keyed hashes: another process (key) gives another key for the same input.
        let other = BasicAuthCache::default();
        assert_ne!(c.fingerprint("a", "b"), other.fingerprint("a", "b"));
    }
}
