//! `atrest backup`: Azure Backup for VMs, as `az backup` names it: vaults, policies,
//! protection, recovery points, restores and jobs. Containers and items may be given as
//! the VM's name, as `az` accepts.

use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::connection::Connection;
use super::output::{print, Format};

/// `backup …`.
#[derive(Subcommand)]
pub(crate) enum BackupCommand {
    /// Recovery Services vaults.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Backup policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Protecting VMs and backing them up.
    #[command(subcommand)]
    Protection(ProtectionCommand),
    /// Recovery points of a protected VM.
    #[command(subcommand)]
    Recoverypoint(RecoveryPointCommand),
    /// Restores from a recovery point.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Backup, restore and protection jobs.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(clap::Args)]
pub(crate) struct VaultArgs {
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
    #[arg(short = 'v', long)]
    vault_name: String,
}

#[derive(clap::Args)]
pub(crate) struct ItemArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// The container (`IaasVMContainer;iaasvmcontainerv2;RG;VM`, or the VM's name).
    #[arg(short = 'c', long)]
    container_name: String,
    /// The item (`VM;iaasvmcontainerv2;RG;VM`, or the VM's name).
    #[arg(short = 'i', long)]
    item_name: String,
}

#[derive(Subcommand)]
pub(crate) enum VaultCommand {
    /// Create a vault (with a system-assigned identity and DefaultPolicy).
    Create {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'l', long)]
        location: String,
    },
    /// Show a vault.
    Show {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List vaults.
    List {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Delete a vault (refused while it protects anything).
    Delete {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// List a vault's policies.
    List(VaultArgs),
    /// Show a policy.
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Create or replace a daily VM policy.
    Set {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
        /// Daily run time, HH:MM (UTC).
        #[arg(long, default_value = "22:30")]
        time: String,
        /// Days each daily point is kept.
        #[arg(long, default_value_t = 30)]
        retention_days: u32,
    },
    /// Delete a policy (refused while it protects anything).
    Delete {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ProtectionCommand {
    /// Protect a VM with a policy.
    EnableForVm {
        #[command(flatten)]
        vault: VaultArgs,
        /// The VM's name or resource id.
        #[arg(long)]
        vm: String,
        #[arg(short = 'p', long)]
        policy_name: String,
    },
    /// Back a protected VM up now.
    BackupNow {
        #[command(flatten)]
        item: ItemArgs,
        /// Keep the point until this date (DD-MM-YYYY, as az); default: the policy's retention.
        #[arg(long)]
        retain_until: Option<String>,
    },
    /// Stop protection and delete the backup data.
    Disable {
        #[command(flatten)]
        item: ItemArgs,
        /// Must be true: stopping without deleting the data is not offered.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        delete_backup_data: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecoveryPointCommand {
    /// List an item's recovery points, newest first.
    List(ItemArgs),
    /// Show one recovery point.
    Show {
        #[command(flatten)]
        item: ItemArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RestoreCommand {
    /// Restore a recovery point's disks as new disks.
    RestoreDisks {
        #[command(flatten)]
        item: ItemArgs,
        #[arg(short = 'r', long)]
        rp_name: String,
        /// Where the disks are created (default: the VM's resource group).
        #[arg(long)]
        target_resource_group: Option<String>,
        /// Restore every disk under this disk encryption set (name or id).
        #[arg(long)]
        disk_encryption_set_id: Option<String>,
        /// Restore a whole new VM of this name (AlternateLocation).
        #[arg(long)]
        target_vm_name: Option<String>,
        /// For an ADE machine whose keys were restored elsewhere: the BEK secret's URL now
        /// (as `restore-keys` prints it).
        #[arg(long)]
        secret_url: Option<String>,
        /// And the key-encryption key's URL now.
        #[arg(long)]
        kek_url: Option<String>,
    },
    /// Put an ADE machine's BEK secrets and key-encryption keys back into their vaults from
    /// a recovery point's keyAndSecret (after they were deleted and purged); prints where
    /// each now lives.
    RestoreKeys {
        #[command(flatten)]
        item: ItemArgs,
        #[arg(short = 'r', long)]
        rp_name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum JobCommand {
    /// List a vault's jobs, newest first.
    List(VaultArgs),
    /// Show a job.
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

pub(crate) fn vault_path(conn: &Connection, rg: Option<&str>, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{name}",
        conn.subscription,
        rg.unwrap_or(&conn.resource_group)
    )
}

impl VaultArgs {
    fn path(&self, conn: &Connection) -> String {
        vault_path(conn, self.resource_group.as_deref(), &self.vault_name)
    }
}

/// The full container and item names of a VM given by name.
fn item_names(
    conn: &Connection,
    rg: Option<&str>,
    container: &str,
    item: &str,
) -> (String, String) {
    let rg = rg.unwrap_or(&conn.resource_group);
    let full = |given: &str, prefix: &str| {
        if given.contains(';') {
            given.to_owned()
        } else {
            format!("{prefix};iaasvmcontainerv2;{rg};{given}")
        }
    };
    (full(container, "IaasVMContainer"), full(item, "VM"))
}

impl ItemArgs {
    /// The item's path, `;` percent-encoded as ARM clients send it.
    fn path(&self, conn: &Connection) -> String {
        let rg = self.vault.resource_group.as_deref();
        let (container, item) = item_names(conn, rg, &self.container_name, &self.item_name);
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            self.vault.path(conn),
            container.replace(';', "%3B"),
            item.replace(';', "%3B")
        )
    }
}

/// `az`'s `DD-MM-YYYY` as an RFC 3339 UTC timestamp.
fn retain_until(date: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = date.split('-').collect();
    match parts.as_slice() {
        [d, m, y] if d.len() == 2 && m.len() == 2 && y.len() == 4 => {
            Ok(format!("{y}-{m}-{d}T00:00:00Z"))
        }
        _ => anyhow::bail!("--retain-until takes a date as DD-MM-YYYY, not '{date}'"),
    }
}

/// The job a 202 names in its `Location` (`…/operationResults/{job}`), shown.
async fn job_of(
    conn: &Connection,
    vault: &VaultArgs,
    resp: &atrest_api::client::Response,
) -> anyhow::Result<Value> {
    let job = resp
        .headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.split("/operationResults/").nth(1))
        .and_then(|rest| rest.split('?').next())
        .map(str::to_owned);
    match job {
        Some(job) => {
            conn.management(
                Method::GET,
                &format!("{}/backupJobs/{job}", vault.path(conn)),
                None,
            )
            .await
        }
        None => Ok(Value::Null),
    }
}

/// One resource, shown.
pub(crate) async fn show(conn: &Connection, path: &str) -> anyhow::Result<Value> {
    conn.management(Method::GET, path, None).await
}

/// A listing's items.
pub(crate) async fn list(conn: &Connection, path: &str) -> anyhow::Result<Value> {
    Ok(conn.management(Method::GET, path, None).await?["value"].take())
}

/// The resource id of the vault a key or secret URL names (`https://NAME.vault…`).
fn vault_of_url(conn: &Connection, url: &str) -> String {
    let host = url
        .trim_start_matches("https://")
        .split(['.', ':', '/'])
        .next()
        .unwrap_or_default();
    super::keyvault::vault_path(conn, None, host)
}

/// `restore restore-keys`: each ADE disk's key-encryption key restored from its backup
/// blob (kept if it still exists) and its BEK secret set again, as the caller.
async fn restore_keys(conn: &Connection, item: &ItemArgs, rp_name: &str) -> anyhow::Result<Value> {
    let path = format!("{}/recoveryPoints/{rp_name}", item.path(conn));
    let point = show(conn, &path).await?;
    let vault_name = |id: &Value| {
        id.as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut restored = Vec::new();
    for entry in point["properties"]["keyAndSecretOfDisks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let bek = &entry["bekDetails"];
        let mut kek = json!(null);
        if let Some(details) = entry.get("kekDetails") {
            let body = json!({ "value": details["keyBackupData"] });
            // A key that still exists is kept: it holds the versions the backup holds.
            if let Err(e) = conn
                .data_plane(
                    &vault_name(&details["keyVaultId"]),
                    Method::POST,
                    "/keys/restore",
                    "",
                    Some(&body),
                )
                .await
            {
                if !e.to_string().contains("Conflict") {
                    return Err(e);
                }
            }
            kek = details["keyUrl"].clone();
        }
        let secret_url = bek["secretUrl"].as_str().unwrap_or_default();
        let name = secret_url
            .split("/secrets/")
            .nth(1)
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        let body = json!({ "value": bek["secretData"], "contentType": bek["contentType"], "tags": bek["tags"] });
        let secret = conn
            .data_plane(
                &vault_name(&bek["secretVaultId"]),
                Method::PUT,
                &format!("/secrets/{name}"),
                "",
                Some(&body),
            )
            .await?;
        restored.push(json!({ "lun": entry["lun"], "secretUrl": secret["id"], "kekUrl": kek }));
    }
    Ok(Value::from(restored))
}

pub(crate) async fn backup(
    conn: &Connection,
    command: BackupCommand,
    format: Format,
) -> anyhow::Result<()> {
    use BackupCommand as B;
    let out = match command {
        B::Vault(VaultCommand::Create {
            resource_group,
            name,
            location,
        }) => {
            let body = json!({ "location": location, "sku": { "name": "Standard" }, "identity": { "type": "SystemAssigned" }, "properties": {} });
            conn.management(
                Method::PUT,
                &vault_path(conn, resource_group.as_deref(), &name),
                Some(&body),
            )
            .await?
        }
        B::Vault(VaultCommand::Show {
            resource_group,
            name,
        }) => show(conn, &vault_path(conn, resource_group.as_deref(), &name)).await?,
        B::Vault(VaultCommand::List { resource_group }) => {
            let scope = match &resource_group {
                Some(rg) => format!("/subscriptions/{}/resourceGroups/{rg}", conn.subscription),
                None => format!("/subscriptions/{}", conn.subscription),
            };
            let path = format!("{scope}/providers/Microsoft.RecoveryServices/vaults");
            list(conn, &path).await?
        }
        B::Vault(VaultCommand::Delete {
            resource_group,
            name,
        }) => {
            conn.management(
                Method::DELETE,
                &vault_path(conn, resource_group.as_deref(), &name),
                None,
            )
            .await?
        }
        B::Policy(PolicyCommand::List(vault)) => {
            list(conn, &format!("{}/backupPolicies", vault.path(conn))).await?
        }
        B::Policy(PolicyCommand::Show { vault, name }) => {
            show(conn, &format!("{}/backupPolicies/{name}", vault.path(conn))).await?
        }
        B::Policy(PolicyCommand::Set {
            vault,
            name,
            time,
            retention_days,
        }) => {
            let at = format!("2026-01-01T{time}:00Z");
            let body = json!({ "properties": {
                "backupManagementType": "AzureIaasVM",
                "schedulePolicy": { "schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": [at] },
                "retentionPolicy": { "retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": {
                    "retentionTimes": [at], "retentionDuration": { "count": retention_days, "durationType": "Days" } } },
                "timeZone": "UTC",
            }});
            conn.management(
                Method::PUT,
                &format!("{}/backupPolicies/{name}", vault.path(conn)),
                Some(&body),
            )
            .await?
        }
        B::Policy(PolicyCommand::Delete { vault, name }) => {
            conn.management(
                Method::DELETE,
                &format!("{}/backupPolicies/{name}", vault.path(conn)),
                None,
            )
            .await?
        }
        B::Protection(ProtectionCommand::EnableForVm {
            vault,
            vm,
            policy_name,
        }) => {
            let rg = vault
                .resource_group
                .clone()
                .unwrap_or_else(|| conn.resource_group.clone());
            let (vm_rg, vm_name, vm_id) = if vm.starts_with('/') {
                let parts: Vec<&str> = vm.trim_matches('/').split('/').collect();
                (
                    parts.get(3).copied().unwrap_or_default().to_owned(),
                    parts.last().copied().unwrap_or_default().to_owned(),
                    vm.clone(),
                )
            } else {
                let id = format!("/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}", conn.subscription);
                (rg.clone(), vm.clone(), id)
            };
            let item = ItemArgs {
                vault,
                container_name: format!("IaasVMContainer;iaasvmcontainerv2;{vm_rg};{vm_name}"),
                item_name: format!("VM;iaasvmcontainerv2;{vm_rg};{vm_name}"),
            };
            let body = json!({ "properties": {
                "protectedItemType": "Microsoft.Compute/virtualMachines",
                "sourceResourceId": vm_id,
                "policyId": format!("{}/backupPolicies/{policy_name}", item.vault.path(conn)),
            }});
            conn.management(Method::PUT, &item.path(conn), Some(&body))
                .await?
        }
        B::Protection(ProtectionCommand::BackupNow {
            item,
            retain_until: until,
        }) => {
            let mut properties = json!({ "objectType": "IaasVMBackupRequest" });
            if let Some(date) = until {
                properties["recoveryPointExpiryTimeInUTC"] = Value::from(retain_until(&date)?);
            }
            let body = json!({ "properties": properties });
            let resp = conn
                .management_response(
                    Method::POST,
                    &format!("{}/backup", item.path(conn)),
                    Some(&body),
                )
                .await?;
            job_of(conn, &item.vault, &resp).await?
        }
        B::Protection(ProtectionCommand::Disable {
            item,
            delete_backup_data,
        }) => {
            if !delete_backup_data {
                anyhow::bail!("stopping protection while keeping the backup data is not offered: pass --delete-backup-data true");
            }
            conn.management(Method::DELETE, &item.path(conn), None)
                .await?
        }
        B::Recoverypoint(RecoveryPointCommand::List(item)) => {
            list(conn, &format!("{}/recoveryPoints", item.path(conn))).await?
        }
        B::Recoverypoint(RecoveryPointCommand::Show { item, name }) => {
            show(conn, &format!("{}/recoveryPoints/{name}", item.path(conn))).await?
        }
        B::Restore(RestoreCommand::RestoreKeys { item, rp_name }) => {
            restore_keys(conn, &item, &rp_name).await?
        }
        B::Restore(RestoreCommand::RestoreDisks {
            item,
            rp_name,
            target_resource_group,
            disk_encryption_set_id,
            target_vm_name,
            secret_url,
            kek_url,
        }) => {
            let mut properties = json!({
                "objectType": "IaasVMRestoreRequest",
                "recoveryPointId": rp_name,
                "recoveryType": if target_vm_name.is_some() { "AlternateLocation" } else { "RestoreDisks" },
            });
            if let Some(rg) = target_resource_group {
                properties["targetResourceGroupId"] = Value::from(format!(
                    "/subscriptions/{}/resourceGroups/{rg}",
                    conn.subscription
                ));
            }
            if let Some(des) = disk_encryption_set_id {
                properties["diskEncryptionSetId"] = Value::from(des);
            }
            if let Some(vm) = target_vm_name {
                properties["targetVirtualMachineId"] = Value::from(vm);
            }
            if let Some(secret) = secret_url {
                let mut details = json!({
                    "encryptionEnabled": true,
                    "secretKeyUrl": secret,
                    "secretKeyVaultId": vault_of_url(conn, &secret),
                });
                if let Some(kek) = kek_url {
                    details["kekVaultId"] = Value::from(vault_of_url(conn, &kek));
                    details["kekUrl"] = Value::from(kek);
                }
                properties["encryptionDetails"] = details;
            }
            let body = json!({ "properties": properties });
            let path = format!("{}/recoveryPoints/{rp_name}/restore", item.path(conn));
            let resp = conn
                .management_response(Method::POST, &path, Some(&body))
                .await?;
            job_of(conn, &item.vault, &resp).await?
        }
        B::Job(JobCommand::List(vault)) => {
            list(conn, &format!("{}/backupJobs", vault.path(conn))).await?
        }
        B::Job(JobCommand::Show { vault, name }) => {
            show(conn, &format!("{}/backupJobs/{name}", vault.path(conn))).await?
        }
    };
    print(&out, format)
}
