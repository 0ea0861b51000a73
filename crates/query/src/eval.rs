//! Running a parsed query over the catalog's tables.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::syntax::{BinOp, Expr, ExprKind, JoinKind, Named, Op, Query, Source, TextOp};
use crate::value::Value;
use crate::{fault, Catalog, Fault, Table};

const AGGREGATES: [&str; 9] = [
    "count", "countif", "dcount", "min", "max", "sum", "avg", "arg_max", "arg_min",
];

struct Env<'a> {
    catalog: &'a dyn Catalog,
    now: i64,
}

pub(crate) fn run(q: &Query, catalog: &dyn Catalog, now_ms: i64) -> Result<Table, Fault> {
    Env {
        catalog,
        now: now_ms,
    }
    .query(q)
}

/// The name a column gets from an unnamed expression: a column keeps its name, `bin(c, …)`
/// takes `c`'s, anything else `Column<n>`.
fn derived_name(e: &Expr, n: usize) -> String {
    match &e.kind {
        ExprKind::Column(c) => c.clone(),
        ExprKind::Call(f, args) if f == "bin" => match args.first().map(|a| &a.kind) {
            Some(ExprKind::Column(c)) => c.clone(),
            _ => format!("Column{n}"),
        },
        _ => format!("Column{n}"),
    }
}

fn column_index(table: &Table, name: &str, pos: usize) -> Result<usize, Fault> {
    table
        .columns
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| fault(pos, format!("unknown column '{name}'")))
}

/// Sets `name` to `values` (one per row), replacing a column of that name.
fn set_column(table: &mut Table, name: String, values: Vec<Value>) {
    match table.columns.iter().position(|c| *c == name) {
        Some(i) => {
            for (row, v) in table.rows.iter_mut().zip(values) {
                row[i] = v;
            }
        }
        None => {
            table.columns.push(name);
            for (row, v) in table.rows.iter_mut().zip(values) {
                row.push(v);
            }
        }
    }
}

fn key_of(values: &[Value]) -> String {
    values
        .iter()
        .map(Value::group_key)
        .collect::<Vec<_>>()
        .join("\u{1}")
}

