//! Printing results: JSON by default, a plain table with `-o table`.

use std::io::{ErrorKind, Write};

use serde_json::Value;

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// Pretty JSON, as `az` prints by default.
    Json,
    /// One row per item, scalar fields only.
    Table,
}

/// Prints `value` in `format` to stdout.
pub(crate) fn print(value: &Value, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        Format::Table => table(value),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // The reader went away (`atrest … | head`): what it wanted, it has.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

fn cell(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Columns are the scalar fields of the rows, in the order their objects keep keys.
fn table(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for (k, v) in row.as_object().into_iter().flatten() {
            if cell(v).is_some() && !columns.contains(&k.as_str()) {
                columns.push(k);
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(*c).and_then(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in cells {
        out += &line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_take_scalar_columns() {
        let v = serde_json::json!([{"name": "kv1", "n": 3, "tags": {}}, {"name": "long-name", "ok": true}]);
        assert_eq!(
            table(&v),
            "name       n  ok\n---------  -  ----\nkv1        3\nlong-name     true\n"
        );
    }
}
