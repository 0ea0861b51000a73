//! Audit events, appended by the API edge's audit writer to a database of their own (or,
//! on PostgreSQL, tables of their own beside the state), in a keyed hash chain.
//!
//! Each event's hash is the chain key's MAC over its predecessor's hash and the event's
//! canonical bytes (its sequence number included). Events are stored in blocks, one row per
//! batch a writer stores (see [`crate::audit::codec`]), each event with its hash. Editing,
//! deleting, inserting or reordering events or rows breaks the chain at the first affected
//! event, and without the chain key nobody can forge a consistent continuation. Retention
//! deletes the oldest blocks and keeps the last deleted event's sequence number and hash as
//! the anchor the chain continues from.
//!
//! Several replicas may append to one chain: writers are serialized by the database, and
//! each continues from the newest stored block, whoever stored it.

pub(crate) mod codec;
pub(crate) mod journal;

use std::path::Path;
use std::sync::Mutex;

use atrest_core::audit::{Alert, AuditEvent, AuditEventRef, AuditFilter, Verification};

use self::codec::{decode_block, encode, BlockWriter};
use self::journal::{Journal, JournalMark};
use crate::sql::{args, Row};
use crate::{schema, Connections, Database, StoreError, Tx};

/// What [`AuditLog::recover_journal`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Events the journal held that the database did not, now stored.
    pub events: usize,
    /// Bytes of torn records (an operating-system crash mid-write), dropped.
    pub torn_bytes: usize,
}

/// Hash of the chain's start, before any event.
const GENESIS: [u8; 32] = [0; 32];

/// The chain function: a MAC under the instance's chain key over the predecessor's hash and
/// an event's canonical bytes. Supplied by the caller, which holds the key.
pub type ChainLink = Box<dyn Fn(&[u8; 32], &[u8]) -> [u8; 32] + Send + Sync>;

fn hash_column(bytes: Option<Vec<u8>>) -> Option<[u8; 32]> {
    bytes.and_then(|b| b.try_into().ok())
}

/// Most events one stored block holds when blocks are made from existing rows.
const BLOCK_EVENTS: usize = 4096;

/// The advisory lock key of the audit log's writers on PostgreSQL ("atrest", 2).
const AUDIT_WRITE_LOCK: i64 = 0x6174_7265_7374_0002;

