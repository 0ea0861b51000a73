//! Work the server does on its own, beside requests: the scheduler's passes (key
//! rotation and expiry notices), purging and audit retention, the audit checkpoint, and the
//! disk key checks. Each is audited as a service event. Among replicas sharing a database,
//! the leader alone runs the cluster's jobs; each replica checks the keys of the disks it
//! has open and keeps its caches current.

use std::sync::Arc;
use std::time::Duration;

use atrest_core::audit::AuditEvent;
use atrest_core::operation::Operation;
use atrest_core::rotation::Period;
use atrest_runtime::scheduler::{SCHEDULER_CLIENT, SCHEDULER_INTERVAL};
use atrest_runtime::time::{rfc3339, unix_now};
use atrest_vault::LifetimeEvent;
use hyper::StatusCode;

use atrest_backup::ScheduledOperation;

use crate::error::ApiError;
use crate::pipeline::result_of;
use crate::state::AppState;

/// An event for work the server does on its own (scheduled rotation, retention),
/// attributed to the service in this tenant and to `client`.
pub(crate) fn service_event(
    state: &AppState,
    client: &str,
    operation: Operation,
    status: StatusCode,
) -> AuditEvent {
    let (result_signature, result_type) = result_of(status);
    AuditEvent {
        time_ms: unix_now().1,
        operation: operation.name().to_owned(),
        result_signature,
        result_type,
        status: status.as_u16(),
        tenant_id: Some(state.identity.tenant().to_owned()),
        identity_type: Some("Service".to_owned()),
        correlation_id: state.request_ids.next(),
        client_info: client.to_owned(),
        ..AuditEvent::default()
    }
}

/// Moves the scheduler's clock forward by `by`, then runs a pass at the new time. The move
/// and the pass happen under the pass lock, so the pass that sees the new time is this one.
pub(crate) async fn advance(
    state: &Arc<AppState>,
    by: Period,
) -> Result<Vec<AuditEvent>, ApiError> {
    let _serialized = state.scheduler.pass_lock().lock().await;
    let worker = state.clone();
    tokio::task::spawn_blocking(move || worker.scheduler.move_forward(by.seconds()))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(pass_locked(state).await)
}

/// Runs one pass at the scheduler's time and audits what it did; the caller holds the
/// pass lock.
async fn pass_locked(state: &Arc<AppState>) -> Vec<AuditEvent> {
    let now = state.scheduler.now();
    let worker = state.clone();
    let outcome =
        tokio::task::spawn_blocking(move || worker.vaults.run_lifetime_actions(now)).await;
    let events = match outcome {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "key lifetime actions failed");
            return Vec::new();
        }
        Err(e) => {
            tracing::error!(error = %e, "key lifetime actions panicked");
            return Vec::new();
        }
    };
    let mut recorded = backup_schedule(state, now).await;
    for event in events {
        for audit in audit_events(state, now, event) {
            tracing::info!(
                operation = %audit.operation,
                id = audit.target_id.as_deref().unwrap_or("-"),
                result = %audit.result_type,
                "scheduled key lifetime action"
            );
            state.audit.expect().record(audit.clone()).await;
            recorded.push(audit);
        }
    }
    recorded
}

/// Runs the backup policies' schedule at `now` and audits each backup and expiry, as the
/// vault's service would.
async fn backup_schedule(state: &Arc<AppState>, now: i64) -> Vec<AuditEvent> {
    let runs = match state.backup.run_schedule(now).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::error!(error = %e, "the backup schedule failed");
            return Vec::new();
        }
    };
    let mut recorded = Vec::new();
    for run in runs {
        let (operation, description) = match run.operation {
            ScheduledOperation::Backup => (
                Operation::BackupTrigger,
                "Scheduled backup by the vault's policy.",
            ),
            ScheduledOperation::Expired => (
                Operation::BackupRecoveryPointExpire,
                "Recovery point past its retention, deleted.",
            ),
        };
        let status = if run.failure.is_some() {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        let audit = AuditEvent {
            result_description: run.failure.unwrap_or_else(|| description.to_owned()),
            resource: Some(run.vault_id.clone()),
            target_id: Some(run.target.clone()),
            request_uri: run.target,
            ..service_event(state, SCHEDULER_CLIENT, operation, status)
        };
        state.audit.expect().record(audit.clone()).await;
        recorded.push(audit);
    }
    recorded
}

