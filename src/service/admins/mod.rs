//! The admin world: accounts and their passwords (Argon2), console sessions, the per-address
//! login throttle and the short memory of successful HTTP Basic checks; and the admin
//! use-cases shared by the admin API and the CLI (check, set and change a password, record
//! a failed login, create the first admin).

pub mod basic_cache;
pub mod login_throttle;
pub mod passwords;
pub mod sessions;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Actor, Error, Result, Service};
use crate::domain::audit::{AuditEvent, AuditKind};
use crate::store::AdminAccount;
use basic_cache::BasicAuthCache;
use login_throttle::{
    lockout_after, LoginAttempt, LoginThrottle, FREE_FAILURES, IN_FLIGHT_RETRY_SECS, MEMORY,
};
use passwords::{Argon2Pool, INITIAL_PASSWORD_FILE, MAX_PASSWORD_BYTES};
use sessions::SessionStore;

/// The in-memory admin state.
pub struct Admins {
    sessions: SessionStore,
    throttle: LoginThrottle,
    /// The only memory Argon2 may use (a fixed number of 19 MiB slots).
    argon2: Argon2Pool,
    /// Recent successful HTTP Basic checks (cleared on any password change).
    basic_cache: BasicAuthCache,
}

impl Admins {
    /// `shared`: the store, when other nodes share it (sessions then live there).
    pub fn new(
        argon2_slots: usize,
        shared: Option<std::sync::Arc<dyn crate::store::Store>>,
    ) -> Admins {
        Admins {
            sessions: shared.map_or_else(SessionStore::default, SessionStore::shared),
            throttle: LoginThrottle::default(),
            argon2: Argon2Pool::new(argon2_slots),
            basic_cache: BasicAuthCache::default(),
        }
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    pub fn basic_cache(&self) -> &BasicAuthCache {
        &self.basic_cache
    }
}

/// One reserved admin guess: its place in this node's throttle and, with a shared store, the
/// guess as every node counts it. Decide it with [`Service::record_login_success`] or
/// [`Service::record_login_failure`] (or [`Service::count_guess_failure`]). Dropped undecided
/// (an error before the check finished), it gives its place on this node back; a shared
/// count stays, which fails closed.
#[must_use = "an attempt records its outcome or gives its place back when dropped"]
pub struct AdminAttempt<'a> {
    local: LoginAttempt<'a>,
    /// Guesses from the address that every node has counted, this one included.
    shared_guesses: Option<u32>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Service {
    /// Reserves a place for one admin credential check from `peer` at `now`, or says how long
    /// the address must wait (`TooManyRequests`). With a shared store the guess is counted
    /// there too, so guesses spread over the nodes meet one limit.
    pub fn reserve_admin_attempt(&self, peer: IpAddr, now: Instant) -> Result<AdminAttempt<'_>> {
        let throttle = &self.admins.throttle;
        let too_many = |retry_after_secs| Error::TooManyRequests { retry_after_secs };
        let local = throttle.reserve(peer, now).map_err(too_many)?;
        if !self.shared {
            return Ok(AdminAttempt {
                local,
                shared_guesses: None,
            });
        }
        let now_ms = crate::domain::time::now_unix_ms();
        let counted = self.store.count_login_guess(
            &peer.to_string(),
            now_ms,
            now_ms.saturating_sub(millis(MEMORY)),
            FREE_FAILURES,
        )?;
        if counted.locked_until_ms > now_ms {
            // Locked by failures another node saw: this node's early checks refuse too.
            let left =
                Duration::from_millis(u64::try_from(counted.locked_until_ms - now_ms).unwrap_or(0));
            throttle.lock(peer, now + left, now);
            return Err(too_many(left.as_secs().max(1)));
        }
        if !counted.counted {
            // The free guesses are taken by checks still running on other nodes.
            return Err(too_many(IN_FLIGHT_RETRY_SECS));
        }
        Ok(AdminAttempt {
            local,
            shared_guesses: Some(counted.guesses),
        })
    }

    /// The credential was right: the address starts afresh (on every node).
    pub fn record_login_success(&self, attempt: AdminAttempt<'_>, peer: IpAddr) {
        attempt.local.success();
        if attempt.shared_guesses.is_some() {
            if let Err(e) = self.store.clear_login_guesses(&peer.to_string()) {
                log::warn!("could not clear the shared login guesses of {peer}: {e}");
            }
        }
    }

    /// The credential was wrong: counts against `peer` (on every node, with a shared store)
    /// and starts a lockout once the free guesses are used; its length in seconds, if any.
    pub fn count_guess_failure(&self, attempt: AdminAttempt<'_>, peer: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut locked = attempt.local.failure(now);
        if let Some(lockout) = attempt.shared_guesses.and_then(lockout_after) {
            let until_ms = crate::domain::time::now_unix_ms().saturating_add(millis(lockout));
            if let Err(e) = self.store.lock_login(&peer.to_string(), until_ms) {
                // Its guesses stay counted: the next one is refused until this one is decided.
                log::warn!("could not share the lockout of {peer}: {e}");
            }
            self.admins.throttle.lock(peer, now + lockout, now);
            locked = locked.max(Some(lockout.as_secs()));
        }
        if let Some(secs) = locked {
            log::warn!("admin logins from {peer} locked for {secs} s after repeated failures");
        }
        locked
    }

    /// Checks an admin password (same cost whether or not the user exists).
    pub fn check_admin_password(&self, username: &str, password: &str) -> Result<bool> {
        if username.len() > 256 || password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let account = self.store.admin(username)?;
        Ok(self
            .admins
            .argon2
            .verify_password(password, account.as_ref().map(|a| a.password_hash.as_str())))
    }

