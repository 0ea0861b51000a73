//! Azure Disk Encryption for Linux (the `AzureDiskEncryptionForLinux` extension, single
//! pass, version 1.1): its settings and the rules Azure enforces on them, as pure
//! functions.

use thiserror::Error;

use crate::operation::Operation;

/// The extension's publisher and type, as `az vm encryption enable` sends them.
pub const PUBLISHER: &str = "Microsoft.Azure.Security";
/// The extension type (and the name `az` gives the extension resource).
pub const EXTENSION_TYPE: &str = "AzureDiskEncryptionForLinux";
/// The handler version of single-pass ADE.
pub const HANDLER_VERSION: &str = "1.1";
/// `encryptionSettingsVersion` of disks encrypted by single-pass ADE.
pub const SETTINGS_VERSION: &str = "1.1";
/// Content type of a passphrase secret stored as is.
pub const CONTENT_BEK: &str = "BEK";
/// Content type of a passphrase secret wrapped by a key-encryption key.
pub const CONTENT_WRAPPED_BEK: &str = "Wrapped BEK";
/// The label of the FAT volume that carries the passphrases to the guest.
pub const BEK_VOLUME_LABEL: &str = "BEK VOLUME";
/// The name of the OS volume's passphrase file; data volumes' files add `_{controller}_{lun}`.
pub const PASSPHRASE_FILE: &str = "LinuxPassPhraseFileName";
/// The SCSI controller Azure attaches data disks to (`/dev/disk/azure/scsi1/lunN`).
pub const DATA_CONTROLLER: u32 = 1;
/// Random bytes behind a passphrase: its text is their base64 (172 characters).
pub const PASSPHRASE_RANDOM_BYTES: usize = 127;

/// The managed identity the platform acts as when it stores, reads and unwraps disk
/// encryption secrets: what a vault's `enabledForDiskEncryption` lets in.
pub const PLATFORM_IDENTITY: &str = "/providers/Microsoft.Compute/azureDiskEncryption";

/// What `enabledForDiskEncryption` permits the platform identity in a vault, and all it
/// permits: store and read secrets, read keys and wrap and unwrap with them.
pub fn platform_may(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::SecretSet
            | Operation::SecretGet
            | Operation::KeyGet
            | Operation::KeyWrap
            | Operation::KeyUnwrap
    )
}

/// A refused ADE request. Messages name the setting or resource at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdeRuleError {
    /// `EncryptionOperation` is not one ADE for Linux knows (`InvalidParameter`).
    #[error("The value '{0}' of EncryptionOperation is invalid. Use EnableEncryption, EnableEncryptionFormatAll or DisableEncryption.")]
    Operation(String),
    /// `VolumeType` is not `OS`, `Data` or `All` (`InvalidParameter`).
    #[error("The value '{0}' of VolumeType is invalid. Use OS, Data or All.")]
    VolumeType(String),
    /// `KeyEncryptionAlgorithm` is not one ADE allows (`InvalidParameter`).
    #[error("The value '{0}' of KeyEncryptionAlgorithm is invalid. Use RSA-OAEP, RSA-OAEP-256 or RSA1_5.")]
    Algorithm(String),
    /// A setting the operation needs is missing (`InvalidParameter`).
    #[error("The setting '{0}' is required to enable Azure Disk Encryption.")]
    Missing(&'static str),
    /// The LUKS version asked for is not LUKS1 or LUKS2 (`InvalidParameter`).
    #[error("The value '{0}' of LuksVersion is invalid. Use LUKS1 or LUKS2.")]
    LuksVersion(String),
}

/// `EncryptionOperation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionOperation {
    /// Encrypt the selected volumes, keeping their data.
    Enable,
    /// Encrypt the selected volumes; data volumes are formatted, their data lost.
    EnableFormatAll,
    /// Decrypt the selected volumes in place (data volumes only, on Linux).
    Disable,
}

impl EncryptionOperation {
    /// Parses Azure's name, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, AdeRuleError> {
        [Self::Enable, Self::EnableFormatAll, Self::Disable]
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AdeRuleError::Operation(s.to_owned()))
    }

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enable => "EnableEncryption",
            Self::EnableFormatAll => "EnableEncryptionFormatAll",
            Self::Disable => "DisableEncryption",
        }
    }
}

/// `VolumeType`: which volumes the operation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    /// The OS disk.
    Os,
    /// The data disks.
    Data,
    /// Both.
    All,
}

