//! The compute service: disk encryption sets, disks and their data keys, virtual machines,
//! and the disks a running machine has open.
//!
//! Customer-managed keys are reached only through [`KeyVaultAccess`], as the disk
//! encryption set's managed identity, so every wrap and unwrap is authorized and audited
//! by the vault like any client's call.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use atrest_core::compute::{check_compute_name, check_disk_size_gb, EncryptionType, KeyUrl};
use atrest_core::vault::normalize_location;
use atrest_crypto::RootKey;
use atrest_identity::{new_uuid, Identity};
use atrest_store::Store;
use atrest_xts::XtsKey;
use tokio::sync::Mutex as AsyncMutex;
use zeroize::Zeroizing;

use crate::blocks::EncryptedFile;
use crate::error::ComputeError;
use crate::keys::{new_dek, xts_key, KeyAccessError, KeyVaultAccess, PlatformKeys};
use crate::model::{
    Disk, DiskEncryptionSet, KeyRef, VirtualMachine, WrappedDek, DES_KIND, DISK_KIND, VM_KIND,
};

/// RSA sizes a disk encryption set's key may have.
const RSA_SIZES: [u32; 3] = [2048, 3072, 4096];

/// Fields of a disk encryption set create or update; `None` keeps (or defaults) a value.
#[derive(Debug, Clone, Default)]
pub struct DesRequest {
    /// Location (required on create).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `encryptionType`.
    pub encryption_type: Option<String>,
    /// `activeKey.keyUrl`.
    pub key_url: Option<String>,
    /// `activeKey.sourceVault.id`.
    pub source_vault: Option<String>,
    /// `rotationToLatestKeyVersionEnabled`.
    pub rotation_to_latest_key_version: Option<bool>,
}

/// Fields of a disk create or update.
#[derive(Debug, Clone, Default)]
pub struct DiskRequest {
    /// Location (required on create).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `diskSizeGB` (required on create).
    pub size_gb: Option<i64>,
    /// `encryption.type`.
    pub encryption_type: Option<String>,
    /// `encryption.diskEncryptionSetId`: a resource id or a name in the disk's group.
    pub disk_encryption_set: Option<String>,
}

/// Fields of a virtual machine create or update.
#[derive(Debug, Clone, Default)]
pub struct VmRequest {
    /// Location (defaults to the first disk's).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Data disks by name or resource id, in LUN order.
    pub disks: Option<Vec<String>>,
}

/// A disk being served: its block file with the data keys in memory.
pub struct OpenDisk {
    /// The NBD export name, `RESOURCE_GROUP/DISK`.
    pub export: String,
    resource_group: String,
    name: String,
    /// The blocks.
    pub file: EncryptedFile,
    /// Set when its machine stops: the export is gone for good.
    closed: AtomicBool,
}

impl OpenDisk {
    /// Whether the export has ended (its machine stopped).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Err(e) = self.file.flush() {
            tracing::warn!(disk = %self.name, error = %e, "flushing a disk at stop failed");
        }
        self.file.revoke();
    }
}

impl std::fmt::Debug for OpenDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDisk")
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

/// Where the compute service lives and what it reaches.
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// The subscription every resource belongs to.
    pub subscription: String,
    /// Directory of the block files.
    pub blocks_dir: PathBuf,
    /// Host suffix of vault URLs (`.vault.localhost`).
    pub vault_host_suffix: String,
}

/// The compute service.
pub struct Compute {
    store: Arc<Store>,
    vaults: Arc<dyn KeyVaultAccess>,
    platform: PlatformKeys,
    config: ComputeConfig,
    /// Open disks by export name (lower-cased).
    open: RwLock<HashMap<String, Arc<OpenDisk>>>,
    /// Serializes changes, so a change that waits on a vault does not race another.
    changes: AsyncMutex<()>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether `disk` is protected through `des`.
fn uses_set(disk: &Disk, des: &DiskEncryptionSet) -> bool {
    disk.disk_encryption_set
        .as_deref()
        .is_some_and(|id| id.eq_ignore_ascii_case(&des.id))
}

fn not_found(kind: &'static str, resource_group: &str, name: &str) -> ComputeError {
    ComputeError::NotFound {
        kind,
        resource_group: resource_group.to_owned(),
        name: name.to_owned(),
    }
}

/// The name in a resource id of `kind` (or a bare name), with the resource group it names.
fn resource_ref<'a>(reference: &'a str, kind: &str, default_group: &'a str) -> (&'a str, &'a str) {
    let segments: Vec<&str> = reference.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["subscriptions", _, rg_kw, rg, "providers", provider, k, name]
            if rg_kw.eq_ignore_ascii_case("resourceGroups")
                && provider.eq_ignore_ascii_case("Microsoft.Compute")
                && k.eq_ignore_ascii_case(kind) =>
        {
            (rg, name)
        }
        _ => (default_group, reference),
    }
}

