//! The state every handler reaches: the services, the audit sink and the instance's
//! settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use atrest_disk::Compute;
use atrest_identity::Identity;
use atrest_resources::ResourceGroups;
use atrest_runtime::audit::AuditSink;
use atrest_runtime::cluster::Leadership;
use atrest_runtime::metrics::Metrics;
use atrest_runtime::scheduler::Scheduler;
use atrest_runtime::throttle::Throttle;
use atrest_runtime::trail::AuditTrail;
use atrest_vault::Vaults;

/// The host suffix of vault data planes: `NAME.vault.localhost`.
pub(crate) const VAULT_HOST_SUFFIX: &str = ".vault.localhost";

/// Instance-wide settings the edge needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The port clients reach the server on (part of every vault URI).
    pub port: u16,
    /// The subscription all resources live in.
    pub subscription: String,
    /// The resource group created at bootstrap.
    pub resource_group: String,
    /// Where the NBD server listens, if it runs.
    pub nbd: Option<SocketAddr>,
}

/// Everything a request handler reaches.
#[derive(Debug)]
pub struct AppState {
    /// Token service and principals.
    pub identity: Identity,
    /// Vaults and secrets.
    pub vaults: Vaults,
    /// The audit log, for reading, verifying and retention.
    pub audit_trail: AuditTrail,
    /// Where audit events go.
    pub audit: AuditSink,
    /// Instance settings.
    pub settings: Settings,
    /// Request and correlation ids.
    pub request_ids: RequestIds,
    /// The key lifetime-action scheduler and its clock.
    pub scheduler: Scheduler,
    /// Per-vault budgets.
    pub throttle: Throttle,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// Disk encryption sets, disks and virtual machines.
    pub compute: Arc<Compute>,
    /// Recovery Services vaults and Azure Backup.
    pub backup: atrest_backup::Backup,
    /// Resource groups.
    pub resource_groups: ResourceGroups,
    /// Whether this replica runs the cluster's background jobs.
    pub leader: Arc<Leadership>,
}

impl AppState {
    /// The `WWW-Authenticate` challenge of the data plane. The resource is the parent
    /// domain of every vault host, port included, as the Python SDK requires.
    pub fn challenge(&self) -> String {
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"https://vault.localhost:{}\"",
            self.identity.authority(),
            self.identity.tenant(),
            self.settings.port
        )
    }

    /// The management endpoint, `https://localhost:PORT`, for URLs the API hands out.
    pub fn management_base(&self) -> String {
        format!("https://localhost:{}", self.settings.port)
    }

    /// `https://NAME.vault.localhost:PORT`, without a trailing slash.
    pub fn vault_base(&self, name: &str) -> String {
        format!(
            "https://{}{VAULT_HOST_SUFFIX}:{}",
            name.to_ascii_lowercase(),
            self.settings.port
        )
    }
}

/// Request and correlation ids: unique, not secret, so a random per-process prefix and
/// a counter serve, without a trip to the DRBG on every request.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let h = atrest_crypto::random_hex(8);
        RequestIds {
            prefix: format!("{}-{}-4{}", &h[..8], &h[8..12], &h[13..16]),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id, in UUID layout.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{:04x}-{:012x}",
            self.prefix,
            0x8000 | (n >> 48) & 0x3fff,
            n & 0xffff_ffff_ffff
        )
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_uuids() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_ne!(RequestIds::new().next(), RequestIds::new().next());
    }
}
