//! The audit writer: requests hand their event to one thread that commits events in
//! batches (group commit) and acknowledges each once it is durable, so no response leaves
//! the server before its audit event is on disk.
//!
//! The writer knows how many requests are being served. While more are in progress than
//! it holds events for, it waits up to [`COMMIT_DELAY`] for theirs, so that under load one
//! `fsync` covers many events; a lone request is committed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_store::{AuditEvent, AuditLog};
use tokio::sync::oneshot;

use crate::server::{unix_now, AppState};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;

/// Longest a batch waits for the events of requests still in progress.
const COMMIT_DELAY: Duration = Duration::from_micros(500);

type Pending = (AuditEvent, oneshot::Sender<()>);

/// `resultSignature` (the reason phrase) and `resultType` of an outcome.
pub fn result_of(status: hyper::StatusCode) -> (String, String) {
    let kind = if status.is_success() {
        "Success"
    } else {
        "Failure"
    };
    (
        status.canonical_reason().unwrap_or("Unknown").to_owned(),
        kind.to_owned(),
    )
}

/// Where the audit log's head is recorded, outside the audit database.
const CHECKPOINT: &str = "audit_checkpoint";

/// Records the audit log's head (sequence number and hash) in the state database. The
/// checkpoint only moves forward along the chain: if the log no longer holds the
/// checkpointed event as recorded (its tail was cut, or it was rewritten), the old
/// checkpoint stays as evidence for `verify`.
pub fn save_checkpoint(state: &AppState) -> Result<(), atrest_store::StoreError> {
    let (seq, hash) = state.audit_log.head();
    if seq == 0 {
        return Ok(());
    }
    if let Some((old_seq, old_hash)) = checkpoint(state)? {
        if old_seq > seq
            || state
                .audit_log
                .hash_at(old_seq)?
                .is_some_and(|h| h != old_hash)
        {
            tracing::error!(
                checkpoint = old_seq,
                head = seq,
                "the audit log does not extend its checkpoint; run `atrest monitor audit verify`"
            );
            return Ok(());
        }
    }
    let value = [&seq.to_be_bytes()[..], &hash].concat();
    state.store.write(|tx| tx.meta_put(CHECKPOINT, &value))
}

/// The last recorded head, if any.
pub fn checkpoint(state: &AppState) -> Result<Option<(i64, [u8; 32])>, atrest_store::StoreError> {
    let stored = state.store.read(|tx| tx.meta_get(CHECKPOINT))?;
    Ok(stored.and_then(|v| {
        let seq = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
        let hash: [u8; 32] = v.get(8..)?.try_into().ok()?;
        Some((seq, hash))
    }))
}

/// An event for work the server does on its own (scheduled rotation, retention),
/// attributed to the service in this tenant and to `client`.
pub fn service_event(
    state: &AppState,
    client: &str,
    operation: &str,
    status: hyper::StatusCode,
) -> AuditEvent {
    let (result_signature, result_type) = result_of(status);
    AuditEvent {
        time_ms: unix_now().1,
        operation: operation.to_owned(),
        result_signature,
        result_type,
        status: status.as_u16(),
        tenant_id: Some(state.identity.tenant().to_owned()),
        identity_type: Some("Service".to_owned()),
        correlation_id: state.request_ids.next(),
        client_info: client.to_owned(),
        ..AuditEvent::default()
    }
}

/// Where requests send their audit events.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
    in_progress: Arc<AtomicUsize>,
}

/// A unit of work (a request, a scheduled action) that will record one audit event. The
/// writer counts these to decide whether waiting for more events is worth it.
#[derive(Debug)]
pub struct Expected<'a> {
    sink: &'a AuditSink,
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        self.sink.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Expected<'_> {
    /// Queues the event and waits until it is committed.
    pub async fn record(self, event: AuditEvent) {
        let (ack, done) = oneshot::channel();
        if self.sink.tx.send((event, ack)).is_ok() {
            let _ = done.await;
        } else {
            tracing::error!("audit writer is gone; event dropped");
        }
    }
}

