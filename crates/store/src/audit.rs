//! Audit events: one row per request, appended by the API edge's audit writer to a
//! database of their own, in a keyed hash chain.
//!
//! Each event stores `prev_hash`, the hash of its predecessor, and `hash`, the chain key's
//! MAC over `prev_hash` and the event (its sequence number included). Editing, deleting,
//! inserting or reordering rows breaks the chain at the first affected event, and without
//! the chain key nobody can forge a consistent continuation. Retention deletes the oldest
//! events and keeps the last deleted one's sequence number and hash as the anchor the chain
//! continues from.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::journal::{self, Journal, JournalMark};
use crate::{open_connection, open_reader, schema, StoreError};

/// What [`AuditLog::recover_journal`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Events the journal held that the database did not, now stored.
    pub events: usize,
    /// Bytes of torn records (an operating-system crash mid-write), dropped.
    pub torn_bytes: usize,
}

/// One audited request, in the shape of Azure's Key Vault AuditEvent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// Sequence number assigned on insert (0 before).
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// `operationName` (`SecretGet`, `Authentication`, `VaultPut`, …).
    pub operation: String,
    /// `resultSignature`: the HTTP reason phrase (`OK`, `Unauthorized`, …).
    pub result_signature: String,
    /// `resultType`: `Success` or `Failure`.
    pub result_type: String,
    /// `resultDescription`: the error message of a failed call, empty otherwise.
    pub result_description: String,
    /// `httpStatusCode`.
    pub status: u16,
    /// `durationMs`.
    pub duration_ms: i64,
    /// `callerIpAddress`.
    pub caller_ip: String,
    /// `identity.claim.appid`.
    pub app_id: Option<String>,
    /// `identity.claim.oid`.
    pub object_id: Option<String>,
    /// `identity.claim.tid`.
    pub tenant_id: Option<String>,
    /// `identity.claim.idtyp` (`app`, `ManagedIdentity`).
    pub identity_type: Option<String>,
    /// `identity.claim.xms_mirid`: a managed identity's resource id.
    pub mi_resource_id: Option<String>,
    /// The vault (or other resource) the request addressed.
    pub resource: Option<String>,
    /// `properties.id`: the object id with its version.
    pub target_id: Option<String>,
    /// HTTP method.
    pub http_method: String,
    /// `properties.requestUri`.
    pub request_uri: String,
    /// `correlationId` (`x-ms-client-request-id` or generated).
    pub correlation_id: String,
    /// `properties.clientInfo` (user agent).
    pub client_info: String,
}

/// An alert a detection rule raised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    /// Assigned on insert (0 before).
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The rule's name.
    pub rule: String,
    /// `High`, `Medium` or `Low`.
    pub severity: String,
    /// The caller's app id, when the rule is about one.
    pub caller: Option<String>,
    /// The vault or object concerned.
    pub resource: Option<String>,
    /// What happened.
    pub description: String,
    /// The correlation id of the event that raised it.
    pub correlation_id: String,
}

/// Hash of the chain's start, before any event.
const GENESIS: [u8; 32] = [0; 32];

/// The chain function: a MAC under the instance's chain key over the predecessor's hash and
/// an event's canonical bytes. Supplied by the caller, which holds the key.
pub type ChainLink = Box<dyn Fn(&[u8; 32], &[u8]) -> [u8; 32] + Send + Sync>;

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain is whole from the anchor to the newest event.
    Intact {
        /// Events checked.
        events: u64,
        /// Sequence number of the first event checked (after the anchor).
        first_seq: i64,
        /// Sequence number and hash of the newest event.
        head: (i64, [u8; 32]),
    },
    /// The first event at which the chain breaks.
    Broken {
        /// Its sequence number (as stored).
        seq: i64,
        /// Its operation and time, as stored, to find it by.
        operation: String,
        /// Milliseconds since the epoch, as stored.
        time_ms: i64,
        /// What is wrong.
        reason: String,
        /// Events before it that checked out.
        verified: u64,
    },
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only this operation.
    pub operation: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Leads the canonical bytes of every event.
const CANONICAL_TAG: &[u8] = b"atrest-audit-v1";

/// The canonical bytes an event's hash covers: every column, length-prefixed, so no two
/// different events encode alike. The journal stores events in this form too.
fn canonical(e: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    encode(e, e.seq, &mut out);
    out
}