impl Compute {
    /// The service over `store`, creating the platform key on first use.
    pub fn new(
        store: Arc<Store>,
        root: &RootKey,
        vaults: Arc<dyn KeyVaultAccess>,
        config: ComputeConfig,
        now: i64,
    ) -> Result<Self, ComputeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.blocks_dir)
            .map_err(|e| {
                ComputeError::Internal(format!("cannot create the disk directory: {e}"))
            })?;
        Ok(Compute {
            platform: PlatformKeys::load(&store, root, now)?,
            store,
            vaults,
            config,
            open: RwLock::new(HashMap::new()),
            changes: AsyncMutex::new(()),
        })
    }

    fn resource_id(&self, resource_group: &str, kind: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/{kind}/{name}",
            self.config.subscription
        )
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        resource_group: &str,
        name: &str,
    ) -> Result<T, ComputeError> {
        self.store
            .read(|tx| tx.resource(kind, resource_group, name))?
            .ok_or_else(|| not_found(kind, resource_group, name))
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<T>, ComputeError> {
        Ok(self.store.read(|tx| tx.resources(kind, resource_group))?)
    }

    fn save_des(&self, des: &DiskEncryptionSet) -> Result<(), ComputeError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(DES_KIND, &des.resource_group, &des.name, des))?)
    }

    fn save_disk(&self, disk: &Disk) -> Result<(), ComputeError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(DISK_KIND, &disk.resource_group, &disk.name, disk))?)
    }

    fn save_vm(&self, vm: &VirtualMachine) -> Result<(), ComputeError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(VM_KIND, &vm.resource_group, &vm.name, vm))?)
    }

    // ---- disk encryption sets ----

    /// A disk encryption set.
    pub fn get_des(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        self.get(DES_KIND, resource_group, name)
    }

    /// Disk encryption sets of one resource group, or all.
    pub fn list_des(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<DiskEncryptionSet>, ComputeError> {
        self.list(DES_KIND, resource_group)
    }

    /// Checks a key for a disk encryption set in `location`: a versioned key of a vault
    /// in the same location with purge protection, RSA 2048–4096, enabled.
    fn validate_key(
        &self,
        key_url: &str,
        source_vault: Option<&str>,
        location: &str,
    ) -> Result<KeyRef, ComputeError> {
        let key = KeyUrl::parse(key_url, &self.config.vault_host_suffix)?;
        let described = self
            .vaults
            .describe(&key.vault, &key.name, &key.version)
            .map_err(|e| ComputeError::invalid("KeyVaultNotFound", e.message))?;
        if let Some(given) = source_vault {
            if !given.eq_ignore_ascii_case(&described.vault_resource_id) {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The source vault '{given}' does not hold the key '{key_url}'; its vault is '{}'.", described.vault_resource_id),
                ));
            }
        }
        if described.vault_location != location {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The key vault '{}' is in location '{}', but the disk encryption set is in '{location}'. They must be in the same location.", key.vault, described.vault_location),
            ));
        }
        if !described.purge_protection {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The key vault '{}' must have soft delete and purge protection enabled to be used by a disk encryption set.", key.vault),
            ));
        }
        match (described.kty.as_deref(), described.key_size) {
            (None, _) => {
                return Err(ComputeError::invalid(
                    "KeyVaultKeyNotFound",
                    format!("The key '{key_url}' was not found."),
                ))
            }
            (Some("RSA" | "RSA-HSM"), Some(size)) if RSA_SIZES.contains(&size) => {}
            (Some(kty), size) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The key '{key_url}' is {kty}{}; a disk encryption set needs an RSA key of 2048, 3072 or 4096 bits.", size.map(|s| format!(" {s}")).unwrap_or_default()),
                ))
            }
        }
        if !described.usable {
            return Err(ComputeError::invalid(
                "KeyVaultKeyDisabled",
                format!("The key '{key_url}' is disabled, expired or not yet valid."),
            ));
        }
        Ok(KeyRef {
            key_url: key_url.to_owned(),
            source_vault: described.vault_resource_id,
        })
    }

    /// Proves the set's identity can get, wrap and unwrap its key, by doing it.
    async fn check_access(
        &self,
        des: &DiskEncryptionSet,
        key_url: &str,
    ) -> Result<(), ComputeError> {
        let forbidden = |cause: KeyAccessError| ComputeError::KeyVaultAccessForbidden {
            key_url: key_url.to_owned(),
            des: des.name.clone(),
            cause,
        };
        self.vaults
            .get_key(&des.id, key_url)
            .await
            .map_err(forbidden)?;
        let probe = new_dek();
        let wrapped = self
            .vaults
            .wrap_key(&des.id, key_url, probe.as_ref())
            .await
            .map_err(forbidden)?;
        let back = self
            .vaults
            .unwrap_key(&des.id, key_url, &wrapped)
            .await
            .map_err(forbidden)?;
        if back.as_slice() != probe.as_ref() {
            return Err(ComputeError::Internal(
                "a wrapped probe key did not unwrap to itself".into(),
            ));
        }
        Ok(())
    }

    /// Creates or updates a disk encryption set. A new set gets a system-assigned managed
    /// identity; a new key is validated, tried as that identity, and every disk of the
    /// set is rewrapped to it.
    pub async fn put_des(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
        req: &DesRequest,
        now: i64,
    ) -> Result<(DiskEncryptionSet, bool), ComputeError> {
        check_compute_name("disk encryption set", name)?;
        let _guard = self.changes.lock().await;
        let existing: Option<DiskEncryptionSet> = self
            .store
            .read(|tx| tx.resource(DES_KIND, resource_group, name))?;
        let Some(mut des) = existing else {
            let des = self.create_des(identity, resource_group, name, req, now)?;
            return Ok((des, true));
        };
        if let Some(location) = &req.location {
            if normalize_location(location).ok().as_deref() != Some(des.location.as_str()) {
                return Err(ComputeError::invalid(
                    "PropertyChangeNotAllowed",
                    "Changing property 'location' is not allowed.",
                ));
            }
        }
        if let Some(t) = &req.encryption_type {
            if EncryptionType::parse(t)? != des.encryption() {
                return Err(ComputeError::invalid(
                    "PropertyChangeNotAllowed",
                    "Changing property 'encryptionType' is not allowed.",
                ));
            }
        }
        if let Some(tags) = &req.tags {
            des.tags = tags.clone();
        }
        if let Some(r) = req.rotation_to_latest_key_version {
            des.rotation_to_latest_key_version = r;
        }
        match &req.key_url {
            Some(url) if !url.eq_ignore_ascii_case(&des.active_key.key_url) => {
                let key = self.validate_key(url, req.source_vault.as_deref(), &des.location)?;
                self.check_access(&des, &key.key_url).await?;
                self.rotate_des(des, key, now).await
            }
            _ => {
                self.save_des(&des)?;
                Ok((des, false))
            }
        }
    }

    fn create_des(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
        req: &DesRequest,
        now: i64,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let location = normalize_location(req.location.as_deref().ok_or_else(|| {
            ComputeError::invalid(
                "LocationRequired",
                "The location property is required for this definition.",
            )
        })?)
        .map_err(|e| ComputeError::invalid("LocationNotAvailableForResourceType", e.to_string()))?;
        let encryption = match &req.encryption_type {
            Some(t) => EncryptionType::parse(t)?,
            None => EncryptionType::CustomerKey,
        };
        if !encryption.uses_customer_key() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "A disk encryption set's encryptionType must be EncryptionAtRestWithCustomerKey or EncryptionAtRestWithPlatformAndCustomerKeys.",
            ));
        }
        let key_url = req.key_url.as_deref().ok_or_else(|| {
            ComputeError::invalid(
                "InvalidParameter",
                "Required parameter 'activeKey.keyUrl' is missing (null).",
            )
        })?;
        let active_key = self.validate_key(key_url, req.source_vault.as_deref(), &location)?;
        let id = self.resource_id(resource_group, DES_KIND, name);
        let mi = identity
            .create_managed_identity(name, &id, now)
            .map_err(ComputeError::Store)?;
        let des = DiskEncryptionSet {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id,
            location,
            tags: req.tags.clone().unwrap_or_default(),
            encryption_type: encryption.as_str().to_owned(),
            active_key,
            previous_keys: Vec::new(),
            rotation_to_latest_key_version: req.rotation_to_latest_key_version.unwrap_or(false),
            last_key_rotation: None,
            auto_key_rotation_error: None,
            principal_id: mi.principal.object_id.clone(),
            created: now,
        };
        if let Err(e) = self.save_des(&des) {
            let _ = identity.delete_principal(&mi.principal.object_id);
            return Err(e);
        }
        Ok(des)
    }

    /// Makes `key` the set's active key and rewraps every disk of the set to it. The old
    /// key is listed in `previousKeys` until every disk is rewrapped.
    async fn rotate_des(
        &self,
        mut des: DiskEncryptionSet,
        key: KeyRef,
        now: i64,
    ) -> Result<(DiskEncryptionSet, bool), ComputeError> {
        let old = std::mem::replace(&mut des.active_key, key);
        des.previous_keys.push(old);
        des.last_key_rotation = Some(now);
        self.save_des(&des)?;
        Ok((self.rewrap_disks(des).await?, false))
    }

    /// Rewraps every disk of the set still wrapped by an older key; `previousKeys` empties
    /// once none is left, and a failure is kept as `autoKeyRotationError`.
    async fn rewrap_disks(
        &self,
        mut des: DiskEncryptionSet,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let disks: Vec<Disk> = self.list(DISK_KIND, None)?;
        let mut failures = Vec::new();
        for mut disk in disks.into_iter().filter(|d| uses_set(d, &des)) {
            match self.rewrap_customer_layer(&des, &mut disk).await {
                Ok(()) => self.save_disk(&disk)?,
                Err(e) => failures.push(format!("disk '{}': {e}", disk.name)),
            }
        }
        if failures.is_empty() {
            des.previous_keys.clear();
            des.auto_key_rotation_error = None;
        } else {
            des.auto_key_rotation_error = Some(failures.join("; "));
        }
        self.save_des(&des)?;
        Ok(des)
    }

    /// Unwraps a disk's customer-wrapped data key with the key that wrapped it and wraps
    /// it again with the set's active key. The data key, and so every block, is unchanged.
    async fn rewrap_customer_layer(
        &self,
        des: &DiskEncryptionSet,
        disk: &mut Disk,
    ) -> Result<(), ComputeError> {
        for layer in &mut disk.keys {
            if let WrappedDek::Customer { key_url, wrapped } = layer {
                if key_url.eq_ignore_ascii_case(&des.active_key.key_url) {
                    continue;
                }
                let dek = self
                    .unwrap_customer(des, &disk.name, key_url, wrapped)
                    .await?;
                *wrapped = self
                    .wrap_customer(des, &des.active_key.key_url, &dek)
                    .await?;
                key_url.clone_from(&des.active_key.key_url);
            }
        }
        Ok(())
    }

    async fn wrap_customer(
        &self,
        des: &DiskEncryptionSet,
        key_url: &str,
        dek: &[u8],
    ) -> Result<Vec<u8>, ComputeError> {
        self.vaults
            .wrap_key(&des.id, key_url, dek)
            .await
            .map_err(|cause| ComputeError::KeyVaultAccessForbidden {
                key_url: key_url.to_owned(),
                des: des.name.clone(),
                cause,
            })
    }

    async fn unwrap_customer(
        &self,
        des: &DiskEncryptionSet,
        disk: &str,
        key_url: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ComputeError> {
        self.vaults
            .unwrap_key(&des.id, key_url, wrapped)
            .await
            .map_err(|cause| ComputeError::KeyUnusable {
                disk: disk.to_owned(),
                key_url: key_url.to_owned(),
                cause,
            })
    }

    /// Deletes a disk encryption set and its identity; refused while a disk uses it.
    pub async fn delete_des(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let Some(des) = self
            .store
            .read(|tx| tx.resource::<DiskEncryptionSet>(DES_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        let users: Vec<String> = self
            .list::<Disk>(DISK_KIND, None)?
            .into_iter()
            .filter(|d| uses_set(d, &des))
            .map(|d| d.name)
            .collect();
        if !users.is_empty() {
            return Err(ComputeError::conflict(
                "DiskEncryptionSetInUse",
                format!("The disk encryption set '{name}' is in use by disk(s) {}; delete them or move them to another set first.", users.join(", ")),
            ));
        }
        self.store
            .write(|tx| tx.delete_resource(DES_KIND, resource_group, name))?;
        identity.delete_principal(&des.principal_id)?;
        Ok(true)
    }

    /// Adopts the newest version of the active key for every set that asks for it.
    pub async fn rotate_to_latest(&self, now: i64) -> Result<(), ComputeError> {
        for des in self.list_des(None)? {
            if !des.rotation_to_latest_key_version {
                continue;
            }
            let Some(versionless) = des
                .active_key
                .key_url
                .rsplit_once('/')
                .map(|(k, _)| k.to_owned())
            else {
                continue;
            };
            let latest = match self.vaults.get_key(&des.id, &versionless).await {
                Ok(v) => v.kid,
                Err(e) => {
                    self.record_rotation_error(&des, e.to_string())?;
                    continue;
                }
            };
            let _guard = self.changes.lock().await;
            let des: DiskEncryptionSet = self.get(DES_KIND, &des.resource_group, &des.name)?;
            if !latest.eq_ignore_ascii_case(&des.active_key.key_url) {
                tracing::info!(des = %des.name, key = %latest, "adopting the latest key version");
                let key = KeyRef {
                    key_url: latest,
                    source_vault: des.active_key.source_vault.clone(),
                };
                self.rotate_des(des, key, now).await?;
            } else if !des.previous_keys.is_empty() {
                self.rewrap_disks(des).await?;
            }
        }
        Ok(())
    }

    fn record_rotation_error(
        &self,
        des: &DiskEncryptionSet,
        error: String,
    ) -> Result<(), ComputeError> {
        if des.auto_key_rotation_error.as_deref() != Some(error.as_str()) {
            let mut des = des.clone();
            des.auto_key_rotation_error = Some(error);
            self.save_des(&des)?;
        }
        Ok(())
    }

    // ---- disks ----

    /// A disk.
    pub fn get_disk(&self, resource_group: &str, name: &str) -> Result<Disk, ComputeError> {
        self.get(DISK_KIND, resource_group, name)
    }

    /// Disks of one resource group, or all.
    pub fn list_disks(&self, resource_group: Option<&str>) -> Result<Vec<Disk>, ComputeError> {
        self.list(DISK_KIND, resource_group)
    }

    /// The disk encryption set a request names, checked against the disk's location and
    /// encryption type.
    fn des_for(
        &self,
        reference: &str,
        resource_group: &str,
        location: &str,
        encryption: EncryptionType,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let (rg, name) = resource_ref(reference, DES_KIND, resource_group);
        let des: DiskEncryptionSet = self
            .store
            .read(|tx| tx.resource(DES_KIND, rg, name))?
            .ok_or_else(|| {
                ComputeError::invalid(
                    "NotFound",
                    format!("The disk encryption set '{reference}' was not found."),
                )
            })?;
        if des.location != location {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The disk encryption set '{}' is in location '{}'; a disk in '{location}' cannot use it.", des.name, des.location),
            ));
        }
        if des.encryption() != encryption {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The disk's encryption type {} does not match the encryption type {} of disk encryption set '{}'.", encryption.as_str(), des.encryption_type, des.name),
            ));
        }
        Ok(des)
    }

    /// The encryption type a request asks for, given whether it names a set.
    fn requested_encryption(req: &DiskRequest) -> Result<Option<EncryptionType>, ComputeError> {
        Ok(match (&req.encryption_type, &req.disk_encryption_set) {
            (Some(t), _) => Some(EncryptionType::parse(t)?),
            (None, Some(_)) => Some(EncryptionType::CustomerKey),
            (None, None) => None,
        })
    }

    /// Creates or updates a disk. New disks get fresh data keys wrapped as their
    /// encryption type says; an update may grow the disk or move it from the platform key
    /// to a customer key (or to another set), which rewraps its data key and nothing else.
    pub async fn put_disk(
        &self,
        resource_group: &str,
        name: &str,
        req: &DiskRequest,
        now: i64,
    ) -> Result<(Disk, bool), ComputeError> {
        check_compute_name("disk", name)?;
        let _guard = self.changes.lock().await;
        let existing: Option<Disk> = self
            .store
            .read(|tx| tx.resource(DISK_KIND, resource_group, name))?;
        match existing {
            None => Ok((
                self.create_disk(resource_group, name, req, now).await?,
                true,
            )),
            Some(disk) => Ok((self.update_disk(disk, req).await?, false)),
        }
    }

    async fn create_disk(
        &self,
        resource_group: &str,
        name: &str,
        req: &DiskRequest,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        let location = normalize_location(req.location.as_deref().ok_or_else(|| {
            ComputeError::invalid(
                "LocationRequired",
                "The location property is required for this definition.",
            )
        })?)
        .map_err(|e| ComputeError::invalid("LocationNotAvailableForResourceType", e.to_string()))?;
        let size_gb = check_disk_size_gb(req.size_gb.ok_or_else(|| {
            ComputeError::invalid(
                "InvalidParameter",
                "Required parameter 'diskSizeGB' is missing (null).",
            )
        })?)?;
        let encryption = Self::requested_encryption(req)?.unwrap_or(EncryptionType::PlatformKey);
        let des = match (&req.disk_encryption_set, encryption.uses_customer_key()) {
            (Some(reference), true) => Some(self.des_for(reference, resource_group, &location, encryption)?),
            (None, true) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Encryption type {} requires a disk encryption set (encryption.diskEncryptionSetId).", encryption.as_str()),
                ))
            }
            (Some(_), false) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    "A disk encryption set cannot be used with EncryptionAtRestWithPlatformKey.",
                ))
            }
            (None, false) => None,
        };
        let unique_id = new_uuid();
        let mut keys = Vec::new();
        if encryption != EncryptionType::CustomerKey {
            let dek = new_dek();
            let (version, wrapped) = self.platform.wrap(&unique_id, dek.as_ref());
            keys.push(WrappedDek::Platform { version, wrapped });
        }
        if let Some(des) = &des {
            let key_url = &des.active_key.key_url;
            self.check_access(des, key_url).await?;
            let dek = new_dek();
            let wrapped = self.wrap_customer(des, key_url, dek.as_ref()).await?;
            keys.push(WrappedDek::Customer {
                key_url: key_url.clone(),
                wrapped,
            });
        }
        let disk = Disk {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: self.resource_id(resource_group, DISK_KIND, name),
            location,
            tags: req.tags.clone().unwrap_or_default(),
            size_gb,
            unique_id,
            encryption_type: encryption.as_str().to_owned(),
            disk_encryption_set: des.map(|d| d.id),
            keys,
            managed_by: None,
            key_error: None,
            created: now,
        };
        self.save_disk(&disk)?;
        Ok(disk)
    }

    async fn update_disk(&self, mut disk: Disk, req: &DiskRequest) -> Result<Disk, ComputeError> {
        if let Some(location) = &req.location {
            if normalize_location(location).ok().as_deref() != Some(disk.location.as_str()) {
                return Err(ComputeError::invalid(
                    "PropertyChangeNotAllowed",
                    "Changing property 'location' is not allowed.",
                ));
            }
        }
        if let Some(size) = req.size_gb {
            let size = check_disk_size_gb(size)?;
            if size < disk.size_gb {
                return Err(ComputeError::invalid(
                    "BadRequest",
                    format!(
                        "Disk '{}' cannot shrink from {} GB to {size} GB.",
                        disk.name, disk.size_gb
                    ),
                ));
            }
            if size != disk.size_gb && self.is_open(&disk) {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!(
                        "Disk '{}' cannot be resized while its virtual machine runs.",
                        disk.name
                    ),
                ));
            }
            disk.size_gb = size;
        }
        if let Some(tags) = &req.tags {
            disk.tags = tags.clone();
        }
        let target = Self::requested_encryption(req)?;
        let from = disk.encryption();
        match target {
            None => {}
            Some(to) if to == from && req.disk_encryption_set.is_none() => {}
            Some(EncryptionType::PlatformKey) if from == EncryptionType::PlatformKey => {}
            Some(EncryptionType::PlatformKey) => {
                return Err(ComputeError::invalid(
                    "OperationNotAllowed",
                    format!("Disk '{}' uses a customer-managed key; changing it back to EncryptionAtRestWithPlatformKey is not supported.", disk.name),
                ));
            }
            Some(to) => {
                let reference = req.disk_encryption_set.as_deref().ok_or_else(|| {
                    ComputeError::invalid(
                        "InvalidParameter",
                        format!("Encryption type {} requires a disk encryption set (encryption.diskEncryptionSetId).", to.as_str()),
                    )
                })?;
                if from != to
                    && !(from == EncryptionType::PlatformKey && to == EncryptionType::CustomerKey)
                {
                    return Err(ComputeError::invalid(
                        "OperationNotAllowed",
                        format!("Disk '{}' cannot change from {} to {}: that would need a new data key and rewriting every block. Create a new disk instead.", disk.name, from.as_str(), to.as_str()),
                    ));
                }
                let des = self.des_for(reference, &disk.resource_group, &disk.location, to)?;
                self.check_access(&des, &des.active_key.key_url).await?;
                self.move_to_set(&mut disk, &des).await?;
                disk.encryption_type = to.as_str().to_owned();
                disk.disk_encryption_set = Some(des.id);
            }
        }
        self.save_disk(&disk)?;
        Ok(disk)
    }

    /// Wraps the disk's customer layer (or, coming from the platform key, its only data
    /// key) with `des`'s active key.
    async fn move_to_set(
        &self,
        disk: &mut Disk,
        des: &DiskEncryptionSet,
    ) -> Result<(), ComputeError> {
        let current_set = match &disk.disk_encryption_set {
            Some(id) => {
                let (rg, name) = resource_ref(id, DES_KIND, &disk.resource_group);
                Some(self.get::<DiskEncryptionSet>(DES_KIND, rg, name)?)
            }
            None => None,
        };
        let key_url = des.active_key.key_url.clone();
        let index = disk.keys.len() - 1;
        let dek = match (&disk.keys[index], &current_set) {
            (WrappedDek::Platform { version, wrapped }, _) => {
                self.platform.unwrap(&disk.unique_id, *version, wrapped)?
            }
            (WrappedDek::Customer { key_url, wrapped }, Some(current)) => {
                self.unwrap_customer(current, &disk.name, key_url, wrapped)
                    .await?
            }
            (WrappedDek::Customer { .. }, None) => {
                return Err(ComputeError::Internal(format!(
                    "disk '{}' has a customer key but no set",
                    disk.name
                )))
            }
        };
        let wrapped = self.wrap_customer(des, &key_url, &dek).await?;
        disk.keys[index] = WrappedDek::Customer { key_url, wrapped };
        Ok(())
    }

    /// Deletes a disk: its wrapped data keys and its blocks. Without the data keys the
    /// blocks could not be read even if a copy survived (crypto-shredding).
    pub async fn delete_disk(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let Some(disk) = self
            .store
            .read(|tx| tx.resource::<Disk>(DISK_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        if let Some(vm) = &disk.managed_by {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("Disk '{name}' is attached to virtual machine '{vm}'; detach it first."),
            ));
        }
        self.store
            .write(|tx| tx.delete_resource(DISK_KIND, resource_group, name))?;
        self.store.scrub()?;
        match std::fs::remove_file(self.blocks_path(&disk)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ComputeError::Internal(format!(
                    "cannot remove the blocks of disk '{name}': {e}"
                )))
            }
        }
        Ok(true)
    }

    fn blocks_path(&self, disk: &Disk) -> PathBuf {
        self.config
            .blocks_dir
            .join(format!("{}.blocks", disk.unique_id))
    }

    /// The NBD export name of a disk, `resource_group/name`, lower-cased.
    pub fn export_name(resource_group: &str, name: &str) -> String {
        format!("{resource_group}/{name}").to_ascii_lowercase()
    }

    fn is_open(&self, disk: &Disk) -> bool {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&Self::export_name(&disk.resource_group, &disk.name))
    }

    /// Unwraps every data key of a disk, innermost first.
    async fn unwrap_layers(&self, disk: &Disk) -> Result<Vec<XtsKey>, ComputeError> {
        let mut layers = Vec::with_capacity(disk.keys.len());
        for layer in &disk.keys {
            let dek = match layer {
                WrappedDek::Platform { version, wrapped } => {
                    self.platform.unwrap(&disk.unique_id, *version, wrapped)?
                }
                WrappedDek::Customer { key_url, wrapped } => {
                    let id = disk.disk_encryption_set.as_deref().unwrap_or_default();
                    let (rg, name) = resource_ref(id, DES_KIND, &disk.resource_group);
                    let des: DiskEncryptionSet = self.get(DES_KIND, rg, name)?;
                    self.unwrap_customer(&des, &disk.name, key_url, wrapped)
                        .await?
                }
            };
            layers.push(xts_key(&dek)?);
        }
        Ok(layers)
    }

    /// Records (or clears) why a disk's key could not be used. One read-modify-write
    /// transaction, since key checks run beside changes to the disk.
    fn set_key_error(
        &self,
        resource_group: &str,
        name: &str,
        error: Option<String>,
    ) -> Result<(), ComputeError> {
        self.store.write(
            |tx| match tx.resource::<Disk>(DISK_KIND, resource_group, name)? {
                Some(mut disk) if disk.key_error != error => {
                    disk.key_error = error;
                    tx.put_resource(DISK_KIND, resource_group, name, &disk)
                }
                _ => Ok(()),
            },
        )?;
        Ok(())
    }

    // ---- virtual machines ----

    /// A virtual machine.
    pub fn get_vm(&self, resource_group: &str, name: &str) -> Result<VirtualMachine, ComputeError> {
        self.get(VM_KIND, resource_group, name)
    }

    /// Virtual machines of one resource group, or all.
    pub fn list_vms(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<VirtualMachine>, ComputeError> {
        self.list(VM_KIND, resource_group)
    }

    /// Creates or updates a virtual machine; its disks can change only while it is stopped.
    pub async fn put_vm(
        &self,
        resource_group: &str,
        name: &str,
        req: &VmRequest,
        now: i64,
    ) -> Result<(VirtualMachine, bool), ComputeError> {
        check_compute_name("virtual machine", name)?;
        let _guard = self.changes.lock().await;
        let existing: Option<VirtualMachine> = self
            .store
            .read(|tx| tx.resource(VM_KIND, resource_group, name))?;
        let created = existing.is_none();
        let mut vm = existing.unwrap_or_else(|| VirtualMachine {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: self.resource_id(resource_group, VM_KIND, name),
            location: String::new(),
            tags: BTreeMap::new(),
            disks: Vec::new(),
            running: false,
            created: now,
        });
        if let Some(tags) = &req.tags {
            vm.tags = tags.clone();
        }
        let requested = req.disks.clone().unwrap_or_else(|| vm.disks.clone());
        let mut disks = Vec::new();
        for reference in &requested {
            let (rg, disk_name) = resource_ref(reference, DISK_KIND, resource_group);
            if !rg.eq_ignore_ascii_case(resource_group) {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Disk '{reference}' is in resource group '{rg}'; attach disks from '{resource_group}'."),
                ));
            }
            let disk: Disk = self
                .store
                .read(|tx| tx.resource(DISK_KIND, rg, disk_name))?
                .ok_or_else(|| {
                    ComputeError::invalid(
                        "NotFound",
                        format!("The disk '{disk_name}' was not found in resource group '{rg}'."),
                    )
                })?;
            if let Some(owner) = disk
                .managed_by
                .as_deref()
                .filter(|o| !o.eq_ignore_ascii_case(name))
            {
                return Err(ComputeError::conflict(
                    "AttachDiskWhileBeingDetached",
                    format!(
                        "Disk '{}' is already attached to virtual machine '{owner}'.",
                        disk.name
                    ),
                ));
            }
            if disks
                .iter()
                .any(|d: &Disk| d.name.eq_ignore_ascii_case(&disk.name))
            {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Disk '{}' is listed twice.", disk.name),
                ));
            }
            disks.push(disk);
        }
        let location = match (&req.location, disks.first()) {
            (Some(l), _) => normalize_location(l).map_err(|e| {
                ComputeError::invalid("LocationNotAvailableForResourceType", e.to_string())
            })?,
            (None, _) if !vm.location.is_empty() => vm.location.clone(),
            (None, Some(d)) => d.location.clone(),
            (None, None) => {
                return Err(ComputeError::invalid(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ))
            }
        };
        if !created && location != vm.location {
            return Err(ComputeError::invalid(
                "PropertyChangeNotAllowed",
                "Changing property 'location' is not allowed.",
            ));
        }
        if let Some(d) = disks.iter().find(|d| d.location != location) {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!(
                    "Disk '{}' is in location '{}'; the virtual machine is in '{location}'.",
                    d.name, d.location
                ),
            ));
        }
        let names: Vec<String> = disks.iter().map(|d| d.name.clone()).collect();
        let changed = names.len() != vm.disks.len()
            || names
                .iter()
                .zip(&vm.disks)
                .any(|(a, b)| !a.eq_ignore_ascii_case(b));
        if changed && vm.running {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "The disks of virtual machine '{name}' can change only while it is stopped."
                ),
            ));
        }
        vm.location = location;
        let detached: Vec<String> = vm
            .disks
            .iter()
            .filter(|old| !names.iter().any(|n| n.eq_ignore_ascii_case(old)))
            .cloned()
            .collect();
        vm.disks = names;
        self.store.write(|tx| {
            for old in &detached {
                if let Some(mut d) = tx.resource::<Disk>(DISK_KIND, resource_group, old)? {
                    d.managed_by = None;
                    tx.put_resource(DISK_KIND, resource_group, &d.name, &d)?;
                }
            }
            for d in &mut disks {
                d.managed_by = Some(vm.name.clone());
                tx.put_resource(DISK_KIND, resource_group, &d.name, d)?;
            }
            tx.put_resource(VM_KIND, resource_group, &vm.name, &vm)
        })?;
        Ok((vm, created))
    }

    /// Starts a virtual machine: unwraps the data keys of each disk and exports it. Any
    /// unusable key refuses the start, naming the key and why, and nothing is exported.
    pub async fn start_vm(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<VirtualMachine, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, name)?;
        let mut opened = Vec::new();
        for disk_name in &vm.disks {
            let disk: Disk = self.get(DISK_KIND, resource_group, disk_name)?;
            let layers = match self.unwrap_layers(&disk).await {
                Ok(layers) => layers,
                Err(e) => {
                    if matches!(e, ComputeError::KeyUnusable { .. }) {
                        self.set_key_error(resource_group, disk_name, Some(e.to_string()))?;
                    }
                    return Err(e);
                }
            };
            self.set_key_error(resource_group, disk_name, None)?;
            let file = EncryptedFile::open(&self.blocks_path(&disk), disk.size_bytes(), layers)?;
            opened.push(Arc::new(OpenDisk {
                export: Self::export_name(resource_group, &disk.name),
                resource_group: resource_group.to_owned(),
                name: disk.name.clone(),
                file,
                closed: AtomicBool::new(false),
            }));
        }
        {
            let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
            for disk in opened {
                if let Some(previous) = open.insert(disk.export.clone(), disk) {
                    previous.close();
                }
            }
        }
        vm.running = true;
        self.save_vm(&vm)?;
        Ok(vm)
    }

    /// Starts again the machines that were running when the server last stopped. One whose
    /// keys cannot be unwrapped stays stopped, and its disk shows why.
    pub async fn resume(&self) -> Result<(), ComputeError> {
        for vm in self.list_vms(None)?.into_iter().filter(|vm| vm.running) {
            if let Err(e) = self.start_vm(&vm.resource_group, &vm.name).await {
                tracing::warn!(vm = %vm.name, error = %e, "a virtual machine that was running cannot start again");
                let mut stopped = vm;
                stopped.running = false;
                self.save_vm(&stopped)?;
            }
        }
        Ok(())
    }

    /// Stops a virtual machine: flushes its disks, withdraws their keys from memory and
    /// ends their exports.
    pub async fn stop_vm(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<VirtualMachine, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, name)?;
        self.close_disks(&vm);
        vm.running = false;
        self.save_vm(&vm)?;
        Ok(vm)
    }

    fn close_disks(&self, vm: &VirtualMachine) {
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        for disk in &vm.disks {
            if let Some(d) = open.remove(&Self::export_name(&vm.resource_group, disk)) {
                d.close();
            }
        }
    }

    /// Deletes a virtual machine, stopping it first; its disks stay, detached.
    pub async fn delete_vm(&self, resource_group: &str, name: &str) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let Some(vm) = self
            .store
            .read(|tx| tx.resource::<VirtualMachine>(VM_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        self.close_disks(&vm);
        self.store.write(|tx| {
            for disk in &vm.disks {
                if let Some(mut d) = tx.resource::<Disk>(DISK_KIND, resource_group, disk)? {
                    d.managed_by = None;
                    tx.put_resource(DISK_KIND, resource_group, &d.name, &d)?;
                }
            }
            tx.delete_resource(VM_KIND, resource_group, name)
        })?;
        Ok(true)
    }

    /// The open disk exported under `name`.
    pub fn export(&self, name: &str) -> Option<Arc<OpenDisk>> {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Every export name, sorted.
    pub fn export_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Whether the disk's keys are in memory now (`None` when it is not open).
    pub fn key_available(&self, disk: &Disk) -> Option<bool> {
        self.export(&Self::export_name(&disk.resource_group, &disk.name))
            .map(|d| d.file.is_available())
    }

    /// Re-checks the customer-managed key of every open disk by unwrapping its data key
    /// as the set's identity. A refusal wipes the keys from memory, so I/O fails; the
    /// next success brings them back.
    pub async fn check_keys(&self) -> Result<(), ComputeError> {
        let open: Vec<Arc<OpenDisk>> = self
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for disk in open {
            let Some(stored) = self
                .store
                .read(|tx| tx.resource::<Disk>(DISK_KIND, &disk.resource_group, &disk.name))?
            else {
                continue;
            };
            if stored.customer_key().is_none() {
                continue;
            }
            match self.unwrap_layers(&stored).await {
                Ok(layers) => {
                    if !disk.file.is_available() {
                        tracing::info!(disk = %disk.name, "the disk's key is usable again; I/O resumes");
                        disk.file.restore(layers);
                    }
                    self.set_key_error(&disk.resource_group, &disk.name, None)?;
                }
                Err(e @ ComputeError::KeyUnusable { .. }) => {
                    if disk.file.is_available() {
                        tracing::warn!(disk = %disk.name, error = %e, "the disk's key is unusable; I/O stops");
                        disk.file.revoke();
                    }
                    self.set_key_error(&disk.resource_group, &disk.name, Some(e.to_string()))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Flushes every open disk (at shutdown).
    pub fn flush_all(&self) {
        for disk in self.open.read().unwrap_or_else(|p| p.into_inner()).values() {
            if let Err(e) = disk.file.flush() {
                tracing::warn!(disk = %disk.name, error = %e, "flushing a disk failed");
            }
        }
    }
}
