//! `{scope}/providers/Microsoft.Authorization/…`: role definitions and role assignments,
//! in ARM's shapes.

use atrest_core::rbac::{find_role, RoleDefinition, BUILT_IN_ROLES};
use atrest_identity::{RoleAssignment, RoleError};
use atrest_store::PrincipalKind;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{empty, json, parse_json, read_body, rfc3339, Body, Resp};
use crate::server::{AppState, Ctx};

/// Splits `…/providers/Microsoft.Authorization/REST` (segments after `subscriptions`)
/// into the scope and REST, if the path is an authorization route.
pub fn split<'a>(segments: &'a [&'a str]) -> Option<(String, &'a [&'a str])> {
    let at = segments.windows(2).position(|w| {
        w[0].eq_ignore_ascii_case("providers")
            && w[1].eq_ignore_ascii_case("Microsoft.Authorization")
    })?;
    Some((
        format!("/subscriptions/{}", segments[..at].join("/")),
        &segments[at + 2..],
    ))
}

fn definition_id(sub: &str, role: &RoleDefinition) -> String {
    format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        role.id
    )
}

fn definition_json(sub: &str, role: &RoleDefinition) -> Value {
    json!({
        "id": definition_id(sub, role),
        "name": role.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.name,
            "type": "BuiltInRole",
            "description": role.description,
            "assignableScopes": ["/"],
            "permissions": [{
                "actions": role.actions,
                "notActions": role.not_actions,
                "dataActions": role.data_actions,
                "notDataActions": role.not_data_actions,
            }],
        },
    })
}

/// ARM calls applications and managed identities alike `ServicePrincipal`.
fn assignment_json(state: &AppState, a: &RoleAssignment) -> Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.row.scope, a.row.id),
        "name": a.row.id,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": definition_id(&state.settings.subscription, a.role),
            "roleDefinitionName": a.role.name,
            "principalId": a.row.principal_id,
            "principalType": match a.principal_kind {
                PrincipalKind::User => "User",
                PrincipalKind::Group => "Group",
                _ => "ServicePrincipal",
            },
            "scope": a.row.scope,
            "createdOn": rfc3339(a.row.created),
            "updatedOn": rfc3339(a.row.created),
        },
    })
}

/// Checks a scope's shape: the subscription, a resource group, a vault, or one key or
/// secret in it.
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
                    && kw(5, "Microsoft.KeyVault")
                    && kw(6, "vaults")
            }
            10 => {
                kw(2, "resourceGroups")
                    && kw(4, "providers")
                    && kw(5, "Microsoft.KeyVault")
                    && kw(6, "vaults")
                    && (kw(8, "secrets") || kw(8, "keys"))
            }
            _ => false,
        };
    if shape_ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidScope",
            format!(
                "The scope '{scope}' is not a subscription, resource group, vault, key or secret."
            ),
        ))
    }
}

/// Refuses callers without control-plane `action` at `scope` (403 `AuthorizationFailed`).
pub(crate) fn require(
    state: &AppState,
    ctx: &Ctx,
    scope: &str,
    action: &str,
) -> Result<(), ApiError> {
    let caller = ctx
        .caller
        .as_ref()
        .expect("authenticated before authorization");
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

/// Serves one authorization route.
pub async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    method: &Method,
    scope: &str,
    rest: &[&str],
    body: Body,
) -> Result<Resp, ApiError> {
    let sub = state.settings.subscription.as_str();
    check_scope(scope)?;
    ctx.resource = Some(scope.to_owned());
    let seg = |s: &str, w: &str| s.eq_ignore_ascii_case(w);
    match (method.as_str(), rest) {
        ("GET", [defs]) if seg(defs, "roleDefinitions") => {
            ctx.operation = "RoleDefinitionList";
            let items: Vec<Value> = BUILT_IN_ROLES
                .iter()
                .map(|r| definition_json(sub, r))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        ("GET", [defs, id]) if seg(defs, "roleDefinitions") => {
            ctx.operation = "RoleDefinitionGet";
            let role = find_role(id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "RoleDefinitionDoesNotExist",
                    format!("The specified role definition with ID '{id}' does not exist."),
                )
            })?;
            Ok(json(StatusCode::OK, &definition_json(sub, role)))
        }
        ("GET", [assignments]) if seg(assignments, "roleAssignments") => {
            ctx.operation = "RoleAssignmentList";
            require(
                state,
                ctx,
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
        ("GET", [assignments, id]) if seg(assignments, "roleAssignments") => {
            ctx.operation = "RoleAssignmentGet";
            require(
                state,
                ctx,
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
        ("PUT", [assignments, id]) if seg(assignments, "roleAssignments") => {
            ctx.operation = "RoleAssignmentWrite";
            require(
                state,
                ctx,
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
            let a = state
                .identity
                .create_role_assignment(
                    Some(id),
                    scope,
                    &p.role_definition_id,
                    &p.principal_id,
                    ctx.now,
                )
                .map_err(|e| match e {
                    RoleError::UnknownRole(_) => {
                        ApiError::bad_request("RoleDefinitionDoesNotExist", e.to_string())
                    }
                    RoleError::UnknownPrincipal(_) => {
                        ApiError::bad_request("PrincipalNotFound", e.to_string())
                    }
                    RoleError::Exists => {
                        ApiError::new(StatusCode::CONFLICT, "RoleAssignmentExists", e.to_string())
                    }
                    RoleError::Store(e) => e.into(),
                    _ => ApiError::internal(&e),
                })?;
            ctx.target_id = Some(a.row.id.clone());
            Ok(json(StatusCode::CREATED, &assignment_json(state, &a)))
        }
        ("DELETE", [assignments, id]) if seg(assignments, "roleAssignments") => {
            ctx.operation = "RoleAssignmentDelete";
            require(
                state,
                ctx,
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
        _ => Err(ApiError::no_route(
            method,
            &format!(
                "{scope}/providers/Microsoft.Authorization/{}",
                rest.join("/")
            ),
        )),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RoleAssignmentNotFound",
        format!("The role assignment '{id}' is not found."),
    )
}
