//! Rotation in sled: a new secret for a token (same id, name and fields), and the previous
//! secret kept for an overlap in its own small tree (`previous_secrets`, id → entry), which
//! holds only tokens in an overlap — so the two entries a token costs stay two (see
//! `token_records`). Every change here is one transaction over the record and that tree,
//! then a flush; the in-memory index follows under the delete's gate, so a rotation racing
//! a delete can never put the deleted token back.
//!
//! Entry: version `1` ‖ blake3(previous secret) (32) ‖ blake3(current secret) (32) ‖ ends
//! at (i64, unix seconds) ‖ flags (u8, bit 0: also ends at the current secret's first use).
//! The current hash is kept so an entry is honoured only beside the record it was made for
//! (an entry whose token is gone or rotated since is ignored at load).

use sled::transaction::abort;
use sled::Transactional;

use super::{be_i64, transaction_error, SledStore, TokenRecordRef};
use crate::domain::rotation::PreviousSecretEnd;
use crate::domain::token::{PlaintextToken, TokenHash, TokenId};
use crate::store::error::{Error, Result};
use crate::store::records::{PreviousSecret, Rotated};

const ENTRY_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 32 + 32 + 8 + 1;
const UNTIL_NEW_SECRET_USED: u8 = 1;

fn encode(previous: &PreviousSecret, current: &TokenHash) -> [u8; ENTRY_LEN] {
    let mut v = [0u8; ENTRY_LEN];
    v[0] = ENTRY_VERSION;
    v[1..33].copy_from_slice(previous.hash.as_bytes());
    v[33..65].copy_from_slice(current.as_bytes());
    v[65..73].copy_from_slice(&previous.ends_at.to_be_bytes());
    v[73] = if previous.until_new_secret_used {
        UNTIL_NEW_SECRET_USED
    } else {
        0
    };
    v
}

/// The previous secret and the current hash it was made beside.
fn decode(bytes: &[u8]) -> Result<(PreviousSecret, TokenHash)> {
    let damaged = || Error::Corrupt("undecodable previous-secret entry".into());
    if bytes.len() != ENTRY_LEN || bytes[0] != ENTRY_VERSION {
        return Err(damaged());
    }
    let hash = TokenHash(bytes[1..33].try_into().map_err(|_| damaged())?);
    let current = TokenHash(bytes[33..65].try_into().map_err(|_| damaged())?);
    let ends_at = be_i64(&bytes[65..73]).ok_or_else(damaged)?;
    Ok((
        PreviousSecret {
            hash,
            ends_at,
            until_new_secret_used: bytes[73] & UNTIL_NEW_SECRET_USED != 0,
        },
        current,
    ))
}

impl SledStore {
    /// Gives token `id` a new secret; its old one becomes the previous secret until
    /// `ends_at` (`None`: it stops at once), replacing any previous secret it had.
    /// `Ok(None)` if there is no such token. Durable when it returns.
    pub fn rotate_token(
        &self,
        id: TokenId,
        ends_at: Option<i64>,
        until_new_secret_used: bool,
    ) -> Result<Option<Rotated>> {
        let secret = PlaintextToken::generate();
        let new_hash = secret.hash();
        if self.index().is_some_and(|i| i.lookup(&new_hash).is_some()) {
            return Err(Error::CreationFailed("secret collision".into()));
        }
        // The delete's gate: the index is brought in step before a delete can look at it.
        let gate = crate::sync::lock(&self.last_used_gate);
        let done = (&self.records, &self.previous_secrets)
            .transaction(|(records, previous)| {
                let Some(bytes) = records.get(id.0)? else {
                    return Ok(None);
                };
                let Some((old_hash, record)) =
                    TokenRecordRef::decode(&id.0, &bytes).map(|r| (r.hash, r.to_owned_record()))
                else {
                    return abort(Error::Corrupt("undecodable token record".into()));
                };
                let replaced = match previous.remove(&id.0[..])? {
                    Some(old) => match decode(&old) {
                        Ok((p, _)) => Some(p),
                        Err(e) => return abort(e),
                    },
                    None => None,
                };
                let kept = ends_at.map(|ends_at| PreviousSecret {
                    hash: old_hash,
                    ends_at,
                    until_new_secret_used,
                });
                if let Some(p) = &kept {
                    previous.insert(&id.0[..], &encode(p, &new_hash)[..])?;
                }
                records.insert(&id.0[..], record.encode(&new_hash))?;
                Ok(Some((old_hash, record, kept, replaced)))
            })
            .map_err(transaction_error)?;
        let Some((old_hash, record, previous, replaced)) = done else {
            return Ok(None);
        };
        self.commit_durable()?;
        if let Some(index) = self.index() {
            // The new secret first, then the old one as the previous secret, then the old
            // current entry: a request with the old secret never finds neither.
            index.insert(new_hash, record.indexed());
            if let Some(r) = &replaced {
                index.remove_previous(&r.hash);
            }
            if let Some(p) = &previous {
                index.set_previous(p.hash, new_hash, id, p.ends_at, p.until_new_secret_used);
            }
            index.remove(&old_hash);
        }
        drop(gate);
        Ok(Some(Rotated {
            secret,
            record,
            previous,
            replaced,
        }))
    }

