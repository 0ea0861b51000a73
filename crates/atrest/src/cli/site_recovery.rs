//! `atrest site-recovery`: Azure to Azure replication, as `az site-recovery` names it:
//! fabrics, protection containers and their mappings, replication policies, protected
//! items with their failover actions, and recovery points. Provider inputs are A2A;
//! they take flags here instead of `az`'s JSON shorthand.

use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::backup::{list, show, vault_path};
use super::connection::Connection;
use super::output::{print, Format};

/// `site-recovery …`.
#[derive(Subcommand)]
pub(crate) enum SiteRecoveryCommand {
    /// Fabrics: one per region.
    #[command(subcommand)]
    Fabric(FabricCommand),
    /// Protection containers, and their mappings.
    #[command(subcommand)]
    ProtectionContainer(ContainerCommand),
    /// Replication policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replicated VMs and their failovers.
    #[command(subcommand)]
    ProtectedItem(ItemCommand),
    /// Recovery points of a replicated VM.
    #[command(subcommand)]
    RecoveryPoint(PointCommand),
}

#[derive(clap::Args)]
pub(crate) struct VaultArgs {
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
    #[arg(short = 'v', long)]
    vault_name: String,
}

impl VaultArgs {
    fn path(&self, conn: &Connection) -> String {
        vault_path(conn, self.resource_group.as_deref(), &self.vault_name)
    }
}

#[derive(clap::Args)]
pub(crate) struct FabricArgs {
    #[command(flatten)]
    vault: VaultArgs,
    #[arg(long)]
    fabric_name: String,
}

impl FabricArgs {
    fn path(&self, conn: &Connection) -> String {
        format!(
            "{}/replicationFabrics/{}",
            self.vault.path(conn),
            self.fabric_name
        )
    }
}

#[derive(clap::Args)]
pub(crate) struct ContainerArgs {
    #[command(flatten)]
    fabric: FabricArgs,
    #[arg(long)]
    protection_container: String,
}

impl ContainerArgs {
    fn path(&self, conn: &Connection) -> String {
        format!(
            "{}/replicationProtectionContainers/{}",
            self.fabric.path(conn),
            self.protection_container
        )
    }
}

#[derive(clap::Args)]
pub(crate) struct ItemArgs {
    #[command(flatten)]
    container: ContainerArgs,
    #[arg(short = 'n', long)]
    name: String,
}

impl ItemArgs {
    fn path(&self, conn: &Connection) -> String {
        format!(
            "{}/replicationProtectedItems/{}",
            self.container.path(conn),
            self.name
        )
    }
}

