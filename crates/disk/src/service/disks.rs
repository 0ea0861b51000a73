//! Disks: data keys by encryption type, PMK to CMK, deletion, and unwrapping for use.

use super::*;

/// A store a readiness check could not reach.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The state database.
    #[error("the state database: {0}")]
    State(ComputeError),
    /// The block store (the data directory or the object store).
    #[error("the block store: {0}")]
    Blocks(atrest_blocks::BlockError),
}

impl Unreachable {
    /// Which store, as the readiness probe names it: `state` or `blocks`.
    pub fn part(&self) -> &'static str {
        match self {
            Unreachable::State(_) => "state",
            Unreachable::Blocks(_) => "blocks",
        }
    }
}

/// Applies the tags and access settings (`networkAccessPolicy`, `dataAccessAuthMode`) a
/// request gives to a disk or snapshot.
pub(super) fn apply_settings(
    disk: &mut Disk,
    tags: Option<&BTreeMap<String, String>>,
    network_access_policy: Option<&str>,
    data_access_auth_mode: Option<&str>,
) -> Result<(), ComputeError> {
    if let Some(tags) = tags {
        disk.tags = tags.clone();
    }
    if let Some(policy) = network_access_policy {
        disk.network_access_policy = network_policy(policy)?;
    }
    if let Some(mode) = data_access_auth_mode {
        disk.data_access_aad = data_access_aad(mode)?;
    }
    Ok(())
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
    /// `networkAccessPolicy`.
    pub network_access_policy: Option<String>,
    /// `dataAccessAuthMode`: `AzureActiveDirectory` or `None`.
    pub data_access_auth_mode: Option<String>,
    /// `creationData.uploadSizeBytes` of a disk created for upload (`createOption:
    /// Upload`): the VHD's size, footer included.
    pub upload_size_bytes: Option<u64>,
    /// `creationData.sourceResourceId` of a copy (`createOption: Copy`): a disk or snapshot.
    pub source: Option<String>,
    /// `creationData.imageReference` of a disk made `FromImage`: the image's id and the
    /// LUN of its data disk (none: its OS disk).
    pub image: Option<(String, Option<u32>)>,
}

/// Whether `dataAccessAuthMode` asks for Entra ID (`AzureActiveDirectory`) or not (`None`).
pub(super) fn data_access_aad(mode: &str) -> Result<bool, ComputeError> {
    match mode {
        m if m.eq_ignore_ascii_case("AzureActiveDirectory") => Ok(true),
        m if m.eq_ignore_ascii_case("None") => Ok(false),
        other => Err(ComputeError::invalid(
            "InvalidParameter",
            format!("The value '{other}' of parameter 'dataAccessAuthMode' is invalid; use AzureActiveDirectory or None."),
        )),
    }
}

/// The smallest upload Azure takes: 20 MiB of data and the footer.
const MIN_UPLOAD: u64 = (20 << 20) + 512;

/// The data size (and size in GiB, rounded up) of an upload of `bytes`: a whole number of
/// MiB followed by the 512-byte VHD footer.
fn upload_size(bytes: u64) -> Result<(u64, u64), ComputeError> {
    let data = bytes.wrapping_sub(512);
    if bytes < MIN_UPLOAD || !data.is_multiple_of(1 << 20) {
        return Err(ComputeError::invalid(
            "InvalidParameter",
            format!("The value {bytes} of parameter 'uploadSizeBytes' is invalid: it must be a whole number of MiB (at least 20) plus 512 bytes for the VHD footer."),
        ));
    }
    let gib = data.div_ceil(1 << 30);
    let gib = check_disk_size_gb(i64::try_from(gib).unwrap_or(i64::MAX))?;
    Ok((data, gib))
}

/// The `networkAccessPolicy` asked for, in Azure's spelling.
pub(super) fn network_policy(asked: &str) -> Result<String, ComputeError> {
    NETWORK_POLICIES
        .iter()
        .find(|p| p.eq_ignore_ascii_case(asked))
        .map(|p| (*p).to_owned())
        .ok_or_else(|| {
            ComputeError::invalid(
                "InvalidParameter",
                format!("The value '{asked}' of parameter 'networkAccessPolicy' is invalid; use AllowAll, AllowPrivate or DenyAll."),
            )
        })
}

impl Compute {
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
    pub(super) fn des_for(
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
    pub(super) fn requested_encryption(
        req: &DiskRequest,
    ) -> Result<Option<EncryptionType>, ComputeError> {
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
        if req.source.as_deref().map(kind_in_id) == Some(RECOVERY_DISK_KIND) {
            // A recovery point's data is restored through its backup vault only.
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "creationData.sourceResourceId must name a disk or a snapshot.",
            ));
        }
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

