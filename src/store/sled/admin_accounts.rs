//! Admin accounts in sled: username → Argon2id PHC hash and whether the password is still the
//! generated initial one. Admin credentials never share a tree or a type with API tokens.

use super::SledStore;
use crate::store::error::{Error, Result};
use crate::store::records::AdminAccount;

impl SledStore {
    pub fn admin(&self, username: &str) -> Result<Option<AdminAccount>> {
        match self.admins.get(username.as_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("admin account record: {e}"))),
        }
    }

    /// Inserts or replaces an account, durably.
    pub fn put_admin(&self, username: &str, account: &AdminAccount) -> Result<()> {
        let bytes = serde_json::to_vec(account).map_err(|e| Error::Internal(e.to_string()))?;
        self.admins.insert(username.as_bytes(), bytes)?;
        self.commit_durable()
    }

    pub fn has_admins(&self) -> bool {
        !self.admins.is_empty()
    }
}
