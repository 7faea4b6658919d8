//! Token records in sled: one record per token under its id (the compact binary record,
//! decoded without allocation), the case-insensitive name index beside it, create, edit and
//! delete as one transaction over both, newest-first pagination through the in-memory
//! creation order, and last-used persistence that can never bring a deleted token back.
//!
//! Two sled entries a token, not more: sled 0.34 keeps ~50 bytes of page-table memory per
//! entry and recovers every page at open, so each secondary tree costs memory and start-up
//! time in proportion to the tokens (figures: bench/results/2026-12-02-flush-pacing.md).
//! Lookups by secret hash and the listing order live in memory instead (`token_index`,
//! `creation_order`), filled by one scan.

use sled::transaction::{abort, ConflictableTransactionError};
use sled::Transactional;

use super::creation_order::{CreationOrder, OrderKey};
use super::layout::{NEVER, NEWEST_CREATED_KEY, TOKEN_COUNT_KEY};
use super::{be_i64, be_u64, transaction_error, SledStore};
use crate::domain::lifetime_policy::LifetimePolicy;
use crate::domain::restrictions::{Access, AllowedNetworks, IpPrefix, Restrictions};
use crate::domain::token::{PlaintextToken, TokenHash, TokenId};
use crate::domain::token_fields::fold_name;
use crate::store::error::{Error, Result};
use crate::store::index::IndexBatch;
use crate::store::records::{
    fold_owner, order_key, IndexedToken, LastUsedWrite, TokenPage, TokenRecord, TokenStats,
    TokenUpdate, UpdatedToken, ORDER_KEY_LEN,
};

/// Version byte of a record without owner or description, as schema 2 wrote every record:
/// version(1) ‖ blake3(secret)(32) ‖ created µs(8) ‖ expires s(8, `NEVER` = never) ‖ name
/// (UTF-8), stored under the 16-byte id. Still read: a schema 2 store is upgraded in place
/// without rewriting a record.
const RECORD_VERSION_2: u8 = 2;
/// Version byte of a record written since schema 3: the version 2 header, then name, owner
/// and description lengths (u16 each; 0 = none: a validated owner or description is never
/// empty), then the three texts.
const RECORD_VERSION_3: u8 = 3;
/// Version byte of a record of a token with restrictions (issue 19, written since schema 5):
/// version 3's header and three lengths, then access (1 byte: 0 full, 1 read) and the
/// number of allowed prefixes (1 byte, ≤ 100), the three texts, then the prefixes (18 bytes
/// each, [`IpPrefix::to_bytes`]). A token without restrictions is still written in version 3,
/// so a store only holds version 4 records once a token was restricted.
const RECORD_VERSION_4: u8 = 4;
/// The fixed part every version starts with.
const RECORD_HEADER: usize = 1 + 32 + 8 + 8;
/// Version 3's three lengths after the header.
const TEXT_LENGTHS: usize = 3 * 2;
/// Start-up vectors are sized from the stored token count up to this many tokens.
pub(super) const MAX_PRESIZED_TOKENS: usize = 16 << 20;

/// A record borrowed from stored bytes, with the hash it is looked up by.
#[derive(Debug, Clone, Copy)]
pub struct TokenRecordRef<'a> {
    pub id: TokenId,
    pub hash: TokenHash,
    pub name: &'a str,
    pub created_micros: i64,
    pub expires_at: Option<i64>,
    pub owner: Option<&'a str>,
    pub description: Option<&'a str>,
    pub access: Access,
    /// The allowed prefixes as stored (18 bytes each; decoded by [`Self::networks`]).
    pub prefixes: &'a [u8],
}

impl TokenRecord {
    pub(super) fn indexed(&self) -> IndexedToken {
        IndexedToken {
            id: self.id,
            expires_at: self.expires_at,
            name: self.name.as_str().into(),
            restrictions: self.restrictions.clone(),
        }
    }

    /// The version 3 record (version 4 with restrictions). Texts are validated (≤ 500 characters, so ≤ 2 000 bytes);
    /// one longer than a u16 length can say is cut at a character boundary rather than
    /// written with a wrong length.
    pub(super) fn encode(&self, hash: &TokenHash) -> Vec<u8> {
        let owner = bounded(self.owner.as_deref().unwrap_or(""));
        let description = bounded(self.description.as_deref().unwrap_or(""));
        let name = bounded(&self.name);
        // Validated to at most 100; never more than a byte can count.
        let prefixes = &self.restrictions.networks.prefixes()[..self
            .restrictions
            .networks
            .prefixes()
            .len()
            .min(usize::from(u8::MAX))];
        let restricted = !self.restrictions.is_unrestricted();
        let mut v = Vec::with_capacity(
            RECORD_HEADER
                + TEXT_LENGTHS
                + 2
                + name.len()
                + owner.len()
                + description.len()
                + prefixes.len() * IpPrefix::STORED_LEN,
        );
        v.push(if restricted {
            RECORD_VERSION_4
        } else {
            RECORD_VERSION_3
        });
        v.extend_from_slice(hash.as_bytes());
        v.extend_from_slice(&self.created_micros.to_be_bytes());
        v.extend_from_slice(&self.expires_at.unwrap_or(NEVER).to_be_bytes());
        for text in [name, owner, description] {
            v.extend_from_slice(&(text.len() as u16).to_be_bytes());
        }
        if restricted {
            v.push(u8::from(self.restrictions.access == Access::Read));
            v.push(prefixes.len() as u8);
        }
        for text in [name, owner, description] {
            v.extend_from_slice(text.as_bytes());
        }
        for p in prefixes {
            v.extend_from_slice(&p.to_bytes());
        }
        v
    }
}

