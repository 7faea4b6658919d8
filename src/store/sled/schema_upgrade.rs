//! Upgrades an older store's layout, once, at open, before anything reads it.
//!
//! Schema 1 → 2: schema 1 kept four sled entries a token (record by hash, id → hash,
//! name → id, creation order → hash); schema 2 keeps two (record by id, with its hash, and
//! name → id), because of sled's per-entry memory
//! (docs/decisions/0003-two-entries-a-token.md).
//!
//! The upgrade writes a fresh sled directory beside the old one (`db.upgrade`) and swaps it
//! in, rather than rewriting in place: sled 0.34 never gives back the page-table slots of
//! deleted entries, so an in-place upgrade was slow and kept its memory (figures:
//! bench/results/2026-12-02-flush-pacing.md), and the old store stays untouched until the
//! new one is durable. Crash-safe by ordering: copy and flush, record the new file length
//! in `pa-auth.state`, rename `db` to `db.schema1`, rename `db.upgrade` to `db`, remove
//! `db.schema1`; [`finish_interrupted_swap`] completes or discards whatever a crash left.

use std::path::{Path, PathBuf};

use super::layout::{
    META_TREE, NEVER, NEWEST_CREATED_KEY, RECORDS_TREE, RETIRED_SUFFIX, SCHEMA_1_ONLY_TREES,
    SCHEMA_1_RECORDS_TREE, SCHEMA_VERSION_KEY, SLED_DATA_FILE, UPGRADE_SUFFIX,
};
use super::{be_i64, StoreOptions, StoreState, TokenRecord, SCHEMA_VERSION};
use crate::domain::token::{TokenHash, TokenId};
use crate::progress::Progress;
use crate::store::error::{Error, Result};

/// Entries written per sled batch.
const COPY_BATCH: usize = 10_000;
/// Entries between two calls of `StoreOptions::on_progress` (the server extends systemd's
/// start timeout by a minute each time: 100,000 entries take a few seconds).
const SUPERVISOR_EVERY: u64 = 100_000;