#[derive(Subcommand)]
pub(crate) enum FabricCommand {
    /// Create a fabric for a region.
    Create {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'l', long)]
        location: String,
    },
    /// Show a fabric.
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List a vault's fabrics.
    List(VaultArgs),
    /// Delete a fabric (refused while it has containers).
    Delete {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ContainerCommand {
    /// Create a protection container in a fabric.
    Create {
        #[command(flatten)]
        fabric: FabricArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Show a container.
    Show {
        #[command(flatten)]
        fabric: FabricArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List a fabric's containers.
    List(FabricArgs),
    /// Remove a container (refused while a mapping pairs it).
    Remove {
        #[command(flatten)]
        fabric: FabricArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Container mappings: replication from one container to another under a policy.
    #[command(subcommand)]
    Mapping(MappingCommand),
}

#[derive(Subcommand)]
pub(crate) enum MappingCommand {
    /// Pair a container with a target container under a policy.
    Create {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(short = 'n', long)]
        name: String,
        /// The policy's name or resource id.
        #[arg(long)]
        policy_id: String,
        /// The target container's resource id, or `FABRIC/CONTAINER`.
        #[arg(long)]
        target_container: String,
    },
    /// Show a mapping.
    Show {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List a container's mappings.
    List(ContainerArgs),
    /// Delete a mapping (refused while items replicate through it).
    Delete {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create or update an A2A replication policy.
    Create {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
        /// Minutes recovery points are kept.
        #[arg(long, default_value_t = 1440)]
        recovery_point_history: u32,
        /// Minutes between crash-consistent points (replication cycles).
        #[arg(long, default_value_t = 5)]
        crash_consistent_frequency: u32,
        /// Minutes between app-consistent points (recorded).
        #[arg(long, default_value_t = 0)]
        app_consistent_frequency: u32,
        /// `Enable` or `Disable`.
        #[arg(long, default_value = "Disable")]
        multi_vm_sync_status: String,
    },
    /// Show a policy.
    Show {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List a vault's policies.
    List(VaultArgs),
    /// Delete a policy (refused while a mapping uses it).
    Delete {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ItemCommand {
    /// Enable replication of a VM through its container's mapping.
    Create {
        #[command(flatten)]
        item: ItemArgs,
        /// The VM's name (in the vault's resource group) or resource id.
        #[arg(long)]
        vm: String,
        /// The policy's name or resource id (default: the mapping's).
        #[arg(long)]
        policy_id: Option<String>,
        /// The target container's resource id, or `FABRIC/CONTAINER` (default: the mapping's).
        #[arg(long)]
        target_container: Option<String>,
        /// Where failovers create the VM (default: the VM's group with `-asr`).
        #[arg(long)]
        recovery_resource_group: Option<String>,
        /// A disk to replicate, `NAME[=DISK_ENCRYPTION_SET_ID]` with the set in the target
        /// region (required for a customer-key disk); repeat for each. Default: all disks,
        /// platform keys.
        #[arg(long = "disk")]
        disks: Vec<String>,
    },
    /// Show a replicated VM, with its replication lag (`rpoInSeconds`).
    Show(ItemArgs),
    /// List a container's replicated VMs.
    List(ContainerArgs),
    /// Disable replication (the replicas and recovery points are deleted).
    Delete(ItemArgs),
    /// Test failover: a `-test` VM in the recovery region from a recovery point.
    TestFailover {
        #[command(flatten)]
        item: ItemArgs,
        #[command(flatten)]
        failover: FailoverArgs,
    },
    /// End a test failover: its VM and disks are deleted.
    TestFailoverCleanup(ItemArgs),
    /// Fail over to the recovery region.
    UnplannedFailover {
        #[command(flatten)]
        item: ItemArgs,
        #[command(flatten)]
        failover: FailoverArgs,
        /// `Required` shuts the source VM down first.
        #[arg(long, default_value = "NotRequired")]
        source_site_operations: String,
    },
    /// Commit a failover.
    FailoverCommit(ItemArgs),
    /// Replicate the failed-over VM back to where it came from.
    Reprotect(ItemArgs),
}

#[derive(clap::Args)]
pub(crate) struct FailoverArgs {
    /// `PrimaryToRecovery`, or `RecoveryToPrimary` after a re-protect.
    #[arg(long)]
    failover_direction: Option<String>,
    /// A recovery point's name or resource id (default: the latest).
    #[arg(long)]
    recovery_point_id: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum PointCommand {
    /// List a replicated VM's recovery points, newest first.
    List {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(long)]
        replicated_protected_item_name: String,
    },
    /// Show one.
    Show {
        #[command(flatten)]
        container: ContainerArgs,
        #[arg(long)]
        replicated_protected_item_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

/// A container's resource id from an id or `FABRIC/CONTAINER`.
fn container_id(conn: &Connection, vault: &VaultArgs, given: &str) -> String {
    match given.split_once('/') {
        Some((fabric, container)) if !given.starts_with('/') => format!(
            "{}/replicationFabrics/{fabric}/replicationProtectionContainers/{container}",
            vault.path(conn)
        ),
        _ => given.to_owned(),
    }
}

/// A policy's resource id from an id or a name.
fn policy_id(conn: &Connection, vault: &VaultArgs, given: &str) -> String {
    if given.starts_with('/') {
        given.to_owned()
    } else {
        format!("{}/replicationPolicies/{given}", vault.path(conn))
    }
}

fn failover_body(args: &FailoverArgs, source_site_operations: Option<&str>) -> Value {
    let mut properties = json!({
        "providerSpecificDetails": { "instanceType": "A2A", "recoveryPointId": args.recovery_point_id },
    });
    if let Some(direction) = &args.failover_direction {
        properties["failoverDirection"] = Value::from(direction.as_str());
    }
    if let Some(ops) = source_site_operations {
        properties["sourceSiteOperations"] = Value::from(ops);
    }
    json!({ "properties": properties })
}

async fn post(conn: &Connection, path: String, body: Value) -> anyhow::Result<Value> {
    conn.management(Method::POST, &path, Some(&body)).await
}

pub(crate) async fn site_recovery(
    conn: &Connection,
    command: SiteRecoveryCommand,
    format: Format,
) -> anyhow::Result<()> {
    use SiteRecoveryCommand as S;
    let out = match command {
        S::Fabric(FabricCommand::Create {
            vault,
            name,
            location,
        }) => {
            let body = json!({ "properties": { "customDetails": { "instanceType": "Azure", "location": location } } });
            let path = format!("{}/replicationFabrics/{name}", vault.path(conn));
            conn.management(Method::PUT, &path, Some(&body)).await?
        }
        S::Fabric(FabricCommand::Show { vault, name }) => {
            show(
                conn,
                &format!("{}/replicationFabrics/{name}", vault.path(conn)),
            )
            .await?
        }
        S::Fabric(FabricCommand::List(vault)) => {
            list(conn, &format!("{}/replicationFabrics", vault.path(conn))).await?
        }
        S::Fabric(FabricCommand::Delete { vault, name }) => {
            let path = format!("{}/replicationFabrics/{name}/remove", vault.path(conn));
            post(conn, path, json!({})).await?
        }
        S::ProtectionContainer(ContainerCommand::Create { fabric, name }) => {
            let body =
                json!({ "properties": { "providerSpecificInput": [{ "instanceType": "A2A" }] } });
            let path = format!(
                "{}/replicationProtectionContainers/{name}",
                fabric.path(conn)
            );
            conn.management(Method::PUT, &path, Some(&body)).await?
        }
        S::ProtectionContainer(ContainerCommand::Show { fabric, name }) => {
            let path = format!(
                "{}/replicationProtectionContainers/{name}",
                fabric.path(conn)
            );
            show(conn, &path).await?
        }
        S::ProtectionContainer(ContainerCommand::List(fabric)) => {
            let path = format!("{}/replicationProtectionContainers", fabric.path(conn));
            list(conn, &path).await?
        }
        S::ProtectionContainer(ContainerCommand::Remove { fabric, name }) => {
            let path = format!(
                "{}/replicationProtectionContainers/{name}/remove",
                fabric.path(conn)
            );
            post(conn, path, json!({})).await?
        }
        S::ProtectionContainer(ContainerCommand::Mapping(command)) => {
            mapping(conn, command).await?
        }
        S::Policy(PolicyCommand::Create {
            vault,
            name,
            recovery_point_history,
            crash_consistent_frequency,
            app_consistent_frequency,
            multi_vm_sync_status,
        }) => {
            let body = json!({ "properties": { "providerSpecificInput": {
                "instanceType": "A2A",
                "recoveryPointHistory": recovery_point_history,
                "crashConsistentFrequencyInMinutes": crash_consistent_frequency,
                "appConsistentFrequencyInMinutes": app_consistent_frequency,
                "multiVmSyncStatus": multi_vm_sync_status,
            }}});
            let path = format!("{}/replicationPolicies/{name}", vault.path(conn));
            conn.management(Method::PUT, &path, Some(&body)).await?
        }
        S::Policy(PolicyCommand::Show { vault, name }) => {
            show(
                conn,
                &format!("{}/replicationPolicies/{name}", vault.path(conn)),
            )
            .await?
        }
        S::Policy(PolicyCommand::List(vault)) => {
            list(conn, &format!("{}/replicationPolicies", vault.path(conn))).await?
        }
        S::Policy(PolicyCommand::Delete { vault, name }) => {
            let path = format!("{}/replicationPolicies/{name}", vault.path(conn));
            conn.management(Method::DELETE, &path, None).await?
        }
        S::ProtectedItem(command) => item(conn, command).await?,
        S::RecoveryPoint(PointCommand::List {
            container,
            replicated_protected_item_name: item,
        }) => {
            let path = format!(
                "{}/replicationProtectedItems/{item}/recoveryPoints",
                container.path(conn)
            );
            list(conn, &path).await?
        }
        S::RecoveryPoint(PointCommand::Show {
            container,
            replicated_protected_item_name: item,
            name,
        }) => {
            let path = format!(
                "{}/replicationProtectedItems/{item}/recoveryPoints/{name}",
                container.path(conn)
            );
            show(conn, &path).await?
        }
    };
    print(&out, format)
}

async fn mapping(conn: &Connection, command: MappingCommand) -> anyhow::Result<Value> {
    let path = |container: &ContainerArgs, name: &str| {
        format!(
            "{}/replicationProtectionContainerMappings/{name}",
            container.path(conn)
        )
    };
    Ok(match command {
        MappingCommand::Create {
            container,
            name,
            policy_id: policy,
            target_container,
        } => {
            let vault = &container.fabric.vault;
            let body = json!({ "properties": {
                "targetProtectionContainerId": container_id(conn, vault, &target_container),
                "policyId": policy_id(conn, vault, &policy),
                "providerSpecificInput": { "instanceType": "A2A" },
            }});
            conn.management(Method::PUT, &path(&container, &name), Some(&body))
                .await?
        }
        MappingCommand::Show { container, name } => show(conn, &path(&container, &name)).await?,
        MappingCommand::List(container) => {
            let all = format!(
                "{}/replicationProtectionContainerMappings",
                container.path(conn)
            );
            list(conn, &all).await?
        }
        MappingCommand::Delete { container, name } => {
            let remove = format!("{}/remove", path(&container, &name));
            post(conn, remove, json!({ "properties": {} })).await?
        }
    })
}

async fn item(conn: &Connection, command: ItemCommand) -> anyhow::Result<Value> {
    use ItemCommand as I;
    Ok(match command {
        I::Create {
            item,
            vm,
            policy_id: policy,
            target_container,
            recovery_resource_group,
            disks,
        } => {
            let vault = &item.container.fabric.vault;
            let rg = vault
                .resource_group
                .clone()
                .unwrap_or_else(|| conn.resource_group.clone());
            let in_rg = |group: &str, kind: &str, name: &str| {
                format!(
                    "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/{kind}/{name}",
                    conn.subscription
                )
            };
            let vm_id = if vm.starts_with('/') {
                vm.clone()
            } else {
                in_rg(&rg, "virtualMachines", &vm)
            };
            let vm_rg = vm_id.split('/').nth(4).unwrap_or(&rg).to_owned();
            let managed: Vec<Value> = disks
                .iter()
                .map(|d| {
                    let (name, des) = d.split_once('=').map_or((d.as_str(), None), |(n, s)| (n, Some(s)));
                    json!({
                        "diskId": if name.starts_with('/') { name.to_owned() } else { in_rg(&vm_rg, "disks", name) },
                        "recoveryDiskEncryptionSetId": des,
                    })
                })
                .collect();
            let mut input = json!({ "instanceType": "A2A", "fabricObjectId": vm_id });
            if let Some(target) = target_container {
                input["recoveryContainerId"] = Value::from(container_id(conn, vault, &target));
            }
            if let Some(group) = recovery_resource_group {
                input["recoveryResourceGroupId"] = Value::from(format!(
                    "/subscriptions/{}/resourceGroups/{group}",
                    conn.subscription
                ));
            }
            if !managed.is_empty() {
                input["vmManagedDisks"] = Value::from(managed);
            }
            let mut properties = json!({ "providerSpecificDetails": input });
            if let Some(policy) = policy {
                properties["policyId"] = Value::from(policy_id(conn, vault, &policy));
            }
            let body = json!({ "properties": properties });
            conn.management(Method::PUT, &item.path(conn), Some(&body))
                .await?
        }
        I::Show(item) => show(conn, &item.path(conn)).await?,
        I::List(container) => {
            let path = format!("{}/replicationProtectedItems", container.path(conn));
            list(conn, &path).await?
        }
        I::Delete(item) => {
            let body = json!({ "properties": { "disableProtectionReason": "NotSpecified" } });
            post(conn, format!("{}/remove", item.path(conn)), body).await?
        }
        I::TestFailover { item, failover } => {
            let mut body = failover_body(&failover, None);
            body["properties"]["networkType"] = Value::from("VmNetworkAsInput");
            post(conn, format!("{}/testFailover", item.path(conn)), body).await?
        }
        I::TestFailoverCleanup(item) => {
            let body = json!({ "properties": { "comments": "" } });
            post(
                conn,
                format!("{}/testFailoverCleanup", item.path(conn)),
                body,
            )
            .await?
        }
        I::UnplannedFailover {
            item,
            failover,
            source_site_operations,
        } => {
            let body = failover_body(&failover, Some(&source_site_operations));
            post(conn, format!("{}/unplannedFailover", item.path(conn)), body).await?
        }
        I::FailoverCommit(item) => {
            post(
                conn,
                format!("{}/failoverCommit", item.path(conn)),
                json!({}),
            )
            .await?
        }
        I::Reprotect(item) => {
            let body =
                json!({ "properties": { "providerSpecificDetails": { "instanceType": "A2A" } } });
            post(conn, format!("{}/reProtect", item.path(conn)), body).await?
        }
    })
}
