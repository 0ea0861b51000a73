//! Key Vault service logic: vaults, secrets and keys, their lifecycles and rules, each
//! operation one store transaction; values sealed before they reach the store. Knows
//! nothing of HTTP. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod certificates;
mod error;
mod issuers;
mod keys;
mod management;
mod objects;
mod rotation;
mod secrets;

pub use certificates::{
    thumbprint_text, Certificate, CertificateChange, CertificateImport, CertificateOperation, PEM,
    PKCS12,
};
pub use error::VaultError;
pub use issuers::{Contact, Issuer, IssuerChange};
pub use keys::{
    CreateKey, ImportKey, Key, KeyOperation, KeyUpdate, OperationInput, OperationOutput, KEY_OPS,
};
pub use management::VaultRequest;
pub use objects::{AttributesPatch, Page, MAX_PAGE};
pub use rotation::LifetimeEvent;
pub use secrets::{Secret, SecretUpdate, SetSecret};

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use atrest_core::vault::{ObjectKind, VaultRecord};
use atrest_crypto::{DataKey, KeyHandle, KeyProvider, RootKey, SoftwareKeys};
use atrest_store::Store;

use crate::objects::{live_version, Stored};

/// Rows the data plane reads on every request, kept in memory: live vaults by name and
/// object versions by name and version, valid for one generation of the store. Every write
/// (through this service, or by another replica) moves the store's generation, and the
/// first reader to see the new one empties the cache; a row read from the store is cached
/// only under the generation read before it, so a reader never keeps what a concurrent
/// write replaced.
#[derive(Debug, Default)]
struct ReadCache {
    /// The store generation the cached rows belong to.
    generation: u64,
    vaults: HashMap<String, Arc<VaultRecord>>,
    objects: HashMap<String, Arc<Stored>>,
}

/// Object versions cached at most (the cache is emptied when full).
const OBJECTS_CACHED: usize = 4096;

/// The vault service of one atrest instance.
#[derive(Debug)]
pub struct Vaults {
    store: Arc<Store>,
    root: Arc<RootKey>,
    backup_key: DataKey,
    /// Live vaults and object versions, for the data plane's per-request lookups.
    cache: Mutex<ReadCache>,
    /// Unwrapped storage keys by vault id (a vault's storage key never changes), emptied
    /// with the read cache.
    storage_keys: Mutex<HashMap<String, Arc<DataKey>>>,
    /// Parsed key material by (vault id, version id); versions are immutable.
    parsed_keys: Mutex<HashMap<(String, String), Arc<dyn KeyHandle>>>,
    /// The provider of software-protected keys.
    software_keys: Arc<dyn KeyProvider>,
    /// The provider of `-HSM` keys. Until a device-backed provider is configured these
    /// are computed in software too; they are marked `-HSM` all the same.
    hsm_keys: Arc<dyn KeyProvider>,
}

const BACKUP_KEY_META: &str = "backup-key";
const BACKUP_KEY_CONTEXT: &str = "atrest/backup-key";

impl Vaults {
    /// The service over `store`, creating the instance backup key on first use.
    pub fn new(store: Arc<Store>, root: Arc<RootKey>) -> Result<Self, VaultError> {
        let backup_key = store.write(|tx| -> Result<DataKey, VaultError> {
            match tx.meta_get(BACKUP_KEY_META)? {
                Some(wrapped) => Ok(DataKey::unwrap(&root, BACKUP_KEY_CONTEXT, &wrapped)?),
                None => {
                    let key = DataKey::generate();
                    tx.meta_put(BACKUP_KEY_META, &key.wrap(&root, BACKUP_KEY_CONTEXT))?;
                    Ok(key)
                }
            }
        })?;
        Ok(Vaults {
            store,
            root,
            backup_key,
            cache: Mutex::new(ReadCache::default()),
            storage_keys: Mutex::new(HashMap::new()),
            parsed_keys: Mutex::new(HashMap::new()),
            software_keys: Arc::new(SoftwareKeys),
            hsm_keys: Arc::new(SoftwareKeys),
        })
    }

