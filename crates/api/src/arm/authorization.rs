//! `{scope}/providers/Microsoft.Authorization/…`: role definitions and role assignments,
//! in ARM's shapes.

use atrest_core::operation::Operation;
use atrest_core::principal::PrincipalKind;
use atrest_core::rbac::{CustomRole, Role};
use atrest_identity::{Caller, RoleAssignment};
use atrest_runtime::time::rfc3339;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{created_status, empty, json, param, Body, Resp};
use crate::odata::{eq_filter, filter_value};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// Splits `…/providers/Microsoft.Authorization/REST` (segments after `subscriptions`)
/// into the scope and REST, if the path is an authorization route.
pub(crate) fn split<'s, 'a>(segments: &'s [&'a str]) -> Option<(String, &'s [&'a str])> {
    let at = segments.windows(2).position(|w| {
        w[0].eq_ignore_ascii_case("providers")
            && w[1].eq_ignore_ascii_case("Microsoft.Authorization")
    })?;
    Some((
        format!("/subscriptions/{}", segments[..at].join("/")),
        &segments[at + 2..],
    ))
}

fn definition_id(sub: &str, role: &Role) -> String {
    format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        role.id()
    )
}

fn definition_json(sub: &str, role: &Role) -> Value {
    let (kind, description, scopes, permissions) = match role {
        Role::BuiltIn(r) => (
            "BuiltInRole",
            r.description.to_owned(),
            vec!["/".to_owned()],
            json!({
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions,
            }),
        ),
        Role::Custom(r) => (
            "CustomRole",
            r.description.clone(),
            r.assignable_scopes.clone(),
            json!({
                "actions": r.actions,
                "notActions": r.not_actions,
                "dataActions": r.data_actions,
                "notDataActions": r.not_data_actions,
            }),
        ),
    };
    json!({
        "id": definition_id(sub, role),
        "name": role.id(),
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.name(),
            "type": kind,
            "description": description,
            "assignableScopes": scopes,
            "permissions": [permissions],
        },
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PermissionDto {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    not_actions: Vec<String>,
    #[serde(default)]
    data_actions: Vec<String>,
    #[serde(default)]
    not_data_actions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DefinitionPropertiesDto {
    role_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<PermissionDto>,
    #[serde(default)]
    assignable_scopes: Vec<String>,
}

#[derive(Deserialize)]
struct DefinitionDto {
    properties: DefinitionPropertiesDto,
}

fn definition_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RoleDefinitionDoesNotExist",
        format!("The specified role definition with ID '{id}' does not exist."),
    )
}

/// ARM calls applications and managed identities alike `ServicePrincipal`.
fn assignment_json(state: &AppState, a: &RoleAssignment) -> Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.row.scope, a.row.id),
        "name": a.row.id,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": definition_id(&state.settings.subscription, &a.role),
            "roleDefinitionName": a.role.name(),
            "principalId": a.row.principal_id,
            "principalType": match a.principal_kind {
                PrincipalKind::User => "User",
                PrincipalKind::Group => "Group",
                PrincipalKind::ServicePrincipal | PrincipalKind::ManagedIdentity => "ServicePrincipal",
            },
            "scope": a.row.scope,
            "createdOn": rfc3339(a.row.created),
            "updatedOn": rfc3339(a.row.created),
        },
    })
}

/// Checks a scope's shape: the subscription, a resource group, a vault or compute
/// resource, or one key or secret in a vault.
fn check_scope(scope: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = scope.trim_start_matches('/').split('/').collect();
    let kw = |i: usize, word: &str| parts[i].eq_ignore_ascii_case(word);
    let named = parts.iter().all(|p| !p.is_empty());
    let shape_ok = named
        && match parts.len() {
            2 => true,
            4 => kw(2, "resourceGroups"),
            8 => {
                kw(2, "resourceGroups")
                    && kw(4, "providers")
                    && ((kw(5, "Microsoft.KeyVault") && kw(6, "vaults"))
                        || (kw(5, "Microsoft.Compute")
                            && ["disks", "diskEncryptionSets", "virtualMachines"]
                                .iter()
                                .any(|k| kw(6, k))))
            }
            10 => {
                kw(2, "resourceGroups")
                    && kw(4, "providers")
                    && kw(5, "Microsoft.KeyVault")
                    && kw(6, "vaults")
                    && (kw(8, "secrets") || kw(8, "keys") || kw(8, "certificates"))
            }
            _ => false,
        };
    if shape_ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidScope",
            format!(
                "The scope '{scope}' is not a subscription, resource group, vault, compute resource, key, secret or certificate."
            ),
        ))
    }
}

