//! Admin passwords: Argon2id hashing (argon2 crate defaults: 19 MiB, 2 passes) in a fixed
//! pool of reusable memory, verification that costs the same whether or not the user exists,
//! the password policy, and the random initial password written to
//! `<data-dir>/initial-admin-password` on first start.
//!
//! Memory policy: every hash or check borrows one of [`Argon2Pool`]'s slots (19 MiB each,
//! allocated the first time it is needed and kept for the life of the process) and waits
//! while all are busy. Letting each worker thread allocate its own 19 MiB made glibc keep the
//! memory in per-thread arenas: 60 Basic-auth requests took the process from 8 MiB to over
//! 1 GiB. A stored hash asking for more memory (or passes) than a slot allows is refused,
//! never allocated for, so a hostile value in the store cannot grow the process. The pool's
//! state is consistent after every statement, so a poisoned lock is recovered.

use std::sync::{Condvar, Mutex, MutexGuard};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::service::error::{Error, FieldError, Result};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes (bounds Argon2 input).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// File holding the generated first password until it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
/// Slots (concurrent Argon2 runs) when not configured: 2 x 19 MiB.
pub const DEFAULT_ARGON2_SLOTS: usize = 2;
/// Memory of one slot, in 1 KiB Argon2 blocks: what new hashes use (argon2's default m_cost).
const SLOT_BLOCKS: usize = Params::DEFAULT_M_COST as usize;
/// Most passes a stored hash may ask for (new hashes use 2): bounds the time a slot is held.
const MAX_T_COST: u32 = 16;
/// Checked when the user does not exist, so an unknown name costs the same as a known one.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jz4XvJ8mCCVcsgZd6bUmXn4Ac1gJ6RRvM7RUTJG3zVg";

/// Whether Argon2 with `params` can run in one slot: the memory and pass bounds every check
/// is held to.
fn fits_a_slot(params: &Params) -> std::result::Result<(), String> {
    if params.block_count() > SLOT_BLOCKS {
        return Err(format!(
            "memory cost m={} KiB is above the {SLOT_BLOCKS} KiB this server hashes with",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_T_COST {
        return Err(format!(
            "time cost t={} is above the {MAX_T_COST} passes allowed",
            params.t_cost()
        ));
    }
    Ok(())
}

/// Whether a stored hash is one this server can check a password against: an Argon2 PHC
/// string with a salt and a hash, within a slot's bounds. A restore refuses any other (its
/// account could never sign in, and its parameters could ask for anything).
pub fn check_stored_hash(phc: &str) -> std::result::Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    Algorithm::try_from(parsed.algorithm).map_err(|e| format!("algorithm: {e}"))?;
    if let Some(v) = parsed.version {
        Version::try_from(v).map_err(|e| format!("version: {e}"))?;
    }
    fits_a_slot(&Params::try_from(&parsed).map_err(|e| format!("parameters: {e}"))?)?;
    parsed.salt.ok_or("no salt")?;
    parsed.hash.ok_or("no hash")?;
    Ok(())
}

/// A fixed number of Argon2 memory areas, shared by every thread that hashes or checks a
/// password.
pub struct Argon2Pool {
    state: Mutex<PoolState>,
    returned: Condvar,
    slots: usize,
}

struct PoolState {
    free: Vec<Box<[Block]>>,
    allocated: usize,
}

/// One borrowed memory area, given back on drop.
struct Slot<'a> {
    pool: &'a Argon2Pool,
    memory: Option<Box<[Block]>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            self.pool.lock().free.push(memory);
            self.pool.returned.notify_one();
        }
    }
}

impl Argon2Pool {
    /// A pool of `slots` areas (at least one), each allocated when first needed.
    pub fn new(slots: usize) -> Argon2Pool {
        Argon2Pool {
            state: Mutex::new(PoolState {
                free: Vec::new(),
                allocated: 0,
            }),
            returned: Condvar::new(),
            slots: slots.max(1),
        }
    }

    /// How many Argon2 runs may happen at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        crate::sync::lock(&self.state)
    }

    /// Waits for a free area (allocating one if the pool is not full yet).
    fn checkout(&self) -> Slot<'_> {
        let mut state = self.lock();
        loop {
            if let Some(memory) = state.free.pop() {
                return Slot {
                    pool: self,
                    memory: Some(memory),
                };
            }
            if state.allocated < self.slots {
                state.allocated += 1;
                drop(state);
                return Slot {
                    pool: self,
                    memory: Some(vec![Block::default(); SLOT_BLOCKS].into_boxed_slice()),
                };
            }
            state = crate::sync::wait(&self.returned, state);
        }
    }

    /// Runs Argon2 into `out` with pooled memory; `params` must fit a slot.
    fn run(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> std::result::Result<(), String> {
        fits_a_slot(&params)?;
        let mut slot = self.checkout();
        let memory = slot.memory.as_deref_mut().unwrap_or_default();
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, memory)
            .map_err(|e| format!("argon2: {e}"))
    }

    /// Argon2id PHC string for a new password (argon2's default parameters).
    pub fn hash_password(&self, password: &str) -> Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_buf)
            .map_err(|e| Error::Internal(format!("argon2 salt: {e}")))?;
        let params = Params::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.run(
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
            password.as_bytes(),
            salt_bytes,
            &mut out,
        )
        .map_err(Error::Internal)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|e| Error::Internal(format!("argon2 params: {e}")))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| Error::Internal(format!("argon2: {e}")))?),
        };
        Ok(phc.to_string())
    }

    /// Verifies against a stored PHC hash; with `None` (no such user) it still spends the same
    /// work. A stored hash that cannot be checked within a slot is a failed check, logged.
    pub fn verify_password(&self, password: &str, stored_hash: Option<&str>) -> bool {
        match self.check_phc(password.as_bytes(), stored_hash.unwrap_or(DUMMY_HASH)) {
            Ok(matches) => matches && stored_hash.is_some(),
            Err(reason) => {
                log::warn!("a stored admin password hash was refused: {reason}");
                false
            }
        }
    }

    /// Parses the PHC string, hashes `password` the same way and compares in constant time.
    fn check_phc(&self, password: &[u8], phc: &str) -> std::result::Result<bool, String> {
        let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm).map_err(|e| format!("algorithm: {e}"))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| format!("version: {e}"))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| format!("parameters: {e}"))?;
        let salt = parsed.salt.ok_or("no salt")?;
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|e| format!("salt: {e}"))?;
        let expected = parsed.hash.ok_or("no hash")?;
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.len()).ok_or("hash too long")?;
        self.run(algorithm, version, params, password, salt, out)?;
        let computed = Output::new(out).map_err(|e| format!("output: {e}"))?;
        // password_hash's Output compares in constant time (subtle).
        Ok(computed == expected)
    }
}