/// `text`, cut at a character boundary to at most `u16::MAX` bytes.
fn bounded(text: &str) -> &str {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A cursor's bytes as a position in the creation order.
fn cursor_position(cursor: &[u8; ORDER_KEY_LEN]) -> Option<OrderKey> {
    Some((be_i64(&cursor[..8])?, cursor[8..].try_into().ok()?))
}

impl<'a> TokenRecordRef<'a> {
    /// Decodes a stored entry (id key, record value); `None` if it is not a record of this
    /// version.
    pub fn decode(key: &[u8], bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < RECORD_HEADER {
            return None;
        }
        let id = TokenId(key.try_into().ok()?);
        let hash = TokenHash(bytes[1..33].try_into().ok()?);
        let created_micros = be_i64(&bytes[33..41])?;
        let expires = be_i64(&bytes[41..49])?;
        let rest = &bytes[RECORD_HEADER..];
        let mut access = Access::Full;
        let mut prefixes: &[u8] = &[];
        let (name, owner, description) = match bytes[0] {
            RECORD_VERSION_2 => (std::str::from_utf8(rest).ok()?, "", ""),
            version @ (RECORD_VERSION_3 | RECORD_VERSION_4) => {
                let len = |at: usize| -> Option<usize> {
                    Some(usize::from(u16::from_be_bytes(
                        rest.get(at..at + 2)?.try_into().ok()?,
                    )))
                };
                let (n, o, d) = (len(0)?, len(2)?, len(4)?);
                let mut texts = rest.get(TEXT_LENGTHS..)?;
                let mut stored_prefixes = 0;
                if version == RECORD_VERSION_4 {
                    access = match texts.first()? {
                        0 => Access::Full,
                        1 => Access::Read,
                        _ => return None,
                    };
                    stored_prefixes = usize::from(*texts.get(1)?) * IpPrefix::STORED_LEN;
                    texts = &texts[2..];
                }
                if texts.len() != n + o + d + stored_prefixes {
                    return None;
                }
                let (name, texts) = texts.split_at(n);
                let (owner, texts) = texts.split_at(o);
                let (description, stored) = texts.split_at(d);
                prefixes = stored;
                (
                    std::str::from_utf8(name).ok()?,
                    std::str::from_utf8(owner).ok()?,
                    std::str::from_utf8(description).ok()?,
                )
            }
            _ => return None,
        };
        Some(TokenRecordRef {
            id,
            hash,
            name,
            created_micros,
            expires_at: (expires != NEVER).then_some(expires),
            owner: (!owner.is_empty()).then_some(owner),
            description: (!description.is_empty()).then_some(description),
            access,
            prefixes,
        })
    }

    /// The access and allowed networks. A prefix that does not decode (a damaged byte: the
    /// record's lengths already matched) makes the list admit no address rather than
    /// every one: fail closed.
    pub fn restrictions(&self) -> Restrictions {
        let networks: Option<Vec<IpPrefix>> = self
            .prefixes
            .chunks_exact(IpPrefix::STORED_LEN)
            .map(IpPrefix::from_bytes)
            .collect();
        Restrictions {
            access: self.access,
            networks: networks
                .map_or_else(AllowedNetworks::nowhere, AllowedNetworks::from_prefixes),
        }
    }

    pub fn to_owned_record(&self) -> TokenRecord {
        TokenRecord {
            id: self.id,
            name: self.name.to_owned(),
            created_micros: self.created_micros,
            expires_at: self.expires_at,
            owner: self.owner.map(str::to_owned),
            description: self.description.map(str::to_owned),
            restrictions: self.restrictions(),
        }
    }

    fn indexed(&self) -> IndexedToken {
        IndexedToken {
            id: self.id,
            expires_at: self.expires_at,
            name: self.name.into(),
            restrictions: self.restrictions(),
        }
    }
}

fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<(TokenHash, TokenRecord)> {
    TokenRecordRef::decode(key, bytes)
        .map(|r| (r.hash, r.to_owned_record()))
        .ok_or_else(|| Error::Corrupt("undecodable token record".into()))
}

impl SledStore {
    /// A token without owner or description ([`Self::create_token_with`]).
    pub fn create_token(
        &self,
        name: &str,
        expires_at: Option<i64>,
        now_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        self.create_token_with(
            name,
            expires_at,
            None,
            None,
            &Restrictions::default(),
            now_micros,
        )
    }

    /// Creates a token: one transaction over the record, its name and the counters, then a
    /// flush, so a returned token survives `kill -9`. Name, owner and description must
    /// already be validated.
    pub fn create_token_with(
        &self,
        name: &str,
        expires_at: Option<i64>,
        owner: Option<&str>,
        description: Option<&str>,
        restrictions: &Restrictions,
        now_micros: i64,
    ) -> Result<(PlaintextToken, TokenRecord)> {
        let secret = PlaintextToken::generate();
        let hash = secret.hash();
        if self.index().is_some_and(|i| i.id_of(&hash).is_some()) {
            // 2^-256 odds; refuse rather than shadow another token.
            return Err(Error::CreationFailed("secret collision".into()));
        }
        // Strictly increasing, so "newest first" is the order of creation even within a
        // microsecond or across a clock step back.
        let created_micros = self
            .last_created_micros
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |last| Some(now_micros.max(last.saturating_add(1))),
            )
            .map_or(now_micros, |last| now_micros.max(last.saturating_add(1)));
        let record = TokenRecord {
            id: TokenId::generate(),
            name: name.to_owned(),
            created_micros,
            expires_at,
            owner: owner.map(str::to_owned),
            description: description.map(str::to_owned),
            restrictions: restrictions.clone(),
        };
        let folded = fold_name(name);
        let encoded = record.encode(&hash);
        (&self.records, &self.token_names, &self.meta)
            .transaction(|(records, names, meta)| {
                if names.get(folded.as_bytes())?.is_some() {
                    return abort(Error::NameTaken(format!(
                        "A token named \"{name}\" already exists"
                    )));
                }
                if records.get(record.id.0)?.is_some() {
                    // 2^-122 odds; refuse rather than overwrite.
                    return abort(Error::CreationFailed("id collision".into()));
                }
                records.insert(&record.id.0[..], encoded.as_slice())?;
                names.insert(folded.as_bytes(), &record.id.0[..])?;
                bump_count(meta, 1)?;
                let newest = meta.get(NEWEST_CREATED_KEY)?.and_then(|v| be_i64(&v));
                if newest.is_none_or(|n| n < created_micros) {
                    meta.insert(NEWEST_CREATED_KEY, &created_micros.to_be_bytes()[..])?;
                }
                Ok(())
            })
            .map_err(|e| match transaction_error(e) {
                e @ (Error::NameTaken(_) | Error::CreationFailed(_)) => e,
                other => Error::CreationFailed(other.to_string()),
            })?;
        if let Err(e) = self.commit_durable() {
            // Not durable: take it back (best effort) so no caller-less token lingers.
            let _ = self.delete_token(record.id);
            return Err(Error::CreationFailed(e.to_string()));
        }
        self.remember(&hash, &record);
        Ok((secret, record))
    }

    /// Adds a durable new token to what is kept in memory: the authentication index (when
    /// serving) and the creation order (once loaded).
    fn remember(&self, hash: &TokenHash, record: &TokenRecord) {
        if let Some(index) = self.index() {
            index.insert(*hash, record.indexed());
        }
        if let Some(order) = self.order.get() {
            order.insert(record.created_micros, record.id);
        }
    }

    /// Edits a token's name, owner or description: one transaction over the record and the
    /// name index (a rename to a name another token has, ignoring case, is `NameTaken`),
    /// then a flush; then the authentication index's copy of the name, only if the token is
    /// still there (a delete racing the edit wins). An edit that changes nothing writes
    /// nothing. `Ok(None)` if there is no such token.
    pub fn update_token(&self, id: TokenId, update: &TokenUpdate) -> Result<Option<UpdatedToken>> {
        let done = (&self.records, &self.token_names)
            .transaction(|(records, names)| {
                let Some(bytes) = records.get(id.0)? else {
                    return Ok(None);
                };
                let Some((hash, before)) =
                    TokenRecordRef::decode(&id.0, &bytes).map(|r| (r.hash, r.to_owned_record()))
                else {
                    return abort(Error::Corrupt("undecodable token record".into()));
                };
                let after = before.updated(update);
                if after == before {
                    return Ok(Some((hash, before, after)));
                }
                let (old, new) = (fold_name(&before.name), fold_name(&after.name));
                if old != new {
                    if names.get(new.as_bytes())?.is_some() {
                        return abort(Error::NameTaken(format!(
                            "A token named \"{}\" already exists",
                            after.name
                        )));
                    }
                    names.remove(old.as_bytes())?;
                    names.insert(new.as_bytes(), &id.0[..])?;
                }
                records.insert(&id.0[..], after.encode(&hash))?;
                Ok(Some((hash, before, after)))
            })
            .map_err(transaction_error)?;
        let Some((hash, before, after)) = done else {
            return Ok(None);
        };
        if after != before {
            self.commit_durable()?;
            if let Some(index) = self.index() {
                index.update_existing(hash, after.indexed());
            }
        }
        Ok(Some(UpdatedToken { before, after }))
    }

    /// Deletes a token and everything that refers to it in one transaction, then flushes.
    /// `Ok(None)` if there is no such token.
    pub fn delete_token(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        let gate = crate::sync::lock(&self.last_used_gate);
        let deleted = (
            &self.records,
            &self.token_names,
            &self.last_used,
            &self.meta,
            &self.previous_secrets,
        )
            .transaction(|(records, names, last_used, meta, previous)| {
                let Some(bytes) = records.remove(&id.0[..])? else {
                    return Ok(None);
                };
                let Some((hash, record)) =
                    TokenRecordRef::decode(&id.0, &bytes).map(|r| (r.hash, r.to_owned_record()))
                else {
                    return abort(Error::Corrupt("undecodable token record".into()));
                };
                names.remove(fold_name(&record.name).as_bytes())?;
                last_used.remove(&id.0[..])?;
                bump_count(meta, -1)?;
                let previous = SledStore::take_previous_in(previous, &id)?;
                Ok(Some((record, hash, previous)))
            })
            .map_err(transaction_error)?;
        let Some((record, hash, previous)) = deleted else {
            return Ok(None);
        };
        // Under the gate, so no flush writes it back; made durable with the delete below.
        self.remove_usage(id)?;
        // Gone from the authentication index before the caller can answer 204, and before
        // the gate opens (the last-used writer checks existence in the index under it);
        // its previous secret too (without its current entry it already finds nothing).
        if let Some(index) = self.index() {
            index.remove(&hash);
            if let Some(p) = previous {
                index.remove_previous(&p);
            }
        }
        drop(gate);
        if let Some(order) = self.order.get() {
            order.remove(record.created_micros, record.id);
        }
        self.commit_durable()?;
        Ok(Some(record))
    }

    /// The token a secret's hash belongs to: the authentication lookup. From the in-memory
    /// index when serving; offline (no index) a scan of the records.
    pub fn lookup_token(&self, hash: &TokenHash) -> Result<Option<IndexedToken>> {
        if let Some(index) = self.index() {
            return Ok(index.get(hash));
        }
        for entry in self.records.iter() {
            let (key, bytes) = entry?;
            if let Some(r) = TokenRecordRef::decode(&key, &bytes) {
                if r.hash == *hash {
                    return Ok(Some(r.indexed()));
                }
            }
        }
        Ok(None)
    }

    /// Fills the authentication index (when this store keeps one) and the creation order:
    /// from `saved` (the snapshot a clean shutdown left, see `index_snapshot`) when given,
    /// else with one scan of the records (start-up, or an offline listing).
    pub(super) fn load_in_memory(&self, saved: Option<(IndexBatch, Vec<OrderKey>)>) -> Result<()> {
        if self.order.get().is_some() {
            return Ok(());
        }
        let (tokens, order) = match saved {
            Some(saved) => saved,
            None => self.scan_records()?,
        };
        if let Some(index) = self.index() {
            index.load(vec![tokens]);
        }
        let _ = self.order.set(CreationOrder::from_unsorted(order));
        Ok(())
    }

    /// One scan of the records: the index entries (only when this store keeps an index)
    /// and the creation order.
    ///
    /// On one thread: two threads reading the two halves of the id space were barely faster
    /// (sled's page cache is the bottleneck) and left each thread's freed page-ins in its
    /// own malloc arena, costing RSS (figures: bench/results/2026-12-02-flush-pacing.md).
    /// The vectors are sized from the stored count up front, so nothing is reallocated
    /// during the scan.
    fn scan_records(&self) -> Result<(IndexBatch, Vec<OrderKey>)> {
        let indexing = self.index().is_some();
        // Bounded: a damaged count must not become a huge allocation (past it, vectors grow).
        let expected = usize::try_from(self.token_count()?)
            .unwrap_or(0)
            .min(MAX_PRESIZED_TOKENS);
        let room = expected + expected / 16 + 64;
        let mut order = Vec::with_capacity(room);
        let mut tokens = if indexing {
            IndexBatch::with_capacity(expected)
        } else {
            IndexBatch::default()
        };
        for entry in self.records.iter() {
            let (key, bytes) = entry?;
            let record = TokenRecordRef::decode(&key, &bytes)
                .ok_or_else(|| Error::Corrupt("undecodable token record".into()))?;
            if indexing {
                tokens.push(
                    record.hash,
                    record.id,
                    record.expires_at,
                    record.name,
                    &record.restrictions(),
                );
            }
            order.push((record.created_micros.max(0), record.id.0));
        }
        Ok((tokens, order))
    }

    /// The listing order, scanned on first use by an offline command.
    fn creation_order(&self) -> Result<&CreationOrder> {
        self.load_in_memory(None)?;
        self.order
            .get()
            .ok_or_else(|| Error::Internal("creation order not loaded".into()))
    }

    pub fn token_by_id(&self, id: TokenId) -> Result<Option<TokenRecord>> {
        match self.records.get(id.0)? {
            Some(bytes) => decode_entry(&id.0, &bytes).map(|(_, r)| Some(r)),
            None => Ok(None),
        }
    }

    /// Newest first, `limit` items after `cursor` (exclusive).
    pub fn list_tokens(
        &self,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
    ) -> Result<TokenPage> {
        let position = match cursor {
            Some(c) => Some(cursor_position(c).ok_or_else(|| Error::InvalidCursor)?),
            None => None,
        };
        let (positions, more) = self.creation_order()?.newest_before(position, limit);
        let mut items = Vec::with_capacity(positions.len());
        for (_, id) in &positions {
            // A token deleted since the order was read is simply not listed.
            if let Some(record) = self.token_by_id(TokenId(*id))? {
                items.push(record);
            }
        }
        // From the order itself, so a page whose tokens were all deleted meanwhile still
        // leads on to the next one.
        let next_cursor = match (more, positions.last()) {
            (true, Some((created, id))) => Some(order_key(*created, &TokenId(*id))),
            _ => None,
        };
        Ok(TokenPage { items, next_cursor })
    }

    /// [`Self::list_tokens`], only the tokens whose folded owner is `owner_folded`. Walks the
    /// creation order from the cursor until a page is full: a rare owner costs a scan of
    /// the records (an admin's query, not a hot path).
    pub fn list_tokens_of_owner(
        &self,
        owner_folded: &str,
        limit: usize,
        cursor: Option<&[u8; ORDER_KEY_LEN]>,
    ) -> Result<TokenPage> {
        const STEP: usize = 256;
        let mut position = match cursor {
            Some(c) => Some(cursor_position(c).ok_or_else(|| Error::InvalidCursor)?),
            None => None,
        };
        let order = self.creation_order()?;
        let mut items: Vec<TokenRecord> = Vec::new();
        loop {
            let (positions, more) = order.newest_before(position, STEP);
            for (_, id) in &positions {
                let Some(record) = self.token_by_id(TokenId(*id))? else {
                    continue;
                };
                if record.owner.as_deref().map(fold_owner).as_deref() != Some(owner_folded) {
                    continue;
                }
                if items.len() == limit {
                    // One more match follows: the page ends at the last item kept.
                    let next_cursor = items.last().map(|r| order_key(r.created_micros, &r.id));
                    return Ok(TokenPage { items, next_cursor });
                }
                items.push(record);
            }
            match (more, positions.last()) {
                (true, Some(last)) => position = Some(*last),
                _ => break,
            }
        }
        Ok(TokenPage {
            items,
            next_cursor: None,
        })
    }

    /// Bulk import for restore and load generation: writes records with sled batches (one per
    /// tree, not one transaction per token) and flushes once. Offline use only: the caller
    /// guarantees unique names, ids and hashes (a backup's contents, or generated ones).
    pub fn import_tokens(&self, records: &[(TokenHash, TokenRecord)]) -> Result<()> {
        let (mut record_batch, mut names) = (sled::Batch::default(), sled::Batch::default());
        let mut newest = self
            .last_created_micros
            .load(std::sync::atomic::Ordering::SeqCst);
        for (hash, record) in records {
            record_batch.insert(&record.id.0[..], record.encode(hash));
            names.insert(fold_name(&record.name).as_bytes(), &record.id.0[..]);
            newest = newest.max(record.created_micros);
        }
        self.records.apply_batch(record_batch)?;
        self.token_names.apply_batch(names)?;
        let count = self.token_count()? + records.len() as u64;
        self.meta.insert(TOKEN_COUNT_KEY, &count.to_be_bytes())?;
        self.meta
            .insert(NEWEST_CREATED_KEY, &newest.to_be_bytes())?;
        self.last_created_micros
            .fetch_max(newest, std::sync::atomic::Ordering::SeqCst);
        self.commit_durable()?;
        for (hash, record) in records {
            self.remember(hash, record);
        }
        Ok(())
    }

    /// Counts tokens by status at `now`, by expiry and idleness windows, and those outside
    /// `policy` (a full scan: callers cache it). Idleness reads the stored (flushed)
    /// last-used times.
    pub fn token_stats(&self, now: i64, policy: &LifetimePolicy) -> Result<TokenStats> {
        let mut stats = TokenStats::default();
        for entry in self.records.iter() {
            let (key, bytes) = entry?;
            let Some(r) = TokenRecordRef::decode(&key, &bytes) else {
                continue;
            };
            let created_at = r.created_micros.div_euclid(1_000_000);
            let violates = policy.violation(created_at, r.expires_at, now).is_some();
            // The last-used lookup only where it can matter: an active token made at least
            // 30 days ago (a younger one cannot have been unused that long).
            let active = r.expires_at.is_none_or(|e| now < e);
            let last_activity = if active && now - created_at >= 30 * 86_400 {
                self.stored_last_used(r.id)?.unwrap_or(created_at)
            } else {
                created_at
            };
            stats.add(now, r.expires_at, last_activity, violates);
        }
        Ok(stats)
    }

    /// Number of stored tokens (kept in the meta tree by create/delete; O(1)).
    pub fn token_count(&self) -> Result<u64> {
        Ok(self
            .meta
            .get(TOKEN_COUNT_KEY)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// Persisted last-used time of a token.
    pub fn stored_last_used(&self, id: TokenId) -> Result<Option<i64>> {
        Ok(self.last_used.get(id.0)?.and_then(|v| be_i64(&v)))
    }

    /// Writes last-used times, skipping tokens deleted meanwhile (checked in sled) and never
    /// moving a stored time backwards. Returns how many were written. Does not flush
    /// (offline: restore). Written in bounded chunks, so a large restore neither builds one
    /// huge sled batch nor holds `last_used_gate` for long.
    pub fn write_last_used(&self, batch: &[(TokenId, i64)]) -> Result<usize> {
        const CHUNK: usize = 50;
        let mut written = 0;
        let mut writes = Vec::with_capacity(CHUNK);
        for chunk in batch.chunks(CHUNK) {
            writes.clear();
            writes.extend(chunk.iter().map(|&(id, seen)| LastUsedWrite {
                id,
                hash: None,
                seen,
                flushed: None,
            }));
            written += self.write_last_used_chunk(&writes)?;
        }
        Ok(written)
    }

    /// The one last-used writer: writes `chunk` as one sled batch, unpaced (the caller
    /// chooses chunk sizes and any pauses between them). Skips tokens deleted meanwhile and
    /// never moves a stored time backwards. Returns how many were written. Does not flush.
    ///
    /// Existence is checked in the in-memory index by hash when this store keeps one and
    /// the write carries the hash; otherwise in sled. The stored time is read only when the
    /// write does not say what it is (`flushed: None`). The whole chunk holds
    /// `last_used_gate`, which a delete also holds until the hash has left the index, so
    /// "the token still exists" cannot change between the check and the write. Plain
    /// batches rather than transactions.
    pub fn write_last_used_chunk(&self, chunk: &[LastUsedWrite]) -> Result<usize> {
        let _gate = crate::sync::lock(&self.last_used_gate);
        let mut writes = sled::Batch::default();
        let mut written = 0;
        for w in chunk {
            let exists = match (self.index(), &w.hash) {
                (Some(index), Some(hash)) => index.id_of(hash) == Some(w.id),
                _ => self.records.contains_key(w.id.0)?,
            };
            if !exists {
                continue;
            }
            let stored = match w.flushed {
                Some(stored) => Some(stored),
                None => self.last_used.get(w.id.0)?.and_then(|v| be_i64(&v)),
            };
            if stored.is_none_or(|s| s < w.seen) {
                writes.insert(&w.id.0[..], &w.seen.to_be_bytes()[..]);
                written += 1;
            }
        }
        self.last_used.apply_batch(writes)?;
        Ok(written)
    }
}

fn bump_count(
    meta: &sled::transaction::TransactionalTree,
    delta: i64,
) -> std::result::Result<(), ConflictableTransactionError<Error>> {
    let current = meta
        .get(TOKEN_COUNT_KEY)?
        .and_then(|v| be_u64(&v))
        .unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    meta.insert(TOKEN_COUNT_KEY, &next.to_be_bytes()[..])?;
    Ok(())
}

impl From<Error> for ConflictableTransactionError<Error> {
    fn from(e: Error) -> Self {
        ConflictableTransactionError::Abort(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::parse_cursor;
    use crate::store::test_support::TempStore;

    #[test]
    fn restricted_records_are_version_4_and_others_stay_version_3() {
        use crate::domain::restrictions::validate_allowed_cidrs;
        let hash = PlaintextToken::generate().hash();
        let mut r = TokenRecord {
            id: TokenId::generate(),
            name: "ro".into(),
            created_micros: 1,
            expires_at: None,
            owner: Some("o".into()),
            description: None,
            restrictions: Restrictions::default(),
        };
        assert_eq!(r.encode(&hash)[0], RECORD_VERSION_3);
        r.restrictions = Restrictions {
            access: Access::Read,
            networks: validate_allowed_cidrs(&["10.0.0.0/8", "2001:db8::/32", "::ffff:1.2.3.4"])
                .unwrap(),
        };
        let bytes = r.encode(&hash);
        assert_eq!(bytes[0], RECORD_VERSION_4);
        let decoded = TokenRecordRef::decode(&r.id.0, &bytes).unwrap();
        assert_eq!(decoded.to_owned_record(), r);
        assert_eq!(decoded.indexed().restrictions, r.restrictions);
        // Read-only alone is a version 4 record too.
        r.restrictions.networks = AllowedNetworks::anywhere();
        let bytes = r.encode(&hash);
        assert_eq!(bytes[0], RECORD_VERSION_4);
        assert_eq!(
            TokenRecordRef::decode(&r.id.0, &bytes)
                .unwrap()
                .to_owned_record(),
            r
        );
        // A damaged prefix admits nobody (fail closed); a wrong length is no record.
        r.restrictions.networks = validate_allowed_cidrs(&["10.0.0.0/8"]).unwrap();
        let mut bytes = r.encode(&hash);
        let last = bytes.len() - 1;
        bytes[last] = 9;
        let damaged = TokenRecordRef::decode(&r.id.0, &bytes)
            .unwrap()
            .restrictions();
        assert!(!damaged.networks.permits(Some("10.0.0.1".parse().unwrap())));
        bytes.push(0);
        assert!(TokenRecordRef::decode(&r.id.0, &bytes).is_none());
    }

    #[test]
    fn record_round_trips() {
        let r = TokenRecord {
            id: TokenId::generate(),
            name: "ci — déploiement".into(),
            created_micros: 1_796_000_000_123_456,
            expires_at: Some(1_796_086_400),
            owner: Some("équipe paiements".into()),
            description: Some("nightly deploys\nfrom CI".into()),
            restrictions: Restrictions::default(),
        };
        let hash = PlaintextToken::generate().hash();
        let bytes = r.encode(&hash);
        let decoded = TokenRecordRef::decode(&r.id.0, &bytes).unwrap();
        assert_eq!(decoded.hash, hash);
        assert_eq!(decoded.to_owned_record(), r);
        let never = TokenRecord {
            expires_at: None,
            ..r
        };
        assert_eq!(
            TokenRecordRef::decode(&never.id.0, &never.encode(&hash))
                .unwrap()
                .expires_at,
            None
        );
        let bare = TokenRecord {
            owner: None,
            description: None,
            ..never.clone()
        };
        assert_eq!(
            TokenRecordRef::decode(&bare.id.0, &bare.encode(&hash))
                .unwrap()
                .to_owned_record(),
            bare
        );
        assert!(TokenRecordRef::decode(&never.id.0, b"\x02garbage").is_none());
        // Version 3 with lengths that do not add up, or cut short, is not a record.
        let mut bad = never.encode(&hash);
        bad.pop();
        assert!(TokenRecordRef::decode(&never.id.0, &bad).is_none());
        assert!(TokenRecordRef::decode(&never.id.0, &bad[..RECORD_HEADER + 3]).is_none());
        assert!(TokenRecordRef::decode(
            &never.id.0,
            b"\x04garbagegarbagegarbagegarbagegarbagegarbagegarbage"
        )
        .is_none());
        assert!(TokenRecordRef::decode(&never.id.0, b"").is_none());
        // A key that is not an id is not a record.
        assert!(TokenRecordRef::decode(b"short", &never.encode(&hash)).is_none());
    }

    /// Every record schema 2 wrote (version 2: the name is the rest of the value) is still
    /// read, as a token without owner or description.
    #[test]
    fn schema_2_records_are_read_as_they_are() {
        let id = TokenId::generate();
        let hash = PlaintextToken::generate().hash();
        let mut v2 = vec![2u8];
        v2.extend_from_slice(hash.as_bytes());
        v2.extend_from_slice(&1_796_000_000_123_456i64.to_be_bytes());
        v2.extend_from_slice(&NEVER.to_be_bytes());
        v2.extend_from_slice("ci — déploiement".as_bytes());
        let r = TokenRecordRef::decode(&id.0, &v2).unwrap();
        assert_eq!(r.hash, hash);
        assert_eq!(
            r.to_owned_record(),
            TokenRecord {
                id,
                name: "ci — déploiement".into(),
                created_micros: 1_796_000_000_123_456,
                expires_at: None,
                owner: None,
                description: None,
                restrictions: Restrictions::default(),
            }
        );
    }

    #[test]
    fn updates_rename_within_the_case_insensitive_rule() {
        let s = TempStore::new();
        let (secret, a) = s
            .create_token_with(
                "alpha",
                None,
                Some("Team-A"),
                None,
                &Restrictions::default(),
                1,
            )
            .unwrap();
        let (_, b) = s.create_token("beta", None, 2).unwrap();
        let rename = |name: &str| TokenUpdate {
            name: Some(name.into()),
            ..TokenUpdate::default()
        };
        let err = s.update_token(a.id, &rename("BETA")).unwrap_err();
        assert!(matches!(err, Error::NameTaken(_)), "{err}");
        assert_eq!(s.token_by_id(a.id).unwrap().unwrap(), a, "nothing changed");
        // A change of case only is this token's own name.
        let done = s.update_token(a.id, &rename("Alpha")).unwrap().unwrap();
        assert_eq!(done.after.name, "Alpha");
        let done = s
            .update_token(
                a.id,
                &TokenUpdate {
                    name: Some("gamma".into()),
                    owner: Some(None),
                    description: Some(Some("why".into())),
                    ..TokenUpdate::default()
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            done.before.changed_by(&TokenUpdate {
                name: Some("gamma".into()),
                owner: Some(None),
                description: Some(Some("why".into())),
                ..TokenUpdate::default()
            }),
            ["name", "owner", "description"]
        );
        let stored = s.token_by_id(a.id).unwrap().unwrap();
        assert_eq!(
            (
                stored.name.as_str(),
                stored.owner,
                stored.description.as_deref()
            ),
            ("gamma", None, Some("why"))
        );
        // The old names are free, the new one is taken, the index has the new name.
        assert!(s.create_token("ALPHA", None, 3).is_ok());
        assert!(matches!(
            s.create_token("Gamma", None, 4).unwrap_err(),
            Error::NameTaken(_)
        ));
        assert_eq!(
            &*s.lookup_token(&secret.hash()).unwrap().unwrap().name,
            "gamma"
        );
        assert!(s
            .update_token(TokenId::generate(), &rename("x"))
            .unwrap()
            .is_none());
        s.delete_token(b.id).unwrap();
        assert!(s.update_token(b.id, &rename("beta2")).unwrap().is_none());
    }

    #[test]
    fn racing_renames_to_one_name_leave_exactly_one_holder() {
        let s = TempStore::new();
        let ids: Vec<TokenId> = (0..8)
            .map(|i| s.create_token(&format!("t{i}"), None, i).unwrap().1.id)
            .collect();
        for round in 0..10 {
            let target = format!("Contested-{round}");
            let won = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for (i, id) in ids.iter().enumerate() {
                    let (s, won, target) = (&s, &won, &target);
                    scope.spawn(move || {
                        let name = if i % 2 == 0 {
                            target.to_uppercase()
                        } else {
                            target.clone()
                        };
                        let update = TokenUpdate {
                            name: Some(name),
                            ..TokenUpdate::default()
                        };
                        match s.update_token(*id, &update) {
                            Ok(Some(_)) => {
                                won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(Error::NameTaken(_)) => {}
                            other => panic!("{other:?}"),
                        }
                    });
                }
            });
            assert_eq!(won.into_inner(), 1, "round {round}");
            let holders = ids
                .iter()
                .filter(|id| {
                    fold_name(&s.token_by_id(**id).unwrap().unwrap().name) == fold_name(&target)
                })
                .count();
            assert_eq!(holders, 1, "round {round}");
            // Every name in the name tree points at a token that has it.
            assert_eq!(s.token_names.len(), ids.len());
            for entry in s.token_names.iter() {
                let (folded, id) = entry.unwrap();
                let record = s
                    .token_by_id(TokenId(id.as_ref().try_into().unwrap()))
                    .unwrap()
                    .unwrap();
                assert_eq!(fold_name(&record.name).as_bytes(), folded.as_ref());
            }
        }
    }

    #[test]
    fn listing_by_owner_is_exact_ignoring_case_and_pages() {
        let s = TempStore::new();
        for i in 0..600 {
            let owner = match i % 3 {
                0 => Some("Team-A"),
                1 => Some("team-a-ops"),
                _ => None,
            };
            s.create_token_with(
                &format!("t{i:03}"),
                None,
                owner,
                None,
                &Restrictions::default(),
                1_000_000 + i,
            )
            .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .list_tokens_of_owner("team-a", 70, cursor.as_ref())
                .unwrap();
            assert!(page.items.len() <= 70);
            seen.extend(page.items.iter().map(|r| r.name.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<String> = (0..600)
            .rev()
            .filter(|i| i % 3 == 0)
            .map(|i| format!("t{i:03}"))
            .collect();
        assert_eq!(seen, expected);
        assert!(s
            .list_tokens_of_owner("nobody", 10, None)
            .unwrap()
            .items
            .is_empty());
        let exact = s.list_tokens_of_owner("team-a", 200, None).unwrap();
        assert_eq!(exact.items.len(), 200);
        assert!(
            exact.next_cursor.is_none(),
            "no cursor when nothing follows"
        );
    }

    #[test]
    fn stats_count_tokens_outside_the_policy() {
        let s = TempStore::new();
        let now = 1_796_000_000;
        let created = now * 1_000_000;
        s.create_token("forever", None, created).unwrap();
        s.create_token("year", Some(now + 365 * 86_400), created + 1)
            .unwrap();
        s.create_token("week", Some(now + 7 * 86_400), created + 2)
            .unwrap();
        s.create_token("gone", Some(now - 1), created + 3).unwrap();
        let none = LifetimePolicy::default();
        assert_eq!(s.token_stats(now, &none).unwrap().violating_policy, 0);
        let month = LifetimePolicy {
            max_lifetime_days: Some(30),
            require_expiry: false,
        };
        assert_eq!(s.token_stats(now, &month).unwrap().violating_policy, 2);
        let require = LifetimePolicy {
            max_lifetime_days: None,
            require_expiry: true,
        };
        assert_eq!(s.token_stats(now, &require).unwrap().violating_policy, 1);
    }

    #[test]
    fn stats_count_expiry_windows_and_idle_tokens_from_stored_last_used() {
        let s = TempStore::new();
        let now = 1_796_000_000;
        let day = 86_400;
        let micros = |t: i64| t * 1_000_000;
        // Made 100 days ago: never used, used 40 days ago, used yesterday.
        let old = now - 100 * day;
        s.create_token("never-used", None, micros(old)).unwrap();
        let (_, forty) = s.create_token("used-40d", None, micros(old) + 1).unwrap();
        let (_, fresh) = s.create_token("used-1d", None, micros(old) + 2).unwrap();
        s.write_last_used(&[(forty.id, now - 40 * day), (fresh.id, now - day)])
            .unwrap();
        // Made today; expiring in 12 h, 5 days, 20 days; one expired 100 days unused.
        s.create_token("half-day", Some(now + day / 2), micros(now - 10))
            .unwrap();
        s.create_token("five-days", Some(now + 5 * day), micros(now - 9))
            .unwrap();
        s.create_token("twenty-days", Some(now + 20 * day), micros(now - 8))
            .unwrap();
        s.create_token("gone", Some(now - 1), micros(old) + 3)
            .unwrap();
        let stats = s.token_stats(now, &LifetimePolicy::default()).unwrap();
        assert_eq!((stats.active, stats.expired), (6, 1));
        assert_eq!(
            (stats.expiring_1d, stats.expiring_7d, stats.expiring_30d),
            (1, 2, 3)
        );
        // The expired token is not counted as unused: it opens nothing.
        assert_eq!((stats.unused_30d, stats.unused_90d), (2, 1));
    }

    #[test]
    fn create_lookup_delete() {
        let s = TempStore::new();
        let (secret, rec) = s.create_token("deploy", None, 1).unwrap();
        let found = s.lookup_token(&secret.hash()).unwrap().unwrap();
        assert_eq!(found.id, rec.id);
        assert_eq!(s.token_by_id(rec.id).unwrap().unwrap().name, "deploy");
        assert_eq!(s.token_count().unwrap(), 1);
        assert!(s.delete_token(rec.id).unwrap().is_some());
        assert!(s.lookup_token(&secret.hash()).unwrap().is_none());
        assert!(s.delete_token(rec.id).unwrap().is_none());
        assert_eq!(s.token_count().unwrap(), 0);
        // The name is free again.
        assert!(s.create_token("DEPLOY", None, 2).is_ok());
    }

    #[test]
    fn names_are_unique_ignoring_case() {
        let s = TempStore::new();
        s.create_token("Deploy", None, 1).unwrap();
        let err = s.create_token("dEPLOY", None, 2).unwrap_err();
        assert!(matches!(err, Error::NameTaken(_)), "{err}");
        assert_eq!(s.token_count().unwrap(), 1);
    }

    #[test]
    fn listing_is_newest_first_with_cursor() {
        let s = TempStore::new();
        for i in 0..25 {
            s.create_token(&format!("t{i:02}"), None, 1_000_000 + i)
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s.list_tokens(10, cursor.as_ref()).unwrap();
            seen.extend(page.items.iter().map(|r| r.name.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("t{i:02}")).collect();
        assert_eq!(seen, expected);
        let exact = s.list_tokens(25, None).unwrap();
        assert!(
            exact.next_cursor.is_none(),
            "no cursor when nothing follows"
        );
    }

    #[test]
    fn a_page_whose_tokens_all_vanished_still_leads_on() {
        let s = TempStore::new();
        let made: Vec<TokenRecord> = (0..5)
            .map(|i| s.create_token(&format!("t{i}"), None, i).unwrap().1)
            .collect();
        // As if deleted between reading the order and reading the records.
        for r in &made[3..] {
            s.records.remove(r.id.0).unwrap();
        }
        let page = s.list_tokens(2, None).unwrap();
        assert!(page.items.is_empty());
        assert!(page.next_cursor.is_some(), "more tokens follow");
        let rest = s.list_tokens(10, page.next_cursor.as_ref()).unwrap();
        let names: Vec<&str> = rest.items.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["t2", "t1", "t0"]);
    }

    #[test]
    fn last_used_never_resurrects_and_never_goes_back() {
        let s = TempStore::new();
        let (_, a) = s.create_token("a", None, 1).unwrap();
        let (_, b) = s.create_token("b", None, 2).unwrap();
        s.delete_token(b.id).unwrap();
        assert_eq!(s.write_last_used(&[(a.id, 100), (b.id, 100)]).unwrap(), 1);
        assert_eq!(s.stored_last_used(b.id).unwrap(), None);
        assert!(s.token_by_id(b.id).unwrap().is_none());
        s.write_last_used(&[(a.id, 50)]).unwrap();
        assert_eq!(s.stored_last_used(a.id).unwrap(), Some(100));
    }

    #[test]
    fn flushes_racing_deletes_leave_no_last_used_behind() {
        let s = TempStore::new();
        let ids: Vec<TokenId> = (0..300)
            .map(|i| s.create_token(&format!("t{i}"), None, i).unwrap().1.id)
            .collect();
        let batch: Vec<(TokenId, i64)> = ids.iter().map(|id| (*id, 1_000)).collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 0..20 {
                    let batch: Vec<_> = batch.iter().map(|(id, t)| (*id, t + round)).collect();
                    s.write_last_used(&batch).unwrap();
                }
            });
            scope.spawn(|| {
                for id in &ids {
                    s.delete_token(*id).unwrap();
                }
            });
        });
        for id in &ids {
            assert_eq!(s.stored_last_used(*id).unwrap(), None, "orphan last-used");
        }
    }

    #[test]
    fn tracked_flushes_racing_deletes_leave_no_last_used_behind() {
        let s = TempStore::new();
        let tokens: Vec<(TokenId, TokenHash)> = (0..300)
            .map(|i| {
                let (secret, record) = s.create_token(&format!("t{i}"), None, i).unwrap();
                (record.id, secret.hash())
            })
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 0..20 {
                    let batch: Vec<LastUsedWrite> = tokens
                        .iter()
                        .map(|(id, hash)| LastUsedWrite {
                            id: *id,
                            hash: Some(*hash),
                            seen: 1_000 + round,
                            flushed: (round > 0).then_some(999 + round),
                        })
                        .collect();
                    for chunk in batch.chunks(50) {
                        s.write_last_used_chunk(chunk).unwrap();
                    }
                }
            });
            scope.spawn(|| {
                for (id, _) in &tokens {
                    s.delete_token(*id).unwrap();
                }
            });
        });
        for (id, _) in &tokens {
            assert_eq!(s.stored_last_used(*id).unwrap(), None, "orphan last-used");
        }
    }

    #[test]
    fn tracked_flush_reads_the_stored_time_on_first_flush_only() {
        let s = TempStore::new();
        let (secret, record) = s.create_token("a", None, 1).unwrap();
        let u = |seen, flushed| LastUsedWrite {
            id: record.id,
            hash: Some(secret.hash()),
            seen,
            flushed,
        };
        s.write_last_used(&[(record.id, 100)]).unwrap();
        // A new process (nothing flushed yet) with an older time: the stored 100 wins.
        assert_eq!(s.write_last_used_chunk(&[u(50, None)]).unwrap(), 0);
        assert_eq!(s.stored_last_used(record.id).unwrap(), Some(100));
        assert_eq!(s.write_last_used_chunk(&[u(120, None)]).unwrap(), 1);
        assert_eq!(s.write_last_used_chunk(&[u(130, Some(120))]).unwrap(), 1);
        assert_eq!(s.stored_last_used(record.id).unwrap(), Some(130));
        // A hash that is not (or no longer) in the index is never written.
        let stranger = LastUsedWrite {
            hash: Some(TokenHash([9; 32])),
            ..u(200, Some(130))
        };
        assert_eq!(s.write_last_used_chunk(&[stranger]).unwrap(), 0);
    }

    #[test]
    fn cursors_parse_strictly() {
        let k = order_key(5, &TokenId::generate());
        assert_eq!(parse_cursor(&crate::domain::encoding::hex(&k)), Some(k));
        assert_eq!(parse_cursor("abc"), None);
        assert_eq!(parse_cursor(&"g".repeat(48)), None);
    }
}
