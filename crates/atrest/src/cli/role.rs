//! `atrest role`: role definitions and role assignments.

use anyhow::Context;
use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::connection::Connection;
use super::list;
use super::output::{print, Format};

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
pub(super) async fn principal_object_id(
    conn: &Connection,
    assignee: &str,
) -> anyhow::Result<String> {
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
pub(super) async fn role(
    conn: &Connection,
    command: RoleCommand,
    format: Format,
) -> anyhow::Result<()> {
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
