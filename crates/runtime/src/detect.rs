//! Built-in detection rules, evaluated over committed audit events as they are written:
//! purges, access changes, bursts of refusals, mass secret reads, and a caller using a key
//! for the first time. Each alert is stored, counted in `/metrics`, and posted to the
//! configured webhook.
//!
//! Every replica's detector reads the whole cluster's log as it grows (woken by its own
//! writer, and at least every [`POLL`] for other replicas' events), so each has every
//! caller's history; only the leader raises alerts, and it records in `meta` how far it
//! has, so a new leader raises those of the events after that and no others.

use atrest_core::operation::Operation;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use atrest_core::audit::{Alert, AuditEventRef};

use atrest_store::AuditLog;

use crate::cluster::Leadership;
use crate::meta::Meta;

/// Refusals from one caller within [`WINDOW_MS`] that make a burst.
pub const FORBIDDEN_BURST: usize = 10;
/// Successful secret reads by one caller within [`WINDOW_MS`] that count as mass reading.
pub const MASS_SECRET_READS: usize = 50;
/// The sliding window of the rate rules.
pub const WINDOW_MS: i64 = 60_000;
/// How long the detector waits for more batches after being woken.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// How often the detector reads the log without being woken (other replicas' events).
pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// The `meta` entry holding the newest event the leader's alerts cover.
const ALERTED_THROUGH: &str = "alerts_raised_through";
/// Events read from the log at a time.
const PAGE: usize = 10_000;
/// Alerts a replica keeps for the leader to cover at most (the oldest go first).
const MAX_PENDING: usize = 10_000;

/// One caller's most recent events for a rate rule (no more than its threshold), and when
/// the rule last fired for it.
#[derive(Debug, Default)]
struct Rate {
    times: VecDeque<i64>,
    fired: Option<i64>,
}

impl Rate {
    /// Records an event at `t`; true when the caller reached `threshold` events within the
    /// window and the rule has not fired for it within the last window, so a sustained
    /// flood raises one alert per window, not one per `threshold` events.
    fn hit(&mut self, t: i64, threshold: usize) -> bool {
        if self.times.len() == threshold {
            self.times.pop_front();
        }
        self.times.push_back(t);
        let quiet = self.fired.is_none_or(|f| t - f > WINDOW_MS);
        let hit = quiet
            && self.times.len() == threshold
            && self
                .times
                .front()
                .is_some_and(|first| t - first <= WINDOW_MS);
        if hit {
            self.fired = Some(t);
            self.times.clear();
        }
        hit
    }
}

/// The rules' memory: recent events per caller, and who has used which key.
#[derive(Debug, Default)]
pub struct Detector {
    refusals: HashMap<String, Rate>,
    secret_reads: HashMap<String, Rate>,
    key_users: HashSet<(String, String)>,
}

fn caller_of<'a>(e: &AuditEventRef<'a>) -> &'a str {
    e.app_id.or(e.object_id).unwrap_or(e.caller_ip)
}

/// The rate of `caller` in `rates`, created on first sight.
fn rate_of<'a>(rates: &'a mut HashMap<String, Rate>, caller: &str) -> &'a mut Rate {
    if !rates.contains_key(caller) {
        rates.insert(caller.to_owned(), Rate::default());
    }
    rates.get_mut(caller).expect("just inserted")
}

/// `https://vault/keys/NAME/VERSION` → `https://vault/keys/NAME`.
fn key_of(id: &str) -> String {
    let parts: Vec<&str> = id.splitn(7, '/').collect();
    parts[..parts.len().min(5)].join("/")
}

impl Detector {
    /// Remembers key users from past events without raising alerts.
    pub fn learn(&mut self, e: &AuditEventRef<'_>) {
        if Operation::from_name(e.operation).is_some_and(Operation::is_key_use) && e.status < 300 {
            if let Some(id) = e.target_id {
                self.key_users.insert((caller_of(e).to_owned(), key_of(id)));
            }
        }
    }

