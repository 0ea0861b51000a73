//! One atrest instance on one data directory: the exclusive lock, the root key, the
//! state database, the TLS identity, the token signer, the bootstrap administrator and
//! `DIR/env`. The binary and the integration tests start servers only through here.
//!
//! Layout of `DIR`:
//!
//! ```text
//! lock        held (flock) while a server runs; a second server is refused
//! root.key    the instance root key, 0600
//! state.db    SQLite (WAL): everything else, secrets sealed
//! audit.db    SQLite (WAL): the audit log
//! disks/      one sparse block file per disk, AES-256-XTS ciphertext (0700)
//! tls/ca.pem, tls/server.pem   public certificates; the server key is sealed in state.db
//! env         0600 `export` lines for SDKs and the CLI
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest_backup::Backup;
use atrest_blocks::BlockStore;
use atrest_core::limits::ServiceLimits;
use atrest_crypto::{generate_tls_identity, random_uuid, TokenSigner};
use atrest_disk::{Compute, ComputeConfig};
use atrest_identity::Identity;
use atrest_resources::ResourceGroups;
use atrest_runtime::audit::{AuditSink, Durability};
use atrest_runtime::cluster::Leadership;
use atrest_runtime::meta::Meta;
use atrest_runtime::metrics::Metrics;
use atrest_runtime::scheduler::Scheduler;
use atrest_runtime::throttle::Throttle;
use atrest_runtime::time::unix_now;
use atrest_runtime::trail::{self, AuditTrail, OpenedAudit};
use atrest_vault::Vaults;
use thiserror::Error;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::admin::alerts;
use crate::client::Client;
use crate::jobs::{
    cache_loop, copy_loop, disk_loop, key_check_loop, leader_loop, purge_loop, replication_loop,
    scheduler_loop,
};
use crate::server::{load_tls_config, serve};
use crate::state::{AppState, RequestIds, Settings, VAULT_HOST_SUFFIX};
use crate::vault_access::InProcessVaults;

/// The resource group that exists from the first start.
pub const DEFAULT_RESOURCE_GROUP: &str = "default";

/// Where the default resource group lives.
pub const DEFAULT_LOCATION: &str = "westeurope";

/// Display name of the administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "atrest-bootstrap-admin";

