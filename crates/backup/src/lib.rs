//! Azure Backup for virtual machines (`Microsoft.RecoveryServices`): Recovery Services
//! vaults with a system-assigned identity, backup policies, protected items, on-demand
//! backups whose recovery points are crash-consistent cuts of a machine's disks (taken by
//! the compute service, kept as hidden copies with their wrapped data keys), restores of
//! disks or of a whole machine, and the jobs that record each. Knows nothing of HTTP. See
//! ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::compute::check_compute_name;
use atrest_core::vault::normalize_location;
use atrest_disk::{Compute, ComputeError, VmRequest};
use atrest_identity::{DirectoryError, Identity};
use atrest_store::{Store, StoreError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use thiserror::Error;

mod site_recovery;
pub use site_recovery::{
    ContainerMapping, ContainerRef, DiskInput, EnableReplication, Fabric, FailoverRequest,
    PendingCycle, ProtectionContainer, Recovered, ReplicaPoint, ReplicatedDisk, ReplicatedItem,
    ReplicationPolicy, ReplicationPolicyRequest, ReplicationRun, Site, TargetKeys,
};

const VAULT_KIND: &str = "recoveryServicesVaults";
const POLICY_KIND: &str = "backupPolicies";
const ITEM_KIND: &str = "protectedItems";
const POINT_KIND: &str = "recoveryPoints";
const JOB_KIND: &str = "backupJobs";

/// The policy every vault starts with, as Azure's.
pub const DEFAULT_POLICY: &str = "DefaultPolicy";
/// The container and item name prefixes of an Azure VM (`…;iaasvmcontainerv2;RG;VM`).
const CONTAINER_PREFIX: &str = "IaasVMContainer;iaasvmcontainerv2;";
const ITEM_PREFIX: &str = "VM;iaasvmcontainerv2;";
const DAY: i64 = 86_400;
/// The name prefix of a backup's disk copies (`rp{point}-{os|lunN}`).
const COPY_PREFIX: &str = "rp";

/// A Recovery Services vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryVault {
    /// Name, unique in its resource group.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// ARM resource id; also the resource id of its system-assigned identity.
    pub id: String,
    /// Normalized location: the only region its recovery points restore to.
    pub location: String,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Object id of the system-assigned identity.
    pub principal_id: String,
    /// Creation time.
    pub created: i64,
}

/// A backup policy for Azure VMs: a daily schedule and a retention in days.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Its vault's name.
    pub vault: String,
    /// Name.
    pub name: String,
    /// ARM resource id.
    pub id: String,
    /// Daily run times, `HH:MM` (UTC).
    pub run_times: Vec<String>,
    /// Days each daily recovery point is kept.
    pub retention_days: u32,
    /// `timeZone`.
    pub time_zone: String,
    /// `instantRpRetentionRangeInDays`.
    pub instant_rp_days: u32,
}

/// A virtual machine protected by a vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtectedItem {
    /// Its vault's name.
    pub vault: String,
    /// `VM;iaasvmcontainerv2;RG;VM`.
    pub name: String,
    /// The virtual machine's resource id.
    pub vm_id: String,
    /// The virtual machine's resource group.
    pub vm_resource_group: String,
    /// The virtual machine's name.
    pub vm_name: String,
    /// The policy's name.
    pub policy: String,
    /// `Protected` or `ProtectionStopped`.
    pub state: String,
    /// When the last backup ran, and whether it completed.
    pub last_backup: Option<(i64, String)>,
    /// When the newest recovery point was taken.
    pub last_point: Option<i64>,
    /// Creation time.
    pub created: i64,
}

impl ProtectedItem {
    /// The item's resource id in `vault`.
    pub fn id(&self, vault: &RecoveryVault) -> String {
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            vault.id,
            self.container(),
            self.name
        )
    }

    /// `IaasVMContainer;iaasvmcontainerv2;RG;VM`.
    pub fn container(&self) -> String {
        format!(
            "{CONTAINER_PREFIX}{};{}",
            self.vm_resource_group, self.vm_name
        )
    }
}

/// One disk of a recovery point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointDisk {
    /// Its LUN (`None`: the OS disk).
    pub lun: Option<u32>,
    /// The disk's name when it was backed up.
    pub disk: String,
    /// The resource id of the hidden copy holding its data.
    pub copy: String,
    /// The disk's encryption type.
    pub encryption_type: String,
    /// Its disk encryption set, if any.
    pub disk_encryption_set: Option<String>,
}

/// A recovery point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// Its vault's name.
    pub vault: String,
    /// Its protected item's name.
    pub item: String,
    /// Name (digits, as Azure's).
    pub name: String,
    /// When the cut was taken.
    pub time: i64,
    /// When it expires.
    pub expiry: i64,
    /// The disks, OS first.
    pub disks: Vec<PointDisk>,
    /// Whether any disk was encrypted with Azure Disk Encryption.
    pub ade: bool,
    /// For each ADE disk, its passphrase secret and key-encryption key as the backup
    /// vault's identity read them (`keyAndSecret`).
    #[serde(default)]
    pub keys: Vec<PointKeys>,
}

/// An ADE disk's secret and key-encryption key, kept with a recovery point: the secret's
/// value sealed by the platform key (bound to the point), the KEK as Key Vault's own
/// backup blob (sealed by the vault service).
#[derive(Clone, Serialize, Deserialize)]
pub struct PointKeys {
    /// The disk's LUN (`None`: the OS disk).
    pub lun: Option<u32>,
    /// The secret version.
    pub secret_url: String,
    /// The secret's vault.
    pub secret_vault: String,
    /// The secret's value, sealed: platform key version and ciphertext.
    pub secret_sealed: (u32, Vec<u8>),
    /// The secret's content type (`BEK` or `Wrapped BEK`).
    pub content_type: String,
    /// The secret's tags.
    pub tags: BTreeMap<String, String>,
    /// The key-encryption key, if one wraps the secret.
    pub kek_url: Option<String>,
    /// The key-encryption key's vault.
    pub kek_vault: Option<String>,
    /// Key Vault's backup blob of the key-encryption key.
    pub key_backup: Option<Vec<u8>>,
}

impl std::fmt::Debug for PointKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointKeys")
            .field("secret_url", &self.secret_url)
            .field("kek_url", &self.kek_url)
            .finish_non_exhaustive()
    }
}

