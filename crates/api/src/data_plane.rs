//! The Key Vault data plane (`https://NAME.vault.localhost:PORT/secrets/…`).

use std::collections::BTreeMap;

use atrest_vault::{AttributesPatch, Page, Secret, SecretUpdate, SetSecret};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::auth::authenticate;
use crate::error::ApiError;
use crate::http::{empty, form_pairs, json, param, parse_json, read_body, Resp};
use crate::server::{AppState, Ctx};

/// One data-plane operation, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Set(&'a str),
    Get(&'a str, Option<&'a str>),
    Update(&'a str, Option<&'a str>),
    Delete(&'a str),
    List,
    ListVersions(&'a str),
    Backup(&'a str),
    Restore,
    ListDeleted,
    GetDeleted(&'a str),
    Purge(&'a str),
    Recover(&'a str),
}

impl Route<'_> {
    fn parse<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let version = |v: &'a str| (!v.is_empty()).then_some(v);
        Some(match (method.as_str(), segments.as_slice()) {
            ("GET", ["secrets"] | ["secrets", ""]) => Route::List,
            ("POST", ["secrets", "restore"]) => Route::Restore,
            ("PUT", ["secrets", name]) => Route::Set(name),
            ("GET", ["secrets", name]) => Route::Get(name, None),
            ("PATCH", ["secrets", name]) => Route::Update(name, None),
            ("DELETE", ["secrets", name]) => Route::Delete(name),
            ("GET", ["secrets", name, "versions"]) => Route::ListVersions(name),
            ("POST", ["secrets", name, "backup"]) => Route::Backup(name),
            ("GET", ["secrets", name, v]) => Route::Get(name, version(v)),
            ("PATCH", ["secrets", name, v]) => Route::Update(name, version(v)),
            ("GET", ["deletedsecrets"] | ["deletedsecrets", ""]) => Route::ListDeleted,
            ("GET", ["deletedsecrets", name]) => Route::GetDeleted(name),
            ("DELETE", ["deletedsecrets", name]) => Route::Purge(name),
            ("POST", ["deletedsecrets", name, "recover"]) => Route::Recover(name),
            _ => return None,
        })
    }

    /// Key Vault's `operationName` for the audit log.
    fn operation(&self) -> &'static str {
        match self {
            Route::Set(_) => "SecretSet",
            Route::Get(..) => "SecretGet",
            Route::Update(..) => "SecretUpdate",
            Route::Delete(_) => "SecretDelete",
            Route::List => "SecretList",
            Route::ListVersions(_) => "SecretListVersions",
            Route::Backup(_) => "SecretBackup",
            Route::Restore => "SecretRestore",
            Route::ListDeleted => "SecretListDeleted",
            Route::GetDeleted(_) => "SecretGetDeleted",
            Route::Purge(_) => "SecretPurge",
            Route::Recover(_) => "SecretRecover",
        }
    }
}

#[derive(Deserialize, Default)]
struct AttributesDto {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

impl From<AttributesDto> for AttributesPatch {
    fn from(a: AttributesDto) -> Self {
        AttributesPatch {
            enabled: a.enabled,
            not_before: a.nbf,
            expires: a.exp,
        }
    }
}

#[derive(Deserialize)]
struct SetDto {
    value: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesDto>,
}

#[derive(Deserialize)]
struct UpdateDto {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesDto>,
}

#[derive(Deserialize)]
struct RestoreDto {
    value: Option<String>,
}

/// Serves one data-plane request for the vault named by the host.
pub async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    vault_name: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, parts.uri.path());
    ctx.operation = route.as_ref().map_or("Unknown", Route::operation);
    ctx.resource = Some(vault_name.to_owned());
    // Challenge first: the SDK's first request carries no token and no body.
    ctx.caller = Some(authenticate(
        state,
        &parts.headers,
        state.identity.data_plane_audiences(),
        ctx.now,
    )?);
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let api_version = param(&query, "api-version");
    atrest_core::api_version::check(api_version)
        .map_err(|e| ApiError::bad_request("BadParameter", e.to_string()))?;
    let route = route.ok_or_else(|| ApiError::no_route(&parts.method, parts.uri.path()))?;
    let vault = state.vaults.data_plane_vault(vault_name)?;
    ctx.resource = Some(vault.name.clone());
    let base = state.vault_base(&vault.name);
    let maxresults = match param(&query, "maxresults") {
        Some(m) => Some(m.parse::<usize>().map_err(|_| {
            ApiError::bad_request(
                "BadParameter",
                format!("The value '{m}' of 'maxresults' is not an integer."),
            )
        })?),
        None => None,
    };
    let skip = param(&query, "$skiptoken");
    let paging = |path: &str, page: Page<Secret>, versioned: bool| -> Resp {
        let next = page.next.map(|t| {
            let mut link = format!(
                "{base}/{path}?api-version={}&$skiptoken={t}",
                api_version.unwrap_or_default()
            );
            if let Some(m) = maxresults {
                link.push_str(&format!("&maxresults={m}"));
            }
            link
        });
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|s| secret_json(&base, s, versioned))
            .collect();
        json(StatusCode::OK, &json!({ "value": items, "nextLink": next }))
    };
    let vs = &state.vaults;
    let now = ctx.now;
    let target = |name: &str, version: Option<&str>| match version {
        Some(v) => format!("{base}/secrets/{name}/{v}"),
        None => format!("{base}/secrets/{name}"),
    };
    let resp = match route {
        Route::Set(name) => {
            ctx.target_id = Some(target(name, None));
            let dto: SetDto = parse_json(&read_body(body).await?)?;
            let value = dto.value.ok_or_else(|| {
                ApiError::bad_request("BadParameter", "The property 'value' is required.")
            })?;
            let req = SetSecret {
                value: Zeroizing::new(value),
                content_type: dto.content_type,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let s = vs.set_secret(&vault, name, &req, now)?;
            ctx.target_id = Some(target(&s.name, Some(&s.version)));
            json(StatusCode::OK, &secret_json(&base, &s, true))
        }
        Route::Get(name, version) => {
            ctx.target_id = Some(target(name, version));
            let s = vs.get_secret(&vault, name, version, now)?;
            ctx.target_id = Some(target(&s.name, Some(&s.version)));
            json(StatusCode::OK, &secret_json(&base, &s, true))
        }
        Route::Update(name, version) => {
            ctx.target_id = Some(target(name, version));
            let dto: UpdateDto = parse_json(&read_body(body).await?)?;
            let update = SecretUpdate {
                content_type: dto.content_type,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let s = vs.update_secret(&vault, name, version, &update, now)?;
            ctx.target_id = Some(target(&s.name, Some(&s.version)));
            json(StatusCode::OK, &secret_json(&base, &s, true))
        }
        Route::Delete(name) => {
            ctx.target_id = Some(target(name, None));
            json(
                StatusCode::OK,
                &secret_json(&base, &vs.delete_secret(&vault, name, now)?, true),
            )
        }
        Route::List => paging("secrets", vs.list_secrets(&vault, maxresults, skip)?, false),
        Route::ListVersions(name) => {
            ctx.target_id = Some(target(name, None));
            paging(
                &format!("secrets/{name}/versions"),
                vs.list_secret_versions(&vault, name, maxresults, skip)?,
                true,
            )
        }
        Route::ListDeleted => paging(
            "deletedsecrets",
            vs.list_deleted_secrets(&vault, maxresults, skip)?,
            false,
        ),
        Route::GetDeleted(name) => {
            ctx.target_id = Some(target(name, None));
            json(
                StatusCode::OK,
                &secret_json(&base, &vs.get_deleted_secret(&vault, name)?, true),
            )
        }
        Route::Recover(name) => {
            ctx.target_id = Some(target(name, None));
            json(
                StatusCode::OK,
                &secret_json(&base, &vs.recover_secret(&vault, name)?, true),
            )
        }
        Route::Purge(name) => {
            ctx.target_id = Some(target(name, None));
            vs.purge_secret(&vault, name, now)?;
            empty(StatusCode::NO_CONTENT)
        }
        Route::Backup(name) => {
            ctx.target_id = Some(target(name, None));
            json(
                StatusCode::OK,
                &json!({ "value": B64.encode(vs.backup_secret(&vault, name)?) }),
            )
        }
        Route::Restore => {
            let dto: RestoreDto = parse_json(&read_body(body).await?)?;
            let blob = dto
                .value
                .and_then(|v| B64.decode(v.trim_end_matches('=')).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "BadParameter",
                        "The property 'value' must be a base64url backup blob.",
                    )
                })?;
            let s = vs.restore_secret(&vault, &blob)?;
            ctx.target_id = Some(target(&s.name, Some(&s.version)));
            json(StatusCode::OK, &secret_json(&base, &s, true))
        }
    };
    Ok(resp)
}

