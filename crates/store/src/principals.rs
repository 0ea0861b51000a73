//! Service principals and managed identities.

use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

/// What kind of identity a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An application with a client secret.
    ServicePrincipal,
    /// A managed identity; its secret is the hosting environment's identity header.
    ManagedIdentity,
}

impl PrincipalKind {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ServicePrincipal => "ServicePrincipal",
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "ManagedIdentity" {
            PrincipalKind::ManagedIdentity
        } else {
            PrincipalKind::ServicePrincipal
        }
    }
}

/// A stored principal. `secret_hash` is a SHA-256 digest, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    /// Object id (`oid` claim).
    pub object_id: String,
    /// Application (client) id (`appid` claim).
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Service principal or managed identity.
    pub kind: PrincipalKind,
    /// SHA-256 of the current credential.
    pub secret_hash: Option<Vec<u8>>,
    /// May manage principals and read the audit log.
    pub is_admin: bool,
    /// ARM resource id of a managed identity.
    pub resource_id: Option<String>,
    /// Creation time.
    pub created: i64,
}

const COLUMNS: &str =
    "object_id, app_id, display_name, kind, secret_hash, is_admin, resource_id, created";

fn row(r: &Row) -> rusqlite::Result<PrincipalRow> {
    Ok(PrincipalRow {
        object_id: r.get(0)?,
        app_id: r.get(1)?,
        display_name: r.get(2)?,
        kind: PrincipalKind::parse(&r.get::<_, String>(3)?),
        secret_hash: r.get(4)?,
        is_admin: r.get(5)?,
        resource_id: r.get(6)?,
        created: r.get(7)?,
    })
}

impl Tx<'_> {
    /// Inserts a principal.
    pub fn insert_principal(&self, p: &PrincipalRow) -> Result<(), StoreError> {
        self.exec(
            &format!("INSERT INTO principals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                p.object_id,
                p.app_id,
                p.display_name,
                p.kind.as_str(),
                p.secret_hash,
                p.is_admin,
                p.resource_id,
                p.created
            ],
        )?;
        Ok(())
    }

    /// The principal with this application (client) id.
    pub fn principal_by_app_id(&self, app_id: &str) -> Result<Option<PrincipalRow>, StoreError> {
        Ok(self
            .query_one(
                &format!("SELECT {COLUMNS} FROM principals WHERE app_id = ?1"),
                [app_id],
                row,
            )
            .optional()?)
    }

    /// The principal with this object id.
    pub fn principal_by_object_id(
        &self,
        object_id: &str,
    ) -> Result<Option<PrincipalRow>, StoreError> {
        Ok(self
            .query_one(
                &format!("SELECT {COLUMNS} FROM principals WHERE object_id = ?1"),
                [object_id],
                row,
            )
            .optional()?)
    }

    /// The managed identity with this ARM resource id (case-insensitive, as ARM ids are).
    pub fn principal_by_resource_id(
        &self,
        resource_id: &str,
    ) -> Result<Option<PrincipalRow>, StoreError> {
        Ok(self
            .query_one(
                &format!("SELECT {COLUMNS} FROM principals WHERE lower(resource_id) = lower(?1)"),
                [resource_id],
                row,
            )
            .optional()?)
    }

    /// All principals of one kind, oldest first.
    pub fn list_principals(&self, kind: PrincipalKind) -> Result<Vec<PrincipalRow>, StoreError> {
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM principals WHERE kind = ?1 ORDER BY created, app_id"
        ))?;
        let rows = stmt
            .query_map([kind.as_str()], row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Replaces a principal's credential digest; false if no such principal.
    pub fn set_principal_secret(
        &self,
        object_id: &str,
        secret_hash: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE principals SET secret_hash = ?2 WHERE object_id = ?1",
            params![object_id, secret_hash],
        )? == 1)
    }

    /// Deletes a principal; false if no such principal.
    pub fn delete_principal(&self, object_id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM principals WHERE object_id = ?1", [object_id])? == 1)
    }
}
