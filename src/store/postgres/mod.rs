//! The PostgreSQL store (`serve --database-url postgres://…`, decision 0006): the same
//! [`Store`](crate::store::Store) as the embedded one, on a database the site already runs
//! and backs up. Verification never waits on the database: every token is kept in the
//! in-memory [`TokenIndex`], loaded at open and kept in step by this node's creates, renames
//! and deletes. Every token or admin change bumps one revision row in the same transaction and
//! records the change (`pa_auth_changes`), the gap-free feed other nodes will follow.
//!
//! Every node follows that feed ([`PgStore::sync`], called by the service's follower thread):
//! `LISTEN/NOTIFY` only wakes it; each sync reads the revision and applies the changes after
//! the one it had, in order. After a reconnect, a gap in the feed, or a revision that went
//! backwards (a failover that lost commits), it reloads every token. Each sync also records
//! the node's applied revision in `pa_auth_nodes`, which a delete waits on
//! ([`PgStore::wait_applied`]). Schema: `schema.rs`.

mod connect;
mod schema;
mod token_usage;
mod webhook_outbox;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use crate::domain::audit::{class_of, AuditClass, AuditEvent};
use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::restrictions::{validate_allowed_cidrs, Access, AllowedNetworks, Restrictions};
use crate::domain::rotation::PreviousSecretEnd;
use crate::domain::token::{PlaintextToken, TokenHash, TokenId};
use crate::domain::token_fields::fold_name;
use crate::store::error::{Error, Result};
use crate::store::index::{IndexBatch, TokenIndex};
use crate::store::records::{
    fold_owner, order_key, stamp_audit, AdminAccount, AuditQuery, ExportedToken, IndexedToken,
    LastUsedWrite, LoginGuesses, OutboxBacklog, OutboxEntry, PreviousSecret, Rotated, ScanMark,
    SecretUsed, StoredSession, Synced, TokenPage, TokenRecord, TokenStats, TokenUpdate,
    UpdatedToken, ORDER_KEY_LEN,
};
use crate::store::AuditKey;

pub use connect::DatabaseUrl;
pub use schema::SCHEMA_VERSION;

/// Connections kept open for admin work (verification uses none).
const POOL: usize = 4;
/// Added to every node's --max-staleness before a delete stops waiting for it: clock skew
/// between the node and the database, and the time a request takes.
const MARGIN_MS: i64 = 500;
/// The channel every change is announced on.
const CHANNEL: &str = "pa_auth_changes";

/// Options for opening the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// This node's local directory (the initial admin password file; 0700).
    pub local_dir: PathBuf,
    /// Lifecycle audit events kept before the oldest are dropped.
    pub audit_cap: u64,
    /// Audit events anyone can cause kept before the oldest of them are dropped.
    pub audit_failure_cap: u64,
    /// A node not heard from for this long is not waited for (it refuses to verify anyway).
    pub max_staleness: std::time::Duration,
    /// A serving node (records itself in `pa_auth_nodes`), not an offline command.
    pub serving: bool,
    /// Create the schema in a database that has none (a source to read from must have it).
    pub create_schema: bool,
}

