//! The values that cross between the store's queries and either backend: arguments bound
//! to `?N` placeholders and the cells of result rows.
//!
//! Both backends store the same four kinds of value: 64-bit integers (flags included, as
//! 0 and 1), text, bytes and NULL. A query binds [`Arg`]s and reads [`Row`]s without knowing
//! which backend answers.

use crate::StoreError;

/// One bound argument.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// A Rust value that binds as an [`Arg`].
pub(crate) trait ToArg {
    fn arg(&self) -> Arg<'_>;
}

impl ToArg for i64 {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(*self)
    }
}

impl ToArg for u32 {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}

impl ToArg for bool {
    fn arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}

impl ToArg for str {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}

impl ToArg for String {
    fn arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}

impl ToArg for [u8] {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}

impl ToArg for Vec<u8> {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}

impl<const N: usize> ToArg for [u8; N] {
    fn arg(&self) -> Arg<'_> {
        Arg::Bytes(self)
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn arg(&self) -> Arg<'_> {
        (**self).arg()
    }
}

impl<T: ToArg> ToArg for Option<T> {
    fn arg(&self) -> Arg<'_> {
        self.as_ref().map_or(Arg::Null, ToArg::arg)
    }
}

/// The arguments of one statement, in placeholder order (`?1` first).
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::sql::ToArg),*][..]
    };
}
pub(crate) use args;

/// One cell of a result row, read out of the backend's row.
#[derive(Debug)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A result row, whichever backend produced it.
pub(crate) struct Row {
    cells: Vec<Cell>,
}

impl Row {
    pub(crate) fn new(cells: Vec<Cell>) -> Self {
        Row { cells }
    }

    /// Column `index` (from 0) as a `T`; a NULL or a cell of another kind is an error
    /// unless `T` allows it.
    pub(crate) fn get<T: FromCell>(&self, index: usize) -> Result<T, StoreError> {
        let cell = self.cells.get(index).unwrap_or(&Cell::Null);
        T::from_cell(cell).ok_or(StoreError::UnexpectedColumn(index))
    }

    /// Column `index` as bytes, borrowed (an empty slice for NULL).
    pub(crate) fn bytes(&self, index: usize) -> Result<&[u8], StoreError> {
        match self.cells.get(index) {
            Some(Cell::Bytes(v)) => Ok(v),
            Some(Cell::Null) => Ok(&[]),
            _ => Err(StoreError::UnexpectedColumn(index)),
        }
    }
}

/// A Rust value read from a [`Cell`].
pub(crate) trait FromCell: Sized {
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl FromCell for i64 {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromCell for u32 {
    fn from_cell(cell: &Cell) -> Option<Self> {
        i64::from_cell(cell).and_then(|v| u32::try_from(v).ok())
    }
}

impl FromCell for bool {
    fn from_cell(cell: &Cell) -> Option<Self> {
        i64::from_cell(cell).map(|v| v != 0)
    }
}

impl FromCell for String {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromCell for Vec<u8> {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Bytes(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            cell => T::from_cell(cell).map(Some),
        }
    }
}