impl Env<'_> {
    fn query(&self, q: &Query) -> Result<Table, Fault> {
        let mut table = match &q.source {
            Source::Table(name, pos) => self
                .catalog
                .table(name)
                .ok_or_else(|| fault(*pos, format!("unknown table '{name}'")))?,
            Source::Union(parts) => self.union(parts, Table::default())?,
        };
        for op in &q.ops {
            table = self.op(op, table)?;
        }
        Ok(table)
    }

    fn union(&self, parts: &[Query], first: Table) -> Result<Table, Fault> {
        let mut tables = vec![first];
        for p in parts {
            tables.push(self.query(p)?);
        }
        let mut columns: Vec<String> = Vec::new();
        for t in &tables {
            for c in &t.columns {
                if !columns.contains(c) {
                    columns.push(c.clone());
                }
            }
        }
        let mut rows = Vec::new();
        for t in tables {
            let map: Vec<Option<usize>> = columns
                .iter()
                .map(|c| t.columns.iter().position(|x| x == c))
                .collect();
            for row in t.rows {
                rows.push(
                    map.iter()
                        .map(|i| i.map_or(Value::Null, |i| row[i].clone()))
                        .collect(),
                );
            }
        }
        Ok(Table { columns, rows })
    }

    fn op(&self, op: &Op, mut table: Table) -> Result<Table, Fault> {
        Ok(match op {
            Op::Where(cond) => {
                let mut kept = Vec::new();
                for row in std::mem::take(&mut table.rows) {
                    match self.scalar(cond, &table, &row)? {
                        Value::Bool(true) => kept.push(row),
                        Value::Bool(false) | Value::Null => {}
                        other => {
                            return Err(fault(
                                cond.pos,
                                format!(
                                    "where needs a true/false condition, not a {}",
                                    other.type_name()
                                ),
                            ))
                        }
                    }
                }
                table.rows = kept;
                table
            }
            Op::Extend(items) => {
                for item in items {
                    let values = self.column_values(&item.expr, &table)?;
                    set_column(
                        &mut table,
                        item.name.clone().expect("parser requires names"),
                        values,
                    );
                }
                table
            }
            Op::Project(items) => {
                let mut out = Table {
                    columns: Vec::new(),
                    rows: vec![Vec::new(); table.rows.len()],
                };
                for (n, item) in items.iter().enumerate() {
                    let values = self.column_values(&item.expr, &table)?;
                    let name = item
                        .name
                        .clone()
                        .unwrap_or_else(|| derived_name(&item.expr, n + 1));
                    set_column(&mut out, name, values);
                }
                out
            }
            Op::ProjectAway(cols) => {
                let mut drop = Vec::new();
                for (c, pos) in cols {
                    drop.push(column_index(&table, c, *pos)?);
                }
                let keep: Vec<usize> = (0..table.columns.len())
                    .filter(|i| !drop.contains(i))
                    .collect();
                Table {
                    columns: keep.iter().map(|i| table.columns[*i].clone()).collect(),
                    rows: table
                        .rows
                        .iter()
                        .map(|r| keep.iter().map(|i| r[*i].clone()).collect())
                        .collect(),
                }
            }
            Op::Summarize { aggregates, by } => self.summarize(aggregates, by, &table)?,
            Op::Distinct(items) => {
                let projected = self.op(&Op::Project(items.clone()), table)?;
                let mut seen = HashSet::new();
                Table {
                    rows: projected
                        .rows
                        .into_iter()
                        .filter(|r| seen.insert(key_of(r)))
                        .collect(),
                    columns: projected.columns,
                }
            }
            Op::Order(keys) => {
                let mut keyed = Vec::with_capacity(table.rows.len());
                for row in std::mem::take(&mut table.rows) {
                    let k = keys
                        .iter()
                        .map(|(e, _)| self.scalar(e, &table, &row))
                        .collect::<Result<Vec<_>, _>>()?;
                    keyed.push((k, row));
                }
                keyed.sort_by(|(a, _), (b, _)| {
                    for (i, (_, desc)) in keys.iter().enumerate() {
                        let o = order_values(&a[i], &b[i], *desc);
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    Ordering::Equal
                });
                table.rows = keyed.into_iter().map(|(_, r)| r).collect();
                table
            }
            Op::Take(n) => {
                table.rows.truncate(*n);
                table
            }
            Op::Count => Table {
                columns: vec!["Count".to_owned()],
                rows: vec![vec![Value::Long(table.rows.len() as i64)]],
            },
            Op::Join { kind, right, on } => self.join(*kind, table, right, on)?,
            Op::Union(parts) => self.union(parts, table)?,
        })
    }

    fn column_values(&self, e: &Expr, table: &Table) -> Result<Vec<Value>, Fault> {
        table
            .rows
            .iter()
            .map(|r| self.scalar(e, table, r))
            .collect()
    }

    fn join(
        &self,
        kind: JoinKind,
        left: Table,
        right: &Query,
        on: &[(String, String, usize)],
    ) -> Result<Table, Fault> {
        let right = self.query(right)?;
        let mut lcols = Vec::new();
        let mut rcols = Vec::new();
        for (l, r, pos) in on {
            lcols.push(column_index(&left, l, *pos)?);
            rcols.push(column_index(&right, r, *pos)?);
        }
        let key = |row: &[Value], cols: &[usize]| {
            let values: Vec<Value> = cols.iter().map(|i| row[*i].clone()).collect();
            key_of(&values)
        };
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, row) in right.rows.iter().enumerate() {
            index.entry(key(row, &rcols)).or_default().push(i);
        }
        let mut columns = left.columns.clone();
        for c in &right.columns {
            let mut name = c.clone();
            let mut n = 1;
            while columns.contains(&name) {
                name = format!("{c}{n}");
                n += 1;
            }
            columns.push(name);
        }
        let mut rows = Vec::new();
        let mut seen_left = HashSet::new();
        for lrow in &left.rows {
            let k = key(lrow, &lcols);
            if kind == JoinKind::InnerUnique && !seen_left.insert(k.clone()) {
                continue;
            }
            match index.get(&k) {
                Some(matches) => {
                    for r in matches {
                        let mut row = lrow.clone();
                        row.extend(right.rows[*r].iter().cloned());
                        rows.push(row);
                    }
                }
                None if kind == JoinKind::LeftOuter => {
                    let mut row = lrow.clone();
                    row.extend(std::iter::repeat_n(Value::Null, right.columns.len()));
                    rows.push(row);
                }
                None => {}
            }
        }
        Ok(Table { columns, rows })
    }

    fn summarize(&self, aggregates: &[Named], by: &[Named], table: &Table) -> Result<Table, Fault> {
        let mut groups: Vec<(Vec<Value>, Vec<&Vec<Value>>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in &table.rows {
            let keys = by
                .iter()
                .map(|b| self.scalar(&b.expr, table, row))
                .collect::<Result<Vec<_>, _>>()?;
            let k = key_of(&keys);
            match index.get(&k) {
                Some(i) => groups[*i].1.push(row),
                None => {
                    index.insert(k, groups.len());
                    groups.push((keys, vec![row]));
                }
            }
        }
        if by.is_empty() && groups.is_empty() {
            groups.push((Vec::new(), Vec::new()));
        }
        let mut columns: Vec<String> = by
            .iter()
            .enumerate()
            .map(|(n, b)| {
                b.name
                    .clone()
                    .unwrap_or_else(|| derived_name(&b.expr, n + 1))
            })
            .collect();
        let mut outputs = Vec::new();
        for a in aggregates {
            let (names, _) = self.aggregate_shape(a, table, &columns)?;
            columns.extend(names);
            outputs.push(a);
        }
        let mut rows = Vec::new();
        for (keys, members) in groups {
            let mut row = keys;
            for a in &outputs {
                row.extend(self.aggregate(a, table, &members)?);
            }
            rows.push(row);
        }
        Ok(Table { columns, rows })
    }

    /// The output column names of one aggregate, and for `arg_max`/`arg_min` the columns it
    /// carries along.
    fn aggregate_shape(
        &self,
        a: &Named,
        table: &Table,
        by_columns: &[String],
    ) -> Result<(Vec<String>, Vec<usize>), Fault> {
        let ExprKind::Call(f, args) = &a.expr.kind else {
            return Err(fault(
                a.expr.pos,
                "summarize needs aggregate functions such as count()",
            ));
        };
        if !AGGREGATES.contains(&f.as_str()) {
            return Err(fault(
                a.expr.pos,
                format!("'{f}' is not an aggregate function"),
            ));
        }
        let arg_name = |prefix: &str| match args.first().map(|e| &e.kind) {
            Some(ExprKind::Column(c)) => format!("{prefix}_{c}"),
            _ => format!("{prefix}_"),
        };
        if f == "arg_max" || f == "arg_min" {
            let Some(first) = args.first() else {
                return Err(fault(
                    a.expr.pos,
                    format!("{f}() needs an expression to maximize"),
                ));
            };
            let first_name = match &first.kind {
                ExprKind::Named(name, _) | ExprKind::Column(name) => name.clone(),
                _ => a.name.clone().unwrap_or_else(|| arg_name(&f[4..])),
            };
            let mut names = vec![first_name.clone()];
            let mut carried = Vec::new();
            for arg in &args[1..] {
                match &arg.kind {
                    ExprKind::Star => {
                        for (i, c) in table.columns.iter().enumerate() {
                            if *c != first_name && !by_columns.contains(c) && !names.contains(c) {
                                names.push(c.clone());
                                carried.push(i);
                            }
                        }
                    }
                    ExprKind::Column(c) => {
                        carried.push(column_index(table, c, arg.pos)?);
                        names.push(c.clone());
                    }
                    ExprKind::Named(name, value) => {
                        let ExprKind::Column(c) = &value.kind else {
                            return Err(fault(
                                arg.pos,
                                format!("{f}() carries columns or *, not expressions"),
                            ));
                        };
                        carried.push(column_index(table, c, value.pos)?);
                        names.push(name.clone());
                    }
                    _ => {
                        return Err(fault(
                            arg.pos,
                            format!("{f}() carries columns or *, not expressions"),
                        ))
                    }
                }
            }
            return Ok((names, carried));
        }
        let name = a.name.clone().unwrap_or_else(|| match f.as_str() {
            "count" => "count_".to_owned(),
            "countif" => "countif_".to_owned(),
            other => arg_name(other),
        });
        Ok((vec![name], Vec::new()))
    }

    fn aggregate(
        &self,
        a: &Named,
        table: &Table,
        rows: &[&Vec<Value>],
    ) -> Result<Vec<Value>, Fault> {
        let ExprKind::Call(f, args) = &a.expr.kind else {
            unreachable!("checked by aggregate_shape");
        };
        let arg = |i: usize| {
            args.get(i)
                .ok_or_else(|| fault(a.expr.pos, format!("{f}() needs {} argument(s)", i + 1)))
        };
        let values = |e: &Expr| -> Result<Vec<Value>, Fault> {
            rows.iter().map(|r| self.scalar(e, table, r)).collect()
        };
        Ok(match f.as_str() {
            "count" => vec![Value::Long(rows.len() as i64)],
            "countif" => {
                let hits = values(arg(0)?)?
                    .iter()
                    .filter(|v| **v == Value::Bool(true))
                    .count();
                vec![Value::Long(hits as i64)]
            }
            "dcount" => {
                let distinct: HashSet<String> = values(arg(0)?)?
                    .iter()
                    .filter(|v| !matches!(v, Value::Null))
                    .map(Value::group_key)
                    .collect();
                vec![Value::Long(distinct.len() as i64)]
            }
            "min" | "max" => {
                let want = if f == "max" {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                let best = values(arg(0)?)?
                    .into_iter()
                    .filter(|v| !matches!(v, Value::Null))
                    .reduce(|best, v| {
                        if v.compare(&best) == Some(want) {
                            v
                        } else {
                            best
                        }
                    });
                vec![best.unwrap_or(Value::Null)]
            }
            "sum" | "avg" => {
                let nums: Vec<Value> = values(arg(0)?)?
                    .into_iter()
                    .filter(|v| !matches!(v, Value::Null))
                    .collect();
                let all_long = nums.iter().all(|v| matches!(v, Value::Long(_)));
                let total: f64 = nums.iter().filter_map(Value::as_f64).sum();
                match (f.as_str(), all_long) {
                    ("sum", true) => vec![Value::Long(
                        nums.iter()
                            .map(|v| if let Value::Long(n) = v { *n } else { 0 })
                            .sum(),
                    )],
                    ("sum", false) => vec![Value::Real(total)],
                    _ if nums.is_empty() => vec![Value::Null],
                    _ => vec![Value::Real(total / nums.len() as f64)],
                }
            }
            _ => {
                let (_, carried) = self.aggregate_shape(a, table, &[])?;
                let want = if f == "arg_max" {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                let scores = match &arg(0)?.kind {
                    ExprKind::Named(_, value) => values(value)?,
                    _ => values(arg(0)?)?,
                };
                let best = scores
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !matches!(v, Value::Null))
                    .reduce(|best, cur| {
                        if cur.1.compare(best.1) == Some(want) {
                            cur
                        } else {
                            best
                        }
                    })
                    .map(|(i, _)| i);
                let (names, _) = self.aggregate_shape(a, table, &[])?;
                match best {
                    Some(i) => {
                        let mut out = vec![scores[i].clone()];
                        out.extend(carried.iter().map(|c| rows[i][*c].clone()));
                        out
                    }
                    None => vec![Value::Null; names.len()],
                }
            }
        })
    }

    fn scalar(&self, e: &Expr, table: &Table, row: &[Value]) -> Result<Value, Fault> {
        Ok(match &e.kind {
            ExprKind::Literal(v) => v.clone(),
            ExprKind::Column(name) => row[column_index(table, name, e.pos)?].clone(),
            ExprKind::Star => {
                return Err(fault(e.pos, "'*' is only allowed in arg_max and arg_min"))
            }
            ExprKind::Named(..) => {
                return Err(fault(
                    e.pos,
                    "named arguments ('name = expression') are only allowed in arg_max and arg_min",
                ))
            }
            ExprKind::Negate(inner) => match self.scalar(inner, table, row)? {
                Value::Long(n) => Value::Long(-n),
                Value::Real(r) => Value::Real(-r),
                Value::TimeSpan(t) => Value::TimeSpan(-t),
                Value::Null => Value::Null,
                other => {
                    return Err(fault(
                        e.pos,
                        format!("cannot negate a {}", other.type_name()),
                    ))
                }
            },
            ExprKind::Index(base, index) => {
                let base = self.scalar(base, table, row)?;
                let index = self.scalar(index, table, row)?;
                match (base, index) {
                    (Value::Array(items), Value::Long(i)) => {
                        let i = if i < 0 { items.len() as i64 + i } else { i };
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| items.get(i).cloned())
                            .unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                }
            }
            ExprKind::In {
                value,
                list,
                negated,
            } => {
                let v = self.scalar(value, table, row)?;
                let mut found = false;
                for item in list {
                    if v.equals(&self.scalar(item, table, row)?) {
                        found = true;
                        break;
                    }
                }
                Value::Bool(found != *negated)
            }
            ExprKind::Binary(op, l, r) => {
                let a = self.scalar(l, table, row)?;
                if matches!(op, BinOp::And | BinOp::Or) {
                    let short = (*op == BinOp::And) != (a == Value::Bool(true));
                    if short {
                        return Ok(Value::Bool(*op == BinOp::Or));
                    }
                    return Ok(Value::Bool(
                        self.scalar(r, table, row)? == Value::Bool(true),
                    ));
                }
                let b = self.scalar(r, table, row)?;
                binary(*op, a, b, e.pos)?
            }
            ExprKind::Call(f, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args {
                    values.push(self.scalar(a, table, row)?);
                }
                self.call(f, values, e.pos)?
            }
        })
    }

    fn call(&self, f: &str, args: Vec<Value>, pos: usize) -> Result<Value, Fault> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(fault(
                    pos,
                    format!("{f}() takes {n} argument(s), not {}", args.len()),
                ))
            }
        };
        let text = |i: usize| args[i].to_text();
        Ok(match f {
            "split" => {
                arity(2)?;
                let (s, d) = (text(0), text(1));
                Value::Array(
                    s.split(d.as_str())
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                )
            }
            "tostring" => {
                arity(1)?;
                Value::String(text(0))
            }
            "toint" | "tolong" => {
                arity(1)?;
                match &args[0] {
                    Value::Long(n) => Value::Long(*n),
                    Value::Real(r) => Value::Long(r.trunc() as i64),
                    Value::Bool(b) => Value::Long(i64::from(*b)),
                    other => other
                        .to_text()
                        .trim()
                        .parse()
                        .map_or(Value::Null, Value::Long),
                }
            }
            "toreal" | "todouble" => {
                arity(1)?;
                match args[0].as_f64() {
                    Some(r) => Value::Real(r),
                    None => text(0).trim().parse().map_or(Value::Null, Value::Real),
                }
            }
            "replace_string" => {
                arity(3)?;
                let (s, from, to) = (text(0), text(1), text(2));
                Value::String(if from.is_empty() {
                    s
                } else {
                    s.replace(&from, &to)
                })
            }
            "strcat" => Value::String(args.iter().map(Value::to_text).collect()),
            "tolower" => {
                arity(1)?;
                Value::String(text(0).to_lowercase())
            }
            "toupper" => {
                arity(1)?;
                Value::String(text(0).to_uppercase())
            }
            "strlen" => {
                arity(1)?;
                Value::Long(text(0).chars().count() as i64)
            }
            "isempty" | "isnotempty" => {
                arity(1)?;
                Value::Bool(args[0].is_empty() == (f == "isempty"))
            }
            "isnull" | "isnotnull" => {
                arity(1)?;
                Value::Bool(matches!(args[0], Value::Null) == (f == "isnull"))
            }
            "not" => {
                arity(1)?;
                Value::Bool(args[0] != Value::Bool(true))
            }
            "iff" | "iif" => {
                arity(3)?;
                let mut args = args;
                let pick = if args[0] == Value::Bool(true) { 1 } else { 2 };
                args.swap_remove(pick)
            }
            "now" => {
                arity(0)?;
                Value::DateTime(self.now)
            }
            "ago" => {
                arity(1)?;
                match args[0] {
                    Value::TimeSpan(t) => Value::DateTime(self.now - t),
                    _ => return Err(fault(pos, "ago() takes a timespan such as 1h or 7d")),
                }
            }
            "bin" => {
                arity(2)?;
                let floor = |v: i64, size: i64| v.div_euclid(size) * size;
                match (&args[0], &args[1]) {
                    (_, Value::TimeSpan(s) | Value::Long(s)) if *s <= 0 => {
                        return Err(fault(pos, "bin() needs a positive bin size"))
                    }
                    (Value::DateTime(t), Value::TimeSpan(s)) => Value::DateTime(floor(*t, *s)),
                    (Value::TimeSpan(t), Value::TimeSpan(s)) => Value::TimeSpan(floor(*t, *s)),
                    (Value::Long(n), Value::Long(s)) => Value::Long(floor(*n, *s)),
                    (Value::Null, _) => Value::Null,
                    (a, b) => match (a.as_f64(), b.as_f64()) {
                        (Some(x), Some(s)) if s > 0.0 => Value::Real((x / s).floor() * s),
                        _ => {
                            return Err(fault(
                                pos,
                                format!(
                                    "bin() cannot bin a {} by a {}",
                                    a.type_name(),
                                    b.type_name()
                                ),
                            ))
                        }
                    },
                }
            }
            f if AGGREGATES.contains(&f) => {
                return Err(fault(
                    pos,
                    format!("{f}() is an aggregate; use it in summarize"),
                ))
            }
            other => return Err(fault(pos, format!("unknown function '{other}'"))),
        })
    }
}

