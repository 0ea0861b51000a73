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