/// The audit log: append-only but for retention, its writers serialized.
pub struct AuditLog {
    connections: Connections,
    /// The newest event this process saw stored, which saves decoding the newest block
    /// when no other replica has appended since.
    head: Mutex<(i64, [u8; 32])>,
    /// Whose journal this process's journal marks are (replicas each have their own).
    replica: String,
    link: ChainLink,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// The events of the stored block `events` that starts at `first_seq`, or an error naming
/// the block if it cannot be read whole.
fn whole_block(first_seq: i64, events: &[u8]) -> Result<Vec<(AuditEvent, [u8; 32])>, StoreError> {
    let block = decode_block(events);
    match block.whole {
        true => Ok(block.events),
        false => Err(StoreError::DamagedAuditBlock(first_seq)),
    }
}

/// The sequence number and hash of the last event of the stored block `events` that starts
/// at `first_seq`.
fn last_of_block(first_seq: i64, events: &[u8]) -> Result<(i64, [u8; 32]), StoreError> {
    whole_block(first_seq, events)?
        .pop()
        .map(|(e, hash)| (e.seq, hash))
        .ok_or(StoreError::DamagedAuditBlock(first_seq))
}

/// The events of the blocks a query yields (`first_seq, events`) that `keep` accepts, at
/// most `limit`: each block's in stored order, or reversed when `newest_first`.
fn events_of_blocks(
    tx: &Tx,
    sql: &str,
    arg: Option<i64>,
    limit: usize,
    newest_first: bool,
    keep: impl Fn(&AuditEvent) -> bool,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    tx.for_each(sql, args![arg], |r| {
        let mut events = whole_block(r.get(0)?, r.bytes(1)?)?;
        if newest_first {
            events.reverse();
        }
        let kept = events.into_iter().map(|(e, _)| e).filter(|e| keep(e));
        out.extend(kept.take(limit - out.len()));
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// Stores `events` as one block and returns the new head. Each is numbered from `head`'s
/// successor and chained to it, unless `chained` gives its number and hash (events moved
/// from rows that already hold them).
fn insert_block(
    tx: &Tx,
    link: &ChainLink,
    mut head: (i64, [u8; 32]),
    events: &[AuditEventRef<'_>],
    chained: impl Fn(usize) -> Option<(i64, [u8; 32])>,
) -> Result<(i64, [u8; 32]), StoreError> {
    let Some(first) = events.first() else {
        return Ok(head);
    };
    let mut block = BlockWriter::with_capacity(events.len());
    let mut canonical = Vec::with_capacity(1024);
    let (first_seq, mut min_time, mut max_time) = (head.0 + 1, first.time_ms, first.time_ms);
    for (i, e) in events.iter().enumerate() {
        let (seq, hash) = chained(i).unwrap_or_else(|| {
            canonical.clear();
            encode(e, head.0 + 1, &mut canonical);
            (head.0 + 1, link(&head.1, &canonical))
        });
        block.push(e, seq, &hash);
        (min_time, max_time) = (min_time.min(e.time_ms), max_time.max(e.time_ms));
        head = (seq, hash);
    }
    tx.exec(
        "INSERT INTO audit_blocks (first_seq, last_seq, min_time_ms, max_time_ms, events) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        args![
            chained(0).map_or(first_seq, |(seq, _)| seq),
            head.0,
            min_time,
            max_time,
            block.finish()
        ],
    )?;
    Ok(head)
}

/// An event stored one row each by versions before blocks, with its hash if it had one.
fn legacy_row(r: &Row) -> Result<(AuditEvent, Option<[u8; 32]>), StoreError> {
    Ok((
        AuditEvent {
            seq: r.get(0)?,
            time_ms: r.get(1)?,
            operation: r.get(2)?,
            result_signature: r.get(3)?,
            result_type: r.get(4)?,
            result_description: r.get(5)?,
            status: r.get::<i64>(6)? as u16,
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
        },
        hash_column(r.get(20)?),
    ))
}

/// Moves events stored one row each (before blocks, in SQLite files only) into blocks,
/// keeping their sequence numbers and hashes, so evidence of earlier tampering survives;
/// rows from before the chain existed are chained now. Drops the old table.
fn move_rows_into_blocks(tx: &Tx, link: &ChainLink) -> Result<(), StoreError> {
    let exists = tx.row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
        args![],
        |r| Ok(r.get::<i64>(0)? > 0),
    )?;
    if exists != Some(true) {
        return Ok(());
    }
    let mut head = anchor(tx)?;
    loop {
        let rows = tx.rows(
            "SELECT seq, time_ms, operation, result_signature, result_type, result_description, status, \
             duration_ms, caller_ip, app_id, object_id, tenant_id, identity_type, mi_resource_id, resource, \
             target_id, http_method, request_uri, correlation_id, client_info, hash FROM audit_events \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            args![head.0, BLOCK_EVENTS as i64],
            legacy_row,
        )?;
        if rows.is_empty() {
            break;
        }
        // Each row keeps its own number, gaps included; unchained rows continue the chain
        // from the row before them.
        let mut previous = head;
        let chained: Vec<(i64, [u8; 32])> = rows
            .iter()
            .map(|(e, hash)| {
                let hash = hash.unwrap_or_else(|| {
                    let mut canonical = Vec::new();
                    encode(&e.view(), e.seq, &mut canonical);
                    link(&previous.1, &canonical)
                });
                previous = (e.seq, hash);
                previous
            })
            .collect();
        let views: Vec<AuditEventRef<'_>> = rows.iter().map(|(e, _)| e.view()).collect();
        head = insert_block(tx, link, head, &views, |i| Some(chained[i]))?;
    }
    tx.exec("DROP TABLE audit_events", args![])?;
    Ok(())
}

/// The newest stored event's sequence number and hash, or the anchor's when no block is
/// stored.
fn newest(tx: &Tx) -> Result<(i64, [u8; 32]), StoreError> {
    let last = tx.row(
        "SELECT first_seq, events FROM audit_blocks ORDER BY first_seq DESC LIMIT 1",
        args![],
        |r| last_of_block(r.get(0)?, r.bytes(1)?),
    )?;
    match last {
        None => anchor(tx),
        Some(head) => Ok(head),
    }
}

/// The chain's head inside a writing transaction: `seen` (the head this process last
/// stored or verified) extended by the events other writers stored since, each checked
/// against its predecessor with the chain key. A stored event that does not extend the
/// chain (a forgery) is not built on: appends continue after the last event that does, and
/// `verify` reports the break.
fn current_head(
    tx: &Tx,
    link: &ChainLink,
    seen: (i64, [u8; 32]),
) -> Result<(i64, [u8; 32]), StoreError> {
    let last_seq = tx.row(
        "SELECT last_seq FROM audit_blocks ORDER BY first_seq DESC LIMIT 1",
        args![],
        |r| r.get::<i64>(0),
    )?;
    if last_seq == Some(seen.0) {
        return Ok(seen);
    }
    // Events retention deleted since are vouched for by the anchor, as at open.
    let anchor = anchor(tx)?;
    let mut head = if anchor.0 > seen.0 { anchor } else { seen };
    if last_seq.is_none_or(|last| last <= head.0) {
        return Ok(head);
    }
    let mut canonical = Vec::with_capacity(1024);
    let from = head.0;
    tx.for_each(
        "SELECT first_seq, events FROM audit_blocks WHERE last_seq > ?1 ORDER BY first_seq",
        args![from],
        |r| {
            for (e, stored) in whole_block(r.get(0)?, r.bytes(1)?)? {
                if e.seq <= head.0 {
                    continue;
                }
                canonical.clear();
                encode(&e.view(), e.seq, &mut canonical);
                if e.seq != head.0 + 1 || stored != link(&head.1, &canonical) {
                    return Ok(false);
                }
                head = (e.seq, stored);
            }
            Ok(true)
        },
    )?;
    Ok(head)
}

impl AuditLog {
    /// Opens (creating and migrating if needed) the audit log in `db`, chaining events with
    /// `link`; `replica` names whose journal this process keeps. Events stored one row each
    /// by earlier versions are moved into blocks.
    pub fn open(db: &Database, link: ChainLink, replica: &str) -> Result<Self, StoreError> {
        let migrations = (schema::AUDIT, schema::PG_AUDIT);
        let connections = Connections::open(db, "audit", migrations, 1, AUDIT_WRITE_LOCK)?;
        let head = connections.write(false, |tx| {
            if matches!(db, Database::Sqlite(_)) {
                move_rows_into_blocks(tx, &link)?;
            }
            newest(tx)
        })?;
        Ok(AuditLog {
            connections,
            head: Mutex::new(head),
            replica: replica.to_owned(),
            link,
        })
    }

    /// Opens the audit log in the SQLite file at `path`, for the only replica.
    pub fn open_file(path: &Path, link: ChainLink) -> Result<Self, StoreError> {
        Self::open(&Database::Sqlite(path.to_owned()), link, "")
    }

    /// Appends events in order, in one transaction: all are durable or none. Each gets the
    /// next sequence number and is chained to its predecessor.
    pub fn append(&self, events: &[AuditEventRef<'_>]) -> Result<(), StoreError> {
        self.append_with(events, None)
    }

    /// Appends journaled events, as [`AuditLog::append`], and records in the same
    /// transaction that this replica's journal is stored up to `mark`.
    pub fn append_journaled(
        &self,
        events: &[AuditEventRef<'_>],
        mark: JournalMark,
    ) -> Result<(), StoreError> {
        self.append_with(events, Some(mark))
    }

    /// How far this replica's journal is stored.
    fn journal_stored(&self) -> Result<JournalMark, StoreError> {
        let stored = self.connections.read(|tx| {
            tx.row(
                "SELECT generation, records FROM audit_journals WHERE replica = ?1",
                args![self.replica],
                |r| {
                    Ok(JournalMark {
                        generation: r.get::<i64>(0)? as u64,
                        records: r.get::<i64>(1)? as u64,
                    })
                },
            )
        })?;
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
            let unstored: Vec<AuditEventRef<'_>> = unstored.iter().map(AuditEvent::view).collect();
            self.append_journaled(&unstored, mark)?;
            recovery.events += unstored.len();
        }
        let journal = Journal::create(dir, newest + 1)?;
        journal.remove_through(newest)?;
        Ok((journal, recovery))
    }

    fn append_with(
        &self,
        events: &[AuditEventRef<'_>],
        mark: Option<JournalMark>,
    ) -> Result<(), StoreError> {
        let mut seen = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.connections.write(false, |tx| {
            let head = current_head(tx, &self.link, *seen)?;
            let head = insert_block(tx, &self.link, head, events, |_| None)?;
            if let Some(mark) = mark {
                tx.exec(
                    "INSERT INTO audit_journals (replica, generation, records) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (replica) DO UPDATE SET generation = excluded.generation, records = excluded.records",
                    args![self.replica, mark.generation as i64, mark.records as i64],
                )?;
            }
            Ok::<_, StoreError>(head)
        })?;
        *seen = head;
        Ok(())
    }

    /// The stored hash of event `seq`, if the log holds it.
    pub fn hash_at(&self, seq: i64) -> Result<Option<[u8; 32]>, StoreError> {
        let found = self.connections.read(|tx| {
            tx.row(
                "SELECT first_seq, events FROM audit_blocks WHERE first_seq <= ?1 AND last_seq >= ?1",
                args![seq],
                |r| whole_block(r.get(0)?, r.bytes(1)?),
            )
        })?;
        Ok(found
            .into_iter()
            .flatten()
            .find(|(e, _)| e.seq == seq)
            .map(|(_, hash)| hash))
    }

    /// The newest stored event's sequence number and hash (0 and the genesis hash before
    /// any), whichever replica stored it.
    pub fn head(&self) -> Result<(i64, [u8; 32]), StoreError> {
        self.connections.read(newest)
    }

    /// Walks the chain from the anchor to the newest event and reports the first break.
    /// `checkpoint`, a head recorded earlier outside this database, also catches the newest
    /// events being deleted, which the chain alone cannot show.
    pub fn verify(&self, checkpoint: Option<(i64, [u8; 32])>) -> Result<Verification, StoreError> {
        // One read transaction: a consistent snapshot while writers go on appending.
        self.connections.read(|tx| self.verify_in(tx, checkpoint))
    }

    fn verify_in(
        &self,
        tx: &Tx,
        checkpoint: Option<(i64, [u8; 32])>,
    ) -> Result<Verification, StoreError> {
        let (anchor_seq, mut prev) = anchor(tx)?;
        let mut verified = 0u64;
        let mut expected = anchor_seq + 1;
        let mut canonical = Vec::with_capacity(1024);
        let broken = |seq, e: Option<&AuditEvent>, reason: String, verified| Verification::Broken {
            seq,
            operation: e.map(|e| e.operation.clone()).unwrap_or_default(),
            time_ms: e.map_or(0, |e| e.time_ms),
            reason,
            verified,
        };
        let mut found = None;
        tx.for_each(
            "SELECT first_seq, last_seq, min_time_ms, max_time_ms, events FROM audit_blocks ORDER BY first_seq",
            args![],
            |r| {
                let (first_seq, last_seq): (i64, i64) = (r.get(0)?, r.get(1)?);
                let (min_time, max_time): (i64, i64) = (r.get(2)?, r.get(3)?);
                let block = decode_block(r.bytes(4)?);
                for (e, stored) in &block.events {
                    canonical.clear();
                    encode(&e.view(), e.seq, &mut canonical);
                    let reason = if e.seq != expected {
                        Some(if e.seq > expected {
                            format!(
                                "events {expected} to {} are missing (deleted, or moved)",
                                e.seq - 1
                            )
                        } else {
                            format!(
                                "sequence number {} is out of order; {expected} was expected",
                                e.seq
                            )
                        })
                    } else if *stored != (self.link)(&prev, &canonical) {
                        Some("its content does not match its hash (edited, or moved)".to_owned())
                    } else if checkpoint.is_some_and(|(seq, hash)| seq == e.seq && *stored != hash)
                    {
                        Some("its hash differs from the recorded checkpoint".to_owned())
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        found = Some(broken(e.seq, Some(e), reason, verified));
                        return Ok(false);
                    }
                    prev = *stored;
                    expected += 1;
                    verified += 1;
                }
                if !block.whole {
                    let reason = "its stored block is damaged and cannot be read".to_owned();
                    found = Some(broken(expected, None, reason, verified));
                    return Ok(false);
                }
                let seqs = block.events.first().zip(block.events.last());
                let times = block.events.iter().map(|(e, _)| e.time_ms);
                let indexed = seqs.is_some_and(|((first, _), (last, _))| {
                    (first.seq, last.seq) == (first_seq, last_seq)
                        && times.clone().min() == Some(min_time)
                        && times.max() == Some(max_time)
                });
                if !indexed {
                    let reason = format!(
                        "the block starting at {first_seq} is indexed by sequence numbers or times its events do not have"
                    );
                    found = Some(broken(first_seq, None, reason, verified));
                    return Ok(false);
                }
                Ok(true)
            },
        )?;
        if let Some(broken) = found {
            return Ok(broken);
        }
        if let Some((seq, _)) = checkpoint.filter(|(seq, _)| *seq >= expected) {
            let reason = format!(
                "events {expected} to {seq} were recorded (checkpoint) but are gone from the log"
            );
            return Ok(broken(seq, None, reason, verified));
        }
        Ok(Verification::Intact {
            events: verified,
            first_seq: anchor_seq + 1,
            head: (expected - 1, prev),
        })
    }

    /// Deletes events older than `before_ms`, oldest first, a whole block at a time, and
    /// moves the anchor to the last one deleted. Returns how many were deleted.
    pub fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.connections.write(false, |tx| {
            // The cut is the newest block older than the cutoff whose predecessors are all
            // older too.
            let cut = tx.row(
                "SELECT first_seq, events FROM audit_blocks WHERE first_seq < \
                 coalesce((SELECT min(first_seq) FROM audit_blocks WHERE max_time_ms >= ?1), 9223372036854775807) \
                 ORDER BY first_seq DESC LIMIT 1",
                args![before_ms],
                |r| Ok((r.get::<i64>(0)?, last_of_block(r.get(0)?, r.bytes(1)?)?)),
            )?;
            let Some((first_seq, (seq, hash))) = cut else {
                return Ok(0);
            };
            let deleted = tx
                .row(
                    "SELECT CAST(coalesce(sum(last_seq - first_seq + 1), 0) AS BIGINT) FROM audit_blocks WHERE first_seq <= ?1",
                    args![first_seq],
                    |r| r.get::<i64>(0),
                )?
                .unwrap_or(0);
            tx.exec("DELETE FROM audit_blocks WHERE first_seq <= ?1", args![first_seq])?;
            tx.exec(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                args![seq, hash],
            )?;
            Ok(deleted as u64)
        })
    }

    /// Stores an alert; returns its id.
    pub fn add_alert(&self, a: &Alert) -> Result<i64, StoreError> {
        self.connections.write(false, |tx| {
            let id = tx.row(
                "INSERT INTO alerts (time_ms, rule, severity, caller, resource, description, correlation_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                args![a.time_ms, a.rule, a.severity, a.caller, a.resource, a.description, a.correlation_id],
                |r| r.get(0),
            )?;
            Ok(id.unwrap_or_default())
        })
    }

    /// The newest alerts first, at most `limit`.
    pub fn alerts(&self, limit: usize) -> Result<Vec<Alert>, StoreError> {
        self.connections.read(|tx| {
            tx.rows(
                "SELECT id, time_ms, rule, severity, caller, resource, description, correlation_id \
                 FROM alerts ORDER BY id DESC LIMIT ?1",
                args![limit as i64],
                |r| {
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
                },
            )
        })
    }

    /// How many alerts each rule has raised.
    pub fn alert_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.connections.read(|tx| {
            tx.rows(
                "SELECT rule, count(*) FROM alerts GROUP BY rule ORDER BY rule",
                args![],
                |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)),
            )
        })
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
        self.connections.read(|tx| {
            events_of_blocks(
                tx,
                "SELECT first_seq, events FROM audit_blocks WHERE last_seq > ?1 ORDER BY first_seq",
                Some(after),
                limit,
                false,
                |e| e.seq > after,
            )
        })
    }

    /// Events matching `filter`, newest first.
    pub fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.connections.read(|tx| {
            events_of_blocks(
                tx,
                "SELECT first_seq, events FROM audit_blocks WHERE (CAST(?1 AS BIGINT) IS NULL OR max_time_ms >= ?1) \
                 ORDER BY first_seq DESC",
                filter.since_ms,
                filter.limit,
                true,
                |e| {
                    filter.since_ms.is_none_or(|t| e.time_ms >= t)
                        && filter
                            .operation
                            .as_ref()
                            .is_none_or(|op| e.operation == *op)
                },
            )
        })
    }
}