/// Refuses callers without control-plane `action` at `scope` (403 `AuthorizationFailed`).
pub(crate) fn require(
    state: &AppState,
    caller: &Caller,
    scope: &str,
    action: &str,
) -> Result<(), ApiError> {
    let object_ids = state.identity.object_ids_of(&caller.object_id)?;
    if state.identity.allows_action(&object_ids, scope, action)? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid.",
            caller.app_id, caller.object_id
        ),
    ))
}

#[derive(Deserialize)]
struct AssignmentDto {
    properties: AssignmentProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentProperties {
    role_definition_id: String,
    principal_id: String,
}

/// A route below `{scope}/providers/Microsoft.Authorization/`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// The built-in role definitions.
    DefinitionList,
    /// One role definition, by id.
    DefinitionGet(&'a str),
    /// Create or replace a custom role definition.
    DefinitionPut(&'a str),
    /// Delete a custom role definition.
    DefinitionDelete(&'a str),
    /// The assignments at the scope.
    AssignmentList,
    /// One assignment, by id.
    AssignmentGet(&'a str),
    /// Create an assignment with this id.
    AssignmentPut(&'a str),
    /// Delete an assignment.
    AssignmentDelete(&'a str),
}

impl<'a> Route<'a> {
    /// The route of `method` and the segments after `Microsoft.Authorization`, if one.
    pub(crate) fn parse(method: &Method, rest: &[&'a str]) -> Option<Self> {
        let seg = |s: &str, w: &str| s.eq_ignore_ascii_case(w);
        Some(match (method.as_str(), rest) {
            ("GET", [defs]) if seg(defs, "roleDefinitions") => Route::DefinitionList,
            ("GET", [defs, id]) if seg(defs, "roleDefinitions") => Route::DefinitionGet(id),
            ("PUT", [defs, id]) if seg(defs, "roleDefinitions") => Route::DefinitionPut(id),
            ("DELETE", [defs, id]) if seg(defs, "roleDefinitions") => Route::DefinitionDelete(id),
            ("GET", [a]) if seg(a, "roleAssignments") => Route::AssignmentList,
            ("GET", [a, id]) if seg(a, "roleAssignments") => Route::AssignmentGet(id),
            ("PUT", [a, id]) if seg(a, "roleAssignments") => Route::AssignmentPut(id),
            ("DELETE", [a, id]) if seg(a, "roleAssignments") => Route::AssignmentDelete(id),
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::DefinitionList => Operation::RoleDefinitionList,
            Route::DefinitionGet(_) => Operation::RoleDefinitionGet,
            Route::DefinitionPut(_) => Operation::RoleDefinitionWrite,
            Route::DefinitionDelete(_) => Operation::RoleDefinitionDelete,
            Route::AssignmentList => Operation::RoleAssignmentList,
            Route::AssignmentGet(_) => Operation::RoleAssignmentGet,
            Route::AssignmentPut(_) => Operation::RoleAssignmentWrite,
            Route::AssignmentDelete(_) => Operation::RoleAssignmentDelete,
        }
    }
}

/// Serves one authorization route of an authenticated caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    scope: &str,
    route: Route<'_>,
    query: &[(String, String)],
    body: Body,
) -> Result<Resp, ApiError> {
    let sub = state.settings.subscription.as_str();
    check_scope(scope)?;
    ctx.resource = Some(scope.to_owned());
    match route {
        Route::DefinitionList => {
            // `az role assignment create --role NAME` looks the role up by name.
            let filter = eq_filter(param(query, "$filter"), &["roleName", "type"])?;
            let kind = |r: &Role| match r {
                Role::BuiltIn(_) => "BuiltInRole",
                Role::Custom(_) => "CustomRole",
            };
            let items: Vec<Value> = state
                .identity
                .role_definitions()?
                .iter()
                .filter(|r| {
                    filter_value(&filter, "roleName")
                        .is_none_or(|n| n.eq_ignore_ascii_case(r.name()))
                        && filter_value(&filter, "type")
                            .is_none_or(|t| t.eq_ignore_ascii_case(kind(r)))
                })
                .map(|r| definition_json(sub, r))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::DefinitionGet(id) => {
            let role = state
                .identity
                .role_definition(id)?
                .ok_or_else(|| definition_not_found(id))?;
            Ok(json(StatusCode::OK, &definition_json(sub, &role)))
        }
        Route::DefinitionPut(id) => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleDefinitions/write",
            )?;
            let dto: DefinitionDto = parse_json(&read_body(body).await?)?;
            let p = dto.properties;
            let mut permissions = PermissionDto::default();
            for grant in p.permissions {
                permissions.actions.extend(grant.actions);
                permissions.not_actions.extend(grant.not_actions);
                permissions.data_actions.extend(grant.data_actions);
                permissions.not_data_actions.extend(grant.not_data_actions);
            }
            let (role, created) = state.identity.put_role_definition(CustomRole {
                id: id.to_ascii_lowercase(),
                name: p.role_name,
                description: p.description,
                actions: permissions.actions,
                not_actions: permissions.not_actions,
                data_actions: permissions.data_actions,
                not_data_actions: permissions.not_data_actions,
                assignable_scopes: p.assignable_scopes,
            })?;
            Ok(json(created_status(created), &definition_json(sub, &role)))
        }
        Route::DefinitionDelete(id) => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleDefinitions/delete",
            )?;
            match state.identity.delete_role_definition(id)? {
                Some(role) => Ok(json(StatusCode::OK, &definition_json(sub, &role))),
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
        Route::AssignmentList => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleAssignments/read",
            )?;
            let items: Vec<Value> = state
                .identity
                .list_role_assignments(Some(scope))?
                .iter()
                .map(|a| assignment_json(state, a))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::AssignmentGet(id) => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleAssignments/read",
            )?;
            let a = state
                .identity
                .role_assignment(id)?
                .filter(|a| a.row.scope.eq_ignore_ascii_case(scope))
                .ok_or_else(|| not_found(id))?;
            Ok(json(StatusCode::OK, &assignment_json(state, &a)))
        }
        Route::AssignmentPut(id) => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleAssignments/write",
            )?;
            let dto: AssignmentDto = parse_json(&read_body(body).await?)?;
            if !atrest_core::names::is_guid(id) {
                return Err(ApiError::bad_request(
                    "InvalidRoleAssignmentId",
                    format!("The role assignment ID '{id}' is not valid. The role assignment ID must be a GUID."),
                ));
            }
            let p = dto.properties;
            let a = state.identity.create_role_assignment(
                Some(id),
                scope,
                &p.role_definition_id,
                &p.principal_id,
                ctx.now,
            )?;
            ctx.target_id = Some(a.row.id.clone());
            Ok(json(StatusCode::CREATED, &assignment_json(state, &a)))
        }
        Route::AssignmentDelete(id) => {
            require(
                state,
                caller,
                scope,
                "Microsoft.Authorization/roleAssignments/delete",
            )?;
            ctx.target_id = Some(id.to_string());
            let found = state
                .identity
                .role_assignment(id)?
                .filter(|a| a.row.scope.eq_ignore_ascii_case(scope));
            match found {
                Some(a) => {
                    state.identity.delete_role_assignment(&a.row.id)?;
                    Ok(json(StatusCode::OK, &assignment_json(state, &a)))
                }
                None => Ok(empty(StatusCode::NO_CONTENT)),
            }
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RoleAssignmentNotFound",
        format!("The role assignment '{id}' is not found."),
    )
}
