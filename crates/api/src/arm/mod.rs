//! The ARM-shaped management API below `/subscriptions/{s}/`: `Microsoft.KeyVault` vaults
//! here, `Microsoft.Authorization` and `Microsoft.Compute` in their modules.

pub(crate) mod authorization;
pub(crate) mod backup;
pub(crate) mod compute;
pub(crate) mod site_recovery;

pub(crate) mod resources;

use std::collections::BTreeMap;

use atrest_core::access_policy::{AccessPolicyEntry, PolicyEdit};
use atrest_core::operation::Operation;
use atrest_core::vault::VaultPatch;
use atrest_core::vault::VaultRecord;
use atrest_identity::Caller;
use atrest_runtime::time::rfc3339;
use atrest_vault::VaultRequest;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{
    created_status, deleted_status, empty, form_pairs, json, param, seg, Body, Resp,
};
use crate::keyvault::vault_resource_id;
use crate::pipeline::Ctx;
use crate::state::AppState;

/// ARM requires a dated `api-version` on every management request.
fn check_arm_api_version(version: Option<&str>) -> Result<(), ApiError> {
    let Some(v) = version else {
        return Err(ApiError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    let well_formed = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported format is 'yyyy-mm-dd' or 'yyyy-mm-dd-preview'."),
        ))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VaultPropertiesDto {
    tenant_id: Option<String>,
    soft_delete_retention_in_days: Option<u32>,
    enable_purge_protection: Option<bool>,
    enabled_for_disk_encryption: Option<bool>,
    enable_rbac_authorization: Option<bool>,
    enable_soft_delete: Option<bool>,
    create_mode: Option<String>,
    access_policies: Option<Vec<AccessPolicyEntry>>,
}

/// The body of `vaults/{name}/accessPolicies/{operationKind}`.
#[derive(Deserialize)]
struct AccessPolicyUpdateDto {
    properties: AccessPoliciesDto,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessPoliciesDto {
    access_policies: Vec<AccessPolicyEntry>,
}

#[derive(Deserialize)]
struct VaultDto {
    location: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<VaultPropertiesDto>,
}

impl VaultDto {
    /// The request as the vault service takes it, refusing what atrest cannot honour.
    fn into_request(self, tenant: &str) -> Result<VaultRequest, ApiError> {
        let p = self.properties.unwrap_or_default();
        if p.tenant_id.as_deref().is_some_and(|t| t != tenant) {
            return Err(ApiError::bad_request(
                "BadRequest",
                format!("The tenant id must be '{tenant}', the tenant of this instance."),
            ));
        }
        let recover = match p.create_mode.as_deref() {
            None | Some("default") => false,
            Some("recover") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "BadRequest",
                    format!("The createMode '{other}' is invalid; use 'default' or 'recover'."),
                ))
            }
        };
        Ok(VaultRequest {
            location: self.location,
            tags: self.tags,
            recover,
            access_policies: p.access_policies,
            patch: VaultPatch {
                soft_delete_retention_days: p.soft_delete_retention_in_days,
                purge_protection: p.enable_purge_protection,
                enabled_for_disk_encryption: p.enabled_for_disk_encryption,
                enable_rbac_authorization: p.enable_rbac_authorization,
                enable_soft_delete: p.enable_soft_delete,
            },
        })
    }
}

fn vault_json(state: &AppState, v: &VaultRecord) -> Value {
    json!({
        "id": vault_resource_id(v),
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "tags": v.tags,
        "systemData": { "createdAt": rfc3339(v.created), "lastModifiedAt": rfc3339(v.updated) },
        "properties": {
            "tenantId": v.tenant,
            "sku": { "family": "A", "name": "standard" },
            "accessPolicies": v.access_policies,
            "vaultUri": format!("{}/", state.vault_base(&v.name)),
            "enabledForDeployment": false,
            "enabledForTemplateDeployment": false,
            "enabledForDiskEncryption": v.disk_encryption,
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": v.retention_days,
            "enableRbacAuthorization": v.rbac,
            "enablePurgeProtection": v.purge_protection,
            "publicNetworkAccess": "Enabled",
            "provisioningState": "Succeeded",
        },
    })
}

