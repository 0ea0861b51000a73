//! `atrest disk-encryption-set`, `atrest disk`, `atrest snapshot`, `atrest image` and
//! `atrest vm`: clients of the ARM-shaped `Microsoft.Compute` API, with `az`'s flags.

use anyhow::Context;
use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::connection::Connection;
use super::keyvault::vault_path;
use super::output::{print, Format};
use super::transfer;

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}`.
fn compute_path(conn: &Connection, rg: Option<&str>, kind: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/{kind}/{name}",
        conn.subscription,
        rg.unwrap_or(&conn.resource_group)
    )
}

/// A reference given on the command line: a resource id as is, or a name made into one.
fn id_or_name(reference: &str, id_of_name: impl FnOnce(&str) -> String) -> String {
    if reference.starts_with('/') {
        reference.to_owned()
    } else {
        id_of_name(reference)
    }
}

/// A resource by name, in a resource group (the CLI's default when absent).
#[derive(clap::Args)]
pub(crate) struct Named {
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
}

impl Named {
    fn rg(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    /// One management request to this resource of `kind` (or one of its actions).
    async fn call(
        &self,
        conn: &Connection,
        kind: &str,
        method: Method,
        action: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut path = compute_path(conn, self.rg(), kind, &self.name);
        if let Some(action) = action {
            path = format!("{path}/{action}");
        }
        conn.management(method, &path, body.as_ref()).await
    }
}

/// The resources of `kind` in one resource group, or in the whole subscription.
#[derive(clap::Args)]
pub(crate) struct Listed {
    #[arg(short = 'g', long)]
    resource_group: Option<String>,
}

impl Listed {
    async fn call(&self, conn: &Connection, kind: &str) -> anyhow::Result<Value> {
        let scope = match &self.resource_group {
            Some(rg) => format!("/subscriptions/{}/resourceGroups/{rg}", conn.subscription),
            None => format!("/subscriptions/{}", conn.subscription),
        };
        let path = format!("{scope}/providers/Microsoft.Compute/{kind}");
        Ok(conn.management(Method::GET, &path, None).await?["value"].take())
    }
}

#[derive(Subcommand)]
pub(crate) enum DesCommand {
    /// Create a disk encryption set with a system-assigned identity. Grant that identity
    /// (`identity.principalId`) get, wrap and unwrap on the key before creating disks.
    Create {
        #[command(flatten)]
        target: Named,
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
    List(Listed),
    /// Change the key (every disk of the set is rewrapped to it) or the rotation setting.
    Update {
        #[command(flatten)]
        target: Named,
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
pub(crate) enum DiskCommand {
    /// Create an empty managed disk, always encrypted.
    Create {
        #[command(flatten)]
        target: Named,
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
        #[arg(short = 'z', long, required_unless_present_any = ["upload_size_bytes", "source", "image_reference"])]
        size_gb: Option<i64>,
        /// Make the disk from this image (a name in the resource group or a resource id):
        /// its OS disk, or its data disk at `--image-reference-lun`.
        #[arg(long, conflicts_with_all = ["upload_size_bytes", "source"])]
        image_reference: Option<String>,
        #[arg(long, requires = "image_reference")]
        image_reference_lun: Option<u32>,
        /// Copy this disk or snapshot (a name in the resource group, a disk first, or a
        /// resource id): its data and data key.
        #[arg(long, conflicts_with = "upload_size_bytes")]
        source: Option<String>,
        /// A disk encryption set's name or resource id (customer-managed keys).
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// EncryptionAtRestWithPlatformKey (default without a set),
        /// EncryptionAtRestWithCustomerKey (default with one) or
        /// EncryptionAtRestWithPlatformAndCustomerKeys.
        #[arg(long)]
        encryption_type: Option<String>,
        /// Create the disk for an upload of a fixed VHD of this many bytes (whole MiB plus
        /// the 512-byte footer), as `az disk create --for-upload --upload-size-bytes`.
        #[arg(long, conflicts_with = "size_gb")]
        upload_size_bytes: Option<u64>,
    },
    /// Show a disk.
    Show(Named),
    /// List disks.
    List(Listed),
    /// Grow a disk or move it to a customer-managed key (which rewraps its data key).
    Update {
        #[command(flatten)]
        target: Named,
        #[arg(short = 'z', long)]
        size_gb: Option<i64>,
        #[arg(long)]
        disk_encryption_set: Option<String>,
        #[arg(long)]
        encryption_type: Option<String>,
    },
    /// Delete a disk and its data keys; its data becomes unrecoverable.
    Delete(Named),
    /// A time-limited URL that serves the disk's data (plaintext) as a fixed VHD; the
    /// disk cannot run in a VM until the access ends.
    GrantAccess {
        #[command(flatten)]
        target: Named,
        /// How long the URL works.
        #[arg(long, default_value_t = 3600)]
        duration_in_seconds: u64,
        /// `Read` (export) or `Write` (upload, for a disk created with --upload-size-bytes).
        #[arg(long, default_value = "Read")]
        access_level: String,
    },
    /// End the disk's access URL.
    RevokeAccess(Named),
    /// Download the disk's data (plaintext) as a fixed VHD file, through an access URL
    /// granted and revoked for the purpose.
    Download {
        #[command(flatten)]
        target: Named,
        /// Where to write the VHD.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Create a disk from a fixed VHD file: created for upload at the file's size, the
    /// pages written (each encrypted on arrival), the footer checked.
    Upload {
        #[command(flatten)]
        target: Named,
        /// The fixed VHD (`qemu-img convert -O vpc -o subformat=fixed,force_size`).
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
        /// A disk encryption set's name or resource id (customer-managed keys).
        #[arg(long)]
        disk_encryption_set: Option<String>,
        #[arg(long)]
        encryption_type: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Snapshot a disk (or copy a snapshot): constant time, crash-consistent for a
    /// running disk; later writes to the disk never change it.
    Create {
        #[command(flatten)]
        target: Named,
        /// The disk or snapshot (a name in the resource group, a disk first, or a
        /// resource id).
        #[arg(long)]
        source: String,
        /// The source's location when absent; a snapshot stays in its source's region.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// An incremental snapshot: one of the disk's family, whose changes against another
        /// member can be listed.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        incremental: bool,
        /// Copy an incremental snapshot to another region (`--location`) under that
        /// region's keys, in the background (`completionPercent` shows how far it is).
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        copy_start: bool,
        /// A disk encryption set's name or resource id (a full snapshot may move to
        /// another; an incremental one keeps its disk's).
        #[arg(long)]
        disk_encryption_set: Option<String>,
        #[arg(long)]
        encryption_type: Option<String>,
        /// AllowAll, AllowPrivate or DenyAll (no export); the source's when absent.
        #[arg(long)]
        network_access_policy: Option<String>,
    },
    /// Show a snapshot.
    Show(Named),
    /// List snapshots.
    List(Listed),
    /// Change a snapshot's network access policy.
    Update {
        #[command(flatten)]
        target: Named,
        #[arg(long)]
        network_access_policy: Option<String>,
    },
    /// Delete a snapshot; its data goes once no disk or snapshot shares it.
    Delete(Named),
    /// A time-limited URL that serves the snapshot's data (plaintext) as a fixed VHD.
    GrantAccess {
        #[command(flatten)]
        target: Named,
        #[arg(long, default_value_t = 3600)]
        duration_in_seconds: u64,
    },
    /// End the snapshot's access URL.
    RevokeAccess(Named),
}

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Make an image: of a stopped VM's disks, or of an OS disk (a managed disk or
    /// snapshot) and data disks; each is kept as a copy with its data key.
    Create {
        #[command(flatten)]
        target: Named,
        /// A stopped VM, a managed disk or a snapshot (a name, tried in that order, or a
        /// resource id). A disk or snapshot becomes the OS disk.
        #[arg(long)]
        source: String,
        /// Disks or snapshots to include as data disks, LUN 0 onwards.
        #[arg(long, num_args = 1..)]
        data_disk_sources: Vec<String>,
        /// Linux or Windows, for an OS disk.
        #[arg(long, default_value = "Linux")]
        os_type: String,
        #[arg(long, default_value = "V1")]
        hyper_v_generation: String,
        /// The source's location when absent.
        #[arg(short = 'l', long)]
        location: Option<String>,
    },
    /// Show an image.
    Show(Named),
    /// List images.
    List(Listed),
    /// Delete an image; disks made from it keep their data.
    Delete(Named),
}

#[derive(Subcommand)]
pub(crate) enum VmCommand {
    /// Create a virtual machine with data disks.
    Create {
        #[command(flatten)]
        target: Named,
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Disks to attach, by name, in LUN order.
        #[arg(long, num_args = 1..)]
        attach_disks: Vec<String>,
        /// An existing disk to attach as the (Linux) OS disk.
        #[arg(long)]
        attach_os_disk: Option<String>,
    },
    /// Start a virtual machine: unwrap its disks' keys and export the disks over NBD.
    Start {
        #[command(flatten)]
        target: Named,
        /// The replica that serves the disks (its --replica-name); default: the one
        /// answering. Another replica starts serving them within a second.
        #[arg(long)]
        host: Option<String>,
    },
    /// Stop a virtual machine: end its exports and drop its disks' keys from memory.
    Stop(Named),
    /// Show a virtual machine, with the NBD URI of each disk while it runs.
    Show(Named),
    /// List virtual machines.
    List(Listed),
    /// Delete a virtual machine; its disks stay.
    Delete(Named),
    /// Azure Disk Encryption: LUKS volumes inside the disks, their passphrases in a vault.
    #[command(subcommand)]
    Encryption(EncryptionCommand),
}

/// `vm encryption`, as `az vm encryption`.
#[derive(clap::Subcommand)]
pub(crate) enum EncryptionCommand {
    /// Encrypt the machine's volumes (it must be deallocated): data kept, or data volumes
    /// formatted with --encrypt-format-all.
    Enable {
        #[command(flatten)]
        target: Named,
        /// The vault that keeps the passphrases (name or resource id); it needs
        /// enabledForDiskEncryption and the machine's region.
        #[arg(long)]
        disk_encryption_keyvault: String,
        /// A key-encryption key wrapping the passphrases: a versioned key URL, or a key
        /// name in --key-encryption-keyvault.
        #[arg(long)]
        key_encryption_key: Option<String>,
        /// The key-encryption key's vault (default: the disk encryption vault).
        #[arg(long)]
        key_encryption_keyvault: Option<String>,
        /// RSA-OAEP (default), RSA-OAEP-256 or RSA1_5.
        #[arg(long, default_value = "RSA-OAEP")]
        key_encryption_algorithm: String,
        /// OS, DATA or ALL (default: OS for a machine without data disks).
        #[arg(long)]
        volume_type: Option<String>,
        /// Format the data volumes instead of encrypting them in place: their data is lost.
        #[arg(long)]
        encrypt_format_all: bool,
        /// LUKS1 or LUKS2 (default) for new volumes.
        #[arg(long)]
        luks_version: Option<String>,
        /// Skip the client-side checks; the server's rules still apply.
        #[arg(long)]
        force: bool,
    },
    /// Decrypt the data volumes in place (Linux decrypts data volumes only).
    Disable {
        #[command(flatten)]
        target: Named,
        /// DATA (default); anything else needs --force and is refused by the server.
        #[arg(long)]
        volume_type: Option<String>,
        /// Pass a volume type other than DATA on to the server.
        #[arg(long)]
        force: bool,
    },
    /// Show the encryption status of the machine's volumes.
    Show(Named),
}

/// The `properties` of a set: only what was given, so an update changes only that.
fn des_properties(
    conn: &Connection,
    rg: Option<&str>,
    key_url: Option<String>,
    vault: Option<String>,
    rotate: Option<bool>,
) -> Value {
    let mut properties = json!({});
    if key_url.is_some() || vault.is_some() {
        let mut key = json!({});
        if let Some(url) = key_url {
            key["keyUrl"] = Value::from(url);
        }
        if let Some(v) = vault {
            key["sourceVault"] = json!({ "id": id_or_name(&v, |n| vault_path(conn, rg, n)) });
        }
        properties["activeKey"] = key;
    }
    if let Some(r) = rotate {
        properties["rotationToLatestKeyVersionEnabled"] = Value::from(r);
    }
    properties
}

pub(crate) async fn disk_encryption_set(
    conn: &Connection,
    command: DesCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "diskEncryptionSets";
    use DesCommand as C;
    let out = match command {
        C::Create {
            target,
            location,
            key_url,
            source_vault,
            encryption_type,
            enable_auto_key_rotation,
        } => {
            let mut properties = des_properties(
                conn,
                target.rg(),
                Some(key_url),
                source_vault,
                enable_auto_key_rotation,
            );
            properties["encryptionType"] = Value::from(encryption_type);
            let body = json!({ "location": location, "identity": { "type": "SystemAssigned" }, "properties": properties });
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?
        }
        C::Show(target) => target.call(conn, KIND, Method::GET, None, None).await?,
        C::List(listed) => listed.call(conn, KIND).await?,
        C::Update {
            target,
            key_url,
            source_vault,
            enable_auto_key_rotation,
        } => {
            let properties = des_properties(
                conn,
                target.rg(),
                key_url,
                source_vault,
                enable_auto_key_rotation,
            );
            let body = json!({ "properties": properties });
            target
                .call(conn, KIND, Method::PATCH, None, Some(body))
                .await?
        }
        C::Delete(target) => target.call(conn, KIND, Method::DELETE, None, None).await?,
    };
    print(&out, format)
}

pub(crate) async fn disk(
    conn: &Connection,
    command: DiskCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "disks";
    use DiskCommand as C;
    let encryption = |rg: Option<&str>, des: Option<String>, kind: Option<String>| {
        let mut e = json!({});
        if let Some(d) = des {
            let id = id_or_name(&d, |n| compute_path(conn, rg, "diskEncryptionSets", n));
            e["diskEncryptionSetId"] = Value::from(id);
        }
        if let Some(k) = kind {
            e["type"] = Value::from(k);
        }
        e
    };
    let out = match command {
        C::Create {
            target,
            location,
            size_gb,
            source,
            image_reference,
            image_reference_lun,
            disk_encryption_set,
            encryption_type,
            upload_size_bytes,
        } => {
            let creation = match (upload_size_bytes, source, image_reference) {
                (Some(bytes), ..) => {
                    json!({ "createOption": "Upload", "uploadSizeBytes": bytes })
                }
                (None, Some(source), _) => json!({
                    "createOption": "Copy",
                    "sourceResourceId": source_id(conn, target.rg(), &source).await,
                }),
                (None, None, Some(image)) => {
                    let id = id_or_name(&image, |n| compute_path(conn, target.rg(), "images", n));
                    let mut reference = json!({ "id": id });
                    if let Some(lun) = image_reference_lun {
                        reference["lun"] = Value::from(lun);
                    }
                    json!({ "createOption": "FromImage", "imageReference": reference })
                }
                (None, None, None) => json!({ "createOption": "Empty" }),
            };
            let body = json!({
                "location": location,
                "sku": { "name": "Standard_LRS" },
                "properties": {
                    "creationData": creation,
                    "diskSizeGB": size_gb,
                    "encryption": encryption(target.rg(), disk_encryption_set, encryption_type),
                },
            });
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?
        }
        C::Show(target) => target.call(conn, KIND, Method::GET, None, None).await?,
        C::List(listed) => listed.call(conn, KIND).await?,
        C::Update {
            target,
            size_gb,
            disk_encryption_set,
            encryption_type,
        } => {
            let mut properties = json!({});
            if let Some(size) = size_gb {
                properties["diskSizeGB"] = Value::from(size);
            }
            if disk_encryption_set.is_some() || encryption_type.is_some() {
                properties["encryption"] =
                    encryption(target.rg(), disk_encryption_set, encryption_type);
            }
            let body = json!({ "properties": properties });
            target
                .call(conn, KIND, Method::PATCH, None, Some(body))
                .await?
        }
        C::Delete(target) => target.call(conn, KIND, Method::DELETE, None, None).await?,
        C::GrantAccess {
            target,
            duration_in_seconds,
            access_level,
        } => grant_access(conn, &target, KIND, duration_in_seconds, &access_level).await?,
        C::Download { target, file } => {
            let path = compute_path(conn, target.rg(), KIND, &target.name);
            transfer::download(conn, &path, &file).await?
        }
        C::Upload {
            target,
            file,
            location,
            disk_encryption_set,
            encryption_type,
        } => {
            let bytes = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            let body = json!({
                "location": location,
                "properties": {
                    "creationData": { "createOption": "Upload", "uploadSizeBytes": bytes },
                    "encryption": encryption(target.rg(), disk_encryption_set, encryption_type),
                },
            });
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?;
            let path = compute_path(conn, target.rg(), KIND, &target.name);
            transfer::upload(conn, &path, &file).await?;
            target.call(conn, KIND, Method::GET, None, None).await?
        }
        C::RevokeAccess(target) => {
            target
                .call(conn, KIND, Method::POST, Some("endGetAccess"), None)
                .await?
        }
    };
    print(&out, format)
}

pub(crate) async fn vm(
    conn: &Connection,
    command: VmCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "virtualMachines";
    use VmCommand as C;
    let out = match command {
        C::Create {
            target,
            location,
            attach_disks,
            attach_os_disk,
        } => {
            let disks: Vec<Value> = attach_disks
                .iter()
                .enumerate()
                .map(|(lun, d)| json!({ "lun": lun, "createOption": "Attach", "managedDisk": { "id": compute_path(conn, target.rg(), "disks", d) } }))
                .collect();
            let mut body = json!({ "properties": { "storageProfile": { "dataDisks": disks } } });
            if let Some(os) = attach_os_disk {
                body["properties"]["storageProfile"]["osDisk"] = json!({
                    "osType": "Linux",
                    "createOption": "Attach",
                    "managedDisk": { "id": id_or_name(&os, |n| compute_path(conn, target.rg(), "disks", n)) },
                });
            }
            if let Some(l) = location {
                body["location"] = Value::from(l);
            }
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?
        }
        C::Start { target, host } => {
            let action = match host {
                Some(host) => {
                    atrest_core::names::check_replica_name(&host)?;
                    format!("start?host={host}")
                }
                None => "start".to_owned(),
            };
            target
                .call(conn, KIND, Method::POST, Some(&action), None)
                .await?
        }
        C::Stop(target) => {
            target
                .call(conn, KIND, Method::POST, Some("deallocate"), None)
                .await?
        }
        C::Show(target) => target.call(conn, KIND, Method::GET, None, None).await?,
        C::List(listed) => listed.call(conn, KIND).await?,
        C::Delete(target) => target.call(conn, KIND, Method::DELETE, None, None).await?,
        C::Encryption(command) => encryption(conn, command).await?,
    };
    print(&out, format)
}

/// The extension `az vm encryption` creates.
const ADE_EXTENSION: &str = "AzureDiskEncryptionForLinux";

/// `vm encryption enable|disable|show`: the `AzureDiskEncryptionForLinux` extension, as
/// `az` writes and reads it.
async fn encryption(conn: &Connection, command: EncryptionCommand) -> anyhow::Result<Value> {
    const KIND: &str = "virtualMachines";
    use EncryptionCommand as C;
    let (target, settings) = match command {
        C::Show(target) => {
            let path = compute_path(conn, target.rg(), KIND, &target.name);
            let vm = conn
                .management(Method::GET, &format!("{path}?$expand=instanceView"), None)
                .await?;
            let view = &vm["properties"]["instanceView"];
            let ade = view["extensions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"].as_str() == Some(ADE_EXTENSION));
            let Some(ade) = ade else {
                eprintln!("Azure Disk Encryption is not enabled");
                return Ok(Value::Null);
            };
            let disks: Vec<Value> = view["disks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    json!({
                        "name": d["name"],
                        "encryptionSettings": d["encryptionSettings"],
                        "statuses": d["statuses"],
                    })
                })
                .collect();
            return Ok(json!({
                "status": ade["statuses"],
                "substatus": ade["substatuses"],
                "disks": disks,
            }));
        }
        C::Disable {
            target,
            volume_type,
            force,
        } => {
            let volume_type = volume_type.unwrap_or_else(|| "DATA".to_owned());
            if !force && !volume_type.eq_ignore_ascii_case("DATA") {
                anyhow::bail!("Only Data disks can have encryption disabled in a Linux VM. Use '--force' to ignore the warning");
            }
            let settings = json!({
                "VolumeType": volume_type,
                "EncryptionOperation": "DisableEncryption",
                "SequenceVersion": atrest_crypto::random_uuid(),
            });
            (target, settings)
        }
        C::Enable {
            target,
            disk_encryption_keyvault,
            key_encryption_key,
            key_encryption_keyvault,
            key_encryption_algorithm,
            volume_type,
            encrypt_format_all,
            luks_version,
            force,
        } => {
            let vm = target.call(conn, KIND, Method::GET, None, None).await?;
            let volume_type = match volume_type {
                Some(v) => v,
                None if vm["properties"]["storageProfile"]["dataDisks"]
                    .as_array()
                    .is_some_and(|d| !d.is_empty()) =>
                {
                    anyhow::bail!("VM has data disks, please supply --volume-type")
                }
                None => "OS".to_owned(),
            };
            let vault_id = id_or_name(&disk_encryption_keyvault, |n| {
                vault_path(conn, target.rg(), n)
            });
            let vault = conn.management(Method::GET, &vault_id, None).await?;
            if !force {
                // `az`'s own checks, before anything is sent.
                if vault["properties"]["enabledForDiskEncryption"] != Value::Bool(true) {
                    anyhow::bail!(
                        "ERROR: Keyvault '{}' is not enabled for disk encryption.",
                        vault["name"].as_str().unwrap_or_default()
                    );
                }
                if vault["location"] != vm["location"] {
                    anyhow::bail!(
                        "ERROR: VM {}'s region does not match keyvault's region.",
                        target.name
                    );
                }
            }
            let vault_url = vault["properties"]["vaultUri"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let kek_vault_id = key_encryption_keyvault
                .map(|v| id_or_name(&v, |n| vault_path(conn, target.rg(), n)))
                .unwrap_or_else(|| vault_id.clone());
            let kek_url = match key_encryption_key {
                None => None,
                Some(url) if url.contains("://") => Some(url),
                Some(name) => {
                    let kek_vault = kek_vault_id.rsplit('/').next().unwrap_or_default();
                    let key = conn
                        .data_plane(kek_vault, Method::GET, &format!("/keys/{name}"), "", None)
                        .await?;
                    Some(key["key"]["kid"].as_str().unwrap_or_default().to_owned())
                }
            };
            let mut settings = json!({
                "KeyVaultURL": vault_url,
                "VolumeType": volume_type,
                "EncryptionOperation": if encrypt_format_all { "EnableEncryptionFormatAll" } else { "EnableEncryption" },
                "KeyEncryptionKeyURL": kek_url,
                "KeyEncryptionAlgorithm": key_encryption_algorithm,
                "SequenceVersion": atrest_crypto::random_uuid(),
                "KeyVaultResourceId": vault_id,
                "KekVaultResourceId": if kek_url.is_some() { kek_vault_id } else { String::new() },
            });
            if let Some(luks) = luks_version {
                settings["LuksVersion"] = Value::from(luks);
            }
            (target, settings)
        }
    };
    let vm = target.call(conn, KIND, Method::GET, None, None).await?;
    let body = json!({
        "location": vm["location"],
        "properties": {
            "publisher": "Microsoft.Azure.Security",
            "type": ADE_EXTENSION,
            "typeHandlerVersion": "1.1",
            "autoUpgradeMinorVersion": true,
            "settings": settings,
        },
    });
    let action = format!("extensions/{ADE_EXTENSION}");
    target
        .call(conn, KIND, Method::PUT, Some(&action), Some(body))
        .await
}

/// The resource id of a `--source`: an id as given, else the first resource of that name
/// in the resource group among `kinds`, tried in order (the last when none exists).
async fn resolve_id(
    conn: &Connection,
    rg: Option<&str>,
    reference: &str,
    kinds: &[&str],
) -> String {
    if reference.starts_with('/') {
        return reference.to_owned();
    }
    let (last, tried) = kinds.split_last().expect("at least one kind");
    for kind in tried {
        let path = compute_path(conn, rg, kind, reference);
        if conn.management(Method::GET, &path, None).await.is_ok() {
            return path;
        }
    }
    compute_path(conn, rg, last, reference)
}

/// A disk or snapshot named by `--source`, a disk first (as `az`).
async fn source_id(conn: &Connection, rg: Option<&str>, reference: &str) -> String {
    resolve_id(conn, rg, reference, &["disks", "snapshots"]).await
}

/// `grant-access`: `beginGetAccess` on a disk or snapshot, printing `accessSas` as `az`.
async fn grant_access(
    conn: &Connection,
    target: &Named,
    kind: &str,
    duration_in_seconds: u64,
    access: &str,
) -> anyhow::Result<Value> {
    let body = json!({
        "access": access,
        "durationInSeconds": duration_in_seconds,
        "fileFormat": "VHD",
    });
    let granted = target
        .call(conn, kind, Method::POST, Some("beginGetAccess"), Some(body))
        .await?;
    Ok(json!({ "accessSas": granted["accessSAS"] }))
}

pub(crate) async fn snapshot(
    conn: &Connection,
    command: SnapshotCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "snapshots";
    use SnapshotCommand as C;
    let out = match command {
        C::Create {
            target,
            source,
            location,
            incremental,
            copy_start,
            disk_encryption_set,
            encryption_type,
            network_access_policy,
        } => {
            let source = source_id(conn, target.rg(), &source).await;
            let location = match location {
                Some(l) => l,
                None => conn.management(Method::GET, &source, None).await?["location"]
                    .as_str()
                    .context("the source has no location")?
                    .to_owned(),
            };
            let mut encryption = json!({});
            if let Some(d) = disk_encryption_set {
                encryption["diskEncryptionSetId"] = Value::from(id_or_name(&d, |n| {
                    compute_path(conn, target.rg(), "diskEncryptionSets", n)
                }));
            }
            if let Some(t) = encryption_type {
                encryption["type"] = Value::from(t);
            }
            let mut properties = json!({
                "creationData": {
                    "createOption": if copy_start { "CopyStart" } else { "Copy" },
                    "sourceResourceId": source,
                },
                "incremental": incremental || copy_start,
            });
            if encryption.as_object().is_some_and(|e| !e.is_empty()) {
                properties["encryption"] = encryption;
            }
            if let Some(policy) = network_access_policy {
                properties["networkAccessPolicy"] = Value::from(policy);
            }
            let body = json!({ "location": location, "properties": properties });
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?
        }
        C::Show(target) => target.call(conn, KIND, Method::GET, None, None).await?,
        C::List(listed) => listed.call(conn, KIND).await?,
        C::Update {
            target,
            network_access_policy,
        } => {
            let mut properties = json!({});
            if let Some(policy) = network_access_policy {
                properties["networkAccessPolicy"] = Value::from(policy);
            }
            let body = json!({ "properties": properties });
            target
                .call(conn, KIND, Method::PATCH, None, Some(body))
                .await?
        }
        C::Delete(target) => target.call(conn, KIND, Method::DELETE, None, None).await?,
        C::GrantAccess {
            target,
            duration_in_seconds,
        } => grant_access(conn, &target, KIND, duration_in_seconds, "Read").await?,
        C::RevokeAccess(target) => {
            target
                .call(conn, KIND, Method::POST, Some("endGetAccess"), None)
                .await?
        }
    };
    print(&out, format)
}

/// `{"managedDisk": {"id"}}` or `{"snapshot": {"id"}}` for a disk or snapshot id.
fn image_disk_source(id: &str) -> Value {
    if id
        .to_ascii_lowercase()
        .contains("/microsoft.compute/snapshots/")
    {
        json!({ "snapshot": { "id": id } })
    } else {
        json!({ "managedDisk": { "id": id } })
    }
}

pub(crate) async fn image(
    conn: &Connection,
    command: ImageCommand,
    format: Format,
) -> anyhow::Result<()> {
    const KIND: &str = "images";
    use ImageCommand as C;
    let out = match command {
        C::Create {
            target,
            source,
            data_disk_sources,
            os_type,
            hyper_v_generation,
            location,
        } => {
            let kinds = ["virtualMachines", "disks", "snapshots"];
            let source = resolve_id(conn, target.rg(), &source, &kinds).await;
            let location = match location {
                Some(l) => l,
                None => conn.management(Method::GET, &source, None).await?["location"]
                    .as_str()
                    .context("the source has no location")?
                    .to_owned(),
            };
            let mut properties = json!({ "hyperVGeneration": hyper_v_generation });
            if source
                .to_ascii_lowercase()
                .contains("/microsoft.compute/virtualmachines/")
            {
                properties["sourceVirtualMachine"] = json!({ "id": source });
            } else {
                let mut os_disk = image_disk_source(&source);
                os_disk["osType"] = Value::from(os_type);
                os_disk["osState"] = Value::from("Generalized");
                let mut data_disks = Vec::new();
                for (lun, data) in data_disk_sources.iter().enumerate() {
                    let mut disk = image_disk_source(&source_id(conn, target.rg(), data).await);
                    disk["lun"] = Value::from(lun);
                    data_disks.push(disk);
                }
                properties["storageProfile"] =
                    json!({ "osDisk": os_disk, "dataDisks": data_disks });
            }
            let body = json!({ "location": location, "properties": properties });
            target
                .call(conn, KIND, Method::PUT, None, Some(body))
                .await?
        }
        C::Show(target) => target.call(conn, KIND, Method::GET, None, None).await?,
        C::List(listed) => listed.call(conn, KIND).await?,
        C::Delete(target) => target.call(conn, KIND, Method::DELETE, None, None).await?,
    };
    print(&out, format)
}
