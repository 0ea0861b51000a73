//! Role assignments and the authorization decision they drive.
//!
//! Assignments are kept in memory after the first read; every change goes through this
//! service (one server per data directory), which drops that copy, so a removed
//! assignment stops granting on the next request.

use std::sync::Arc;

use atrest_core::principal::PrincipalKind;
use atrest_core::rbac::{find_role, scope_contains, CustomRole, Role, BUILT_IN_ROLES};
use atrest_store::{RoleAssignmentRow, StoreError};
use thiserror::Error;

use crate::Identity;

/// A refused role-assignment change.
#[derive(Debug, Error)]
pub enum RoleError {
    /// No built-in role has that id or name.
    #[error("The role definition '{0}' does not exist.")]
    UnknownRole(String),
    /// No principal has that object id.
    #[error("Principal {0} does not exist in the directory.")]
    UnknownPrincipal(String),
    /// The same principal already holds the same role at the same scope.
    #[error("The role assignment already exists.")]
    Exists,
    /// A custom role definition breaks a rule (the message names it).
    #[error("{0}")]
    BadDefinition(String),
    /// Another role already has that name.
    #[error("A role definition cannot be updated with a name that already exists: '{0}'.")]
    NameTaken(String),
    /// Built-in roles cannot be changed or deleted.
    #[error("The built-in role '{0}' cannot be changed or deleted.")]
    BuiltIn(String),
    /// The custom role is still assigned.
    #[error("The role definition '{0}' has role assignments; delete them first.")]
    InUse(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An assignment with its role resolved.
#[derive(Debug, Clone)]
pub struct RoleAssignment {
    /// The stored row.
    pub row: RoleAssignmentRow,
    /// The role it grants.
    pub role: Role,
    /// What kind of principal holds it (ARM's `principalType`).
    pub principal_kind: PrincipalKind,
}

/// How custom role definitions are stored among the resources.
const CUSTOM_ROLES: &str = "roleDefinitions";

/// The role `id_or_name` names (a GUID, a role-definition resource id, or a name), built
/// in or among `custom`.
fn resolve(id_or_name: &str, custom: &[CustomRole]) -> Option<Role> {
    if let Some(role) = find_role(id_or_name) {
        return Some(Role::BuiltIn(role));
    }
    let guid = id_or_name.rsplit('/').next().unwrap_or(id_or_name);
    custom
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(guid) || r.name.eq_ignore_ascii_case(id_or_name))
        .map(|r| Role::Custom(Arc::new(r.clone())))
}

impl Identity {
    fn assignments(&self) -> Result<Arc<Vec<RoleAssignment>>, StoreError> {
        self.role_assignments.get(self.store.generation()?, || {
            let (rows, custom) = self.store.read(|tx| {
                Ok::<_, StoreError>((
                    tx.role_assignments()?,
                    tx.resources::<CustomRole>(CUSTOM_ROLES, Some(""))?,
                ))
            })?;
            Ok(rows
                .into_iter()
                .filter_map(|(row, principal_kind)| {
                    resolve(&row.role_id, &custom).map(|role| RoleAssignment {
                        row,
                        role,
                        principal_kind,
                    })
                })
                .collect())
        })
    }

    /// Every role: the built-in ones, then the custom ones.
    pub fn role_definitions(&self) -> Result<Vec<Role>, RoleError> {
        let custom = self
            .store
            .read(|tx| tx.resources::<CustomRole>(CUSTOM_ROLES, Some("")))?;
        Ok(BUILT_IN_ROLES
            .iter()
            .map(Role::BuiltIn)
            .chain(custom.into_iter().map(|r| Role::Custom(Arc::new(r))))
            .collect())
    }

    /// The role `id_or_name` names, built in or custom.
    pub fn role_definition(&self, id_or_name: &str) -> Result<Option<Role>, RoleError> {
        let custom = self
            .store
            .read(|tx| tx.resources::<CustomRole>(CUSTOM_ROLES, Some("")))?;
        Ok(resolve(id_or_name, &custom))
    }

