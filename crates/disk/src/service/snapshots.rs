//! Snapshots and copies. A snapshot is a copy of its source's manifest, taken in constant
//! time after the source's writes are flushed (crash-consistent for a running disk); it
//! shares the source's data key (the wrapped copies travel with it) and its chunks, which
//! are never written again, so later writes to the source never change it. A disk created
//! from a disk or snapshot (`createOption: Copy`) starts from the same manifest and keys.

use super::disks::{apply_settings, data_access_aad, network_policy};
use super::*;
use crate::model::kind_in_id;

/// Fields of a snapshot create or update.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest {
    /// Location (required on create; the source's).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `creationData.createOption`: `Copy` (the default).
    pub create_option: Option<String>,
    /// `creationData.sourceResourceId`: the disk or snapshot copied.
    pub source: Option<String>,
    /// `incremental`.
    pub incremental: Option<bool>,
    /// `encryption.type`.
    pub encryption_type: Option<String>,
    /// `encryption.diskEncryptionSetId`.
    pub disk_encryption_set: Option<String>,
    /// `networkAccessPolicy`.
    pub network_access_policy: Option<String>,
    /// `dataAccessAuthMode`.
    pub data_access_auth_mode: Option<String>,
}

/// Limits on one disk's incremental snapshots (Azure's: 7 per 5 minutes, 500 in all).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    /// Most incremental snapshots of one disk within `window_secs`.
    pub per_window: usize,
    /// The window, seconds.
    pub window_secs: i64,
    /// Most incremental snapshots of one disk in all.
    pub per_disk: usize,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            per_window: 7,
            window_secs: 300,
            per_disk: 500,
        }
    }
}

/// How a copy's keys relate to its source's.
pub(super) enum KeyPlan {
    /// The source's wrapped keys as they are.
    Same,
    /// The source's data key rewrapped by another disk encryption set.
    Rewrap(Box<DiskEncryptionSet>),
}

impl Compute {
    /// A snapshot.
    pub fn get_snapshot(&self, resource_group: &str, name: &str) -> Result<Disk, ComputeError> {
        self.get(SNAPSHOT_KIND, resource_group, name)
    }

    /// Every snapshot, or a resource group's.
    pub fn list_snapshots(&self, resource_group: Option<&str>) -> Result<Vec<Disk>, ComputeError> {
        self.list(SNAPSHOT_KIND, resource_group)
    }

