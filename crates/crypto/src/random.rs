//! Randomness and digests.

use aws_lc_rs::{constant_time, digest, rand};
use zeroize::Zeroizing;

/// `n` bytes from AWS-LC's DRBG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::fill(&mut buf).expect("AWS-LC's DRBG does not fail once initialized");
    buf
}

/// A fresh random key of `N` bytes, wiped on drop.
pub fn random_key<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut key = Zeroizing::new([0u8; N]);
    rand::fill(key.as_mut()).expect("AWS-LC's DRBG does not fail once initialized");
    key
}

/// `n` random bytes as lowercase hex (object versions, identifiers).
pub fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random (version 4, variant 1) UUID in lowercase hex, as Entra ID and ARM name
/// principals, assignments and tenants.
pub fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A random credential of 40 characters from an unambiguous alphabet with 240 bits of entropy.
pub fn random_secret() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    random_bytes(40)
        .iter()
        .map(|b| ALPHABET[(*b & 63) as usize] as char)
        .collect()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-1, for what formats still name by it (certificate thumbprints), never for security.
pub fn sha1(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// Whether `candidate` hashes to `expected`, compared in constant time.
pub fn sha256_matches(candidate: &[u8], expected: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(&sha256(candidate), expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_well_formed() {
        let a = random_secret();
        assert_eq!(a.len(), 40);
        assert_ne!(a, random_secret());
        assert_eq!(random_hex(16).len(), 32);
    }

    #[test]
    fn digest_matching() {
        let h = sha256(b"pw");
        assert!(sha256_matches(b"pw", &h));
        assert!(!sha256_matches(b"pW", &h));
        assert!(!sha256_matches(b"pw", &h[..31]));
    }
}
