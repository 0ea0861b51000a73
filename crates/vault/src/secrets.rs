//! The secrets data plane: values on top of the shared object lifecycle.

use std::collections::BTreeMap;

use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::names::check_object_name;
use atrest_core::vault::{ObjectKind, VaultRecord};
use atrest_core::vault::{MAX_CONTENT_TYPE_CHARS, MAX_SECRET_VALUE_BYTES};
use atrest_crypto::random_hex;
use atrest_store::VersionRow;
use serde_json::json;
use zeroize::Zeroizing;

use crate::objects::{
    attributes, check_tags, edit_tags_and_attributes, live_version, name_for_new_version,
    payload_aad, recovery, refuse_managed_name, AttributesPatch, Page, Stored,
};
use crate::{VaultError, Vaults};

const KIND: ObjectKind = ObjectKind::Secret;

/// One secret version as the data plane returns it.
#[derive(Clone)]
pub struct Secret {
    /// Name, with the case it was created with.
    pub name: String,
    /// Version id.
    pub version: String,
    /// The value, present only where Key Vault returns it (set, get).
    pub value: Option<Zeroizing<String>>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attributes.
    pub attributes: Attributes,
    /// The vault's recovery settings.
    pub recovery: Recovery,
    /// `(deletedDate, scheduledPurgeDate)` of a soft-deleted secret.
    pub deleted: Option<(i64, i64)>,
    /// Whether the secret belongs to a certificate (`managed`).
    pub managed: bool,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .field("deleted", &self.deleted)
            .finish()
    }
}

/// `PUT /secrets/{name}`.
#[derive(Clone, Default)]
pub struct SetSecret {
    /// The value.
    pub value: Zeroizing<String>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attributes given with the request.
    pub attributes: AttributesPatch,
}

/// `PATCH /secrets/{name}/{version}`.
#[derive(Debug, Clone, Default)]
pub struct SecretUpdate {
    /// New `contentType`.
    pub content_type: Option<String>,
    /// Replacement tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attribute changes.
    pub attributes: AttributesPatch,
}

fn check_content_type(content_type: &Option<String>) -> Result<(), VaultError> {
    if content_type
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CONTENT_TYPE_CHARS)
    {
        return Err(VaultError::BadParameter(format!(
            "The contentType exceeds the maximum length of {MAX_CONTENT_TYPE_CHARS} characters."
        )));
    }
    Ok(())
}

fn secret(vault: &VaultRecord, stored: &Stored, value: Option<Zeroizing<String>>) -> Secret {
    let Stored { state, row } = stored;
    Secret {
        content_type: row
            .public
            .get("contentType")
            .and_then(|c| c.as_str())
            .map(str::to_owned),
        attributes: attributes(row),
        recovery: recovery(vault),
        deleted: state.deleted.zip(state.scheduled_purge),
        name: state.name.clone(),
        version: row.version.clone(),
        tags: row.tags.clone(),
        managed: crate::objects::is_managed(row),
        value,
    }
}

fn utf8(bytes: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, VaultError> {
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| VaultError::BadBackup("A secret value is not UTF-8.".into()))
}