impl AuditSink {
    /// Starts the writer thread over `log`. Committed batches go on to `committed` (the
    /// detector), when given. It ends when every sink is dropped, after writing what was
    /// queued; the handle completes then.
    pub fn spawn(
        log: Arc<AuditLog>,
        committed: Option<mpsc::Sender<Vec<AuditEvent>>>,
    ) -> std::io::Result<(AuditSink, tokio::task::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Pending>();
        let in_progress = Arc::new(AtomicUsize::new(0));
        let counted = in_progress.clone();
        let (finished, done) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                write_batches(&log, &rx, &counted, committed.as_ref());
                let _ = finished.send(());
            })?;
        let handle = tokio::spawn(async move {
            let _ = done.await;
        });
        Ok((AuditSink { tx, in_progress }, handle))
    }

    /// Announces work that will record an event; call it when the work begins.
    pub fn expect(&self) -> Expected<'_> {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        Expected { sink: self }
    }
}

/// The writer loop: collect a batch, commit it, acknowledge it; until every sender is gone.
fn write_batches(
    log: &AuditLog,
    rx: &mpsc::Receiver<Pending>,
    in_progress: &AtomicUsize,
    committed: Option<&mpsc::Sender<Vec<AuditEvent>>>,
) {
    let mut events = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + COMMIT_DELAY;
        let mut next = Some(first);
        while let Some((event, ack)) = next.take() {
            events.push(event);
            acks.push(ack);
            if events.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
            if next.is_none() && in_progress.load(Ordering::SeqCst) > 2 * events.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                next = rx.recv_timeout(left).ok();
            }
        }
        match log.append(&events) {
            Ok(()) => {
                if let Some(next) = committed {
                    let _ = next.send(std::mem::replace(
                        &mut events,
                        Vec::with_capacity(MAX_BATCH),
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, lost = events.len(), "audit events could not be written")
            }
        }
        events.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_store::AuditFilter;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            seq: 0,
            time_ms: n as i64,
            operation: format!("Op{n}"),
            result_signature: "OK".into(),
            result_type: "Success".into(),
            result_description: String::new(),
            status: 200,
            duration_ms: 0,
            caller_ip: "127.0.0.1".into(),
            app_id: None,
            object_id: None,
            tenant_id: None,
            identity_type: None,
            mi_resource_id: None,
            resource: None,
            target_id: None,
            http_method: "GET".into(),
            request_uri: "/".into(),
            correlation_id: n.to_string(),
            client_info: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_is_committed_before_its_acknowledgement() {
        let dir =
            std::env::temp_dir().join(format!("atrest-audit-{}", atrest_crypto::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let key = atrest_crypto::DataKey::generate();
        let log = Arc::new(
            AuditLog::open(
                &dir.join("audit.db"),
                Box::new(move |prev, event| key.mac(&[prev, event])),
            )
            .unwrap(),
        );
        let (sink, writer) = AuditSink::spawn(log.clone(), None).unwrap();
        // More concurrent events than one batch holds, so batches split and wait.
        let total = 3 * MAX_BATCH + 7;
        let tasks: Vec<_> = (0..total)
            .map(|n| {
                let sink = sink.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    sink.expect().record(event(n)).await;
                    let filter = AuditFilter {
                        since_ms: None,
                        operation: Some(format!("Op{n}")),
                        limit: 1,
                    };
                    assert_eq!(
                        log.list(&filter).unwrap().len(),
                        1,
                        "event {n} durable when acknowledged"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(sink.in_progress.load(Ordering::SeqCst), 0);
        drop(sink);
        writer.await.unwrap();
        let all = AuditFilter {
            since_ms: None,
            operation: None,
            limit: 10_000,
        };
        assert_eq!(log.list(&all).unwrap().len(), total);
        assert!(
            matches!(log.verify(None).unwrap(), atrest_store::Verification::Intact { events, .. } if events == total as u64),
            "concurrent batches form one unbroken chain"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
