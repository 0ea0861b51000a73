//! atrest's own administration under `/atrest/…` (administrators only): service
//! principals, managed identities, users and groups, the audit log (list, verify, export),
//! log queries, alerts and the scheduler's clock.

pub(crate) mod alerts;

use std::sync::Arc;

use atrest_core::audit::{AuditEvent, AuditFilter, Verification};
use atrest_core::operation::Operation;
use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use atrest_core::rotation::Period;
use atrest_identity::{Caller, NewServicePrincipal};
use atrest_runtime::logs::LogTables;
use atrest_runtime::time::rfc3339;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::admin::alerts::alert_json;
use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{empty, json, param, Body, Resp};
use crate::jobs;
use crate::pipeline::Ctx;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewPrincipalDto {
    display_name: String,
    #[serde(default)]
    is_admin: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewUserDto {
    display_name: String,
    user_principal_name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewGroupDto {
    display_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberDto {
    member_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewIdentityDto {
    name: String,
    resource_group: Option<String>,
}

fn principal_json(p: &PrincipalRecord, tenant: &str) -> Value {
    json!({
        "appId": p.app_id,
        "objectId": p.object_id,
        "displayName": p.display_name,
        "type": p.kind.as_str(),
        "userPrincipalName": p.user_principal_name,
        "isAdmin": p.is_admin,
        "resourceId": p.resource_id,
        "tenantId": tenant,
    })
}

/// `az ad sp create-for-rbac`'s output shape.
fn credential_json(sp: &NewServicePrincipal, tenant: &str) -> Value {
    json!({
        "appId": sp.principal.app_id,
        "displayName": sp.principal.display_name,
        "password": sp.password,
        "tenant": tenant,
    })
}

/// An event in the shape of Azure Monitor's Key Vault `AuditEvent` records.
fn audit_json(e: &AuditEvent) -> Value {
    let api_version =
        Some(atrest_runtime::logs::api_version(&e.request_uri)).filter(|v| !v.is_empty());
    json!({
        "seq": e.seq,
        "category": "AuditEvent",
        "resourceId": e.resource.as_deref().filter(|r| r.starts_with('/')).map(str::to_ascii_uppercase),
        "operationVersion": api_version,
        "time": humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms.max(0) as u64)).to_string(),
        "operationName": e.operation,
        "resultType": e.result_type,
        "resultSignature": e.result_signature,
        "resultDescription": e.result_description,
        "durationMs": e.duration_ms,
        "callerIpAddress": e.caller_ip,
        "correlationId": e.correlation_id,
        "identity": { "claim": {
            "appid": e.app_id, "oid": e.object_id, "tid": e.tenant_id,
            "idtyp": e.identity_type, "xms_mirid": e.mi_resource_id,
        }},
        "resource": e.resource,
        "properties": {
            "id": e.target_id,
            "httpMethod": e.http_method,
            "requestUri": e.request_uri,
            "httpStatusCode": e.status,
            "clientInfo": e.client_info,
        },
    })
}

fn list_principals(state: &AppState, kind: PrincipalKind) -> Result<Resp, ApiError> {
    let tenant = state.identity.tenant();
    let items: Vec<Value> = state
        .identity
        .list_principals(kind)?
        .iter()
        .map(|p| principal_json(p, tenant))
        .collect();
    Ok(json(StatusCode::OK, &json!({ "value": items })))
}

/// The principal of `kind` named by `id`: its client id, object id, or a user's sign-in
/// name.
fn principal_of_kind(
    state: &AppState,
    kind: PrincipalKind,
    id: &str,
) -> Result<PrincipalRecord, ApiError> {
    let found = match state.identity.principal_by_app_id(id)? {
        Some(p) => Some(p),
        None => state.identity.find_principal(id)?,
    };
    found.filter(|p| p.kind == kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The {} '{id}' does not exist.", kind.as_str()),
        )
    })
}

