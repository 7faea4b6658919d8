//! The embedded sled store and the data dir around it: the exclusive lock that keeps a second
//! process out, directory/file permissions (0700/0600), the schema version, and the trees.
//! Token, admin, audit and webhook outbox operations live in the submodules; each write that must survive a
//! crash calls [`SledStore::commit_durable`] (flush, then record the generation) before the
//! caller answers. The on-disk names and encodings are described in `layout`.

mod admin_accounts;
mod audit_log;
mod creation_order;
mod export;
mod index_snapshot;
mod layout;
mod previous_secrets;
mod schema_upgrade;
mod token_records;
mod token_usage;
mod webhook_outbox;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::index::TokenIndex;
pub use token_records::TokenRecordRef;

use crate::store::records::{
    AdminAccount, AuditQuery, ExportedToken, IndexedToken, LastUsedWrite, OutboxBacklog,
    OutboxEntry, PreviousSecret, Rotated, ScanMark, SecretUsed, TokenPage, TokenRecord, TokenStats,
    TokenUpdate, UpdatedToken, ORDER_KEY_LEN,
};

pub use layout::{LOCK_FILE, SCHEMA_VERSION};

use crate::domain::audit::AuditEvent;
use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::rotation::PreviousSecretEnd;
use crate::domain::token::{PlaintextToken, TokenHash, TokenId};
use crate::progress::Progress;
use crate::store::error::{Error, Result};
use crate::store::AuditKey;
use layout::{
    ADMINS_TREE, DB_DIR, GENERATION_KEY, INITIALIZED_MARKER, LAST_USED_TREE, META_TREE,
    NEWEST_CREATED_KEY, PREVIOUS_SECRETS_TREE, RECORDS_TREE, SCHEMA_1_RECORDS_TREE,
    SCHEMA_VERSION_KEY, SLED_DATA_FILE, SLED_PARTIAL_SNAPSHOT_SUFFIX, STATE_FILE, TMP_SUFFIX,
    TOKEN_COUNT_KEY, TOKEN_NAMES_TREE, USAGE_TREE, WEBHOOK_OUTBOX_TREE,
};

/// The open store. Holds the data-dir lock for its lifetime.
pub struct SledStore {
    db: sled::Db,
    data_dir: PathBuf,
    /// id → token record (with the blake3 of its secret; see `token_records`).
    records: sled::Tree,
    /// lower-cased name → id (uniqueness ignoring case).
    token_names: sled::Tree,
    /// id → last-used unix seconds (big-endian i64), written by the flusher and by
    /// restore.
    last_used: sled::Tree,
    /// username → AdminAccount JSON.
    admins: sled::Tree,
    /// The two audit trees, time-ordered key → AuditEvent JSON (see `audit_log`).
    audit: audit_log::AuditTrees,
    /// schema version, token count.
    meta: sled::Tree,
    /// id → previous secret, for tokens in a rotation's overlap (see `previous_secrets`).
    previous_secrets: sled::Tree,
    /// Webhook events waiting for delivery (see `webhook_outbox`).
    webhook_outbox: sled::Tree,
    /// id → usage (see `token_usage`).
    usage: sled::Tree,
    /// blake3 → token, in memory, when serving (see `token_index`).
    index: Option<TokenIndex>,
    /// Newest-first listing order, in memory: loaded at open when serving, on first listing
    /// offline (see `creation_order`).
    order: std::sync::OnceLock<creation_order::CreationOrder>,
    /// Serialises writes of `pa-auth.state`.
    state_lock: std::sync::Mutex<()>,
    /// Held by a delete's transaction and by each last-used chunk written, so a last-used
    /// time is never written for a token deleted in between (see `write_last_used_chunk`).
    last_used_gate: std::sync::Mutex<()>,
    /// Creation time of the newest token, µs (creation order is kept strictly increasing).
    last_created_micros: std::sync::atomic::AtomicI64,
    _lock: File,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// Lifecycle audit events (admin and token changes, start/stop) kept before the
    /// oldest are dropped.
    pub audit_cap: u64,
    /// Audit events anyone can cause (failed authentications and logins) kept before the
    /// oldest of them are dropped.
    pub audit_failure_cap: u64,
    /// Keep every token in the in-memory authentication index (the server does; offline
    /// commands do not need to load it).
    pub index_tokens: bool,
    /// Called every 100,000 entries of a long start-up step (a schema upgrade) with its
    /// progress (count, total, [`Progress::line`]: "upgrading the store to schema 2:
    /// 300000/2000000 entries (15%), 40000/s, ETA 43 s"), so the caller can keep a supervisor
    /// from timing the start out. The step reports to the terminal or the log itself
    /// ([`crate::progress`]). Default: does nothing.
    pub on_progress: fn(&Progress),
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 16 * 1024 * 1024,
            // Offline commands drop nothing: the caps are the server's configuration, and
            // `serve` applies them when it opens the store.
            audit_cap: u64::MAX,
            audit_failure_cap: u64::MAX,
            index_tokens: false,
            on_progress: |_| {},
        }
    }
}

