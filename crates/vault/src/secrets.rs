//! The secrets data plane.

use std::collections::BTreeMap;

use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::names::{check_object_name, is_object_version};
use atrest_core::vault::{
    geography, MAX_CONTENT_TYPE_CHARS, MAX_SECRET_VALUE_BYTES, MAX_TAGS, MAX_TAG_NAME_CHARS,
    MAX_TAG_VALUE_CHARS,
};
use atrest_crypto::random_hex;
use atrest_store::{ObjectKind, ObjectState, Tx, VaultRow, VersionRow};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::{VaultError, Vaults};

const KIND: ObjectKind = ObjectKind::Secret;
/// Largest page Key Vault returns.
pub const MAX_PAGE: usize = 25;

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

/// A page of results and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items on this page.
    pub items: Vec<T>,
    /// Opaque `$skiptoken` for the next page.
    pub next: Option<String>,
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
    pub attributes: SecretAttributesPatch,
}

/// Attributes a request may set; `None` keeps the current (or default) value.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretAttributesPatch {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `nbf`.
    pub not_before: Option<i64>,
    /// `exp`.
    pub expires: Option<i64>,
}

/// `PATCH /secrets/{name}/{version}`.
#[derive(Debug, Clone, Default)]
pub struct SecretUpdate {
    /// New `contentType`.
    pub content_type: Option<String>,
    /// Replacement tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attribute changes.
    pub attributes: SecretAttributesPatch,
}

/// The plaintext inside a backup blob (itself sealed under the instance backup key).
#[derive(Serialize, Deserialize)]
struct Backup {
    format: String,
    subscription: String,
    geography: String,
    name: String,
    versions: Vec<BackupVersion>,
}

#[derive(Serialize, Deserialize)]
struct BackupVersion {
    version: String,
    value: String,
    public: serde_json::Value,
    tags: BTreeMap<String, String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
}

const BACKUP_FORMAT: &str = "atrest-secret-backup/1";
const BACKUP_CONTEXT: &[u8] = b"atrest/backup/secret";

fn value_aad(vault: &VaultRow, name: &str, version: &str) -> Vec<u8> {
    format!(
        "atrest/secret/{}/{}/{}",
        vault.vault_id,
        name.to_ascii_lowercase(),
        version
    )
    .into_bytes()
}

fn check_content_and_tags(
    content_type: &Option<String>,
    tags: &Option<BTreeMap<String, String>>,
) -> Result<(), VaultError> {
    if content_type
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CONTENT_TYPE_CHARS)
    {
        return Err(VaultError::BadParameter(format!(
            "The contentType exceeds the maximum length of {MAX_CONTENT_TYPE_CHARS} characters."
        )));
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(VaultError::BadParameter(format!(
                "The number of tags ({}) exceeds the maximum of {MAX_TAGS}.",
                tags.len()
            )));
        }
        if tags.iter().any(|(k, v)| {
            k.is_empty()
                || k.chars().count() > MAX_TAG_NAME_CHARS
                || v.chars().count() > MAX_TAG_VALUE_CHARS
        }) {
            return Err(VaultError::BadParameter(format!(
                "Tag names must be 1-{MAX_TAG_NAME_CHARS} characters and tag values at most {MAX_TAG_VALUE_CHARS} characters."
            )));
        }
    }
    Ok(())
}

fn check_dates(attrs: &SecretAttributesPatch) -> Result<(), VaultError> {
    if let (Some(nbf), Some(exp)) = (attrs.not_before, attrs.expires) {
        if exp <= nbf {
            return Err(VaultError::BadParameter(
                "The expiration time (exp) must be later than the activation time (nbf).".into(),
            ));
        }
    }
    Ok(())
}

fn recovery(vault: &VaultRow) -> Recovery {
    Recovery {
        retention_days: vault.retention_days,
        purge_protection: vault.purge_protection,
    }
}

fn attributes(v: &VersionRow) -> Attributes {
    Attributes {
        enabled: v.enabled,
        not_before: v.nbf,
        expires: v.exp,
        created: v.created,
        updated: v.updated,
    }
}

fn not_found(name: &str, version: Option<&str>) -> VaultError {
    VaultError::SecretNotFound(match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    })
}

/// The object's state if it exists and is not deleted.
fn live_state(tx: &Tx, vault: &VaultRow, name: &str) -> Result<ObjectState, VaultError> {
    tx.object_state(&vault.vault_id, KIND, name)?
        .filter(|s| s.deleted.is_none())
        .ok_or_else(|| not_found(name, None))
}

fn deleted_state(tx: &Tx, vault: &VaultRow, name: &str) -> Result<ObjectState, VaultError> {
    tx.object_state(&vault.vault_id, KIND, name)?
        .filter(|s| s.deleted.is_some())
        .ok_or_else(|| VaultError::DeletedSecretNotFound(name.to_owned()))
}