    /// Creates or replaces custom role `role`; true when it was created. Its name must be
    /// new among all roles, and it must grant something.
    pub fn put_role_definition(&self, role: CustomRole) -> Result<(Role, bool), RoleError> {
        if find_role(&role.id).is_some() {
            return Err(RoleError::BuiltIn(role.id));
        }
        if role.name.trim().is_empty() || role.name.chars().count() > 512 {
            return Err(RoleError::BadDefinition(
                "The role definition needs a roleName of 1 to 512 characters.".into(),
            ));
        }
        if role.actions.is_empty() && role.data_actions.is_empty() {
            return Err(RoleError::BadDefinition(
                "The role definition grants nothing: give it actions or dataActions.".into(),
            ));
        }
        if role.assignable_scopes.is_empty() {
            return Err(RoleError::BadDefinition(
                "The role definition needs at least one assignableScopes entry.".into(),
            ));
        }
        let created = self.store.write(|tx| {
            let custom = tx.resources::<CustomRole>(CUSTOM_ROLES, Some(""))?;
            let name_taken = BUILT_IN_ROLES
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(&role.name))
                || custom.iter().any(|r| {
                    r.name.eq_ignore_ascii_case(&role.name) && !r.id.eq_ignore_ascii_case(&role.id)
                });
            if name_taken {
                return Err(RoleError::NameTaken(role.name.clone()));
            }
            let created = !custom.iter().any(|r| r.id.eq_ignore_ascii_case(&role.id));
            tx.put_resource(CUSTOM_ROLES, "", &role.id, &role)?;
            Ok(created)
        })?;
        self.role_assignments.forget();
        Ok((Role::Custom(Arc::new(role)), created))
    }

    /// Deletes custom role `id` if nothing assigns it; the deleted role, if it existed.
    pub fn delete_role_definition(&self, id: &str) -> Result<Option<Role>, RoleError> {
        if let Some(role) = find_role(id) {
            return Err(RoleError::BuiltIn(role.name.to_owned()));
        }
        let deleted = self.store.write(|tx| {
            let Some(role) = tx.resource::<CustomRole>(CUSTOM_ROLES, "", id)? else {
                return Ok(None);
            };
            if tx
                .role_assignments()?
                .iter()
                .any(|(a, _)| a.role_id.eq_ignore_ascii_case(&role.id))
            {
                return Err(RoleError::InUse(role.name));
            }
            tx.delete_resource(CUSTOM_ROLES, "", id)?;
            Ok(Some(Role::Custom(Arc::new(role))))
        })?;
        self.role_assignments.forget();
        Ok(deleted)
    }

    /// Assigns `role` (id, resource id or name) to the principal with object id
    /// `principal_id` at `scope`. `id` names the assignment (a GUID), or one is made.
    pub fn create_role_assignment(
        &self,
        id: Option<&str>,
        scope: &str,
        role: &str,
        principal_id: &str,
        now: i64,
    ) -> Result<RoleAssignment, RoleError> {
        let role = self
            .role_definition(role)?
            .ok_or_else(|| RoleError::UnknownRole(role.to_owned()))?;
        let row = RoleAssignmentRow {
            id: id.map_or_else(atrest_crypto::random_uuid, str::to_owned),
            scope: scope.trim_end_matches('/').to_owned(),
            role_id: role.id().to_owned(),
            principal_id: principal_id.to_owned(),
            created: now,
        };
        let result = self.store.write(|tx| {
            let principal = tx
                .principal_by_object_id(principal_id)?
                .ok_or_else(|| RoleError::UnknownPrincipal(principal_id.to_owned()))?;
            let duplicate = tx.role_assignments()?.into_iter().any(|(a, _)| {
                a.id.eq_ignore_ascii_case(&row.id)
                    || (a.scope.eq_ignore_ascii_case(&row.scope)
                        && a.role_id == row.role_id
                        && a.principal_id == row.principal_id)
            });
            if duplicate {
                return Err(RoleError::Exists);
            }
            tx.insert_role_assignment(&row)?;
            Ok(principal.kind)
        });
        self.role_assignments.forget();
        Ok(RoleAssignment {
            row,
            role,
            principal_kind: result?,
        })
    }

    /// Assignments that apply at `scope` or below it (every one when `None`).
    pub fn list_role_assignments(
        &self,
        scope: Option<&str>,
    ) -> Result<Vec<RoleAssignment>, RoleError> {
        Ok(self
            .assignments()?
            .iter()
            .filter(|a| {
                scope.is_none_or(|s| {
                    scope_contains(&a.row.scope, s) || scope_contains(s, &a.row.scope)
                })
            })
            .cloned()
            .collect())
    }

    /// One assignment by id.
    pub fn role_assignment(&self, id: &str) -> Result<Option<RoleAssignment>, RoleError> {
        Ok(self
            .assignments()?
            .iter()
            .find(|a| a.row.id.eq_ignore_ascii_case(id))
            .cloned())
    }

    /// Removes an assignment; the removed one, if it existed.
    pub fn delete_role_assignment(&self, id: &str) -> Result<Option<RoleAssignment>, RoleError> {
        let found = self.role_assignment(id)?;
        if found.is_some() {
            let deleted = self.store.write(|tx| tx.delete_role_assignment(id));
            self.role_assignments.forget();
            deleted?;
        }
        Ok(found)
    }