impl SledStore {
    /// Creates the data dir if needed (0700), takes its exclusive lock, opens sled and checks
    /// the schema version.
    pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<SledStore> {
        create_private_dir(data_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let db_path = data_dir.join(DB_DIR);
        schema_upgrade::finish_interrupted_swap(&db_path)?;
        check_before_open(data_dir, &db_path)?;
        // Only now, with the store about to be used, record who holds it.
        let mut lock = lock;
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{}", std::process::id());
        let mut db = open_sled(&db_path, options)?;
        if schema_upgrade::is_schema_1(&db)? {
            if let Err(e) = schema_upgrade::rewrite_schema_1(db, data_dir, &db_path, options) {
                log::error!(
                    "upgrading the store in {} failed: {e}. The old store is unchanged; the \
                     upgrade writes a second copy beside it, so it needs about as much free \
                     space again. Fix the cause and start again",
                    db_path.display()
                );
                return Err(e);
            }
            db = open_sled(&db_path, options)?;
        }
        let tree = |name: &str| db.open_tree(name);
        let store = SledStore {
            records: tree(RECORDS_TREE)?,
            token_names: tree(TOKEN_NAMES_TREE)?,
            last_used: tree(LAST_USED_TREE)?,
            admins: tree(ADMINS_TREE)?,
            audit: audit_log::AuditTrees::open(&db, options.audit_cap, options.audit_failure_cap)?,
            meta: tree(META_TREE)?,
            previous_secrets: tree(PREVIOUS_SECRETS_TREE)?,
            webhook_outbox: tree(WEBHOOK_OUTBOX_TREE)?,
            usage: tree(USAGE_TREE)?,
            index: options.index_tokens.then(TokenIndex::default),
            order: std::sync::OnceLock::new(),
            state_lock: std::sync::Mutex::new(()),
            last_used_gate: std::sync::Mutex::new(()),
            last_created_micros: std::sync::atomic::AtomicI64::new(0),
            data_dir: data_dir.to_path_buf(),
            db,
            _lock: lock,
        };
        store.check_generation()?;
        store.check_schema()?;
        let newest = store
            .meta
            .get(NEWEST_CREATED_KEY)?
            .and_then(|v| be_i64(&v))
            .unwrap_or(0);
        store
            .last_created_micros
            .store(newest, std::sync::atomic::Ordering::SeqCst);
        if store.index().is_some() {
            let saved = index_snapshot::take(data_dir, store.generation()?, store.token_count()?);
            store.load_in_memory(saved)?;
            store.load_previous_secrets()?;
        } else {
            index_snapshot::discard(data_dir);
        }
        store.flush()?;
        if !data_dir.join(INITIALIZED_MARKER).exists() {
            write_private_file(
                &data_dir.join(INITIALIZED_MARKER),
                b"pa-auth store initialized\n",
            )?;
        }
        store.restrict_file_modes();
        Ok(store)
    }

    /// The store must be at least as new as the last recorded durable change.
    fn check_generation(&self) -> Result<()> {
        let Some(state) = StoreState::read(&self.data_dir) else {
            return Ok(());
        };
        let current = self.generation()?;
        if current < state.generation {
            return Err(Error::Corrupt(format!(
                "the store in {} is older than its last recorded change (generation {current} < {}): \
                 it was truncated, rolled back or replaced. Restore from a backup",
                self.data_dir.display(),
                state.generation
            )));
        }
        Ok(())
    }

    fn check_schema(&self) -> Result<()> {
        match self.meta.get(SCHEMA_VERSION_KEY)? {
            None => {
                if !self.records.is_empty()
                    || !self.admins.is_empty()
                    || self.db.tree_names().iter().any(|t| t == SCHEMA_1_RECORDS_TREE.as_bytes())
                {
                    return Err(Error::Corrupt("store has data but no schema version".into()));
                }
                self.meta
                    .insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.meta.insert(TOKEN_COUNT_KEY, &0u64.to_be_bytes())?;
                Ok(())
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_be_bytes() => Ok(()),
            // Schemas 2, 3 and 4 are read as they are (see `layout`): only the number changes.
            Some(v) if v.as_ref() == 2u32.to_be_bytes() => schema_upgrade::upgrade_in_place(&self.meta, 2),
            Some(v) if v.as_ref() == 3u32.to_be_bytes() => schema_upgrade::upgrade_in_place(&self.meta, 3),
            Some(v) if v.as_ref() == 4u32.to_be_bytes() => schema_upgrade::upgrade_in_place(&self.meta, 4),
            Some(v) => Err(Error::Corrupt(format!(
                "store schema version {:?} is not {SCHEMA_VERSION}; use the pa-auth release that wrote it",
                v.as_ref()
            ))),
        }
    }

    /// The authentication index, when this store keeps one (serving); `None` offline.
    fn index(&self) -> Option<&TokenIndex> {
        self.index.as_ref()
    }

    /// The store's generation: bumped by every durable token or admin change.
    fn generation(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(GENERATION_KEY)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// Saves the in-memory index and creation order for the next start (clean shutdown,
    /// after the final flush, with no request in flight). A no-op for an offline store.
    pub fn save_index_snapshot(&self) -> Result<()> {
        let (Some(index), Some(order)) = (self.index(), self.order.get()) else {
            return Ok(());
        };
        index_snapshot::write(&self.data_dir, self.generation()?, index, order)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// After a token or admin change: bump the store's generation, flush, then record the
    /// generation and the log file's length beside the store (`pa-auth.state`). Start-up
    /// compares both, so a store that lost its tail (truncated, rolled back, replaced by an
    /// older copy) is refused instead of silently serving older data.
    pub fn commit_durable(&self) -> Result<()> {
        let generation = self
            .meta
            .update_and_fetch(GENERATION_KEY, |old| {
                let n = old.and_then(be_u64).unwrap_or(0) + 1;
                Some(n.to_be_bytes().to_vec())
            })?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0);
        self.db.flush()?;
        let db_len = std::fs::metadata(self.data_dir.join(DB_DIR).join(SLED_DATA_FILE))
            .map(|m| m.len())
            .unwrap_or(0);
        let _guard = crate::sync::lock(&self.state_lock);
        let state = StoreState::read(&self.data_dir);
        if state.is_some_and(|s| s.generation >= generation) {
            return Ok(());
        }
        StoreState { generation, db_len }.write(&self.data_dir)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Re-applies 0600 to the store's files (sled creates them with the process umask; the
    /// systemd unit sets UMask=0077, this covers a hand-started server). Cheap: a few files.
    pub fn restrict_file_modes(&self) {
        restrict_tree(&self.data_dir);
    }
}

fn restrict_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // `DirEntry::metadata` does not follow links, and a link is never followed here:
        // chmod through one (the control socket's, or one planted) would change its target.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        let path = entry.path();
        let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.permissions().mode() & 0o777 != wanted {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted));
        }
        if meta.is_dir() {
            restrict_tree(&path);
        }
    }
}

