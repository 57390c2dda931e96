//! A new TLS connection for every request, the load `wrk` cannot make: CONCURRENCY loops, each
//! connecting, doing a full TLS 1.3 handshake (no session resumption), sending one HTTP/1.1
//! POST of BODY to PATH and reading the answer, for SECONDS. It prices what a client that does
//! not keep connections alive costs the server: accept, handshake, one request, close.
//!
//!     handshakes ADDR PATH BODY CA CONCURRENCY SECONDS
//!
//! prints `requests=N errors=N seconds=S p50_us=N p99_us=N` (latency of the whole exchange).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Latencies kept per loop: bounds memory on a fast machine (more samples add nothing).
const MAX_SAMPLES: usize = 1 << 20;

struct Job {
    addr: SocketAddr,
    path: String,
    body: Bytes,
    tls: tokio_rustls::TlsConnector,
    until: Instant,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handshakes: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, body, ca, concurrency, seconds] = args.as_slice() else {
        return Err("usage: handshakes ADDR PATH BODY CA CONCURRENCY SECONDS".into());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection pays the full handshake, as a client without a session cache does.
    config.resumption = rustls::client::Resumption::disabled();
    let seconds: u64 = seconds.parse()?;
    let job = Arc::new(Job {
        addr: addr.parse()?,
        path: path.clone(),
        body: Bytes::from(std::fs::read(body)?),
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        until: Instant::now() + Duration::from_secs(seconds),
    });
    let concurrency: usize = concurrency.parse()?;
    // One client thread, like wrk -t1.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let results = runtime.block_on(async {
        let loops: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(client_loop(job.clone())))
            .collect();
        let mut results = Vec::new();
        for handle in loops {
            results.push(handle.await);
        }
        results
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for result in results {
        let (samples, failed) = result?;
        latencies.extend(samples);
        errors += failed;
    }
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests={} errors={errors} seconds={elapsed:.3} p50_us={} p99_us={}",
        latencies.len(),
        pct(50),
        pct(99)
    );
    Ok(())
}

/// Requests until the deadline; returns the latencies (µs) of successful ones and the failures.
async fn client_loop(job: Arc<Job>) -> (Vec<u32>, u64) {
    let mut samples = Vec::new();
    let mut errors = 0;
    while Instant::now() < job.until {
        let start = Instant::now();
        match exchange(&job).await {
            Ok(()) if samples.len() < MAX_SAMPLES => {
                samples.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX))
            }
            Ok(()) => {}
            Err(_) => errors += 1,
        }
    }
    (samples, errors)
}

async fn exchange(job: &Job) -> Result<(), Error> {
    let tcp = TcpStream::connect(job.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = job
        .tls
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let conn = tokio::spawn(conn);
    let request = http::Request::post(job.path.as_str())
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONNECTION, "close")
        .body(Full::new(job.body.clone()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    drop(sender);
    let _ = conn.await;
    if status != http::StatusCode::OK {
        return Err(format!("status {status}").into());
    }
    Ok(())
}
