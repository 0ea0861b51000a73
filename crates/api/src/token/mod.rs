//! The token service and the unauthenticated endpoints beside it: OpenID discovery, JWKS,
//! client-credential, password and managed-identity tokens (Entra ID's v2 endpoint, IMDS
//! and App Service styles), `/metrics`, and the health probes `/healthz` and `/readyz`.

use atrest_core::operation::Operation;
use atrest_identity::{Caller, IdentitySelector, IssuedToken};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use crate::body::read_body;
use crate::error::ApiError;
use crate::http::{form_pairs, json, param, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// A route of the token service and the unauthenticated endpoints beside it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenRoute<'a> {
    /// OpenID discovery for a tenant.
    Discovery(&'a str),
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`: liveness, for a load balancer.
    Live,
    /// `GET /readyz`: readiness, for a load balancer.
    Ready,
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
    /// `GET /metadata/endpoints`: this cloud's endpoints, as ARM describes a cloud.
    CloudMetadata,
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
            ["healthz"] if get => OpenRoute::Live,
            ["readyz"] if get => OpenRoute::Ready,
            ["common", "userrealm", username] if get => OpenRoute::UserRealm(username),
            [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"] if get => OpenRoute::Jwks,
            [_, "oauth2", "v2.0", "token"] if post => OpenRoute::Token { v1: false },
            [_, "oauth2", "token"] if post => OpenRoute::Token { v1: true },
            ["metadata", "identity", "oauth2", "token"] if get => OpenRoute::Imds,
            ["metadata", "endpoints"] if get => OpenRoute::CloudMetadata,
            ["msi", "token"] if get => OpenRoute::Msi,
            _ => return None,
        })
    }

    /// The audited operation.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            OpenRoute::Discovery(_) => Operation::OpenIdConfiguration,
            OpenRoute::Metrics => Operation::Metrics,
            OpenRoute::Live => Operation::HealthLive,
            OpenRoute::Ready => Operation::HealthReady,
            OpenRoute::CloudMetadata => Operation::CloudMetadata,
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
        OpenRoute::CloudMetadata => Ok(json(StatusCode::OK, &cloud_metadata(state))),
        OpenRoute::Metrics => {
            // Unauthenticated, as Prometheus scrapes; counts and vault names only.
            let mut text = state.metrics.render(
                &state.throttle.saturation(std::time::Instant::now()),
                &state.audit_trail.alert_counts()?,
            );
            text.push_str(
                &state
                    .leader
                    .render_metrics(state.vaults.generation_lag()?)?,
            );
            let mut resp = Resp::new(text.into());
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(resp)
        }
        OpenRoute::Live => Ok(json(StatusCode::OK, &json!({ "status": "ok" }))),
        OpenRoute::Ready => {
            // Unauthenticated: says what is unreachable, never why in detail (the log has it).
            let compute = state.compute.clone();
            let checked = tokio::task::spawn_blocking(move || compute.check_storage())
                .await
                .map_err(|e| ApiError::internal(&e))?;
            let (status, checks) = match checked {
                Ok(()) => (StatusCode::OK, json!({ "status": "ok" })),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "status": "unavailable", "failed": e.part() }),
                    )
                }
            };
            Ok(json(status, &checks))
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

/// The cloud as ARM's `metadata/endpoints` (api-version 2022-09-01) describes one, which
/// `az cloud register --endpoint-resource-manager` reads: where to sign in, the management
/// audience, where ARM and Microsoft Graph are, and the vault DNS suffix with its port.
fn cloud_metadata(state: &AppState) -> Value {
    let base = state.identity.authority();
    let port = state.settings.port;
    json!({
        "name": "atrest",
        "portal": base,
        "resourceManager": format!("{base}/"),
        "authentication": {
            "loginEndpoint": base,
            "audiences": ["https://management.azure.com/", "https://management.core.windows.net/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "microsoftGraphResourceId": format!("{base}/"),
        "graph": format!("{base}/"),
        "suffixes": {
            "keyVaultDns": format!("vault.localhost:{port}"),
            "mhsmDns": format!("managedhsm.localhost:{port}"),
        },
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