/// How long `open_sled` waits for sled's own file lock. Only our process can hold it (the
/// caller holds the data dir's lock), and only for the moments a just-dropped handle's
/// background threads take to exit (sled 0.34 does not join them on drop: spacejam/sled
/// issue 1289): the schema upgrade reopens the store it has just written.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled in `db_path`. The caller holds the data dir's lock.
fn open_sled(db_path: &Path, options: &StoreOptions) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(db_path)
        .cache_capacity(options.cache_bytes)
        .flush_every_ms(Some(500));
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    let opened = loop {
        match config.open() {
            Err(sled::Error::Io(io))
                if is_sled_lock_busy(&io) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => break other,
        }
    };
    opened.map_err(|e| match e {
        sled::Error::Io(io) if is_unwritable(&io) => Error::Config(format!(
            "data dir {} is not writable ({io}); pa-auth needs it read-write",
            db_path.parent().unwrap_or(db_path).display()
        )),
        sled::Error::Io(io) => Error::Io(io),
        other => Error::Corrupt(format!(
            "cannot open the store in {}: {other}. Restore from a backup; nothing was changed",
            db_path.display()
        )),
    })
}

/// sled reports its file lock held as `Other` with this text (the `WouldBlock` inside is
/// only in the message).
fn is_sled_lock_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn is_unwritable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Refuses to open what would lose data silently: a store that existed and is gone or
/// empty, or a snapshot left half-written by an interrupted run. Touches nothing.
fn check_before_open(data_dir: &Path, db_path: &Path) -> Result<()> {
    let initialized = data_dir.join(INITIALIZED_MARKER).exists();
    let db_file = db_path.join(SLED_DATA_FILE);
    let missing = !db_file.exists()
        || std::fs::metadata(&db_file)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
    if initialized && missing {
        return Err(Error::Corrupt(format!(
            "{} held a pa-auth store, but {} is missing or empty. Refusing to start with an empty \
             store: restore the data dir from a backup (pa-auth restore), or remove {} to start afresh",
            data_dir.display(),
            db_file.display(),
            data_dir.join(INITIALIZED_MARKER).display()
        )));
    }
    if let Some(state) = StoreState::read(data_dir) {
        let len = std::fs::metadata(&db_file).map(|m| m.len()).unwrap_or(0);
        if len < state.db_len {
            return Err(Error::Corrupt(format!(
                "{} is shorter ({len} bytes) than when it was last written ({} bytes): it was \
                 truncated. Refusing to start; restore from a backup. Nothing was changed",
                db_file.display(),
                state.db_len
            )));
        }
    }
    if let Ok(entries) = std::fs::read_dir(db_path) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name
                .to_string_lossy()
                .ends_with(SLED_PARTIAL_SNAPSHOT_SUFFIX)
            {
                return Err(Error::Corrupt(format!(
                    "{} is a snapshot left by an interrupted run. Take a copy of the data dir, then \
                     move that file away and start again; nothing was changed",
                    entry.path().display()
                )));
            }
        }
    }
    Ok(())
}

