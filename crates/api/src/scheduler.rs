//! The lifetime-action scheduler: performs due key rotations and near-expiry notices and
//! records each in the audit log.
//!
//! Its clock is the wall clock plus an offset that an administrator can move forward
//! (never back), so that "rotate 90 days after create" can be shown in seconds. Only the
//! scheduler reads that clock: request handling, token lifetimes and purges keep real
//! time. Passes are serialized, so a key is never rotated twice for one due date.

use atrest_core::operation::Operation;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atrest_core::rotation::Period;
use atrest_store::{AuditEvent, Store, StoreError};
use atrest_vault::LifetimeEvent;
use hyper::StatusCode;

use crate::audit::service_event;
use crate::error::ApiError;
use crate::http::rfc3339;
use crate::pipeline::unix_now;
use crate::state::AppState;

/// How often the scheduler looks for due actions on its own.
pub(crate) const SCHEDULER_INTERVAL: Duration = Duration::from_secs(60);

/// `clientInfo` of the events the scheduler records.
const SCHEDULER_CLIENT: &str = "atrest-scheduler";

/// Where the clock's offset is kept, so a restart does not move the clock back.
const OFFSET_META: &str = "scheduler-clock-offset";

/// The scheduler's clock and the lock that serializes its passes.
#[derive(Debug)]
pub struct Scheduler {
    store: Arc<Store>,
    offset_seconds: AtomicI64,
    pass: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// The scheduler with the clock offset kept in `store`.
    pub fn open(store: Arc<Store>) -> Result<Self, StoreError> {
        let offset = store
            .read(|tx| tx.meta_get(OFFSET_META))?
            .and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok())
            .unwrap_or(0);
        Ok(Scheduler {
            store,
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
}

/// Moves the scheduler's clock forward by `by`, then runs a pass at the new time. The move
/// and the pass happen under the pass lock, so the pass that sees the new time is this one.
pub(crate) async fn advance(
    state: &Arc<AppState>,
    by: Period,
) -> Result<Vec<AuditEvent>, ApiError> {
    let _serialized = state.scheduler.pass.lock().await;
    let offset = state.scheduler.offset() + by.seconds();
    let worker = state.clone();
    tokio::task::spawn_blocking(move || {
        worker
            .scheduler
            .store
            .write(|tx| tx.meta_put(OFFSET_META, offset.to_string().as_bytes()))
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    state
        .scheduler
        .offset_seconds
        .store(offset, Ordering::SeqCst);
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
    let mut recorded = Vec::new();
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

/// Runs a pass every [`SCHEDULER_INTERVAL`], the first at once.
pub(crate) async fn scheduler_loop(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        tick.tick().await;
        let _serialized = state.scheduler.pass.lock().await;
        pass_locked(&state).await;
    }
}
