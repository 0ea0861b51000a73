//! The `az`-like commands: each builds one or a few API calls and prints the result.

use anyhow::Context;
use atrest_api::client::Method;
use clap::{ArgAction, Subcommand};
use serde_json::{json, Map, Value};

use crate::connection::{enc, Connection};
use crate::output::{print, Format};

/// `key=value` pairs, as `az --tags` takes them.
fn tags(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(k.to_owned(), Value::from(v));
    }
    Ok(Value::Object(map))
}

/// Seconds since the epoch from an RFC 3339 time.
fn unix_time(text: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("'{text}' is not a time like 2030-01-31T00:00:00Z"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

/// Unwraps `{"value": [...]}` the way `az` prints lists.
fn list(mut body: Value) -> Value {
    body.get_mut("value").map(Value::take).unwrap_or(body)
}

/// Every command that talks to a running server.
#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// Manage vaults, their secrets and keys.
    Keyvault {
        #[command(subcommand)]
        command: KeyvaultCommand,
    },
    /// Manage service principals.
    Ad {
        #[command(subcommand)]
        command: AdCommand,
    },
    /// Manage user-assigned managed identities.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Disk encryption sets: customer-managed keys for disks.
    #[command(name = "disk-encryption-set")]
    DiskEncryptionSet {
        #[command(subcommand)]
        command: crate::compute::DesCommand,
    },
    /// Managed disks, always encrypted at rest.
    Disk {
        #[command(subcommand)]
        command: crate::compute::DiskCommand,
    },
    /// Virtual machines, whose running disks are served over NBD.
    Vm {
        #[command(subcommand)]
        command: crate::compute::VmCommand,
    },
    /// Read the audit log.
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Role definitions and role assignments (Azure RBAC).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// The key scheduler's clock, which can be moved forward to show rotation policies
    /// at work without waiting.
    Clock {
        #[command(subcommand)]
        command: ClockCommand,
    },
}

/// Runs a client command against the server `conn` reaches.
pub(crate) async fn run(
    conn: &Connection,
    command: ClientCommand,
    chosen: Option<Format>,
) -> anyhow::Result<()> {
    let format = chosen.unwrap_or(Format::Json);
    match command {
        ClientCommand::Keyvault { command } => keyvault(conn, command, format).await,
        ClientCommand::Ad { command } => ad(conn, command, format).await,
        ClientCommand::Identity { command } => identity(conn, command, format).await,
        ClientCommand::Monitor { command } => monitor(conn, command, chosen).await,
        ClientCommand::Clock { command } => clock(conn, command, format).await,
        ClientCommand::Role { command } => role(conn, command, format).await,
        ClientCommand::DiskEncryptionSet { command } => {
            crate::compute::disk_encryption_set(conn, command, format).await
        }
        ClientCommand::Disk { command } => crate::compute::disk(conn, command, format).await,
        ClientCommand::Vm { command } => crate::compute::vm(conn, command, format).await,
    }
}

#[derive(Subcommand)]
pub(crate) enum KeyvaultCommand {
    /// Create a vault.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(short = 'l', long, default_value = "westeurope")]
        location: String,
        /// Days a deleted vault or object stays recoverable (7-90).
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long, action = ArgAction::Set)]
        enable_purge_protection: Option<bool>,
        #[arg(long, action = ArgAction::Set)]
        enable_rbac_authorization: Option<bool>,
        #[arg(long, action = ArgAction::Set)]
        enabled_for_disk_encryption: Option<bool>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
        /// Without RBAC authorization, do not give the signed-in principal an access
        /// policy with every permission.
        #[arg(long)]
        no_self_perms: bool,
    },
    /// Show a vault.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// List vaults.
    List {
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Change vault properties or tags.
    Update {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[arg(long)]
        retention_days: Option<u32>,
        #[arg(long, action = ArgAction::Set)]
        enable_purge_protection: Option<bool>,
        #[arg(long, action = ArgAction::Set)]
        enable_rbac_authorization: Option<bool>,
        #[arg(long, action = ArgAction::Set)]
        enabled_for_disk_encryption: Option<bool>,
        #[arg(long, num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Delete a vault (soft delete).
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// List soft-deleted vaults.
    ListDeleted,
    /// Recover a soft-deleted vault.
    Recover {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// Permanently delete a soft-deleted vault.
    Purge {
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Grant a principal permissions through the vault's access policies (vaults with
    /// RBAC authorization off). Each permission list given replaces that list.
    SetPolicy {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        principal: PolicyPrincipal,
        #[arg(long, num_args = 0..)]
        key_permissions: Option<Vec<String>>,
        #[arg(long, num_args = 0..)]
        secret_permissions: Option<Vec<String>>,
        #[arg(long, num_args = 0..)]
        certificate_permissions: Option<Vec<String>>,
        #[arg(long, num_args = 0..)]
        storage_permissions: Option<Vec<String>>,
    },
    /// Remove a principal's access policy entry.
    DeletePolicy {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        principal: PolicyPrincipal,
    },
    /// Manage secrets.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Manage keys and use them.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// The principal of an access policy entry, named as `az keyvault set-policy` names it.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PolicyPrincipal {
    /// Object id of a user, group, service principal or managed identity.
    #[arg(long)]
    object_id: Option<String>,
    /// A service principal or managed identity, by app id or display name.
    #[arg(long)]
    spn: Option<String>,
    /// A user, by sign-in name.
    #[arg(long)]
    upn: Option<String>,
}

impl PolicyPrincipal {
    async fn object_id(&self, conn: &Connection) -> anyhow::Result<String> {
        match (&self.object_id, &self.spn, &self.upn) {
            (Some(id), ..) => Ok(id.clone()),
            (None, Some(name), _) | (None, None, Some(name)) => {
                principal_object_id(conn, name).await
            }
            (None, None, None) => unreachable!("clap requires one of the three"),
        }
    }
}

/// Applies one access policy entry to the vault at `vault_path` (`kind`: add, replace or
/// remove) and returns the vault.
async fn edit_policy(
    conn: &Connection,
    vault_path: &str,
    kind: &str,
    entry: Value,
) -> anyhow::Result<Value> {
    let body = json!({ "properties": { "accessPolicies": [entry] } });
    conn.management(
        Method::PUT,
        &format!("{vault_path}/accessPolicies/{kind}"),
        Some(&body),
    )
    .await?;
    conn.management(Method::GET, vault_path, None).await
}

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
fn json_argument(value: &str) -> anyhow::Result<Value> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        let path = value.strip_prefix('@').unwrap_or(value);
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
    };
    serde_json::from_str(&text).context("the value is not valid JSON")
}

/// Base64 (standard or url-safe) to Key Vault's base64url.
fn b64url(text: &str) -> anyhow::Result<String> {
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

fn hsm_kty(kty: &str, protection: &str) -> anyhow::Result<String> {
    match protection {
        "software" => Ok(kty.to_owned()),
        "hsm" => Ok(format!("{}-HSM", kty.trim_end_matches("-HSM"))),
        other => anyhow::bail!("--protection must be hsm or software, not '{other}'"),
    }
}

/// `POST /keys/{name}/{version}/{op}` with `--algorithm` and `--value` (and `--digest`).
async fn key_operation(
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

async fn key(conn: &Connection, command: KeyCommand, format: Format) -> anyhow::Result<()> {
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

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Create a secret or a new version of it.
    Set {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        value: String,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long, action = ArgAction::Set)]
        disabled: Option<bool>,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires: Option<String>,
        /// Not-before, RFC 3339.
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long, num_args = 0..)]
        tags: Vec<String>,
    },
    /// Show a secret (latest version unless --version).
    Show {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// List secrets (without values).
    List {
        #[arg(long)]
        vault_name: String,
    },
    /// List the versions of a secret.
    ListVersions {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Delete a secret (soft delete).
    Delete {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// List soft-deleted secrets.
    ListDeleted {
        #[arg(long)]
        vault_name: String,
    },
    /// Recover a soft-deleted secret.
    Recover {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Permanently delete a soft-deleted secret.
    Purge {
        #[arg(long)]
        vault_name: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

pub(crate) fn vault_path(conn: &Connection, rg: Option<&str>, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{name}",
        conn.subscription,
        rg.unwrap_or(&conn.resource_group)
    )
}

fn vault_properties(
    retention: Option<u32>,
    purge: Option<bool>,
    rbac: Option<bool>,
    disk: Option<bool>,
) -> Value {
    let mut p = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            p.insert(k.to_owned(), v);
        }
    };
    put("softDeleteRetentionInDays", retention.map(Value::from));
    put("enablePurgeProtection", purge.map(Value::from));
    put("enableRbacAuthorization", rbac.map(Value::from));
    put("enabledForDiskEncryption", disk.map(Value::from));
    Value::Object(p)
}

/// `atrest keyvault …`.
async fn keyvault(
    conn: &Connection,
    command: KeyvaultCommand,
    format: Format,
) -> anyhow::Result<()> {
    use KeyvaultCommand as C;
    let out = match command {
        C::Create {
            name,
            resource_group,
            location,
            retention_days,
            enable_purge_protection,
            enable_rbac_authorization,
            enabled_for_disk_encryption,
            tags: t,
            no_self_perms,
        } => {
            let mut props = vault_properties(
                retention_days,
                enable_purge_protection,
                enable_rbac_authorization,
                enabled_for_disk_encryption,
            );
            props["sku"] = json!({ "family": "A", "name": "standard" });
            let body = json!({ "location": location, "tags": tags(&t)?, "properties": props });
            let path = vault_path(conn, resource_group.as_deref(), &name);
            let vault = conn.management(Method::PUT, &path, Some(&body)).await?;
            if enable_rbac_authorization == Some(false) && !no_self_perms {
                let all = json!(["all"]);
                let entry = json!({
                    "tenantId": vault["properties"]["tenantId"],
                    "objectId": principal_object_id(conn, &conn.client_id).await?,
                    "permissions": { "keys": all, "secrets": all, "certificates": all, "storage": all },
                });
                edit_policy(conn, &path, "add", entry).await?
            } else {
                vault
            }
        }
        C::Show {
            name,
            resource_group,
        } => {
            conn.management(
                Method::GET,
                &vault_path(conn, resource_group.as_deref(), &name),
                None,
            )
            .await?
        }
        C::SetPolicy {
            name,
            resource_group,
            principal,
            key_permissions,
            secret_permissions,
            certificate_permissions,
            storage_permissions,
        } => {
            let path = vault_path(conn, resource_group.as_deref(), &name);
            let vault = conn.management(Method::GET, &path, None).await?;
            let object_id = principal.object_id(conn).await?;
            let mut entry = vault["properties"]["accessPolicies"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| {
                    e["objectId"]
                        .as_str()
                        .is_some_and(|o| o.eq_ignore_ascii_case(&object_id))
                        && e.get("applicationId").is_none_or(Value::is_null)
                })
                .cloned()
                .unwrap_or_else(|| {
                    json!({ "tenantId": vault["properties"]["tenantId"], "objectId": object_id, "permissions": {} })
                });
            for (class, given) in [
                ("keys", key_permissions),
                ("secrets", secret_permissions),
                ("certificates", certificate_permissions),
                ("storage", storage_permissions),
            ] {
                if let Some(given) = given {
                    entry["permissions"][class] = json!(given);
                }
            }
            edit_policy(conn, &path, "replace", entry).await?
        }
        C::DeletePolicy {
            name,
            resource_group,
            principal,
        } => {
            let path = vault_path(conn, resource_group.as_deref(), &name);
            let vault = conn.management(Method::GET, &path, None).await?;
            let entry = json!({
                "tenantId": vault["properties"]["tenantId"],
                "objectId": principal.object_id(conn).await?,
            });
            edit_policy(conn, &path, "remove", entry).await?
        }
        C::List { resource_group } => {
            let path = match resource_group {
                Some(rg) => format!(
                    "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults",
                    conn.subscription
                ),
                None => format!(
                    "/subscriptions/{}/providers/Microsoft.KeyVault/vaults",
                    conn.subscription
                ),
            };
            list(conn.management(Method::GET, &path, None).await?)
        }
        C::Update {
            name,
            resource_group,
            retention_days,
            enable_purge_protection,
            enable_rbac_authorization,
            enabled_for_disk_encryption,
            tags: t,
        } => {
            let mut body = json!({ "properties": vault_properties(retention_days, enable_purge_protection, enable_rbac_authorization, enabled_for_disk_encryption) });
            if let Some(t) = t {
                body["tags"] = tags(&t)?;
            }
            conn.management(
                Method::PATCH,
                &vault_path(conn, resource_group.as_deref(), &name),
                Some(&body),
            )
            .await?
        }
        C::Delete {
            name,
            resource_group,
        } => {
            conn.management(
                Method::DELETE,
                &vault_path(conn, resource_group.as_deref(), &name),
                None,
            )
            .await?;
            return Ok(());
        }
        C::ListDeleted => list(
            conn.management(
                Method::GET,
                &format!(
                    "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults",
                    conn.subscription
                ),
                None,
            )
            .await?,
        ),
        C::Recover {
            name,
            resource_group,
        } => {
            let deleted = deleted_vault(conn, &name).await?;
            let location = deleted
                .pointer("/properties/location")
                .cloned()
                .unwrap_or(Value::Null);
            let body = json!({ "location": location, "properties": { "createMode": "recover" } });
            conn.management(
                Method::PUT,
                &vault_path(conn, resource_group.as_deref(), &name),
                Some(&body),
            )
            .await?
        }
        C::Purge { name } => {
            let deleted = deleted_vault(conn, &name).await?;
            let location = deleted
                .pointer("/properties/location")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let path = format!("/subscriptions/{}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}/purge", conn.subscription);
            conn.management(Method::POST, &path, None).await?;
            return Ok(());
        }
        C::Secret { command } => return secret(conn, command, format).await,
        C::Key { command } => return key(conn, command, format).await,
    };
    print(&out, format)
}

async fn deleted_vault(conn: &Connection, name: &str) -> anyhow::Result<Value> {
    let all = list(
        conn.management(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults",
                conn.subscription
            ),
            None,
        )
        .await?,
    );
    all.as_array()
        .and_then(|a| {
            a.iter().find(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
        .cloned()
        .with_context(|| format!("no deleted vault named '{name}'"))
}

async fn secret(conn: &Connection, command: SecretCommand, format: Format) -> anyhow::Result<()> {
    use SecretCommand as C;
    let out = match command {
        C::Set {
            vault_name,
            name,
            value,
            content_type,
            disabled,
            expires,
            not_before,
            tags: t,
        } => {
            let mut attributes = Map::new();
            if let Some(d) = disabled {
                attributes.insert("enabled".into(), Value::from(!d));
            }
            if let Some(e) = expires {
                attributes.insert("exp".into(), Value::from(unix_time(&e)?));
            }
            if let Some(n) = not_before {
                attributes.insert("nbf".into(), Value::from(unix_time(&n)?));
            }
            let mut body = json!({ "value": value, "attributes": attributes, "tags": tags(&t)? });
            if let Some(ct) = content_type {
                body["contentType"] = Value::from(ct);
            }
            conn.data_plane(
                &vault_name,
                Method::PUT,
                &format!("/secrets/{name}"),
                "",
                Some(&body),
            )
            .await?
        }
        C::Show {
            vault_name,
            name,
            version,
        } => {
            let path = format!("/secrets/{name}/{}", version.unwrap_or_default());
            conn.data_plane(&vault_name, Method::GET, &path, "", None)
                .await?
        }
        C::List { vault_name } => Value::Array(conn.data_plane_all(&vault_name, "/secrets").await?),
        C::ListVersions { vault_name, name } => Value::Array(
            conn.data_plane_all(&vault_name, &format!("/secrets/{name}/versions"))
                .await?,
        ),
        C::Delete { vault_name, name } => {
            conn.data_plane(
                &vault_name,
                Method::DELETE,
                &format!("/secrets/{name}"),
                "",
                None,
            )
            .await?
        }
        C::ListDeleted { vault_name } => {
            Value::Array(conn.data_plane_all(&vault_name, "/deletedsecrets").await?)
        }
        C::Recover { vault_name, name } => {
            conn.data_plane(
                &vault_name,
                Method::POST,
                &format!("/deletedsecrets/{name}/recover"),
                "",
                None,
            )
            .await?
        }
        C::Purge { vault_name, name } => {
            conn.data_plane(
                &vault_name,
                Method::DELETE,
                &format!("/deletedsecrets/{name}"),
                "",
                None,
            )
            .await?;
            return Ok(());
        }
    };
    print(&out, format)
}

#[derive(Subcommand)]
pub(crate) enum AdCommand {
    /// Service principals.
    Sp {
        #[command(subcommand)]
        command: SpCommand,
    },
    /// Users, who sign in with a password.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Groups: roles and access policies granted to a group reach its members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        display_name: String,
        /// Sign-in name, like alice@contoso.com.
        #[arg(long)]
        user_principal_name: String,
        /// 8-256 characters with three of: lowercase, uppercase, digits, symbols.
        #[arg(long)]
        password: String,
    },
    /// List users.
    List,
    /// Delete a user.
    Delete {
        /// Object id or sign-in name.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group.
    Create {
        #[arg(long)]
        display_name: String,
    },
    /// List groups.
    List,
    /// Delete a group.
    Delete {
        /// Object id or display name.
        #[arg(short = 'g', long)]
        group: String,
    },
    /// Group membership.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum MemberCommand {
    /// Add a member (a user, service principal, managed identity or group).
    Add {
        /// Object id or display name of the group.
        #[arg(short = 'g', long)]
        group: String,
        /// Object id of the member.
        #[arg(long)]
        member_id: String,
    },
    /// Remove a member.
    Remove {
        #[arg(short = 'g', long)]
        group: String,
        #[arg(long)]
        member_id: String,
    },
    /// List the direct members.
    List {
        #[arg(short = 'g', long)]
        group: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SpCommand {
    /// Create a service principal and print its credentials.
    CreateForRbac {
        #[arg(short = 'n', long)]
        name: String,
        /// Make it an atrest administrator (may manage principals and read the audit log).
        #[arg(long)]
        admin: bool,
    },
    /// List service principals.
    List,
    /// Delete a service principal.
    Delete {
        /// Its appId.
        #[arg(long)]
        id: String,
    },
    /// Manage credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum CredentialCommand {
    /// Issue a new client secret; the old one stops working.
    Reset {
        /// The appId.
        #[arg(long)]
        id: String,
    },
}

/// `atrest ad …`.
async fn ad(conn: &Connection, command: AdCommand, format: Format) -> anyhow::Result<()> {
    let out = match command {
        AdCommand::Sp { command } => service_principal(conn, command).await?,
        AdCommand::User { command } => user(conn, command).await?,
        AdCommand::Group { command } => group(conn, command).await?,
    };
    match out {
        Some(out) => print(&out, format),
        None => Ok(()),
    }
}

/// `atrest ad user …`; `None` when there is nothing to print.
async fn user(conn: &Connection, command: UserCommand) -> anyhow::Result<Option<Value>> {
    Ok(Some(match command {
        UserCommand::Create {
            display_name,
            user_principal_name,
            password,
        } => {
            let body = json!({
                "displayName": display_name,
                "userPrincipalName": user_principal_name,
                "password": password,
            });
            conn.admin(Method::POST, "/users", Some(&body)).await?
        }
        UserCommand::List => list(conn.admin(Method::GET, "/users", None).await?),
        UserCommand::Delete { id } => {
            conn.admin(Method::DELETE, &format!("/users/{}", enc(&id)), None)
                .await?;
            return Ok(None);
        }
    }))
}

/// `atrest ad group …`; `None` when there is nothing to print.
async fn group(conn: &Connection, command: GroupCommand) -> anyhow::Result<Option<Value>> {
    let group_path = |id: &str| format!("/groups/{id}");
    Ok(Some(match command {
        GroupCommand::Create { display_name } => {
            conn.admin(
                Method::POST,
                "/groups",
                Some(&json!({ "displayName": display_name })),
            )
            .await?
        }
        GroupCommand::List => list(conn.admin(Method::GET, "/groups", None).await?),
        GroupCommand::Delete { group } => {
            let id = principal_object_id(conn, &group).await?;
            conn.admin(Method::DELETE, &group_path(&id), None).await?;
            return Ok(None);
        }
        GroupCommand::Member { command } => match command {
            MemberCommand::Add { group, member_id } => {
                let id = principal_object_id(conn, &group).await?;
                conn.admin(
                    Method::POST,
                    &format!("{}/members", group_path(&id)),
                    Some(&json!({ "memberId": member_id })),
                )
                .await?;
                return Ok(None);
            }
            MemberCommand::Remove { group, member_id } => {
                let id = principal_object_id(conn, &group).await?;
                conn.admin(
                    Method::DELETE,
                    &format!("{}/members/{}", group_path(&id), enc(&member_id)),
                    None,
                )
                .await?;
                return Ok(None);
            }
            MemberCommand::List { group } => {
                let id = principal_object_id(conn, &group).await?;
                list(
                    conn.admin(Method::GET, &format!("{}/members", group_path(&id)), None)
                        .await?,
                )
            }
        },
    }))
}

/// `atrest ad sp …`; `None` when there is nothing to print.
async fn service_principal(conn: &Connection, command: SpCommand) -> anyhow::Result<Option<Value>> {
    Ok(Some(match command {
        SpCommand::CreateForRbac { name, admin } => {
            conn.admin(
                Method::POST,
                "/servicePrincipals",
                Some(&json!({ "displayName": name, "isAdmin": admin })),
            )
            .await?
        }
        SpCommand::List => list(conn.admin(Method::GET, "/servicePrincipals", None).await?),
        SpCommand::Delete { id } => {
            conn.admin(Method::DELETE, &format!("/servicePrincipals/{id}"), None)
                .await?;
            return Ok(None);
        }
        SpCommand::Credential {
            command: CredentialCommand::Reset { id },
        } => {
            conn.admin(
                Method::POST,
                &format!("/servicePrincipals/{id}/credentials/reset"),
                None,
            )
            .await?
        }
    }))
}

#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Create a user-assigned managed identity.
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
    },
    /// List managed identities.
    List,
    /// Delete a managed identity.
    Delete {
        /// Its clientId.
        #[arg(long)]
        id: String,
    },
}

/// `atrest identity …`.
async fn identity(
    conn: &Connection,
    command: IdentityCommand,
    format: Format,
) -> anyhow::Result<()> {
    let out = match command {
        IdentityCommand::Create {
            name,
            resource_group,
        } => {
            conn.admin(
                Method::POST,
                "/identities",
                Some(&json!({ "name": name, "resourceGroup": resource_group })),
            )
            .await?
        }
        IdentityCommand::List => list(conn.admin(Method::GET, "/identities", None).await?),
        IdentityCommand::Delete { id } => {
            conn.admin(Method::DELETE, &format!("/identities/{id}"), None)
                .await?;
            return Ok(());
        }
    };
    print(&out, format)
}

#[derive(Subcommand)]
pub(crate) enum MonitorCommand {
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Alerts raised by the built-in detection rules.
    Alert {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Run a Kusto (KQL) query over the audit and sign-in logs (`AzureDiagnostics`,
    /// `AADManagedIdentitySignInLogs`, `AADServicePrincipalSignInLogs`,
    /// `AADNonInteractiveUserSignInLogs`). Prints a table, or rows as JSON with `-o json`.
    Query {
        /// The query text.
        query: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AlertCommand {
    /// List alerts, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `atrest monitor query`: the result's rows, as objects in column order.
pub(crate) async fn monitor_query(
    conn: &Connection,
    query: &str,
    format: Format,
) -> anyhow::Result<()> {
    let result = conn
        .admin(Method::POST, "/query", Some(&json!({ "query": query })))
        .await?;
    let table = &result["tables"][0];
    let names: Vec<&str> = table["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let rows: Vec<Value> = table["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let cells = r.as_array().cloned().unwrap_or_default();
            Value::Object(names.iter().map(|n| n.to_string()).zip(cells).collect())
        })
        .collect();
    print(&Value::Array(rows), format)
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// List audit events, newest first.
    List {
        /// Only this operationName.
        #[arg(long)]
        operation: Option<String>,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Check the audit log's hash chain; names the first bad event and fails if any.
    Verify,
    /// Write every event (oldest first) as JSON lines in Azure's AuditEvent shape.
    Export {
        /// Only events with a sequence number above this.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Write here instead of standard output.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
}

/// `atrest monitor …`: JSON by default, but a table for queries.
async fn monitor(
    conn: &Connection,
    command: MonitorCommand,
    chosen: Option<Format>,
) -> anyhow::Result<()> {
    let format = chosen.unwrap_or(Format::Json);
    let command = match command {
        MonitorCommand::Query { query } => {
            return monitor_query(conn, &query, chosen.unwrap_or(Format::Table)).await
        }
        MonitorCommand::Alert {
            command: AlertCommand::List { limit },
        } => {
            let alerts = conn
                .admin(Method::GET, &format!("/alerts?limit={limit}"), None)
                .await?;
            return print(&list(alerts), format);
        }
        MonitorCommand::Audit { command } => command,
    };
    match command {
        AuditCommand::List {
            operation,
            since,
            limit,
        } => {
            let mut query = format!("?limit={limit}");
            if let Some(op) = operation {
                query.push_str(&format!("&operation={}", enc(&op)));
            }
            if let Some(s) = since {
                query.push_str(&format!("&since={}", enc(&s)));
            }
            print(
                &list(
                    conn.admin(Method::GET, &format!("/audit{query}"), None)
                        .await?,
                ),
                format,
            )
        }
        AuditCommand::Verify => {
            let result = conn.admin(Method::GET, "/audit/verify", None).await?;
            print(&result, format)?;
            anyhow::ensure!(
                result["verified"] == true,
                "the audit log fails verification at event {}: {}",
                result["firstBadEvent"]["seq"],
                result["firstBadEvent"]["reason"]
                    .as_str()
                    .unwrap_or("unknown")
            );
            Ok(())
        }
        AuditCommand::Export { mut after, file } => {
            use std::io::Write;
            let mut out: Box<dyn Write> = match &file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            // A short page is the end; the export's own requests add events after it.
            const PAGE: usize = 1000;
            loop {
                let page = list(
                    conn.admin(
                        Method::GET,
                        &format!("/audit/export?after={after}&limit={PAGE}"),
                        None,
                    )
                    .await?,
                );
                let events = page.as_array().cloned().unwrap_or_default();
                for event in &events {
                    writeln!(out, "{event}")?;
                }
                match events.last().and_then(|e| e["seq"].as_i64()) {
                    Some(seq) if events.len() == PAGE => after = seq,
                    _ => break,
                }
            }
            out.flush()?;
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum ClockCommand {
    /// Show the scheduler's time.
    Show,
    /// Move the scheduler's time forward and run the key lifetime actions now due.
    Advance {
        /// An ISO 8601 duration such as P7D or PT12H.
        #[arg(long)]
        by: String,
    },
}

/// `atrest clock …`.
async fn clock(conn: &Connection, command: ClockCommand, format: Format) -> anyhow::Result<()> {
    let out = match command {
        ClockCommand::Show => conn.admin(Method::GET, "/clock", None).await?,
        ClockCommand::Advance { by } => {
            conn.admin(Method::POST, "/clock/advance", Some(&json!({ "by": by })))
                .await?
        }
    };
    print(&out, format)
}

#[derive(Subcommand)]
pub(crate) enum RoleCommand {
    /// Role definitions.
    Definition {
        #[command(subcommand)]
        command: RoleDefinitionCommand,
    },
    /// Role assignments.
    Assignment {
        #[command(subcommand)]
        command: RoleAssignmentCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum RoleDefinitionCommand {
    /// List the built-in role definitions.
    List {
        /// Only the role with this name or id.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum RoleAssignmentCommand {
    /// Assign a role to a principal at a scope.
    Create {
        /// The principal: app id, object id or display name.
        #[arg(long)]
        assignee: String,
        /// Role name or id.
        #[arg(long)]
        role: String,
        /// Scope; the subscription when absent.
        #[arg(long)]
        scope: Option<String>,
    },
    /// List the assignments that apply at a scope (the subscription when absent).
    List {
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete assignments: by id, or every one matching assignee, role and scope.
    Delete {
        /// Full assignment resource ids.
        #[arg(long, num_args = 1..)]
        ids: Vec<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        scope: Option<String>,
    },
}

/// The object id of a principal named by app id, object id, a user's sign-in name or
/// display name.
async fn principal_object_id(conn: &Connection, assignee: &str) -> anyhow::Result<String> {
    for kind in ["servicePrincipals", "identities", "users", "groups"] {
        let found = list(conn.admin(Method::GET, &format!("/{kind}"), None).await?);
        let hit = found.as_array().into_iter().flatten().find(|p| {
            ["appId", "objectId", "userPrincipalName", "displayName"]
                .iter()
                .any(|f| {
                    p[*f]
                        .as_str()
                        .is_some_and(|v| v.eq_ignore_ascii_case(assignee))
                })
        });
        if let Some(p) = hit {
            return p["objectId"]
                .as_str()
                .map(str::to_owned)
                .context("principal without objectId");
        }
    }
    anyhow::bail!("no service principal, managed identity, user or group matches '{assignee}'")
}

/// `atrest role …`.
async fn role(conn: &Connection, command: RoleCommand, format: Format) -> anyhow::Result<()> {
    let subscription = format!("/subscriptions/{}", conn.subscription);
    let assignments =
        |scope: &str| format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
    let out = match command {
        RoleCommand::Definition {
            command: RoleDefinitionCommand::List { name },
        } => {
            let all = list(
                conn.management(
                    Method::GET,
                    &format!("{subscription}/providers/Microsoft.Authorization/roleDefinitions"),
                    None,
                )
                .await?,
            );
            match name {
                None => all,
                Some(n) => Value::Array(
                    all.as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| {
                            r["name"]
                                .as_str()
                                .is_some_and(|v| v.eq_ignore_ascii_case(&n))
                                || r["properties"]["roleName"]
                                    .as_str()
                                    .is_some_and(|v| v.eq_ignore_ascii_case(&n))
                        })
                        .cloned()
                        .collect(),
                ),
            }
        }
        RoleCommand::Assignment {
            command:
                RoleAssignmentCommand::Create {
                    assignee,
                    role,
                    scope,
                },
        } => {
            let principal = principal_object_id(conn, &assignee).await?;
            let scope = scope.unwrap_or(subscription);
            let id = atrest_crypto::random_uuid();
            conn.management(
                Method::PUT,
                &format!("{}/{id}", assignments(&scope)),
                Some(&json!({ "properties": { "roleDefinitionId": role, "principalId": principal } })),
            )
            .await?
        }
        RoleCommand::Assignment {
            command: RoleAssignmentCommand::List { assignee, scope },
        } => {
            let scope = scope.unwrap_or(subscription);
            let all = list(
                conn.management(Method::GET, &assignments(&scope), None)
                    .await?,
            );
            match assignee {
                None => all,
                Some(a) => {
                    let principal = principal_object_id(conn, &a).await?;
                    Value::Array(
                        all.as_array()
                            .into_iter()
                            .flatten()
                            .filter(|r| r["properties"]["principalId"] == principal.as_str())
                            .cloned()
                            .collect(),
                    )
                }
            }
        }
        RoleCommand::Assignment {
            command:
                RoleAssignmentCommand::Delete {
                    ids,
                    assignee,
                    role,
                    scope,
                },
        } => {
            let mut targets = ids;
            if let Some(a) = assignee {
                let principal = principal_object_id(conn, &a).await?;
                let scope = scope.unwrap_or(subscription);
                let all = list(
                    conn.management(Method::GET, &assignments(&scope), None)
                        .await?,
                );
                targets.extend(
                    all.as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| {
                            let p = &r["properties"];
                            p["principalId"] == principal.as_str()
                                && p["scope"]
                                    .as_str()
                                    .is_some_and(|s| s.eq_ignore_ascii_case(&scope))
                                && role.as_deref().is_none_or(|want| {
                                    [
                                        &p["roleDefinitionName"],
                                        &r["properties"]["roleDefinitionId"],
                                    ]
                                    .iter()
                                    .any(|v| {
                                        v.as_str().is_some_and(|v| {
                                            v.eq_ignore_ascii_case(want)
                                                || v.to_ascii_lowercase()
                                                    .ends_with(&want.to_ascii_lowercase())
                                        })
                                    })
                                })
                        })
                        .filter_map(|r| r["id"].as_str().map(str::to_owned)),
                );
            }
            anyhow::ensure!(
                !targets.is_empty(),
                "no role assignment matches; give --ids or --assignee"
            );
            for id in &targets {
                conn.management(Method::DELETE, id, None).await?;
            }
            return Ok(());
        }
    };
    print(&out, format)
}
