//! A subset of the Kusto Query Language (the operators and functions the README lists)
//! over in-memory tables from a [`Catalog`]; no I/O, time from the caller, errors placed
//! by line and column. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

mod eval;
mod syntax;
mod value;

pub use value::Value;

use thiserror::Error;

/// A table: named columns and rows of values, one per column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows; each has one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// The type name Log Analytics reports for each column: that of its first non-null
    /// value, `string` when all are null.
    pub fn column_types(&self) -> Vec<&'static str> {
        (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| &r[i])
                    .find(|v| !matches!(v, Value::Null))
                    .map_or("string", Value::type_name)
            })
            .collect()
    }
}

/// Where queries find their tables.
pub trait Catalog {
    /// The table of that name (names are case-sensitive, as in Kusto), if there is one.
    fn table(&self, name: &str) -> Option<Table>;
}

/// A query that could not be parsed or run, with where in the text it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} (line {line}, column {column})")]
pub struct QueryError {
    /// 1-based line of the fault.
    pub line: usize,
    /// 1-based column (in characters) of the fault.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// An error at byte offset `pos` of the query text, before it is placed in lines.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub pos: usize,
    pub message: String,
}

pub(crate) fn fault(pos: usize, message: impl Into<String>) -> Fault {
    Fault {
        pos,
        message: message.into(),
    }
}

impl Fault {
    fn place(self, text: &str) -> QueryError {
        let before = &text[..self.pos.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        QueryError {
            line,
            column,
            message: self.message,
        }
    }
}

/// Runs `query` over the tables of `catalog`; `now_ms` (milliseconds since the epoch) is
/// what `now()` and `ago()` measure from.
pub fn run(query: &str, catalog: &dyn Catalog, now_ms: i64) -> Result<Table, QueryError> {
    let parsed = syntax::parse(query).map_err(|f| f.place(query))?;
    eval::run(&parsed, catalog, now_ms).map_err(|f| f.place(query))
}
