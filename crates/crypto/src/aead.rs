//! AES-256-GCM sealing and the key hierarchy it builds: the instance root key wraps data
//! keys (per-vault storage keys, the token signing key, the backup key), which seal data.
//!
//! Sealed format: `0x01 || nonce (12) || ciphertext || tag (16)`. The associated data names
//! the purpose and owner of the plaintext, so a blob moved to another row or vault fails to
//! open.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{random_bytes, CryptoError};

const FORMAT: u8 = 1;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// 256 bits of secret key; zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Key256([u8; KEY_LEN]);

impl Key256 {
    fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(&random_bytes(KEY_LEN));
        Key256(k)
    }

    fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("a key must be 32 bytes"))?;
        Ok(Key256(arr))
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte AES-256 key"));
        let nonce_bytes = random_bytes(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("12-byte nonce");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut body)
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        out.extend_from_slice(&body);
        body.zeroize();
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT {
            return Err(CryptoError::Open);
        }
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte AES-256 key"));
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| CryptoError::Open)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| CryptoError::Open)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(<redacted>)")
    }
}

/// The instance root key: the top of the hierarchy, kept in a 0600 file.
#[derive(Debug)]
pub struct RootKey(Key256);

impl RootKey {
    /// Loads the root key from `path`, creating it (mode 0600) if the file does not exist.
    /// A file that is readable by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) => {
                let mode = fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(io(std::io::Error::other(format!(
                        "mode {:o} lets others read the root key; run chmod 600 on it",
                        mode & 0o777
                    ))));
                }
                Ok(RootKey(Key256::from_slice(&bytes)?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Key256::generate();
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(&key.0).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(RootKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plaintext` directly under the root key (small blobs such as the TLS key).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(context.as_bytes(), plaintext)
    }

    /// Opens a blob sealed by [`RootKey::seal`] with the same context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.open(context.as_bytes(), sealed)
    }
}

/// A data key (a vault's storage key, the backup key): random, stored only wrapped by the
/// root key under a context string that names its owner.
#[derive(Debug, Clone)]
pub struct DataKey(Key256);

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        DataKey(Key256::generate())
    }

    /// The key sealed under the root key for storage.
    pub fn wrap(&self, root: &RootKey, context: &str) -> Vec<u8> {
        root.0.seal(context.as_bytes(), &self.0 .0)
    }

    /// Recovers a key wrapped by [`DataKey::wrap`] with the same context.
    pub fn unwrap(root: &RootKey, context: &str, wrapped: &[u8]) -> Result<Self, CryptoError> {
        let mut bytes = root.0.open(context.as_bytes(), wrapped)?;
        let key = Key256::from_slice(&bytes);
        bytes.zeroize();
        Ok(DataKey(key?))
    }

    /// Seals `plaintext`, binding it to `aad` (for example vault, object name and version).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(aad, plaintext)
    }

    /// Opens a blob sealed by [`DataKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.open(aad, sealed)
    }

    /// The key as an HMAC-SHA256 key. A key that computes MACs (the audit chain key)
    /// seals nothing, and the reverse.
    pub fn into_mac_key(self) -> MacKey {
        MacKey(hmac::Key::new(hmac::HMAC_SHA256, &self.0 .0))
    }
}

/// An HMAC-SHA256 key, its inner and outer states computed once (AWS-LC cleanses them on
/// drop).
pub struct MacKey(hmac::Key);

impl MacKey {
    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_context_binding() {
        let k = DataKey::generate();
        let sealed = k.seal(b"vault/a/s1/v1", b"hunter2");
        assert_eq!(k.open(b"vault/a/s1/v1", &sealed).unwrap(), b"hunter2");
        assert!(
            k.open(b"vault/a/s1/v2", &sealed).is_err(),
            "other context must fail"
        );
        assert!(
            DataKey::generate().open(b"vault/a/s1/v1", &sealed).is_err(),
            "other key must fail"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open(b"vault/a/s1/v1", &tampered).is_err());
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "ciphertext must not contain plaintext"
        );
    }

    #[test]
    fn root_key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let root = RootKey::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dk = DataKey::generate();
        let wrapped = dk.wrap(&root, "vault-key/x");
        let again = RootKey::load_or_create(&path).unwrap();
        let dk2 = DataKey::unwrap(&again, "vault-key/x", &wrapped).unwrap();
        assert_eq!(dk2.open(b"", &dk.seal(b"", b"m")).unwrap(), b"m");
        assert!(DataKey::unwrap(&again, "vault-key/y", &wrapped).is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            RootKey::load_or_create(&path).is_err(),
            "world-readable root key must be refused"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let k = DataKey::generate();
        assert_eq!(format!("{k:?}"), "DataKey(Key256(<redacted>))");
    }
}