    /// The alerts one committed event raises.
    pub fn observe(&mut self, e: &AuditEventRef<'_>) -> Vec<Alert> {
        let ok = (200..300).contains(&e.status);
        let caller = caller_of(e);
        let alert = |rule: &str, severity: &str, description: String| Alert {
            time_ms: e.time_ms,
            rule: rule.to_owned(),
            severity: severity.to_owned(),
            caller: Some(caller.to_owned()),
            resource: e.target_id.or(e.resource).map(str::to_owned),
            description,
            correlation_id: e.correlation_id.to_owned(),
            ..Alert::default()
        };
        let mut out = Vec::new();
        let op = e.operation;
        let operation = Operation::from_name(op);
        if ok
            && matches!(
                operation,
                Some(Operation::SecretPurge | Operation::KeyPurge)
            )
        {
            out.push(alert(
                "PurgeOfKeyOrSecret",
                "High",
                format!(
                    "{op} by {caller} permanently destroyed {}.",
                    e.target_id.unwrap_or("an object")
                ),
            ));
        }
        if ok
            && matches!(
                operation,
                Some(
                    Operation::RoleAssignmentWrite
                        | Operation::RoleAssignmentDelete
                        | Operation::VaultAccessPolicyUpdate
                )
            )
        {
            out.push(alert(
                "AccessChange",
                "Medium",
                format!("{op} by {caller} on {}.", e.resource.unwrap_or("-")),
            ));
        }
        if e.status == 403 {
            let rate = rate_of(&mut self.refusals, caller);
            if rate.hit(e.time_ms, FORBIDDEN_BURST) {
                out.push(alert(
                    "ForbiddenBurst",
                    "Medium",
                    format!(
                        "{caller} was refused {FORBIDDEN_BURST} times within {} seconds.",
                        WINDOW_MS / 1000
                    ),
                ));
            }
        }
        if ok && operation == Some(Operation::SecretGet) {
            let rate = rate_of(&mut self.secret_reads, caller);
            if rate.hit(e.time_ms, MASS_SECRET_READS) {
                out.push(alert(
                    "MassSecretRead",
                    "High",
                    format!(
                        "{caller} read {MASS_SECRET_READS} secrets within {} seconds.",
                        WINDOW_MS / 1000
                    ),
                ));
            }
        }
        if ok && operation.is_some_and(Operation::is_key_use) {
            if let Some(id) = e.target_id {
                let key = key_of(id);
                if self.key_users.insert((caller.to_owned(), key.clone())) {
                    out.push(alert(
                        "NewCallerOnKey",
                        "Low",
                        format!("{caller} used key {key} ({op}) for the first time."),
                    ));
                }
            }
        }
        out
    }
}

