//! The load benchmark's floor: bare hyper + rustls with gatehouse's own TLS settings
//! (`gatehouse::tls::server_config`: TLS 1.3 and 1.2, ring, ALPN h2 and http/1.1), on the same
//! multi-threaded tokio runtime. It reads the whole body and answers a constant: no routing, no
//! middleware, no decoding, no log. What any server built on this stack pays per request, so
//! gatehouse's figures are read as ratios to it (benches/load.sh, BENCHMARKS.md).
//!
//!     floor pki DIR                    # writes DIR/ca.pem, DIR/tls.crt, DIR/tls.key
//!     floor serve ADDR CERT KEY        # prints "floor listening on https://ADDR"

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The answer: an AdmissionReview allow of typical size.
const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"5f0c1a3e-8d2b-4e6f-9a7c-1b3d5e7f9a0c","allowed":true}}"#;

/// gatehouse's default `limits.max_body`: the floor bounds the body the same way.
const MAX_BODY: usize = 4 << 20;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["pki", dir] => pki(Path::new(dir)),
        ["serve", addr, cert, key] => serve(addr, Path::new(cert), Path::new(key)),
        _ => Err("usage: floor pki DIR | floor serve ADDR CERT KEY".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One CA and serving certificate for both servers, so both handshakes sign with the same key.
fn pki(dir: &Path) -> Result<(), Error> {
    let pki = gatehouse::certs::generate(&["localhost", "127.0.0.1"])?;
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem)?;
    std::fs::write(dir.join("tls.crt"), &pki.cert_pem)?;
    // Private to its owner: gatehouse refuses a key file others can read.
    let mut key = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut key, 0o600);
    std::io::Write::write_all(
        &mut key
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("tls.key"))?,
        pki.key_pem.as_bytes(),
    )?;
    Ok(())
}

fn serve(addr: &str, cert: &Path, key: &Path) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr: SocketAddr = addr.parse()?;
    let (cert_pem, key_pem) = (
        std::fs::read_to_string(cert)?,
        std::fs::read_to_string(key)?,
    );
    let (chain, key) = gatehouse::tls::parse_pem(&cert_pem, &key_pem)?;
    let acceptor = TlsAcceptor::from(gatehouse::tls::server_config(chain, key, None)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(accept_loop(addr, acceptor))
}

async fn accept_loop(addr: SocketAddr, acceptor: TlsAcceptor) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await?;
    println!("floor listening on https://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => continue,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(tls);
            let service = hyper::service::service_fn(answer);
            let _ = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
            };
        });
    }
}

async fn answer(req: http::Request<Incoming>) -> Result<http::Response<Full<Bytes>>, Error> {
    let body = Limited::new(req.into_body(), MAX_BODY).collect().await?;
    std::hint::black_box(body.to_bytes());
    let mut response = http::Response::new(Full::new(Bytes::from_static(ANSWER)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
