//! The in-memory index and creation order saved at a clean shutdown, so the next start reads
//! one file instead of scanning every record through sled, which was most of a large
//! store's start-up (sled's iterator re-reads each leaf through its 16 MiB page cache;
//! figures: bench/results/2026-12-02-flush-pacing.md).
//!
//! A cache, never a source of truth: every `SledStore::open` deletes the file (after reading it
//! when it serves), so a process that crashes, or an offline command that changes the store,
//! leaves none behind and the next start scans. The file is also only used when its store
//! generation and token count match the store's, and its blake3 checksum matches its
//! contents. It holds what the store holds (hashes, ids, names, times; never a secret) and
//! is written 0600 like the store.
//!
//! Layout, integers big-endian: `PAIDX2\n` ‖ generation u64 ‖ tokens u64 ‖ tokens × index
//! entry (hash 32 ‖ id 16 ‖ expires i64 ‖ name length u16 ‖ name ‖ access u8 (0 full, 1
//! read) ‖ prefix count u8 ‖ count × 18 bytes of allowed prefix), in hash order ‖ tokens ×
//! order entry (created µs i64 ‖ id 16), oldest first ‖ blake3 of all before (32).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::creation_order::{CreationOrder, OrderKey};
use super::layout::{INDEX_SNAPSHOT_FILE as FILE, NEVER, TMP_SUFFIX};
use crate::domain::restrictions::{Access, AllowedNetworks, IpPrefix, Restrictions};
use crate::domain::token::{TokenHash, TokenId};
use crate::store::error::Result;
use crate::store::index::{IndexBatch, TokenIndex};

/// `PAIDX1` (before token restrictions) is not read: a file of that format is one start-up's
/// cache, and the scan that replaces it reads the same records.
const MAGIC: &[u8] = b"PAIDX2\n";

pub(super) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes the snapshot (write, sync, rename: the file is whole or absent), streamed
/// through a small buffer. Call with no writer running (shutdown).
pub(super) fn write(
    data_dir: &Path,
    generation: u64,
    index: &TokenIndex,
    order: &CreationOrder,
) -> Result<()> {
    let tokens = index.len();
    let tmp = data_dir.join(format!("{FILE}{TMP_SUFFIX}"));
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut w = Writer {
        inner: std::io::BufWriter::with_capacity(1 << 16, file),
        sum: blake3::Hasher::new(),
        error: None,
    };
    w.put(MAGIC);
    w.put(&generation.to_be_bytes());
    w.put(&(tokens as u64).to_be_bytes());
    let mut written = 0usize;
    index.for_each(|hash, id, expires_at, name, restrictions| {
        // Names are at most 100 characters, so the length always fits.
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        w.put(hash);
        w.put(&id.0);
        w.put(&expires_at.unwrap_or(NEVER).to_be_bytes());
        w.put(&(name.len() as u16).to_be_bytes());
        w.put(name);
        // At most 100 prefixes (validated); never more than a byte counts.
        let prefixes = restrictions.networks.prefixes();
        let prefixes = &prefixes[..prefixes.len().min(usize::from(u8::MAX))];
        w.put(&[
            u8::from(restrictions.access == Access::Read),
            prefixes.len() as u8,
        ]);
        for p in prefixes {
            w.put(&p.to_bytes());
        }
        written += 1;
    });
    let mut ordered = 0usize;
    order.for_each(|(created, id)| {
        w.put(&created.to_be_bytes());
        w.put(id);
        ordered += 1;
    });
    let sum = w.sum.finalize();
    w.put(sum.as_bytes());
    if let Some(e) = w.error {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    if written != tokens || ordered != tokens {
        // Changed while saving: save nothing; the next start scans.
        let _ = std::fs::remove_file(&tmp);
        return Ok(());
    }
    let file = w.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path(data_dir))?;
    Ok(())
}

