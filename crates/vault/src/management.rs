//! Vault management: the rules behind `Microsoft.KeyVault/vaults`.

use std::sync::Arc;

use std::collections::BTreeMap;

use atrest_core::access_policy::{
    check_count, edit_policies, normalize_entry, AccessPolicyEntry, PolicyEdit,
};
use atrest_core::names::{check_resource_group_name, check_vault_name};
use atrest_core::vault::VaultRecord;
use atrest_core::vault::{normalize_location, VaultPatch, VaultProperties};
use atrest_crypto::{random_hex, DataKey};
use atrest_store::Tx;

use crate::{vault_key_context, VaultError, Vaults};

/// A create-or-update request for a vault.
#[derive(Debug, Clone, Default)]
pub struct VaultRequest {
    /// Location; required on creation, must not change afterwards.
    pub location: Option<String>,
    /// Property changes.
    pub patch: VaultPatch,
    /// Replacement tags, if given.
    pub tags: Option<BTreeMap<String, String>>,
    /// `createMode: recover`: bring back a soft-deleted vault.
    pub recover: bool,
    /// Replacement access policies, if given.
    pub access_policies: Option<Vec<AccessPolicyEntry>>,
}

const MAX_ARM_TAGS: usize = 50;

fn check_tags(tags: &Option<BTreeMap<String, String>>) -> Result<(), VaultError> {
    match tags {
        Some(t) if t.len() > MAX_ARM_TAGS => Err(VaultError::BadParameter(format!(
            "A resource can have at most {MAX_ARM_TAGS} tags; the request has {}.",
            t.len()
        ))),
        Some(t)
            if t.iter()
                .any(|(k, v)| k.is_empty() || k.len() > 512 || v.len() > 256) =>
        {
            Err(VaultError::BadParameter(
                "Tag names must be 1-512 characters and tag values at most 256 characters.".into(),
            ))
        }
        _ => Ok(()),
    }
}

fn props_of(v: &VaultRecord) -> VaultProperties {
    VaultProperties {
        soft_delete_retention_days: v.retention_days,
        purge_protection: v.purge_protection,
        enabled_for_disk_encryption: v.disk_encryption,
        enable_rbac_authorization: v.rbac,
    }
}

/// Applies the property, tag and access-policy changes of `req` to `v`.
fn apply(
    v: &mut VaultRecord,
    props: &VaultProperties,
    req: &VaultRequest,
) -> Result<(), VaultError> {
    v.purge_protection = props.purge_protection;
    v.disk_encryption = props.enabled_for_disk_encryption;
    v.rbac = props.enable_rbac_authorization;
    if let Some(tags) = &req.tags {
        v.tags = tags.clone();
    }
    if let Some(entries) = &req.access_policies {
        check_count(entries.len())?;
        v.access_policies = normalized(entries, &v.tenant)?;
    }
    Ok(())
}

fn normalized(
    entries: &[AccessPolicyEntry],
    tenant: &str,
) -> Result<Vec<AccessPolicyEntry>, VaultError> {
    Ok(entries
        .iter()
        .map(|e| normalize_entry(e, tenant))
        .collect::<Result<_, _>>()?)
}

/// The live vault `name` in `subscription`/`resource_group`.
fn live_vault(
    tx: &Tx,
    subscription: &str,
    resource_group: &str,
    name: &str,
) -> Result<VaultRecord, VaultError> {
    tx.vault(name)?
        .filter(|v| {
            v.deleted.is_none()
                && v.subscription == subscription
                && v.resource_group.eq_ignore_ascii_case(resource_group)
        })
        .ok_or_else(|| VaultError::VaultNotFound(name.to_owned()))
}

