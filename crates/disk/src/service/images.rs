//! Images (`Microsoft.Compute/images`): an OS disk and data disks copied from managed disks
//! or snapshots (or a stopped virtual machine's disks), each kept as a copy of its source's
//! manifest with its data key, the way a snapshot is; disks made from an image
//! (`createOption: FromImage`, `imageReference: {id, lun}`) copy one of those in turn.

use super::snapshots::KeyPlan;
use super::*;
use crate::model::{Image, ImageDisk, IMAGE_DISK_KIND, IMAGE_KIND};

/// One disk of an image request.
#[derive(Debug, Clone, Default)]
pub struct ImageDiskRequest {
    /// The data disk's LUN; `None` for the OS disk.
    pub lun: Option<u32>,
    /// `osType`.
    pub os_type: Option<String>,
    /// `osState`.
    pub os_state: Option<String>,
    /// `managedDisk.id`.
    pub managed_disk: Option<String>,
    /// `snapshot.id`.
    pub snapshot: Option<String>,
    /// `blobUri` (not served: there are no storage accounts).
    pub blob_uri: Option<String>,
    /// `diskEncryptionSet.id`: the set the image's copy is wrapped by.
    pub disk_encryption_set: Option<String>,
}

/// Fields of an image create or update.
#[derive(Debug, Clone, Default)]
pub struct ImageRequest {
    /// Location (required on create).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `sourceVirtualMachine.id`: every disk of a stopped machine, as data disks.
    pub source_vm: Option<String>,
    /// `storageProfile.osDisk`.
    pub os_disk: Option<ImageDiskRequest>,
    /// `storageProfile.dataDisks`.
    pub data_disks: Vec<ImageDiskRequest>,
    /// `hyperVGeneration`.
    pub hyper_v_generation: Option<String>,
}

impl Compute {
    /// An image.
    pub fn get_image(&self, resource_group: &str, name: &str) -> Result<Image, ComputeError> {
        self.get(IMAGE_KIND, resource_group, name)
    }

    /// Every image, or a resource group's.
    pub fn list_images(&self, resource_group: Option<&str>) -> Result<Vec<Image>, ComputeError> {
        self.list(IMAGE_KIND, resource_group)
    }