/// Starts the detector thread: it learns key users from the existing log, then evaluates
/// every event stored after, by any replica. On the leader it stores each alert and hands
/// it, with its id, to `notify` (the edge posts it to the webhook). Returns the wake-up the
/// audit writer sends after each committed batch.
pub fn spawn(
    log: Arc<AuditLog>,
    meta: Meta,
    leader: Arc<Leadership>,
    notify: impl Fn(Alert) + Send + 'static,
) -> std::io::Result<mpsc::Sender<()>> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("detector".into())
        .spawn(move || {
            let mut detector = Detector::default();
            let mut after = 0;
            let learned = log.scan(|e| {
                detector.learn(&e.view());
                after = e.seq;
            });
            if let Err(e) = learned {
                tracing::error!(error = %e, "cannot read the audit log; every key user is new");
            }
            // Alerts of events the leader may not have covered yet, by sequence number.
            let mut pending: Vec<(i64, Alert)> = Vec::new();
            loop {
                match rx.recv_timeout(POLL) {
                    Ok(()) => {
                        // Gather what arrives in the next moment too: under load this wakes
                        // the thread a few hundred times a second, not once per batch.
                        std::thread::sleep(GATHER);
                        rx.try_iter().for_each(drop);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                loop {
                    let page = match log.export(after, PAGE) {
                        Ok(page) => page,
                        Err(e) => {
                            tracing::error!(error = %e, "the detector cannot read the audit log");
                            break;
                        }
                    };
                    for e in &page {
                        let alerts = detector.observe(&e.view());
                        pending.extend(alerts.into_iter().map(|a| (e.seq, a)));
                        after = e.seq;
                    }
                    let excess = pending.len().saturating_sub(MAX_PENDING);
                    pending.drain(..excess);
                    if page.len() < PAGE {
                        break;
                    }
                }
                if let Err(e) = raise(&log, &meta, &leader, &mut pending, after, &notify) {
                    tracing::error!(error = %e, "cannot raise alerts");
                }
            }
        })?;
    Ok(tx)
}

/// On the leader: stores and hands on the `pending` alerts the leader has not raised yet
/// and records that alerts are raised through event `after`. Elsewhere: forgets those the
/// leader has raised.
fn raise(
    log: &AuditLog,
    meta: &Meta,
    leader: &Leadership,
    pending: &mut Vec<(i64, Alert)>,
    after: i64,
    notify: &impl Fn(Alert),
) -> Result<(), crate::Error> {
    if pending.is_empty() {
        return Ok(());
    }
    let through = meta
        .get(ALERTED_THROUGH)?
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map_or(0, i64::from_be_bytes);
    pending.retain(|(seq, _)| *seq > through);
    if !leader.is_leader() || pending.is_empty() {
        return Ok(());
    }
    for (_, alert) in pending.drain(..) {
        tracing::warn!(rule = %alert.rule, severity = %alert.severity, "{}", alert.description);
        match log.add_alert(&alert) {
            Ok(id) => notify(Alert { id, ..alert }),
            Err(e) => tracing::error!(error = %e, "cannot store an alert"),
        }
    }
    meta.put(ALERTED_THROUGH, &after.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrest_core::audit::AuditEvent;

    fn event(t: i64, op: &str, status: u16, app: &str, id: &str) -> AuditEvent {
        AuditEvent {
            time_ms: t,
            operation: op.into(),
            status,
            app_id: Some(app.into()),
            target_id: Some(id.into()),
            ..Default::default()
        }
    }

    fn rules(d: &mut Detector, e: &AuditEvent) -> Vec<String> {
        d.observe(&e.view()).into_iter().map(|a| a.rule).collect()
    }

    #[test]
    fn each_rule_fires_once_per_occurrence() {
        let mut d = Detector::default();
        let key = "https://kv.vault.localhost:1/keys/k";
        assert_eq!(
            rules(&mut d, &event(0, "KeyPurge", 204, "a", key)),
            ["PurgeOfKeyOrSecret"]
        );
        assert!(
            rules(&mut d, &event(0, "KeyPurge", 403, "a", key)).is_empty(),
            "a refused purge"
        );
        assert_eq!(
            rules(&mut d, &event(0, "RoleAssignmentWrite", 201, "a", "")),
            ["AccessChange"]
        );
        assert_eq!(
            rules(
                &mut d,
                &event(0, "KeyUnwrap", 200, "a", &format!("{key}/v1"))
            ),
            ["NewCallerOnKey"]
        );
        assert!(
            rules(&mut d, &event(1, "KeyWrap", 200, "a", &format!("{key}/v2"))).is_empty(),
            "same key, other version"
        );
        assert_eq!(
            rules(&mut d, &event(1, "KeyWrap", 200, "b", key)),
            ["NewCallerOnKey"]
        );

        let refusals: Vec<Vec<String>> = (0..FORBIDDEN_BURST as i64 * 2)
            .map(|i| rules(&mut d, &event(i * 100, "SecretGet", 403, "c", "x")))
            .collect();
        assert_eq!(
            refusals.iter().filter(|r| !r.is_empty()).count(),
            1,
            "one alert per window"
        );
        assert!(refusals[FORBIDDEN_BURST - 1] == ["ForbiddenBurst"]);
        let later = (0..FORBIDDEN_BURST as i64)
            .filter(|i| {
                !rules(
                    &mut d,
                    &event(WINDOW_MS + 5000 + i, "SecretGet", 403, "c", "x"),
                )
                .is_empty()
            })
            .count();
        assert_eq!(later, 1, "a burst in the next window alerts again");
        // Spread over more than the window, refusals never burst.
        let slow = (0..FORBIDDEN_BURST as i64 * 2)
            .map(|i| {
                rules(
                    &mut d,
                    &event(1_000_000 + i * 10_000, "SecretGet", 403, "e", "x"),
                )
            })
            .filter(|r| !r.is_empty())
            .count();
        assert_eq!(slow, 0);
        let reads = (0..MASS_SECRET_READS as i64 * 100)
            .filter(|i| !rules(&mut d, &event(*i, "SecretGet", 200, "d", "x")).is_empty())
            .count();
        assert_eq!(reads, 1, "a flood within one window raises one alert");
    }

    #[test]
    fn learned_users_are_not_new() {
        let mut d = Detector::default();
        let id = "https://kv.vault.localhost:1/keys/k/v1";
        d.learn(&event(0, "KeySign", 200, "a", id).view());
        assert!(rules(&mut d, &event(1, "KeySign", 200, "a", id)).is_empty());
    }
}
