//! The embedded backend: one SQLite file per database, a writing connection and read-only
//! connections beside it (WAL), schema versions in `PRAGMA user_version`.

use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::sql::{Arg, Cell, Row, ToArg};
use crate::StoreError;

/// Prepared statements kept per connection: more than the store has distinct queries.
const STATEMENTS_CACHED: usize = 64;

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Null => ValueRef::Null,
            Arg::Int(v) => ValueRef::Integer(v),
            Arg::Text(v) => ValueRef::Text(v.as_bytes()),
            Arg::Bytes(v) => ValueRef::Blob(v),
        }))
    }
}

/// Opens the writing connection of a database, creating and migrating it if needed.
pub(crate) fn open_writer(path: &Path, migrations: &[&str]) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000; PRAGMA secure_delete=ON;",
    )?;
    migrate(&mut conn, migrations)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    Ok(conn)
}

/// Opens a read-only connection to a database already opened by [`open_writer`].
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA busy_timeout=5000;")?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    Ok(conn)
}

/// Starts a transaction: a writing one takes the database's write lock at once, so writers
/// are serialized from their first statement.
pub(crate) fn begin(conn: &mut Connection, write: bool) -> Result<Transaction<'_>, StoreError> {
    let behavior = match write {
        true => TransactionBehavior::Immediate,
        false => TransactionBehavior::Deferred,
    };
    Ok(conn.transaction_with_behavior(behavior)?)
}

fn bind<'a>(args: &'a [&'a dyn ToArg]) -> Vec<Arg<'a>> {
    args.iter().map(|a| a.arg()).collect()
}

/// Runs one statement through the connection's statement cache.
pub(crate) fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&dyn ToArg],
) -> Result<u64, StoreError> {
    let args = bind(args);
    Ok(tx
        .prepare_cached(sql)?
        .execute(rusqlite::params_from_iter(args.iter()))? as u64)
}

/// Calls `f` with each row of a query until it returns `false`.
pub(crate) fn for_each(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&dyn ToArg],
    f: &mut dyn FnMut(Row) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let args = bind(args);
    let mut stmt = tx.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let cells = (0..columns)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Int(v as i64),
                    ValueRef::Text(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => Cell::Bytes(v.to_vec()),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        if !f(Row::new(cells))? {
            break;
        }
    }
    Ok(())
}

/// Brings the schema up to date inside one transaction per migration.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in crate::schema::pending(migrations, current)? {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