/// Appends the canonical bytes of `e`, numbered `seq`, to `out`.
pub(crate) fn encode(e: &AuditEvent, seq: i64, out: &mut Vec<u8>) {
    fn text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
            Some(s) => {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.extend_from_slice(CANONICAL_TAG);
    for n in [seq, e.time_ms, i64::from(e.status), e.duration_ms] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    for s in [
        &e.operation,
        &e.result_signature,
        &e.result_type,
        &e.result_description,
        &e.caller_ip,
        &e.http_method,
        &e.request_uri,
        &e.correlation_id,
        &e.client_info,
    ] {
        text(out, Some(s));
    }
    for s in [
        &e.app_id,
        &e.object_id,
        &e.tenant_id,
        &e.identity_type,
        &e.mi_resource_id,
        &e.resource,
        &e.target_id,
    ] {
        text(out, s.as_deref());
    }
}

/// The event whose canonical bytes are exactly `bytes`; `None` for anything else.
pub(crate) fn decode(bytes: &[u8]) -> Option<AuditEvent> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn int(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn text(&mut self) -> Option<Option<String>> {
            let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
            if len == u32::MAX {
                return Some(None);
            }
            let bytes = self.take(len as usize)?;
            Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
        }
        fn required(&mut self) -> Option<String> {
            self.text()?
        }
    }
    let mut r = Reader(bytes);
    if r.take(CANONICAL_TAG.len())? != CANONICAL_TAG {
        return None;
    }
    let (seq, time_ms, status, duration_ms) = (r.int()?, r.int()?, r.int()?, r.int()?);
    let event = AuditEvent {
        seq,
        time_ms,
        status: u16::try_from(status).ok()?,
        duration_ms,
        operation: r.required()?,
        result_signature: r.required()?,
        result_type: r.required()?,
        result_description: r.required()?,
        caller_ip: r.required()?,
        http_method: r.required()?,
        request_uri: r.required()?,
        correlation_id: r.required()?,
        client_info: r.required()?,
        app_id: r.text()?,
        object_id: r.text()?,
        tenant_id: r.text()?,
        identity_type: r.text()?,
        mi_resource_id: r.text()?,
        resource: r.text()?,
        target_id: r.text()?,
    };
    r.0.is_empty().then_some(event)
}

fn hash_column(bytes: Option<Vec<u8>>) -> Option<[u8; 32]> {
    bytes.and_then(|b| b.try_into().ok())
}

const COLUMNS: &str = "seq, time_ms, operation, result_signature, result_type, result_description, status, duration_ms, \
    caller_ip, app_id, object_id, tenant_id, identity_type, mi_resource_id, resource, target_id, http_method, request_uri, \
    correlation_id, client_info";

fn row(r: &Row) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        operation: r.get(2)?,
        result_signature: r.get(3)?,
        result_type: r.get(4)?,
        result_description: r.get(5)?,
        status: r.get(6)?,
        duration_ms: r.get(7)?,
        caller_ip: r.get(8)?,
        app_id: r.get(9)?,
        object_id: r.get(10)?,
        tenant_id: r.get(11)?,
        identity_type: r.get(12)?,
        mi_resource_id: r.get(13)?,
        resource: r.get(14)?,
        target_id: r.get(15)?,
        http_method: r.get(16)?,
        request_uri: r.get(17)?,
        correlation_id: r.get(18)?,
        client_info: r.get(19)?,
    })
}

/// The writer connection and the chain's head (the newest event's sequence number and
/// hash), which only this writer advances.
struct Writer {
    conn: Connection,
    head: (i64, [u8; 32]),
}