/// The open PostgreSQL store.
pub struct PgStore {
    url: DatabaseUrl,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    /// The connection that LISTENs for changes and reads the feed (`None`: reconnect, reload).
    feed: Mutex<Option<Client>>,
    /// The revision the in-memory index reflects.
    applied: AtomicU64,
    /// This node's name in `pa_auth_nodes`: host, process and a random part.
    node_id: String,
    max_staleness: std::time::Duration,
    registered: bool,
    index: TokenIndex,
    local_dir: PathBuf,
    caps: [(AuditClass, u64, AtomicU64); 2],
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.url.describe())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Nodes serving from this database now (heard from within their own --max-staleness):
    /// what an offline command that needs the database to itself refuses to run beside.
    pub fn serving_nodes(&self) -> Result<Vec<String>> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT node_id FROM pa_auth_nodes WHERE seen_at > clock_timestamp() - \
                 make_interval(secs => (stale_after_ms + $1) / 1000.0)",
                &[&MARGIN_MS],
            )
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Connects, takes the node lock, creates or checks the schema, and loads every token
    /// into the in-memory index.
    pub fn open(url: &DatabaseUrl, options: &PgOptions) -> Result<PgStore> {
        crate::store::create_private_dir(&options.local_dir)?;
        let mut first = url.connect()?;
        schema::create_or_check(&mut first, options.create_schema)?;
        // Nodes that crashed long ago (a clean stop removes its own row).
        first.execute(
            "DELETE FROM pa_auth_nodes WHERE seen_at < now() - interval '1 hour'",
            &[],
        )?;
        if options.serving {
            let ours = i64::try_from(options.max_staleness.as_millis()).unwrap_or(i64::MAX);
            let others: Vec<i64> = first
                .query(
                    "SELECT DISTINCT stale_after_ms FROM pa_auth_nodes \
                     WHERE stale_after_ms <> $1 AND seen_at > now() - interval '1 minute'",
                    &[&ours],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if !others.is_empty() {
                log::warn!(
                    "other nodes on this database run with another --max-staleness ({} ms; this \
                     node {ours} ms): give every node the same value, or a delete may be answered \
                     before a slower node fails closed",
                    others
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let store = PgStore {
            url: url.clone(),
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            feed: Mutex::new(None),
            applied: AtomicU64::new(0),
            node_id: format!(
                "{}/{}/{}",
                host.trim(),
                std::process::id(),
                &TokenId::generate().to_string()[..8]
            ),
            max_staleness: options.max_staleness,
            registered: options.serving,
            index: TokenIndex::default(),
            local_dir: options.local_dir.clone(),
            caps: [
                (AuditClass::Lifecycle, options.audit_cap, AtomicU64::new(0)),
                (
                    AuditClass::Failure,
                    options.audit_failure_cap,
                    AtomicU64::new(0),
                ),
            ],
        };
        store.sync_feed(std::time::Duration::ZERO)?;
        for (class, _, len) in &store.caps {
            let n: i64 = store
                .with_client(|c| {
                    c.query_one(
                        "SELECT count(*) FROM pa_auth_audit WHERE class = $1",
                        &[&class_code(*class)],
                    )
                })?
                .get(0);
            len.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
        }
        Ok(store)
    }

    /// Every token, and the revision they are at, from one snapshot of the database.
    fn reload(&self, feed: &mut Client) -> std::result::Result<u64, postgres::Error> {
        let mut tx = feed
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let revision: i64 = tx
            .query_one("SELECT value FROM pa_auth_meta WHERE key = 'revision'", &[])?
            .get(0);
        let rows = tx.query(
            "SELECT hash, id, expires_at, name, previous_hash, previous_ends_at, \
             previous_until_used, allowed_cidrs, access FROM pa_auth_tokens",
            &[],
        )?;
        tx.commit()?;
        let mut batch = IndexBatch::with_capacity(rows.len());
        for row in &rows {
            let (Ok(hash), Ok(id)) = (
                fixed::<32>(row.get::<_, &[u8]>(0)),
                fixed::<16>(row.get::<_, &[u8]>(1)),
            ) else {
                continue;
            };
            batch.push(
                TokenHash(hash),
                TokenId(id),
                row.get(2),
                row.get(3),
                &restrictions_of(row.get(7), row.get(8)),
            );
        }
        self.index.replace(batch);
        for row in &rows_with_previous(&rows) {
            self.index.set_previous(
                row.previous,
                row.current,
                row.id,
                row.ends_at,
                row.until_used,
            );
        }
        let revision = u64::try_from(revision).unwrap_or(0);
        self.applied.store(revision, Ordering::SeqCst);
        Ok(revision)
    }

    /// Applies the feed after `applied` up to `revision`; `false` when it cannot (a gap:
    /// the caller reloads).
    /// Each applied change's time from commit to read goes to `propagation_ms`.
    fn apply_changes(
        &self,
        feed: &mut Client,
        applied: u64,
        revision: u64,
        propagation_ms: &mut Vec<u32>,
    ) -> std::result::Result<bool, postgres::Error> {
        let from = i64::try_from(applied).unwrap_or(i64::MAX);
        let to = i64::try_from(revision).unwrap_or(i64::MAX);
        let rows = feed.query(
            "SELECT c.revision, c.op, c.id, c.hash, t.name, t.expires_at, \
             GREATEST(0, extract(epoch FROM clock_timestamp() - c.at) * 1000)::int8, \
             t.hash, t.previous_hash, t.previous_ends_at, t.previous_until_used, \
             t.allowed_cidrs, t.access \
             FROM pa_auth_changes c LEFT JOIN pa_auth_tokens t ON t.id = c.id \
             WHERE c.revision > $1 AND c.revision <= $2 ORDER BY c.revision",
            &[&from, &to],
        )?;
        if u64::try_from(rows.len()).ok() != revision.checked_sub(applied) {
            return Ok(false);
        }
        propagation_ms.extend(rows.iter().map(|row| {
            let ms: i64 = row.get(6);
            u32::try_from(ms).unwrap_or(u32::MAX)
        }));
        for row in rows {
            let op: &str = row.get(1);
            let id: Option<&[u8]> = row.get(2);
            let hash: Option<&[u8]> = row.get(3);
            let (id, hash) = match (id.map(fixed::<16>), hash.map(fixed::<32>)) {
                (Some(Ok(id)), Some(Ok(hash))) => (TokenId(id), TokenHash(hash)),
                _ if op == "admin" => continue,
                _ => return Ok(false),
            };
            match op {
                // An edit (a rename, new allowed networks or access) is applied like a
                // create: the row as it is now replaces the entry.
                "create" | "update" => {
                    // Deleted since: its own delete follows in the feed.
                    let name: Option<String> = row.get(4);
                    if let Some(name) = name {
                        let expires_at: Option<i64> = row.get(5);
                        self.index.insert(
                            hash,
                            IndexedToken {
                                id,
                                expires_at,
                                name: name.as_str().into(),
                                restrictions: restrictions_of(row.get(11), row.get(12)),
                            },
                        );
                    }
                }
                "delete" => {
                    self.index.remove(&hash);
                    self.index.remove_previous_of(id);
                }
                // A rotation made elsewhere: `hash` is the current secret it replaced. The
                // row as it is now gives the current secret and the previous one (a later
                // rotation's own entry follows in the feed).
                "rotate" | "previous_end" => {
                    self.index.remove_previous_of(id);
                    let name: Option<String> = row.get(4);
                    let current: Option<&[u8]> = row.get(7);
                    if let (Some(name), Some(Ok(current))) = (name, current.map(fixed::<32>)) {
                        let current = TokenHash(current);
                        let expires_at: Option<i64> = row.get(5);
                        if op == "rotate" {
                            let token = IndexedToken {
                                id,
                                expires_at,
                                name: name.as_str().into(),
                                restrictions: restrictions_of(row.get(11), row.get(12)),
                            };
                            self.index.insert(current, token);
                        }
                        let previous: Option<&[u8]> = row.get(8);
                        let ends_at: Option<i64> = row.get(9);
                        if let (Some(Ok(previous)), Some(ends_at)) =
                            (previous.map(fixed::<32>), ends_at)
                        {
                            self.index.set_previous(
                                TokenHash(previous),
                                current,
                                id,
                                ends_at,
                                row.get(10),
                            );
                        }
                    }
                    if op == "rotate" && self.index.id_of(&hash) == Some(id) {
                        self.index.remove(&hash);
                    }
                }
                _ => return Ok(false),
            }
        }
        self.applied.store(revision, Ordering::SeqCst);
        Ok(true)
    }

    /// See [`crate::store::Store::sync`].
    fn sync_feed(&self, wait: std::time::Duration) -> Result<Synced> {
        let mut slot = crate::sync::lock(&self.feed);
        if slot.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.url.connect()?;
            client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            // Changes made while this node was not listening are not announced again.
            self.reload(&mut client)?;
            *slot = Some(client);
        }
        let Some(feed) = slot.as_mut() else {
            return Err(Error::Internal("no feed connection".into()));
        };
        let result = (|| {
            if !wait.is_zero() {
                let mut notes = feed.notifications();
                let woken = notes.timeout_iter(wait).next()?.is_some();
                if woken {
                    // Several changes may be announced at once; one read covers them all.
                    while notes.iter().next()?.is_some() {}
                }
            }
            // Freshness counts from here: a process paused after this read has confirmed
            // nothing since, however late it finishes the sync.
            let confirmed_at = std::time::Instant::now();
            let row = feed.query_one(
                "SELECT value, clock_timestamp() FROM pa_auth_meta WHERE key = 'revision'",
                &[],
            )?;
            let revision: i64 = row.get(0);
            let read_at: std::time::SystemTime = row.get(1);
            let revision = u64::try_from(revision).unwrap_or(0);
            let applied = self.applied.load(Ordering::SeqCst);
            let mut propagation_ms = Vec::new();
            let current = if revision == applied {
                revision
            } else if revision < applied {
                log::warn!(
                    "the database's revision went back from {applied} to {revision} (a failover \
                     that lost commits?): reloading every token"
                );
                self.reload(feed)?
            } else if self.apply_changes(feed, applied, revision, &mut propagation_ms)? {
                revision
            } else {
                self.reload(feed)?
            };
            if self.registered {
                // seen_at is when the revision was read (the database's clock), so another
                // node's delete stops waiting for this one exactly when this one goes stale.
                feed.execute(
                    "INSERT INTO pa_auth_nodes (node_id, applied, seen_at, stale_after_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (node_id) DO UPDATE SET \
                     applied = EXCLUDED.applied, seen_at = EXCLUDED.seen_at, \
                     stale_after_ms = EXCLUDED.stale_after_ms",
                    &[
                        &self.node_id,
                        &i64::try_from(current).unwrap_or(i64::MAX),
                        &read_at,
                        &i64::try_from(self.max_staleness.as_millis()).unwrap_or(i64::MAX),
                    ],
                )?;
            }
            Ok::<Synced, postgres::Error>(Synced {
                revision: current,
                confirmed_at,
                propagation_ms,
            })
        })();
        if result.is_err() {
            // Reconnect and reload on the next round: nothing seen on this connection counts.
            *slot = None;
        }
        Ok(result?)
    }

    /// Runs `work` on a pooled connection, reconnecting a closed one once.
    fn with_client<T>(
        &self,
        work: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        self.with_client_retrying(work, || true)
    }

    /// [`Self::with_client`], where `may_retry` says, after the connection was lost, whether
    /// running `work` again is safe (not once a commit may have reached the database).
    fn with_client_retrying<T>(
        &self,
        mut work: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
        may_retry: impl Fn() -> bool,
    ) -> Result<T> {
        let mut slot = self.slot();
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(self.url.connect()?);
            }
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match work(client) {
                Err(e) if attempt == 0 && client.is_closed() && may_retry() => {
                    log::warn!("database connection lost ({e}); reconnecting once");
                }
                other => return Ok(other?),
            }
        }
        Err(Error::Internal("database connection unavailable".into()))
    }

    /// A free pooled connection, or the next one in turn.
    fn slot(&self) -> MutexGuard<'_, Option<Client>> {
        for m in &self.pool {
            if let Ok(guard) = m.try_lock() {
                return guard;
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        crate::sync::lock(&self.pool[n])
    }

    /// In one transaction: `change` then one more revision, recorded with what changed.
    fn change<T>(
        &self,
        change: impl Fn(
            &mut postgres::Transaction<'_>,
        ) -> std::result::Result<Change<T>, postgres::Error>,
    ) -> Result<Option<T>> {
        // A connection lost once the commit was sent leaves the outcome unknown: running the
        // change again could make it twice (a second token whose secret nobody sees) or
        // answer a delete "not found" without waiting for the other nodes. Say so instead.
        let commit_sent = std::cell::Cell::new(false);
        let result = self.with_client_retrying(
            |c| {
                commit_sent.set(false);
                let mut tx = c.transaction()?;
            let (value, op, id, hash) = match change(&mut tx)? {
                Change::None => {
                    tx.rollback()?;
                    return Ok(None);
                }
                Change::Unchanged(value) => {
                    tx.rollback()?;
                    return Ok(Some(value));
                }
                Change::Made { value, op, id, hash } => (value, op, id, hash),
            };
            let revision: i64 = tx
                .query_one(
                    "UPDATE pa_auth_meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
                    &[],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO pa_auth_changes (revision, op, id, hash) VALUES ($1, $2, $3, $4)",
                &[&revision, &op, &id.as_ref().map(|i| &i.0[..]), &hash.as_ref().map(|h| &h.0[..])],
            )?;
            // Delivered at commit; it only wakes the other nodes (the feed is the truth).
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &revision.to_string()])?;
            commit_sent.set(true);
            tx.commit()?;
            Ok(Some(value))
            },
            || !commit_sent.get(),
        );
        match result {
            Err(Error::Unreachable(m)) if commit_sent.get() => Err(Error::Unreachable(format!(
                "the connection was lost while committing ({m}): the change may or may not have \
                 been made, and was not repeated; look before trying again"
            ))),
            other => other,
        }
    }

    pub fn create_token(
        &self,
        name: &str,
        expires_at: Option<i64>,
        owner: Option<&str>,
        description: Option<&str>,
        restrictions: &Restrictions,
        created_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        let secret = PlaintextToken::generate();
        let (allowed_cidrs, access) = restriction_columns(restrictions);
        let hash = secret.hash();
        let id = TokenId::generate();
        let folded = fold_name(name);
        let owner_folded = owner.map(fold_owner);
        let created = self.change(|tx| {
            // Creation order stays strictly increasing, as in the embedded store.
            let created: i64 = tx
                .query_one(
                    "SELECT GREATEST($1::int8, COALESCE(MAX(created_micros) + 1, 0)) FROM pa_auth_tokens",
                    &[&created_micros],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO pa_auth_tokens (id, hash, name, name_folded, created_micros, expires_at, \
                 owner, owner_folded, description, allowed_cidrs, access) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &&id.0[..],
                    &&hash.0[..],
                    &name,
                    &folded,
                    &created,
                    &expires_at,
                    &owner,
                    &owner_folded,
                    &description,
                    &allowed_cidrs,
                    &access,
                ],
            )?;
            Ok(Change::Made {
                value: created,
                op: "create",
                id: Some(id),
                hash: Some(hash),
            })
        });
        let created = match created {
            Ok(Some(created)) => created,
            Ok(None) => return Err(Error::CreationFailed("not stored".into())),
            Err(Error::Database(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let on_name = e
                    .as_db_error()
                    .and_then(|d| d.constraint())
                    .is_some_and(|c| c.contains("name"));
                return Err(if on_name {
                    Error::NameTaken(format!("A token named \"{name}\" already exists"))
                } else {
                    Error::CreationFailed("id or secret collision".into())
                });
            }
            Err(e @ Error::Unreachable(_)) => return Err(e),
            Err(e) => return Err(Error::CreationFailed(e.to_string())),
        };
        let record = TokenRecord {
            id,
            name: name.to_owned(),
            created_micros: created,
            expires_at,
            owner: owner.map(str::to_owned),
            description: description.map(str::to_owned),
            restrictions: restrictions.clone(),
        };
        self.index.insert(hash, indexed(&record));
        Ok((secret, record))
    }

    pub fn delete_token(&self, id: TokenId) -> Result<Option<(TokenHash, TokenRecord)>> {
        let deleted = self.change(|tx| {
            let Some(row) = tx.query_opt(
                "DELETE FROM pa_auth_tokens WHERE id = $1 \
                 RETURNING hash, name, created_micros, expires_at, owner, description, \
                 allowed_cidrs, access",
                &[&&id.0[..]],
            )?
            else {
                return Ok(Change::None);
            };
            let hash: Vec<u8> = row.get(0);
            let hash = TokenHash(hash.as_slice().try_into().unwrap_or([0; 32]));
            let record = record_of(id, &row);
            Ok(Change::Made {
                value: (hash, record),
                op: "delete",
                id: Some(id),
                hash: Some(hash),
            })
        })?;
        if let Some((hash, _)) = &deleted {
            self.index.remove(hash);
            self.index.remove_previous_of(id);
        }
        Ok(deleted)
    }

    /// See [`crate::store::Store::update_token`]: the row is locked, edited and recorded as an
    /// `update` in the feed in one transaction (only when something changed); the other
    /// nodes then re-read the name into their index. A rename onto another token's name is
    /// refused by the unique folded-name constraint, whatever node made the other token.
    pub fn update_token(&self, id: TokenId, update: &TokenUpdate) -> Result<Option<UpdatedToken>> {
        let result = self.change(|tx| {
            let Some(row) = tx.query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, hash FROM pa_auth_tokens WHERE id = $1 FOR UPDATE"
                ),
                &[&&id.0[..]],
            )?
            else {
                return Ok(Change::None);
            };
            let hash: Vec<u8> = row.get(8);
            let hash = TokenHash(hash.as_slice().try_into().unwrap_or([0; 32]));
            let before = record_of(id, &row);
            let after = before.updated(update);
            if after == before {
                // Nothing to record: no revision, no feed entry.
                return Ok(Change::Unchanged((hash, UpdatedToken { before, after })));
            }
            let (allowed_cidrs, access) = restriction_columns(&after.restrictions);
            tx.execute(
                "UPDATE pa_auth_tokens SET name = $2, name_folded = $3, owner = $4, \
                 owner_folded = $5, description = $6, allowed_cidrs = $7, access = $8 \
                 WHERE id = $1",
                &[
                    &&id.0[..],
                    &after.name,
                    &fold_name(&after.name),
                    &after.owner,
                    &after.owner.as_deref().map(fold_owner),
                    &after.description,
                    &allowed_cidrs,
                    &access,
                ],
            )?;
            Ok(Change::Made {
                value: (hash, UpdatedToken { before, after }),
                op: "update",
                id: Some(id),
                hash: Some(hash),
            })
        });
        let (hash, updated) = match result {
            Ok(Some(made)) => made,
            Ok(None) => return Ok(None),
            Err(Error::Database(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let name = update.name.as_deref().unwrap_or("");
                return Err(Error::NameTaken(format!(
                    "A token named \"{name}\" already exists"
                )));
            }
            Err(e) => return Err(e),
        };
        if updated.after != updated.before {
            self.index.update_existing(hash, indexed(&updated.after));
        }
        Ok(Some(updated))
    }

    /// See [`crate::store::Store::rotate_token`]: the row is locked, given the new hash and
    /// the old one as its previous secret, and recorded as a `rotate` (with the replaced
    /// hash) in one transaction; other nodes apply it at their next sync.
    pub fn rotate_token(
        &self,
        id: TokenId,
        ends_at: Option<i64>,
        until_new_secret_used: bool,
    ) -> Result<Option<Rotated>> {
        let secret = PlaintextToken::generate();
        let new_hash = secret.hash();
        let rotated = self.change(|tx| {
            let Some(row) = tx.query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS}, hash, previous_hash, previous_ends_at, \
                     previous_until_used FROM pa_auth_tokens WHERE id = $1 FOR UPDATE"
                ),
                &[&&id.0[..]],
            )?
            else {
                return Ok(Change::None);
            };
            let old: Vec<u8> = row.get(8);
            let old = TokenHash(old.as_slice().try_into().unwrap_or([0; 32]));
            let replaced = previous_of(row.get(9), row.get(10), row.get(11));
            let record = record_of(id, &row);
            let kept = ends_at.map(|ends_at| PreviousSecret {
                hash: old,
                ends_at,
                until_new_secret_used,
            });
            tx.execute(
                "UPDATE pa_auth_tokens SET hash = $2, previous_hash = $3, previous_ends_at = $4, \
                 previous_until_used = $5 WHERE id = $1",
                &[
                    &&id.0[..],
                    &&new_hash.0[..],
                    &kept.as_ref().map(|p| &p.hash.0[..]),
                    &kept.as_ref().map(|p| p.ends_at),
                    &until_new_secret_used,
                ],
            )?;
            Ok(Change::Made {
                value: (old, record, kept, replaced),
                op: "rotate",
                id: Some(id),
                hash: Some(old),
            })
        });
        let (old, record, previous, replaced) = match rotated {
            Ok(Some(made)) => made,
            Ok(None) => return Ok(None),
            Err(Error::Database(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(Error::CreationFailed("secret collision".into()))
            }
            Err(e) => return Err(e),
        };
        // As in the embedded store: the new secret, then the old as the previous one, then
        // the old current entry. A delete racing this is applied from the feed in order.
        self.index.insert(new_hash, indexed(&record));
        self.index.remove_previous_of(id);
        if let Some(p) = &previous {
            self.index
                .set_previous(p.hash, new_hash, id, p.ends_at, p.until_new_secret_used);
        }
        self.index.remove(&old);
        Ok(Some(Rotated {
            secret,
            record,
            previous,
            replaced,
        }))
    }

    /// The stored previous secret of `id` and the token's current hash.
    fn previous_row(&self, id: TokenId) -> Result<Option<(PreviousSecret, TokenHash)>> {
        let row = self.with_client(|c| {
            c.query_opt(
                "SELECT previous_hash, previous_ends_at, previous_until_used, hash \
                 FROM pa_auth_tokens WHERE id = $1",
                &[&&id.0[..]],
            )
        })?;
        Ok(row.and_then(|row| {
            let current: Vec<u8> = row.get(3);
            let current = TokenHash(fixed::<32>(&current).ok()?);
            Some((previous_of(row.get(0), row.get(1), row.get(2))?, current))
        }))
    }

    /// Ended by the first use of the new secret, on this node (in memory, not yet stored).
    fn ended_by_first_use(&self, p: &PreviousSecret, current: &TokenHash) -> bool {
        p.until_new_secret_used && self.index.first_use_taken(current)
    }

    fn token_rows(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<TokenRecord>> {
        let rows = self.with_client(|c| c.query(sql, params))?;
        rows.iter()
            .map(|row| Ok(record_of(TokenId(fixed(row.get::<_, &[u8]>(0))?), row)))
            .collect()
    }

    fn audit_append(&self, now: i64, mut event: AuditEvent) -> Result<AuditEvent> {
        let class = class_of(&event.event);
        self.with_client(|c| {
            let sequence: i64 = c
                .query_one("SELECT nextval('pa_auth_audit_seq')", &[])?
                .get(0);
            let key = stamp_audit(&mut event, now, u64::try_from(sequence).unwrap_or(0));
            let json = serde_json::to_string(&event).unwrap_or_default();
            c.execute(
                "INSERT INTO pa_auth_audit (key, class, event) VALUES ($1, $2, $3)",
                &[&&key[..], &class_code(class), &json],
            )
        })?;
        let Some((_, cap, len)) = self.caps.iter().find(|(c, _, _)| *c == class) else {
            return Ok(event);
        };
        let n = len.fetch_add(1, Ordering::Relaxed) + 1;
        if n > *cap {
            // Drop the oldest of this class in one statement, a few at a time.
            let over = i64::try_from((n - cap).max(64)).unwrap_or(i64::MAX);
            let dropped = self.with_client(|c| {
                c.execute(
                    "DELETE FROM pa_auth_audit WHERE key IN \
                     (SELECT key FROM pa_auth_audit WHERE class = $1 ORDER BY key LIMIT $2)",
                    &[&class_code(class), &over],
                )
            })?;
            len.fetch_sub(dropped.min(n), Ordering::Relaxed);
        }
        Ok(event)
    }
}

