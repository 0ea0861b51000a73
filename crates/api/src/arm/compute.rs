//! The ARM-shaped compute provider: `Microsoft.Compute/diskEncryptionSets`, `disks` and
//! `virtualMachines` (with the `start`, `powerOff` and `deallocate` actions).

use std::collections::BTreeMap;

use atrest_core::names::check_resource_group_name;
use atrest_core::operation::Operation;
use atrest_disk::{
    AdeVolume, DesRequest, Disk, DiskEncryptionSet, DiskRequest, EncryptionStatus,
    ExtensionRequest, Image, ImageDiskRequest, ImageRequest, SnapshotRequest, VirtualMachine,
    VmExtension, VmRequest,
};
use atrest_identity::{Caller, RoleError};
use atrest_runtime::time::rfc3339;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::arm::authorization;
use crate::body::{parse_json, read_body};
use crate::client::percent_encode;
use crate::error::ApiError;
use crate::http::{created_status, deleted_status, empty, json, seg, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// The resource types this provider serves, as they appear in paths.
const KINDS: [&str; 5] = [
    "diskEncryptionSets",
    "disks",
    "images",
    "snapshots",
    "virtualMachines",
];

/// The canonical spelling of a resource type segment.
pub(crate) fn kind_of(segment: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|k| k.eq_ignore_ascii_case(segment))
}

#[derive(Deserialize, Default)]
struct SourceVaultDto {
    id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KeyDto {
    key_url: Option<String>,
    source_vault: Option<SourceVaultDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DesPropertiesDto {
    encryption_type: Option<String>,
    active_key: Option<KeyDto>,
    rotation_to_latest_key_version_enabled: Option<bool>,
}

#[derive(Deserialize)]
struct IdentityDto {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct DesDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    identity: Option<IdentityDto>,
    properties: Option<DesPropertiesDto>,
}

impl DesDto {
    fn into_request(self) -> Result<DesRequest, ApiError> {
        if let Some(kind) = self.identity.and_then(|i| i.kind) {
            if !kind.eq_ignore_ascii_case("SystemAssigned") {
                return Err(ApiError::bad_request(
                    "InvalidParameter",
                    format!("The identity type '{kind}' is not supported; a disk encryption set here has a SystemAssigned identity."),
                ));
            }
        }
        let p = self.properties.unwrap_or_default();
        let key = p.active_key.unwrap_or_default();
        Ok(DesRequest {
            location: self.location,
            tags: self.tags,
            encryption_type: p.encryption_type,
            key_url: key.key_url,
            source_vault: key.source_vault.and_then(|v| v.id),
            rotation_to_latest_key_version: p.rotation_to_latest_key_version_enabled,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreationDataDto {
    create_option: Option<String>,
    upload_size_bytes: Option<u64>,
    source_resource_id: Option<String>,
    image_reference: Option<ImageReferenceDto>,
}

#[derive(Deserialize)]
struct ImageReferenceDto {
    id: Option<String>,
    lun: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionDto {
    #[serde(rename = "type")]
    kind: Option<String>,
    disk_encryption_set_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DiskPropertiesDto {
    creation_data: Option<CreationDataDto>,
    #[serde(rename = "diskSizeGB")]
    disk_size_gb: Option<i64>,
    encryption: Option<EncryptionDto>,
    network_access_policy: Option<String>,
    data_access_auth_mode: Option<String>,
}

#[derive(Deserialize)]
struct DiskDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<DiskPropertiesDto>,
}

impl DiskDto {
    fn into_request(self) -> Result<DiskRequest, ApiError> {
        let p = self.properties.unwrap_or_default();
        let creation = p.creation_data.unwrap_or_default();
        let mut image = None;
        let (upload_size_bytes, source) = match creation.create_option.as_deref() {
            None => (None, None),
            Some(o) if o.eq_ignore_ascii_case("Empty") => (None, None),
            Some(o) if o.eq_ignore_ascii_case("FromImage") => {
                let reference = creation.image_reference.and_then(|r| r.id.map(|id| (id, r.lun)));
                image = Some(reference.ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidParameter",
                        "Required parameter 'creationData.imageReference.id' is missing (null).",
                    )
                })?);
                (None, None)
            }
            Some(o) if o.eq_ignore_ascii_case("Upload") => (
                Some(creation.upload_size_bytes.ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidParameter",
                        "Required parameter 'creationData.uploadSizeBytes' is missing (null).",
                    )
                })?),
                None,
            ),
            Some(o) if o.eq_ignore_ascii_case("Copy") => (
                None,
                Some(creation.source_resource_id.ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidParameter",
                        "Required parameter 'creationData.sourceResourceId' is missing (null).",
                    )
                })?),
            ),
            Some(o) => {
                return Err(ApiError::bad_request(
                    "InvalidParameter",
                    format!(
                        "The createOption '{o}' is not supported; use 'Empty', 'Upload', 'Copy' or 'FromImage'."
                    ),
                ))
            }
        };
        let (encryption_type, disk_encryption_set) = match p.encryption {
            Some(e) => (e.kind, e.disk_encryption_set_id),
            None => (None, None),
        };
        Ok(DiskRequest {
            location: self.location,
            tags: self.tags,
            size_gb: p.disk_size_gb,
            encryption_type,
            disk_encryption_set,
            network_access_policy: p.network_access_policy,
            data_access_auth_mode: p.data_access_auth_mode,
            upload_size_bytes,
            source,
            image,
        })
    }
}

