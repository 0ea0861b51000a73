//! The audit journal: where an event is written, with one `write(2)`, before its response
//! leaves, so that it survives a crash of the server process; the audit writer moves what
//! the journal holds into the audit database in batches.
//!
//! The journal is a directory of files named by a generation number. Each holds records
//! `[length: u32][checksum: u64][the event's canonical bytes]`, big-endian; the checksum
//! (FNV-1a) finds a record torn by a crash of the operating system. The audit database
//! records, in the transaction that stores a batch, how far into which generation the
//! batch reaches ([`JournalMark`]), so recovery after a crash stores every journaled event
//! exactly once. A generation whose events are all stored is deleted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use atrest_core::audit::{AuditEvent, AuditEventRef};

use crate::audit::codec::{decode, encode};

/// How far a batch of journaled events reaches: the first `records` records of the file of
/// `generation`, and every earlier generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalMark {
    /// The file's generation.
    pub generation: u64,
    /// Records of that file covered.
    pub records: u64,
}

/// The open journal: the file of the newest generation, appended to. Appends need only a
/// shared reference, so concurrent requests append without waiting for each other; the
/// kernel keeps each `write(2)` of an append-mode file whole.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    generation: u64,
    records: AtomicU64,
}

/// Header bytes of a record: length and checksum.
const RECORD_HEADER: usize = 12;

/// The largest record accepted when reading back; larger lengths mean a torn record.
const MAX_RECORD: usize = 1 << 20;

/// FNV-1a over `bytes` taken eight at a time (rotated, so high bits mix too) and their
/// length: enough to tell a whole record from a torn one, at memory speed.
fn checksum(bytes: &[u8]) -> u64 {
    let step = |h: u64, word: u64| (h ^ word).wrapping_mul(0x0100_0000_01b3).rotate_left(31);
    let mut words = bytes.chunks_exact(8);
    let h = words.by_ref().fold(0xcbf2_9ce4_8422_2325, |h, w| {
        step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")))
    });
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    step(step(h, u64::from_le_bytes(tail)), bytes.len() as u64)
}

fn file_of(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{generation:020}"))
}

/// What one generation's file holds.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) generation: u64,
    pub(crate) events: Vec<AuditEvent>,
    /// Bytes after the last whole record (a torn write), if any.
    pub(crate) torn_bytes: usize,
}

impl Journal {
    /// Starts generation `generation` in `dir` (created, mode 0700, if missing).
    pub(crate) fn create(dir: &Path, generation: u64) -> io::Result<Journal> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            file: open_generation(dir, generation)?,
            generation,
            records: AtomicU64::new(0),
        })
    }

    /// Writes `count` whole records made by [`encode_record`] in one `pwrite(2)`. On
    /// Linux a file opened to append is appended to whatever the offset; unlike
    /// `write(2)`, `pwrite(2)` takes no lock on the file position shared by every thread
    /// writing to the file.
    pub fn append(&self, records: &[u8], count: u64) -> io::Result<()> {
        self.file.write_all_at(records, 0)?;
        self.records.fetch_add(count, Ordering::SeqCst);
        Ok(())
    }

    /// How far the journal reaches now. Exact once no append is in progress.
    pub fn mark(&self) -> JournalMark {
        JournalMark {
            generation: self.generation,
            records: self.records.load(Ordering::SeqCst),
        }
    }

    /// Continues in a new generation, so the current one can be deleted once stored; on
    /// failure the journal goes on in the current one.
    pub fn rotate(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        self.file = open_generation(&self.dir, next)?;
        self.generation = next;
        self.records = AtomicU64::new(0);
        Ok(())
    }

    /// Deletes the files of generations up to `generation`, whose events are all stored.
    pub fn remove_through(&self, generation: u64) -> io::Result<()> {
        for g in generations(&self.dir)? {
            if g <= generation && g != self.generation {
                fs::remove_file(file_of(&self.dir, g))?;
            }
        }
        Ok(())
    }

    /// Deletes the current file if it holds nothing (at shutdown, after the last batch).
    pub fn close(self) -> io::Result<()> {
        if self.mark().records == 0 {
            fs::remove_file(file_of(&self.dir, self.generation))?;
        }
        Ok(())
    }
}

