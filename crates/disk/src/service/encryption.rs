//! Azure Disk Encryption for Linux, with atrest in the extension's place: the
//! `AzureDiskEncryptionForLinux` extension resource, LUKS volumes written and decrypted
//! inside a machine's disks through their own block layer, passphrases kept as vault
//! secrets by the platform identity, and the BEK VOLUME a started machine reads them from.
//!
//! Volumes are transformed while the machine is deallocated, after a `freeze` and with one
//! flush at the end: until that flush commits the manifest, a crash leaves the disk as it
//! was.

use atrest_core::ade::{
    self, key_encryption_algorithm, passphrase_file_name, subscription_of, EncryptionOperation,
    LuksVersion, VolumeType,
};
use atrest_luks::{DataCipher, FormatOptions, Header, Kdf, HEADER_AREA};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::*;
use crate::bek;
use crate::keys::{PlatformSecret, VaultDescription};
use crate::model::{AdeVolume, VmExtension};

/// An extension as a create or update gives it.
#[derive(Debug, Clone, Default)]
pub struct ExtensionRequest {
    /// `publisher`.
    pub publisher: String,
    /// `type`.
    pub extension_type: String,
    /// `typeHandlerVersion`.
    pub type_handler_version: String,
    /// `autoUpgradeMinorVersion`.
    pub auto_upgrade_minor_version: bool,
    /// `settings` (strings; absent and null settings left out).
    pub settings: BTreeMap<String, String>,
}

/// What a machine's encryption looks like from outside: the `{"os", "data"}` substatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionStatus {
    /// `Encrypted` or `NotEncrypted`.
    pub os: &'static str,
    /// `Encrypted` when every data disk is, else `NotEncrypted`.
    pub data: &'static str,
}

/// A key slot's KDF for the volumes ADE makes. The passphrase is 1,016 random bits, out of
/// reach of any guessing, so the KDF's cost protects nothing and is kept light for the
/// format here and the guest's unlock at boot: cryptsetup's minimum Argon2id passes, and
/// 64 MiB.
const LUKS2_KDF: Kdf = Kdf::Argon2 {
    kind: atrest_luks::Argon2Kind::Argon2id,
    time: 4,
    memory_kib: 64 * 1024,
    lanes: 2,
};
/// LUKS1's KDF, for the same reason well under cryptsetup's benchmarked count.
const LUKS1_KDF: Kdf = Kdf::Pbkdf2 {
    hash: atrest_luks::Hash::Sha256,
    iterations: 100_000,
};
/// Bytes moved per step of an in-place encryption or decryption.
const STEP: u64 = 1 << 20;

fn luks_options(version: LuksVersion) -> FormatOptions {
    match version {
        LuksVersion::Luks1 => FormatOptions {
            version: atrest_luks::Version::Luks1,
            kdf: LUKS1_KDF,
            sector_size: 512,
        },
        // 4 KiB sectors, as cryptsetup picks for a disk with 4 KiB blocks.
        LuksVersion::Luks2 => FormatOptions {
            version: atrest_luks::Version::Luks2,
            kdf: LUKS2_KDF,
            sector_size: 4096,
        },
    }
}

fn luks_error(disk: &str, e: atrest_luks::LuksError) -> ComputeError {
    ComputeError::conflict(
        "OperationNotAllowed",
        format!("The LUKS volume of disk '{disk}' cannot be used: {e}."),
    )
}

/// A new passphrase: the base64 text of 127 random bytes, as ADE writes its key file.
fn new_passphrase() -> Zeroizing<Vec<u8>> {
    let random = Zeroizing::new(atrest_crypto::random_bytes(ade::PASSPHRASE_RANDOM_BYTES));
    Zeroizing::new(B64.encode(&*random).into_bytes())
}

/// Formats `volume` as a new LUKS volume, discarding its data: the data area is trimmed,
/// so no earlier plaintext survives anywhere below.
fn format_volume(
    volume: &Volume,
    version: LuksVersion,
    passphrase: &[u8],
    disk: &str,
) -> Result<(), ComputeError> {
    let (new, data) = new_header(volume, version, passphrase, disk)?;
    volume.write_zeroes(new.header.data_offset, data)?;
    volume.write(0, &new.area)?;
    Ok(())
}

