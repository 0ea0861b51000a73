//! The audit writer: requests hand their events to one thread, which stores them in the
//! audit log in batches. When a response may leave depends on the instance's
//! [`Durability`]:
//!
//! - [`Durability::Journal`] (the default): once its event is in the journal, written to
//!   the operating system, so it survives a crash of the server process. One request at a
//!   time writes; those that arrive meanwhile wait, and one of them then writes all their
//!   records with one `pwrite(2)` (under load a write carries several events, at once
//!   alone). The writer stores and syncs what the journal holds at the end of each
//!   interval (sooner when much is waiting or someone reads the log), so an
//!   operating-system crash or power loss can cost at most one interval's events.
//! - [`Durability::Commit`]: once its event is stored and synced. The writer knows how
//!   many requests are in progress; while more are than it holds events for, it waits up
//!   to [`COMMIT_DELAY`] for theirs, so that under load one `fsync` covers many events
//!   (group commit), and a lone request is committed at once.
//!
//! Either way, a request whose event cannot be recorded gets an error, not its result.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use atrest_core::audit::AuditEvent;

use atrest_store::{decode_records, encode_record, AuditLog, Journal, JournalMark};
use tokio::sync::oneshot;

/// When a response may leave, relative to its audit event's durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once the event is in the journal (written to the operating system); the writer
    /// stores and syncs journaled events at least once per `interval`.
    Journal {
        /// Longest a journaled event waits to be stored and synced.
        interval: Duration,
    },
    /// Once the event is stored in the audit log and synced.
    Commit,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Journal {
            interval: Duration::from_millis(50),
        }
    }
}

/// Journaled events waiting that make the writer store them before the interval ends.
const JOURNAL_BATCH: usize = 8192;

/// Most events a group commit waits for.
const MAX_BATCH: usize = 256;

/// Longest a group commit waits for the events of requests still in progress.
const COMMIT_DELAY: Duration = Duration::from_micros(500);

/// What the writer has yet to store.
#[derive(Debug, Default)]
struct Queue {
    /// Events as journal records, in the order they were queued.
    records: Vec<u8>,
    /// How many events `records` holds.
    events: usize,
    /// Who waits for the next commit: requests under [`Durability::Commit`], and readers
    /// of the log.
    acks: Vec<oneshot::Sender<bool>>,
    /// Every sink is gone: store what is left and stop.
    closed: bool,
    /// The writer has stopped (or died): nothing queued now will be stored.
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    /// Where events are written first, under [`Durability::Journal`], and how long they may
    /// wait there. Requests hold it shared while they append and queue an event, the
    /// writer exclusively while it takes a batch and starts a new file, so a batch holds
    /// exactly the records of the files it retires.
    journal: RwLock<Option<(Journal, Duration)>>,
    /// Whether the instance journals ([`Durability::Journal`]).
    journaled: bool,
    pending: Mutex<Pending>,
    queue: Mutex<Queue>,
    wake: Condvar,
    in_progress: AtomicUsize,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last sink is dropped.
#[derive(Debug)]
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.queue().closed = true;
        self.0.wake.notify_all();
    }
}

