//! The admin world: accounts and their passwords (Argon2), console sessions, the per-address
//! login throttle and the short memory of successful HTTP Basic checks.

pub mod basic_cache;
pub mod login_throttle;
pub mod passwords;
pub mod sessions;
