//! `atrest disk-encryption-set`, `atrest disk` and `atrest vm`: clients of the ARM-shaped
//! `Microsoft.Compute` API, with `az`'s flags.

use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use crate::connection::Connection;
use crate::output::{print, Format};

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}`.
fn compute_path(conn: &Connection, rg: Option<&str>, kind: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/{kind}/{name}",
        conn.subscription,
        rg.unwrap_or(&conn.resource_group)
    )
}

fn list_path(conn: &Connection, rg: Option<&str>, kind: &str) -> String {
    match rg {
        Some(rg) => format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}",
            conn.subscription
        ),
        None => format!(
            "/subscriptions/{}/providers/Microsoft.Compute/{kind}",
            conn.subscription
        ),
    }
}

/// A disk encryption set reference: a resource id as given, or a name in `rg`.
fn des_id(conn: &Connection, rg: Option<&str>, des: &str) -> String {
    if des.starts_with('/') {
        des.to_owned()
    } else {
        compute_path(conn, rg, "diskEncryptionSets", des)
    }
}

#[derive(Subcommand)]
pub enum DesCommand {
    /// Create a disk encryption set with a system-assigned identity. Grant that identity
    /// (`identity.principalId`) get, wrap and unwrap on the key before creating disks.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
        /// The versioned key URL.
        #[arg(long)]
        key_url: String,
        /// The vault's resource id (or name) holding the key.
        #[arg(long)]
        source_vault: Option<String>,
        #[arg(long, default_value = "EncryptionAtRestWithCustomerKey")]
        encryption_type: String,
        /// Adopt new versions of the key automatically.
        #[arg(long)]
        enable_auto_key_rotation: Option<bool>,
    },
    /// Show a disk encryption set.
    Show(Named),
    /// List disk encryption sets.
    List {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Change the key (every disk of the set is rewrapped to it) or the rotation setting.
    Update {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(long)]
        key_url: Option<String>,
        #[arg(long)]
        source_vault: Option<String>,
        #[arg(long)]
        enable_auto_key_rotation: Option<bool>,
    },
    /// Delete a disk encryption set that no disk uses.
    Delete(Named),
}

#[derive(Subcommand)]
pub enum DiskCommand {
    /// Create an empty managed disk, always encrypted.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
        #[arg(short = 'z', long)]
        size_gb: i64,
        /// A disk encryption set's name or resource id (customer-managed keys).
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// EncryptionAtRestWithPlatformKey (default without a set),
        /// EncryptionAtRestWithCustomerKey (default with one) or
        /// EncryptionAtRestWithPlatformAndCustomerKeys.
        #[arg(long)]
        encryption_type: Option<String>,
    },
    /// Show a disk.
    Show(Named),
    /// List disks.
    List {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Grow a disk or move it to a customer-managed key (which rewraps its data key).
    Update {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'z', long)]
        size_gb: Option<i64>,
        #[arg(long)]
        disk_encryption_set: Option<String>,
        #[arg(long)]
        encryption_type: Option<String>,
    },
    /// Delete a disk and its data keys; its data becomes unrecoverable.
    Delete(Named),
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Create a virtual machine with data disks.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Disks to attach, by name, in LUN order.
        #[arg(long, num_args = 1..)]
        attach_disks: Vec<String>,
    },
    /// Start a virtual machine: unwrap its disks' keys and export the disks over NBD.
    Start(Named),
    /// Stop a virtual machine: end its exports and drop its disks' keys from memory.
    Stop(Named),
    /// Show a virtual machine, with the NBD URI of each disk while it runs.
    Show(Named),
    /// List virtual machines.
    List {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Delete a virtual machine; its disks stay.
    Delete(Named),
}

/// A resource by name, in a resource group (the CLI's default when absent).
#[derive(clap::Args)]
pub struct Named {
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
}

impl Named {
    fn path(&self, conn: &Connection, kind: &str) -> String {
        compute_path(conn, self.resource_group.as_deref(), kind, &self.name)
    }
}

async fn show(conn: &Connection, kind: &str, named: &Named) -> anyhow::Result<Value> {
    conn.management(Method::GET, &named.path(conn, kind), None)
        .await
}

async fn delete(conn: &Connection, kind: &str, named: &Named) -> anyhow::Result<Value> {
    conn.management(Method::DELETE, &named.path(conn, kind), None)
        .await
}

/// A vault reference for `sourceVault.id`: a resource id as given, or a vault name.
fn vault_id(conn: &Connection, rg: Option<&str>, vault: &str) -> String {
    if vault.starts_with('/') {
        vault.to_owned()
    } else {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{vault}",
            conn.subscription,
            rg.unwrap_or(&conn.resource_group)
        )
    }
}

fn active_key(
    conn: &Connection,
    rg: Option<&str>,
    key_url: Option<String>,
    vault: Option<String>,
) -> Option<Value> {
    if key_url.is_none() && vault.is_none() {
        return None;
    }
    let mut key = json!({});
    if let Some(url) = key_url {
        key["keyUrl"] = Value::from(url);
    }
    if let Some(v) = vault {
        key["sourceVault"] = json!({ "id": vault_id(conn, rg, &v) });
    }
    Some(key)
}

async fn get_list(conn: &Connection, path: &str) -> anyhow::Result<Value> {
    Ok(conn.management(Method::GET, path, None).await?["value"].take())
}

pub async fn disk_encryption_set(
    conn: &Connection,
    command: DesCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "diskEncryptionSets";
    use DesCommand as C;
    let out = match command {
        C::Create {
            name,
            resource_group,
            location,
            key_url,
            source_vault,
            encryption_type,
            enable_auto_key_rotation,
        } => {
            let rg = resource_group.as_deref();
            let mut properties = json!({
                "encryptionType": encryption_type,
                "activeKey": active_key(conn, rg, Some(key_url), source_vault),
            });
            if let Some(r) = enable_auto_key_rotation {
                properties["rotationToLatestKeyVersionEnabled"] = Value::from(r);
            }
            let body = json!({ "location": location, "identity": { "type": "SystemAssigned" }, "properties": properties });
            conn.management(
                Method::PUT,
                &compute_path(conn, rg, KIND, &name),
                Some(&body),
            )
            .await?
        }
        C::Show(named) => show(conn, KIND, &named).await?,
        C::List { resource_group } => {
            get_list(conn, &list_path(conn, resource_group.as_deref(), KIND)).await?
        }
        C::Update {
            name,
            resource_group,
            key_url,
            source_vault,
            enable_auto_key_rotation,
        } => {
            let rg = resource_group.as_deref();
            let mut properties = json!({});
            if let Some(key) = active_key(conn, rg, key_url, source_vault) {
                properties["activeKey"] = key;
            }
            if let Some(r) = enable_auto_key_rotation {
                properties["rotationToLatestKeyVersionEnabled"] = Value::from(r);
            }
            let body = json!({ "properties": properties });
            conn.management(
                Method::PATCH,
                &compute_path(conn, rg, KIND, &name),
                Some(&body),
            )
            .await?
        }
        C::Delete(named) => delete(conn, KIND, &named).await?,
    };
    print(&out, format)
}

pub async fn disk(conn: &Connection, command: DiskCommand, format: Format) -> anyhow::Result<()> {
    const KIND: &str = "disks";
    use DiskCommand as C;
    let encryption = |rg: Option<&str>, des: Option<String>, kind: Option<String>| {
        let mut e = json!({});
        if let Some(d) = des {
            e["diskEncryptionSetId"] = Value::from(des_id(conn, rg, &d));
        }
        if let Some(k) = kind {
            e["type"] = Value::from(k);
        }
        e
    };
    let out = match command {
        C::Create {
            name,
            resource_group,
            location,
            size_gb,
            disk_encryption_set,
            encryption_type,
        } => {
            let rg = resource_group.as_deref();
            let body = json!({
                "location": location,
                "sku": { "name": "Standard_LRS" },
                "properties": {
                    "creationData": { "createOption": "Empty" },
                    "diskSizeGB": size_gb,
                    "encryption": encryption(rg, disk_encryption_set, encryption_type),
                },
            });
            conn.management(
                Method::PUT,
                &compute_path(conn, rg, KIND, &name),
                Some(&body),
            )
            .await?
        }
        C::Show(named) => show(conn, KIND, &named).await?,
        C::List { resource_group } => {
            get_list(conn, &list_path(conn, resource_group.as_deref(), KIND)).await?
        }
        C::Update {
            name,
            resource_group,
            size_gb,
            disk_encryption_set,
            encryption_type,
        } => {
            let rg = resource_group.as_deref();
            let mut properties = json!({});
            if let Some(size) = size_gb {
                properties["diskSizeGB"] = Value::from(size);
            }
            if disk_encryption_set.is_some() || encryption_type.is_some() {
                properties["encryption"] = encryption(rg, disk_encryption_set, encryption_type);
            }
            let body = json!({ "properties": properties });
            conn.management(
                Method::PATCH,
                &compute_path(conn, rg, KIND, &name),
                Some(&body),
            )
            .await?
        }
        C::Delete(named) => delete(conn, KIND, &named).await?,
    };
    print(&out, format)
}

pub async fn vm(conn: &Connection, command: VmCommand, format: Format) -> anyhow::Result<()> {
    const KIND: &str = "virtualMachines";
    use VmCommand as C;
    let action = |named: Named, verb: &'static str| async move {
        let path = format!("{}/{verb}", named.path(conn, KIND));
        conn.management(Method::POST, &path, None).await
    };
    let out = match command {
        C::Create {
            name,
            resource_group,
            location,
            attach_disks,
        } => {
            let rg = resource_group.as_deref();
            let disks: Vec<Value> = attach_disks
                .iter()
                .enumerate()
                .map(|(lun, d)| json!({ "lun": lun, "createOption": "Attach", "managedDisk": { "id": compute_path(conn, rg, "disks", d) } }))
                .collect();
            let mut body = json!({ "properties": { "storageProfile": { "dataDisks": disks } } });
            if let Some(l) = location {
                body["location"] = Value::from(l);
            }
            conn.management(
                Method::PUT,
                &compute_path(conn, rg, KIND, &name),
                Some(&body),
            )
            .await?
        }
        C::Start(named) => action(named, "start").await?,
        C::Stop(named) => action(named, "deallocate").await?,
        C::Show(named) => show(conn, KIND, &named).await?,
        C::List { resource_group } => {
            get_list(conn, &list_path(conn, resource_group.as_deref(), KIND)).await?
        }
        C::Delete(named) => delete(conn, KIND, &named).await?,
    };
    print(&out, format)
}