/// The columns [`PgStore::token_rows`] reads, in its order.
const TOKEN_COLUMNS: &str =
    "id, name, created_micros, expires_at, owner, description, allowed_cidrs, access";

/// Token `id`'s record from a row holding columns 1-7 of [`TOKEN_COLUMNS`] in their places
/// (what every token query here selects or returns).
fn record_of(id: TokenId, row: &postgres::Row) -> TokenRecord {
    TokenRecord {
        id,
        name: row.get(1),
        created_micros: row.get(2),
        expires_at: row.get(3),
        owner: row.get(4),
        description: row.get(5),
        restrictions: restrictions_of(row.get(6), row.get(7)),
    }
}

/// The two restriction columns of a token: canonical prefixes joined by `,` (null =
/// anywhere) and `read` (null = full).
fn restriction_columns(r: &Restrictions) -> (Option<String>, Option<&'static str>) {
    let cidrs = (!r.networks.is_anywhere()).then(|| r.networks.to_strings().join(","));
    let access = (r.access == Access::Read).then_some("read");
    (cidrs, access)
}

/// A token's restrictions from its two columns. A stored list that does not parse (written
/// by hand, damaged) admits no address rather than every one: fail closed.
fn restrictions_of(cidrs: Option<String>, access: Option<String>) -> Restrictions {
    let networks = match cidrs {
        None => AllowedNetworks::anywhere(),
        Some(list) => {
            let parts: Vec<&str> = list.split(',').collect();
            validate_allowed_cidrs(&parts).unwrap_or_else(|_| AllowedNetworks::nowhere())
        }
    };
    let access = match access.as_deref() {
        None => Access::Full,
        // Anything else than `read` is refused by the column's CHECK; read-only is the
        // narrower reading if it ever is there.
        Some(_) => Access::Read,
    };
    Restrictions { access, networks }
}

