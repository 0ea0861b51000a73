//! The shared backend: a PostgreSQL database that several atrest replicas use at once.
//!
//! The store's API is synchronous (a transaction is a closure), so each statement is sent on
//! a `tokio-postgres` client and waited for on the calling thread; the connections
//! themselves are driven by a small runtime of the store's own. Every writing transaction
//! first takes a transaction-scoped advisory lock, so writers across every replica are
//! serialized as SQLite's single writer is, and each statement of a writer sees everything
//! committed before it (read committed). Reading transactions are repeatable-read
//! snapshots, as SQLite's are.

use std::cell::{Cell as Flag, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, Statement};

use crate::sql::{Arg, Cell, Row, ToArg};
use crate::StoreError;

mod tls;

/// How a PostgreSQL database is reached: its parsed connection string and TLS settings.
pub struct PgTarget {
    config: Config,
    tls: tls::MakeRustls,
    /// The connection string without its password, for messages.
    shown: String,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Drop for PgTarget {
    fn drop(&mut self) {
        // Dropping may happen inside another runtime, where a blocking shutdown panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgTarget {
    /// Parses a `postgres://` (or `postgresql://`) URL. Besides what `tokio-postgres`
    /// accepts, `sslrootcert=FILE` names the certificate authorities to trust (else the
    /// system's) and libpq's `sslmode=verify-ca|verify-full` mean `require`: the server's
    /// certificate is verified whenever TLS is used.
    pub fn parse(url: &str) -> Result<Arc<Self>, StoreError> {
        let bad = |reason: String| StoreError::BadDatabaseUrl(reason);
        let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "the scheme '{}' is not postgres",
                parsed.scheme()
            )));
        }
        let mut root_cert = None;
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| match (&*k, &*v) {
                ("sslrootcert", _) => {
                    root_cert = Some(v.into_owned());
                    None
                }
                ("sslmode", "verify-ca" | "verify-full") => {
                    Some((k.into_owned(), "require".to_owned()))
                }
                _ => Some((k.into_owned(), v.into_owned())),
            })
            .collect();
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        let config: Config = parsed
            .as_str()
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        let tls = tls::MakeRustls::new(root_cert.as_deref()).map_err(bad)?;
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("atrest-postgres")
            .enable_all()
            .build()?;
        Ok(Arc::new(PgTarget {
            config,
            tls,
            shown: parsed.to_string(),
            runtime: Some(runtime),
        }))
    }

    /// The connection string without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the target")
    }

    /// Opens a connection and starts driving it.
    fn connect(self: &Arc<Self>) -> Result<Client, StoreError> {
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let connecting = self.runtime().spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes; the client then
                // reports itself closed and the next use reconnects.
                let _ = connection.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        match block_on(connecting) {
            Ok(client) => Ok(client?),
            Err(_) => Err(StoreError::Postgres("the connection task stopped".into())),
        }
    }
}

/// Runs `work`, which waits on the database, without holding up an async runtime's worker:
/// called on a worker of a multi-threaded runtime, the worker's other tasks move to
/// another thread meanwhile (so requests keep being served while this one waits a round
/// trip); elsewhere it simply runs.
pub(crate) fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Waits for `work` on the calling thread. The connections are driven elsewhere, so this
/// only waits for answers; it works in and out of any async runtime.
fn block_on<F: Future>(work: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut work = pin!(work);
    loop {
        if let Poll::Ready(out) = work.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // A server error's detail can quote stored values; its message and code cannot.
        StoreError::Postgres(match e.as_db_error() {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => {
                // The causes say why ("invalid peer certificate: UnknownIssuer").
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text = format!("{text}: {c}");
                    cause = c.source();
                }
                text
            }
        })
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot bind to a {ty} parameter").into()),
            },
            Arg::Text(v) => v.to_sql(ty, out),
            Arg::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `?N` placeholders (the SQL both backends share) as PostgreSQL's `$N`.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('?', Some(d)) if d.is_ascii_digit() => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// One connection with its prepared statements.
pub(crate) struct Conn {
    target: Arc<PgTarget>,
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
}

/// Which kind of transaction [`Conn::begin`] starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Begin {
    /// A repeatable-read snapshot.
    Read,
    /// A writer, serialized with every other writer holding the same advisory lock key.
    Write { lock: i64 },
}

