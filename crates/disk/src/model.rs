//! The compute resources as stored: disk encryption sets, disks and virtual machines.

use std::collections::BTreeMap;

use atrest_core::compute::EncryptionType;
use serde::{Deserialize, Serialize};

/// Store kind of disk encryption sets.
pub const DES_KIND: &str = "diskEncryptionSets";
/// Store kind of disks.
pub const DISK_KIND: &str = "disks";
/// Store kind of snapshots (stored as [`Disk`] documents: a snapshot has a disk's
/// properties, its own manifest, and never changes its data).
pub const SNAPSHOT_KIND: &str = "snapshots";
/// Store kind of images (`Microsoft.Compute/images`).
pub const IMAGE_KIND: &str = "images";
/// Store kind of the copies an image holds, one per disk of the image (stored as [`Disk`]
/// documents, never shown as resources).
pub const IMAGE_DISK_KIND: &str = "imageDisks";
/// Store kind of the copies a recovery point holds, one per disk of the machine backed
/// up (stored as [`Disk`] documents, never shown as resources).
pub const RECOVERY_DISK_KIND: &str = "recoveryPointDisks";
/// Store kind of virtual machines.
pub const VM_KIND: &str = "virtualMachines";

/// A key a disk encryption set uses: a versioned key URL and the vault holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// `https://VAULT.vault.localhost:PORT/keys/NAME/VERSION`.
    pub key_url: String,
    /// The vault's ARM resource id.
    pub source_vault: String,
}

/// A disk encryption set (`Microsoft.Compute/diskEncryptionSets`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskEncryptionSet {
    /// Name, unique in its resource group.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// ARM resource id; also the resource id of its system-assigned identity.
    pub id: String,
    /// Normalized location.
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// `EncryptionAtRestWithCustomerKey` or `EncryptionAtRestWithPlatformAndCustomerKeys`.
    pub encryption_type: String,
    /// The key new data keys are wrapped with.
    pub active_key: KeyRef,
    /// Keys still wrapping some disk while a rewrap is in progress.
    pub previous_keys: Vec<KeyRef>,
    /// Whether new key versions are adopted automatically.
    pub rotation_to_latest_key_version: bool,
    /// When the active key last changed.
    pub last_key_rotation: Option<i64>,
    /// Why the last automatic rotation failed, if it did.
    pub auto_key_rotation_error: Option<String>,
    /// Object id of the system-assigned managed identity.
    pub principal_id: String,
    /// Creation time.
    pub created: i64,
}

impl DiskEncryptionSet {
    /// The encryption type.
    pub fn encryption(&self) -> EncryptionType {
        EncryptionType::parse(&self.encryption_type).unwrap_or(EncryptionType::CustomerKey)
    }
}

/// One wrapped data key of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum WrappedDek {
    /// Wrapped by a platform key version.
    Platform {
        /// The platform key version.
        version: u32,
        /// AES-256-GCM ciphertext, bound to the disk.
        #[serde(with = "b64")]
        wrapped: Vec<u8>,
    },
    /// Wrapped by a customer-managed key with RSA-OAEP-256.
    Customer {
        /// The versioned key that wrapped it.
        key_url: String,
        /// RSA-OAEP-256 ciphertext.
        #[serde(with = "b64")]
        wrapped: Vec<u8>,
    },
}

