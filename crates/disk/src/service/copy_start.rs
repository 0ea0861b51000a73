//! `CopyStart`: an incremental snapshot copied into another region under that region's
//! keys. The new snapshot gets fresh data keys (the platform key, or a disk encryption set
//! in the target region, required when the source has a customer key); its data is read
//! from the source (decrypted) and written to it (encrypted again) in the background,
//! chunk by chunk, at most `copy_bandwidth` bytes a second, with `completionPercent`
//! showing the progress. A source deleted before the copy ends stops it with
//! `CopySourceNotFound`.

use atrest_blocks::CHUNK;

use super::*;

/// Why a copy stopped: Azure's `copyCompletionError`.
struct CopyFailure {
    code: &'static str,
    message: String,
}

impl From<ComputeError> for CopyFailure {
    fn from(e: ComputeError) -> Self {
        CopyFailure {
            code: "CopyFailed",
            message: e.to_string(),
        }
    }
}

impl Compute {
    /// Creates snapshot `name` in `location` as a copy of incremental snapshot `reference`
    /// that the copy job fills.
    pub(super) async fn start_copy(
        &self,
        resource_group: &str,
        name: &str,
        reference: &str,
        location: &str,
        req: &SnapshotRequest,
        now: i64,
    ) -> Result<Disk, ComputeError> {
        let source = self.copy_source(reference, resource_group, None).await?;
        if !source.is_snapshot() || !source.incremental {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("CopyStart copies an incremental snapshot; '{reference}' is not one (creationData.sourceResourceId)."),
            ));
        }
        if req.incremental == Some(false) {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "A snapshot made with CopyStart is incremental (property 'incremental').",
            ));
        }
        let (encryption, des) = self.keys_in_region(
            &source,
            req.encryption_type.as_deref(),
            req.disk_encryption_set.as_deref(),
            resource_group,
            location,
        )?;
        let mut copy = self.copy_of(&source, SNAPSHOT_KIND, resource_group, name, now);
        copy.location = location.to_owned();
        copy.tags = req.tags.clone().unwrap_or_default();
        copy.incremental = true;
        copy.family_id = Some(copy.unique_id.clone());
        copy.key_binding = None;
        copy.create_option = Some("CopyStart".into());
        copy.encryption_type = encryption.as_str().to_owned();
        copy.disk_encryption_set = des.as_ref().map(|d| d.id.clone());
        copy.keys = self
            .new_keys(&copy.unique_id, encryption, des.as_ref())
            .await?;
        copy.copying = true;
        copy.completion_percent = 0.0;
        self.save_disk(&copy)?;
        Ok(copy)
    }

    /// The encryption and disk encryption set of a copy of `source` made in another
    /// `location`: fresh keys of that region, a set there required when the source has a
    /// customer key.
    pub(super) fn keys_in_region(
        &self,
        source: &Disk,
        encryption_type: Option<&str>,
        disk_encryption_set: Option<&str>,
        resource_group: &str,
        location: &str,
    ) -> Result<(EncryptionType, Option<DiskEncryptionSet>), ComputeError> {
        let from = source.encryption();
        let encryption = match (encryption_type, disk_encryption_set) {
            (Some(t), _) => EncryptionType::parse(t)?,
            (None, Some(_)) if from.uses_customer_key() => from,
            (None, Some(_)) => EncryptionType::CustomerKey,
            (None, None) => from,
        };
        // A customer-key source needs a set in the target region, said in its own words.
        if disk_encryption_set.is_none() && encryption.uses_customer_key() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Copying '{}' ({}) to '{location}' needs a disk encryption set in '{location}' (encryption.diskEncryptionSetId).", source.name, from.as_str()),
            ));
        }
        if disk_encryption_set.is_none() && from.uses_customer_key() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("'{}' has a customer-managed key; its copy to '{location}' needs a disk encryption set there, not encryption.type {}.", source.name, encryption.as_str()),
            ));
        }
        let des =
            self.set_for_new_keys(disk_encryption_set, encryption, resource_group, location)?;
        Ok((encryption, des))
    }

    /// Snapshots whose `CopyStart` has not finished.
    pub fn pending_copies(&self) -> Result<Vec<Disk>, ComputeError> {
        Ok(self
            .list_snapshots(None)?
            .into_iter()
            .filter(|s| s.copying)
            .collect())
    }

    /// Runs one pending copy to its end, recording its progress and how it ended.
    pub async fn run_copy(&self, copy: &Disk) -> Result<(), ComputeError> {
        let outcome = self.copy_data(copy).await;
        let (rg, name) = (copy.resource_group.as_str(), copy.name.as_str());
        self.store
            .write(|tx| match tx.resource::<Disk>(SNAPSHOT_KIND, rg, name)? {
                Some(mut stored) if stored.unique_id == copy.unique_id => {
                    stored.copying = false;
                    match &outcome {
                        Ok(()) => stored.completion_percent = 100.0,
                        Err(f) => stored.copy_error = Some((f.code.into(), f.message.clone())),
                    }
                    tx.put_resource(SNAPSHOT_KIND, rg, name, &stored)
                }
                _ => Ok(()),
            })?;
        if let Err(f) = outcome {
            tracing::warn!(snapshot = %copy.name, code = f.code, "a snapshot copy stopped: {}", f.message);
        }
        Ok(())
    }

    /// The source snapshot of a copy, if it still exists.
    fn copy_source_now(&self, copy: &Disk) -> Result<Option<Disk>, ComputeError> {
        let id = copy.source_resource_id.as_deref().unwrap_or_default();
        let (rg, name) = resource_ref(id, SNAPSHOT_KIND, &copy.resource_group);
        Ok(self
            .store
            .read(|tx| tx.resource::<Disk>(SNAPSHOT_KIND, rg, name))?
            .filter(|s| Some(&s.unique_id) == copy.source_unique_id.as_ref()))
    }

    async fn copy_data(&self, copy: &Disk) -> Result<(), CopyFailure> {
        let not_found = || CopyFailure {
            code: "CopySourceNotFound",
            message: format!(
                "The source of snapshot '{}' was deleted before its copy completed.",
                copy.name
            ),
        };
        let source = self.copy_source_now(copy)?.ok_or_else(not_found)?;
        let from = self
            .open_volume(&source, self.unwrap_layers(&source).await?)
            .await?;
        let to = Arc::new(
            self.open_volume(copy, self.unwrap_layers(copy).await?)
                .await?,
        );
        let from = Arc::new(from);
        let indices: Vec<u32> = from.committed().chunks.keys().copied().collect();
        let size = source.size_bytes();
        let mut recorded = None;
        for (done, index) in indices.iter().enumerate() {
            if self.copy_source_now(copy)?.is_none() {
                return Err(not_found());
            }
            // Progress is stored once per whole percent, not once per chunk.
            let percent = done as f64 * 100.0 / indices.len() as f64;
            if recorded != Some(percent.floor()) {
                recorded = Some(percent.floor());
                if !self.set_completion(copy, percent)? {
                    // The copy itself was deleted: nothing is left to fill.
                    return Ok(());
                }
            }
            let start = u64::from(*index) * CHUNK;
            self.copy_range(&from, &to, start, CHUNK.min(size - start))
                .await?;
        }
        blocking(move || to.flush()).await?;
        Ok(())
    }

    /// Copies `len` bytes at `offset` from one volume to another (decrypted with the
    /// first's keys, encrypted with the second's), then waits as `copy_bandwidth` says.
    pub(super) async fn copy_range(
        &self,
        from: &Arc<Volume>,
        to: &Arc<Volume>,
        offset: u64,
        len: u64,
    ) -> Result<(), ComputeError> {
        let (from, to) = (from.clone(), to.clone());
        blocking(move || {
            let mut data = vec![0u8; len as usize];
            from.read(offset, &mut data)?;
            to.write_in_place(offset, &mut data)
        })
        .await?;
        self.pace(len).await;
        Ok(())
    }

    /// Waits as long as `len` bytes take at `copy_bandwidth`, if one is set.
    pub(super) async fn pace(&self, len: u64) {
        if let Some(rate) = self.config.copy_bandwidth.filter(|r| *r > 0) {
            tokio::time::sleep(Duration::from_secs_f64(len as f64 / rate as f64)).await;
        }
    }

    /// Records a copy's progress; false if the copy no longer exists.
    fn set_completion(&self, copy: &Disk, percent: f64) -> Result<bool, ComputeError> {
        let (rg, name) = (copy.resource_group.as_str(), copy.name.as_str());
        Ok(self
            .store
            .write(|tx| match tx.resource::<Disk>(SNAPSHOT_KIND, rg, name)? {
                Some(mut stored) if stored.unique_id == copy.unique_id => {
                    stored.completion_percent = percent;
                    tx.put_resource(SNAPSHOT_KIND, rg, name, &stored)?;
                    Ok::<bool, atrest_store::StoreError>(true)
                }
                _ => Ok(false),
            })?)
    }
}
