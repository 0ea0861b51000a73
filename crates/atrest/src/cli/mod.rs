//! The command line: `atrest server`, `atrest demo`, and the `az`-like client commands,
//! one module per command group, each owning its arguments and its run function. A client
//! command builds one or a few API calls and prints the result.

pub(crate) mod connection;
pub(crate) mod demo;
pub(crate) mod output;

mod ad;
mod backup;
mod certificate;
mod clock;
mod compute;
mod identity;
mod key;
mod keyvault;
mod monitor;
mod role;
mod secret;
mod site_recovery;
mod transfer;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Map, Value};

use self::ad::{ad, AdCommand};
use self::clock::{clock, ClockCommand};
use self::identity::{identity, IdentityCommand};
use self::keyvault::{keyvault, KeyvaultCommand};
use self::monitor::{monitor, MonitorCommand};
use self::role::{role, RoleCommand};
use connection::Connection;
use output::Format;

/// `key=value` pairs, as `az --tags` takes them.
pub(super) fn tags(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(k.to_owned(), Value::from(v));
    }
    Ok(Value::Object(map))
}

/// Seconds since the epoch from an RFC 3339 time.
pub(super) fn unix_time(text: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("'{text}' is not a time like 2030-01-31T00:00:00Z"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

/// Unwraps `{"value": [...]}` the way `az` prints lists.
pub(super) fn list(mut body: Value) -> Value {
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
        command: compute::DesCommand,
    },
    /// Managed disks, always encrypted at rest.
    Disk {
        #[command(subcommand)]
        command: compute::DiskCommand,
    },
    /// Snapshots of disks, bound to the same keys.
    Snapshot {
        #[command(subcommand)]
        command: compute::SnapshotCommand,
    },
    /// Images: disks kept to make new disks from, with their keys.
    Image {
        #[command(subcommand)]
        command: compute::ImageCommand,
    },
    /// Virtual machines, whose running disks are served over NBD.
    Vm {
        #[command(subcommand)]
        command: compute::VmCommand,
    },
    /// Azure Backup: Recovery Services vaults, policies, protection, recovery points,
    /// restores and jobs.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Site Recovery: replication of VMs to another region, failover, re-protect.
    SiteRecovery {
        #[command(subcommand)]
        command: site_recovery::SiteRecoveryCommand,
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
            compute::disk_encryption_set(conn, command, format).await
        }
        ClientCommand::Disk { command } => compute::disk(conn, command, format).await,
        ClientCommand::Snapshot { command } => compute::snapshot(conn, command, format).await,
        ClientCommand::Image { command } => compute::image(conn, command, format).await,
        ClientCommand::Vm { command } => compute::vm(conn, command, format).await,
        ClientCommand::Backup { command } => backup::backup(conn, command, format).await,
        ClientCommand::SiteRecovery { command } => {
            site_recovery::site_recovery(conn, command, format).await
        }
    }
}
