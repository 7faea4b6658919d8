//! Token usage in the embedded store: one value per token in `token_usage` ([`USAGE_TREE`]),
//! the [`Usage`] encoding (at most [`crate::domain::usage::MAX_ENCODED_LEN`] bytes). The
//! flusher merges each interval's delta into it (read, merge, write: one process holds the
//! store, so nothing else writes it meanwhile); a delete removes it with the token.

use std::net::IpAddr;

use super::layout::USAGE_TREE;
use super::SledStore;
use crate::domain::token::TokenId;
use crate::domain::usage::Usage;
use crate::store::error::{Error, Result};

impl SledStore {
    /// The token's persisted usage (empty when it has none).
    pub fn stored_usage(&self, id: TokenId) -> Result<Usage> {
        match self.usage.get(id.0)? {
            None => Ok(Usage::default()),
            Some(bytes) => Usage::decode(&bytes)
                .ok_or_else(|| Error::Corrupt(format!("undecodable usage in {USAGE_TREE}"))),
        }
    }

    /// Merges one chunk of deltas as of `today`, skipping tokens deleted meanwhile (under
    /// `last_used_gate`, which a delete holds until its usage is gone too). Per token that
    /// was written, the addresses it had not listed. Does not flush.
    pub fn merge_usage_chunk(
        &self,
        chunk: &[(TokenId, Usage)],
        today: i64,
    ) -> Result<Vec<(TokenId, Vec<IpAddr>)>> {
        let _gate = crate::sync::lock(&self.last_used_gate);
        let mut batch = sled::Batch::default();
        let mut out = Vec::with_capacity(chunk.len());
        for (id, delta) in chunk {
            if !self.records.contains_key(id.0)? {
                continue;
            }
            // An undecodable value is replaced rather than blocking every later flush.
            let mut usage = self
                .usage
                .get(id.0)?
                .and_then(|v| Usage::decode(&v))
                .unwrap_or_default();
            let new = usage.merge(delta, today);
            batch.insert(&id.0[..], usage.encode());
            out.push((*id, new));
        }
        self.usage.apply_batch(batch)?;
        Ok(out)
    }

    /// Removes a deleted token's usage (the caller holds `last_used_gate`).
    pub(super) fn remove_usage(&self, id: TokenId) -> Result<()> {
        self.usage.remove(id.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::usage::{AddressUse, Usage};
    use crate::store::test_support::TempStore;

    #[test]
    fn merges_persist_and_a_delete_removes_them() {
        let s = TempStore::new();
        let (_, a) = s.create_token("a", None, 1).unwrap();
        let (_, b) = s.create_token("b", None, 2).unwrap();
        let delta = Usage {
            days: vec![(100, 2)],
            addresses: vec![AddressUse {
                addr: "10.0.0.1".parse().unwrap(),
                first_seen: 5,
                last_seen: 6,
                count: 2,
            }],
        };
        let written = s
            .merge_usage_chunk(&[(a.id, delta.clone()), (b.id, delta.clone())], 100)
            .unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].1.len(), 1, "a new address");
        let again = s.merge_usage_chunk(&[(a.id, delta.clone())], 100).unwrap();
        assert!(again[0].1.is_empty(), "known now");
        assert_eq!(s.stored_usage(a.id).unwrap().days, vec![(100, 4)]);
        s.delete_token(a.id).unwrap();
        assert!(s.stored_usage(a.id).unwrap().is_empty());
        assert!(s
            .merge_usage_chunk(&[(a.id, delta)], 100)
            .unwrap()
            .is_empty());
        assert!(
            s.stored_usage(a.id).unwrap().is_empty(),
            "never resurrected"
        );
    }
}
