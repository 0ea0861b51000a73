//! Persistent state, and the only crate that speaks SQL: the state database ([`Store`],
//! one transaction per closure) and the audit log ([`AuditLog`], a keyed hash chain with
//! its journal). Sealed columns hold ciphertext only. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod audit;
mod leases;
mod objects;
mod postgres;
mod principals;
mod resources;
mod roles;
mod schema;
mod sql;
mod sqlite;
mod vaults;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use thiserror::Error;

pub use audit::journal::{decode_records, encode_record, Journal, JournalMark};
pub use audit::{AuditLog, ChainLink, Recovery};
pub use leases::{Acquired, LeaseRow};
pub use objects::{KeyLifetime, ObjectState, VersionRow};
pub use postgres::PgTarget;
pub use roles::RoleAssignmentRow;

use sql::{args, Row, ToArg};

/// A storage failure. The message names the operation, never stored values.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or could not be reached. The text is the server's
    /// message and SQLSTATE code, without the detail that may quote stored values.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The `--state` connection string is not a usable PostgreSQL URL.
    #[error("the database URL is not usable: {0}")]
    BadDatabaseUrl(String),
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
    /// A result column held a value of another kind than the query reads (by position).
    #[error("result column {0} holds an unexpected kind of value")]
    UnexpectedColumn(usize),
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

/// Where a database lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file, used by this process alone.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every replica that names it.
    Postgres(Arc<PgTarget>),
}

/// Read-only connections kept open beside the writer.
const READERS: usize = 4;

/// A writing connection and read-only ones.
struct Pool<C> {
    writer: Mutex<C>,
    readers: Vec<Mutex<C>>,
    next_reader: AtomicUsize,
}

