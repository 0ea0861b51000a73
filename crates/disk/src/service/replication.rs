//! Replication of virtual machines to another region, for Site Recovery. Each replicated
//! disk has a replica in the target region under that region's keys (the platform key, or
//! a disk encryption set there). A cycle takes one crash-consistent cut of the machine's
//! disks, as a recovery point does, writes what changed since the previous cut into the
//! replicas (read with the source's keys, written with the target's), and keeps a copy of
//! the replicas as the cycle's recovery point. Cuts, replicas and their points are hidden
//! `recoveryPointDisks` documents.
//!
//! A crash at any step leaves the previous cut and the replicas' last committed manifests
//! as they were: a replica's writes become visible only with its flush, and the next cycle
//! ships again from the previous cut, which is deleted only once its successor is recorded.

use atrest_blocks::{Change, CHUNK};

use super::*;

/// What the target of one disk's replication is.
#[derive(Debug, Clone, Default)]
pub struct ReplicaTarget {
    /// `recoveryDiskEncryptionSetId`: the set in the target region that wraps the
    /// replica's data keys (required when the source has a customer key).
    pub disk_encryption_set: Option<String>,
}

/// One disk's part in a replication cycle.
#[derive(Debug, Clone)]
pub struct ReplicaPair {
    /// The disk's LUN in the machine (`None`: the OS disk).
    pub lun: Option<u32>,
    /// The replica's resource id.
    pub replica: String,
    /// The cut the replica holds now (its resource id), if any.
    pub previous_cut: Option<String>,
    /// The cut to bring the replica to.
    pub cut: String,
}