    pub(super) async fn create_disk(
        &self,
        resource_group: &str,
        name: &str,
        req: &DiskRequest,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        if let Some(source) = &req.source {
            return self
                .create_copy(resource_group, name, source, req, now)
                .await;
        }
        if let Some((image, lun)) = &req.image {
            let copy = self.image_disk_id(image, *lun, resource_group)?;
            let mut disk = self
                .create_copy(resource_group, name, &copy, req, now)
                .await?;
            disk.create_option = Some("FromImage".into());
            disk.source_resource_id = None;
            disk.image_reference =
                Some((self.resource_id_of(image, "images", resource_group), *lun));
            self.save_disk(&disk)?;
            return Ok(disk);
        }
        let location = required_location(req.location.as_deref())?;
        let network_access_policy = match &req.network_access_policy {
            Some(p) => network_policy(p)?,
            None => NETWORK_POLICIES[0].to_owned(),
        };
        let (size_gb, exact_size) = match req.upload_size_bytes {
            Some(bytes) => {
                let (data, gib) = upload_size(bytes)?;
                (gib, (data != gib << 30).then_some(data))
            }
            None => {
                let gib = check_disk_size_gb(req.size_gb.ok_or_else(|| {
                    ComputeError::invalid(
                        "InvalidParameter",
                        "Required parameter 'diskSizeGB' is missing (null).",
                    )
                })?)?;
                (gib, None)
            }
        };
        let encryption = Self::requested_encryption(req)?.unwrap_or(EncryptionType::PlatformKey);
        let des = self.set_for_new_keys(
            req.disk_encryption_set.as_deref(),
            encryption,
            resource_group,
            &location,
        )?;
        let unique_id = atrest_crypto::random_uuid();
        let keys = self.new_keys(&unique_id, encryption, des.as_ref()).await?;
        let disk = Disk {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: self.resource_id(resource_group, DISK_KIND, name),
            location,
            tags: req.tags.clone().unwrap_or_default(),
            size_gb,
            unique_id,
            key_binding: None,
            create_option: Some(
                if req.upload_size_bytes.is_some() {
                    "Upload"
                } else {
                    "Empty"
                }
                .to_owned(),
            ),
            source_resource_id: None,
            source_unique_id: None,
            incremental: false,
            family_id: None,
            image_reference: None,
            copying: false,
            completion_percent: 100.0,
            copy_error: None,
            encryption_type: encryption.as_str().to_owned(),
            disk_encryption_set: des.map(|d| d.id),
            keys,
            managed_by: None,
            key_error: None,
            created: now,
            network_access_policy,
            exact_size,
            awaiting_upload: req.upload_size_bytes.is_some(),
            data_access_aad: match &req.data_access_auth_mode {
                Some(mode) => data_access_aad(mode)?,
                None => false,
            },
            ade: None,
            ade_ever: false,
        };
        self.save_disk(&disk)?;
        Ok(disk)
    }