/// A new LUKS header for `volume`, and the bytes its data segment will have.
fn new_header(
    volume: &Volume,
    version: LuksVersion,
    passphrase: &[u8],
    disk: &str,
) -> Result<(atrest_luks::Formatted, u64), ComputeError> {
    let new =
        atrest_luks::format(&luks_options(version), passphrase).map_err(|e| luks_error(disk, e))?;
    let offset = new.header.data_offset;
    match volume.size().checked_sub(offset).filter(|d| *d > 0) {
        Some(data) => Ok((new, data)),
        None => Err(luks_error(disk, atrest_luks::LuksError::Truncated(offset))),
    }
}

/// Encrypts `volume` in place, keeping its data: everything but the last header-sized
/// part moves up behind the new header, encrypted, as `cryptsetup reencrypt --encrypt
/// --reduce-device-size` does. Refused if that last part holds data, which would be lost.
fn encrypt_in_place(
    volume: &Volume,
    version: LuksVersion,
    passphrase: &[u8],
    disk: &str,
) -> Result<(), ComputeError> {
    let (new, kept) = new_header(volume, version, passphrase, disk)?;
    let shift = new.header.data_offset;
    if volume.extents(kept, shift)?.iter().any(|(_, zero)| !zero) {
        return Err(ComputeError::conflict(
            "OperationNotAllowed",
            format!("The last {} MiB of disk '{disk}' hold data that encryption in place would lose: shrink its file system by that much first (cryptsetup's --reduce-device-size rule), or use EncryptFormatAll on a data volume.", shift >> 20),
        ));
    }
    let mut cipher = DataCipher::new(&new.header, &new.key).map_err(|e| luks_error(disk, e))?;
    // From the end backwards: each step writes above what is still to be read.
    let mut end = kept;
    let mut buf = Zeroizing::new(vec![0u8; STEP as usize]);
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let part = &mut buf[..(end - start) as usize];
        volume.read(start, part)?;
        cipher
            .encrypt(start, part)
            .map_err(|e| luks_error(disk, e))?;
        volume.write(start + shift, part)?;
        end = start;
    }
    volume.write(0, &new.area)?;
    Ok(())
}

/// Decrypts `volume` in place and removes its header: the data moves back to the start
/// (as `cryptsetup reencrypt --decrypt` with a data shift), and the freed end reads as
/// zeros.
fn decrypt_in_place(volume: &Volume, passphrase: &[u8], disk: &str) -> Result<(), ComputeError> {
    let size = volume.size();
    let mut area = vec![0u8; HEADER_AREA.min(size) as usize];
    volume.read(0, &mut area)?;
    let header = Header::parse(&area).map_err(|e| luks_error(disk, e))?;
    let key = header
        .unlock(&area, passphrase)
        .map_err(|e| luks_error(disk, e))?;
    let mut cipher = DataCipher::new(&header, &key).map_err(|e| luks_error(disk, e))?;
    let shift = header.data_offset;
    // The header is the guest's to write: its offsets are believed only inside the disk.
    let Some(room) = size.checked_sub(shift).filter(|room| *room > 0) else {
        return Err(luks_error(
            disk,
            atrest_luks::LuksError::Damaged(format!(
                "the data segment starts at byte {shift}, past the disk's end"
            )),
        ));
    };
    let data = header.data_size.unwrap_or(room).min(room);
    let data = data - data % cipher.sector_size();
    let mut buf = Zeroizing::new(vec![0u8; STEP as usize]);
    let mut start = 0;
    while start < data {
        let part = &mut buf[..(data - start).min(STEP) as usize];
        volume.read(shift + start, part)?;
        cipher
            .decrypt(start, part)
            .map_err(|e| luks_error(disk, e))?;
        volume.write(start, part)?;
        start += part.len() as u64;
    }
    volume.write_zeroes(data, size - data)?;
    Ok(())
}

/// A setting by name, case-insensitively; empty counts as absent.
fn setting<'a>(settings: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// The vault name in a vault URL or resource id.
fn vault_name_of(
    url: Option<&str>,
    resource_id: Option<&str>,
    host_suffix: &str,
) -> Option<String> {
    let from_url = url.and_then(|u| {
        let host = u.strip_prefix("https://")?.split(['/', ':']).next()?;
        host.to_ascii_lowercase()
            .strip_suffix(host_suffix)
            .map(str::to_owned)
    });
    let from_id = resource_id.and_then(|id| {
        id.trim_end_matches('/')
            .rsplit('/')
            .next()
            .map(str::to_ascii_lowercase)
    });
    from_url.or(from_id)
}