#[derive(Deserialize)]
struct SubResourceDto {
    id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImageDiskDto {
    lun: Option<u32>,
    os_type: Option<String>,
    os_state: Option<String>,
    managed_disk: Option<SubResourceDto>,
    snapshot: Option<SubResourceDto>,
    blob_uri: Option<String>,
    disk_encryption_set: Option<SubResourceDto>,
}

impl ImageDiskDto {
    fn into_request(self, data_disk: bool) -> Result<ImageDiskRequest, ApiError> {
        if data_disk && self.lun.is_none() {
            return Err(ApiError::bad_request(
                "InvalidParameter",
                "Required parameter 'storageProfile.dataDisks[].lun' is missing (null).",
            ));
        }
        let id = |r: Option<SubResourceDto>| r.and_then(|r| r.id);
        Ok(ImageDiskRequest {
            lun: if data_disk { self.lun } else { None },
            os_type: self.os_type,
            os_state: self.os_state,
            managed_disk: id(self.managed_disk),
            snapshot: id(self.snapshot),
            blob_uri: self.blob_uri,
            disk_encryption_set: id(self.disk_encryption_set),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImageStorageProfileDto {
    os_disk: Option<ImageDiskDto>,
    data_disks: Option<Vec<ImageDiskDto>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImagePropertiesDto {
    source_virtual_machine: Option<SubResourceDto>,
    storage_profile: Option<ImageStorageProfileDto>,
    hyper_v_generation: Option<String>,
}

#[derive(Deserialize)]
struct ImageDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<ImagePropertiesDto>,
}

impl ImageDto {
    fn into_request(self) -> Result<ImageRequest, ApiError> {
        let p = self.properties.unwrap_or_default();
        let profile = p.storage_profile.unwrap_or_default();
        Ok(ImageRequest {
            location: self.location,
            tags: self.tags,
            source_vm: p.source_virtual_machine.and_then(|r| r.id),
            os_disk: profile.os_disk.map(|d| d.into_request(false)).transpose()?,
            data_disks: profile
                .data_disks
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.into_request(true))
                .collect::<Result<_, _>>()?,
            hyper_v_generation: p.hyper_v_generation,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SnapshotPropertiesDto {
    creation_data: Option<CreationDataDto>,
    incremental: Option<bool>,
    encryption: Option<EncryptionDto>,
    network_access_policy: Option<String>,
    data_access_auth_mode: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<SnapshotPropertiesDto>,
}

impl SnapshotDto {
    fn into_request(self) -> SnapshotRequest {
        let p = self.properties.unwrap_or_default();
        let creation = p.creation_data.unwrap_or_default();
        let (encryption_type, disk_encryption_set) = match p.encryption {
            Some(e) => (e.kind, e.disk_encryption_set_id),
            None => (None, None),
        };
        SnapshotRequest {
            location: self.location,
            tags: self.tags,
            create_option: creation.create_option,
            source: creation.source_resource_id,
            incremental: p.incremental,
            encryption_type,
            disk_encryption_set,
            network_access_policy: p.network_access_policy,
            data_access_auth_mode: p.data_access_auth_mode,
        }
    }
}

#[derive(Deserialize)]
struct ManagedDiskDto {
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataDiskDto {
    name: Option<String>,
    managed_disk: Option<ManagedDiskDto>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StorageProfileDto {
    data_disks: Option<Vec<DataDiskDto>>,
    os_disk: Option<OsDiskDto>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OsDiskDto {
    name: Option<String>,
    managed_disk: Option<ManagedDiskDto>,
    os_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VmPropertiesDto {
    storage_profile: Option<StorageProfileDto>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExtensionPropertiesDto {
    publisher: Option<String>,
    #[serde(rename = "type")]
    extension_type: Option<String>,
    type_handler_version: Option<String>,
    auto_upgrade_minor_version: Option<bool>,
    settings: Option<serde_json::Map<String, Value>>,
    protected_settings: Option<Value>,
}

#[derive(Deserialize)]
struct ExtensionDto {
    properties: Option<ExtensionPropertiesDto>,
}

impl ExtensionDto {
    fn into_request(self) -> Result<ExtensionRequest, ApiError> {
        let p = self.properties.unwrap_or_default();
        if p.protected_settings.as_ref().is_some_and(|v| match v {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            _ => true,
        }) {
            return Err(ApiError::bad_request(
                "InvalidParameter",
                "protectedSettings are not accepted: single-pass Azure Disk Encryption takes none (an AAD client secret belongs to the retired dual-pass version).",
            ));
        }
        let mut settings = BTreeMap::new();
        for (key, value) in p.settings.unwrap_or_default() {
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(_) | Value::Number(_) => value.to_string(),
                _ => {
                    return Err(ApiError::bad_request(
                        "InvalidParameter",
                        format!("The setting '{key}' must be a string."),
                    ))
                }
            };
            settings.insert(key, text);
        }
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidParameter",
                    format!("Required parameter 'properties.{name}' is missing (null)."),
                )
            })
        };
        Ok(ExtensionRequest {
            publisher: required(p.publisher, "publisher")?,
            extension_type: required(p.extension_type, "type")?,
            type_handler_version: required(p.type_handler_version, "typeHandlerVersion")?,
            auto_upgrade_minor_version: p.auto_upgrade_minor_version.unwrap_or(false),
            settings,
        })
    }
}

/// Whether the request asks for instance views (`$expand=instanceView`).
fn expanded(query: &[(String, String)]) -> bool {
    query
        .iter()
        .any(|(k, v)| k == "$expand" && v.eq_ignore_ascii_case("instanceView"))
}

#[derive(Deserialize)]
struct VmDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<VmPropertiesDto>,
}

impl VmDto {
    fn into_request(self) -> Result<VmRequest, ApiError> {
        let storage = self.properties.unwrap_or_default().storage_profile;
        let (data_disks, os_disk) = match storage {
            Some(s) => (s.data_disks, s.os_disk),
            None => (None, None),
        };
        let os_disk = match os_disk {
            None => None,
            Some(os) => {
                if os
                    .os_type
                    .as_deref()
                    .is_some_and(|t| !t.eq_ignore_ascii_case("Linux"))
                {
                    return Err(ApiError::bad_request(
                        "InvalidParameter",
                        "Only Linux OS disks are supported (storageProfile.osDisk.osType).",
                    ));
                }
                Some(
                    os.managed_disk
                        .and_then(|m| m.id)
                        .or(os.name)
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "InvalidParameter",
                                "The OS disk needs managedDisk.id or a name.",
                            )
                        })?,
                )
            }
        };
        let disks = match data_disks {
            Some(list) => Some(
                list.into_iter()
                    .map(|d| {
                        d.managed_disk.and_then(|m| m.id).or(d.name).ok_or_else(|| {
                            ApiError::bad_request(
                                "InvalidParameter",
                                "Each data disk needs managedDisk.id or a name.",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        Ok(VmRequest {
            location: self.location,
            tags: self.tags,
            disks,
            os_disk,
        })
    }
}

fn key_json(key: &atrest_disk::KeyRef) -> Value {
    json!({ "sourceVault": { "id": key.source_vault }, "keyUrl": key.key_url })
}

fn des_json(state: &AppState, des: &DiskEncryptionSet) -> Value {
    let mut properties = json!({
        "encryptionType": des.encryption_type,
        "activeKey": key_json(&des.active_key),
        "previousKeys": des.previous_keys.iter().map(key_json).collect::<Vec<_>>(),
        "rotationToLatestKeyVersionEnabled": des.rotation_to_latest_key_version,
        "provisioningState": "Succeeded",
    });
    if let Some(t) = des.last_key_rotation {
        properties["lastKeyRotationTimestamp"] = Value::from(rfc3339(t));
    }
    if let Some(message) = &des.auto_key_rotation_error {
        properties["autoKeyRotationError"] =
            json!({ "code": "KeyRotationFailed", "message": message });
    }
    json!({
        "id": des.id,
        "name": des.name,
        "type": "Microsoft.Compute/diskEncryptionSets",
        "location": des.location,
        "tags": des.tags,
        "identity": {
            "type": "SystemAssigned",
            "principalId": des.principal_id,
            "tenantId": state.identity.tenant(),
        },
        "properties": properties,
    })
}

fn vm_id(state: &AppState, resource_group: &str, vm: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{vm}",
        state.settings.subscription
    )
}

/// The body of `beginGetAccess`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GrantAccessDto {
    access: String,
    duration_in_seconds: u64,
    file_format: Option<String>,
}

impl GrantAccessDto {
    /// Read access to a fixed VHD is what is served; writing (upload) and VHDX are not.
    fn check(&self) -> Result<(), ApiError> {
        let known = ["Read", "Write"];
        if !known.iter().any(|a| a.eq_ignore_ascii_case(&self.access)) {
            return Err(ApiError::bad_request(
                "InvalidParameter",
                format!(
                    "The value '{}' of parameter 'access' is not supported; use 'Read' or 'Write'.",
                    self.access
                ),
            ));
        }
        match self.file_format.as_deref() {
            None => Ok(()),
            Some(f) if f.eq_ignore_ascii_case("VHD") => Ok(()),
            Some(f) => Err(ApiError::bad_request(
                "InvalidParameter",
                format!("The value '{f}' of parameter 'fileFormat' is not supported; use 'VHD'."),
            )),
        }
    }
}

/// The URL that serves disk `name` as a fixed VHD until `expires`, in the shape of a
/// blob URL with a SAS (`BlobClient.from_blob_url` takes it): the token is the signature.
fn access_url(
    state: &AppState,
    resource_group: &str,
    name: &str,
    token: &str,
    expires: i64,
) -> String {
    format!(
        "{}/{ACCESS_ACCOUNT}/{}/{}.vhd?sv=2018-03-28&sr=b&sp=r&se={}&sig={token}",
        state.identity.authority(),
        resource_group.to_ascii_lowercase(),
        name.to_ascii_lowercase(),
        percent_encode(&rfc3339(expires)),
    )
}

/// The first path segment of disk access URLs (a blob URL's account on a local endpoint).
pub(crate) const ACCESS_ACCOUNT: &str = "atrest-md";

fn disk_json(state: &AppState, disk: &Disk) -> Value {
    // A disk is open exactly while the machine it is attached to runs.
    let open = state.compute.key_available(disk);
    let access = state
        .compute
        .access_active(disk, atrest_runtime::time::unix_now().0);
    let disk_state = match (access, &disk.managed_by, open) {
        (Some(true), ..) => "ActiveUpload",
        (Some(false), ..) => "ActiveSAS",
        (None, ..) if disk.awaiting_upload => "ReadyToUpload",
        (None, None, _) => "Unattached",
        (None, Some(_), None) => "Reserved",
        (None, Some(_), Some(_)) => "Attached",
    };
    let mut encryption = json!({ "type": disk.encryption_type });
    if let Some(des) = &disk.disk_encryption_set {
        encryption["diskEncryptionSetId"] = Value::from(des.as_str());
    }
    let key_access = match (&disk.key_error, open) {
        (Some(error), _) => json!({ "status": "Unavailable", "message": error }),
        (None, Some(false)) => json!({ "status": "Unavailable" }),
        (None, _) => json!({ "status": "Available" }),
    };
    let mut creation = json!({ "createOption": disk.create_option.as_deref().unwrap_or("Empty") });
    if let Some((image, lun)) = &disk.image_reference {
        creation["imageReference"] = json!({ "id": image });
        if let Some(lun) = lun {
            creation["imageReference"]["lun"] = Value::from(*lun);
        }
    }
    if let Some(source) = &disk.source_resource_id {
        creation["sourceResourceId"] = Value::from(source.as_str());
    }
    if let Some(source) = &disk.source_unique_id {
        creation["sourceUniqueId"] = Value::from(source.as_str());
    }
    let mut shown = json!({
        "id": disk.id,
        "name": disk.name,
        "type": if disk.is_snapshot() { "Microsoft.Compute/snapshots" } else { "Microsoft.Compute/disks" },
        "location": disk.location,
        "tags": disk.tags,
        "managedBy": disk.managed_by.as_ref().map(|vm| vm_id(state, &disk.resource_group, vm)),
        "sku": { "name": "Standard_LRS", "tier": "Standard" },
        "properties": {
            "creationData": creation,
            "diskSizeGB": disk.size_gb,
            "diskSizeBytes": disk.size_bytes(),
            "uniqueId": disk.unique_id,
            "timeCreated": rfc3339(disk.created),
            "encryption": encryption,
            "keyAccess": key_access,
            "diskState": disk_state,
            "networkAccessPolicy": disk.network_access_policy,
            "dataAccessAuthMode": if disk.data_access_aad { "AzureActiveDirectory" } else { "None" },
            "provisioningState": "Succeeded",
        },
    });
    if let Some(ade) = &disk.ade {
        shown["properties"]["encryptionSettingsCollection"] = json!({
            "enabled": true,
            "encryptionSettings": [ade_settings_json(ade)],
            "encryptionSettingsVersion": atrest_core::ade::SETTINGS_VERSION,
        });
    }
    if disk.is_snapshot() {
        let properties = &mut shown["properties"];
        properties["incremental"] = Value::from(disk.incremental);
        properties["completionPercent"] = Value::from(disk.completion_percent);
        if let Some((code, message)) = &disk.copy_error {
            properties["copyCompletionError"] =
                json!({ "errorCode": code, "errorMessage": message });
        }
        if let Some(family) = &disk.family_id {
            properties["incrementalSnapshotFamilyId"] = Value::from(family.as_str());
        }
    }
    shown
}

/// One entry of `encryptionSettingsCollection.encryptionSettings`.
fn ade_settings_json(ade: &AdeVolume) -> Value {
    let mut settings = json!({
        "diskEncryptionKey": { "secretUrl": ade.secret_url, "sourceVault": { "id": ade.secret_vault } },
    });
    if let (Some(url), Some(vault)) = (&ade.kek_url, &ade.kek_vault) {
        settings["keyEncryptionKey"] = json!({ "keyUrl": url, "sourceVault": { "id": vault } });
    }
    settings
}

fn extension_id(vm: &VirtualMachine, name: &str) -> String {
    format!("{}/extensions/{name}", vm.id)
}

/// The instance view of the disk encryption extension: its last outcome, and the
/// `{"os", "data"}` substatus `az vm encryption show` reads.
fn extension_view(ext: &VmExtension, status: Option<&EncryptionStatus>) -> Value {
    let mut view = json!({
        "name": ext.name,
        "type": format!("{}.{}", ext.publisher, ext.extension_type),
        "typeHandlerVersion": ext.type_handler_version,
        "statuses": [{
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "message": ext.message,
        }],
    });
    if let Some(status) = status {
        view["substatuses"] = json!([{
            "code": "ComponentStatus/EncryptionState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "message": json!({ "os": status.os, "data": status.data }).to_string(),
        }]);
    }
    view
}

fn extension_json(
    vm: &VirtualMachine,
    ext: &VmExtension,
    status: Option<&EncryptionStatus>,
) -> Value {
    let mut shown = json!({
        "id": extension_id(vm, &ext.name),
        "name": ext.name,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": vm.location,
        "properties": {
            "publisher": ext.publisher,
            "type": ext.extension_type,
            "typeHandlerVersion": ext.type_handler_version,
            "autoUpgradeMinorVersion": ext.auto_upgrade_minor_version,
            "settings": ext.settings,
            "provisioningState": "Succeeded",
        },
    });
    if status.is_some() {
        shown["properties"]["instanceView"] = extension_view(ext, status);
    }
    shown
}

fn image_json(image: &Image) -> Value {
    let disk_json = |d: &atrest_disk::ImageDisk| {
        let mut shown = json!({
            "diskSizeGB": d.size_gb,
            "caching": "ReadWrite",
            "storageAccountType": "Standard_LRS",
        });
        let source = if d.from_snapshot {
            "snapshot"
        } else {
            "managedDisk"
        };
        shown[source] = json!({ "id": d.source_id });
        if let Some(des) = &d.disk_encryption_set {
            shown["diskEncryptionSet"] = json!({ "id": des });
        }
        match d.lun {
            Some(lun) => shown["lun"] = Value::from(lun),
            None => {
                shown["osType"] = Value::from(d.os_type.as_deref().unwrap_or_default());
                shown["osState"] = Value::from(d.os_state.as_deref().unwrap_or_default());
            }
        }
        shown
    };
    let mut storage = json!({
        "dataDisks": image.disks.iter().filter(|d| d.lun.is_some()).map(disk_json).collect::<Vec<_>>(),
        "zoneResilient": false,
    });
    if let Some(os) = image.disks.iter().find(|d| d.lun.is_none()) {
        storage["osDisk"] = disk_json(os);
    }
    let mut properties = json!({
        "storageProfile": storage,
        "provisioningState": "Succeeded",
        "hyperVGeneration": image.hyper_v_generation,
    });
    if let Some(vm) = &image.source_vm {
        properties["sourceVirtualMachine"] = json!({ "id": vm });
    }
    json!({
        "id": image.id,
        "name": image.name,
        "type": "Microsoft.Compute/images",
        "location": image.location,
        "tags": image.tags,
        "properties": properties,
    })
}

/// `nbd://HOST:PORT/EXPORT` of a running machine's disk, on the replica serving it.
fn nbd_uri(vm: &VirtualMachine, disk: &str) -> Option<String> {
    vm.nbd.as_ref().map(|addr| {
        format!(
            "nbd://{addr}/{}",
            atrest_disk::Compute::export_name(&vm.resource_group, disk)
        )
    })
}

fn vm_json(state: &AppState, vm: &VirtualMachine) -> Value {
    let subscription = &state.settings.subscription;
    let disk_id = |name: &str| {
        format!("/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}", vm.resource_group)
    };
    let served = |name: &str| vm.running.then(|| nbd_uri(vm, name)).flatten();
    let disks: Vec<Value> = vm
        .disks
        .iter()
        .enumerate()
        .map(|(lun, name)| {
            let mut disk = json!({
                "lun": lun,
                "name": name,
                "createOption": "Attach",
                "managedDisk": { "id": disk_id(name) },
            });
            if let Some(uri) = served(name) {
                disk["nbdUri"] = Value::from(uri);
            }
            disk
        })
        .collect();
    let mut storage = json!({ "dataDisks": disks });
    if let Some(name) = &vm.os_disk {
        storage["osDisk"] = json!({
            "name": name,
            "osType": "Linux",
            "createOption": "Attach",
            "managedDisk": { "id": disk_id(name) },
        });
        if let Some(uri) = served(name) {
            storage["osDisk"]["nbdUri"] = Value::from(uri);
        }
    }
    // Each attached disk's encryption, as the instance view shows it.
    let attached: Vec<(String, Option<AdeVolume>)> = vm
        .attached()
        .map(|(_, name)| {
            let ade = state
                .compute
                .get_disk(&vm.resource_group, name)
                .ok()
                .and_then(|d| d.ade);
            (name.clone(), ade)
        })
        .collect();
    let disk_views: Vec<Value> = attached
        .iter()
        .map(|(name, ade)| {
            let (code, display) = match ade {
                Some(_) => ("EncryptionState/encrypted", "Encryption is enabled on disk"),
                None => (
                    "EncryptionState/notEncrypted",
                    "Encryption is not enabled on disk",
                ),
            };
            let mut view = json!({
                "name": name,
                "statuses": [{ "code": code, "level": "Info", "displayStatus": display }],
            });
            if let Some(ade) = ade {
                let mut settings = ade_settings_json(ade);
                settings["enabled"] = Value::from(true);
                view["encryptionSettings"] = json!([settings]);
            }
            view
        })
        .collect();
    if vm.running && vm.nbd.is_some() && attached.iter().any(|(_, ade)| ade.is_some()) {
        let export = atrest_disk::Compute::bek_export_name(&vm.resource_group, &vm.name);
        storage["bekVolume"] = json!({
            "label": atrest_core::ade::BEK_VOLUME_LABEL,
            "nbdUri": format!("nbd://{}/{export}", vm.nbd.as_deref().unwrap_or_default()),
        });
    }
    let status = state.compute.encryption_status(vm).ok();
    let extensions: Vec<Value> = vm
        .extensions
        .iter()
        .map(|e| extension_view(e, status.as_ref()))
        .collect();
    let resources: Vec<Value> = vm
        .extensions
        .iter()
        .map(|e| extension_json(vm, e, None))
        .collect();
    let power = if vm.running { "running" } else { "deallocated" };
    json!({
        "id": vm.id,
        "name": vm.name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": vm.tags,
        "resources": resources,
        "properties": {
            "storageProfile": storage,
            "provisioningState": "Succeeded",
            "instanceView": {
                "statuses": [
                    { "code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded" },
                    { "code": format!("PowerState/{power}"), "level": "Info", "displayStatus": format!("VM {power}") },
                ],
                "disks": disk_views,
                "extensions": extensions,
                // The atrest replica that serves (or is to serve) the disks.
                "assignedHost": vm.running.then_some(vm.host.as_deref()).flatten(),
            },
        },
    })
}

/// One addressed compute resource: `…/resourceGroups/{rg}/providers/Microsoft.Compute/
/// {kind}/{name}[/{action}]`.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    pub resource_group: &'a str,
    pub kind: &'static str,
    pub name: &'a str,
    pub action: Option<&'a str>,
    /// A virtual machine's extension (`…/extensions/{name}`); `action` is `extensions`.
    pub extension: Option<&'a str>,
}

/// The RBAC verb (`start/action`, …) of POST action `action`, among `verbs`.
fn action_verb(action: &str, verbs: &[&'static str]) -> Option<&'static str> {
    verbs.iter().copied().find(|verb| {
        verb.split('/')
            .next()
            .is_some_and(|v| v.eq_ignore_ascii_case(action))
    })
}

/// A route of the compute provider.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// One resource or an action on it, with the RBAC verb it needs (`write`, `read`,
    /// `delete`, `start/action`, …).
    Resource(Target<'a>, &'static str),
    /// `GET …[/resourceGroups/{rg}]/providers/Microsoft.Compute/{kind}`.
    List {
        /// The resource group, if the listing is limited to one.
        resource_group: Option<&'a str>,
        /// The resource type.
        kind: &'static str,
    },
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments` after `subscriptions/{s}/`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        match segments {
            [rg_kw, rg, prov_kw, p, kind, name, action @ ..]
                if seg(rg_kw, "resourceGroups")
                    && seg(prov_kw, "providers")
                    && seg(p, "Microsoft.Compute")
                    && action.len() <= 2 =>
            {
                let kind = kind_of(kind)?;
                let extension = match action {
                    [a, ext] if kind == "virtualMachines" && seg(a, "extensions") => Some(*ext),
                    [_, _] => return None,
                    _ => None,
                };
                let action = action.first().copied();
                let verb = match (method.as_str(), action) {
                    ("PUT" | "PATCH", Some(a)) if extension.is_some() && seg(a, "extensions") => {
                        "extensions/write"
                    }
                    ("DELETE", Some(a)) if extension.is_some() && seg(a, "extensions") => {
                        "extensions/delete"
                    }
                    ("GET", Some(a)) if kind == "virtualMachines" && seg(a, "extensions") => {
                        "extensions/read"
                    }
                    ("PUT" | "PATCH", None) => "write",
                    ("DELETE", None) => "delete",
                    ("GET", None) => "read",
                    ("GET", Some(a)) if a.eq_ignore_ascii_case("instanceView") => "read",
                    ("POST", Some(a)) if kind == "disks" || kind == "snapshots" => {
                        action_verb(a, &["beginGetAccess/action", "endGetAccess/action"])?
                    }
                    ("POST", Some(a)) if kind == "virtualMachines" => {
                        action_verb(a, &["start/action", "poweroff/action", "deallocate/action"])?
                    }
                    _ => return None,
                };
                let target = Target {
                    resource_group: rg,
                    kind,
                    name,
                    action,
                    extension,
                };
                Some(Route::Resource(target, verb))
            }
            [scope @ .., prov_kw, p, kind]
                if seg(prov_kw, "providers")
                    && seg(p, "Microsoft.Compute")
                    && method == Method::GET
                    && matches!(scope, [] | [_, _])
                    && scope.first().is_none_or(|kw| seg(kw, "resourceGroups")) =>
            {
                Some(Route::List {
                    resource_group: scope.get(1).copied(),
                    kind: kind_of(kind)?,
                })
            }
            _ => None,
        }
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        use Operation::*;
        match self {
            Route::Resource(target, verb) => match (target.kind, *verb) {
                ("diskEncryptionSets", "write") => DiskEncryptionSetWrite,
                ("diskEncryptionSets", "delete") => DiskEncryptionSetDelete,
                ("diskEncryptionSets", _) => DiskEncryptionSetRead,
                ("disks", "write") => DiskWrite,
                ("disks", "delete") => DiskDelete,
                ("disks", "beginGetAccess/action") => DiskBeginGetAccess,
                ("disks", "endGetAccess/action") => DiskEndGetAccess,
                ("disks", _) => DiskRead,
                ("snapshots", "write") => SnapshotWrite,
                ("snapshots", "delete") => SnapshotDelete,
                ("snapshots", "beginGetAccess/action") => SnapshotBeginGetAccess,
                ("snapshots", "endGetAccess/action") => SnapshotEndGetAccess,
                ("snapshots", _) => SnapshotRead,
                ("images", "write") => ImageWrite,
                ("images", "delete") => ImageDelete,
                ("images", _) => ImageRead,
                (_, "extensions/write") => VirtualMachineExtensionWrite,
                (_, "extensions/delete") => VirtualMachineExtensionDelete,
                (_, "extensions/read") => VirtualMachineExtensionRead,
                (_, "write") => VirtualMachineWrite,
                (_, "delete") => VirtualMachineDelete,
                (_, "start/action") => VirtualMachineStart,
                (_, "poweroff/action" | "deallocate/action") => VirtualMachineStop,
                _ => VirtualMachineRead,
            },
            Route::List { kind, .. } => match *kind {
                "diskEncryptionSets" => DiskEncryptionSetList,
                "disks" => DiskList,
                "snapshots" => SnapshotList,
                "images" => ImageList,
                _ => VirtualMachineList,
            },
        }
    }
}

/// Serves one compute route of an authenticated caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    method: &Method,
    route: Route<'_>,
    query: &[(String, String)],
    body: Body,
) -> Result<Resp, ApiError> {
    let (target, verb) = match route {
        Route::Resource(target, verb) => (target, verb),
        Route::List {
            resource_group,
            kind,
        } => return list(state, caller, resource_group, kind),
    };
    let Target {
        resource_group,
        kind,
        name,
        action,
        extension,
    } = target;
    check_resource_group_name(resource_group)
        .map_err(|e| ApiError::bad_request("InvalidParameter", e.to_string()))?;
    let scope = format!(
        "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.Compute/{kind}/{name}",
        state.settings.subscription
    );
    ctx.resource = Some(scope.clone());
    authorization::require(
        state,
        caller,
        &scope,
        &format!("Microsoft.Compute/{kind}/{verb}"),
    )?;
    if *method == Method::PUT {
        state.resource_groups.get(resource_group)?;
    }
    let compute = &state.compute;
    let now = ctx.now;
    match (kind, method.as_str(), action) {
        ("diskEncryptionSets", "PUT" | "PATCH", None) => {
            let req = parse_json::<DesDto>(&read_body(body).await?)?.into_request()?;
            if *method == Method::PATCH {
                compute.get_des(resource_group, name)?;
            }
            // Disk encryption sets and disks answer 200 (or 202) to a PUT, never 201: the
            // compute spec lists no other status, and azure-mgmt-compute refuses one.
            let (des, _) = compute
                .put_des(&state.identity, resource_group, name, &req, now)
                .await?;
            Ok(json(StatusCode::OK, &des_json(state, &des)))
        }
        ("diskEncryptionSets", "GET", None) => Ok(json(
            StatusCode::OK,
            &des_json(state, &compute.get_des(resource_group, name)?),
        )),
        ("diskEncryptionSets", "DELETE", None) => {
            let deleted = compute
                .delete_des(&state.identity, resource_group, name)
                .await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("disks", "PUT" | "PATCH", None) => {
            let req = parse_json::<DiskDto>(&read_body(body).await?)?.into_request()?;
            if *method == Method::PATCH {
                compute.get_disk(resource_group, name)?;
            }
            let (disk, _) = compute.put_disk(resource_group, name, &req, now).await?;
            Ok(json(StatusCode::OK, &disk_json(state, &disk)))
        }
        ("disks", "GET", None) => Ok(json(
            StatusCode::OK,
            &disk_json(state, &compute.get_disk(resource_group, name)?),
        )),
        ("disks", "DELETE", None) => {
            let deleted = compute.delete_disk(resource_group, name).await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("virtualMachines", "PUT" | "PATCH", None) => {
            let req = parse_json::<VmDto>(&read_body(body).await?)?.into_request()?;
            if *method == Method::PATCH {
                compute.get_vm(resource_group, name)?;
            }
            let (vm, created) = compute.put_vm(resource_group, name, &req, now).await?;
            Ok(json(created_status(created), &vm_json(state, &vm)))
        }
        ("virtualMachines", "GET", None) => Ok(json(
            StatusCode::OK,
            &vm_json(state, &compute.get_vm(resource_group, name)?),
        )),
        ("virtualMachines", "PUT" | "PATCH", Some(_)) => {
            let ext_name = extension.unwrap_or_default();
            let dto: ExtensionDto = parse_json(&read_body(body).await?)?;
            let req = dto.into_request()?;
            if *method == Method::PATCH {
                compute.get_extension(resource_group, name, ext_name)?;
            }
            let (vm, ext, created) = compute
                .put_extension(&state.identity, resource_group, name, ext_name, &req, now)
                .await?;
            ctx.target_id = Some(extension_id(&vm, &ext.name));
            Ok(json(
                created_status(created),
                &extension_json(&vm, &ext, None),
            ))
        }
        ("virtualMachines", "DELETE", Some(_)) => {
            let deleted = compute
                .delete_extension(resource_group, name, extension.unwrap_or_default())
                .await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("virtualMachines", "GET", Some(_)) if extension.is_some() => {
            let (vm, ext) =
                compute.get_extension(resource_group, name, extension.unwrap_or_default())?;
            let status = expanded(query)
                .then(|| compute.encryption_status(&vm))
                .transpose()?;
            Ok(json(
                StatusCode::OK,
                &extension_json(&vm, &ext, status.as_ref()),
            ))
        }
        ("virtualMachines", "GET", Some(a)) if seg(a, "extensions") => {
            let (vm, extensions) = compute.list_extensions(resource_group, name)?;
            let status = expanded(query)
                .then(|| compute.encryption_status(&vm))
                .transpose()?;
            let items: Vec<Value> = extensions
                .iter()
                .map(|e| extension_json(&vm, e, status.as_ref()))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        ("virtualMachines", "GET", Some(_)) => {
            let vm = vm_json(state, &compute.get_vm(resource_group, name)?);
            Ok(json(StatusCode::OK, &vm["properties"]["instanceView"]))
        }
        ("virtualMachines", "DELETE", None) => {
            let deleted = compute.delete_vm(resource_group, name).await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("images", "PUT" | "PATCH", None) => {
            let req = parse_json::<ImageDto>(&read_body(body).await?)?.into_request()?;
            if *method == Method::PATCH {
                compute.get_image(resource_group, name)?;
            }
            let (image, created) = compute.put_image(resource_group, name, &req, now).await?;
            Ok(json(created_status(created), &image_json(&image)))
        }
        ("images", "GET", None) => Ok(json(
            StatusCode::OK,
            &image_json(&compute.get_image(resource_group, name)?),
        )),
        ("images", "DELETE", None) => {
            let deleted = compute.delete_image(resource_group, name).await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("snapshots", "PUT" | "PATCH", None) => {
            let req = parse_json::<SnapshotDto>(&read_body(body).await?)?.into_request();
            if *method == Method::PATCH {
                compute.get_snapshot(resource_group, name)?;
            }
            let (snapshot, _) = compute
                .put_snapshot(resource_group, name, &req, now)
                .await?;
            Ok(json(StatusCode::OK, &disk_json(state, &snapshot)))
        }
        ("snapshots", "GET", None) => Ok(json(
            StatusCode::OK,
            &disk_json(state, &compute.get_snapshot(resource_group, name)?),
        )),
        ("snapshots", "DELETE", None) => {
            let deleted = compute.delete_snapshot(resource_group, name).await?;
            Ok(empty(deleted_status(deleted)))
        }
        ("disks" | "snapshots", "POST", Some(a)) if a.eq_ignore_ascii_case("beginGetAccess") => {
            let dto: GrantAccessDto = parse_json(&read_body(body).await?)?;
            dto.check()?;
            let write = dto.access.eq_ignore_ascii_case("Write");
            let (token, expires) = compute
                .grant_access(
                    kind,
                    resource_group,
                    name,
                    dto.duration_in_seconds,
                    write,
                    now,
                )
                .await?;
            let url = access_url(state, resource_group, name, &token, expires);
            Ok(json(StatusCode::OK, &json!({ "accessSAS": url })))
        }
        ("disks" | "snapshots", "POST", Some(a)) if a.eq_ignore_ascii_case("endGetAccess") => {
            compute.end_access(kind, resource_group, name).await?;
            Ok(empty(StatusCode::OK))
        }
        ("virtualMachines", "POST", Some(a)) if a.eq_ignore_ascii_case("start") => {
            // `?host=REPLICA` picks the replica that serves the disks (default: this one).
            let host = query
                .iter()
                .find(|(k, _)| k == "host")
                .map(|(_, v)| v.as_str());
            let vm = compute.start_vm(resource_group, name, now, host).await?;
            Ok(json(StatusCode::OK, &vm_json(state, &vm)))
        }
        ("virtualMachines", "POST", Some(a))
            if a.eq_ignore_ascii_case("powerOff") || a.eq_ignore_ascii_case("deallocate") =>
        {
            let vm = compute.stop_vm(resource_group, name).await?;
            Ok(json(StatusCode::OK, &vm_json(state, &vm)))
        }
        _ => Err(ApiError::no_route(method, kind)),
    }
}

/// Serves `GET /subscriptions/{s}[/resourceGroups/{rg}]/providers/Microsoft.Compute/{kind}`:
/// what the caller may read.
fn list(
    state: &AppState,
    caller: &Caller,
    resource_group: Option<&str>,
    kind: &'static str,
) -> Result<Resp, ApiError> {
    let object_ids = state.identity.object_ids_of(&caller.object_id)?;
    let action = format!("Microsoft.Compute/{kind}/read");
    let readable = |id: &str| state.identity.allows_action(&object_ids, id, &action);
    let compute = &state.compute;
    /// The items the caller may read, in their ARM shape.
    fn shown<T>(
        items: Vec<T>,
        readable: impl Fn(&str) -> Result<bool, RoleError>,
        id: impl Fn(&T) -> &str,
        shape: impl Fn(&T) -> Value,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        for item in &items {
            if readable(id(item))? {
                out.push(shape(item));
            }
        }
        Ok(out)
    }
    let items = match kind {
        "diskEncryptionSets" => shown(
            compute.list_des(resource_group)?,
            readable,
            |d| &d.id,
            |d| des_json(state, d),
        )?,
        "disks" => shown(
            compute.list_disks(resource_group)?,
            readable,
            |d| &d.id,
            |d| disk_json(state, d),
        )?,
        "images" => shown(
            compute.list_images(resource_group)?,
            readable,
            |i| &i.id,
            image_json,
        )?,
        "snapshots" => shown(
            compute.list_snapshots(resource_group)?,
            readable,
            |d| &d.id,
            |d| disk_json(state, d),
        )?,
        _ => shown(
            compute.list_vms(resource_group)?,
            readable,
            |v| &v.id,
            |v| vm_json(state, v),
        )?,
    };
    Ok(json(StatusCode::OK, &json!({ "value": items })))
}
