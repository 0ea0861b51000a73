//! Certificates: the third object type. A version shares its name and version id with a
//! key (which does its cryptography through the keys API) and a secret (which holds the
//! certificate, and its private key when exportable, as PKCS#12 or PEM); both are marked
//! `managed` and change only with the certificate. The certificate's policy (and its last
//! issuance operation) is kept with the object. Issuer `Self` signs at once.

use std::collections::BTreeMap;

use atrest_core::attributes::{Attributes, Recovery};
use atrest_core::names::check_object_name;
use atrest_core::vault::{ObjectKind, VaultRecord};
use atrest_crypto::certificates::{
    certificate_info, certificate_template, parse_oid, pem_bundle, pkcs12, read_import,
    request_public_key, self_signed_certificate, signing_request, CertificateTemplate,
    ImportFormat, KEY_USAGES,
};
use atrest_crypto::{random_hex, random_uuid, Curve, KeySpec};
use atrest_store::{Tx, VersionRow};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::objects::{
    attributes, check_tags, edit_tags_and_attributes, is_managed, live_state, live_version,
    name_for_new_version, payload_aad, recovery, AttributesPatch, Page, Stored,
};
use crate::{VaultError, Vaults};

const KIND: ObjectKind = ObjectKind::Certificate;
/// The kinds a certificate's name spans, itself first.
const KINDS: [ObjectKind; 3] = [ObjectKind::Certificate, ObjectKind::Key, ObjectKind::Secret];

/// The issuer that signs at once.
const SELF: &str = "Self";
/// The issuer whose certificate a client merges.
const UNKNOWN: &str = "Unknown";

/// `application/x-pkcs12`, the default content type of a certificate's secret.
pub const PKCS12: &str = "application/x-pkcs12";
/// `application/x-pem-file`.
pub const PEM: &str = "application/x-pem-file";

/// One certificate version as the data plane returns it.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Name, with the case it was created with.
    pub name: String,
    /// Version id (also the key's and the secret's).
    pub version: String,
    /// The DER certificate.
    pub cer: Vec<u8>,
    /// The secret's content type.
    pub content_type: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Attributes (`nbf`/`exp` are the certificate's validity).
    pub attributes: Attributes,
    /// The vault's recovery settings.
    pub recovery: Recovery,
    /// `(deletedDate, scheduledPurgeDate)` of a soft-deleted certificate.
    pub deleted: Option<(i64, i64)>,
    /// The certificate's policy, as Key Vault shows it (without `id`).
    pub policy: Value,
}

/// A certificate's issuance operation (`/certificates/{name}/pending`).
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateOperation {
    /// The certificate's name.
    pub name: String,
    /// `issuer.name`.
    pub issuer: String,
    /// The PKCS#10 request (DER).
    pub csr: Vec<u8>,
    /// `inProgress`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `status_details`.
    pub status_details: String,
    /// `request_id`.
    pub request_id: String,
    /// `cancellation_requested`.
    pub cancellation_requested: bool,
}

/// What a create or update may give besides the policy.
#[derive(Debug, Clone, Default)]
pub struct CertificateChange {
    /// The policy, as Key Vault takes it (members left out take their defaults).
    pub policy: Option<Value>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Attributes (`enabled`).
    pub attributes: AttributesPatch,
}

/// The content of a certificate import.
pub struct CertificateImport {
    /// `value`: base64 of a PKCS#12 file or of PEM text, or the PEM text itself.
    pub value: zeroize::Zeroizing<String>,
    /// `pwd`: the PKCS#12 file's (or the encrypted PEM key's) password.
    pub password: zeroize::Zeroizing<String>,
    /// `preserveCertOrder`: keep the chain in the content's order.
    pub preserve_order: bool,
}

impl std::fmt::Debug for CertificateImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CertificateImport(<redacted>, preserve_order: {})",
            self.preserve_order
        )
    }
}

/// The bytes an import's `value` carries: PEM text as it is, anything else base64
/// (whitespace allowed, as files wrap it).
fn import_bytes(value: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
    if value.contains("-----BEGIN") {
        return Ok(zeroize::Zeroizing::new(value.as_bytes().to_vec()));
    }
    let compact: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(value.chars().filter(|c| !c.is_ascii_whitespace()).collect());
    STANDARD
        .decode(compact.as_bytes())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| {
            bad("The certificate to import ('value') must be base64 of a PKCS#12 file or of PEM text.")
        })
}

/// A policy, checked and with its defaults.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    kty: String,
    key_size: Option<u32>,
    curve: Option<String>,
    exportable: bool,
    reuse_key: bool,
    content_type: String,
    template: CertificateTemplate,
    validity_months: u32,
    lifetime_actions: Value,
    issuer: String,
    issuer_fields: Value,
    enabled: bool,
}

fn bad(message: impl Into<String>) -> VaultError {
    VaultError::BadParameter(message.into())
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, VaultError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("'{what}' must be a list of strings.")))
            })
            .collect(),
        Some(_) => Err(bad(format!("'{what}' must be a list of strings."))),
    }
}