/// A managed disk (`Microsoft.Compute/disks`) or a snapshot (`Microsoft.Compute/snapshots`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disk {
    /// Name, unique in its resource group.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// ARM resource id.
    pub id: String,
    /// Normalized location.
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Size in GiB.
    pub size_gb: u64,
    /// Random id; names the disk's manifest in the block store.
    pub unique_id: String,
    /// The id platform-wrapped keys are bound to: the disk that made the data key, which a
    /// snapshot or a copy shares (none: `unique_id`).
    #[serde(default)]
    pub key_binding: Option<String>,
    /// `creationData.createOption`: `Empty`, `Upload` or `Copy`.
    #[serde(default)]
    pub create_option: Option<String>,
    /// `creationData.sourceResourceId` of a copy or snapshot.
    #[serde(default)]
    pub source_resource_id: Option<String>,
    /// `creationData.sourceUniqueId`.
    #[serde(default)]
    pub source_unique_id: Option<String>,
    /// A snapshot that is incremental.
    #[serde(default)]
    pub incremental: bool,
    /// `incrementalSnapshotFamilyId`: the unique id of the disk an incremental snapshot
    /// is of.
    #[serde(default)]
    pub family_id: Option<String>,
    /// `creationData.imageReference` of a disk made `FromImage`: the image and the LUN of
    /// its data disk (none: its OS disk).
    #[serde(default)]
    pub image_reference: Option<(String, Option<u32>)>,
    /// A snapshot whose data a `CopyStart` is still copying in the background.
    #[serde(default)]
    pub copying: bool,
    /// How much of a `CopyStart` copy has arrived, percent (100 for anything else).
    #[serde(default = "complete")]
    pub completion_percent: f64,
    /// Why a `CopyStart` copy stopped: `(errorCode, errorMessage)`.
    #[serde(default)]
    pub copy_error: Option<(String, String)>,
    /// Azure's encryption type name.
    pub encryption_type: String,
    /// The disk encryption set's resource id, for customer-managed keys.
    pub disk_encryption_set: Option<String>,
    /// The data keys, innermost layer first, each wrapped.
    pub keys: Vec<WrappedDek>,
    /// The virtual machine the disk is attached to.
    pub managed_by: Option<String>,
    /// Why the disk's key could not be used at the last attempt, until it can again.
    pub key_error: Option<String>,
    /// Creation time.
    pub created: i64,
    /// `networkAccessPolicy`: `AllowAll`, `AllowPrivate` or `DenyAll` (no export).
    #[serde(default = "allow_all")]
    pub network_access_policy: String,
    /// The exact size of a disk created for upload (`uploadSizeBytes` less the footer),
    /// when it is not a whole number of GiB.
    #[serde(default)]
    pub exact_size: Option<u64>,
    /// Created for upload and not yet uploaded (`ReadyToUpload`): it cannot be attached.
    #[serde(default)]
    pub awaiting_upload: bool,
    /// `dataAccessAuthMode: AzureActiveDirectory`: its access URLs also need a bearer token
    /// whose caller holds the disk's download (or upload) data action.
    #[serde(default)]
    pub data_access_aad: bool,
    /// The LUKS volume Azure Disk Encryption keeps inside the disk, while it does.
    #[serde(default)]
    pub ade: Option<AdeVolume>,
    /// Whether Azure Disk Encryption ever encrypted the disk: such a disk never takes a
    /// customer-managed key.
    #[serde(default)]
    pub ade_ever: bool,
}

/// A disk's volume under Azure Disk Encryption: where its passphrase lives
/// (`encryptionSettingsCollection`, version 1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdeVolume {
    /// The versioned secret holding the passphrase (`diskEncryptionKey.secretUrl`).
    pub secret_url: String,
    /// The secret's vault (`diskEncryptionKey.sourceVault.id`).
    pub secret_vault: String,
    /// The key-encryption key wrapping the passphrase, if one does
    /// (`keyEncryptionKey.keyUrl`).
    pub kek_url: Option<String>,
    /// The key-encryption key's vault.
    pub kek_vault: Option<String>,
    /// The algorithm the passphrase was wrapped with.
    pub kek_algorithm: Option<String>,
    /// The passphrase's file on the BEK VOLUME (`LinuxPassPhraseFileName[_1_LUN]`).
    pub file_name: String,
    /// `LUKS1` or `LUKS2`.
    pub luks: String,
}

/// A virtual machine extension. Only `AzureDiskEncryptionForLinux` runs here; its state
/// is the disks' own (`Disk::ade`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmExtension {
    /// The extension resource's name.
    pub name: String,
    /// `publisher`.
    pub publisher: String,
    /// `type`.
    pub extension_type: String,
    /// `typeHandlerVersion`.
    pub type_handler_version: String,
    /// `autoUpgradeMinorVersion`.
    pub auto_upgrade_minor_version: bool,
    /// `settings`, as given (ADE's are all strings).
    pub settings: BTreeMap<String, String>,
    /// The last operation's outcome, shown as the status message.
    pub message: String,
}

/// The store kind of the disk-like document a resource id names: a snapshot, an image's
/// disk, or (also for a bare name) a disk.
pub fn kind_in_id(id: &str) -> &'static str {
    let id = id.to_ascii_lowercase();
    [SNAPSHOT_KIND, IMAGE_DISK_KIND, RECOVERY_DISK_KIND]
        .into_iter()
        .find(|kind| {
            id.contains(&format!(
                "/microsoft.compute/{}/",
                kind.to_ascii_lowercase()
            ))
        })
        .unwrap_or(DISK_KIND)
}

