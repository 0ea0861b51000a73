//! Site Recovery routes of `Microsoft.RecoveryServices` vaults (Azure to Azure), in the
//! shapes of api-version 2025-08-01 that `azure-mgmt-recoveryservicessiterecovery` reads:
//! replication fabrics, protection containers, replication policies, container mappings,
//! replicated items with their recovery points, and the failover actions. Work runs at
//! once: creates and actions answer 200 with the result (the client's pollers accept it),
//! deletes 204.

use atrest_backup::{
    ContainerMapping, ContainerRef, DiskInput, EnableReplication, Fabric, FailoverRequest,
    ProtectionContainer, ReplicatedItem, ReplicationPolicy, ReplicationPolicyRequest, TargetKeys,
};
use atrest_core::operation::Operation;
use atrest_identity::Caller;
use atrest_runtime::time::rfc3339;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::arm::authorization;
use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{empty, json, seg, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// An action on a replicated item (`POST …/replicationProtectedItems/{i}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemAction {
    TestFailover,
    TestFailoverCleanup,
    UnplannedFailover,
    FailoverCommit,
    Reprotect,
}

impl ItemAction {
    fn parse(segment: &str) -> Option<Self> {
        use ItemAction::*;
        [
            ("testFailover", TestFailover),
            ("testFailoverCleanup", TestFailoverCleanup),
            ("unplannedFailover", UnplannedFailover),
            ("failoverCommit", FailoverCommit),
            ("reProtect", Reprotect),
        ]
        .into_iter()
        .find(|(name, _)| seg(segment, name))
        .map(|(_, a)| a)
    }

    /// The RBAC action's last segment.
    fn action(self) -> &'static str {
        match self {
            ItemAction::TestFailover => "testFailover/action",
            ItemAction::TestFailoverCleanup => "testFailoverCleanup/action",
            ItemAction::UnplannedFailover => "unplannedFailover/action",
            ItemAction::FailoverCommit => "failoverCommit/action",
            ItemAction::Reprotect => "reProtect/action",
        }
    }
}

/// A container's address: fabric and container names.
type At<'a> = (&'a str, &'a str);

