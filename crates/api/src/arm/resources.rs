//! `Microsoft.Resources` as `az` and the management clients use it: the subscription and
//! tenant listings `az login` reads, resource groups, the generic resource listing with
//! its `$filter` (`az keyvault show` without `-g`), and the empty managed-HSM listings
//! `az keyvault list-deleted` reads beside vaults.

use std::collections::BTreeMap;

use atrest_core::operation::Operation;
use atrest_identity::Caller;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::arm::authorization;
use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{created_status, empty, json, param, seg, Body, Resp};
use crate::keyvault::vault_resource_id;
use crate::odata::{eq_filter, filter_value};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// What a request does to one resource group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupVerb {
    /// `PUT`: create, or replace the tags.
    Put,
    /// `PATCH`: update the tags.
    Patch,
    /// `GET`.
    Get,
    /// `HEAD`: whether it exists.
    Head,
    /// `DELETE`, with everything it holds.
    Delete,
}

/// A route of `Microsoft.Resources`.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// `GET /subscriptions`.
    SubscriptionList,
    /// `GET /subscriptions/{s}`.
    SubscriptionGet,
    /// `GET /tenants`.
    TenantList,
    /// `GET /subscriptions/{s}/resourcegroups`.
    GroupList,
    /// One resource group.
    Group {
        /// Its name.
        name: &'a str,
        /// What the request does to it.
        verb: GroupVerb,
    },
    /// `GET /subscriptions/{s}[/resourceGroups/{rg}]/resources`.
    ResourceList(Option<&'a str>),
    /// `GET …/providers/Microsoft.KeyVault/deletedManagedHSMs` (and `managedHSMs`).
    ManagedHsmList,
}

impl<'a> Route<'a> {
    /// The route of `method` and the path `segments` after `subscriptions`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        let get = method == Method::GET;
        Some(match segments {
            [] if get => Route::SubscriptionList,
            [_] if get => Route::SubscriptionGet,
            [_, groups] if get && seg(groups, "resourcegroups") => Route::GroupList,
            [_, groups, name] if seg(groups, "resourcegroups") => {
                let verb = match method.as_str() {
                    "PUT" => GroupVerb::Put,
                    "PATCH" => GroupVerb::Patch,
                    "GET" => GroupVerb::Get,
                    "HEAD" => GroupVerb::Head,
                    "DELETE" => GroupVerb::Delete,
                    _ => return None,
                };
                Route::Group { name, verb }
            }
            [_, resources] if get && seg(resources, "resources") => Route::ResourceList(None),
            [_, groups, name, resources]
                if get && seg(groups, "resourcegroups") && seg(resources, "resources") =>
            {
                Route::ResourceList(Some(name))
            }
            [_, providers, provider, hsms]
                if get
                    && seg(providers, "providers")
                    && seg(provider, "Microsoft.KeyVault")
                    && (seg(hsms, "deletedManagedHSMs") || seg(hsms, "managedHSMs")) =>
            {
                Route::ManagedHsmList
            }
            _ => return None,
        })
    }

    /// `GET /tenants`, routed from outside `/subscriptions`.
    pub(crate) fn tenants() -> Self {
        Route::TenantList
    }

    /// Whether the route names no subscription (so none is checked).
    pub(crate) fn is_tenant_level(&self) -> bool {
        matches!(self, Route::SubscriptionList | Route::TenantList)
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::SubscriptionList => Operation::SubscriptionList,
            Route::SubscriptionGet => Operation::SubscriptionGet,
            Route::TenantList => Operation::TenantList,
            Route::GroupList => Operation::ResourceGroupList,
            Route::Group { verb, .. } => match verb {
                GroupVerb::Put | GroupVerb::Patch => Operation::ResourceGroupWrite,
                GroupVerb::Delete => Operation::ResourceGroupDelete,
                GroupVerb::Get | GroupVerb::Head => Operation::ResourceGroupRead,
            },
            Route::ResourceList(_) => Operation::ResourceList,
            Route::ManagedHsmList => Operation::DeletedManagedHsmList,
        }
    }
}

