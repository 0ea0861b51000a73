//! `atrest ad`: service principals, users and groups.

use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::connection::{enc, Connection};
use super::list;
use super::output::{print, Format};
use super::role::principal_object_id;

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
pub(super) async fn ad(
    conn: &Connection,
    command: AdCommand,
    format: Format,
) -> anyhow::Result<()> {
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
pub(super) async fn user(conn: &Connection, command: UserCommand) -> anyhow::Result<Option<Value>> {
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
pub(super) async fn group(
    conn: &Connection,
    command: GroupCommand,
) -> anyhow::Result<Option<Value>> {
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
pub(super) async fn service_principal(
    conn: &Connection,
    command: SpCommand,
) -> anyhow::Result<Option<Value>> {
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