/// A stored previous secret from its three columns (none while the hash is null).
fn previous_of(
    hash: Option<Vec<u8>>,
    ends_at: Option<i64>,
    until_used: bool,
) -> Option<PreviousSecret> {
    Some(PreviousSecret {
        hash: TokenHash(fixed::<32>(&hash?).ok()?),
        ends_at: ends_at?,
        until_new_secret_used: until_used,
    })
}

/// What the index keeps of a record.
fn indexed(record: &TokenRecord) -> IndexedToken {
    IndexedToken {
        id: record.id,
        expires_at: record.expires_at,
        name: record.name.as_str().into(),
        restrictions: record.restrictions.clone(),
    }
}

/// A reloaded row's previous secret, for the index.
struct PreviousRow {
    id: TokenId,
    previous: TokenHash,
    current: TokenHash,
    ends_at: i64,
    until_used: bool,
}

/// The previous secrets among rows of `hash, id, expires_at, name, previous_hash,
/// previous_ends_at, previous_until_used`.
fn rows_with_previous(rows: &[postgres::Row]) -> Vec<PreviousRow> {
    rows.iter()
        .filter_map(|row| {
            let p = previous_of(row.get(4), row.get(5), row.get(6))?;
            Some(PreviousRow {
                id: TokenId(fixed::<16>(row.get::<_, &[u8]>(1)).ok()?),
                previous: p.hash,
                current: TokenHash(fixed::<32>(row.get::<_, &[u8]>(0)).ok()?),
                ends_at: p.ends_at,
                until_used: p.until_new_secret_used,
            })
        })
        .collect()
}

