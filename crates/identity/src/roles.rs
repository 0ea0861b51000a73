//! Role assignments and the authorization decision they drive.
//!
//! Assignments are kept in memory after the first read; every change goes through this
//! service (one server per data directory), which drops that copy, so a removed
//! assignment stops granting on the next request.

use std::sync::Arc;

use atrest_core::rbac::{find_role, scope_contains, RoleDefinition};
use atrest_store::{PrincipalKind, RoleAssignmentRow, StoreError};
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
    pub role: &'static RoleDefinition,
    /// What kind of principal holds it (ARM's `principalType`).
    pub principal_kind: PrincipalKind,
}

impl Identity {
    fn assignments(&self) -> Result<Arc<Vec<RoleAssignment>>, StoreError> {
        self.role_assignments.get(|| {
            let rows = self.store.read(|tx| tx.role_assignments())?;
            Ok(rows
                .into_iter()
                .filter_map(|(row, principal_kind)| {
                    find_role(&row.role_id).map(|role| RoleAssignment {
                        row,
                        role,
                        principal_kind,
                    })
                })
                .collect())
        })
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
        let role = find_role(role).ok_or_else(|| RoleError::UnknownRole(role.to_owned()))?;
        let row = RoleAssignmentRow {
            id: id.map_or_else(atrest_crypto::random_uuid, str::to_owned),
            scope: scope.trim_end_matches('/').to_owned(),
            role_id: role.id.to_owned(),
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
    ) -> Result<Vec<RoleAssignment>, StoreError> {
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
    pub fn role_assignment(&self, id: &str) -> Result<Option<RoleAssignment>, StoreError> {
        Ok(self
            .assignments()?
            .iter()
            .find(|a| a.row.id.eq_ignore_ascii_case(id))
            .cloned())
    }

    /// Removes an assignment; the removed one, if it existed.
    pub fn delete_role_assignment(&self, id: &str) -> Result<Option<RoleAssignment>, StoreError> {
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
    ) -> Result<bool, StoreError> {
        self.holds(object_ids, resource, |role| role.allows_data_action(action))
    }

    /// Whether one of `object_ids` holds, at `resource` or above, a role granting
    /// control-plane `action`.
    pub fn allows_action(
        &self,
        object_ids: &[String],
        resource: &str,
        action: &str,
    ) -> Result<bool, StoreError> {
        self.holds(object_ids, resource, |role| role.allows_action(action))
    }

    fn holds(
        &self,
        object_ids: &[String],
        resource: &str,
        grants: impl Fn(&RoleDefinition) -> bool,
    ) -> Result<bool, StoreError> {
        Ok(self.assignments()?.iter().any(|a| {
            object_ids.contains(&a.row.principal_id)
                && scope_contains(&a.row.scope, resource)
                && grants(a.role)
        }))
    }
}
