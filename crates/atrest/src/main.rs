//! `atrest`: the server and an `az`-like command line over its HTTP API.
#![forbid(unsafe_code)]

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Frees from any thread without taking a lock the allocating thread holds: requests move
/// between runtime threads and hand buffers to the audit writer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

use crate::cli::output::Format;
use crate::cli::ClientCommand;

#[derive(Parser)]
#[command(
    name = "atrest",
    version,
    about = "Self-hosted encryption at rest, modelled on Azure Key Vault and managed disks"
)]
struct Cli {
    /// Data directory. `atrest server` keeps its state there; other commands read the
    /// endpoint and credentials from its `env` file, unless it is the directory whose `env`
    /// is sourced (whose variables, then, may be overridden one by one).
    #[arg(long, global = true, env = "ATREST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Output format: JSON, except a table for `monitor query`.
    #[arg(short = 'o', long, global = true, value_enum)]
    output: Option<Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server on a data directory.
    Server(ServerArgs),
    /// Walk through customer-managed disk encryption on a throw-away server: a vault, key
    /// and disk encryption set; a disk written over NBD; its ciphertext at rest; revocation;
    /// rotation and the audit rows that prove it. Takes about a minute.
    Demo {
        /// Keep the demo's data directory instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address to listen on (HTTPS). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_lifetime: Duration,
    /// How often items past their scheduled purge date are purged.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    purge_interval: Duration,
    /// Delete audit events older than this (checked with the purge job); kept forever when
    /// absent. The chain stays verifiable from the oldest event kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    audit_retention: Option<Duration>,
    /// Per-vault throttling budgets per window, replacing Azure's defaults
    /// (secrets=4000,key-create=10,keys=2000,hsm-keys=1000).
    #[arg(long, default_value = "")]
    throttle_limits: String,
    /// The throttling window (Azure's is 10 seconds).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    throttle_window: Duration,
    /// POST each alert a detection rule raises, as JSON, to this URL (http://, or https://
    /// with a certificate from the instance CA).
    #[arg(long)]
    alert_webhook: Option<String>,
    /// Address of the NBD server that exports the disks of running virtual machines. By
    /// default a free port on the loopback interface, so instances side by side never
    /// collide; `vm show` prints each disk's `nbd://` URI.
    #[arg(long, default_value = "127.0.0.1:0")]
    nbd_listen: SocketAddr,
    /// Keep disk blocks in this object store instead of the data directory, in the
    /// `object_store` crate's URL schemes: `az://CONTAINER` (with AZURE_STORAGE_ACCOUNT_NAME
    /// and AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_USE_EMULATOR=true for Azurite),
    /// `s3://BUCKET` (with the AWS_* variables), or `file:///PATH`. The data directory
    /// then caches chunks.
    #[arg(long)]
    blob_store: Option<String>,
    /// Keep the state and the audit log in this PostgreSQL database instead of SQLite files
    /// in the data directory: `postgres://USER:PASSWORD@HOST:PORT/DB`, with `sslmode=
    /// disable|prefer|require|verify-full` (the server's certificate is verified whenever
    /// TLS is used) and `sslrootcert=FILE`. Every replica names the same database and holds
    /// a copy of the same root.key.
    #[arg(long, env = "ATREST_STATE")]
    state: Option<String>,
    /// This replica's name among those sharing a database (default: host name and port).
    #[arg(long)]
    replica_name: Option<String>,
    /// The port clients reach the API on when it is not the listening port: the load
    /// balancer's, shared by every replica behind it (token issuer, vault URLs, DIR/env).
    #[arg(long)]
    public_port: Option<u16>,
    /// How long the cluster's leadership is held without renewal: when the leader dies,
    /// another replica takes over within this time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long a disk chunk that no manifest names any more is kept before it is deleted
    /// (checked with the purge job), for readers of an older manifest.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    blob_garbage_grace: Duration,
    /// The most bytes per second a snapshot copy to another region (CopyStart) moves;
    /// unlimited when absent.
    #[arg(long)]
    snapshot_copy_bandwidth: Option<u64>,
    /// Limits on one disk's incremental snapshots: how many within a window, the window,
    /// and how many in all (Azure's: 7 per 5 minutes, 500).
    #[arg(long, default_value = "7,5m,500", value_parser = parse_snapshot_limits)]
    incremental_snapshot_limits: atrest_api::SnapshotLimits,
    /// How often each open disk re-checks its customer-managed key (Azure takes up to an
    /// hour); a disk whose key became unusable stops serving I/O until it is usable again.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    key_check_interval: Duration,
    /// When a response may leave, relative to its audit event: `journal` once the event
    /// is written to the audit journal (it survives a crash of atrest, and is stored and
    /// synced within `--audit-journal-interval`), `commit` once it is stored and synced
    /// (slower; survives a power loss too).
    #[arg(long, value_enum, default_value = "journal")]
    audit_durability: AuditDurability,
    /// Longest a journaled audit event waits to be stored and synced: what a power loss
    /// can cost under `--audit-durability journal`.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    audit_journal_interval: Duration,
}

/// `--incremental-snapshot-limits PER_WINDOW,WINDOW,TOTAL`, e.g. `7,5m,500`.
fn parse_snapshot_limits(value: &str) -> Result<atrest_api::SnapshotLimits, String> {
    let bad = || format!("'{value}' is not PER_WINDOW,WINDOW,TOTAL (for example 7,5m,500)");
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let [per_window, window, per_disk] = parts.as_slice() else {
        return Err(bad());
    };
    Ok(atrest_api::SnapshotLimits {
        per_window: per_window.parse().map_err(|_| bad())?,
        window_secs: humantime::parse_duration(window)
            .map_err(|_| bad())?
            .as_secs() as i64,
        per_disk: per_disk.parse().map_err(|_| bad())?,
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    match cli.command {
        Command::Server(args) => {
            let data_dir = cli
                .data_dir
                .context("--data-dir is required for `atrest server`")?;
            server(data_dir, args).await
        }
        Command::Demo { keep } => cli::demo::run(keep).await,
        Command::Client(command) => {
            cli::run(
                &cli::connection::connect(cli.data_dir.as_deref())?,
                command,
                format,
            )
            .await
        }
    }
}

/// `--audit-durability`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuditDurability {
    Journal,
    Commit,
}

async fn server(data_dir: PathBuf, args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let opts = atrest_api::Options {
        data_dir,
        listen: args.listen,
        token_lifetime: args.token_lifetime.as_secs().max(1) as i64,
        purge_interval: args.purge_interval.max(Duration::from_secs(1)),
        audit_retention: args.audit_retention,
        limits: atrest_core::limits::ServiceLimits {
            window_secs: args.throttle_window.as_secs().max(1),
            ..Default::default()
        }
        .with_overrides(&args.throttle_limits)?,
        alert_webhook: args.alert_webhook,
        nbd_listen: Some(args.nbd_listen),
        blob_store: args.blob_store,
        state: args.state,
        replica_name: args.replica_name,
        public_port: args.public_port,
        lease_duration: args.lease_duration,
        blob_garbage_grace: args.blob_garbage_grace,
        snapshot_copy_bandwidth: args.snapshot_copy_bandwidth,
        snapshot_limits: args.incremental_snapshot_limits,
        key_check_interval: args.key_check_interval.max(Duration::from_millis(100)),
        audit_durability: match args.audit_durability {
            AuditDurability::Journal => atrest_api::Durability::Journal {
                interval: args.audit_journal_interval.max(Duration::from_millis(1)),
            },
            AuditDurability::Commit => atrest_api::Durability::Commit,
        },
    };
    let instance = atrest_api::Instance::start(&opts).await?;
    tracing::info!(
        address = %instance.local_addr(),
        env = %instance.env_path().display(),
        "atrest is ready; `source` the env file to use the SDKs and the CLI"
    );
    instance.run(shutdown_signal()).await?;
    tracing::info!("atrest stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
}