impl Compute {
    /// Creates an empty replica in `location` (in `resource_group`) of each
    /// disk of machine `vm` that `targets` names by LUN (`None`: the OS disk), named
    /// `{prefix}-{os|lunN}`, with fresh data keys of that region.
    pub async fn create_replicas(
        &self,
        vm_resource_group: &str,
        vm: &str,
        (resource_group, location): (&str, &str),
        prefix: &str,
        targets: &BTreeMap<Option<u32>, ReplicaTarget>,
        now: i64,
    ) -> Result<Vec<RecoveryDisk>, ComputeError> {
        let _guard = self.changes.lock().await;
        let vm: VirtualMachine = self.get(VM_KIND, vm_resource_group, vm)?;
        let mut replicas = Vec::new();
        for (lun, name) in vm.attached() {
            let Some(target) = targets.get(&lun) else {
                continue;
            };
            let source: Disk = self.get(DISK_KIND, vm_resource_group, name)?;
            if source.ade.is_some() {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Disk '{name}' is encrypted with Azure Disk Encryption; its replication is not offered."),
                ));
            }
            let (encryption, des) = self.keys_in_region(
                &source,
                None,
                target.disk_encryption_set.as_deref(),
                resource_group,
                location,
            )?;
            let name = format!("{prefix}-{}", lun_label(lun));
            let mut replica = self.copy_of(&source, RECOVERY_DISK_KIND, resource_group, &name, now);
            replica.location = location.to_owned();
            replica.key_binding = None;
            replica.create_option = Some("Replica".into());
            replica.encryption_type = encryption.as_str().to_owned();
            replica.disk_encryption_set = des.as_ref().map(|d| d.id.clone());
            replica.keys = self
                .new_keys(&replica.unique_id, encryption, des.as_ref())
                .await?;
            replicas.push(RecoveryDisk { lun, copy: replica });
        }
        if replicas.len() != targets.len() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!(
                    "A disk to replicate is not attached to virtual machine '{}'.",
                    vm.name
                ),
            ));
        }
        self.store.write(|tx| {
            for r in &replicas {
                tx.put_resource(RECOVERY_DISK_KIND, resource_group, &r.copy.name, &r.copy)?;
            }
            Ok::<_, atrest_store::StoreError>(())
        })?;
        Ok(replicas)
    }

    /// Brings each replica from its previous cut to its new one (see
    /// [`Self::take_recovery_point`] for the cut) and keeps the replicas as recovery point
    /// `point_name` beside them; returns the point's copies and the bytes shipped. Running
    /// it again for the same cuts (after a crash) gives the same replicas.
    pub async fn replicate(
        &self,
        pairs: &[ReplicaPair],
        point_name: &str,
        now: i64,
    ) -> Result<(Vec<RecoveryDisk>, u64), ComputeError> {
        let mut point = Vec::new();
        let mut shipped_bytes = 0;
        let result: Result<(), ComputeError> = async {
            for pair in pairs {
                let previous = match &pair.previous_cut {
                    Some(id) => Some(self.recovery_disk(id)?),
                    None => None,
                };
                let cut = self.recovery_disk(&pair.cut)?;
                let replica = self.recovery_disk(&pair.replica)?;
                shipped_bytes += self.ship_changes(previous.as_ref(), &cut, &replica).await?;
                let name = format!("{point_name}-{}", lun_label(pair.lun));
                point.push(RecoveryDisk {
                    lun: pair.lun,
                    copy: self.keep_copy(&replica, &name, now).await?,
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let made: Vec<String> = point.iter().map(|d| d.copy.id.clone()).collect();
            self.delete_recovery_disks(&made).await?;
            return Err(e);
        }
        Ok((point, shipped_bytes))
    }

    /// Writes into `replica` where `cut` differs from `previous` (everything `cut` holds
    /// when there is no previous cut) and makes it durable; returns the bytes written.
    async fn ship_changes(
        &self,
        previous: Option<&Disk>,
        cut: &Disk,
        replica: &Disk,
    ) -> Result<u64, ComputeError> {
        let from = self
            .open_volume(cut, self.unwrap_layers(cut).await?)
            .await?;
        let older = match previous {
            Some(p) => Some(self.open_volume(p, self.unwrap_layers(p).await?).await?),
            None => None,
        };
        let to = self
            .open_volume(replica, self.unwrap_layers(replica).await?)
            .await?;
        let rate = self.config.copy_bandwidth.filter(|r| *r > 0);
        let (from, to) = (Arc::new(from), Arc::new(to));
        let changes = {
            let from = from.clone();
            blocking(move || match older {
                Some(older) => from.changes_since(&older),
                None => Ok(all_chunks(&from)),
            })
            .await?
        };
        let mut shipped = 0;
        for change in changes {
            let mut offset = change.first;
            while offset <= change.last {
                let len = (CHUNK - offset % CHUNK).min(change.last + 1 - offset);
                let (from, to, cleared) = (from.clone(), to.clone(), change.cleared);
                blocking(move || {
                    if cleared {
                        return to.write_zeroes(offset, len);
                    }
                    let mut data = vec![0u8; len as usize];
                    from.read(offset, &mut data)?;
                    to.write_in_place(offset, &mut data)
                })
                .await?;
                shipped += len;
                offset += len;
                if let Some(rate) = rate {
                    tokio::time::sleep(Duration::from_secs_f64(len as f64 / rate as f64)).await;
                }
            }
        }
        blocking(move || to.flush()).await?;
        Ok(shipped)
    }

    /// A hidden copy `name` of `disk`'s committed data, beside it (the replica's recovery
    /// point).
    async fn keep_copy(&self, disk: &Disk, name: &str, now: i64) -> Result<Disk, ComputeError> {
        let copy = self.copy_of(disk, RECOVERY_DISK_KIND, &disk.resource_group, name, now);
        let (blocks, from, to, size) = (
            self.config.blocks.clone(),
            disk.unique_id.clone(),
            copy.unique_id.clone(),
            disk.size_bytes(),
        );
        blocking(move || blocks.copy_manifest(&from, &to, size)).await?;
        self.store.write(|tx| {
            tx.put_resource(RECOVERY_DISK_KIND, &copy.resource_group, &copy.name, &copy)
        })?;
        Ok(copy)
    }

    /// The hidden disks in `resource_group` whose names start with `prefix` (a
    /// replication's replicas, cuts and points), for sweeping what a crash left.
    pub fn recovery_disks_named(
        &self,
        resource_group: &str,
        prefix: &str,
    ) -> Result<Vec<Disk>, ComputeError> {
        Ok(self
            .list::<Disk>(RECOVERY_DISK_KIND, Some(resource_group))?
            .into_iter()
            .filter(|d| d.name.starts_with(prefix))
            .collect())
    }
}

/// `os` or `lunN`, as the hidden disks' names have it.
pub(super) fn lun_label(lun: Option<u32>) -> String {
    lun.map_or_else(|| "os".to_owned(), |l| format!("lun{l}"))
}

/// Every chunk a volume holds, as changes from nothing.
fn all_chunks(volume: &Volume) -> Vec<Change> {
    let size = volume.size();
    volume
        .committed()
        .chunks
        .keys()
        .map(|i| {
            let first = u64::from(*i) * CHUNK;
            Change {
                first,
                last: (first + CHUNK).min(size) - 1,
                cleared: false,
            }
        })
        .filter(|c| c.first < size)
        .collect()
}