    /// Creates a snapshot of a disk or snapshot, or updates one's tags and access
    /// settings (its data, source and encryption never change).
    pub async fn put_snapshot(
        &self,
        resource_group: &str,
        name: &str,
        req: &SnapshotRequest,
        now: i64,
    ) -> Result<(Disk, bool), ComputeError> {
        check_compute_name("snapshot", name)?;
        let _guard = self.changes.lock().await;
        let existing: Option<Disk> = self
            .store
            .read(|tx| tx.resource(SNAPSHOT_KIND, resource_group, name))?;
        let Some(mut snapshot) = existing else {
            return Ok((
                self.create_snapshot(resource_group, name, req, now).await?,
                true,
            ));
        };
        same_location(req.location.as_deref(), &snapshot.location)?;
        if let Some(incremental) = req.incremental {
            unchanged("incremental", incremental == snapshot.incremental)?;
        }
        if let Some(source) = &req.source {
            unchanged(
                "creationData.sourceResourceId",
                snapshot
                    .source_resource_id
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(source)),
            )?;
        }
        let same_type = req
            .encryption_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(&snapshot.encryption_type));
        let named = |r: &str| {
            let (rg, name) = resource_ref(r, DES_KIND, resource_group);
            (rg.to_ascii_lowercase(), name.to_ascii_lowercase())
        };
        let same_set = match (&req.disk_encryption_set, &snapshot.disk_encryption_set) {
            (None, _) => true,
            (Some(asked), Some(current)) => named(asked) == named(current),
            (Some(_), None) => false,
        };
        unchanged("encryption", same_type && same_set)?;
        apply_settings(
            &mut snapshot,
            req.tags.as_ref(),
            req.network_access_policy.as_deref(),
            req.data_access_auth_mode.as_deref(),
        )?;
        self.save_disk(&snapshot)?;
        Ok((snapshot, false))
    }

    async fn create_snapshot(
        &self,
        resource_group: &str,
        name: &str,
        req: &SnapshotRequest,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        let location = required_location(req.location.as_deref())?;
        let copy_start = match req.create_option.as_deref() {
            None => false,
            Some(o) if o.eq_ignore_ascii_case("Copy") => false,
            Some(o) if o.eq_ignore_ascii_case("CopyStart") => true,
            Some(o) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The createOption '{o}' is not supported for snapshots; use 'Copy' or 'CopyStart'."),
                ))
            }
        };
        let reference = req.source.as_deref().ok_or_else(|| {
            ComputeError::invalid(
                "InvalidParameter",
                "Required parameter 'creationData.sourceResourceId' is missing (null).",
            )
        })?;
        if copy_start {
            return self
                .start_copy(resource_group, name, reference, &location, req, now)
                .await;
        }
        let source = self
            .copy_source(reference, resource_group, Some(&location))
            .await?;
        let incremental = req.incremental.unwrap_or(false);
        if incremental && source.is_snapshot() && !source.incremental {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "An incremental snapshot cannot be taken of a full snapshot (property 'incremental').",
            ));
        }
        let family = incremental.then(|| {
            source
                .family_id
                .clone()
                .unwrap_or_else(|| source.unique_id.clone())
        });
        if let Some(family) = &family {
            self.check_snapshot_limits(family, now)?;
        }
        let plan = self.key_plan(
            &source,
            req.encryption_type.as_deref(),
            req.disk_encryption_set.as_deref(),
            resource_group,
            incremental,
        )?;
        let mut snapshot = self.copy_of(&source, SNAPSHOT_KIND, resource_group, name, now);
        snapshot.incremental = incremental;
        snapshot.family_id = family;
        apply_settings(
            &mut snapshot,
            Some(&req.tags.clone().unwrap_or_default()),
            req.network_access_policy.as_deref(),
            req.data_access_auth_mode.as_deref(),
        )?;
        self.finish_copy(&source, snapshot, plan).await
    }

    /// Deletes a snapshot. Its chunks stay while a disk or another snapshot names them.
    pub async fn delete_snapshot(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let Some(snapshot) = self
            .store
            .read(|tx| tx.resource::<Disk>(SNAPSHOT_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        self.store
            .write(|tx| tx.delete_resource(SNAPSHOT_KIND, resource_group, name))?;
        self.store.scrub()?;
        self.delete_blocks(&snapshot).await?;
        Ok(true)
    }

    /// Creates disk `name` from a disk or snapshot (`createOption: Copy`): the source's
    /// data and data key, at its size or larger.
    pub(super) async fn create_copy(
        &self,
        resource_group: &str,
        name: &str,
        reference: &str,
        req: &DiskRequest,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        let location = required_location(req.location.as_deref())?;
        let source = self
            .copy_source(reference, resource_group, Some(&location))
            .await?;
        let (size_gb, exact_size) = match req.size_gb {
            None => (source.size_gb, source.exact_size),
            Some(gb) => {
                let gb = check_disk_size_gb(gb)?;
                if (gb << 30) < source.size_bytes() {
                    return Err(ComputeError::invalid(
                        "InvalidParameter",
                        format!("A copy of '{}' needs at least its {} bytes; diskSizeGB {gb} is smaller.", source.name, source.size_bytes()),
                    ));
                }
                (gb, None)
            }
        };
        let plan = self.key_plan(
            &source,
            req.encryption_type.as_deref(),
            req.disk_encryption_set.as_deref(),
            resource_group,
            false,
        )?;
        let mut disk = self.copy_of(&source, DISK_KIND, resource_group, name, now);
        disk.tags = req.tags.clone().unwrap_or_default();
        (disk.size_gb, disk.exact_size) = (size_gb, exact_size);
        disk.network_access_policy = match &req.network_access_policy {
            Some(p) => network_policy(p)?,
            None => NETWORK_POLICIES[0].to_owned(),
        };
        disk.data_access_aad = match &req.data_access_auth_mode {
            Some(mode) => data_access_aad(mode)?,
            None => false,
        };
        self.finish_copy(&source, disk, plan).await
    }

    /// A new `kind` record `name` holding `source`'s data: its size, data key and
    /// encryption, a new unique id, and `creationData` naming the source.
    pub(super) fn copy_of(
        &self,
        source: &Disk,
        kind: &str,
        resource_group: &str,
        name: &str,
        now: i64,
    ) -> Disk {
        Disk {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: self.resource_id(resource_group, kind, name),
            unique_id: atrest_crypto::random_uuid(),
            key_binding: Some(source.key_binding().to_owned()),
            create_option: Some("Copy".into()),
            source_resource_id: Some(source.id.clone()),
            source_unique_id: Some(source.unique_id.clone()),
            incremental: false,
            family_id: None,
            image_reference: None,
            copying: false,
            completion_percent: 100.0,
            copy_error: None,
            managed_by: None,
            key_error: None,
            created: now,
            awaiting_upload: false,
            ..source.clone()
        }
    }

    /// Rewraps a new copy's data key as `plan` says, gives it its source's blocks and
    /// stores it.
    pub(super) async fn finish_copy(
        &self,
        source: &Disk,
        mut copy: Disk,
        plan: KeyPlan,
    ) -> Result<Disk, ComputeError> {
        self.apply_key_plan(&mut copy, plan).await?;
        self.copy_blocks(source, &copy).await?;
        self.save_disk(&copy)?;
        Ok(copy)
    }

    /// Refuses an incremental snapshot of a family at its limits.
    fn check_snapshot_limits(&self, family: &str, now: i64) -> Result<(), ComputeError> {
        let limits = self.config.snapshot_limits;
        let members: Vec<Disk> = self
            .list_snapshots(None)?
            .into_iter()
            .filter(|s| s.family_id.as_deref() == Some(family))
            .collect();
        let recent = members
            .iter()
            .filter(|s| now - s.created < limits.window_secs)
            .count();
        if members.len() >= limits.per_disk {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "The disk already has {} incremental snapshots, the most it may have.",
                    limits.per_disk
                ),
            ));
        }
        if recent >= limits.per_window {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("At most {} incremental snapshots of one disk may be taken within {} seconds; try again later.", limits.per_window, limits.window_secs),
            ));
        }
        Ok(())
    }

    /// The disk or snapshot named by `reference` (a resource id, or a disk's name in
    /// `resource_group`), in `location` if one is given; a disk a machine has open is
    /// frozen (flushed, and its chunks never written again) so the copy keeps them.
    pub(super) async fn copy_source(
        &self,
        reference: &str,
        resource_group: &str,
        location: Option<&str>,
    ) -> Result<Disk, ComputeError> {
        let kind = kind_in_id(reference);
        let (rg, name) = resource_ref(reference, kind, resource_group);
        let source: Disk = self
            .store
            .read(|tx| tx.resource(kind, rg, name))?
            .ok_or_else(|| {
                ComputeError::invalid(
                    "InvalidParameter",
                    format!(
                        "The source '{reference}' (creationData.sourceResourceId) was not found."
                    ),
                )
            })?;
        if let Some(location) = location.filter(|l| *l != source.location) {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("A copy's location '{location}' must be its source's, '{}' (property 'location'); CopyStart copies an incremental snapshot to another region.", source.location),
            ));
        }
        if source.copying {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "Snapshot '{}' is still being copied ({:.0}%).",
                    source.name, source.completion_percent
                ),
            ));
        }
        if source.awaiting_upload {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "Disk '{}' is waiting for its upload; it has no data to copy yet.",
                    source.name
                ),
            ));
        }
        if kind == DISK_KIND {
            if let Some(open) = self.export(&Self::export_name(rg, name)) {
                blocking(move || open.file.freeze()).await?;
            }
        }
        Ok(source)
    }

    /// How a copy of `source` is keyed given the encryption its request asks for. A copy
    /// keeps its source's data key; what may change is what wraps it: a platform key may
    /// give way to a disk encryption set, and a full copy may move to another set. An
    /// incremental snapshot keeps its disk's set; a customer key is never dropped.
    pub(super) fn key_plan(
        &self,
        source: &Disk,
        encryption_type: Option<&str>,
        disk_encryption_set: Option<&str>,
        resource_group: &str,
        incremental: bool,
    ) -> Result<KeyPlan, ComputeError> {
        let from = source.encryption();
        let to = match encryption_type {
            Some(t) => EncryptionType::parse(t)?,
            None if disk_encryption_set.is_some() && from == EncryptionType::PlatformKey => {
                EncryptionType::CustomerKey
            }
            None => from,
        };
        let Some(reference) = disk_encryption_set else {
            return match (from == to, to.uses_customer_key()) {
                (true, _) => Ok(KeyPlan::Same),
                (false, true) => Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Encryption type {} requires a disk encryption set (encryption.diskEncryptionSetId).", to.as_str()),
                )),
                (false, false) => Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("A copy of '{}' keeps its customer-managed key: encryption.type cannot be {}.", source.name, to.as_str()),
                )),
            };
        };
        if from != to && !(from == EncryptionType::PlatformKey && to == EncryptionType::CustomerKey)
        {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("A copy of '{}' ({}) cannot use encryption.type {}: that would need a new data key and rewriting every block.", source.name, from.as_str(), to.as_str()),
            ));
        }
        let des = self.des_for(reference, resource_group, &source.location, to)?;
        let same_set = source
            .disk_encryption_set
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(&des.id));
        if same_set {
            return Ok(KeyPlan::Same);
        }
        if incremental {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("An incremental snapshot must use its disk's disk encryption set ({}): encryption.diskEncryptionSetId cannot be '{}'.", source.disk_encryption_set.as_deref().unwrap_or("none"), des.id),
            ));
        }
        Ok(KeyPlan::Rewrap(Box::new(des)))
    }

    /// Rewraps a copy's data key as its plan says.
    async fn apply_key_plan(&self, copy: &mut Disk, plan: KeyPlan) -> Result<(), ComputeError> {
        if let KeyPlan::Rewrap(des) = plan {
            self.check_access(&des, &des.active_key.key_url).await?;
            self.move_to_set(copy, &des).await?;
            if copy.encryption() == EncryptionType::PlatformKey {
                copy.encryption_type = EncryptionType::CustomerKey.as_str().to_owned();
            }
            copy.disk_encryption_set = Some(des.id.clone());
        }
        Ok(())
    }

    /// Gives `copy` its source's data: a copy of the source's manifest.
    async fn copy_blocks(&self, source: &Disk, copy: &Disk) -> Result<(), ComputeError> {
        let (blocks, from, to, size) = (
            self.config.blocks.clone(),
            source.unique_id.clone(),
            copy.unique_id.clone(),
            copy.size_bytes(),
        );
        blocking(move || blocks.copy_manifest(&from, &to, size)).await
    }
}