/// The audit events for one lifetime event: a rotation is `KeyRotateIfDue` (the check that
/// found it due, on the old version) followed by `KeyRotate` (the new version), sharing a
/// correlation id.
fn audit_events(state: &AppState, now: i64, event: LifetimeEvent) -> Vec<AuditEvent> {
    let correlation_id = state.request_ids.next();
    let key_id = |vault: &str, name: &str, version: &str| {
        format!("{}/keys/{name}/{version}", state.vault_base(vault))
    };
    let at = rfc3339(now);
    let make = |operation: Operation, status: StatusCode, vault: &str, id: String, description| {
        AuditEvent {
            result_description: description,
            resource: Some(vault.to_owned()),
            target_id: Some(id.clone()),
            request_uri: id,
            correlation_id: correlation_id.clone(),
            ..service_event(state, SCHEDULER_CLIENT, operation, status)
        }
    };
    match event {
        LifetimeEvent::Rotated {
            vault,
            previous_version,
            key,
        } => vec![
            make(
                Operation::KeyRotateIfDue,
                StatusCode::OK,
                &vault,
                key_id(&vault, &key.name, &previous_version),
                format!("The rotation policy made the rotation due at {at}."),
            ),
            make(
                Operation::KeyRotate,
                StatusCode::OK,
                &vault,
                key_id(&vault, &key.name, &key.version),
                format!("New version created by the rotation policy at {at}."),
            ),
        ],
        LifetimeEvent::RotationFailed { vault, name, error } => {
            let error = ApiError::from(error);
            vec![make(
                Operation::KeyRotateIfDue,
                error.status,
                &vault,
                format!("{}/keys/{name}", state.vault_base(&vault)),
                error.message,
            )]
        }
        LifetimeEvent::CertificateRenewed {
            vault,
            name,
            previous_version,
            error,
        } => {
            let id = format!(
                "{}/certificates/{name}/{previous_version}",
                state.vault_base(&vault)
            );
            let (status, description) = match error {
                None => (
                    StatusCode::OK,
                    format!(
                        "The certificate's AutoRenew lifetime action issued a new version at {at}."
                    ),
                ),
                Some(e) => {
                    let e = ApiError::from(e);
                    (e.status, e.message)
                }
            };
            vec![make(
                Operation::CertificateAutoRenew,
                status,
                &vault,
                id,
                description,
            )]
        }
        LifetimeEvent::CertificateNearExpiry {
            vault,
            name,
            version,
            expires,
            contacts,
        } => vec![make(
            Operation::CertificateNearExpiry,
            StatusCode::OK,
            &vault,
            format!("{}/certificates/{name}/{version}", state.vault_base(&vault)),
            format!(
                "The certificate version expires at {}; contacts: {}.",
                rfc3339(expires),
                if contacts.is_empty() {
                    "none set".to_owned()
                } else {
                    contacts.join(", ")
                }
            ),
        )],
        LifetimeEvent::NearExpiry {
            vault,
            name,
            version,
            expires,
        } => vec![make(
            Operation::KeyNearExpiry,
            StatusCode::OK,
            &vault,
            key_id(&vault, &name, &version),
            format!("The key version expires at {}.", rfc3339(expires)),
        )],
    }
}

/// A tick every `every`, the first after `first`; ticks missed while the work ran are not
/// made up.
fn ticks(first: Duration, every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Takes or renews the cluster's leadership every fifth of a lease, and logs changes of
/// leader.
pub(crate) async fn leader_loop(state: Arc<AppState>) {
    let every = state.leader.ttl() / 5;
    let mut tick = ticks(every, every);
    let mut was_leader = state.leader.is_leader();
    loop {
        tick.tick().await;
        let leader = state.leader.clone();
        match tokio::task::spawn_blocking(move || leader.try_lead()).await {
            Ok(Ok(lead)) => {
                let is_leader = state.leader.is_leader();
                if is_leader != was_leader {
                    tracing::info!(replica = %state.leader.replica(), ?lead, "the cluster's leader changed");
                }
                was_leader = is_leader;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot renew the cluster's leadership"),
            Err(e) => tracing::error!(error = %e, "leadership renewal panicked"),
        }
    }
}

/// Every fifth of a lease: renews the leases of the disks this replica serves, then
/// serves the machines started for it and closes those stopped or moved elsewhere.
pub(crate) async fn disk_loop(state: Arc<AppState>) {
    let every = state.leader.ttl() / 5;
    let mut tick = ticks(every, every);
    loop {
        tick.tick().await;
        let compute = state.compute.clone();
        let _ = tokio::task::spawn_blocking(move || compute.renew_leases()).await;
        if let Err(e) = state.compute.reconcile(unix_now().0).await {
            tracing::warn!(error = %e, "cannot compare the disks served here with the machines' records");
        }
    }
}

/// On a database other replicas write too, checks every second whether they changed
/// anything, so cached rows and keys (a purged vault's among them) leave an idle
/// replica's memory too.
pub(crate) async fn cache_loop(state: Arc<AppState>) {
    let mut tick = ticks(Duration::ZERO, Duration::from_secs(1));
    loop {
        tick.tick().await;
        let worker = state.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || worker.vaults.forget_stale()).await
        {
            tracing::warn!(error = %e, "cannot check the store's generation");
        }
    }
}

/// Runs a pass every [`SCHEDULER_INTERVAL`], the first at once, on the leader.
pub(crate) async fn scheduler_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        tick.tick().await;
        if !state.leader.is_leader() {
            continue;
        }
        let _serialized = state.scheduler.pass_lock().lock().await;
        pass_locked(&state).await;
    }
}