impl Vaults {
    /// Creates or updates a vault (ARM PUT). Returns the vault and whether it was created.
    pub fn put_vault(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        tenant: &str,
        req: &VaultRequest,
        now: i64,
    ) -> Result<(VaultRecord, bool), VaultError> {
        check_vault_name(name)?;
        check_resource_group_name(resource_group)?;
        check_tags(&req.tags)?;
        let location = req
            .location
            .as_deref()
            .map(normalize_location)
            .transpose()?;
        self.write(|tx| {
            match tx.vault(name)? {
                Some(mut v) if v.deleted.is_some() => {
                    if !req.recover || v.subscription != subscription {
                        return Err(VaultError::VaultConflict(format!(
                            "A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault '{}'.",
                            v.name
                        )));
                    }
                    v.deleted = None;
                    v.scheduled_purge = None;
                    v.updated = now;
                    tx.update_vault(&v)?;
                    Ok((v, false))
                }
                Some(mut v) => {
                    if v.subscription != subscription || !v.resource_group.eq_ignore_ascii_case(resource_group) {
                        return Err(VaultError::VaultConflict(format!(
                            "The vault name '{name}' is already in use. Vault names are globally unique so it is possible that the name is already taken."
                        )));
                    }
                    if location.as_deref().is_some_and(|l| l != v.location) {
                        return Err(VaultError::BadParameter(format!(
                            "The location of vault '{name}' is '{}' and cannot be changed.",
                            v.location
                        )));
                    }
                    let props = props_of(&v).update(&req.patch)?;
                    apply(&mut v, &props, req)?;
                    v.updated = now;
                    tx.update_vault(&v)?;
                    Ok((v, false))
                }
                None if req.recover => Err(VaultError::VaultNotFound(name.to_owned())),
                None => {
                    let location = location.ok_or_else(|| VaultError::BadParameter("The property 'location' is required to create a vault.".into()))?;
                    let props = VaultProperties::create(&req.patch)?;
                    let vault_id = random_hex(16);
                    let key = DataKey::generate();
                    let mut v = VaultRecord {
                        name: name.to_owned(),
                        wrapped_key: key.wrap(&self.root, &vault_key_context(&vault_id)),
                        vault_id,
                        subscription: subscription.to_owned(),
                        resource_group: resource_group.to_owned(),
                        location,
                        tenant: tenant.to_owned(),
                        retention_days: props.soft_delete_retention_days,
                        purge_protection: false,
                        disk_encryption: false,
                        rbac: true,
                        tags: BTreeMap::new(),
                        access_policies: Vec::new(),
                        created: now,
                        updated: now,
                        deleted: None,
                        scheduled_purge: None,
                    };
                    apply(&mut v, &props, req)?;
                    tx.insert_vault(&v)?;
                    Ok((v, true))
                }
            }
        })
    }

    /// Updates some properties, tags or access policies of a vault (ARM PATCH). Location
    /// and `createMode` cannot be patched.
    pub fn patch_vault(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        req: &VaultRequest,
        now: i64,
    ) -> Result<VaultRecord, VaultError> {
        if req.location.is_some() || req.recover {
            return Err(VaultError::BadParameter(
                "A vault's location and createMode cannot be patched.".into(),
            ));
        }
        check_tags(&req.tags)?;
        self.write(|tx| {
            let mut v = live_vault(tx, subscription, resource_group, name)?;
            let props = props_of(&v).update(&req.patch)?;
            apply(&mut v, &props, req)?;
            v.updated = now;
            tx.update_vault(&v)?;
            Ok(v)
        })
    }

    /// Adds, replaces or removes access policy entries (ARM
    /// `vaults/{name}/accessPolicies/{add|replace|remove}`). Returns the vault's new list.
    pub fn edit_access_policies(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        edit: PolicyEdit,
        entries: &[AccessPolicyEntry],
        now: i64,
    ) -> Result<VaultRecord, VaultError> {
        self.write(|tx| {
            let mut v = live_vault(tx, subscription, resource_group, name)?;
            let entries = normalized(entries, &v.tenant)?;
            v.access_policies = edit_policies(&v.access_policies, edit, &entries)?;
            v.updated = now;
            tx.update_vault(&v)?;
            Ok(v)
        })
    }

