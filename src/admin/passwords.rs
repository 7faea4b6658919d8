//! Admin passwords: Argon2id hashing (argon2 crate defaults: 19 MiB, 2 passes), verification
//! that costs the same whether or not the user exists, the password policy, and the random
//! initial password written to `<data-dir>/initial-admin-password` on first start.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

use crate::error::{Error, FieldError, Result};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes (bounds Argon2 input).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// File holding the generated first password until it is changed.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// Argon2id PHC string for a password.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Verifies against a stored hash; with `None` (no such user) it still spends the same work.
pub fn verify_password(password: &str, stored_hash: Option<&str>) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jz4XvJ8mCCVcsgZd6bUmXn4Ac1gJ6RRvM7RUTJG3zVg";
    let hash = stored_hash.unwrap_or(DUMMY);
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && stored_hash.is_some()
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
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(24);
    let mut pool = [0u8; 64];
    while out.len() < 24 {
        rand::rngs::OsRng.fill_bytes(&mut pool);
        for &b in &pool {
            if b < 248 && out.len() < 24 {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// Constant-time equality for secrets compared in memory (CSRF tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("anything", None));
    }

    #[test]
    fn policy() {
        assert!(validate_new_password("short", "newPassword").is_err());
        assert!(validate_new_password("long enough pw", "newPassword").is_ok());
        assert!(validate_new_password("long enough\npw", "newPassword").is_err());
        assert!(validate_new_password(&"x".repeat(2000), "newPassword").is_err());
        assert_eq!(generate_initial_password().len(), 24);
    }
}
