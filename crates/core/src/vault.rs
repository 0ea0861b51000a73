//! Vault properties and the rules for creating and updating them.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::access_policy::AccessPolicyEntry;
use crate::attributes::Recovery;

/// Default `softDeleteRetentionInDays`.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Largest secret value, in bytes.
pub const MAX_SECRET_VALUE_BYTES: usize = 25 * 1024;
/// Longest `contentType`, in characters.
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;
/// Most tags on one object.
pub const MAX_TAGS: usize = 15;
/// Longest tag name, in characters.
pub const MAX_TAG_NAME_CHARS: usize = 512;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// The mutable settings of a vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultProperties {
    /// Days deleted objects are retained (7–90, fixed at creation).
    pub soft_delete_retention_days: u32,
    /// Purge refused until the retention ends; once on, never off.
    pub purge_protection: bool,
    /// Whether disk encryption may fetch secrets from this vault.
    pub enabled_for_disk_encryption: bool,
    /// RBAC (true) or access policies (false) authorize data-plane calls.
    pub enable_rbac_authorization: bool,
}

impl Default for VaultProperties {
    fn default() -> Self {
        VaultProperties {
            soft_delete_retention_days: DEFAULT_RETENTION_DAYS,
            purge_protection: false,
            enabled_for_disk_encryption: false,
            enable_rbac_authorization: true,
        }
    }
}

impl VaultProperties {
    /// The recovery settings objects of this vault inherit.
    pub fn recovery(&self) -> Recovery {
        Recovery {
            retention_days: self.soft_delete_retention_days,
            purge_protection: self.purge_protection,
        }
    }
}

/// A requested change to a vault's properties; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultPatch {
    /// New retention; only allowed if equal to the current one.
    pub soft_delete_retention_days: Option<u32>,
    /// New purge protection flag.
    pub purge_protection: Option<bool>,
    /// New disk encryption flag.
    pub enabled_for_disk_encryption: Option<bool>,
    /// New authorization model.
    pub enable_rbac_authorization: Option<bool>,
    /// `enableSoftDelete`; only `true` is accepted (soft delete is always on).
    pub enable_soft_delete: Option<bool>,
}

/// A vault setting the rules forbid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VaultRuleError {
    /// Retention outside 7–90 days.
    #[error("The property \"softDeleteRetentionInDays\" has an invalid value {0}. It must be between 7 and 90.")]
    RetentionOutOfRange(u32),
    /// Retention cannot change after creation.
    #[error("The property \"softDeleteRetentionInDays\" cannot be changed after the vault is created (current value {current}, requested {requested}).")]
    RetentionImmutable {
        /// Current retention.
        current: u32,
        /// Requested retention.
        requested: u32,
    },
    /// Purge protection cannot be turned off.
    #[error("The property \"enablePurgeProtection\" cannot be set to false. Once purge protection is enabled it cannot be disabled.")]
    PurgeProtectionIrreversible,
    /// Soft delete cannot be turned off.
    #[error(
        "The property \"enableSoftDelete\" cannot be set to false. Soft delete is always enabled."
    )]
    SoftDeleteRequired,
    /// Unknown or empty location.
    #[error("The location '{0}' is not a valid location name.")]
    BadLocation(String),
}

impl VaultProperties {
    /// Properties for a new vault from a creation request, checking the rules.
    pub fn create(patch: &VaultPatch) -> Result<Self, VaultRuleError> {
        let mut props = VaultProperties::default();
        if let Some(days) = patch.soft_delete_retention_days {
            if !(7..=90).contains(&days) {
                return Err(VaultRuleError::RetentionOutOfRange(days));
            }
            props.soft_delete_retention_days = days;
        }
        props.apply_flags(patch)?;
        Ok(props)
    }

    /// The properties after `patch`, or the rule it breaks.
    pub fn update(&self, patch: &VaultPatch) -> Result<Self, VaultRuleError> {
        let mut props = self.clone();
        if let Some(days) = patch.soft_delete_retention_days {
            if days != self.soft_delete_retention_days {
                return Err(VaultRuleError::RetentionImmutable {
                    current: self.soft_delete_retention_days,
                    requested: days,
                });
            }
        }
        if self.purge_protection && patch.purge_protection == Some(false) {
            return Err(VaultRuleError::PurgeProtectionIrreversible);
        }
        props.apply_flags(patch)?;
        Ok(props)
    }

    fn apply_flags(&mut self, patch: &VaultPatch) -> Result<(), VaultRuleError> {
        if patch.enable_soft_delete == Some(false) {
            return Err(VaultRuleError::SoftDeleteRequired);
        }
        if let Some(v) = patch.purge_protection {
            self.purge_protection = v;
        }
        if let Some(v) = patch.enabled_for_disk_encryption {
            self.enabled_for_disk_encryption = v;
        }
        if let Some(v) = patch.enable_rbac_authorization {
            self.enable_rbac_authorization = v;
        }
        Ok(())
    }
}

