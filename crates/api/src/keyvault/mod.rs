//! The Key Vault data plane (`https://NAME.vault.localhost:PORT/secrets/…`, `/keys/…`).

use std::collections::BTreeMap;
use std::sync::Arc;

use atrest_core::access_policy::policies_grant;
use atrest_core::ade;
use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::limits::{cost, OperationClass};
use atrest_core::operation::Operation;
use atrest_core::vault::VaultRecord;
use atrest_crypto::PrivateJwk;
use atrest_identity::Caller;
use atrest_vault::{
    AttributesPatch, CreateKey, ImportKey, Key, KeyOperation, KeyUpdate, OperationInput,
    OperationOutput, Page, Secret, SecretUpdate, SetSecret, VaultError,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

mod certificates;

use self::certificates::CertRoute;
use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{empty, form_pairs, json, param, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// One data-plane operation, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
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
    Key(KeyRoute<'a>),
    Certificate(CertRoute<'a>),
}

/// Routes under `/keys`, `/deletedkeys` and `/rng`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyRoute<'a> {
    Create(&'a str),
    Import(&'a str),
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
    Operation(&'a str, Option<&'a str>, KeyOperation),
    Random,
    Rotate(&'a str),
    GetRotationPolicy(&'a str),
    SetRotationPolicy(&'a str),
}

fn key_operation(segment: &str) -> Option<KeyOperation> {
    Some(match segment {
        "encrypt" => KeyOperation::Encrypt,
        "decrypt" => KeyOperation::Decrypt,
        "wrapkey" => KeyOperation::WrapKey,
        "unwrapkey" => KeyOperation::UnwrapKey,
        "sign" => KeyOperation::Sign,
        "verify" => KeyOperation::Verify,
        _ => return None,
    })
}

impl KeyRoute<'_> {
    fn parse<'a>(method: &str, segments: &[&'a str]) -> Option<KeyRoute<'a>> {
        let version = |v: &'a str| (!v.is_empty()).then_some(v);
        Some(match (method, segments) {
            ("GET", ["keys"] | ["keys", ""]) => KeyRoute::List,
            ("POST", ["keys", "restore"]) => KeyRoute::Restore,
            ("POST", ["rng"]) => KeyRoute::Random,
            ("POST", ["keys", name, "create"]) => KeyRoute::Create(name),
            ("POST", ["keys", name, "backup"]) => KeyRoute::Backup(name),
            ("POST", ["keys", name, "rotate"]) => KeyRoute::Rotate(name),
            ("GET", ["keys", name, "rotationpolicy"]) => KeyRoute::GetRotationPolicy(name),
            ("PUT", ["keys", name, "rotationpolicy"]) => KeyRoute::SetRotationPolicy(name),
            ("PUT", ["keys", name]) => KeyRoute::Import(name),
            ("GET", ["keys", name]) => KeyRoute::Get(name, None),
            ("PATCH", ["keys", name]) => KeyRoute::Update(name, None),
            ("DELETE", ["keys", name]) => KeyRoute::Delete(name),
            ("GET", ["keys", name, "versions"]) => KeyRoute::ListVersions(name),
            ("GET", ["keys", name, v]) => KeyRoute::Get(name, version(v)),
            ("PATCH", ["keys", name, v]) => KeyRoute::Update(name, version(v)),
            ("POST", ["keys", name, op]) => KeyRoute::Operation(name, None, key_operation(op)?),
            ("POST", ["keys", name, v, op]) => {
                KeyRoute::Operation(name, version(v), key_operation(op)?)
            }
            ("GET", ["deletedkeys"] | ["deletedkeys", ""]) => KeyRoute::ListDeleted,
            ("GET", ["deletedkeys", name]) => KeyRoute::GetDeleted(name),
            ("DELETE", ["deletedkeys", name]) => KeyRoute::Purge(name),
            ("POST", ["deletedkeys", name, "recover"]) => KeyRoute::Recover(name),
            _ => return None,
        })
    }

    /// The key the route addresses, if one.
    fn key_name(&self) -> Option<&str> {
        match self {
            KeyRoute::Create(n)
            | KeyRoute::Import(n)
            | KeyRoute::Get(n, _)
            | KeyRoute::Update(n, _)
            | KeyRoute::Delete(n)
            | KeyRoute::ListVersions(n)
            | KeyRoute::Backup(n)
            | KeyRoute::GetDeleted(n)
            | KeyRoute::Purge(n)
            | KeyRoute::Recover(n)
            | KeyRoute::Operation(n, ..)
            | KeyRoute::Rotate(n)
            | KeyRoute::GetRotationPolicy(n)
            | KeyRoute::SetRotationPolicy(n) => Some(n),
            KeyRoute::List | KeyRoute::Restore | KeyRoute::ListDeleted | KeyRoute::Random => None,
        }
    }

    fn operation(&self) -> Operation {
        match self {
            KeyRoute::Create(_) => Operation::KeyCreate,
            KeyRoute::Import(_) => Operation::KeyImport,
            KeyRoute::Get(..) => Operation::KeyGet,
            KeyRoute::Update(..) => Operation::KeyUpdate,
            KeyRoute::Delete(_) => Operation::KeyDelete,
            KeyRoute::List => Operation::KeyList,
            KeyRoute::ListVersions(_) => Operation::KeyListVersions,
            KeyRoute::Backup(_) => Operation::KeyBackup,
            KeyRoute::Restore => Operation::KeyRestore,
            KeyRoute::ListDeleted => Operation::KeyListDeleted,
            KeyRoute::GetDeleted(_) => Operation::KeyGetDeleted,
            KeyRoute::Purge(_) => Operation::KeyPurge,
            KeyRoute::Recover(_) => Operation::KeyRecover,
            KeyRoute::Operation(_, _, op) => match op {
                KeyOperation::Encrypt => Operation::KeyEncrypt,
                KeyOperation::Decrypt => Operation::KeyDecrypt,
                KeyOperation::WrapKey => Operation::KeyWrap,
                KeyOperation::UnwrapKey => Operation::KeyUnwrap,
                KeyOperation::Sign => Operation::KeySign,
                KeyOperation::Verify => Operation::KeyVerify,
            },
            KeyRoute::Random => Operation::RngGet,
            KeyRoute::Rotate(_) => Operation::KeyRotate,
            KeyRoute::GetRotationPolicy(_) => Operation::KeyGetRotationPolicy,
            KeyRoute::SetRotationPolicy(_) => Operation::KeyUpdateRotationPolicy,
        }
    }
}

impl Route<'_> {
    /// The route of `method` and `path`, if the data plane serves it.
    pub(crate) fn parse<'a>(method: &Method, path: &'a str) -> Option<Route<'a>> {
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
            (m, segments @ ["certificates" | "deletedcertificates", ..]) => {
                Route::Certificate(CertRoute::parse(m, segments)?)
            }
            (m, segments) => Route::Key(KeyRoute::parse(m, segments)?),
        })
    }

    /// Where below the vault the route acts, for authorization: `/secrets/NAME`,
    /// `/keys/NAME`, or nothing for whole collections.
    fn object_scope(&self) -> String {
        match self {
            Route::Set(n)
            | Route::Get(n, _)
            | Route::Update(n, _)
            | Route::Delete(n)
            | Route::ListVersions(n)
            | Route::Backup(n)
            | Route::GetDeleted(n)
            | Route::Purge(n)
            | Route::Recover(n) => format!("/secrets/{n}"),
            Route::List | Route::Restore | Route::ListDeleted => String::new(),
            Route::Key(k) => k
                .key_name()
                .map_or_else(String::new, |n| format!("/keys/{n}")),
            Route::Certificate(c) => c
                .name()
                .map_or_else(String::new, |n| format!("/certificates/{n}")),
        }
    }

    /// The object (and version, when the path names one) the route addresses, below the
    /// vault: the audit event's `id` even when the request is refused.
    fn object_id(&self) -> Option<String> {
        let version = match self {
            Route::Get(_, v) | Route::Update(_, v) => *v,
            Route::Key(
                KeyRoute::Get(_, v) | KeyRoute::Update(_, v) | KeyRoute::Operation(_, v, _),
            ) => *v,
            Route::Certificate(c) => c.version(),
            _ => None,
        };
        let scope = self.object_scope();
        (!scope.is_empty()).then(|| match version {
            Some(v) => format!("{scope}/{v}"),
            None => scope,
        })
    }

    /// The operation, for the audit log, authorization and throttling.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Route::Set(_) => Operation::SecretSet,
            Route::Get(..) => Operation::SecretGet,
            Route::Update(..) => Operation::SecretUpdate,
            Route::Delete(_) => Operation::SecretDelete,
            Route::List => Operation::SecretList,
            Route::ListVersions(_) => Operation::SecretListVersions,
            Route::Backup(_) => Operation::SecretBackup,
            Route::Restore => Operation::SecretRestore,
            Route::ListDeleted => Operation::SecretListDeleted,
            Route::GetDeleted(_) => Operation::SecretGetDeleted,
            Route::Purge(_) => Operation::SecretPurge,
            Route::Recover(_) => Operation::SecretRecover,
            Route::Key(k) => k.operation(),
            Route::Certificate(c) => c.operation(),
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

