//! Key Vault service logic: vault management and the secrets data plane.
//!
//! The service holds the rules (names, limits, attributes, soft delete, purge protection,
//! backup restrictions) and composes store reads and writes into single transactions, so a
//! refused request changes nothing. Values are sealed with the vault's storage key before
//! they reach the store. This crate knows nothing of HTTP; the API edge maps [`VaultError`]
//! to Azure's status codes and error bodies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod keys;
mod management;
mod objects;
mod rotation;
mod secrets;

pub use error::VaultError;
pub use keys::{
    CreateKey, ImportKey, Key, KeyOperation, KeyUpdate, OperationInput, OperationOutput, KEY_OPS,
};
pub use management::VaultRequest;
pub use objects::{AttributesPatch, Page, MAX_PAGE};
pub use rotation::LifetimeEvent;
pub use secrets::{Secret, SecretUpdate, SetSecret};

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use atrest_crypto::{DataKey, KeyMaterial, RootKey};
use atrest_store::{Store, VaultRow};

/// Vault rows as last read, and a generation that every vault write bumps: a row read
/// from the store is cached only if no write happened since the read began.
#[derive(Debug, Default)]
struct VaultCache {
    generation: u64,
    vaults: HashMap<String, VaultRow>,
}

/// The vault service of one atrest instance.
#[derive(Debug)]
pub struct Vaults {
    store: Arc<Store>,
    root: Arc<RootKey>,
    backup_key: DataKey,
    /// Live vaults by lower-case name, for the data plane's per-request lookup.
    live_vaults: RwLock<VaultCache>,
    /// Parsed key material by (vault id, version id); versions are immutable.
    parsed_keys: Mutex<HashMap<(String, String), Arc<KeyMaterial>>>,
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
            live_vaults: RwLock::new(VaultCache::default()),
            parsed_keys: Mutex::new(HashMap::new()),
        })
    }

    /// A write transaction that may change vaults; the vault cache is emptied after it.
    fn write_vaults<T>(
        &self,
        f: impl FnOnce(&atrest_store::Tx) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let result = self.store.write(f);
        let mut cache = self.live_vaults.write().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        cache.vaults.clear();
        result
    }

    fn storage_key(&self, vault: &VaultRow) -> Result<DataKey, VaultError> {
        Ok(DataKey::unwrap(
            &self.root,
            &vault_key_context(&vault.vault_id),
            &vault.wrapped_key,
        )?)
    }

    /// Purges soft-deleted objects and vaults whose scheduled purge date has passed.
    /// Returns how many objects and vaults were purged.
    pub fn purge_due(&self, now: i64) -> Result<(usize, usize), VaultError> {
        self.write_vaults(|tx| {
            let objects = tx.objects_due_for_purge(now)?;
            for o in &objects {
                tx.purge_object(&o.vault_id, o.kind, &o.name)?;
            }
            let vaults = tx.vaults_due_for_purge(now)?;
            for v in &vaults {
                tx.purge_vault(&v.vault_id)?;
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

    pub struct Fixture {
        pub vaults: Vaults,
        pub dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub fn fixture() -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("atrest-vault-{}", atrest_crypto::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(&dir.join("state.db")).unwrap());
        let root = Arc::new(RootKey::load_or_create(&dir.join("root.key")).unwrap());
        Fixture {
            vaults: Vaults::new(store, root).unwrap(),
            dir,
        }
    }
}
