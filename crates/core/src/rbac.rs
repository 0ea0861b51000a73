//! Azure role-based access control: the built-in role definitions (Azure's names, ids
//! and permissions), action patterns, scopes, and the data action each Key Vault
//! operation needs.

/// A role definition: what a role assignment grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleDefinition {
    /// The role's GUID (the last segment of its resource id).
    pub id: &'static str,
    /// `roleName`.
    pub name: &'static str,
    /// `description`.
    pub description: &'static str,
    /// Control-plane action patterns granted.
    pub actions: &'static [&'static str],
    /// Control-plane action patterns taken back out.
    pub not_actions: &'static [&'static str],
    /// Data-plane action patterns granted.
    pub data_actions: &'static [&'static str],
    /// Data-plane action patterns taken back out.
    pub not_data_actions: &'static [&'static str],
}

/// The control-plane actions every Key Vault data role carries, as Azure's do.
const KV_READ_ACTIONS: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Insights/alertRules/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Support/*",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/operations/read",
];

/// Azure's built-in roles that atrest knows.
pub const BUILT_IN_ROLES: &[RoleDefinition] = &[
    RoleDefinition {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        name: "Key Vault Administrator",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
        name: "Key Vault Crypto Officer",
        description: "Perform any action on the keys of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "12338af0-0e69-4776-bea7-57ae8d297424",
        name: "Key Vault Crypto User",
        description: "Perform cryptographic operations using keys. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        name: "Key Vault Crypto Service Encryption User",
        description: "Read metadata of keys and perform wrap/unwrap operations. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[
            "Microsoft.EventGrid/eventSubscriptions/write",
            "Microsoft.EventGrid/eventSubscriptions/read",
            "Microsoft.EventGrid/eventSubscriptions/delete",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
        name: "Key Vault Crypto Service Release User",
        description: "Release keys. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/keys/release/action"],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        name: "Key Vault Secrets Officer",
        description: "Perform any action on the secrets of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        name: "Key Vault Secrets User",
        description: "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "a4417e6f-fecd-4de8-b567-7b0420556985",
        name: "Key Vault Certificates Officer",
        description: "Perform any action on the certificates of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/certificatecas/*",
            "Microsoft.KeyVault/vaults/certificates/*",
            "Microsoft.KeyVault/vaults/certificatecontacts/write",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
        name: "Key Vault Certificate User",
        description: "Read entire certificate contents including secret and key portion. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/certificates/read",
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            "Microsoft.KeyVault/vaults/keys/read",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        name: "Key Vault Reader",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material. Only works for key vaults that use the 'Azure role-based access control' permission model.",
        actions: KV_READ_ACTIONS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "a68e7c17-0ab2-4c09-9a58-125dae29748c",
        name: "Key Vault Purge Operator",
        description: "Allows permanent deletion of soft-deleted vaults.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/deletedVaults/read",
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            "Microsoft.KeyVault/locations/operationResults/read",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "8b54135c-b56d-4d72-a534-26097cfdc8d8",
        name: "Key Vault Data Access Administrator",
        description: "Manage access to Azure Key Vault by adding or removing role assignments for the Key Vault Administrator, Key Vault Certificates Officer, Key Vault Crypto Officer, Key Vault Crypto Service Encryption User, Key Vault Crypto User, Key Vault Reader, Key Vault Secrets Officer, or Key Vault Secrets User roles.",
        actions: &[
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/subscriptions/read",
            "Microsoft.Management/managementGroups/read",
            "Microsoft.Resources/resources/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    RoleDefinition {
        id: "959f8984-c045-4866-89c7-12bf9737be2e",
        name: "Data Operator for Managed Disks",
        description: "Provides permissions to upload data to empty managed disks, read or export data of managed disks (not attached to running VMs) and snapshots using SAS URIs and Azure AD authentication.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.Compute/disks/download/action",
            "Microsoft.Compute/disks/upload/action",
            "Microsoft.Compute/snapshots/download/action",
            "Microsoft.Compute/snapshots/upload/action",
        ],
        not_data_actions: &[],
    },
];

impl RoleDefinition {
    /// Whether the role grants control-plane `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        grants(self.actions, self.not_actions, action)
    }

    /// Whether the role grants data-plane `action`.
    pub fn allows_data_action(&self, action: &str) -> bool {
        grants(self.data_actions, self.not_data_actions, action)
    }
}

fn grants<P: AsRef<str>>(allowed: &[P], taken_back: &[P], action: &str) -> bool {
    allowed.iter().any(|p| action_matches(p.as_ref(), action))
        && !taken_back
            .iter()
            .any(|p| action_matches(p.as_ref(), action))
}

/// A role defined in this subscription (`type: CustomRole`), with Azure's fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomRole {
    /// The role's GUID.
    pub id: String,
    /// `roleName`, unique among all roles.
    pub name: String,
    /// `description`.
    pub description: String,
    /// Control-plane action patterns granted.
    pub actions: Vec<String>,
    /// Control-plane action patterns taken back out.
    pub not_actions: Vec<String>,
    /// Data-plane action patterns granted.
    pub data_actions: Vec<String>,
    /// Data-plane action patterns taken back out.
    pub not_data_actions: Vec<String>,
    /// Where it may be assigned.
    pub assignable_scopes: Vec<String>,
}

/// A role an assignment can grant: built in, or defined in the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// One of [`BUILT_IN_ROLES`].
    BuiltIn(&'static RoleDefinition),
    /// A custom role.
    Custom(std::sync::Arc<CustomRole>),
}

impl Role {
    /// The role's GUID.
    pub fn id(&self) -> &str {
        match self {
            Role::BuiltIn(r) => r.id,
            Role::Custom(r) => &r.id,
        }
    }

    /// `roleName`.
    pub fn name(&self) -> &str {
        match self {
            Role::BuiltIn(r) => r.name,
            Role::Custom(r) => &r.name,
        }
    }

    /// Whether the role grants control-plane `action`.
    pub fn allows_action(&self, action: &str) -> bool {
        match self {
            Role::BuiltIn(r) => r.allows_action(action),
            Role::Custom(r) => grants(&r.actions, &r.not_actions, action),
        }
    }

    /// Whether the role grants data-plane `action`.
    pub fn allows_data_action(&self, action: &str) -> bool {
        match self {
            Role::BuiltIn(r) => r.allows_data_action(action),
            Role::Custom(r) => grants(&r.data_actions, &r.not_data_actions, action),
        }
    }
}

/// A built-in role by GUID, by full role-definition resource id, or by name
/// (case-insensitive), as `az role assignment create --role` accepts.
pub fn find_role(id_or_name: &str) -> Option<&'static RoleDefinition> {
    let guid = id_or_name.rsplit('/').next().unwrap_or(id_or_name);
    BUILT_IN_ROLES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(guid) || r.name.eq_ignore_ascii_case(id_or_name))
}

/// Whether an action pattern (`*` matches any run of characters) matches `action`,
/// ignoring case as Azure does.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn matches(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| matches(rest, &a[i..])),
            Some((c, rest)) => a
                .split_first()
                .is_some_and(|(d, tail)| c.eq_ignore_ascii_case(d) && matches(rest, tail)),
        }
    }
    matches(pattern.as_bytes(), action.as_bytes())
}

/// Whether an assignment at `scope` reaches `resource`: the scope is the resource or one
/// of its ancestors (compared case-insensitively, segment by segment).
pub fn scope_contains(scope: &str, resource: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    if scope.is_empty() {
        return true;
    }
    resource.len() >= scope.len()
        && resource.as_bytes()[..scope.len()].eq_ignore_ascii_case(scope.as_bytes())
        && matches!(resource.as_bytes().get(scope.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::Operation;

    #[test]
    fn patterns_and_scopes() {
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/*",
            "microsoft.keyvault/vaults/keys/read"
        ));
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/sign/action"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/readx"
        ));
        let kv = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
        assert!(scope_contains("/subscriptions/s", kv));
        assert!(scope_contains(
            "/SUBSCRIPTIONS/s/resourcegroups/RG",
            &format!("{kv}/secrets/a")
        ));
        assert!(!scope_contains(
            &format!("{kv}/secrets/a"),
            &format!("{kv}/secrets/ab")
        ));
        assert!(!scope_contains(&format!("{kv}/secrets/a"), kv));
        assert!(!scope_contains("/subscriptions/s2", kv));
    }

    #[test]
    fn built_in_roles() {
        let role = |n| find_role(n).unwrap();
        assert_eq!(
            role("key vault secrets user").id,
            "4633458b-17de-408a-b874-0445c86b69e6"
        );
        assert_eq!(
            role("/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6").name,
            "Key Vault Crypto Service Encryption User"
        );
        let unwrap = Operation::KeyUnwrap.data_action().unwrap();
        assert!(role("Key Vault Crypto Service Encryption User").allows_data_action(unwrap));
        assert!(!role("Key Vault Crypto Service Encryption User")
            .allows_data_action(Operation::KeySign.data_action().unwrap()));
        assert!(!role("Key Vault Reader")
            .allows_data_action(Operation::SecretGet.data_action().unwrap()));
        assert!(
            role("Key Vault Reader").allows_data_action(Operation::KeyGet.data_action().unwrap())
        );
        assert!(
            !role("Owner").allows_data_action(unwrap),
            "Owner has no data actions"
        );
        assert!(!role("Contributor").allows_action("Microsoft.Authorization/roleAssignments/write"));
        assert!(role("Owner").allows_action("Microsoft.Authorization/roleAssignments/write"));
        let mut ids: Vec<_> = BUILT_IN_ROLES.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), BUILT_IN_ROLES.len());
    }
}