/// Deletes the principal of `kind` named by `id`; nobody deletes themselves.
fn delete_principal(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    kind: PrincipalKind,
    id: &str,
) -> Result<Resp, ApiError> {
    ctx.target_id = Some(id.to_owned());
    let p = principal_of_kind(state, kind, id)?;
    if caller.object_id == p.object_id {
        return Err(ApiError::bad_request(
            "BadRequest",
            "A principal cannot delete itself.",
        ));
    }
    state.identity.delete_principal(&p.object_id)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// A route below `/atrest/`, with its path segments percent-decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Create a service principal.
    ServicePrincipalCreate,
    /// Issue a new secret for a service principal.
    CredentialReset(String),
    /// Create a managed identity.
    IdentityCreate,
    /// Create a user.
    UserCreate,
    /// Create a group.
    GroupCreate,
    /// List the principals of a kind.
    List(PrincipalKind),
    /// Delete a principal of a kind, by client id, object id or sign-in name.
    Delete(PrincipalKind, String),
    /// List a group's members.
    Members(String),
    /// Add a member to a group.
    MemberAdd(String),
    /// Remove a member from a group.
    MemberRemove(String, String),
    /// Run a log query.
    Query,
    /// List alerts.
    Alerts,
    /// Verify the audit chain.
    AuditVerify,
    /// Export audit events.
    AuditExport,
    /// List audit events.
    AuditList,
    /// Read the scheduler's clock.
    ClockGet,
    /// Move the scheduler's clock forward.
    ClockAdvance,
}

/// The principal kind a collection segment names.
fn collection(segment: &str) -> Option<PrincipalKind> {
    Some(match segment {
        "servicePrincipals" => PrincipalKind::ServicePrincipal,
        "identities" => PrincipalKind::ManagedIdentity,
        "users" => PrincipalKind::User,
        "groups" => PrincipalKind::Group,
        _ => return None,
    })
}