    /// Uses `provider` for `-HSM` keys created from now on and for those it stored.
    pub fn with_hsm_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.hsm_keys = provider;
        self
    }

    /// A write transaction; the caches are emptied after it, so a purged vault's storage
    /// key leaves memory at once.
    fn write<T>(
        &self,
        f: impl FnOnce(&atrest_store::Tx) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let result = self.store.write(f);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.empty(&mut cache);
        result
    }

    /// Empties every cache: rows, unwrapped storage keys, parsed key material.
    fn empty(&self, cache: &mut ReadCache) {
        cache.vaults.clear();
        cache.objects.clear();
        self.storage_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.parsed_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Reads the store's generation and empties the caches if it moved since they were
    /// filled (another replica wrote); returns it. Called on every cached read, and
    /// periodically so an idle replica forgets what another purged.
    pub fn forget_stale(&self) -> Result<u64, VaultError> {
        let current = self.store.generation()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if current > cache.generation {
            self.empty(&mut cache);
            cache.generation = current;
        }
        Ok(current)
    }

    /// How many store generations the caches are behind the store.
    pub fn generation_lag(&self) -> Result<u64, VaultError> {
        let current = self.store.generation()?;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation;
        Ok(current.saturating_sub(cached))
    }

    /// Whether other replicas write the same store, so the caches must be checked against
    /// it periodically.
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Looks `key` up in one of the cache's maps, or reads it with `load` and caches it
    /// unless a write happened meanwhile.
    fn cached<T>(
        &self,
        map: fn(&mut ReadCache) -> &mut HashMap<String, Arc<T>>,
        key: String,
        load: impl FnOnce() -> Result<T, VaultError>,
    ) -> Result<Arc<T>, VaultError> {
        let generation = self.forget_stale()?;
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.generation == generation {
                if let Some(hit) = map(&mut cache).get(&key) {
                    return Ok(hit.clone());
                }
            }
        }
        let value = Arc::new(load()?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation == generation {
            let entries = map(&mut cache);
            if entries.len() >= OBJECTS_CACHED {
                entries.clear();
            }
            entries.insert(key, value.clone());
        }
        Ok(value)
    }

    /// A version (the latest when `version` is `None`) of a live object, from the cache
    /// when possible.
    pub(crate) fn live_version(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<Stored>, VaultError> {
        let key = format!(
            "{}/{}/{}/{}",
            vault.vault_id,
            kind.as_str(),
            name.to_ascii_lowercase(),
            version.unwrap_or("")
        );
        self.cached(
            |c| &mut c.objects,
            key,
            || {
                self.store
                    .read(|tx| live_version(tx, vault, kind, name, version))
            },
        )
    }

    /// The vault's storage key, unwrapped once per vault.
    fn storage_key(&self, vault: &VaultRecord) -> Result<Arc<DataKey>, VaultError> {
        let lock = || self.storage_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = lock().get(&vault.vault_id) {
            return Ok(key.clone());
        }
        let key = Arc::new(DataKey::unwrap(
            &self.root,
            &vault_key_context(&vault.vault_id),
            &vault.wrapped_key,
        )?);
        lock().insert(vault.vault_id.clone(), key.clone());
        Ok(key)
    }

    /// Purges soft-deleted objects and vaults whose scheduled purge date has passed.
    /// Returns how many objects and vaults were purged.
    pub fn purge_due(&self, now: i64) -> Result<(usize, usize), VaultError> {
        self.write(|tx| {
            let objects = tx.objects_due_for_purge(now)?;
            for o in &objects {
                tx.purge_object(&o.vault_id, o.kind, &o.name)?;
            }
            let vaults = tx.vaults_due_for_purge(now)?;
            for v in &vaults {
                tx.purge_vault(&v.vault_id)?;
                issuers::forget_certificate_documents(tx, &v.vault_id)?;
            }
            Ok((objects.len(), vaults.len()))
        })
    }
}

fn vault_key_context(vault_id: &str) -> String {
    format!("atrest/vault-key/{vault_id}")
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) struct Fixture {
        pub vaults: Vaults,
        /// Holds the database; removed when the fixture drops.
        _dir: tempfile::TempDir,
    }

    /// A live vault `name` in subscription `sub`, resource group `rg`.
    pub(crate) fn vault(
        vaults: &Vaults,
        name: &str,
        location: &str,
        purge_protection: bool,
    ) -> VaultRecord {
        let mut req = VaultRequest {
            location: Some(location.into()),
            ..Default::default()
        };
        req.patch.purge_protection = Some(purge_protection);
        vaults.put_vault("sub", "rg", name, "t", &req, 0).unwrap().0
    }

    pub(crate) fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_file(&dir.path().join("state.db")).unwrap());
        let root = Arc::new(RootKey::load_or_create(&dir.path().join("root.key")).unwrap());
        Fixture {
            vaults: Vaults::new(store, root).unwrap(),
            _dir: dir,
        }
    }
}
