//! Site Recovery for Azure VMs (Azure to Azure): replication fabrics (one per region),
//! protection containers, replication policies, container mappings (a source container
//! paired with a target one under a policy), and replicated items. A replicated item keeps
//! a replica of each chosen disk in the target region under that region's keys (the
//! platform key, or the disk encryption set chosen per disk), ships the changes between
//! successive crash-consistent cuts of the machine's disks on the policy's frequency, and
//! keeps the replicas' recovery points for the policy's window. Test failover, failover,
//! commit and re-protect (replication back the other way) make machines from those points.
//!
//! A cycle first records the new cut as pending, then ships; a cycle interrupted by a crash
//! is finished from the pending cut before another starts, and hidden disks no record
//! names (left by a crash) are swept, so replicas never mix two cuts.

use std::collections::BTreeMap;

use atrest_core::vault::normalize_location;
use atrest_disk::{AdeVolume, ReplicaPair, ReplicaTarget, VmRequest};
use serde::{Deserialize, Serialize};

use crate::{conflict, invalid, last_segment, Backup, BackupError, PointRow, RecoveryVault};

const FABRIC_KIND: &str = "replicationFabrics";
const CONTAINER_KIND: &str = "replicationProtectionContainers";
const POLICY_KIND: &str = "replicationPolicies";
const MAPPING_KIND: &str = "replicationContainerMappings";
const ITEM_KIND: &str = "replicationProtectedItems";

/// Replicated items' states, as `protectionState` reports them.
const PROTECTED: &str = "Protected";
/// Failed over, not yet committed.
const FAILED_OVER: &str = "UnplannedFailoverCompleted";
/// Failed over and committed: the recovery points are gone; re-protect comes next.
const COMMITTED: &str = "FailoverCommitted";
/// The disk name suffix of failed-over disks, as Azure's.
const FAILOVER_SUFFIX: &str = "-ASRReplica";

/// A replication fabric: a region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fabric {
    /// Its vault's name.
    pub vault: String,
    /// Name.
    pub name: String,
    /// The region, normalized.
    pub location: String,
    /// Creation time.
    pub created: i64,
}

/// A protection container in a fabric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProtectionContainer {
    /// Its vault's name.
    pub vault: String,
    /// Its fabric's name.
    pub fabric: String,
    /// Name.
    pub name: String,
}

/// A replication policy (A2A).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationPolicy {
    /// Its vault's name.
    pub vault: String,
    /// Name.
    pub name: String,
    /// `recoveryPointHistory`: minutes recovery points are kept (24 h by default).
    pub history_minutes: u32,
    /// `crashConsistentFrequencyInMinutes`: minutes between cycles.
    pub crash_minutes: u32,
    /// `appConsistentFrequencyInMinutes` (recorded; atrest's points are crash consistent).
    pub app_minutes: u32,
    /// `multiVmSyncStatus`.
    pub multi_vm_sync: bool,
}

/// What a policy create gives.
#[derive(Debug, Clone, Default)]
pub struct ReplicationPolicyRequest {
    /// `instanceType`: `A2A` only.
    pub instance_type: String,
    /// `recoveryPointHistory`, minutes.
    pub history_minutes: Option<u32>,
    /// `crashConsistentFrequencyInMinutes`.
    pub crash_minutes: Option<u32>,
    /// `appConsistentFrequencyInMinutes`.
    pub app_minutes: Option<u32>,
    /// `multiVmSyncStatus`: `Enable` or `Disable`.
    pub multi_vm_sync: Option<String>,
}

/// A container mapping: replication from one container to another under a policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMapping {
    /// Its vault's name.
    pub vault: String,
    /// The source container's fabric.
    pub fabric: String,
    /// The source container.
    pub container: String,
    /// Name.
    pub name: String,
    /// The target's fabric.
    pub target_fabric: String,
    /// The target container.
    pub target_container: String,
    /// The policy's name.
    pub policy: String,
}

/// One side of a replication: where the machine runs or is recovered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Site {
    /// Fabric.
    pub fabric: String,
    /// Container.
    pub container: String,
    /// Region.
    pub location: String,
    /// Resource group of the machine and its disks.
    pub resource_group: String,
    /// The machine's name there.
    pub vm_name: String,
}

/// A replicated disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicatedDisk {
    /// LUN (`None`: the OS disk).
    pub lun: Option<u32>,
    /// The source disk's name (in the primary site's resource group).
    pub disk: String,
    /// The source disk's size in bytes.
    pub size_bytes: u64,
    /// The source disk's disk encryption set, if any.
    pub primary_des: Option<String>,
    /// The replica's disk encryption set, if any.
    pub recovery_des: Option<String>,
    /// The source disk's Azure Disk Encryption keys, if it has them.
    #[serde(default)]
    pub primary_ade: Option<AdeVolume>,
    /// The replica's, in the recovery region.
    #[serde(default)]
    pub recovery_ade: Option<AdeVolume>,
    /// The replica's resource id.
    pub replica: String,
    /// The cut the replica holds.
    pub cut: Option<String>,
}

/// A recovery point of a replicated item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaPoint {
    /// Name.
    pub name: String,
    /// When its cut was taken.
    pub time: i64,
    /// `(lun, copy id)` of each disk.
    pub disks: Vec<(Option<u32>, String)>,
}

/// A machine made by a failover or a test failover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovered {
    /// The machine's resource id.
    pub vm: String,
    /// Its disks' resource ids.
    pub disks: Vec<String>,
    /// The recovery point it came from.
    pub point: String,
    /// When.
    pub time: i64,
}

/// A cycle interrupted after its cut was recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCycle {
    /// Its sequence number.
    pub seq: u64,
    /// When the cut was taken.
    pub time: i64,
    /// `(lun, cut id)` of each disk.
    pub cuts: Vec<(Option<u32>, String)>,
}

/// A virtual machine replicated to another region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicatedItem {
    /// Its vault's name.
    pub vault: String,
    /// The fabric in its address.
    pub fabric: String,
    /// The container in its address.
    pub container: String,
    /// Name.
    pub name: String,
    /// The policy's name.
    pub policy: String,
    /// Where the machine runs while protected.
    pub primary: Site,
    /// Where it is recovered.
    pub recovery: Site,
    /// Whether re-protect has turned the replication around (the machine runs in what
    /// was the recovery region).
    pub reversed: bool,
    /// `Protected`, `UnplannedFailoverCompleted` or `FailoverCommitted`.
    pub state: String,
    /// The disks replicated.
    pub disks: Vec<ReplicatedDisk>,
    /// Recovery points, oldest first.
    pub points: Vec<ReplicaPoint>,
    /// A cycle to finish.
    pub pending: Option<PendingCycle>,
    /// The last cycle's number; names the hidden disks.
    pub seq: u64,
    /// Each re-protect starts a new generation of replicas.
    pub generation: u32,
    /// When the last cycle ran (ended or failed).
    pub last_cycle: Option<i64>,
    /// Why the last cycle failed.
    pub last_error: Option<String>,
    /// Bytes the cycles shipped, in all.
    pub shipped_bytes: u64,
    /// The outstanding test failover.
    pub test_failover: Option<Recovered>,
    /// When the last test failover ended.
    pub last_test_failover: Option<i64>,
    /// The failover.
    pub failover: Option<Recovered>,
    /// Creation time.
    pub created: i64,
}