impl Route {
    /// The route of `method` and the decoded `segments` after `/atrest/`, if one.
    pub(crate) fn parse(method: &Method, segments: &[String]) -> Option<Route> {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match (method.as_str(), segments.as_slice()) {
            ("POST", ["servicePrincipals"]) => Route::ServicePrincipalCreate,
            ("POST", ["servicePrincipals", app_id, "credentials", "reset"]) => {
                Route::CredentialReset((*app_id).to_owned())
            }
            ("POST", ["identities"]) => Route::IdentityCreate,
            ("POST", ["users"]) => Route::UserCreate,
            ("POST", ["groups"]) => Route::GroupCreate,
            ("GET", [kind]) if collection(kind).is_some() => Route::List(collection(kind)?),
            ("DELETE", [kind, id]) if collection(kind).is_some() => {
                Route::Delete(collection(kind)?, (*id).to_owned())
            }
            ("GET", ["groups", group, "members"]) => Route::Members((*group).to_owned()),
            ("POST", ["groups", group, "members"]) => Route::MemberAdd((*group).to_owned()),
            ("DELETE", ["groups", group, "members", member]) => {
                Route::MemberRemove((*group).to_owned(), (*member).to_owned())
            }
            ("POST", ["query"]) => Route::Query,
            ("GET", ["alerts"]) => Route::Alerts,
            ("GET", ["audit", "verify"]) => Route::AuditVerify,
            ("GET", ["audit", "export"]) => Route::AuditExport,
            ("GET", ["audit"]) => Route::AuditList,
            ("GET", ["clock"]) => Route::ClockGet,
            ("POST", ["clock", "advance"]) => Route::ClockAdvance,
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        use PrincipalKind::{Group, ManagedIdentity, ServicePrincipal, User};
        match self {
            Route::ServicePrincipalCreate => Operation::ServicePrincipalCreate,
            Route::CredentialReset(_) => Operation::ServicePrincipalCredentialReset,
            Route::IdentityCreate => Operation::ManagedIdentityCreate,
            Route::UserCreate => Operation::UserCreate,
            Route::GroupCreate => Operation::GroupCreate,
            Route::List(kind) => match kind {
                ServicePrincipal => Operation::ServicePrincipalList,
                ManagedIdentity => Operation::ManagedIdentityList,
                User => Operation::UserList,
                Group => Operation::GroupList,
            },
            Route::Delete(kind, _) => match kind {
                ServicePrincipal => Operation::ServicePrincipalDelete,
                ManagedIdentity => Operation::ManagedIdentityDelete,
                User => Operation::UserDelete,
                Group => Operation::GroupDelete,
            },
            Route::Members(_) => Operation::GroupMemberList,
            Route::MemberAdd(_) => Operation::GroupMemberAdd,
            Route::MemberRemove(..) => Operation::GroupMemberRemove,
            Route::Query => Operation::LogQuery,
            Route::Alerts => Operation::AlertList,
            Route::AuditVerify => Operation::AuditVerify,
            Route::AuditExport => Operation::AuditExport,
            Route::AuditList => Operation::AuditList,
            Route::ClockGet => Operation::SchedulerClockGet,
            Route::ClockAdvance => Operation::SchedulerClockAdvance,
        }
    }
}

/// `/atrest/…`: principals, identities and the audit log, for an authenticated
/// administrator.
pub(crate) async fn handle(
    state: &Arc<AppState>,
    ctx: &mut Ctx,
    caller: &Caller,
    route: Route,
    query: &[(String, String)],
    body: Body,
) -> Result<Resp, ApiError> {
    let id = &state.identity;
    let tenant = id.tenant();
    let now = ctx.now;
    let not_found = |what: &str, name: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The {what} '{name}' does not exist."),
        )
    };
    match route {
        Route::ServicePrincipalCreate => {
            let dto: NewPrincipalDto = parse_json(&read_body(body).await?)?;
            if dto.display_name.trim().is_empty() || dto.display_name.len() > 120 {
                return Err(ApiError::bad_request(
                    "BadRequest",
                    "The displayName must be 1-120 characters.",
                ));
            }
            let sp = id.create_service_principal(&dto.display_name, dto.is_admin, now)?;
            ctx.target_id = Some(sp.principal.app_id.clone());
            Ok(json(StatusCode::CREATED, &credential_json(&sp, tenant)))
        }
        Route::List(kind) => list_principals(state, kind),
        Route::Delete(kind, principal) => delete_principal(state, ctx, caller, kind, &principal),
        Route::CredentialReset(app_id) => {
            ctx.target_id = Some(app_id.clone());
            let sp = id
                .reset_credential(&app_id)?
                .ok_or_else(|| not_found("service principal", &app_id))?;
            Ok(json(StatusCode::OK, &credential_json(&sp, tenant)))
        }
        Route::IdentityCreate => {
            let dto: NewIdentityDto = parse_json(&read_body(body).await?)?;
            atrest_core::names::check_resource_group_name(&dto.name).map_err(|e| {
                ApiError::bad_request("BadRequest", format!("Invalid identity name: {e}"))
            })?;
            let rg = dto
                .resource_group
                .as_deref()
                .unwrap_or(&state.settings.resource_group);
            atrest_core::names::check_resource_group_name(rg)
                .map_err(|e| ApiError::bad_request("BadRequest", e.to_string()))?;
            let resource_id = format!(
                "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
                state.settings.subscription, dto.name
            );
            if id.managed_identity(&resource_id)?.is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("The identity '{resource_id}' already exists."),
                ));
            }
            let mi = id.create_managed_identity(&dto.name, &resource_id, now)?;
            ctx.target_id = Some(resource_id);
            let mut out = principal_json(&mi.principal, tenant);
            out["identityHeader"] = Value::from(mi.identity_header);
            Ok(json(StatusCode::CREATED, &out))
        }
        Route::UserCreate => {
            let dto: NewUserDto = parse_json(&read_body(body).await?)?;
            let password = Zeroizing::new(dto.password);
            let user =
                id.create_user(&dto.display_name, &dto.user_principal_name, &password, now)?;
            ctx.target_id = Some(user.object_id.clone());
            Ok(json(StatusCode::CREATED, &principal_json(&user, tenant)))
        }
        Route::GroupCreate => {
            let dto: NewGroupDto = parse_json(&read_body(body).await?)?;
            let group = id.create_group(&dto.display_name, now)?;
            ctx.target_id = Some(group.object_id.clone());
            Ok(json(StatusCode::CREATED, &principal_json(&group, tenant)))
        }
        Route::Members(group) => {
            ctx.target_id = Some(group.clone());
            let items: Vec<Value> = id
                .group_members(&group)?
                .iter()
                .map(|p| principal_json(p, tenant))
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::MemberAdd(group) => {
            ctx.target_id = Some(group.clone());
            let dto: MemberDto = parse_json(&read_body(body).await?)?;
            let added = id.add_group_member(&group, &dto.member_id)?;
            Ok(empty(if added {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            }))
        }
        Route::MemberRemove(group, member) => {
            ctx.target_id = Some(group.clone());
            if !id.remove_group_member(&group, &member)? {
                return Err(not_found("member", &member));
            }
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Route::Query => {
            let dto: QueryDto = parse_json(&read_body(body).await?)?;
            state.audit.flush().await;
            let state = state.clone();
            let now_ms = atrest_runtime::time::unix_now().1;
            let result = tokio::task::spawn_blocking(move || {
                let tables = Tables {
                    logs: LogTables::load(&state.audit_trail, &state.identity)?,
                    points: recovery_point_table(&state.backup.point_rows()?),
                };
                Ok::<_, ApiError>(atrest_query::run(&dto.query, &tables, now_ms))
            })
            .await
            .map_err(|e| ApiError::internal(&e))??;
            let table =
                result.map_err(|e| ApiError::bad_request("BadArgumentError", e.to_string()))?;
            Ok(json(StatusCode::OK, &query_json(&table)))
        }
        Route::Alerts => {
            let limit = integer_param(query, "limit", 100, 1, 10_000)? as usize;
            let items: Vec<Value> = state
                .audit_trail
                .alerts(limit)?
                .iter()
                .map(alert_json)
                .collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::AuditVerify => {
            state.audit.flush().await;
            let trail = state.audit_trail.clone();
            let verification = tokio::task::spawn_blocking(move || trail.verify())
                .await
                .map_err(|e| ApiError::internal(&e))??;
            Ok(json(StatusCode::OK, &verification_json(&verification)))
        }
        Route::AuditExport => {
            state.audit.flush().await;
            let after = integer_param(query, "after", 0, 0, i64::MAX)?;
            let limit = integer_param(query, "limit", 1000, 1, 10_000)? as usize;
            let events = state.audit_trail.export(after, limit)?;
            let items: Vec<Value> = events.iter().map(audit_json).collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::AuditList => {
            state.audit.flush().await;
            let limit = integer_param(query, "limit", 100, 1, 10_000)? as usize;
            let since_ms = match param(query, "since") {
                None => None,
                Some(s) => Some(
                    humantime::parse_rfc3339_weak(s)
                        .map_err(|_| {
                            ApiError::bad_request(
                                "BadParameter",
                                format!("The time '{s}' is not an RFC 3339 time."),
                            )
                        })?
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                ),
            };
            let filter = AuditFilter {
                since_ms,
                operation: param(query, "operation").map(str::to_owned),
                limit,
            };
            let events = state.audit_trail.list(&filter)?;
            let items: Vec<Value> = events.iter().map(audit_json).collect();
            Ok(json(StatusCode::OK, &json!({ "value": items })))
        }
        Route::ClockGet => Ok(json(StatusCode::OK, &clock_json(state, &[]))),
        Route::ClockAdvance => {
            let dto: AdvanceDto = parse_json(&read_body(body).await?)?;
            let by = Period::parse(&dto.by)
                .map_err(|e| ApiError::bad_request("BadParameter", format!("Invalid 'by': {e}")))?;
            if by.seconds() == 0 {
                return Err(ApiError::bad_request(
                    "BadParameter",
                    "The clock moves forward only; 'by' must be longer than zero.",
                ));
            }
            let events = jobs::advance(state, by).await?;
            Ok(json(StatusCode::OK, &clock_json(state, &events)))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryDto {
    query: String,
}

/// A result in the Log Analytics query API's shape.
fn query_json(t: &atrest_query::Table) -> Value {
    let columns: Vec<Value> = t
        .columns
        .iter()
        .zip(t.column_types())
        .map(|(name, ty)| json!({ "name": name, "type": ty }))
        .collect();
    let rows: Vec<Value> = t
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    atrest_query::Value::Null => Value::Null,
                    atrest_query::Value::Bool(b) => Value::from(*b),
                    atrest_query::Value::Long(n) => Value::from(*n),
                    atrest_query::Value::Real(x) => Value::from(*x),
                    other => Value::from(other.to_text()),
                })
                .collect()
        })
        .collect();
    json!({ "tables": [{ "name": "PrimaryResult", "columns": columns, "rows": rows }] })
}

/// The integer query parameter `name`, `default` when absent, refused outside `min..=max`.
fn integer_param(
    query: &[(String, String)],
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match param(query, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "BadParameter",
                    format!("The {name} '{v}' must be an integer from {min} to {max}."),
                )
            }),
    }
}