/// Checks that the caller may perform `operation` on `object_scope` (`/secrets/NAME`,
/// `/keys/NAME`, or empty for whole collections): on an RBAC vault, a role granting its
/// data action at the object, the vault, or above; otherwise an access policy entry
/// granting its permission. Operations without either are refused, never let through.
pub(crate) fn authorize(
    state: &AppState,
    caller: &Caller,
    vault: &VaultRecord,
    operation: Operation,
    object_scope: &str,
) -> Result<(), ApiError> {
    // The disk-encryption platform identity is let in by the vault's
    // `enabledForDiskEncryption`, and for nothing else: no role or policy applies to it.
    if caller.mi_resource_id.as_deref() == Some(ade::PLATFORM_IDENTITY) {
        if vault.disk_encryption && ade::platform_may(operation) {
            return Ok(());
        }
        return Err(ApiError::forbidden_by_policy(format!(
            "Azure Disk Encryption may not perform '{}' on key vault '{}': {}",
            operation.name(),
            vault.name,
            if vault.disk_encryption {
                "enabledForDiskEncryption permits only storing and reading secrets and reading, wrapping and unwrapping with keys."
            } else {
                "the vault is not enabled for disk encryption (enabledForDiskEncryption is false)."
            }
        )));
    }
    let object_ids = state.identity.object_ids_of(&caller.object_id)?;
    let who = || {
        format!(
            "appid={};oid={};iss={}",
            caller.app_id,
            caller.object_id,
            state.identity.issuer()
        )
    };
    if !vault.rbac {
        let required = operation.permission();
        if let Some((class, permission)) = required {
            if policies_grant(
                &vault.access_policies,
                &object_ids,
                &caller.app_id,
                class,
                permission,
            ) {
                return Ok(());
            }
        }
        let (class, permission) =
            required.map_or(("keys or secrets", "(unknown)"), |(c, p)| (c.as_str(), p));
        return Err(ApiError::forbidden_by_policy(format!(
            "The user, group or application '{}' does not have {class} {permission} permission on key vault '{};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            who(), vault.name, vault.location,
        )));
    }
    let resource = format!("{}{object_scope}", vault_resource_id(vault));
    let action = operation.data_action();
    if let Some(action) = action {
        if state
            .identity
            .allows_data_action(&object_ids, &resource, action)?
        {
            return Ok(());
        }
    }
    Err(ApiError::forbidden_by_rbac(format!(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {}\r\nAction: '{}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location={}\r\n",
        who(),
        action.unwrap_or("(unknown)"),
        resource.to_ascii_lowercase(),
        vault.name,
        vault.location,
    )))
}

