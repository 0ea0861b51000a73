//! Data-driven tests of the KQL engine: one [`check`] of a query against the text of the
//! table it must produce (a header of column names, then one line per row, cells joined
//! by ` | `), or of the `line:col: message` of the error it must report. Every case runs
//! over the same two small tables; all failures are reported at once.

use std::collections::HashMap;

use atrest_query::{run, Catalog, Table, Value};

/// 2027-01-15T08:00:00Z.
const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

struct Tables(HashMap<&'static str, Table>);

impl Catalog for Tables {
    fn table(&self, name: &str) -> Option<Table> {
        self.0.get(name).cloned()
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// `T`: five objects; `U`: who owns each kind.
fn catalog() -> Tables {
    let t = Table {
        columns: ["Name", "N", "X", "When", "Kind", "Path"]
            .map(String::from)
            .to_vec(),
        rows: [
            ("alpha", 1, 1.5, 10, "key", "a/b/c"),
            ("beta", 2, 2.5, 20, "secret", ""),
            ("gamma", 3, 0.5, 90, "key", "x/y"),
            ("delta", 4, 4.0, 180, "secret", "p"),
            ("Alpha", 5, 3.0, 2880, "key", ""),
        ]
        .into_iter()
        .map(|(name, n, x, mins_ago, kind, path)| {
            vec![
                s(name),
                Value::Long(n),
                Value::Real(x),
                Value::DateTime(NOW - mins_ago * MIN),
                s(kind),
                s(path),
            ]
        })
        .collect(),
    };
    let u = Table {
        columns: ["Kind", "Owner"].map(String::from).to_vec(),
        rows: [("key", "crypto"), ("secret", "vault"), ("cert", "pki")]
            .into_iter()
            .map(|(k, o)| vec![s(k), s(o)])
            .collect(),
    };
    Tables(HashMap::from([("T", t), ("U", u)]))
}

/// The result as text: the header, then the rows; or `line:col: message`.
fn render(query: &str, catalog: &Tables) -> String {
    match run(query, catalog, NOW) {
        Ok(table) => {
            let mut lines = vec![table.columns.join(" | ")];
            lines.extend(table.rows.iter().map(|row| {
                row.iter()
                    .map(Value::to_text)
                    .collect::<Vec<_>>()
                    .join(" | ")
            }));
            lines.join("\n")
        }
        Err(e) => format!("{}:{}: {}", e.line, e.column, e.message),
    }
}

/// Each case: a query and the text it must render to.
const CASES: &[(&str, &str)] = &[
    // Tables and row selection.
    ("T | take 2", "Name | N | X | When | Kind | Path\nalpha | 1 | 1.5 | 2027-01-15T07:50:00.000Z | key | a/b/c\nbeta | 2 | 2.5 | 2027-01-15T07:40:00.000Z | secret | "),
    ("T | limit 1 | project Name", "Name\nalpha"),
    ("T | count", "Count\n5"),
    ("T | where N > 3 | project Name", "Name\ndelta\nAlpha"),
    ("T | where N >= 3 and N < 5 | project Name", "Name\ngamma\ndelta"),
    ("T | where N <= 1 or N == 5 | project Name", "Name\nalpha\nAlpha"),
    ("T | where N != 2 | count", "Count\n4"),
    ("T | where not(Kind == 'key') | project Name", "Name\nbeta\ndelta"),
    ("T | filter X < 1 | project Name", "Name\ngamma"),
    ("T | where Name == 'alpha' | project N", "N\n1"),
    ("T | where Name =~ 'ALPHA' | project N", "N\n1\n5"),
    ("T | where Name in ('beta', 'delta') | project N", "N\n2\n4"),
    ("T | where Name contains 'LP' | project Name", "Name\nalpha\nAlpha"),
    ("T | where Name has 'gamma' | project Name", "Name\ngamma"),
    ("T | where Name startswith 'al' | project Name", "Name\nalpha\nAlpha"),
    ("T | where Name endswith 'ta' | project Name", "Name\nbeta\ndelta"),
    ("T | where When > ago(1h) | project Name", "Name\nalpha\nbeta"),
    ("T | where When < now() - 1d | project Name", "Name\nAlpha"),
    ("T | where isnotempty(Path) | count", "Count\n3"),
    ("T | where isnotnull(N) | count", "Count\n5"),
    ("T | where Kind == 'key' | where N > 1 | project Name", "Name\ngamma\nAlpha"),
    // Columns.
    ("T | project Name, Double = N * 2 | take 2", "Name | Double\nalpha | 2\nbeta | 4"),
    ("T | project-away When, Path, X | take 1", "Name | N | Kind\nalpha | 1 | key"),
    ("T | extend Big = N > 2 | project Name, Big | take 3", "Name | Big\nalpha | false\nbeta | false\ngamma | true"),
    ("T | extend Sum = N + X | project Sum | take 2", "Sum\n2.5\n4.5"),
    ("T | extend D = N - 1, Q = N / 2 | project D, Q | take 2", "D | Q\n0 | 0\n1 | 1"),
    ("T | extend Ratio = X / 2 | project Ratio | take 1", "Ratio\n0.75"),
    ("T | extend Age = now() - When | project Age | take 1", "Age\n00:10:00"),
    // Scalar functions.
    ("T | project U = toupper(Name) | take 1", "U\nALPHA"),
    ("T | project L = tolower(Name) | where L == 'alpha' | count", "Count\n2"),
    ("T | project Len = strlen(Name) | take 2", "Len\n5\n4"),
    ("T | project C = strcat(Name, '-', Kind) | take 1", "C\nalpha-key"),
    ("T | project P = split(Path, '/') | take 1", "P\n[\"a\",\"b\",\"c\"]"),
    ("T | project P = split(Path, '/')[1] | take 1", "P\nb"),
    ("T | project P = tostring(split(Path, '/')[2]) | take 2", "P\nc\n"),
    ("T | project R = replace_string(Path, '/', '.') | take 1", "R\na.b.c"),
    ("T | project S = tostring(N) | take 1", "S\n1"),
    ("T | project V = tolong('42') | take 1", "V\n42"),
    ("T | project V = todouble('2.5') | take 1", "V\n2.5"),
    ("T | project I = iif(N > 2, 'big', 'small') | take 3", "I\nsmall\nsmall\nbig"),
    ("T | project B = bin(N, 2) | take 3", "B\n0\n2\n2"),
    ("T | project B = bin(When, 1h) | take 1", "B\n2027-01-15T07:00:00.000Z"),
    // Aggregation.
    ("T | summarize count()", "count_\n5"),
    ("T | summarize count() by Kind", "Kind | count_\nkey | 3\nsecret | 2"),
    ("T | summarize Total = sum(N), Mean = avg(X) by Kind", "Kind | Total | Mean\nkey | 9 | 1.6666666666666667\nsecret | 6 | 3.25"),
    ("T | summarize Lo = min(N), Hi = max(N)", "Lo | Hi\n1 | 5"),
    ("T | summarize dcount(Kind)", "dcount_Kind\n2"),
    ("T | summarize Big = countif(N > 2) by Kind", "Kind | Big\nkey | 2\nsecret | 1"),
    ("T | summarize arg_max(N, Name) by Kind", "Kind | N | Name\nkey | 5 | Alpha\nsecret | 4 | delta"),
    ("T | summarize arg_min(X, Name) by Kind", "Kind | X | Name\nkey | 0.5 | gamma\nsecret | 2.5 | beta"),
    ("T | summarize arg_max(Latest = When, Name) by Kind", "Kind | Latest | Name\nkey | 2027-01-15T07:50:00.000Z | alpha\nsecret | 2027-01-15T07:40:00.000Z | beta"),
    ("T | summarize arg_min(Score = N * 2, Who = Name)", "Score | Who\n2 | alpha"),
    ("T | summarize n = count(), c = count() by Kind", "Kind | n | c\nkey | 3 | 3\nsecret | 2 | 2"),
    ("T | project strlen(s = Name)", "1:20: named arguments ('name = expression') are only allowed in arg_max and arg_min"),
    ("T | summarize arg_max(N, W = N * 2)", "1:26: arg_max() carries columns or *, not expressions"),
    ("T | summarize Last = max(When) by Kind", "Kind | Last\nkey | 2027-01-15T07:50:00.000Z\nsecret | 2027-01-15T07:40:00.000Z"),
    ("T | summarize count() by Hour = bin(When, 1d)", "Hour | count_\n2027-01-15T00:00:00.000Z | 4\n2027-01-13T00:00:00.000Z | 1"),
    ("T | summarize count() by Kind, Big = N > 2", "Kind | Big | count_\nkey | false | 1\nsecret | false | 1\nkey | true | 2\nsecret | true | 1"),
    ("T | distinct Kind", "Kind\nkey\nsecret"),
    ("T | distinct Kind, Empty = isnotempty(Path) | count", "Count\n4"),
    // Order.
    ("T | order by N desc | project N | take 2", "N\n5\n4"),
    ("T | sort by Name asc | project Name", "Name\nAlpha\nalpha\nbeta\ndelta\ngamma"),
    ("T | order by Kind asc, N desc | project Kind, N", "Kind | N\nkey | 5\nkey | 3\nkey | 1\nsecret | 4\nsecret | 2"),
    ("T | top 2 by X", "1:5: unknown tabular operator 'top'"),
    // Joins and unions.
    ("T | join kind=inner (U) on Kind | project Name, Owner | take 2", "Name | Owner\nalpha | crypto\nbeta | vault"),
    ("U | join kind=leftouter (T | where N > 3) on Kind | project Kind, Name", "Kind | Name\nkey | Alpha\nsecret | delta\ncert | "),
    ("T | join kind=innerunique (U) on Kind | count", "Count\n2"),
    ("T | join kind=inner (U) on Kind | count", "Count\n5"),
    ("U | join kind=innerunique (T) on Kind | count", "Count\n5"),
    ("T | join (U) on $left.Kind == $right.Kind | summarize dcount(Owner)", "dcount_Owner\n2"),
    ("union T, T | count", "Count\n10"),
    ("T | union (U | project Kind) | count", "Count\n8"),
    // Errors, placed at their line and column.
    ("Nope | count", "1:1: unknown table 'Nope'"),
    ("T | where", "1:10: expected an expression, found the end of the query"),
    ("T | project Missing", "1:13: unknown column 'Missing'"),
    ("T\n| where N >\n", "3:1: expected an expression, found the end of the query"),
    ("T | summarize frob(N)", "1:15: 'frob' is not an aggregate function"),
    ("T | extend Y = nosuch(N)", "1:16: unknown function 'nosuch'"),
    ("T | take 'a'", "1:5: take needs a non-negative row count"),
    ("T | where Name == 'unclosed", "1:19: unterminated string literal"),
];

#[test]
fn corpus() {
    let catalog = catalog();
    let mut failures = Vec::new();
    for (query, expected) in CASES {
        let actual = render(query, &catalog);
        if actual != *expected {
            failures.push(format!(
                "query:    {query}\nexpected: {expected:?}\nactual:   {actual:?}\n"
            ));
        }
    }
    assert!(
        CASES.len() >= 60,
        "the corpus covers every operator and function"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
