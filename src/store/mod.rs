//! Storage: the [`Store`] trait that says what the service needs of a store, the types it
//! speaks in, its error type, and the embedded sled implementation ([`sled::SledStore`]).
//! Nothing above this module knows which implementation runs: the service holds a
//! `dyn Store`, and only the binary's glue (`serve`, `cli`) opens a concrete one.

pub mod error;
pub mod index;
pub mod postgres;
pub mod records;
pub mod sled;

use std::path::Path;

use crate::domain::audit::AuditEvent;
use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::restrictions::Restrictions;
use crate::domain::rotation::PreviousSecretEnd;
use crate::domain::token::{PlaintextToken, TokenHash, TokenId};

#[cfg(test)]
pub(crate) use self::sled::test_support;
pub use self::sled::{create_private_dir, write_private_file};
pub use error::{Error, Result};
pub use records::{
    fold_owner, parse_audit_cursor, parse_cursor, AdminAccount, AuditQuery, ExportedToken,
    IndexedToken, LastUsedWrite, LoginGuesses, OutboxBacklog, OutboxEntry, PreviousSecret, Rotated,
    ScanMark, SecretUsed, StoredSession, Synced, TokenPage, TokenRecord, TokenStats, TokenUpdate,
    UpdatedToken, ORDER_KEY_LEN,
};

/// An audit log position: 8 bytes of µs since the epoch, 8 of a store-wide sequence.
pub type AuditKey = [u8; 16];

/// What the service needs of a store. Every change a method makes is durable when it
/// returns `Ok` (a 201 or 204 may be answered), except last-used times and audit events,
/// which are durable after the next [`Store::flush`].
pub trait Store: Send + Sync {
    // Tokens.

    /// Stores a new token with a fresh secret; `NameTaken` if the name (ignoring case) is.
    /// Owner, description and restrictions are already validated.
    fn create_token(
        &self,
        name: &str,
        expires_at: Option<i64>,
        owner: Option<&str>,
        description: Option<&str>,
        restrictions: &Restrictions,
        created_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)>;
    /// Edits a token's name, owner or description, durably, and the authentication index's
    /// copy of the name; `NameTaken` if the new name (ignoring case) is another token's,
    /// `Ok(None)` if there is no such token. A shared store records it as a change the
    /// other nodes apply.
    fn update_token(&self, id: TokenId, update: &TokenUpdate) -> Result<Option<UpdatedToken>>;
    /// Removes a token, its name, its last-used time and its usage; from the authentication
    /// index too.
    fn delete_token(&self, id: TokenId) -> Result<Option<TokenRecord>>;
    /// Gives a token a new secret (same id, name and fields), durably; its old secret
    /// becomes its previous secret until `ends_at` (`None`: it stops now), in place of any
    /// previous secret it had. `Ok(None)` if there is no such token.
    fn rotate_token(
        &self,
        id: TokenId,
        ends_at: Option<i64>,
        until_new_secret_used: bool,
    ) -> Result<Option<Rotated>>;
    /// The token's previous secret, while it has one.
    fn previous_secret(&self, id: TokenId) -> Result<Option<PreviousSecret>>;
    /// Ends the token's previous secret now, durably and in the authentication index —
    /// only if it is `only` when given; the secret ended, if one was (so of several callers
    /// ending one secret, exactly one is told it did).
    fn end_previous_secret(
        &self,
        id: TokenId,
        only: Option<&TokenHash>,
    ) -> Result<Option<PreviousSecret>>;
    /// Previous secrets that have ended but are still stored, and why (their end time is at
    /// or before `now`, or the new secret's first use ended them in memory): the caller
    /// ends each durably with [`Store::end_previous_secret`] and audits it.
    fn ended_previous_secrets(
        &self,
        now: i64,
    ) -> Result<Vec<(TokenId, PreviousSecret, PreviousSecretEnd)>>;
    /// [`Store::lookup_token`], telling which of the token's secrets matched.
    /// For a request from `client` (`None`: not known): the `bool` says whether the token's
    /// allowed networks admit it, and the token's `restrictions.networks` may come back as
    /// anywhere (the check is made where the list is, so the hot path never copies or
    /// counts it).
    fn lookup_secret(
        &self,
        hash: &TokenHash,
        client: Option<std::net::IpAddr>,
    ) -> Result<Option<(IndexedToken, SecretUsed, bool)>>;
    /// Notes a use of a previous secret at `now` (in memory, on this node).
    fn note_previous_use(&self, hash: &TokenHash, now: i64);
    /// Whether this is the first use of the current secret `current` that ends a previous
    /// secret (`untilNewSecretUsed`): true for exactly one caller on this node. Memory only
    /// (the hot path): it ends the previous secret at once in the index, and
    /// [`Store::ended_previous_secrets`] reports it for the durable end.
    fn take_first_use(&self, current: &TokenHash) -> bool;
    /// A previous secret's last use seen on this node since it started.
    fn previous_last_used(&self, hash: &TokenHash) -> Option<i64>;
    fn token_by_id(&self, id: TokenId) -> Result<Option<TokenRecord>>;
    /// Newest first, `limit` at most, after `cursor`.
    fn list_tokens(&self, limit: usize, cursor: Option<&[u8; ORDER_KEY_LEN]>) -> Result<TokenPage>;
    /// [`Store::list_tokens`], only the tokens whose folded owner
    /// ([`records::fold_owner`]) is `owner_folded`.
    fn list_tokens_of_owner(
        &self,
        owner_folded: &str,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
    ) -> Result<TokenPage>;
    /// The hot path: the token whose secret hashes to `hash`, from memory when serving.
    fn lookup_token(&self, hash: &TokenHash) -> Result<Option<IndexedToken>>;
    fn token_count(&self) -> Result<u64>;
    /// Counts by status at `now`, and how many active tokens are outside `policy`.
    fn token_stats(&self, now: i64, policy: &LifetimePolicy) -> Result<TokenStats>;

