//! Recovery points of virtual machines, for Azure Backup: one crash-consistent cut across
//! a machine's disks, taken without stopping it, each disk kept as a copy of its manifest
//! with its wrapped data keys (kind `recoveryPointDisks`, never shown as a resource, and
//! not a source a disk request may name), and disks restored from those copies.

use super::*;
use crate::KeyDescription;

/// One disk of a recovery point.
#[derive(Debug, Clone)]
pub struct RecoveryDisk {
    /// The disk's LUN in the machine (`None`: the OS disk).
    pub lun: Option<u32>,
    /// The copy.
    pub copy: Disk,
}

impl Compute {
    /// Takes the disks of `vm` for recovery point `point`: writes to all of them are held
    /// while each is frozen, then their manifests are copied, so the copies are one
    /// crash-consistent cut. A running machine keeps running. The copies are kept in
    /// `keep_in` (the backup vault's resource group), so the machine's group stays its own.
    pub async fn take_recovery_point(
        &self,
        resource_group: &str,
        vm: &str,
        point: &str,
        keep_in: &str,
        now: i64,
    ) -> Result<Vec<RecoveryDisk>, ComputeError> {
        let _guard = self.changes.lock().await;
        let vm: VirtualMachine = self.get(VM_KIND, resource_group, vm)?;
        let mut sources = Vec::new();
        for (lun, name) in vm.attached() {
            let disk: Disk = self.get(DISK_KIND, resource_group, name)?;
            if vm.running && !self.is_mine(&vm) {
                return Err(ComputeError::ServedElsewhere {
                    disk: disk.name,
                    replica: vm.host.clone().unwrap_or_default(),
                });
            }
            sources.push((lun, disk));
        }
        if sources.is_empty() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Virtual machine '{}' has no disk to back up.", vm.name),
            ));
        }
        let copies: Vec<RecoveryDisk> = sources
            .iter()
            .map(|(lun, disk)| {
                let name = format!("{point}-{}", lun_label(*lun));
                RecoveryDisk {
                    lun: *lun,
                    copy: self.copy_of(disk, RECOVERY_DISK_KIND, keep_in, &name, now),
                }
            })
            .collect();
        let open: Vec<Arc<OpenDisk>> = sources
            .iter()
            .filter_map(|(_, d)| self.export(&Self::export_name(resource_group, &d.name)))
            .collect();
        let pairs: Vec<(String, String, u64)> = sources
            .iter()
            .zip(&copies)
            .map(|((_, s), c)| {
                (
                    s.unique_id.clone(),
                    c.copy.unique_id.clone(),
                    c.copy.size_bytes(),
                )
            })
            .collect();
        let blocks = self.config.blocks.clone();
        blocking(move || {
            let volumes: Vec<&Volume> = open.iter().map(|d| &d.file).collect();
            atrest_blocks::freeze_together(&volumes, || {
                for (from, to, size) in &pairs {
                    blocks.copy_manifest(from, to, *size)?;
                }
                Ok(())
            })
        })
        .await?;
        self.store.write(|tx| {
            for c in &copies {
                tx.put_resource(RECOVERY_DISK_KIND, keep_in, &c.copy.name, &c.copy)?;
            }
            Ok::<_, atrest_store::StoreError>(())
        })?;
        Ok(copies)
    }

    /// A recovery point's disk copy, by its resource id.
    pub fn recovery_disk(&self, id: &str) -> Result<Disk, ComputeError> {
        let (rg, name) = resource_ref(id, RECOVERY_DISK_KIND, "");
        self.get(RECOVERY_DISK_KIND, rg, name)
    }

    /// Restores disk `name` in `resource_group` from a recovery point's copy `copy_id`:
    /// its data and data keys, which must be usable now (a revoked customer key leaves the
    /// point unrestorable until access returns), optionally moved under another disk
    /// encryption set.
    pub async fn restore_disk(
        &self,
        copy_id: &str,
        resource_group: &str,
        name: &str,
        disk_encryption_set: Option<&str>,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        check_compute_name("disk", name)?;
        let _guard = self.changes.lock().await;
        if self
            .store
            .read(|tx| tx.resource::<Disk>(DISK_KIND, resource_group, name))?
            .is_some()
        {
            return Err(ComputeError::conflict(
                "Conflict",
                format!("Disk '{name}' already exists in resource group '{resource_group}'; a restore creates new disks."),
            ));
        }
        let source = self.recovery_disk(copy_id)?;
        self.unwrap_layers(&source).await?;
        let req = DiskRequest {
            location: Some(source.location.clone()),
            disk_encryption_set: disk_encryption_set.map(str::to_owned),
            tags: Some(source.tags.clone()),
            ..Default::default()
        };
        let mut disk = self
            .create_copy(resource_group, name, copy_id, &req, now)
            .await?;
        disk.create_option = Some("Restore".into());
        disk.source_resource_id = None;
        disk.source_unique_id = source.source_unique_id.clone();
        self.save_disk(&disk)?;
        Ok(disk)
    }

    /// Seals `secret` with the platform key, bound to `context` (a recovery point's copy of
    /// an ADE secret), so no backup holds it in the clear.
    pub fn seal_with_platform_key(&self, context: &str, secret: &[u8]) -> (u32, Vec<u8>) {
        self.platform
            .wrap(&format!("recovery-point/{context}"), secret)
    }

    /// Opens what [`Self::seal_with_platform_key`] sealed for `context`.
    pub fn open_with_platform_key(
        &self,
        context: &str,
        version: u32,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ComputeError> {
        self.platform
            .unwrap(&format!("recovery-point/{context}"), version, sealed)
    }

    /// What the platform knows of the key version `key_url` names (nothing secret).
    pub fn describe_key_url(&self, key_url: &str) -> Result<KeyDescription, ComputeError> {
        let url = KeyUrl::parse(key_url, &self.config.vault_host_suffix)?;
        self.vaults
            .describe(&url.vault, &url.name, &url.version)
            .map_err(|e| ComputeError::invalid("KeyVaultNotFound", e.message))
    }

    /// The vault access the platform's services share (for the backup vault's identity).
    pub fn vault_access(&self) -> &Arc<dyn KeyVaultAccess> {
        &self.vaults
    }

    /// Deletes recovery point copies and the blocks only they hold.
    pub async fn delete_recovery_disks(&self, ids: &[String]) -> Result<(), ComputeError> {
        let _guard = self.changes.lock().await;
        for id in ids {
            let (rg, name) = resource_ref(id, RECOVERY_DISK_KIND, "");
            let Some(copy) = self
                .store
                .read(|tx| tx.resource::<Disk>(RECOVERY_DISK_KIND, rg, name))?
            else {
                continue;
            };
            self.store
                .write(|tx| tx.delete_resource(RECOVERY_DISK_KIND, rg, name))?;
            self.delete_blocks(&copy).await?;
        }
        self.store.scrub()?;
        Ok(())
    }
}