fn deleted_vault_json(v: &VaultRecord) -> Value {
    json!({
        "id": format!("/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}", v.subscription, v.location, v.name),
        "name": v.name,
        "type": "Microsoft.KeyVault/deletedVaults",
        "properties": {
            "vaultId": vault_resource_id(v),
            "location": v.location,
            "deletionDate": v.deleted.map(rfc3339),
            "scheduledPurgeDate": v.scheduled_purge.map(rfc3339),
            "tags": v.tags,
            "purgeProtectionEnabled": v.purge_protection,
        },
    })
}

/// What a request does to one vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VaultVerb {
    /// `PUT`: create or replace.
    Put,
    /// `PATCH`: update properties.
    Patch,
    /// `GET`.
    Get,
    /// `DELETE`: soft delete.
    Delete,
}

/// A route of the ARM-shaped management API, below `/subscriptions/{s}/`.
#[derive(Debug)]
pub(crate) enum ArmRoute<'a> {
    /// `{scope}/providers/Microsoft.Authorization/…`.
    Authorization {
        /// The scope the route acts at.
        scope: String,
        /// What it does there.
        route: authorization::Route<'a>,
    },
    /// `Microsoft.Compute` resources.
    Compute(compute::Route<'a>),
    /// `Microsoft.RecoveryServices`: vaults and Azure Backup.
    Backup(backup::Route<'a>),
    /// `Microsoft.RecoveryServices`: Site Recovery.
    SiteRecovery(site_recovery::Route<'a>),
    /// `Microsoft.Resources`: subscriptions, tenants, resource groups, resource listings.
    Resources(resources::Route<'a>),
    /// One vault.
    Vault {
        /// Its resource group.
        resource_group: &'a str,
        /// Its name.
        name: &'a str,
        /// What the request does to it.
        verb: VaultVerb,
    },
    /// `…/vaults/{name}/accessPolicies/{kind}`.
    AccessPolicies {
        /// The vault's resource group.
        resource_group: &'a str,
        /// The vault's name.
        name: &'a str,
        /// `add`, `replace` or `remove`, as the client spelled it.
        kind: &'a str,
    },
    /// The vaults of the subscription or of one resource group.
    VaultList {
        /// The resource group, if the listing is limited to one.
        resource_group: Option<&'a str>,
    },
    /// The soft-deleted vaults of the subscription.
    DeletedVaultList,
    /// One soft-deleted vault.
    DeletedVaultGet(&'a str),
    /// Purge a soft-deleted vault.
    DeletedVaultPurge(&'a str),
}

impl<'a> ArmRoute<'a> {
    /// The route of `method` and the path `segments` after `subscriptions/{s}`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        if let Some(route) = resources::Route::parse(method, segments) {
            return Some(ArmRoute::Resources(route));
        }
        if let Some((scope, rest)) = authorization::split(segments) {
            let route = authorization::Route::parse(method, rest)?;
            return Some(ArmRoute::Authorization { scope, route });
        }
        let below = segments.get(1..).unwrap_or_default();
        if let Some(route) = compute::Route::parse(method, below) {
            return Some(ArmRoute::Compute(route));
        }
        if let Some(route) = backup::Route::parse(method, below) {
            return Some(ArmRoute::Backup(route));
        }
        if let Some(route) = site_recovery::Route::parse(method, below) {
            return Some(ArmRoute::SiteRecovery(route));
        }
        let provider = |p: &str| seg(p, "Microsoft.KeyVault");
        let get = method == Method::GET;
        Some(match below {
            [rg_kw, rg, prov_kw, p, vaults_kw, name]
                if seg(rg_kw, "resourceGroups")
                    && seg(prov_kw, "providers")
                    && provider(p)
                    && seg(vaults_kw, "vaults") =>
            {
                let verb = match method.as_str() {
                    "PUT" => VaultVerb::Put,
                    "PATCH" => VaultVerb::Patch,
                    "GET" => VaultVerb::Get,
                    "DELETE" => VaultVerb::Delete,
                    _ => return None,
                };
                ArmRoute::Vault {
                    resource_group: rg,
                    name,
                    verb,
                }
            }
            [rg_kw, rg, prov_kw, p, vaults_kw, name, policies_kw, kind]
                if seg(rg_kw, "resourceGroups")
                    && seg(prov_kw, "providers")
                    && provider(p)
                    && seg(vaults_kw, "vaults")
                    && seg(policies_kw, "accessPolicies")
                    && method == Method::PUT =>
            {
                ArmRoute::AccessPolicies {
                    resource_group: rg,
                    name,
                    kind,
                }
            }
            [scope @ .., prov_kw, p, vaults_kw]
                if seg(prov_kw, "providers")
                    && provider(p)
                    && seg(vaults_kw, "vaults")
                    && get
                    && matches!(scope, [] | [_, _])
                    && scope.first().is_none_or(|kw| seg(kw, "resourceGroups")) =>
            {
                ArmRoute::VaultList {
                    resource_group: scope.get(1).copied(),
                }
            }
            [prov_kw, p, deleted_kw]
                if seg(prov_kw, "providers")
                    && provider(p)
                    && seg(deleted_kw, "deletedVaults")
                    && get =>
            {
                ArmRoute::DeletedVaultList
            }
            [prov_kw, p, loc_kw, _location, deleted_kw, name, rest @ ..]
                if seg(prov_kw, "providers")
                    && provider(p)
                    && seg(loc_kw, "locations")
                    && seg(deleted_kw, "deletedVaults") =>
            {
                match (method.as_str(), rest) {
                    ("GET", []) => ArmRoute::DeletedVaultGet(name),
                    ("POST", [purge]) if seg(purge, "purge") => ArmRoute::DeletedVaultPurge(name),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            ArmRoute::Authorization { route, .. } => route.operation(),
            ArmRoute::Compute(route) => route.operation(),
            ArmRoute::Backup(route) => route.operation(),
            ArmRoute::SiteRecovery(route) => route.operation(),
            ArmRoute::Resources(route) => route.operation(),
            ArmRoute::Vault { verb, .. } => match verb {
                VaultVerb::Put => Operation::VaultPut,
                VaultVerb::Patch => Operation::VaultPatch,
                VaultVerb::Get => Operation::VaultGet,
                VaultVerb::Delete => Operation::VaultDelete,
            },
            ArmRoute::AccessPolicies { .. } => Operation::VaultAccessPolicyUpdate,
            ArmRoute::VaultList { .. } => Operation::VaultList,
            ArmRoute::DeletedVaultList => Operation::DeletedVaultList,
            ArmRoute::DeletedVaultGet(_) => Operation::DeletedVaultGet,
            ArmRoute::DeletedVaultPurge(_) => Operation::DeletedVaultPurge,
        }
    }
}

/// Serves one management request of an authenticated caller: `subscription` is the
/// path's, `segments` the whole path after `subscriptions`.
pub(crate) async fn management(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    subscription: &str,
    route: Option<ArmRoute<'_>>,
    parts: &Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    check_arm_api_version(param(&query, "api-version"))?;
    let method = &parts.method;
    let tenant_level = matches!(&route, Some(ArmRoute::Resources(r)) if r.is_tenant_level());
    if !tenant_level && !subscription.eq_ignore_ascii_case(&state.settings.subscription) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ));
    }
    let Some(route) = route else {
        return Err(ApiError::no_route(method, parts.uri.path()));
    };
    let sub = state.settings.subscription.as_str();
    let tenant = state.identity.tenant();
    let vs = &state.vaults;
    let now = ctx.now;
    let subscription = format!("/subscriptions/{sub}");
    let vault_scope = |rg: &str, name: &str| {
        format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
        )
    };
    match route {
        ArmRoute::Authorization { scope, route } => {
            authorization::handle(state, ctx, caller, &scope, route, &query, body).await
        }
        ArmRoute::Compute(route) => {
            compute::handle(state, ctx, caller, method, route, &query, body).await
        }
        ArmRoute::Backup(route) => backup::handle(state, ctx, caller, route, body).await,
        ArmRoute::SiteRecovery(route) => {
            site_recovery::handle(state, ctx, caller, route, body).await
        }
        ArmRoute::Resources(route) => {
            resources::handle(state, ctx, caller, route, &query, body).await
        }
        ArmRoute::Vault {
            resource_group: rg,
            name,
            verb,
        } => {
            let scope = vault_scope(rg, name);
            ctx.resource = Some(scope.clone());
            let action = match verb {
                VaultVerb::Put | VaultVerb::Patch => "Microsoft.KeyVault/vaults/write",
                VaultVerb::Delete => "Microsoft.KeyVault/vaults/delete",
                VaultVerb::Get => "Microsoft.KeyVault/vaults/read",
            };
            authorization::require(state, caller, &scope, action)?;
            match verb {
                VaultVerb::Put => {
                    // As in ARM, a resource is created only in a group that exists.
                    state.resource_groups.get(rg)?;
                    let request =
                        parse_json::<VaultDto>(&read_body(body).await?)?.into_request(tenant)?;
                    let (v, created) = vs.put_vault(sub, rg, name, tenant, &request, now)?;
                    Ok(json(created_status(created), &vault_json(state, &v)))
                }
                VaultVerb::Patch => {
                    let request =
                        parse_json::<VaultDto>(&read_body(body).await?)?.into_request(tenant)?;
                    let v = vs.patch_vault(sub, rg, name, &request, now)?;
                    Ok(json(StatusCode::OK, &vault_json(state, &v)))
                }
                VaultVerb::Get => Ok(json(
                    StatusCode::OK,
                    &vault_json(state, &vs.get_vault(sub, rg, name)?),
                )),
                VaultVerb::Delete => {
                    let deleted = vs.delete_vault(sub, rg, name, now)?;
                    Ok(empty(deleted_status(deleted)))
                }
            }
        }
        ArmRoute::AccessPolicies {
            resource_group: rg,
            name,
            kind,
        } => {
            let scope = vault_scope(rg, name);
            ctx.resource = Some(scope.clone());
            authorization::require(
                state,
                caller,
                &scope,
                "Microsoft.KeyVault/vaults/accessPolicies/write",
            )?;
            let edit = PolicyEdit::parse(kind).ok_or_else(|| {
                ApiError::bad_request(
                    "BadRequest",
                    format!(
                        "The operation kind '{kind}' is invalid; use 'add', 'replace' or 'remove'."
                    ),
                )
            })?;
            let dto: AccessPolicyUpdateDto = parse_json(&read_body(body).await?)?;
            let v =
                vs.edit_access_policies(sub, rg, name, edit, &dto.properties.access_policies, now)?;
            Ok(json(
                StatusCode::OK,
                &json!({
                    "id": format!("{scope}/accessPolicies/{}", kind.to_ascii_lowercase()),
                    "type": "Microsoft.KeyVault/vaults/accessPolicies",
                    "properties": { "accessPolicies": v.access_policies },
                }),
            ))
        }
        ArmRoute::VaultList { resource_group } => {
            // As ARM lists: the vaults the caller may read, wherever its role applies.
            let object_ids = state.identity.object_ids_of(&caller.object_id)?;
            let mut items = Vec::new();
            for v in vs.list_vaults(sub, resource_group)? {
                let id = vault_resource_id(&v);
                if state.identity.allows_action(
                    &object_ids,
                    &id,
                    "Microsoft.KeyVault/vaults/read",
                )? {
                    items.push(vault_json(state, &v));
                }
            }
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        ArmRoute::DeletedVaultList => {
            authorization::require(
                state,
                caller,
                &subscription,
                "Microsoft.KeyVault/deletedVaults/read",
            )?;
            let items: Vec<Value> = vs
                .list_deleted_vaults(sub)?
                .iter()
                .map(deleted_vault_json)
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        ArmRoute::DeletedVaultGet(name) => {
            ctx.resource = Some(name.to_string());
            authorization::require(
                state,
                caller,
                &subscription,
                "Microsoft.KeyVault/locations/deletedVaults/read",
            )?;
            Ok(json(
                StatusCode::OK,
                &deleted_vault_json(&vs.get_deleted_vault(sub, name)?),
            ))
        }
        ArmRoute::DeletedVaultPurge(name) => {
            ctx.resource = Some(name.to_string());
            authorization::require(
                state,
                caller,
                &subscription,
                "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            )?;
            vs.purge_deleted_vault(sub, name, now)?;
            Ok(empty(StatusCode::OK))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_api_versions() {
        assert!(check_arm_api_version(Some("2023-07-01")).is_ok());
        assert!(check_arm_api_version(Some("2024-12-01-preview")).is_ok());
        assert_eq!(
            check_arm_api_version(None).unwrap_err().code,
            "MissingApiVersionParameter"
        );
        for bad in ["7.4", "2023-7-01", "2023-07-01-beta", "", "abcd-ef-gh"] {
            assert_eq!(
                check_arm_api_version(Some(bad)).unwrap_err().code,
                "InvalidApiVersionParameter",
                "{bad}"
            );
        }
    }
}
