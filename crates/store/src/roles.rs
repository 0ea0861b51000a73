//! Role assignments: which principal holds which role at which scope.

use atrest_core::principal::PrincipalKind;

use crate::sql::{args, Row};
use crate::{StoreError, Tx};

/// A stored role assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignmentRow {
    /// The assignment's GUID (its resource name).
    pub id: String,
    /// The scope: `/subscriptions/{s}[/resourceGroups/{rg}[/providers/…]]`.
    pub scope: String,
    /// The role definition's GUID.
    pub role_id: String,
    /// The principal's object id.
    pub principal_id: String,
    /// Creation time.
    pub created: i64,
}

fn assignment_row(r: &Row) -> Result<RoleAssignmentRow, StoreError> {
    Ok(RoleAssignmentRow {
        id: r.get(0)?,
        scope: r.get(1)?,
        role_id: r.get(2)?,
        principal_id: r.get(3)?,
        created: r.get(4)?,
    })
}

impl Tx<'_> {
    /// Adds a role assignment.
    pub fn insert_role_assignment(&self, a: &RoleAssignmentRow) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO role_assignments (id, scope, role_id, principal_id, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![a.id, a.scope, a.role_id, a.principal_id, a.created],
        )?;
        Ok(())
    }

    /// Removes a role assignment; whether it existed.
    pub fn delete_role_assignment(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM role_assignments WHERE id = ?1", args![id])? > 0)
    }

    /// Removes every assignment of a principal (when it is deleted).
    pub fn delete_role_assignments_of(&self, principal_id: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM role_assignments WHERE principal_id = ?1",
            args![principal_id],
        )?;
        Ok(())
    }

    /// Every role assignment with the kind of its principal, oldest first.
    pub fn role_assignments(&self) -> Result<Vec<(RoleAssignmentRow, PrincipalKind)>, StoreError> {
        self.rows(
            "SELECT a.id, a.scope, a.role_id, a.principal_id, a.created, p.kind FROM role_assignments a \
             JOIN principals p ON p.object_id = a.principal_id ORDER BY a.created, a.id",
            args![],
            |r| Ok((assignment_row(r)?, PrincipalKind::parse(&r.get::<String>(5)?))),
        )
    }
}
