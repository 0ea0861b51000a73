//! `atrest keyvault certificate`: certificates, as `az keyvault certificate` names them.
//! Policies are taken in Key Vault's REST shape or in the shape `az` prints
//! (`get-default-policy`: `issuerParameters`, `keyProperties`, …).

use std::time::Duration;

use anyhow::Context as _;
use atrest_api::client::Method;
use base64::Engine as _;
use clap::{ArgAction, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::connection::Connection;
use super::output::{print, Format};
use super::tags;

#[derive(Subcommand)]
pub(crate) enum CertificateCommand {
    /// Create a certificate (or a new version) from a policy, and wait for it (a request
    /// to another issuer than Self is shown pending at once).
    Create {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        /// The policy: JSON, or @FILE.
        #[arg(short = 'p', long)]
        policy: String,
        #[arg(long, action = ArgAction::Set)]
        disabled: Option<bool>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Import a certificate with its private key: a PKCS#12 (PFX) file, or PEM holding the
    /// certificates and a PKCS#8 key.
    Import {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
        /// The PFX file's (or the encrypted PEM key's) password.
        #[arg(long)]
        password: Option<String>,
        /// A policy (JSON or @FILE); its x509 properties come from the certificate.
        #[arg(short = 'p', long)]
        policy: Option<String>,
        #[arg(long, action = ArgAction::Set)]
        disabled: Option<bool>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a certificate (latest version unless --version).
    Show {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'v', long)]
        version: Option<String>,
    },
    /// List certificates.
    List {
        #[arg(long)]
        vault_name: String,
    },
    /// List the versions of a certificate.
    ListVersions {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Change a version's attributes and tags, or the certificate's policy.
    SetAttributes {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'v', long)]
        version: Option<String>,
        #[arg(long, action = ArgAction::Set)]
        enabled: Option<bool>,
        /// A policy (JSON or @FILE); members left out are kept.
        #[arg(short = 'p', long)]
        policy: Option<String>,
        #[arg(long, num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Delete a certificate with its key and secret (soft delete).
    Delete {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List soft-deleted certificates.
    ListDeleted {
        #[arg(long)]
        vault_name: String,
    },
    /// Recover a soft-deleted certificate.
    Recover {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Permanently delete a soft-deleted certificate.
    Purge {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Write the public certificate to a file.
    Download {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'v', long)]
        version: Option<String>,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
        #[arg(short = 'e', long, value_enum, default_value = "PEM")]
        encoding: Encoding,
    },
    /// Print the default policy of a self-signed certificate (az's shape).
    GetDefaultPolicy,
    /// Write a backup of a certificate (every version, its key and secret) to a file.
    Backup {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Restore a certificate from a backup file.
    Restore {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// The certificate's issuance operation.
    #[command(subcommand)]
    Pending(PendingCommand),
    /// The vault's certificate contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// The vault's certificate issuers.
    #[command(subcommand)]
    Issuer(IssuerCommand),
}

#[derive(Subcommand)]
pub(crate) enum PendingCommand {
    /// Show the issuance operation.
    Show {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Complete a waiting request with the chain a CA signed (PEM or DER file, leaf first).
    Merge {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Cancel a waiting request.
    Cancel {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Delete the issuance operation.
    Delete {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ContactCommand {
    /// Add a contact to the vault's list.
    Add {
        #[arg(long)]
        vault_name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// List the contacts.
    List {
        #[arg(long)]
        vault_name: String,
    },
    /// Remove a contact (the list goes with its last one).
    Delete {
        #[arg(long)]
        vault_name: String,
        #[arg(long)]
        email: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct IssuerArgs {
    #[arg(long)]
    vault_name: String,
    #[arg(long)]
    issuer_name: String,
}

#[derive(clap::Args)]
pub(crate) struct IssuerFields {
    #[arg(long)]
    provider_name: Option<String>,
    #[arg(long)]
    account_id: Option<String>,
    #[arg(long)]
    password: Option<String>,
    #[arg(long)]
    organization_id: Option<String>,
    #[arg(long, action = ArgAction::Set)]
    enabled: Option<bool>,
}

impl IssuerFields {
    fn body(&self) -> Value {
        let mut body = json!({});
        if let Some(p) = &self.provider_name {
            body["provider"] = json!(p);
        }
        if self.account_id.is_some() || self.password.is_some() {
            body["credentials"] = json!({ "account_id": self.account_id, "pwd": self.password });
        }
        if let Some(org) = &self.organization_id {
            body["org_details"] = json!({ "id": org });
        }
        if let Some(e) = self.enabled {
            body["attributes"] = json!({ "enabled": e });
        }
        body
    }
}

#[derive(Subcommand)]
pub(crate) enum IssuerCommand {
    /// Register an issuer.
    Create {
        #[command(flatten)]
        at: IssuerArgs,
        #[command(flatten)]
        fields: IssuerFields,
    },
    /// Change an issuer (fields left out are kept).
    Update {
        #[command(flatten)]
        at: IssuerArgs,
        #[command(flatten)]
        fields: IssuerFields,
    },
    /// Show an issuer.
    Show(IssuerArgs),
    /// List the issuers.
    List {
        #[arg(long)]
        vault_name: String,
    },
    /// Delete an issuer.
    Delete(IssuerArgs),
}

/// The DER certificates of a PEM or DER file, in order.
fn certificates_in(bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(vec![b64.encode(bytes)]);
    };
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(vec![b64.encode(bytes)]);
    }
    let mut out = Vec::new();
    for block in text.split("-----BEGIN CERTIFICATE-----").skip(1) {
        let body = block
            .split("-----END CERTIFICATE-----")
            .next()
            .unwrap_or_default();
        let der = b64
            .decode(body.split_whitespace().collect::<String>())
            .context("a PEM certificate is not base64")?;
        out.push(b64.encode(der));
    }
    Ok(out)
}

async fn contacts_of(conn: &Connection, vault: &str) -> anyhow::Result<Vec<Value>> {
    match conn
        .data_plane(vault, Method::GET, "/certificates/contacts", "", None)
        .await
    {
        Ok(v) => Ok(v["contacts"].as_array().cloned().unwrap_or_default()),
        Err(e) if e.to_string().contains("ContactsNotFound") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Encoding {
    #[value(name = "PEM")]
    Pem,
    #[value(name = "DER")]
    Der,
}

/// The policy `az keyvault certificate get-default-policy` prints.
fn default_policy() -> Value {
    json!({
        "issuerParameters": { "name": "Self" },
        "keyProperties": { "exportable": true, "keySize": 2048, "keyType": "RSA", "reuseKey": true },
        "lifetimeActions": [{ "action": { "actionType": "AutoRenew" }, "trigger": { "daysBeforeExpiry": 90 } }],
        "secretProperties": { "contentType": "application/x-pkcs12" },
        "x509CertificateProperties": {
            "keyUsage": ["cRLSign", "dataEncipherment", "digitalSignature", "keyEncipherment", "keyAgreement", "keyCertSign"],
            "subject": "CN=CLIGetDefaultPolicy",
            "validityInMonths": 12,
        },
    })
}

/// Renames the members of `object` by `names` (az's → Key Vault's), recursing with `nested`.
fn renamed(object: &Value, names: &[(&str, &str)]) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let name = names
            .iter()
            .find(|(from, _)| from == k)
            .map_or(k.as_str(), |(_, to)| to);
        out.insert(name.to_owned(), v.clone());
    }
    Value::Object(out)
}

/// A policy in Key Vault's REST shape, from either that shape or az's.
fn rest_policy(given: &Value) -> Value {
    if given.get("issuerParameters").is_none()
        && given.get("keyProperties").is_none()
        && given.get("x509CertificateProperties").is_none()
    {
        return given.clone();
    }
    let mut out = Map::new();
    if let Some(issuer) = given.get("issuerParameters") {
        out.insert(
            "issuer".into(),
            renamed(issuer, &[("certificateType", "cty")]),
        );
    }
    if let Some(key) = given.get("keyProperties") {
        let names = [
            ("keySize", "key_size"),
            ("keyType", "kty"),
            ("reuseKey", "reuse_key"),
            ("curve", "crv"),
        ];
        out.insert("key_props".into(), renamed(key, &names));
    }
    if let Some(secret) = given.get("secretProperties") {
        out.insert("secret_props".into(), secret.clone());
    }
    if let Some(x509) = given.get("x509CertificateProperties") {
        let names = [
            ("keyUsage", "key_usage"),
            ("validityInMonths", "validity_months"),
            ("subjectAlternativeNames", "sans"),
        ];
        let mut x = renamed(x509, &names);
        if let Some(sans) = x.get("sans").cloned() {
            x["sans"] = renamed(&sans, &[("dnsNames", "dns_names")]);
        }
        out.insert("x509_props".into(), x);
    }
    if let Some(actions) = given.get("lifetimeActions").and_then(Value::as_array) {
        let actions: Vec<Value> = actions
            .iter()
            .map(|a| {
                json!({
                    "action": renamed(&a["action"], &[("actionType", "action_type")]),
                    "trigger": renamed(&a["trigger"], &[("daysBeforeExpiry", "days_before_expiry"), ("lifetimePercentage", "lifetime_percentage")]),
                })
            })
            .collect();
        out.insert("lifetime_actions".into(), Value::from(actions));
    }
    Value::Object(out)
}

/// A policy argument: JSON, or `@FILE` holding it.
fn policy_arg(given: &str) -> anyhow::Result<Value> {
    let text = match given.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => given.to_owned(),
    };
    let value: Value = serde_json::from_str(&text).context("the policy is not JSON")?;
    Ok(rest_policy(&value))
}

pub(super) async fn certificate(
    conn: &Connection,
    command: CertificateCommand,
    format: Format,
) -> anyhow::Result<()> {
    use CertificateCommand as C;
    let out = match command {
        C::Create {
            vault_name,
            name,
            policy,
            disabled,
            tags: t,
        } => {
            let mut body = json!({ "policy": policy_arg(&policy)?, "tags": tags(&t)? });
            if let Some(d) = disabled {
                body["attributes"] = json!({ "enabled": !d });
            }
            let path = format!("/certificates/{name}/create");
            conn.data_plane(&vault_name, Method::POST, &path, "", Some(&body))
                .await?;
            // Wait for the operation to leave `inProgress`, as az does.
            let pending = format!("/certificates/{name}/pending");
            let operation = loop {
                let op = conn
                    .data_plane(&vault_name, Method::GET, &pending, "", None)
                    .await?;
                // A request for another issuer than Self waits for a merge: answer at once.
                if op["status"].as_str() != Some("inProgress") || op["issuer"]["name"] != "Self" {
                    break op;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            if operation["status"].as_str() == Some("completed") {
                conn.data_plane(
                    &vault_name,
                    Method::GET,
                    &format!("/certificates/{name}/"),
                    "",
                    None,
                )
                .await?
            } else {
                operation
            }
        }
        C::Import {
            vault_name,
            name,
            file,
            password,
            policy,
            disabled,
            tags: t,
        } => {
            let bytes = zeroize::Zeroizing::new(
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            );
            let value = base64::engine::general_purpose::STANDARD.encode(bytes.as_slice());
            let mut body = json!({ "value": value, "pwd": password, "tags": tags(&t)? });
            if let Some(p) = policy {
                body["policy"] = policy_arg(&p)?;
            }
            if let Some(d) = disabled {
                body["attributes"] = json!({ "enabled": !d });
            }
            let path = format!("/certificates/{name}/import");
            conn.data_plane(&vault_name, Method::POST, &path, "", Some(&body))
                .await?
        }
        C::Show {
            vault_name,
            name,
            version,
        } => {
            let path = format!("/certificates/{name}/{}", version.unwrap_or_default());
            conn.data_plane(&vault_name, Method::GET, &path, "", None)
                .await?
        }
        C::List { vault_name } => {
            Value::Array(conn.data_plane_all(&vault_name, "/certificates").await?)
        }
        C::ListVersions { vault_name, name } => Value::Array(
            conn.data_plane_all(&vault_name, &format!("/certificates/{name}/versions"))
                .await?,
        ),
        C::SetAttributes {
            vault_name,
            name,
            version,
            enabled,
            policy,
            tags: t,
        } => {
            let mut body = json!({});
            if let Some(e) = enabled {
                body["attributes"] = json!({ "enabled": e });
            }
            if let Some(t) = t {
                body["tags"] = tags(&t)?;
            }
            if let Some(p) = policy {
                body["policy"] = policy_arg(&p)?;
            }
            let path = format!("/certificates/{name}/{}", version.unwrap_or_default());
            conn.data_plane(&vault_name, Method::PATCH, &path, "", Some(&body))
                .await?
        }
        C::Delete { vault_name, name } => {
            let path = format!("/certificates/{name}");
            conn.data_plane(&vault_name, Method::DELETE, &path, "", None)
                .await?
        }
        C::ListDeleted { vault_name } => Value::Array(
            conn.data_plane_all(&vault_name, "/deletedcertificates")
                .await?,
        ),
        C::Recover { vault_name, name } => {
            let path = format!("/deletedcertificates/{name}/recover");
            conn.data_plane(&vault_name, Method::POST, &path, "", None)
                .await?
        }
        C::Purge { vault_name, name } => {
            let path = format!("/deletedcertificates/{name}");
            conn.data_plane(&vault_name, Method::DELETE, &path, "", None)
                .await?;
            return Ok(());
        }
        C::Download {
            vault_name,
            name,
            version,
            file,
            encoding,
        } => {
            let path = format!("/certificates/{name}/{}", version.unwrap_or_default());
            let cert = conn
                .data_plane(&vault_name, Method::GET, &path, "", None)
                .await?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(cert["cer"].as_str().unwrap_or_default())
                .context("the certificate's 'cer' is not base64")?;
            let bytes = match encoding {
                Encoding::Der => der,
                Encoding::Pem => atrest_crypto::certificates::certificate_pem(&der).into_bytes(),
            };
            std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
            return Ok(());
        }
        C::GetDefaultPolicy => default_policy(),
        C::Backup {
            vault_name,
            name,
            file,
        } => {
            let path = format!("/certificates/{name}/backup");
            let blob = conn
                .data_plane(&vault_name, Method::POST, &path, "", None)
                .await?;
            let value = blob["value"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value.trim_end_matches('='))
                .context("the backup is not base64url")?;
            std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
            return Ok(());
        }
        C::Restore { vault_name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let body =
                json!({ "value": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes) });
            conn.data_plane(
                &vault_name,
                Method::POST,
                "/certificates/restore",
                "",
                Some(&body),
            )
            .await?
        }
        C::Pending(PendingCommand::Merge {
            vault_name,
            name,
            file,
        }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let body = json!({ "x5c": certificates_in(&bytes)? });
            let path = format!("/certificates/{name}/pending/merge");
            conn.data_plane(&vault_name, Method::POST, &path, "", Some(&body))
                .await?
        }
        C::Pending(PendingCommand::Cancel { vault_name, name }) => {
            let path = format!("/certificates/{name}/pending");
            let body = json!({ "cancellation_requested": true });
            conn.data_plane(&vault_name, Method::PATCH, &path, "", Some(&body))
                .await?
        }
        C::Pending(PendingCommand::Delete { vault_name, name }) => {
            let path = format!("/certificates/{name}/pending");
            conn.data_plane(&vault_name, Method::DELETE, &path, "", None)
                .await?
        }
        C::Contact(ContactCommand::Add {
            vault_name,
            email,
            name,
            phone,
        }) => {
            let mut contacts = contacts_of(conn, &vault_name).await?;
            contacts.retain(|c| c["email"].as_str() != Some(email.as_str()));
            contacts.push(json!({ "email": email, "name": name, "phone": phone }));
            let body = json!({ "contacts": contacts });
            conn.data_plane(
                &vault_name,
                Method::PUT,
                "/certificates/contacts",
                "",
                Some(&body),
            )
            .await?
        }
        C::Contact(ContactCommand::List { vault_name }) => {
            Value::from(contacts_of(conn, &vault_name).await?)
        }
        C::Contact(ContactCommand::Delete { vault_name, email }) => {
            let mut contacts = contacts_of(conn, &vault_name).await?;
            let before = contacts.len();
            contacts.retain(|c| c["email"].as_str() != Some(email.as_str()));
            if contacts.len() == before {
                anyhow::bail!("no contact has the e-mail address {email}");
            }
            if contacts.is_empty() {
                conn.data_plane(
                    &vault_name,
                    Method::DELETE,
                    "/certificates/contacts",
                    "",
                    None,
                )
                .await?
            } else {
                let body = json!({ "contacts": contacts });
                conn.data_plane(
                    &vault_name,
                    Method::PUT,
                    "/certificates/contacts",
                    "",
                    Some(&body),
                )
                .await?
            }
        }
        C::Issuer(IssuerCommand::Create { at, fields }) => {
            let path = format!("/certificates/issuers/{}", at.issuer_name);
            conn.data_plane(&at.vault_name, Method::PUT, &path, "", Some(&fields.body()))
                .await?
        }
        C::Issuer(IssuerCommand::Update { at, fields }) => {
            let path = format!("/certificates/issuers/{}", at.issuer_name);
            conn.data_plane(
                &at.vault_name,
                Method::PATCH,
                &path,
                "",
                Some(&fields.body()),
            )
            .await?
        }
        C::Issuer(IssuerCommand::Show(at)) => {
            let path = format!("/certificates/issuers/{}", at.issuer_name);
            conn.data_plane(&at.vault_name, Method::GET, &path, "", None)
                .await?
        }
        C::Issuer(IssuerCommand::List { vault_name }) => Value::Array(
            conn.data_plane_all(&vault_name, "/certificates/issuers")
                .await?,
        ),
        C::Issuer(IssuerCommand::Delete(at)) => {
            let path = format!("/certificates/issuers/{}", at.issuer_name);
            conn.data_plane(&at.vault_name, Method::DELETE, &path, "", None)
                .await?
        }
        C::Pending(PendingCommand::Show { vault_name, name }) => {
            let path = format!("/certificates/{name}/pending");
            conn.data_plane(&vault_name, Method::GET, &path, "", None)
                .await?
        }
    };
    print(&out, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn az_policies_become_rest_policies() {
        let rest = rest_policy(&default_policy());
        assert_eq!(rest["issuer"]["name"], "Self");
        assert_eq!(rest["key_props"]["key_size"], 2048);
        assert_eq!(rest["key_props"]["kty"], "RSA");
        assert_eq!(rest["x509_props"]["validity_months"], 12);
        assert_eq!(rest["x509_props"]["subject"], "CN=CLIGetDefaultPolicy");
        assert_eq!(
            rest["lifetime_actions"][0]["trigger"]["days_before_expiry"],
            90
        );
        let already = json!({ "issuer": { "name": "Self" } });
        assert_eq!(rest_policy(&already), already);
    }
}