/// What `commit_durable` last recorded.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoreState {
    pub(super) generation: u64,
    pub(super) db_len: u64,
}

impl StoreState {
    pub(super) fn read(data_dir: &Path) -> Option<StoreState> {
        serde_json::from_slice(&std::fs::read(data_dir.join(STATE_FILE)).ok()?).ok()
    }

    /// Write-then-rename, so the file is always whole.
    pub(super) fn write(&self, data_dir: &Path) -> Result<()> {
        let tmp = data_dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Internal(e.to_string()))?;
        write_private_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, data_dir.join(STATE_FILE))?;
        Ok(())
    }
}

/// Creates `dir` with mode 0700 (or tightens an existing one).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Config(format!("cannot create data dir {}: {e}", dir.display())))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::Config(format!("cannot read data dir {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "data dir {} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::Config(format!(
                "cannot set data dir {} to mode 0700: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Takes the exclusive lock on `<dir>/pa-auth.lock` and writes our pid into it.
/// Removes a store that cannot be opened (a damaged one) from `dir`, under its lock: the sled
/// directory, the state, the index snapshot, an upgrade's leftovers and the initialized
/// marker (links among them are removed, never followed). For `restore --force`.
pub fn discard_store(dir: &Path) -> Result<()> {
    let _lock = lock_data_dir(dir)?;
    let db = dir.join(DB_DIR);
    for path in [
        db.clone(),
        dir.join(format!("{DB_DIR}{}", layout::UPGRADE_SUFFIX)),
        dir.join(format!("{DB_DIR}{}", layout::RETIRED_SUFFIX)),
    ] {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(_) => {}
        }
    }
    for name in [STATE_FILE, layout::INDEX_SNAPSHOT_FILE, INITIALIZED_MARKER] {
        for file in [name.to_owned(), format!("{name}{TMP_SUFFIX}")] {
            let _ = std::fs::remove_file(dir.join(file));
        }
    }
    Ok(())
}

