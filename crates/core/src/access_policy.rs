//! Key Vault access policies: per-principal permission lists that authorize the data
//! plane of a vault whose `enableRbacAuthorization` is false.
//!
//! An entry names a principal (`objectId`) and optionally the application it must act
//! through (`applicationId`, a compound identity). Permission names are Azure's, matched
//! without regard to case and stored in Azure's spelling.

use serde::{Deserialize, Serialize};

use crate::names::is_guid;
use thiserror::Error;

/// Most entries one vault may hold.
pub const MAX_ACCESS_POLICIES: usize = 1024;

/// Azure's key permissions.
pub const KEY_PERMISSIONS: &[&str] = &[
    "all",
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "backup",
    "restore",
    "recover",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
];

/// Azure's secret permissions.
pub const SECRET_PERMISSIONS: &[&str] = &[
    "all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge",
];

/// Azure's certificate permissions.
pub const CERTIFICATE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "delete",
    "create",
    "import",
    "update",
    "managecontacts",
    "getissuers",
    "listissuers",
    "setissuers",
    "deleteissuers",
    "manageissuers",
    "recover",
    "purge",
    "backup",
    "restore",
];

/// Azure's storage-account permissions (stored and shown; atrest serves no storage keys).
pub const STORAGE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "delete",
    "set",
    "update",
    "regeneratekey",
    "recover",
    "purge",
    "backup",
    "restore",
    "setsas",
    "listsas",
    "getsas",
    "deletesas",
];

/// The object class a permission applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionClass {
    /// `permissions.keys`.
    Keys,
    /// `permissions.secrets`.
    Secrets,
    /// `permissions.certificates`.
    Certificates,
    /// `permissions.storage`.
    Storage,
}

impl PermissionClass {
    /// Every class, in Azure's order.
    pub const ALL: [PermissionClass; 4] = [
        PermissionClass::Keys,
        PermissionClass::Secrets,
        PermissionClass::Certificates,
        PermissionClass::Storage,
    ];

    /// The property name under `permissions`.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionClass::Keys => "keys",
            PermissionClass::Secrets => "secrets",
            PermissionClass::Certificates => "certificates",
            PermissionClass::Storage => "storage",
        }
    }

    /// The permission names Azure defines for this class.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            PermissionClass::Keys => KEY_PERMISSIONS,
            PermissionClass::Secrets => SECRET_PERMISSIONS,
            PermissionClass::Certificates => CERTIFICATE_PERMISSIONS,
            PermissionClass::Storage => STORAGE_PERMISSIONS,
        }
    }

    /// Azure's spelling of `name`, if it is a permission of this class.
    pub fn canonical(self, name: &str) -> Option<&'static str> {
        self.names()
            .iter()
            .copied()
            .find(|p| p.eq_ignore_ascii_case(name))
    }
}

/// The permission lists of one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permissions {
    /// Key permissions.
    pub keys: Vec<String>,
    /// Secret permissions.
    pub secrets: Vec<String>,
    /// Certificate permissions.
    pub certificates: Vec<String>,
    /// Storage permissions.
    pub storage: Vec<String>,
}

impl Permissions {
    /// The list of one class.
    pub fn of(&self, class: PermissionClass) -> &Vec<String> {
        match class {
            PermissionClass::Keys => &self.keys,
            PermissionClass::Secrets => &self.secrets,
            PermissionClass::Certificates => &self.certificates,
            PermissionClass::Storage => &self.storage,
        }
    }

    fn of_mut(&mut self, class: PermissionClass) -> &mut Vec<String> {
        match class {
            PermissionClass::Keys => &mut self.keys,
            PermissionClass::Secrets => &mut self.secrets,
            PermissionClass::Certificates => &mut self.certificates,
            PermissionClass::Storage => &mut self.storage,
        }
    }

    /// Whether `permission` (or `all`) is granted in `class`.
    pub fn grants(&self, class: PermissionClass, permission: &str) -> bool {
        self.of(class)
            .iter()
            .any(|p| p == "all" || p.eq_ignore_ascii_case(permission))
    }

    fn is_empty(&self) -> bool {
        PermissionClass::ALL.iter().all(|c| self.of(*c).is_empty())
    }
}

/// One access policy entry, in Azure's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyEntry {
    /// The tenant of the principal.
    pub tenant_id: String,
    /// Object id of a user, group, service principal or managed identity.
    pub object_id: String,
    /// For a compound identity: the application the principal must act through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// What the principal may do.
    #[serde(default)]
    pub permissions: Permissions,
}

impl AccessPolicyEntry {
    fn same_principal(&self, other: &AccessPolicyEntry) -> bool {
        self.object_id.eq_ignore_ascii_case(&other.object_id)
            && eq_opt(&self.application_id, &other.application_id)
    }
}

fn eq_opt(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    }
}