fn open_generation(dir: &Path, generation: u64) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file_of(dir, generation))
}

/// The generations present in `dir`, oldest first.
fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    found.sort_unstable();
    Ok(found)
}

/// Reads every generation in `dir`, oldest first, up to the first torn record of each.
pub(crate) fn read_all(dir: &Path) -> io::Result<Vec<Generation>> {
    generations(dir)?
        .into_iter()
        .map(|generation| {
            let bytes = fs::read(file_of(dir, generation))?;
            let (events, whole) = decode_records(&bytes);
            Ok(Generation {
                generation,
                events: events.iter().map(AuditEventRef::to_event).collect(),
                torn_bytes: bytes.len() - whole,
            })
        })
        .collect()
}

/// Appends the journal record of `event` to `out`.
pub fn encode_record(event: &AuditEvent, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    encode(&event.view(), event.seq, out);
    let len = (out.len() - start - RECORD_HEADER) as u32;
    let sum = checksum(&out[start + RECORD_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + RECORD_HEADER].copy_from_slice(&sum.to_be_bytes());
}

/// The events of the whole records at the start of `bytes` (records made by
/// [`encode_record`]), and how many bytes they take.
pub fn decode_records(bytes: &[u8]) -> (Vec<AuditEventRef<'_>>, usize) {
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER) {
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_be_bytes(header[4..].try_into().expect("8 bytes"));
        let Some(body) = bytes
            .get(at + RECORD_HEADER..at + RECORD_HEADER + len)
            .filter(|b| len <= MAX_RECORD && checksum(b) == sum)
        else {
            break;
        };
        let Some(event) = decode(body) else { break };
        events.push(event);
        at += RECORD_HEADER + len;
    }
    (events, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            time_ms: n,
            operation: format!("Op{n}"),
            result_signature: "OK".into(),
            status: 200,
            app_id: Some("app".into()),
            target_id: (n % 2 == 0).then(|| format!("https://v/secrets/{n}")),
            ..AuditEvent::default()
        }
    }

    /// A journal directory inside a temporary directory, removed when the latter drops.
    fn temp_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("journal");
        (tmp, dir)
    }

    #[test]
    fn records_read_back_in_order_across_generations() {
        let (_tmp, dir) = temp_dir();
        let mut j = Journal::create(&dir, 7).unwrap();
        let record = |n| {
            let mut out = Vec::new();
            encode_record(&event(n), &mut out);
            out
        };
        j.append(&record(1), 1).unwrap();
        j.append(&record(2), 1).unwrap();
        assert_eq!(
            j.mark(),
            JournalMark {
                generation: 7,
                records: 2
            }
        );
        j.rotate().unwrap();
        j.append(&record(3), 1).unwrap();
        let read = read_all(&dir).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].generation, 7);
        assert_eq!(read[0].events, vec![event(1), event(2)]);
        assert_eq!(read[1].events, vec![event(3)]);
        assert!(read.iter().all(|g| g.torn_bytes == 0));
        j.remove_through(7).unwrap();
        assert_eq!(generations(&dir).unwrap(), vec![8]);
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_file() {
        let owned = |events: &[AuditEventRef<'_>]| -> Vec<AuditEvent> {
            events.iter().map(AuditEventRef::to_event).collect()
        };
        let decoded = |bytes: &[u8]| {
            let (events, used) = decode_records(bytes);
            (owned(&events), used)
        };
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for n in 0..3 {
            encode_record(&event(n), &mut bytes);
            ends.push(bytes.len());
        }
        assert_eq!(
            decoded(&bytes),
            (vec![event(0), event(1), event(2)], ends[2])
        );
        // Cut short: the last record is dropped.
        assert_eq!(
            decoded(&bytes[..ends[2] - 5]),
            (vec![event(0), event(1)], ends[1])
        );
        // A flipped byte in the middle record ends reading before it.
        let mut damaged = bytes.clone();
        damaged[ends[0] + RECORD_HEADER + 20] ^= 0x40;
        assert_eq!(decoded(&damaged), (vec![event(0)], ends[0]));
        // Zeros where a record should be (space allocated, data never written).
        let mut zeroed = bytes[..ends[1]].to_vec();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(decoded(&zeroed), (vec![event(0), event(1)], ends[1]));
    }
}