/// Where requests send their audit events.
#[derive(Debug, Clone)]
pub struct AuditSink {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// A unit of work (a request, a scheduled action) that will record one audit event. The
/// writer counts these to decide whether waiting for more events is worth it.
#[derive(Debug)]
pub struct Expected<'a> {
    sink: &'a AuditSink,
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        self.sink.shared.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Journal records waiting for one `pwrite(2)` that carries them all, under
/// [`Durability::Journal`]. While one request (the flusher) writes, the requests that
/// arrive add their records here and wait; one of them then writes them all.
#[derive(Debug, Default)]
struct Pending {
    records: Vec<u8>,
    events: usize,
    /// Requests whose records are in `records` (but for a successor's, once handed the
    /// turn).
    waiting: Vec<oneshot::Sender<Turn>>,
    /// A request is writing, or has been handed the turn to.
    flushing: bool,
}

/// What a request waiting in [`Pending`] is told.
#[derive(Debug)]
enum Turn {
    /// Its record was written (true) or refused (false).
    Written(bool),
    /// Its record is among those waiting: it writes them.
    Flush,
}

impl Expected<'_> {
    /// Records the event as durably as the instance requires; false if it could not be.
    pub async fn record(self, event: AuditEvent) -> bool {
        let shared = &self.sink.shared;
        if !shared.journaled {
            let done = {
                let mut queue = shared.queue();
                if queue.stopped {
                    return false;
                }
                encode_record(&event, &mut queue.records);
                queue.events += 1;
                let (ack, done) = oneshot::channel();
                queue.acks.push(ack);
                done
            };
            shared.wake.notify_one();
            return done.await.unwrap_or(false);
        }
        let waiting = {
            let mut pending = shared.pending();
            encode_record(&event, &mut pending.records);
            pending.events += 1;
            if pending.flushing {
                let (turn, wait) = oneshot::channel();
                pending.waiting.push(turn);
                Some(Waiting { shared, turn: wait })
            } else {
                pending.flushing = true;
                None
            }
        };
        drop(event);
        if let Some(mut waiting) = waiting {
            match (&mut waiting.turn).await {
                Ok(Turn::Written(written)) => return written,
                Ok(Turn::Flush) => {}
                Err(_) => return false,
            }
        }
        let mut flusher = Flusher {
            shared,
            armed: true,
        };
        // Let the other requests ready on this thread reach this point first, so one
        // write carries their records too.
        tokio::task::yield_now().await;
        flusher.armed = false;
        shared.flush_pending()
    }
}

/// A request waiting in [`Pending`]. Dropped (its connection closed) after being handed
/// the turn, it writes the pending records as it goes, so the turn is never lost.
struct Waiting<'a> {
    shared: &'a Shared,
    turn: oneshot::Receiver<Turn>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(Turn::Flush) = self.turn.try_recv() {
            self.shared.flush_pending();
        }
    }
}

/// The request that holds the turn; dropped before it writes, it writes as it goes.
struct Flusher<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Flusher<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.flush_pending();
        }
    }
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the pending records to the journal in one `pwrite(2)` and queues them for
    /// the log, tells their requests, and hands the turn to one that arrived meanwhile
    /// (or writes again, if none can take it). True if the caller's record was written.
    /// A record the journal refused is still queued for the log; its request fails.
    fn flush_pending(&self) -> bool {
        let mut first = None;
        loop {
            let (records, events, waiting) = {
                let mut pending = self.pending();
                let records = std::mem::take(&mut pending.records);
                let events = std::mem::take(&mut pending.events);
                (records, events, std::mem::take(&mut pending.waiting))
            };
            let written = self.write_journal(&records, events);
            for turn in waiting {
                let _ = turn.send(Turn::Written(written));
            }
            let mine = *first.get_or_insert(written);
            let mut pending = self.pending();
            if pending.records.capacity() == 0 {
                pending.records = records;
                pending.records.clear();
            }
            while !pending.waiting.is_empty() {
                if pending.waiting.remove(0).send(Turn::Flush).is_ok() {
                    return mine;
                }
            }
            if pending.events == 0 {
                pending.flushing = false;
                return mine;
            }
            // Only records of requests that went away are left: write them too.
        }
    }

    /// Writes `events` records to the journal and queues them for the log; true if both
    /// happened.
    fn write_journal(&self, records: &[u8], events: usize) -> bool {
        if events == 0 {
            return true;
        }
        let journal = self.journal.read().unwrap_or_else(|p| p.into_inner());
        let journaled = journal.as_ref().is_some_and(|(journal, _)| {
            journal
                .append(records, events as u64)
                .map_err(|e| tracing::error!(error = %e, "cannot write to the audit journal"))
                .is_ok()
        });
        let mut queue = self.queue();
        if queue.stopped {
            return false;
        }
        queue.records.extend_from_slice(records);
        let before = queue.events;
        queue.events += events;
        drop(queue);
        // The writer sleeps on an empty queue and lets a batch gather otherwise.
        if before == 0 || (before < JOURNAL_BATCH && before + events >= JOURNAL_BATCH) {
            self.wake.notify_one();
        }
        journaled
    }
}