#[derive(Deserialize)]
struct GroupDto {
    location: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn subscription_json(state: &AppState) -> Value {
    let sub = &state.settings.subscription;
    json!({
        "id": format!("/subscriptions/{sub}"),
        "subscriptionId": sub,
        "tenantId": state.identity.tenant(),
        "displayName": "atrest",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
    })
}

fn group_json(state: &AppState, group: &atrest_resources::ResourceGroup) -> Value {
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}", state.settings.subscription, group.name),
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "tags": group.tags,
        "properties": { "provisioningState": "Succeeded" },
    })
}

/// A resource as `GET …/resources` lists it.
fn resource_json(id: &str, name: &str, kind: &str, location: &str) -> Value {
    json!({ "id": id, "name": name, "type": kind, "location": location })
}

/// Deletes what resource group `group` holds, as ARM does before deleting the group:
/// virtual machines (their disks closed and detached), then images, snapshots and disks, then disk encryption
/// sets (with their identities), then vaults (soft-deleted, so they stay recoverable).
async fn delete_contents(state: &AppState, group: &str, now: i64) -> Result<(), ApiError> {
    let compute = &state.compute;
    for vm in compute.list_vms(Some(group))? {
        compute.delete_vm(group, &vm.name).await?;
    }
    for image in compute.list_images(Some(group))? {
        compute.delete_image(group, &image.name).await?;
    }
    for snapshot in compute.list_snapshots(Some(group))? {
        compute.delete_snapshot(group, &snapshot.name).await?;
    }
    for disk in compute.list_disks(Some(group))? {
        compute.delete_disk(group, &disk.name).await?;
    }
    for des in compute.list_des(Some(group))? {
        compute
            .delete_des(&state.identity, group, &des.name)
            .await?;
    }
    let sub = state.settings.subscription.as_str();
    for vault in state.vaults.list_vaults(sub, Some(group))? {
        state.vaults.delete_vault(sub, group, &vault.name, now)?;
    }
    Ok(())
}

