//! ARM resources other than vaults (resource groups, disk encryption sets, disks, virtual
//! machines), stored as JSON documents keyed by kind, resource group and name. Their shape belongs
//! to the service that owns them; platform keys are sealed by the root key before they
//! arrive here.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sql::args;
use crate::{from_json, to_json, StoreError, Tx};

impl Tx<'_> {
    /// The resource of `kind` named `name` in `resource_group`.
    pub fn resource<T: DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.row(
            "SELECT body FROM resources WHERE kind = ?1 AND resource_group = ?2 AND name = ?3",
            args![kind, resource_group, name],
            |r| from_json(&r.get::<String>(0)?, "resources.body"),
        )
    }

    /// Resources of `kind`, in one resource group or all, by resource group and name.
    pub fn resources<T: DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        self.rows(
            "SELECT body FROM resources WHERE kind = ?1 AND (CAST(?2 AS TEXT) IS NULL OR resource_group = ?2) \
             ORDER BY resource_group, name",
            args![kind, resource_group],
            |r| from_json(&r.get::<String>(0)?, "resources.body"),
        )
    }

    /// Creates or replaces a resource.
    pub fn put_resource(
        &self,
        kind: &str,
        resource_group: &str,
        name: &str,
        body: &impl Serialize,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO resources (kind, resource_group, name, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, resource_group, name) DO UPDATE SET body = excluded.body",
            args![kind, resource_group, name, to_json(body)],
        )?;
        Ok(())
    }

    /// Deletes a resource; false if there was none.
    pub fn delete_resource(
        &self,
        kind: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM resources WHERE kind = ?1 AND resource_group = ?2 AND name = ?3",
            args![kind, resource_group, name],
        )? > 0)
    }

    /// What resource group `resource_group` holds, as (kind, name): its live vaults (kind
    /// `vaults`) and the resources stored here, other than resource groups themselves.
    pub fn resource_group_contents(
        &self,
        resource_group: &str,
        group_kind: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT 'vaults', name FROM vaults WHERE resource_group = ?1 AND deleted IS NULL \
             UNION ALL SELECT kind, name FROM resources WHERE resource_group = ?1 AND kind != ?2 \
             ORDER BY 1, 2",
            args![resource_group, group_kind],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Every platform key version, oldest first, each sealed by the root key.
    pub fn platform_keys(&self) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        self.rows(
            "SELECT version, sealed FROM platform_keys ORDER BY version",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Adds a platform key version.
    pub fn insert_platform_key(
        &self,
        version: u32,
        sealed: &[u8],
        created: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO platform_keys (version, sealed, created) VALUES (?1, ?2, ?3)",
            args![version, sealed, created],
        )?;
        Ok(())
    }
}
