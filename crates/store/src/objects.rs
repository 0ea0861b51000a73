//! Vault objects (secrets now, keys later) and their versions, with soft-delete state.
//!
//! An object row holds the name and deletion state; its versions hold the sealed payload,
//! public properties (JSON), tags and attributes. The latest version is the one with the
//! highest `seq`.

use std::collections::BTreeMap;

use crate::sql::{args, Row};
use crate::{from_json, to_json, StoreError, Tx};
use atrest_core::vault::ObjectKind;

/// An object's name (as first stored) and deletion state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    /// Vault the object lives in.
    pub vault_id: String,
    /// Secret or key.
    pub kind: ObjectKind,
    /// Name with its original case.
    pub name: String,
    /// Soft-deletion time.
    pub deleted: Option<i64>,
    /// Automatic purge time of a soft-deleted object.
    pub scheduled_purge: Option<i64>,
}

/// What the rotation scheduler needs to know about one key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLifetime {
    /// Name of the key's vault.
    pub vault_name: String,
    /// Key name.
    pub name: String,
    /// The stored rotation policy (JSON as the API shows it), if one was set.
    pub policy: Option<serde_json::Value>,
    /// The version whose near-expiry notice was last sent.
    pub notified_version: Option<String>,
    /// The latest version's id.
    pub latest_version: String,
    /// The latest version's `created`.
    pub created: i64,
    /// The latest version's `exp`.
    pub expires: Option<i64>,
}

/// One version of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    /// Vault the object lives in.
    pub vault_id: String,
    /// Secret or key.
    pub kind: ObjectKind,
    /// Object name.
    pub name: String,
    /// 32 hex digits.
    pub version: String,
    /// Sealed payload (secret value, private key).
    pub sealed: Vec<u8>,
    /// Public properties (content type, key parameters).
    pub public: serde_json::Value,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `enabled`.
    pub enabled: bool,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `exp`.
    pub exp: Option<i64>,
    /// `created`.
    pub created: i64,
    /// `updated`.
    pub updated: i64,
}

const VERSION_COLUMNS: &str = "v.vault_id, v.kind, v.name, v.version, v.sealed, v.public, v.tags, v.enabled, v.nbf, v.exp, v.created, v.updated, v.seq";

/// A version row as read, before its JSON columns are decoded.
type RawVersion = (VersionRow, String, String, i64);

/// Reads the [`VERSION_COLUMNS`] starting at column `base`.
fn version_at(r: &Row, base: usize) -> Result<RawVersion, StoreError> {
    Ok((
        VersionRow {
            vault_id: r.get(base)?,
            kind: ObjectKind::parse(&r.get::<String>(base + 1)?),
            name: r.get(base + 2)?,
            version: r.get(base + 3)?,
            sealed: r.get(base + 4)?,
            public: serde_json::Value::Null,
            tags: BTreeMap::new(),
            enabled: r.get(base + 7)?,
            nbf: r.get(base + 8)?,
            exp: r.get(base + 9)?,
            created: r.get(base + 10)?,
            updated: r.get(base + 11)?,
        },
        r.get(base + 5)?,
        r.get(base + 6)?,
        r.get(base + 12)?,
    ))
}

fn version_row(r: &Row) -> Result<RawVersion, StoreError> {
    version_at(r, 0)
}

fn decode((mut v, public, tags, seq): RawVersion) -> Result<(VersionRow, i64), StoreError> {
    v.public = from_json(&public, "object_versions.public")?;
    v.tags = from_json(&tags, "object_versions.tags")?;
    Ok((v, seq))
}

fn state_row(r: &Row) -> Result<ObjectState, StoreError> {
    Ok(ObjectState {
        vault_id: r.get(0)?,
        kind: ObjectKind::parse(&r.get::<String>(1)?),
        name: r.get(2)?,
        deleted: r.get(3)?,
        scheduled_purge: r.get(4)?,
    })
}

