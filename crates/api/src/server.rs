//! The listener: TLS, HTTP/1.1, routing by host, and one audit event per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atrest_core::operation::Operation;
use atrest_disk::Compute;
use atrest_identity::{Caller, Identity};
use atrest_store::{AuditEvent, AuditLog, Store};
use atrest_vault::Vaults;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::http::request::Parts;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::{result_of, AuditSink};
use crate::auth::{authenticate, not_admin};
use crate::error::ApiError;
use crate::http::{form_pairs, path_segment, Body, Resp};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::throttle::Throttle;
use crate::{admin, control, data_plane};

/// The host suffix of vault data planes: `NAME.vault.localhost`.
pub(crate) const VAULT_HOST_SUFFIX: &str = ".vault.localhost";

/// How long a client may take to finish the TLS handshake or send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Instance-wide settings the edge needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The port clients reach the server on (part of every vault URI).
    pub port: u16,
    /// The subscription all resources live in.
    pub subscription: String,
    /// The resource group created at bootstrap.
    pub resource_group: String,
    /// Where the NBD server listens, if it runs.
    pub nbd: Option<SocketAddr>,
}

/// Everything a request handler reaches.
#[derive(Debug)]
pub struct AppState {
    /// Token service and principals.
    pub identity: Identity,
    /// Vaults and secrets.
    pub vaults: Vaults,
    /// The audit log, for listing.
    pub audit_log: Arc<AuditLog>,
    /// The state database, for instance metadata (the audit checkpoint).
    pub store: Arc<Store>,
    /// Where audit events go.
    pub audit: AuditSink,
    /// Instance settings.
    pub settings: Settings,
    /// Request and correlation ids.
    pub request_ids: RequestIds,
    /// The key lifetime-action scheduler and its clock.
    pub scheduler: Scheduler,
    /// Per-vault budgets.
    pub throttle: Throttle,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// Disk encryption sets, disks and virtual machines.
    pub compute: Arc<Compute>,
}

impl AppState {
    /// The `WWW-Authenticate` challenge of the data plane. The resource is the parent
    /// domain of every vault host, port included, as the Python SDK requires.
    pub fn challenge(&self) -> String {
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"https://vault.localhost:{}\"",
            self.identity.authority(),
            self.identity.tenant(),
            self.settings.port
        )
    }

    /// `https://NAME.vault.localhost:PORT`, without a trailing slash.
    pub fn vault_base(&self, name: &str) -> String {
        format!(
            "https://{}{VAULT_HOST_SUFFIX}:{}",
            name.to_ascii_lowercase(),
            self.settings.port
        )
    }
}

/// Request and correlation ids: unique, not secret, so a random per-process prefix and
/// a counter serve, without a trip to the DRBG on every request.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let h = atrest_crypto::random_hex(8);
        RequestIds {
            prefix: format!("{}-{}-4{}", &h[..8], &h[8..12], &h[13..16]),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id, in UUID layout.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{:04x}-{:012x}",
            self.prefix,
            0x8000 | (n >> 48) & 0x3fff,
            n & 0xffff_ffff_ffff
        )
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// What a handler learned about the request, for its audit event.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// `operationName`, from the route, fixed before anything runs.
    pub operation: Operation,
    /// The caller the audit event names: the authenticated one, or on the token
    /// endpoints, whom the token was asked for.
    pub caller: Option<Caller>,
    /// The addressed resource (vault name, resource id).
    pub resource: Option<String>,
    /// The addressed object id, with its version when known.
    pub target_id: Option<String>,
    /// The vault a data-plane request reached, for metrics.
    pub vault: Option<String>,
    /// Request time, seconds since the Unix epoch.
    pub now: i64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Now, as (seconds, milliseconds) since the Unix epoch.
pub(crate) fn unix_now() -> (i64, i64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.as_millis() as i64)
}

/// The host a request addressed, without port, lower-cased.
fn request_host(parts: &Parts) -> String {
    let raw = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())
        .unwrap_or("");
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    host.to_ascii_lowercase()
}

/// A request, routed by host, method and path before anything else happens, so that its
/// audit event names the operation whatever the outcome.
#[derive(Debug)]
enum Route<'a> {
    /// `NAME.vault.localhost`: the Key Vault data plane.
    KeyVault {
        /// The vault the host names.
        vault: &'a str,
        /// The operation, if the path names one.
        route: Option<data_plane::Route<'a>>,
    },
    /// `/subscriptions/{s}/…`: the management API.
    Arm {
        /// The subscription the path names.
        subscription: &'a str,
        /// The operation, if the path names one.
        route: Option<control::ArmRoute<'a>>,
    },
    /// `/atrest/…`: administration.
    Admin(Option<admin::Route>),
    /// The token service and the unauthenticated endpoints.
    Open(control::OpenRoute<'a>),
    /// Nothing this server serves.
    Unrouted,
}

