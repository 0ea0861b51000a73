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
use atrest_core::ade;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::keys::PlatformSecret;
use crate::model::AdeVolume;

use super::*;

/// What the target of one disk's replication is.
#[derive(Debug, Clone, Default)]
pub struct ReplicaTarget {
    /// `recoveryDiskEncryptionSetId`: the set in the target region that wraps the
    /// replica's data keys (required when the source has a customer key).
    pub disk_encryption_set: Option<String>,
    /// For a disk encrypted with Azure Disk Encryption: its secret and key-encryption key
    /// in the target region (required for such a disk; see [`Compute::copy_ade_keys`]).
    pub ade: Option<AdeVolume>,
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
            if source.ade.is_some() != target.ade.is_some() {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("Disk '{name}' {} encrypted with Azure Disk Encryption: its replica {} keys in the target region.", if source.ade.is_some() { "is" } else { "is not" }, if source.ade.is_some() { "needs" } else { "takes no" }),
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
            replica.ade = target.ade.clone();
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
                if change.cleared {
                    let to = to.clone();
                    blocking(move || to.write_zeroes(offset, len)).await?;
                    self.pace(len).await;
                } else {
                    self.copy_range(&from, &to, offset, len).await?;
                }
                shipped += len;
                offset += len;
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

    /// Copies an Azure Disk Encryption volume's keys into the target region as `identity`
    /// (Site Recovery's): the secret under its own name into `secret_vault`, and, when the
    /// passphrase is wrapped, its key-encryption key recreated under its own name and size
    /// in `kek_vault` (once per key: `recreated` maps source to new key) with the passphrase
    /// rewrapped to it. Both vaults must be in `location` with `enabledForDiskEncryption`.
    pub async fn copy_ade_keys(
        &self,
        identity: &str,
        disk: &str,
        source: &AdeVolume,
        (secret_vault, kek_vault): (&str, &str),
        location: &str,
        recreated: &mut BTreeMap<String, String>,
    ) -> Result<AdeVolume, ComputeError> {
        let target_vault = |name: &str| {
            let found = self.vaults.describe_vault(name).map_err(|e| {
                ComputeError::invalid(
                    "InvalidParameter",
                    format!("The target key vault '{name}' for disk '{disk}' is not usable: {e}. Create it in '{location}' with enabledForDiskEncryption first."),
                )
            })?;
            if found.location != location || !found.enabled_for_disk_encryption {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The target key vault '{name}' must be in '{location}' with enabledForDiskEncryption; it is in '{}'{}.", found.location, if found.enabled_for_disk_encryption { "" } else { " without it" }),
                ));
            }
            Ok(found)
        };
        let refused = |what: &str, url: &str, cause: KeyAccessError| {
            ComputeError::conflict(
                "KeyVaultPermissionsNotConfigured",
                format!("Site Recovery's identity cannot {what} '{url}' for disk '{disk}': it needs the secret permission get and the key permissions get and unwrapKey on the source vaults, and the secret permission set and the key permissions create and wrapKey on the target vaults (or roles granting those data actions). The vault answered: {cause}"),
            )
        };
        let secret_target = target_vault(secret_vault)?;
        let secret = self
            .vaults
            .get_secret(identity, &source.secret_url)
            .await
            .map_err(|e| refused("read the secret", &source.secret_url, e))?;
        let mut tags = secret.tags.clone();
        let (value, kek) = match (&source.kek_url, secret.content_type.as_str()) {
            (Some(kek_url), ade::CONTENT_WRAPPED_BEK) => {
                let alg = source
                    .kek_algorithm
                    .as_deref()
                    .unwrap_or(ade::KEY_ENCRYPTION_ALGORITHMS[0]);
                let wrapped =
                    Zeroizing::new(B64.decode(secret.value.as_bytes()).map_err(|_| {
                        ComputeError::conflict(
                            "OperationNotAllowed",
                            format!(
                                "The disk encryption secret '{}' of disk '{disk}' is not base64.",
                                source.secret_url
                            ),
                        )
                    })?);
                let passphrase = self
                    .vaults
                    .unwrap_key(identity, kek_url, alg, &wrapped)
                    .await
                    .map_err(|e| refused("unwrap with the key", kek_url, e))?;
                let kek_target = target_vault(kek_vault)?;
                let new_kid = match recreated.get(kek_url) {
                    Some(kid) => kid.clone(),
                    None => {
                        let url = KeyUrl::parse(kek_url, &self.config.vault_host_suffix)?;
                        let size = self
                            .vaults
                            .describe(&url.vault, &url.name, &url.version)
                            .ok()
                            .and_then(|d| d.key_size)
                            .unwrap_or(2048);
                        let kid = self
                            .vaults
                            .create_key(identity, kek_vault, &url.name, size)
                            .await
                            .map_err(|e| {
                                refused(
                                    "create the key",
                                    &format!("{}/keys/{}", kek_target.uri, url.name),
                                    e,
                                )
                            })?
                            .kid;
                        recreated.insert(kek_url.clone(), kid.clone());
                        kid
                    }
                };
                let rewrapped = self
                    .vaults
                    .wrap_key(identity, &new_kid, alg, &passphrase)
                    .await
                    .map_err(|e| refused("wrap with the key", &new_kid, e))?;
                tags.insert("DiskEncryptionKeyEncryptionKeyURL".into(), new_kid.clone());
                (
                    Zeroizing::new(B64.encode(rewrapped)),
                    Some((new_kid, kek_target.resource_id)),
                )
            }
            _ => (secret.value.clone(), None),
        };
        let name = source
            .secret_url
            .split("/secrets/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ComputeError::invalid(
                    "InvalidParameter",
                    format!("'{}' is not a secret URL.", source.secret_url),
                )
            })?;
        let copy = PlatformSecret {
            value,
            content_type: secret.content_type.clone(),
            tags,
        };
        let secret_url = self
            .vaults
            .set_secret(identity, secret_vault, name, &copy)
            .await
            .map_err(|e| {
                refused(
                    "store the secret",
                    &format!("{}/secrets/{name}", secret_target.uri),
                    e,
                )
            })?;
        Ok(AdeVolume {
            secret_url,
            secret_vault: secret_target.resource_id,
            kek_url: kek.as_ref().map(|(kid, _)| kid.clone()),
            kek_vault: kek.map(|(_, vault)| vault),
            ..source.clone()
        })
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