impl ReplicatedItem {
    /// `activeLocation`: where the machine runs now.
    pub fn active_location(&self) -> &'static str {
        let failed_over = self.state != PROTECTED;
        if failed_over != self.reversed {
            "Recovery"
        } else {
            "Primary"
        }
    }

    /// The failover direction the item allows.
    pub fn direction(&self) -> &'static str {
        if self.reversed {
            "RecoveryToPrimary"
        } else {
            "PrimaryToRecovery"
        }
    }

    /// `allowedOperations`.
    pub fn allowed_operations(&self) -> Vec<&'static str> {
        let mut ops = match self.state.as_str() {
            PROTECTED if self.test_failover.is_some() => vec!["TestFailoverCleanup"],
            PROTECTED => vec!["TestFailover", "UnplannedFailover"],
            FAILED_OVER => vec!["Commit"],
            _ => vec!["ReverseReplicate"],
        };
        ops.push("DisableProtection");
        ops
    }

    /// Seconds from the newest recovery point to `now` (the RPO), if there is one.
    pub fn rpo_seconds(&self, now: i64) -> Option<i64> {
        self.points.last().map(|p| (now - p.time).max(0))
    }

    /// The prefix of the hidden disks of this item's current generation.
    fn prefix(&self) -> String {
        hidden_prefix(&self.vault, &self.name, self.generation)
    }
}

/// A document kept per vault.
trait InVault: serde::de::DeserializeOwned {
    /// Its store kind.
    const KIND: &'static str;
    /// Its vault's name.
    fn vault(&self) -> &str;
}

macro_rules! in_vault {
    ($($t:ty => $kind:expr),* $(,)?) => {
        $(impl InVault for $t {
            const KIND: &'static str = $kind;
            fn vault(&self) -> &str {
                &self.vault
            }
        })*
    };
}

in_vault! {
    Fabric => FABRIC_KIND,
    ProtectionContainer => CONTAINER_KIND,
    ReplicationPolicy => POLICY_KIND,
    ContainerMapping => MAPPING_KIND,
    ReplicatedItem => ITEM_KIND,
}

/// The prefix of a replicated item's hidden disks (replicas, cuts, points).
fn hidden_prefix(vault: &str, item: &str, generation: u32) -> String {
    format!("asr-{vault}-{item}-g{generation}").to_ascii_lowercase()
}

/// What enabling replication asks for (`A2AEnableProtectionInput`).
#[derive(Debug, Clone, Default)]
pub struct EnableReplication {
    /// `policyId` (defaults to the mapping's).
    pub policy: Option<String>,
    /// `fabricObjectId`: the machine's resource id.
    pub vm_id: String,
    /// `recoveryContainerId` (defaults to the mapping's target).
    pub recovery_container: Option<String>,
    /// `recoveryResourceGroupId` (default `{rg}-asr`).
    pub recovery_resource_group: Option<String>,
    /// `vmManagedDisks`: the disks to replicate (all disks, platform keys, when empty).
    pub disks: Vec<DiskInput>,
    /// `diskEncryptionInfo` of the machine: the target keys of its ADE disks, unless a
    /// disk names its own.
    pub keys: Option<TargetKeys>,
}

/// One disk of `vmManagedDisks`.
#[derive(Debug, Clone, Default)]
pub struct DiskInput {
    /// `diskId`.
    pub disk_id: String,
    /// `recoveryDiskEncryptionSetId`.
    pub disk_encryption_set: Option<String>,
    /// `diskEncryptionInfo`.
    pub keys: Option<TargetKeys>,
}

/// `diskEncryptionInfo`: an ADE disk's keys in the target region. With identifiers, keys
/// already copied there; with vault ids only (or nothing: `{vault}-asr`), the vaults
/// Site Recovery copies the secret into and recreates the key-encryption key in.
#[derive(Debug, Clone, Default)]
pub struct TargetKeys {
    /// `diskEncryptionKeyInfo.secretIdentifier`.
    pub secret_url: Option<String>,
    /// `diskEncryptionKeyInfo.keyVaultResourceArmId`.
    pub secret_vault: Option<String>,
    /// `keyEncryptionKeyInfo.keyIdentifier`.
    pub kek_url: Option<String>,
    /// `keyEncryptionKeyInfo.keyVaultResourceArmId`.
    pub kek_vault: Option<String>,
}

/// What a (test) failover asks for.
#[derive(Debug, Clone, Default)]
pub struct FailoverRequest {
    /// `failoverDirection`.
    pub direction: Option<String>,
    /// `recoveryPointId` (default: the latest).
    pub recovery_point: Option<String>,
    /// `sourceSiteOperations: Required`: shut the source machine down first.
    pub shut_down_source: bool,
}

/// A container as a request addresses it.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'a> {
    /// The vault's resource group.
    pub resource_group: &'a str,
    /// The vault.
    pub vault: &'a str,
    /// The fabric.
    pub fabric: &'a str,
    /// The container.
    pub container: &'a str,
}

/// One replication cycle the loop ran, for the audit log.
#[derive(Debug, Clone)]
pub struct ReplicationRun {
    /// The vault's resource id.
    pub vault_id: String,
    /// The item's resource id.
    pub item_id: String,
    /// Bytes shipped, or why the cycle failed.
    pub outcome: Result<u64, String>,
}

/// The segment after `key` in a resource id (case-insensitive), if any.
fn segment_after<'a>(id: &'a str, key: &str) -> Option<&'a str> {
    let mut parts = id.trim_end_matches('/').split('/');
    parts.find(|p| p.eq_ignore_ascii_case(key))?;
    parts.next().filter(|s| !s.is_empty())
}

/// `{fabric}/{container}` of a container resource id.
fn container_of(id: &str) -> Option<(String, String)> {
    let fabric = segment_after(id, "replicationFabrics")?;
    let container = segment_after(id, "replicationProtectionContainers")?;
    Some((fabric.to_owned(), container.to_owned()))
}

/// A resource id's resource group and name for kind segment `kind`.
fn rg_and_name<'a>(id: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    Some((
        segment_after(id, "resourceGroups")?,
        segment_after(id, kind)?,
    ))
}

fn check_name(what: &str, name: &str) -> Result<(), BackupError> {
    let ok = (1..=80).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "InvalidParameter",
            format!(
                "The {what} name '{name}' is invalid: 1 to 80 letters, digits, '-', '_' and '.'."
            ),
        ))
    }
}

