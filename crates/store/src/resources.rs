//! ARM resources other than vaults (resource groups, disk encryption sets, disks, virtual
//! machines), stored as JSON documents keyed by kind, resource group and name. Their shape belongs
//! to the service that owns them; platform keys are sealed by the root key before they
//! arrive here.

use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{from_json, to_json, StoreError, Tx};

impl Tx<'_> {
    /// The resource of `kind` named `name` in `resource_group`.
    pub fn resource<T: DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.query_one(
            "SELECT body FROM resources WHERE kind = ?1 AND resource_group = ?2 AND name = ?3",
            params![kind, resource_group, name],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|body| from_json(&body, "resources.body"))
        .transpose()
    }

    /// Resources of `kind`, in one resource group or all, by resource group and name.
    pub fn resources<T: DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT body FROM resources WHERE kind = ?1 AND (?2 IS NULL OR resource_group = ?2) \
             ORDER BY resource_group, name",
        )?;
        let rows = stmt.query_map(params![kind, resource_group], |r| r.get::<_, String>(0))?;
        rows.map(|body| from_json(&body?, "resources.body"))
            .collect()
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
            params![kind, resource_group, name, to_json(body)],
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
            params![kind, resource_group, name],
        )? > 0)
    }

    /// What resource group `resource_group` holds, as (kind, name): its live vaults (kind
    /// `vaults`) and the resources stored here, other than resource groups themselves.
    pub fn resource_group_contents(
        &self,
        resource_group: &str,
        group_kind: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT 'vaults', name FROM vaults WHERE resource_group = ?1 AND deleted IS NULL \
             UNION ALL SELECT kind, name FROM resources WHERE resource_group = ?1 AND kind != ?2 \
             ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map(params![resource_group, group_kind], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every platform key version, oldest first, each sealed by the root key.
    pub fn platform_keys(&self) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT version, sealed FROM platform_keys ORDER BY version")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
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
            params![version, sealed, created],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_store;

    #[test]
    fn resources_round_trip_case_insensitively() {
        let (store, _dir) = test_store();
        let doc = serde_json::json!({ "size": 4 });
        store
            .write(|tx| tx.put_resource("disks", "rg", "Disk1", &doc))
            .unwrap();
        let got: Option<serde_json::Value> = store
            .read(|tx| tx.resource("disks", "RG", "disk1"))
            .unwrap();
        assert_eq!(got, Some(doc));
        let other: Option<serde_json::Value> =
            store.read(|tx| tx.resource("vms", "rg", "disk1")).unwrap();
        assert_eq!(other, None);
        let listed: Vec<serde_json::Value> = store.read(|tx| tx.resources("disks", None)).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store
            .write(|tx| tx.delete_resource("disks", "rg", "DISK1"))
            .unwrap());
        assert!(!store
            .write(|tx| tx.delete_resource("disks", "rg", "disk1"))
            .unwrap());
    }

    #[test]
    fn platform_keys_keep_every_version() {
        let (store, _dir) = test_store();
        store
            .write(|tx| {
                tx.insert_platform_key(1, b"one", 10)?;
                tx.insert_platform_key(2, b"two", 20)
            })
            .unwrap();
        let keys = store.read(|tx| tx.platform_keys()).unwrap();
        assert_eq!(keys, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert!(store
            .write(|tx| tx.insert_platform_key(2, b"again", 30))
            .is_err());
    }
}