/// An access policy change the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccessPolicyError {
    /// More entries than a vault may hold.
    #[error("The number of access policies ({0}) exceeds the maximum of {MAX_ACCESS_POLICIES} per vault.")]
    TooMany(usize),
    /// A permission name Azure does not define for that class.
    #[error("The {class} permission '{name}' is not valid. Valid values are: {valid}.", class = .class.as_str(), valid = .class.names().join(", "))]
    UnknownPermission {
        /// The class the name was given under.
        class: PermissionClass,
        /// The name as given.
        name: String,
    },
    /// `objectId`, `tenantId` or `applicationId` is not a GUID.
    #[error("The {field} '{value}' of an access policy is not a valid GUID.")]
    NotAGuid {
        /// The property.
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// The entry names another tenant.
    #[error("The tenantId '{0}' of an access policy must be the tenant of the vault.")]
    WrongTenant(String),
}

/// Checks an entry and returns it with permission names in Azure's spelling, without
/// duplicates.
pub fn normalize_entry(
    entry: &AccessPolicyEntry,
    tenant: &str,
) -> Result<AccessPolicyEntry, AccessPolicyError> {
    let guid = |field: &'static str, value: &str| {
        if is_guid(value) {
            Ok(())
        } else {
            Err(AccessPolicyError::NotAGuid {
                field,
                value: value.to_owned(),
            })
        }
    };
    guid("tenantId", &entry.tenant_id)?;
    guid("objectId", &entry.object_id)?;
    if let Some(app) = &entry.application_id {
        guid("applicationId", app)?;
    }
    if !entry.tenant_id.eq_ignore_ascii_case(tenant) {
        return Err(AccessPolicyError::WrongTenant(entry.tenant_id.clone()));
    }
    let mut permissions = Permissions::default();
    for class in PermissionClass::ALL {
        let out = permissions.of_mut(class);
        for name in entry.permissions.of(class) {
            let canonical =
                class
                    .canonical(name)
                    .ok_or_else(|| AccessPolicyError::UnknownPermission {
                        class,
                        name: name.clone(),
                    })?;
            if !out.iter().any(|p| p == canonical) {
                out.push(canonical.to_owned());
            }
        }
    }
    Ok(AccessPolicyEntry {
        tenant_id: entry.tenant_id.to_ascii_lowercase(),
        object_id: entry.object_id.to_ascii_lowercase(),
        application_id: entry
            .application_id
            .as_ref()
            .map(|a| a.to_ascii_lowercase()),
        permissions,
    })
}

/// How `accessPolicies/{operationKind}` changes a vault's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEdit {
    /// Merge the given permissions into the principal's entry, creating it if needed.
    Add,
    /// Set the principal's entry to the given permissions.
    Replace,
    /// Take the given permissions away; an entry left with none is dropped.
    Remove,
}

impl PolicyEdit {
    /// Parses `add`, `replace` or `remove`, in any case.
    pub fn parse(kind: &str) -> Option<Self> {
        [
            ("add", PolicyEdit::Add),
            ("replace", PolicyEdit::Replace),
            ("remove", PolicyEdit::Remove),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(kind))
        .map(|(_, edit)| edit)
    }
}

/// The list after applying `edit` with already-normalized `entries`.
pub fn edit_policies(
    current: &[AccessPolicyEntry],
    edit: PolicyEdit,
    entries: &[AccessPolicyEntry],
) -> Result<Vec<AccessPolicyEntry>, AccessPolicyError> {
    let mut out = current.to_vec();
    for entry in entries {
        let existing = out.iter().position(|e| e.same_principal(entry));
        match (edit, existing) {
            (PolicyEdit::Add, Some(i)) => {
                for class in PermissionClass::ALL {
                    let list = out[i].permissions.of_mut(class);
                    for p in entry.permissions.of(class) {
                        if !list.contains(p) {
                            list.push(p.clone());
                        }
                    }
                }
            }
            (PolicyEdit::Replace, Some(i)) => out[i].permissions = entry.permissions.clone(),
            (PolicyEdit::Add | PolicyEdit::Replace, None) => out.push(entry.clone()),
            (PolicyEdit::Remove, Some(i)) => {
                for class in PermissionClass::ALL {
                    let removed = entry.permissions.of(class);
                    out[i]
                        .permissions
                        .of_mut(class)
                        .retain(|p| !removed.contains(p));
                }
                if entry.permissions.is_empty() || out[i].permissions.is_empty() {
                    out.remove(i);
                }
            }
            (PolicyEdit::Remove, None) => {}
        }
    }
    check_count(out.len())?;
    Ok(out)
}

/// Refuses more than [`MAX_ACCESS_POLICIES`] entries.
pub fn check_count(n: usize) -> Result<(), AccessPolicyError> {
    if n > MAX_ACCESS_POLICIES {
        Err(AccessPolicyError::TooMany(n))
    } else {
        Ok(())
    }
}