/// Takes the data dir's lock (`pa-auth.lock`, held until the file is dropped), or says who
/// holds it. A cluster node takes it too, for its local files: the CLI knows a data dir held
/// by a server by it, and then reaches that server through its control socket.
pub fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A link there is not followed (nor a file created where it points); a FIFO planted
        // there does not block the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Error::Config(format!("cannot open lock file {}: {e}", path.display())))?;
    // The file opened must be the regular file at that name, not what a link there points
    // to: the pid is written into it (a link to another file would have it truncated).
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    let named = std::fs::symlink_metadata(&path)?;
    if !named.file_type().is_file() || (opened.dev(), opened.ino()) != (named.dev(), named.ino()) {
        return Err(Error::Config(format!(
            "{} is not a regular file (a link?): refusing to use it",
            path.display()
        )));
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::DataDirLocked(dir.to_path_buf()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::Config(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        }
    }
    Ok(file)
}

/// Writes a new file with mode 0600 atomically enough for a secret: create-new, write, sync.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

fn transaction_error<E: Into<Error>>(e: sled::transaction::TransactionError<E>) -> Error {
    match e {
        sled::transaction::TransactionError::Abort(e) => e.into(),
        sled::transaction::TransactionError::Storage(e) => Error::Sled(e),
    }
}

