//! A small HTTP client for the CLI, the integration tests and alert webhooks: one request
//! per connection; HTTPS trusts only the instance CA. Names under `localhost` resolve to the
//! loopback address (RFC 6761), so vault hosts need no `/etc/hosts` entries here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request};

/// The request method, re-exported so clients need not depend on `hyper`.
pub use hyper::Method;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a request did not produce a response.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `https://host[:port]/…` or `http://host[:port]/…`.
    #[error("unsupported URL '{0}'; expected https://host[:port]/path or http://host[:port]/path")]
    Url(String),
    /// The CA certificate could not be parsed.
    #[error("the CA certificate could not be parsed")]
    Ca,
    /// Connecting or the TLS handshake failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A response with its whole body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (`null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTPS client that trusts one CA.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting the CA certificate(s) in `ca_pem`.
    pub fn new(ca_pem: &str) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|_| ClientError::Ca)?)
                .map_err(|_| ClientError::Ca)?;
        }
        if roots.is_empty() {
            return Err(ClientError::Ca);
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        let (rest, tls, default_port) =
            match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                (Some(rest), _) => (rest, true, 443),
                (None, Some(rest)) => (rest, false, 80),
                (None, None) => return Err(ClientError::Url(url.to_owned())),
            };
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| ClientError::Url(url.to_owned()))?,
            ),
            None => (authority, default_port),
        };
        let host = host.to_ascii_lowercase();
        let connect_err = |e| ClientError::Connect(authority.to_owned(), e);
        let tcp = if host == "localhost" || host.ends_with(".localhost") {
            TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
        } else {
            TcpStream::connect((host.as_str(), port)).await
        }
        .map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let mut sender = if tls {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(url.to_owned()))?;
            let stream = self.tls.connect(name, tcp).await.map_err(connect_err)?;
            handshake(stream).await?
        } else {
            handshake(tcp).await?
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// An HTTP/1.1 connection over `io`, driven in the background.
async fn handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