/// Whether an entry for one of `object_ids` (the caller and its groups), acting through
/// application `app_id`, grants `permission` in `class`.
pub fn policies_grant(
    policies: &[AccessPolicyEntry],
    object_ids: &[String],
    app_id: &str,
    class: PermissionClass,
    permission: &str,
) -> bool {
    policies.iter().any(|e| {
        object_ids
            .iter()
            .any(|id| id.eq_ignore_ascii_case(&e.object_id))
            && e.application_id
                .as_deref()
                .is_none_or(|a| a.eq_ignore_ascii_case(app_id))
            && e.permissions.grants(class, permission)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const A: &str = "00000000-0000-0000-0000-00000000000a";
    const B: &str = "00000000-0000-0000-0000-00000000000b";

    fn entry(oid: &str, keys: &[&str], secrets: &[&str]) -> AccessPolicyEntry {
        AccessPolicyEntry {
            tenant_id: T.into(),
            object_id: oid.into(),
            application_id: None,
            permissions: Permissions {
                keys: keys.iter().map(|s| s.to_string()).collect(),
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn normalizes_names_and_refuses_unknown_ones() {
        let e = normalize_entry(&entry(A, &["WRAPKEY", "wrapkey", "Get"], &["LIST"]), T).unwrap();
        assert_eq!(e.permissions.keys, ["wrapKey", "get"]);
        assert_eq!(e.permissions.secrets, ["list"]);
        let err = normalize_entry(&entry(A, &["getsecret"], &[]), T).unwrap_err();
        assert!(matches!(
            err,
            AccessPolicyError::UnknownPermission {
                class: PermissionClass::Keys,
                ..
            }
        ));
        assert!(err.to_string().contains("wrapKey"), "{err}");
        assert!(matches!(
            normalize_entry(&entry("not-a-guid", &[], &[]), T),
            Err(AccessPolicyError::NotAGuid {
                field: "objectId",
                ..
            })
        ));
        assert!(matches!(
            normalize_entry(&entry(A, &[], &[]), B),
            Err(AccessPolicyError::WrongTenant(_))
        ));
    }

    #[test]
    fn add_replace_remove() {
        let list = edit_policies(&[], PolicyEdit::Add, &[entry(A, &["get"], &[])]).unwrap();
        let list = edit_policies(
            &list,
            PolicyEdit::Add,
            &[entry(A, &["sign", "get"], &["get"])],
        )
        .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].permissions.keys, ["get", "sign"]);
        assert_eq!(list[0].permissions.secrets, ["get"]);
        let list =
            edit_policies(&list, PolicyEdit::Replace, &[entry(A, &["verify"], &[])]).unwrap();
        assert_eq!(list[0].permissions.keys, ["verify"]);
        assert!(list[0].permissions.secrets.is_empty());
        let list = edit_policies(&list, PolicyEdit::Add, &[entry(B, &[], &["list"])]).unwrap();
        let list = edit_policies(&list, PolicyEdit::Remove, &[entry(A, &["verify"], &[])]).unwrap();
        assert_eq!(list.len(), 1, "an entry left with nothing is dropped");
        assert_eq!(list[0].object_id, B);
        let list = edit_policies(&list, PolicyEdit::Remove, &[entry(B, &[], &[])]).unwrap();
        assert!(
            list.is_empty(),
            "removing with no permissions drops the whole entry"
        );
    }

    #[test]
    fn at_most_1024_entries() {
        let many: Vec<AccessPolicyEntry> = (0..MAX_ACCESS_POLICIES)
            .map(|i| entry(&format!("00000000-0000-0000-0000-{i:012x}"), &["get"], &[]))
            .collect();
        assert!(edit_policies(&[], PolicyEdit::Add, &many).is_ok());
        assert_eq!(
            edit_policies(
                &many,
                PolicyEdit::Add,
                &[entry("10000000-0000-0000-0000-000000000000", &["get"], &[])]
            ),
            Err(AccessPolicyError::TooMany(1025))
        );
    }

    #[test]
    fn grants_by_principal_group_application_and_all() {
        let mut compound = entry(B, &["sign"], &[]);
        compound.application_id = Some("00000000-0000-0000-0000-0000000000cc".into());
        let policies = vec![entry(A, &["get"], &["all"]), compound];
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let grants = |oids: &[&str], app: &str, class, perm| {
            policies_grant(&policies, &ids(oids), app, class, perm)
        };
        assert!(grants(&[A], "x", PermissionClass::Keys, "get"));
        assert!(!grants(&[A], "x", PermissionClass::Keys, "list"));
        assert!(grants(&[A], "x", PermissionClass::Secrets, "purge"), "all");
        assert!(
            grants(&["u", A], "x", PermissionClass::Keys, "get"),
            "through a group"
        );
        assert!(
            !grants(&[B], "x", PermissionClass::Keys, "sign"),
            "wrong application"
        );
        assert!(grants(
            &[B],
            "00000000-0000-0000-0000-0000000000CC",
            PermissionClass::Keys,
            "sign"
        ));
    }
}
