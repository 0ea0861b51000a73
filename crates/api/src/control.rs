//! Everything that is not a vault data plane: the token service (discovery, JWKS, client
//! credentials, password and managed-identity tokens), `/metrics`, the ARM-shaped
//! management API for vaults, and the way into atrest's own administration (`admin`).

use std::collections::BTreeMap;

use atrest_core::access_policy::{AccessPolicyEntry, PolicyEdit};
use atrest_core::operation::Operation;
use atrest_core::vault::VaultPatch;
use atrest_identity::{Caller, IdentitySelector, IssuedToken};
use atrest_store::VaultRow;
use atrest_vault::VaultRequest;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::authorization;
use crate::body::{parse_json, read_body};
use crate::compute;
use crate::data_plane::vault_resource_id;
use crate::error::ApiError;
use crate::http::{
    created_status, deleted_status, empty, form_pairs, json, param, seg, Body, Resp,
};
use crate::pipeline::Ctx;
use crate::state::AppState;
use crate::time::rfc3339;

/// A route of the token service and the unauthenticated endpoints beside it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenRoute<'a> {
    /// OpenID discovery for a tenant.
    Discovery(&'a str),
    /// `GET /metrics`.
    Metrics,
    /// Home realm discovery for a user name.
    UserRealm(&'a str),
    /// The token-signing keys.
    Jwks,
    /// `POST /{tenant}/oauth2[/v2.0]/token`.
    Token {
        /// The v1 endpoint, which answers in the v1 shape.
        v1: bool,
    },
    /// The IMDS-style managed-identity endpoint.
    Imds,
    /// The App-Service-style managed-identity endpoint.
    Msi,
}

impl<'a> OpenRoute<'a> {
    /// The route of `method` and the path's `segments`, if one.
    pub(crate) fn parse(method: &Method, segments: &[&'a str]) -> Option<Self> {
        let get = method == Method::GET;
        let post = method == Method::POST;
        Some(match segments {
            [tenant, "v2.0", ".well-known", "openid-configuration"]
            | [tenant, ".well-known", "openid-configuration"]
                if get =>
            {
                OpenRoute::Discovery(tenant)
            }
            ["metrics"] if get => OpenRoute::Metrics,
            ["common", "userrealm", username] if get => OpenRoute::UserRealm(username),
            [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"] if get => OpenRoute::Jwks,
            [_, "oauth2", "v2.0", "token"] if post => OpenRoute::Token { v1: false },
            [_, "oauth2", "token"] if post => OpenRoute::Token { v1: true },
            ["metadata", "identity", "oauth2", "token"] if get => OpenRoute::Imds,
            ["msi", "token"] if get => OpenRoute::Msi,
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            OpenRoute::Discovery(_) => Operation::OpenIdConfiguration,
            OpenRoute::Metrics => Operation::Metrics,
            OpenRoute::UserRealm(_) => Operation::UserRealmDiscovery,
            OpenRoute::Jwks => Operation::Jwks,
            OpenRoute::Token { .. } | OpenRoute::Imds | OpenRoute::Msi => Operation::Authentication,
        }
    }
}

/// Serves the token service and the unauthenticated endpoints.
pub(crate) async fn open(
    state: &AppState,
    ctx: &mut Ctx,
    route: OpenRoute<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let headers = &parts.headers;
    match route {
        OpenRoute::Discovery(tenant) => Ok(json(StatusCode::OK, &discovery(state, tenant))),
        OpenRoute::Metrics => {
            // Unauthenticated, as Prometheus scrapes; counts and vault names only.
            let text = state.metrics.render(
                &state.throttle.saturation(std::time::Instant::now()),
                &state.audit_log.alert_counts()?,
            );
            let mut resp = Resp::new(text.into());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(resp)
        }
        OpenRoute::UserRealm(username) => {
            // Home realm discovery: every user here signs in with a password (managed).
            let domain = username.rsplit_once('@').map_or("", |(_, d)| d);
            Ok(json(
                StatusCode::OK,
                &json!({
                    "ver": "1.0",
                    "account_type": "Managed",
                    "domain_name": domain,
                    "cloud_instance_name": "atrest",
                    "cloud_audience_urn": "urn:federation:MicrosoftOnline",
                }),
            ))
        }
        OpenRoute::Jwks => Ok(json(StatusCode::OK, &state.identity.jwks())),
        OpenRoute::Token { v1: false } => {
            let form = read_form(headers, body).await?;
            let token = issued(
                ctx,
                state,
                state.identity.token_grant(&form, ctx.now),
                param(&form, "client_id"),
            )?;
            let mut body = json!({
                "token_type": "Bearer",
                "expires_in": token.expires_on - ctx.now,
                "ext_expires_in": token.expires_on - ctx.now,
                "access_token": token.access_token,
            });
            if let Some(sign_in) = &token.user_sign_in {
                body["id_token"] = Value::from(sign_in.id_token.as_str());
                body["client_info"] = Value::from(sign_in.client_info.as_str());
            }
            Ok(json(StatusCode::OK, &body))
        }
        OpenRoute::Token { v1: true } => {
            let form = read_form(headers, body).await?;
            let token = issued(
                ctx,
                state,
                state.identity.token_grant(&form, ctx.now),
                param(&form, "client_id"),
            )?;
            Ok(json(StatusCode::OK, &v1_token(&token, ctx.now)))
        }
        OpenRoute::Imds => imds_token(state, ctx, headers, &query),
        OpenRoute::Msi => {
            let header = headers
                .get("x-identity-header")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| oauth_bad_request("The X-IDENTITY-HEADER header is required."))?;
            let (selector, resource) = identity_query(&query)?;
            let result =
                state
                    .identity
                    .managed_identity_token(Some(header), &selector, resource, ctx.now);
            let token = issued(ctx, state, result, selector.client_id)?;
            Ok(json(
                StatusCode::OK,
                &json!({
                    "access_token": token.access_token,
                    "expires_on": token.expires_on.to_string(),
                    "resource": token.resource,
                    "token_type": "Bearer",
                    "client_id": token.client_id,
                }),
            ))
        }
    }
}

fn discovery(state: &AppState, tenant: &str) -> Value {
    let authority = state.identity.authority();
    json!({
        "issuer": state.identity.issuer(),
        "token_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("{authority}/{}/discovery/v2.0/keys", state.identity.tenant()),
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials", "password"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "scopes_supported": ["openid"],
        "tenant_region_scope": null,
        "cloud_instance_name": "localhost",
    })
}

fn oauth_bad_request(message: &str) -> ApiError {
    ApiError::from(atrest_identity::OAuthError::InvalidRequest(
        message.to_owned(),
    ))
}

async fn read_form(headers: &HeaderMap, body: Body) -> Result<Vec<(String, String)>, ApiError> {
    let is_form = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(oauth_bad_request(
            "The request body must be application/x-www-form-urlencoded.",
        ));
    }
    let body = read_body(body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| oauth_bad_request("The request body is not UTF-8."))?;
    Ok(form_pairs(text))
}

/// Records who asked for a token (the claims of the issued token, or the client id that
/// failed) and passes the result on.
pub(crate) fn issued(
    ctx: &mut Ctx,
    state: &AppState,
    result: Result<IssuedToken, atrest_identity::OAuthError>,
    client_id: Option<&str>,
) -> Result<IssuedToken, ApiError> {
    ctx.resource = Some(state.identity.issuer().to_owned());
    match result {
        Ok(token) => {
            let audience = [token.resource.trim_end_matches('/').to_owned()];
            // The sign-in logs' ResourceIdentity: what the token is for.
            ctx.target_id = Some(audience[0].clone());
            ctx.caller = state
                .identity
                .verify(&token.access_token, &audience, ctx.now)
                .ok();
            Ok(token)
        }
        Err(e) => {
            ctx.caller = client_id.map(|id| Caller {
                app_id: id.to_owned(),
                object_id: String::new(),
                tenant_id: state.identity.tenant().to_owned(),
                identity_type: String::new(),
                mi_resource_id: None,
            });
            Err(e.into())
        }
    }
}

fn v1_token(token: &IssuedToken, now: i64) -> Value {
    json!({
        "access_token": token.access_token,
        "client_id": token.client_id,
        "expires_in": (token.expires_on - now).to_string(),
        "expires_on": token.expires_on.to_string(),
        "ext_expires_in": (token.expires_on - now).to_string(),
        "not_before": token.not_before.to_string(),
        "resource": token.resource,
        "token_type": "Bearer",
    })
}

fn identity_query(query: &[(String, String)]) -> Result<(IdentitySelector<'_>, &str), ApiError> {
    let resource = param(query, "resource")
        .ok_or_else(|| oauth_bad_request("The 'resource' query parameter is required."))?;
    let selector = IdentitySelector {
        client_id: param(query, "client_id"),
        object_id: param(query, "object_id").or_else(|| param(query, "principal_id")),
        resource_id: param(query, "msi_res_id").or_else(|| param(query, "mi_res_id")),
    };
    Ok((selector, resource))
}

/// IMDS-style endpoint. Like the real link-local endpoint it answers only local callers,
/// and only requests carrying `Metadata: true` (a guard against request forgery).
fn imds_token(
    state: &AppState,
    ctx: &mut Ctx,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<Resp, ApiError> {
    if !ctx.peer.ip().is_loopback() {
        return Err(ApiError::forbidden(
            "The managed identity endpoint answers only local callers.",
        ));
    }
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(oauth_bad_request("Required metadata header not specified"));
    }
    let (selector, resource) = identity_query(query)?;
    let result = state
        .identity
        .managed_identity_token(None, &selector, resource, ctx.now);
    let token = issued(ctx, state, result, selector.client_id)?;
    Ok(json(StatusCode::OK, &v1_token(&token, ctx.now)))
}

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

fn vault_json(state: &AppState, v: &VaultRow) -> Value {
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

fn deleted_vault_json(v: &VaultRow) -> Value {
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
        if let Some((scope, rest)) = authorization::split(segments) {
            let route = authorization::Route::parse(method, rest)?;
            return Some(ArmRoute::Authorization { scope, route });
        }
        let below = segments.get(1..).unwrap_or_default();
        if let Some(route) = compute::Route::parse(method, below) {
            return Some(ArmRoute::Compute(route));
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
    if !subscription.eq_ignore_ascii_case(&state.settings.subscription) {
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
            authorization::handle(state, ctx, caller, &scope, route, body).await
        }
        ArmRoute::Compute(route) => compute::handle(state, ctx, caller, method, route, body).await,
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