    /// The previous secret of token `id`, if it has one (not one its new secret's first use
    /// has ended in memory, still to be removed here).
    pub fn previous_secret(&self, id: TokenId) -> Result<Option<PreviousSecret>> {
        let Some(bytes) = self.previous_secrets.get(id.0)? else {
            return Ok(None);
        };
        let (p, current) = decode(&bytes)?;
        Ok((!self.ended_by_first_use(&p, &current)).then_some(p))
    }

    fn ended_by_first_use(&self, p: &PreviousSecret, current: &TokenHash) -> bool {
        p.until_new_secret_used && self.index().is_some_and(|i| i.first_use_taken(current))
    }

    /// Ends the previous secret of token `id` now — only if it is `only` when given (so of
    /// two callers ending the same secret, one does). The secret ended, if one was.
    pub fn end_previous_secret(
        &self,
        id: TokenId,
        only: Option<&TokenHash>,
    ) -> Result<Option<PreviousSecret>> {
        let ended = self
            .previous_secrets
            .transaction(|previous| {
                let Some(bytes) = previous.get(id.0)? else {
                    return Ok(None);
                };
                let (p, _) = match decode(&bytes) {
                    Ok(d) => d,
                    Err(e) => return abort(e),
                };
                if only.is_some_and(|h| *h != p.hash) {
                    return Ok(None);
                }
                previous.remove(&id.0[..])?;
                Ok(Some(p))
            })
            .map_err(transaction_error)?;
        if let Some(p) = &ended {
            // Out of the index first: ending is a refusal, it must not wait for the disk.
            if let Some(index) = self.index() {
                index.remove_previous(&p.hash);
            }
            self.commit_durable()?;
        }
        Ok(ended)
    }

    /// Every previous secret that has ended but is still stored, and why: its end time is
    /// at or before `now`, or its new secret's first use ended it in memory.
    pub fn ended_previous_secrets(
        &self,
        now: i64,
    ) -> Result<Vec<(TokenId, PreviousSecret, PreviousSecretEnd)>> {
        let mut out = Vec::new();
        for entry in self.previous_secrets.iter() {
            let (key, bytes) = entry?;
            let (p, current) = decode(&bytes)?;
            let why = if self.ended_by_first_use(&p, &current) {
                Some(PreviousSecretEnd::NewSecretUsed)
            } else {
                (p.ends_at <= now).then_some(PreviousSecretEnd::Time)
            };
            if let Some(why) = why {
                let id = TokenId(
                    key.as_ref()
                        .try_into()
                        .map_err(|_| Error::Corrupt("bad previous-secret key".into()))?,
                );
                out.push((id, p, why));
            }
        }
        Ok(out)
    }

