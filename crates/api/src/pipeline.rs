//! The one path every audited operation takes, whether it arrives over HTTP or from the
//! disk service in process: route → authenticate → throttle → authorize → run → audit.
//!
//! An [`Exchange`] begins before routing (it announces the audit event, so group commit
//! counts it) and [`Exchange::finish`] records the event, with what the handler learned in
//! its [`Ctx`]. A result whose event cannot be recorded never leaves.

use std::net::SocketAddr;
use std::time::Instant;

use atrest_core::audit::AuditEvent;
use atrest_core::operation::Operation;
use atrest_identity::Caller;
use atrest_runtime::audit::Expected;
use atrest_runtime::time::unix_now;
use hyper::StatusCode;

use crate::error::ApiError;
use crate::state::AppState;

/// What a handler learned about the request, for its audit event.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// `operationName`, from the route, fixed before anything runs.
    pub(crate) operation: Operation,
    /// The caller the audit event names: the authenticated one, or on the token
    /// endpoints, whom the token was asked for.
    pub(crate) caller: Option<Caller>,
    /// The addressed resource (vault name, resource id).
    pub(crate) resource: Option<String>,
    /// The addressed object id, with its version when known.
    pub(crate) target_id: Option<String>,
    /// The vault a data-plane request reached, for metrics.
    pub(crate) vault: Option<String>,
    /// Request time, seconds since the Unix epoch.
    pub(crate) now: i64,
    /// The client's address.
    pub(crate) peer: SocketAddr,
}

/// One request on its way through the pipeline: what its audit event records besides
/// the handler's findings.
pub(crate) struct Exchange<'a> {
    started: Instant,
    now_ms: i64,
    expected: Expected<'a>,
    /// The request's method, as the audit event records it.
    pub(crate) method: String,
    /// `https://HOST:PORT/PATH?QUERY`.
    pub(crate) request_uri: String,
    /// `x-ms-client-request-id`, or a fresh id.
    pub(crate) correlation_id: String,
    /// The client's `User-Agent`.
    pub(crate) client_info: String,
}

impl<'a> Exchange<'a> {
    /// Begins a request for `operation` from `peer`; the request's fields are filled in
    /// by the caller.
    pub(crate) fn begin(
        state: &'a AppState,
        operation: Operation,
        peer: SocketAddr,
    ) -> (Self, Ctx) {
        let started = Instant::now();
        let expected = state.audit.expect();
        let (now, now_ms) = unix_now();
        let exchange = Exchange {
            started,
            now_ms,
            expected,
            method: String::new(),
            request_uri: String::new(),
            correlation_id: String::new(),
            client_info: String::new(),
        };
        let ctx = Ctx {
            operation,
            caller: None,
            resource: None,
            target_id: None,
            vault: None,
            now,
            peer,
        };
        (exchange, ctx)
    }

    /// Counts the request in the metrics, logs it and records its audit event; the error
    /// to answer instead of the result if the event could not be recorded.
    pub(crate) async fn finish(
        self,
        state: &AppState,
        mut ctx: Ctx,
        status: StatusCode,
        description: String,
    ) -> Result<(), ApiError> {
        let elapsed = self.started.elapsed();
        if let Some(vault) = &ctx.vault {
            state
                .metrics
                .record(vault, ctx.operation.name(), status.as_u16(), elapsed);
        }
        let (app_id, object_id, tenant_id, identity_type, mi_resource_id) = match ctx.caller.take()
        {
            Some(c) => (
                Some(c.app_id),
                Some(c.object_id),
                Some(c.tenant_id),
                Some(c.identity_type),
                c.mi_resource_id,
            ),
            None => Default::default(),
        };
        let (result_signature, result_type) = result_of(status);
        let event = AuditEvent {
            seq: 0,
            time_ms: self.now_ms,
            operation: ctx.operation.name().to_owned(),
            result_signature,
            result_type,
            result_description: description,
            status: status.as_u16(),
            duration_ms: elapsed.as_millis() as i64,
            caller_ip: ctx.peer.ip().to_string(),
            app_id,
            object_id,
            tenant_id,
            identity_type,
            mi_resource_id,
            resource: ctx.resource,
            target_id: ctx.target_id,
            http_method: self.method,
            request_uri: self.request_uri,
            correlation_id: self.correlation_id,
            client_info: self.client_info,
        };
        tracing::info!(
            operation = %event.operation,
            status = event.status,
            duration_ms = event.duration_ms,
            caller = event.app_id.as_deref().unwrap_or("-"),
            correlation_id = %event.correlation_id,
            "request"
        );
        if cfg!(atrest_unguarded_bench) || self.expected.record(event).await {
            Ok(())
        } else {
            // Fail closed: no result leaves without its audit record.
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The request's audit event could not be recorded, so its result is withheld.",
            ))
        }
    }
}

/// `resultSignature` (the reason phrase) and `resultType` of an outcome.
pub(crate) fn result_of(status: StatusCode) -> (String, String) {
    let kind = if status.is_success() {
        "Success"
    } else {
        "Failure"
    };
    (
        status.canonical_reason().unwrap_or("Unknown").to_owned(),
        kind.to_owned(),
    )
}