impl Conn {
    pub(crate) fn open(target: &Arc<PgTarget>) -> Result<Self, StoreError> {
        Ok(Conn {
            target: target.clone(),
            client: target.connect()?,
            statements: RefCell::default(),
        })
    }

    /// Starts a transaction, reconnecting first if the server dropped the connection.
    /// Replaces a connection the server dropped.
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.client = self.target.connect()?;
            self.statements.get_mut().clear();
        }
        Ok(())
    }

    pub(crate) fn begin(&mut self, kind: Begin) -> Result<Transaction<'_>, StoreError> {
        self.reconnect_if_closed()?;
        let tx = Transaction {
            conn: self,
            open: Flag::new(false),
            read_only: matches!(kind, Begin::Read),
        };
        match kind {
            // Sent ahead of the first statement: one round trip for both.
            Begin::Read => tx.send("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?,
            Begin::Write { lock } => {
                tx.batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
                tx.open.set(true);
                tx.exec("SELECT pg_advisory_xact_lock(?1)", &[&lock])?;
            }
        }
        tx.open.set(true);
        Ok(tx)
    }

    /// The state database's `atrest_generation`, read outside any transaction.
    pub(crate) fn generation(&mut self) -> Result<u64, StoreError> {
        self.reconnect_if_closed()?;
        let stmt = self.statement("SELECT value FROM atrest_generation WHERE id = 1")?;
        let row = block_on(self.client.query_one(&stmt, &[]))?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }

    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        // The statement's text holds no stored values, so a failure names it.
        let stmt = block_on(self.client.prepare(&dollar_placeholders(sql))).map_err(|e| {
            match StoreError::from(e) {
                StoreError::Postgres(message) => {
                    StoreError::Postgres(format!("{message}; in: {sql}"))
                }
                other => other,
            }
        })?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// An open transaction; rolled back when dropped uncommitted.
pub(crate) struct Transaction<'a> {
    conn: &'a Conn,
    open: Flag<bool>,
    /// A reader's snapshot, which changes nothing: its end need not be waited for.
    read_only: bool,
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            let _ = match self.read_only {
                true => self.send("ROLLBACK"),
                false => self.batch("ROLLBACK"),
            };
        }
    }
}

impl Transaction<'_> {
    /// Runs statements without arguments or results.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(block_on(self.conn.client.batch_execute(sql))?)
    }

    /// Sends statements without waiting for their answer, which the connection reads and
    /// drops; whatever is sent next on the connection runs after them. A failure shows in
    /// the next statement's answer.
    fn send(&self, sql: &str) -> Result<(), StoreError> {
        let mut sending = pin!(self.conn.client.batch_execute(sql));
        // The first poll hands the request to the connection.
        match sending
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => Ok(result?),
            Poll::Pending => Ok(()),
        }
    }

    /// Commits; a reader's end is sent, not waited for.
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        self.open.set(false);
        match self.read_only {
            true => self.send("COMMIT"),
            false => self.batch("COMMIT"),
        }
    }

    pub(crate) fn exec(&self, sql: &str, args: &[&dyn ToArg]) -> Result<u64, StoreError> {
        let stmt = self.conn.statement(sql)?;
        let args: Vec<Arg<'_>> = args.iter().map(|a| a.arg()).collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        Ok(block_on(self.conn.client.execute(&stmt, &params))?)
    }

    /// Calls `f` with each row of a query, as the server sends them, until it returns
    /// `false`.
    pub(crate) fn for_each(
        &self,
        sql: &str,
        args: &[&dyn ToArg],
        f: &mut dyn FnMut(Row) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let stmt = self.conn.statement(sql)?;
        let args: Vec<Arg<'_>> = args.iter().map(|a| a.arg()).collect();
        let stream = block_on(self.conn.client.query_raw(&stmt, args.iter()))?;
        let mut stream = pin!(stream);
        while let Some(row) = block_on(stream.next()) {
            if !f(cells(&row?)?)? {
                break;
            }
        }
        Ok(())
    }
}