impl VolumeType {
    /// Parses `OS`, `Data` or `All`, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, AdeRuleError> {
        [Self::Os, Self::Data, Self::All]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AdeRuleError::VolumeType(s.to_owned()))
    }

    /// The name `az` sends.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Os => "OS",
            Self::Data => "Data",
            Self::All => "All",
        }
    }

    /// Whether the OS volume is covered.
    pub fn covers_os(self) -> bool {
        self != Self::Data
    }

    /// Whether data volumes are covered.
    pub fn covers_data(self) -> bool {
        self != Self::Os
    }
}

/// The algorithms a passphrase may be wrapped with, the default first.
pub const KEY_ENCRYPTION_ALGORITHMS: [&str; 3] = ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"];

/// Checks `KeyEncryptionAlgorithm` (empty: the default), returning Azure's spelling.
pub fn key_encryption_algorithm(s: &str) -> Result<&'static str, AdeRuleError> {
    if s.is_empty() {
        return Ok(KEY_ENCRYPTION_ALGORITHMS[0]);
    }
    KEY_ENCRYPTION_ALGORITHMS
        .into_iter()
        .find(|a| a.eq_ignore_ascii_case(s))
        .ok_or_else(|| AdeRuleError::Algorithm(s.to_owned()))
}

/// The LUKS format of newly encrypted volumes: LUKS2 unless LUKS1 is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LuksVersion {
    /// LUKS1 (what qemu's `luks` driver opens).
    Luks1,
    /// LUKS2 (cryptsetup's default).
    Luks2,
}

impl LuksVersion {
    /// Parses `LUKS1` or `LUKS2` (empty: LUKS2).
    pub fn parse(s: &str) -> Result<Self, AdeRuleError> {
        match s.to_ascii_uppercase().as_str() {
            "" | "LUKS2" => Ok(Self::Luks2),
            "LUKS1" => Ok(Self::Luks1),
            _ => Err(AdeRuleError::LuksVersion(s.to_owned())),
        }
    }

    /// `LUKS1` or `LUKS2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Luks1 => "LUKS1",
            Self::Luks2 => "LUKS2",
        }
    }
}

/// The passphrase file of a volume on the BEK VOLUME, and the secret's
/// `DiskEncryptionKeyFileName` tag: the OS volume's, or a data disk's by LUN.
pub fn passphrase_file_name(lun: Option<u32>) -> String {
    match lun {
        None => PASSPHRASE_FILE.to_owned(),
        Some(lun) => format!("{PASSPHRASE_FILE}_{DATA_CONTROLLER}_{lun}"),
    }
}

/// The subscription id in an ARM resource id (`/subscriptions/{id}/…`), if it has one.
pub fn subscription_of(resource_id: &str) -> Option<&str> {
    let mut parts = resource_id.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some(kw), Some(id)) if kw.eq_ignore_ascii_case("subscriptions") && !id.is_empty() => {
            Some(id)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_az_sends_them() {
        assert_eq!(
            EncryptionOperation::parse("enableencryptionformatall").unwrap(),
            EncryptionOperation::EnableFormatAll
        );
        assert!(EncryptionOperation::parse("Encrypt").is_err());
        assert_eq!(VolumeType::parse("DATA").unwrap(), VolumeType::Data);
        assert!(VolumeType::All.covers_os() && VolumeType::All.covers_data());
        assert!(!VolumeType::Data.covers_os() && !VolumeType::Os.covers_data());
        assert!(VolumeType::parse("Boot").is_err());
        assert_eq!(key_encryption_algorithm("").unwrap(), "RSA-OAEP");
        assert_eq!(key_encryption_algorithm("rsa1_5").unwrap(), "RSA1_5");
        assert!(key_encryption_algorithm("A256KW").is_err());
        assert_eq!(LuksVersion::parse("").unwrap(), LuksVersion::Luks2);
        assert_eq!(LuksVersion::parse("luks1").unwrap(), LuksVersion::Luks1);
        assert!(LuksVersion::parse("LUKS3").is_err());
    }

    #[test]
    fn passphrase_files_are_named_per_volume() {
        assert_eq!(passphrase_file_name(None), "LinuxPassPhraseFileName");
        assert_eq!(passphrase_file_name(Some(2)), "LinuxPassPhraseFileName_1_2");
    }

    #[test]
    fn the_platform_may_only_handle_secrets_and_wrap() {
        assert!(platform_may(Operation::SecretSet) && platform_may(Operation::KeyUnwrap));
        assert!(!platform_may(Operation::SecretDelete) && !platform_may(Operation::KeySign));
        assert!(!platform_may(Operation::KeyDelete) && !platform_may(Operation::SecretList));
    }

    #[test]
    fn subscriptions_of_resource_ids() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/rg/providers/X/y/z"),
            Some("abc")
        );
        assert_eq!(subscription_of("/providers/Microsoft.Compute/x"), None);
    }
}
