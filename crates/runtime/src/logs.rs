//! The audit log as Log Analytics tables for `atrest monitor query`: Key Vault events as
//! `AzureDiagnostics` (with Log Analytics' column names), management operations (and the
//! work the server does on their behalf) as the activity log's `AzureActivity`, and the
//! token service's
//! sign-ins as `AADManagedIdentitySignInLogs`, `AADServicePrincipalSignInLogs` and
//! `AADNonInteractiveUserSignInLogs`.

use std::collections::HashMap;

use atrest_core::audit::AuditEvent;
use atrest_core::principal::PrincipalKind;
use atrest_identity::Identity;
use atrest_query::{Catalog, Table, Value};

use crate::trail::AuditTrail;
use crate::Error;

/// A snapshot of the audit log and the directory, served as tables.
pub struct LogTables {
    events: Vec<AuditEvent>,
    /// Object id → (display name, user principal name).
    principals: HashMap<String, (String, Option<String>)>,
    audiences: Vec<String>,
}

impl LogTables {
    /// Reads every audit event and principal.
    pub fn load(trail: &AuditTrail, identity: &Identity) -> Result<Self, Error> {
        let mut events = Vec::new();
        trail.scan(|e| events.push(e))?;
        let mut principals = HashMap::new();
        for kind in [
            PrincipalKind::ServicePrincipal,
            PrincipalKind::ManagedIdentity,
            PrincipalKind::User,
        ] {
            for p in identity.list_principals(kind)? {
                principals.insert(p.object_id, (p.display_name, p.user_principal_name));
            }
        }
        Ok(LogTables {
            events,
            principals,
            audiences: identity.data_plane_audiences().to_vec(),
        })
    }

    fn azure_diagnostics(&self) -> Table {
        let columns = [
            "TimeGenerated",
            "ResourceId",
            "SubscriptionId",
            "ResourceGroup",
            "ResourceProvider",
            "Resource",
            "ResourceType",
            "Category",
            "OperationName",
            "OperationVersion",
            "ResultType",
            "ResultSignature",
            "ResultDescription",
            "DurationMs",
            "CallerIPAddress",
            "CorrelationId",
            "id_s",
            "requestUri_s",
            "httpStatusCode_d",
            "clientInfo_s",
            "identity_claim_appid_g",
            "identity_claim_oid_g",
            "identity_claim_idtyp_s",
            "identity_claim_xms_mirid_s",
            "trustedService_s",
        ];
        let rows = self
            .events
            .iter()
            .filter_map(|e| {
                let resource = e.resource.as_deref()?;
                let parts: Vec<&str> = resource.split('/').collect();
                // /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}
                let is_vault = parts.len() == 9
                    && parts[6].eq_ignore_ascii_case("Microsoft.KeyVault")
                    && parts[7].eq_ignore_ascii_case("vaults");
                is_vault.then(|| {
                    vec![
                        Value::DateTime(e.time_ms),
                        text(&resource.to_ascii_uppercase()),
                        text(parts[2]),
                        text(&parts[4].to_ascii_uppercase()),
                        text("MICROSOFT.KEYVAULT"),
                        text(&parts[8].to_ascii_uppercase()),
                        text("VAULTS"),
                        text("AuditEvent"),
                        text(&e.operation),
                        text(&api_version(&e.request_uri)),
                        text(&e.result_type),
                        text(&e.result_signature),
                        text(&e.result_description),
                        Value::Long(e.duration_ms),
                        text(&e.caller_ip),
                        text(&e.correlation_id),
                        opt(&e.target_id),
                        text(&e.request_uri),
                        Value::Real(f64::from(e.status)),
                        text(&e.client_info),
                        opt(&e.app_id),
                        opt(&e.object_id),
                        opt(&e.identity_type),
                        opt(&e.mi_resource_id),
                        text(""),
                    ]
                })
            })
            .collect();
        table(&columns, rows)
    }

