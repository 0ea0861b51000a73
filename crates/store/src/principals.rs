//! Principals (service principals, managed identities, users, groups) and group
//! membership.

use crate::sql::{args, Row};
use crate::{StoreError, Tx};
use atrest_core::principal::{PrincipalKind, PrincipalRecord};

const COLUMNS: &str =
    "object_id, app_id, display_name, kind, secret_hash, is_admin, resource_id, created, \
                       user_principal_name";

fn row(r: &Row) -> Result<PrincipalRecord, StoreError> {
    Ok(PrincipalRecord {
        object_id: r.get(0)?,
        app_id: r.get(1)?,
        display_name: r.get(2)?,
        kind: PrincipalKind::parse(&r.get::<String>(3)?),
        secret_hash: r.get(4)?,
        is_admin: r.get(5)?,
        resource_id: r.get(6)?,
        created: r.get(7)?,
        user_principal_name: r.get(8)?,
    })
}

impl Tx<'_> {
    /// Inserts a principal.
    pub fn insert_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        self.exec(
            &format!(
                "INSERT INTO principals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            args![
                p.object_id,
                p.app_id,
                p.display_name,
                p.kind.as_str(),
                p.secret_hash,
                p.is_admin,
                p.resource_id,
                p.created,
                p.user_principal_name
            ],
        )?;
        Ok(())
    }

    /// The principal with this application (client) id.
    pub fn principal_by_app_id(&self, app_id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.row(
            &format!("SELECT {COLUMNS} FROM principals WHERE app_id = ?1"),
            args![app_id],
            row,
        )
    }

    /// The principal with this object id.
    pub fn principal_by_object_id(
        &self,
        object_id: &str,
    ) -> Result<Option<PrincipalRecord>, StoreError> {
        self.row(
            &format!("SELECT {COLUMNS} FROM principals WHERE object_id = ?1"),
            args![object_id],
            row,
        )
    }

    /// The user with this sign-in name (case-insensitive).
    pub fn principal_by_upn(&self, upn: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.row(
            &format!("SELECT {COLUMNS} FROM principals WHERE user_principal_name = ?1"),
            args![upn],
            row,
        )
    }

    /// The managed identity with this ARM resource id (case-insensitive, as ARM ids are).
    pub fn principal_by_resource_id(
        &self,
        resource_id: &str,
    ) -> Result<Option<PrincipalRecord>, StoreError> {
        self.row(
            &format!("SELECT {COLUMNS} FROM principals WHERE lower(resource_id) = lower(?1)"),
            args![resource_id],
            row,
        )
    }

    /// All principals of one kind, oldest first.
    pub fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.rows(
            &format!("SELECT {COLUMNS} FROM principals WHERE kind = ?1 ORDER BY created, app_id"),
            args![kind.as_str()],
            row,
        )
    }

    /// Replaces a principal's credential digest; false if no such principal.
    pub fn set_principal_secret(
        &self,
        object_id: &str,
        secret_hash: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE principals SET secret_hash = ?2 WHERE object_id = ?1",
            args![object_id, secret_hash],
        )? == 1)
    }

    /// Deletes a principal; false if no such principal.
    pub fn delete_principal(&self, object_id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM principals WHERE object_id = ?1",
            args![object_id],
        )? == 1)
    }

    /// Makes `member_id` a member of `group_id`; false if it already was.
    pub fn add_group_member(&self, group_id: &str, member_id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(
            "INSERT INTO group_members (group_id, member_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![group_id, member_id],
        )? == 1)
    }

    /// Removes `member_id` from `group_id`; false if it was not a member.
    pub fn remove_group_member(&self, group_id: &str, member_id: &str) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM group_members WHERE group_id = ?1 AND member_id = ?2",
            args![group_id, member_id],
        )? == 1)
    }

    /// Every membership, as (group id, member id) pairs.
    pub fn group_memberships(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT group_id, member_id FROM group_members ORDER BY group_id, member_id",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}
