//! Instance metadata in the state database's `meta` table: ids, the sealed token-signing
//! and TLS keys, the bootstrap credential, the audit chain key and checkpoint, the
//! scheduler's clock offset. Secrets are sealed by the root key, the entry's name doubling
//! as the sealing context so a sealed value cannot be moved to another entry.

use std::path::Path;
use std::sync::Arc;

use atrest_crypto::RootKey;
use atrest_store::{Database, PgTarget, Store, StoreError};
use zeroize::Zeroizing;

use crate::Error;

/// The state database's metadata, and the root key that seals its secrets.
#[derive(Debug, Clone)]
pub struct Meta {
    store: Arc<Store>,
    root: Arc<RootKey>,
    audit_db: Database,
}

/// The meta entry that proves the root key: a known value sealed by it.
const ROOT_KEY_CHECK: &str = "root_key_check";

impl Meta {
    /// Loads `dir/root.key` (created, 0600, on first start) and opens the state database:
    /// `postgres` if given (shared with other replicas), else `dir/state.db`. A root key
    /// other than the one the database was first opened with is refused before anything
    /// is written.
    pub fn open(dir: &Path, postgres: Option<&str>) -> Result<Self, Error> {
        let target = postgres.map(PgTarget::parse).transpose()?;
        let root = Arc::new(RootKey::load_or_create(&dir.join("root.key"))?);
        let (state_db, audit_db) = match target {
            Some(target) => (
                Database::Postgres(target.clone()),
                Database::Postgres(target),
            ),
            None => (
                Database::Sqlite(dir.join("state.db")),
                Database::Sqlite(dir.join("audit.db")),
            ),
        };
        let store = Arc::new(Store::open(&state_db)?);
        let meta = Meta {
            store,
            root,
            audit_db,
        };
        // Read first: a replica with the wrong key writes nothing at all.
        let sealed = match meta.get(ROOT_KEY_CHECK)? {
            Some(sealed) => sealed,
            None => meta.get_or_init(ROOT_KEY_CHECK, || {
                meta.root.seal(ROOT_KEY_CHECK, ROOT_KEY_CHECK.as_bytes())
            })?,
        };
        meta.root
            .open(ROOT_KEY_CHECK, &sealed)
            .map_err(|_| Error::WrongRootKey)?;
        Ok(meta)
    }

    /// Where the audit log lives: beside the state (`dir/audit.db`), or in the same
    /// PostgreSQL database.
    pub fn audit_db(&self) -> &Database {
        &self.audit_db
    }

    /// The state database, for the services.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The root key, for the services that seal with it.
    pub fn root(&self) -> &Arc<RootKey> {
        &self.root
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.read(|tx| tx.meta_get(key))?)
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(self.store.write(|tx| tx.meta_put(key, value))?)
    }

    /// The value of `key`, set to `init()` in the same transaction if it was not.
    pub fn get_or_init(&self, key: &str, init: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(self.store.write(|tx| match tx.meta_get(key)? {
            Some(v) => Ok::<_, StoreError>(v),
            None => {
                let v = init();
                tx.meta_put(key, &v)?;
                Ok(v)
            }
        })?)
    }

    /// A text value, set to `init()` if it was not.
    pub fn text_or_init(&self, key: &str, init: impl FnOnce() -> String) -> Result<String, Error> {
        let bytes = self.get_or_init(key, || init().into_bytes())?;
        String::from_utf8(bytes)
            .map_err(|_| Error::Damaged(format!("meta value '{key}' is not UTF-8")))
    }

    /// The secret sealed under `key`, opened.
    pub fn sealed_get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        match self.get(key)? {
            Some(sealed) => Ok(Some(Zeroizing::new(self.root.open(key, &sealed)?))),
            None => Ok(None),
        }
    }

    /// Seals `plaintext` under `key`.
    pub fn sealed_put(&self, key: &str, plaintext: &[u8]) -> Result<(), Error> {
        self.put(key, &self.root.seal(key, plaintext))
    }
}