/// Serves one `Microsoft.Resources` request of an authenticated caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    route: Route<'_>,
    query: &[(String, String)],
    body: Body,
) -> Result<Resp, ApiError> {
    let sub = state.settings.subscription.as_str();
    let sub_scope = format!("/subscriptions/{sub}");
    let rgs = &state.resource_groups;
    match route {
        Route::SubscriptionList => {
            let object_ids = state.identity.object_ids_of(&caller.object_id)?;
            let visible = state.identity.allows_action(
                &object_ids,
                &sub_scope,
                "Microsoft.Resources/subscriptions/read",
            )?;
            let value: Vec<Value> = visible
                .then(|| subscription_json(state))
                .into_iter()
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": value })))
        }
        Route::SubscriptionGet => {
            authorization::require(
                state,
                caller,
                &sub_scope,
                "Microsoft.Resources/subscriptions/read",
            )?;
            Ok(json(StatusCode::OK, &subscription_json(state)))
        }
        Route::TenantList => {
            let tenant = state.identity.tenant();
            Ok(json(
                StatusCode::OK,
                &json!({ "value": [{
                    "id": format!("/tenants/{tenant}"),
                    "tenantId": tenant,
                    "tenantCategory": "Home",
                    "displayName": "atrest",
                    "defaultDomain": "atrest.localhost",
                    "domains": ["atrest.localhost"],
                }] }),
            ))
        }
        Route::GroupList => {
            let object_ids = state.identity.object_ids_of(&caller.object_id)?;
            let mut value = Vec::new();
            for group in rgs.list()? {
                let scope = format!("{sub_scope}/resourceGroups/{}", group.name);
                if state.identity.allows_action(
                    &object_ids,
                    &scope,
                    "Microsoft.Resources/subscriptions/resourceGroups/read",
                )? {
                    value.push(group_json(state, &group));
                }
            }
            Ok(json(StatusCode::OK, &json!({ "value": value })))
        }
        Route::Group { name, verb } => {
            let scope = format!("{sub_scope}/resourceGroups/{name}");
            ctx.resource = Some(scope.clone());
            let action = match verb {
                GroupVerb::Put | GroupVerb::Patch => "write",
                GroupVerb::Delete => "delete",
                GroupVerb::Get | GroupVerb::Head => "read",
            };
            authorization::require(
                state,
                caller,
                &scope,
                &format!("Microsoft.Resources/subscriptions/resourceGroups/{action}"),
            )?;
            match verb {
                GroupVerb::Put | GroupVerb::Patch => {
                    let dto: GroupDto = parse_json(&read_body(body).await?)?;
                    // A PATCH updates a group that exists, in its location unless named.
                    let existing = match verb {
                        GroupVerb::Patch => Some(rgs.get(name)?),
                        _ => None,
                    };
                    let location = match (dto.location, existing) {
                        (Some(l), _) => l,
                        (None, Some(group)) => group.location,
                        (None, None) => {
                            return Err(ApiError::bad_request(
                                "LocationRequired",
                                "The location property is required for this definition.",
                            ))
                        }
                    };
                    let (group, created) = rgs.put(name, &location, dto.tags, ctx.now)?;
                    Ok(json(created_status(created), &group_json(state, &group)))
                }
                GroupVerb::Head => Ok(empty(match rgs.get(name) {
                    Ok(_) => StatusCode::NO_CONTENT,
                    Err(atrest_resources::ResourceGroupError::NotFound(_)) => StatusCode::NOT_FOUND,
                    Err(e) => return Err(e.into()),
                })),
                GroupVerb::Delete => {
                    rgs.get(name)?;
                    delete_contents(state, name, ctx.now).await?;
                    rgs.delete(name)?;
                    Ok(empty(StatusCode::OK))
                }
                GroupVerb::Get => Ok(json(StatusCode::OK, &group_json(state, &rgs.get(name)?))),
            }
        }
        Route::ResourceList(group) => {
            if let Some(name) = group {
                rgs.get(name)?;
            }
            let filter = eq_filter(param(query, "$filter"), &["resourceType", "name"])?;
            let (kind, name) = (
                filter_value(&filter, "resourceType"),
                filter_value(&filter, "name"),
            );
            let mut all = Vec::new();
            for v in state.vaults.list_vaults(sub, group)? {
                all.push((
                    vault_resource_id(&v),
                    v.name.clone(),
                    "Microsoft.KeyVault/vaults",
                    v.location.clone(),
                ));
            }
            for d in state.compute.list_des(group)? {
                all.push((
                    d.id,
                    d.name,
                    "Microsoft.Compute/diskEncryptionSets",
                    d.location,
                ));
            }
            for d in state.compute.list_disks(group)? {
                all.push((d.id, d.name, "Microsoft.Compute/disks", d.location));
            }
            for s in state.compute.list_snapshots(group)? {
                all.push((s.id, s.name, "Microsoft.Compute/snapshots", s.location));
            }
            for i in state.compute.list_images(group)? {
                all.push((i.id, i.name, "Microsoft.Compute/images", i.location));
            }
            for m in state.compute.list_vms(group)? {
                all.push((
                    m.id,
                    m.name,
                    "Microsoft.Compute/virtualMachines",
                    m.location,
                ));
            }
            let object_ids = state.identity.object_ids_of(&caller.object_id)?;
            let mut value = Vec::new();
            for (id, res_name, res_kind, location) in all {
                let wanted = kind.is_none_or(|k| k.eq_ignore_ascii_case(res_kind))
                    && name.is_none_or(|n| n.eq_ignore_ascii_case(&res_name));
                if wanted
                    && state.identity.allows_action(
                        &object_ids,
                        &id,
                        &format!("{res_kind}/read"),
                    )?
                {
                    value.push(resource_json(&id, &res_name, res_kind, &location));
                }
            }
            Ok(json(StatusCode::OK, &json!({ "value": value })))
        }
        Route::ManagedHsmList => Ok(json(StatusCode::OK, &json!({ "value": [] }))),
    }
}