/// Where the chain starts: the last event retention deleted, or the genesis.
fn anchor(tx: &Tx) -> Result<(i64, [u8; 32]), StoreError> {
    Ok(tx
        .row(
            "SELECT seq, hash FROM audit_anchor WHERE id = 1",
            args![],
            |r| Ok((r.get::<i64>(0)?, hash_column(r.get(1)?))),
        )?
        .map_or((0, GENESIS), |(seq, hash)| (seq, hash.unwrap_or(GENESIS))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection};

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

    /// A log of `n` events and its directory (removed when dropped); the database is
    /// `audit.db` in it.
    fn log_with(n: i64) -> (AuditLog, tempfile::TempDir) {
        let dir = crate::test_dir();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open_file(&path, toy_link()).unwrap();
        let events: Vec<AuditEvent> = (1..=n).map(event).collect();
        let views: Vec<AuditEventRef<'_>> = events.iter().map(AuditEvent::view).collect();
        log.append(&views[..n as usize / 2]).unwrap();
        log.append(&views[n as usize / 2..]).unwrap();
        (log, dir)
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
        let (log, tmp) = log_with(2);
        let path = tmp.path().join("audit.db");
        let dir = tmp.path().join("journal");
        let (mut journal, nothing) = log.recover_journal(&dir).unwrap();
        assert_eq!(nothing, Recovery::default());
        let record = |i| {
            let mut out = Vec::new();
            crate::encode_record(&event(i), &mut out);
            out
        };
        for i in 3..=5 {
            journal.append(&record(i), 1).unwrap();
        }
        // The writer stored the first two, then the process died before the third.
        let mark = JournalMark {
            records: 2,
            ..journal.mark()
        };
        log.append_journaled(&[event(3).view(), event(4).view()], mark)
            .unwrap();
        journal.rotate().unwrap();
        journal.append(&record(6), 1).unwrap();
        drop((journal, log));

        let log = AuditLog::open_file(&path, toy_link()).unwrap();
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
        let (log, dir) = log_with(10);
        let path = dir.path().join("audit.db");
        let Verification::Intact { events, head, .. } = log.verify(None).unwrap() else {
            panic!("intact chain reported broken");
        };
        assert_eq!((events, head.0), (10, 10));
        drop(log);
        let log = AuditLog::open_file(&path, toy_link()).unwrap();
        log.append(&[event(11).view()]).unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 11, .. }
        ));
    }

    /// Rewrites the stored block starting at `first_seq` after `edit` changed its events
    /// (numbers and hashes as stored), leaving its index columns as they were.
    fn rewrite_block(
        path: &Path,
        first_seq: i64,
        edit: impl FnOnce(&mut Vec<(AuditEvent, [u8; 32])>),
    ) {
        let conn = Connection::open(path).unwrap();
        let bytes: Vec<u8> = conn
            .query_row(
                "SELECT events FROM audit_blocks WHERE first_seq = ?1",
                [first_seq],
                |r| r.get(0),
            )
            .unwrap();
        let mut events = decode_block(&bytes).events;
        edit(&mut events);
        let mut block = BlockWriter::with_capacity(events.len());
        for (e, hash) in &events {
            block.push(&e.view(), e.seq, hash);
        }
        conn.execute(
            "UPDATE audit_blocks SET events = ?2 WHERE first_seq = ?1",
            params![first_seq, block.finish()],
        )
        .unwrap();
    }

    #[test]
    fn edits_deletions_insertions_and_reordering_are_found() {
        type Tamper = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Tamper, i64, &str)> = vec![
            (
                "an edited event",
                Box::new(|p| rewrite_block(p, 1, |events| events[3].0.status = 403)),
                4,
                "content",
            ),
            (
                "a deleted event",
                Box::new(|p| rewrite_block(p, 6, |events| drop(events.remove(0)))),
                7,
                "missing",
            ),
            (
                "two events swapped",
                Box::new(|p| rewrite_block(p, 1, |events| events.swap(2, 4))),
                5,
                "missing",
            ),
            (
                "two events' contents swapped under their own numbers",
                Box::new(|p| {
                    rewrite_block(p, 1, |events| {
                        events.swap(2, 4);
                        (events[2].0.seq, events[4].0.seq) = (3, 5);
                    })
                }),
                3,
                "content",
            ),
            (
                "an event appended with a copied hash",
                Box::new(|p| {
                    rewrite_block(p, 6, |events| {
                        let (mut forged, hash) = events[4].clone();
                        forged.seq = 11;
                        forged.operation = "Forged".into();
                        events.push((forged, hash));
                    })
                }),
                11,
                "content",
            ),
            (
                "a deleted block",
                Box::new(|p| tamper(p, "DELETE FROM audit_blocks WHERE first_seq = 1")),
                6,
                "events 1 to 5 are missing",
            ),
            (
                "two blocks swapped",
                Box::new(|p| {
                    tamper(
                        p,
                        "UPDATE audit_blocks SET first_seq = -first_seq; \
                         UPDATE audit_blocks SET first_seq = CASE first_seq WHEN -1 THEN 6 ELSE 1 END",
                    )
                }),
                6,
                "missing",
            ),
            (
                "a block's times altered",
                Box::new(|p| {
                    tamper(
                        p,
                        "UPDATE audit_blocks SET max_time_ms = 0 WHERE first_seq = 6",
                    )
                }),
                6,
                "indexed",
            ),
            (
                "a damaged block",
                Box::new(|p| {
                    tamper(p, "UPDATE audit_blocks SET events = substr(events, 1, length(events) - 40) WHERE first_seq = 6")
                }),
                10,
                "damaged",
            ),
        ];
        for (what, tampering, seq, reason) in cases {
            let (log, dir) = log_with(10);
            let path = dir.path().join("audit.db");
            tampering(&path);
            let (at, why) = broken_at(&log);
            assert_eq!(at, seq, "{what}: {why}");
            assert!(why.contains(reason), "{what}: {why}");
        }
    }

    #[test]
    fn retention_keeps_the_rest_verifiable() {
        let (log, dir) = log_with(10);
        let path = dir.path().join("audit.db");
        // Blocks go whole: the first (events 1 to 5) once all its events are old.
        assert_eq!(log.prune(4500).unwrap(), 0);
        assert_eq!(log.prune(5500).unwrap(), 5);
        let Verification::Intact {
            events, first_seq, ..
        } = log.verify(None).unwrap()
        else {
            panic!("pruned chain reported broken");
        };
        assert_eq!((events, first_seq), (5, 6));
        assert_eq!(log.prune(5500).unwrap(), 0);
        assert_eq!(log.export(0, 100).unwrap().first().map(|e| e.seq), Some(6));
        // Deleting the oldest remaining event is not retention: the anchor does not match.
        rewrite_block(&path, 6, |events| drop(events.remove(0)));
        assert_eq!(broken_at(&log).0, 7);
    }

    #[test]
    fn appends_do_not_build_on_a_forged_newest_event() {
        // Events 1-2 and 3-4 in two blocks; a forger adds event 5 (a copy of 4's hash) to
        // the newest block.
        let (log, dir) = log_with(4);
        let path = dir.path().join("audit.db");
        rewrite_block(&path, 3, |events| {
            let (mut forged, hash) = events[1].clone();
            forged.seq = 5;
            events.push((forged, hash));
        });
        tamper(
            &path,
            "UPDATE audit_blocks SET last_seq = 5 WHERE first_seq = 3",
        );
        log.append(&[event(6).view()]).unwrap();
        assert_eq!(broken_at(&log).0, 5, "the forgery is reported");
        // Without the forgery, the chain is whole: the append continued from event 4.
        rewrite_block(&path, 3, |events| {
            events.pop();
        });
        tamper(
            &path,
            "UPDATE audit_blocks SET last_seq = 4 WHERE first_seq = 3",
        );
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 5, .. }
        ));
    }

    #[test]
    fn a_checkpoint_catches_deleted_newest_events() {
        let (log, dir) = log_with(10);
        let path = dir.path().join("audit.db");
        let checkpoint = log.head().unwrap();
        assert_eq!(checkpoint.0, 10);
        assert!(matches!(
            log.verify(Some(checkpoint)).unwrap(),
            Verification::Intact { .. }
        ));
        rewrite_block(&path, 6, |events| events.truncate(3));
        tamper(
            &path,
            "UPDATE audit_blocks SET last_seq = 8, max_time_ms = 8000 WHERE first_seq = 6",
        );
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
    fn reads_find_events_across_blocks() {
        let (log, _dir) = log_with(10);
        let seqs = |events: Vec<AuditEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.export(3, 4).unwrap()), [4, 5, 6, 7]);
        assert_eq!(seqs(log.export(10, 4).unwrap()), Vec::<i64>::new());
        let list = |since_ms, operation: Option<&str>, limit| {
            seqs(
                log.list(&AuditFilter {
                    since_ms,
                    operation: operation.map(str::to_owned),
                    limit,
                })
                .unwrap(),
            )
        };
        assert_eq!(list(None, None, 3), [10, 9, 8]);
        assert_eq!(list(Some(4000), None, 100), [10, 9, 8, 7, 6, 5, 4]);
        assert_eq!(list(None, Some("Op2"), 100), [2]);
        let mut scanned = Vec::new();
        log.scan(|e| scanned.push(e.seq)).unwrap();
        assert_eq!(scanned, (1..=10).collect::<Vec<_>>());
        let (_, head) = log.head().unwrap();
        assert_eq!(log.hash_at(10).unwrap(), Some(head));
        assert!(log.hash_at(3).unwrap().is_some());
        assert_eq!(log.hash_at(11).unwrap(), None);
    }

    #[test]
    fn events_stored_a_row_each_move_into_blocks_with_their_hashes() {
        let dir = crate::test_dir();
        let path = dir.path().join("audit.db");
        let link = toy_link();
        {
            // The database as versions with one row per event left it: events 1 to 3
            // chained (event 2 edited afterwards), 4 and 5 from before the chain existed.
            let mut conn = Connection::open(&path).unwrap();
            crate::sqlite::migrate(&mut conn, &schema::AUDIT[..4]).unwrap();
            let mut prev = GENESIS;
            for i in 1..=5 {
                let e = event(i);
                let mut canonical = Vec::new();
                encode(&e.view(), i, &mut canonical);
                let hash = link(&prev, &canonical);
                let chained = i <= 3;
                conn.execute(
                    "INSERT INTO audit_events (seq, time_ms, operation, result_signature, result_type, \
                     result_description, status, duration_ms, caller_ip, http_method, request_uri, \
                     correlation_id, client_info, prev_hash, hash) \
                     VALUES (?1, ?2, ?3, '', '', '', ?4, 0, '', '', ?5, '', '', ?6, ?7)",
                    params![
                        i,
                        e.time_ms,
                        e.operation,
                        e.status,
                        e.request_uri,
                        chained.then_some(prev),
                        chained.then_some(hash)
                    ],
                )
                .unwrap();
                prev = hash;
            }
            conn.execute("UPDATE audit_events SET status = 500 WHERE seq = 2", [])
                .unwrap();
        }
        let log = AuditLog::open_file(&path, toy_link()).unwrap();
        let (at, why) = broken_at(&log);
        assert_eq!(at, 2, "an edit made before the move is still found: {why}");
        rewrite_block(&path, 1, |events| events[1].0.status = 200);
        log.append(&[event(6).view()]).unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 6, .. }
        ));
        let tables: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'audit_events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the per-event table is gone");
    }
}
