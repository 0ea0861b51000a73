//! `atrest keyvault secret`: secrets and their versions.

use atrest_api::client::Method;
use clap::{ArgAction, Subcommand};
use serde_json::{json, Map, Value};

use super::connection::Connection;
use super::output::{print, Format};
use super::{tags, unix_time};

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

pub(super) async fn secret(
    conn: &Connection,
    command: SecretCommand,
    format: Format,
) -> anyhow::Result<()> {
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