impl Vaults {
    /// Sets a secret: adds a new version, creating the secret if the name is new.
    pub fn set_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
        req: &SetSecret,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        if req.value.len() > MAX_SECRET_VALUE_BYTES {
            return Err(VaultError::BadParameter(format!(
                "The secret value is {} bytes, larger than the maximum of {MAX_SECRET_VALUE_BYTES} bytes.",
                req.value.len()
            )));
        }
        check_content_type(&req.content_type)?;
        check_tags(&req.tags)?;
        req.attributes.check_dates()?;
        let key = self.storage_key(vault)?;
        let stored = self.write(|tx| {
            let name = name_for_new_version(tx, vault, KIND, name)?;
            refuse_managed_name(tx, vault, KIND, &name, "set")?;
            let version = random_hex(16);
            let row = VersionRow {
                vault_id: vault.vault_id.clone(),
                kind: KIND,
                sealed: key.seal(
                    &payload_aad(vault, KIND, &name, &version),
                    req.value.as_bytes(),
                ),
                name,
                version,
                public: match &req.content_type {
                    Some(c) => json!({ "contentType": c }),
                    None => json!({}),
                },
                tags: req.tags.clone().unwrap_or_default(),
                enabled: req.attributes.enabled.unwrap_or(true),
                nbf: req.attributes.not_before,
                exp: req.attributes.expires,
                created: now,
                updated: now,
            };
            tx.insert_version(&row)?;
            live_version(tx, vault, KIND, &row.name, Some(&row.version))
        })?;
        Ok(secret(vault, &stored, Some(req.value.clone())))
    }

    /// Gets a version (the latest when `version` is `None`), enforcing its attributes.
    pub fn get_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        let stored = self.live_version(vault, KIND, name, version)?;
        attributes(&stored.row)
            .check_usable(now)
            .map_err(|reason| VaultError::Unusable {
                kind: KIND,
                operation: "get",
                reason,
            })?;
        let value = utf8(self.open_payload(&*self.storage_key(vault)?, vault, &stored.row)?)?;
        Ok(secret(vault, &stored, Some(value)))
    }

    /// Updates a version's content type, tags or attributes (the latest when `version` is `None`).
    pub fn update_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        update: &SecretUpdate,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_content_type(&update.content_type)?;
        let stored = self.update_stored(vault, KIND, (name, version), now, |row| {
            edit_tags_and_attributes(row, &update.tags, &update.attributes)?;
            if let Some(c) = &update.content_type {
                row.public["contentType"] = json!(c);
            }
            Ok(())
        })?;
        Ok(secret(vault, &stored, None))
    }

    /// Lists secrets (latest version of each, no values), by name.
    pub fn list_secrets(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        Ok(self
            .list_stored(vault, KIND, false, maxresults, skip)?
            .map(|s| secret(vault, &s, None)))
    }

    /// Lists soft-deleted secrets.
    pub fn list_deleted_secrets(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        Ok(self
            .list_stored(vault, KIND, true, maxresults, skip)?
            .map(|s| secret(vault, &s, None)))
    }

    /// Lists the versions of a secret, oldest first, without values.
    pub fn list_secret_versions(
        &self,
        vault: &VaultRecord,
        name: &str,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        Ok(self
            .list_stored_versions(vault, KIND, name, maxresults, skip)?
            .map(|s| secret(vault, &s, None)))
    }

    /// Soft-deletes a secret (all versions) and returns the deleted bundle.
    pub fn delete_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
        now: i64,
    ) -> Result<Secret, VaultError> {
        Ok(secret(
            vault,
            &self.delete_stored(vault, KIND, name, now)?,
            None,
        ))
    }

    /// A soft-deleted secret.
    pub fn get_deleted_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Secret, VaultError> {
        Ok(secret(
            vault,
            &self.get_deleted_stored(vault, KIND, name)?,
            None,
        ))
    }

    /// Recovers a soft-deleted secret with all its versions.
    pub fn recover_secret(&self, vault: &VaultRecord, name: &str) -> Result<Secret, VaultError> {
        Ok(secret(
            vault,
            &self.recover_stored(vault, KIND, name)?,
            None,
        ))
    }

    /// Permanently deletes a soft-deleted secret, unless purge protection forbids it yet.
    pub fn purge_secret(
        &self,
        vault: &VaultRecord,
        name: &str,
        now: i64,
    ) -> Result<(), VaultError> {
        self.purge_stored(vault, KIND, name, now)
    }

    /// An encrypted, integrity-protected backup of every version of a secret.
    pub fn backup_secret(&self, vault: &VaultRecord, name: &str) -> Result<Vec<u8>, VaultError> {
        self.backup_stored(vault, KIND, name)
    }

    /// Restores a backup into `vault`: same subscription and geography, unused name.
    pub fn restore_secret(&self, vault: &VaultRecord, blob: &[u8]) -> Result<Secret, VaultError> {
        let stored = self.restore_stored(vault, KIND, blob, |_, payload| {
            std::str::from_utf8(payload).is_ok()
        })?;
        Ok(secret(vault, &stored, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture, Fixture};
    use atrest_core::attributes::Unusable;

    fn vault(f: &Fixture, name: &str, location: &str, purge_protection: bool) -> VaultRecord {
        crate::test_support::vault(&f.vaults, name, location, purge_protection)
    }

    fn set(value: &str) -> SetSecret {
        SetSecret {
            value: Zeroizing::new(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn cached_reads_follow_every_write() {
        let f = fixture();
        let v = vault(&f, "kv1", "eastus", false);
        let value = |now| {
            f.vaults
                .get_secret(&v, "s", None, now)
                .map(|s| s.value.unwrap().to_string())
        };
        f.vaults.set_secret(&v, "s", &set("one"), 10).unwrap();
        assert_eq!(value(11).unwrap(), "one");
        assert_eq!(value(11).unwrap(), "one", "served from the cache");
        f.vaults.set_secret(&v, "s", &set("two"), 12).unwrap();
        assert_eq!(
            value(13).unwrap(),
            "two",
            "a new version replaces the cached latest"
        );
        let disable = SecretUpdate {
            content_type: None,
            tags: None,
            attributes: AttributesPatch {
                enabled: Some(false),
                ..Default::default()
            },
        };
        f.vaults.update_secret(&v, "s", None, &disable, 14).unwrap();
        assert!(matches!(value(15), Err(VaultError::Unusable { .. })));
        f.vaults.delete_secret(&v, "s", 16).unwrap();
        assert!(matches!(value(17), Err(VaultError::NotFound { .. })));
        f.vaults.recover_secret(&v, "s").unwrap();
        assert!(f.vaults.data_plane_vault("kv1").is_ok());
        f.vaults.delete_vault("sub", "rg", "kv1", 18).unwrap();
        assert!(matches!(
            f.vaults.data_plane_vault("kv1"),
            Err(VaultError::VaultNotFound(_))
        ));
    }

    #[test]
    fn versions_latest_and_case_insensitive_names() {
        let f = fixture();
        let v = vault(&f, "kv1", "eastus", false);
        let a = f.vaults.set_secret(&v, "Db-Pass", &set("one"), 10).unwrap();
        let b = f.vaults.set_secret(&v, "db-pass", &set("two"), 11).unwrap();
        assert_eq!(b.name, "Db-Pass", "the original case is kept");
        assert_eq!(
            f.vaults
                .get_secret(&v, "DB-PASS", None, 12)
                .unwrap()
                .value
                .unwrap()
                .as_str(),
            "two"
        );
        assert_eq!(
            f.vaults
                .get_secret(&v, "db-pass", Some(&a.version), 12)
                .unwrap()
                .value
                .unwrap()
                .as_str(),
            "one"
        );
        assert!(matches!(
            f.vaults
                .get_secret(&v, "db-pass", Some("0123456789abcdef0123456789abcdef"), 12),
            Err(VaultError::NotFound { .. })
        ));
        let page = f
            .vaults
            .list_secret_versions(&v, "db-pass", Some(1), None)
            .unwrap();
        assert_eq!(page.items.len(), 1);
        let rest = f
            .vaults
            .list_secret_versions(&v, "db-pass", Some(1), page.next.as_deref())
            .unwrap();
        assert_eq!(rest.items[0].version, b.version);
        assert!(rest.next.is_none());
        assert!(page.items[0].value.is_none(), "lists never carry values");
        let unknown = f
            .vaults
            .list_secret_versions(&v, "never-set", None, None)
            .unwrap();
        assert!(
            unknown.items.is_empty() && unknown.next.is_none(),
            "a name never set lists no versions"
        );
    }

    #[test]
    fn limits_are_enforced_and_leave_nothing() {
        let f = fixture();
        let v = vault(&f, "kv1", "eastus", false);
        let big = set(&"x".repeat(MAX_SECRET_VALUE_BYTES + 1));
        assert!(matches!(
            f.vaults.set_secret(&v, "s", &big, 1),
            Err(VaultError::BadParameter(_))
        ));
        assert!(f
            .vaults
            .set_secret(&v, "s", &set(&"x".repeat(MAX_SECRET_VALUE_BYTES)), 1)
            .is_ok());
        let mut tags = set("v");
        tags.tags = Some((0..16).map(|i| (format!("t{i}"), "v".into())).collect());
        assert!(matches!(
            f.vaults.set_secret(&v, "t", &tags, 1),
            Err(VaultError::BadParameter(_))
        ));
        let mut ct = set("v");
        ct.content_type = Some("c".repeat(256));
        assert!(matches!(
            f.vaults.set_secret(&v, "t", &ct, 1),
            Err(VaultError::BadParameter(_))
        ));
        assert!(matches!(
            f.vaults.set_secret(&v, "bad_name", &set("v"), 1),
            Err(VaultError::Name(_))
        ));
        assert_eq!(
            f.vaults.list_secrets(&v, None, None).unwrap().items.len(),
            1
        );
    }

    #[test]
    fn attributes_gate_get() {
        let f = fixture();
        let v = vault(&f, "kv1", "eastus", false);
        let mut req = set("v");
        req.attributes = AttributesPatch {
            enabled: Some(true),
            not_before: Some(100),
            expires: Some(200),
        };
        f.vaults.set_secret(&v, "s", &req, 50).unwrap();
        let err = |now| match f.vaults.get_secret(&v, "s", None, now) {
            Err(VaultError::Unusable { reason, .. }) => Some(reason),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(err(99), Some(Unusable::NotYetValid));
        assert_eq!(err(150), None);
        assert_eq!(err(200), Some(Unusable::Expired));
        let disable = SecretUpdate {
            attributes: AttributesPatch {
                enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        f.vaults
            .update_secret(&v, "s", None, &disable, 151)
            .unwrap();
        assert_eq!(err(150), Some(Unusable::Disabled));
        let bad_dates = SecretUpdate {
            attributes: AttributesPatch {
                expires: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(
            f.vaults.update_secret(&v, "s", None, &bad_dates, 151),
            Err(VaultError::BadParameter(_))
        ));
    }

    #[test]
    fn soft_delete_lifecycle_and_purge_protection() {
        let f = fixture();
        let v = vault(&f, "kv1", "eastus", true);
        f.vaults.set_secret(&v, "s", &set("v"), 0).unwrap();
        let d = f.vaults.delete_secret(&v, "s", 1000).unwrap();
        assert_eq!(d.deleted, Some((1000, 1000 + 90 * 86_400)));
        assert_eq!(d.recovery.level(), "Recoverable");
        assert!(matches!(
            f.vaults.get_secret(&v, "s", None, 1001),
            Err(VaultError::NotFound { .. })
        ));
        assert!(matches!(
            f.vaults.set_secret(&v, "s", &set("w"), 1001),
            Err(VaultError::DeletedButRecoverable { .. })
        ));
        assert!(matches!(
            f.vaults.purge_secret(&v, "s", 1001),
            Err(VaultError::PurgeProtected)
        ));
        assert_eq!(
            f.vaults
                .list_deleted_secrets(&v, None, None)
                .unwrap()
                .items
                .len(),
            1
        );
        f.vaults.recover_secret(&v, "s").unwrap();
        assert_eq!(
            f.vaults
                .get_secret(&v, "s", None, 1002)
                .unwrap()
                .value
                .unwrap()
                .as_str(),
            "v"
        );
        f.vaults.delete_secret(&v, "s", 2000).unwrap();
        assert_eq!(f.vaults.purge_due(2000 + 90 * 86_400 - 1).unwrap(), (0, 0));
        assert_eq!(f.vaults.purge_due(2000 + 90 * 86_400).unwrap(), (1, 0));
        assert!(matches!(
            f.vaults.get_deleted_secret(&v, "s"),
            Err(VaultError::DeletedNotFound { .. })
        ));
        f.vaults.set_secret(&v, "s", &set("fresh"), 3000).unwrap();
    }

    #[test]
    fn backup_restore_rules() {
        let f = fixture();
        let a = vault(&f, "kv-a", "eastus", false);
        let b = vault(&f, "kv-b", "westus", false);
        let eu = vault(&f, "kv-eu", "westeurope", false);
        f.vaults.set_secret(&a, "s", &set("one"), 0).unwrap();
        f.vaults.set_secret(&a, "s", &set("two"), 1).unwrap();
        let blob = f.vaults.backup_secret(&a, "s").unwrap();
        assert!(
            !blob.windows(3).any(|w| w == b"two"),
            "the blob is encrypted"
        );
        assert!(matches!(
            f.vaults.restore_secret(&a, &blob),
            Err(VaultError::AlreadyExists { .. })
        ));
        assert!(matches!(
            f.vaults.restore_secret(&eu, &blob),
            Err(VaultError::BadBackup(_))
        ));
        let mut tampered = blob.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            f.vaults.restore_secret(&b, &tampered),
            Err(VaultError::BadBackup(_))
        ));
        let restored = f.vaults.restore_secret(&b, &blob).unwrap();
        assert_eq!(
            f.vaults
                .get_secret(&b, "s", None, 2)
                .unwrap()
                .value
                .unwrap()
                .as_str(),
            "two"
        );
        assert_eq!(
            f.vaults
                .list_secret_versions(&b, "s", None, None)
                .unwrap()
                .items
                .len(),
            2
        );
        assert_eq!(restored.name, "s");
    }
}