fn cells(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let cell = |i: usize| -> Result<Cell, tokio_postgres::Error> {
        Ok(match *row.columns()[i].type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)?
                .map_or(Cell::Null, Cell::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into())),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)?
                .map_or(Cell::Null, Cell::Bytes),
            _ => row
                .try_get::<_, Option<String>>(i)?
                .map_or(Cell::Null, Cell::Text),
        })
    };
    (0..row.len())
        .map(|i| cell(i).map_err(|_| StoreError::UnexpectedColumn(i)))
        .collect::<Result<_, _>>()
        .map(Row::new)
}

/// Brings `component`'s schema up to date, one transaction per migration, with the
/// versions in the `atrest_schema` table. Replicas starting at once take turns.
pub(crate) fn migrate(
    conn: &mut Conn,
    component: &str,
    migrations: &[&str],
) -> Result<(), StoreError> {
    const MIGRATION_LOCK: i64 = 0x6174_7265_7374_0000;
    let tx = conn.begin(Begin::Write {
        lock: MIGRATION_LOCK,
    })?;
    tx.batch(
        "CREATE TABLE IF NOT EXISTS atrest_schema (component TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    )?;
    let mut current = 0i64;
    tx.for_each(
        "SELECT version FROM atrest_schema WHERE component = ?1",
        &[&component],
        &mut |r| {
            current = r.get(0)?;
            Ok(false)
        },
    )?;
    for (i, sql) in crate::schema::pending(migrations, current)? {
        tx.batch(sql)?;
        tx.exec(
            "INSERT INTO atrest_schema (component, version) VALUES (?1, ?2) \
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            &[&component, &(i as i64 + 1)],
        )?;
    }
    tx.commit()
}

/// Creates the database `name` on the server `admin` reaches, and returns a target for it.
#[cfg(test)]
pub(crate) fn create_database(admin: &str, name: &str) -> Arc<PgTarget> {
    let target = PgTarget::parse(admin).unwrap();
    let conn = Conn::open(&target).unwrap();
    block_on(
        conn.client
            .batch_execute(&format!("CREATE DATABASE {name}")),
    )
    .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(name);
    PgTarget::parse(url.as_str()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            dollar_placeholders(
                "SELECT a FROM t WHERE b = ?1 AND (?12 IS NULL OR c = ?12) AND d = '?'"
            ),
            "SELECT a FROM t WHERE b = $1 AND ($12 IS NULL OR c = $12) AND d = '?'"
        );
    }

    /// Over TLS (the server `ATREST_TEST_TLS_DATABASE_URL` names takes nothing else): the
    /// certificate is verified against `sslrootcert`, and without it against the system's
    /// authorities, which do not know the test CA.
    #[test]
    fn tls_connections_verify_the_server() {
        let Ok(url) = std::env::var("ATREST_TEST_TLS_DATABASE_URL") else {
            eprintln!("ATREST_TEST_TLS_DATABASE_URL is not set: the TLS test did not run");
            return;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("atrest_tls_{}_{nanos}", std::process::id());
        let target = create_database(&url, &name);
        let store = crate::Store::open(&crate::Database::Postgres(target)).unwrap();
        store.write(|tx| tx.meta_put("k", b"over TLS")).unwrap();
        assert_eq!(
            store.read(|tx| tx.meta_get("k")).unwrap().as_deref(),
            Some(&b"over TLS"[..])
        );
        let mut parsed = url::Url::parse(&url).unwrap();
        parsed.set_query(Some("sslmode=require"));
        let unverified = Conn::open(&PgTarget::parse(parsed.as_str()).unwrap())
            .err()
            .expect("a server the system's authorities do not vouch for is refused");
        assert!(
            unverified.to_string().contains("certificate"),
            "{unverified}"
        );
        parsed.set_query(Some("sslmode=disable"));
        let plain = Conn::open(&PgTarget::parse(parsed.as_str()).unwrap())
            .err()
            .expect("the server takes TLS only");
        assert!(plain.to_string().contains("no encryption"), "{plain}");
    }

    #[test]
    fn a_shown_url_has_no_password() {
        let target =
            PgTarget::parse("postgres://atrest:hunter2@db.example:5433/atrest?sslmode=verify-full")
                .unwrap();
        assert_eq!(
            target.shown(),
            "postgres://atrest:***@db.example:5433/atrest?sslmode=require"
        );
        assert!(!format!("{target:?}").contains("hunter2"));
        let bad = PgTarget::parse("mysql://db.example/atrest").unwrap_err();
        assert!(bad.to_string().contains("not postgres"), "{bad}");
    }
}
