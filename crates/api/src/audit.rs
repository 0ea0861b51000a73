//! The audit writer: requests hand their event to one task that commits events in
//! batches (group commit) and acknowledges each once it is durable, so no response leaves
//! the server before its audit event is on disk.

use std::sync::Arc;

use atrest_store::{AuditEvent, AuditLog};
use tokio::sync::{mpsc, oneshot};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;

type Pending = (AuditEvent, oneshot::Sender<()>);

/// Where requests send their audit events.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Pending>,
}

impl AuditSink {
    /// Starts the writer task over `log`. The task ends when every sink is dropped,
    /// after writing what was queued.
    pub fn spawn(log: Arc<AuditLog>) -> (AuditSink, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Pending>(4096);
        let handle = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let events: Vec<AuditEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
                let log = log.clone();
                let written = tokio::task::spawn_blocking(move || log.append(&events)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, lost = batch.len(), "audit events could not be written")
                    }
                    Err(e) => tracing::error!(error = %e, "audit writer task failed"),
                }
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(());
                }
            }
        });
        (AuditSink { tx }, handle)
    }

    /// Queues an event and waits until it is committed.
    pub async fn record(&self, event: AuditEvent) {
        let (ack, done) = oneshot::channel();
        if self.tx.send((event, ack)).await.is_ok() {
            let _ = done.await;
        } else {
            tracing::error!("audit writer is gone; event dropped");
        }
    }
}
