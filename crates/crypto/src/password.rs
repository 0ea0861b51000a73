//! Password hashing for users: PBKDF2-HMAC-SHA256 with a random salt.
//!
//! A stored hash is `version (1) ‖ iterations (4, big-endian) ‖ salt (16) ‖ hash (32)`, so
//! the iteration count can rise later without invalidating existing passwords.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;

use crate::random_bytes;

/// PBKDF2-HMAC-SHA256 iterations for new hashes (OWASP's 2023 recommendation).
pub const PASSWORD_ITERATIONS: u32 = 600_000;

const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const STORED_LEN: usize = 1 + 4 + SALT_LEN + HASH_LEN;

/// A salted hash of `password` to store.
pub fn hash_password(password: &str) -> Vec<u8> {
    hash_with(password, PASSWORD_ITERATIONS)
}

fn hash_with(password: &str, iterations: u32) -> Vec<u8> {
    let salt = random_bytes(SALT_LEN);
    let mut hash = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).expect("iterations are positive"),
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    let mut out = Vec::with_capacity(STORED_LEN);
    out.push(VERSION);
    out.extend_from_slice(&iterations.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&hash);
    out
}

/// Whether `password` matches `stored`, compared in constant time. A malformed stored
/// value matches nothing.
pub fn verify_password(password: &str, stored: &[u8]) -> bool {
    if stored.len() != STORED_LEN || stored[0] != VERSION {
        return false;
    }
    let iterations = u32::from_be_bytes(stored[1..5].try_into().expect("four bytes"));
    let Some(iterations) = NonZeroU32::new(iterations) else {
        return false;
    };
    let (salt, hash) = stored[5..].split_at(SALT_LEN);
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        hash,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_same_password() {
        let stored = hash_with("Correct horse 1", 1000);
        assert_eq!(stored.len(), STORED_LEN);
        assert!(verify_password("Correct horse 1", &stored));
        assert!(!verify_password("correct horse 1", &stored));
        assert_ne!(stored, hash_with("Correct horse 1", 1000), "salted");
        let mut tampered = stored.clone();
        tampered[STORED_LEN - 1] ^= 1;
        assert!(!verify_password("Correct horse 1", &tampered));
        assert!(!verify_password(
            "Correct horse 1",
            &stored[..STORED_LEN - 1]
        ));
        let mut zero_iterations = stored;
        zero_iterations[1..5].copy_from_slice(&[0; 4]);
        assert!(!verify_password("Correct horse 1", &zero_iterations));
    }
}
