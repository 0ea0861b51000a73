//! Key rotation policies: ISO 8601 periods, Azure's minimums, and when a rotation is due.

use thiserror::Error;

use crate::UnixTime;

const DAY: i64 = 86_400;

/// An ISO 8601 duration (`P90D`, `P1Y6M`, `PT12H`) as rotation policies use them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days (weeks are folded in).
    pub days: u32,
    /// Hours.
    pub hours: u32,
    /// Minutes.
    pub minutes: u32,
    /// Seconds.
    pub seconds: u32,
}

/// A rotation policy the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RotationRuleError {
    /// Not an ISO 8601 duration.
    #[error("'{0}' is not an ISO 8601 duration such as P90D or P1Y.")]
    BadPeriod(String),
    /// A period under Azure's minimum.
    #[error("{what} must be at least {minimum} days; it is {given}.")]
    TooShort {
        /// Which setting.
        what: &'static str,
        /// The minimum in days.
        minimum: i64,
        /// The period given.
        given: String,
    },
    /// Something else about the actions is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl Period {
    /// Parses `PnYnMnWnDTnHnMnS` (each part optional, at least one present).
    pub fn parse(text: &str) -> Result<Period, RotationRuleError> {
        let bad = || RotationRuleError::BadPeriod(text.to_owned());
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        let (date, time) = match rest.split_once('T') {
            Some((d, t)) if !t.is_empty() => (d, Some(t)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let mut p = Period::default();
        let mut any = false;
        for (part, in_time) in [(date, false), (time.unwrap_or(""), true)] {
            let mut number = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() {
                    number.push(c);
                    continue;
                }
                let n: u32 = number.parse().map_err(|_| bad())?;
                number.clear();
                any = true;
                match (c, in_time) {
                    ('Y', false) => p.years = n,
                    ('M', false) => p.months = n,
                    ('W', false) => p.days += n.checked_mul(7).ok_or_else(bad)?,
                    ('D', false) => p.days += n,
                    ('H', true) => p.hours = n,
                    ('M', true) => p.minutes = n,
                    ('S', true) => p.seconds = n,
                    _ => return Err(bad()),
                }
            }
            if !number.is_empty() {
                return Err(bad());
            }
        }
        if any {
            Ok(p)
        } else {
            Err(bad())
        }
    }

    /// Length in seconds, counting a month as 30 days and a year as 365, as Key Vault's
    /// minimum checks do.
    pub fn seconds(&self) -> i64 {
        let days = i64::from(self.years) * 365 + i64::from(self.months) * 30 + i64::from(self.days);
        days * DAY
            + i64::from(self.hours) * 3600
            + i64::from(self.minutes) * 60
            + i64::from(self.seconds)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P")?;
        for (n, unit) in [(self.years, 'Y'), (self.months, 'M'), (self.days, 'D')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        if self.hours + self.minutes + self.seconds > 0 {
            f.write_str("T")?;
            for (n, unit) in [(self.hours, 'H'), (self.minutes, 'M'), (self.seconds, 'S')] {
                if n > 0 {
                    write!(f, "{n}{unit}")?;
                }
            }
        }
        if self.seconds() == 0 {
            f.write_str("0D")?;
        }
        Ok(())
    }
}

/// When a lifetime action fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `timeAfterCreate`: this long after the current version was created.
    AfterCreate(Period),
    /// `timeBeforeExpiry`: this long before the current version expires.
    BeforeExpiry(Period),
}

/// What a lifetime action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create a new key version.
    Rotate,
    /// Record a near-expiry event.
    Notify,
}

/// A key's rotation policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    /// `lifetimeActions`.
    pub actions: Vec<(Trigger, Action)>,
    /// `attributes.expiryTime`: the expiry given to versions the policy creates.
    pub expiry: Option<Period>,
}

/// Azure's minimums, in days.
const MIN_ROTATE_AFTER_CREATE_DAYS: i64 = 7;
const MIN_BEFORE_EXPIRY_DAYS: i64 = 7;
const MIN_EXPIRY_DAYS: i64 = 28;

fn at_least(what: &'static str, p: Period, minimum: i64) -> Result<(), RotationRuleError> {
    if p.seconds() < minimum * DAY {
        return Err(RotationRuleError::TooShort {
            what,
            minimum,
            given: p.to_string(),
        });
    }
    Ok(())
}