/// The SecretBundle / SecretItem / DeletedSecretBundle JSON of `s`.
fn secret_json(base: &str, s: &Secret, versioned_id: bool) -> Value {
    let mut out = Map::new();
    if let Some(value) = &s.value {
        out.insert("value".into(), Value::from(value.as_str()));
    }
    let id = if versioned_id {
        format!("{base}/secrets/{}/{}", s.name, s.version)
    } else {
        format!("{base}/secrets/{}", s.name)
    };
    out.insert("id".into(), Value::from(id));
    if let Some(ct) = &s.content_type {
        out.insert("contentType".into(), Value::from(ct.as_str()));
    }
    let a = &s.attributes;
    let mut attrs = json!({
        "enabled": a.enabled,
        "created": a.created,
        "updated": a.updated,
        "recoveryLevel": s.recovery.level(),
        "recoverableDays": s.recovery.retention_days,
    });
    if let Some(nbf) = a.not_before {
        attrs["nbf"] = nbf.into();
    }
    if let Some(exp) = a.expires {
        attrs["exp"] = exp.into();
    }
    out.insert("attributes".into(), attrs);
    if !s.tags.is_empty() {
        out.insert("tags".into(), json!(s.tags));
    }
    if let Some((deleted, purge)) = s.deleted {
        out.insert(
            "recoveryId".into(),
            Value::from(format!("{base}/deletedsecrets/{}", s.name)),
        );
        out.insert("deletedDate".into(), deleted.into());
        out.insert("scheduledPurgeDate".into(), purge.into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |m: Method, p| Route::parse(&m, p);
        assert_eq!(r(Method::GET, "/secrets/s1/"), Some(Route::Get("s1", None)));
        assert_eq!(r(Method::GET, "/secrets/s1"), Some(Route::Get("s1", None)));
        assert_eq!(
            r(Method::GET, "/secrets/s1/abc"),
            Some(Route::Get("s1", Some("abc")))
        );
        assert_eq!(
            r(Method::GET, "/secrets/s1/versions"),
            Some(Route::ListVersions("s1"))
        );
        assert_eq!(
            r(Method::PATCH, "/secrets/s1/"),
            Some(Route::Update("s1", None))
        );
        assert_eq!(r(Method::POST, "/secrets/restore"), Some(Route::Restore));
        assert_eq!(
            r(Method::POST, "/secrets/s1/backup"),
            Some(Route::Backup("s1"))
        );
        assert_eq!(
            r(Method::DELETE, "/deletedsecrets/s1"),
            Some(Route::Purge("s1"))
        );
        assert_eq!(r(Method::GET, "/secrets"), Some(Route::List));
        assert_eq!(r(Method::POST, "/secrets/s1"), None);
        assert_eq!(r(Method::GET, "/keys/k1"), None);
    }
}
