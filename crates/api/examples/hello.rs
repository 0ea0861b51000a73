//! The benchmark anchor: the smallest HTTPS server on atrest's own TLS and HTTP stack
//! (rustls with AWS-LC, hyper HTTP/1.1, the same TLS configuration and allocator),
//! answering "hello". Prints its port, then serves until killed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
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
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    b"hello",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
