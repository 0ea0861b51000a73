//! Scalar values and how they compare, print and group.

use std::cmp::Ordering;

/// One cell of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// `bool`.
    Bool(bool),
    /// `long`.
    Long(i64),
    /// `real`.
    Real(f64),
    /// `string`.
    String(String),
    /// `datetime`, milliseconds since the Unix epoch.
    DateTime(i64),
    /// `timespan`, milliseconds.
    TimeSpan(i64),
    /// `dynamic` array (from `split`).
    Array(Vec<Value>),
}

impl Value {
    /// Kusto's name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null | Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Long(_) => "long",
            Value::Real(_) => "real",
            Value::DateTime(_) => "datetime",
            Value::TimeSpan(_) => "timespan",
            Value::Array(_) => "dynamic",
        }
    }

    /// `tostring()`: null is the empty string, times are ISO 8601.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Long(n) => n.to_string(),
            Value::Real(r) => r.to_string(),
            Value::String(s) => s.clone(),
            Value::DateTime(ms) => iso8601(*ms),
            Value::TimeSpan(ms) => timespan_text(*ms),
            Value::Array(items) => {
                let inner: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => format!("\"{}\"", s.replace('"', "\\\"")),
                        other => other.to_text(),
                    })
                    .collect();
                format!("[{}]", inner.join(","))
            }
        }
    }

    /// Whether the value is null or the empty string (`isempty`).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            _ => false,
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Long(n) => Some(*n as f64),
            Value::Real(r) => Some(*r),
            _ => None,
        }
    }

    /// Order between two values of comparable types; `None` for null or mismatched types.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Long(a), Value::Long(b)) => Some(a.cmp(b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::DateTime(a), Value::DateTime(b)) | (Value::TimeSpan(a), Value::TimeSpan(b)) => {
                Some(a.cmp(b))
            }
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }

    /// Equality as `==` sees it: numbers across long and real, nothing equal to null.
    pub fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            // A missing string is the empty string, as in Log Analytics tables.
            (Value::Null, Value::String(s)) | (Value::String(s), Value::Null) => s.is_empty(),
            (Value::Null, _) | (_, Value::Null) => false,
            (Value::Array(a), Value::Array(b)) => a == b,
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }

    /// A key under which equal values group together (`summarize by`, `distinct`, joins).
    pub(crate) fn group_key(&self) -> String {
        match self {
            Value::Null => "\u{0}null".to_owned(),
            Value::Long(n) => format!("n{}", *n as f64),
            Value::Real(r) => format!("n{r}"),
            other => format!("{}:{}", other.type_name(), other.to_text()),
        }
    }
}

/// `yyyy-mm-ddThh:mm:ss.fffZ` for milliseconds since the epoch.
fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `[d.]hh:mm:ss[.fff]`, as Kusto prints a timespan.
fn timespan_text(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    let (h, m, s, f) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let day = if days > 0 {
        format!("{days}.")
    } else {
        String::new()
    };
    let frac = if f > 0 {
        format!(".{f:03}")
    } else {
        String::new()
    };
    format!("{sign}{day}{h:02}:{m:02}:{s:02}{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_and_comparing() {
        assert_eq!(Value::DateTime(0).to_text(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Value::DateTime(1_767_225_600_123).to_text(),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(Value::TimeSpan(90_061_500).to_text(), "1.01:01:01.500");
        assert!(Value::Long(2).equals(&Value::Real(2.0)));
        assert!(!Value::Null.equals(&Value::Null));
        assert_eq!(Value::Long(2).group_key(), Value::Real(2.0).group_key());
        assert_eq!(Value::String("a".into()).compare(&Value::Long(1)), None);
    }
}
