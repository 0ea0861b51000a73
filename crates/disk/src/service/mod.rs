//! The compute service: disk encryption sets, disks and their data keys, virtual machines,
//! and the disks a running machine has open.
//!
//! Customer-managed keys are reached only through [`KeyVaultAccess`], as the disk
//! encryption set's managed identity, so every wrap and unwrap is authorized and audited
//! by the vault like any client's call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use atrest_core::compute::{check_compute_name, check_disk_size_gb, EncryptionType, KeyUrl};
use atrest_core::vault::normalize_location;
use atrest_crypto::RootKey;
use atrest_identity::Identity;
use atrest_store::{Acquired, Store};
use atrest_xts::XtsKey;
use tokio::sync::Mutex as AsyncMutex;
use zeroize::Zeroizing;

use crate::error::{ComputeError, KeyAccessError};
use crate::keys::{new_dek, xts_key, KeyVaultAccess, PlatformKeys, DEK_WRAP_ALGORITHM};
use crate::model::{
    kind_in_id, Disk, DiskEncryptionSet, KeyRef, VirtualMachine, WrappedDek, DES_KIND, DISK_KIND,
    NETWORK_POLICIES, RECOVERY_DISK_KIND, SNAPSHOT_KIND, VM_KIND,
};
use atrest_blocks::{BlockStore, Volume};
use replication::lun_label;

mod access;
mod copy_start;
mod disks;
mod encryption;
mod images;
mod machines;
mod recovery;
mod replication;
mod sets;
mod snapshots;
#[cfg(test)]
mod tests;

pub use access::Grant;
pub use disks::{DiskRequest, Unreachable};
pub use encryption::{EncryptionStatus, ExtensionRequest};
pub use images::{ImageDiskRequest, ImageRequest};
pub use machines::VmRequest;
pub use recovery::RecoveryDisk;
pub use replication::{ReplicaPair, ReplicaTarget};
pub use sets::DesRequest;
pub use snapshots::{SnapshotLimits, SnapshotRequest};

/// A disk being served: its blocks with the data keys in memory.
pub struct OpenDisk {
    /// The NBD export name, `RESOURCE_GROUP/DISK`.
    pub export: String,
    resource_group: String,
    name: String,
    /// The blocks.
    pub file: Volume,
    /// Set when its machine stops: the export is gone for good.
    closed: AtomicBool,
    /// The lease that makes this replica the disk's one writer.
    lease: DiskLease,
}

/// A running machine's BEK VOLUME as served: a read-only FAT image in memory, wiped on
/// drop.
pub struct BekExport {
    /// The NBD export name, `RESOURCE_GROUP/VM/bek`.
    pub export: String,
    image: Zeroizing<Vec<u8>>,
    closed: AtomicBool,
}

impl BekExport {
    /// Bytes of the image.
    pub fn size(&self) -> u64 {
        self.image.len() as u64
    }

    /// The image's bytes at `offset` (the caller checks the range).
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        let at = offset as usize;
        buf.copy_from_slice(&self.image[at..at + buf.len()]);
    }

    /// Whether the export has ended (its machine stopped).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for BekExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BekExport")
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

/// What one NBD export serves.
#[derive(Debug, Clone)]
pub enum Export {
    /// A disk, read and written.
    Disk(Arc<OpenDisk>),
    /// A BEK VOLUME, read only.
    Bek(Arc<BekExport>),
}

/// A disk's lease as this replica holds it.
struct DiskLease {
    name: String,
    epoch: i64,
    /// When this replica stops serving the disk unless it renews first: before the
    /// database's own time for the lease runs out, so another replica never takes it
    /// while this one still writes.
    until: Mutex<Instant>,
}

