//! `atrest keyvault key`: keys, their cryptographic operations and rotation policies.

use anyhow::Context;
use atrest_api::client::Method;
use clap::{ArgAction, Subcommand};
use serde_json::{json, Map, Value};

use super::connection::Connection;
use super::output::{print, Format};
use super::{tags, unix_time};

/// `--vault-name` and `--name`, shared by every key command on one key.
#[derive(clap::Args)]
pub(crate) struct KeyRef {
    #[arg(long)]
    vault_name: String,
    #[arg(short = 'n', long)]
    name: String,
}

/// `--algorithm` and `--value` (base64) of the cryptographic commands.
#[derive(clap::Args)]
pub(crate) struct CryptoArgs {
    #[command(flatten)]
    key: KeyRef,
    /// Key version; the latest when absent.
    #[arg(long)]
    version: Option<String>,
    /// Algorithm (`RSA-OAEP-256`, `A256KW`, `RS256`, `ES256`, …).
    #[arg(short = 'a', long)]
    algorithm: String,
    /// Input, base64: plaintext, ciphertext, digest or signature.
    #[arg(long)]
    value: String,
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a key, or a new version of it.
    Create {
        #[command(flatten)]
        key: KeyRef,
        /// RSA, EC or oct.
        #[arg(long, default_value = "RSA")]
        kty: String,
        /// RSA 2048/3072/4096; oct 128/192/256.
        #[arg(long)]
        size: Option<u32>,
        /// P-256, P-384, P-521 or P-256K.
        #[arg(long)]
        curve: Option<String>,
        /// Permitted operations.
        #[arg(long, num_args = 1..)]
        ops: Option<Vec<String>>,
        /// `hsm` marks the key HSM-protected (`RSA-HSM`, …).
        #[arg(long, default_value = "software")]
        protection: String,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Import a private JWK from a file.
    Import {
        #[command(flatten)]
        key: KeyRef,
        /// File holding the JWK (JSON).
        #[arg(long)]
        jwk_file: std::path::PathBuf,
        #[arg(long, default_value = "software")]
        protection: String,
    },
    /// Show a key's public parts.
    Show {
        #[command(flatten)]
        key: KeyRef,
        #[arg(long)]
        version: Option<String>,
    },
    /// List keys.
    List {
        #[arg(long)]
        vault_name: String,
    },
    /// List a key's versions.
    ListVersions {
        #[command(flatten)]
        key: KeyRef,
    },
    /// Change key_ops, attributes or tags.
    SetAttributes {
        #[command(flatten)]
        key: KeyRef,
        #[arg(long)]
        version: Option<String>,
        #[arg(long, num_args = 1..)]
        ops: Option<Vec<String>>,
        #[arg(long, action = ArgAction::Set)]
        enabled: Option<bool>,
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long, num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Delete a key (soft delete).
    Delete(KeyRef),
    /// Recover a soft-deleted key.
    Recover(KeyRef),
    /// Permanently delete a soft-deleted key.
    Purge(KeyRef),
    /// Create a new version with the same parameters.
    Rotate(KeyRef),
    /// Show or change when the key rotates.
    RotationPolicy {
        #[command(subcommand)]
        command: RotationPolicyCommand,
    },
    /// Write a protected backup of every version to a file.
    Backup {
        #[command(flatten)]
        key: KeyRef,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Restore a key from a backup file.
    Restore {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Encrypt base64 data.
    Encrypt(CryptoArgs),
    /// Decrypt base64 data.
    Decrypt(CryptoArgs),
    /// Sign a base64 digest.
    Sign(CryptoArgs),
    /// Verify a base64 signature over `--digest`.
    Verify {
        #[command(flatten)]
        args: CryptoArgs,
        /// The digest, base64.
        #[arg(long)]
        digest: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RotationPolicyCommand {
    /// Show a key's rotation policy.
    Show(KeyRef),
    /// Replace a key's rotation policy.
    Update {
        #[command(flatten)]
        key: KeyRef,
        /// The policy as JSON (`lifetimeActions`, `attributes.expiryTime`), or the path of
        /// a file holding it (optionally prefixed with `@`).
        #[arg(long)]
        value: String,
    },
}

/// A JSON argument given inline or as a path to a file.
pub(super) fn json_argument(value: &str) -> anyhow::Result<Value> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        let path = value.strip_prefix('@').unwrap_or(value);
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
    };
    serde_json::from_str(&text).context("the value is not valid JSON")
}

/// Base64 (standard or url-safe) to Key Vault's base64url.
pub(super) fn b64url(text: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim().trim_end_matches('='))
        })
        .context("the value must be base64")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(super) fn hsm_kty(kty: &str, protection: &str) -> anyhow::Result<String> {
    match protection {
        "software" => Ok(kty.to_owned()),
        "hsm" => Ok(format!("{}-HSM", kty.trim_end_matches("-HSM"))),
        other => anyhow::bail!("--protection must be hsm or software, not '{other}'"),
    }
}

/// `POST /keys/{name}/{version}/{op}` with `--algorithm` and `--value` (and `--digest`).
pub(super) async fn key_operation(
    conn: &Connection,
    a: &CryptoArgs,
    op: &str,
    digest: Option<&str>,
) -> anyhow::Result<Value> {
    let mut body = json!({ "alg": a.algorithm, "value": b64url(&a.value)? });
    if let Some(d) = digest {
        body["digest"] = b64url(d)?.into();
    }
    let path = format!(
        "/keys/{}/{}/{op}",
        a.key.name,
        a.version.as_deref().unwrap_or_default()
    );
    conn.data_plane(&a.key.vault_name, Method::POST, &path, "", Some(&body))
        .await
}

pub(super) async fn key(
    conn: &Connection,
    command: KeyCommand,
    format: Format,
) -> anyhow::Result<()> {
    use KeyCommand as C;
    let path = |k: &KeyRef, rest: &str| format!("/keys/{}{rest}", k.name);
    let out = match command {
        C::Create {
            key,
            kty,
            size,
            curve,
            ops,
            protection,
            tags: t,
        } => {
            let mut body = json!({ "kty": hsm_kty(&kty, &protection)?, "tags": tags(&t)? });
            if let Some(size) = size {
                body["key_size"] = size.into();
            }
            if let Some(curve) = curve {
                body["crv"] = curve.into();
            }
            if let Some(ops) = ops {
                body["key_ops"] = json!(ops);
            }
            conn.data_plane(
                &key.vault_name,
                Method::POST,
                &path(&key, "/create"),
                "",
                Some(&body),
            )
            .await?
        }
        C::Import {
            key,
            jwk_file,
            protection,
        } => {
            let jwk: Value = serde_json::from_str(
                &std::fs::read_to_string(&jwk_file)
                    .with_context(|| format!("cannot read {}", jwk_file.display()))?,
            )
            .context("the JWK file is not JSON")?;
            let body = json!({ "key": jwk, "Hsm": protection == "hsm" });
            conn.data_plane(
                &key.vault_name,
                Method::PUT,
                &path(&key, ""),
                "",
                Some(&body),
            )
            .await?
        }
        C::Show { key, version } => {
            conn.data_plane(
                &key.vault_name,
                Method::GET,
                &path(&key, &format!("/{}", version.unwrap_or_default())),
                "",
                None,
            )
            .await?
        }
        C::List { vault_name } => Value::Array(conn.data_plane_all(&vault_name, "/keys").await?),
        C::ListVersions { key } => Value::Array(
            conn.data_plane_all(&key.vault_name, &path(&key, "/versions"))
                .await?,
        ),
        C::SetAttributes {
            key,
            version,
            ops,
            enabled,
            expires,
            not_before,
            tags: t,
        } => {
            let mut attributes = Map::new();
            if let Some(e) = enabled {
                attributes.insert("enabled".into(), e.into());
            }
            if let Some(e) = expires {
                attributes.insert("exp".into(), unix_time(&e)?.into());
            }
            if let Some(n) = not_before {
                attributes.insert("nbf".into(), unix_time(&n)?.into());
            }
            let mut body = json!({ "attributes": attributes });
            if let Some(ops) = ops {
                body["key_ops"] = json!(ops);
            }
            if let Some(t) = t {
                body["tags"] = tags(&t)?;
            }
            conn.data_plane(
                &key.vault_name,
                Method::PATCH,
                &path(&key, &format!("/{}", version.unwrap_or_default())),
                "",
                Some(&body),
            )
            .await?
        }
        C::Delete(key) => {
            conn.data_plane(&key.vault_name, Method::DELETE, &path(&key, ""), "", None)
                .await?
        }
        C::Recover(key) => {
            conn.data_plane(
                &key.vault_name,
                Method::POST,
                &format!("/deletedkeys/{}/recover", key.name),
                "",
                None,
            )
            .await?
        }
        C::Purge(key) => {
            conn.data_plane(
                &key.vault_name,
                Method::DELETE,
                &format!("/deletedkeys/{}", key.name),
                "",
                None,
            )
            .await?;
            return Ok(());
        }
        C::Rotate(key) => {
            conn.data_plane(
                &key.vault_name,
                Method::POST,
                &path(&key, "/rotate"),
                "",
                None,
            )
            .await?
        }
        C::RotationPolicy {
            command: RotationPolicyCommand::Show(key),
        } => {
            conn.data_plane(
                &key.vault_name,
                Method::GET,
                &path(&key, "/rotationpolicy"),
                "",
                None,
            )
            .await?
        }
        C::RotationPolicy {
            command: RotationPolicyCommand::Update { key, value },
        } => {
            let policy = json_argument(&value)?;
            conn.data_plane(
                &key.vault_name,
                Method::PUT,
                &path(&key, "/rotationpolicy"),
                "",
                Some(&policy),
            )
            .await?
        }
        C::Backup { key, file } => {
            let out = conn
                .data_plane(
                    &key.vault_name,
                    Method::POST,
                    &path(&key, "/backup"),
                    "",
                    None,
                )
                .await?;
            let blob = out
                .get("value")
                .and_then(Value::as_str)
                .context("backup response without value")?;
            std::fs::write(&file, blob)
                .with_context(|| format!("cannot write {}", file.display()))?;
            return Ok(());
        }
        C::Restore { vault_name, file } => {
            let blob = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            conn.data_plane(
                &vault_name,
                Method::POST,
                "/keys/restore",
                "",
                Some(&json!({ "value": blob.trim() })),
            )
            .await?
        }
        C::Encrypt(a) => key_operation(conn, &a, "encrypt", None).await?,
        C::Decrypt(a) => key_operation(conn, &a, "decrypt", None).await?,
        C::Sign(a) => key_operation(conn, &a, "sign", None).await?,
        C::Verify { args, digest } => key_operation(conn, &args, "verify", Some(&digest)).await?,
    };
    print(&out, format)
}
