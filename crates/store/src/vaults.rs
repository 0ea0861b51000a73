//! Vault records.

use std::collections::BTreeMap;

use crate::sql::{args, Row};
use crate::{from_json, to_json, StoreError, Tx};
use atrest_core::vault::VaultRecord;

const COLUMNS: &str = "name, vault_id, subscription, resource_group, location, tenant, retention_days, purge_protection, \
                       disk_encryption, rbac, tags, wrapped_key, created, updated, deleted, scheduled_purge, access_policies";

/// A vault row with its JSON columns (tags, access policies) still to decode.
type RawVault = (VaultRecord, String, String);

fn row(r: &Row) -> Result<RawVault, StoreError> {
    Ok((
        VaultRecord {
            name: r.get(0)?,
            vault_id: r.get(1)?,
            subscription: r.get(2)?,
            resource_group: r.get(3)?,
            location: r.get(4)?,
            tenant: r.get(5)?,
            retention_days: r.get(6)?,
            purge_protection: r.get(7)?,
            disk_encryption: r.get(8)?,
            rbac: r.get(9)?,
            tags: BTreeMap::new(),
            access_policies: Vec::new(),
            wrapped_key: r.get(11)?,
            created: r.get(12)?,
            updated: r.get(13)?,
            deleted: r.get(14)?,
            scheduled_purge: r.get(15)?,
        },
        r.get(10)?,
        r.get(16)?,
    ))
}

fn decoded((mut v, tags, policies): RawVault) -> Result<VaultRecord, StoreError> {
    v.tags = from_json(&tags, "vaults.tags")?;
    v.access_policies = from_json(&policies, "vaults.access_policies")?;
    Ok(v)
}

impl Tx<'_> {
    /// Inserts a vault.
    pub fn insert_vault(&self, v: &VaultRecord) -> Result<(), StoreError> {
        self.exec(
            &format!("INSERT INTO vaults ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
            args![
                v.name, v.vault_id, v.subscription, v.resource_group, v.location, v.tenant, v.retention_days,
                v.purge_protection, v.disk_encryption, v.rbac, to_json(&v.tags), v.wrapped_key, v.created, v.updated,
                v.deleted, v.scheduled_purge, to_json(&v.access_policies)
            ],
        )?;
        Ok(())
    }

    /// Writes back the mutable fields of a vault (flags, tags, access policies, deletion
    /// state).
    pub fn update_vault(&self, v: &VaultRecord) -> Result<(), StoreError> {
        self.exec(
            "UPDATE vaults SET purge_protection = ?2, disk_encryption = ?3, rbac = ?4, tags = ?5, updated = ?6, \
             deleted = ?7, scheduled_purge = ?8, access_policies = ?9 WHERE vault_id = ?1",
            args![v.vault_id, v.purge_protection, v.disk_encryption, v.rbac, to_json(&v.tags), v.updated, v.deleted, v.scheduled_purge, to_json(&v.access_policies)],
        )?;
        Ok(())
    }

    /// The vault with this name, deleted or not.
    pub fn vault(&self, name: &str) -> Result<Option<VaultRecord>, StoreError> {
        self.row(
            &format!("SELECT {COLUMNS} FROM vaults WHERE name = ?1"),
            args![name],
            |r| decoded(row(r)?),
        )
    }

    /// Vaults of a subscription (optionally one resource group), live or deleted, by name.
    pub fn list_vaults(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
        deleted: bool,
    ) -> Result<Vec<VaultRecord>, StoreError> {
        self.rows(
            &format!(
                "SELECT {COLUMNS} FROM vaults WHERE subscription = ?1 AND (CAST(?2 AS TEXT) IS NULL OR resource_group = ?2) \
                 AND (deleted IS NOT NULL) = ?3 ORDER BY name"
            ),
            args![subscription, resource_group, deleted],
            |r| decoded(row(r)?),
        )
    }

    /// Soft-deleted vaults whose purge date is at or before `now`.
    pub fn vaults_due_for_purge(&self, now: i64) -> Result<Vec<VaultRecord>, StoreError> {
        self.rows(
            &format!("SELECT {COLUMNS} FROM vaults WHERE scheduled_purge <= ?1"),
            args![now],
            |r| decoded(row(r)?),
        )
    }

    /// Deletes a vault and, by cascade, every object in it.
    pub fn purge_vault(&self, vault_id: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM object_versions WHERE vault_id = ?1",
            args![vault_id],
        )?;
        self.exec("DELETE FROM vaults WHERE vault_id = ?1", args![vault_id])?;
        Ok(())
    }
}