impl Backup {
    /// A vault's documents of one kind.
    fn in_vault<T: InVault>(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<T>, BackupError> {
        self.all(T::KIND, resource_group, |d: &T| {
            d.vault().eq_ignore_ascii_case(vault)
        })
    }

    fn site_key(vault: &str, parts: &[&str]) -> String {
        let mut key = vault.to_owned();
        for p in parts {
            key.push('/');
            key.push_str(p);
        }
        key.to_ascii_lowercase()
    }

    /// The resource id of a fabric.
    pub fn fabric_id(&self, resource_group: &str, vault: &str, fabric: &str) -> String {
        format!(
            "{}/replicationFabrics/{fabric}",
            self.vault_id(resource_group, vault)
        )
    }

    /// The resource id of a container.
    pub fn container_id(&self, at: ContainerRef<'_>) -> String {
        format!(
            "{}/replicationProtectionContainers/{}",
            self.fabric_id(at.resource_group, at.vault, at.fabric),
            at.container
        )
    }

    /// The resource id of a replication policy.
    pub fn replication_policy_id(&self, resource_group: &str, vault: &str, name: &str) -> String {
        format!(
            "{}/replicationPolicies/{name}",
            self.vault_id(resource_group, vault)
        )
    }

    /// The resource id of a replicated item.
    pub fn replicated_item_id(&self, resource_group: &str, item: &ReplicatedItem) -> String {
        format!(
            "{}/replicationProtectedItems/{}",
            self.container_id(ContainerRef {
                resource_group,
                vault: &item.vault,
                fabric: &item.fabric,
                container: &item.container,
            }),
            item.name
        )
    }

    /// The Site Recovery documents of a vault being deleted, by kind and key; refused
    /// while the vault replicates anything.
    pub(crate) fn site_recovery_documents(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<(&'static str, String)>, BackupError> {
        let items = self.list_replicated(resource_group, vault)?;
        if !items.is_empty() {
            return Err(conflict(
                "ServiceResourceNotEmpty",
                format!("Vault '{vault}' cannot be deleted as there are existing resources within the vault: {} replicated item(s). Disable their replication first.", items.len()),
            ));
        }
        let mut docs = Vec::new();
        for f in self.list_fabrics(resource_group, vault)? {
            docs.push((FABRIC_KIND, Self::site_key(vault, &[&f.name])));
        }
        for c in self.list_containers(resource_group, vault, None)? {
            docs.push((CONTAINER_KIND, Self::site_key(vault, &[&c.fabric, &c.name])));
        }
        for p in self.list_replication_policies(resource_group, vault)? {
            docs.push((POLICY_KIND, Self::site_key(vault, &[&p.name])));
        }
        for m in self.list_mappings(resource_group, vault)? {
            docs.push((
                MAPPING_KIND,
                Self::site_key(vault, &[&m.fabric, &m.container, &m.name]),
            ));
        }
        Ok(docs)
    }

    /// The disks of a vault's replication recovery points, with the key versions they
    /// hold (the target region's).
    pub(crate) fn replication_point_rows(
        &self,
        vault: &RecoveryVault,
    ) -> Result<Vec<PointRow>, BackupError> {
        let rg = &vault.resource_group;
        let mut rows = Vec::new();
        for item in self.list_replicated(rg, &vault.name)? {
            let history = self
                .get_replication_policy(rg, &vault.name, &item.policy)
                .map_or(0, |p| i64::from(p.history_minutes) * 60);
            for point in &item.points {
                for (lun, id) in &point.disks {
                    let copy = self.compute.recovery_disk(id)?;
                    let disk = item.disks.iter().find(|d| d.lun == *lun);
                    rows.push(PointRow {
                        vault_id: vault.id.clone(),
                        item: item.name.clone(),
                        point: point.name.clone(),
                        time: point.time,
                        expiry: point.time + history,
                        disk: disk.map(|d| d.disk.clone()).unwrap_or_default(),
                        lun: *lun,
                        encryption_type: copy.encryption_type.clone(),
                        disk_encryption_set: copy.disk_encryption_set.clone(),
                        key_url: copy.customer_key().map(str::to_owned),
                        kek_url: copy.ade.as_ref().and_then(|a| a.kek_url.clone()),
                        secret_url: copy.ade.as_ref().map(|a| a.secret_url.clone()),
                        service: "SiteRecovery",
                    });
                }
            }
        }
        Ok(rows)
    }

    // ---- fabrics and containers ----

    /// Creates a fabric for a region; an existing one keeps its region.
    pub fn put_fabric(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
        location: Option<&str>,
        now: i64,
    ) -> Result<(Fabric, bool), BackupError> {
        self.get_vault(resource_group, vault)?;
        check_name("fabric", name)?;
        let location = location
            .map(|l| normalize_location(l).map_err(|e| invalid("InvalidParameter", e.to_string())))
            .transpose()?;
        let key = Self::site_key(vault, &[name]);
        if let Some(f) = self
            .store
            .read(|tx| tx.resource::<Fabric>(FABRIC_KIND, resource_group, &key))?
        {
            if location.as_deref().is_some_and(|l| l != f.location) {
                return Err(invalid(
                    "InvalidParameter",
                    format!(
                        "Fabric '{name}' is in '{}'; its location cannot change.",
                        f.location
                    ),
                ));
            }
            return Ok((f, false));
        }
        let location = location.ok_or_else(|| {
            invalid(
                "InvalidParameter",
                "properties.customDetails.location is required (instanceType Azure).",
            )
        })?;
        let others = self.list_fabrics(resource_group, vault)?;
        if let Some(other) = others.iter().find(|f| f.location == location) {
            return Err(conflict(
                "FabricAlreadyExists",
                format!(
                    "Fabric '{}' already stands for '{location}' in vault '{vault}'.",
                    other.name
                ),
            ));
        }
        let fabric = Fabric {
            vault: vault.to_owned(),
            name: name.to_owned(),
            location,
            created: now,
        };
        self.put(FABRIC_KIND, resource_group, &key, &fabric)?;
        Ok((fabric, true))
    }

    /// A fabric.
    pub fn get_fabric(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<Fabric, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.get(
            FABRIC_KIND,
            resource_group,
            &Self::site_key(vault, &[name]),
            "replication fabric",
        )
    }

    /// A vault's fabrics.
    pub fn list_fabrics(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<Fabric>, BackupError> {
        self.in_vault(resource_group, vault)
    }

    /// Deletes a fabric; refused while it has containers.
    pub fn delete_fabric(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<bool, BackupError> {
        if self
            .list_containers(resource_group, vault, Some(name))?
            .is_empty()
        {
            let key = Self::site_key(vault, &[name]);
            return Ok(self
                .store
                .write(|tx| tx.delete_resource(FABRIC_KIND, resource_group, &key))?);
        }
        Err(conflict(
            "FabricHasContainers",
            format!("Fabric '{name}' has protection containers; delete them first."),
        ))
    }

    /// Creates a protection container in a fabric.
    pub fn put_container(&self, at: ContainerRef<'_>) -> Result<ProtectionContainer, BackupError> {
        self.get_fabric(at.resource_group, at.vault, at.fabric)?;
        check_name("protection container", at.container)?;
        let c = ProtectionContainer {
            vault: at.vault.to_owned(),
            fabric: at.fabric.to_owned(),
            name: at.container.to_owned(),
        };
        let key = Self::site_key(at.vault, &[at.fabric, at.container]);
        self.put(CONTAINER_KIND, at.resource_group, &key, &c)?;
        Ok(c)
    }

    /// A protection container.
    pub fn get_container(&self, at: ContainerRef<'_>) -> Result<ProtectionContainer, BackupError> {
        self.get_fabric(at.resource_group, at.vault, at.fabric)?;
        self.get(
            CONTAINER_KIND,
            at.resource_group,
            &Self::site_key(at.vault, &[at.fabric, at.container]),
            "protection container",
        )
    }

    /// Containers of a vault, or of one fabric.
    pub fn list_containers(
        &self,
        resource_group: &str,
        vault: &str,
        fabric: Option<&str>,
    ) -> Result<Vec<ProtectionContainer>, BackupError> {
        let all: Vec<ProtectionContainer> = self.in_vault(resource_group, vault)?;
        Ok(all
            .into_iter()
            .filter(|c| fabric.is_none_or(|f| c.fabric.eq_ignore_ascii_case(f)))
            .collect())
    }

    /// Deletes a container; refused while mappings or items use it.
    pub fn delete_container(&self, at: ContainerRef<'_>) -> Result<bool, BackupError> {
        let uses = self
            .list_mappings(at.resource_group, at.vault)?
            .iter()
            .any(|m| {
                (m.fabric.eq_ignore_ascii_case(at.fabric)
                    && m.container.eq_ignore_ascii_case(at.container))
                    || (m.target_fabric.eq_ignore_ascii_case(at.fabric)
                        && m.target_container.eq_ignore_ascii_case(at.container))
            });
        if uses {
            return Err(conflict(
                "ContainerInUse",
                format!("Protection container '{}' is paired by a container mapping; delete the mapping first.", at.container),
            ));
        }
        let key = Self::site_key(at.vault, &[at.fabric, at.container]);
        Ok(self
            .store
            .write(|tx| tx.delete_resource(CONTAINER_KIND, at.resource_group, &key))?)
    }

    // ---- policies ----

    /// Creates or updates a replication policy.
    pub fn put_replication_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
        req: &ReplicationPolicyRequest,
    ) -> Result<ReplicationPolicy, BackupError> {
        self.get_vault(resource_group, vault)?;
        check_name("replication policy", name)?;
        if !req.instance_type.eq_ignore_ascii_case("A2A") {
            return Err(invalid(
                "InvalidParameter",
                format!("providerSpecificInput.instanceType '{}' is not supported: atrest replicates Azure VMs (A2A).", req.instance_type),
            ));
        }
        let history = req.history_minutes.unwrap_or(24 * 60);
        if history > 15 * 24 * 60 {
            return Err(invalid(
                "InvalidParameter",
                format!("recoveryPointHistory {history} minutes is more than the 15 days (21600 minutes) recovery points are kept at most."),
            ));
        }
        let crash = req.crash_minutes.unwrap_or(5);
        if crash == 0 || crash > 60 {
            return Err(invalid(
                "InvalidParameter",
                format!("crashConsistentFrequencyInMinutes {crash} is out of range: 1 to 60."),
            ));
        }
        let multi_vm_sync = match req.multi_vm_sync.as_deref() {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("Enable") => true,
            Some(s) if s.eq_ignore_ascii_case("Disable") => false,
            Some(s) => {
                return Err(invalid(
                    "InvalidParameter",
                    format!("multiVmSyncStatus '{s}' is not Enable or Disable."),
                ))
            }
        };
        let p = ReplicationPolicy {
            vault: vault.to_owned(),
            name: name.to_owned(),
            history_minutes: history,
            crash_minutes: crash,
            app_minutes: req.app_minutes.unwrap_or(0),
            multi_vm_sync,
        };
        self.put(
            POLICY_KIND,
            resource_group,
            &Self::site_key(vault, &[name]),
            &p,
        )?;
        Ok(p)
    }

    /// A replication policy.
    pub fn get_replication_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<ReplicationPolicy, BackupError> {
        self.get_vault(resource_group, vault)?;
        self.get(
            POLICY_KIND,
            resource_group,
            &Self::site_key(vault, &[name]),
            "replication policy",
        )
    }

    /// A vault's replication policies.
    pub fn list_replication_policies(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<ReplicationPolicy>, BackupError> {
        self.in_vault(resource_group, vault)
    }

    /// Deletes a replication policy; refused while a mapping uses it.
    pub fn delete_replication_policy(
        &self,
        resource_group: &str,
        vault: &str,
        name: &str,
    ) -> Result<bool, BackupError> {
        if self
            .list_mappings(resource_group, vault)?
            .iter()
            .any(|m| m.policy.eq_ignore_ascii_case(name))
        {
            return Err(conflict(
                "PolicyInUse",
                format!("Replication policy '{name}' is used by a container mapping; delete the mapping first."),
            ));
        }
        let key = Self::site_key(vault, &[name]);
        Ok(self
            .store
            .write(|tx| tx.delete_resource(POLICY_KIND, resource_group, &key))?)
    }

    // ---- mappings ----

    /// Pairs container `at` with `target_container` (a resource id) under `policy`.
    pub fn put_mapping(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        target_container: &str,
        policy: &str,
    ) -> Result<ContainerMapping, BackupError> {
        check_name("container mapping", name)?;
        self.get_container(at)?;
        let (target_fabric, target_name) = container_of(target_container).ok_or_else(|| {
            invalid(
                "InvalidParameter",
                format!("targetProtectionContainerId '{target_container}' is not a protection container's resource id."),
            )
        })?;
        let target_at = ContainerRef {
            fabric: &target_fabric,
            container: &target_name,
            ..at
        };
        self.get_container(target_at)?;
        let source_region = self
            .get_fabric(at.resource_group, at.vault, at.fabric)?
            .location;
        let target_region = self
            .get_fabric(at.resource_group, at.vault, &target_fabric)?
            .location;
        if source_region == target_region {
            return Err(invalid(
                "InvalidParameter",
                format!("A container mapping pairs two regions; both containers are in '{source_region}'."),
            ));
        }
        let policy = self
            .get_replication_policy(at.resource_group, at.vault, last_segment(policy))?
            .name;
        let m = ContainerMapping {
            vault: at.vault.to_owned(),
            fabric: at.fabric.to_owned(),
            container: at.container.to_owned(),
            name: name.to_owned(),
            target_fabric,
            target_container: target_name,
            policy,
        };
        let key = Self::site_key(at.vault, &[at.fabric, at.container, name]);
        self.put(MAPPING_KIND, at.resource_group, &key, &m)?;
        Ok(m)
    }

    /// A container mapping.
    pub fn get_mapping(
        &self,
        at: ContainerRef<'_>,
        name: &str,
    ) -> Result<ContainerMapping, BackupError> {
        self.get_container(at)?;
        self.get(
            MAPPING_KIND,
            at.resource_group,
            &Self::site_key(at.vault, &[at.fabric, at.container, name]),
            "container mapping",
        )
    }

    /// A vault's container mappings.
    pub fn list_mappings(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<ContainerMapping>, BackupError> {
        self.in_vault(resource_group, vault)
    }

    /// Deletes a mapping; refused while items replicate through it.
    pub fn delete_mapping(&self, at: ContainerRef<'_>, name: &str) -> Result<bool, BackupError> {
        let busy = self
            .list_replicated(at.resource_group, at.vault)?
            .iter()
            .any(|i| {
                i.fabric.eq_ignore_ascii_case(at.fabric)
                    && i.container.eq_ignore_ascii_case(at.container)
            });
        if busy {
            return Err(conflict(
                "ContainerMappingInUse",
                format!("Container mapping '{name}' has replicated items; disable their replication first."),
            ));
        }
        let key = Self::site_key(at.vault, &[at.fabric, at.container, name]);
        Ok(self
            .store
            .write(|tx| tx.delete_resource(MAPPING_KIND, at.resource_group, &key))?)
    }

    // ---- replicated items ----

    fn replicated_key(at: ContainerRef<'_>, name: &str) -> String {
        Self::site_key(at.vault, &[at.fabric, at.container, name])
    }

    /// A replicated item.
    pub fn get_replicated(
        &self,
        at: ContainerRef<'_>,
        name: &str,
    ) -> Result<ReplicatedItem, BackupError> {
        self.get_vault(at.resource_group, at.vault)?;
        self.get(
            ITEM_KIND,
            at.resource_group,
            &Self::replicated_key(at, name),
            "replication protected item",
        )
    }

    /// A vault's replicated items.
    pub fn list_replicated(
        &self,
        resource_group: &str,
        vault: &str,
    ) -> Result<Vec<ReplicatedItem>, BackupError> {
        self.in_vault(resource_group, vault)
    }

    fn save_item(&self, resource_group: &str, item: &ReplicatedItem) -> Result<(), BackupError> {
        let at = ContainerRef {
            resource_group,
            vault: &item.vault,
            fabric: &item.fabric,
            container: &item.container,
        };
        self.put(
            ITEM_KIND,
            resource_group,
            &Self::replicated_key(at, &item.name),
            item,
        )
    }

    /// Enables replication of a machine from container `at` through its mapping: creates
    /// the replicas (empty; the first cycle fills them).
    pub async fn enable_replication(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        req: &EnableReplication,
        now: i64,
    ) -> Result<ReplicatedItem, BackupError> {
        check_name("replication protected item", name)?;
        let _one = self.replication.lock().await;
        let key = Self::replicated_key(at, name);
        if let Some(existing) = self
            .store
            .read(|tx| tx.resource::<ReplicatedItem>(ITEM_KIND, at.resource_group, &key))?
        {
            return Ok(existing);
        }
        let source_fabric = self.get_fabric(at.resource_group, at.vault, at.fabric)?;
        let mapping = self
            .list_mappings(at.resource_group, at.vault)?
            .into_iter()
            .find(|m| {
                m.fabric.eq_ignore_ascii_case(at.fabric)
                    && m.container.eq_ignore_ascii_case(at.container)
                    && req.recovery_container.as_deref().is_none_or(|c| {
                        container_of(c).is_some_and(|(f, c)| {
                            f.eq_ignore_ascii_case(&m.target_fabric)
                                && c.eq_ignore_ascii_case(&m.target_container)
                        })
                    })
            })
            .ok_or_else(|| {
                invalid(
                    "ProtectionContainerNotPaired",
                    format!("Protection container '{}' has no container mapping to the recovery container; create one first.", at.container),
                )
            })?;
        let policy = match &req.policy {
            Some(p) => self.get_replication_policy(at.resource_group, at.vault, last_segment(p))?,
            None => self.get_replication_policy(at.resource_group, at.vault, &mapping.policy)?,
        };
        let target_fabric = self.get_fabric(at.resource_group, at.vault, &mapping.target_fabric)?;
        let (vm_rg, vm_name) = rg_and_name(&req.vm_id, "virtualMachines").ok_or_else(|| {
            invalid(
                "InvalidParameter",
                format!(
                    "fabricObjectId '{}' is not a virtual machine's resource id.",
                    req.vm_id
                ),
            )
        })?;
        let vm = self.compute.get_vm(vm_rg, vm_name)?;
        if vm.location != source_fabric.location {
            return Err(invalid(
                "InvalidParameter",
                format!(
                    "Virtual machine '{vm_name}' is in '{}', not in fabric '{}' ('{}').",
                    vm.location, source_fabric.name, source_fabric.location
                ),
            ));
        }
        if self
            .list_replicated(at.resource_group, at.vault)?
            .iter()
            .any(|i| {
                i.primary.resource_group.eq_ignore_ascii_case(vm_rg)
                    && i.primary.vm_name.eq_ignore_ascii_case(vm_name)
            })
        {
            return Err(conflict(
                "ProtectionAlreadyEnabled",
                format!(
                    "Virtual machine '{vm_name}' is already replicated by vault '{}'.",
                    at.vault
                ),
            ));
        }
        let recovery_rg = req
            .recovery_resource_group
            .as_deref()
            .map_or_else(|| format!("{vm_rg}-asr"), |g| last_segment(g).to_owned());
        let attached: Vec<(Option<u32>, String)> =
            vm.attached().map(|(lun, d)| (lun, d.clone())).collect();
        let mut chosen: Vec<(Option<u32>, Option<String>, Option<&TargetKeys>)> = Vec::new();
        if req.disks.is_empty() {
            for (lun, _) in &attached {
                chosen.push((*lun, None, None));
            }
        }
        for d in &req.disks {
            let disk_name = last_segment(&d.disk_id);
            let (lun, _) = attached
                .iter()
                .find(|(_, a)| a.eq_ignore_ascii_case(disk_name))
                .ok_or_else(|| {
                    invalid(
                        "InvalidParameter",
                        format!(
                            "Disk '{}' is not attached to virtual machine '{vm_name}'.",
                            d.disk_id
                        ),
                    )
                })?;
            chosen.push((*lun, d.disk_encryption_set.clone(), d.keys.as_ref()));
        }
        let vault = self.get_vault(at.resource_group, at.vault)?;
        let mut recreated = BTreeMap::new();
        let mut targets = BTreeMap::new();
        for (lun, des, keys) in chosen {
            let disk_name = attached
                .iter()
                .find(|(l, _)| *l == lun)
                .map(|(_, d)| d.as_str())
                .unwrap_or_default();
            let source = self.compute.get_disk(vm_rg, disk_name)?;
            let ade = match &source.ade {
                None => None,
                Some(ade) => Some(
                    self.target_keys(
                        &vault.id,
                        disk_name,
                        ade,
                        keys.or(req.keys.as_ref()),
                        &target_fabric.location,
                        &mut recreated,
                    )
                    .await?,
                ),
            };
            targets.insert(
                lun,
                ReplicaTarget {
                    disk_encryption_set: des,
                    ade,
                },
            );
        }
        let prefix = hidden_prefix(at.vault, name, 0);
        let replicas = self
            .compute
            .create_replicas(
                vm_rg,
                vm_name,
                (&recovery_rg, &target_fabric.location),
                &format!("{prefix}-replica"),
                &targets,
                now,
            )
            .await?;
        let mut disks = Vec::new();
        for r in replicas {
            let source = attached
                .iter()
                .find(|(lun, _)| *lun == r.lun)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            let primary = self.compute.get_disk(vm_rg, &source)?;
            disks.push(ReplicatedDisk {
                lun: r.lun,
                disk: source,
                size_bytes: primary.size_bytes(),
                primary_des: primary.disk_encryption_set.clone(),
                recovery_des: r.copy.disk_encryption_set.clone(),
                primary_ade: primary.ade.clone(),
                recovery_ade: r.copy.ade.clone(),
                replica: r.copy.id.clone(),
                cut: None,
            });
        }
        let item = ReplicatedItem {
            vault: at.vault.to_owned(),
            fabric: at.fabric.to_owned(),
            container: at.container.to_owned(),
            name: name.to_owned(),
            policy: policy.name,
            primary: Site {
                fabric: at.fabric.to_owned(),
                container: at.container.to_owned(),
                location: source_fabric.location,
                resource_group: vm_rg.to_owned(),
                vm_name: vm_name.to_owned(),
            },
            recovery: Site {
                fabric: mapping.target_fabric,
                container: mapping.target_container,
                location: target_fabric.location,
                resource_group: recovery_rg,
                vm_name: vm_name.to_owned(),
            },
            reversed: false,
            state: PROTECTED.to_owned(),
            disks,
            points: Vec::new(),
            pending: None,
            seq: 0,
            generation: 0,
            last_cycle: None,
            last_error: None,
            shipped_bytes: 0,
            test_failover: None,
            last_test_failover: None,
            failover: None,
            created: now,
        };
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    /// An ADE disk's keys in the target region: the ones `keys` names, or copies made as
    /// the vault's identity into the vaults it names (default: the source vaults' names
    /// with `-asr`).
    async fn target_keys(
        &self,
        identity: &str,
        disk: &str,
        source: &AdeVolume,
        keys: Option<&TargetKeys>,
        location: &str,
        recreated: &mut BTreeMap<String, String>,
    ) -> Result<AdeVolume, BackupError> {
        let keys = keys.cloned().unwrap_or_default();
        if let Some(secret_url) = keys.secret_url {
            let secret_vault = keys.secret_vault.ok_or_else(|| {
                invalid(
                    "InvalidParameter",
                    "diskEncryptionKeyInfo.keyVaultResourceArmId is required with a secretIdentifier.",
                )
            })?;
            if keys.kek_url.is_some() != source.kek_url.is_some() {
                return Err(invalid(
                    "InvalidParameter",
                    format!(
                        "Disk '{disk}' {} a key-encryption key: keyEncryptionKeyInfo must {}.",
                        if source.kek_url.is_some() {
                            "has"
                        } else {
                            "has no"
                        },
                        if source.kek_url.is_some() {
                            "name its copy"
                        } else {
                            "be absent"
                        }
                    ),
                ));
            }
            return Ok(AdeVolume {
                secret_url,
                secret_vault,
                kek_url: keys.kek_url,
                kek_vault: keys.kek_vault,
                ..source.clone()
            });
        }
        let default_vault =
            |id: Option<&str>| format!("{}-asr", last_segment(id.unwrap_or_default()));
        let secret_vault = keys.secret_vault.as_deref().map_or_else(
            || default_vault(Some(&source.secret_vault)),
            |v| last_segment(v).to_owned(),
        );
        let kek_vault = keys.kek_vault.as_deref().map_or_else(
            || default_vault(source.kek_vault.as_deref()),
            |v| last_segment(v).to_owned(),
        );
        Ok(self
            .compute
            .copy_ade_keys(
                identity,
                disk,
                source,
                (&secret_vault, &kek_vault),
                location,
                recreated,
            )
            .await?)
    }

    /// Disables replication: deletes the replicas, cuts and recovery points (machines a
    /// failover made stay).
    pub async fn disable_replication(
        &self,
        at: ContainerRef<'_>,
        name: &str,
    ) -> Result<bool, BackupError> {
        let _one = self.replication.lock().await;
        let key = Self::replicated_key(at, name);
        let Some(item) = self
            .store
            .read(|tx| tx.resource::<ReplicatedItem>(ITEM_KIND, at.resource_group, &key))?
        else {
            return Ok(false);
        };
        if let Some(test) = &item.test_failover {
            self.remove_recovered(test).await?;
        }
        self.drop_generation(at.resource_group, &item).await?;
        self.store
            .write(|tx| tx.delete_resource(ITEM_KIND, at.resource_group, &key))?;
        Ok(true)
    }

    /// Deletes every hidden disk of the item's current generation.
    async fn drop_generation(
        &self,
        resource_group: &str,
        item: &ReplicatedItem,
    ) -> Result<(), BackupError> {
        let prefix = item.prefix();
        let mut ids = Vec::new();
        for rg in [resource_group, &item.recovery.resource_group] {
            for d in self.compute.recovery_disks_named(rg, &prefix)? {
                ids.push(d.id);
            }
        }
        self.compute.delete_recovery_disks(&ids).await?;
        Ok(())
    }

    /// A replicated item's recovery point by name or resource id (default: the newest).
    fn point_of<'i>(
        item: &'i ReplicatedItem,
        reference: Option<&str>,
    ) -> Result<&'i ReplicaPoint, BackupError> {
        match reference {
            Some(r) => {
                let name = last_segment(r);
                item.points
                    .iter()
                    .find(|p| p.name.eq_ignore_ascii_case(name))
                    .ok_or_else(|| BackupError::NotFound {
                        kind: "recovery point",
                        name: name.to_owned(),
                    })
            }
            None => item.points.last().ok_or_else(|| {
                conflict(
                    "NoRecoveryPointAvailable",
                    format!(
                        "'{}' has no recovery point yet: initial replication has not completed.",
                        item.name
                    ),
                )
            }),
        }
    }

    /// Makes machine `vm_name` in the recovery site from `point`, its disks named from
    /// the primary's with `suffix`, and starts it.
    async fn recover(
        &self,
        item: &ReplicatedItem,
        point: &ReplicaPoint,
        vm_name: &str,
        suffix: &str,
        now: i64,
    ) -> Result<Recovered, BackupError> {
        let site = &item.recovery;
        if self.compute.get_vm(&site.resource_group, vm_name).is_ok() {
            return Err(conflict(
                "VirtualMachineExists",
                format!("Virtual machine '{vm_name}' already exists in resource group '{}'; delete it before recovering into it.", site.resource_group),
            ));
        }
        let mut made = Vec::new();
        let result: Result<Recovered, BackupError> = async {
            let (mut os, mut data) = (None, Vec::new());
            for (lun, copy) in &point.disks {
                let source = item.disks.iter().find(|d| d.lun == *lun);
                let base = source.map_or("disk", |d| d.disk.trim_end_matches(FAILOVER_SUFFIX));
                let des = source.and_then(|d| d.recovery_des.clone());
                let disk = self
                    .compute
                    .restore_disk(
                        copy,
                        &site.resource_group,
                        &format!("{base}{suffix}"),
                        des.as_deref(),
                        now,
                    )
                    .await?;
                made.push(disk.id.clone());
                match lun {
                    None => os = Some(disk.name),
                    Some(_) => data.push(disk.name),
                }
            }
            let req = VmRequest {
                location: Some(site.location.clone()),
                os_disk: os,
                disks: Some(data),
                ..Default::default()
            };
            let (vm, _) = self
                .compute
                .put_vm(&site.resource_group, vm_name, &req, now)
                .await?;
            self.compute
                .start_vm(&site.resource_group, vm_name, now, None)
                .await?;
            Ok(Recovered {
                vm: vm.id,
                disks: made.clone(),
                point: point.name.clone(),
                time: now,
            })
        }
        .await;
        if result.is_err() {
            for id in &made {
                if let Some((rg, disk)) = rg_and_name(id, "disks") {
                    let _ = self.compute.delete_disk(rg, disk).await;
                }
            }
        }
        result
    }

    /// Deletes a machine a (test) failover made, and its disks.
    async fn remove_recovered(&self, made: &Recovered) -> Result<(), BackupError> {
        if let Some((rg, vm)) = rg_and_name(&made.vm, "virtualMachines") {
            if self.compute.get_vm(rg, vm).is_ok() {
                self.compute.stop_vm(rg, vm).await?;
                self.compute.delete_vm(rg, vm).await?;
            }
        }
        for id in &made.disks {
            if let Some((rg, disk)) = rg_and_name(id, "disks") {
                self.compute.delete_disk(rg, disk).await?;
            }
        }
        Ok(())
    }

    fn check_direction(item: &ReplicatedItem, req: &FailoverRequest) -> Result<(), BackupError> {
        match &req.direction {
            Some(d) if !d.eq_ignore_ascii_case(item.direction()) => Err(invalid(
                "InvalidParameter",
                format!(
                    "failoverDirection '{d}' is not where '{}' replicates now: {}.",
                    item.name,
                    item.direction()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Test failover: a machine `{vm}-test` in the recovery site from a recovery point,
    /// replication going on, until [`Self::test_failover_cleanup`].
    pub async fn test_failover(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        req: &FailoverRequest,
        now: i64,
    ) -> Result<ReplicatedItem, BackupError> {
        let _one = self.replication.lock().await;
        let mut item = self.get_replicated(at, name)?;
        Self::check_direction(&item, req)?;
        if item.state != PROTECTED || item.test_failover.is_some() {
            return Err(conflict(
                "TestFailoverNotAllowed",
                format!(
                    "'{name}' allows {} now, not a test failover.",
                    item.allowed_operations().join(", ")
                ),
            ));
        }
        let point = Self::point_of(&item, req.recovery_point.as_deref())?.clone();
        let vm_name = format!("{}-test", item.recovery.vm_name);
        let made = self
            .recover(
                &item,
                &point,
                &vm_name,
                &format!("{FAILOVER_SUFFIX}-test"),
                now,
            )
            .await?;
        item.test_failover = Some(made);
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    /// Ends a test failover: deletes its machine and disks.
    pub async fn test_failover_cleanup(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        now: i64,
    ) -> Result<ReplicatedItem, BackupError> {
        let _one = self.replication.lock().await;
        let mut item = self.get_replicated(at, name)?;
        let Some(made) = item.test_failover.clone() else {
            return Err(conflict(
                "NoTestFailoverToCleanUp",
                format!("'{name}' has no test failover to clean up."),
            ));
        };
        self.remove_recovered(&made).await?;
        item.test_failover = None;
        item.last_test_failover = Some(now);
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    /// Failover: the machine recovered in the recovery site from a recovery point
    /// (default the newest), optionally after shutting the source down; replication stops.
    pub async fn failover(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        req: &FailoverRequest,
        now: i64,
    ) -> Result<ReplicatedItem, BackupError> {
        let _one = self.replication.lock().await;
        let mut item = self.get_replicated(at, name)?;
        Self::check_direction(&item, req)?;
        if item.state != PROTECTED {
            return Err(conflict(
                "FailoverNotAllowed",
                format!(
                    "'{name}' allows {} now, not a failover.",
                    item.allowed_operations().join(", ")
                ),
            ));
        }
        let point = Self::point_of(&item, req.recovery_point.as_deref())?.clone();
        if req.shut_down_source {
            let site = &item.primary;
            if self
                .compute
                .get_vm(&site.resource_group, &site.vm_name)?
                .running
            {
                self.compute
                    .stop_vm(&site.resource_group, &site.vm_name)
                    .await?;
            }
        }
        let vm_name = item.recovery.vm_name.clone();
        let made = self
            .recover(&item, &point, &vm_name, FAILOVER_SUFFIX, now)
            .await?;
        item.failover = Some(made);
        item.state = FAILED_OVER.to_owned();
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    /// Commits a failover: the recovery points, cuts and replicas are deleted.
    pub async fn commit_failover(
        &self,
        at: ContainerRef<'_>,
        name: &str,
    ) -> Result<ReplicatedItem, BackupError> {
        let _one = self.replication.lock().await;
        let mut item = self.get_replicated(at, name)?;
        if item.state != FAILED_OVER {
            return Err(conflict(
                "CommitNotAllowed",
                format!("'{name}' has no failover to commit."),
            ));
        }
        self.drop_generation(at.resource_group, &item).await?;
        item.points.clear();
        item.pending = None;
        for d in &mut item.disks {
            d.cut = None;
        }
        item.state = COMMITTED.to_owned();
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    /// Re-protect: replicates the failed-over machine back to the region it came from,
    /// each disk under the disk encryption set its original had.
    pub async fn reprotect(
        &self,
        at: ContainerRef<'_>,
        name: &str,
        now: i64,
    ) -> Result<ReplicatedItem, BackupError> {
        let _one = self.replication.lock().await;
        let mut item = self.get_replicated(at, name)?;
        let Some(made) = item.failover.clone().filter(|_| item.state == COMMITTED) else {
            return Err(conflict(
                "ReprotectNotAllowed",
                format!("'{name}' can be re-protected once its failover is committed."),
            ));
        };
        let (vm_rg, vm_name) = rg_and_name(&made.vm, "virtualMachines")
            .map(|(g, n)| (g.to_owned(), n.to_owned()))
            .unwrap_or_default();
        let vm = self.compute.get_vm(&vm_rg, &vm_name)?;
        let mut targets = BTreeMap::new();
        for d in &item.disks {
            targets.insert(
                d.lun,
                ReplicaTarget {
                    disk_encryption_set: d.primary_des.clone(),
                    ade: d.primary_ade.clone(),
                },
            );
        }
        let generation = item.generation + 1;
        let prefix = hidden_prefix(&item.vault, &item.name, generation);
        let (old_primary, old_recovery) = (item.primary.clone(), item.recovery.clone());
        let replicas = self
            .compute
            .create_replicas(
                &vm_rg,
                &vm_name,
                (&old_primary.resource_group, &old_primary.location),
                &format!("{prefix}-replica"),
                &targets,
                now,
            )
            .await?;
        let attached: Vec<(Option<u32>, String)> =
            vm.attached().map(|(lun, d)| (lun, d.clone())).collect();
        let mut disks = Vec::new();
        for r in replicas {
            let old = item.disks.iter().find(|d| d.lun == r.lun);
            let disk = attached
                .iter()
                .find(|(lun, _)| *lun == r.lun)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            disks.push(ReplicatedDisk {
                lun: r.lun,
                size_bytes: r.copy.size_bytes(),
                disk,
                primary_des: old.and_then(|d| d.recovery_des.clone()),
                recovery_des: r.copy.disk_encryption_set.clone(),
                primary_ade: old.and_then(|d| d.recovery_ade.clone()),
                recovery_ade: r.copy.ade.clone(),
                replica: r.copy.id.clone(),
                cut: None,
            });
        }
        item.primary = Site {
            fabric: old_recovery.fabric,
            container: old_recovery.container,
            location: vm.location.clone(),
            resource_group: vm_rg,
            vm_name,
        };
        item.recovery = old_primary;
        item.generation = generation;
        item.disks = disks;
        item.reversed = !item.reversed;
        item.state = PROTECTED.to_owned();
        item.failover = None;
        item.last_cycle = None;
        item.last_error = None;
        self.save_item(at.resource_group, &item)?;
        Ok(item)
    }

    // ---- cycles ----

    /// Runs the cycles due at `now` (the scheduler's clock): each protected item's first
    /// cycle at once, later ones every `crashConsistentFrequencyInMinutes`, an interrupted
    /// one first. Expired recovery points are deleted.
    pub async fn run_replication(&self, now: i64) -> Result<Vec<ReplicationRun>, BackupError> {
        let mut runs = Vec::new();
        for vault in self.list_vaults(None)? {
            let rg = vault.resource_group.clone();
            for item in self.list_replicated(&rg, &vault.name)? {
                if item.state != PROTECTED {
                    continue;
                }
                let policy = self.get_replication_policy(&rg, &vault.name, &item.policy)?;
                let due = item.pending.is_some()
                    || item
                        .last_cycle
                        .is_none_or(|t| now - t >= i64::from(policy.crash_minutes) * 60);
                if !due {
                    continue;
                }
                let outcome = self.cycle(&rg, &item, &policy, now).await;
                let at = ContainerRef {
                    resource_group: &rg,
                    vault: &item.vault,
                    fabric: &item.fabric,
                    container: &item.container,
                };
                if let Err(e) = &outcome {
                    if let Ok(mut stored) = self.get_replicated(at, &item.name) {
                        stored.last_cycle = Some(now);
                        stored.last_error = Some(e.to_string());
                        self.save_item(&rg, &stored)?;
                    }
                }
                runs.push(ReplicationRun {
                    vault_id: vault.id.clone(),
                    item_id: self.replicated_item_id(&rg, &item),
                    outcome: outcome.map_err(|e| e.to_string()),
                });
            }
        }
        Ok(runs)
    }

    /// One cycle of `item`: sweep what a crash left, record a new cut (or take up the
    /// pending one), ship, record the point, delete the old cut and expired points.
    async fn cycle(
        &self,
        resource_group: &str,
        item: &ReplicatedItem,
        policy: &ReplicationPolicy,
        now: i64,
    ) -> Result<u64, BackupError> {
        let _one = self.replication.lock().await;
        let at = ContainerRef {
            resource_group,
            vault: &item.vault,
            fabric: &item.fabric,
            container: &item.container,
        };
        // The item may have changed (failed over, disabled) while this waited.
        let mut item = self.get_replicated(at, &item.name)?;
        if item.state != PROTECTED {
            return Ok(0);
        }
        self.sweep(resource_group, &item).await?;
        let pending = match item.pending.clone() {
            Some(p) => p,
            None => {
                let seq = item.seq + 1;
                let cut = self
                    .compute
                    .take_recovery_point(
                        &item.primary.resource_group,
                        &item.primary.vm_name,
                        &format!("{}-cut{seq}", item.prefix()),
                        resource_group,
                        now,
                    )
                    .await?;
                let pending = PendingCycle {
                    seq,
                    time: now,
                    cuts: cut.iter().map(|c| (c.lun, c.copy.id.clone())).collect(),
                };
                item.pending = Some(pending.clone());
                self.save_item(resource_group, &item)?;
                pending
            }
        };
        let mut pairs = Vec::new();
        for d in &item.disks {
            let cut = pending
                .cuts
                .iter()
                .find(|(lun, _)| *lun == d.lun)
                .map(|(_, id)| id.clone())
                .ok_or_else(|| {
                    invalid(
                        "InvalidParameter",
                        format!(
                            "Replicated disk '{}' is no longer attached to '{}'.",
                            d.disk, item.primary.vm_name
                        ),
                    )
                })?;
            pairs.push(ReplicaPair {
                lun: d.lun,
                replica: d.replica.clone(),
                previous_cut: d.cut.clone(),
                cut,
            });
        }
        let point_name = format!("{}-rp{}", item.prefix(), pending.seq);
        let (copies, shipped) = self.compute.replicate(&pairs, &point_name, now).await?;
        let mut retired: Vec<String> = item.disks.iter().filter_map(|d| d.cut.clone()).collect();
        // Cuts of disks no longer replicated are not kept either.
        retired.extend(
            pending
                .cuts
                .iter()
                .filter(|(lun, _)| !item.disks.iter().any(|d| d.lun == *lun))
                .map(|(_, id)| id.clone()),
        );
        for d in &mut item.disks {
            d.cut = pairs.iter().find(|p| p.lun == d.lun).map(|p| p.cut.clone());
        }
        item.points.push(ReplicaPoint {
            name: point_name,
            time: pending.time,
            disks: copies.iter().map(|c| (c.lun, c.copy.id.clone())).collect(),
        });
        let oldest = now - i64::from(policy.history_minutes) * 60;
        // The newest point stays whatever its age.
        let newest = item.points.len() - 1;
        let mut expired = Vec::new();
        for (i, p) in std::mem::take(&mut item.points).into_iter().enumerate() {
            if i == newest || p.time >= oldest {
                item.points.push(p);
            } else {
                expired.extend(p.disks.into_iter().map(|(_, id)| id));
            }
        }
        retired.extend(expired);
        item.seq = pending.seq;
        item.pending = None;
        item.last_cycle = Some(now);
        item.last_error = None;
        item.shipped_bytes += shipped;
        self.save_item(resource_group, &item)?;
        self.compute.delete_recovery_disks(&retired).await?;
        Ok(shipped)
    }

    /// Deletes the item's hidden disks that no record names: left by a crash between
    /// making them and recording them.
    async fn sweep(&self, resource_group: &str, item: &ReplicatedItem) -> Result<(), BackupError> {
        let mut named: Vec<&str> = Vec::new();
        for d in &item.disks {
            named.push(&d.replica);
            if let Some(cut) = &d.cut {
                named.push(cut);
            }
        }
        for p in &item.points {
            named.extend(p.disks.iter().map(|(_, id)| id.as_str()));
        }
        if let Some(p) = &item.pending {
            named.extend(p.cuts.iter().map(|(_, id)| id.as_str()));
        }
        let prefix = item.prefix();
        let mut orphans = Vec::new();
        for rg in [resource_group, &item.recovery.resource_group] {
            for d in self.compute.recovery_disks_named(rg, &prefix)? {
                if !named.iter().any(|n| n.eq_ignore_ascii_case(&d.id)) {
                    orphans.push(d.id);
                }
            }
        }
        self.compute.delete_recovery_disks(&orphans).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_parse() {
        assert_eq!(
            container_of("/subscriptions/s/resourceGroups/g/providers/Microsoft.RecoveryServices/vaults/v/replicationFabrics/f1/replicationProtectionContainers/c1"),
            Some(("f1".to_owned(), "c1".to_owned()))
        );
        assert_eq!(container_of("/subscriptions/s/replicationFabrics/f1"), None);
        assert_eq!(
            rg_and_name(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm1",
                "virtualMachines"
            ),
            Some(("g", "vm1"))
        );
    }

    #[test]
    fn the_active_location_follows_failover_and_reprotect() {
        let site = Site {
            fabric: "f".into(),
            container: "c".into(),
            location: "westus".into(),
            resource_group: "g".into(),
            vm_name: "vm".into(),
        };
        let mut item = ReplicatedItem {
            vault: "v".into(),
            fabric: "f".into(),
            container: "c".into(),
            name: "i".into(),
            policy: "p".into(),
            primary: site.clone(),
            recovery: site,
            reversed: false,
            state: PROTECTED.into(),
            disks: Vec::new(),
            points: Vec::new(),
            pending: None,
            seq: 0,
            generation: 0,
            last_cycle: None,
            last_error: None,
            shipped_bytes: 0,
            test_failover: None,
            last_test_failover: None,
            failover: None,
            created: 0,
        };
        assert_eq!(
            (item.active_location(), item.direction()),
            ("Primary", "PrimaryToRecovery")
        );
        item.state = FAILED_OVER.into();
        assert_eq!(item.active_location(), "Recovery");
        assert_eq!(
            item.allowed_operations(),
            vec!["Commit", "DisableProtection"]
        );
        item.state = PROTECTED.into();
        item.reversed = true;
        assert_eq!(
            (item.active_location(), item.direction()),
            ("Recovery", "RecoveryToPrimary")
        );
        item.state = FAILED_OVER.into();
        assert_eq!(item.active_location(), "Primary");
    }
}