    /// Whether an HTTP Basic check of this exact credential passed within the last minute
    /// and still holds: with a shared store, only while the account's password is still the
    /// one checked (another node may have changed it).
    pub fn remembered_basic(
        &self,
        username: &str,
        password: &str,
        now: std::time::Instant,
    ) -> Result<bool> {
        let cache = &self.admins.basic_cache;
        let Some(stamp) = cache.remembered(username, password, now) else {
            return Ok(false);
        };
        if !self.shared {
            // In-process changes clear the memory; no other node changes passwords here.
            return Ok(true);
        }
        let still = self
            .store
            .admin(username)?
            .is_some_and(|a| a.password_hash == stamp);
        if !still {
            cache.forget(username, password);
        }
        Ok(still)
    }

    /// A full HTTP Basic check (Argon2), remembered for a minute on success.
    pub fn check_basic(
        &self,
        username: &str,
        password: &str,
        now: std::time::Instant,
    ) -> Result<bool> {
        if username.len() > 256 || password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let account = self.store.admin(username)?;
        let hash = account.as_ref().map(|a| a.password_hash.as_str());
        let ok = self.admins.argon2.verify_password(password, hash);
        if let (true, Some(hash)) = (ok, hash) {
            self.admins
                .basic_cache
                .insert(username, password, hash, now);
        }
        Ok(ok)
    }

    /// Sets `username`'s password (creating the account if needed; the new password is
    /// already validated), ends the user's other sessions (all but `keep_session`) and audits
    /// it. Remembered Basic checks never outlive the password they checked.
    pub fn change_admin_password(
        &self,
        actor: &Actor,
        username: &str,
        password: &str,
        keep_session: Option<&str>,
        now: i64,
    ) -> Result<()> {
        {
            let _shared = self.mutation_shared();
            self.admins.basic_cache.clear();
            let result = self.store_admin_password(username, password, now);
            // Again: a Basic check of the old password may have finished while hashing.
            self.admins.basic_cache.clear();
            result?;
        }
        self.admins
            .sessions
            .remove_user_sessions(username, keep_session)?;
        let mut event = AuditEvent::of(AuditKind::AdminPasswordChanged).by(actor);
        if actor.name != username {
            // The command line set another account's password: the event names it.
            event.reason = Some(format!("for admin {username:?}"));
        }
        self.audit(now, event);
        Ok(())
    }

    /// Stores a new password hash for `username` (creating the account if needed) and
    /// removes the initial-password file once the generated password is gone.
    fn store_admin_password(&self, username: &str, password: &str, now: i64) -> Result<()> {
        let existing = self.store.admin(username)?;
        let account = AdminAccount {
            password_hash: self.admins.argon2.hash_password(password)?,
            initial_password: false,
            created_at: existing.as_ref().map_or(now, |a| a.created_at),
            password_changed_at: now,
        };
        self.store.put_admin(username, &account)?;
        if existing.is_some_and(|a| a.initial_password) {
            let path = self.store.data_dir().join(INITIAL_PASSWORD_FILE);
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("initial admin password changed; removed {}", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("could not remove {}: {e}", path.display()),
            }
        }
        Ok(())
    }

    /// Whether `username` still has the generated initial password.
    pub fn has_initial_password(&self, username: &str) -> Result<bool> {
        Ok(self
            .store
            .admin(username)?
            .is_some_and(|a| a.initial_password))
    }

    /// A successful admin login from `peer`: audited.
    pub fn record_login(&self, username: &str, peer: IpAddr, now: i64) {
        self.audit(
            now,
            AuditEvent {
                actor: Some(username.to_owned()),
                remote_addr: Some(peer.to_string()),
                ..AuditEvent::of(AuditKind::AdminLogin)
            },
        );
    }

    /// Records a failed admin credential on its reserved attempt (counts against the client's
    /// address) and audits it.
    pub fn record_login_failure(
        &self,
        attempt: AdminAttempt<'_>,
        peer: IpAddr,
        username: &str,
        now: i64,
    ) {
        self.count_guess_failure(attempt, peer);
        self.audit(
            now,
            AuditEvent {
                actor: Some(username.chars().take(100).collect()),
                remote_addr: Some(peer.to_string()),
                ..AuditEvent::of(AuditKind::AdminLoginFailed)
            },
        );
    }

    /// On a data dir with no admin: create `admin` with a random password written to
    /// `<data-dir>/initial-admin-password` (0600). The password is never logged.
    pub fn bootstrap_admin(&self) -> Result<()> {
        if self.store.has_admins() {
            return Ok(());
        }
        let password = passwords::generate_initial_password();
        let path = self.store.data_dir().join(INITIAL_PASSWORD_FILE);
        // The file first: a crash before the account exists just repeats this on next start.
        crate::store::write_private_file(&path, format!("{password}\n").as_bytes())?;
        let now = crate::domain::time::now_unix();
        let created = self.store.create_first_admin(
            "admin",
            &AdminAccount {
                password_hash: self.admins.argon2.hash_password(&password)?,
                initial_password: true,
                created_at: now,
                password_changed_at: now,
            },
        )?;
        if !created {
            // Another node of a cluster made the first admin meanwhile: its file is the one.
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        log::info!(
            "created admin user 'admin'; its initial password is in {} (mode 0600). Log in and change it; the file is removed then",
            path.display()
        );
        Ok(())
    }
}