fn be_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The trait is this store's inherent API, method for method.
impl crate::store::Store for SledStore {
    fn create_token(
        &self,
        name: &str,
        expires_at: Option<i64>,
        owner: Option<&str>,
        description: Option<&str>,
        restrictions: &crate::domain::restrictions::Restrictions,
        created_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        SledStore::create_token_with(
            self,
            name,
            expires_at,
            owner,
            description,
            restrictions,
            created_micros,
        )
    }
    fn update_token(&self, id: TokenId, update: &TokenUpdate) -> Result<Option<UpdatedToken>> {
        SledStore::update_token(self, id, update)
    }
    fn delete_token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        SledStore::delete_token(self, id)
    }
    fn rotate_token(
        &self,
        id: TokenId,
        ends_at: Option<i64>,
        until_new_secret_used: bool,
    ) -> Result<Option<Rotated>> {
        SledStore::rotate_token(self, id, ends_at, until_new_secret_used)
    }
    fn previous_secret(&self, id: TokenId) -> Result<Option<PreviousSecret>> {
        SledStore::previous_secret(self, id)
    }
    fn end_previous_secret(
        &self,
        id: TokenId,
        only: Option<&TokenHash>,
    ) -> Result<Option<PreviousSecret>> {
        SledStore::end_previous_secret(self, id, only)
    }
    fn ended_previous_secrets(
        &self,
        now: i64,
    ) -> Result<Vec<(TokenId, PreviousSecret, PreviousSecretEnd)>> {
        SledStore::ended_previous_secrets(self, now)
    }
    fn lookup_secret(
        &self,
        hash: &TokenHash,
        client: Option<std::net::IpAddr>,
    ) -> Result<Option<(IndexedToken, SecretUsed, bool)>> {
        match self.index() {
            Some(index) => Ok(index.lookup_from(hash, client)),
            None => Ok(self.lookup_token(hash)?.map(|t| {
                let current = SecretUsed::Current {
                    ends_previous_on_use: false,
                };
                let allowed = t.restrictions.networks.permits(client);
                (t, current, allowed)
            })),
        }
    }
    fn note_previous_use(&self, hash: &TokenHash, now: i64) {
        if let Some(index) = self.index() {
            index.note_previous_use(hash, now);
        }
    }
    fn take_first_use(&self, current: &TokenHash) -> bool {
        self.index().is_some_and(|i| i.take_first_use(current))
    }
    fn previous_last_used(&self, hash: &TokenHash) -> Option<i64> {
        self.index().and_then(|i| i.previous_last_used(hash))
    }
    fn token_by_id(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        SledStore::token_by_id(self, id)
    }
    fn list_tokens(&self, limit: usize, cursor: Option<&[u8; ORDER_KEY_LEN]>) -> Result<TokenPage> {
        SledStore::list_tokens(self, limit, cursor)
    }
    fn list_tokens_of_owner(
        &self,
        owner_folded: &str,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
    ) -> Result<TokenPage> {
        SledStore::list_tokens_of_owner(self, owner_folded, limit, cursor)
    }
    fn lookup_token(&self, hash: &TokenHash) -> Result<Option<IndexedToken>> {
        SledStore::lookup_token(self, hash)
    }
    fn token_count(&self) -> Result<u64> {
        SledStore::token_count(self)
    }
    fn token_stats(&self, now: i64, policy: &LifetimePolicy) -> Result<TokenStats> {
        SledStore::token_stats(self, now, policy)
    }
    fn stored_last_used(&self, id: TokenId) -> Result<Option<i64>> {
        SledStore::stored_last_used(self, id)
    }
    fn write_last_used_chunk(&self, chunk: &[LastUsedWrite]) -> Result<usize> {
        SledStore::write_last_used_chunk(self, chunk)
    }
    fn stored_usage(&self, id: TokenId) -> Result<crate::domain::usage::Usage> {
        SledStore::stored_usage(self, id)
    }
    fn merge_usage_chunk(
        &self,
        chunk: &[(TokenId, crate::domain::usage::Usage)],
        today: i64,
    ) -> Result<Vec<(TokenId, Vec<std::net::IpAddr>)>> {
        SledStore::merge_usage_chunk(self, chunk, today)
    }
    fn append_audit(&self, now: i64, event: AuditEvent) -> Result<AuditEvent> {
        SledStore::append_audit(self, now, event)
    }
    fn audit_events(&self, query: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<String>)> {
        SledStore::audit_events(self, query)
    }

    fn audit_events_from(&self, from: &[u8; 16], limit: usize) -> Result<Vec<AuditEvent>> {
        SledStore::audit_events_from(self, from, limit)
    }
    fn enqueue_webhooks(&self, entries: &[OutboxEntry], scan: Option<ScanMark>) -> Result<bool> {
        SledStore::enqueue_webhooks(self, entries, scan)
    }
    fn webhook_scan_mark(&self) -> Result<Option<i64>> {
        SledStore::webhook_scan_mark(self)
    }
    fn lifecycle_candidates(
        &self,
        from: i64,
        to: i64,
        unused_after_days: Option<u32>,
    ) -> Result<Vec<(TokenRecord, Option<i64>)>> {
        SledStore::lifecycle_candidates(self, from, to, unused_after_days)
    }
    fn due_webhooks(
        &self,
        now_ms: i64,
        url: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        SledStore::due_webhooks(self, now_ms, url, limit)
    }
    fn webhook_attempted(&self, seq: u64, retry: Option<(u32, i64)>) -> Result<()> {
        SledStore::webhook_attempted(self, seq, retry)
    }
    fn webhook_backlog(&self) -> Result<OutboxBacklog> {
        SledStore::webhook_backlog(self)
    }
    fn admin(&self, username: &str) -> Result<Option<AdminAccount>> {
        SledStore::admin(self, username)
    }
    fn put_admin(&self, username: &str, account: &AdminAccount) -> Result<()> {
        SledStore::put_admin(self, username, account)
    }
    fn has_admins(&self) -> bool {
        SledStore::has_admins(self)
    }
    fn export_tokens(&self) -> Result<Vec<ExportedToken>> {
        SledStore::export_tokens(self)
    }
    fn export_admins(&self) -> Result<Vec<(String, AdminAccount)>> {
        SledStore::export_admins(self)
    }
    fn export_audit(&self) -> Result<Vec<(AuditKey, AuditEvent)>> {
        SledStore::export_audit(self)
    }
    fn import_tokens(&self, records: &[(TokenHash, TokenRecord)]) -> Result<()> {
        SledStore::import_tokens(self, records)
    }
    fn import_last_used(&self, times: &[(TokenId, i64)]) -> Result<usize> {
        SledStore::write_last_used(self, times)
    }
    fn import_audit(&self, events: &[(AuditKey, AuditEvent)]) -> Result<()> {
        SledStore::import_audit(self, events)
    }
    fn is_empty(&self) -> bool {
        SledStore::is_empty(self)
    }
    fn clear_all(&self) -> Result<()> {
        SledStore::clear_all(self)
    }
    fn flush(&self) -> Result<()> {
        SledStore::flush(self)
    }
    fn change_counter(&self) -> Result<u64> {
        self.generation()
    }
    fn data_dir(&self) -> &Path {
        SledStore::data_dir(self)
    }
    fn maintain(&self) {
        self.restrict_file_modes();
    }
    fn save_for_restart(&self) -> Result<()> {
        self.save_index_snapshot()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    pub use super::StoreOptions;
    use super::*;

    /// A store in a fresh directory under the system temp dir, removed on drop.
    pub struct TempStore {
        pub store: SledStore,
        dir: PathBuf,
    }

    impl TempStore {
        pub fn new() -> TempStore {
            TempStore::with_options(StoreOptions {
                index_tokens: true,
                ..StoreOptions::default()
            })
        }

        pub fn with_options(options: StoreOptions) -> TempStore {
            let dir = std::env::temp_dir().join(format!(
                "pa-auth-unit-{}-{}",
                std::process::id(),
                crate::domain::token::TokenId::generate()
            ));
            let store = SledStore::open(&dir, &options).unwrap();
            TempStore { store, dir }
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A directory removed on drop.
    pub struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A serving store as the service holds it, and its directory (drop it last).
    pub fn shared_temp_store() -> (std::sync::Arc<dyn crate::store::Store>, TempDir) {
        let dir = std::env::temp_dir().join(format!(
            "pa-auth-unit-{}-{}",
            std::process::id(),
            crate::domain::token::TokenId::generate()
        ));
        let options = StoreOptions {
            index_tokens: true,
            ..StoreOptions::default()
        };
        let store = SledStore::open(&dir, &options).unwrap();
        (std::sync::Arc::new(store), TempDir(dir))
    }

    /// Names on the first listing page of up to `limit`, newest first.
    pub fn listed_names(store: &SledStore, limit: usize) -> Vec<String> {
        store
            .list_tokens(limit, None)
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    impl std::ops::Deref for TempStore {
        type Target = SledStore;
        fn deref(&self) -> &SledStore {
            &self.store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;

    /// Issue 20 (outside attack): the lock file is where the pid is written; a link planted
    /// there must not get another file truncated, whoever opens the data dir.
    #[test]
    fn a_link_at_the_lock_file_is_refused_and_its_target_untouched() {
        let base = std::env::temp_dir().join(format!(
            "pa-auth-lock-link-{}-{}",
            std::process::id(),
            crate::domain::token::TokenId::generate()
        ));
        let dir = base.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(LOCK_FILE)).unwrap();
        let e = SledStore::open(&dir, &StoreOptions::default()).unwrap_err();
        assert!(e.to_string().contains("lock file"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // Nor is a file made where a link to nothing points.
        let nowhere = base.join("nowhere");
        std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink(&nowhere, dir.join(LOCK_FILE)).unwrap();
        assert!(SledStore::open(&dir, &StoreOptions::default()).is_err());
        assert!(!nowhere.exists(), "created through the link");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn regression_issue_16_poisoned_state_lock_still_records_the_generation() {
        let s = TempStore::new();
        s.commit_durable().unwrap();
        let before = StoreState::read(s.data_dir()).unwrap().generation;
        std::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                let _guard = s.state_lock.lock().unwrap();
                panic!("poison state_lock");
            });
            assert!(holder.join().is_err());
        });
        assert!(s.state_lock.is_poisoned());

        s.commit_durable().unwrap();
        let after = StoreState::read(s.data_dir()).unwrap();
        assert_eq!(after.generation, before + 1);
        assert_eq!(after.generation, s.generation().unwrap());
    }
}