    // Last-used times.

    fn stored_last_used(&self, id: TokenId) -> Result<Option<i64>>;
    /// Writes one chunk of last-used times, skipping deleted tokens and never moving a time
    /// backwards; returns how many were written. Pacing is the caller's business.
    fn write_last_used_chunk(&self, chunk: &[LastUsedWrite]) -> Result<usize>;

    // Usage (requests per day, recent client addresses; `domain::usage`).

    /// The token's persisted usage (empty when none).
    fn stored_usage(&self, id: TokenId) -> Result<crate::domain::usage::Usage>;
    /// Merges one chunk of usage deltas as of the UTC day `today` by the rules of
    /// `domain::usage` (counts add: another node's flush is never overwritten), dropping
    /// days out of the window; skips deleted tokens. Per token written, the addresses of its
    /// delta that its stored usage did not list. Pacing is the caller's business.
    fn merge_usage_chunk(
        &self,
        chunk: &[(TokenId, crate::domain::usage::Usage)],
        today: i64,
    ) -> Result<Vec<(TokenId, Vec<std::net::IpAddr>)>>;

    // The audit log.

    /// Appends an event (its id and time set here); the event as stored.
    fn append_audit(&self, now: i64, event: AuditEvent) -> Result<AuditEvent>;
    /// A page newest first, and the cursor of the next.
    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<String>)>;
    /// At most `limit` events of both classes, oldest first, from the key `from` on
    /// (inclusive): the export.
    fn audit_events_from(&self, from: &[u8; 16], limit: usize) -> Result<Vec<AuditEvent>>;

    // The webhook outbox: events waiting for delivery. Durable when each method returns.

    /// Queues `entries` (in their order). With `scan`, only if the lifecycle scan mark is
    /// still `scan.expected`, moving it to `scan.to` in the same write; whether they were
    /// queued. A shared store skips an entry whose event id and URL are queued already.
    fn enqueue_webhooks(&self, entries: &[OutboxEntry], scan: Option<ScanMark>) -> Result<bool>;
    /// Where the last lifecycle scan ended (unix s), if one ever ran.
    fn webhook_scan_mark(&self) -> Result<Option<i64>>;
    /// Every token that may have a lifecycle event in `(from, to]` (expiring, expired, or
    /// unused for `unused_after_days`), with its stored last-used time: a superset, the
    /// caller applies [`crate::domain::webhook::due_between`].
    fn lifecycle_candidates(
        &self,
        from: i64,
        to: i64,
        unused_after_days: Option<u32>,
    ) -> Result<Vec<(TokenRecord, Option<i64>)>>;
    /// Entries whose next attempt is due at `now_ms` (only those for receiver `url`, when
    /// given), in queue order, at most `limit`.
    fn due_webhooks(
        &self,
        now_ms: i64,
        url: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>>;
    /// After an attempt at entry `seq`: `None` removes it (delivered, or given up);
    /// `Some((attempts, next_attempt_ms))` keeps it for another try.
    fn webhook_attempted(&self, seq: u64, retry: Option<(u32, i64)>) -> Result<()>;
    fn webhook_backlog(&self) -> Result<OutboxBacklog>;
    /// Whether this node is the one that scans and sends now: takes or renews a lease of
    /// `ttl_ms` that the other nodes respect. A store of one node's own: always.
    fn hold_webhook_lease(&self, ttl_ms: i64) -> Result<bool> {
        let _ = ttl_ms;
        Ok(true)
    }
    /// Gives the lease up (a clean shutdown), so another node takes over at once.
    fn release_webhook_lease(&self) {}

    // Admins.

    fn admin(&self, username: &str) -> Result<Option<AdminAccount>>;
    fn put_admin(&self, username: &str, account: &AdminAccount) -> Result<()>;
    /// Stores `account` only if there is no admin at all (the first start); whether it did.
    /// A shared store decides this atomically: nodes starting at once make one first admin.
    fn create_first_admin(&self, username: &str, account: &AdminAccount) -> Result<bool> {
        if self.has_admins() {
            return Ok(false);
        }
        self.put_admin(username, account)?;
        Ok(true)
    }
    fn has_admins(&self) -> bool;

    // Backup and restore.

    fn export_tokens(&self) -> Result<Vec<ExportedToken>>;
    fn export_admins(&self) -> Result<Vec<(String, AdminAccount)>>;
    fn export_audit(&self) -> Result<Vec<(AuditKey, AuditEvent)>>;
    fn import_tokens(&self, records: &[(TokenHash, TokenRecord)]) -> Result<()>;
    /// Restored last-used times (unpaced).
    fn import_last_used(&self, times: &[(TokenId, i64)]) -> Result<usize>;
    fn import_audit(&self, events: &[(AuditKey, AuditEvent)]) -> Result<()>;
    /// No token, admin or audit event.
    fn is_empty(&self) -> bool;
    fn clear_all(&self) -> Result<()>;

    // Durability and housekeeping.

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;
    /// Bumped by every durable token or admin change: a change counter that never goes
    /// backwards for a healthy store.
    fn change_counter(&self) -> Result<u64>;
    /// This node's local directory (the initial admin password file lives there).
    fn data_dir(&self) -> &Path;
    /// Periodic upkeep (the sled store re-applies its file modes).
    fn maintain(&self);
    /// At a clean shutdown, after the final flush: keep what makes the next start fast.
    fn save_for_restart(&self) -> Result<()>;

    // Several nodes on one store (cluster mode). The embedded store is one node's alone.

    /// Whether other nodes change this store too: then [`Store::sync`] must run often, and
    /// a node that has not synced for too long refuses to verify.
    fn is_shared(&self) -> bool {
        false
    }
    /// Waits up to `wait` for word of a change, then brings this node's in-memory state up
    /// to the store's latest revision; the revision now applied.
    fn sync(&self, wait: std::time::Duration) -> Result<Synced> {
        let _ = wait;
        let confirmed_at = std::time::Instant::now();
        Ok(Synced {
            revision: self.change_counter()?,
            confirmed_at,
            propagation_ms: Vec::new(),
        })
    }
    /// Waits up to `timeout` until every other live node has applied `revision`; the nodes
    /// still behind when it gives up.
    fn wait_applied(&self, revision: u64, timeout: std::time::Duration) -> Result<Vec<String>> {
        let _ = (revision, timeout);
        Ok(Vec::new())
    }
    /// This node leaves (a clean shutdown): no change waits for it any more.
    fn leave(&self) {}

    // Console sessions, kept by a shared store so a login on one node works on every node
    // (a store of one node's own keeps none: the service holds them in memory).

    /// The live session under `key` (seen within `idle_ms`, made within `lifetime_ms` of
    /// `now_ms`), marked seen now.
    fn session(
        &self,
        key: &[u8; 32],
        now_ms: i64,
        idle_ms: i64,
        lifetime_ms: i64,
    ) -> Result<Option<StoredSession>> {
        let _ = (key, now_ms, idle_ms, lifetime_ms);
        Ok(None)
    }
    /// Keeps a new session, dropping expired ones and, past `max`, the least recently seen.
    fn put_session(&self, key: &[u8; 32], session: &StoredSession, max: usize) -> Result<()> {
        let _ = (key, session, max);
        Ok(())
    }
    /// Ends one session.
    fn end_session(&self, key: &[u8; 32]) -> Result<()> {
        let _ = key;
        Ok(())
    }
    /// Ends every session of `username` except `keep`.
    fn end_user_sessions(&self, username: &str, keep: Option<&[u8; 32]>) -> Result<()> {
        let _ = (username, keep);
        Ok(())
    }

    // Admin guesses per client address, counted by a shared store so that spreading them over
    // the nodes gains nothing (a store of one node's own counts none: the service's
    // in-memory throttle is the whole truth there). The policy (how many, how long) is the
    // service's; the store only counts atomically.

    /// Counts one guess from `addr` at `now_ms`, unless the address is locked out or has
    /// `free` guesses counted and has never been locked out (the first ones are still being
    /// decided). Guesses last made before `forget_before_ms` are forgotten first.
    fn count_login_guess(
        &self,
        addr: &str,
        now_ms: i64,
        forget_before_ms: i64,
        free: u32,
    ) -> Result<LoginGuesses> {
        // Counts nothing: the service's in-memory throttle decides alone.
        let _ = (addr, now_ms, forget_before_ms, free);
        Ok(LoginGuesses {
            counted: true,
            guesses: 0,
            locked_until_ms: 0,
        })
    }
    /// Locks `addr` out until `until_ms` (a longer lock already there stays).
    fn lock_login(&self, addr: &str, until_ms: i64) -> Result<()> {
        let _ = (addr, until_ms);
        Ok(())
    }
    /// A right credential from `addr`: its guesses are forgotten.
    fn clear_login_guesses(&self, addr: &str) -> Result<()> {
        let _ = addr;
        Ok(())
    }
}