    /// Creates an image, or updates one's tags (its disks never change).
    pub async fn put_image(
        &self,
        resource_group: &str,
        name: &str,
        req: &ImageRequest,
        now: i64,
    ) -> Result<(Image, bool), ComputeError> {
        check_compute_name("image", name)?;
        let _guard = self.changes.lock().await;
        let existing: Option<Image> = self
            .store
            .read(|tx| tx.resource(IMAGE_KIND, resource_group, name))?;
        if let Some(mut image) = existing {
            same_location(req.location.as_deref(), &image.location)?;
            unchanged(
                "storageProfile",
                req.os_disk.is_none() && req.data_disks.is_empty() && req.source_vm.is_none(),
            )?;
            if let Some(tags) = &req.tags {
                image.tags = tags.clone();
            }
            self.save_image(&image)?;
            return Ok((image, false));
        }
        let location = required_location(req.location.as_deref())?;
        let hyper_v_generation = match req.hyper_v_generation.as_deref() {
            None => "V1".to_owned(),
            Some(g) if g.eq_ignore_ascii_case("V1") || g.eq_ignore_ascii_case("V2") => {
                g.to_ascii_uppercase()
            }
            Some(g) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The value '{g}' of parameter 'hyperVGeneration' is not valid; use 'V1' or 'V2'."),
                ))
            }
        };
        let requests = self.image_disk_requests(resource_group, req)?;
        let mut copies: Vec<(ImageDisk, Disk, KeyPlanFor)> = Vec::new();
        for disk in &requests {
            copies.push(
                self.plan_image_disk(resource_group, name, &location, disk, now)
                    .await?,
            );
        }
        let mut disks = Vec::new();
        for (image_disk, copy, (source, plan)) in copies {
            self.finish_copy(&source, copy, plan).await?;
            disks.push(image_disk);
        }
        let image = Image {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: self.resource_id(resource_group, IMAGE_KIND, name),
            location,
            tags: req.tags.clone().unwrap_or_default(),
            hyper_v_generation,
            source_vm: req.source_vm.clone(),
            disks,
            created: now,
        };
        self.save_image(&image)?;
        Ok((image, true))
    }

    /// The disks an image request names: its storage profile, or a stopped machine's
    /// disks as data disks in LUN order.
    fn image_disk_requests(
        &self,
        resource_group: &str,
        req: &ImageRequest,
    ) -> Result<Vec<ImageDiskRequest>, ComputeError> {
        let mut disks: Vec<ImageDiskRequest> = req.os_disk.iter().cloned().collect();
        disks.extend(req.data_disks.iter().cloned());
        if let Some(vm_ref) = &req.source_vm {
            if !disks.is_empty() {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    "An image is made from sourceVirtualMachine or from storageProfile disks, not both.",
                ));
            }
            let (rg, vm_name) = resource_ref(vm_ref, VM_KIND, resource_group);
            let vm: VirtualMachine = self.get(VM_KIND, rg, vm_name)?;
            if vm.running {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Virtual machine '{vm_name}' is running; stop it before making an image of it (sourceVirtualMachine)."),
                ));
            }
            for (lun, disk) in vm.attached() {
                disks.push(ImageDiskRequest {
                    lun,
                    // A machine's OS disk is Linux, and captured as it is.
                    os_type: lun.is_none().then(|| "Linux".to_owned()),
                    os_state: lun.is_none().then(|| "Specialized".to_owned()),
                    managed_disk: Some(self.resource_id(rg, DISK_KIND, disk)),
                    ..Default::default()
                });
            }
        }
        if disks.is_empty() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "An image needs storageProfile.osDisk, storageProfile.dataDisks or sourceVirtualMachine.",
            ));
        }
        let mut luns: Vec<u32> = disks.iter().filter_map(|d| d.lun).collect();
        luns.sort_unstable();
        if luns.windows(2).any(|w| w[0] == w[1]) {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                "Each data disk of an image needs its own lun (storageProfile.dataDisks).",
            ));
        }
        Ok(disks)
    }

    /// Checks one disk of a new image and prepares its copy.
    async fn plan_image_disk(
        &self,
        resource_group: &str,
        image: &str,
        location: &str,
        disk: &ImageDiskRequest,
        now: i64,
    ) -> Result<(ImageDisk, Disk, KeyPlanFor), ComputeError> {
        let place = match disk.lun {
            None => "storageProfile.osDisk".to_owned(),
            Some(lun) => format!("storageProfile.dataDisks[lun {lun}]"),
        };
        if disk.lun.is_none() {
            for (property, value, allowed) in [
                ("osType", &disk.os_type, ["Linux", "Windows"]),
                ("osState", &disk.os_state, ["Generalized", "Specialized"]),
            ] {
                let ok = value
                    .as_deref()
                    .is_some_and(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)));
                if !ok {
                    return Err(ComputeError::invalid(
                        "InvalidParameter",
                        format!("{place}.{property} must be one of {}.", allowed.join(", ")),
                    ));
                }
            }
        }
        let source_ref = match (&disk.managed_disk, &disk.snapshot, &disk.blob_uri) {
            (Some(id), None, None) | (None, Some(id), None) => id,
            (None, None, Some(_)) => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("{place}.blobUri is not supported: there are no storage accounts; name a managedDisk or a snapshot."),
                ))
            }
            _ => {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("{place} needs exactly one of managedDisk.id and snapshot.id."),
                ))
            }
        };
        let source = self
            .copy_source(source_ref, resource_group, Some(location))
            .await?;
        let plan = self.key_plan(
            &source,
            None,
            disk.disk_encryption_set.as_deref(),
            resource_group,
            false,
        )?;
        let copy_name = match disk.lun {
            None => format!("{image}.os"),
            Some(lun) => format!("{image}.lun{lun}"),
        };
        let copy = self.copy_of(&source, IMAGE_DISK_KIND, resource_group, &copy_name, now);
        let image_disk = ImageDisk {
            lun: disk.lun,
            os_type: disk.os_type.clone(),
            os_state: disk.os_state.clone(),
            source_id: source.id.clone(),
            from_snapshot: source.is_snapshot(),
            copy: copy_name,
            size_gb: source.size_gb,
            disk_encryption_set: match &plan {
                KeyPlan::Rewrap(des) => Some(des.id.clone()),
                KeyPlan::Same => source.disk_encryption_set.clone(),
            },
        };
        Ok((image_disk, copy, (source, plan)))
    }

    /// Deletes an image and its copies; disks made from it keep their data.
    pub async fn delete_image(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let Some(image) = self
            .store
            .read(|tx| tx.resource::<Image>(IMAGE_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        let mut copies = Vec::new();
        for disk in &image.disks {
            if let Some(copy) = self
                .store
                .read(|tx| tx.resource::<Disk>(IMAGE_DISK_KIND, resource_group, &disk.copy))?
            {
                copies.push(copy);
            }
        }
        self.store.write(|tx| {
            for copy in &copies {
                tx.delete_resource(IMAGE_DISK_KIND, resource_group, &copy.name)?;
            }
            tx.delete_resource(IMAGE_KIND, resource_group, name)
        })?;
        self.store.scrub()?;
        for copy in &copies {
            self.delete_blocks(copy).await?;
        }
        Ok(true)
    }

    /// The resource id of the copy an image holds of its disk `lun` (`None`: the OS disk),
    /// for a disk made `FromImage`.
    pub(super) fn image_disk_id(
        &self,
        image_ref: &str,
        lun: Option<u32>,
        resource_group: &str,
    ) -> Result<String, ComputeError> {
        let (rg, name) = resource_ref(image_ref, IMAGE_KIND, resource_group);
        let image: Image = self
            .store
            .read(|tx| tx.resource(IMAGE_KIND, rg, name))?
            .ok_or_else(|| {
                ComputeError::invalid(
                    "InvalidParameter",
                    format!(
                        "The image '{image_ref}' (creationData.imageReference.id) was not found."
                    ),
                )
            })?;
        let disk = image.disks.iter().find(|d| d.lun == lun).ok_or_else(|| {
            ComputeError::invalid(
                "InvalidParameter",
                match lun {
                    None => format!("Image '{name}' has no OS disk; name a data disk with creationData.imageReference.lun."),
                    Some(lun) => format!("Image '{name}' has no data disk at lun {lun} (creationData.imageReference.lun)."),
                },
            )
        })?;
        Ok(self.resource_id(rg, IMAGE_DISK_KIND, &disk.copy))
    }

    fn save_image(&self, image: &Image) -> Result<(), ComputeError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(IMAGE_KIND, &image.resource_group, &image.name, image))?)
    }
}

/// A copy's source and how its keys are wrapped.
type KeyPlanFor = (Disk, KeyPlan);