impl Policy {
    /// A policy from Key Vault's JSON (`key_props`, `secret_props`, `x509_props`,
    /// `lifetime_actions`, `issuer`, `attributes`), over `base` for members it leaves out.
    fn parse(given: &Value, base: Option<&Policy>) -> Result<Policy, VaultError> {
        if !given.is_object() && !given.is_null() {
            return Err(bad("The certificate policy must be an object."));
        }
        let section = |name: &str| given.get(name).filter(|v| !v.is_null());
        let key = section("key_props");
        let str_of = |v: Option<&Value>, member: &str| {
            v.and_then(|s| s.get(member))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let kty = str_of(key, "kty")
            .or_else(|| base.map(|b| b.kty.clone()))
            .unwrap_or_else(|| "RSA".into());
        let is_ec = kty.starts_with("EC");
        if !matches!(kty.as_str(), "RSA" | "RSA-HSM" | "EC" | "EC-HSM") {
            return Err(bad(format!(
                "The key type '{kty}' is not supported for certificates: use RSA or EC."
            )));
        }
        let key_size = key
            .and_then(|k| k.get("key_size"))
            .and_then(Value::as_u64)
            .map(|n| n as u32)
            .or_else(|| base.and_then(|b| b.key_size).filter(|_| !is_ec));
        let curve =
            str_of(key, "crv").or_else(|| base.and_then(|b| b.curve.clone()).filter(|_| is_ec));
        match (is_ec, key_size, curve.as_deref()) {
            (false, Some(2048 | 3072 | 4096) | None, None) => {}
            (false, Some(n), _) if !matches!(n, 2048 | 3072 | 4096) => {
                return Err(bad(format!(
                    "The RSA key size {n} is not supported: use 2048, 3072 or 4096."
                )))
            }
            (false, _, Some(_)) => return Err(bad("'crv' applies only to EC keys.")),
            (true, None, None | Some("P-256" | "P-384" | "P-521")) => {}
            (true, Some(_), _) => {
                return Err(bad("'key_size' does not apply to EC keys; use 'crv'."))
            }
            (true, None, Some(c)) => {
                return Err(bad(format!(
                    "The curve '{c}' is not supported for certificates: use P-256, P-384 or P-521."
                )))
            }
            _ => {}
        }
        let flag = |member: &str, default: bool| {
            key.and_then(|k| k.get(member))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        let exportable = flag("exportable", base.is_none_or(|b| b.exportable));
        let reuse_key = flag("reuse_key", base.is_some_and(|b| b.reuse_key));
        let content_type = str_of(section("secret_props"), "contentType")
            .or_else(|| base.map(|b| b.content_type.clone()))
            .unwrap_or_else(|| PKCS12.into());
        if content_type != PKCS12 && content_type != PEM {
            return Err(bad(format!(
                "The content type '{content_type}' is not supported: use {PKCS12} or {PEM}."
            )));
        }
        let x509 = section("x509_props");
        let base_template = base.map(|b| b.template.clone()).unwrap_or_default();
        let sans = x509.and_then(|x| x.get("sans")).filter(|v| !v.is_null());
        let or_base = |given: Vec<String>, present: bool, old: &Vec<String>| {
            if present {
                given
            } else {
                old.clone()
            }
        };
        let present =
            |v: Option<&Value>, m: &str| v.is_some_and(|v| v.get(m).is_some_and(|x| !x.is_null()));
        let template = CertificateTemplate {
            subject: str_of(x509, "subject").unwrap_or(base_template.subject.clone()),
            dns_names: or_base(
                strings(sans.and_then(|s| s.get("dns_names")), "dns_names")?,
                present(sans, "dns_names"),
                &base_template.dns_names,
            ),
            emails: or_base(
                strings(sans.and_then(|s| s.get("emails")), "emails")?,
                present(sans, "emails"),
                &base_template.emails,
            ),
            upns: or_base(
                strings(sans.and_then(|s| s.get("upns")), "upns")?,
                present(sans, "upns"),
                &base_template.upns,
            ),
            ip_addresses: or_base(
                strings(sans.and_then(|s| s.get("ipAddresses")), "ipAddresses")?,
                present(sans, "ipAddresses"),
                &base_template.ip_addresses,
            ),
            uris: or_base(
                strings(sans.and_then(|s| s.get("uris")), "uris")?,
                present(sans, "uris"),
                &base_template.uris,
            ),
            key_usage: if present(x509, "key_usage") {
                strings(x509.and_then(|x| x.get("key_usage")), "key_usage")?
            } else if base.is_some() {
                base_template.key_usage.clone()
            } else if is_ec {
                vec!["digitalSignature".into(), "keyAgreement".into()]
            } else {
                vec!["digitalSignature".into(), "keyEncipherment".into()]
            },
            ekus: if present(x509, "ekus") {
                strings(x509.and_then(|x| x.get("ekus")), "ekus")?
            } else if base.is_some() {
                base_template.ekus.clone()
            } else {
                vec!["1.3.6.1.5.5.7.3.1".into(), "1.3.6.1.5.5.7.3.2".into()]
            },
            not_before: 0,
            not_after: 0,
        };
        for usage in &template.key_usage {
            if !KEY_USAGES.iter().any(|k| k.eq_ignore_ascii_case(usage)) {
                return Err(bad(format!(
                    "'{usage}' is not a key usage: use one of {}.",
                    KEY_USAGES.join(", ")
                )));
            }
        }
        for eku in &template.ekus {
            if parse_oid(eku).is_none() {
                return Err(bad(format!(
                    "The extended key usage '{eku}' is not an object identifier."
                )));
            }
        }
        let validity_months = x509
            .and_then(|x| x.get("validity_months"))
            .and_then(Value::as_u64)
            .map(|m| m as u32)
            .or_else(|| base.map(|b| b.validity_months))
            .unwrap_or(12);
        if !(1..=1200).contains(&validity_months) {
            return Err(bad(format!(
                "validity_months {validity_months} is out of range: 1 to 1200."
            )));
        }
        let issuer_section = section("issuer");
        let issuer = str_of(issuer_section, "name")
            .or_else(|| base.map(|b| b.issuer.clone()))
            .ok_or_else(|| bad("The certificate policy needs an issuer name (issuer.name): Self, Unknown or a registered issuer."))?;
        let issuer = if issuer.eq_ignore_ascii_case(SELF) {
            SELF.to_owned()
        } else if issuer.eq_ignore_ascii_case(UNKNOWN) {
            UNKNOWN.to_owned()
        } else {
            check_object_name(&issuer)
                .map_err(|_| bad(format!("'{issuer}' is not an issuer name.")))?;
            issuer
        };
        let mut issuer_fields = issuer_section
            .cloned()
            .unwrap_or_else(|| base.map_or(json!({}), |b| b.issuer_fields.clone()));
        issuer_fields["name"] = json!(issuer);
        if template.subject.trim().is_empty()
            && [
                &template.dns_names,
                &template.emails,
                &template.upns,
                &template.ip_addresses,
                &template.uris,
            ]
            .iter()
            .all(|v| v.is_empty())
        {
            return Err(bad(
                "The certificate policy needs a subject or subject alternative names (x509_props).",
            ));
        }
        let lifetime_actions = match section("lifetime_actions") {
            Some(v @ Value::Array(_)) => v.clone(),
            Some(_) => return Err(bad("'lifetime_actions' must be a list.")),
            None => base.map_or_else(
                || {
                    // A certificate Key Vault cannot renew itself is announced to the contacts.
                    let action = if issuer_section.and_then(|i| i.get("name")).and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(UNKNOWN)) {
                        "EmailContacts"
                    } else {
                        "AutoRenew"
                    };
                    json!([{ "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": action } }])
                },
                |b| b.lifetime_actions.clone(),
            ),
        };
        let enabled = section("attributes")
            .and_then(|a| a.get("enabled"))
            .and_then(Value::as_bool)
            .or_else(|| base.map(|b| b.enabled))
            .unwrap_or(true);
        Ok(Policy {
            kty,
            key_size: if is_ec {
                None
            } else {
                Some(key_size.unwrap_or(2048))
            },
            curve: if is_ec {
                Some(curve.unwrap_or_else(|| "P-256".into()))
            } else {
                None
            },
            exportable,
            reuse_key,
            content_type,
            template,
            validity_months,
            lifetime_actions,
            issuer,
            issuer_fields,
            enabled,
        })
    }