/// A recovery point's `keyAndSecret` for one disk, opened for its reader.
pub struct KeyAndSecret<'a> {
    /// What the point keeps.
    pub keys: &'a PointKeys,
    /// The secret's value (a `BEK` or `Wrapped BEK` secret's, base64), wiped on drop.
    pub secret_data: zeroize::Zeroizing<Vec<u8>>,
}

/// A job: one backup, restore or protection change, with its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its vault's name.
    pub vault: String,
    /// Name (a GUID).
    pub name: String,
    /// `ConfigureBackup`, `Backup`, `Restore`, `DeleteBackupData`.
    pub operation: String,
    /// `Completed` or `Failed`.
    pub status: String,
    /// The virtual machine's name.
    pub entity: String,
    /// Start and end times.
    pub start: i64,
    /// End time.
    pub end: i64,
    /// `(errorCode, errorString)` of a failed job.
    pub error: Option<(String, String)>,
    /// What the job made (restored disks and machine), by resource id.
    pub outputs: Vec<String>,
}

/// A refused or failed backup request. Each variant names its class; the edge picks
/// codes and statuses.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The resource does not exist (404).
    #[error("The {kind} '{name}' was not found.")]
    NotFound {
        /// What kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A parameter breaks a rule (400).
    #[error("{message}")]
    Invalid {
        /// Azure's error code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The state forbids the operation (409).
    #[error("{message}")]
    Conflict {
        /// Azure's error code.
        code: &'static str,
        /// What is in the way.
        message: String,
    },
    /// The compute service refused or failed.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory failed to create or delete a vault's identity.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

fn invalid(code: &'static str, message: impl Into<String>) -> BackupError {
    BackupError::Invalid {
        code,
        message: message.into(),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> BackupError {
    BackupError::Conflict {
        code,
        message: message.into(),
    }
}

/// A policy as a create or update gives it.
#[derive(Debug, Clone, Default)]
pub struct PolicyRequest {
    /// `backupManagementType` (`AzureIaasVM` only).
    pub management_type: String,
    /// `scheduleRunFrequency` (`Daily` only).
    pub frequency: String,
    /// `scheduleRunTimes`, as given (ISO date-times; their time of day counts).
    pub run_times: Vec<String>,
    /// `retentionDuration.count` of the daily schedule, in days.
    pub retention_days: Option<u32>,
    /// `timeZone`.
    pub time_zone: Option<String>,
    /// `instantRpRetentionRangeInDays`.
    pub instant_rp_days: Option<u32>,
}

/// How a restore is asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// `RestoreDisks`, `AlternateLocation` or `OriginalLocation`.
    pub recovery_type: String,
    /// `region`.
    pub region: Option<String>,
    /// `targetResourceGroupId` (or a name): where the disks (and machine) are created.
    pub target_resource_group: Option<String>,
    /// `targetVirtualMachineId` (or a name), for `AlternateLocation`.
    pub target_vm: Option<String>,
    /// `diskEncryptionSetId`: restore every disk under this customer key.
    pub disk_encryption_set: Option<String>,
    /// `sourceResourceId`, if given: must be the protected machine.
    pub source_resource_id: Option<String>,
    /// `encryptionDetails`: where the ADE disk's secret and key-encryption key live now
    /// (after they were restored from `keyAndSecret` into a vault).
    pub encryption: Option<RestoreEncryption>,
}

/// `encryptionDetails` of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreEncryption {
    /// `secretKeyUrl`.
    pub secret_url: String,
    /// `secretKeyVaultId`.
    pub secret_vault: String,
    /// `kekUrl`.
    pub kek_url: Option<String>,
    /// `kekVaultId`.
    pub kek_vault: Option<String>,
}

/// A protected item as a request addresses it: the vault, and the container and item
/// names (`IaasVMContainer;iaasvmcontainerv2;RG;VM`, `VM;iaasvmcontainerv2;RG;VM`).
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    /// The vault's resource group.
    pub resource_group: &'a str,
    /// The vault's name.
    pub vault: &'a str,
    /// The container's name.
    pub container: &'a str,
    /// The item's name.
    pub item: &'a str,
}

/// The last segment of a resource id, or the reference itself.
fn last_segment(reference: &str) -> &str {
    reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(reference)
}

/// `HH:MM` of an ISO date-time (`2026-01-01T02:30:00Z`) or a bare time.
fn time_of_day(s: &str) -> Option<String> {
    let time = s.split_once('T').map_or(s, |(_, t)| t);
    let (h, rest) = time.split_once(':')?;
    let m = rest.get(..2)?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then(|| format!("{h:02}:{m:02}"))
}

/// The service.
pub struct Backup {
    store: Arc<Store>,
    compute: Arc<Compute>,
    subscription: String,
    /// Held by each replication cycle and by each change to a replicated item.
    replication: tokio::sync::Mutex<()>,
    /// Held from a backup's cut until its point is recorded, and by the sweep of copies
    /// no point names.
    cutting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup").finish_non_exhaustive()
    }
}

impl Backup {
    /// The service over `store`, taking recovery points through `compute`.
    pub fn new(store: Arc<Store>, compute: Arc<Compute>, subscription: String) -> Self {
        Backup {
            store,
            compute,
            subscription,
            replication: tokio::sync::Mutex::new(()),
            cutting: tokio::sync::Mutex::new(()),
        }
    }

