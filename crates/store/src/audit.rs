//! Audit events: one row per request, appended by the API edge's audit writer to a
//! database of their own.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, Row};

use crate::{open_connection, open_reader, schema, StoreError};

/// One audited request, in the shape of Azure's Key Vault AuditEvent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// Sequence number assigned on insert (0 before).
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// `operationName` (`SecretGet`, `Authentication`, `VaultPut`, …).
    pub operation: String,
    /// `resultSignature`: the HTTP reason phrase (`OK`, `Unauthorized`, …).
    pub result_signature: String,
    /// `resultType`: `Success` or `Failure`.
    pub result_type: String,
    /// `resultDescription`: the error message of a failed call, empty otherwise.
    pub result_description: String,
    /// `httpStatusCode`.
    pub status: u16,
    /// `durationMs`.
    pub duration_ms: i64,
    /// `callerIpAddress`.
    pub caller_ip: String,
    /// `identity.claim.appid`.
    pub app_id: Option<String>,
    /// `identity.claim.oid`.
    pub object_id: Option<String>,
    /// `identity.claim.tid`.
    pub tenant_id: Option<String>,
    /// `identity.claim.idtyp` (`app`, `ManagedIdentity`).
    pub identity_type: Option<String>,
    /// `identity.claim.xms_mirid`: a managed identity's resource id.
    pub mi_resource_id: Option<String>,
    /// The vault (or other resource) the request addressed.
    pub resource: Option<String>,
    /// `properties.id`: the object id with its version.
    pub target_id: Option<String>,
    /// HTTP method.
    pub http_method: String,
    /// `properties.requestUri`.
    pub request_uri: String,
    /// `correlationId` (`x-ms-client-request-id` or generated).
    pub correlation_id: String,
    /// `properties.clientInfo` (user agent).
    pub client_info: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only this operation.
    pub operation: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

const COLUMNS: &str = "seq, time_ms, operation, result_signature, result_type, result_description, status, duration_ms, \
    caller_ip, app_id, object_id, tenant_id, identity_type, mi_resource_id, resource, target_id, http_method, request_uri, \
    correlation_id, client_info";

fn row(r: &Row) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        operation: r.get(2)?,
        result_signature: r.get(3)?,
        result_type: r.get(4)?,
        result_description: r.get(5)?,
        status: r.get(6)?,
        duration_ms: r.get(7)?,
        caller_ip: r.get(8)?,
        app_id: r.get(9)?,
        object_id: r.get(10)?,
        tenant_id: r.get(11)?,
        identity_type: r.get(12)?,
        mi_resource_id: r.get(13)?,
        resource: r.get(14)?,
        target_id: r.get(15)?,
        http_method: r.get(16)?,
        request_uri: r.get(17)?,
        correlation_id: r.get(18)?,
        client_info: r.get(19)?,
    })
}

/// The audit database: append-only, written by one writer, listed by one reader.
pub struct AuditLog {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Opens (creating and migrating if needed) the audit database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(AuditLog {
            writer: Mutex::new(open_connection(path, schema::AUDIT)?),
            reader: Mutex::new(open_reader(path)?),
        })
    }

    /// Appends events in order, in one transaction: all are durable or none.
    pub fn append(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        append(&tx, events)?;
        tx.commit()?;
        Ok(())
    }

    /// Events matching `filter`, newest first.
    pub fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE (?1 IS NULL OR time_ms >= ?1) AND (?2 IS NULL OR operation = ?2) \
             ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![filter.since_ms, filter.operation, filter.limit as i64],
                row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

fn append(tx: &rusqlite::Transaction, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO audit_events ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            &COLUMNS["seq, ".len()..]
        ))?;
    for e in events {
        stmt.execute(params![
            e.time_ms,
            e.operation,
            e.result_signature,
            e.result_type,
            e.result_description,
            e.status,
            e.duration_ms,
            e.caller_ip,
            e.app_id,
            e.object_id,
            e.tenant_id,
            e.identity_type,
            e.mi_resource_id,
            e.resource,
            e.target_id,
            e.http_method,
            e.request_uri,
            e.correlation_id,
            e.client_info
        ])?;
    }
    Ok(())
}