impl<C> Pool<C> {
    fn new(
        writer: C,
        readers: usize,
        mut open_reader: impl FnMut() -> Result<C, StoreError>,
    ) -> Result<Self, StoreError> {
        Ok(Pool {
            writer: Mutex::new(writer),
            readers: (0..readers)
                .map(|_| Ok(Mutex::new(open_reader()?)))
                .collect::<Result<_, StoreError>>()?,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// A free reader if there is one, else the next in turn once it is free.
    fn reader(&self) -> MutexGuard<'_, C> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        (0..n)
            .find_map(|i| self.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[start % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
    }

    /// The writer. A panic inside a closure poisons the mutex, but the connection itself is
    /// still sound because the transaction rolls back on drop.
    fn writer(&self) -> MutexGuard<'_, C> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connections of one database, on either backend.
enum Connections {
    Sqlite(Pool<rusqlite::Connection>),
    Postgres {
        pool: Pool<postgres::Conn>,
        /// The advisory lock every writer of this database takes.
        write_lock: i64,
    },
}

impl Connections {
    /// Opens `db`, creating and migrating `component`'s schema: `sqlite` or `postgres` are
    /// its migrations on each backend; PostgreSQL writers take `write_lock`.
    fn open(
        db: &Database,
        component: &str,
        migrations: (&[&str], &[&str]),
        readers: usize,
        write_lock: i64,
    ) -> Result<Self, StoreError> {
        Ok(match db {
            Database::Sqlite(path) => {
                let writer = sqlite::open_writer(path, migrations.0)?;
                Connections::Sqlite(Pool::new(writer, readers, || sqlite::open_reader(path))?)
            }
            Database::Postgres(target) => {
                let mut writer = postgres::Conn::open(target)?;
                postgres::migrate(&mut writer, component, migrations.1)?;
                Connections::Postgres {
                    pool: Pool::new(writer, readers, || postgres::Conn::open(target))?,
                    write_lock,
                }
            }
        })
    }

    /// Runs `f` in a read transaction (a consistent snapshot) on a reading connection.
    fn read<T, E: From<StoreError>>(&self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        match self {
            Connections::Sqlite(pool) => {
                let mut conn = pool.reader();
                let tx = sqlite::begin(&mut conn, false)?;
                finish(Tx(Inner::Sqlite(tx)), f)
            }
            Connections::Postgres { pool, .. } => postgres::off_the_workers(|| {
                let mut conn = pool.reader();
                let tx = conn.begin(postgres::Begin::Read)?;
                finish(Tx(Inner::Postgres(tx)), f)
            }),
        }
    }

    /// Runs `f` in a write transaction, committed only if `f` returns `Ok`; writers are
    /// serialized, across replicas too. A `counted` write (only the state database's
    /// writes are) advances its generation.
    fn write<T, E: From<StoreError>>(
        &self,
        counted: bool,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Connections::Sqlite(pool) => {
                let mut conn = pool.writer();
                let tx = sqlite::begin(&mut conn, true)?;
                finish(Tx(Inner::Sqlite(tx)), f)
            }
            Connections::Postgres { pool, write_lock } => postgres::off_the_workers(|| {
                let mut conn = pool.writer();
                let tx = conn.begin(postgres::Begin::Write { lock: *write_lock })?;
                finish(Tx(Inner::Postgres(tx)), |tx| {
                    let out = f(tx)?;
                    if counted {
                        tx.exec("UPDATE atrest_generation SET value = value + 1", args![])?;
                    }
                    Ok(out)
                })
            }),
        }
    }
}

fn finish<T, E: From<StoreError>>(tx: Tx, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// The state database.
pub struct Store {
    connections: Connections,
    /// Writes committed by this process: the generation of an SQLite file, which no other
    /// process writes.
    local_generation: AtomicU64,
    /// Reads of a shared database's generation, shared by the callers waiting for one.
    shared_generation: SharedReads,
}

/// Reads of a value on the database (the generation) shared among concurrent callers: a
/// caller takes the result of a read that started after its request began (see
/// [`within_request`]; outside one, after it asked), which reflects every commit made
/// before then. So a request reads the generation once however often it asks, and under
/// load one round trip serves every request that began while the previous was in flight.
#[derive(Default)]
struct SharedReads {
    state: Mutex<ReadsState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct ReadsState {
    /// When the read in flight started.
    running: Option<Instant>,
    /// When the newest finished read started, and its result.
    last: Option<(Instant, Result<u64, String>)>,
}

tokio::task_local! {
    static REQUEST_BEGAN: Instant;
}

/// Runs `request` so that the store's freshness checks inside it may share one read that
/// started after the request began, instead of one per check: what a client wrote before
/// sending this request is still seen, wherever it was written.
pub async fn within_request<F: std::future::Future>(request: F) -> F::Output {
    REQUEST_BEGAN.scope(Instant::now(), request).await
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The advisory lock key of the state database's writers ("atrest", 1).
const STATE_WRITE_LOCK: i64 = 0x6174_7265_7374_0001;

impl SharedReads {
    fn get(&self, read: impl FnOnce() -> Result<u64, StoreError>) -> Result<u64, StoreError> {
        let floor = REQUEST_BEGAN
            .try_with(|began| *began)
            .unwrap_or_else(|_| Instant::now());
        let lock = || self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = lock();
        loop {
            if let Some((started, result)) = &state.last {
                if *started >= floor {
                    return result.clone().map_err(StoreError::Postgres);
                }
            }
            if state.running.is_some() {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let started = Instant::now();
            state.running = Some(started);
            drop(state);
            let result = read();
            state = lock();
            state.running = None;
            let shared = match &result {
                Ok(generation) => Ok(*generation),
                Err(StoreError::Postgres(message)) => Err(message.clone()),
                Err(other) => Err(other.to_string()),
            };
            state.last = Some((started, shared));
            self.done.notify_all();
            return result;
        }
    }
}

impl Store {
    /// Opens (creating and migrating if needed) the state database.
    pub fn open(db: &Database) -> Result<Self, StoreError> {
        let migrations = (schema::STATE, schema::PG_STATE);
        Ok(Store {
            connections: Connections::open(db, "state", migrations, READERS, STATE_WRITE_LOCK)?,
            local_generation: AtomicU64::new(0),
            shared_generation: SharedReads::default(),
        })
    }

    /// Opens an SQLite state database at `path`.
    pub fn open_file(path: &std::path::Path) -> Result<Self, StoreError> {
        Self::open(&Database::Sqlite(path.to_owned()))
    }

    /// Runs `f` in a read transaction: a consistent snapshot of the state.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.connections.read(f)
    }

    /// Runs `f` in a write transaction, committed only if `f` returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let out = self.connections.write(true, f);
        self.local_generation.fetch_add(1, Ordering::Release);
        out
    }

    /// Runs `f` in a write transaction of rows no cache holds (leases), which leaves the
    /// generation as it is.
    pub fn write_uncached<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.connections.write(false, f)
    }

    /// A number that changes whenever a write is committed to the state, by any replica:
    /// a value kept in memory from a read made at one generation is still current while
    /// the generation is the same. Free on SQLite (one process writes); one small query
    /// on PostgreSQL.
    pub fn generation(&self) -> Result<u64, StoreError> {
        match &self.connections {
            Connections::Sqlite(_) => Ok(self.local_generation.load(Ordering::Acquire)),
            Connections::Postgres { pool, .. } => postgres::off_the_workers(|| {
                self.shared_generation.get(|| pool.reader().generation())
            }),
        }
    }

    /// Whether other processes may write this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.connections, Connections::Postgres { .. })
    }

    /// Copies every committed change into the main file and empties the write-ahead log,
    /// so rows just deleted (zeroed in place by `secure_delete`) leave no older copy in the
    /// log. A reader in the middle of a transaction can leave part of the log for later.
    /// PostgreSQL keeps deleted rows until it vacuums them, which the operator's database
    /// does on its own schedule; sealed columns hold ciphertext either way.
    pub fn scrub(&self) -> Result<(), StoreError> {
        if let Connections::Sqlite(pool) = &self.connections {
            pool.writer()
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }
}

/// A transaction handed to [`Store::read`] and [`Store::write`] closures.
pub struct Tx<'a>(Inner<'a>);

enum Inner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

impl Tx<'_> {
    fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            Inner::Sqlite(tx) => Ok(tx.commit()?),
            Inner::Postgres(tx) => tx.commit(),
        }
    }

    /// Runs one statement (`?N` placeholders); returns the rows it changed. Statements are
    /// cached per connection, so each SQL text is parsed once.
    fn exec(&self, sql: &str, args: &[&dyn ToArg]) -> Result<u64, StoreError> {
        match &self.0 {
            Inner::Sqlite(tx) => sqlite::exec(tx, sql, args),
            Inner::Postgres(tx) => tx.exec(sql, args),
        }
    }

    /// Calls `f` with each row of a query, in order, until it returns `false`.
    fn for_each(
        &self,
        sql: &str,
        args: &[&dyn ToArg],
        mut f: impl FnMut(Row) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match &self.0 {
            Inner::Sqlite(tx) => sqlite::for_each(tx, sql, args, &mut f),
            Inner::Postgres(tx) => tx.for_each(sql, args, &mut f),
        }
    }

    /// Every row of a query, each made into a `T` by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        args: &[&dyn ToArg],
        mut f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.for_each(sql, args, |r| {
            out.push(f(&r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row of a query, if any, made into a `T` by `f`.
    fn row<T>(
        &self,
        sql: &str,
        args: &[&dyn ToArg],
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut first = None;
        self.for_each(sql, args, |r| {
            first = Some(r);
            Ok(false)
        })?;
        first.as_ref().map(f).transpose()
    }

    /// A value from the instance metadata table.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.row("SELECT value FROM meta WHERE key = ?1", args![key], |r| {
            r.get(0)
        })
    }

    /// Sets an instance metadata value.
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            args![key, value],
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

/// A fresh directory under the system temp directory, removed when dropped.
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reads_a_shared_value_once_and_never_one_read_before_it_began() {
        let reads = SharedReads::default();
        let count = AtomicU64::new(0);
        let read = || Ok(count.fetch_add(1, Ordering::SeqCst) + 1);
        assert_eq!(reads.get(read).unwrap(), 1);
        assert_eq!(
            reads.get(read).unwrap(),
            2,
            "outside a request, each call reads"
        );
        let (first, second) = within_request(async { (reads.get(read), reads.get(read)) }).await;
        assert_eq!(
            (first.unwrap(), second.unwrap()),
            (3, 3),
            "one read per request"
        );
        within_request(async {
            assert_eq!(
                reads.get(read).unwrap(),
                4,
                "a read from before the request began is not reused"
            );
        })
        .await;
        let failed = reads.get(|| Err(StoreError::Postgres("down".into())));
        assert!(matches!(failed, Err(StoreError::Postgres(m)) if m == "down"));
    }
}
