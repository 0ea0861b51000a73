//! Data keys and what protects them: the platform key (PMK), kept here sealed by the
//! instance root key, and customer-managed keys, reached only through a vault's own API
//! as a disk encryption set's managed identity ([`KeyVaultAccess`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;

use atrest_crypto::{random_key, DataKey, RootKey};
use atrest_store::Store;
use atrest_xts::{XtsKey, KEY_LEN};
use zeroize::Zeroizing;

use crate::error::{ComputeError, KeyAccessError};

/// What the platform itself knows of a vault and one of its keys, for validating a disk
/// encryption set. No identity is involved and nothing secret is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// The vault's ARM resource id.
    pub vault_resource_id: String,
    /// The vault's location.
    pub vault_location: String,
    /// Whether the vault has purge protection.
    pub purge_protection: bool,
    /// The key's type (`RSA`, `RSA-HSM`, `EC`, …), if the version exists.
    pub kty: Option<String>,
    /// RSA modulus size in bits.
    pub key_size: Option<u32>,
    /// Whether the version is enabled and within its `nbf`/`exp`.
    pub usable: bool,
    /// Whether the key belongs to a certificate (Key Vault's `managed` keys).
    pub certificate: bool,
}

/// A key version as a managed identity read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// The versioned key identifier.
    pub kid: String,
}

/// A boxed future of a key operation.
pub type KeyFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KeyAccessError>> + Send + 'a>>;

/// What the platform knows of a vault, for Azure Disk Encryption's rules. Nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultDescription {
    /// The vault's ARM resource id.
    pub resource_id: String,
    /// The vault's location.
    pub location: String,
    /// `enabledForDiskEncryption`: whether the platform may store and read disk
    /// encryption secrets and wrap and unwrap with its keys.
    pub enabled_for_disk_encryption: bool,
    /// The vault's data-plane URL, `https://VAULT.vault.localhost:PORT`.
    pub uri: String,
}

/// A secret as the platform stores or reads it. The value is wiped on drop.
pub struct PlatformSecret {
    /// The value.
    pub value: Zeroizing<String>,
    /// `contentType`.
    pub content_type: String,
    /// Tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for PlatformSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSecret")
            .field("content_type", &self.content_type)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// The way to customer-managed keys and vault secrets. `identity` is the ARM resource id
/// of the managed identity acting (a disk encryption set's, or the disk-encryption
/// platform identity); every call goes through the vault's authorization and audit like
/// any client's.
pub trait KeyVaultAccess: Send + Sync + std::fmt::Debug {
    /// Describes a vault and key version as the platform sees it.
    fn describe(
        &self,
        vault: &str,
        key: &str,
        version: &str,
    ) -> Result<KeyDescription, KeyAccessError>;

    /// Describes a vault by name, as the platform sees it.
    fn describe_vault(&self, vault: &str) -> Result<VaultDescription, KeyAccessError>;

    /// Reads the current version of key `key_url` (versioned or not) as `identity`.
    fn get_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, KeyVersion>;

    /// Wraps `dek` with `alg` (RSA-OAEP-256 for data keys) under the versioned `key_url`
    /// as `identity`.
    fn wrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        alg: &'a str,
        dek: &'a [u8],
    ) -> KeyFuture<'a, Vec<u8>>;

    /// Unwraps what [`Self::wrap_key`] wrapped with `alg`, as `identity`.
    fn unwrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        alg: &'a str,
        wrapped: &'a [u8],
    ) -> KeyFuture<'a, Zeroizing<Vec<u8>>>;

    /// Stores a new version of secret `name` in `vault` as `identity`; returns its
    /// versioned identifier.
    fn set_secret<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        secret: &'a PlatformSecret,
    ) -> KeyFuture<'a, String>;

    /// Creates a new version of RSA key `name` of `key_size` bits in `vault` as
    /// `identity` (Site Recovery recreating a key-encryption key in another region).
    fn create_key<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        key_size: u32,
    ) -> KeyFuture<'a, KeyVersion>;

    /// A Key Vault backup blob of key `key_url` (every version of its name) as `identity`.
    fn backup_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, Vec<u8>>;

    /// Reads the secret version `secret_url` as `identity`.
    fn get_secret<'a>(
        &'a self,
        identity: &'a str,
        secret_url: &'a str,
    ) -> KeyFuture<'a, PlatformSecret>;
}

/// How disk encryption sets wrap data keys.
pub(crate) const DEK_WRAP_ALGORITHM: &str = "RSA-OAEP-256";

/// A fresh AES-256-XTS data key (two independent 256-bit halves).
pub(crate) fn new_dek() -> Zeroizing<[u8; KEY_LEN]> {
    random_key::<KEY_LEN>()
}

/// The cipher of a data key received as bytes.
pub(crate) fn xts_key(bytes: &[u8]) -> Result<XtsKey, ComputeError> {
    let array: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(bytes.try_into().map_err(|_| {
        ComputeError::Internal("an unwrapped data key has the wrong length".into())
    })?);
    XtsKey::new(&array).map_err(|e| ComputeError::Internal(e.to_string()))
}

/// The platform key, versioned: new data keys are wrapped by the newest version, and
/// every version stays to unwrap what it wrapped.
pub(crate) struct PlatformKeys {
    versions: RwLock<Vec<(u32, DataKey)>>,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeys").finish_non_exhaustive()
    }
}

fn pmk_context(version: u32) -> String {
    format!("platform-key/{version}")
}

impl PlatformKeys {
    /// Loads every version, creating version 1 on first use.
    pub(crate) fn load(store: &Store, root: &RootKey, now: i64) -> Result<Self, ComputeError> {
        let sealed = store.write(|tx| {
            let mut keys = tx.platform_keys()?;
            if keys.is_empty() {
                let wrapped = DataKey::generate().wrap(root, &pmk_context(1));
                tx.insert_platform_key(1, &wrapped, now)?;
                keys.push((1, wrapped));
            }
            Ok::<_, atrest_store::StoreError>(keys)
        })?;
        let versions = sealed
            .iter()
            .map(|(v, wrapped)| Ok((*v, DataKey::unwrap(root, &pmk_context(*v), wrapped)?)))
            .collect::<Result<_, atrest_crypto::CryptoError>>()
            .map_err(|e| {
                ComputeError::Internal(format!("the platform key cannot be opened: {e}"))
            })?;
        Ok(PlatformKeys {
            versions: RwLock::new(versions),
        })
    }

    /// Wraps `dek` for the disk `disk_id` with the newest version.
    pub(crate) fn wrap(&self, disk_id: &str, dek: &[u8]) -> (u32, Vec<u8>) {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let (version, key) = versions.last().expect("at least one platform key version");
        (*version, key.seal(disk_id.as_bytes(), dek))
    }

    /// Unwraps a data key that version `version` wrapped for `disk_id`.
    pub(crate) fn unwrap(
        &self,
        disk_id: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ComputeError> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let key = versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k)
            .ok_or_else(|| {
                ComputeError::Internal(format!("platform key version {version} is missing"))
            })?;
        key.open(disk_id.as_bytes(), wrapped)
            .map(Zeroizing::new)
            .map_err(|_| {
                ComputeError::Internal("a platform-wrapped data key failed to open".into())
            })
    }
}
