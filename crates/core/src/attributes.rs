//! Object attributes (`enabled`, `nbf`, `exp`) and the soft-delete recovery level.

use crate::UnixTime;

/// The attributes every vault object version carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// A disabled object cannot be read or used.
    pub enabled: bool,
    /// Not before: the object is unusable until this time.
    pub not_before: Option<UnixTime>,
    /// Expiry: the object is unusable from this time on.
    pub expires: Option<UnixTime>,
    /// When this version was created.
    pub created: UnixTime,
    /// When this version's attributes, tags or content type last changed.
    pub updated: UnixTime,
}

/// Why an object version cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `enabled` is false.
    Disabled,
    /// The current time is before `nbf`.
    NotYetValid,
    /// The current time is at or past `exp`.
    Expired,
}

impl Attributes {
    /// Whether the version may be used at `now`; a disabled object reports `Disabled`
    /// whatever its dates.
    pub fn check_usable(&self, now: UnixTime) -> Result<(), Unusable> {
        if !self.enabled {
            Err(Unusable::Disabled)
        } else if self.not_before.is_some_and(|nbf| now < nbf) {
            Err(Unusable::NotYetValid)
        } else if self.expires.is_some_and(|exp| now >= exp) {
            Err(Unusable::Expired)
        } else {
            Ok(())
        }
    }
}

/// How a deleted object can be brought back, derived from the vault's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Days a deleted object is kept before it is purged.
    pub retention_days: u32,
    /// Whether purge is refused until the retention period ends.
    pub purge_protection: bool,
}

impl Recovery {
    /// Key Vault's `recoveryLevel` string for these settings.
    pub fn level(&self) -> &'static str {
        match (self.retention_days >= 90, self.purge_protection) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }

    /// When an object deleted at `deleted` is purged automatically.
    pub fn scheduled_purge(&self, deleted: UnixTime) -> UnixTime {
        deleted + i64::from(self.retention_days) * 86_400
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(enabled: bool, nbf: Option<i64>, exp: Option<i64>) -> Attributes {
        Attributes {
            enabled,
            not_before: nbf,
            expires: exp,
            created: 0,
            updated: 0,
        }
    }

    #[test]
    fn usability() {
        assert_eq!(attrs(true, None, None).check_usable(100), Ok(()));
        assert_eq!(
            attrs(false, None, None).check_usable(100),
            Err(Unusable::Disabled)
        );
        assert_eq!(
            attrs(false, Some(200), Some(50)).check_usable(100),
            Err(Unusable::Disabled)
        );
        assert_eq!(
            attrs(true, Some(101), None).check_usable(100),
            Err(Unusable::NotYetValid)
        );
        assert_eq!(attrs(true, Some(100), None).check_usable(100), Ok(()));
        assert_eq!(
            attrs(true, None, Some(100)).check_usable(100),
            Err(Unusable::Expired)
        );
        assert_eq!(attrs(true, None, Some(101)).check_usable(100), Ok(()));
    }

    #[test]
    fn recovery_levels() {
        let r = |days, pp| {
            Recovery {
                retention_days: days,
                purge_protection: pp,
            }
            .level()
        };
        assert_eq!(r(90, false), "Recoverable+Purgeable");
        assert_eq!(r(90, true), "Recoverable");
        assert_eq!(r(7, false), "CustomizedRecoverable+Purgeable");
        assert_eq!(r(30, true), "CustomizedRecoverable");
        assert_eq!(
            Recovery {
                retention_days: 7,
                purge_protection: false
            }
            .scheduled_purge(10),
            10 + 7 * 86_400
        );
    }
}