/// Normalizes an Azure location (`"East US"` → `"eastus"`) and checks it is well formed.
pub fn normalize_location(location: &str) -> Result<String, VaultRuleError> {
    let normalized: String = location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if normalized.is_empty()
        || normalized.len() > 64
        || !normalized.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(VaultRuleError::BadLocation(location.to_owned()));
    }
    Ok(normalized)
}

/// The geography a location belongs to; backups restore only within one geography.
pub fn geography(location: &str) -> &str {
    const GEOGRAPHIES: &[(&str, &[&str])] = &[
        (
            "unitedstates",
            &[
                "eastus",
                "eastus2",
                "westus",
                "westus2",
                "westus3",
                "centralus",
                "northcentralus",
                "southcentralus",
                "westcentralus",
            ],
        ),
        ("europe", &["northeurope", "westeurope"]),
        ("unitedkingdom", &["uksouth", "ukwest"]),
        ("germany", &["germanywestcentral", "germanynorth"]),
        ("france", &["francecentral", "francesouth"]),
        ("asiapacific", &["eastasia", "southeastasia"]),
        ("japan", &["japaneast", "japanwest"]),
        (
            "australia",
            &["australiaeast", "australiasoutheast", "australiacentral"],
        ),
        ("canada", &["canadacentral", "canadaeast"]),
    ];
    GEOGRAPHIES
        .iter()
        .find(|(_, members)| members.contains(&location))
        .map_or(location, |(geo, _)| geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_rules() {
        let p = VaultProperties::create(&VaultPatch {
            soft_delete_retention_days: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.soft_delete_retention_days, 7);
        for bad in [6, 91, 0] {
            let patch = VaultPatch {
                soft_delete_retention_days: Some(bad),
                ..Default::default()
            };
            assert_eq!(
                VaultProperties::create(&patch),
                Err(VaultRuleError::RetentionOutOfRange(bad))
            );
        }
        let same = VaultPatch {
            soft_delete_retention_days: Some(7),
            ..Default::default()
        };
        assert!(p.update(&same).is_ok());
        let other = VaultPatch {
            soft_delete_retention_days: Some(30),
            ..Default::default()
        };
        assert!(matches!(
            p.update(&other),
            Err(VaultRuleError::RetentionImmutable { .. })
        ));
    }

    #[test]
    fn purge_protection_is_one_way() {
        let on = VaultPatch {
            purge_protection: Some(true),
            ..Default::default()
        };
        let off = VaultPatch {
            purge_protection: Some(false),
            ..Default::default()
        };
        let p = VaultProperties::default().update(&on).unwrap();
        assert!(p.purge_protection);
        assert_eq!(
            p.update(&off),
            Err(VaultRuleError::PurgeProtectionIrreversible)
        );
        assert!(VaultProperties::default().update(&off).is_ok());
    }

    #[test]
    fn soft_delete_cannot_be_disabled() {
        let patch = VaultPatch {
            enable_soft_delete: Some(false),
            ..Default::default()
        };
        assert_eq!(
            VaultProperties::create(&patch),
            Err(VaultRuleError::SoftDeleteRequired)
        );
    }

    #[test]
    fn locations() {
        assert_eq!(normalize_location("East US").unwrap(), "eastus");
        assert!(normalize_location("").is_err());
        assert!(normalize_location("east/us").is_err());
        assert_eq!(geography("westus2"), geography("eastus"));
        assert_ne!(geography("westeurope"), geography("eastus"));
        assert_eq!(geography("mars"), "mars");
    }
}

/// A stored vault. `wrapped_key` is the vault storage key sealed by the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRecord {
    /// Vault name (unique, case-insensitive).
    pub name: String,
    /// Random immutable id; binds sealed data to this vault even if the name is reused.
    pub vault_id: String,
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Normalized location.
    pub location: String,
    /// Tenant id.
    pub tenant: String,
    /// `softDeleteRetentionInDays`.
    pub retention_days: u32,
    /// `enablePurgeProtection`.
    pub purge_protection: bool,
    /// `enabledForDiskEncryption`.
    pub disk_encryption: bool,
    /// `enableRbacAuthorization`.
    pub rbac: bool,
    /// ARM tags.
    pub tags: BTreeMap<String, String>,
    /// Access policies; they authorize the data plane when `rbac` is false.
    pub access_policies: Vec<AccessPolicyEntry>,
    /// Sealed storage key.
    pub wrapped_key: Vec<u8>,
    /// Creation time.
    pub created: i64,
    /// Last update.
    pub updated: i64,
    /// Deletion time, when the vault is soft-deleted.
    pub deleted: Option<i64>,
    /// When a soft-deleted vault is purged.
    pub scheduled_purge: Option<i64>,
}

/// Which collection an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `/secrets`.
    Secret,
    /// `/keys`.
    Key,
    /// `/certificates`.
    Certificate,
}

impl ObjectKind {
    /// The stored discriminator.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }

    /// The kind stored as `s`; anything but `key` or `certificate` is a secret.
    pub fn parse(s: &str) -> Self {
        match s {
            "key" => ObjectKind::Key,
            "certificate" => ObjectKind::Certificate,
            _ => ObjectKind::Secret,
        }
    }
}