/// Why an instance could not start.
#[derive(Debug, Error)]
pub enum InstanceError {
    /// Another server holds the data directory.
    #[error("another atrest server is already running on data directory {0}")]
    Locked(PathBuf),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The root key or sealed state could not be used.
    #[error(transparent)]
    Crypto(#[from] atrest_crypto::CryptoError),
    /// The state database, the audit log or the metadata failed.
    #[error(transparent)]
    Runtime(#[from] atrest_runtime::Error),
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] atrest_identity::DirectoryError),
    /// A role could not be granted.
    #[error(transparent)]
    Role(#[from] atrest_identity::RoleError),
    /// The vault service failed to start.
    #[error(transparent)]
    Vault(#[from] atrest_vault::VaultError),
    /// A setting that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The TLS configuration was refused.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The disk service failed to start.
    #[error(transparent)]
    Compute(#[from] atrest_disk::ComputeError),
    /// The block store could not be opened (a bad `--blob-store`, an unreadable
    /// directory).
    #[error(transparent)]
    Blocks(#[from] atrest_blocks::BlockError),
    /// The default resource group could not be created.
    #[error(transparent)]
    ResourceGroup(#[from] atrest_resources::ResourceGroupError),
    /// The alert webhook cannot be used.
    #[error("alert webhook: {0}")]
    Webhook(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError + '_ {
    move |source| InstanceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to start an instance.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Lifetime of issued tokens, seconds.
    pub token_lifetime: i64,
    /// How often soft-deleted objects and vaults past their purge date are purged.
    pub purge_interval: Duration,
    /// Audit events older than this are deleted by the purge job; `None` keeps them all.
    pub audit_retention: Option<Duration>,
    /// Per-vault throttling budgets.
    pub limits: ServiceLimits,
    /// Where alerts are posted (`http://` or `https://` under the instance CA), if anywhere.
    pub alert_webhook: Option<String>,
    /// Where the NBD server listens; `None` runs none.
    pub nbd_listen: Option<SocketAddr>,
    /// The object store holding disk blocks (`az://`, `s3://`, `file://`); `None` keeps
    /// them in the data directory.
    pub blob_store: Option<String>,
    /// How long a disk chunk no manifest names is kept before it is deleted.
    pub blob_garbage_grace: Duration,
    /// The most bytes per second a snapshot `CopyStart` copies; `None`: no limit.
    pub snapshot_copy_bandwidth: Option<u64>,
    /// Limits on one disk's incremental snapshots.
    pub snapshot_limits: atrest_disk::SnapshotLimits,
    /// How often each open disk re-checks its customer-managed key.
    pub key_check_interval: Duration,
    /// When a response may leave, relative to its audit event's durability.
    pub audit_durability: Durability,
    /// The PostgreSQL database holding the state (`postgres://…`), shared by every
    /// replica; `None` keeps it in SQLite files in the data directory.
    pub state: Option<String>,
    /// This replica's name among those sharing a database; `None`: the host's name and
    /// the listening port.
    pub replica_name: Option<String>,
    /// The port clients reach the API on, when it is not the listening port (replicas
    /// behind a load balancer share the balancer's): token issuer, vault URLs, `DIR/env`.
    pub public_port: Option<u16>,
    /// How long the cluster's leadership (and a disk's lease) is held without renewal.
    pub lease_duration: Duration,
}

/// A started instance, listening but not yet serving.
#[derive(Debug)]
pub struct Instance {
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    audit_writer: tokio::task::JoinHandle<()>,
    nbd: Option<TcpListener>,
    key_check_interval: Duration,
    purge_interval: Duration,
    audit_retention: Option<Duration>,
    env_path: PathBuf,
    _lock: fs::File,
}

/// Writes `contents` to `path` with mode 0600, atomically.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), InstanceError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Shell single-quoting for `DIR/env`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The variables of a `DIR/env` file as [`Instance::start`] writes it: `export K='V'`
/// lines, a quote inside a value written `'\''`.
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| {
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v)
                .replace(r"'\''", "'");
            (k.to_owned(), v)
        })
        .collect()
}

impl Instance {
    /// Opens (or initialises) the data directory, binds the listener and writes `DIR/env`.
    /// Each step returns what the next needs.
    pub async fn start(opts: &Options) -> Result<Instance, InstanceError> {
        let dir = &opts.data_dir;
        let (lock, env_path) = lock_data_dir(dir)?;
        let replica = match &opts.replica_name {
            Some(name) => {
                atrest_core::names::check_replica_name(name)
                    .map_err(|e| InstanceError::Config(e.to_string()))?;
                name.clone()
            }
            None => default_replica_name(dir)?,
        };
        let (keys, signer) = open_keys(dir, opts.state.as_deref())?;
        let (tls, ca_path) = tls_identity(dir, &keys)?;
        let listener = bind(opts.listen).await?;
        let port = match opts.public_port {
            Some(port) => port,
            None => listener.local_addr().map_err(io_err(dir))?.port(),
        };
        let identity = Identity::new(
            keys.meta.store().clone(),
            signer,
            keys.tenant.clone(),
            format!("https://localhost:{port}"),
            format!("https://vault.localhost:{port}"),
        )
        .with_token_lifetime(opts.token_lifetime);
        let admin = bootstrap_admin(&identity, &keys.meta, &keys.subscription)?;
        let env = env_file(dir, &ca_path, &identity, &keys, &admin)?;
        let leader = Arc::new(Leadership::new(
            keys.meta.store().clone(),
            &replica,
            opts.lease_duration,
        ));
        let audit = open_audit(dir, &replica, leader.clone(), opts, &keys, &ca_path)?;
        let nbd = match opts.nbd_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let (state, key_access) = services(
            dir,
            opts,
            keys,
            identity,
            audit.trail,
            audit.sink,
            port,
            &nbd,
            leader,
        )?;
        // Lead at once if nobody does, so the first scheduler pass runs at start.
        let leader = state.leader.clone();
        match tokio::task::spawn_blocking(move || leader.try_lead()).await {
            Ok(Ok(lead)) => tracing::info!(replica = %replica, ?lead, "cluster leadership"),
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                return Err(InstanceError::Io {
                    path: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            }
        }
        key_access.attach(&state);
        write_private(&env_path, env.as_bytes())?;
        Ok(Instance {
            state,
            listener,
            tls,
            audit_writer: audit.writer,
            nbd,
            key_check_interval: opts.key_check_interval,
            purge_interval: opts.purge_interval,
            audit_retention: opts.audit_retention,
            env_path,
            _lock: lock,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Path of `DIR/env`.
    pub fn env_path(&self) -> &Path {
        &self.env_path
    }

    /// Serves until `shutdown` completes, then drains requests and the audit writer.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        if cfg!(atrest_unguarded_bench) {
            tracing::error!("built with --cfg atrest_unguarded_bench: requests are neither authorized nor audited; for benchmarks only");
        }
        let purger = tokio::spawn(purge_loop(
            self.state.clone(),
            self.purge_interval,
            self.audit_retention,
        ));
        let leader = tokio::spawn(leader_loop(self.state.clone()));
        let disks = tokio::spawn(disk_loop(self.state.clone()));
        let caches = self
            .state
            .vaults
            .is_shared()
            .then(|| tokio::spawn(cache_loop(self.state.clone())));
        let scheduler = tokio::spawn(scheduler_loop(self.state.clone()));
        if let Err(e) = self.state.compute.resume(unix_now().0).await {
            tracing::error!(error = %e, "cannot start the virtual machines that were running");
        }
        let key_checker = tokio::spawn(key_check_loop(self.state.clone(), self.key_check_interval));
        let copier = tokio::spawn(copy_loop(self.state.clone()));
        let replicator = tokio::spawn(replication_loop(self.state.clone()));
        let (stop_nbd, nbd_stopped) = tokio::sync::oneshot::channel::<()>();
        let nbd = self.nbd.map(|listener| {
            let exports: Arc<dyn atrest_disk::nbd::Exports> = self.state.compute.clone();
            tokio::spawn(atrest_disk::nbd::serve(listener, exports, async {
                let _ = nbd_stopped.await;
            }))
        });
        let result = serve(self.listener, self.tls, self.state.clone(), shutdown).await;
        let _ = stop_nbd.send(());
        let background = [
            Some(leader),
            Some(disks),
            caches,
            Some(purger),
            Some(scheduler),
            Some(key_checker),
            Some(copier),
            Some(replicator),
        ];
        for task in background.iter().flatten() {
            task.abort();
        }
        // Aborted tasks release their state once they have stopped.
        for task in background.into_iter().flatten() {
            let _ = task.await;
        }
        if let Some(nbd) = nbd {
            let _ = nbd.await;
        }
        self.state.compute.flush_all();
        // The checkpoint covers every event, the journaled ones included.
        self.state.audit.flush().await;
        if self.state.leader.is_leader() {
            if let Err(e) = self.state.audit_trail.save_checkpoint() {
                tracing::error!(error = %e, "cannot record the audit checkpoint");
            }
        }
        // Another replica takes over at its next try rather than when the lease runs out.
        if let Err(e) = self.state.leader.resign() {
            tracing::warn!(error = %e, "cannot hand the cluster's leadership over");
        }
        // The audit writer ends once every sink (held by the state) is gone.
        drop(self.state);
        if tokio::time::timeout(Duration::from_secs(5), self.audit_writer)
            .await
            .is_err()
        {
            tracing::warn!("audit writer did not finish within 5 s of shutdown");
        }
        result
    }
}

/// The name this data directory's replica got on its first start, kept in
/// `DIR/replica-name` so a restart finds its machines and disk leases again: the host's
/// name and a random suffix (replicas may share a host).
fn default_replica_name(dir: &Path) -> Result<String, InstanceError> {
    let path = dir.join("replica-name");
    match fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
        _ => {}
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = match host.trim() {
        "" => "localhost",
        host => host,
    };
    let name = format!("{host}-{}", &random_uuid()[..8]);
    write_private(&path, name.as_bytes())?;
    Ok(name)
}

/// The keys and identifiers every later step needs, from the root key outward.
struct Keys {
    meta: Meta,
    tenant: String,
    subscription: String,
}

/// Creates the data directory (0700) and takes its lock; removes a stale `DIR/env`, whose
/// appearance signals readiness.
fn lock_data_dir(dir: &Path) -> Result<(fs::File, PathBuf), InstanceError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let lock_path = dir.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(InstanceError::Locked(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }
    let env_path = dir.join("env");
    match fs::remove_file(&env_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&env_path)(e)),
        _ => {}
    }
    Ok((lock, env_path))
}

/// The root key, the state database and the instance's ids; and the token signer.
fn open_keys(dir: &Path, state: Option<&str>) -> Result<(Keys, TokenSigner), InstanceError> {
    let meta = Meta::open(dir, state)?;
    let tenant = meta.text_or_init("tenant_id", random_uuid)?;
    let subscription = meta.text_or_init("subscription_id", random_uuid)?;
    let signer = match meta.get("token_signer")? {
        Some(sealed) => TokenSigner::open(meta.root(), "token_signer", &sealed)?,
        None => {
            let signer = TokenSigner::generate()?;
            meta.put("token_signer", &signer.seal(meta.root(), "token_signer"))?;
            signer
        }
    };
    let keys = Keys {
        meta,
        tenant,
        subscription,
    };
    Ok((keys, signer))
}

/// The TLS configuration, from the sealed server key and `tls/`, or a new CA and server
/// certificate on first start; and the path of the CA certificate.
fn tls_identity(
    dir: &Path,
    keys: &Keys,
) -> Result<(Arc<rustls::ServerConfig>, PathBuf), InstanceError> {
    let meta = &keys.meta;
    let tls_dir = dir.join("tls");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&tls_dir)
        .map_err(io_err(&tls_dir))?;
    let (ca_path, chain_path) = (tls_dir.join("ca.pem"), tls_dir.join("server.pem"));
    // One identity for every replica of the database, so a client trusts all of them:
    // the first to start makes it (or adopts the files and key an earlier version kept).
    let opened = match meta.sealed_get(TLS_IDENTITY)? {
        Some(opened) => opened,
        None => {
            let candidate = first_tls_identity(&ca_path, &chain_path, meta)?;
            meta.get_or_init(TLS_IDENTITY, || {
                let json =
                    Zeroizing::new(serde_json::to_vec(&candidate).expect("strings serialize"));
                meta.root().seal(TLS_IDENTITY, &json)
            })?;
            // Another replica's, if it stored one first.
            meta.sealed_get(TLS_IDENTITY)?
                .expect("the TLS identity was stored just now")
        }
    };
    let id: StoredTls = serde_json::from_slice(&opened)
        .map_err(|_| rustls::Error::General("the stored TLS identity is damaged".into()))?;
    fs::write(&ca_path, &id.ca_pem).map_err(io_err(&ca_path))?;
    fs::write(&chain_path, &id.chain_pem).map_err(io_err(&chain_path))?;
    Ok((load_tls_config(&id.chain_pem, &id.key_pem)?, ca_path))
}

/// The TLS identity a first start stores: the one an earlier version kept (certificates in
/// files, the key sealed in `meta`), or a new CA and server certificate.
fn first_tls_identity(
    ca_path: &Path,
    chain_path: &Path,
    meta: &Meta,
) -> Result<StoredTls, InstanceError> {
    if let (Ok(ca_pem), Ok(chain_pem), Some(key)) = (
        fs::read_to_string(ca_path),
        fs::read_to_string(chain_path),
        meta.sealed_get(LEGACY_TLS_KEY)?,
    ) {
        let key_pem = String::from_utf8(key.to_vec())
            .map_err(|_| rustls::Error::General("sealed TLS key is not PEM".into()))?;
        return Ok(StoredTls {
            ca_pem,
            chain_pem,
            key_pem,
        });
    }
    let ips = [
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    let id = generate_tls_identity(&["localhost", "*.vault.localhost", "vault.localhost"], &ips)?;
    Ok(StoredTls {
        ca_pem: id.ca_pem,
        chain_pem: id.chain_pem,
        key_pem: id.key_pem.to_string(),
    })
}

/// The meta entry of the TLS identity (sealed: it holds the server's private key).
const TLS_IDENTITY: &str = "tls_identity";
/// Where versions before replicas kept the sealed server key (the certificates were files).
const LEGACY_TLS_KEY: &str = "tls_server_key";

/// The instance's CA certificate, server certificate chain and server key, as stored.
#[derive(serde::Serialize, serde::Deserialize, zeroize::ZeroizeOnDrop)]
struct StoredTls {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, InstanceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| InstanceError::Io {
            path: PathBuf::from(addr.to_string()),
            source,
        })
}

/// The bootstrap administrator's client id and secret, created on first start and then
/// read back (the secret is sealed, so restarts write the same `DIR/env`), with its roles
/// ensured.
fn bootstrap_admin(
    identity: &Identity,
    meta: &Meta,
    subscription: &str,
) -> Result<(String, Zeroizing<String>), InstanceError> {
    let admin = match (
        meta.get("bootstrap_admin")?,
        meta.sealed_get("bootstrap_secret")?,
    ) {
        (Some(app_id), Some(secret)) => (
            String::from_utf8_lossy(&app_id).into_owned(),
            Zeroizing::new(String::from_utf8_lossy(&secret).into_owned()),
        ),
        _ => {
            let sp = identity.create_service_principal(BOOTSTRAP_ADMIN, true, unix_now().0)?;
            meta.put("bootstrap_admin", sp.principal.app_id.as_bytes())?;
            meta.sealed_put("bootstrap_secret", sp.password.as_bytes())?;
            (
                sp.principal.app_id.clone(),
                Zeroizing::new(sp.password.clone()),
            )
        }
    };
    grant_bootstrap_roles(identity, &admin.0, subscription)?;
    Ok(admin)
}

/// The contents of `DIR/env`.
fn env_file(
    dir: &Path,
    ca_path: &Path,
    identity: &Identity,
    keys: &Keys,
    admin: &(String, Zeroizing<String>),
) -> Result<Zeroizing<String>, InstanceError> {
    let authority = identity.authority().to_owned();
    let ca = ca_path.canonicalize().map_err(io_err(ca_path))?;
    let ca = ca.display().to_string();
    let data_dir = dir.canonicalize().map_err(io_err(dir))?;
    let lines = [
        ("AZURE_AUTHORITY_HOST", authority.clone()),
        ("AZURE_TENANT_ID", "adfs".to_owned()),
        ("AZURE_CLIENT_ID", admin.0.clone()),
        ("AZURE_CLIENT_SECRET", admin.1.to_string()),
        ("AZURE_SUBSCRIPTION_ID", keys.subscription.clone()),
        ("REQUESTS_CA_BUNDLE", ca.clone()),
        ("SSL_CERT_FILE", ca.clone()),
        ("NODE_EXTRA_CA_CERTS", ca.clone()),
        ("ATREST_ENDPOINT", authority),
        ("ATREST_TENANT_ID", keys.tenant.clone()),
        ("ATREST_SUBSCRIPTION_ID", keys.subscription.clone()),
        ("ATREST_RESOURCE_GROUP", DEFAULT_RESOURCE_GROUP.to_owned()),
        ("ATREST_CA", ca),
        ("ATREST_DATA_DIR", data_dir.display().to_string()),
    ];
    Ok(Zeroizing::new(
        lines
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
            .collect::<String>(),
    ))
}

/// The audit log, its sink and writer (see [`trail::open`]), alerts posted to the webhook
/// if one is configured.
fn open_audit(
    dir: &Path,
    replica: &str,
    leader: Arc<Leadership>,
    opts: &Options,
    keys: &Keys,
    ca_path: &Path,
) -> Result<OpenedAudit, InstanceError> {
    let webhook = match &opts.alert_webhook {
        Some(url) => {
            let ca = fs::read_to_string(ca_path).map_err(io_err(ca_path))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(InstanceError::Webhook(format!(
                    "'{url}' is not an http:// or https:// URL"
                )));
            }
            let client = Client::new(&ca).map_err(|e| InstanceError::Webhook(e.to_string()))?;
            Some(alerts::webhook(
                url.clone(),
                client,
                tokio::runtime::Handle::current(),
            ))
        }
        None => None,
    };
    Ok(trail::open(
        dir,
        replica,
        leader,
        &keys.meta,
        opts.audit_durability,
        move |alert| {
            if let Some(post) = &webhook {
                post(alert);
            }
        },
    )?)
}

/// The services and the state every handler reaches; the in-process vault client, which
/// must be attached to that state.
#[allow(clippy::too_many_arguments)]
fn services(
    dir: &Path,
    opts: &Options,
    keys: Keys,
    identity: Identity,
    audit_trail: AuditTrail,
    audit: AuditSink,
    port: u16,
    nbd: &Option<TcpListener>,
    leader: Arc<Leadership>,
) -> Result<(Arc<AppState>, Arc<InProcessVaults>), InstanceError> {
    let Keys {
        meta, subscription, ..
    } = keys;
    let vaults = Vaults::new(meta.store().clone(), meta.root().clone())?;
    let key_access = Arc::new(InProcessVaults::default());
    let nbd_addr = match nbd {
        Some(l) => Some(l.local_addr().map_err(io_err(dir))?),
        None => None,
    };
    let compute = Arc::new(Compute::new(
        meta.store().clone(),
        meta.root(),
        key_access.clone(),
        ComputeConfig {
            subscription: subscription.clone(),
            blocks: BlockStore::open(&dir.join("disks"), opts.blob_store.as_deref())?,
            vault_host_suffix: VAULT_HOST_SUFFIX.to_owned(),
            garbage_grace: opts.blob_garbage_grace.as_secs() as i64,
            snapshot_limits: opts.snapshot_limits,
            copy_bandwidth: opts.snapshot_copy_bandwidth,
            replica: leader.replica().to_owned(),
            lease_ttl: opts.lease_duration,
            nbd: nbd_addr.map(|a| a.to_string()),
        },
        unix_now().0,
    )?);
    let backup = Backup::new(meta.store().clone(), compute.clone(), subscription.clone());
    let settings = Settings {
        port,
        subscription,
        resource_group: DEFAULT_RESOURCE_GROUP.to_owned(),
        nbd: nbd_addr,
    };
    let resource_groups = ResourceGroups::new(meta.store().clone());
    // The group the CLI uses when none is named exists from the first start.
    resource_groups.ensure(DEFAULT_RESOURCE_GROUP, DEFAULT_LOCATION, unix_now().0)?;
    let state = Arc::new(AppState {
        identity,
        vaults,
        audit_trail,
        audit,
        settings,
        request_ids: RequestIds::new(),
        scheduler: Scheduler::open(meta)?,
        throttle: Throttle::new(opts.limits.clone()),
        metrics: Metrics::default(),
        backup,
        compute,
        resource_groups,
        leader,
    });
    Ok((state, key_access))
}

/// The roles the bootstrap administrator holds on the whole subscription: Owner (manage
/// everything, assign roles) and Key Vault Administrator (every data-plane operation).
/// Ensured at every start, so an older data directory gains them too.
const BOOTSTRAP_ROLES: [&str; 2] = ["Owner", "Key Vault Administrator"];

fn grant_bootstrap_roles(
    identity: &Identity,
    admin_app_id: &str,
    subscription: &str,
) -> Result<(), InstanceError> {
    let Some(admin) = identity.principal_by_app_id(admin_app_id)? else {
        return Ok(());
    };
    let scope = format!("/subscriptions/{subscription}");
    for role in BOOTSTRAP_ROLES {
        match identity.create_role_assignment(None, &scope, role, &admin.object_id, unix_now().0) {
            Ok(_) | Err(atrest_identity::RoleError::Exists) => {}
            Err(e @ atrest_identity::RoleError::Store(_)) => return Err(e.into()),
            Err(e) => tracing::error!(error = %e, role, "cannot grant a bootstrap role"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn env_files_read_back_what_was_written() {
        let values = [("A", "plain"), ("B", "it's"), ("C", "a=b c"), ("D", "")];
        let text: String = values
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
            .collect();
        let vars = parse_env(&format!("# comment\n{text}not an export\n"));
        assert_eq!(vars.len(), values.len());
        for (k, v) in values {
            assert_eq!(vars[k], v, "{k}");
        }
    }
}
