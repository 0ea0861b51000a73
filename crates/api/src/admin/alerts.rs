//! Alerts as the API, the CLI and webhooks show them, and their delivery to the
//! configured webhook.

use atrest_core::audit::Alert;
use serde_json::json;

use crate::client::Client;

/// An alert as the API, the CLI and webhooks show it.
pub(crate) fn alert_json(a: &Alert) -> serde_json::Value {
    json!({
        "id": a.id,
        "time": humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(a.time_ms.max(0) as u64)).to_string(),
        "rule": a.rule,
        "severity": a.severity,
        "caller": a.caller,
        "resource": a.resource,
        "description": a.description,
        "correlationId": a.correlation_id,
    })
}

/// Posts each alert to `url` without holding up the detector; a refusal or an
/// unreachable webhook is logged.
pub(crate) fn webhook(
    url: String,
    client: Client,
    runtime: tokio::runtime::Handle,
) -> impl Fn(Alert) + Send + 'static {
    move |alert| {
        let (url, client) = (url.clone(), client.clone());
        let body = alert_json(&alert).to_string().into_bytes();
        runtime.spawn(async move {
            let sent = client
                .send(
                    hyper::Method::POST,
                    &url,
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
            match sent {
                Ok(r) if r.status < 300 => {}
                Ok(r) => tracing::warn!(status = r.status, "alert webhook refused the alert"),
                Err(e) => tracing::warn!(error = %e, "alert webhook unreachable"),
            }
        });
    }
}
