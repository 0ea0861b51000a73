//! The wall clock, read only at the edge and by the background jobs; services take `now`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as (seconds, milliseconds) since the Unix epoch.
pub fn unix_now() -> (i64, i64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.as_millis() as i64)
}

/// RFC 3339 (ARM's timestamp format) for Unix seconds.
pub fn rfc3339(t: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
        .to_string()
}

/// Unix seconds of an RFC 3339 timestamp in UTC (`Z`, `+00:00`, or none), as ARM clients
/// send them; `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let utc = s.strip_suffix("+00:00").unwrap_or(s);
    let t = humantime::parse_rfc3339_weak(utc.strip_suffix('Z').unwrap_or(utc)).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
        assert_eq!(
            parse_rfc3339("2027-01-15T08:00:00.000+00:00"),
            parse_rfc3339("2027-01-15T08:00:00Z")
        );
        assert_eq!(parse_rfc3339("soon"), None);
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00+02:00"), None);
    }
}