impl AuditSink {
    /// Starts the writer thread over `log`, writing first to `journal` when given
    /// ([`Durability::Journal`], with its interval). Each committed batch wakes
    /// `committed` (the detector), when given. It ends when every sink is dropped, after
    /// storing what was queued; the handle completes then.
    pub fn spawn(
        log: Arc<AuditLog>,
        journal: Option<(Journal, Duration)>,
        committed: Option<mpsc::Sender<()>>,
    ) -> std::io::Result<(AuditSink, tokio::task::JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            journaled: journal.is_some(),
            journal: RwLock::new(journal),
            pending: Mutex::new(Pending::default()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            in_progress: AtomicUsize::new(0),
        });
        let writer = shared.clone();
        let (finished, done) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let _stopped = Stopped(&writer);
                write_batches(&log, &writer, committed.as_ref());
                let _ = finished.send(());
            })?;
        let handle = tokio::spawn(async move {
            let _ = done.await;
        });
        let sink = AuditSink {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        };
        Ok((sink, handle))
    }

    /// Announces work that will record an event; call it when the work begins.
    pub fn expect(&self) -> Expected<'_> {
        self.shared.in_progress.fetch_add(1, Ordering::SeqCst);
        Expected { sink: self }
    }

    /// Returns once every event recorded so far is stored in the audit log, so a reader of
    /// the log sees them.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        {
            let mut queue = self.shared.queue();
            if queue.stopped {
                return;
            }
            queue.acks.push(ack);
        }
        self.shared.wake.notify_one();
        let _ = done.await;
    }
}

/// Marks the writer stopped when its thread ends, by return or by panic, and fails whoever
/// still waits, so no request or reader waits for a writer that is gone.
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        queue.stopped = true;
        for ack in queue.acks.drain(..) {
            let _ = ack.send(false);
        }
        if std::thread::panicking() {
            tracing::error!("the audit writer died; requests fail until the server restarts");
        }
    }
}

/// Waits until the queue holds a batch worth storing now, or is closed. `interval` is the
/// journal's, `None` under [`Durability::Commit`].
fn wait_for_batch(shared: &Shared, interval: Option<Duration>) {
    let mut queue = shared.queue();
    let wait = |q, timeout: Option<Duration>| match timeout {
        Some(t) => {
            shared
                .wake
                .wait_timeout(q, t)
                .unwrap_or_else(|p| p.into_inner())
                .0
        }
        None => shared.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
    };
    while queue.events == 0 && queue.acks.is_empty() && !queue.closed {
        queue = wait(queue, None);
    }
    let started = Instant::now();
    loop {
        let enough = if interval.is_some() {
            !queue.acks.is_empty() || queue.events >= JOURNAL_BATCH
        } else {
            queue.events >= MAX_BATCH
                || shared.in_progress.load(Ordering::SeqCst) <= 2 * queue.events
        };
        let left = interval
            .unwrap_or(COMMIT_DELAY)
            .saturating_sub(started.elapsed());
        if enough || queue.closed || left.is_zero() {
            return;
        }
        queue = wait(queue, Some(left));
    }
}

/// A batch taken from the queue.
struct Batch {
    /// Its events, as journal records.
    records: Vec<u8>,
    acks: Vec<oneshot::Sender<bool>>,
    /// How far into the journal the batch reaches, under [`Durability::Journal`].
    mark: Option<JournalMark>,
    /// The journal generation the batch completed, deletable once it is stored.
    finished: Option<u64>,
    closed: bool,
}

/// Takes what the queue holds and, under [`Durability::Journal`], starts a new journal
/// file, while no request is between appending and queuing.
fn take_batch(shared: &Shared) -> Batch {
    let mut journal = shared.journal.write().unwrap_or_else(|p| p.into_inner());
    let mut queue = shared.queue();
    let records = std::mem::take(&mut queue.records);
    queue.events = 0;
    let acks = std::mem::take(&mut queue.acks);
    let closed = queue.closed;
    drop(queue);
    let (mark, finished) = match journal.as_mut() {
        Some((journal, _)) => {
            let mark = journal.mark();
            let finished = match journal.rotate() {
                Ok(()) => Some(mark.generation),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a new audit journal file");
                    None
                }
            };
            (Some(mark), finished)
        }
        None => (None, None),
    };
    drop(journal);
    Batch {
        records,
        acks,
        mark,
        finished,
        closed,
    }
}

/// Stores the events of `records` (journal records) in the log, recording that the
/// journal is stored up to `mark` when given; true if they are stored.
fn store(log: &AuditLog, records: &[u8], mark: Option<JournalMark>) -> bool {
    let (events, used) = decode_records(records);
    if used != records.len() {
        tracing::error!(
            lost_bytes = records.len() - used,
            "queued audit events could not be read back"
        );
    }
    events.is_empty() || match mark {
        Some(mark) => log.append_journaled(&events, mark),
        None => log.append(&events),
    }
    .map_err(
        |e| tracing::error!(error = %e, waiting = events.len(), "audit events could not be stored"),
    )
    .is_ok()
}