    /// The policy as Key Vault shows it (without `id`).
    fn to_json(&self, created: i64, updated: i64) -> Value {
        let t = &self.template;
        let mut key = json!({
            "exportable": self.exportable,
            "kty": self.kty,
            "reuse_key": self.reuse_key,
        });
        match (&self.key_size, &self.curve) {
            (Some(n), _) => key["key_size"] = json!(n),
            (_, Some(c)) => key["crv"] = json!(c),
            _ => {}
        }
        let mut sans = serde_json::Map::new();
        for (name, values) in [
            ("dns_names", &t.dns_names),
            ("emails", &t.emails),
            ("upns", &t.upns),
            ("ipAddresses", &t.ip_addresses),
            ("uris", &t.uris),
        ] {
            if !values.is_empty() {
                sans.insert(name.into(), json!(values));
            }
        }
        let mut x509 = json!({
            "subject": t.subject,
            "ekus": t.ekus,
            "key_usage": t.key_usage,
            "validity_months": self.validity_months,
            "basic_constraints": { "ca": false },
        });
        if !sans.is_empty() {
            x509["sans"] = Value::Object(sans);
        }
        json!({
            "key_props": key,
            "secret_props": { "contentType": self.content_type },
            "x509_props": x509,
            "lifetime_actions": self.lifetime_actions,
            "issuer": self.issuer_fields,
            "attributes": { "enabled": self.enabled, "created": created, "updated": updated },
        })
    }

    fn key_spec(&self) -> KeySpec {
        match (&self.curve, self.key_size) {
            (Some(c), _) => KeySpec::Ec(Curve::parse(c).unwrap_or(Curve::P256)),
            (None, n) => KeySpec::Rsa(n.unwrap_or(2048)),
        }
    }

    fn key_ops(&self) -> Vec<String> {
        let ops: &[&str] = if self.curve.is_some() {
            &["sign", "verify"]
        } else {
            &[
                "sign",
                "verify",
                "encrypt",
                "decrypt",
                "wrapKey",
                "unwrapKey",
            ]
        };
        ops.iter().map(|o| (*o).to_owned()).collect()
    }
}

/// The store kind of certificates' issuance operations (documents keyed by vault id and
/// name): what `/pending` shows, and, while a request waits for a merge, its sealed key and
/// the policy, tags and `enabled` the certificate will get.
pub(crate) const OPERATION_KIND: &str = "certificateOperations";

/// An issuance operation as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OperationDoc {
    name: String,
    issuer: String,
    csr: String,
    status: String,
    status_details: String,
    request_id: String,
    cancellation_requested: bool,
    /// The waiting request's key, sealed with the vault's storage key.
    sealed_key: Option<String>,
    /// The waiting request's key type (for its provider).
    kty: Option<String>,
    policy: Value,
    tags: BTreeMap<String, String>,
    enabled: bool,
}

impl OperationDoc {
    fn operation(&self) -> CertificateOperation {
        CertificateOperation {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            csr: STANDARD.decode(&self.csr).unwrap_or_default(),
            status: self.status.clone(),
            status_details: self.status_details.clone(),
            request_id: self.request_id.clone(),
            cancellation_requested: self.cancellation_requested,
        }
    }
}

fn pending_key_aad(vault: &VaultRecord, doc: &OperationDoc) -> Vec<u8> {
    format!(
        "{}/certificate-request/{}/{}",
        vault.vault_id,
        doc.name.to_ascii_lowercase(),
        doc.request_id
    )
    .into_bytes()
}

/// What a new version is made of.
struct NewVersion<'a> {
    policy: &'a Policy,
    key: &'a std::sync::Arc<dyn atrest_crypto::KeyHandle>,
    /// The chain as the secret keeps it.
    chain: &'a [Vec<u8>],
    /// Where the certificate itself is in `chain`.
    leaf: usize,
    tags: BTreeMap<String, String>,
    enabled: bool,
    /// `(nbf, exp)`: the certificate's validity.
    validity: (i64, i64),
    /// The finished issuance operation, if the version came from one.
    operation: Option<&'a OperationDoc>,
}

/// The certificate of a stored version.
fn certificate(vault: &VaultRecord, stored: &Stored, policy: Value) -> Certificate {
    let Stored { state, row } = stored;
    Certificate {
        name: state.name.clone(),
        version: row.version.clone(),
        cer: row
            .public
            .get("cer")
            .and_then(Value::as_str)
            .and_then(|c| STANDARD.decode(c).ok())
            .unwrap_or_default(),
        content_type: row
            .public
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or(PKCS12)
            .to_owned(),
        tags: row.tags.clone(),
        attributes: attributes(row),
        recovery: recovery(vault),
        deleted: state.deleted.zip(state.scheduled_purge),
        policy,
    }
}

