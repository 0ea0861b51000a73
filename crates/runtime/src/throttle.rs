//! Per-vault throttling: fixed windows per operation class, with Azure's budgets (or the
//! server's configured ones). A request over budget is refused with 429 and `Retry-After`
//! and draws nothing from the budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atrest_core::limits::{OperationClass, ServiceLimits};

/// A refused request: which budget, and when the window resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// The budget that ran out.
    pub class: OperationClass,
    /// Its size per window.
    pub limit: u32,
    /// The window's length in seconds.
    pub window_secs: u64,
    /// Whole seconds until the window resets (at least 1).
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u32,
}

/// The budgets of every vault, keyed by the vault's name as stored (one spelling per
/// vault, so lookups need no allocation), one window per class in
/// [`OperationClass::ALL`] order.
#[derive(Debug)]
pub struct Throttle {
    limits: ServiceLimits,
    windows: Mutex<HashMap<String, [Window; 4]>>,
}

fn slot(class: OperationClass) -> usize {
    OperationClass::ALL
        .iter()
        .position(|c| *c == class)
        .expect("every class is listed")
}

impl Throttle {
    /// Budgets of `limits` for every vault.
    pub fn new(limits: ServiceLimits) -> Self {
        Throttle {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.window_secs.max(1))
    }

    /// Takes `cost` from `vault`'s `class` budget, or refuses.
    pub fn admit(
        &self,
        vault: &str,
        class: OperationClass,
        cost: u32,
        now: Instant,
    ) -> Result<(), Throttled> {
        let limit = self.limits.limit(class);
        let length = self.window();
        let fresh = Window {
            start: now,
            used: 0,
        };
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(vault) {
            windows.insert(vault.to_owned(), [fresh; 4]);
        }
        let w = &mut windows.get_mut(vault).expect("inserted above")[slot(class)];
        if now.duration_since(w.start) >= length {
            *w = fresh;
        }
        if w.used.saturating_add(cost) > limit {
            let left = length.saturating_sub(now.duration_since(w.start));
            return Err(Throttled {
                class,
                limit,
                window_secs: length.as_secs(),
                retry_after_secs: left.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        w.used += cost;
        Ok(())
    }

    /// Per vault, the highest share (percent) of any budget used in its current window.
    pub fn saturation(&self, now: Instant) -> Vec<(String, f64)> {
        let length = self.window();
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, f64)> = windows
            .iter()
            .map(|(vault, slots)| {
                let busiest = OperationClass::ALL
                    .iter()
                    .zip(slots)
                    .filter(|(_, w)| now.duration_since(w.start) < length)
                    .map(|(class, w)| {
                        100.0 * f64::from(w.used) / f64::from(self.limits.limit(*class).max(1))
                    })
                    .fold(0.0, f64::max);
                (vault.clone(), busiest)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_per_vault_and_class_reset_with_the_window() {
        let limits = ServiceLimits {
            window_secs: 10,
            secrets: 3,
            ..ServiceLimits::default()
        };
        let t = Throttle::new(limits);
        let start = Instant::now();
        for _ in 0..3 {
            t.admit("kv1", OperationClass::Secrets, 1, start).unwrap();
        }
        let refused = t
            .admit(
                "kv1",
                OperationClass::Secrets,
                1,
                start + Duration::from_millis(2500),
            )
            .unwrap_err();
        assert_eq!((refused.limit, refused.retry_after_secs), (3, 8));
        assert!(
            t.admit("kv2", OperationClass::Secrets, 1, start).is_ok(),
            "other vault"
        );
        assert!(
            t.admit("kv1", OperationClass::Keys, 8, start).is_ok(),
            "other class"
        );
        assert_eq!(
            t.saturation(start),
            [("kv1".to_owned(), 100.0), ("kv2".to_owned(), 100.0 / 3.0)]
        );
        assert!(t
            .admit(
                "kv1",
                OperationClass::Secrets,
                1,
                start + Duration::from_secs(10)
            )
            .is_ok());
        assert!(
            t.admit("kv1", OperationClass::Keys, 1993, start).is_err(),
            "weighted costs add up"
        );
    }
}