    /// Whether one of `object_ids` (a caller and its groups, from [`Identity::object_ids_of`])
    /// holds, at `resource` or above, a role granting data action `action`.
    pub fn allows_data_action(
        &self,
        object_ids: &[String],
        resource: &str,
        action: &str,
    ) -> Result<bool, RoleError> {
        Ok(self.holds(object_ids, resource, |role| role.allows_data_action(action))?)
    }

    /// Whether one of `object_ids` holds, at `resource` or above, a role granting
    /// control-plane `action`.
    pub fn allows_action(
        &self,
        object_ids: &[String],
        resource: &str,
        action: &str,
    ) -> Result<bool, RoleError> {
        Ok(self.holds(object_ids, resource, |role| role.allows_action(action))?)
    }

    fn holds(
        &self,
        object_ids: &[String],
        resource: &str,
        grants: impl Fn(&Role) -> bool,
    ) -> Result<bool, StoreError> {
        Ok(self.assignments()?.iter().any(|a| {
            object_ids.contains(&a.row.principal_id)
                && scope_contains(&a.row.scope, resource)
                && grants(&a.role)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use atrest_core::operation::Operation;

    use crate::Identity;

    const VAULT: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
    const SECRETS_USER: &str = "Key Vault Secrets User";

    fn service() -> (Identity, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(atrest_store::Store::open_file(&dir.path().join("state.db")).unwrap());
        let id = Identity::new(
            store,
            atrest_crypto::TokenSigner::generate().unwrap(),
            "t1".into(),
            "https://localhost:1".into(),
            "https://vault.localhost:1".into(),
        );
        (id, dir)
    }

    /// Whether `object_id` (with its groups) may read secret `s1` of the vault.
    fn may_read(id: &Identity, object_id: &str) -> bool {
        let ids = id.object_ids_of(object_id).unwrap();
        let action = Operation::SecretGet.data_action().unwrap();
        id.allows_data_action(&ids, &format!("{VAULT}/secrets/s1"), action)
            .unwrap()
    }

    #[test]
    fn every_change_takes_effect_on_the_next_check() {
        let (id, _dir) = service();
        let sp = id.create_service_principal("app", false, 0).unwrap();
        let oid = sp.principal.object_id.clone();
        // Loaded (and kept) while empty.
        assert!(!may_read(&id, &oid));
        let a = id
            .create_role_assignment(None, VAULT, SECRETS_USER, &oid, 0)
            .unwrap();
        assert!(may_read(&id, &oid), "a new assignment grants at once");
        assert!(
            !id.allows_data_action(
                std::slice::from_ref(&oid),
                &format!("{VAULT}/secrets/s1"),
                Operation::KeyUnwrap.data_action().unwrap()
            )
            .unwrap(),
            "only what the role grants"
        );
        id.delete_role_assignment(&a.row.id).unwrap();
        assert!(
            !may_read(&id, &oid),
            "a removed assignment stops granting at once"
        );

        // Through a group: membership changes count at once too.
        let group = id.create_group("readers", 0).unwrap();
        id.create_role_assignment(None, VAULT, SECRETS_USER, &group.object_id, 0)
            .unwrap();
        assert!(!may_read(&id, &oid));
        id.add_group_member(&group.object_id, &oid).unwrap();
        assert!(may_read(&id, &oid), "joining the group grants");
        id.remove_group_member(&group.object_id, &oid).unwrap();
        assert!(!may_read(&id, &oid), "leaving the group revokes");

        // Deleting a principal deletes its assignments.
        id.create_role_assignment(None, VAULT, SECRETS_USER, &oid, 0)
            .unwrap();
        assert!(may_read(&id, &oid));
        id.delete_principal(&oid).unwrap();
        assert!(!may_read(&id, &oid));
        assert!(id
            .list_role_assignments(None)
            .unwrap()
            .iter()
            .all(|a| a.row.principal_id != oid));
    }

    #[test]
    fn refused_changes_leave_the_cache_true() {
        let (id, _dir) = service();
        let sp = id.create_service_principal("app", false, 0).unwrap();
        let oid = sp.principal.object_id.clone();
        let a = id
            .create_role_assignment(None, VAULT, SECRETS_USER, &oid, 0)
            .unwrap();
        assert!(matches!(
            id.create_role_assignment(None, VAULT, SECRETS_USER, &oid, 0),
            Err(super::RoleError::Exists)
        ));
        assert!(matches!(
            id.create_role_assignment(None, VAULT, SECRETS_USER, "no-such-principal", 0),
            Err(super::RoleError::UnknownPrincipal(_))
        ));
        assert_eq!(id.list_role_assignments(Some(VAULT)).unwrap().len(), 1);
        assert_eq!(
            id.role_assignment(&a.row.id.to_uppercase())
                .unwrap()
                .map(|r| r.row.id),
            Some(a.row.id)
        );
        assert!(may_read(&id, &oid));
    }
}