impl RotationPolicy {
    /// Checks Azure's rules: at most one action of each type, Notify only before expiry,
    /// and the minimum periods.
    pub fn check(&self) -> Result<(), RotationRuleError> {
        for action in [Action::Rotate, Action::Notify] {
            if self.actions.iter().filter(|(_, a)| *a == action).count() > 1 {
                return Err(RotationRuleError::Invalid(format!(
                    "A policy may have at most one {action:?} action."
                )));
            }
        }
        if let Some(expiry) = self.expiry {
            at_least("expiryTime", expiry, MIN_EXPIRY_DAYS)?;
        }
        for (trigger, action) in &self.actions {
            match (trigger, action) {
                (Trigger::AfterCreate(_), Action::Notify) => {
                    return Err(RotationRuleError::Invalid(
                        "A Notify action takes only a timeBeforeExpiry trigger.".into(),
                    ))
                }
                (Trigger::AfterCreate(p), Action::Rotate) => {
                    at_least("timeAfterCreate", *p, MIN_ROTATE_AFTER_CREATE_DAYS)?;
                    if self.expiry.is_some_and(|e| p.seconds() >= e.seconds()) {
                        return Err(RotationRuleError::Invalid(
                            "timeAfterCreate must be shorter than expiryTime.".into(),
                        ));
                    }
                }
                (Trigger::BeforeExpiry(p), _) => {
                    at_least("timeBeforeExpiry", *p, MIN_BEFORE_EXPIRY_DAYS)?;
                    if self.expiry.is_some_and(|e| p.seconds() >= e.seconds()) {
                        return Err(RotationRuleError::Invalid(
                            "timeBeforeExpiry must be shorter than expiryTime.".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the Rotate action is due for a current version created at `created` that
    /// expires at `expires`, at `now`.
    pub fn rotation_due(
        &self,
        created: UnixTime,
        expires: Option<UnixTime>,
        now: UnixTime,
    ) -> bool {
        self.due(Action::Rotate, created, expires, now)
    }

    /// Whether the Notify action is due.
    pub fn notify_due(&self, created: UnixTime, expires: Option<UnixTime>, now: UnixTime) -> bool {
        self.due(Action::Notify, created, expires, now)
    }

    fn due(
        &self,
        wanted: Action,
        created: UnixTime,
        expires: Option<UnixTime>,
        now: UnixTime,
    ) -> bool {
        self.actions
            .iter()
            .filter(|(_, a)| *a == wanted)
            .any(|(trigger, _)| match trigger {
                Trigger::AfterCreate(p) => now >= created + p.seconds(),
                Trigger::BeforeExpiry(p) => expires.is_some_and(|exp| now >= exp - p.seconds()),
            })
    }

    /// The expiry of a version the policy creates at `now`.
    pub fn expiry_for_new_version(&self, now: UnixTime) -> Option<UnixTime> {
        self.expiry.map(|e| now + e.seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let p = |s| Period::parse(s);
        assert_eq!(p("P90D").unwrap().seconds(), 90 * DAY);
        assert_eq!(p("P1Y").unwrap().seconds(), 365 * DAY);
        assert_eq!(p("P2W").unwrap().days, 14);
        assert_eq!(p("P1Y2M3DT4H5M6S").unwrap().to_string(), "P1Y2M3DT4H5M6S");
        assert_eq!(p("PT12H").unwrap().seconds(), 12 * 3600);
        for bad in [
            "", "P", "90D", "PT", "P1H", "PT1D", "P1.5D", "P-1D", "PXD", "P1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    fn policy(actions: &[(Trigger, Action)], expiry: Option<&str>) -> RotationPolicy {
        RotationPolicy {
            actions: actions.to_vec(),
            expiry: expiry.map(|e| Period::parse(e).unwrap()),
        }
    }

    fn days(n: u32) -> Period {
        Period {
            days: n,
            ..Default::default()
        }
    }

    #[test]
    fn minimums_and_shapes() {
        use Action::*;
        use Trigger::*;
        assert!(policy(
            &[
                (AfterCreate(days(7)), Rotate),
                (BeforeExpiry(days(30)), Notify)
            ],
            Some("P90D")
        )
        .check()
        .is_ok());
        assert!(matches!(
            policy(&[(AfterCreate(days(6)), Rotate)], None).check(),
            Err(RotationRuleError::TooShort { .. })
        ));
        assert!(matches!(
            policy(&[], Some("P27D")).check(),
            Err(RotationRuleError::TooShort { .. })
        ));
        assert!(matches!(
            policy(&[(BeforeExpiry(days(6)), Notify)], None).check(),
            Err(RotationRuleError::TooShort { .. })
        ));
        assert!(policy(&[(AfterCreate(days(30)), Notify)], None)
            .check()
            .is_err());
        assert!(policy(
            &[
                (AfterCreate(days(7)), Rotate),
                (AfterCreate(days(8)), Rotate)
            ],
            None
        )
        .check()
        .is_err());
        assert!(policy(&[(AfterCreate(days(90)), Rotate)], Some("P60D"))
            .check()
            .is_err());
    }

    #[test]
    fn due_times() {
        use Action::*;
        use Trigger::*;
        let p = policy(
            &[
                (AfterCreate(days(7)), Rotate),
                (BeforeExpiry(days(10)), Notify),
            ],
            Some("P30D"),
        );
        assert!(!p.rotation_due(0, None, 7 * DAY - 1));
        assert!(p.rotation_due(0, None, 7 * DAY));
        assert!(
            !p.notify_due(0, None, 100 * DAY),
            "no expiry, nothing to notify about"
        );
        assert!(p.notify_due(0, Some(30 * DAY), 20 * DAY));
        assert!(!p.notify_due(0, Some(30 * DAY), 20 * DAY - 1));
        assert_eq!(p.expiry_for_new_version(5), Some(5 + 30 * DAY));
        let before = policy(&[(BeforeExpiry(days(7)), Rotate)], None);
        assert!(before.rotation_due(0, Some(10 * DAY), 3 * DAY));
        assert!(!before.rotation_due(0, Some(10 * DAY), 3 * DAY - 1));
    }
}