/// The writer loop: take a batch, store it, acknowledge it; until every sink is gone.
fn write_batches(log: &AuditLog, shared: &Shared, committed: Option<&mpsc::Sender<()>>) {
    let interval = shared
        .journal
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(_, interval)| *interval);
    // Journaled events whose store failed, retried ahead of the next batch (they stay in
    // the journal meanwhile); and the newest journal generation to delete once stored.
    let mut retry: Vec<u8> = Vec::new();
    let mut finished = None;
    loop {
        wait_for_batch(shared, interval);
        let batch = take_batch(shared);
        finished = batch.finished.or(finished);
        let records = if retry.is_empty() {
            batch.records
        } else {
            let mut records = std::mem::take(&mut retry);
            records.extend_from_slice(&batch.records);
            records
        };
        let stored = store(log, &records, batch.mark);
        for ack in batch.acks {
            let _ = ack.send(stored);
        }
        if !stored {
            // Unjournaled events were refused to their requests.
            if interval.is_some() {
                retry = records;
            }
        } else {
            if let Some(generation) = finished.take() {
                let journal = shared.journal.read().unwrap_or_else(|p| p.into_inner());
                if let Some(Err(e)) = journal.as_ref().map(|(j, _)| j.remove_through(generation)) {
                    tracing::warn!(error = %e, "cannot delete a stored audit journal file");
                }
            }
            if let Some(next) = committed.filter(|_| !records.is_empty()) {
                let _ = next.send(());
            }
        }
        if batch.closed {
            break;
        }
    }
    let journal = shared
        .journal
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(Err(e)) = journal.map(|(journal, _)| journal.close()) {
        tracing::warn!(error = %e, "cannot delete the empty audit journal file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::audit::AuditFilter;

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

    fn open_log() -> (Arc<AuditLog>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = atrest_crypto::DataKey::generate().into_mac_key();
        let log = AuditLog::open_file(
            &dir.path().join("audit.db"),
            Box::new(move |prev, event| key.mac(&[prev, event])),
        )
        .unwrap();
        (Arc::new(log), dir)
    }

    /// A sink journaling to `dir/journal`, stored every `interval`, and its writer.
    fn journaled_sink(
        log: &Arc<AuditLog>,
        dir: &std::path::Path,
        interval: Duration,
    ) -> (AuditSink, tokio::task::JoinHandle<()>) {
        let (journal, _) = log.recover_journal(&dir.join("journal")).unwrap();
        AuditSink::spawn(log.clone(), Some((journal, interval)), None).unwrap()
    }

    fn count(log: &AuditLog) -> usize {
        let all = AuditFilter {
            since_ms: None,
            operation: None,
            limit: 10_000,
        };
        log.list(&all).unwrap().len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journaled_events_are_stored_by_the_interval_on_flush_and_at_shutdown() {
        let (log, dir) = open_log();
        let interval = Duration::from_millis(50);
        let (sink, writer) = journaled_sink(&log, dir.path(), interval);
        let started = Instant::now();
        assert!(sink.expect().record(event(0)).await);
        assert_eq!(count(&log), 0, "answered before the event is stored");
        while count(&log) == 0 {
            assert!(started.elapsed() < 20 * interval, "never stored");
            tokio::time::sleep(interval / 10).await;
        }
        assert!(started.elapsed() >= interval / 2, "stored as one batch");

        for n in 1..=20 {
            assert!(sink.expect().record(event(n)).await);
        }
        sink.flush().await;
        assert_eq!(
            count(&log),
            21,
            "a reader sees every event recorded before it"
        );

        for n in 21..=30 {
            assert!(sink.expect().record(event(n)).await);
        }
        drop(sink);
        writer.await.unwrap();
        assert_eq!(count(&log), 31, "shutdown stores what was queued");
        assert!(
            std::fs::read_dir(dir.path().join("journal"))
                .unwrap()
                .next()
                .is_none(),
            "no journal file outlives its events"
        );
        assert!(matches!(
            log.verify(None).unwrap(),
            atrest_core::audit::Verification::Intact { events: 31, .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_the_journal_refuses_fails_its_request_but_reaches_the_log() {
        let (log, dir) = open_log();
        let journal_dir = dir.path().join("journal");
        let (journal, _) = log.recover_journal(&journal_dir).unwrap();
        // The next journal file (after the first batch) is a device that is always full.
        std::os::unix::fs::symlink("/dev/full", journal_dir.join(format!("{:020}", 2))).unwrap();
        let interval = Duration::from_secs(3600);
        let (sink, writer) =
            AuditSink::spawn(log.clone(), Some((journal, interval)), None).unwrap();
        assert!(sink.expect().record(event(0)).await);
        sink.flush().await;
        assert!(!sink.expect().record(event(1)).await, "fails closed");
        sink.flush().await;
        assert_eq!(count(&log), 2);
        drop(sink);
        writer.await.unwrap();
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future>(future: &mut std::pin::Pin<Box<F>>) {
        std::future::poll_fn(|cx| {
            assert!(future.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_requests_gone_while_holding_the_turn_are_still_written() {
        let (log, dir) = open_log();
        let (sink, writer) = journaled_sink(&log, dir.path(), Duration::from_secs(3600));

        // Dropped while it holds the turn, before writing.
        let mut flusher = Box::pin(sink.expect().record(event(1)));
        poll_once(&mut flusher).await;
        assert!(sink.shared.pending().flushing);
        drop(flusher);
        assert!(!sink.shared.pending().flushing, "the turn is free again");

        // Waiting while another request writes, handed the turn, dropped before taking it.
        sink.shared.pending().flushing = true;
        let mut waiter = Box::pin(sink.expect().record(event(2)));
        poll_once(&mut waiter).await;
        let turn = sink.shared.pending().waiting.remove(0);
        assert!(turn.send(Turn::Flush).is_ok());
        drop(waiter);
        assert!(!sink.shared.pending().flushing, "the turn is free again");

        sink.flush().await;
        assert_eq!(
            count(&log),
            2,
            "both records reached the journal and the log"
        );
        assert!(sink.expect().record(event(3)).await);
        drop(sink);
        writer.await.unwrap();
        assert_eq!(count(&log), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_journal_writes_and_all_reach_the_log() {
        let (log, dir) = open_log();
        let (sink, writer) = journaled_sink(&log, dir.path(), Duration::from_secs(3600));
        let total = 500;
        let tasks: Vec<_> = (0..total)
            .map(|n| {
                let sink = sink.clone();
                tokio::spawn(async move { assert!(sink.expect().record(event(n)).await) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!sink.shared.pending().flushing);
        sink.flush().await;
        assert_eq!(count(&log), total);
        drop(sink);
        writer.await.unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            atrest_core::audit::Verification::Intact { events, .. } if events == total as u64
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nobody_waits_for_a_writer_that_is_gone() {
        let (log, dir) = open_log();
        for journal in [
            None,
            Some(log.recover_journal(&dir.path().join("journal")).unwrap().0),
        ] {
            let journal = journal.map(|j| (j, Duration::from_secs(3600)));
            let (sink, _writer) = AuditSink::spawn(log.clone(), journal, None).unwrap();
            // What the writer thread's guard does when it ends, by return or by panic.
            drop(Stopped(&sink.shared));
            assert!(!sink.expect().record(event(0)).await, "fails closed");
            tokio::time::timeout(Duration::from_secs(5), sink.flush())
                .await
                .expect("a flush does not hang");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_is_committed_before_its_acknowledgement() {
        let (log, _dir) = open_log();
        let (sink, writer) = AuditSink::spawn(log.clone(), None, None).unwrap();
        // More concurrent events than one batch holds, so batches split and wait.
        let total = 3 * MAX_BATCH + 7;
        let tasks: Vec<_> = (0..total)
            .map(|n| {
                let sink = sink.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    assert!(sink.expect().record(event(n)).await);
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
        assert_eq!(sink.shared.in_progress.load(Ordering::SeqCst), 0);
        drop(sink);
        writer.await.unwrap();
        assert_eq!(count(&log), total);
        assert!(
            matches!(log.verify(None).unwrap(), atrest_core::audit::Verification::Intact { events, .. } if events == total as u64),
            "concurrent batches form one unbroken chain"
        );
    }
}
