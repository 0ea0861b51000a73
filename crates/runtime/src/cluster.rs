//! This replica's place among the replicas sharing one database: which of them leads, that
//! is, runs the cluster's background jobs (the scheduler, purges, audit retention and
//! checkpoint, snapshot copies, key-version rotation of disk encryption sets). Leadership
//! is a lease on the database's clock: the leader renews it well within its time, and
//! stops acting as leader before the time the database gives it runs out, so two replicas
//! never both lead; when the leader stops (it resigns) or dies (its lease runs out),
//! another takes over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest_store::{Acquired, Store};

use crate::Error;

/// The lease of the cluster's leadership.
pub const LEADER_LEASE: &str = "leader";

/// This replica's leadership.
#[derive(Debug)]
pub struct Leadership {
    store: Arc<Store>,
    replica: String,
    ttl: Duration,
    held: Mutex<Option<Held>>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// When this replica stops acting as leader unless it renews first
    /// ([`Store::acquire_lease`]).
    until: Instant,
}

/// Who leads, as this replica last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leader {
    /// This replica, at this epoch.
    This {
        /// The lease's epoch.
        epoch: i64,
    },
    /// Another replica (named), or none known.
    Other(Option<String>),
}

impl Leadership {
    /// `replica`'s leadership in `store`'s cluster, leased for `ttl` at a time.
    pub fn new(store: Arc<Store>, replica: &str, ttl: Duration) -> Self {
        Leadership {
            store,
            replica: replica.to_owned(),
            ttl,
            held: Mutex::new(None),
        }
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a lease lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes or renews the leadership if it is free, this replica's, or its holder's time
    /// ran out. Blocks on the database.
    pub fn try_lead(&self) -> Result<Leader, Error> {
        let (acquired, until) = self
            .store
            .acquire_lease(LEADER_LEASE, &self.replica, self.ttl)?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match acquired {
            Acquired::Held { epoch } => {
                *held = Some(Held { epoch, until });
                Leader::This { epoch }
            }
            Acquired::HeldBy(row) => {
                *held = None;
                Leader::Other(Some(row.holder))
            }
        })
    }

    /// Whether this replica leads now: it holds the lease and its time has not run out.
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// The epoch of the lease this replica holds, while it leads.
    pub fn epoch(&self) -> Option<i64> {
        let held = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.filter(|h| Instant::now() < h.until).map(|h| h.epoch)
    }

    /// The cluster's gauges in the Prometheus text format: whether this replica leads (and
    /// at which epoch), how many leases it holds, and how many store generations behind
    /// the database its caches are (`generation_lag`).
    pub fn render_metrics(&self, generation_lag: u64) -> Result<String, Error> {
        let held = self.store.read(|tx| {
            let now = tx.database_now_ms()?;
            let leases = tx.leases("")?;
            Ok::<_, atrest_store::StoreError>(
                leases
                    .iter()
                    .filter(|l| l.holder == self.replica && l.expires_ms > now)
                    .count(),
            )
        })?;
        let replica = &self.replica;
        let epoch = self.epoch();
        Ok(format!(
            "# HELP ClusterLeader Whether this replica runs the cluster's background jobs.\n\
             # TYPE ClusterLeader gauge\nClusterLeader{{replica=\"{replica}\"}} {}\n\
             # HELP ClusterLeaderEpoch The epoch of the leadership this replica holds (0: none).\n\
             # TYPE ClusterLeaderEpoch gauge\nClusterLeaderEpoch{{replica=\"{replica}\"}} {}\n\
             # HELP ClusterLeasesHeld Leases (leadership, disks) this replica holds.\n\
             # TYPE ClusterLeasesHeld gauge\nClusterLeasesHeld{{replica=\"{replica}\"}} {held}\n\
             # HELP ClusterGenerationLag Writes to the state this replica's caches have not seen yet.\n\
             # TYPE ClusterGenerationLag gauge\nClusterGenerationLag{{replica=\"{replica}\"}} {generation_lag}\n",
            u8::from(epoch.is_some()),
            epoch.unwrap_or(0),
        ))
    }

    /// Gives the leadership up, so another replica takes it at its next try.
    pub fn resign(&self) -> Result<(), Error> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(held) = held {
            self.store
                .release_lease(LEADER_LEASE, &self.replica, held.epoch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_at_a_time_and_resigning_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_file(&dir.path().join("state.db")).unwrap());
        let a = Leadership::new(store.clone(), "a", Duration::from_secs(60));
        let b = Leadership::new(store, "b", Duration::from_secs(60));
        assert_eq!(a.try_lead().unwrap(), Leader::This { epoch: 1 });
        assert_eq!(b.try_lead().unwrap(), Leader::Other(Some("a".into())));
        assert!(a.is_leader() && !b.is_leader());
        a.resign().unwrap();
        assert!(!a.is_leader());
        assert_eq!(b.try_lead().unwrap(), Leader::This { epoch: 2 });
        assert_eq!(a.try_lead().unwrap(), Leader::Other(Some("b".into())));
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_leading_before_its_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_file(&dir.path().join("state.db")).unwrap());
        let a = Leadership::new(store, "a", Duration::from_millis(200));
        assert!(matches!(a.try_lead().unwrap(), Leader::This { .. }));
        assert!(a.is_leader());
        std::thread::sleep(Duration::from_millis(170));
        assert!(
            !a.is_leader(),
            "past four fifths of the lease without renewing"
        );
    }
}
