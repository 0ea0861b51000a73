//! `Microsoft.RecoveryServices`: vaults and Azure Backup for VMs (policies, protected
//! items, backup, recovery points, restore, jobs), in the shapes of api-version
//! 2025-02-01 that `azure-mgmt-recoveryservices` and `azure-mgmt-recoveryservicesbackup`
//! read. Work runs at once; what Azure answers with 202 carries a `Location` and an
//! `Azure-AsyncOperation` that report it done.

use std::collections::BTreeMap;

use atrest_backup::{
    ItemRef, Job, KeyAndSecret, Policy, PolicyRequest, ProtectedItem, RecoveryPoint, RecoveryVault,
    RestoreRequest,
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
use crate::http::{created_status, deleted_status, empty, json, seg, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// What a route addresses below a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Vault,
    Policies,
    Policy(&'a str),
    Items,
    Item(&'a str, &'a str),
    Backup(&'a str, &'a str),
    Points(&'a str, &'a str),
    Point(&'a str, &'a str, &'a str),
    Restore(&'a str, &'a str, &'a str),
    /// `…/protectedItems/{i}/operationResults|operationsStatus/{id}`: a finished operation.
    ItemOperation(&'a str, &'a str, bool),
    Jobs,
    Job(&'a str),
}

/// A route of the Recovery Services provider.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// Something in (or of) vault `name`.
    In {
        resource_group: &'a str,
        name: &'a str,
        target: Target<'a>,
        method: Method,
    },
    /// The vaults of a resource group, or of the subscription.
    VaultList { resource_group: Option<&'a str> },
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments` after `subscriptions/{s}/`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        let provider = |p: &&str| seg(p, "Microsoft.RecoveryServices");
        match segments {
            [prov_kw, p, vaults]
                if seg(prov_kw, "providers") && provider(p) && seg(vaults, "vaults") =>
            {
                (method == Method::GET).then_some(Route::VaultList {
                    resource_group: None,
                })
            }
            [rg_kw, rg, prov_kw, p, vaults]
                if seg(rg_kw, "resourceGroups")
                    && seg(prov_kw, "providers")
                    && provider(p)
                    && seg(vaults, "vaults") =>
            {
                (method == Method::GET).then_some(Route::VaultList {
                    resource_group: Some(rg),
                })
            }
            [rg_kw, rg, prov_kw, p, vaults, name, rest @ ..]
                if seg(rg_kw, "resourceGroups")
                    && seg(prov_kw, "providers")
                    && provider(p)
                    && seg(vaults, "vaults") =>
            {
                let m = method.as_str();
                let target = match rest {
                    [] if matches!(m, "PUT" | "PATCH" | "GET" | "DELETE") => Target::Vault,
                    [p] if seg(p, "backupPolicies") && m == "GET" => Target::Policies,
                    [p, policy]
                        if seg(p, "backupPolicies") && matches!(m, "PUT" | "GET" | "DELETE") =>
                    {
                        Target::Policy(policy)
                    }
                    [p] if seg(p, "backupProtectedItems") && m == "GET" => Target::Items,
                    [j] if seg(j, "backupJobs") && m == "GET" => Target::Jobs,
                    [j, job] if seg(j, "backupJobs") && m == "GET" => Target::Job(job),
                    [f, azure, pc, container, pi, item, below @ ..]
                        if seg(f, "backupFabrics")
                            && seg(azure, "Azure")
                            && seg(pc, "protectionContainers")
                            && seg(pi, "protectedItems") =>
                    {
                        match (m, below) {
                            ("PUT" | "GET" | "DELETE", []) => Target::Item(container, item),
                            ("POST", [b]) if seg(b, "backup") => Target::Backup(container, item),
                            ("GET", [r]) if seg(r, "recoveryPoints") => {
                                Target::Points(container, item)
                            }
                            ("GET", [r, point]) if seg(r, "recoveryPoints") => {
                                Target::Point(container, item, point)
                            }
                            ("POST", [r, point, restore])
                                if seg(r, "recoveryPoints") && seg(restore, "restore") =>
                            {
                                Target::Restore(container, item, point)
                            }
                            ("GET", [o, _]) if seg(o, "operationResults") => {
                                Target::ItemOperation(container, item, false)
                            }
                            ("GET", [o, _]) if seg(o, "operationsStatus") => {
                                Target::ItemOperation(container, item, true)
                            }
                            _ => return None,
                        }
                    }
                    _ => return None,
                };
                Some(Route::In {
                    resource_group: rg,
                    name,
                    target,
                    method: method.clone(),
                })
            }
            _ => None,
        }
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        use Operation::*;
        let Route::In { target, method, .. } = self else {
            return RecoveryVaultRead;
        };
        let writes = matches!(method.as_str(), "PUT" | "PATCH");
        let deletes = method == Method::DELETE;
        match target {
            Target::Vault if writes => RecoveryVaultWrite,
            Target::Vault if deletes => RecoveryVaultDelete,
            Target::Vault => RecoveryVaultRead,
            Target::Policy(_) if writes => BackupPolicyWrite,
            Target::Policy(_) if deletes => BackupPolicyDelete,
            Target::Policies | Target::Policy(_) => BackupPolicyRead,
            Target::Item(..) if writes => BackupProtectionWrite,
            Target::Item(..) if deletes => BackupProtectionDelete,
            Target::Items | Target::Item(..) | Target::ItemOperation(..) => BackupProtectionRead,
            Target::Backup(..) => BackupTrigger,
            Target::Points(..) | Target::Point(..) => BackupRecoveryPointRead,
            Target::Restore(..) => BackupRestore,
            Target::Jobs | Target::Job(_) => BackupJobRead,
        }
    }

    /// The RBAC action the route needs.
    fn action(&self) -> &'static str {
        let Route::In { target, method, .. } = self else {
            return "Microsoft.RecoveryServices/vaults/read";
        };
        let verb = match method.as_str() {
            "PUT" | "PATCH" => "write",
            "DELETE" => "delete",
            _ => "read",
        };
        match (target, verb) {
            (Target::Vault, "write") => "Microsoft.RecoveryServices/vaults/write",
            (Target::Vault, "delete") => "Microsoft.RecoveryServices/vaults/delete",
            (Target::Vault, _) => "Microsoft.RecoveryServices/vaults/read",
            (Target::Policy(_), "write") => "Microsoft.RecoveryServices/vaults/backupPolicies/write",
            (Target::Policy(_), "delete") => "Microsoft.RecoveryServices/vaults/backupPolicies/delete",
            (Target::Policies | Target::Policy(_), _) => "Microsoft.RecoveryServices/vaults/backupPolicies/read",
            (Target::Item(..), "write") => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/write"
            }
            (Target::Item(..), "delete") => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/delete"
            }
            (Target::Items | Target::Item(..) | Target::ItemOperation(..), _) => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/read"
            }
            (Target::Backup(..), _) => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action"
            }
            (Target::Points(..) | Target::Point(..), _) => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints/read"
            }
            (Target::Restore(..), _) => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints/restore/action"
            }
            (Target::Jobs | Target::Job(_), _) => "Microsoft.RecoveryServices/vaults/backupJobs/read",
        }
    }
}

#[derive(Deserialize)]
struct VaultDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RetentionDurationDto {
    count: Option<u32>,
    duration_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DailyScheduleDto {
    retention_duration: Option<RetentionDurationDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RetentionDto {
    daily_schedule: Option<DailyScheduleDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScheduleDto {
    schedule_run_frequency: Option<String>,
    schedule_run_times: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PolicyPropertiesDto {
    backup_management_type: Option<String>,
    schedule_policy: Option<ScheduleDto>,
    retention_policy: Option<RetentionDto>,
    time_zone: Option<String>,
    instant_rp_retention_range_in_days: Option<u32>,
}

#[derive(Deserialize)]
struct PolicyDto {
    properties: Option<PolicyPropertiesDto>,
}

impl PolicyDto {
    fn into_request(self) -> Result<PolicyRequest, ApiError> {
        let p = self.properties.unwrap_or_default();
        let schedule = p.schedule_policy.unwrap_or_default();
        let duration = p
            .retention_policy
            .and_then(|r| r.daily_schedule)
            .and_then(|d| d.retention_duration)
            .unwrap_or_default();
        if duration
            .duration_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("Days"))
        {
            return Err(ApiError::bad_request(
                "BMSUserErrorInvalidPolicyInput",
                "retentionDuration.durationType of a daily schedule must be Days.",
            ));
        }
        Ok(PolicyRequest {
            management_type: p.backup_management_type.unwrap_or_default(),
            frequency: schedule.schedule_run_frequency.unwrap_or_default(),
            run_times: schedule.schedule_run_times.unwrap_or_default(),
            retention_days: duration.count,
            time_zone: p.time_zone,
            instant_rp_days: p.instant_rp_retention_range_in_days,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ItemPropertiesDto {
    protected_item_type: Option<String>,
    source_resource_id: Option<String>,
    policy_id: Option<String>,
}

#[derive(Deserialize)]
struct ItemDto {
    properties: Option<ItemPropertiesDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BackupRequestDto {
    #[serde(rename = "recoveryPointExpiryTimeInUTC")]
    recovery_point_expiry_time_in_utc: Option<String>,
}

#[derive(Deserialize, Default)]
struct TriggerDto {
    properties: Option<BackupRequestDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RestorePropertiesDto {
    object_type: Option<String>,
    recovery_type: Option<String>,
    region: Option<String>,
    source_resource_id: Option<String>,
    target_resource_group_id: Option<String>,
    target_virtual_machine_id: Option<String>,
    disk_encryption_set_id: Option<String>,
    encryption_details: Option<EncryptionDetailsDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EncryptionDetailsDto {
    encryption_enabled: Option<bool>,
    kek_url: Option<String>,
    secret_key_url: Option<String>,
    kek_vault_id: Option<String>,
    secret_key_vault_id: Option<String>,
}

#[derive(Deserialize)]
struct RestoreDto {
    properties: Option<RestorePropertiesDto>,
}

fn vault_json(v: &RecoveryVault, tenant: &str) -> Value {
    json!({
        "id": v.id,
        "name": v.name,
        "type": "Microsoft.RecoveryServices/vaults",
        "location": v.location,
        "tags": v.tags,
        "sku": { "name": "Standard" },
        "identity": { "type": "SystemAssigned", "principalId": v.principal_id, "tenantId": tenant },
        "properties": {
            "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled",
            "redundancySettings": { "standardTierStorageRedundancy": "LocallyRedundant", "crossRegionRestore": "Disabled" },
        },
    })
}

fn policy_json(p: &Policy, users: usize) -> Value {
    let time = format!(
        "2026-01-01T{}:00Z",
        p.run_times.first().map_or("22:30", String::as_str)
    );
    json!({
        "id": p.id,
        "name": p.name,
        "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
        "properties": {
            "backupManagementType": "AzureIaasVM",
            "policyType": "V1",
            "instantRpRetentionRangeInDays": p.instant_rp_days,
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Daily",
                "scheduleRunTimes": [time],
                "scheduleWeeklyFrequency": 0,
            },
            "retentionPolicy": {
                "retentionPolicyType": "LongTermRetentionPolicy",
                "dailySchedule": {
                    "retentionTimes": [time],
                    "retentionDuration": { "count": p.retention_days, "durationType": "Days" },
                },
            },
            "timeZone": p.time_zone,
            "protectedItemsCount": users,
        },
    })
}

fn item_json(v: &RecoveryVault, item: &ProtectedItem) -> Value {
    let mut properties = json!({
        "objectType": "AzureIaaSComputeVMProtectedItem",
        "protectedItemType": "Microsoft.Compute/virtualMachines",
        "friendlyName": item.vm_name,
        "virtualMachineId": item.vm_id,
        "sourceResourceId": item.vm_id,
        "protectionStatus": "Healthy",
        "protectionState": item.state,
        "healthStatus": "Passed",
        "backupManagementType": "AzureIaasVM",
        "workloadType": "VM",
        "containerName": item.container().split_once(';').map_or(String::new(), |(_, c)| c.to_owned()),
        "policyId": format!("{}/backupPolicies/{}", v.id, item.policy),
        "policyName": item.policy,
    });
    if let Some((time, status)) = &item.last_backup {
        properties["lastBackupTime"] = Value::from(rfc3339(*time));
        properties["lastBackupStatus"] = Value::from(status.as_str());
    }
    if let Some(time) = item.last_point {
        properties["lastRecoveryPoint"] = Value::from(rfc3339(time));
    }
    json!({
        "id": item.id(v),
        "name": item.name,
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems",
        "properties": properties,
    })
}

/// One disk's `keyAndSecret`: the BEK secret's value and the KEK's backup blob, as Azure
/// Backup returns them for restoring keys that were deleted.
fn key_and_secret_json(k: &KeyAndSecret<'_>) -> Value {
    use base64::Engine as _;
    let keys = k.keys;
    let mut out = json!({
        "bekDetails": {
            "secretUrl": keys.secret_url,
            "secretVaultId": keys.secret_vault,
            "secretData": String::from_utf8_lossy(&k.secret_data),
            "contentType": keys.content_type,
            "tags": keys.tags,
        },
        "encryptionMechanism": "SinglePass",
        "lun": keys.lun,
    });
    if let (Some(url), Some(vault), Some(blob)) = (&keys.kek_url, &keys.kek_vault, &keys.key_backup)
    {
        out["kekDetails"] = json!({
            "keyUrl": url,
            "keyVaultId": vault,
            "keyBackupData": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob),
        });
    }
    out
}

fn point_json(
    v: &RecoveryVault,
    item: &ProtectedItem,
    p: &RecoveryPoint,
    keys: &[KeyAndSecret<'_>],
) -> Value {
    let disks: Vec<Value> = p
        .disks
        .iter()
        .map(|d| {
            json!({
                "lun": d.lun,
                "diskName": d.disk,
                "encryptionType": d.encryption_type,
                "diskEncryptionSetId": d.disk_encryption_set,
            })
        })
        .collect();
    json!({
        "id": format!("{}/recoveryPoints/{}", item.id(v), p.name),
        "name": p.name,
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints",
        "properties": {
            "objectType": "IaasVMRecoveryPoint",
            "recoveryPointType": "CrashConsistent",
            "recoveryPointTime": rfc3339(p.time),
            "recoveryPointAdditionalInfo": "",
            "sourceVMStorageType": "NormalStorage",
            "isSourceVMEncrypted": p.ade,
            "isManagedVirtualMachine": true,
            "originalStorageAccountOption": false,
            "recoveryPointTierDetails": [{ "type": "InstantRP", "status": "Valid" }, { "type": "HardenedRP", "status": "Valid" }],
            "recoveryPointDiskConfiguration": {
                "numberOfDisksIncludedInBackup": p.disks.len(),
                "numberOfDisksAttachedToVm": p.disks.len(),
            },
            "expiryTime": rfc3339(p.expiry),
            "disks": disks,
            "keyAndSecret": keys.first().map(key_and_secret_json),
            "keyAndSecretOfDisks": keys.iter().map(key_and_secret_json).collect::<Vec<_>>(),
        },
    })
}

fn job_json(v: &RecoveryVault, j: &Job) -> Value {
    let mut properties = json!({
        "jobType": "AzureIaaSVMJob",
        "objectType": "AzureIaaSVMJob",
        "entityFriendlyName": j.entity,
        "backupManagementType": "AzureIaasVM",
        "operation": j.operation,
        "status": j.status,
        "startTime": rfc3339(j.start),
        "endTime": rfc3339(j.end),
        "duration": "PT0S",
        "activityId": j.name,
        "virtualMachineVersion": "Compute",
        "extendedInfo": { "propertyBag": { "outputs": j.outputs.join(",") } },
    });
    if let Some((code, message)) = &j.error {
        properties["errorDetails"] =
            json!([{ "errorCode": code, "errorString": message, "recommendations": [] }]);
    }
    json!({
        "id": format!("{}/backupJobs/{}", v.id, j.name),
        "name": j.name,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": properties,
    })
}

/// A 202 whose operation is already done: `Location` answers 204 (or the job), and
/// `Azure-AsyncOperation` answers `Succeeded`.
fn accepted(state: &AppState, item: &str, job: &Job) -> Resp {
    let base = format!("{}{item}", state.management_base());
    let mut resp = empty(StatusCode::ACCEPTED);
    let headers = resp.headers_mut();
    for (name, kind) in [
        ("Location", "operationResults"),
        ("Azure-AsyncOperation", "operationsStatus"),
    ] {
        let url = format!("{base}/{kind}/{}?api-version=2025-02-01", job.name);
        if let Ok(value) = hyper::header::HeaderValue::from_str(&url) {
            headers.insert(name, value);
        }
    }
    headers.insert("Retry-After", hyper::header::HeaderValue::from_static("0"));
    resp
}

/// Serves one Recovery Services route of an authenticated caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    route: Route<'_>,
    body: Body,
) -> Result<Resp, ApiError> {
    let sub = &state.settings.subscription;
    let action = route.action();
    let (resource_group, name, target, method) = match route {
        Route::VaultList { resource_group } => {
            let object_ids = state.identity.object_ids_of(&caller.object_id)?;
            let mut out = Vec::new();
            for v in state.backup.list_vaults(resource_group)? {
                if state.identity.allows_action(&object_ids, &v.id, action)? {
                    out.push(vault_json(&v, state.identity.tenant()));
                }
            }
            return Ok(json(StatusCode::OK, &json!({ "value": out })));
        }
        Route::In {
            resource_group,
            name,
            target,
            method,
        } => (resource_group, name, target, method),
    };
    let scope = format!("/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Microsoft.RecoveryServices/vaults/{name}");
    ctx.resource = Some(scope.clone());
    authorization::require(state, caller, &scope, action)?;
    let backup = &state.backup;
    let now = ctx.now;
    let at = |container, item| ItemRef {
        resource_group,
        vault: name,
        container,
        item,
    };
    let tenant = state.identity.tenant();
    match (target, method.as_str()) {
        (Target::Vault, "PUT" | "PATCH") => {
            state.resource_groups.get(resource_group)?;
            let dto: VaultDto = parse_json(&read_body(body).await?)?;
            if method == Method::PATCH {
                backup.get_vault(resource_group, name)?;
            }
            let (v, created) = backup.put_vault(
                &state.identity,
                resource_group,
                name,
                dto.location.as_deref(),
                dto.tags,
                now,
            )?;
            Ok(json(created_status(created), &vault_json(&v, tenant)))
        }
        (Target::Vault, "DELETE") => {
            // The vaults client takes 202 or 204 only; the delete is done when answered.
            backup.delete_vault(&state.identity, resource_group, name)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Target::Vault, _) => Ok(json(
            StatusCode::OK,
            &vault_json(&backup.get_vault(resource_group, name)?, tenant),
        )),
        (Target::Policies, _) => {
            let mut out = Vec::new();
            for p in backup.list_policies(resource_group, name)? {
                out.push(policy_json(
                    &p,
                    backup.policy_users(resource_group, name, &p.name)?,
                ));
            }
            Ok(json(StatusCode::OK, &json!({ "value": out })))
        }
        (Target::Policy(policy), "PUT") => {
            let req = parse_json::<PolicyDto>(&read_body(body).await?)?.into_request()?;
            let p = backup.put_policy(resource_group, name, policy, &req)?;
            let users = backup.policy_users(resource_group, name, policy)?;
            Ok(json(StatusCode::OK, &policy_json(&p, users)))
        }
        (Target::Policy(policy), "DELETE") => {
            let deleted = backup.delete_policy(resource_group, name, policy)?;
            Ok(empty(deleted_status(deleted)))
        }
        (Target::Policy(policy), _) => {
            let p = backup.get_policy(resource_group, name, policy)?;
            Ok(json(
                StatusCode::OK,
                &policy_json(&p, backup.policy_users(resource_group, name, policy)?),
            ))
        }
        (Target::Items, _) => {
            let v = backup.get_vault(resource_group, name)?;
            let items: Vec<Value> = backup
                .list_items(resource_group, name)?
                .iter()
                .map(|i| item_json(&v, i))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        (Target::Item(container, item), "PUT") => {
            let at = at(container, item);
            let dto: ItemDto = parse_json(&read_body(body).await?)?;
            let p = dto.properties.unwrap_or_default();
            if p.protected_item_type
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines"))
            {
                return Err(ApiError::bad_request(
                    "BMSUserErrorInvalidInput",
                    "protectedItemType must be Microsoft.Compute/virtualMachines: atrest backs up Azure VMs.",
                ));
            }
            let required = |v: Option<String>, what: &str| {
                v.ok_or_else(|| {
                    ApiError::bad_request(
                        "BMSUserErrorInvalidInput",
                        format!("properties.{what} is required."),
                    )
                })
            };
            let vm = required(p.source_resource_id, "sourceResourceId")?;
            let policy = required(p.policy_id, "policyId")?;
            let v = backup.get_vault(resource_group, name)?;
            let (item, _) = backup.protect(at, &vm, &policy, now)?;
            ctx.target_id = Some(item.id(&v));
            Ok(json(StatusCode::OK, &item_json(&v, &item)))
        }
        (Target::Item(container, item), "DELETE") => {
            let at = at(container, item);
            let job = backup.unprotect(at, now).await?;
            match job {
                None => Ok(empty(StatusCode::NO_CONTENT)),
                Some(_) => Ok(empty(StatusCode::OK)),
            }
        }
        (Target::Item(container, item), _) => {
            let at = at(container, item);
            let v = backup.get_vault(resource_group, name)?;
            Ok(json(StatusCode::OK, &item_json(&v, &backup.get_item(at)?)))
        }
        (Target::ItemOperation(container, item, status), _) => {
            let at = at(container, item);
            backup.get_item(at)?;
            if status {
                Ok(json(
                    StatusCode::OK,
                    &json!({ "status": "Succeeded", "startTime": rfc3339(now), "endTime": rfc3339(now) }),
                ))
            } else {
                Ok(empty(StatusCode::NO_CONTENT))
            }
        }
        (Target::Backup(container, item), _) => {
            let at = at(container, item);
            let dto: TriggerDto = match read_body(body).await? {
                b if b.is_empty() => TriggerDto::default(),
                b => parse_json(&b)?,
            };
            let expiry = dto
                .properties
                .and_then(|p| p.recovery_point_expiry_time_in_utc)
                .map(|t| {
                    atrest_runtime::time::parse_rfc3339(&t).ok_or_else(|| {
                        ApiError::bad_request(
                            "BMSUserErrorInvalidInput",
                            format!("recoveryPointExpiryTimeInUTC '{t}' is not a date-time."),
                        )
                    })
                })
                .transpose()?;
            let job = backup.backup_now(at, expiry, now).await?;
            let v = backup.get_vault(resource_group, name)?;
            let found = backup.get_item(at)?;
            ctx.target_id = Some(format!("{}/backupJobs/{}", v.id, job.name));
            let path = found.id(&v);
            Ok(accepted(state, &path, &job))
        }
        (Target::Points(container, item), _) => {
            let at = at(container, item);
            let v = backup.get_vault(resource_group, name)?;
            let found = backup.get_item(at)?;
            let points: Vec<Value> = backup
                .list_points(at)?
                .iter()
                .map(|p| Ok(point_json(&v, &found, p, &backup.key_and_secret(p)?)))
                .collect::<Result<_, ApiError>>()?;
            Ok(json(StatusCode::OK, &json!({ "value": points })))
        }
        (Target::Point(container, item, point), _) => {
            let at = at(container, item);
            let v = backup.get_vault(resource_group, name)?;
            let found = backup.get_item(at)?;
            let p = backup.get_point(at, point)?;
            let keys = backup.key_and_secret(&p)?;
            Ok(json(StatusCode::OK, &point_json(&v, &found, &p, &keys)))
        }
        (Target::Restore(container, item, point), _) => {
            let at = at(container, item);
            let dto: RestoreDto = parse_json(&read_body(body).await?)?;
            let p = dto.properties.unwrap_or_default();
            if p.object_type
                .as_deref()
                .is_some_and(|t| !t.starts_with("IaasVMRestore"))
            {
                return Err(ApiError::bad_request(
                    "BMSUserErrorInvalidInput",
                    "objectType must be IaasVMRestoreRequest: file-level restore is not offered.",
                ));
            }
            let req = RestoreRequest {
                recovery_type: p.recovery_type.unwrap_or_default(),
                region: p.region,
                target_resource_group: p.target_resource_group_id,
                target_vm: p.target_virtual_machine_id,
                disk_encryption_set: p.disk_encryption_set_id,
                source_resource_id: p.source_resource_id,
                encryption: match p.encryption_details {
                    Some(e) if e.encryption_enabled == Some(true) => {
                        let (Some(secret_url), Some(secret_vault)) =
                            (e.secret_key_url, e.secret_key_vault_id)
                        else {
                            return Err(ApiError::bad_request(
                                "BMSUserErrorInvalidInput",
                                "encryptionDetails needs secretKeyUrl and secretKeyVaultId.",
                            ));
                        };
                        Some(atrest_backup::RestoreEncryption {
                            secret_url,
                            secret_vault,
                            kek_url: e.kek_url,
                            kek_vault: e.kek_vault_id,
                        })
                    }
                    _ => None,
                },
            };
            let job = backup.restore(at, point, &req, now).await?;
            let v = backup.get_vault(resource_group, name)?;
            let found = backup.get_item(at)?;
            ctx.target_id = Some(format!("{}/backupJobs/{}", v.id, job.name));
            Ok(accepted(state, &found.id(&v), &job))
        }
        (Target::Jobs, _) => {
            let v = backup.get_vault(resource_group, name)?;
            let jobs: Vec<Value> = backup
                .list_jobs(resource_group, name)?
                .iter()
                .map(|j| job_json(&v, j))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": jobs })))
        }
        (Target::Job(job), _) => {
            let v = backup.get_vault(resource_group, name)?;
            Ok(json(
                StatusCode::OK,
                &job_json(&v, &backup.get_job(resource_group, name, job)?),
            ))
        }
    }
}