fn sibling(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn is_schema_1(db: &sled::Db) -> Result<bool> {
    Ok(db
        .open_tree(META_TREE)?
        .get(SCHEMA_VERSION_KEY)?
        .is_some_and(|v| v.as_ref() == 1u32.to_be_bytes()))
}

/// Completes (or discards) an upgrade a crash interrupted. Touches nothing otherwise.
pub(super) fn finish_interrupted_swap(db_path: &Path) -> Result<()> {
    let (old, new) = (
        sibling(db_path, RETIRED_SUFFIX),
        sibling(db_path, UPGRADE_SUFFIX),
    );
    if old.exists() {
        if !db_path.exists() {
            // Crashed between the two renames: the new store is complete and durable.
            let finished = if new.exists() { &new } else { &old };
            std::fs::rename(finished, db_path)?;
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
    } else if new.exists() {
        // Crashed while copying: the old store is intact, start the copy again.
        std::fs::remove_dir_all(&new)?;
    }
    Ok(())
}

/// Copies a schema-1 store into a fresh schema-2 one and swaps it in. Consumes (closes)
/// the old store.
pub(super) fn rewrite_schema_1(
    old: sled::Db,
    data_dir: &Path,
    db_path: &Path,
    options: &StoreOptions,
) -> Result<()> {
    let new_path = sibling(db_path, UPGRADE_SUFFIX);
    if new_path.exists() {
        std::fs::remove_dir_all(&new_path)?;
    }
    let started = std::time::Instant::now();
    log::warn!(
        "upgrading the store in {} from schema 1 to {SCHEMA_VERSION} (about 1 min per million tokens); \
         the old store is kept until the new one is complete",
        db_path.display()
    );
    {
        let new = sled::Config::new()
            .path(&new_path)
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        let copied_trees: Vec<sled::IVec> = old
            .tree_names()
            .into_iter()
            .filter(|name| {
                !name.starts_with(b"__sled__")
                    && !SCHEMA_1_ONLY_TREES
                        .iter()
                        .any(|t| t.as_bytes() == name.as_ref())
            })
            .collect();
        // Counting is a scan (sled's `len`), a fraction of the copy; an ETA is worth it.
        let mut total = old.open_tree(SCHEMA_1_RECORDS_TREE)?.len() as u64;
        for name in &copied_trees {
            total += old.open_tree(name)?.len() as u64;
        }
        let mut progress = Progress::start(
            &format!("upgrading the store to schema {SCHEMA_VERSION}"),
            Some(total),
        );
        for name in &copied_trees {
            let (from, to) = (old.open_tree(name)?, new.open_tree(name)?);
            copy_batched(from.iter(), &to, &mut progress, options, Ok)?;
        }
        let records = new.open_tree(RECORDS_TREE)?;
        let mut newest = 0i64;
        copy_batched(
            old.open_tree(SCHEMA_1_RECORDS_TREE)?.iter(),
            &records,
            &mut progress,
            options,
            |(key, bytes)| {
                let hash = TokenHash(key.as_ref().try_into().map_err(|_| {
                    Error::Corrupt("schema 1 token key is not 32 bytes; nothing was changed".into())
                })?);
                let record = decode_schema_1(&bytes).ok_or_else(|| {
                    Error::Corrupt("undecodable schema 1 token record; nothing was changed".into())
                })?;
                newest = newest.max(record.created_micros);
                Ok((record.id.0.to_vec().into(), record.encode(&hash).into()))
            },
        )?;
        let meta = new.open_tree(META_TREE)?;
        meta.insert(NEWEST_CREATED_KEY, &newest.to_be_bytes())?;
        meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        new.flush()?;
        progress.finish();
        // The new log is shorter than the old one; record that before the swap, so neither
        // store is taken for a truncated one (the old one is longer still).
        let new_len = std::fs::metadata(new_path.join(SLED_DATA_FILE))?.len();
        if let Some(state) = StoreState::read(data_dir) {
            StoreState {
                generation: state.generation,
                db_len: new_len.min(state.db_len),
            }
            .write(data_dir)?;
        }
    }
    drop(old);
    let retired = sibling(db_path, RETIRED_SUFFIX);
    std::fs::rename(db_path, &retired)?;
    std::fs::rename(&new_path, db_path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    std::fs::remove_dir_all(&retired)?;
    log::warn!(
        "store upgraded to schema {SCHEMA_VERSION} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies entries into `to` in batches, mapping each, counting each in `progress`, and
/// hands `progress` to `options.on_progress` every [`SUPERVISOR_EVERY`] entries (the server
/// uses it to keep systemd from timing the start-up out while a large store is copied).
fn copy_batched(
    from: sled::Iter,
    to: &sled::Tree,
    progress: &mut Progress,
    options: &StoreOptions,
    mut map: impl FnMut((sled::IVec, sled::IVec)) -> Result<(sled::IVec, sled::IVec)>,
) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for entry in from {
        let (key, value) = map(entry?)?;
        batch.insert(key, value);
        progress.advance(1);
        in_batch += 1;
        if in_batch == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
            let copied = progress.done();
            if copied / SUPERVISOR_EVERY
                > copied.saturating_sub(COPY_BATCH as u64) / SUPERVISOR_EVERY
            {
                (options.on_progress)(progress);
            }
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Schema 1 record: version 1 ‖ id(16) ‖ created µs(8) ‖ expires s(8, `NEVER` = never) ‖
/// name (UTF-8).
fn decode_schema_1(bytes: &[u8]) -> Option<TokenRecord> {
    const HEADER: usize = 1 + 16 + 8 + 8;
    if bytes.len() < HEADER || bytes[0] != 1 {
        return None;
    }
    let expires = be_i64(&bytes[25..33])?;
    Some(TokenRecord {
        id: TokenId(bytes[1..17].try_into().ok()?),
        created_micros: be_i64(&bytes[17..25])?,
        expires_at: (expires != NEVER).then_some(expires),
        name: std::str::from_utf8(&bytes[HEADER..]).ok()?.to_owned(),
        owner: None,
        description: None,
        restrictions: Default::default(),
    })
}

/// Schema 2 → 3, in place: schema 3 only added owner and description to the record, in a
/// new record version beside the old one, and every schema 2 record is still read as it is
/// (see `token_records`). So the upgrade rewrites nothing; it records the new version, so
/// that an older release refuses the store ("use the release that wrote it") instead of
/// meeting a record it cannot decode.
pub(super) fn upgrade_in_place(meta: &sled::Tree, from: u32) -> Result<()> {
    meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    meta.flush()?;
    log::info!(
        "store upgraded in place from schema {from} to {SCHEMA_VERSION} (no record rewritten)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{SledStore, StoreOptions};
    use super::finish_interrupted_swap;
    use crate::domain::token::{PlaintextToken, TokenId};

    fn schema_1_record(id: &TokenId, created: i64, expires: i64, name: &str) -> Vec<u8> {
        let mut v = vec![1u8];
        v.extend_from_slice(&id.0);
        v.extend_from_slice(&created.to_be_bytes());
        v.extend_from_slice(&expires.to_be_bytes());
        v.extend_from_slice(name.as_bytes());
        v
    }

    /// Writes a schema-1 store the way release 1 laid it out, with raw sled calls.
    fn write_schema_1_store(dir: &std::path::Path, tokens: &[(PlaintextToken, TokenId, &str)]) {
        let db = sled::open(dir.join("db")).unwrap();
        let (records, ids, names, order, last_used, meta) = (
            db.open_tree("tokens").unwrap(),
            db.open_tree("token_ids").unwrap(),
            db.open_tree("token_names").unwrap(),
            db.open_tree("token_order").unwrap(),
            db.open_tree("last_used").unwrap(),
            db.open_tree("meta").unwrap(),
        );
        for (i, (secret, id, name)) in tokens.iter().enumerate() {
            let created = 1_700_000_000_000_000 + i as i64;
            let hash = secret.hash();
            let expires = if i == 0 { 1_900_000_000 } else { i64::MIN };
            records
                .insert(hash.as_bytes(), schema_1_record(id, created, expires, name))
                .unwrap();
            ids.insert(id.0, &hash.as_bytes()[..]).unwrap();
            names.insert(name.to_lowercase(), &id.0[..]).unwrap();
            let mut key = created.to_be_bytes().to_vec();
            key.extend_from_slice(&id.0);
            order.insert(key, &hash.as_bytes()[..]).unwrap();
        }
        last_used
            .insert(tokens[1].1 .0, &1_800_000_000i64.to_be_bytes()[..])
            .unwrap();
        meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
        meta.insert("token_count", &(tokens.len() as u64).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
        drop(db);
        // What release 1's commit_durable left beside it: the log's length at the last write.
        let len = std::fs::metadata(dir.join("db").join("db")).unwrap().len();
        std::fs::write(
            dir.join("pa-auth.state"),
            format!("{{\"generation\":0,\"dbLen\":{len}}}"),
        )
        .unwrap();
    }

    /// A store schema 2 wrote (every record in version 2) opens as schema 3 without a
    /// rewrite: its tokens are all there, with no owner or description, and can be edited.
    #[test]
    fn a_schema_2_store_is_upgraded_in_place() {
        let dir = std::env::temp_dir().join(format!("pa-auth-upgrade2-{}", TokenId::generate()));
        let serving = StoreOptions {
            index_tokens: true,
            ..StoreOptions::default()
        };
        let secret = PlaintextToken::generate();
        let id = TokenId::generate();
        {
            let store = SledStore::open(&dir, &serving).unwrap();
            let mut v2 = vec![2u8];
            v2.extend_from_slice(secret.hash().as_bytes());
            v2.extend_from_slice(&1_700_000_000_000_000i64.to_be_bytes());
            v2.extend_from_slice(&i64::MIN.to_be_bytes());
            v2.extend_from_slice(b"Legacy");
            store.records.insert(id.0, v2).unwrap();
            store.token_names.insert("legacy", &id.0[..]).unwrap();
            store
                .meta
                .insert("token_count", &1u64.to_be_bytes())
                .unwrap();
            store
                .meta
                .insert("schema_version", &2u32.to_be_bytes())
                .unwrap();
            store.commit_durable().unwrap();
        }
        let store = SledStore::open(&dir, &serving).unwrap();
        assert_eq!(
            store.meta.get("schema_version").unwrap().unwrap().as_ref(),
            super::SCHEMA_VERSION.to_be_bytes()
        );
        let record = store.token_by_id(id).unwrap().unwrap();
        assert_eq!(
            (record.name.as_str(), record.owner, record.description),
            ("Legacy", None, None)
        );
        assert_eq!(store.lookup_token(&secret.hash()).unwrap().unwrap().id, id);
        assert!(store.create_token("LEGACY", None, 1).is_err(), "name kept");
        let update = crate::store::TokenUpdate {
            owner: Some(Some("ops".into())),
            ..Default::default()
        };
        store.update_token(id, &update).unwrap().unwrap();
        drop(store);
        let store = SledStore::open(&dir, &serving).unwrap();
        let record = store.token_by_id(id).unwrap().unwrap();
        assert_eq!(record.owner.as_deref(), Some("ops"));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_schema_1_store_is_upgraded_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("pa-auth-upgrade-{}", TokenId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens: Vec<(PlaintextToken, TokenId, &str)> = ["Alpha", "beta", "gamma"]
            .iter()
            .map(|n| (PlaintextToken::generate(), TokenId::generate(), *n))
            .collect();
        write_schema_1_store(&dir, &tokens);
        let serving = StoreOptions {
            index_tokens: true,
            ..StoreOptions::default()
        };
        for _ in 0..2 {
            // The second open finds schema 2 and changes nothing.
            let store = SledStore::open(&dir, &serving).unwrap();
            assert_eq!(store.token_count().unwrap(), 3);
            for (secret, id, name) in &tokens {
                let found = store.lookup_token(&secret.hash()).unwrap().unwrap();
                assert_eq!(found.id, *id);
                assert_eq!(store.token_by_id(*id).unwrap().unwrap().name, *name);
            }
            let alpha = store.token_by_id(tokens[0].1).unwrap().unwrap();
            assert_eq!(alpha.expires_at, Some(1_900_000_000));
            assert_eq!(alpha.created_micros, 1_700_000_000_000_000);
            assert_eq!(
                store.stored_last_used(tokens[1].1).unwrap(),
                Some(1_800_000_000)
            );
            assert_eq!(
                crate::store::test_support::listed_names(&store, 10),
                ["gamma", "beta", "Alpha"]
            );
            for leftover in ["db.upgrade", "db.schema1"] {
                assert!(!dir.join(leftover).exists(), "{leftover} left behind");
            }
            let names = store.db.tree_names();
            assert!(!names.iter().any(|t| t == b"tokens" || t == b"token_order"));
            // Names stay unique ignoring case, and creation order continues after the
            // upgraded tokens.
            assert!(store.create_token("ALPHA", None, 1).is_err());
        }
        let store = SledStore::open(&dir, &serving).unwrap();
        let (_, newer) = store.create_token("delta", None, 5).unwrap();
        assert!(newer.created_micros > 1_700_000_000_000_002);
        assert_eq!(store.list_tokens(1, None).unwrap().items[0].name, "delta");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A large upgrade hands its progress (count and total) to `on_progress` every
    /// 100,000 entries: what keeps systemd's start timeout extended.
    #[test]
    fn a_large_upgrade_reports_to_the_supervisor_hook() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        static TOTAL: AtomicU64 = AtomicU64::new(0);
        static DONE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("pa-auth-upgrade-big-{}", TokenId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = (0..60_000).map(|i| format!("t{i}")).collect();
        let tokens: Vec<(PlaintextToken, TokenId, &str)> = names
            .iter()
            .map(|n| (PlaintextToken::generate(), TokenId::generate(), n.as_str()))
            .collect();
        write_schema_1_store(&dir, &tokens);
        let options = StoreOptions {
            on_progress: |p| {
                CALLS.fetch_add(1, Ordering::SeqCst);
                TOTAL.store(p.total().unwrap_or(0), Ordering::SeqCst);
                DONE.store(p.done(), Ordering::SeqCst);
                assert!(p.line().contains(" entries ("), "{}", p.line());
            },
            ..StoreOptions::default()
        };
        let store = SledStore::open(&dir, &options).unwrap();
        assert_eq!(store.token_count().unwrap(), 60_000);
        // Names and records, 60,000 each, plus last-used and meta.
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert!(TOTAL.load(Ordering::SeqCst) >= 120_000);
        assert!((100_000..110_000).contains(&DONE.load(Ordering::SeqCst)));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_interrupted_swap_is_finished_or_discarded() {
        let root = std::env::temp_dir().join(format!("pa-auth-swap-{}", TokenId::generate()));
        let db = root.join("db");
        let mark = |dir: &str, what: &str| {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("mark"), what).unwrap();
        };
        let marked = || std::fs::read_to_string(db.join("mark")).unwrap();
        // Crash between the renames: the new store becomes `db`.
        mark("db.schema1", "old");
        mark("db.upgrade", "new");
        finish_interrupted_swap(&db).unwrap();
        assert_eq!(marked(), "new");
        // Crash after the swap, before the old copy was removed.
        mark("db.schema1", "old");
        finish_interrupted_swap(&db).unwrap();
        assert_eq!(marked(), "new");
        // Crash while copying: the half-written copy goes, the store stays.
        mark("db.upgrade", "partial");
        finish_interrupted_swap(&db).unwrap();
        assert_eq!(marked(), "new");
        for leftover in ["db.upgrade", "db.schema1"] {
            assert!(!root.join(leftover).exists());
        }
        // Nothing to do: nothing touched.
        finish_interrupted_swap(&db).unwrap();
        assert_eq!(marked(), "new");
        let _ = std::fs::remove_dir_all(&root);
    }
}
