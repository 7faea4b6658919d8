//! Upgrades an older store's layout in place, once, at open, before anything reads it.
//!
//! Schema 1 → 2: schema 1 kept four sled entries a token (record by hash, id → hash,
//! name → id, creation order → hash); schema 2 keeps two (record by id, with its hash, and
//! name → id), because sled's per-entry memory made the other two cost ~100 MiB at 1M
//! tokens (docs/decisions/0003-two-entries-a-token.md). Crash-safe by ordering: the new
//! tree is rebuilt from scratch, flushed, then the schema version is switched, then the
//! old trees are dropped. A crash before the switch redoes the copy at the next start; a
//! crash after it finishes the drop. Names, last-used times, admins and audit are unchanged.

use super::token_records::NEWEST_CREATED_KEY;
use super::{be_i64, Store, TokenRecord, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::tokens::{TokenHash, TokenId};

/// The schema-2 record tree: id → record.
pub(super) const RECORDS_TREE: &str = "token_records";
/// Trees only schema 1 had.
const SCHEMA_1_TREES: [&str; 3] = ["tokens", "token_ids", "token_order"];
/// Records copied per sled batch.
const COPY_BATCH: usize = 10_000;

impl Store {
    pub(super) fn upgrade_from_schema_1(&self) -> Result<()> {
        self.records.clear()?;
        let old = self.db.open_tree("tokens")?;
        let mut newest = self
            .meta
            .get(NEWEST_CREATED_KEY)?
            .and_then(|v| be_i64(&v))
            .unwrap_or(0);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in old.iter() {
            let (key, bytes) = entry?;
            let hash = TokenHash(
                key.as_ref()
                    .try_into()
                    .map_err(|_| Error::Corrupt("schema 1 token key is not 32 bytes".into()))?,
            );
            let record = decode_schema_1(&bytes).ok_or_else(|| {
                Error::Corrupt("undecodable schema 1 token record; nothing was changed".into())
            })?;
            newest = newest.max(record.created_micros);
            batch.insert(&record.id.0[..], record.encode(&hash));
            in_batch += 1;
            if in_batch == COPY_BATCH {
                self.records.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        self.records.apply_batch(batch)?;
        self.meta
            .insert(NEWEST_CREATED_KEY, &newest.to_be_bytes())?;
        self.flush()?;
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
        self.flush()?;
        self.drop_schema_1_trees()
    }

    /// Drops what schema 1 left, if anything (a no-op on every later start).
    pub(super) fn drop_schema_1_trees(&self) -> Result<()> {
        let present = self.db.tree_names();
        let mut dropped = false;
        for name in SCHEMA_1_TREES {
            if present.iter().any(|t| t == name.as_bytes()) {
                self.db.drop_tree(name)?;
                dropped = true;
            }
        }
        if dropped {
            self.flush()?;
        }
        Ok(())
    }
}

/// Schema 1 record: version 1 ‖ id(16) ‖ created µs(8) ‖ expires s(8, i64::MIN = never) ‖
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
        expires_at: (expires != i64::MIN).then_some(expires),
        name: std::str::from_utf8(&bytes[HEADER..]).ok()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreOptions};
    use crate::tokens::{PlaintextToken, TokenId};

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
    }

    #[test]
    fn a_schema_1_store_is_upgraded_in_place_and_loses_nothing() {
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
            let store = Store::open(&dir, &serving).unwrap();
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
            let listed: Vec<String> = store
                .list_tokens(10, None)
                .unwrap()
                .items
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(listed, ["gamma", "beta", "Alpha"]);
            let names = store.db.tree_names();
            assert!(!names.iter().any(|t| t == b"tokens" || t == b"token_order"));
            // Names stay unique ignoring case, and creation order continues after the
            // upgraded tokens.
            assert!(store.create_token("ALPHA", None, 1).is_err());
        }
        let store = Store::open(&dir, &serving).unwrap();
        let (_, newer) = store.create_token("delta", None, 5).unwrap();
        assert!(newer.created_micros > 1_700_000_000_000_002);
        assert_eq!(store.list_tokens(1, None).unwrap().items[0].name, "delta");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