/// Writes and hashes; keeps the first error.
struct Writer<W: std::io::Write> {
    inner: std::io::BufWriter<W>,
    sum: blake3::Hasher,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> Writer<W> {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.sum.update(bytes);
            if let Err(e) = std::io::Write::write_all(&mut self.inner, bytes) {
                self.error = Some(e);
            }
        }
    }
}

/// Removes a snapshot without reading it (an offline open: it may change the store).
pub(super) fn discard(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
    let _ = std::fs::remove_file(data_dir.join(format!("{FILE}{TMP_SUFFIX}")));
}

/// Reads and removes the snapshot. `Some` only when it is whole and describes this store
/// (same generation and token count). Streamed through a small buffer, so reading it does
/// not hold a second copy of the index in memory.
pub(super) fn take(
    data_dir: &Path,
    generation: u64,
    tokens: u64,
) -> Option<(IndexBatch, Vec<OrderKey>)> {
    let file = std::fs::File::open(path(data_dir)).ok();
    discard(data_dir);
    parse(file?, generation, tokens)
}

fn parse(
    source: impl std::io::Read,
    generation: u64,
    tokens: u64,
) -> Option<(IndexBatch, Vec<OrderKey>)> {
    let mut r = Reader {
        inner: std::io::BufReader::with_capacity(1 << 16, source),
        sum: blake3::Hasher::new(),
    };
    if r.array::<7>()? != MAGIC || r.u64()? != generation || r.u64()? != tokens {
        return None;
    }
    let count = usize::try_from(tokens).ok()?;
    let room = count.min(super::token_records::MAX_PRESIZED_TOKENS);
    let mut index = IndexBatch::with_capacity(room);
    let mut order = Vec::with_capacity(room);
    let mut name = [0u8; u16::MAX as usize];
    for _ in 0..count {
        let hash = r.array::<32>()?;
        let id = r.array::<16>()?;
        let expires = r.i64()?;
        let len = usize::from(u16::from_be_bytes(r.array::<2>()?));
        let name = &mut name[..len];
        r.fill(name)?;
        let [access, count] = r.array::<2>()?;
        let access = match access {
            0 => Access::Full,
            1 => Access::Read,
            _ => return None,
        };
        let mut prefixes = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            prefixes.push(IpPrefix::from_bytes(
                &r.array::<{ IpPrefix::STORED_LEN }>()?,
            )?);
        }
        index.push(
            TokenHash(hash),
            TokenId(id),
            (expires != NEVER).then_some(expires),
            std::str::from_utf8(name).ok()?,
            &Restrictions {
                access,
                networks: AllowedNetworks::from_prefixes(prefixes),
            },
        );
    }
    for _ in 0..count {
        let created = r.i64()?;
        order.push((created, r.array::<16>()?));
    }
    let computed = r.sum.finalize();
    let mut stored = [0u8; 32];
    std::io::Read::read_exact(&mut r.inner, &mut stored).ok()?;
    let at_end = std::io::Read::read(&mut r.inner, &mut [0u8; 1]).ok()? == 0;
    (at_end && computed.as_bytes() == &stored).then_some((index, order))
}

/// Reads exactly, hashing what it reads.
struct Reader<R> {
    inner: std::io::BufReader<R>,
    sum: blake3::Hasher,
}