impl<'a> Route<'a> {
    fn parse(host: &'a str, method: &Method, path: &'a str, segments: &[&'a str]) -> Self {
        if let Some(vault) = host
            .strip_suffix(VAULT_HOST_SUFFIX)
            .filter(|name| !name.contains('.'))
        {
            let route = data_plane::Route::parse(method, path);
            return Route::KeyVault { vault, route };
        }
        if let Some(route) = control::OpenRoute::parse(method, segments) {
            return Route::Open(route);
        }
        match segments {
            ["atrest", rest @ ..] => {
                let decoded: Vec<String> = rest.iter().map(|s| path_segment(s)).collect();
                Route::Admin(admin::Route::parse(method, &decoded))
            }
            ["subscriptions", rest @ ..] => Route::Arm {
                subscription: rest.first().copied().unwrap_or(""),
                route: control::ArmRoute::parse(method, rest),
            },
            _ => Route::Unrouted,
        }
    }

    fn operation(&self) -> Operation {
        match self {
            Route::KeyVault { route, .. } => route
                .as_ref()
                .map_or(Operation::Unknown, data_plane::Route::operation),
            Route::Arm { route, .. } => route
                .as_ref()
                .map_or(Operation::Unknown, control::ArmRoute::operation),
            Route::Admin(route) => route
                .as_ref()
                .map_or(Operation::Unknown, admin::Route::operation),
            Route::Open(route) => route.operation(),
            Route::Unrouted => Operation::Unknown,
        }
    }
}

/// Authenticates the request for its surface, then runs it as that caller. The caller
/// is kept for the audit event whatever the outcome.
async fn dispatch(
    state: &Arc<AppState>,
    ctx: &mut Ctx,
    route: Route<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    let identity = &state.identity;
    let now = ctx.now;
    let authenticate = |audiences| authenticate(state, &parts.headers, audiences, now);
    match route {
        Route::KeyVault { vault, route } => {
            ctx.resource = Some(vault.to_owned());
            // Challenge first: the SDK's first request carries no token and no body.
            let caller = authenticate(identity.data_plane_audiences())?;
            let result = data_plane::handle(state, ctx, &caller, vault, route, parts, body).await;
            ctx.caller = Some(caller);
            result
        }
        Route::Arm {
            subscription,
            route,
        } => {
            let caller = authenticate(identity.management_audiences())?;
            let result =
                control::management(state, ctx, &caller, subscription, route, parts, body).await;
            ctx.caller = Some(caller);
            result.map_err(ApiError::in_arm_terms)
        }
        Route::Admin(route) => {
            let caller = authenticate(identity.management_audiences())?;
            let result = match route {
                _ if !identity.is_admin(&caller.object_id)? => Err(not_admin(&caller)),
                None => Err(ApiError::no_route(&parts.method, parts.uri.path()).in_arm_terms()),
                Some(route) => {
                    let query = form_pairs(parts.uri.query().unwrap_or(""));
                    admin::handle(state, ctx, &caller, route, &query, body)
                        .await
                        .map_err(ApiError::in_arm_terms)
                }
            };
            ctx.caller = Some(caller);
            result
        }
        Route::Open(route) => control::open(state, ctx, route, parts, body).await,
        Route::Unrouted => Err(ApiError::no_route(&parts.method, parts.uri.path())),
    }
}

/// Serves one request and records its audit event before answering.
pub(crate) async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Body>) -> Resp {
    let started = Instant::now();
    let audit = state.audit.expect();
    let (now, now_ms) = unix_now();
    let (parts, body) = req.into_parts();
    let host = request_host(&parts);
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let correlation_id = header("x-ms-client-request-id")
        .filter(|c| c.len() <= 200)
        .unwrap_or_else(|| state.request_ids.next());
    let client_info = header(USER_AGENT.as_str()).unwrap_or_default();
    let method = parts.method.to_string();
    let request_uri = format!(
        "https://{host}:{}{}",
        state.settings.port,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let path = parts.uri.path();
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let route = Route::parse(&host, &parts.method, path, &segments);
    let mut ctx = Ctx {
        operation: route.operation(),
        caller: None,
        resource: None,
        target_id: None,
        vault: None,
        now,
        peer,
    };
    let result = dispatch(&state, &mut ctx, route, &parts, body).await;
    let (mut resp, description) = match result {
        Ok(resp) => (resp, String::new()),
        Err(e) => {
            let message = e.message.clone();
            (e.into_response(), message)
        }
    };
    let status = resp.status();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        headers.insert("x-ms-client-request-id", v.clone());
        headers.insert("x-ms-correlation-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.request_ids.next()) {
        headers.insert("x-ms-request-id", v);
    }

    if let Some(vault) = &ctx.vault {
        state.metrics.record(
            vault,
            ctx.operation.name(),
            status.as_u16(),
            started.elapsed(),
        );
    }
    let (app_id, object_id, tenant_id, identity_type, mi_resource_id) = match ctx.caller.take() {
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
        time_ms: now_ms,
        operation: ctx.operation.name().to_owned(),
        result_signature,
        result_type,
        result_description: description,
        status: status.as_u16(),
        duration_ms: started.elapsed().as_millis() as i64,
        caller_ip: peer.ip().to_string(),
        app_id,
        object_id,
        tenant_id,
        identity_type,
        mi_resource_id,
        resource: ctx.resource,
        target_id: ctx.target_id,
        http_method: method,
        request_uri,
        correlation_id,
        client_info,
    };
    tracing::info!(
        operation = %event.operation,
        status = event.status,
        duration_ms = event.duration_ms,
        caller = event.app_id.as_deref().unwrap_or("-"),
        correlation_id = %event.correlation_id,
        "request"
    );
    if !cfg!(atrest_unguarded_bench) && !audit.record(event).await {
        // Fail closed: no result leaves without its audit record.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request's audit event could not be recorded, so its result is withheld.",
        )
        .into_response();
    }
    resp
}

/// Builds the TLS configuration from a PEM certificate chain and PEM private key.
pub fn load_tls_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, rustls::Error> {
    let bad = |what: &str| rustls::Error::General(format!("the TLS {what} could not be parsed"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("certificate chain"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| bad("private key"))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` until `shutdown` completes, then lets requests in
/// flight finish (up to a grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let req = req.map(Either::Left);
                async move { Ok::<_, std::convert::Infallible>(handle(state, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("requests still in flight at shutdown were abandoned"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_uuids() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{a}");
        assert_ne!(RequestIds::new().next(), RequestIds::new().next());
    }
}