/// The budget a route draws on and its cost there: HSM keys have their own budget, and
/// cryptographic operations with larger RSA keys cost more.
fn throttle_cost(state: &AppState, vault: &VaultRecord, route: &Route) -> (OperationClass, u32) {
    let (hsm, rsa_bits) = match route {
        Route::Key(KeyRoute::Operation(name, version, _)) => state
            .vaults
            .key_weight(vault, name, *version)
            .unwrap_or_default(),
        _ => (false, None),
    };
    let class = route.operation().class(hsm);
    (class, cost(class, rsa_bits))
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}`.
pub(crate) fn vault_resource_id(v: &VaultRecord) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
        v.subscription, v.resource_group, v.name
    )
}

/// The guards of a data-plane operation once its caller is authenticated, for requests
/// over HTTP and in process alike: the vault must exist, its budget must admit the
/// operation (refused ones count too), and the caller must be authorized. Records the
/// vault and the target in `ctx`.
pub(crate) fn guard(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    vault_name: &str,
    route: &Route<'_>,
) -> Result<Arc<VaultRecord>, ApiError> {
    let vault = state.vaults.data_plane_vault(vault_name)?;
    ctx.resource = Some(vault_resource_id(&vault));
    ctx.vault = Some(vault.name.clone());
    ctx.target_id = route
        .object_id()
        .map(|id| format!("{}{id}", state.vault_base(&vault.name)));
    let (class, cost) = throttle_cost(state, &vault, route);
    state
        .throttle
        .admit(&vault.name, class, cost, std::time::Instant::now())
        .map_err(|t| ApiError::throttled(&t, &vault.name))?;
    if !cfg!(atrest_unguarded_bench) {
        authorize(
            state,
            caller,
            &vault,
            route.operation(),
            &route.object_scope(),
        )?;
    }
    Ok(vault)
}

/// Serves one data-plane request for the vault named by the host, from an authenticated
/// caller.
pub(crate) async fn handle(
    state: &AppState,
    ctx: &mut Ctx,
    caller: &Caller,
    vault_name: &str,
    route: Option<Route<'_>>,
    parts: &Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    let api_version = param(&query, "api-version");
    atrest_core::api_version::check(api_version)
        .map_err(|e| ApiError::bad_request("BadParameter", e.to_string()))?;
    let route = route.ok_or_else(|| ApiError::no_route(&parts.method, parts.uri.path()))?;
    let vault = guard(state, ctx, caller, vault_name, &route)?;
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
    let plane = Plane {
        base: base.clone(),
        api_version: api_version.unwrap_or_default().to_owned(),
        maxresults,
    };
    let paging = |path: &str, page: Page<Secret>, versioned: bool| {
        plane.page(path, page, |s| secret_json(&base, s, versioned))
    };
    let vs = &state.vaults;
    let now = ctx.now;
    let target = |name: &str, version: Option<&str>| match version {
        Some(v) => format!("{base}/secrets/{name}/{v}"),
        None => format!("{base}/secrets/{name}"),
    };
    let resp = match route {
        Route::Key(route) => handle_key(state, ctx, &plane, &vault, route, skip, body).await?,
        Route::Certificate(route) => {
            let include_pending = param(&query, "includePending") == Some("true");
            certificates::handle_certificate(
                state,
                ctx,
                &plane,
                &vault,
                route,
                skip,
                include_pending,
                body,
            )
            .await?
        }
        Route::Set(name) => {
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
            let s = vs.get_secret(&vault, name, version, now)?;
            ctx.target_id = Some(target(&s.name, Some(&s.version)));
            json(StatusCode::OK, &secret_json(&base, &s, true))
        }
        Route::Update(name, version) => {
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
        Route::Delete(name) => json(
            StatusCode::OK,
            &secret_json(&base, &vs.delete_secret(&vault, name, now)?, true),
        ),
        Route::List => paging("secrets", vs.list_secrets(&vault, maxresults, skip)?, false),
        Route::ListVersions(name) => paging(
            &format!("secrets/{name}/versions"),
            vs.list_secret_versions(&vault, name, maxresults, skip)?,
            true,
        ),
        Route::ListDeleted => paging(
            "deletedsecrets",
            vs.list_deleted_secrets(&vault, maxresults, skip)?,
            false,
        ),
        Route::GetDeleted(name) => json(
            StatusCode::OK,
            &secret_json(&base, &vs.get_deleted_secret(&vault, name)?, true),
        ),
        Route::Recover(name) => json(
            StatusCode::OK,
            &secret_json(&base, &vs.recover_secret(&vault, name)?, true),
        ),
        Route::Purge(name) => {
            vs.purge_secret(&vault, name, now)?;
            empty(StatusCode::NO_CONTENT)
        }
        Route::Backup(name) => json(
            StatusCode::OK,
            &json!({ "value": B64.encode(vs.backup_secret(&vault, name)?) }),
        ),
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

/// What list responses need to build `nextLink`.
struct Plane {
    base: String,
    api_version: String,
    maxresults: Option<usize>,
}

impl Plane {
    /// `{"value": [...], "nextLink": ...}` for one page.
    fn page<T>(&self, path: &str, page: Page<T>, item: impl Fn(&T) -> Value) -> Resp {
        let next = page.next.map(|t| {
            let mut link = format!(
                "{}/{path}?api-version={}&$skiptoken={t}",
                self.base, self.api_version
            );
            if let Some(m) = self.maxresults {
                link.push_str(&format!("&maxresults={m}"));
            }
            link
        });
        let items: Vec<Value> = page.items.iter().map(item).collect();
        json(StatusCode::OK, &json!({ "value": items, "nextLink": next }))
    }
}

/// The `attributes` object of a secret or key.
fn attributes_json(a: &Attributes, recovery: &Recovery) -> Value {
    let mut attrs = json!({
        "enabled": a.enabled,
        "created": a.created,
        "updated": a.updated,
        "recoveryLevel": recovery.level(),
        "recoverableDays": recovery.retention_days,
    });
    if let Some(nbf) = a.not_before {
        attrs["nbf"] = nbf.into();
    }
    if let Some(exp) = a.expires {
        attrs["exp"] = exp.into();
    }
    attrs
}

/// Tags, and for a deleted bundle `recoveryId`, `deletedDate` and `scheduledPurgeDate`.
fn tags_and_deletion(
    out: &mut Map<String, Value>,
    tags: &BTreeMap<String, String>,
    recovery_id: String,
    deleted: Option<(i64, i64)>,
) {
    if !tags.is_empty() {
        out.insert("tags".into(), json!(tags));
    }
    if let Some((deleted, purge)) = deleted {
        out.insert("recoveryId".into(), Value::from(recovery_id));
        out.insert("deletedDate".into(), deleted.into());
        out.insert("scheduledPurgeDate".into(), purge.into());
    }
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
    if s.managed {
        out.insert("managed".into(), true.into());
        out.insert(
            "kid".into(),
            Value::from(format!("{base}/keys/{}/{}", s.name, s.version)),
        );
    }
    out.insert(
        "attributes".into(),
        attributes_json(&s.attributes, &s.recovery),
    );
    tags_and_deletion(
        &mut out,
        &s.tags,
        format!("{base}/deletedsecrets/{}", s.name),
        s.deleted,
    );
    Value::Object(out)
}

/// The KeyBundle (with the public JWK) or, for listings, the KeyItem JSON of `k`.
fn key_json(base: &str, k: &Key, bundle: bool) -> Value {
    let mut out = Map::new();
    let kid = format!("{base}/keys/{}/{}", k.name, k.version);
    if bundle {
        let mut jwk = Map::new();
        jwk.insert("kid".into(), kid.into());
        jwk.insert("kty".into(), k.kty.clone().into());
        jwk.insert("key_ops".into(), json!(k.key_ops));
        jwk.extend(k.public.clone());
        out.insert("key".into(), Value::Object(jwk));
    } else {
        out.insert("kid".into(), Value::from(kid));
    }
    let mut attributes = attributes_json(&k.attributes, &k.recovery);
    attributes["exportable"] = false.into();
    out.insert("attributes".into(), attributes);
    if k.managed {
        out.insert("managed".into(), true.into());
    }
    tags_and_deletion(
        &mut out,
        &k.tags,
        format!("{base}/deletedkeys/{}", k.name),
        k.deleted,
    );
    Value::Object(out)
}

/// base64url, padded or not, as Key Vault accepts it.
fn b64_field(value: Option<&str>, field: &str) -> Result<Option<Vec<u8>>, ApiError> {
    value
        .map(|v| {
            B64.decode(v.trim_end_matches('=')).map_err(|_| {
                ApiError::bad_request(
                    "BadParameter",
                    format!("The property '{field}' must be base64url."),
                )
            })
        })
        .transpose()
}

#[derive(Deserialize)]
struct CreateKeyDto {
    kty: String,
    key_size: Option<u32>,
    crv: Option<String>,
    public_exponent: Option<u32>,
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ImportKeyDto {
    key: Value,
    #[serde(rename = "Hsm", default)]
    hsm: bool,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct UpdateKeyDto {
    key_ops: Option<Vec<String>>,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct OperationDto {
    alg: String,
    value: String,
    digest: Option<String>,
    iv: Option<String>,
    aad: Option<String>,
    tag: Option<String>,
}

#[derive(Deserialize)]
struct RandomDto {
    count: usize,
}

/// Largest `count` of `POST /rng`.
const MAX_RANDOM_BYTES: usize = 128;

/// Serves the keys data plane.
async fn handle_key(
    state: &AppState,
    ctx: &mut Ctx,
    plane: &Plane,
    vault: &VaultRecord,
    route: KeyRoute<'_>,
    skip: Option<&str>,
    body: Body,
) -> Result<Resp, ApiError> {
    let base = &plane.base;
    let vs = &state.vaults;
    let now = ctx.now;
    let maxresults = plane.maxresults;
    let target = |name: &str, version: Option<&str>| match version {
        Some(v) => format!("{base}/keys/{name}/{v}"),
        None => format!("{base}/keys/{name}"),
    };
    let bundle = |k: &Key| json(StatusCode::OK, &key_json(base, k, true));
    Ok(match route {
        KeyRoute::Create(name) => {
            let dto: CreateKeyDto = parse_json(&read_body(body).await?)?;
            let req = CreateKey {
                kty: dto.kty,
                key_size: dto.key_size,
                curve: dto.crv,
                public_exponent: dto.public_exponent,
                key_ops: dto.key_ops,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let k = vs.create_key(vault, name, &req, now)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::Import(name) => {
            let dto: ImportKeyDto = parse_json(&read_body(body).await?)?;
            let req = ImportKey {
                jwk: PrivateJwk::from_value(dto.key).map_err(VaultError::from)?,
                hsm: dto.hsm,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let k = vs.import_key(vault, name, &req, now)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::Get(name, version) => {
            let k = vs.get_key(vault, name, version)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::Update(name, version) => {
            let dto: UpdateKeyDto = parse_json(&read_body(body).await?)?;
            let update = KeyUpdate {
                key_ops: dto.key_ops,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let k = vs.update_key(vault, name, version, &update, now)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::Delete(name) => bundle(&vs.delete_key(vault, name, now)?),
        KeyRoute::List => plane.page("keys", vs.list_keys(vault, maxresults, skip)?, |k| {
            unversioned_item(base, k)
        }),
        KeyRoute::ListVersions(name) => plane.page(
            &format!("keys/{name}/versions"),
            vs.list_key_versions(vault, name, maxresults, skip)?,
            |k| key_json(base, k, false),
        ),
        KeyRoute::ListDeleted => plane.page(
            "deletedkeys",
            vs.list_deleted_keys(vault, maxresults, skip)?,
            |k| unversioned_item(base, k),
        ),
        KeyRoute::GetDeleted(name) => bundle(&vs.get_deleted_key(vault, name)?),
        KeyRoute::Recover(name) => bundle(&vs.recover_key(vault, name)?),
        KeyRoute::Purge(name) => {
            vs.purge_key(vault, name, now)?;
            empty(StatusCode::NO_CONTENT)
        }
        KeyRoute::Backup(name) => json(
            StatusCode::OK,
            &json!({ "value": B64.encode(vs.backup_key(vault, name)?) }),
        ),
        KeyRoute::Restore => {
            let dto: RestoreDto = parse_json(&read_body(body).await?)?;
            let blob = b64_field(dto.value.as_deref(), "value")?.ok_or_else(|| {
                ApiError::bad_request(
                    "BadParameter",
                    "The property 'value' must be a base64url backup blob.",
                )
            })?;
            let k = vs.restore_key(vault, &blob)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::Rotate(name) => {
            let k = vs.rotate_key(vault, name, now)?;
            ctx.target_id = Some(target(&k.name, Some(&k.version)));
            bundle(&k)
        }
        KeyRoute::GetRotationPolicy(name) => {
            let mut policy = vs.get_rotation_policy(vault, name)?;
            policy["id"] = format!("{base}/keys/{name}/rotationpolicy").into();
            json(StatusCode::OK, &policy)
        }
        KeyRoute::SetRotationPolicy(name) => {
            let body: Value = parse_json(&read_body(body).await?)?;
            let mut policy = vs.set_rotation_policy(vault, name, &body, now)?;
            policy["id"] = format!("{base}/keys/{name}/rotationpolicy").into();
            json(StatusCode::OK, &policy)
        }
        KeyRoute::Random => {
            let dto: RandomDto = parse_json(&read_body(body).await?)?;
            if !(1..=MAX_RANDOM_BYTES).contains(&dto.count) {
                return Err(ApiError::bad_request(
                    "BadParameter",
                    format!("The count must be from 1 to {MAX_RANDOM_BYTES}."),
                ));
            }
            json(
                StatusCode::OK,
                &json!({ "value": B64.encode(atrest_crypto::random_bytes(dto.count)) }),
            )
        }
        KeyRoute::Operation(name, version, op) => {
            let dto: OperationDto = parse_json(&read_body(body).await?)?;
            let input = OperationInput {
                value: Zeroizing::new(b64_field(Some(&dto.value), "value")?.unwrap_or_default()),
                digest: b64_field(dto.digest.as_deref(), "digest")?,
                iv: b64_field(dto.iv.as_deref(), "iv")?,
                aad: b64_field(dto.aad.as_deref(), "aad")?,
                tag: b64_field(dto.tag.as_deref(), "tag")?,
                alg: dto.alg,
            };
            let (k, output) = vs.key_operation(vault, name, version, op, &input, now)?;
            let kid = format!("{base}/keys/{}/{}", k.name, k.version);
            ctx.target_id = Some(kid.clone());
            let body = match output {
                OperationOutput::Encrypted(e) => {
                    let mut out = json!({ "kid": kid, "value": B64.encode(&e.ciphertext) });
                    if let Some(iv) = e.iv {
                        out["iv"] = B64.encode(iv).into();
                    }
                    if let Some(tag) = e.tag {
                        out["tag"] = B64.encode(tag).into();
                    }
                    if let Some(aad) = &input.aad {
                        out["aad"] = B64.encode(aad).into();
                    }
                    out
                }
                OperationOutput::Plaintext(p) => json!({ "kid": kid, "value": B64.encode(&*p) }),
                OperationOutput::Signature(sig) => json!({ "kid": kid, "value": B64.encode(sig) }),
                OperationOutput::Verified(ok) => json!({ "value": ok }),
            };
            json(StatusCode::OK, &body)
        }
    })
}

/// A KeyItem whose `kid` names the key without a version, as key listings do.
fn unversioned_item(base: &str, k: &Key) -> Value {
    let mut item = key_json(base, k, false);
    item["kid"] = Value::from(format!("{base}/keys/{}", k.name));
    item
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
        let k = |m: Method, p| match Route::parse(&m, p) {
            Some(Route::Key(route)) => Some(route),
            _ => None,
        };
        assert_eq!(k(Method::GET, "/keys/k1/"), Some(KeyRoute::Get("k1", None)));
        assert_eq!(
            k(Method::POST, "/keys/k1/create"),
            Some(KeyRoute::Create("k1"))
        );
        assert_eq!(
            k(Method::POST, "/keys/k1/v1/wrapkey"),
            Some(KeyRoute::Operation("k1", Some("v1"), KeyOperation::WrapKey))
        );
        assert_eq!(
            k(Method::POST, "/keys/k1//sign"),
            Some(KeyRoute::Operation("k1", None, KeyOperation::Sign))
        );
        assert_eq!(k(Method::POST, "/keys/k1/v1/launch"), None);
        assert_eq!(k(Method::POST, "/keys/restore"), Some(KeyRoute::Restore));
        assert_eq!(
            k(Method::GET, "/keys/k1/rotationpolicy"),
            Some(KeyRoute::GetRotationPolicy("k1"))
        );
        assert_eq!(
            k(Method::PUT, "/keys/k1/rotationpolicy"),
            Some(KeyRoute::SetRotationPolicy("k1"))
        );
        assert_eq!(
            k(Method::POST, "/deletedkeys/k1/recover"),
            Some(KeyRoute::Recover("k1"))
        );
        assert_eq!(k(Method::GET, "/certificates/c1"), None);
        assert!(matches!(
            r(Method::GET, "/certificates/c1"),
            Some(Route::Certificate(CertRoute::Get("c1", None)))
        ));
    }
}