    /// Start-up: the previous secrets into the index, each only beside the record it was
    /// made for (its token still there, with the same current secret).
    pub(super) fn load_previous_secrets(&self) -> Result<()> {
        let Some(index) = self.index() else {
            return Ok(());
        };
        for entry in self.previous_secrets.iter() {
            let (key, bytes) = entry?;
            let (p, current) = decode(&bytes)?;
            let Some(record) = self.records.get(&key)? else {
                continue;
            };
            let Some(r) = TokenRecordRef::decode(&key, &record) else {
                continue;
            };
            if r.hash == current {
                index.set_previous(p.hash, current, r.id, p.ends_at, p.until_new_secret_used);
            }
        }
        Ok(())
    }

    /// The previous secret of the record being deleted (inside the delete's transaction).
    pub(super) fn take_previous_in(
        previous: &sled::transaction::TransactionalTree,
        id: &TokenId,
    ) -> sled::transaction::ConflictableTransactionResult<Option<TokenHash>, Error> {
        match previous.remove(&id.0[..])? {
            Some(bytes) => match decode(&bytes) {
                Ok((p, _)) => Ok(Some(p.hash)),
                Err(e) => abort(e),
            },
            None => Ok(None),
        }
    }

    /// Every previous secret, out of the index too (a forced restore).
    pub(super) fn clear_previous_secrets(&self) -> Result<()> {
        if let Some(index) = self.index() {
            for entry in self.previous_secrets.iter() {
                let (_, bytes) = entry?;
                index.remove_previous(&decode(&bytes)?.0.hash);
            }
        }
        self.previous_secrets.clear()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::TempStore;
    use crate::store::SecretUsed;

    #[test]
    fn entries_round_trip() {
        let p = PreviousSecret {
            hash: PlaintextToken::generate().hash(),
            ends_at: 1_700_000_000,
            until_new_secret_used: true,
        };
        let current = PlaintextToken::generate().hash();
        assert_eq!(decode(&encode(&p, &current)).unwrap(), (p, current));
        assert!(decode(&encode(&p, &current)[1..]).is_err());
    }

    #[test]
    fn rotate_keeps_the_old_secret_until_it_ends_and_delete_takes_both() {
        let s = TempStore::new();
        let (old, rec) = s.create_token("ci", None, 1).unwrap();
        let rotated = s.rotate_token(rec.id, Some(100), false).unwrap().unwrap();
        assert_eq!(rotated.record, rec, "same id, name and fields");
        assert!(rotated.replaced.is_none());
        let (_, used) = s.index().unwrap().lookup(&old.hash()).unwrap();
        assert!(matches!(used, SecretUsed::Previous { ends_at: 100, .. }));
        let (t, _) = s.index().unwrap().lookup(&rotated.secret.hash()).unwrap();
        assert_eq!(t.id, rec.id);
        assert_eq!(
            s.previous_secret(rec.id).unwrap().map(|p| p.hash),
            Some(old.hash())
        );
        assert_eq!(s.ended_previous_secrets(99).unwrap().len(), 0);
        assert_eq!(s.ended_previous_secrets(100).unwrap().len(), 1);
        // Rotating again replaces it.
        let again = s.rotate_token(rec.id, Some(200), true).unwrap().unwrap();
        assert_eq!(again.replaced.map(|p| p.hash), Some(old.hash()));
        assert!(s.index().unwrap().lookup(&old.hash()).is_none());
        let second = rotated.secret.hash();
        assert!(s.index().unwrap().lookup(&second).is_some());
        // Ending it only when it is the one named.
        assert!(s
            .end_previous_secret(rec.id, Some(&old.hash()))
            .unwrap()
            .is_none());
        s.delete_token(rec.id).unwrap().unwrap();
        assert!(s.index().unwrap().lookup(&second).is_none());
        assert!(s.index().unwrap().lookup(&again.secret.hash()).is_none());
        assert!(s.previous_secret(rec.id).unwrap().is_none());
        assert!(s.rotate_token(rec.id, None, false).unwrap().is_none());
    }
}