/// The password policy for new passwords.
pub fn validate_new_password(
    password: &str,
    field: &'static str,
) -> std::result::Result<(), FieldError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(
            field,
            format!("Must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(FieldError::new(
            field,
            format!("Must be at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "Must not contain control characters",
        ));
    }
    Ok(())
}

/// 24 base62 characters from the OS CSPRNG (~143 bits).
pub fn generate_initial_password() -> String {
    let mut out = [0u8; 24];
    crate::domain::encoding::fill_random_base62(&mut rand::rngs::OsRng, &mut out);
    out.iter().map(|&b| char::from(b)).collect()
}

/// Constant-time equality for secrets compared in memory (CSRF tokens); lengths are not
/// secret (a length mismatch is simply unequal).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let pool = Argon2Pool::new(1);
        let h = pool.hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(pool.verify_password("correct horse battery", Some(&h)));
        assert!(!pool.verify_password("wrong", Some(&h)));
        assert!(!pool.verify_password("anything", None));
    }

    #[test]
    fn regression_issue_14_pooled_hashes_match_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let pool = Argon2Pool::new(1);
        // A hash stored before the pool (the crate's own hasher) still verifies...
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(b"stored before the pool", &salt)
            .unwrap()
            .to_string();
        assert!(pool.verify_password("stored before the pool", Some(&old)));
        assert!(!pool.verify_password("stored before the poo1", Some(&old)));
        // ... and the crate accepts what the pool writes.
        let new = pool.hash_password("written by the pool").unwrap();
        let parsed = PasswordHash::new(&new).unwrap();
        assert!(Argon2::default()
            .verify_password(b"written by the pool", &parsed)
            .is_ok());
        // The dummy hash for unknown users is a real, checkable hash of the same cost.
        assert!(pool.check_phc(b"x", DUMMY_HASH).is_ok());
    }

    #[test]
    fn regression_issue_14_hostile_stored_params_are_refused_not_allocated() {
        let pool = Argon2Pool::new(1);
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let hash = "Jz4XvJ8mCCVcsgZd6bUmXn4Ac1gJ6RRvM7RUTJG3zVg";
        for params in [
            "m=4194304,t=2,p=1",
            "m=19460,t=2,p=1",
            "m=19456,t=1000000,p=1",
        ] {
            let phc = format!("$argon2id$v=19${params}${salt}${hash}");
            let refused = pool.check_phc(b"pw", &phc).unwrap_err();
            assert!(refused.contains("cost"), "{refused}");
            assert!(!pool.verify_password("pw", Some(&phc)));
        }
        assert_eq!(
            pool.lock().allocated,
            0,
            "nothing allocated for a refused hash"
        );
        for junk in [
            "",
            "$argon2id$",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA",
            "plain",
        ] {
            assert!(!pool.verify_password("pw", Some(junk)), "{junk}");
        }
    }

    #[test]
    fn regression_issue_14_pool_never_holds_more_than_its_slots() {
        let pool = std::sync::Arc::new(Argon2Pool::new(2));
        let h = pool.hash_password("a password for threads").unwrap();
        let handles: Vec<_> = (0..8u32)
            .map(|i| {
                let (pool, h) = (pool.clone(), h.clone());
                std::thread::spawn(move || {
                    let pw = if i % 2 == 0 {
                        "a password for threads"
                    } else {
                        "no"
                    };
                    pool.verify_password(pw, Some(&h)) == i.is_multiple_of(2)
                })
            })
            .collect();
        assert!(handles.into_iter().all(|t| t.join().unwrap()));
        let state = pool.lock();
        assert_eq!((state.allocated, state.free.len()), (2, 2));
    }

    #[test]
    fn policy() {
        assert!(validate_new_password("short", "newPassword").is_err());
        assert!(validate_new_password("long enough pw", "newPassword").is_ok());
        assert!(validate_new_password("long enough\npw", "newPassword").is_err());
        assert!(validate_new_password(&"x".repeat(2000), "newPassword").is_err());
        let initial = generate_initial_password();
        assert_eq!(initial.len(), 24);
        assert!(
            initial.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{initial}"
        );
        assert_ne!(initial, generate_initial_password());
    }

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"csrf-token", b"csrf-token"));
        assert!(!constant_time_eq(b"csrf-token", b"csrf-tokem"));
        assert!(!constant_time_eq(b"csrf-token", b"csrf-toke"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
