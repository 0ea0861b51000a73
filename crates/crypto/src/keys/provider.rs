//! The key-provider seam: where a vault key's private half lives and where its private
//! operations run.
//!
//! A provider generates, imports and loads keys and hands out [`KeyHandle`]s; the vault
//! service never sees more than a handle and the bytes the handle asks it to keep
//! (sealed) in the store. [`SoftwareKeys`] keeps the material itself in those bytes and
//! computes with AWS-LC. A device-backed provider (PKCS#11) keeps the material in the
//! device and only a reference in the store.

use std::fmt::Debug;
use std::sync::Arc;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{CipherParams, Curve, Encrypted, KeyError, KeyMaterial};

/// The type and size of a key, enough to generate another like it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with a modulus of this many bits.
    Rsa(u32),
    /// EC on this curve.
    Ec(Curve),
    /// AES with a key of this many bits.
    Oct(u32),
}

/// A private key held by a provider.
pub trait KeyHandle: Send + Sync + Debug {
    /// Type and size.
    fn spec(&self) -> KeySpec;
    /// The public JWK members: `n`/`e` for RSA, `crv`/`x`/`y` for EC, nothing for oct.
    fn public_jwk(&self) -> Map<String, Value>;
    /// Encrypts (`encrypt` and `wrapKey`).
    fn encrypt(
        &self,
        alg: &str,
        plaintext: &[u8],
        params: CipherParams<'_>,
    ) -> Result<Encrypted, KeyError>;
    /// Decrypts (`decrypt` and `unwrapKey`).
    fn decrypt(
        &self,
        alg: &str,
        ciphertext: &[u8],
        params: CipherParams<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// Signs a digest.
    fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Verifies a signature over a digest.
    fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, KeyError>;
    /// What the store keeps for this key, to be sealed at once and given back to
    /// [`KeyProvider::load`].
    fn to_stored(&self) -> Zeroizing<Vec<u8>>;
    /// The private key as PKCS#8, for an exportable certificate's secret (RSA and EC).
    fn export_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, KeyError>;
}

/// Creates and loads [`KeyHandle`]s.
pub trait KeyProvider: Send + Sync + Debug {
    /// A new key.
    fn generate(&self, spec: KeySpec) -> Result<Arc<dyn KeyHandle>, KeyError>;
    /// A key from a private JWK.
    fn import(&self, jwk: &Value) -> Result<Arc<dyn KeyHandle>, KeyError>;
    /// An RSA or EC key from a PKCS#8 `PrivateKeyInfo` (a certificate import).
    fn import_pkcs8(&self, pkcs8: &[u8]) -> Result<Arc<dyn KeyHandle>, KeyError>;
    /// A key from what [`KeyHandle::to_stored`] gave.
    fn load(&self, stored: &[u8]) -> Result<Arc<dyn KeyHandle>, KeyError>;
}

/// Keys computed with AWS-LC in this process, their material kept sealed in the store.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftwareKeys;

impl KeyProvider for SoftwareKeys {
    fn generate(&self, spec: KeySpec) -> Result<Arc<dyn KeyHandle>, KeyError> {
        let material = match spec {
            KeySpec::Rsa(bits) => KeyMaterial::generate_rsa(bits)?,
            KeySpec::Ec(curve) => KeyMaterial::generate_ec(curve)?,
            KeySpec::Oct(bits) => KeyMaterial::generate_oct(bits)?,
        };
        Ok(Arc::new(material))
    }

    fn import(&self, jwk: &Value) -> Result<Arc<dyn KeyHandle>, KeyError> {
        Ok(Arc::new(KeyMaterial::from_jwk(jwk)?))
    }

    fn import_pkcs8(&self, pkcs8: &[u8]) -> Result<Arc<dyn KeyHandle>, KeyError> {
        Ok(Arc::new(KeyMaterial::from_pkcs8(pkcs8)?))
    }

    fn load(&self, stored: &[u8]) -> Result<Arc<dyn KeyHandle>, KeyError> {
        Ok(Arc::new(KeyMaterial::from_bytes(stored)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_keys_round_trip_through_the_store_bytes() {
        for spec in [
            KeySpec::Rsa(2048),
            KeySpec::Ec(Curve::P384),
            KeySpec::Oct(192),
        ] {
            let key = SoftwareKeys.generate(spec).unwrap();
            let loaded = SoftwareKeys.load(&key.to_stored()).unwrap();
            assert_eq!(loaded.spec(), spec);
            assert_eq!(loaded.public_jwk(), key.public_jwk());
        }
        let ec = SoftwareKeys.generate(KeySpec::Ec(Curve::P256)).unwrap();
        let signature = ec.sign("ES256", &[7; 32]).unwrap();
        let loaded = SoftwareKeys.load(&ec.to_stored()).unwrap();
        assert!(loaded.verify("ES256", &[7; 32], &signature).unwrap());
        assert!(SoftwareKeys.load(&[0x99, 1, 2]).is_err());
    }
}
