//! `atrest identity`: user-assigned managed identities.

use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::json;

use super::connection::Connection;
use super::list;
use super::output::{print, Format};

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
pub(super) async fn identity(
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