/// One disk of an image: where it came from and the copy of its data the image holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDisk {
    /// The data disk's LUN; `None` for the OS disk.
    pub lun: Option<u32>,
    /// `osType` of the OS disk (`Linux` or `Windows`).
    pub os_type: Option<String>,
    /// `osState` of the OS disk (`Generalized` or `Specialized`).
    pub os_state: Option<String>,
    /// The managed disk or snapshot the disk was made from.
    pub source_id: String,
    /// Whether the source was a snapshot (`snapshot`) rather than a disk (`managedDisk`).
    pub from_snapshot: bool,
    /// The name of the image's copy (kind [`IMAGE_DISK_KIND`]).
    pub copy: String,
    /// Size in GiB.
    pub size_gb: u64,
    /// The copy's disk encryption set, if any.
    pub disk_encryption_set: Option<String>,
}

/// A managed image (`Microsoft.Compute/images`): copies of an OS disk and data disks, from
/// which new disks are made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// Name, unique in its resource group.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// ARM resource id.
    pub id: String,
    /// Normalized location.
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// `hyperVGeneration`: `V1` or `V2`.
    pub hyper_v_generation: String,
    /// The virtual machine the image was made from, if any.
    pub source_vm: Option<String>,
    /// The OS disk first, if there is one, then the data disks by LUN.
    pub disks: Vec<ImageDisk>,
    /// Creation time.
    pub created: i64,
}

fn complete() -> f64 {
    100.0
}

fn allow_all() -> String {
    NETWORK_POLICIES[0].to_owned()
}

/// The values of `networkAccessPolicy`, the default first.
pub const NETWORK_POLICIES: [&str; 3] = ["AllowAll", "AllowPrivate", "DenyAll"];

impl Disk {
    /// Whether this document is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.kind() == SNAPSHOT_KIND
    }

    /// The store kind of the document.
    pub fn kind(&self) -> &'static str {
        kind_in_id(&self.id)
    }

    /// The id platform-wrapped keys are bound to.
    pub fn key_binding(&self) -> &str {
        self.key_binding.as_deref().unwrap_or(&self.unique_id)
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.exact_size.unwrap_or(self.size_gb << 30)
    }

    /// The encryption type.
    pub fn encryption(&self) -> EncryptionType {
        EncryptionType::parse(&self.encryption_type).unwrap_or(EncryptionType::PlatformKey)
    }

    /// The customer-managed layer, if any.
    pub fn customer_key(&self) -> Option<&str> {
        self.keys.iter().find_map(|k| match k {
            WrappedDek::Customer { key_url, .. } => Some(key_url.as_str()),
            WrappedDek::Platform { .. } => None,
        })
    }
}

/// A virtual machine (`Microsoft.Compute/virtualMachines`): a set of attached data disks
/// that are served over NBD while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtualMachine {
    /// Name, unique in its resource group.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// ARM resource id.
    pub id: String,
    /// Normalized location.
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Names of the attached disks (same resource group), in LUN order.
    pub disks: Vec<String>,
    /// Whether it runs (its disks are exported).
    pub running: bool,
    /// The replica that serves its disks while it runs (chosen at start).
    #[serde(default)]
    pub host: Option<String>,
    /// `HOST:PORT` of that replica's NBD server, once it serves them.
    #[serde(default)]
    pub nbd: Option<String>,
    /// Creation time.
    pub created: i64,
    /// The OS disk's name (same resource group), if the machine has one.
    #[serde(default)]
    pub os_disk: Option<String>,
    /// Extensions.
    #[serde(default)]
    pub extensions: Vec<VmExtension>,
}

impl VirtualMachine {
    /// Every attached disk: the OS disk first, then the data disks in LUN order, each
    /// with its LUN (`None` for the OS disk).
    pub fn attached(&self) -> impl Iterator<Item = (Option<u32>, &String)> {
        self.os_disk.iter().map(|d| (None, d)).chain(
            self.disks
                .iter()
                .enumerate()
                .map(|(lun, d)| (Some(lun as u32), d)),
        )
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
