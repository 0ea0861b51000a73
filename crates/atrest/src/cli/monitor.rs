//! `atrest monitor`: the audit log, its verification, alerts and log queries.

use anyhow::Context;
use atrest_api::client::Method;
use clap::Subcommand;
use serde_json::{json, Value};

use super::connection::{enc, Connection};
use super::list;
use super::output::{print, Format};

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
pub(super) async fn monitor(
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
