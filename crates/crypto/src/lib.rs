//! Keys and primitives (AWS-LC): the root key, sealing, MACs, token signing, the Key
//! Vault key provider, randomness, password hashing, TLS identities. Secret-holding types
//! zeroize on drop and redact `Debug`. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod aead;
pub mod certificates;
mod der;
mod jwt;
mod keys;
mod password;
pub mod pkcs12;
mod random;
mod tls;

pub use aead::{DataKey, MacKey, RootKey};
pub use jwt::{JwtError, TokenSigner};
pub use keys::provider::{KeyHandle, KeyProvider, KeySpec, SoftwareKeys};
pub use keys::{CipherParams, Curve, Encrypted, KeyError, PrivateJwk};
pub use password::{hash_password, verify_password, PASSWORD_ITERATIONS};
pub use random::{
    random_bytes, random_hex, random_key, random_secret, random_uuid, sha1, sha256, sha256_matches,
};
pub use tls::{generate_tls_identity, TlsIdentity};

use thiserror::Error;

/// A cryptographic operation failed. Variants never carry key material.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// Authenticated decryption failed: wrong key, wrong context or tampered data.
    #[error(
        "decryption failed: the data was tampered with or sealed under another key or context"
    )]
    Open,
    /// A key file or sealed key has the wrong size or format.
    #[error("malformed key material: {0}")]
    Malformed(&'static str),
    /// The operating system refused a file operation on a key file.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// AWS-LC reported an error (key generation, signing).
    #[error("the cryptographic library failed: {0}")]
    Library(&'static str),
}
