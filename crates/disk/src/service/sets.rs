//! Disk encryption sets: validation, their identity, key changes and rewraps.

use super::*;

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

impl Compute {
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
    pub(super) fn validate_key(
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
    pub(super) async fn check_access(
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
            .wrap_key(&des.id, key_url, DEK_WRAP_ALGORITHM, probe.as_ref())
            .await
            .map_err(forbidden)?;
        let back = self
            .vaults
            .unwrap_key(&des.id, key_url, DEK_WRAP_ALGORITHM, &wrapped)
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
        same_location(req.location.as_deref(), &des.location)?;
        if let Some(t) = &req.encryption_type {
            unchanged(
                "encryptionType",
                EncryptionType::parse(t)? == des.encryption(),
            )?;
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
                Ok((self.rotate_des(des, key, now).await?, false))
            }
            _ => {
                self.save_des(&des)?;
                Ok((des, false))
            }
        }
    }

    pub(super) fn create_des(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
        req: &DesRequest,
        now: i64,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let location = required_location(req.location.as_deref())?;
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
        let mi = identity.create_managed_identity(name, &id, now)?;
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
    pub(super) async fn rotate_des(
        &self,
        mut des: DiskEncryptionSet,
        key: KeyRef,
        now: i64,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let old = std::mem::replace(&mut des.active_key, key);
        des.previous_keys.push(old);
        des.last_key_rotation = Some(now);
        self.save_des(&des)?;
        self.rewrap_disks(des).await
    }

    /// Rewraps every disk and snapshot of the set still wrapped by an older key;
    /// `previousKeys` empties
    /// once none is left, and a failure is kept as `autoKeyRotationError`.
    pub(super) async fn rewrap_disks(
        &self,
        mut des: DiskEncryptionSet,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let mut disks: Vec<Disk> = self.list(DISK_KIND, None)?;
        disks.extend(self.list::<Disk>(SNAPSHOT_KIND, None)?);
        disks.extend(self.list::<Disk>(RECOVERY_DISK_KIND, None)?);
        let mut failures = Vec::new();
        for mut disk in disks.into_iter().filter(|d| uses_set(d, &des)) {
            match self.rewrap_customer_layer(&des, &mut disk).await {
                Ok(()) => self.save_disk(&disk)?,
                Err(e) => failures.push(format!(
                    "{} '{}': {e}",
                    if disk.is_snapshot() {
                        "snapshot"
                    } else {
                        "disk"
                    },
                    disk.name
                )),
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
    pub(super) async fn rewrap_customer_layer(
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

    pub(super) async fn wrap_customer(
        &self,
        des: &DiskEncryptionSet,
        key_url: &str,
        dek: &[u8],
    ) -> Result<Vec<u8>, ComputeError> {
        self.vaults
            .wrap_key(&des.id, key_url, DEK_WRAP_ALGORITHM, dek)
            .await
            .map_err(|cause| ComputeError::KeyVaultAccessForbidden {
                key_url: key_url.to_owned(),
                des: des.name.clone(),
                cause,
            })
    }

    pub(super) async fn unwrap_customer(
        &self,
        des: &DiskEncryptionSet,
        disk: &str,
        key_url: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ComputeError> {
        self.vaults
            .unwrap_key(&des.id, key_url, DEK_WRAP_ALGORITHM, wrapped)
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
        let mut users: Vec<Disk> = self.list(DISK_KIND, None)?;
        users.extend(self.list::<Disk>(SNAPSHOT_KIND, None)?);
        users.extend(self.list::<Disk>(RECOVERY_DISK_KIND, None)?);
        let users: Vec<String> = users
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

    pub(super) fn record_rotation_error(
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
}
