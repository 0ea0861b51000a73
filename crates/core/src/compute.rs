//! Rules of the compute provider: disk encryption sets, managed disks and virtual
//! machines (`Microsoft.Compute`), as Azure enforces them.

use thiserror::Error;

use crate::names::{check_object_name, check_vault_name, is_object_version};

/// A request the compute rules refuse. Each message names the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ComputeRuleError {
    /// A resource name breaks the naming rules of its type.
    #[error("The {kind} name '{name}' is invalid. It must be 1-{max} characters of letters, digits, '_', '-' and '.', begin with a letter or digit, and end with a letter, digit or '_'.")]
    Name {
        /// The resource type, as a person says it.
        kind: &'static str,
        /// The name given.
        name: String,
        /// The longest name allowed.
        max: usize,
    },
    /// An encryption type Azure does not define.
    #[error("The value '{0}' of encryption type is invalid. Use EncryptionAtRestWithPlatformKey, EncryptionAtRestWithCustomerKey or EncryptionAtRestWithPlatformAndCustomerKeys.")]
    EncryptionType(String),
    /// A disk size outside 1–32,767 GiB.
    #[error("The disk size {0} GB is invalid. diskSizeGB must be between 1 and 32767.")]
    DiskSize(i64),
    /// A key URL that is not a versioned key of a vault of this instance.
    #[error("The key URL '{0}' is invalid. It must be a versioned key identifier such as https://NAME.vault.localhost:PORT/keys/KEY/VERSION.")]
    KeyUrl(String),
}

/// How a disk's data key is protected (`encryption.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionType {
    /// Wrapped by the platform key only (the default).
    PlatformKey,
    /// Wrapped by a customer-managed key through a disk encryption set.
    CustomerKey,
    /// Two data keys: one wrapped by the platform key, one by the customer's.
    PlatformAndCustomerKeys,
}

impl EncryptionType {
    /// Parses Azure's name, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, ComputeRuleError> {
        [
            Self::PlatformKey,
            Self::CustomerKey,
            Self::PlatformAndCustomerKeys,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| ComputeRuleError::EncryptionType(s.to_owned()))
    }

    /// Azure's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformKey => "EncryptionAtRestWithPlatformKey",
            Self::CustomerKey => "EncryptionAtRestWithCustomerKey",
            Self::PlatformAndCustomerKeys => "EncryptionAtRestWithPlatformAndCustomerKeys",
        }
    }

    /// Whether a customer-managed key (so a disk encryption set) is involved.
    pub fn uses_customer_key(self) -> bool {
        self != Self::PlatformKey
    }
}

/// Checks a disk, disk encryption set or virtual machine name.
pub fn check_compute_name(kind: &'static str, name: &str) -> Result<(), ComputeRuleError> {
    let max = if kind == "virtual machine" { 64 } else { 80 };
    let bytes = name.as_bytes();
    let ok = (1..=max).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && (bytes[bytes.len() - 1].is_ascii_alphanumeric() || bytes[bytes.len() - 1] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ComputeRuleError::Name {
            kind,
            name: name.to_owned(),
            max,
        })
    }
}

/// Checks `diskSizeGB`.
pub fn check_disk_size_gb(size: i64) -> Result<u64, ComputeRuleError> {
    if (1..=32_767).contains(&size) {
        Ok(size as u64)
    } else {
        Err(ComputeRuleError::DiskSize(size))
    }
}

/// A versioned key identifier, `https://VAULT.vault.localhost[:PORT]/keys/NAME/VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl {
    /// The vault name, lower-cased.
    pub vault: String,
    /// The key name.
    pub name: String,
    /// The key version.
    pub version: String,
}

impl KeyUrl {
    /// Parses a key URL whose host is `VAULT` followed by `host_suffix` (`.vault.localhost`).
    pub fn parse(url: &str, host_suffix: &str) -> Result<Self, ComputeRuleError> {
        let bad = || ComputeRuleError::KeyUrl(url.to_owned());
        let rest = url.strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = rest.split_once('/').ok_or_else(bad)?;
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        let vault = host
            .to_ascii_lowercase()
            .strip_suffix(host_suffix)
            .map(str::to_owned)
            .ok_or_else(bad)?;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let ["keys", name, version] = segments.as_slice() else {
            return Err(bad());
        };
        if check_vault_name(&vault).is_err()
            || check_object_name(name).is_err()
            || !is_object_version(version)
        {
            return Err(bad());
        }
        Ok(KeyUrl {
            vault,
            name: (*name).to_owned(),
            version: (*version).to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUFFIX: &str = ".vault.localhost";
    const VERSION: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn encryption_types() {
        assert_eq!(
            EncryptionType::parse("encryptionatrestwithcustomerkey"),
            Ok(EncryptionType::CustomerKey)
        );
        for t in [
            EncryptionType::PlatformKey,
            EncryptionType::CustomerKey,
            EncryptionType::PlatformAndCustomerKeys,
        ] {
            assert_eq!(EncryptionType::parse(t.as_str()), Ok(t));
        }
        assert!(EncryptionType::parse("None").is_err());
        assert!(!EncryptionType::PlatformKey.uses_customer_key());
        assert!(EncryptionType::PlatformAndCustomerKeys.uses_customer_key());
    }

    #[test]
    fn names() {
        let (longest, too_long) = ("a".repeat(80), "a".repeat(81));
        for ok in ["d", "disk-1", "Disk_1.data_", &longest] {
            assert!(check_compute_name("disk", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-d", "d-", "d.", "d/e", "d e", &too_long] {
            assert!(check_compute_name("disk", bad).is_err(), "{bad}");
        }
        assert!(check_compute_name("virtual machine", &"v".repeat(65)).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(check_disk_size_gb(1), Ok(1));
        assert_eq!(check_disk_size_gb(32_767), Ok(32_767));
        assert!(check_disk_size_gb(0).is_err());
        assert!(check_disk_size_gb(-4).is_err());
        assert!(check_disk_size_gb(32_768).is_err());
    }

    #[test]
    fn key_urls() {
        let url = format!("https://KV1.vault.localhost:8443/keys/cmk/{VERSION}");
        assert_eq!(
            KeyUrl::parse(&url, SUFFIX),
            Ok(KeyUrl {
                vault: "kv1".into(),
                name: "cmk".into(),
                version: VERSION.into()
            })
        );
        for bad in [
            "https://kv1.vault.localhost:8443/keys/cmk".to_owned(),
            format!("http://kv1.vault.localhost:8443/keys/cmk/{VERSION}"),
            format!("https://kv1.example.com/keys/cmk/{VERSION}"),
            format!("https://kv1.vault.localhost/secrets/cmk/{VERSION}"),
            format!("https://kv1.vault.localhost/keys/c_k/{VERSION}"),
            "https://kv1.vault.localhost/keys/cmk/notaversion".to_owned(),
            format!("https://kv1.vault.localhost/keys/cmk/{VERSION}/extra"),
        ] {
            assert!(KeyUrl::parse(&bad, SUFFIX).is_err(), "{bad}");
        }
    }
}