/// `certificate/{months}`: a validity end `months` after `start` (30-day months, as a
/// policy's validity is counted here).
fn validity_end(start: i64, months: u32) -> i64 {
    start + i64::from(months) * 30 * 86_400
}

impl Vaults {
    /// The policy document of a live certificate.
    fn certificate_document(
        &self,
        tx: &Tx,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Value, VaultError> {
        let state = live_state(tx, vault, KIND, name)?;
        Ok(tx
            .object_policy(&vault.vault_id, KIND, &state.name)?
            .unwrap_or(Value::Null))
    }

    /// Refuses a certificate name a standalone key or secret already uses.
    fn check_name_free(tx: &Tx, vault: &VaultRecord, name: &str) -> Result<(), VaultError> {
        for kind in [ObjectKind::Key, ObjectKind::Secret] {
            if let Some(row) = tx.version(&vault.vault_id, kind, name, None)? {
                if !is_managed(&row) {
                    return Err(VaultError::NameInUse {
                        kind,
                        name: name.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates a certificate, or a new version of it, from its policy (the stored one
    /// when none is given). Issuer `Self` signs it at once: the operation is stored
    /// `completed`, and returned as accepted (`inProgress`), as Key Vault answers a create
    /// before its clients poll the operation. Issuer `Unknown` leaves it `inProgress`, with
    /// a signing request, until a merge brings the signed certificate.
    pub fn create_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        change: &CertificateChange,
        now: i64,
    ) -> Result<CertificateOperation, VaultError> {
        check_object_name(name)?;
        check_tags(&change.tags)?;
        let stored_policy = self.store.read(|tx| {
            Ok::<_, VaultError>(match tx.object_state(&vault.vault_id, KIND, name)? {
                Some(s) if s.deleted.is_none() => tx
                    .object_policy(&vault.vault_id, KIND, &s.name)?
                    .map(|d| d["policy"].clone()),
                _ => None,
            })
        })?;
        let policy = match (&change.policy, &stored_policy) {
            (Some(p), _) => Policy::parse(p, None)?,
            (None, Some(p)) => Policy::parse(p, None)?,
            (None, None) => return Err(bad("A new certificate needs a policy.")),
        };
        self.store.read(|tx| {
            Self::check_name_free(tx, vault, name)?;
            name_for_new_version(tx, vault, KIND, name).map(|_| ())
        })?;
        let key = match self.reusable_key(vault, name, &policy)? {
            Some(key) => key,
            None => self.key_provider(&policy.kty).generate(policy.key_spec())?,
        };
        let template = CertificateTemplate {
            not_before: now - 300,
            not_after: validity_end(now - 300, policy.validity_months),
            ..policy.template.clone()
        };
        let csr = signing_request(&key, &template).map_err(|e| bad(e.to_string()))?;
        let enabled = change.attributes.enabled.unwrap_or(policy.enabled);
        let tags = change.tags.clone().unwrap_or_default();
        let mut doc = OperationDoc {
            name: name.to_owned(),
            issuer: policy.issuer.clone(),
            csr: STANDARD.encode(&csr),
            status: "inProgress".into(),
            status_details:
                "Pending certificate created. Please Perform Merge to complete the request.".into(),
            request_id: random_uuid(),
            cancellation_requested: false,
            sealed_key: None,
            kty: Some(policy.kty.clone()),
            policy: policy.to_json(now, now),
            tags: tags.clone(),
            enabled,
        };
        if policy.issuer != SELF && policy.issuer != UNKNOWN {
            let issuer = self.certificate_issuer(vault, &policy.issuer).map_err(|_| {
                bad(format!("The issuer '{}' is not registered in this vault: use Self, Unknown, or set the issuer first.", policy.issuer))
            })?;
            doc.status_details = format!("Pending certificate created. The {} provider is not reached from here: merge the certificate it signs.", issuer.provider);
        }
        if policy.issuer != SELF {
            let storage = self.storage_key(vault)?;
            doc.sealed_key = Some(
                STANDARD.encode(storage.seal(&pending_key_aad(vault, &doc), &key.to_stored())),
            );
            self.write(|tx| Self::put_operation(tx, vault, &doc))?;
            return Ok(doc.operation());
        }
        let cer = self_signed_certificate(&key, &template).map_err(|e| bad(e.to_string()))?;
        doc.status = "completed".into();
        doc.status_details = String::new();
        self.store_version(
            vault,
            name,
            NewVersion {
                policy: &policy,
                key: &key,
                chain: &[cer],
                leaf: 0,
                tags,
                enabled,
                validity: (template.not_before, template.not_after),
                operation: Some(&doc),
            },
            now,
        )?;
        Ok(CertificateOperation {
            status: "inProgress".into(),
            status_details: "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later.".into(),
            ..doc.operation()
        })
    }

    fn put_operation(tx: &Tx, vault: &VaultRecord, doc: &OperationDoc) -> Result<(), VaultError> {
        Ok(tx.put_resource(
            OPERATION_KIND,
            &vault.vault_id,
            &doc.name.to_ascii_lowercase(),
            doc,
        )?)
    }

    fn operation_doc(&self, vault: &VaultRecord, name: &str) -> Result<OperationDoc, VaultError> {
        self.store
            .read(|tx| {
                tx.resource::<OperationDoc>(
                    OPERATION_KIND,
                    &vault.vault_id,
                    &name.to_ascii_lowercase(),
                )
            })?
            .ok_or_else(|| VaultError::PendingNotFound(name.to_owned()))
    }

    /// Stores a new version: the certificate (the chain's leaf), its managed key, and its
    /// managed secret (the chain, with the key when exportable), and the policy; the
    /// finished operation, if any, replaces the stored one.
    fn store_version(
        &self,
        vault: &VaultRecord,
        name: &str,
        new: NewVersion<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let NewVersion {
            policy,
            key,
            chain,
            leaf,
            tags,
            enabled,
            validity: (not_before, not_after),
            operation: doc,
        } = new;
        let private = if policy.exportable {
            Some(key.export_pkcs8()?)
        } else {
            None
        };
        let private = private.as_deref().map(|k| k.as_slice());
        let value = zeroize::Zeroizing::new(if policy.content_type == PEM {
            pem_bundle(private, chain).as_bytes().to_vec()
        } else {
            STANDARD
                .encode(pkcs12(private, chain, leaf).as_slice())
                .into_bytes()
        });
        let storage = self.storage_key(vault)?;
        self.write(|tx| {
            let name = name_for_new_version(tx, vault, KIND, name)?;
            Self::check_name_free(tx, vault, &name)?;
            for kind in [ObjectKind::Key, ObjectKind::Secret] {
                name_for_new_version(tx, vault, kind, &name)?;
            }
            let created = tx
                .object_policy(&vault.vault_id, KIND, &name)?
                .and_then(|d| d["policy"]["attributes"]["created"].as_i64())
                .unwrap_or(now);
            let version = random_hex(16);
            let row = |kind: ObjectKind, sealed: &[u8], public: Value, tags: BTreeMap<String, String>| VersionRow {
                vault_id: vault.vault_id.clone(),
                kind,
                sealed: storage.seal(&payload_aad(vault, kind, &name, &version), sealed),
                name: name.clone(),
                version: version.clone(),
                public,
                tags,
                enabled,
                nbf: Some(not_before),
                exp: Some(not_after),
                created: now,
                updated: now,
            };
            tx.insert_version(&row(
                ObjectKind::Key,
                &key.to_stored(),
                json!({ "kty": policy.kty, "key_ops": policy.key_ops(), "jwk": key.public_jwk(), "managed": true }),
                BTreeMap::new(),
            ))?;
            tx.insert_version(&row(
                ObjectKind::Secret,
                &value,
                json!({ "contentType": policy.content_type, "managed": true }),
                BTreeMap::new(),
            ))?;
            tx.insert_version(&row(
                KIND,
                &[],
                json!({ "cer": STANDARD.encode(&chain[leaf]), "contentType": policy.content_type }),
                tags.clone(),
            ))?;
            tx.set_object_policy(&vault.vault_id, KIND, &name, &json!({ "policy": policy.to_json(created, now) }))?;
            if let Some(doc) = doc {
                Self::put_operation(tx, vault, &OperationDoc { name: name.clone(), sealed_key: None, ..doc.clone() })?;
            }
            Ok(())
        })
    }

    /// Completes a waiting request with the certificate an issuer signed: `x5c`, the leaf
    /// first, whose public key must be the request's.
    pub fn merge_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        x5c: &[Vec<u8>],
        change: &CertificateChange,
        now: i64,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        check_tags(&change.tags)?;
        let doc = self.operation_doc(vault, name)?;
        let sealed = match (&doc.sealed_key, doc.status.as_str()) {
            (Some(sealed), "inProgress") => sealed.clone(),
            _ => {
                return Err(VaultError::PendingNotFound(name.to_owned()));
            }
        };
        let leaf = x5c
            .first()
            .ok_or_else(|| bad("x5c must hold the signed certificate, leaf first."))?;
        let info = certificate_info(leaf).map_err(|e| bad(e.to_string()))?;
        for other in &x5c[1..] {
            certificate_info(other).map_err(|e| bad(e.to_string()))?;
        }
        let requested = request_public_key(&STANDARD.decode(&doc.csr).unwrap_or_default())
            .map_err(|e| bad(e.to_string()))?;
        if info.public_key != requested {
            return Err(bad(
                "Public key from x509 certificate and key of this instance doesn't match",
            ));
        }
        let storage = self.storage_key(vault)?;
        let stored = zeroize::Zeroizing::new(storage.open(
            &pending_key_aad(vault, &doc),
            &STANDARD.decode(sealed).unwrap_or_default(),
        )?);
        let kty = doc.kty.clone().unwrap_or_else(|| "RSA".into());
        let key = self.key_provider(&kty).load(&stored)?;
        let policy = Policy::parse(&doc.policy, None)?;
        let tags = change.tags.clone().unwrap_or_else(|| doc.tags.clone());
        let enabled = change.attributes.enabled.unwrap_or(doc.enabled);
        let finished = OperationDoc {
            status: "completed".into(),
            status_details: String::new(),
            ..doc.clone()
        };
        self.store_version(
            vault,
            name,
            NewVersion {
                policy: &policy,
                key: &key,
                chain: x5c,
                leaf: 0,
                tags,
                enabled,
                validity: (info.not_before, info.not_after),
                operation: Some(&finished),
            },
            now,
        )?;
        self.get_certificate(vault, name, None)
    }

    /// Imports a certificate with its private key (PKCS#12 or PEM) as a new version. The
    /// policy's `x509_props` and validity are the certificate's; a policy given may set
    /// the rest, but its key type and size must be the key's. Without one, the issuer is
    /// `Unknown` and the contacts are told before expiry.
    pub fn import_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        import: &CertificateImport,
        change: &CertificateChange,
        now: i64,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        check_tags(&change.tags)?;
        if change
            .policy
            .as_ref()
            .is_some_and(|p| !p.is_object() && !p.is_null())
        {
            return Err(bad("The certificate policy must be an object."));
        }
        self.store
            .read(|tx| Self::check_name_free(tx, vault, name))?;
        let content = import_bytes(&import.value)?;
        let imported = read_import(&content, &import.password, import.preserve_order)
            .map_err(|e| bad(e.to_string()))?;
        let leaf = &imported.chain[imported.leaf];
        let template = CertificateTemplate {
            not_before: 0,
            not_after: 0,
            ..certificate_template(leaf).map_err(|e| bad(e.to_string()))?
        };
        let info = certificate_info(leaf).map_err(|e| bad(e.to_string()))?;
        let wanted_kty = change
            .policy
            .as_ref()
            .and_then(|p| p.pointer("/key_props/kty"))
            .and_then(Value::as_str)
            .unwrap_or("RSA");
        let key = self
            .key_provider(wanted_kty)
            .import_pkcs8(&imported.private_key)?;
        let (kty, key_size, curve) = match key.spec() {
            KeySpec::Rsa(bits) => ("RSA", Some(bits), None),
            KeySpec::Ec(Curve::P256K) | KeySpec::Oct(_) => {
                return Err(bad("The certificate's key is on a curve Key Vault does not support for certificates: use P-256, P-384 or P-521."))
            }
            KeySpec::Ec(curve) => ("EC", None, Some(curve.name().to_owned())),
        };
        let validity_months = ((info.not_after - info.not_before) as f64 / (30.0 * 86_400.0))
            .round()
            .clamp(1.0, 1200.0) as u32;
        let from_certificate = Policy {
            kty: kty.into(),
            key_size,
            curve,
            exportable: true,
            reuse_key: false,
            content_type: match imported.format {
                ImportFormat::Pem => PEM.into(),
                ImportFormat::Pkcs12 => PKCS12.into(),
            },
            template,
            validity_months,
            lifetime_actions: json!([{ "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "EmailContacts" } }]),
            issuer: UNKNOWN.into(),
            issuer_fields: json!({ "name": UNKNOWN }),
            enabled: true,
        };
        let policy = match &change.policy {
            Some(given) if !given.is_null() => {
                let parsed = Policy::parse(given, Some(&from_certificate))?;
                let key_matches = parsed.kty.trim_end_matches("-HSM") == kty
                    && parsed.key_size == from_certificate.key_size
                    && parsed.curve == from_certificate.curve;
                if !key_matches {
                    return Err(bad(format!(
                        "The policy's key properties ({} {}) do not match the certificate's key ({kty} {}).",
                        parsed.kty,
                        parsed.key_size.map_or_else(|| parsed.curve.clone().unwrap_or_default(), |n| n.to_string()),
                        key_size.map_or_else(|| from_certificate.curve.clone().unwrap_or_default(), |n| n.to_string()),
                    )));
                }
                Policy {
                    template: from_certificate.template.clone(),
                    validity_months,
                    ..parsed
                }
            }
            _ => from_certificate,
        };
        let enabled = change.attributes.enabled.unwrap_or(policy.enabled);
        self.store_version(
            vault,
            name,
            NewVersion {
                policy: &policy,
                key: &key,
                chain: &imported.chain,
                leaf: imported.leaf,
                tags: change.tags.clone().unwrap_or_default(),
                enabled,
                validity: (info.not_before, info.not_after),
                operation: None,
            },
            now,
        )?;
        self.get_certificate(vault, name, None)
    }

    /// Deletes a certificate's operation (a waiting request is dropped with its key);
    /// returns it as it was.
    pub fn delete_certificate_operation(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<CertificateOperation, VaultError> {
        check_object_name(name)?;
        let doc = self.operation_doc(vault, name)?;
        self.write(|tx| {
            tx.delete_resource(OPERATION_KIND, &vault.vault_id, &name.to_ascii_lowercase())?;
            Ok(())
        })?;
        Ok(doc.operation())
    }

    /// Cancels a waiting request (`cancellation_requested`): it will never complete.
    pub fn cancel_certificate_operation(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<CertificateOperation, VaultError> {
        check_object_name(name)?;
        let mut doc = self.operation_doc(vault, name)?;
        if doc.status == "inProgress" {
            doc.cancellation_requested = true;
            doc.status = "cancelled".into();
            doc.status_details = "The certificate request was cancelled.".into();
            doc.sealed_key = None;
            self.write(|tx| Self::put_operation(tx, vault, &doc))?;
        }
        Ok(doc.operation())
    }

    /// The current key of certificate `name` when its policy says `reuse_key` and the key
    /// is of the policy's type and size.
    fn reusable_key(
        &self,
        vault: &VaultRecord,
        name: &str,
        policy: &Policy,
    ) -> Result<Option<std::sync::Arc<dyn atrest_crypto::KeyHandle>>, VaultError> {
        if !policy.reuse_key {
            return Ok(None);
        }
        let row = self.store.read(|tx| {
            Ok::<_, VaultError>(
                match tx.object_state(&vault.vault_id, ObjectKind::Key, name)? {
                    Some(s) if s.deleted.is_none() => {
                        tx.version(&vault.vault_id, ObjectKind::Key, &s.name, None)?
                    }
                    _ => None,
                },
            )
        })?;
        let Some(row) = row.filter(is_managed) else {
            return Ok(None);
        };
        let stored = self.open_payload(&*self.storage_key(vault)?, vault, &row)?;
        let key = self.key_provider(&policy.kty).load(&stored)?;
        Ok((key.spec() == policy.key_spec()).then_some(key))
    }

    /// A version (the latest when `version` is `None`).
    pub fn get_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        self.store.read(|tx| {
            let stored = live_version(tx, vault, KIND, name, version)?;
            let doc = self.certificate_document(tx, vault, name)?;
            Ok(certificate(vault, &stored, doc["policy"].clone()))
        })
    }

    /// Live certificates, the latest version of each.
    pub fn list_certificates(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
        include_pending: bool,
    ) -> Result<Page<Certificate>, VaultError> {
        let mut page = self
            .list_stored(vault, KIND, false, maxresults, skip)?
            .map(|s| certificate(vault, &s, Value::Null));
        if include_pending && page.next.is_none() {
            // Requests that wait for their first version close the listing.
            let waiting: Vec<OperationDoc> = self
                .store
                .read(|tx| tx.resources(OPERATION_KIND, Some(&vault.vault_id)))?;
            for doc in waiting.into_iter().filter(|d| d.status == "inProgress") {
                if page
                    .items
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(&doc.name))
                {
                    continue;
                }
                page.items.push(Certificate {
                    name: doc.name.clone(),
                    version: String::new(),
                    cer: Vec::new(),
                    content_type: String::new(),
                    tags: doc.tags.clone(),
                    attributes: {
                        let created = doc.policy["attributes"]["created"]
                            .as_i64()
                            .unwrap_or_default();
                        Attributes {
                            enabled: doc.enabled,
                            not_before: None,
                            expires: None,
                            created,
                            updated: created,
                        }
                    },
                    recovery: recovery(vault),
                    deleted: None,
                    policy: Value::Null,
                });
            }
        }
        Ok(page)
    }

    /// The versions of a certificate, oldest first.
    pub fn list_certificate_versions(
        &self,
        vault: &VaultRecord,
        name: &str,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Certificate>, VaultError> {
        let page = self.list_stored_versions(vault, KIND, name, maxresults, skip)?;
        Ok(page.map(|s| certificate(vault, &s, Value::Null)))
    }

    /// Updates a version's tags and `enabled` (carried to its key and secret), and the
    /// certificate's policy when one is given.
    pub fn update_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        version: Option<&str>,
        change: &CertificateChange,
        now: i64,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        check_tags(&change.tags)?;
        change.attributes.check_dates()?;
        if change.attributes.not_before.is_some() || change.attributes.expires.is_some() {
            return Err(bad(
                "A certificate's nbf and exp are its validity; they cannot be changed.",
            ));
        }
        self.write(|tx| {
            let mut stored = live_version(tx, vault, KIND, name, version)?;
            edit_tags_and_attributes(&mut stored.row, &change.tags, &change.attributes)?;
            stored.row.updated = now;
            tx.update_version(&stored.row)?;
            if let Some(enabled) = change.attributes.enabled {
                for kind in [ObjectKind::Key, ObjectKind::Secret] {
                    if let Some(mut row) = tx.version(
                        &vault.vault_id,
                        kind,
                        &stored.state.name,
                        Some(&stored.row.version),
                    )? {
                        row.enabled = enabled;
                        row.updated = now;
                        tx.update_version(&row)?;
                    }
                }
            }
            let mut doc = self.certificate_document(tx, vault, name)?;
            if let Some(patch) = &change.policy {
                let base = Policy::parse(&doc["policy"], None)?;
                let policy = Policy::parse(patch, Some(&base))?;
                let created = doc["policy"]["attributes"]["created"]
                    .as_i64()
                    .unwrap_or(now);
                doc["policy"] = policy.to_json(created, now);
                tx.set_object_policy(&vault.vault_id, KIND, &stored.state.name, &doc)?;
            }
            Ok(certificate(vault, &stored, doc["policy"].clone()))
        })
    }

    /// The certificate's policy.
    pub fn certificate_policy(&self, vault: &VaultRecord, name: &str) -> Result<Value, VaultError> {
        check_object_name(name)?;
        match self
            .store
            .read(|tx| Ok(self.certificate_document(tx, vault, name)?["policy"].clone()))
        {
            Err(VaultError::NotFound { .. }) => match self.operation_doc(vault, name) {
                Ok(doc) if doc.status == "inProgress" => Ok(doc.policy),
                _ => Err(crate::objects::not_found(KIND, name, None)),
            },
            other => other,
        }
    }

    /// Updates the certificate's policy (members left out are kept).
    pub fn update_certificate_policy(
        &self,
        vault: &VaultRecord,
        name: &str,
        patch: &Value,
        now: i64,
    ) -> Result<Value, VaultError> {
        let change = CertificateChange {
            policy: Some(patch.clone()),
            ..Default::default()
        };
        Ok(self
            .update_certificate(vault, name, None, &change, now)?
            .policy)
    }

    /// The certificate's last issuance operation.
    pub fn certificate_operation(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<CertificateOperation, VaultError> {
        check_object_name(name)?;
        Ok(self.operation_doc(vault, name)?.operation())
    }

    /// Soft-deletes a certificate with its key and secret; returns its latest version.
    pub fn delete_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        now: i64,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        let policy = self.certificate_policy(vault, name)?;
        let when = (now, recovery(vault).scheduled_purge(now));
        self.write(|tx| {
            let state = live_state(tx, vault, KIND, name)?;
            for kind in KINDS {
                if tx
                    .object_state(&vault.vault_id, kind, &state.name)?
                    .is_some()
                {
                    tx.set_object_deleted(&vault.vault_id, kind, &state.name, Some(when))?;
                }
            }
            Ok(())
        })?;
        self.get_deleted_certificate_with(vault, name, policy)
    }

    fn get_deleted_certificate_with(
        &self,
        vault: &VaultRecord,
        name: &str,
        policy: Value,
    ) -> Result<Certificate, VaultError> {
        let stored = self.get_deleted_stored(vault, KIND, name)?;
        Ok(certificate(vault, &stored, policy))
    }

    /// A soft-deleted certificate.
    pub fn get_deleted_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        let policy = self.store.read(|tx| {
            Ok::<_, VaultError>(
                tx.object_policy(&vault.vault_id, KIND, name)?
                    .map(|d| d["policy"].clone())
                    .unwrap_or(Value::Null),
            )
        })?;
        self.get_deleted_certificate_with(vault, name, policy)
    }

    /// Soft-deleted certificates.
    pub fn list_deleted_certificates(
        &self,
        vault: &VaultRecord,
        maxresults: Option<usize>,
        skip: Option<&str>,
    ) -> Result<Page<Certificate>, VaultError> {
        let page = self.list_stored(vault, KIND, true, maxresults, skip)?;
        Ok(page.map(|s| certificate(vault, &s, Value::Null)))
    }

    /// Recovers a soft-deleted certificate with its key and secret.
    pub fn recover_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Certificate, VaultError> {
        check_object_name(name)?;
        self.get_deleted_stored(vault, KIND, name)?;
        self.write(|tx| {
            for kind in KINDS {
                if let Some(state) = tx.object_state(&vault.vault_id, kind, name)? {
                    tx.set_object_deleted(&vault.vault_id, kind, &state.name, None)?;
                }
            }
            Ok(())
        })?;
        self.get_certificate(vault, name, None)
    }

    /// Purges a soft-deleted certificate with its key and secret.
    pub fn purge_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
        now: i64,
    ) -> Result<(), VaultError> {
        check_object_name(name)?;
        let deleted = self.get_deleted_stored(vault, KIND, name)?;
        if vault.purge_protection && deleted.state.scheduled_purge.is_some_and(|p| now < p) {
            return Err(VaultError::PurgeProtected);
        }
        self.write(|tx| {
            for kind in KINDS {
                if let Some(state) = tx.object_state(&vault.vault_id, kind, name)? {
                    tx.purge_object(&vault.vault_id, kind, &state.name)?;
                }
            }
            tx.delete_resource(OPERATION_KIND, &vault.vault_id, &name.to_ascii_lowercase())?;
            Ok(())
        })
    }
}

/// When a certificate's lifetime action is due: at `lifetime_percentage` of its validity,
/// or `days_before_expiry` before its end.
fn action_due(action: &Value, created: i64, expires: i64, now: i64) -> bool {
    let trigger = &action["trigger"];
    if let Some(percent) = trigger["lifetime_percentage"].as_i64() {
        return now >= created + (expires - created) * percent.clamp(1, 99) / 100;
    }
    if let Some(days) = trigger["days_before_expiry"].as_i64() {
        return now >= expires - days * 86_400;
    }
    false
}

impl Vaults {
    /// Runs the certificates' lifetime actions due at `now` (the scheduler's clock), once
    /// per version: `AutoRenew` issues a new version from the stored policy, and
    /// `EmailContacts` announces the coming expiry.
    pub fn run_certificate_lifetime_actions(
        &self,
        now: i64,
    ) -> Result<Vec<crate::LifetimeEvent>, VaultError> {
        use crate::LifetimeEvent as E;
        let certificates = self.store.read(|tx| tx.objects_with_lifetime(KIND))?;
        let mut events = Vec::new();
        for c in certificates {
            let (Some(expires), Some(doc)) = (c.expires, &c.policy) else {
                continue;
            };
            if c.notified_version.as_deref() == Some(&c.latest_version) {
                continue;
            }
            let Some(action) = doc["policy"]["lifetime_actions"]
                .as_array()
                .and_then(|a| a.first())
                .filter(|a| action_due(a, c.created, expires, now))
            else {
                continue;
            };
            let vault = self.data_plane_vault(&c.vault_name)?;
            self.write(|tx| {
                Ok(tx.set_object_notified_version(
                    &vault.vault_id,
                    KIND,
                    &c.name,
                    &c.latest_version,
                )?)
            })?;
            if action["action"]["action_type"].as_str() == Some("AutoRenew") {
                let renewed =
                    self.create_certificate(&vault, &c.name, &CertificateChange::default(), now);
                events.push(E::CertificateRenewed {
                    vault: c.vault_name,
                    name: c.name,
                    previous_version: c.latest_version,
                    error: renewed.err(),
                });
            } else {
                let contacts = self
                    .certificate_contacts(&vault)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.email)
                    .collect();
                events.push(E::CertificateNearExpiry {
                    vault: c.vault_name,
                    name: c.name,
                    version: c.latest_version,
                    expires,
                    contacts,
                });
            }
        }
        Ok(events)
    }
}

/// A certificate's backup: the backups of its three objects and its policy.
#[derive(serde::Serialize, serde::Deserialize)]
struct CertificateBackup {
    format: String,
    certificate: String,
    key: String,
    secret: String,
    policy: Value,
}

const CERTIFICATE_BACKUP_FORMAT: &str = "atrest-certificate-set-backup/1";
const CERTIFICATE_BACKUP_CONTEXT: &str = "atrest/backup/certificate-set";

impl Vaults {
    /// A backup of a certificate with every version, its key and secret, and its policy,
    /// sealed under the instance backup key.
    pub fn backup_certificate(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Vec<u8>, VaultError> {
        check_object_name(name)?;
        let policy = self.certificate_policy(vault, name)?;
        let backup = CertificateBackup {
            format: CERTIFICATE_BACKUP_FORMAT.into(),
            certificate: STANDARD.encode(self.backup_stored(vault, KIND, name)?),
            key: STANDARD.encode(self.backup_stored(vault, ObjectKind::Key, name)?),
            secret: STANDARD.encode(self.backup_stored(vault, ObjectKind::Secret, name)?),
            policy,
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&backup).expect("backup serializes"));
        Ok(self
            .backup_key
            .seal(CERTIFICATE_BACKUP_CONTEXT.as_bytes(), &plain))
    }

    /// Restores a certificate backup: its three objects and its policy, in one
    /// transaction, none of whose names may be in use.
    pub fn restore_certificate(
        &self,
        vault: &VaultRecord,
        blob: &[u8],
    ) -> Result<Certificate, VaultError> {
        let invalid =
            || VaultError::BadBackup("Backup blob contains invalid or corrupt data.".into());
        let plain = zeroize::Zeroizing::new(
            self.backup_key
                .open(CERTIFICATE_BACKUP_CONTEXT.as_bytes(), blob)
                .map_err(|_| invalid())?,
        );
        let backup: CertificateBackup = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        if backup.format != CERTIFICATE_BACKUP_FORMAT {
            return Err(invalid());
        }
        let inner = |b64: &str| STANDARD.decode(b64).map_err(|_| invalid());
        let parts = [
            self.open_backup(vault, KIND, &inner(&backup.certificate)?, |_, _| true)?,
            self.open_backup(vault, ObjectKind::Key, &inner(&backup.key)?, |public, _| {
                public.get("managed").is_some()
            })?,
            self.open_backup(
                vault,
                ObjectKind::Secret,
                &inner(&backup.secret)?,
                |public, _| public.get("managed").is_some(),
            )?,
        ];
        let name = parts[0].name.clone();
        if parts.iter().any(|p| !p.name.eq_ignore_ascii_case(&name)) {
            return Err(invalid());
        }
        Policy::parse(&backup.policy, None)?;
        let storage = self.storage_key(vault)?;
        self.write(|tx| {
            for part in &parts {
                part.insert(tx, vault, &storage)?;
            }
            tx.set_object_policy(
                &vault.vault_id,
                KIND,
                &name,
                &json!({ "policy": backup.policy }),
            )?;
            Ok(())
        })?;
        self.get_certificate(vault, &name, None)
    }
}

/// `x5t` as Key Vault shows it (base64url).
pub fn thumbprint_text(cer: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(atrest_crypto::sha1(cer))
}
