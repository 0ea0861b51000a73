//! What secrets and keys share: names and versions, attributes, tags, soft delete,
//! recovery, purge, paging, sealing of the payload, backup and restore. The secrets and
//! keys modules add only what is theirs (values; key material and cryptography).

use std::collections::BTreeMap;

use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::names::{check_object_name, is_object_version};
use atrest_core::vault::{geography, MAX_TAGS, MAX_TAG_NAME_CHARS, MAX_TAG_VALUE_CHARS};
use atrest_core::vault::{ObjectKind, VaultRecord};
use atrest_crypto::DataKey;
use atrest_store::{ObjectState, Tx, VersionRow};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{VaultError, Vaults};

/// Largest page Key Vault returns.
pub const MAX_PAGE: usize = 25;

/// A page of results and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items on this page.
    pub items: Vec<T>,
    /// Opaque `$skiptoken` for the next page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// One stored version with its object's state.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub state: ObjectState,
    pub row: VersionRow,
}

/// Attributes a request may set; `None` keeps the current (or default) value.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttributesPatch {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `nbf`.
    pub not_before: Option<i64>,
    /// `exp`.
    pub expires: Option<i64>,
}

impl AttributesPatch {
    pub(crate) fn check_dates(&self) -> Result<(), VaultError> {
        if let (Some(nbf), Some(exp)) = (self.not_before, self.expires) {
            if exp <= nbf {
                return Err(VaultError::BadParameter(
                    "The expiration time (exp) must be later than the activation time (nbf)."
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Applies the patch to a version, checking the merged dates.
    pub(crate) fn apply(&self, row: &mut VersionRow) -> Result<(), VaultError> {
        let merged = AttributesPatch {
            enabled: self.enabled,
            not_before: self.not_before.or(row.nbf),
            expires: self.expires.or(row.exp),
        };
        merged.check_dates()?;
        row.enabled = self.enabled.unwrap_or(row.enabled);
        row.nbf = merged.not_before;
        row.exp = merged.expires;
        Ok(())
    }
}

/// Replaces tags (if given) and patches attributes: the edits every object type allows.
pub(crate) fn edit_tags_and_attributes(
    row: &mut VersionRow,
    tags: &Option<BTreeMap<String, String>>,
    attributes: &AttributesPatch,
) -> Result<(), VaultError> {
    check_tags(tags)?;
    attributes.apply(row)?;
    if let Some(tags) = tags {
        row.tags = tags.clone();
    }
    Ok(())
}

pub(crate) fn check_tags(tags: &Option<BTreeMap<String, String>>) -> Result<(), VaultError> {
    let Some(tags) = tags else { return Ok(()) };
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
    Ok(())
}

pub(crate) fn recovery(vault: &VaultRecord) -> Recovery {
    Recovery {
        retention_days: vault.retention_days,
        purge_protection: vault.purge_protection,
    }
}

pub(crate) fn attributes(v: &VersionRow) -> Attributes {
    Attributes {
        enabled: v.enabled,
        not_before: v.nbf,
        expires: v.exp,
        created: v.created,
        updated: v.updated,
    }
}

/// Associated data binding a sealed payload to its vault, kind, object and version.
pub(crate) fn payload_aad(
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
    version: &str,
) -> Vec<u8> {
    format!(
        "atrest/{}/{}/{}/{}",
        kind.as_str(),
        vault.vault_id,
        name.to_ascii_lowercase(),
        version
    )
    .into_bytes()
}

pub(crate) fn not_found(kind: ObjectKind, name: &str, version: Option<&str>) -> VaultError {
    let name = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    VaultError::NotFound { kind, name }
}

/// The object's state if it exists and is not deleted.
pub(crate) fn live_state(
    tx: &Tx,
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
) -> Result<ObjectState, VaultError> {
    tx.object_state(&vault.vault_id, kind, name)?
        .filter(|s| s.deleted.is_none())
        .ok_or_else(|| not_found(kind, name, None))
}

fn deleted_state(
    tx: &Tx,
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
) -> Result<ObjectState, VaultError> {
    tx.object_state(&vault.vault_id, kind, name)?
        .filter(|s| s.deleted.is_some())
        .ok_or_else(|| VaultError::DeletedNotFound {
            kind,
            name: name.to_owned(),
        })
}

/// A version (the latest when `version` is `None`) of a live object.
pub(crate) fn live_version(
    tx: &Tx,
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
) -> Result<Stored, VaultError> {
    let state = live_state(tx, vault, kind, name)?;
    let row = tx
        .version(&vault.vault_id, kind, &state.name, version)?
        .ok_or_else(|| not_found(kind, name, version))?;
    Ok(Stored { state, row })
}

fn latest(tx: &Tx, vault: &VaultRecord, state: ObjectState) -> Result<Stored, VaultError> {
    let row = tx
        .version(&vault.vault_id, state.kind, &state.name, None)?
        .ok_or_else(|| not_found(state.kind, &state.name, None))?;
    Ok(Stored { state, row })
}

/// Whether a key or secret row belongs to a certificate (`managed`).
pub(crate) fn is_managed(row: &VersionRow) -> bool {
    row.public
        .get("managed")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

/// Refuses `operation` on a key or secret version that belongs to a certificate: it
/// changes only with the certificate.
pub(crate) fn refuse_managed(row: &VersionRow, operation: &'static str) -> Result<(), VaultError> {
    if row.kind != ObjectKind::Certificate && is_managed(row) {
        return Err(VaultError::ManagedByKeyVault {
            kind: row.kind,
            operation,
        });
    }
    Ok(())
}

/// Refuses a new standalone version of a key or secret whose name a certificate holds.
pub(crate) fn refuse_managed_name(
    tx: &Tx,
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
    operation: &'static str,
) -> Result<(), VaultError> {
    match tx.version(&vault.vault_id, kind, name, None)? {
        Some(row) => refuse_managed(&row, operation),
        None => Ok(()),
    }
}

/// The name under which a new version is stored: the existing object's (its case is
/// kept), unless that object is soft-deleted, which reserves the name.
pub(crate) fn name_for_new_version(
    tx: &Tx,
    vault: &VaultRecord,
    kind: ObjectKind,
    name: &str,
) -> Result<String, VaultError> {
    match tx.object_state(&vault.vault_id, kind, name)? {
        Some(s) if s.deleted.is_some() => {
            Err(VaultError::DeletedButRecoverable { kind, name: s.name })
        }
        Some(s) => Ok(s.name),
        None => Ok(name.to_owned()),
    }
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
    /// The opened payload, base64url.
    payload: String,
    public: serde_json::Value,
    tags: BTreeMap<String, String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
}

impl Drop for BackupVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.payload);
    }
}

/// A backup blob opened and checked, ready to be written.
pub(crate) struct OpenedBackup {
    kind: ObjectKind,
    /// The object's name.
    pub name: String,
    backup: Backup,
    payloads: Vec<Zeroizing<Vec<u8>>>,
}

impl OpenedBackup {
    /// Writes every version in `tx`, refusing a name in use (live or soft-deleted).
    pub(crate) fn insert(
        &self,
        tx: &Tx,
        vault: &VaultRecord,
        key: &DataKey,
    ) -> Result<(), VaultError> {
        let kind = self.kind;
        match tx.object_state(&vault.vault_id, kind, &self.name)? {
            Some(s) if s.deleted.is_some() => {
                return Err(VaultError::DeletedButRecoverable { kind, name: s.name })
            }
            Some(s) => return Err(VaultError::AlreadyExists { kind, name: s.name }),
            None => {}
        }
        for (v, payload) in self.backup.versions.iter().zip(&self.payloads) {
            tx.insert_version(&VersionRow {
                vault_id: vault.vault_id.clone(),
                kind,
                name: self.name.clone(),
                version: v.version.clone(),
                sealed: key.seal(&payload_aad(vault, kind, &self.name, &v.version), payload),
                public: v.public.clone(),
                tags: v.tags.clone(),
                enabled: v.enabled,
                nbf: v.nbf,
                exp: v.exp,
                created: v.created,
                updated: v.updated,
            })?;
        }
        Ok(())
    }
}

fn backup_format(kind: ObjectKind) -> String {
    format!("atrest-{}-backup/1", kind.as_str())
}

fn backup_context(kind: ObjectKind) -> String {
    format!("atrest/backup/{}", kind.as_str())
}

impl Vaults {
    /// Lists live (or soft-deleted) objects, latest version of each, by name.
    pub(crate) fn list_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        deleted: bool,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Stored>, VaultError> {
        let limit = check_page_size(maxresults)?;
        let after = decode_skip(skip)?;
        self.store.read(|tx| {
            let mut rows =
                tx.list_objects(&vault.vault_id, kind, deleted, after.as_deref(), limit + 1)?;
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                B64.encode(&rows[limit - 1].0.name)
            });
            Ok(Page {
                items: rows
                    .into_iter()
                    .map(|(state, row)| Stored { state, row })
                    .collect(),
                next,
            })
        })
    }

    /// Lists the versions of an object, oldest first. A name with no live object lists no
    /// versions (an empty page, as Key Vault answers), rather than 404.
    pub(crate) fn list_stored_versions(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Stored>, VaultError> {
        check_object_name(name)?;
        let limit = check_page_size(maxresults)?;
        let after = match decode_skip(skip)? {
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| VaultError::BadParameter("The $skiptoken is invalid.".into()))?,
            None => 0,
        };
        self.store.read(|tx| {
            let live = tx.object_state(&vault.vault_id, kind, name)?;
            let Some(state) = live.filter(|s| s.deleted.is_none()) else {
                return Ok(Page {
                    items: Vec::new(),
                    next: None,
                });
            };
            let mut rows = tx.list_versions(&vault.vault_id, kind, name, after, limit + 1)?;
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                B64.encode(rows[limit - 1].1.to_string())
            });
            Ok(Page {
                items: rows
                    .into_iter()
                    .map(|(row, _)| Stored {
                        state: state.clone(),
                        row,
                    })
                    .collect(),
                next,
            })
        })
    }

    /// Edits a version (the latest when `version` is `None`) of a live object.
    pub(crate) fn update_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        (name, version): (&str, Option<&str>),
        now: i64,
        edit: impl FnOnce(&mut VersionRow) -> Result<(), VaultError>,
    ) -> Result<Stored, VaultError> {
        check_object_name(name)?;
        self.write(|tx| {
            let mut stored = live_version(tx, vault, kind, name, version)?;
            refuse_managed(&stored.row, "update")?;
            edit(&mut stored.row)?;
            stored.row.updated = now;
            tx.update_version(&stored.row)?;
            Ok(stored)
        })
    }

    /// Soft-deletes an object (all versions); returns its latest version.
    pub(crate) fn delete_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
        now: i64,
    ) -> Result<Stored, VaultError> {
        check_object_name(name)?;
        self.write(|tx| {
            let mut state = live_state(tx, vault, kind, name)?;
            if let Some(row) = tx.version(&vault.vault_id, kind, &state.name, None)? {
                refuse_managed(&row, "delete")?;
            }
            let when = (now, recovery(vault).scheduled_purge(now));
            tx.set_object_deleted(&vault.vault_id, kind, &state.name, Some(when))?;
            state.deleted = Some(when.0);
            state.scheduled_purge = Some(when.1);
            latest(tx, vault, state)
        })
    }

    /// The latest version of a soft-deleted object.
    pub(crate) fn get_deleted_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Stored, VaultError> {
        check_object_name(name)?;
        self.store
            .read(|tx| latest(tx, vault, deleted_state(tx, vault, kind, name)?))
    }

    /// Recovers a soft-deleted object with all its versions.
    pub(crate) fn recover_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Stored, VaultError> {
        check_object_name(name)?;
        self.write(|tx| {
            let mut state = deleted_state(tx, vault, kind, name)?;
            tx.set_object_deleted(&vault.vault_id, kind, &state.name, None)?;
            state.deleted = None;
            state.scheduled_purge = None;
            latest(tx, vault, state)
        })
    }

    /// Permanently deletes a soft-deleted object, unless purge protection forbids it yet.
    pub(crate) fn purge_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
        now: i64,
    ) -> Result<(), VaultError> {
        check_object_name(name)?;
        self.write(|tx| {
            let state = deleted_state(tx, vault, kind, name)?;
            if vault.purge_protection && state.scheduled_purge.is_some_and(|p| now < p) {
                return Err(VaultError::PurgeProtected);
            }
            tx.purge_object(&vault.vault_id, kind, &state.name)?;
            Ok(())
        })
    }

    /// Opens a version's sealed payload.
    pub(crate) fn open_payload(
        &self,
        key: &DataKey,
        vault: &VaultRecord,
        row: &VersionRow,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        Ok(Zeroizing::new(key.open(
            &payload_aad(vault, row.kind, &row.name, &row.version),
            &row.sealed,
        )?))
    }

    /// An encrypted, integrity-protected backup of every version of an object.
    pub(crate) fn backup_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<u8>, VaultError> {
        check_object_name(name)?;
        let key = self.storage_key(vault)?;
        self.store.read(|tx| {
            let state = live_state(tx, vault, kind, name)?;
            let mut versions = Vec::new();
            let mut after = 0;
            loop {
                let rows = tx.list_versions(&vault.vault_id, kind, &state.name, after, 100)?;
                let Some((_, last)) = rows.last() else { break };
                after = *last;
                for (v, _) in rows {
                    versions.push(BackupVersion {
                        payload: B64.encode(&*self.open_payload(&key, vault, &v)?),
                        version: v.version,
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
            let backup = Backup {
                format: backup_format(kind),
                subscription: vault.subscription.clone(),
                geography: geography(&vault.location).to_owned(),
                name: state.name,
                versions,
            };
            let plain = Zeroizing::new(serde_json::to_vec(&backup).expect("backup serializes"));
            Ok(self
                .backup_key
                .seal(backup_context(kind).as_bytes(), &plain))
        })
    }

    /// Restores a backup into `vault`: same subscription and geography, unused name.
    /// `check_payload` validates each version's payload before anything is written.
    pub(crate) fn restore_stored(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        blob: &[u8],
        payload_ok: impl Fn(&serde_json::Value, &[u8]) -> bool,
    ) -> Result<Stored, VaultError> {
        let opened = self.open_backup(vault, kind, blob, payload_ok)?;
        let key = self.storage_key(vault)?;
        self.write(|tx| {
            opened.insert(tx, vault, &key)?;
            latest(tx, vault, live_state(tx, vault, kind, &opened.name)?)
        })
    }

    /// Opens and checks a backup blob of `kind` for `vault`, writing nothing.
    pub(crate) fn open_backup(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        blob: &[u8],
        payload_ok: impl Fn(&serde_json::Value, &[u8]) -> bool,
    ) -> Result<OpenedBackup, VaultError> {
        let invalid =
            || VaultError::BadBackup("Backup blob contains invalid or corrupt data.".into());
        let plain = Zeroizing::new(
            self.backup_key
                .open(backup_context(kind).as_bytes(), blob)
                .map_err(|_| invalid())?,
        );
        let backup: Backup = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        if backup.format != backup_format(kind)
            || backup.versions.is_empty()
            || check_object_name(&backup.name).is_err()
        {
            return Err(invalid());
        }
        if backup.subscription != vault.subscription {
            return Err(VaultError::BadBackup("The backup was taken in another subscription; it can only be restored into a vault of the same subscription.".into()));
        }
        if backup.geography != geography(&vault.location) {
            return Err(VaultError::BadBackup(format!(
                "The backup was taken in geography '{}'; it can only be restored into a vault of the same geography.",
                backup.geography
            )));
        }
        let payloads = backup
            .versions
            .iter()
            .map(|v| {
                let payload = Zeroizing::new(B64.decode(&v.payload).map_err(|_| invalid())?);
                if !payload_ok(&v.public, &payload) {
                    return Err(invalid());
                }
                if !is_object_version(&v.version) {
                    return Err(invalid());
                }
                Ok(payload)
            })
            .collect::<Result<Vec<_>, VaultError>>()?;
        Ok(OpenedBackup {
            kind,
            name: backup.name.clone(),
            backup,
            payloads,
        })
    }
}