fn verification_json(v: &Verification) -> Value {
    let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match v {
        Verification::Intact {
            events,
            first_seq,
            head,
        } => json!({
            "verified": true,
            "events": events,
            "firstSeq": first_seq,
            "headSeq": head.0,
            "headHash": hex(&head.1),
        }),
        Verification::Broken {
            seq,
            operation,
            time_ms,
            reason,
            verified,
        } => json!({
            "verified": false,
            "verifiedBefore": verified,
            "firstBadEvent": {
                "seq": seq,
                "operationName": operation,
                "time": humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis((*time_ms).max(0) as u64)).to_string(),
                "reason": reason,
            },
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceDto {
    by: String,
}

/// The scheduler's clock, and the audit events of the pass an advance ran.
fn clock_json(state: &AppState, events: &[AuditEvent]) -> Value {
    json!({
        "now": rfc3339(state.scheduler.now()),
        "offsetSeconds": state.scheduler.offset(),
        "actions": events.iter().map(audit_json).collect::<Vec<_>>(),
    })
}

/// What `monitor query` reads: the audit log's tables, and Azure Backup's recovery points.
struct Tables {
    logs: LogTables,
    points: atrest_query::Table,
}

impl atrest_query::Catalog for Tables {
    fn table(&self, name: &str) -> Option<atrest_query::Table> {
        match name {
            "AzureBackupRecoveryPoints" => Some(self.points.clone()),
            other => self.logs.table(other),
        }
    }
}

/// `AzureBackupRecoveryPoints`: one row per disk of each recovery point, Azure Backup's
/// and Site Recovery's (`Service`), with the key versions it holds, so "which recovery
/// points hold this key version" is one query.
fn recovery_point_table(rows: &[atrest_backup::PointRow]) -> atrest_query::Table {
    use atrest_query::Value as V;
    let text = |s: &str| V::String(s.to_owned());
    let opt = |s: &Option<String>| V::String(s.clone().unwrap_or_default());
    let columns = [
        "TimeGenerated",
        "VaultResourceId",
        "ProtectedItem",
        "RecoveryPointId",
        "ExpiryTime",
        "DiskName",
        "Lun",
        "EncryptionType",
        "DiskEncryptionSetId",
        "KeyUrl",
        "KekUrl",
        "SecretUrl",
        "Service",
    ];
    atrest_query::Table {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    V::DateTime(r.time * 1000),
                    text(&r.vault_id),
                    text(&r.item),
                    text(&r.point),
                    V::DateTime(r.expiry * 1000),
                    text(&r.disk),
                    r.lun.map_or(V::Null, |l| V::Long(i64::from(l))),
                    text(&r.encryption_type),
                    opt(&r.disk_encryption_set),
                    opt(&r.key_url),
                    opt(&r.kek_url),
                    opt(&r.secret_url),
                    text(r.service),
                ]
            })
            .collect(),
    }
}
