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

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

/// The port of an `http://` or `https://` URL: the explicit one, or the scheme's default.
/// `None` if `url` is not such a URL.
pub fn port_of(url: &str) -> Option<u16> {
    Target::parse(url).ok().map(|t| t.port)
}

/// Where a request goes, from its absolute `http://` or `https://` URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// The host to connect to and to check the certificate against, lower-cased; an IPv6
    /// literal without its brackets.
    host: String,
    port: u16,
    /// Path and query, `/` if empty.
    path: String,
}

/// The TLS primitives: AWS-LC's, named rather than left to the process default (a
/// dependency of the object-store backend brings a second provider into the build).
pub(crate) fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Target {
    fn parse(url: &str) -> Result<Self, ClientError> {
        let bad_url = || ClientError::Url(url.to_owned());
        let uri: hyper::Uri = url.parse().map_err(|_| bad_url())?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("https") => (true, 443),
            Some("http") => (false, 80),
            _ => return Err(bad_url()),
        };
        let host = uri.host().ok_or_else(bad_url)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase();
        Ok(Target {
            tls,
            authority: uri.authority().ok_or_else(bad_url)?.as_str().to_owned(),
            host,
            port: uri.port_u16().unwrap_or(default_port),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }
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
        let config = rustls::ClientConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| ClientError::Ca)?
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
        let Target {
            tls,
            authority,
            host,
            port,
            path,
        } = Target::parse(url)?;
        let connect_err = |e| ClientError::Connect(authority.clone(), e);
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
            .header(hyper::header::HOST, authority.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_urls() {
        assert_eq!(port_of("https://localhost:8443"), Some(8443));
        assert_eq!(port_of("https://[::1]:443"), Some(443));
        assert_eq!(port_of("https://[::1]:9443/"), Some(9443));
        assert_eq!(port_of("https://localhost"), Some(443));
        assert_eq!(port_of("localhost:8443/x"), None);
    }

    #[test]
    fn targets_of_urls() {
        let t = Target::parse("https://[::1]:9443/keys/k?api-version=7.6").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                authority: "[::1]:9443".into(),
                host: "::1".into(),
                port: 9443,
                path: "/keys/k?api-version=7.6".into(),
            }
        );
        let t = Target::parse("http://Example.localhost").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "example.localhost", 80, "/")
        );
        assert_eq!(Target::parse("https://localhost").unwrap().port, 443);
        for bad in [
            "ftp://localhost/",
            "localhost:8443",
            "/relative",
            "https://",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("a-b._~Z9"), "a-b._~Z9");
        assert_eq!(percent_encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }
}
