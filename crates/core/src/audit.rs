//! Audit records: one event per audited request, in the shape of Azure's Key Vault
//! `AuditEvent`, the alerts detections raise, and what verifying the chain finds.

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

/// An [`AuditEvent`] borrowed from its encoded bytes or from an owned event: the same
/// fields, read without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the fields of `AuditEvent`, borrowed
pub struct AuditEventRef<'a> {
    pub seq: i64,
    pub time_ms: i64,
    pub operation: &'a str,
    pub result_signature: &'a str,
    pub result_type: &'a str,
    pub result_description: &'a str,
    pub status: u16,
    pub duration_ms: i64,
    pub caller_ip: &'a str,
    pub app_id: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub identity_type: Option<&'a str>,
    pub mi_resource_id: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub http_method: &'a str,
    pub request_uri: &'a str,
    pub correlation_id: &'a str,
    pub client_info: &'a str,
}

impl AuditEvent {
    /// This event, borrowed.
    pub fn view(&self) -> AuditEventRef<'_> {
        AuditEventRef {
            seq: self.seq,
            time_ms: self.time_ms,
            operation: &self.operation,
            result_signature: &self.result_signature,
            result_type: &self.result_type,
            result_description: &self.result_description,
            status: self.status,
            duration_ms: self.duration_ms,
            caller_ip: &self.caller_ip,
            app_id: self.app_id.as_deref(),
            object_id: self.object_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
            identity_type: self.identity_type.as_deref(),
            mi_resource_id: self.mi_resource_id.as_deref(),
            resource: self.resource.as_deref(),
            target_id: self.target_id.as_deref(),
            http_method: &self.http_method,
            request_uri: &self.request_uri,
            correlation_id: &self.correlation_id,
            client_info: &self.client_info,
        }
    }
}

impl AuditEventRef<'_> {
    /// An owned copy of the event.
    pub fn to_event(&self) -> AuditEvent {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        AuditEvent {
            seq: self.seq,
            time_ms: self.time_ms,
            operation: self.operation.to_owned(),
            result_signature: self.result_signature.to_owned(),
            result_type: self.result_type.to_owned(),
            result_description: self.result_description.to_owned(),
            status: self.status,
            duration_ms: self.duration_ms,
            caller_ip: self.caller_ip.to_owned(),
            app_id: owned(self.app_id),
            object_id: owned(self.object_id),
            tenant_id: owned(self.tenant_id),
            identity_type: owned(self.identity_type),
            mi_resource_id: owned(self.mi_resource_id),
            resource: owned(self.resource),
            target_id: owned(self.target_id),
            http_method: self.http_method.to_owned(),
            request_uri: self.request_uri.to_owned(),
            correlation_id: self.correlation_id.to_owned(),
            client_info: self.client_info.to_owned(),
        }
    }
}

/// An alert a detection rule raised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    /// Assigned on insert (0 before).
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The rule's name.
    pub rule: String,
    /// `High`, `Medium` or `Low`.
    pub severity: String,
    /// The caller's app id, when the rule is about one.
    pub caller: Option<String>,
    /// The vault or object concerned.
    pub resource: Option<String>,
    /// What happened.
    pub description: String,
    /// The correlation id of the event that raised it.
    pub correlation_id: String,
}

/// What verifying the audit log's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain is whole from the anchor to the newest event.
    Intact {
        /// Events checked.
        events: u64,
        /// Sequence number of the first event checked (after the anchor).
        first_seq: i64,
        /// Sequence number and hash of the newest event.
        head: (i64, [u8; 32]),
    },
    /// The first event at which the chain breaks.
    Broken {
        /// Its sequence number (as stored).
        seq: i64,
        /// Its operation and time, as stored, to find it by.
        operation: String,
        /// Milliseconds since the epoch, as stored.
        time_ms: i64,
        /// What is wrong.
        reason: String,
        /// Events before it that checked out.
        verified: u64,
    },
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
