//! The listener: TLS, HTTP/1.1, routing by host, and one audit event per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::operation::Operation;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::http::request::Parts;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{authenticate, not_admin};
use crate::error::ApiError;
use crate::http::{form_pairs, path_segment, Body, Resp};
use crate::pipeline::{Ctx, Exchange};
use crate::state::{AppState, VAULT_HOST_SUFFIX};
use crate::{admin, arm, blob, graph, keyvault, token};

/// How long a client may take to finish the TLS handshake or send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
        route: Option<keyvault::Route<'a>>,
    },
    /// `/subscriptions/{s}/…`: the management API.
    Arm {
        /// The subscription the path names.
        subscription: &'a str,
        /// The operation, if the path names one.
        route: Option<arm::ArmRoute<'a>>,
    },
    /// `/atrest/…`: administration.
    Admin(Option<admin::Route>),
    /// A disk access URL, authorized by its signature.
    DiskAccess(blob::Route<'a>),
    /// `/v1.0/…`: the directory as Microsoft Graph.
    Graph(Option<graph::Route<'a>>),
    /// The token service and the unauthenticated endpoints.
    Open(token::OpenRoute<'a>),
    /// Nothing this server serves.
    Unrouted,
}

impl<'a> Route<'a> {
    fn parse(host: &'a str, method: &Method, path: &'a str, segments: &[&'a str]) -> Self {
        if let Some(vault) = host
            .strip_suffix(VAULT_HOST_SUFFIX)
            .filter(|name| !name.contains('.'))
        {
            let route = keyvault::Route::parse(method, path);
            return Route::KeyVault { vault, route };
        }
        if let Some(route) = blob::Route::parse(method, segments) {
            return Route::DiskAccess(route);
        }
        if let Some(route) = token::OpenRoute::parse(method, segments) {
            return Route::Open(route);
        }
        match segments {
            ["atrest", rest @ ..] => {
                let decoded: Vec<String> = rest.iter().map(|s| path_segment(s)).collect();
                Route::Admin(admin::Route::parse(method, &decoded))
            }
            ["tenants"] if *method == Method::GET => Route::Arm {
                subscription: "",
                route: Some(arm::ArmRoute::Resources(arm::resources::Route::tenants())),
            },
            ["v1.0", rest @ ..] => Route::Graph(graph::Route::parse(method, rest)),
            ["subscriptions", rest @ ..] => Route::Arm {
                subscription: rest.first().copied().unwrap_or(""),
                route: arm::ArmRoute::parse(method, rest),
            },
            _ => Route::Unrouted,
        }
    }

    fn operation(&self) -> Operation {
        match self {
            Route::KeyVault { route, .. } => route
                .as_ref()
                .map_or(Operation::Unknown, keyvault::Route::operation),
            Route::Arm { route, .. } => route
                .as_ref()
                .map_or(Operation::Unknown, arm::ArmRoute::operation),
            Route::Admin(route) => route
                .as_ref()
                .map_or(Operation::Unknown, admin::Route::operation),
            Route::DiskAccess(route) => route.operation(),
            Route::Graph(route) => route
                .as_ref()
                .map_or(Operation::Unknown, graph::Route::operation),
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
            let result = keyvault::handle(state, ctx, &caller, vault, route, parts, body).await;
            ctx.caller = Some(caller);
            result
        }
        Route::Arm {
            subscription,
            route,
        } => {
            let caller = authenticate(identity.management_audiences())?;
            let result =
                arm::management(state, ctx, &caller, subscription, route, parts, body).await;
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
        Route::DiskAccess(route) => blob::handle(state, ctx, route, parts, body).await,
        Route::Graph(route) => {
            let caller = authenticate(identity.graph_audiences())?;
            let result = match route {
                _ if !identity.is_admin(&caller.object_id)? => Err(ApiError::new(
                    hyper::StatusCode::FORBIDDEN,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                )),
                None => Err(ApiError::no_route(&parts.method, parts.uri.path())),
                Some(route) => {
                    let query = form_pairs(parts.uri.query().unwrap_or(""));
                    // Graph names a malformed request `BadRequest`, as ARM does.
                    graph::handle(state, route, &query, body)
                        .await
                        .map_err(ApiError::in_arm_terms)
                }
            };
            ctx.caller = Some(caller);
            result
        }
        Route::Open(route) => token::open(state, ctx, route, parts, body).await,
        Route::Unrouted => Err(ApiError::no_route(&parts.method, parts.uri.path())),
    }
}

/// `path_and_query` with the value of a `sig` parameter (a disk access URL's signature,
/// a bearer credential) replaced, as storage logs show SAS requests.
fn redact_signature(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.into();
    };
    if !query.split('&').any(|p| p.starts_with("sig=")) {
        return path_and_query.into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|p| {
            if p.starts_with("sig=") {
                "sig=REDACTED"
            } else {
                p
            }
        })
        .collect();
    format!("{path}?{}", query.join("&")).into()
}

/// Serves one request and records its audit event before answering.
pub(crate) async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Body>) -> Resp {
    let (parts, body) = req.into_parts();
    let host = request_host(&parts);
    let path = parts.uri.path();
    // Clients percent-encode path segments (ARM's backup items are `VM%3B…`); routes see
    // them decoded.
    let decoded: Vec<std::borrow::Cow<'_, str>> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy())
        .collect();
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let route = Route::parse(&host, &parts.method, path, &segments);
    let (mut exchange, mut ctx) = Exchange::begin(&state, route.operation(), peer);
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    exchange.correlation_id = header("x-ms-client-request-id")
        .filter(|c| c.len() <= 200)
        .unwrap_or_else(|| state.request_ids.next());
    exchange.client_info = header(USER_AGENT.as_str()).unwrap_or_default();
    exchange.method = parts.method.to_string();
    exchange.request_uri = format!(
        "https://{host}:{}{}",
        state.settings.port,
        redact_signature(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
    );
    let result = dispatch(&state, &mut ctx, route, &parts, body).await;
    let (mut resp, description) = match result {
        Ok(resp) => (resp, String::new()),
        Err(e) => {
            let message = e.message.clone();
            (e.into_response(), message)
        }
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&exchange.correlation_id) {
        headers.insert("x-ms-client-request-id", v.clone());
        headers.insert("x-ms-correlation-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.request_ids.next()) {
        headers.insert("x-ms-request-id", v);
    }
    let status = resp.status();
    match exchange.finish(&state, ctx, status, description).await {
        Ok(()) => resp,
        Err(withheld) => withheld.into_response(),
    }
}

/// Builds the TLS configuration from a PEM certificate chain and PEM private key.
pub fn load_tls_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, rustls::Error> {
    let bad = |what: &str| rustls::Error::General(format!("the TLS {what} could not be parsed"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("certificate chain"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| bad("private key"))?;
    let mut config = ServerConfig::builder_with_provider(crate::client::tls_provider())
        .with_safe_default_protocol_versions()?
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
                // One freshness check of the shared state serves the whole request.
                let response = atrest_runtime::within_request(handle(state, peer, req));
                async move { Ok::<_, std::convert::Infallible>(response.await) }
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
    fn signatures_are_redacted() {
        assert_eq!(
            redact_signature("/a/b.vhd?sv=1&sig=secret&se=2"),
            "/a/b.vhd?sv=1&sig=REDACTED&se=2"
        );
        assert_eq!(
            redact_signature("/keys?api-version=7.6"),
            "/keys?api-version=7.6"
        );
        assert_eq!(redact_signature("/x?design=1"), "/x?design=1");
    }
}