impl<R: std::io::Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Option<()> {
        std::io::Read::read_exact(&mut self.inner, buf).ok()?;
        self.sum.update(buf);
        Some(())
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Some(buf)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array::<8>()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array::<8>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SledStore, StoreOptions};
    use super::*;
    use crate::domain::token::PlaintextToken;

    fn serving() -> StoreOptions {
        StoreOptions {
            index_tokens: true,
            ..StoreOptions::default()
        }
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("pa-auth-snapshot-{}", TokenId::generate()))
    }

    #[test]
    fn a_clean_shutdown_snapshot_is_used_once_and_matches_a_scan() {
        let dir = temp_dir();
        let store = SledStore::open(&dir, &serving()).unwrap();
        let mut made = Vec::new();
        for i in 0..50 {
            let expires = (i % 2 == 0).then_some(2_000_000_000 + i);
            made.push(store.create_token(&format!("tok-{i}"), expires, i).unwrap());
        }
        store.delete_token(made[7].1.id).unwrap();
        store.save_index_snapshot().unwrap();
        drop(store);
        assert!(path(&dir).exists());

        let store = SledStore::open(&dir, &serving()).unwrap();
        assert!(!path(&dir).exists(), "a snapshot is read once");
        for (i, (secret, record)) in made.iter().enumerate() {
            let found = store.lookup_token(&secret.hash()).unwrap();
            if i == 7 {
                assert!(found.is_none());
                continue;
            }
            let found = found.unwrap();
            assert_eq!((found.id, found.expires_at), (record.id, record.expires_at));
            assert_eq!(&*found.name, record.name);
        }
        let listed = crate::store::test_support::listed_names(&store, 100);
        let expected: Vec<String> = (0..50)
            .rev()
            .filter(|i| *i != 7)
            .map(|i| format!("tok-{i}"))
            .collect();
        assert_eq!(listed, expected);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_or_damaged_snapshot_is_ignored_and_removed() {
        let dir = temp_dir();
        let store = SledStore::open(&dir, &serving()).unwrap();
        let (old, _) = store.create_token("old", None, 1).unwrap();
        store.save_index_snapshot().unwrap();
        let saved = std::fs::read(path(&dir)).unwrap();
        // A change after the snapshot (as if the process then crashed and a copy of the
        // old snapshot came back): the generation no longer matches.
        let (new, _) = store.create_token("new", None, 2).unwrap();
        drop(store);
        std::fs::write(path(&dir), &saved).unwrap();
        let store = SledStore::open(&dir, &serving()).unwrap();
        assert!(store.lookup_token(&new.hash()).unwrap().is_some());
        assert!(store.lookup_token(&old.hash()).unwrap().is_some());
        assert!(!path(&dir).exists());
        store.save_index_snapshot().unwrap();
        drop(store);

        // One flipped byte: the checksum refuses it, the scan serves.
        let mut damaged = std::fs::read(path(&dir)).unwrap();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 1;
        std::fs::write(path(&dir), &damaged).unwrap();
        let store = SledStore::open(&dir, &serving()).unwrap();
        assert!(store.lookup_token(&new.hash()).unwrap().is_some());
        assert_eq!(store.list_tokens(10, None).unwrap().items.len(), 2);
        store.save_index_snapshot().unwrap();
        drop(store);

        // An offline open (which may change the store) discards it unread.
        drop(SledStore::open(&dir, &StoreOptions::default()).unwrap());
        assert!(!path(&dir).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parse_refuses_truncation_and_trailing_bytes() {
        let unrelated = PlaintextToken::generate().hash();
        let index = TokenIndex::default();
        index.insert(
            unrelated,
            crate::store::IndexedToken {
                id: TokenId::generate(),
                expires_at: None,
                name: "a".into(),
                restrictions: Restrictions::default(),
            },
        );
        let order = CreationOrder::from_unsorted(vec![(5, [1; 16])]);
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, 9, &index, &order).unwrap();
        let bytes = std::fs::read(path(&dir)).unwrap();
        assert!(parse(&bytes[..], 9, 1).is_some());
        assert!(parse(&bytes[..], 8, 1).is_none());
        assert!(parse(&bytes[..], 9, 2).is_none());
        assert!(parse(&bytes[..bytes.len() - 1], 9, 1).is_none());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(parse(&trailing[..], 9, 1).is_none(), "trailing bytes");
        let mut longer = bytes[..bytes.len() - 32].to_vec();
        longer.push(0);
        let sum = blake3::hash(&longer);
        longer.extend_from_slice(sum.as_bytes());
        assert!(
            parse(&longer[..], 9, 1).is_none(),
            "an entry longer than counted"
        );
        assert!(parse(&b""[..], 9, 1).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