    pub(super) async fn update_disk(
        &self,
        mut disk: Disk,
        req: &DiskRequest,
    ) -> Result<Disk, ComputeError> {
        same_location(req.location.as_deref(), &disk.location)?;
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
            if size != disk.size_gb && self.key_available(&disk).is_some() {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!(
                        "Disk '{}' cannot be resized while its virtual machine runs.",
                        disk.name
                    ),
                ));
            }
            if size != disk.size_gb {
                disk.size_gb = size;
                disk.exact_size = None;
            }
        }
        apply_settings(
            &mut disk,
            req.tags.as_ref(),
            req.network_access_policy.as_deref(),
            req.data_access_auth_mode.as_deref(),
        )?;
        let target = Self::requested_encryption(req)?;
        let from = disk.encryption();
        if disk.ade_ever && target.is_some_and(EncryptionType::uses_customer_key) {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("Disk '{}' has been encrypted with Azure Disk Encryption, so it can never take a customer-managed key: the two exclude each other.", disk.name),
            ));
        }
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
                let family: Vec<String> = self
                    .list::<Disk>(SNAPSHOT_KIND, None)?
                    .into_iter()
                    .filter(|s| s.family_id.as_deref() == Some(disk.unique_id.as_str()))
                    .filter(|s| !uses_set(s, &des))
                    .map(|s| s.name)
                    .collect();
                if !family.is_empty() {
                    return Err(ComputeError::conflict(
                        "OperationNotAllowed",
                        format!("Disk '{}' and its incremental snapshots ({}) use one disk encryption set; encryption.diskEncryptionSetId cannot change while they exist.", disk.name, family.join(", ")),
                    ));
                }
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
    pub(super) async fn move_to_set(
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
                self.platform
                    .unwrap(disk.key_binding(), *version, wrapped)?
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
        self.delete_blocks(&disk).await?;
        Ok(true)
    }

    /// Forgets a disk's or snapshot's manifest; its chunks go once nothing names them.
    pub(super) async fn delete_blocks(&self, disk: &Disk) -> Result<(), ComputeError> {
        let (blocks, id) = (self.config.blocks.clone(), disk.unique_id.clone());
        blocking(move || blocks.delete_disk(&id)).await
    }

    /// The disk encryption set that new data keys of `encryption` are wrapped by: the one
    /// `reference` names (in `location`) exactly when the type uses a customer key.
    pub(super) fn set_for_new_keys(
        &self,
        reference: Option<&str>,
        encryption: EncryptionType,
        resource_group: &str,
        location: &str,
    ) -> Result<Option<DiskEncryptionSet>, ComputeError> {
        match (reference, encryption.uses_customer_key()) {
            (Some(r), true) => Ok(Some(self.des_for(r, resource_group, location, encryption)?)),
            (None, true) => Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Encryption type {} requires a disk encryption set (encryption.diskEncryptionSetId).", encryption.as_str()),
            )),
            (Some(_), false) => Err(ComputeError::invalid(
                "InvalidParameter",
                "A disk encryption set cannot be used with EncryptionAtRestWithPlatformKey.",
            )),
            (None, false) => Ok(None),
        }
    }

    /// Fresh data keys for a disk of `encryption` whose unique id is `unique_id`, wrapped
    /// by the platform key, by `des`'s active key, or one each (innermost first).
    pub(super) async fn new_keys(
        &self,
        unique_id: &str,
        encryption: EncryptionType,
        des: Option<&DiskEncryptionSet>,
    ) -> Result<Vec<WrappedDek>, ComputeError> {
        let mut keys = Vec::new();
        if encryption != EncryptionType::CustomerKey {
            let dek = new_dek();
            let (version, wrapped) = self.platform.wrap(unique_id, dek.as_ref());
            keys.push(WrappedDek::Platform { version, wrapped });
        }
        if let Some(des) = des {
            let key_url = &des.active_key.key_url;
            self.check_access(des, key_url).await?;
            let dek = new_dek();
            let wrapped = self.wrap_customer(des, key_url, dek.as_ref()).await?;
            keys.push(WrappedDek::Customer {
                key_url: key_url.clone(),
                wrapped,
            });
        }
        Ok(keys)
    }

    /// Whether the state database and the block store answer (a load balancer's readiness).
    pub fn check_storage(&self) -> Result<(), Unreachable> {
        self.store
            .read(|tx| tx.resource::<Disk>(DISK_KIND, "-", "-"))
            .map_err(|e| Unreachable::State(e.into()))?;
        self.config.blocks.check().map_err(Unreachable::Blocks)
    }

    /// Deletes the disk chunks no manifest has named for the grace period.
    pub fn collect_garbage(&self, now: i64) -> Result<atrest_blocks::Collected, ComputeError> {
        Ok(self
            .config
            .blocks
            .collect_garbage(now, self.config.garbage_grace)?)
    }

    /// Opens a disk's blocks with its data keys (on a blocking thread: an object store
    /// may be asked for the manifest).
    pub(super) async fn open_volume(
        &self,
        disk: &Disk,
        layers: Vec<XtsKey>,
    ) -> Result<Volume, ComputeError> {
        let (blocks, id, size) = (
            self.config.blocks.clone(),
            disk.unique_id.clone(),
            disk.size_bytes(),
        );
        blocking(move || blocks.open_volume(&id, size, layers)).await
    }

    /// The NBD export name of a disk, `resource_group/name`, lower-cased.
    pub fn export_name(resource_group: &str, name: &str) -> String {
        format!("{resource_group}/{name}").to_ascii_lowercase()
    }

    /// Unwraps every data key of a disk, innermost first.
    pub(super) async fn unwrap_layers(&self, disk: &Disk) -> Result<Vec<XtsKey>, ComputeError> {
        let mut layers = Vec::with_capacity(disk.keys.len());
        for layer in &disk.keys {
            let dek = match layer {
                WrappedDek::Platform { version, wrapped } => {
                    self.platform
                        .unwrap(disk.key_binding(), *version, wrapped)?
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
    pub(super) fn set_key_error(
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
}
