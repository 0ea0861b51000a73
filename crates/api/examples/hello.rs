//! The benchmark anchor: the smallest HTTPS server on atrest's own TLS and HTTP stack
//! (rustls with AWS-LC, hyper HTTP/1.1, the same TLS configuration and allocator),
//! answering "hello". Prints its port, then serves until killed.
//!
//! `hello sign-p256` and `hello unwrap-rsa2048` answer each request with an ES256 signature
//! or an RSA-OAEP-256 unwrap made by atrest's own software key provider instead: the most
//! private-key operations a server on this stack can serve per second on this machine, with
//! no token, routing, JSON, authorization or audit of its own.

use std::convert::Infallible;
use std::sync::Arc;

use atrest_crypto::{CipherParams, Curve, KeyHandle, KeyProvider, KeySpec, SoftwareKeys};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What each request is answered with.
#[derive(Clone)]
enum Answer {
    Hello,
    /// A fixed SHA-256 digest is signed (after the request body is read).
    SignP256(Arc<dyn KeyHandle>),
    /// A fixed wrapped 32-byte key is unwrapped (after the request body is read).
    UnwrapRsa2048(Arc<dyn KeyHandle>, Arc<[u8]>),
}

impl Answer {
    async fn respond(
        self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        if !matches!(self, Answer::Hello) {
            let _ = request.into_body().collect().await;
        }
        let body = match self {
            Answer::Hello => Bytes::from_static(b"hello"),
            Answer::SignP256(key) => {
                Bytes::from(key.sign("ES256", &[7; 32]).expect("P-256 signature"))
            }
            Answer::UnwrapRsa2048(key, wrapped) => {
                let unwrapped = key
                    .decrypt(OAEP, &wrapped, CipherParams::default())
                    .expect("RSA unwrap");
                Bytes::copy_from_slice(&unwrapped)
            }
        };
        Ok(hyper::Response::new(Full::new(body)))
    }
}

const OAEP: &str = "RSA-OAEP-256";

fn generate(spec: KeySpec) -> Arc<dyn KeyHandle> {
    SoftwareKeys.generate(spec).expect("key generation")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let answer = match std::env::args().nth(1).as_deref() {
        None => Answer::Hello,
        Some("sign-p256") => Answer::SignP256(generate(KeySpec::Ec(Curve::P256))),
        Some("unwrap-rsa2048") => {
            let key = generate(KeySpec::Rsa(2048));
            let wrapped = key
                .encrypt(OAEP, &[7; 32], CipherParams::default())
                .expect("RSA wrap")
                .ciphertext;
            Answer::UnwrapRsa2048(key, wrapped.into())
        }
        Some(other) => {
            eprintln!("usage: hello [sign-p256|unwrap-rsa2048] (not {other:?})");
            std::process::exit(2);
        }
    };
    let id = atrest_crypto::generate_tls_identity(
        &["localhost"],
        &[std::net::Ipv4Addr::LOCALHOST.into()],
    )
    .expect("certificate");
    let tls = atrest_api::load_tls_config(&id.chain_pem, &id.key_pem).expect("TLS configuration");
    let acceptor = TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let answer = answer.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(|request| answer.clone().respond(request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
