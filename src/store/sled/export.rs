//! Whole-store reads and writes for backup and restore: every token (with its hash and
//! last-used time), every admin account, and clearing a store before a forced restore.
//! The audit trees' export and import live in `audit_log`, beside the rule that picks a tree.

use super::layout::TOKEN_COUNT_KEY;
use super::{be_i64, AdminAccount, SledStore};
use crate::store::error::{Error, Result};

use super::token_records::TokenRecordRef;
use crate::store::records::ExportedToken;

impl SledStore {
    /// Every token, in id order.
    pub fn export_tokens(&self) -> Result<Vec<ExportedToken>> {
        let mut out = Vec::new();
        for entry in self.records.iter() {
            let (key, bytes) = entry?;
            let stored = TokenRecordRef::decode(&key, &bytes)
                .ok_or_else(|| Error::Corrupt("undecodable token record".into()))?;
            let (hash, record) = (stored.hash, stored.to_owned_record());
            let last_used = self.last_used.get(record.id.0)?.and_then(|v| be_i64(&v));
            out.push(ExportedToken {
                hash,
                record,
                last_used,
            });
        }
        Ok(out)
    }

    /// Every admin account.
    pub fn export_admins(&self) -> Result<Vec<(String, AdminAccount)>> {
        let mut out = Vec::new();
        for entry in self.admins.iter() {
            let (key, bytes) = entry?;
            let name =
                String::from_utf8(key.to_vec()).map_err(|_| Error::Corrupt("admin name".into()))?;
            let account = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corrupt(format!("admin account: {e}")))?;
            out.push((name, account));
        }
        Ok(out)
    }

    /// True when the store holds no token, admin or audit event.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.admins.is_empty() && self.audit.is_empty()
    }

    /// Removes every token, admin and audit event (forced restore), then flushes.
    pub fn clear_all(&self) -> Result<()> {
        for tree in [
            &self.records,
            &self.token_names,
            &self.last_used,
            &self.admins,
            &self.usage,
        ] {
            tree.clear()?;
        }
        self.audit.clear()?;
        self.clear_previous_secrets()?;
        self.meta.insert(TOKEN_COUNT_KEY, &0u64.to_be_bytes())?;
        if let Some(order) = self.order.get() {
            order.clear();
        }
        self.commit_durable()
    }
}