/// What a change transaction did.
enum Change<T> {
    /// Nothing to change (no such row): rolled back, no revision.
    None,
    /// Found, but already as asked: rolled back, no revision, and this is the answer.
    Unchanged(T),
    Made {
        value: T,
        op: &'static str,
        id: Option<TokenId>,
        hash: Option<TokenHash>,
    },
}

fn class_code(class: AuditClass) -> i16 {
    match class {
        AuditClass::Lifecycle => 0,
        AuditClass::Failure => 1,
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N]> {
    bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("a {N}-byte value has {} bytes", bytes.len())))
}

fn decode_event(text: &str) -> Result<AuditEvent> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("audit record: {e}")))
}

impl crate::store::Store for PgStore {
    fn create_token(
        &self,
        name: &str,
        expires_at: Option<i64>,
        owner: Option<&str>,
        description: Option<&str>,
        restrictions: &crate::domain::restrictions::Restrictions,
        created_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        PgStore::create_token(
            self,
            name,
            expires_at,
            owner,
            description,
            restrictions,
            created_micros,
        )
    }

    fn delete_token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        Ok(PgStore::delete_token(self, id)?.map(|(_, record)| record))
    }

    fn token_by_id(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        Ok(self
            .token_rows(
                &format!("SELECT {TOKEN_COLUMNS} FROM pa_auth_tokens WHERE id = $1"),
                &[&&id.0[..]],
            )?
            .pop())
    }

    fn list_tokens(&self, limit: usize, cursor: Option<&[u8; ORDER_KEY_LEN]>) -> Result<TokenPage> {
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut items = match cursor {
            None => self.token_rows(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM pa_auth_tokens \
                     ORDER BY created_micros DESC, id DESC LIMIT $1"
                ),
                &[&take],
            )?,
            Some(c) => {
                let created = i64::from_be_bytes(fixed(&c[..8])?);
                self.token_rows(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM pa_auth_tokens \
                         WHERE (created_micros, id) < ($1, $2) \
                         ORDER BY created_micros DESC, id DESC LIMIT $3"
                    ),
                    &[&created, &&c[8..], &take],
                )?
            }
        };
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| order_key(r.created_micros, &r.id))
        } else {
            None
        };
        Ok(TokenPage { items, next_cursor })
    }

    fn list_tokens_of_owner(
        &self,
        owner_folded: &str,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
    ) -> Result<TokenPage> {
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let (created, after_id): (i64, &[u8]) = match cursor {
            // Past every real position: the first page.
            None => (i64::MAX, &[0xff; 17]),
            Some(c) => (i64::from_be_bytes(fixed(&c[..8])?), &c[8..]),
        };
        let mut items = self.token_rows(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM pa_auth_tokens \
                 WHERE owner_folded = $1 AND (created_micros, id) < ($2, $3) \
                 ORDER BY created_micros DESC, id DESC LIMIT $4"
            ),
            &[&owner_folded, &created, &after_id, &take],
        )?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| order_key(r.created_micros, &r.id))
        } else {
            None
        };
        Ok(TokenPage { items, next_cursor })
    }

    fn update_token(&self, id: TokenId, update: &TokenUpdate) -> Result<Option<UpdatedToken>> {
        PgStore::update_token(self, id, update)
    }

    fn lookup_token(&self, hash: &TokenHash) -> Result<Option<IndexedToken>> {
        Ok(self.index.get(hash))
    }

    fn rotate_token(
        &self,
        id: TokenId,
        ends_at: Option<i64>,
        until_new_secret_used: bool,
    ) -> Result<Option<Rotated>> {
        PgStore::rotate_token(self, id, ends_at, until_new_secret_used)
    }

    fn previous_secret(&self, id: TokenId) -> Result<Option<PreviousSecret>> {
        Ok(self
            .previous_row(id)?
            .filter(|(p, current)| !self.ended_by_first_use(p, current))
            .map(|(p, _)| p))
    }

    fn end_previous_secret(
        &self,
        id: TokenId,
        only: Option<&TokenHash>,
    ) -> Result<Option<PreviousSecret>> {
        let only = only.map(|h| h.0.to_vec());
        let ended = self.change(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT previous_hash, previous_ends_at, previous_until_used FROM pa_auth_tokens \
                 WHERE id = $1 AND previous_hash IS NOT NULL \
                 AND ($2::bytea IS NULL OR previous_hash = $2) FOR UPDATE",
                &[&&id.0[..], &only],
            )?
            else {
                return Ok(Change::None);
            };
            let Some(p) = previous_of(row.get(0), row.get(1), row.get(2)) else {
                return Ok(Change::None);
            };
            tx.execute(
                "UPDATE pa_auth_tokens SET previous_hash = NULL, previous_ends_at = NULL, \
                 previous_until_used = false WHERE id = $1",
                &[&&id.0[..]],
            )?;
            Ok(Change::Made {
                value: p,
                op: "previous_end",
                id: Some(id),
                hash: Some(p.hash),
            })
        })?;
        if let Some(p) = &ended {
            self.index.remove_previous(&p.hash);
        }
        Ok(ended)
    }

    fn ended_previous_secrets(
        &self,
        now: i64,
    ) -> Result<Vec<(TokenId, PreviousSecret, PreviousSecretEnd)>> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT id, previous_hash, previous_ends_at, previous_until_used, hash \
                 FROM pa_auth_tokens WHERE previous_hash IS NOT NULL",
                &[],
            )
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (Ok(id), Ok(current)) = (
                fixed::<16>(row.get::<_, &[u8]>(0)),
                fixed::<32>(row.get::<_, &[u8]>(4)),
            ) else {
                continue;
            };
            let Some(p) = previous_of(row.get(1), row.get(2), row.get(3)) else {
                continue;
            };
            let why = if self.ended_by_first_use(&p, &TokenHash(current)) {
                Some(PreviousSecretEnd::NewSecretUsed)
            } else {
                (p.ends_at <= now).then_some(PreviousSecretEnd::Time)
            };
            if let Some(why) = why {
                out.push((TokenId(id), p, why));
            }
        }
        Ok(out)
    }

    fn lookup_secret(
        &self,
        hash: &TokenHash,
        client: Option<std::net::IpAddr>,
    ) -> Result<Option<(IndexedToken, SecretUsed, bool)>> {
        Ok(self.index.lookup_from(hash, client))
    }

    fn note_previous_use(&self, hash: &TokenHash, now: i64) {
        self.index.note_previous_use(hash, now);
    }

    fn take_first_use(&self, current: &TokenHash) -> bool {
        self.index.take_first_use(current)
    }

    fn previous_last_used(&self, hash: &TokenHash) -> Option<i64> {
        self.index.previous_last_used(hash)
    }

    fn token_count(&self) -> Result<u64> {
        let n: i64 = self
            .with_client(|c| c.query_one("SELECT count(*) FROM pa_auth_tokens", &[]))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn token_stats(&self, now: i64, policy: &LifetimePolicy) -> Result<TokenStats> {
        // The policy's rule (`LifetimePolicy::violation`) in SQL: among active tokens, those
        // without expiry when one is required or a limit is set, and those expiring after the
        // first UTC midnight past creation + the limit. $2: the limit in days, -1 = none.
        // Idleness as `TokenStats::add` counts it: from the stored last use, else creation.
        let days = policy.max_lifetime_days.map_or(-1, i64::from);
        let row = self.with_client(|c| {
            c.query_one(
                "SELECT count(*) FILTER (WHERE expires_at IS NOT NULL AND $1 >= expires_at), \
                        count(*) FILTER (WHERE expires_at IS NULL OR $1 < expires_at), \
                        count(*) FILTER (WHERE $1 < expires_at AND expires_at - $1 <= 604800), \
                        count(*) FILTER (WHERE $1 < expires_at AND expires_at - $1 <= 2592000), \
                        count(*) FILTER (WHERE (expires_at IS NULL OR $1 < expires_at) AND ( \
                            (expires_at IS NULL AND ($3::bool OR $2::int8 >= 0)) \
                            OR ($2::int8 >= 0 AND expires_at > \
                                (floor((floor(created_micros / 1000000.0) + $2::int8 * 86400) / 86400) + 1) * 86400))), \
                        count(*) FILTER (WHERE $1 < expires_at AND expires_at - $1 <= 86400), \
                        count(*) FILTER (WHERE (expires_at IS NULL OR $1 < expires_at) \
                            AND $1 - COALESCE(last_used, created_micros / 1000000) >= 2592000), \
                        count(*) FILTER (WHERE (expires_at IS NULL OR $1 < expires_at) \
                            AND $1 - COALESCE(last_used, created_micros / 1000000) >= 7776000) \
                 FROM pa_auth_tokens",
                &[&now, &days, &policy.require_expiry],
            )
        })?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(TokenStats {
            expired: n(0),
            active: n(1),
            expiring_1d: n(5),
            expiring_7d: n(2),
            expiring_30d: n(3),
            unused_30d: n(6),
            unused_90d: n(7),
            violating_policy: n(4),
        })
    }

    fn stored_last_used(&self, id: TokenId) -> Result<Option<i64>> {
        Ok(self
            .with_client(|c| {
                c.query_opt(
                    "SELECT last_used FROM pa_auth_tokens WHERE id = $1",
                    &[&&id.0[..]],
                )
            })?
            .and_then(|row| row.get(0)))
    }

    fn write_last_used_chunk(&self, chunk: &[LastUsedWrite]) -> Result<usize> {
        let ids: Vec<&[u8]> = chunk.iter().map(|w| &w.id.0[..]).collect();
        let seen: Vec<i64> = chunk.iter().map(|w| w.seen).collect();
        // One statement; deleted tokens have no row to update, and a time never moves back.
        let n = self.with_client(|c| {
            c.execute(
                "UPDATE pa_auth_tokens t SET last_used = u.seen \
                 FROM unnest($1::bytea[], $2::int8[]) AS u(id, seen) \
                 WHERE t.id = u.id AND (t.last_used IS NULL OR t.last_used < u.seen)",
                &[&ids, &seen],
            )
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn stored_usage(&self, id: TokenId) -> Result<crate::domain::usage::Usage> {
        PgStore::stored_usage(self, id)
    }

    fn merge_usage_chunk(
        &self,
        chunk: &[(TokenId, crate::domain::usage::Usage)],
        today: i64,
    ) -> Result<Vec<(TokenId, Vec<std::net::IpAddr>)>> {
        PgStore::merge_usage_chunk(self, chunk, today)
    }

    fn append_audit(&self, now: i64, event: AuditEvent) -> Result<AuditEvent> {
        self.audit_append(now, event)
    }

    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let before: &[u8] = query.before.as_ref().map_or(&[0xff; 17][..], |b| &b[..]);
        let take = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = self.with_client(|c| {
            c.query(
                "SELECT event FROM pa_auth_audit WHERE key < $1 \
                 AND ($2::text IS NULL OR event::jsonb ->> 'tokenId' = $2) \
                 AND ($3::text IS NULL OR event::jsonb ->> 'event' = $3) \
                 ORDER BY key DESC LIMIT $4",
                &[&before, &query.token_id, &query.event, &take],
            )
        })?;
        let mut out = rows
            .iter()
            .map(|row| decode_event(row.get(0)))
            .collect::<Result<Vec<_>>>()?;
        let next = if out.len() > query.limit {
            out.truncate(query.limit);
            out.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    fn audit_events_from(&self, from: &[u8; 16], limit: usize) -> Result<Vec<AuditEvent>> {
        let take = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_client(|c| {
            c.query(
                "SELECT event FROM pa_auth_audit WHERE key >= $1 ORDER BY key LIMIT $2",
                &[&&from[..], &take],
            )
        })?;
        rows.iter().map(|row| decode_event(row.get(0))).collect()
    }

    fn enqueue_webhooks(&self, entries: &[OutboxEntry], scan: Option<ScanMark>) -> Result<bool> {
        PgStore::enqueue_webhooks(self, entries, scan)
    }
    fn webhook_scan_mark(&self) -> Result<Option<i64>> {
        PgStore::webhook_scan_mark(self)
    }
    fn lifecycle_candidates(
        &self,
        from: i64,
        to: i64,
        unused_after_days: Option<u32>,
    ) -> Result<Vec<(TokenRecord, Option<i64>)>> {
        PgStore::lifecycle_candidates(self, from, to, unused_after_days)
    }
    fn due_webhooks(
        &self,
        now_ms: i64,
        url: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        PgStore::due_webhooks(self, now_ms, url, limit)
    }
    fn webhook_attempted(&self, seq: u64, retry: Option<(u32, i64)>) -> Result<()> {
        PgStore::webhook_attempted(self, seq, retry)
    }
    fn webhook_backlog(&self) -> Result<OutboxBacklog> {
        PgStore::webhook_backlog(self)
    }
    fn hold_webhook_lease(&self, ttl_ms: i64) -> Result<bool> {
        PgStore::hold_webhook_lease(self, ttl_ms)
    }
    fn release_webhook_lease(&self) {
        PgStore::release_webhook_lease(self);
    }
    fn admin(&self, username: &str) -> Result<Option<AdminAccount>> {
        let row = self.with_client(|c| {
            c.query_opt(
                "SELECT account FROM pa_auth_admins WHERE username = $1",
                &[&username],
            )
        })?;
        row.map(|row| {
            serde_json::from_str(row.get(0))
                .map_err(|e| Error::Corrupt(format!("admin account record: {e}")))
        })
        .transpose()
    }

    fn put_admin(&self, username: &str, account: &AdminAccount) -> Result<()> {
        let json = serde_json::to_string(account).map_err(|e| Error::Internal(e.to_string()))?;
        self.change(|tx| {
            tx.execute(
                "INSERT INTO pa_auth_admins (username, account) VALUES ($1, $2) \
                 ON CONFLICT (username) DO UPDATE SET account = EXCLUDED.account",
                &[&username, &json],
            )?;
            Ok(Change::Made {
                value: (),
                op: "admin",
                id: None,
                hash: None,
            })
        })?;
        Ok(())
    }

    fn has_admins(&self) -> bool {
        // When the database cannot say, there may well be admins: never bootstrap on an error.
        self.with_client(|c| c.query_one("SELECT EXISTS (SELECT 1 FROM pa_auth_admins)", &[]))
            .map_or(true, |row| row.get(0))
    }

    fn create_first_admin(&self, username: &str, account: &AdminAccount) -> Result<bool> {
        let json = serde_json::to_string(account).map_err(|e| Error::Internal(e.to_string()))?;
        let created = self.change(|tx| {
            // The table lock makes "no admin yet" and the insert one step across nodes.
            tx.batch_execute("LOCK TABLE pa_auth_admins IN EXCLUSIVE MODE")?;
            let inserted = tx.execute(
                "INSERT INTO pa_auth_admins (username, account) \
                 SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM pa_auth_admins)",
                &[&username, &json],
            )?;
            Ok(if inserted == 1 {
                Change::Made {
                    value: (),
                    op: "admin",
                    id: None,
                    hash: None,
                }
            } else {
                Change::None
            })
        })?;
        Ok(created.is_some())
    }

    fn export_tokens(&self) -> Result<Vec<ExportedToken>> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT id, hash, name, created_micros, expires_at, last_used, owner, description, \
                 allowed_cidrs, access FROM pa_auth_tokens ORDER BY created_micros, id",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(ExportedToken {
                    hash: TokenHash(fixed(row.get::<_, &[u8]>(1))?),
                    record: TokenRecord {
                        id: TokenId(fixed(row.get::<_, &[u8]>(0))?),
                        name: row.get(2),
                        created_micros: row.get(3),
                        expires_at: row.get(4),
                        owner: row.get(6),
                        description: row.get(7),
                        restrictions: restrictions_of(row.get(8), row.get(9)),
                    },
                    last_used: row.get(5),
                })
            })
            .collect()
    }

    fn export_admins(&self) -> Result<Vec<(String, AdminAccount)>> {
        let rows = self.with_client(|c| {
            c.query(
                "SELECT username, account FROM pa_auth_admins ORDER BY username",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| {
                let account = serde_json::from_str(row.get(1))
                    .map_err(|e| Error::Corrupt(format!("admin account: {e}")))?;
                Ok((row.get(0), account))
            })
            .collect()
    }

    fn export_audit(&self) -> Result<Vec<(AuditKey, AuditEvent)>> {
        let rows = self
            .with_client(|c| c.query("SELECT key, event FROM pa_auth_audit ORDER BY key", &[]))?;
        rows.iter()
            .map(|row| Ok((fixed(row.get::<_, &[u8]>(0))?, decode_event(row.get(1))?)))
            .collect()
    }

    fn import_tokens(&self, records: &[(TokenHash, TokenRecord)]) -> Result<()> {
        for chunk in records.chunks(1000) {
            // One statement a chunk (arrays unnested by the server), not a round trip a token.
            let ids: Vec<&[u8]> = chunk.iter().map(|(_, r)| &r.id.0[..]).collect();
            let hashes: Vec<&[u8]> = chunk.iter().map(|(h, _)| &h.0[..]).collect();
            let names: Vec<&str> = chunk.iter().map(|(_, r)| r.name.as_str()).collect();
            let folded: Vec<String> = chunk.iter().map(|(_, r)| fold_name(&r.name)).collect();
            let created: Vec<i64> = chunk.iter().map(|(_, r)| r.created_micros).collect();
            let expires: Vec<Option<i64>> = chunk.iter().map(|(_, r)| r.expires_at).collect();
            let owners: Vec<Option<&str>> = chunk.iter().map(|(_, r)| r.owner.as_deref()).collect();
            let owners_folded: Vec<Option<String>> = chunk
                .iter()
                .map(|(_, r)| r.owner.as_deref().map(fold_owner))
                .collect();
            let descriptions: Vec<Option<&str>> = chunk
                .iter()
                .map(|(_, r)| r.description.as_deref())
                .collect();
            let (cidrs, access): (Vec<Option<String>>, Vec<Option<&str>>) = chunk
                .iter()
                .map(|(_, r)| restriction_columns(&r.restrictions))
                .unzip();
            self.change(|tx| {
                tx.execute(
                    "INSERT INTO pa_auth_tokens (id, hash, name, name_folded, created_micros, \
                     expires_at, owner, owner_folded, description, allowed_cidrs, access) \
                     SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[], \
                     $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::text[])",
                    &[
                        &ids,
                        &hashes,
                        &names,
                        &folded,
                        &created,
                        &expires,
                        &owners,
                        &owners_folded,
                        &descriptions,
                        &cidrs,
                        &access,
                    ],
                )?;
                Ok(Change::Made {
                    value: (),
                    op: "import",
                    id: None,
                    hash: None,
                })
            })?;
            for (hash, r) in chunk {
                self.index.insert(*hash, indexed(r));
            }
        }
        Ok(())
    }

    fn import_last_used(&self, times: &[(TokenId, i64)]) -> Result<usize> {
        let mut written = 0;
        for chunk in times.chunks(1000) {
            let writes: Vec<LastUsedWrite> = chunk
                .iter()
                .map(|&(id, seen)| LastUsedWrite {
                    id,
                    hash: None,
                    seen,
                    flushed: None,
                })
                .collect();
            written += self.write_last_used_chunk(&writes)?;
        }
        Ok(written)
    }

    fn import_audit(&self, events: &[(AuditKey, AuditEvent)]) -> Result<()> {
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            for (key, event) in events {
                let json = serde_json::to_string(event).unwrap_or_default();
                tx.execute(
                    "INSERT INTO pa_auth_audit (key, class, event) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO NOTHING",
                    &[&&key[..], &class_code(class_of(&event.event)), &json],
                )?;
            }
            tx.commit()
        })?;
        for (class, _, len) in &self.caps {
            let n = events
                .iter()
                .filter(|(_, e)| class_of(&e.event) == *class)
                .count();
            len.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.with_client(|c| {
            c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pa_auth_tokens) \
                    AND NOT EXISTS (SELECT 1 FROM pa_auth_admins) \
                    AND NOT EXISTS (SELECT 1 FROM pa_auth_audit)",
                &[],
            )
        })
        .is_ok_and(|row| row.get(0))
    }

    fn clear_all(&self) -> Result<()> {
        self.change(|tx| {
            tx.batch_execute(
                "DELETE FROM pa_auth_tokens; DELETE FROM pa_auth_admins; DELETE FROM pa_auth_audit;",
            )?;
            Ok(Change::Made {
                value: (),
                op: "clear",
                id: None,
                hash: None,
            })
        })?;
        self.index.replace(IndexBatch::default());
        for (_, _, len) in &self.caps {
            len.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Every statement above commits durably (synchronous_commit as the site sets it).
        Ok(())
    }

    fn change_counter(&self) -> Result<u64> {
        let n: i64 = self
            .with_client(|c| {
                c.query_one("SELECT value FROM pa_auth_meta WHERE key = 'revision'", &[])
            })?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn data_dir(&self) -> &Path {
        &self.local_dir
    }

    fn maintain(&self) {}

    fn save_for_restart(&self) -> Result<()> {
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn sync(&self, wait: std::time::Duration) -> Result<Synced> {
        self.sync_feed(wait)
    }

    fn wait_applied(&self, revision: u64, timeout: std::time::Duration) -> Result<Vec<String>> {
        // A node is waited for while it could still be verifying: until its own
        // --max-staleness (plus a margin for clocks and latency) after it last read the
        // revision. A node silent longer is refusing to verify, and is named.
        let deadline = std::time::Instant::now() + timeout;
        let revision = i64::try_from(revision).unwrap_or(i64::MAX);
        loop {
            let rows = self.with_client(|c| {
                c.query(
                    "SELECT node_id, seen_at > clock_timestamp() - \
                            make_interval(secs => (stale_after_ms + $3) / 1000.0) \
                     FROM pa_auth_nodes WHERE node_id <> $1 AND applied < $2",
                    &[&self.node_id, &revision, &MARGIN_MS],
                )
            })?;
            let live: Vec<String> = rows
                .iter()
                .filter(|row| row.get::<_, bool>(1))
                .map(|row| row.get(0))
                .collect();
            if live.is_empty() {
                let silent: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
                if !silent.is_empty() {
                    log::warn!(
                        "not waiting for nodes silent past their --max-staleness (they refuse to \
                         verify until they catch up): {}",
                        silent.join(", ")
                    );
                }
                return Ok(Vec::new());
            }
            if std::time::Instant::now() >= deadline {
                return Ok(live);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn session(
        &self,
        key: &[u8; 32],
        now_ms: i64,
        idle_ms: i64,
        lifetime_ms: i64,
    ) -> Result<Option<StoredSession>> {
        let row = self.with_client(|c| {
            c.query_opt(
                "UPDATE pa_auth_sessions SET last_seen_ms = GREATEST(last_seen_ms, $2::int8) \
                 WHERE key = $1 AND last_seen_ms > $2::int8 - $3::int8 \
                 AND created_ms > $2::int8 - $4::int8 \
                 RETURNING username, csrf_token, created_ms, last_seen_ms",
                &[&&key[..], &now_ms, &idle_ms, &lifetime_ms],
            )
        })?;
        Ok(row.map(|row| StoredSession {
            username: row.get(0),
            csrf_token: row.get(1),
            created_ms: row.get(2),
            last_seen_ms: row.get(3),
        }))
    }

    fn put_session(&self, key: &[u8; 32], session: &StoredSession, max: usize) -> Result<()> {
        let keep = i64::try_from(max.saturating_sub(1)).unwrap_or(i64::MAX);
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM pa_auth_sessions WHERE key IN (SELECT key FROM pa_auth_sessions \
                 ORDER BY last_seen_ms DESC OFFSET $1)",
                &[&keep],
            )?;
            tx.execute(
                "INSERT INTO pa_auth_sessions (key, username, csrf_token, created_ms, last_seen_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &&key[..],
                    &session.username,
                    &session.csrf_token,
                    &session.created_ms,
                    &session.last_seen_ms,
                ],
            )?;
            tx.commit()
        })
    }

    fn end_session(&self, key: &[u8; 32]) -> Result<()> {
        self.with_client(|c| {
            c.execute("DELETE FROM pa_auth_sessions WHERE key = $1", &[&&key[..]])
        })?;
        Ok(())
    }

    fn end_user_sessions(&self, username: &str, keep: Option<&[u8; 32]>) -> Result<()> {
        let keep: &[u8] = keep.map_or(&[], |k| &k[..]);
        self.with_client(|c| {
            c.execute(
                "DELETE FROM pa_auth_sessions WHERE username = $1 AND key <> $2",
                &[&username, &keep],
            )
        })?;
        Ok(())
    }

    fn count_login_guess(
        &self,
        addr: &str,
        now_ms: i64,
        forget_before_ms: i64,
        free: u32,
    ) -> Result<LoginGuesses> {
        let free = i32::try_from(free).unwrap_or(i32::MAX);
        let (counted, row) = self.with_client(|c| {
            c.execute(
                "DELETE FROM pa_auth_login_guesses WHERE last_ms < $1",
                &[&forget_before_ms],
            )?;
            let counted = c.query_opt(
                "INSERT INTO pa_auth_login_guesses AS g (addr, guesses, last_ms, locked_until_ms) \
                 VALUES ($1, 1, $2, 0) \
                 ON CONFLICT (addr) DO UPDATE SET guesses = LEAST(g.guesses + 1, 1000000), \
                 last_ms = $2 \
                 WHERE g.locked_until_ms <= $2 AND (g.guesses < $3 OR g.locked_until_ms > 0) \
                 RETURNING guesses, locked_until_ms",
                &[&addr, &now_ms, &free],
            )?;
            match counted {
                Some(row) => Ok((true, Some(row))),
                None => c
                    .query_opt(
                        "SELECT guesses, locked_until_ms FROM pa_auth_login_guesses \
                         WHERE addr = $1",
                        &[&addr],
                    )
                    .map(|row| (false, row)),
            }
        })?;
        let (guesses, locked_until_ms) = row.map_or((0, 0), |row| {
            let guesses: i32 = row.get(0);
            (u32::try_from(guesses).unwrap_or(0), row.get(1))
        });
        Ok(LoginGuesses {
            counted,
            guesses,
            locked_until_ms,
        })
    }

    fn lock_login(&self, addr: &str, until_ms: i64) -> Result<()> {
        self.with_client(|c| {
            c.execute(
                "UPDATE pa_auth_login_guesses \
                 SET locked_until_ms = GREATEST(locked_until_ms, $2) WHERE addr = $1",
                &[&addr, &until_ms],
            )
        })?;
        Ok(())
    }

    fn clear_login_guesses(&self, addr: &str) -> Result<()> {
        self.with_client(|c| {
            c.execute(
                "DELETE FROM pa_auth_login_guesses WHERE addr = $1",
                &[&addr],
            )
        })?;
        Ok(())
    }

    fn leave(&self) {
        let _ = self.with_client(|c| {
            c.execute(
                "DELETE FROM pa_auth_nodes WHERE node_id = $1",
                &[&self.node_id],
            )
        });
    }
}