/// The audit database: append-only but for retention, written by one writer, read by one
/// reader.
pub struct AuditLog {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    link: ChainLink,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Opens (creating and migrating if needed) the audit database at `path`, chaining
    /// events with `link`. Events stored before the chain existed are chained now, in order.
    pub fn open(path: &Path, link: ChainLink) -> Result<Self, StoreError> {
        let mut conn = open_connection(path, schema::AUDIT)?;
        let tx = conn.transaction()?;
        let mut head = anchor(&tx)?;
        let unchained: Vec<AuditEvent> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM audit_events WHERE hash IS NULL ORDER BY seq"
            ))?;
            let rows = stmt.query_map([], row)?.collect::<Result<_, _>>()?;
            rows
        };
        if let Some(first) = unchained.first() {
            head = tx
                .query_row(
                    "SELECT seq, hash FROM audit_events WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
                    [first.seq],
                    |r| Ok((r.get(0)?, hash_column(r.get(1)?).unwrap_or(GENESIS))),
                )
                .optional()?
                .unwrap_or(head);
        }
        for e in &unchained {
            let hash = link(&head.1, &canonical(e));
            tx.execute(
                "UPDATE audit_events SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
                params![e.seq, head.1, hash],
            )?;
            head = (e.seq, hash);
        }
        let newest = tx
            .query_row(
                "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, hash_column(r.get(1)?))),
            )
            .optional()?;
        if let Some((seq, Some(hash))) = newest {
            head = (seq, hash);
        }
        tx.commit()?;
        Ok(AuditLog {
            writer: Mutex::new(Writer { conn, head }),
            reader: Mutex::new(open_reader(path)?),
            link,
        })
    }

    /// Appends events in order, in one transaction: all are durable or none. Each gets the
    /// next sequence number and is chained to its predecessor.
    pub fn append(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.append_with(events, None)
    }

    /// Appends journaled events, as [`AuditLog::append`], and records in the same
    /// transaction that the journal is stored up to `mark`.
    pub fn append_journaled(
        &self,
        events: &[AuditEvent],
        mark: JournalMark,
    ) -> Result<(), StoreError> {
        self.append_with(events, Some(mark))
    }

    /// How far the journal is stored.
    fn journal_stored(&self) -> Result<JournalMark, StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let stored = writer
            .conn
            .query_row(
                "SELECT generation, records FROM audit_journal WHERE id = 1",
                [],
                |r| {
                    Ok(JournalMark {
                        generation: r.get::<_, i64>(0)? as u64,
                        records: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()?;
        Ok(stored.unwrap_or_default())
    }

    /// Stores whatever the journal in `dir` holds beyond what the database already has
    /// (events journaled before a crash), deletes the stored files, and opens the journal
    /// at a new generation.
    pub fn recover_journal(&self, dir: &Path) -> Result<(Journal, Recovery), StoreError> {
        let stored = self.journal_stored()?;
        let mut recovery = Recovery::default();
        let mut newest = stored.generation;
        for file in journal::read_all(dir)? {
            newest = newest.max(file.generation);
            recovery.torn_bytes += file.torn_bytes;
            let skip = match file.generation.cmp(&stored.generation) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => stored.records as usize,
                std::cmp::Ordering::Greater => 0,
            };
            let Some(unstored) = file.events.get(skip..).filter(|e| !e.is_empty()) else {
                continue;
            };
            let mark = JournalMark {
                generation: file.generation,
                records: file.events.len() as u64,
            };
            self.append_journaled(unstored, mark)?;
            recovery.events += unstored.len();
        }
        let journal = Journal::create(dir, newest + 1)?;
        journal.remove_through(newest)?;
        Ok((journal, recovery))
    }

    fn append_with(
        &self,
        events: &[AuditEvent],
        mark: Option<JournalMark>,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut head = writer.head;
        let tx = writer.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO audit_events ({COLUMNS}, prev_hash, hash) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
            ))?;
            let mut bytes = Vec::with_capacity(1024);
            for e in events {
                let seq = head.0 + 1;
                bytes.clear();
                encode(e, seq, &mut bytes);
                let hash = (self.link)(&head.1, &bytes);
                stmt.execute(params![
                    seq,
                    e.time_ms,
                    e.operation,
                    e.result_signature,
                    e.result_type,
                    e.result_description,
                    e.status,
                    e.duration_ms,
                    e.caller_ip,
                    e.app_id,
                    e.object_id,
                    e.tenant_id,
                    e.identity_type,
                    e.mi_resource_id,
                    e.resource,
                    e.target_id,
                    e.http_method,
                    e.request_uri,
                    e.correlation_id,
                    e.client_info,
                    head.1,
                    hash
                ])?;
                head = (seq, hash);
            }
        }
        if let Some(mark) = mark {
            tx.execute(
                "INSERT INTO audit_journal (id, generation, records) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET generation = ?1, records = ?2",
                params![mark.generation as i64, mark.records as i64],
            )?;
        }
        tx.commit()?;
        writer.head = head;
        Ok(())
    }

    /// The stored hash of event `seq`, if the log holds it.
    pub fn hash_at(&self, seq: i64) -> Result<Option<[u8; 32]>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conn
            .query_row("SELECT hash FROM audit_events WHERE seq = ?1", [seq], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()?
            .and_then(hash_column))
    }

    /// The newest event's sequence number and hash (0 and the genesis hash before any).
    pub fn head(&self) -> (i64, [u8; 32]) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).head
    }

    /// Walks the chain from the anchor to the newest event and reports the first break.
    /// `checkpoint`, a head recorded earlier outside this database, also catches the newest
    /// events being deleted, which the chain alone cannot show.
    pub fn verify(&self, checkpoint: Option<(i64, [u8; 32])>) -> Result<Verification, StoreError> {
        let mut conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        // One read transaction: a consistent snapshot while the writer goes on appending.
        let tx = conn.transaction()?;
        let (anchor_seq, mut prev) = anchor(&tx)?;
        let mut stmt = tx.prepare(&format!(
            "SELECT {COLUMNS}, prev_hash, hash FROM audit_events ORDER BY seq"
        ))?;
        let mut rows = stmt.query([])?;
        let mut verified = 0u64;
        let mut expected = anchor_seq + 1;
        while let Some(r) = rows.next()? {
            let e = row(r)?;
            let stored_prev = hash_column(r.get(20)?);
            let stored = hash_column(r.get(21)?);
            let reason = if e.seq != expected {
                Some(if e.seq > expected {
                    format!("events {expected} to {} are missing", e.seq - 1)
                } else {
                    format!(
                        "sequence number {} is out of order; {expected} was expected",
                        e.seq
                    )
                })
            } else if stored_prev != Some(prev) {
                Some("its previous-hash does not match the event before it".to_owned())
            } else if stored != Some((self.link)(&prev, &canonical(&e))) {
                Some("its content does not match its hash (edited, or moved)".to_owned())
            } else if checkpoint.is_some_and(|(seq, hash)| seq == e.seq && stored != Some(hash)) {
                Some("its hash differs from the recorded checkpoint".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Ok(Verification::Broken {
                    seq: e.seq,
                    operation: e.operation,
                    time_ms: e.time_ms,
                    reason,
                    verified,
                });
            }
            prev = stored.expect("checked above");
            expected += 1;
            verified += 1;
        }
        if let Some((seq, _)) = checkpoint.filter(|(seq, _)| *seq >= expected) {
            return Ok(Verification::Broken {
                seq,
                operation: String::new(),
                time_ms: 0,
                reason: format!(
                    "events {expected} to {seq} were recorded (checkpoint) but are gone from the log"
                ),
                verified,
            });
        }
        Ok(Verification::Intact {
            events: verified,
            first_seq: anchor_seq + 1,
            head: (expected - 1, prev),
        })
    }

    /// Deletes events older than `before_ms`, oldest first, and moves the anchor to the
    /// last one deleted. Returns how many were deleted.
    pub fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = writer.conn.transaction()?;
        // Events are committed in sequence order; the cut is the newest event older than
        // the cutoff whose predecessors are all older too.
        let cut: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM audit_events WHERE seq < \
                 coalesce((SELECT min(seq) FROM audit_events WHERE time_ms >= ?1), 9223372036854775807) \
                 ORDER BY seq DESC LIMIT 1",
                [before_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((seq, hash)) = cut else {
            return Ok(0);
        };
        let deleted = tx.execute("DELETE FROM audit_events WHERE seq <= ?1", [seq])?;
        tx.execute(
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![seq, hash],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }

    /// Stores an alert; returns its id.
    pub fn add_alert(&self, a: &Alert) -> Result<i64, StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.conn.execute(
            "INSERT INTO alerts (time_ms, rule, severity, caller, resource, description, correlation_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![a.time_ms, a.rule, a.severity, a.caller, a.resource, a.description, a.correlation_id],
        )?;
        Ok(writer.conn.last_insert_rowid())
    }

    /// The newest alerts first, at most `limit`.
    pub fn alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT id, time_ms, rule, severity, caller, resource, description, correlation_id \
             FROM alerts ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(Alert {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    rule: r.get(2)?,
                    severity: r.get(3)?,
                    caller: r.get(4)?,
                    resource: r.get(5)?,
                    description: r.get(6)?,
                    correlation_id: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// How many alerts each rule has raised.
    pub fn alert_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt =
            conn.prepare_cached("SELECT rule, count(*) FROM alerts GROUP BY rule ORDER BY rule")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Calls `f` with every event, oldest first, reading a page at a time so other readers
    /// get their turn.
    pub fn scan(&self, mut f: impl FnMut(AuditEvent)) -> Result<(), StoreError> {
        const PAGE: usize = 10_000;
        let mut after = 0;
        loop {
            let page = self.export(after, PAGE)?;
            let done = page.len() < PAGE;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            page.into_iter().for_each(&mut f);
            if done {
                return Ok(());
            }
        }
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub fn export(&self, after: i64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![after, limit as i64], row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Events matching `filter`, newest first.
    pub fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE (?1 IS NULL OR time_ms >= ?1) AND (?2 IS NULL OR operation = ?2) \
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![filter.since_ms, filter.operation, filter.limit as i64],
                row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// Where the chain starts: the last event retention deleted, or the genesis.
fn anchor(conn: &Connection) -> Result<(i64, [u8; 32]), StoreError> {
    Ok(conn
        .query_row("SELECT seq, hash FROM audit_anchor WHERE id = 1", [], |r| {
            Ok((r.get(0)?, hash_column(r.get(1)?)))
        })
        .optional()?
        .map_or((0, GENESIS), |(seq, hash)| (seq, hash.unwrap_or(GENESIS))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the keyed MAC: any function whose output depends on every input byte.
    fn toy_link() -> ChainLink {
        Box::new(|prev, record| {
            let mut out = *prev;
            for (i, b) in record.iter().enumerate() {
                let j = i % 32;
                out[j] = out[j].rotate_left(3) ^ b ^ (i as u8);
                out[(j + 1) % 32] = out[(j + 1) % 32].wrapping_add(out[j]);
            }
            out
        })
    }

    fn event(i: i64) -> AuditEvent {
        AuditEvent {
            time_ms: 1000 * i,
            operation: format!("Op{i}"),
            request_uri: format!("/secrets/s{i}"),
            status: 200,
            ..Default::default()
        }
    }

    fn log_with(n: i64) -> (AuditLog, std::path::PathBuf) {
        let path = crate::test_dir().join("audit.db");
        let log = AuditLog::open(&path, toy_link()).unwrap();
        let events: Vec<AuditEvent> = (1..=n).map(event).collect();
        log.append(&events[..n as usize / 2]).unwrap();
        log.append(&events[n as usize / 2..]).unwrap();
        (log, path)
    }

    fn broken_at(log: &AuditLog) -> (i64, String) {
        match log.verify(None).unwrap() {
            Verification::Broken { seq, reason, .. } => (seq, reason),
            intact => panic!("tampering went unnoticed: {intact:?}"),
        }
    }

    fn tamper(path: &Path, sql: &str) {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }

    #[test]
    fn journaled_events_left_by_a_crash_are_stored_exactly_once() {
        let (log, path) = log_with(2);
        let dir = path.with_file_name("journal");
        let (mut journal, nothing) = log.recover_journal(&dir).unwrap();
        assert_eq!(nothing, Recovery::default());
        let record = |i| {
            let mut out = Vec::new();
            crate::encode_record(&event(i), &mut out);
            out
        };
        for i in 3..=5 {
            journal.append(&record(i)).unwrap();
        }
        // The writer stored the first two, then the process died before the third.
        let mark = JournalMark {
            records: 2,
            ..journal.mark()
        };
        log.append_journaled(&[event(3), event(4)], mark).unwrap();
        journal.rotate().unwrap();
        journal.append(&record(6)).unwrap();
        drop((journal, log));

        let log = AuditLog::open(&path, toy_link()).unwrap();
        let (_journal, recovered) = log.recover_journal(&dir).unwrap();
        assert_eq!(
            recovered,
            Recovery {
                events: 2,
                torn_bytes: 0
            }
        );
        let all = log
            .list(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .unwrap();
        let ops: Vec<&str> = all.iter().rev().map(|e| e.operation.as_str()).collect();
        assert_eq!(ops, ["Op1", "Op2", "Op3", "Op4", "Op5", "Op6"]);
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 6, .. }
        ));
        // Stored files are gone, so another restart stores nothing again.
        drop(_journal);
        let (_journal, again) = log.recover_journal(&dir).unwrap();
        assert_eq!(again, Recovery::default());
    }

    #[test]
    fn an_untouched_chain_verifies_and_survives_a_restart() {
        let (log, path) = log_with(10);
        let Verification::Intact { events, head, .. } = log.verify(None).unwrap() else {
            panic!("intact chain reported broken");
        };
        assert_eq!((events, head.0), (10, 10));
        drop(log);
        let log = AuditLog::open(&path, toy_link()).unwrap();
        log.append(&[event(11)]).unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 11, .. }
        ));
    }

    #[test]
    fn edits_deletions_insertions_and_reordering_are_found() {
        let cases: [(&str, i64, &str); 5] = [
            ("UPDATE audit_events SET status = 403 WHERE seq = 4", 4, "content"),
            ("DELETE FROM audit_events WHERE seq = 6", 7, "missing"),
            (
                "UPDATE audit_events SET operation = CASE seq WHEN 3 THEN 'Op5' ELSE 'Op3' END, \
                 time_ms = CASE seq WHEN 3 THEN 5000 ELSE 3000 END, \
                 request_uri = CASE seq WHEN 3 THEN '/secrets/s5' ELSE '/secrets/s3' END WHERE seq IN (3, 5)",
                3,
                "content",
            ),
            (
                "INSERT INTO audit_events (seq, time_ms, operation, result_signature, result_type, result_description, \
                 status, duration_ms, caller_ip, http_method, request_uri, correlation_id, client_info, prev_hash, hash) \
                 SELECT 11, 11000, 'Forged', '', '', '', 200, 0, '', 'GET', '/', '', '', hash, hash FROM audit_events WHERE seq = 10",
                11,
                "content",
            ),
            ("UPDATE audit_events SET prev_hash = zeroblob(32) WHERE seq = 2", 2, "previous-hash"),
        ];
        for (sql, seq, reason) in cases {
            let (log, path) = log_with(10);
            tamper(&path, sql);
            let (at, why) = broken_at(&log);
            assert_eq!(at, seq, "{sql}: {why}");
            assert!(why.contains(reason), "{sql}: {why}");
        }
    }

    #[test]
    fn retention_keeps_the_rest_verifiable() {
        let (log, path) = log_with(10);
        assert_eq!(log.prune(4500).unwrap(), 4);
        let Verification::Intact {
            events, first_seq, ..
        } = log.verify(None).unwrap()
        else {
            panic!("pruned chain reported broken");
        };
        assert_eq!((events, first_seq), (6, 5));
        assert_eq!(log.prune(4500).unwrap(), 0);
        assert_eq!(log.export(0, 100).unwrap().first().map(|e| e.seq), Some(5));
        // Deleting the oldest remaining event is not retention: the anchor does not match.
        tamper(&path, "DELETE FROM audit_events WHERE seq = 5");
        assert_eq!(broken_at(&log).0, 6);
    }

    #[test]
    fn a_checkpoint_catches_deleted_newest_events() {
        let (log, path) = log_with(10);
        let checkpoint = log.head();
        assert_eq!(checkpoint.0, 10);
        assert!(matches!(
            log.verify(Some(checkpoint)).unwrap(),
            Verification::Intact { .. }
        ));
        tamper(&path, "DELETE FROM audit_events WHERE seq > 8");
        assert!(
            matches!(
                log.verify(None).unwrap(),
                Verification::Intact { events: 8, .. }
            ),
            "the chain alone cannot see a shortened tail"
        );
        match log.verify(Some(checkpoint)).unwrap() {
            Verification::Broken { seq, reason, .. } => {
                assert_eq!(seq, 10);
                assert!(reason.contains("events 9 to 10"), "{reason}");
            }
            intact => panic!("truncation went unnoticed: {intact:?}"),
        }
    }

    #[test]
    fn events_from_before_the_chain_are_chained_on_open() {
        let (log, path) = log_with(4);
        drop(log);
        tamper(
            &path,
            "UPDATE audit_events SET prev_hash = NULL, hash = NULL WHERE seq > 2",
        );
        let log = AuditLog::open(&path, toy_link()).unwrap();
        log.append(&[event(5)]).unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 5, .. }
        ));
    }
}
