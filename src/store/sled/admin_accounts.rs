//! Admin accounts in sled: username → Argon2id PHC hash and whether the password is still the
//! generated initial one. Admin credentials never share a tree or a type with API tokens.

use serde::{Deserialize, Serialize};

use super::SledStore;
use crate::store::error::{Error, Result};

/// One admin account as stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminAccount {
    /// Argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// Still the password generated at first start (the console shows a banner).
    pub initial_password: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last password change.
    pub password_changed_at: i64,
}

impl std::fmt::Debug for AdminAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccount")
            .field("password_hash", &"<redacted>")
            .field("initial_password", &self.initial_password)
            .finish_non_exhaustive()
    }
}

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