/// Re-checks the customer-managed key of every disk open here, and (on the leader) moves
/// disk encryption sets that follow the latest key version to it.
pub(crate) async fn key_check_loop(state: Arc<AppState>, every: Duration) {
    // The disks were opened (their keys unwrapped) just before; the first check is due
    // one interval later.
    let mut tick = ticks(every, every);
    loop {
        tick.tick().await;
        if let Err(e) = state.compute.check_keys().await {
            tracing::error!(error = %e, "disk key check failed");
        }
        if !state.leader.is_leader() {
            continue;
        }
        if let Err(e) = state.compute.rotate_to_latest(unix_now().0).await {
            tracing::error!(error = %e, "disk encryption set rotation failed");
        }
    }
}

/// Runs the `CopyStart` copies that have not finished, one at a time (after a restart or
/// a change of leader, from their beginning), on the leader.
pub(crate) async fn copy_loop(state: Arc<AppState>) {
    let mut tick = ticks(Duration::ZERO, Duration::from_millis(500));
    loop {
        tick.tick().await;
        if !state.leader.is_leader() {
            continue;
        }
        let pending = match state.compute.pending_copies() {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(error = %e, "cannot list snapshot copies");
                continue;
            }
        };
        for copy in pending {
            if let Err(e) = state.compute.run_copy(&copy).await {
                tracing::error!(snapshot = %copy.name, error = %e, "a snapshot copy failed");
            }
        }
    }
}

/// Runs the replication cycles that are due by the scheduler's clock (so moving the clock
/// forward brings the next cycle), on the leader, and audits each as the vault's service.
pub(crate) async fn replication_loop(state: Arc<AppState>) {
    let mut tick = ticks(Duration::ZERO, Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !state.leader.is_leader() {
            continue;
        }
        let runs = match state.backup.run_replication(state.scheduler.now()).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!(error = %e, "the replication cycles failed");
                continue;
            }
        };
        for run in runs {
            let (status, description) = match run.outcome {
                Ok(bytes) => (
                    StatusCode::OK,
                    format!("Changes shipped ({bytes} bytes); recovery point kept."),
                ),
                Err(e) => (StatusCode::CONFLICT, e),
            };
            let audit = AuditEvent {
                result_description: description,
                resource: Some(run.vault_id.clone()),
                target_id: Some(run.item_id.clone()),
                request_uri: run.item_id,
                ..service_event(
                    &state,
                    SCHEDULER_CLIENT,
                    Operation::ReplicationCycle,
                    status,
                )
            };
            state.audit.expect().record(audit).await;
        }
    }
}

/// Purges soft-deleted secrets and vaults whose scheduled purge date has passed, and audit
/// events past their retention (itself recorded as an `AuditRetention` event); records the
/// audit log's head in the state database, so that `verify` notices deleted newest events.
/// On the leader.
pub(crate) async fn purge_loop(
    state: Arc<AppState>,
    every: Duration,
    audit_retention: Option<Duration>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !state.leader.is_leader() {
            continue;
        }
        let trail = state.audit_trail.clone();
        match tokio::task::spawn_blocking(move || trail.save_checkpoint()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record the audit checkpoint"),
            Err(e) => tracing::error!(error = %e, "audit checkpoint panicked"),
        }
        if let Some(keep) = audit_retention {
            let cutoff = unix_now().1 - keep.as_millis() as i64;
            let trail = state.audit_trail.clone();
            match tokio::task::spawn_blocking(move || trail.prune(cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => {
                    let event = AuditEvent {
                        result_description: format!(
                            "Deleted {deleted} audit events older than {}.",
                            humantime::format_rfc3339_millis(
                                std::time::UNIX_EPOCH + Duration::from_millis(cutoff.max(0) as u64)
                            )
                        ),
                        ..service_event(
                            &state,
                            "atrest-retention",
                            Operation::AuditRetention,
                            StatusCode::OK,
                        )
                    };
                    state.audit.expect().record(event).await;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "audit retention failed"),
                Err(e) => tracing::error!(error = %e, "audit retention panicked"),
            }
        }
        let vaults = state.clone();
        match tokio::task::spawn_blocking(move || vaults.vaults.purge_due(unix_now().0)).await {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((objects, vaults))) => tracing::info!(
                objects,
                vaults,
                "purged soft-deleted items past their purge date"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "purge job failed"),
            Err(e) => tracing::error!(error = %e, "purge job panicked"),
        }
        let compute = state.compute.clone();
        match tokio::task::spawn_blocking(move || compute.collect_garbage(unix_now().0)).await {
            Ok(Ok(collected)) if collected.deleted > 0 => tracing::info!(
                deleted = collected.deleted,
                waiting = collected.waiting,
                "deleted disk chunks no manifest names"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "block garbage collection failed"),
            Err(e) => tracing::error!(error = %e, "block garbage collection panicked"),
        }
    }
}
