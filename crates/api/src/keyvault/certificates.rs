//! The certificates data plane (`/certificates/…`, `/deletedcertificates/…`) in the
//! shapes of Key Vault's `certificates.json` (7.5 and the dated versions the SDKs send).

use std::collections::BTreeMap;

use atrest_core::operation::Operation;
use atrest_core::vault::VaultRecord;
use atrest_vault::{
    thumbprint_text, Certificate, CertificateChange, CertificateImport, CertificateOperation,
    Contact, Issuer, IssuerChange,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{attributes_json, tags_and_deletion, AttributesDto, Plane, RestoreDto};
use crate::body::{parse_json, read_body};
use crate::error::ApiError;
use crate::http::{empty, json, Body, Resp};
use crate::pipeline::Ctx;
use crate::state::AppState;

/// Routes under `/certificates` and `/deletedcertificates`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CertRoute<'a> {
    Create(&'a str),
    Import(&'a str),
    Get(&'a str, Option<&'a str>),
    Update(&'a str, Option<&'a str>),
    Delete(&'a str),
    List,
    ListVersions(&'a str),
    ListDeleted,
    GetDeleted(&'a str),
    Recover(&'a str),
    Purge(&'a str),
    GetPolicy(&'a str),
    UpdatePolicy(&'a str),
    GetPending(&'a str),
    Merge(&'a str),
    CancelPending(&'a str),
    DeletePending(&'a str),
    Backup(&'a str),
    Restore,
    SetContacts,
    GetContacts,
    DeleteContacts,
    ListIssuers,
    SetIssuer(&'a str),
    UpdateIssuer(&'a str),
    GetIssuer(&'a str),
    DeleteIssuer(&'a str),
}

/// Names below `/certificates` that are collections of their own, not certificates.
const RESERVED: [&str; 4] = ["contacts", "issuers", "import", "restore"];

impl CertRoute<'_> {
    pub(crate) fn parse<'a>(method: &str, segments: &[&'a str]) -> Option<CertRoute<'a>> {
        let version = |v: &'a str| (!v.is_empty()).then_some(v);
        match (method, segments) {
            ("POST", ["certificates", "restore"]) => return Some(CertRoute::Restore),
            ("PUT", ["certificates", "contacts"]) => return Some(CertRoute::SetContacts),
            ("GET", ["certificates", "contacts"]) => return Some(CertRoute::GetContacts),
            ("DELETE", ["certificates", "contacts"]) => return Some(CertRoute::DeleteContacts),
            ("GET", ["certificates", "issuers"] | ["certificates", "issuers", ""]) => {
                return Some(CertRoute::ListIssuers)
            }
            ("PUT", ["certificates", "issuers", name]) => return Some(CertRoute::SetIssuer(name)),
            ("PATCH", ["certificates", "issuers", name]) => {
                return Some(CertRoute::UpdateIssuer(name))
            }
            ("GET", ["certificates", "issuers", name]) => return Some(CertRoute::GetIssuer(name)),
            ("DELETE", ["certificates", "issuers", name]) => {
                return Some(CertRoute::DeleteIssuer(name))
            }
            _ => {}
        }
        if segments.first() == Some(&"certificates")
            && segments
                .get(1)
                .is_some_and(|n| RESERVED.iter().any(|r| r.eq_ignore_ascii_case(n)))
        {
            return None;
        }
        Some(match (method, segments) {
            ("GET", ["certificates"] | ["certificates", ""]) => CertRoute::List,
            ("POST", ["certificates", name, "create"]) => CertRoute::Create(name),
            ("POST", ["certificates", name, "import"]) => CertRoute::Import(name),
            ("GET", ["certificates", name, "versions"]) => CertRoute::ListVersions(name),
            ("GET", ["certificates", name, "policy"]) => CertRoute::GetPolicy(name),
            ("PATCH", ["certificates", name, "policy"]) => CertRoute::UpdatePolicy(name),
            ("GET", ["certificates", name, "pending"]) => CertRoute::GetPending(name),
            ("PATCH", ["certificates", name, "pending"]) => CertRoute::CancelPending(name),
            ("DELETE", ["certificates", name, "pending"]) => CertRoute::DeletePending(name),
            ("POST", ["certificates", name, "pending", "merge"]) => CertRoute::Merge(name),
            ("POST", ["certificates", name, "backup"]) => CertRoute::Backup(name),
            ("GET", ["certificates", name]) => CertRoute::Get(name, None),
            ("PATCH", ["certificates", name]) => CertRoute::Update(name, None),
            ("DELETE", ["certificates", name]) => CertRoute::Delete(name),
            ("GET", ["certificates", name, v]) => CertRoute::Get(name, version(v)),
            ("PATCH", ["certificates", name, v]) => CertRoute::Update(name, version(v)),
            ("GET", ["deletedcertificates"] | ["deletedcertificates", ""]) => {
                CertRoute::ListDeleted
            }
            ("GET", ["deletedcertificates", name]) => CertRoute::GetDeleted(name),
            ("DELETE", ["deletedcertificates", name]) => CertRoute::Purge(name),
            ("POST", ["deletedcertificates", name, "recover"]) => CertRoute::Recover(name),
            _ => return None,
        })
    }

    /// The certificate the route addresses, if one.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            CertRoute::Create(n)
            | CertRoute::Import(n)
            | CertRoute::Get(n, _)
            | CertRoute::Update(n, _)
            | CertRoute::Delete(n)
            | CertRoute::ListVersions(n)
            | CertRoute::GetDeleted(n)
            | CertRoute::Recover(n)
            | CertRoute::Purge(n)
            | CertRoute::GetPolicy(n)
            | CertRoute::UpdatePolicy(n)
            | CertRoute::GetPending(n)
            | CertRoute::Merge(n)
            | CertRoute::CancelPending(n)
            | CertRoute::DeletePending(n)
            | CertRoute::Backup(n) => Some(n),
            CertRoute::List
            | CertRoute::ListDeleted
            | CertRoute::Restore
            | CertRoute::SetContacts
            | CertRoute::GetContacts
            | CertRoute::DeleteContacts
            | CertRoute::ListIssuers
            | CertRoute::SetIssuer(_)
            | CertRoute::UpdateIssuer(_)
            | CertRoute::GetIssuer(_)
            | CertRoute::DeleteIssuer(_) => None,
        }
    }

    /// The version the path names, if one.
    pub(crate) fn version(&self) -> Option<&str> {
        match self {
            CertRoute::Get(_, v) | CertRoute::Update(_, v) => *v,
            _ => None,
        }
    }

    pub(crate) fn operation(&self) -> Operation {
        match self {
            CertRoute::Create(_) => Operation::CertificateCreate,
            CertRoute::Import(_) => Operation::CertificateImport,
            CertRoute::Get(..) => Operation::CertificateGet,
            CertRoute::Update(..) => Operation::CertificateUpdate,
            CertRoute::Delete(_) => Operation::CertificateDelete,
            CertRoute::List => Operation::CertificateList,
            CertRoute::ListVersions(_) => Operation::CertificateListVersions,
            CertRoute::ListDeleted => Operation::CertificateListDeleted,
            CertRoute::GetDeleted(_) => Operation::CertificateGetDeleted,
            CertRoute::Recover(_) => Operation::CertificateRecover,
            CertRoute::Purge(_) => Operation::CertificatePurge,
            CertRoute::GetPolicy(_) => Operation::CertificatePolicyGet,
            CertRoute::UpdatePolicy(_) => Operation::CertificatePolicyUpdate,
            CertRoute::GetPending(_) => Operation::CertificatePendingGet,
            CertRoute::Merge(_) => Operation::CertificatePendingMerge,
            CertRoute::CancelPending(_) => Operation::CertificatePendingUpdate,
            CertRoute::DeletePending(_) => Operation::CertificatePendingDelete,
            CertRoute::Backup(_) => Operation::CertificateBackup,
            CertRoute::Restore => Operation::CertificateRestore,
            CertRoute::SetContacts => Operation::CertificateContactsSet,
            CertRoute::GetContacts => Operation::CertificateContactsGet,
            CertRoute::DeleteContacts => Operation::CertificateContactsDelete,
            CertRoute::ListIssuers => Operation::CertificateIssuersList,
            CertRoute::SetIssuer(_) => Operation::CertificateIssuerSet,
            CertRoute::UpdateIssuer(_) => Operation::CertificateIssuerUpdate,
            CertRoute::GetIssuer(_) => Operation::CertificateIssuerGet,
            CertRoute::DeleteIssuer(_) => Operation::CertificateIssuerDelete,
        }
    }
}

#[derive(Deserialize, Default)]
struct ContactsDto {
    contacts: Option<Vec<Contact>>,
}

#[derive(Deserialize, Default)]
struct CredentialsDto {
    account_id: Option<String>,
    pwd: Option<String>,
}

#[derive(Deserialize, Default)]
struct IssuerDto {
    provider: Option<String>,
    credentials: Option<CredentialsDto>,
    org_details: Option<Value>,
    attributes: Option<AttributesDto>,
}

impl IssuerDto {
    fn into_change(self) -> IssuerChange {
        let credentials = self.credentials.unwrap_or_default();
        IssuerChange {
            provider: self.provider,
            account_id: credentials.account_id,
            password: credentials.pwd.map(zeroize::Zeroizing::new),
            org_details: self.org_details,
            enabled: self.attributes.and_then(|a| a.enabled),
        }
    }
}

fn contacts_json(base: &str, contacts: &[Contact]) -> Value {
    json!({ "id": format!("{base}/certificates/contacts"), "contacts": contacts })
}

fn issuer_json(base: &str, i: &Issuer) -> Value {
    let mut out = json!({
        "id": format!("{base}/certificates/issuers/{}", i.name),
        "provider": i.provider,
        "attributes": { "enabled": i.enabled, "created": i.created, "updated": i.updated },
    });
    if let Some(account) = &i.account_id {
        out["credentials"] = json!({ "account_id": account });
    }
    if !i.org_details.is_null() {
        out["org_details"] = i.org_details.clone();
    }
    out
}

#[derive(Deserialize, Default)]
struct MergeDto {
    x5c: Option<Vec<String>>,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
}

/// `CertificateImportParameters`.
#[derive(Deserialize, Default)]
struct ImportDto {
    value: Option<String>,
    pwd: Option<String>,
    policy: Option<Value>,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "preserveCertOrder")]
    preserve_cert_order: Option<bool>,
}

#[derive(Deserialize, Default)]
struct CancelDto {
    cancellation_requested: Option<bool>,
}

#[derive(Deserialize, Default)]
struct ChangeDto {
    policy: Option<Value>,
    attributes: Option<AttributesDto>,
    tags: Option<BTreeMap<String, String>>,
}

impl ChangeDto {
    fn into_change(self) -> CertificateChange {
        CertificateChange {
            policy: self.policy,
            tags: self.tags,
            attributes: self.attributes.unwrap_or_default().into(),
        }
    }
}

/// A policy as Key Vault shows it, with its `id`.
fn policy_json(base: &str, name: &str, policy: &Value) -> Value {
    let mut policy = policy.clone();
    if policy.is_object() {
        policy["id"] = Value::from(format!("{base}/certificates/{name}/policy"));
    }
    policy
}

/// The CertificateBundle (or DeletedCertificateBundle) JSON of `c`.
fn bundle_json(base: &str, c: &Certificate) -> Value {
    let mut out = Map::new();
    let id = |collection: &str| format!("{base}/{collection}/{}/{}", c.name, c.version);
    out.insert("id".into(), id("certificates").into());
    out.insert("kid".into(), id("keys").into());
    out.insert("sid".into(), id("secrets").into());
    out.insert("x5t".into(), thumbprint_text(&c.cer).into());
    out.insert("cer".into(), STANDARD.encode(&c.cer).into());
    out.insert("contentType".into(), c.content_type.clone().into());
    out.insert(
        "attributes".into(),
        attributes_json(&c.attributes, &c.recovery),
    );
    if !c.policy.is_null() {
        out.insert("policy".into(), policy_json(base, &c.name, &c.policy));
    }
    tags_and_deletion(
        &mut out,
        &c.tags,
        format!("{base}/deletedcertificates/{}", c.name),
        c.deleted,
    );
    Value::Object(out)
}

/// A CertificateItem (or DeletedCertificateItem), with a versioned id when `versioned`.
fn item_json(base: &str, c: &Certificate, versioned: bool) -> Value {
    let mut out = Map::new();
    let id = if versioned {
        format!("{base}/certificates/{}/{}", c.name, c.version)
    } else {
        format!("{base}/certificates/{}", c.name)
    };
    out.insert("id".into(), id.into());
    if !c.cer.is_empty() {
        out.insert("x5t".into(), thumbprint_text(&c.cer).into());
    }
    out.insert(
        "attributes".into(),
        attributes_json(&c.attributes, &c.recovery),
    );
    tags_and_deletion(
        &mut out,
        &c.tags,
        format!("{base}/deletedcertificates/{}", c.name),
        c.deleted,
    );
    Value::Object(out)
}

/// The CertificateOperation JSON.
fn operation_json(base: &str, op: &CertificateOperation) -> Value {
    json!({
        "id": format!("{base}/certificates/{}/pending", op.name),
        "issuer": { "name": op.issuer },
        "csr": STANDARD.encode(&op.csr),
        "cancellation_requested": op.cancellation_requested,
        "status": op.status,
        "status_details": op.status_details,
        "target": format!("{base}/certificates/{}", op.name),
        "request_id": op.request_id,
    })
}

/// Serves the certificates data plane.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handle_certificate(
    state: &AppState,
    ctx: &mut Ctx,
    plane: &Plane,
    vault: &VaultRecord,
    route: CertRoute<'_>,
    skip: Option<&str>,
    include_pending: bool,
    body: Body,
) -> Result<Resp, ApiError> {
    let base = &plane.base;
    let vs = &state.vaults;
    let now = ctx.now;
    let maxresults = plane.maxresults;
    let versioned = |c: &Certificate| format!("{base}/certificates/{}/{}", c.name, c.version);
    Ok(match route {
        CertRoute::Create(name) => {
            let dto: ChangeDto = parse_json(&read_body(body).await?)?;
            let op = vs.create_certificate(vault, name, &dto.into_change(), now)?;
            let mut resp = json(StatusCode::ACCEPTED, &operation_json(base, &op));
            let location = format!(
                "{base}/certificates/{name}/pending?api-version={}",
                plane.api_version
            );
            if let Ok(value) = hyper::header::HeaderValue::from_str(&location) {
                resp.headers_mut().insert("Location", value);
            }
            resp
        }
        CertRoute::Import(name) => {
            let dto: ImportDto = parse_json(&read_body(body).await?)?;
            let value = zeroize::Zeroizing::new(dto.value.unwrap_or_default());
            let password = zeroize::Zeroizing::new(dto.pwd.unwrap_or_default());
            if value.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "BadParameter",
                    "The certificate to import ('value') is required.",
                ));
            }
            let import = CertificateImport {
                value,
                password,
                preserve_order: dto.preserve_cert_order.unwrap_or(false),
            };
            let change = CertificateChange {
                policy: dto.policy,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let c = vs.import_certificate(vault, name, &import, &change, now)?;
            ctx.target_id = Some(versioned(&c));
            json(StatusCode::OK, &bundle_json(base, &c))
        }
        CertRoute::Get(name, version) => {
            let c = vs.get_certificate(vault, name, version)?;
            ctx.target_id = Some(versioned(&c));
            json(StatusCode::OK, &bundle_json(base, &c))
        }
        CertRoute::Update(name, version) => {
            let dto: ChangeDto = parse_json(&read_body(body).await?)?;
            let c = vs.update_certificate(vault, name, version, &dto.into_change(), now)?;
            ctx.target_id = Some(versioned(&c));
            json(StatusCode::OK, &bundle_json(base, &c))
        }
        CertRoute::Delete(name) => json(
            StatusCode::OK,
            &bundle_json(base, &vs.delete_certificate(vault, name, now)?),
        ),
        CertRoute::List => plane.page(
            "certificates",
            vs.list_certificates(vault, maxresults, skip, include_pending)?,
            |c| item_json(base, c, false),
        ),
        CertRoute::ListVersions(name) => plane.page(
            &format!("certificates/{name}/versions"),
            vs.list_certificate_versions(vault, name, maxresults, skip)?,
            |c| item_json(base, c, true),
        ),
        CertRoute::ListDeleted => plane.page(
            "deletedcertificates",
            vs.list_deleted_certificates(vault, maxresults, skip)?,
            |c| item_json(base, c, false),
        ),
        CertRoute::GetDeleted(name) => json(
            StatusCode::OK,
            &bundle_json(base, &vs.get_deleted_certificate(vault, name)?),
        ),
        CertRoute::Recover(name) => json(
            StatusCode::OK,
            &bundle_json(base, &vs.recover_certificate(vault, name)?),
        ),
        CertRoute::Purge(name) => {
            vs.purge_certificate(vault, name, now)?;
            empty(StatusCode::NO_CONTENT)
        }
        CertRoute::GetPolicy(name) => json(
            StatusCode::OK,
            &policy_json(base, name, &vs.certificate_policy(vault, name)?),
        ),
        CertRoute::UpdatePolicy(name) => {
            let patch: Value = parse_json(&read_body(body).await?)?;
            let policy = vs.update_certificate_policy(vault, name, &patch, now)?;
            json(StatusCode::OK, &policy_json(base, name, &policy))
        }
        CertRoute::GetPending(name) => json(
            StatusCode::OK,
            &operation_json(base, &vs.certificate_operation(vault, name)?),
        ),
        CertRoute::Merge(name) => {
            let dto: MergeDto = parse_json(&read_body(body).await?)?;
            let chain = dto
                .x5c
                .unwrap_or_default()
                .iter()
                .map(|c| STANDARD.decode(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::bad_request(
                        "BadParameter",
                        "Each x5c entry must be a base64 DER certificate.",
                    )
                })?;
            let change = CertificateChange {
                policy: None,
                tags: dto.tags,
                attributes: dto.attributes.unwrap_or_default().into(),
            };
            let c = vs.merge_certificate(vault, name, &chain, &change, now)?;
            ctx.target_id = Some(versioned(&c));
            json(StatusCode::CREATED, &bundle_json(base, &c))
        }
        CertRoute::CancelPending(name) => {
            let dto: CancelDto = parse_json(&read_body(body).await?)?;
            let op = if dto.cancellation_requested == Some(true) {
                vs.cancel_certificate_operation(vault, name)?
            } else {
                vs.certificate_operation(vault, name)?
            };
            json(StatusCode::OK, &operation_json(base, &op))
        }
        CertRoute::SetContacts => {
            let dto: ContactsDto = parse_json(&read_body(body).await?)?;
            let set = vs.set_certificate_contacts(vault, &dto.contacts.unwrap_or_default())?;
            json(StatusCode::OK, &contacts_json(base, &set))
        }
        CertRoute::GetContacts => json(
            StatusCode::OK,
            &contacts_json(base, &vs.certificate_contacts(vault)?),
        ),
        CertRoute::DeleteContacts => json(
            StatusCode::OK,
            &contacts_json(base, &vs.delete_certificate_contacts(vault)?),
        ),
        CertRoute::ListIssuers => plane.page(
            "certificates/issuers",
            vs.list_certificate_issuers(vault)?,
            |i| json!({ "id": format!("{base}/certificates/issuers/{}", i.name), "provider": i.provider }),
        ),
        CertRoute::SetIssuer(name) | CertRoute::UpdateIssuer(name) => {
            let replace = matches!(route, CertRoute::SetIssuer(_));
            let dto: IssuerDto = parse_json(&read_body(body).await?)?;
            let issuer = vs.set_certificate_issuer(vault, name, &dto.into_change(), replace, now)?;
            json(StatusCode::OK, &issuer_json(base, &issuer))
        }
        CertRoute::GetIssuer(name) => json(
            StatusCode::OK,
            &issuer_json(base, &vs.certificate_issuer(vault, name)?),
        ),
        CertRoute::DeleteIssuer(name) => json(
            StatusCode::OK,
            &issuer_json(base, &vs.delete_certificate_issuer(vault, name)?),
        ),
        CertRoute::Backup(name) => json(
            StatusCode::OK,
            &json!({ "value": URL_SAFE_NO_PAD.encode(vs.backup_certificate(vault, name)?) }),
        ),
        CertRoute::Restore => {
            let dto: RestoreDto = parse_json(&read_body(body).await?)?;
            let blob = dto
                .value
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "BadParameter",
                        "The property 'value' must be a base64url backup blob.",
                    )
                })?;
            let c = vs.restore_certificate(vault, &blob)?;
            ctx.target_id = Some(versioned(&c));
            json(StatusCode::OK, &bundle_json(base, &c))
        }
        CertRoute::DeletePending(name) => json(
            StatusCode::OK,
            &operation_json(base, &vs.delete_certificate_operation(vault, name)?),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("POST", "/certificates/c1/create", Some("Create(\"c1\")")),
            ("POST", "/certificates/c1/import", Some("Import(\"c1\")")),
            (
                "GET",
                "/certificates/c1/import",
                Some("Get(\"c1\", Some(\"import\"))"),
            ),
            ("GET", "/certificates/c1/", Some("Get(\"c1\", None)")),
            (
                "GET",
                "/certificates/c1/abc",
                Some("Get(\"c1\", Some(\"abc\"))"),
            ),
            (
                "GET",
                "/certificates/c1/pending",
                Some("GetPending(\"c1\")"),
            ),
            (
                "POST",
                "/certificates/c1/pending/merge",
                Some("Merge(\"c1\")"),
            ),
            (
                "PATCH",
                "/certificates/c1/policy",
                Some("UpdatePolicy(\"c1\")"),
            ),
            (
                "POST",
                "/deletedcertificates/c1/recover",
                Some("Recover(\"c1\")"),
            ),
            ("POST", "/certificates/restore", Some("Restore")),
            ("GET", "/certificates/contacts", Some("GetContacts")),
            ("GET", "/certificates/issuers/i1", Some("GetIssuer(\"i1\")")),
            ("GET", "/certificates/import", None),
            ("PUT", "/certificates/c1", None),
        ];
        for (method, path, expected) in cases {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let parsed = CertRoute::parse(method, &segments).map(|r| format!("{r:?}"));
            assert_eq!(parsed.as_deref(), expected, "{method} {path}");
        }
    }
}