impl OpenDisk {
    /// Whether the export has ended: its machine stopped, or the disk's lease ran out
    /// here.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || Instant::now() >= *self.lease.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the export after making what was written durable.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Err(e) = self.file.flush() {
            tracing::warn!(disk = %self.name, error = %e, "flushing a disk at stop failed");
        }
        self.file.revoke();
    }

    /// Ends the export without writing anything more: the lease is lost, and another
    /// replica may be the disk's writer now.
    fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
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
    /// Where the disks' blocks are kept.
    pub blocks: Arc<BlockStore>,
    /// How long a chunk no manifest names is kept before it is deleted (seconds): a
    /// reader of an older manifest may still need it.
    pub garbage_grace: i64,
    /// Limits on incremental snapshots of one disk.
    pub snapshot_limits: SnapshotLimits,
    /// The most bytes per second a `CopyStart` copies (none: as fast as it can).
    pub copy_bandwidth: Option<u64>,
    /// Host suffix of vault URLs (`.vault.localhost`).
    pub vault_host_suffix: String,
    /// This replica's name: the holder of the disk leases it takes.
    pub replica: String,
    /// How long a disk's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// `HOST:PORT` of this replica's NBD server, if it runs one.
    pub nbd: Option<String>,
}

/// The compute service.
pub struct Compute {
    store: Arc<Store>,
    vaults: Arc<dyn KeyVaultAccess>,
    platform: PlatformKeys,
    config: ComputeConfig,
    /// Open disks by export name (lower-cased).
    open: RwLock<HashMap<String, Arc<OpenDisk>>>,
    /// BEK VOLUMEs of the machines served here, by export name (lower-cased).
    beks: RwLock<HashMap<String, Arc<BekExport>>>,
    /// Serializes changes, so a change that waits on a vault does not race another.
    changes: AsyncMutex<()>,
    /// Read access granted to disks (`beginGetAccess`), by the digest of their token.
    grants: RwLock<HashMap<[u8; 32], Arc<Grant>>>,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Runs block-store work (file or object-store I/O, which blocks) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, atrest_blocks::BlockError> + Send + 'static,
) -> Result<T, ComputeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))?
        .map_err(ComputeError::from)
}

/// Whether `disk` is protected through `des`.
fn uses_set(disk: &Disk, des: &DiskEncryptionSet) -> bool {
    disk.disk_encryption_set
        .as_deref()
        .is_some_and(|id| id.eq_ignore_ascii_case(&des.id))
}

/// A location given in a request, normalized.
fn parse_location(location: &str) -> Result<String, ComputeError> {
    normalize_location(location)
        .map_err(|e| ComputeError::invalid("LocationNotAvailableForResourceType", e.to_string()))
}

/// The location a new resource must be given.
fn required_location(location: Option<&str>) -> Result<String, ComputeError> {
    parse_location(location.ok_or_else(|| {
        ComputeError::invalid(
            "LocationRequired",
            "The location property is required for this definition.",
        )
    })?)
}

/// An update may repeat a property that cannot change, never alter it.
fn unchanged(property: &str, same: bool) -> Result<(), ComputeError> {
    if same {
        Ok(())
    } else {
        Err(ComputeError::invalid(
            "PropertyChangeNotAllowed",
            format!("Changing property '{property}' is not allowed."),
        ))
    }
}

/// Checks that an update's location, if given, is the resource's.
fn same_location(given: Option<&str>, current: &str) -> Result<(), ComputeError> {
    match given {
        Some(l) => unchanged(
            "location",
            parse_location(l).ok().as_deref() == Some(current),
        ),
        None => Ok(()),
    }
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
        Ok(Compute {
            platform: PlatformKeys::load(&store, root, now)?,
            store,
            vaults,
            config,
            open: RwLock::new(HashMap::new()),
            beks: RwLock::new(HashMap::new()),
            changes: AsyncMutex::new(()),
            grants: RwLock::new(HashMap::new()),
        })
    }

    /// The resource id a reference of `kind` names: an id as given, or a name in
    /// `resource_group`.
    fn resource_id_of(&self, reference: &str, kind: &str, resource_group: &str) -> String {
        let (rg, name) = resource_ref(reference, kind, resource_group);
        self.resource_id(rg, kind, name)
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
            .write(|tx| tx.put_resource(disk.kind(), &disk.resource_group, &disk.name, disk))?)
    }

    fn save_vm(&self, vm: &VirtualMachine) -> Result<(), ComputeError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(VM_KIND, &vm.resource_group, &vm.name, vm))?)
    }
}