/// What a route addresses below a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Fabrics,
    Fabric(&'a str),
    /// Containers of one fabric, or of the vault.
    Containers(Option<&'a str>),
    Container(At<'a>),
    Policies,
    Policy(&'a str),
    /// Mappings of one container, or of the vault.
    Mappings(Option<At<'a>>),
    Mapping(At<'a>, &'a str),
    /// Replicated items of one container, or of the vault.
    Items(Option<At<'a>>),
    Item(At<'a>, &'a str),
    Action(At<'a>, &'a str, ItemAction),
    /// `POST …/remove` or `DELETE`: disable replication.
    Disable(At<'a>, &'a str),
    Points(At<'a>, &'a str),
    Point(At<'a>, &'a str, &'a str),
}

/// A Site Recovery route.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    resource_group: &'a str,
    vault: &'a str,
    target: Target<'a>,
    method: Method,
}

/// `remove` posted, or a DELETE: both delete.
fn removes(method: &str, below: &[&str]) -> bool {
    match (method, below) {
        ("DELETE", []) => true,
        ("POST", [r]) => seg(r, "remove"),
        _ => false,
    }
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments` after `subscriptions/{s}/`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        let [rg_kw, rg, prov_kw, p, vaults, vault, rest @ ..] = segments else {
            return None;
        };
        if !(seg(rg_kw, "resourceGroups")
            && seg(prov_kw, "providers")
            && seg(p, "Microsoft.RecoveryServices")
            && seg(vaults, "vaults"))
        {
            return None;
        }
        let m = method.as_str();
        let get = m == "GET";
        let target = match rest {
            [f] if seg(f, "replicationFabrics") && get => Target::Fabrics,
            [c] if seg(c, "replicationProtectionContainers") && get => Target::Containers(None),
            [c] if seg(c, "replicationProtectionContainerMappings") && get => {
                Target::Mappings(None)
            }
            [i] if seg(i, "replicationProtectedItems") && get => Target::Items(None),
            [p] if seg(p, "replicationPolicies") && get => Target::Policies,
            [p, policy]
                if seg(p, "replicationPolicies") && matches!(m, "PUT" | "GET" | "DELETE") =>
            {
                Target::Policy(policy)
            }
            [f, fabric, below @ ..] if seg(f, "replicationFabrics") => {
                Self::below_fabric(m, fabric, below)?
            }
            _ => return None,
        };
        Some(Route {
            resource_group: rg,
            vault,
            target,
            method: method.clone(),
        })
    }

    fn below_fabric(m: &str, fabric: &'a str, below: &[&'a str]) -> Option<Target<'a>> {
        let get = m == "GET";
        Some(match below {
            [] if matches!(m, "PUT" | "GET" | "DELETE") => Target::Fabric(fabric),
            [r] if m == "POST" && seg(r, "remove") => Target::Fabric(fabric),
            [c] if seg(c, "replicationProtectionContainers") && get => {
                Target::Containers(Some(fabric))
            }
            [c, container, rest @ ..] if seg(c, "replicationProtectionContainers") => {
                let at = (fabric, *container);
                match rest {
                    [] if matches!(m, "PUT" | "GET") => Target::Container(at),
                    r if removes(m, r) => Target::Container(at),
                    [k] if seg(k, "replicationProtectionContainerMappings") && get => {
                        Target::Mappings(Some(at))
                    }
                    [k, mapping, r @ ..] if seg(k, "replicationProtectionContainerMappings") => {
                        match r {
                            [] if matches!(m, "PUT" | "GET") => Target::Mapping(at, mapping),
                            r if removes(m, r) => Target::Mapping(at, mapping),
                            _ => return None,
                        }
                    }
                    [k] if seg(k, "replicationProtectedItems") && get => Target::Items(Some(at)),
                    [k, item, r @ ..] if seg(k, "replicationProtectedItems") => match (m, r) {
                        ("PUT" | "GET", []) => Target::Item(at, item),
                        ("DELETE", []) => Target::Disable(at, item),
                        ("POST", [r]) if seg(r, "remove") => Target::Disable(at, item),
                        ("POST", [a]) => Target::Action(at, item, ItemAction::parse(a)?),
                        ("GET", [p]) if seg(p, "recoveryPoints") => Target::Points(at, item),
                        ("GET", [p, point]) if seg(p, "recoveryPoints") => {
                            Target::Point(at, item, point)
                        }
                        _ => return None,
                    },
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn writes(&self) -> bool {
        self.method == Method::PUT
    }

    fn deletes(&self) -> bool {
        matches!(self.method.as_str(), "DELETE" | "POST")
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        use Operation::*;
        match self.target {
            Target::Item(..) if self.writes() => ReplicationEnable,
            Target::Items(_) | Target::Item(..) | Target::Points(..) | Target::Point(..) => {
                ReplicationRead
            }
            Target::Disable(..) => ReplicationDisable,
            Target::Action(_, _, action) => match action {
                ItemAction::TestFailover => ReplicationTestFailover,
                ItemAction::TestFailoverCleanup => ReplicationTestFailoverCleanup,
                ItemAction::UnplannedFailover => ReplicationFailover,
                ItemAction::FailoverCommit => ReplicationFailoverCommit,
                ItemAction::Reprotect => ReplicationReprotect,
            },
            _ if self.writes() => SiteRecoveryWrite,
            _ if self.deletes() => SiteRecoveryDelete,
            _ => SiteRecoveryRead,
        }
    }

    /// The RBAC action the route needs.
    fn action(&self) -> String {
        const V: &str = "Microsoft.RecoveryServices/vaults";
        const C: &str =
            "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers";
        let verb = if self.writes() {
            "write"
        } else if self.method == Method::DELETE {
            "delete"
        } else if self.method == Method::POST {
            "remove/action"
        } else {
            "read"
        };
        match self.target {
            Target::Fabrics | Target::Fabric(_) => format!("{V}/replicationFabrics/{verb}"),
            Target::Containers(_) | Target::Container(_) => format!("{C}/{verb}"),
            Target::Policies | Target::Policy(_) => {
                let verb = if verb == "remove/action" {
                    "delete"
                } else {
                    verb
                };
                format!("{V}/replicationPolicies/{verb}")
            }
            Target::Mappings(_) | Target::Mapping(..) => {
                format!("{C}/replicationProtectionContainerMappings/{verb}")
            }
            Target::Items(_) | Target::Item(..) | Target::Disable(..) => {
                format!("{C}/replicationProtectedItems/{verb}")
            }
            Target::Action(_, _, action) => {
                format!("{C}/replicationProtectedItems/{}", action.action())
            }
            Target::Points(..) | Target::Point(..) => {
                format!("{C}/replicationProtectedItems/recoveryPoints/read")
            }
        }
    }
}

// ---- request bodies ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CustomDetailsDto {
    instance_type: Option<String>,
    location: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FabricPropertiesDto {
    custom_details: Option<CustomDetailsDto>,
}

#[derive(Deserialize, Default)]
struct FabricDto {
    properties: Option<FabricPropertiesDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProviderInputDto {
    instance_type: Option<String>,
    recovery_point_history: Option<u32>,
    crash_consistent_frequency_in_minutes: Option<u32>,
    app_consistent_frequency_in_minutes: Option<u32>,
    multi_vm_sync_status: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PolicyPropertiesDto {
    provider_specific_input: Option<ProviderInputDto>,
}

#[derive(Deserialize, Default)]
struct PolicyDto {
    properties: Option<PolicyPropertiesDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MappingPropertiesDto {
    target_protection_container_id: Option<String>,
    policy_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct MappingDto {
    properties: Option<MappingPropertiesDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SecretInfoDto {
    secret_identifier: Option<String>,
    key_vault_resource_arm_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KekInfoDto {
    key_identifier: Option<String>,
    key_vault_resource_arm_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EncryptionInfoDto {
    disk_encryption_key_info: Option<SecretInfoDto>,
    key_encryption_key_info: Option<KekInfoDto>,
}

impl EncryptionInfoDto {
    fn into_keys(self) -> TargetKeys {
        let secret = self.disk_encryption_key_info.unwrap_or_default();
        let kek = self.key_encryption_key_info.unwrap_or_default();
        TargetKeys {
            secret_url: secret.secret_identifier,
            secret_vault: secret.key_vault_resource_arm_id,
            kek_url: kek.key_identifier,
            kek_vault: kek.key_vault_resource_arm_id,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ManagedDiskDto {
    disk_id: Option<String>,
    recovery_disk_encryption_set_id: Option<String>,
    disk_encryption_info: Option<EncryptionInfoDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnableInputDto {
    instance_type: Option<String>,
    fabric_object_id: Option<String>,
    recovery_container_id: Option<String>,
    recovery_resource_group_id: Option<String>,
    vm_managed_disks: Option<Vec<ManagedDiskDto>>,
    disk_encryption_info: Option<EncryptionInfoDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnablePropertiesDto {
    policy_id: Option<String>,
    protectable_item_id: Option<String>,
    provider_specific_details: Option<EnableInputDto>,
}

#[derive(Deserialize, Default)]
struct EnableDto {
    properties: Option<EnablePropertiesDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FailoverProviderDto {
    instance_type: Option<String>,
    recovery_point_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FailoverPropertiesDto {
    failover_direction: Option<String>,
    source_site_operations: Option<String>,
    provider_specific_details: Option<FailoverProviderDto>,
}

#[derive(Deserialize, Default)]
struct FailoverDto {
    properties: Option<FailoverPropertiesDto>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidParameter", message)
}

/// A provider-specific input must be A2A (Azure to Azure) when it names its type.
fn require_a2a(instance_type: Option<&str>, what: &str) -> Result<(), ApiError> {
    match instance_type {
        Some(t) if !t.eq_ignore_ascii_case("A2A") => Err(bad(format!(
            "{what}.instanceType '{t}' is not supported: atrest replicates Azure VMs to Azure (A2A)."
        ))),
        _ => Ok(()),
    }
}

async fn optional_body<T: for<'de> Deserialize<'de> + Default>(body: Body) -> Result<T, ApiError> {
    match read_body(body).await? {
        b if b.is_empty() => Ok(T::default()),
        b => parse_json(&b),
    }
}

// ---- response shapes ----

fn fabric_json(
    state: &AppState,
    rg: &str,
    f: &Fabric,
    containers: &[ProtectionContainer],
) -> Value {
    let id = state.backup.fabric_id(rg, &f.vault, &f.name);
    let container_ids: Vec<String> = containers
        .iter()
        .map(|c| format!("{id}/replicationProtectionContainers/{}", c.name))
        .collect();
    json!({
        "id": id,
        "name": f.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics",
        "location": f.location,
        "properties": {
            "friendlyName": f.name,
            "internalIdentifier": f.name,
            "bcdrState": "Valid",
            "health": "Normal",
            "healthErrorDetails": [],
            "customDetails": { "instanceType": "Azure", "location": f.location, "containerIds": container_ids },
        },
    })
}

fn container_json(
    state: &AppState,
    rg: &str,
    c: &ProtectionContainer,
    location: &str,
    mappings: &[ContainerMapping],
    items: &[ReplicatedItem],
) -> Value {
    let at = ContainerRef {
        resource_group: rg,
        vault: &c.vault,
        fabric: &c.fabric,
        container: &c.name,
    };
    let mine =
        |f: &str, n: &str| f.eq_ignore_ascii_case(&c.fabric) && n.eq_ignore_ascii_case(&c.name);
    let source = mappings.iter().any(|m| mine(&m.fabric, &m.container));
    let target = mappings
        .iter()
        .any(|m| mine(&m.target_fabric, &m.target_container));
    let role = match (source, target) {
        (true, _) => "Primary",
        (false, true) => "Recovery",
        _ => "",
    };
    json!({
        "id": state.backup.container_id(at),
        "name": c.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers",
        "location": location,
        "properties": {
            "fabricFriendlyName": c.fabric,
            "friendlyName": c.name,
            "fabricType": "Azure",
            "protectedItemCount": items.iter().filter(|i| mine(&i.fabric, &i.container)).count(),
            "pairingStatus": if source || target { "Paired" } else { "NotPaired" },
            "role": role,
        },
    })
}

fn policy_json(state: &AppState, rg: &str, p: &ReplicationPolicy) -> Value {
    json!({
        "id": state.backup.replication_policy_id(rg, &p.vault, &p.name),
        "name": p.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationPolicies",
        "properties": {
            "friendlyName": p.name,
            "providerSpecificDetails": {
                "instanceType": "A2A",
                "recoveryPointHistory": p.history_minutes,
                "recoveryPointThresholdInMinutes": 0,
                "crashConsistentFrequencyInMinutes": p.crash_minutes,
                "appConsistentFrequencyInMinutes": p.app_minutes,
                "multiVmSyncStatus": if p.multi_vm_sync { "Enabled" } else { "Disabled" },
            },
        },
    })
}

fn mapping_json(state: &AppState, rg: &str, m: &ContainerMapping) -> Value {
    let source = ContainerRef {
        resource_group: rg,
        vault: &m.vault,
        fabric: &m.fabric,
        container: &m.container,
    };
    let target = ContainerRef {
        fabric: &m.target_fabric,
        container: &m.target_container,
        ..source
    };
    json!({
        "id": format!("{}/replicationProtectionContainerMappings/{}", state.backup.container_id(source), m.name),
        "name": m.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectionContainerMappings",
        "properties": {
            "targetProtectionContainerId": state.backup.container_id(target),
            "targetProtectionContainerFriendlyName": m.target_container,
            "providerSpecificDetails": { "instanceType": "A2A", "agentAutoUpdateStatus": "Disabled" },
            "health": "Normal",
            "healthErrorDetails": [],
            "policyId": state.backup.replication_policy_id(rg, &m.vault, &m.policy),
            "policyFriendlyName": m.policy,
            "state": "Paired",
            "sourceProtectionContainerFriendlyName": m.container,
            "sourceFabricFriendlyName": m.fabric,
            "targetFabricFriendlyName": m.target_fabric,
        },
    })
}

fn item_json(state: &AppState, rg: &str, i: &ReplicatedItem, now: i64) -> Value {
    let sub = &state.settings.subscription;
    let rg_id = |g: &str| format!("/subscriptions/{sub}/resourceGroups/{g}");
    let vm_id = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{}",
        rg_id(&i.primary.resource_group),
        i.primary.vm_name
    );
    let replicated = !i.points.is_empty();
    let disk_state = if replicated {
        "Protected"
    } else {
        "InitialReplicationPending"
    };
    let disks: Vec<Value> = i
        .disks
        .iter()
        .map(|d| {
            let base = d.disk.trim_end_matches("-ASRReplica");
            let failover_disk = i.failover.as_ref().and_then(|f| {
                f.disks
                    .iter()
                    .find(|id| id.to_ascii_lowercase().ends_with(&format!("/{base}-asrreplica")))
            });
            json!({
                "diskId": format!("{}/providers/Microsoft.Compute/disks/{}", rg_id(&i.primary.resource_group), d.disk),
                "diskName": d.disk,
                "diskCapacityInBytes": d.size_bytes,
                "diskType": "Standard_LRS",
                "recoveryResourceGroupId": rg_id(&i.recovery.resource_group),
                "recoveryReplicaDiskId": d.replica,
                "recoveryTargetDiskId": failover_disk,
                "recoveryReplicaDiskAccountType": "Standard_LRS",
                "recoveryTargetDiskAccountType": "Standard_LRS",
                "recoveryDiskEncryptionSetId": d.recovery_des,
                "primaryDiskEncryptionSetId": d.primary_des,
                "primaryStagingAzureStorageAccountId": Value::Null,
                "resyncRequired": false,
                "monitoringPercentageCompletion": if replicated { 100 } else { 0 },
                "monitoringJobType": if replicated { Value::Null } else { Value::from("InitialReplication") },
                "dataPendingInStagingStorageAccountInMB": 0.0,
                "dataPendingAtSourceAgentInMB": 0.0,
                "diskState": disk_state,
                "allowedDiskLevelOperation": [],
                "isDiskEncrypted": d.recovery_ade.is_some(),
                "secretIdentifier": d.recovery_ade.as_ref().map(|a| &a.secret_url),
                "dekKeyVaultArmId": d.recovery_ade.as_ref().map(|a| &a.secret_vault),
                "isDiskKeyEncrypted": d.recovery_ade.as_ref().is_some_and(|a| a.kek_url.is_some()),
                "keyIdentifier": d.recovery_ade.as_ref().and_then(|a| a.kek_url.as_ref()),
                "kekKeyVaultArmId": d.recovery_ade.as_ref().and_then(|a| a.kek_vault.as_ref()),
                "failoverDiskName": format!("{base}-ASRReplica"),
                "tfoDiskName": format!("{base}-ASRReplica-test"),
            })
        })
        .collect();
    let health_errors: Vec<Value> = i
        .last_error
        .iter()
        .map(|e| {
            json!({
                "errorCode": "ReplicationCycleFailed",
                "errorMessage": e,
                "errorSeverity": "Error",
                "errorSource": "Replication",
                "creationTimeUtc": i.last_cycle.map(rfc3339),
                "recommendedAction": "Correct the cause; the next cycle retries.",
            })
        })
        .collect();
    let recovery_container = ContainerRef {
        resource_group: rg,
        vault: &i.vault,
        fabric: &i.recovery.fabric,
        container: &i.recovery.container,
    };
    let encrypted = i.disks.iter().any(|d| d.recovery_ade.is_some());
    let details = json!({
        "instanceType": "A2A",
        "fabricObjectId": vm_id,
        "primaryFabricLocation": i.primary.location,
        "recoveryFabricLocation": i.recovery.location,
        "initialPrimaryFabricLocation": if i.reversed { &i.recovery.location } else { &i.primary.location },
        "initialRecoveryFabricLocation": if i.reversed { &i.primary.location } else { &i.recovery.location },
        "osType": "Linux",
        "recoveryAzureVMName": i.recovery.vm_name,
        "tfoAzureVMName": format!("{}-test", i.recovery.vm_name),
        "recoveryAzureResourceGroupId": rg_id(&i.recovery.resource_group),
        "protectedManagedDisks": disks,
        "vmProtectionState": if replicated { "Protected" } else { "InitialReplicationPending" },
        "vmProtectionStateDescription": if replicated { "Protected" } else { "Initial replication pending" },
        "monitoringPercentageCompletion": if replicated { 100 } else { 0 },
        "lastHeartbeat": i.last_cycle.map(rfc3339),
        "rpoInSeconds": i.rpo_seconds(now),
        "lastRpoCalculatedTime": rfc3339(now),
        "vmEncryptionType": if encrypted { "OnePassEncrypted" } else { "NotEncrypted" },
        "multiVmGroupCreateOption": "AutoCreated",
    });
    json!({
        "id": state.backup.replicated_item_id(rg, i),
        "name": i.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems",
        "location": i.primary.location,
        "properties": {
            "friendlyName": i.primary.vm_name,
            "protectedItemType": "A2A",
            "protectableItemId": Value::Null,
            "primaryFabricFriendlyName": i.primary.fabric,
            "primaryFabricProvider": "Azure",
            "recoveryFabricFriendlyName": i.recovery.fabric,
            "recoveryFabricId": state.backup.fabric_id(rg, &i.vault, &i.recovery.fabric),
            "primaryProtectionContainerFriendlyName": i.primary.container,
            "recoveryProtectionContainerFriendlyName": i.recovery.container,
            "recoveryContainerId": state.backup.container_id(recovery_container),
            "protectionState": i.state,
            "protectionStateDescription": i.state,
            "activeLocation": i.active_location(),
            "testFailoverState": if i.test_failover.is_some() { "WaitingForCompletion" } else { "None" },
            "testFailoverStateDescription": if i.test_failover.is_some() { "Waiting for completion" } else { "None" },
            "allowedOperations": i.allowed_operations(),
            "replicationHealth": if i.last_error.is_some() { "Critical" } else { "Normal" },
            "failoverHealth": "Normal",
            "healthErrors": health_errors,
            "policyId": state.backup.replication_policy_id(rg, &i.vault, &i.policy),
            "policyFriendlyName": i.policy,
            "lastSuccessfulFailoverTime": i.failover.as_ref().map(|f| rfc3339(f.time)),
            "lastSuccessfulTestFailoverTime": i.last_test_failover.map(rfc3339),
            "failoverRecoveryPointId": i.failover.as_ref().map(|f| format!("{}/recoveryPoints/{}", state.backup.replicated_item_id(rg, i), f.point)),
            "providerSpecificDetails": details,
        },
    })
}

fn point_json(
    state: &AppState,
    rg: &str,
    i: &ReplicatedItem,
    p: &atrest_backup::ReplicaPoint,
) -> Value {
    let disks: Vec<&str> = p.disks.iter().map(|(_, id)| id.as_str()).collect();
    json!({
        "id": format!("{}/recoveryPoints/{}", state.backup.replicated_item_id(rg, i), p.name),
        "name": p.name,
        "type": "Microsoft.RecoveryServices/vaults/replicationFabrics/replicationProtectionContainers/replicationProtectedItems/recoveryPoints",
        "location": i.recovery.location,
        "properties": {
            "recoveryPointTime": rfc3339(p.time),
            "recoveryPointType": "CrashConsistent",
            "providerSpecificDetails": {
                "instanceType": "A2A",
                "recoveryPointSyncType": "PerVmRecoveryPoint",
                "disks": disks,
            },
        },
    })
}

fn value_of(items: Vec<Value>) -> Resp {
    json(StatusCode::OK, &json!({ "value": items }))
}

/// Serves one Site Recovery route of an authenticated caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    route: Route<'_>,
    body: Body,
) -> Result<Resp, ApiError> {
    let sub = &state.settings.subscription;
    let Route {
        resource_group: rg,
        vault,
        target,
        ref method,
    } = route;
    let scope = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}"
    );
    ctx.resource = Some(scope.clone());
    authorization::require(state, caller, &scope, &route.action())?;
    let backup = &state.backup;
    backup.get_vault(rg, vault)?;
    let now = ctx.now;
    fn container_ref<'r>(
        rg: &'r str,
        vault: &'r str,
        (fabric, container): At<'r>,
    ) -> ContainerRef<'r> {
        ContainerRef {
            resource_group: rg,
            vault,
            fabric,
            container,
        }
    }
    let at = |a| container_ref(rg, vault, a);
    let m = method.as_str();
    match target {
        Target::Fabrics => {
            let containers = backup.list_containers(rg, vault, None)?;
            let out = backup
                .list_fabrics(rg, vault)?
                .iter()
                .map(|f| {
                    let mine: Vec<ProtectionContainer> = containers
                        .iter()
                        .filter(|c| c.fabric.eq_ignore_ascii_case(&f.name))
                        .cloned()
                        .collect();
                    fabric_json(state, rg, f, &mine)
                })
                .collect();
            Ok(value_of(out))
        }
        Target::Fabric(name) if m == "PUT" => {
            let dto: FabricDto = parse_json(&read_body(body).await?)?;
            let details = dto
                .properties
                .unwrap_or_default()
                .custom_details
                .unwrap_or_default();
            match details.instance_type.as_deref() {
                Some(t) if t.eq_ignore_ascii_case("Azure") => {}
                other => {
                    return Err(bad(format!(
                        "properties.customDetails.instanceType must be Azure (a region), not {}.",
                        other.unwrap_or("missing")
                    )))
                }
            }
            let (f, _) = backup.put_fabric(rg, vault, name, details.location.as_deref(), now)?;
            ctx.target_id = Some(backup.fabric_id(rg, vault, &f.name));
            let containers = backup.list_containers(rg, vault, Some(name))?;
            Ok(json(
                StatusCode::OK,
                &fabric_json(state, rg, &f, &containers),
            ))
        }
        Target::Fabric(name) if matches!(m, "DELETE" | "POST") => {
            backup.delete_fabric(rg, vault, name)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Target::Fabric(name) => {
            let f = backup.get_fabric(rg, vault, name)?;
            let containers = backup.list_containers(rg, vault, Some(name))?;
            Ok(json(
                StatusCode::OK,
                &fabric_json(state, rg, &f, &containers),
            ))
        }
        Target::Containers(fabric) => {
            if let Some(f) = fabric {
                backup.get_fabric(rg, vault, f)?;
            }
            let (mappings, items) = (
                backup.list_mappings(rg, vault)?,
                backup.list_replicated(rg, vault)?,
            );
            let mut out = Vec::new();
            for c in backup.list_containers(rg, vault, fabric)? {
                let location = backup.get_fabric(rg, vault, &c.fabric)?.location;
                out.push(container_json(state, rg, &c, &location, &mappings, &items));
            }
            Ok(value_of(out))
        }
        Target::Container(a) => {
            let c = match m {
                "PUT" => {
                    // The A2A creation input carries nothing atrest needs; its type is checked.
                    let dto: Value = optional_body(body).await?;
                    let inputs = dto
                        .pointer("/properties/providerSpecificInput")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for input in &inputs {
                        require_a2a(
                            input.get("instanceType").and_then(Value::as_str),
                            "providerSpecificInput",
                        )?;
                    }
                    backup.put_container(at(a))?
                }
                "GET" => backup.get_container(at(a))?,
                _ => {
                    backup.delete_container(at(a))?;
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
            };
            ctx.target_id = Some(backup.container_id(at(a)));
            let location = backup.get_fabric(rg, vault, &c.fabric)?.location;
            let (mappings, items) = (
                backup.list_mappings(rg, vault)?,
                backup.list_replicated(rg, vault)?,
            );
            Ok(json(
                StatusCode::OK,
                &container_json(state, rg, &c, &location, &mappings, &items),
            ))
        }
        Target::Policies => Ok(value_of(
            backup
                .list_replication_policies(rg, vault)?
                .iter()
                .map(|p| policy_json(state, rg, p))
                .collect(),
        )),
        Target::Policy(name) => {
            let p = match m {
                "PUT" => {
                    let dto: PolicyDto = parse_json(&read_body(body).await?)?;
                    let input = dto
                        .properties
                        .unwrap_or_default()
                        .provider_specific_input
                        .unwrap_or_default();
                    let req = ReplicationPolicyRequest {
                        instance_type: input.instance_type.unwrap_or_default(),
                        history_minutes: input.recovery_point_history,
                        crash_minutes: input.crash_consistent_frequency_in_minutes,
                        app_minutes: input.app_consistent_frequency_in_minutes,
                        multi_vm_sync: input.multi_vm_sync_status,
                    };
                    backup.put_replication_policy(rg, vault, name, &req)?
                }
                "GET" => backup.get_replication_policy(rg, vault, name)?,
                _ => {
                    backup.delete_replication_policy(rg, vault, name)?;
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
            };
            ctx.target_id = Some(backup.replication_policy_id(rg, vault, name));
            Ok(json(StatusCode::OK, &policy_json(state, rg, &p)))
        }
        Target::Mappings(container) => {
            if let Some(a) = container {
                backup.get_container(at(a))?;
            }
            let out = backup
                .list_mappings(rg, vault)?
                .iter()
                .filter(|mp| {
                    container.is_none_or(|(f, c)| {
                        mp.fabric.eq_ignore_ascii_case(f) && mp.container.eq_ignore_ascii_case(c)
                    })
                })
                .map(|mp| mapping_json(state, rg, mp))
                .collect();
            Ok(value_of(out))
        }
        Target::Mapping(a, name) => {
            let mp = match m {
                "PUT" => {
                    let dto: MappingDto = parse_json(&read_body(body).await?)?;
                    let p = dto.properties.unwrap_or_default();
                    let (Some(target), Some(policy)) =
                        (p.target_protection_container_id, p.policy_id)
                    else {
                        return Err(bad("properties.targetProtectionContainerId and properties.policyId are required."));
                    };
                    backup.put_mapping(at(a), name, &target, &policy)?
                }
                "GET" => backup.get_mapping(at(a), name)?,
                _ => {
                    backup.delete_mapping(at(a), name)?;
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
            };
            Ok(json(StatusCode::OK, &mapping_json(state, rg, &mp)))
        }
        Target::Items(container) => {
            if let Some(a) = container {
                backup.get_container(at(a))?;
            }
            let out = backup
                .list_replicated(rg, vault)?
                .iter()
                .filter(|i| {
                    container.is_none_or(|(f, c)| {
                        i.fabric.eq_ignore_ascii_case(f) && i.container.eq_ignore_ascii_case(c)
                    })
                })
                .map(|i| item_json(state, rg, i, now))
                .collect();
            Ok(value_of(out))
        }
        Target::Item(a, name) if m == "PUT" => {
            let dto: EnableDto = parse_json(&read_body(body).await?)?;
            let p = dto.properties.unwrap_or_default();
            let input = p.provider_specific_details.unwrap_or_default();
            require_a2a(input.instance_type.as_deref(), "providerSpecificDetails")?;
            let vm_id = input
                .fabric_object_id
                .or(p.protectable_item_id)
                .ok_or_else(|| bad("providerSpecificDetails.fabricObjectId (the virtual machine's resource id) is required."))?;
            let mut disks = Vec::new();
            for d in input.vm_managed_disks.unwrap_or_default() {
                let id = d
                    .disk_id
                    .ok_or_else(|| bad("vmManagedDisks[].diskId is required."))?;
                disks.push(DiskInput {
                    disk_id: id,
                    disk_encryption_set: d.recovery_disk_encryption_set_id,
                    keys: d.disk_encryption_info.map(EncryptionInfoDto::into_keys),
                });
            }
            let req = EnableReplication {
                policy: p.policy_id,
                vm_id,
                recovery_container: input.recovery_container_id,
                recovery_resource_group: input.recovery_resource_group_id,
                disks,
                keys: input.disk_encryption_info.map(EncryptionInfoDto::into_keys),
            };
            let item = backup.enable_replication(at(a), name, &req, now).await?;
            // Azure makes the recovery resource group when it does not exist.
            state.resource_groups.ensure(
                &item.recovery.resource_group,
                &item.recovery.location,
                now,
            )?;
            ctx.target_id = Some(backup.replicated_item_id(rg, &item));
            Ok(json(StatusCode::OK, &item_json(state, rg, &item, now)))
        }
        Target::Item(a, name) => Ok(json(
            StatusCode::OK,
            &item_json(state, rg, &backup.get_replicated(at(a), name)?, now),
        )),
        Target::Disable(a, name) => {
            // The disable input carries a reason only; it is not needed.
            let _: Value = optional_body(body).await?;
            backup.disable_replication(at(a), name).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Target::Action(a, name, action) => {
            let dto: FailoverDto = optional_body(body).await?;
            let p = dto.properties.unwrap_or_default();
            let provider = p.provider_specific_details.unwrap_or_default();
            require_a2a(provider.instance_type.as_deref(), "providerSpecificDetails")?;
            let req = FailoverRequest {
                direction: p.failover_direction,
                recovery_point: provider.recovery_point_id,
                shut_down_source: p
                    .source_site_operations
                    .is_some_and(|s| s.eq_ignore_ascii_case("Required")),
            };
            let item = match action {
                ItemAction::TestFailover => backup.test_failover(at(a), name, &req, now).await?,
                ItemAction::TestFailoverCleanup => {
                    backup.test_failover_cleanup(at(a), name, now).await?
                }
                ItemAction::UnplannedFailover => backup.failover(at(a), name, &req, now).await?,
                ItemAction::FailoverCommit => backup.commit_failover(at(a), name).await?,
                ItemAction::Reprotect => backup.reprotect(at(a), name, now).await?,
            };
            ctx.target_id = Some(backup.replicated_item_id(rg, &item));
            Ok(json(StatusCode::OK, &item_json(state, rg, &item, now)))
        }
        Target::Points(a, name) => {
            let item = backup.get_replicated(at(a), name)?;
            Ok(value_of(
                item.points
                    .iter()
                    .rev()
                    .map(|p| point_json(state, rg, &item, p))
                    .collect(),
            ))
        }
        Target::Point(a, name, point) => {
            let item = backup.get_replicated(at(a), name)?;
            let p = item
                .points
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(point))
                .ok_or_else(|| atrest_backup::BackupError::NotFound {
                    kind: "recovery point",
                    name: (*point).to_owned(),
                })?;
            Ok(json(StatusCode::OK, &point_json(state, rg, &item, p)))
        }
    }
}
