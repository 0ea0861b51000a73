//! The audit log as the edge and the jobs use it: opening it with its chain key at start
//! (storing what a crash left in the journal, starting the detector and the writer),
//! listing, export, verification against the checkpoint, alerts, retention.

use std::path::Path;
use std::sync::Arc;

use atrest_core::audit::{Alert, AuditEvent, AuditFilter, Verification};
use atrest_crypto::DataKey;
use atrest_store::AuditLog;

use crate::audit::{AuditSink, Durability};
use crate::cluster::Leadership;
use crate::meta::Meta;
use crate::{detect, Error};

/// Where the audit log's head is recorded, outside the audit database.
const CHECKPOINT: &str = "audit_checkpoint";

/// Where the sealed audit chain key is kept.
const CHAIN_KEY: &str = "audit_chain_key";

/// The audit log, and the state database's record of its head.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    log: Arc<AuditLog>,
    meta: Meta,
}

/// An opened audit log with the sink requests record through and the writer behind it.
#[derive(Debug)]
pub struct OpenedAudit {
    /// For reading the log.
    pub trail: AuditTrail,
    /// For recording events.
    pub sink: AuditSink,
    /// Ends once every sink is gone.
    pub writer: tokio::task::JoinHandle<()>,
}

/// Opens the audit log beside the state database with the chain key kept in `meta`
/// (created on first start), stores the events a crash left in `dir/audit-journal` (the
/// journal of the replica named `replica`), and starts the detector (which, on the
/// `leader`, hands each alert to `notify`) and the writer.
pub fn open(
    dir: &Path,
    replica: &str,
    leader: Arc<Leadership>,
    meta: &Meta,
    durability: Durability,
    notify: impl Fn(Alert) + Send + 'static,
) -> Result<OpenedAudit, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    // The audit chain's MAC key: without it nobody can rewrite the log consistently.
    let wrapped = meta.get_or_init(CHAIN_KEY, || {
        DataKey::generate().wrap(meta.root(), CHAIN_KEY)
    })?;
    let chain_key = DataKey::unwrap(meta.root(), CHAIN_KEY, &wrapped)?.into_mac_key();
    let log = Arc::new(AuditLog::open(
        meta.audit_db(),
        Box::new(move |prev, event| chain_key.mac(&[prev, event])),
        replica,
    )?);
    let detector = detect::spawn(log.clone(), meta.clone(), leader, notify).map_err(io(dir))?;
    // Events journaled before a crash are stored first, whatever the durability now.
    let journal_dir = dir.join("audit-journal");
    let (journal, recovered) = log.recover_journal(&journal_dir)?;
    if recovered.events > 0 || recovered.torn_bytes > 0 {
        tracing::warn!(
            events = recovered.events,
            torn_bytes = recovered.torn_bytes,
            "stored audit events the journal held from before a crash"
        );
    }
    let journal = match durability {
        Durability::Journal { interval } => Some((journal, interval)),
        Durability::Commit => {
            journal.close().map_err(io(&journal_dir))?;
            None
        }
    };
    let (sink, writer) = AuditSink::spawn(log.clone(), journal, Some(detector)).map_err(io(dir))?;
    let trail = AuditTrail {
        log,
        meta: meta.clone(),
    };
    Ok(OpenedAudit {
        trail,
        sink,
        writer,
    })
}

impl AuditTrail {
    /// Events matching `filter`, newest first.
    pub fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, Error> {
        Ok(self.log.list(filter)?)
    }

    /// Up to `limit` events after sequence number `after`, oldest first.
    pub fn export(&self, after: i64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
        Ok(self.log.export(after, limit)?)
    }

    /// Every event, oldest first.
    pub fn scan(&self, f: impl FnMut(AuditEvent)) -> Result<(), Error> {
        Ok(self.log.scan(f)?)
    }

    /// Checks the chain from its anchor to the newest event, and that the log still
    /// extends the recorded checkpoint.
    pub fn verify(&self) -> Result<Verification, Error> {
        let checkpoint = self.checkpoint()?;
        Ok(self.log.verify(checkpoint)?)
    }

    /// The newest `limit` alerts.
    pub fn alerts(&self, limit: usize) -> Result<Vec<Alert>, Error> {
        Ok(self.log.alerts(limit)?)
    }

    /// How many alerts each rule raised.
    pub fn alert_counts(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.log.alert_counts()?)
    }

    /// Deletes events older than `before_ms`; how many were deleted.
    pub fn prune(&self, before_ms: i64) -> Result<u64, Error> {
        Ok(self.log.prune(before_ms)?)
    }

    /// Records the log's head (sequence number and hash) in the state database. The
    /// checkpoint only moves forward along the chain: if the log no longer holds the
    /// checkpointed event as recorded (its tail was cut, or it was rewritten), the old
    /// checkpoint stays as evidence for `verify`.
    pub fn save_checkpoint(&self) -> Result<(), Error> {
        let (seq, hash) = self.log.head()?;
        if seq == 0 {
            return Ok(());
        }
        if let Some((old_seq, old_hash)) = self.checkpoint()? {
            if old_seq > seq || self.log.hash_at(old_seq)?.is_some_and(|h| h != old_hash) {
                tracing::error!(
                    checkpoint = old_seq,
                    head = seq,
                    "the audit log does not extend its checkpoint; run `atrest monitor audit verify`"
                );
                return Ok(());
            }
        }
        self.meta
            .put(CHECKPOINT, &[&seq.to_be_bytes()[..], &hash].concat())
    }

    /// The last recorded head, if any.
    fn checkpoint(&self) -> Result<Option<(i64, [u8; 32])>, Error> {
        Ok(self.meta.get(CHECKPOINT)?.and_then(|v| {
            let seq = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            let hash: [u8; 32] = v.get(8..)?.try_into().ok()?;
            Some((seq, hash))
        }))
    }
}
