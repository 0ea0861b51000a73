//! Virtual machines: attaching disks, start and stop, the open-disk registry behind the
//! NBD exports, and the periodic key checks.

use super::*;

/// Fields of a virtual machine create or update.
#[derive(Debug, Clone, Default)]
pub struct VmRequest {
    /// Location (defaults to the first disk's).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Data disks by name or resource id, in LUN order.
    pub disks: Option<Vec<String>>,
    /// The OS disk by name or resource id.
    pub os_disk: Option<String>,
}

impl Compute {
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
            host: None,
            nbd: None,
            created: now,
            os_disk: None,
            extensions: Vec::new(),
        });
        if let Some(tags) = &req.tags {
            vm.tags = tags.clone();
        }
        let requested_os = req.os_disk.clone().or_else(|| vm.os_disk.clone());
        let requested = req.disks.clone().unwrap_or_else(|| vm.disks.clone());
        let mut disks = Vec::new();
        for reference in requested_os.iter().chain(&requested) {
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
            if disk.awaiting_upload {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Disk '{}' is waiting for its upload (ReadyToUpload); it can be attached once the upload ends.", disk.name),
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
        // A new machine defaults to the location of its first disk.
        let location = match (created, disks.first()) {
            (false, _) => {
                same_location(req.location.as_deref(), &vm.location)?;
                vm.location.clone()
            }
            (true, Some(d)) if req.location.is_none() => d.location.clone(),
            (true, _) => required_location(req.location.as_deref())?,
        };
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
        let attached: Vec<String> = vm.attached().map(|(_, d)| d.clone()).collect();
        let changed = names.len() != attached.len()
            || names
                .iter()
                .zip(&attached)
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
        let detached: Vec<String> = attached
            .into_iter()
            .filter(|old| !names.iter().any(|n| n.eq_ignore_ascii_case(old)))
            .collect();
        let mut names = names.into_iter();
        vm.os_disk = requested_os.is_some().then(|| names.next()).flatten();
        vm.disks = names.collect();
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

    /// Starts a virtual machine. Without a `host`: one running on another replica stays
    /// there; otherwise this replica takes each disk's lease, unwraps its data keys and
    /// exports it, and a disk served elsewhere or with an unusable key refuses the start,
    /// naming the disk and why, with nothing exported. With a `host`, the machine is
    /// recorded as that replica's (moving it, if it ran elsewhere: its replica closes the
    /// disks, flushed, within a second) and is served by it as soon as the disks' leases
    /// are free: at once, or when a dead replica's leases run out.
    pub async fn start_vm(
        &self,
        resource_group: &str,
        name: &str,
        now: i64,
        host: Option<&str>,
    ) -> Result<VirtualMachine, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, name)?;
        match host {
            None if vm.running && !self.is_mine(&vm) => {}
            None => self.serve_vm(&mut vm, now).await?,
            Some(host) if host == self.config.replica => match self.serve_vm(&mut vm, now).await {
                Err(ComputeError::ServedElsewhere { .. }) => self.assign(&mut vm, host)?,
                served => served?,
            },
            Some(other) => self.assign(&mut vm, other)?,
        }
        Ok(vm)
    }

    /// Records `vm` as running on `host`, which serves it once it can.
    fn assign(&self, vm: &mut VirtualMachine, host: &str) -> Result<(), ComputeError> {
        vm.running = true;
        vm.host = Some(host.to_owned());
        vm.nbd = None;
        self.save_vm(vm)
    }

    /// Serves `vm`'s disks from this replica and records that it runs here.
    async fn serve_vm(&self, vm: &mut VirtualMachine, now: i64) -> Result<(), ComputeError> {
        // The passphrases first: a secret or key that cannot be used refuses the start
        // before any disk is opened.
        let bek = self.bek_volume(vm).await?;
        let mut opened = Vec::new();
        let result = self.open_disks(vm, now, &mut opened).await;
        if let Err(e) = result {
            for disk in &opened {
                self.release_lease(&disk.lease);
            }
            return Err(e);
        }
        {
            let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
            for disk in opened {
                if let Some(previous) = open.insert(disk.export.clone(), Arc::new(disk)) {
                    previous.close();
                }
            }
        }
        if let Some(bek) = bek {
            let previous = self
                .beks
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(bek.export.clone(), Arc::new(bek));
            if let Some(previous) = previous {
                previous.closed.store(true, Ordering::Release);
            }
        }
        vm.running = true;
        vm.host = Some(self.config.replica.clone());
        vm.nbd = self.config.nbd.clone();
        self.save_vm(vm)
    }

    /// Takes the lease of each of `vm`'s disks and opens it into `opened`.
    async fn open_disks(
        &self,
        vm: &VirtualMachine,
        now: i64,
        opened: &mut Vec<OpenDisk>,
    ) -> Result<(), ComputeError> {
        let resource_group = &vm.resource_group;
        for (_, disk_name) in vm.attached() {
            let disk: Disk = self.get(DISK_KIND, resource_group, disk_name)?;
            if self.access_active(&disk, now).is_some() {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Disk '{disk_name}' has active read access (ActiveSAS); end it with endGetAccess first."),
                ));
            }
            let lease = self.take_lease(&disk)?;
            let layers = match self.unwrap_layers(&disk).await {
                Ok(layers) => layers,
                Err(e) => {
                    self.release_lease(&lease);
                    if matches!(e, ComputeError::KeyUnusable { .. }) {
                        self.set_key_error(resource_group, disk_name, Some(e.to_string()))?;
                    }
                    return Err(e);
                }
            };
            self.set_key_error(resource_group, disk_name, None)?;
            let file = match self.open_volume(&disk, layers).await {
                Ok(file) => file,
                Err(e) => {
                    self.release_lease(&lease);
                    return Err(e);
                }
            };
            opened.push(OpenDisk {
                export: Self::export_name(resource_group, &disk.name),
                resource_group: resource_group.clone(),
                name: disk.name.clone(),
                file,
                closed: AtomicBool::new(false),
                lease,
            });
        }
        Ok(())
    }

    fn lease_name(disk: &Disk) -> String {
        format!("disk/{}", disk.unique_id)
    }

    /// Takes (or renews) `disk`'s lease for this replica; refused while another replica's
    /// lease on it has time left.
    pub(super) fn take_lease(&self, disk: &Disk) -> Result<DiskLease, ComputeError> {
        let name = Self::lease_name(disk);
        let (acquired, until) =
            self.store
                .acquire_lease(&name, &self.config.replica, self.config.lease_ttl)?;
        match acquired {
            Acquired::Held { epoch } => Ok(DiskLease {
                name,
                epoch,
                until: Mutex::new(until),
            }),
            Acquired::HeldBy(row) => Err(ComputeError::ServedElsewhere {
                disk: disk.name.clone(),
                replica: row.holder,
            }),
        }
    }

    pub(super) fn release_lease(&self, lease: &DiskLease) {
        let released = self
            .store
            .release_lease(&lease.name, &self.config.replica, lease.epoch);
        if let Err(e) = released {
            tracing::warn!(lease = %lease.name, error = %e, "cannot release a disk's lease; it runs out by itself");
        }
    }

    /// Starts again the machines that were running here when the server last stopped. One
    /// whose keys cannot be unwrapped stays stopped, and its disk shows why.
    pub async fn resume(&self, now: i64) -> Result<(), ComputeError> {
        let mine = self
            .list_vms(None)?
            .into_iter()
            .filter(|vm| vm.running && self.is_mine(vm));
        for vm in mine {
            let _guard = self.changes.lock().await;
            let mut started = vm.clone();
            if let Err(e) = self.serve_vm(&mut started, now).await {
                tracing::warn!(vm = %vm.name, error = %e, "a virtual machine that was running cannot start again");
                let mut stopped = vm;
                stopped.running = false;
                self.save_vm(&stopped)?;
            }
        }
        Ok(())
    }

    /// Whether this replica is the one to serve `vm` (one started before replicas had
    /// names belongs to whichever serves it).
    pub(super) fn is_mine(&self, vm: &VirtualMachine) -> bool {
        vm.host.as_deref().is_none_or(|h| h == self.config.replica)
    }

    /// Brings this replica in line with the machines' records, which any replica may have
    /// changed: serves the disks of a machine started for this replica, and closes those
    /// of one stopped, moved or deleted elsewhere. A machine whose disks another replica
    /// still holds is tried again at the next call.
    pub async fn reconcile(&self, now: i64) -> Result<(), ComputeError> {
        let vms = self.list_vms(None)?;
        for vm in &vms {
            let served_here = self.serves_any(vm);
            let wanted_here = vm.running && self.is_mine(vm);
            if wanted_here && !self.serves_all(vm) {
                let _guard = self.changes.lock().await;
                let mut started: VirtualMachine =
                    self.get(VM_KIND, &vm.resource_group, &vm.name)?;
                if started.running && self.is_mine(&started) {
                    match self.serve_vm(&mut started, now).await {
                        Ok(()) => {
                            tracing::info!(vm = %vm.name, "serving a virtual machine started for this replica")
                        }
                        Err(e) => {
                            tracing::info!(vm = %vm.name, error = %e, "a virtual machine started for this replica cannot be served yet")
                        }
                    }
                }
            } else if served_here && !wanted_here {
                // Judged again under the lock: the machine may have been started since.
                let _guard = self.changes.lock().await;
                let current: Option<VirtualMachine> = self
                    .store
                    .read(|tx| tx.resource(VM_KIND, &vm.resource_group, &vm.name))?;
                if current.is_none_or(|c| !(c.running && self.is_mine(&c))) {
                    tracing::info!(vm = %vm.name, "a virtual machine stopped or moved elsewhere; closing its disks here");
                    self.close_disks(vm);
                }
            }
        }
        // Disks of machines that no longer exist, judged under the changes lock against the
        // records as they are now: a machine created and started since the listing above
        // keeps its disks.
        let _guard = self.changes.lock().await;
        let vms = self.list_vms(None)?;
        let gone = self.served().into_iter().filter(|d| {
            !vms.iter().any(|vm| {
                vm.resource_group.eq_ignore_ascii_case(&d.resource_group)
                    && vm.attached().any(|(_, n)| n.eq_ignore_ascii_case(&d.name))
            })
        });
        for disk in gone {
            self.open
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&disk.export);
            disk.close();
            self.release_lease(&disk.lease);
        }
        let orphans: Vec<String> = self
            .beks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|export| {
                !vms.iter().any(|vm| {
                    vm.running
                        && self.is_mine(vm)
                        && Self::bek_export_name(&vm.resource_group, &vm.name) == **export
                })
            })
            .cloned()
            .collect();
        for export in orphans {
            self.close_bek(&export);
        }
        Ok(())
    }

    /// The disks served here now (the registry is not held while they are worked on).
    fn served(&self) -> Vec<Arc<OpenDisk>> {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn serves_any(&self, vm: &VirtualMachine) -> bool {
        vm.attached().any(|(_, d)| {
            self.export(&Self::export_name(&vm.resource_group, d))
                .is_some()
        })
    }

    fn serves_all(&self, vm: &VirtualMachine) -> bool {
        vm.attached().all(|(_, d)| {
            self.export(&Self::export_name(&vm.resource_group, d))
                .is_some()
        })
    }

    /// Renews the lease of every disk served here. A disk whose lease another replica
    /// has taken is abandoned at once (nothing more is written); one whose renewal fails
    /// stops serving by itself when its time runs out, and is abandoned then.
    pub fn renew_leases(&self) {
        for disk in self.served() {
            let renewed = self.store.acquire_lease(
                &disk.lease.name,
                &self.config.replica,
                self.config.lease_ttl,
            );
            let lost = match renewed {
                Ok((Acquired::Held { epoch }, until)) if epoch == disk.lease.epoch => {
                    *disk.lease.until.lock().unwrap_or_else(|p| p.into_inner()) = until;
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(disk = %disk.name, error = %e, "cannot renew a disk's lease");
                    disk.is_closed()
                }
            };
            if lost {
                tracing::error!(disk = %disk.name, "this replica lost the disk's lease; it serves the disk no more");
                self.open
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&disk.export);
                disk.abandon();
            }
        }
    }

    /// Stops a virtual machine: flushes its disks, withdraws their keys from memory and
    /// ends their exports (on the replica that serves them).
    pub async fn stop_vm(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<VirtualMachine, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, name)?;
        self.close_disks(&vm);
        vm.running = false;
        vm.nbd = None;
        self.save_vm(&vm)?;
        Ok(vm)
    }

    /// Ends the exports of `vm`'s disks served here, and gives their leases up.
    pub(super) fn close_disks(&self, vm: &VirtualMachine) {
        let closed: Vec<Arc<OpenDisk>> = {
            let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
            vm.attached()
                .filter_map(|(_, disk)| open.remove(&Self::export_name(&vm.resource_group, disk)))
                .collect()
        };
        for disk in closed {
            disk.close();
            self.release_lease(&disk.lease);
        }
        self.close_bek(&Self::bek_export_name(&vm.resource_group, &vm.name));
    }

    /// Ends a BEK VOLUME's export; its image is wiped once the last reader lets go.
    fn close_bek(&self, export: &str) {
        let removed = self
            .beks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(export);
        if let Some(bek) = removed {
            bek.closed.store(true, Ordering::Release);
        }
    }

    /// The NBD export name of a machine's BEK VOLUME, `resource_group/vm/bek`, lower-cased
    /// (no disk name holds a `/`, so it meets no disk's).
    pub fn bek_export_name(resource_group: &str, vm: &str) -> String {
        format!("{resource_group}/{vm}/bek").to_ascii_lowercase()
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
            for (_, disk) in vm.attached() {
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

    /// What the NBD export `name` serves: a disk or a BEK VOLUME.
    pub fn nbd_export(&self, name: &str) -> Option<Export> {
        if let Some(disk) = self.export(name) {
            return Some(Export::Disk(disk));
        }
        self.beks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
            .map(Export::Bek)
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
        names.extend(
            self.beks
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
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
        for disk in self.served() {
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
                    // Why I/O stops is on record before it stops.
                    self.set_key_error(&disk.resource_group, &disk.name, Some(e.to_string()))?;
                    if disk.file.is_available() {
                        tracing::warn!(disk = %disk.name, error = %e, "the disk's key is unusable; I/O stops");
                        disk.file.revoke();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Flushes every open disk (at shutdown).
    pub fn flush_all(&self) {
        for disk in self.served() {
            if let Err(e) = disk.file.flush() {
                tracing::warn!(disk = %disk.name, error = %e, "flushing a disk failed");
            }
        }
    }
}