impl Compute {
    /// The extensions of a machine.
    pub fn list_extensions(
        &self,
        resource_group: &str,
        vm: &str,
    ) -> Result<(VirtualMachine, Vec<VmExtension>), ComputeError> {
        let vm: VirtualMachine = self.get(VM_KIND, resource_group, vm)?;
        let extensions = vm.extensions.clone();
        Ok((vm, extensions))
    }

    /// One extension of a machine.
    pub fn get_extension(
        &self,
        resource_group: &str,
        vm: &str,
        name: &str,
    ) -> Result<(VirtualMachine, VmExtension), ComputeError> {
        let vm: VirtualMachine = self.get(VM_KIND, resource_group, vm)?;
        let extension = vm
            .extensions
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .cloned()
            .ok_or_else(|| {
                not_found(
                    "virtualMachines/extensions",
                    resource_group,
                    &format!("{}/{name}", vm.name),
                )
            })?;
        Ok((vm, extension))
    }

    /// Whether the OS volume and the data volumes of `vm` are encrypted.
    pub fn encryption_status(&self, vm: &VirtualMachine) -> Result<EncryptionStatus, ComputeError> {
        let (mut os, mut data, mut data_disks) = (false, 0, 0);
        for (lun, name) in vm.attached() {
            let disk: Disk = self.get(DISK_KIND, &vm.resource_group, name)?;
            match lun {
                None => os = disk.ade.is_some(),
                Some(_) => {
                    data_disks += 1;
                    data += usize::from(disk.ade.is_some());
                }
            }
        }
        let word = |on: bool| if on { "Encrypted" } else { "NotEncrypted" };
        Ok(EncryptionStatus {
            os: word(os),
            data: word(data_disks > 0 && data == data_disks),
        })
    }