    /// One live vault.
    pub fn get_vault(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<VaultRecord, VaultError> {
        self.store
            .read(|tx| live_vault(tx, subscription, resource_group, name))
    }

    /// Live vaults of a subscription, optionally of one resource group.
    pub fn list_vaults(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<VaultRecord>, VaultError> {
        Ok(self
            .store
            .read(|tx| tx.list_vaults(subscription, resource_group, false))?)
    }

    /// Soft-deletes a vault; its objects stay until it is purged. False if there was none.
    pub fn delete_vault(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        now: i64,
    ) -> Result<bool, VaultError> {
        self.write(
            |tx| match live_vault(tx, subscription, resource_group, name) {
                Ok(mut v) => {
                    v.deleted = Some(now);
                    v.scheduled_purge = Some(props_of(&v).recovery().scheduled_purge(now));
                    v.updated = now;
                    tx.update_vault(&v)?;
                    Ok(true)
                }
                Err(VaultError::VaultNotFound(_)) => Ok(false),
                Err(e) => Err(e),
            },
        )
    }

    /// Soft-deleted vaults of a subscription.
    pub fn list_deleted_vaults(&self, subscription: &str) -> Result<Vec<VaultRecord>, VaultError> {
        Ok(self
            .store
            .read(|tx| tx.list_vaults(subscription, None, true))?)
    }

    /// One soft-deleted vault.
    pub fn get_deleted_vault(
        &self,
        subscription: &str,
        name: &str,
    ) -> Result<VaultRecord, VaultError> {
        self.store
            .read(|tx| tx.vault(name))?
            .filter(|v| v.deleted.is_some() && v.subscription == subscription)
            .ok_or_else(|| VaultError::VaultNotFound(name.to_owned()))
    }

    /// Permanently removes a soft-deleted vault, unless purge protection forbids it yet.
    pub fn purge_deleted_vault(
        &self,
        subscription: &str,
        name: &str,
        now: i64,
    ) -> Result<(), VaultError> {
        self.write(|tx| {
            let v = tx
                .vault(name)?
                .filter(|v| v.deleted.is_some() && v.subscription == subscription)
                .ok_or_else(|| VaultError::VaultNotFound(name.to_owned()))?;
            if v.purge_protection && v.scheduled_purge.is_some_and(|p| now < p) {
                return Err(VaultError::VaultPurgeProtected(v.name));
            }
            tx.purge_vault(&v.vault_id)?;
            crate::issuers::forget_certificate_documents(tx, &v.vault_id)?;
            Ok(())
        })
    }

    /// The live vault serving the data plane at `NAME.vault.localhost`.
    /// Served from memory: every vault write goes through this service (one server per
    /// data directory) and empties the cache.
    pub fn data_plane_vault(&self, name: &str) -> Result<Arc<VaultRecord>, VaultError> {
        self.cached(
            |c| &mut c.vaults,
            name.to_ascii_lowercase(),
            || {
                self.store
                    .read(|tx| tx.vault(name))?
                    .filter(|v| v.deleted.is_none())
                    .ok_or_else(|| VaultError::VaultNotFound(name.to_owned()))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fixture;

    fn patch(patch: VaultPatch) -> VaultRequest {
        VaultRequest {
            patch,
            ..Default::default()
        }
    }

    fn req(location: &str) -> VaultRequest {
        VaultRequest {
            location: Some(location.into()),
            ..Default::default()
        }
    }

    #[test]
    fn create_update_and_rules() {
        let f = fixture();
        let (v, created) = f
            .vaults
            .put_vault("s", "rg", "kv1", "t", &req("East US"), 1)
            .unwrap();
        assert!(created);
        assert_eq!(v.location, "eastus");
        assert_eq!(v.retention_days, 90);
        assert!(v.rbac);
        let (_, created) = f
            .vaults
            .put_vault("s", "rg", "kv1", "t", &req("eastus"), 2)
            .unwrap();
        assert!(!created);
        assert!(matches!(
            f.vaults.put_vault("s", "rg", "kv1", "t", &req("westus"), 2),
            Err(VaultError::BadParameter(_))
        ));
        assert!(matches!(
            f.vaults
                .put_vault("s", "rg2", "KV1", "t", &req("eastus"), 2),
            Err(VaultError::VaultConflict(_))
        ));
        assert!(matches!(
            f.vaults
                .put_vault("s", "rg", "1bad", "t", &req("eastus"), 2),
            Err(VaultError::Name(_))
        ));
        assert!(matches!(
            f.vaults
                .put_vault("s", "rg", "kv2", "t", &VaultRequest::default(), 2),
            Err(VaultError::BadParameter(_))
        ));

        let on = VaultPatch {
            purge_protection: Some(true),
            ..Default::default()
        };
        assert!(
            f.vaults
                .patch_vault("s", "rg", "kv1", &patch(on), 3)
                .unwrap()
                .purge_protection
        );
        let off = VaultPatch {
            purge_protection: Some(false),
            ..Default::default()
        };
        assert!(matches!(
            f.vaults.patch_vault("s", "rg", "kv1", &patch(off), 3),
            Err(VaultError::Rule(_))
        ));
        assert!(
            f.vaults
                .get_vault("s", "rg", "kv1")
                .unwrap()
                .purge_protection,
            "refused patch changed nothing"
        );
    }

    #[test]
    fn soft_delete_recover_purge() {
        let f = fixture();
        f.vaults
            .put_vault("s", "rg", "kv1", "t", &req("eastus"), 1)
            .unwrap();
        assert!(f.vaults.delete_vault("s", "rg", "kv1", 10).unwrap());
        assert!(!f.vaults.delete_vault("s", "rg", "kv1", 10).unwrap());
        assert!(matches!(
            f.vaults.get_vault("s", "rg", "kv1"),
            Err(VaultError::VaultNotFound(_))
        ));
        assert!(matches!(
            f.vaults
                .put_vault("s", "rg", "kv1", "t", &req("eastus"), 11),
            Err(VaultError::VaultConflict(_))
        ));
        let d = f.vaults.get_deleted_vault("s", "kv1").unwrap();
        assert_eq!(d.scheduled_purge, Some(10 + 90 * 86_400));
        let recover = VaultRequest {
            recover: true,
            ..req("eastus")
        };
        f.vaults
            .put_vault("s", "rg", "kv1", "t", &recover, 12)
            .unwrap();
        assert!(f.vaults.get_vault("s", "rg", "kv1").is_ok());

        let on = VaultPatch {
            purge_protection: Some(true),
            ..Default::default()
        };
        f.vaults
            .patch_vault("s", "rg", "kv1", &patch(on), 13)
            .unwrap();
        f.vaults.delete_vault("s", "rg", "kv1", 20).unwrap();
        assert!(matches!(
            f.vaults.purge_deleted_vault("s", "kv1", 21),
            Err(VaultError::VaultPurgeProtected(_))
        ));
        assert_eq!(f.vaults.purge_due(20 + 90 * 86_400).unwrap(), (0, 1));
        assert!(f.vaults.get_deleted_vault("s", "kv1").is_err());
    }

    #[test]
    fn access_policies_are_checked_and_edited() {
        use atrest_core::access_policy::Permissions;
        let f = fixture();
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let entry = |oid: &str, secrets: &[&str]| AccessPolicyEntry {
            tenant_id: tenant.into(),
            object_id: oid.into(),
            application_id: None,
            permissions: Permissions {
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        };
        let oid = "00000000-0000-0000-0000-0000000000aa";
        let create = VaultRequest {
            access_policies: Some(vec![entry(oid, &["GET"])]),
            ..req("eastus")
        };
        let (v, _) = f
            .vaults
            .put_vault("s", "rg", "kv1", tenant, &create, 1)
            .unwrap();
        assert_eq!(v.access_policies[0].permissions.secrets, ["get"]);
        let v = f
            .vaults
            .edit_access_policies(
                "s",
                "rg",
                "kv1",
                PolicyEdit::Add,
                &[entry(oid, &["list"])],
                2,
            )
            .unwrap();
        assert_eq!(v.access_policies[0].permissions.secrets, ["get", "list"]);
        for bad in [entry(oid, &["sign"]), entry("nope", &["get"])] {
            assert!(matches!(
                f.vaults
                    .edit_access_policies("s", "rg", "kv1", PolicyEdit::Add, &[bad], 3),
                Err(VaultError::AccessPolicy(_))
            ));
        }
        let other_tenant = AccessPolicyEntry {
            tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            ..entry(oid, &["get"])
        };
        assert!(f
            .vaults
            .patch_vault(
                "s",
                "rg",
                "kv1",
                &VaultRequest {
                    access_policies: Some(vec![other_tenant]),
                    ..Default::default()
                },
                3
            )
            .is_err());
        assert_eq!(
            f.vaults
                .get_vault("s", "rg", "kv1")
                .unwrap()
                .access_policies,
            v.access_policies,
            "refused changes stored nothing"
        );
        let v = f
            .vaults
            .edit_access_policies("s", "rg", "kv1", PolicyEdit::Remove, &[entry(oid, &[])], 4)
            .unwrap();
        assert!(v.access_policies.is_empty());
    }
}
