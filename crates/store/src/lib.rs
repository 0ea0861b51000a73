//! Persistent state, and the only crate that speaks SQL: the state database ([`Store`],
//! one transaction per closure) and the audit log ([`AuditLog`], a keyed hash chain with
//! its journal). Sealed columns hold ciphertext only. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod audit;
mod objects;
mod principals;
mod resources;
mod roles;
mod schema;
mod vaults;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rusqlite::{Connection, TransactionBehavior};
use thiserror::Error;

pub use audit::journal::{decode_records, encode_record, Journal, JournalMark};
pub use audit::{AuditLog, ChainLink, Recovery};
pub use objects::{KeyLifetime, ObjectState, VersionRow};
pub use roles::RoleAssignmentRow;

/// A storage failure. The message names the operation, never stored values.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file beside the database (the audit journal) could not be read or written.
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored block of audit events (named by its first sequence number) could not be
    /// read: it was damaged or edited.
    #[error("the audit block starting at event {0} is damaged")]
    DamagedAuditBlock(i64),
    /// A stored JSON column could not be decoded.
    #[error("corrupt JSON in column {0}")]
    CorruptJson(&'static str),
    /// The database was written by a newer atrest.
    #[error(
        "the database schema version {found} is newer than this atrest supports ({supported})"
    )]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Newest known version.
        supported: i64,
    },
}

/// Prepared statements kept per connection: more than the store has distinct queries.
const STATEMENTS_CACHED: usize = 64;

/// Read-only connections kept open beside the writer.
const READERS: usize = 4;

/// The database.
pub struct Store {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// A transaction handed to [`Store::read`] and [`Store::write`] closures.
pub struct Tx<'a>(rusqlite::Transaction<'a>);

impl Store {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = open_connection(path, schema::STATE)?;
        let readers = (0..READERS)
            .map(|_| Ok(Mutex::new(open_reader(path)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Store {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in a read transaction on one of the read-only connections.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        // A free reader if there is one, else wait for the next in turn.
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut conn = (0..READERS)
            .find_map(|i| self.readers[(start + i) % READERS].try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[start % READERS]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
        transact(&mut conn, TransactionBehavior::Deferred, f)
    }

    /// Runs `f` in a write transaction, committed only if `f` returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        transact(&mut conn, TransactionBehavior::Immediate, f)
    }
}

impl Store {
    /// Copies every committed change into the main file and empties the write-ahead log,
    /// so rows just deleted (zeroed in place by `secure_delete`) leave no older copy in the
    /// log. A reader in the middle of a transaction can leave part of the log for later.
    pub fn scrub(&self) -> Result<(), StoreError> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Opens the writing connection of a database, creating and migrating it if needed.
fn open_connection(path: &Path, migrations: &[&str]) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; PRAGMA secure_delete=ON;",
    )?;
    schema::migrate(&mut conn, migrations)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    Ok(conn)
}

/// Opens a read-only connection to a database already opened by [`open_connection`].
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA busy_timeout=5000;")?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    Ok(conn)
}

/// Runs `f` in one transaction on `conn`. A panic inside a closure poisons the mutex, but
/// the connection itself is still sound because the transaction rolls back on drop.
fn transact<T, E: From<StoreError>>(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    f: impl FnOnce(&Tx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = Tx(conn
        .transaction_with_behavior(behavior)
        .map_err(StoreError::from)?);
    let out = f(&tx)?;
    tx.0.commit().map_err(StoreError::from)?;
    Ok(out)
}

impl Tx<'_> {
    /// Runs one statement. Statements are cached per connection, so each SQL text is
    /// parsed once.
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, through the statement cache.
    fn query_one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }

    /// A value from the instance metadata table.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .query_one("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets an instance metadata value.
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            rusqlite::params![key, value],
        )?;
        Ok(())
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("stored JSON values serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::CorruptJson(column))
}

#[cfg(test)]
pub(crate) fn test_store() -> (Store, tempfile::TempDir) {
    let dir = test_dir();
    (Store::open(&dir.path().join("state.db")).unwrap(), dir)
}

/// A fresh directory under the system temp directory, removed when dropped.
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rolls_back_on_error() {
        let (store, _dir) = test_store();
        let r: Result<(), StoreError> = store.write(|tx| {
            tx.meta_put("k", b"v")?;
            Err(StoreError::CorruptJson("forced"))
        });
        assert!(r.is_err());
        let v = store.read(|tx| tx.meta_get("k")).unwrap();
        assert_eq!(v, None, "a failed write must leave nothing behind");
        store.write(|tx| tx.meta_put("k", b"v")).unwrap();
        assert_eq!(
            store.read(|tx| tx.meta_get("k")).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[test]
    fn reopening_keeps_data() {
        let (store, dir) = test_store();
        store.write(|tx| tx.meta_put("k", b"1")).unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(
            store.read(|tx| tx.meta_get("k")).unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }
}