    fn vault_id(&self, resource_group: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.RecoveryServices/vaults/{name}",
            self.subscription
        )
    }

    fn get<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        resource_group: &str,
        name: &str,
        what: &'static str,
    ) -> Result<T, BackupError> {
        self.store
            .read(|tx| tx.resource(kind, resource_group, name))?
            .ok_or_else(|| BackupError::NotFound {
                kind: what,
                name: name.rsplit('/').next().unwrap_or(name).to_owned(),
            })
    }

    /// The documents of `kind` in `resource_group` that `keep` selects.
    fn all<T: DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, BackupError> {
        let all: Vec<T> = self
            .store
            .read(|tx| tx.resources(kind, Some(resource_group)))?;
        Ok(all.into_iter().filter(|d| keep(d)).collect())
    }

    fn put<T: Serialize>(
        &self,
        kind: &str,
        resource_group: &str,
        name: &str,
        doc: &T,
    ) -> Result<(), BackupError> {
        Ok(self
            .store
            .write(|tx| tx.put_resource(kind, resource_group, name, doc))?)
    }

    // ---- vaults ----

    /// A vault.
    pub fn get_vault(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<RecoveryVault, BackupError> {
        self.get(VAULT_KIND, resource_group, name, "Recovery Services vault")
    }

    /// Vaults of one resource group, or all.
    pub fn list_vaults(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<RecoveryVault>, BackupError> {
        Ok(self
            .store
            .read(|tx| tx.resources(VAULT_KIND, resource_group))?)
    }

    /// Creates a vault (with its system-assigned identity and `DefaultPolicy`) or updates
    /// its tags; its location never changes.
    pub fn put_vault(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
        location: Option<&str>,
        tags: Option<BTreeMap<String, String>>,
        now: i64,
    ) -> Result<(RecoveryVault, bool), BackupError> {
        check_vault_name(name)?;
        let location = location
            .map(|l| normalize_location(l).map_err(|e| invalid("InvalidParameter", e.to_string())))
            .transpose()?;
        if let Some(mut vault) = self
            .store
            .read(|tx| tx.resource::<RecoveryVault>(VAULT_KIND, resource_group, name))?
        {
            if location.as_deref().is_some_and(|l| l != vault.location) {
                return Err(invalid(
                    "InvalidParameter",
                    format!("The location of Recovery Services vault '{name}' is '{}'; it cannot change.", vault.location),
                ));
            }
            if let Some(tags) = tags {
                vault.tags = tags;
            }
            self.put(VAULT_KIND, resource_group, name, &vault)?;
            return Ok((vault, false));
        }
        let location = location.ok_or_else(|| {
            invalid(
                "LocationRequired",
                "The location property is required for this definition.",
            )
        })?;
        let id = self.vault_id(resource_group, name);
        let mi = identity.create_managed_identity(name, &id, now)?;
        let vault = RecoveryVault {
            name: name.to_owned(),
            resource_group: resource_group.to_owned(),
            id: id.clone(),
            location,
            tags: tags.unwrap_or_default(),
            principal_id: mi.principal.object_id,
            created: now,
        };
        let default = Policy {
            vault: name.to_owned(),
            name: DEFAULT_POLICY.to_owned(),
            id: format!("{id}/backupPolicies/{DEFAULT_POLICY}"),
            run_times: vec!["22:30".to_owned()],
            retention_days: 30,
            time_zone: "UTC".to_owned(),
            instant_rp_days: 2,
        };
        self.store.write(|tx| {
            tx.put_resource(VAULT_KIND, resource_group, name, &vault)?;
            tx.put_resource(
                POLICY_KIND,
                resource_group,
                &format!("{name}/{DEFAULT_POLICY}"),
                &default,
            )
        })?;
        Ok((vault, true))
    }

    /// Deletes a vault and its identity; refused while it protects anything.
    pub fn delete_vault(
        &self,
        identity: &Identity,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, BackupError> {
        let Some(vault) = self
            .store
            .read(|tx| tx.resource::<RecoveryVault>(VAULT_KIND, resource_group, name))?
        else {
            return Ok(false);
        };
        let items: Vec<ProtectedItem> =
            self.all(ITEM_KIND, resource_group, |i: &ProtectedItem| {
                i.vault.eq_ignore_ascii_case(name)
            })?;
        if !items.is_empty() {
            return Err(conflict(
                "ServiceResourceNotEmpty",
                format!("Vault '{name}' cannot be deleted as there are existing resources within the vault: {} protected item(s). Stop protection and delete their backup data first.", items.len()),
            ));
        }
        let site_recovery = self.site_recovery_documents(resource_group, name)?;
        let policies: Vec<Policy> = self.all(POLICY_KIND, resource_group, |p: &Policy| {
            p.vault.eq_ignore_ascii_case(name)
        })?;
        let jobs: Vec<Job> = self.all(JOB_KIND, resource_group, |j: &Job| {
            j.vault.eq_ignore_ascii_case(name)
        })?;
        self.store.write(|tx| {
            for p in &policies {
                tx.delete_resource(POLICY_KIND, resource_group, &format!("{name}/{}", p.name))?;
            }
            for j in &jobs {
                tx.delete_resource(JOB_KIND, resource_group, &format!("{name}/{}", j.name))?;
            }
            for (kind, key) in &site_recovery {
                tx.delete_resource(kind, resource_group, key)?;
            }
            tx.delete_resource(VAULT_KIND, resource_group, name)
        })?;
        identity.delete_principal(&vault.principal_id)?;
        Ok(true)
    }

    // ---- policies ----

    /// A policy.
    pub fn get_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<Policy, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.get(
            POLICY_KIND,
            resource_group,
            &format!("{vault}/{name}"),
            "backup policy",
        )
    }

    /// A vault's policies.
    pub fn list_policies(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<Policy>, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.all(POLICY_KIND, resource_group, |p: &Policy| {
            p.vault.eq_ignore_ascii_case(vault)
        })
    }

    /// How many items a policy protects.
    pub fn policy_users(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<usize, BackupError> {
        Ok(self
            .all(ITEM_KIND, resource_group, |i: &ProtectedItem| {
                i.vault.eq_ignore_ascii_case(vault) && i.policy.eq_ignore_ascii_case(name)
            })?
            .len())
    }

    /// Creates or replaces a policy.
    pub fn put_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
        req: &PolicyRequest,
    ) -> Result<Policy, BackupError> {
        let v = self.get_vault(resource_group, vault)?;
        check_compute_name("backup policy", name)
            .map_err(|e| invalid("BMSUserErrorInvalidPolicyInput", e.to_string()))?;
        if !req.management_type.eq_ignore_ascii_case("AzureIaasVM") {
            return Err(invalid(
                "BMSUserErrorInvalidPolicyInput",
                format!(
                    "backupManagementType '{}' is not supported: use AzureIaasVM.",
                    req.management_type
                ),
            ));
        }
        if !req.frequency.eq_ignore_ascii_case("Daily") {
            return Err(invalid(
                "BMSUserErrorInvalidPolicyInput",
                format!(
                    "scheduleRunFrequency '{}' is not supported: use Daily.",
                    req.frequency
                ),
            ));
        }
        let run_times = req
            .run_times
            .iter()
            .map(|t| {
                time_of_day(t).ok_or_else(|| {
                    invalid(
                        "BMSUserErrorInvalidPolicyInput",
                        format!("scheduleRunTimes '{t}' is not a date-time."),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if run_times.len() != 1 {
            return Err(invalid(
                "BMSUserErrorInvalidPolicyInput",
                "A daily policy has exactly one scheduleRunTimes entry.",
            ));
        }
        let retention_days = req.retention_days.ok_or_else(|| {
            invalid(
                "BMSUserErrorInvalidPolicyInput",
                "retentionPolicy.dailySchedule.retentionDuration.count is required.",
            )
        })?;
        if !(7..=9999).contains(&retention_days) {
            return Err(invalid(
                "BMSUserErrorInvalidPolicyInput",
                format!("The daily retention {retention_days} is outside 7 to 9999 days."),
            ));
        }
        let instant = req.instant_rp_days.unwrap_or(2);
        if !(1..=5).contains(&instant) {
            return Err(invalid(
                "BMSUserErrorInvalidPolicyInput",
                format!("instantRpRetentionRangeInDays {instant} is outside 1 to 5."),
            ));
        }
        let policy = Policy {
            vault: v.name.clone(),
            name: name.to_owned(),
            id: format!("{}/backupPolicies/{name}", v.id),
            run_times,
            retention_days,
            time_zone: req.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
            instant_rp_days: instant,
        };
        self.put(
            POLICY_KIND,
            resource_group,
            &format!("{vault}/{name}"),
            &policy,
        )?;
        Ok(policy)
    }

    /// Deletes a policy; refused while it protects an item.
    pub fn delete_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<bool, BackupError> {
        self.get_vault(resource_group, vault)?;
        let key = format!("{vault}/{name}");
        if self
            .store
            .read(|tx| tx.resource::<Policy>(POLICY_KIND, resource_group, &key))?
            .is_none()
        {
            return Ok(false);
        }
        let users = self.policy_users(resource_group, vault, name)?;
        if users > 0 {
            return Err(conflict(
                "BMSUserErrorPolicyInUse",
                format!(
                    "Policy '{name}' protects {users} item(s); assign them another policy first."
                ),
            ));
        }
        self.store
            .write(|tx| tx.delete_resource(POLICY_KIND, resource_group, &key))?;
        Ok(true)
    }

    // ---- protected items ----

    /// An item by its container and item names, checked against each other.
    fn item_key(vault: &str, container: &str, item: &str) -> Result<String, BackupError> {
        let lower = |s: &str| s.to_ascii_lowercase();
        let container_rest = lower(container)
            .strip_prefix(&lower(CONTAINER_PREFIX))
            .map(str::to_owned);
        let item_rest = lower(item)
            .strip_prefix(&lower(ITEM_PREFIX))
            .map(str::to_owned);
        match (container_rest, item_rest) {
            (Some(c), Some(i)) if c == i && i.split(';').count() == 2 => {
                Ok(format!("{vault}/{}", lower(item)))
            }
            _ => Err(invalid(
                "BMSUserErrorInvalidInput",
                format!("Container '{container}' and protected item '{item}' must name one Azure VM as {CONTAINER_PREFIX}RG;VM and {ITEM_PREFIX}RG;VM."),
            )),
        }
    }

    /// A protected item.
    pub fn get_item(&self, at: ItemRef<'_>) -> Result<ProtectedItem, BackupError> {
        self.get_vault(at.resource_group, at.vault)?;
        let key = Self::item_key(at.vault, at.container, at.item)?;
        self.get(ITEM_KIND, at.resource_group, &key, "protected item")
    }

    /// A vault's protected items.
    pub fn list_items(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<ProtectedItem>, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.all(ITEM_KIND, resource_group, |i: &ProtectedItem| {
            i.vault.eq_ignore_ascii_case(vault)
        })
    }

    /// Protects a VM with a policy (or changes its policy), recording a
    /// `ConfigureBackup` job.
    pub fn protect(
        &self,
        at: ItemRef<'_>,
        vm_id: &str,
        policy_id: &str,
        now: i64,
    ) -> Result<(ProtectedItem, Job), BackupError> {
        let ItemRef {
            resource_group,
            vault,
            container,
            item,
        } = at;
        let v = self.get_vault(resource_group, vault)?;
        let key = Self::item_key(vault, container, item)?;
        let policy_name = last_segment(policy_id);
        self.get_policy(resource_group, vault, policy_name)?;
        let segments: Vec<&str> = vm_id.trim_matches('/').split('/').collect();
        let (vm_rg, vm_name) = match segments.as_slice() {
            ["subscriptions", _, rg_kw, rg, "providers", p, k, name]
                if rg_kw.eq_ignore_ascii_case("resourceGroups")
                    && p.eq_ignore_ascii_case("Microsoft.Compute")
                    && k.eq_ignore_ascii_case("virtualMachines") =>
            {
                (*rg, *name)
            }
            _ => {
                return Err(invalid(
                    "BMSUserErrorInvalidInput",
                    format!("sourceResourceId '{vm_id}' is not a virtual machine's resource id."),
                ))
            }
        };
        if !key.eq_ignore_ascii_case(&format!("{vault}/{ITEM_PREFIX}{vm_rg};{vm_name}")) {
            return Err(invalid(
                "BMSUserErrorInvalidInput",
                format!("Protected item '{item}' does not name virtual machine '{vm_id}'."),
            ));
        }
        let vm = self.compute.get_vm(vm_rg, vm_name)?;
        if vm.location != v.location {
            return Err(invalid(
                "BMSUserErrorInvalidInput",
                format!("Virtual machine '{vm_name}' is in '{}'; vault '{vault}' protects machines of its own region, '{}'.", vm.location, v.location),
            ));
        }
        let existing: Option<ProtectedItem> = self
            .store
            .read(|tx| tx.resource(ITEM_KIND, resource_group, &key))?;
        let item = ProtectedItem {
            vault: v.name.clone(),
            name: format!("{ITEM_PREFIX}{vm_rg};{}", vm.name),
            vm_id: vm.id.clone(),
            vm_resource_group: vm_rg.to_owned(),
            vm_name: vm.name.clone(),
            policy: policy_name.to_owned(),
            state: "Protected".to_owned(),
            last_backup: existing.as_ref().and_then(|e| e.last_backup.clone()),
            last_point: existing.as_ref().and_then(|e| e.last_point),
            created: existing.as_ref().map_or(now, |e| e.created),
        };
        let job = self.job(vault, "ConfigureBackup", &vm.name, now, Ok(Vec::new()));
        self.store.write(|tx| {
            tx.put_resource(ITEM_KIND, resource_group, &key, &item)?;
            tx.put_resource(
                JOB_KIND,
                resource_group,
                &format!("{vault}/{}", job.name),
                &job,
            )
        })?;
        Ok((item, job))
    }

    /// Stops protecting an item and deletes its recovery points (`DELETE` on the item).
    pub async fn unprotect(&self, at: ItemRef<'_>, now: i64) -> Result<Option<Job>, BackupError> {
        let ItemRef {
            resource_group,
            vault,
            container,
            item,
        } = at;
        self.get_vault(resource_group, vault)?;
        let key = Self::item_key(vault, container, item)?;
        let Some(found) = self
            .store
            .read(|tx| tx.resource::<ProtectedItem>(ITEM_KIND, resource_group, &key))?
        else {
            return Ok(None);
        };
        let points = self.points_of(resource_group, vault, &found.name)?;
        let copies: Vec<String> = points
            .iter()
            .flat_map(|p| p.disks.iter().map(|d| d.copy.clone()))
            .collect();
        self.compute.delete_recovery_disks(&copies).await?;
        let job = self.job(
            vault,
            "DeleteBackupData",
            &found.vm_name,
            now,
            Ok(Vec::new()),
        );
        self.store.write(|tx| {
            for p in &points {
                tx.delete_resource(POINT_KIND, resource_group, &format!("{key}/{}", p.name))?;
            }
            tx.delete_resource(ITEM_KIND, resource_group, &key)?;
            tx.put_resource(
                JOB_KIND,
                resource_group,
                &format!("{vault}/{}", job.name),
                &job,
            )
        })?;
        Ok(Some(job))
    }

    // ---- backups and recovery points ----

    fn job(
        &self,
        vault: &str,
        operation: &str,
        entity: &str,
        now: i64,
        outcome: Result<Vec<String>, &BackupError>,
    ) -> Job {
        let (status, error, outputs) = match outcome {
            Ok(outputs) => ("Completed", None, outputs),
            Err(e) => (
                "Failed",
                Some((error_code(e).to_owned(), e.to_string())),
                Vec::new(),
            ),
        };
        Job {
            vault: vault.to_owned(),
            name: atrest_crypto::random_uuid(),
            operation: operation.to_owned(),
            status: status.to_owned(),
            entity: entity.to_owned(),
            start: now,
            end: now,
            error,
            outputs,
        }
    }

    /// Backs an item up now: a recovery point expiring at `expiry` (default: the policy's
    /// retention). The job records the outcome, failed or not; a failure changes nothing
    /// else.
    pub async fn backup_now(
        &self,
        at: ItemRef<'_>,
        expiry: Option<i64>,
        now: i64,
    ) -> Result<Job, BackupError> {
        let ItemRef {
            resource_group,
            vault,
            container,
            item,
        } = at;
        let mut found = self.get_item(at)?;
        let key = Self::item_key(vault, container, item)?;
        if found.state != "Protected" {
            return Err(conflict(
                "BMSUserErrorProtectionStopped",
                format!("Protection of '{}' is stopped.", found.vm_name),
            ));
        }
        let policy = self.get_policy(resource_group, vault, &found.policy)?;
        let expiry = expiry.unwrap_or(now + i64::from(policy.retention_days) * DAY);
        if expiry <= now {
            return Err(invalid(
                "BMSUserErrorInvalidInput",
                "recoveryPointExpiryTimeInUTC is in the past.",
            ));
        }
        let random = atrest_crypto::random_bytes(8);
        let point_name = (u64::from_le_bytes(random.try_into().expect("eight bytes"))
            % 1_000_000_000_000_000)
            .to_string();
        let vault_id = self.get_vault(resource_group, vault)?.id;
        let keys = match self.capture_keys(&vault_id, &found, &point_name).await {
            Ok(keys) => keys,
            Err(e) => {
                let job = self.job(vault, "Backup", &found.vm_name, now, Err(&e));
                found.last_backup = Some((now, job.status.clone()));
                self.store.write(|tx| {
                    tx.put_resource(ITEM_KIND, resource_group, &key, &found)?;
                    tx.put_resource(
                        JOB_KIND,
                        resource_group,
                        &format!("{vault}/{}", job.name),
                        &job,
                    )
                })?;
                return Ok(job);
            }
        };
        let cutting = self.cutting.lock().await;
        let taken = self
            .compute
            .take_recovery_point(
                &found.vm_resource_group,
                &found.vm_name,
                &format!("{COPY_PREFIX}{point_name}"),
                resource_group,
                now,
            )
            .await;
        let outcome = match taken {
            Ok(disks) => {
                let point = RecoveryPoint {
                    vault: vault.to_owned(),
                    item: found.name.clone(),
                    name: point_name.clone(),
                    time: now,
                    expiry,
                    ade: disks.iter().any(|d| d.copy.ade.is_some()),
                    keys,
                    disks: disks
                        .iter()
                        .map(|d| PointDisk {
                            lun: d.lun,
                            disk: d
                                .copy
                                .source_resource_id
                                .as_deref()
                                .map(last_segment)
                                .unwrap_or_default()
                                .to_owned(),
                            copy: d.copy.id.clone(),
                            encryption_type: d.copy.encryption_type.clone(),
                            disk_encryption_set: d.copy.disk_encryption_set.clone(),
                        })
                        .collect(),
                };
                self.put(
                    POINT_KIND,
                    resource_group,
                    &format!("{key}/{point_name}"),
                    &point,
                )?;
                found.last_point = Some(now);
                Ok(vec![point_name])
            }
            Err(e) => Err(BackupError::Compute(e)),
        };
        drop(cutting);
        let job = self.job(
            vault,
            "Backup",
            &found.vm_name,
            now,
            outcome.as_ref().map(Clone::clone),
        );
        found.last_backup = Some((now, job.status.clone()));
        self.store.write(|tx| {
            tx.put_resource(ITEM_KIND, resource_group, &key, &found)?;
            tx.put_resource(
                JOB_KIND,
                resource_group,
                &format!("{vault}/{}", job.name),
                &job,
            )
        })?;
        Ok(job)
    }

    /// Reads, as the backup vault's identity, the secret and key-encryption key of each
    /// ADE disk of the item's machine. A refusal fails the backup, naming the permissions
    /// Azure Backup needs.
    async fn capture_keys(
        &self,
        vault_id: &str,
        item: &ProtectedItem,
        point: &str,
    ) -> Result<Vec<PointKeys>, BackupError> {
        let vm = self
            .compute
            .get_vm(&item.vm_resource_group, &item.vm_name)?;
        let access = self.compute.vault_access();
        let needs = |what: &str, url: &str, cause: &dyn std::fmt::Display| {
            conflict(
                "UserErrorKeyVaultPermissionsNotConfigured",
                format!("The Recovery Services vault's identity cannot {what} '{url}': Azure Backup needs the key permissions backup, get and list and the secret permissions get and list on the key vault (access policies), or a role granting those data actions. The vault answered: {cause}"),
            )
        };
        let mut keys = Vec::new();
        for (lun, name) in vm.attached() {
            let disk = self.compute.get_disk(&item.vm_resource_group, name)?;
            let Some(ade) = disk.ade else { continue };
            let secret = access
                .get_secret(vault_id, &ade.secret_url)
                .await
                .map_err(|e| needs("read the secret", &ade.secret_url, &e))?;
            if let Some(url) = &ade.kek_url {
                if self.compute.describe_key_url(url)?.certificate {
                    return Err(conflict(
                        "UserErrorKekBelongsToCertificate",
                        format!("The key-encryption key '{url}' of disk '{name}' belongs to the certificate of the same name; Azure Backup protects machines whose key-encryption keys are standalone keys."),
                    ));
                }
            }
            let key_backup = match &ade.kek_url {
                Some(url) => Some(
                    access
                        .backup_key(vault_id, url)
                        .await
                        .map_err(|e| needs("back up the key", url, &e))?,
                ),
                None => None,
            };
            let context = format!(
                "{point}/{}",
                lun.map_or_else(|| "os".to_owned(), |l| l.to_string())
            );
            keys.push(PointKeys {
                lun,
                secret_url: ade.secret_url.clone(),
                secret_vault: ade.secret_vault.clone(),
                secret_sealed: self
                    .compute
                    .seal_with_platform_key(&context, secret.value.as_bytes()),
                content_type: secret.content_type.clone(),
                tags: secret.tags.clone(),
                kek_url: ade.kek_url.clone(),
                kek_vault: ade.kek_vault.clone(),
                key_backup,
            });
        }
        Ok(keys)
    }

    /// A recovery point's `keyAndSecret`, each secret opened for the reader.
    pub fn key_and_secret<'a>(
        &self,
        point: &'a RecoveryPoint,
    ) -> Result<Vec<KeyAndSecret<'a>>, BackupError> {
        point
            .keys
            .iter()
            .map(|keys| {
                let context = format!(
                    "{}/{}",
                    point.name,
                    keys.lun.map_or_else(|| "os".to_owned(), |l| l.to_string())
                );
                let (version, sealed) = &keys.secret_sealed;
                let secret_data = self
                    .compute
                    .open_with_platform_key(&context, *version, sealed)?;
                Ok(KeyAndSecret { keys, secret_data })
            })
            .collect()
    }

    /// An item's recovery points, newest first.
    pub fn list_points(&self, at: ItemRef<'_>) -> Result<Vec<RecoveryPoint>, BackupError> {
        let found = self.get_item(at)?;
        let mut points = self.points_of(at.resource_group, at.vault, &found.name)?;
        points.sort_by_key(|p| std::cmp::Reverse(p.time));
        Ok(points)
    }

    fn points_of(
        &self,
        resource_group: &str,
        vault: &str,
        item: &str,
    ) -> Result<Vec<RecoveryPoint>, BackupError> {
        self.all(POINT_KIND, resource_group, |p: &RecoveryPoint| {
            p.vault.eq_ignore_ascii_case(vault) && p.item.eq_ignore_ascii_case(item)
        })
    }

    /// One recovery point.
    pub fn get_point(&self, at: ItemRef<'_>, point: &str) -> Result<RecoveryPoint, BackupError> {
        self.get_item(at)?;
        let key = Self::item_key(at.vault, at.container, at.item)?;
        self.get(
            POINT_KIND,
            at.resource_group,
            &format!("{key}/{point}"),
            "recovery point",
        )
    }

    /// Restores a recovery point: its disks (`RestoreDisks`), or a new machine with them
    /// (`AlternateLocation`), in the vault's region only. The job records the outcome and
    /// what was made.
    pub async fn restore(
        &self,
        at: ItemRef<'_>,
        point: &str,
        req: &RestoreRequest,
        now: i64,
    ) -> Result<Job, BackupError> {
        let ItemRef {
            resource_group,
            vault,
            ..
        } = at;
        let v = self.get_vault(resource_group, vault)?;
        let found = self.get_item(at)?;
        let point = self.get_point(at, point)?;
        if let Some(region) = &req.region {
            let region = normalize_location(region)
                .map_err(|e| invalid("BMSUserErrorInvalidInput", e.to_string()))?;
            if region != v.location {
                return Err(invalid(
                    "CrossRegionRestoreNotSupported",
                    format!("Recovery points of vault '{vault}' restore only in its region, '{}', not '{region}'.", v.location),
                ));
            }
        }
        if let Some(source) = &req.source_resource_id {
            if !source.eq_ignore_ascii_case(&found.vm_id) {
                return Err(invalid(
                    "BMSUserErrorInvalidInput",
                    format!(
                        "sourceResourceId '{source}' is not the protected machine '{}'.",
                        found.vm_id
                    ),
                ));
            }
        }
        let alternate = match req.recovery_type.as_str() {
            t if t.eq_ignore_ascii_case("RestoreDisks") => false,
            t if t.eq_ignore_ascii_case("AlternateLocation") => true,
            t if t.eq_ignore_ascii_case("OriginalLocation") && point.ade => {
                return Err(invalid(
                    "UserErrorReplaceExistingNotSupportedForADE",
                    "Replacing the disks of an existing machine is not supported for VMs encrypted with Azure Disk Encryption; restore the disks or a new machine.",
                ))
            }
            t => {
                return Err(invalid(
                    "BMSUserErrorInvalidInput",
                    format!("recoveryType '{t}' is not supported: use RestoreDisks or AlternateLocation (file-level restore and replacing existing disks are not offered)."),
                ))
            }
        };
        let target_rg = req
            .target_resource_group
            .as_deref()
            .map_or(found.vm_resource_group.as_str(), last_segment)
            .to_owned();
        let target_vm = match (alternate, &req.target_vm) {
            (true, Some(vm)) => Some(last_segment(vm).to_owned()),
            (true, None) => {
                return Err(invalid(
                    "BMSUserErrorInvalidInput",
                    "AlternateLocation needs targetVirtualMachineId.",
                ))
            }
            (false, _) => None,
        };
        let ade_disks = point.keys.len();
        if req.encryption.is_some() && ade_disks != 1 {
            return Err(invalid(
                "BMSUserErrorInvalidInput",
                format!("encryptionDetails names one secret; this recovery point has {ade_disks} volumes encrypted with Azure Disk Encryption."),
            ));
        }
        let stamp = point.name.chars().rev().take(6).collect::<String>();
        let base = target_vm.clone().unwrap_or_else(|| found.vm_name.clone());
        let mut made = Vec::new();
        let result: Result<(), BackupError> = async {
            let mut os = None;
            let mut data = Vec::new();
            for disk in &point.disks {
                let which = disk
                    .lun
                    .map_or_else(|| "osdisk".to_owned(), |l| format!("datadisk-{l}"));
                let name = format!("{base}-{which}-{stamp}");
                let restored = self
                    .compute
                    .restore_disk(
                        &disk.copy,
                        &target_rg,
                        &name,
                        req.disk_encryption_set.as_deref(),
                        now,
                    )
                    .await?;
                made.push(restored.id.clone());
                if let (Some(e), Some(_)) = (&req.encryption, &restored.ade) {
                    self.compute.set_ade_keys(
                        &target_rg,
                        &restored.name,
                        &e.secret_url,
                        &e.secret_vault,
                        e.kek_url.as_deref().zip(e.kek_vault.as_deref()),
                    )?;
                }
                match disk.lun {
                    None => os = Some(restored.name),
                    Some(_) => data.push(restored.name),
                }
            }
            if let Some(vm) = &target_vm {
                let req = VmRequest {
                    location: Some(v.location.clone()),
                    os_disk: os,
                    disks: Some(data),
                    ..Default::default()
                };
                let (vm, _) = self.compute.put_vm(&target_rg, vm, &req, now).await?;
                made.push(vm.id);
            }
            Ok(())
        }
        .await;
        let job = self.job(
            vault,
            "Restore",
            &found.vm_name,
            now,
            result.as_ref().map(|()| made.clone()),
        );
        self.put(
            JOB_KIND,
            resource_group,
            &format!("{vault}/{}", job.name),
            &job,
        )?;
        result?;
        Ok(job)
    }

    // ---- the schedule ----

    /// Runs what the policies make due at `now` (the scheduler's clock): each protected
    /// item's daily backup once its run time has passed since it was last backed up (never
    /// for a run time before it was protected), and the deletion of recovery points past
    /// their expiry. Returns what ran, for the audit log.
    pub async fn run_schedule(&self, now: i64) -> Result<Vec<ScheduledRun>, BackupError> {
        self.sweep_backup_copies().await?;
        let mut runs = Vec::new();
        for vault in self.list_vaults(None)? {
            let rg = vault.resource_group.as_str();
            let mine = |name: &str| name.eq_ignore_ascii_case(&vault.name);
            let items = self.all(ITEM_KIND, rg, |i: &ProtectedItem| {
                mine(&i.vault) && i.state == "Protected"
            })?;
            for item in items {
                let policy: Option<Policy> = self.store.read(|tx| {
                    tx.resource(POLICY_KIND, rg, &format!("{}/{}", vault.name, item.policy))
                })?;
                let Some(due) = policy.as_ref().and_then(|p| last_run_time(p, now)) else {
                    continue;
                };
                let last = item.last_backup.as_ref().map_or(i64::MIN, |(t, _)| *t);
                if due <= item.created || last >= due {
                    continue;
                }
                let container = item.container();
                let at = ItemRef {
                    resource_group: rg,
                    vault: &vault.name,
                    container: &container,
                    item: &item.name,
                };
                let retention = policy.map_or(0, |p| i64::from(p.retention_days));
                // One item's failure is its job's (or its audit event's); the others still run.
                let (target, failure) =
                    match self.backup_now(at, Some(due + retention * DAY), now).await {
                        Ok(job) => (
                            format!("{}/backupJobs/{}", vault.id, job.name),
                            job.error.map(|(_, m)| m),
                        ),
                        Err(e) => (item.id(&vault), Some(e.to_string())),
                    };
                runs.push(ScheduledRun {
                    vault_id: vault.id.clone(),
                    target,
                    operation: ScheduledOperation::Backup,
                    failure,
                });
            }
            let expired = self.all(POINT_KIND, rg, |p: &RecoveryPoint| {
                mine(&p.vault) && p.expiry <= now
            })?;
            for point in expired {
                let copies: Vec<String> = point.disks.iter().map(|d| d.copy.clone()).collect();
                self.compute.delete_recovery_disks(&copies).await?;
                let key = format!(
                    "{}/{}/{}",
                    point.vault,
                    point.item.to_ascii_lowercase(),
                    point.name
                );
                self.store
                    .write(|tx| tx.delete_resource(POINT_KIND, rg, &key))?;
                runs.push(ScheduledRun {
                    vault_id: vault.id.clone(),
                    target: format!("{}/recoveryPoints/{}", vault.id, point.name),
                    operation: ScheduledOperation::Expired,
                    failure: None,
                });
            }
        }
        Ok(runs)
    }

    // ---- reporting ----

    /// One row per disk of every recovery point, with the key versions it depends on: the
    /// customer key wrapping the copy's data key, and an ADE disk's KEK and secret.
    pub fn point_rows(&self) -> Result<Vec<PointRow>, BackupError> {
        let mut rows = Vec::new();
        for vault in self.list_vaults(None)? {
            let points = self.all(POINT_KIND, &vault.resource_group, |p: &RecoveryPoint| {
                p.vault.eq_ignore_ascii_case(&vault.name)
            })?;
            for point in &points {
                for disk in &point.disks {
                    let copy = self.compute.recovery_disk(&disk.copy)?;
                    let keys = point.keys.iter().find(|k| k.lun == disk.lun);
                    rows.push(PointRow {
                        vault_id: vault.id.clone(),
                        item: point.item.clone(),
                        point: point.name.clone(),
                        time: point.time,
                        expiry: point.expiry,
                        disk: disk.disk.clone(),
                        lun: disk.lun,
                        encryption_type: disk.encryption_type.clone(),
                        disk_encryption_set: disk.disk_encryption_set.clone(),
                        key_url: copy.customer_key().map(str::to_owned),
                        kek_url: keys.and_then(|k| k.kek_url.clone()),
                        secret_url: keys.map(|k| k.secret_url.clone()),
                        service: "AzureBackup",
                    });
                }
            }
            rows.extend(self.replication_point_rows(&vault)?);
        }
        Ok(rows)
    }

    // ---- jobs ----

    /// Deletes the disk copies of backups that no recovery point names: a crash between a
    /// backup's cut and its point's record leaves them (and a customer-key copy would keep
    /// its disk encryption set in use).
    async fn sweep_backup_copies(&self) -> Result<(), BackupError> {
        let _no_cut = self.cutting.lock().await;
        let mut orphans = Vec::new();
        let mut groups: Vec<String> = self
            .list_vaults(None)?
            .into_iter()
            .map(|v| v.resource_group)
            .collect();
        groups.sort();
        groups.dedup();
        for rg in groups {
            let named: Vec<String> = self
                .all(POINT_KIND, &rg, |_: &RecoveryPoint| true)?
                .into_iter()
                .flat_map(|p| p.disks.into_iter().map(|d| d.copy.to_ascii_lowercase()))
                .collect();
            for copy in self.compute.recovery_disks_named(&rg, COPY_PREFIX)? {
                if !named.contains(&copy.id.to_ascii_lowercase()) {
                    orphans.push(copy.id);
                }
            }
        }
        if !orphans.is_empty() {
            self.compute.delete_recovery_disks(&orphans).await?;
        }
        Ok(())
    }

    /// A vault's jobs, newest first.
    pub fn list_jobs(&self, resource_group: &str, vault: &str) -> Result<Vec<Job>, BackupError> {
        self.get_vault(resource_group, vault)?;
        let mut jobs: Vec<Job> = self.all(JOB_KIND, resource_group, |j: &Job| {
            j.vault.eq_ignore_ascii_case(vault)
        })?;
        jobs.sort_by_key(|j| std::cmp::Reverse(j.start));
        Ok(jobs)
    }

    /// One job.
    pub fn get_job(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<Job, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.get(JOB_KIND, resource_group, &format!("{vault}/{name}"), "job")
    }
}

/// A recovery point's disk, for reports (`AzureBackupRecoveryPoints`).
#[derive(Debug, Clone)]
pub struct PointRow {
    /// The vault's resource id.
    pub vault_id: String,
    /// The protected item.
    pub item: String,
    /// The recovery point's name.
    pub point: String,
    /// When it was taken.
    pub time: i64,
    /// When it expires.
    pub expiry: i64,
    /// The disk's name when it was backed up.
    pub disk: String,
    /// Its LUN (`None`: the OS disk).
    pub lun: Option<u32>,
    /// Its encryption type.
    pub encryption_type: String,
    /// Its disk encryption set.
    pub disk_encryption_set: Option<String>,
    /// The customer key version wrapping its data key.
    pub key_url: Option<String>,
    /// Its ADE key-encryption key version.
    pub kek_url: Option<String>,
    /// Its ADE secret version.
    pub secret_url: Option<String>,
    /// `AzureBackup`, or `SiteRecovery` for a replicated machine's point.
    pub service: &'static str,
}

/// What the schedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledOperation {
    /// A policy's daily backup.
    Backup,
    /// A recovery point past its expiry, deleted.
    Expired,
}

/// One thing the schedule did.
#[derive(Debug, Clone)]
pub struct ScheduledRun {
    /// The vault's resource id.
    pub vault_id: String,
    /// The job's (or the deleted point's) resource id.
    pub target: String,
    /// What was done.
    pub operation: ScheduledOperation,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// The latest daily run time of `policy` at or before `now` (UTC).
fn last_run_time(policy: &Policy, now: i64) -> Option<i64> {
    let time = policy.run_times.first()?;
    let (h, m) = time.split_once(':')?;
    let offset = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
    let today = now - now.rem_euclid(DAY) + offset;
    Some(if today <= now { today } else { today - DAY })
}

/// Azure's code for a failed job's error.
fn error_code(e: &BackupError) -> &str {
    match e {
        BackupError::Invalid { code, .. } | BackupError::Conflict { code, .. } => code,
        BackupError::Compute(ComputeError::KeyUnusable { .. }) => {
            "UserErrorKeyVaultPermissionsNotConfigured"
        }
        BackupError::Compute(ComputeError::ServedElsewhere { .. }) => "UserErrorVmNotFound",
        _ => "BackupOperationFailed",
    }
}

/// Recovery Services vault names: 2–50 letters, digits and hyphens, starting with a
/// letter.
fn check_vault_name(name: &str) -> Result<(), BackupError> {
    let ok = (2..=50).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "BadRequest",
            format!("The vault name '{name}' is invalid: 2 to 50 letters, digits and hyphens, starting with a letter."),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_daily_run_is_today_once_its_time_has_passed() {
        let policy = Policy {
            vault: "v".into(),
            name: "p".into(),
            id: String::new(),
            run_times: vec!["02:30".into()],
            retention_days: 7,
            time_zone: "UTC".into(),
            instant_rp_days: 2,
        };
        let midnight = 20_000 * DAY;
        assert_eq!(
            last_run_time(&policy, midnight + 3 * 3600),
            Some(midnight + 9000)
        );
        assert_eq!(
            last_run_time(&policy, midnight + 3600),
            Some(midnight + 9000 - DAY)
        );
        assert_eq!(
            last_run_time(&policy, midnight + 9000),
            Some(midnight + 9000)
        );
    }

    #[test]
    fn names_and_times() {
        assert_eq!(
            time_of_day("2026-01-24T02:00:00Z").as_deref(),
            Some("02:00")
        );
        assert_eq!(time_of_day("22:30").as_deref(), Some("22:30"));
        assert!(time_of_day("25:00").is_none() && time_of_day("soon").is_none());
        assert!(Backup::item_key(
            "v",
            "IaasVMContainer;iaasvmcontainerv2;rg;vm1",
            "VM;iaasvmcontainerv2;rg;vm1"
        )
        .is_ok());
        assert!(Backup::item_key(
            "v",
            "IaasVMContainer;iaasvmcontainerv2;rg;vm1",
            "VM;iaasvmcontainerv2;rg;vm2"
        )
        .is_err());
        assert!(
            Backup::item_key("v", "StorageContainer;x", "VM;iaasvmcontainerv2;rg;vm1").is_err()
        );
        assert!(check_vault_name("rsv-1").is_ok());
        assert!(
            check_vault_name("1rsv").is_err()
                && check_vault_name("r").is_err()
                && check_vault_name("a_b").is_err()
        );
    }
}
