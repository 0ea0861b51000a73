//! Leases: a name (the cluster's leadership, a disk) held by one replica at a time until
//! a time on the database's clock, with an epoch that grows each time the holder changes,
//! so whatever a former holder does afterwards can be told apart (fenced).

use std::time::{Duration, Instant};

use crate::sql::args;
use crate::{Inner, Store, StoreError, Tx};

/// One lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// What is leased.
    pub name: String,
    /// The replica holding it.
    pub holder: String,
    /// Grows by one each time the holder changes.
    pub epoch: i64,
    /// Until when, in milliseconds on the database's clock.
    pub expires_ms: i64,
}

/// What [`Tx::acquire_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The caller holds the lease, at this epoch, for the time asked.
    Held {
        /// The lease's epoch.
        epoch: i64,
    },
    /// Another replica holds it and its time has not run out.
    HeldBy(LeaseRow),
}

impl Tx<'_> {
    /// The database's clock, in milliseconds since the Unix epoch: the one clock every
    /// replica's leases are measured on.
    pub fn database_now_ms(&self) -> Result<i64, StoreError> {
        let sql = match &self.0 {
            Inner::Sqlite(_) => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
            }
            Inner::Postgres(_) => {
                "SELECT CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)"
            }
        };
        Ok(self.row(sql, args![], |r| r.get(0))?.unwrap_or_default())
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: granted when it is free,
    /// already `holder`'s, or its holder's time ran out (the epoch then grows).
    pub fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Acquired, StoreError> {
        let now = self.database_now_ms()?;
        let expires = now + ttl_ms;
        let epoch = match self.lease(name)? {
            None => {
                self.exec(
                    "INSERT INTO leases (name, holder, epoch, expires_ms) VALUES (?1, ?2, 1, ?3)",
                    args![name, holder, expires],
                )?;
                1
            }
            Some(current) if current.holder != holder && current.expires_ms > now => {
                return Ok(Acquired::HeldBy(current));
            }
            Some(current) => {
                let epoch = current.epoch + i64::from(current.holder != holder);
                self.exec(
                    "UPDATE leases SET holder = ?2, epoch = ?3, expires_ms = ?4 WHERE name = ?1",
                    args![name, holder, epoch, expires],
                )?;
                epoch
            }
        };
        Ok(Acquired::Held { epoch })
    }

    /// Gives the lease up at once if `holder` holds it at `epoch`; whether it did. The row
    /// stays, expired, so the next holder's epoch is still a greater one.
    pub fn release_lease(&self, name: &str, holder: &str, epoch: i64) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE leases SET expires_ms = 0 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
            args![name, holder, epoch],
        )? > 0)
    }

    /// The lease `name`, if one was ever taken.
    pub fn lease(&self, name: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.row(
            "SELECT name, holder, epoch, expires_ms FROM leases WHERE name = ?1",
            args![name],
            lease_row,
        )
    }

    /// Every lease whose name starts with `prefix`, by name.
    pub fn leases(&self, prefix: &str) -> Result<Vec<LeaseRow>, StoreError> {
        self.rows(
            "SELECT name, holder, epoch, expires_ms FROM leases WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
            args![prefix],
            lease_row,
        )
    }
}

fn lease_row(r: &crate::sql::Row) -> Result<LeaseRow, StoreError> {
    Ok(LeaseRow {
        name: r.get(0)?,
        holder: r.get(1)?,
        epoch: r.get(2)?,
        expires_ms: r.get(3)?,
    })
}

impl Store {
    /// Takes or renews the lease `name` for `holder` for `ttl` ([`Tx::acquire_lease`], in a
    /// write that leaves the generation alone), and says until when the holder may act on
    /// it: four fifths of `ttl` after the request was sent, so it stops before the
    /// database's own time for the lease runs out, however late the answer came.
    pub fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<(Acquired, Instant), StoreError> {
        let sent = Instant::now();
        let acquired =
            self.write_uncached(|tx| tx.acquire_lease(name, holder, ttl.as_millis() as i64))?;
        Ok((acquired, sent + ttl * 4 / 5))
    }

    /// Gives the lease up at once if `holder` holds it at `epoch` ([`Tx::release_lease`]).
    pub fn release_lease(&self, name: &str, holder: &str, epoch: i64) -> Result<bool, StoreError> {
        self.write_uncached(|tx| tx.release_lease(name, holder, epoch))
    }
}
