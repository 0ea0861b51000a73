//! `atrest keyvault`: vaults, their access policies and soft-deleted vaults; the way into
//! `keyvault key` and `keyvault secret`.

use anyhow::Context;
use atrest_api::client::Method;
use clap::{ArgAction, Subcommand};
use serde_json::{json, Map, Value};

use super::certificate::{certificate, CertificateCommand};
use super::connection::Connection;
use super::key::{key, KeyCommand};
use super::output::{print, Format};
use super::role::principal_object_id;
use super::secret::{secret, SecretCommand};
use super::{list, tags};

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
    /// Manage certificates (with their managed keys and secrets).
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
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
pub(super) async fn edit_policy(
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

pub(crate) fn vault_path(conn: &Connection, rg: Option<&str>, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{name}",
        conn.subscription,
        rg.unwrap_or(&conn.resource_group)
    )
}

pub(super) fn vault_properties(
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
pub(super) async fn keyvault(
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
        C::Certificate { command } => return certificate(conn, command, format).await,
    };
    print(&out, format)
}

pub(super) async fn deleted_vault(conn: &Connection, name: &str) -> anyhow::Result<Value> {
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