    /// Token requests made by principals of identity type `idtyp` (`None`: failed
    /// requests, which name only the client), as the sign-in log `category`.
    fn sign_ins(&self, category: &str, idtyp: &[Option<&str>], user: bool) -> Table {
        let mut columns = vec![
            "TimeGenerated",
            "Id",
            "OperationName",
            "Category",
            "ResultType",
            "ResultSignature",
            "ResultDescription",
            "DurationMs",
            "IPAddress",
            "CorrelationId",
            "AppId",
            "ServicePrincipalId",
            "ServicePrincipalName",
            "Identity",
            "ResourceIdentity",
            "ResourceDisplayName",
        ];
        if user {
            columns.extend(["UserId", "UserPrincipalName", "UserDisplayName"]);
        }
        let rows = self
            .events
            .iter()
            .filter(|e| e.operation == "Authentication")
            .filter(|e| {
                let t = e.identity_type.as_deref().filter(|t| !t.is_empty());
                idtyp.contains(&t)
            })
            .map(|e| {
                let oid = e.object_id.clone().unwrap_or_default();
                let (name, upn) = self.principals.get(&oid).cloned().unwrap_or_default();
                let audience = e.target_id.clone().unwrap_or_default();
                let resource_name = if self.audiences.contains(&audience) {
                    "Azure Key Vault"
                } else if audience.is_empty() {
                    ""
                } else {
                    "Windows Azure Service Management API"
                };
                let ok = e.status < 400;
                let mut row = vec![
                    Value::DateTime(e.time_ms),
                    text(&e.correlation_id),
                    text("Sign-in activity"),
                    text(category),
                    text(if ok { "0" } else { &e.result_signature }),
                    text(if ok { "SUCCESS" } else { "FAILURE" }),
                    text(&e.result_description),
                    Value::Long(e.duration_ms),
                    text(&e.caller_ip),
                    text(&e.correlation_id),
                    opt(&e.app_id),
                    text(if user { "" } else { &oid }),
                    text(if user { "" } else { &name }),
                    text(&name),
                    text(&audience),
                    text(resource_name),
                ];
                if user {
                    row.extend([text(&oid), text(&upn.unwrap_or_default()), text(&name)]);
                }
                row
            })
            .collect();
        table(&columns, rows)
    }
}

impl LogTables {
    /// `AzureActivity`: every management operation (ARM requests, and the scheduled work
    /// done for them: backups, replication cycles), with its caller (an object id; the
    /// scheduler's client for the service's own work).
    fn activity(&self) -> Table {
        use atrest_core::operation::{Operation, Surface};
        let columns = [
            "TimeGenerated",
            "OperationName",
            "Category",
            "Level",
            "ActivityStatusValue",
            "ActivitySubstatusValue",
            "Caller",
            "CallerIpAddress",
            "CorrelationId",
            "_ResourceId",
            "ResourceGroup",
            "SubscriptionId",
            "Properties",
        ];
        let rows = self
            .events
            .iter()
            .filter(|e| {
                Operation::from_name(&e.operation)
                    .is_some_and(|o| o.surface() == Surface::Management)
            })
            .map(|e| {
                let resource = e
                    .target_id
                    .as_deref()
                    .or(e.resource.as_deref())
                    .unwrap_or("");
                let parts: Vec<&str> = resource.split('/').collect();
                let after = |key: &str| {
                    parts
                        .iter()
                        .position(|p| p.eq_ignore_ascii_case(key))
                        .and_then(|i| parts.get(i + 1))
                        .map_or("", |s| *s)
                };
                let ok = e.status < 400;
                vec![
                    Value::DateTime(e.time_ms),
                    text(&e.operation),
                    text("Administrative"),
                    text(if ok { "Informational" } else { "Error" }),
                    text(if ok { "Success" } else { "Failure" }),
                    text(&e.result_signature),
                    text(e.object_id.as_deref().unwrap_or(&e.client_info)),
                    text(&e.caller_ip),
                    text(&e.correlation_id),
                    text(resource),
                    text(&after("resourceGroups").to_ascii_uppercase()),
                    text(after("subscriptions")),
                    text(&e.result_description),
                ]
            })
            .collect();
        table(&columns, rows)
    }
}

impl Catalog for LogTables {
    fn table(&self, name: &str) -> Option<Table> {
        Some(match name {
            "AzureDiagnostics" => self.azure_diagnostics(),
            "AzureActivity" => self.activity(),
            "AADManagedIdentitySignInLogs" => self.sign_ins(
                "ManagedIdentitySignInLogs",
                &[Some("ManagedIdentity")],
                false,
            ),
            "AADServicePrincipalSignInLogs" => {
                self.sign_ins("ServicePrincipalSignInLogs", &[Some("app"), None], false)
            }
            "AADNonInteractiveUserSignInLogs" => {
                self.sign_ins("NonInteractiveUserSignInLogs", &[Some("user")], true)
            }
            _ => return None,
        })
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn opt(s: &Option<String>) -> Value {
    text(s.as_deref().unwrap_or(""))
}

fn table(columns: &[&str], rows: Vec<Vec<Value>>) -> Table {
    Table {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        rows,
    }
}

/// The `api-version` query parameter of a request URI.
pub fn api_version(uri: &str) -> String {
    uri.split_once('?')
        .map(|(_, q)| q)
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("api-version="))
        .unwrap_or("")
        .to_owned()
}