fn latest(tx: &Tx, vault: &VaultRow, state: &ObjectState) -> Result<VersionRow, VaultError> {
    tx.version(&vault.vault_id, KIND, &state.name, None)?
        .ok_or_else(|| not_found(&state.name, None))
}

fn check_page_size(maxresults: Option<usize>) -> Result<usize, VaultError> {
    match maxresults {
        None => Ok(MAX_PAGE),
        Some(n @ 1..=MAX_PAGE) => Ok(n),
        Some(n) => Err(VaultError::BadParameter(format!(
            "The value {n} of 'maxresults' is invalid. It must be between 1 and {MAX_PAGE}."
        ))),
    }
}

fn decode_skip(token: Option<&str>) -> Result<Option<String>, VaultError> {
    token
        .map(|t| {
            B64.decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| VaultError::BadParameter("The $skiptoken is invalid.".into()))
        })
        .transpose()
}

fn encode_skip(position: &str) -> String {
    B64.encode(position)
}

impl Vaults {
    fn to_secret(
        &self,
        vault: &VaultRow,
        state: &ObjectState,
        v: &VersionRow,
        with_value: bool,
    ) -> Result<Secret, VaultError> {
        let value = if with_value {
            let plain = Zeroizing::new(
                self.storage_key(vault)?
                    .open(&value_aad(vault, &v.name, &v.version), &v.sealed)?,
            );
            Some(Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(
                |_| VaultError::BadBackup("stored value is not UTF-8".into()),
            )?))
        } else {
            None
        };
        Ok(Secret {
            name: state.name.clone(),
            version: v.version.clone(),
            value,
            content_type: v
                .public
                .get("contentType")
                .and_then(|c| c.as_str())
                .map(str::to_owned),
            tags: v.tags.clone(),
            attributes: attributes(v),
            recovery: recovery(vault),
            deleted: state.deleted.zip(state.scheduled_purge),
        })
    }

    /// Sets a secret: adds a new version, creating the secret if the name is new.
    pub fn set_secret(
        &self,
        vault: &VaultRow,
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
        check_content_and_tags(&req.content_type, &req.tags)?;
        check_dates(&req.attributes)?;
        let key = self.storage_key(vault)?;
        self.store.write(|tx| {
            let state = tx.object_state(&vault.vault_id, KIND, name)?;
            if let Some(s) = state.as_ref().filter(|s| s.deleted.is_some()) {
                return Err(VaultError::DeletedButRecoverable(s.name.clone()));
            }
            let stored_name = state.map_or_else(|| name.to_owned(), |s| s.name);
            let version = random_hex(16);
            let row = VersionRow {
                vault_id: vault.vault_id.clone(),
                kind: KIND,
                sealed: key.seal(
                    &value_aad(vault, &stored_name, &version),
                    req.value.as_bytes(),
                ),
                name: stored_name,
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
            let state = live_state(tx, vault, &row.name)?;
            let mut secret = self.to_secret(vault, &state, &row, false)?;
            secret.value = Some(req.value.clone());
            Ok(secret)
        })
    }

    /// Gets a version (the latest when `version` is `None`), enforcing its attributes.
    pub fn get_secret(
        &self,
        vault: &VaultRow,
        name: &str,
        version: Option<&str>,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        self.store.read(|tx| {
            let state = live_state(tx, vault, name)?;
            let row = tx
                .version(&vault.vault_id, KIND, name, version)?
                .ok_or_else(|| not_found(name, version))?;
            attributes(&row)
                .check_usable(now)
                .map_err(|reason| VaultError::Unusable {
                    operation: "get",
                    reason,
                })?;
            self.to_secret(vault, &state, &row, true)
        })
    }

    /// Updates a version's content type, tags or attributes (the latest when `version` is `None`).
    pub fn update_secret(
        &self,
        vault: &VaultRow,
        name: &str,
        version: Option<&str>,
        update: &SecretUpdate,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        check_content_and_tags(&update.content_type, &update.tags)?;
        self.store.write(|tx| {
            let state = live_state(tx, vault, name)?;
            let mut row = tx
                .version(&vault.vault_id, KIND, name, version)?
                .ok_or_else(|| not_found(name, version))?;
            let a = &update.attributes;
            let merged = SecretAttributesPatch {
                enabled: a.enabled,
                not_before: a.not_before.or(row.nbf),
                expires: a.expires.or(row.exp),
            };
            check_dates(&merged)?;
            row.enabled = a.enabled.unwrap_or(row.enabled);
            row.nbf = merged.not_before;
            row.exp = merged.expires;
            if let Some(c) = &update.content_type {
                row.public["contentType"] = json!(c);
            }
            if let Some(tags) = &update.tags {
                row.tags = tags.clone();
            }
            row.updated = now;
            tx.update_version(&row)?;
            self.to_secret(vault, &state, &row, false)
        })
    }

    /// Lists secrets (latest version of each, no values), by name.
    pub fn list_secrets(
        &self,
        vault: &VaultRow,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        self.list_objects(vault, false, maxresults, skip)
    }

    /// Lists soft-deleted secrets.
    pub fn list_deleted_secrets(
        &self,
        vault: &VaultRow,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        self.list_objects(vault, true, maxresults, skip)
    }

    fn list_objects(
        &self,
        vault: &VaultRow,
        deleted: bool,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        let limit = check_page_size(maxresults)?;
        let after = decode_skip(skip)?;
        self.store.read(|tx| {
            let mut rows =
                tx.list_objects(&vault.vault_id, KIND, deleted, after.as_deref(), limit + 1)?;
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                encode_skip(&rows[limit - 1].0.name)
            });
            let items = rows
                .iter()
                .map(|(s, v)| self.to_secret(vault, s, v, false))
                .collect::<Result<_, _>>()?;
            Ok(Page { items, next })
        })
    }

    /// Lists the versions of a secret, oldest first, without values.
    pub fn list_secret_versions(
        &self,
        vault: &VaultRow,
        name: &str,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Secret>, VaultError> {
        check_object_name(name)?;
        let limit = check_page_size(maxresults)?;
        let after = match decode_skip(skip)? {
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| VaultError::BadParameter("The $skiptoken is invalid.".into()))?,
            None => 0,
        };
        self.store.read(|tx| {
            let state = live_state(tx, vault, name)?;
            let mut rows = tx.list_versions(&vault.vault_id, KIND, name, after, limit + 1)?;
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                encode_skip(&rows[limit - 1].1.to_string())
            });
            let items = rows
                .iter()
                .map(|(v, _)| self.to_secret(vault, &state, v, false))
                .collect::<Result<_, _>>()?;
            Ok(Page { items, next })
        })
    }

    /// Soft-deletes a secret (all versions) and returns the deleted bundle.
    pub fn delete_secret(
        &self,
        vault: &VaultRow,
        name: &str,
        now: i64,
    ) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        self.store.write(|tx| {
            let mut state = live_state(tx, vault, name)?;
            let when = (now, recovery(vault).scheduled_purge(now));
            tx.set_object_deleted(&vault.vault_id, KIND, &state.name, Some(when))?;
            state.deleted = Some(when.0);
            state.scheduled_purge = Some(when.1);
            let row = latest(tx, vault, &state)?;
            self.to_secret(vault, &state, &row, false)
        })
    }

    /// A soft-deleted secret.
    pub fn get_deleted_secret(&self, vault: &VaultRow, name: &str) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        self.store.read(|tx| {
            let state = deleted_state(tx, vault, name)?;
            let row = latest(tx, vault, &state)?;
            self.to_secret(vault, &state, &row, false)
        })
    }

    /// Recovers a soft-deleted secret with all its versions.
    pub fn recover_secret(&self, vault: &VaultRow, name: &str) -> Result<Secret, VaultError> {
        check_object_name(name)?;
        self.store.write(|tx| {
            let mut state = deleted_state(tx, vault, name)?;
            tx.set_object_deleted(&vault.vault_id, KIND, &state.name, None)?;
            state.deleted = None;
            state.scheduled_purge = None;
            let row = latest(tx, vault, &state)?;
            self.to_secret(vault, &state, &row, false)
        })
    }

    /// Permanently deletes a soft-deleted secret, unless purge protection forbids it yet.
    pub fn purge_secret(&self, vault: &VaultRow, name: &str, now: i64) -> Result<(), VaultError> {
        check_object_name(name)?;
        self.store.write(|tx| {
            let state = deleted_state(tx, vault, name)?;
            if vault.purge_protection && state.scheduled_purge.is_some_and(|p| now < p) {
                return Err(VaultError::PurgeProtected);
            }
            tx.purge_object(&vault.vault_id, KIND, &state.name)?;
            Ok(())
        })
    }

    /// An encrypted, integrity-protected backup of every version of a secret.
    pub fn backup_secret(&self, vault: &VaultRow, name: &str) -> Result<Vec<u8>, VaultError> {
        check_object_name(name)?;
        let key = self.storage_key(vault)?;
        self.store.read(|tx| {
            let state = live_state(tx, vault, name)?;
            let mut versions = Vec::new();
            let mut after = 0;
            loop {
                let rows = tx.list_versions(&vault.vault_id, KIND, &state.name, after, 100)?;
                let Some((_, last)) = rows.last() else { break };
                after = *last;
                for (v, _) in rows {
                    let plain = Zeroizing::new(
                        key.open(&value_aad(vault, &v.name, &v.version), &v.sealed)?,
                    );
                    versions.push(BackupVersion {
                        version: v.version,
                        value: String::from_utf8(plain.to_vec()).map_err(|_| {
                            VaultError::BadBackup("stored value is not UTF-8".into())
                        })?,
                        public: v.public,
                        tags: v.tags,
                        enabled: v.enabled,
                        nbf: v.nbf,
                        exp: v.exp,
                        created: v.created,
                        updated: v.updated,
                    });
                }
            }
            let mut backup = Backup {
                format: BACKUP_FORMAT.into(),
                subscription: vault.subscription.clone(),
                geography: geography(&vault.location).to_owned(),
                name: state.name,
                versions,
            };
            let plain = Zeroizing::new(serde_json::to_vec(&backup).expect("backup serializes"));
            for v in &mut backup.versions {
                zeroize::Zeroize::zeroize(&mut v.value);
            }
            Ok(self.backup_key.seal(BACKUP_CONTEXT, &plain))
        })
    }

    /// Restores a backup into `vault`: same subscription and geography, unused name.
    pub fn restore_secret(&self, vault: &VaultRow, blob: &[u8]) -> Result<Secret, VaultError> {
        let invalid =
            || VaultError::BadBackup("Backup blob contains invalid or corrupt data.".into());
        let plain = Zeroizing::new(
            self.backup_key
                .open(BACKUP_CONTEXT, blob)
                .map_err(|_| invalid())?,
        );
        let mut backup: Backup = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        if backup.format != BACKUP_FORMAT
            || backup.versions.is_empty()
            || check_object_name(&backup.name).is_err()
        {
            return Err(invalid());
        }
        if backup.subscription != vault.subscription {
            return Err(VaultError::BadBackup("The backup was taken in another subscription; a secret can only be restored into a vault of the same subscription.".into()));
        }
        if backup.geography != geography(&vault.location) {
            return Err(VaultError::BadBackup(format!(
                "The backup was taken in geography '{}'; a secret can only be restored into a vault of the same geography.",
                backup.geography
            )));
        }
        let key = self.storage_key(vault)?;
        let result = self.store.write(|tx| {
            match tx.object_state(&vault.vault_id, KIND, &backup.name)? {
                Some(s) if s.deleted.is_some() => {
                    return Err(VaultError::DeletedButRecoverable(s.name))
                }
                Some(s) => return Err(VaultError::AlreadyExists(s.name)),
                None => {}
            }
            let mut last = None;
            for v in &backup.versions {
                if !is_object_version(&v.version) {
                    return Err(invalid());
                }
                let row = VersionRow {
                    vault_id: vault.vault_id.clone(),
                    kind: KIND,
                    name: backup.name.clone(),
                    version: v.version.clone(),
                    sealed: key.seal(
                        &value_aad(vault, &backup.name, &v.version),
                        v.value.as_bytes(),
                    ),
                    public: v.public.clone(),
                    tags: v.tags.clone(),
                    enabled: v.enabled,
                    nbf: v.nbf,
                    exp: v.exp,
                    created: v.created,
                    updated: v.updated,
                };
                tx.insert_version(&row)?;
                last = Some(row);
            }
            let state = live_state(tx, vault, &backup.name)?;
            self.to_secret(vault, &state, &last.expect("at least one version"), false)
        });
        for v in &mut backup.versions {
            zeroize::Zeroize::zeroize(&mut v.value);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixture, Fixture};
    use crate::VaultRequest;
    use atrest_core::attributes::Unusable;

    fn vault(f: &Fixture, name: &str, location: &str, purge_protection: bool) -> VaultRow {
        let mut req = VaultRequest {
            location: Some(location.into()),
            ..Default::default()
        };
        req.patch.purge_protection = Some(purge_protection);
        f.vaults
            .put_vault("sub", "rg", name, "t", &req, 0)
            .unwrap()
            .0
    }

    fn set(value: &str) -> SetSecret {
        SetSecret {
            value: Zeroizing::new(value.into()),
            ..Default::default()
        }
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
            Err(VaultError::SecretNotFound(_))
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
        req.attributes = SecretAttributesPatch {
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
            attributes: SecretAttributesPatch {
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
            attributes: SecretAttributesPatch {
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
            Err(VaultError::SecretNotFound(_))
        ));
        assert!(matches!(
            f.vaults.set_secret(&v, "s", &set("w"), 1001),
            Err(VaultError::DeletedButRecoverable(_))
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
            Err(VaultError::DeletedSecretNotFound(_))
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
            Err(VaultError::AlreadyExists(_))
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
