//! The lifetime-action scheduler: performs due key rotations and near-expiry notices and
//! records each in the audit log.
//!
//! Its clock is the wall clock plus an offset that an administrator can move forward
//! (never back), so that "rotate 90 days after create" can be shown in seconds. Only the
//! scheduler reads that clock: request handling, token lifetimes and purges keep real
//! time. Passes are serialized, so a key is never rotated twice for one due date.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::meta::Meta;
use crate::time::unix_now;
use crate::Error;

/// How often the scheduler looks for due actions on its own.
pub const SCHEDULER_INTERVAL: Duration = Duration::from_secs(60);

/// `clientInfo` of the events the scheduler records.
pub const SCHEDULER_CLIENT: &str = "atrest-scheduler";

/// Where the clock's offset is kept, so a restart does not move the clock back.
const OFFSET_META: &str = "scheduler-clock-offset";

/// The scheduler's clock and the lock that serializes its passes.
#[derive(Debug)]
pub struct Scheduler {
    meta: Meta,
    offset_seconds: AtomicI64,
    pass: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// The scheduler with the clock offset kept in `meta`.
    pub fn open(meta: Meta) -> Result<Self, Error> {
        let offset = meta
            .get(OFFSET_META)?
            .and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok())
            .unwrap_or(0);
        Ok(Scheduler {
            meta,
            offset_seconds: AtomicI64::new(offset),
            pass: tokio::sync::Mutex::new(()),
        })
    }

    /// The scheduler's time, seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        unix_now().0 + self.offset()
    }

    /// How far the clock has been moved ahead of the wall clock, in seconds.
    pub fn offset(&self) -> i64 {
        self.offset_seconds.load(Ordering::SeqCst)
    }

    /// The lock that serializes passes: one due date causes one rotation.
    pub fn pass_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.pass
    }

    /// Moves the clock forward by `seconds`, storing the new offset first so that a
    /// restart never moves the clock back. Blocking; the caller holds the pass lock.
    pub fn move_forward(&self, seconds: i64) -> Result<(), Error> {
        let offset = self.offset() + seconds;
        self.meta.put(OFFSET_META, offset.to_string().as_bytes())?;
        self.offset_seconds.store(offset, Ordering::SeqCst);
        Ok(())
    }
}