impl Tx<'_> {
    /// The object's state, if the name exists (live or deleted).
    pub fn object_state(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<ObjectState>, StoreError> {
        self.row(
            "SELECT vault_id, kind, name, deleted, scheduled_purge FROM objects WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            args![vault_id, kind.as_str(), name],
            state_row,
        )
    }

    /// Adds a version, creating the object row if the name is new.
    pub fn insert_version(&self, v: &VersionRow) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO objects (vault_id, kind, name) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![v.vault_id, v.kind.as_str(), v.name],
        )?;
        self.exec(
            "INSERT INTO object_versions (vault_id, kind, name, version, sealed, public, tags, enabled, nbf, exp, created, updated) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            args![
                v.vault_id, v.kind.as_str(), v.name, v.version, v.sealed, v.public.to_string(), to_json(&v.tags),
                v.enabled, v.nbf, v.exp, v.created, v.updated
            ],
        )?;
        Ok(())
    }

    /// One version, or the latest when `version` is `None`.
    pub fn version(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<VersionRow>, StoreError> {
        let row = self.row(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM object_versions v WHERE v.vault_id = ?1 AND v.kind = ?2 AND v.name = ?3 \
                 AND (CAST(?4 AS TEXT) IS NULL OR v.version = ?4) ORDER BY v.seq DESC LIMIT 1"
            ),
            args![vault_id, kind.as_str(), name, version],
            version_row,
        )?;
        Ok(row.map(decode).transpose()?.map(|(v, _)| v))
    }

    /// Writes back a version's mutable fields: public properties, tags, attributes.
    pub fn update_version(&self, v: &VersionRow) -> Result<(), StoreError> {
        self.exec(
            "UPDATE object_versions SET public = ?5, tags = ?6, enabled = ?7, nbf = ?8, exp = ?9, updated = ?10 \
             WHERE vault_id = ?1 AND kind = ?2 AND name = ?3 AND version = ?4",
            args![v.vault_id, v.kind.as_str(), v.name, v.version, v.public.to_string(), to_json(&v.tags), v.enabled, v.nbf, v.exp, v.updated],
        )?;
        Ok(())
    }

    /// Up to `limit` objects (live or deleted) with their latest version, by name after `after`.
    pub fn list_objects(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(ObjectState, VersionRow)>, StoreError> {
        self.rows(
            &format!(
                "SELECT o.vault_id, o.kind, o.name, o.deleted, o.scheduled_purge, {VERSION_COLUMNS} FROM objects o \
                 JOIN object_versions v ON v.seq = (SELECT max(seq) FROM object_versions WHERE vault_id = o.vault_id AND kind = o.kind AND name = o.name) \
                 WHERE o.vault_id = ?1 AND o.kind = ?2 AND (o.deleted IS NOT NULL) = ?3 AND (CAST(?4 AS TEXT) IS NULL OR o.name > ?4) \
                 ORDER BY o.name LIMIT ?5"
            ),
            args![vault_id, kind.as_str(), deleted, after, limit as i64],
            |r| Ok((state_row(r)?, decode(version_at(r, 5)?)?.0)),
        )
    }

    /// Up to `limit` versions of one object, oldest first, with `seq` greater than `after`.
    pub fn list_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(VersionRow, i64)>, StoreError> {
        self.rows(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM object_versions v WHERE v.vault_id = ?1 AND v.kind = ?2 AND v.name = ?3 \
                 AND v.seq > ?4 ORDER BY v.seq LIMIT ?5"
            ),
            args![vault_id, kind.as_str(), name, after, limit as i64],
            |r| decode(version_row(r)?),
        )
    }

    /// Sets (`Some((deleted, scheduled_purge))`) or clears the soft-delete state.
    pub fn set_object_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
        state: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE objects SET deleted = ?4, scheduled_purge = ?5 WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            args![vault_id, kind.as_str(), name, state.map(|s| s.0), state.map(|s| s.1)],
        )?;
        Ok(())
    }

    /// Permanently removes an object and all its versions.
    pub fn purge_object(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<(), StoreError> {
        let kind = kind.as_str();
        let p = args![vault_id, kind, name];
        self.exec(
            "DELETE FROM object_versions WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            p,
        )?;
        self.exec(
            "DELETE FROM objects WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            p,
        )?;
        Ok(())
    }

    /// A key's rotation policy (JSON as the API shows it), if one was set.
    pub fn rotation_policy(
        &self,
        vault_id: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.object_policy(vault_id, ObjectKind::Key, name)
    }

    /// Sets a key's rotation policy.
    pub fn set_rotation_policy(
        &self,
        vault_id: &str,
        name: &str,
        policy: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.set_object_policy(vault_id, ObjectKind::Key, name, policy)
    }

    /// An object's policy document: a key's rotation policy, a certificate's issuance
    /// policy and pending operation (kept in the column named for the first).
    pub fn object_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<Option<String>> = self.row(
            "SELECT rotation_policy FROM objects WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            args![vault_id, kind.as_str(), name],
            |r| r.get(0),
        )?;
        text.flatten()
            .map(|t| from_json(&t, "rotation_policy"))
            .transpose()
    }

    /// Sets an object's policy document.
    pub fn set_object_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
        policy: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE objects SET rotation_policy = ?4 WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            args![vault_id, kind.as_str(), name, to_json(policy)],
        )?;
        Ok(())
    }

    /// Every live key of a live vault that may have a lifetime action due: those with a
    /// rotation policy and those whose latest version expires (the default policy
    /// notifies before expiry).
    pub fn keys_with_lifetime(&self) -> Result<Vec<KeyLifetime>, StoreError> {
        self.objects_with_lifetime(ObjectKind::Key)
    }

    /// Every live object of `kind` in a live vault that has a policy or whose latest
    /// version expires (a key's rotation, a certificate's lifetime actions); a
    /// certificate's own key lives by the certificate's actions, not its own.
    pub fn objects_with_lifetime(&self, kind: ObjectKind) -> Result<Vec<KeyLifetime>, StoreError> {
        self.rows(
            "SELECT vt.name, o.name, o.rotation_policy, o.notified_version, v.version, v.created, v.exp \
             FROM objects o JOIN vaults vt ON vt.vault_id = o.vault_id \
             JOIN object_versions v ON v.seq = (SELECT max(seq) FROM object_versions WHERE vault_id = o.vault_id AND kind = o.kind AND name = o.name) \
             WHERE o.kind = ?1 AND o.deleted IS NULL AND vt.deleted IS NULL \
             AND (o.rotation_policy IS NOT NULL OR v.exp IS NOT NULL) \
             AND (o.kind = 'certificate' OR NOT EXISTS (SELECT 1 FROM objects c WHERE c.vault_id = o.vault_id \
                  AND c.kind = 'certificate' AND c.name = o.name)) ORDER BY vt.name, o.name",
            args![kind.as_str()],
            |r| {
                Ok(KeyLifetime {
                    vault_name: r.get(0)?,
                    name: r.get(1)?,
                    policy: r
                        .get::<Option<String>>(2)?
                        .map(|p| from_json(&p, "rotation_policy"))
                        .transpose()?,
                    notified_version: r.get(3)?,
                    latest_version: r.get(4)?,
                    created: r.get(5)?,
                    expires: r.get(6)?,
                })
            },
        )
    }

    /// Records that the near-expiry notice for a key's `version` went out.
    pub fn set_notified_version(
        &self,
        vault_id: &str,
        name: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        self.set_object_notified_version(vault_id, ObjectKind::Key, name, version)
    }

    /// Records that the lifetime action of an object's `version` ran.
    pub fn set_object_notified_version(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "UPDATE objects SET notified_version = ?4 WHERE vault_id = ?1 AND kind = ?2 AND name = ?3",
            args![vault_id, kind.as_str(), name, version],
        )?;
        Ok(())
    }

    /// Soft-deleted objects whose purge date is at or before `now`.
    pub fn objects_due_for_purge(&self, now: i64) -> Result<Vec<ObjectState>, StoreError> {
        self.rows(
            "SELECT vault_id, kind, name, deleted, scheduled_purge FROM objects WHERE scheduled_purge <= ?1",
            args![now],
            state_row,
        )
    }
}