    /// Creates or updates an extension, running what its settings ask: ADE's enable or
    /// disable. The machine must be deallocated; nothing changes if a rule refuses.
    pub async fn put_extension(
        &self,
        identity: &Identity,
        resource_group: &str,
        vm_name: &str,
        name: &str,
        req: &ExtensionRequest,
        now: i64,
    ) -> Result<(VirtualMachine, VmExtension, bool), ComputeError> {
        if !req.publisher.eq_ignore_ascii_case(ade::PUBLISHER)
            || !req.extension_type.eq_ignore_ascii_case(ade::EXTENSION_TYPE)
        {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!(
                    "The extension '{}.{}' is not available here: atrest runs only {}.{}.",
                    req.publisher,
                    req.extension_type,
                    ade::PUBLISHER,
                    ade::EXTENSION_TYPE
                ),
            ));
        }
        if req.type_handler_version.split('.').next() != ade::HANDLER_VERSION.split('.').next() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("The typeHandlerVersion '{}' is not available: use {} (single pass, without an AAD application).", req.type_handler_version, ade::HANDLER_VERSION),
            ));
        }
        let settings = &req.settings;
        let operation = EncryptionOperation::parse(
            setting(settings, "EncryptionOperation")
                .ok_or(ade::AdeRuleError::Missing("EncryptionOperation"))?,
        )?;
        let volume_type = VolumeType::parse(
            setting(settings, "VolumeType").ok_or(ade::AdeRuleError::Missing("VolumeType"))?,
        )?;
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, vm_name)?;
        if let Some(other) = vm.extensions.iter().find(|e| {
            e.extension_type.eq_ignore_ascii_case(ade::EXTENSION_TYPE)
                && !e.name.eq_ignore_ascii_case(name)
        }) {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "Virtual machine '{vm_name}' already has the disk encryption extension '{}'.",
                    other.name
                ),
            ));
        }
        if vm.running {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("Virtual machine '{vm_name}' is running: deallocate it first. atrest encrypts and decrypts a machine's volumes while its disks are not served."),
            ));
        }
        let message = match operation {
            EncryptionOperation::Disable => self.disable(&vm, volume_type).await?,
            enable => {
                self.enable(
                    identity,
                    &vm,
                    settings,
                    volume_type,
                    enable == EncryptionOperation::EnableFormatAll,
                    now,
                )
                .await?
            }
        };
        let extension = VmExtension {
            name: name.to_owned(),
            publisher: ade::PUBLISHER.to_owned(),
            extension_type: ade::EXTENSION_TYPE.to_owned(),
            type_handler_version: req.type_handler_version.clone(),
            auto_upgrade_minor_version: req.auto_upgrade_minor_version,
            settings: settings.clone(),
            message,
        };
        vm = self.get(VM_KIND, resource_group, vm_name)?;
        let created = match vm
            .extensions
            .iter_mut()
            .find(|e| e.name.eq_ignore_ascii_case(name))
        {
            Some(existing) => {
                *existing = extension.clone();
                false
            }
            None => {
                vm.extensions.push(extension.clone());
                true
            }
        };
        self.save_vm(&vm)?;
        Ok((vm, extension, created))
    }

    /// Deletes an extension. The disk encryption extension goes only once no volume it
    /// encrypted remains encrypted (as Azure asks: disable first).
    pub async fn delete_extension(
        &self,
        resource_group: &str,
        vm_name: &str,
        name: &str,
    ) -> Result<bool, ComputeError> {
        let _guard = self.changes.lock().await;
        let mut vm: VirtualMachine = self.get(VM_KIND, resource_group, vm_name)?;
        let Some(at) = vm
            .extensions
            .iter()
            .position(|e| e.name.eq_ignore_ascii_case(name))
        else {
            return Ok(false);
        };
        let status = self.encryption_status(&vm)?;
        let encrypted = vm
            .attached()
            .map(|(_, d)| self.get::<Disk>(DISK_KIND, resource_group, d))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .any(|d| d.ade.is_some());
        if encrypted {
            return Err(ComputeError::conflict(
                "OperationNotAllowed",
                format!("Virtual machine '{vm_name}' still has encrypted volumes (OS: {}, data: {}): disable encryption before removing the extension.", status.os, status.data),
            ));
        }
        vm.extensions.remove(at);
        self.save_vm(&vm)?;
        Ok(true)
    }

    /// Checks a vault ADE is to use: enabled for disk encryption, in the machine's
    /// subscription and region.
    fn ade_vault(
        &self,
        vm: &VirtualMachine,
        what: &str,
        name: &str,
        given_id: Option<&str>,
    ) -> Result<VaultDescription, ComputeError> {
        let vault = self.vaults.describe_vault(name).map_err(|e| {
            ComputeError::invalid(
                "InvalidParameter",
                format!("The {what} vault '{name}' cannot be used: {e}"),
            )
        })?;
        if let Some(id) = given_id {
            if subscription_of(id)
                .is_some_and(|s| !s.eq_ignore_ascii_case(&self.config.subscription))
            {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The {what} vault '{id}' is not in the subscription of virtual machine '{}'; Azure Disk Encryption needs a vault in the machine's subscription.", vm.name),
                ));
            }
            if !id.eq_ignore_ascii_case(&vault.resource_id) {
                return Err(ComputeError::invalid(
                    "InvalidParameter",
                    format!("The {what} vault resource id '{id}' does not name the vault at its URL ('{}').", vault.resource_id),
                ));
            }
        }
        if !vault.enabled_for_disk_encryption {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Key vault '{name}' is not enabled for disk encryption: set its enabledForDiskEncryption property (atrest keyvault update --enabled-for-disk-encryption true)."),
            ));
        }
        if normalize_location(&vault.location).ok().as_deref() != Some(vm.location.as_str()) {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Key vault '{name}' is in '{}'; virtual machine '{}' is in '{}'. Azure Disk Encryption needs a vault in the machine's region.", vault.location, vm.name, vm.location),
            ));
        }
        Ok(vault)
    }

    /// The disks `volume_type` selects, with their LUNs (`None`: the OS disk).
    fn selected(
        &self,
        vm: &VirtualMachine,
        volume_type: VolumeType,
    ) -> Result<Vec<(Option<u32>, Disk)>, ComputeError> {
        vm.attached()
            .filter(|(lun, _)| match lun {
                None => volume_type.covers_os(),
                Some(_) => volume_type.covers_data(),
            })
            .map(|(lun, name)| Ok((lun, self.get(DISK_KIND, &vm.resource_group, name)?)))
            .collect()
    }

    async fn enable(
        &self,
        identity: &Identity,
        vm: &VirtualMachine,
        settings: &BTreeMap<String, String>,
        volume_type: VolumeType,
        format_all: bool,
        now: i64,
    ) -> Result<String, ComputeError> {
        let suffix = &self.config.vault_host_suffix;
        let vault_url = setting(settings, "KeyVaultURL");
        let vault_id = setting(settings, "KeyVaultResourceId");
        let vault_name = vault_name_of(vault_url, vault_id, suffix)
            .ok_or(ade::AdeRuleError::Missing("KeyVaultURL"))?;
        let vault = self.ade_vault(vm, "disk encryption", &vault_name, vault_id)?;
        let algorithm =
            key_encryption_algorithm(setting(settings, "KeyEncryptionAlgorithm").unwrap_or(""))?;
        let luks = LuksVersion::parse(setting(settings, "LuksVersion").unwrap_or(""))?;
        let kek = match setting(settings, "KeyEncryptionKeyURL") {
            None => None,
            Some(url) => {
                let key = KeyUrl::parse(url, suffix)?;
                let kek_vault_id = setting(settings, "KekVaultResourceId");
                let kek_vault =
                    self.ade_vault(vm, "key encryption key", &key.vault, kek_vault_id)?;
                let described = self
                    .vaults
                    .describe(&key.vault, &key.name, &key.version)
                    .map_err(|e| {
                        ComputeError::invalid(
                            "InvalidParameter",
                            format!("The key encryption key '{url}' cannot be used: {e}"),
                        )
                    })?;
                match described.kty.as_deref() {
                    Some(kty) if kty.starts_with("RSA") => {}
                    Some(kty) => {
                        return Err(ComputeError::invalid(
                            "InvalidParameter",
                            format!("The key encryption key '{url}' is a {kty} key; Azure Disk Encryption wraps with RSA keys only."),
                        ))
                    }
                    None => {
                        return Err(ComputeError::invalid(
                            "InvalidParameter",
                            format!("The key encryption key '{url}' was not found."),
                        ))
                    }
                }
                Some((url.to_owned(), kek_vault.resource_id))
            }
        };
        let disks = self.selected(vm, volume_type)?;
        if disks.is_empty() {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!(
                    "Virtual machine '{}' has no {} volume to encrypt.",
                    vm.name,
                    volume_type.as_str()
                ),
            ));
        }
        for (_, disk) in &disks {
            if disk.customer_key().is_some() {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("Disk '{}' is encrypted at rest with a customer-managed key ({}); Azure Disk Encryption and server-side encryption with a customer-managed key cannot be used together.", disk.name, disk.disk_encryption_set.as_deref().unwrap_or_default()),
                ));
            }
            if self.access_active(disk, now).is_some() {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!(
                        "Disk '{}' has active access (ActiveSAS); end it with endGetAccess first.",
                        disk.name
                    ),
                ));
            }
        }
        self.ensure_platform_identity(identity, now)?;
        let mut done = Vec::new();
        for (lun, disk) in disks {
            if disk.ade.is_some() {
                continue;
            }
            let passphrase = new_passphrase();
            let file_name = passphrase_file_name(lun);
            let mut tags = BTreeMap::from([
                ("DiskEncryptionKeyFileName".to_owned(), file_name.clone()),
                ("MachineName".to_owned(), vm.name.clone()),
            ]);
            let (value, content_type) = match &kek {
                None => (B64.encode(&*passphrase), ade::CONTENT_BEK),
                Some((kek_url, _)) => {
                    let wrapped = self
                        .vaults
                        .wrap_key(ade::PLATFORM_IDENTITY, kek_url, algorithm, &passphrase)
                        .await
                        .map_err(|cause| ComputeError::KeyUnusable {
                            disk: disk.name.clone(),
                            key_url: kek_url.clone(),
                            cause,
                        })?;
                    tags.insert(
                        "DiskEncryptionKeyEncryptionAlgorithm".into(),
                        algorithm.into(),
                    );
                    tags.insert("DiskEncryptionKeyEncryptionKeyURL".into(), kek_url.clone());
                    (B64.encode(wrapped), ade::CONTENT_WRAPPED_BEK)
                }
            };
            let secret = PlatformSecret {
                value: Zeroizing::new(value),
                content_type: content_type.to_owned(),
                tags,
            };
            let secret_name = atrest_crypto::random_uuid();
            let secret_url = self
                .vaults
                .set_secret(ade::PLATFORM_IDENTITY, &vault_name, &secret_name, &secret)
                .await
                .map_err(|e| {
                    ComputeError::invalid(
                        "InvalidParameter",
                        format!("The disk encryption secret cannot be stored in vault '{vault_name}': {e}"),
                    )
                })?;
            let name = disk.name.clone();
            let format = format_all && lun.is_some();
            self.with_volume(&disk, move |volume| {
                if format {
                    format_volume(volume, luks, &passphrase, &name)
                } else {
                    encrypt_in_place(volume, luks, &passphrase, &name)
                }
            })
            .await?;
            let mut stamped = self.get::<Disk>(DISK_KIND, &disk.resource_group, &disk.name)?;
            stamped.ade = Some(AdeVolume {
                secret_url,
                secret_vault: vault.resource_id.clone(),
                kek_url: kek.as_ref().map(|(url, _)| url.clone()),
                kek_vault: kek.as_ref().map(|(_, vault)| vault.clone()),
                kek_algorithm: kek.as_ref().map(|_| algorithm.to_owned()),
                file_name,
                luks: luks.as_str().to_owned(),
            });
            stamped.ade_ever = true;
            self.save_disk(&stamped)?;
            done.push(disk.name);
        }
        Ok(if done.is_empty() {
            format!(
                "Encryption succeeded for all volumes of type {}: they were encrypted already.",
                volume_type.as_str()
            )
        } else {
            format!(
                "Encryption succeeded for {} ({}).",
                done.join(", "),
                if format_all {
                    "data volumes formatted"
                } else {
                    "encrypted in place"
                }
            )
        })
    }

    async fn disable(
        &self,
        vm: &VirtualMachine,
        volume_type: VolumeType,
    ) -> Result<String, ComputeError> {
        if volume_type != VolumeType::Data {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Disabling encryption on Linux is supported only for data volumes (VolumeType Data), not {}.", volume_type.as_str()),
            ));
        }
        if let Some(os) = &vm.os_disk {
            if self
                .get::<Disk>(DISK_KIND, &vm.resource_group, os)?
                .ade
                .is_some()
            {
                return Err(ComputeError::conflict(
                    "OperationNotAllowed",
                    format!("The OS volume of virtual machine '{}' is encrypted: on Linux, data volumes can be decrypted only while the OS volume is not.", vm.name),
                ));
            }
        }
        let mut done = Vec::new();
        for (_, disk) in self.selected(vm, VolumeType::Data)? {
            let Some(volume) = disk.ade.clone() else {
                continue;
            };
            let passphrase = self.passphrase(&disk.name, &volume).await?;
            let name = disk.name.clone();
            self.with_volume(&disk, move |v| decrypt_in_place(v, &passphrase, &name))
                .await?;
            let mut plain = self.get::<Disk>(DISK_KIND, &disk.resource_group, &disk.name)?;
            plain.ade = None;
            self.save_disk(&plain)?;
            done.push(disk.name);
        }
        Ok(if done.is_empty() {
            "Decryption succeeded: no data volume was encrypted.".to_owned()
        } else {
            format!("Decryption succeeded for {}.", done.join(", "))
        })
    }

    /// Points a disk's ADE settings at where its secret (and key-encryption key) live now,
    /// as a restore does after they were restored into a vault.
    pub fn set_ade_keys(
        &self,
        resource_group: &str,
        name: &str,
        secret_url: &str,
        secret_vault: &str,
        kek: Option<(&str, &str)>,
    ) -> Result<(), ComputeError> {
        let mut disk: Disk = self.get(DISK_KIND, resource_group, name)?;
        let Some(ade) = disk.ade.as_mut() else {
            return Err(ComputeError::invalid(
                "InvalidParameter",
                format!("Disk '{name}' is not encrypted with Azure Disk Encryption."),
            ));
        };
        ade.secret_url = secret_url.to_owned();
        ade.secret_vault = secret_vault.to_owned();
        if let Some((url, vault)) = kek {
            KeyUrl::parse(url, &self.config.vault_host_suffix)?;
            ade.kek_url = Some(url.to_owned());
            ade.kek_vault = Some(vault.to_owned());
        }
        self.save_disk(&disk)
    }

    /// The platform identity ADE acts as, created on first use.
    fn ensure_platform_identity(&self, identity: &Identity, now: i64) -> Result<(), ComputeError> {
        if identity.managed_identity(ade::PLATFORM_IDENTITY)?.is_none() {
            identity.create_managed_identity(
                "Azure Disk Encryption",
                ade::PLATFORM_IDENTITY,
                now,
            )?;
        }
        Ok(())
    }

    /// A volume's passphrase, read from its secret as the platform identity and unwrapped
    /// with its key-encryption key where it is wrapped.
    async fn passphrase(
        &self,
        disk: &str,
        volume: &AdeVolume,
    ) -> Result<Zeroizing<Vec<u8>>, ComputeError> {
        let secret = self
            .vaults
            .get_secret(ade::PLATFORM_IDENTITY, &volume.secret_url)
            .await
            .map_err(|cause| ComputeError::SecretUnusable {
                disk: disk.to_owned(),
                secret_url: volume.secret_url.clone(),
                cause,
            })?;
        let decoded = Zeroizing::new(B64.decode(secret.value.as_bytes()).map_err(|_| {
            ComputeError::conflict(
                "OperationNotAllowed",
                format!(
                    "The disk encryption secret '{}' of disk '{disk}' is not base64.",
                    volume.secret_url
                ),
            )
        })?);
        match (&volume.kek_url, secret.content_type.as_str()) {
            (Some(kek), ade::CONTENT_WRAPPED_BEK) => {
                let alg = volume
                    .kek_algorithm
                    .as_deref()
                    .unwrap_or(ade::KEY_ENCRYPTION_ALGORITHMS[0]);
                self.vaults
                    .unwrap_key(ade::PLATFORM_IDENTITY, kek, alg, &decoded)
                    .await
                    .map_err(|cause| ComputeError::KeyUnusable {
                        disk: disk.to_owned(),
                        key_url: kek.clone(),
                        cause,
                    })
            }
            _ => Ok(decoded),
        }
    }

    /// Runs `work` on a disk of a deallocated machine: under the disk's lease, its blocks
    /// frozen first and flushed once after, so a crash in between leaves the disk as it was.
    async fn with_volume(
        &self,
        disk: &Disk,
        work: impl FnOnce(&Volume) -> Result<(), ComputeError> + Send + 'static,
    ) -> Result<(), ComputeError> {
        let lease = self.take_lease(disk)?;
        let result = async {
            let layers = self.unwrap_layers(disk).await?;
            let volume = self.open_volume(disk, layers).await?;
            tokio::task::spawn_blocking(move || {
                volume.freeze()?;
                work(&volume)?;
                volume.flush()?;
                Ok(())
            })
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?
        }
        .await;
        self.release_lease(&lease);
        result
    }

    /// The BEK VOLUME of `vm`: one passphrase file per encrypted volume, each read as the
    /// platform identity (`None` when no volume is encrypted). A secret or key that cannot
    /// be used refuses the start, naming it.
    pub(super) async fn bek_volume(
        &self,
        vm: &VirtualMachine,
    ) -> Result<Option<BekExport>, ComputeError> {
        let mut passphrases = Vec::new();
        for (_, name) in vm.attached() {
            let disk: Disk = self.get(DISK_KIND, &vm.resource_group, name)?;
            if let Some(volume) = &disk.ade {
                passphrases.push((
                    volume.file_name.clone(),
                    self.passphrase(&disk.name, volume).await?,
                ));
            }
        }
        if passphrases.is_empty() {
            return Ok(None);
        }
        let files: Vec<(String, &[u8])> = passphrases
            .iter()
            .map(|(n, p)| (n.clone(), &p[..]))
            .collect();
        let image = bek::image(ade::BEK_VOLUME_LABEL, &files).map_err(ComputeError::Internal)?;
        Ok(Some(BekExport {
            export: Self::bek_export_name(&vm.resource_group, &vm.name),
            image,
            closed: AtomicBool::new(false),
        }))
    }
}