/// Ordering for `order by`: nulls first ascending and last descending, as Kusto sorts.
fn order_values(a: &Value, b: &Value, desc: bool) -> Ordering {
    let o = match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.compare(b).unwrap_or(Ordering::Equal),
    };
    if desc {
        o.reverse()
    } else {
        o
    }
}

fn has_term(haystack: &str, term: &str) -> bool {
    if term.is_empty() {
        return true;
    }
    let h = haystack.to_lowercase();
    let t = term.to_lowercase();
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    h.match_indices(&t).any(|(i, m)| {
        boundary(h[..i].chars().next_back()) && boundary(h[i + m.len()..].chars().next())
    })
}

fn binary(op: BinOp, a: Value, b: Value, pos: usize) -> Result<Value, Fault> {
    let cmp = |want: &[Ordering]| Value::Bool(a.compare(&b).is_some_and(|o| want.contains(&o)));
    Ok(match op {
        BinOp::Eq => Value::Bool(a.equals(&b)),
        BinOp::Ne => Value::Bool(!a.equals(&b)),
        BinOp::EqCi => Value::Bool(a.to_text().to_lowercase() == b.to_text().to_lowercase()),
        BinOp::NeCi => Value::Bool(a.to_text().to_lowercase() != b.to_text().to_lowercase()),
        BinOp::Lt => cmp(&[Ordering::Less]),
        BinOp::Le => cmp(&[Ordering::Less, Ordering::Equal]),
        BinOp::Gt => cmp(&[Ordering::Greater]),
        BinOp::Ge => cmp(&[Ordering::Greater, Ordering::Equal]),
        BinOp::Text(t, negated) => {
            let (h, n) = (a.to_text().to_lowercase(), b.to_text().to_lowercase());
            let hit = match t {
                TextOp::Contains => h.contains(&n),
                TextOp::StartsWith => h.starts_with(&n),
                TextOp::EndsWith => h.ends_with(&n),
                TextOp::Has => has_term(&h, &n),
            };
            Value::Bool(hit != negated)
        }
        BinOp::And | BinOp::Or => unreachable!("evaluated with short-circuit"),
        arith => {
            use Value::{DateTime, Long, Null, Real, TimeSpan};
            match (arith, &a, &b) {
                (_, Null, _) | (_, _, Null) => Null,
                (BinOp::Add, Long(x), Long(y)) => x.checked_add(*y).map_or(Null, Long),
                (BinOp::Sub, Long(x), Long(y)) => x.checked_sub(*y).map_or(Null, Long),
                (BinOp::Mul, Long(x), Long(y)) => x.checked_mul(*y).map_or(Null, Long),
                (BinOp::Div, Long(x), Long(y)) => x.checked_div(*y).map_or(Null, Long),
                (BinOp::Rem, Long(x), Long(y)) => x.checked_rem(*y).map_or(Null, Long),
                (BinOp::Add, DateTime(t), TimeSpan(s)) | (BinOp::Add, TimeSpan(s), DateTime(t)) => {
                    DateTime(t + s)
                }
                (BinOp::Sub, DateTime(t), TimeSpan(s)) => DateTime(t - s),
                (BinOp::Sub, DateTime(x), DateTime(y)) => TimeSpan(x - y),
                (BinOp::Add, TimeSpan(x), TimeSpan(y)) => TimeSpan(x + y),
                (BinOp::Sub, TimeSpan(x), TimeSpan(y)) => TimeSpan(x - y),
                (BinOp::Mul, TimeSpan(x), Long(y)) | (BinOp::Mul, Long(y), TimeSpan(x)) => {
                    TimeSpan(x * y)
                }
                (BinOp::Div, TimeSpan(x), TimeSpan(y)) if *y != 0 => Real(*x as f64 / *y as f64),
                _ => match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => Real(match arith {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        _ => x % y,
                    }),
                    _ => {
                        return Err(fault(
                            pos,
                            format!(
                                "cannot apply an arithmetic operator to a {} and a {}",
                                a.type_name(),
                                b.type_name()
                            ),
                        ))
                    }
                },
            }
        }
    })
}
