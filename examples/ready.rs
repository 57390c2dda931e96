//! Start to ready: how long from spawning gatehouse until its first successful `/readyz`, over
//! TLS on the webhook port and over plain HTTP on the ops listener.
//!
//!     ready GATEHOUSE CONFIG RUNS [CERT KEY]
//!
//! Each of RUNS starts spawns `GATEHOUSE serve --config C --listen 127.0.0.1:P`, where C is
//! CONFIG plus `ops.listen: 127.0.0.1:Q` (so CONFIG must not set `ops`), with `--tls-cert CERT
//! --tls-key KEY` when given, else gatehouse generates its development certificate at start.
//! From just before the spawn, it polls the webhook port (TCP connect, TLS handshake, `GET
//! /readyz`, answer 200) in a loop with a 100 µs pause after each refused attempt; once that
//! answers, it polls the ops port the same way; then it kills the process. Prints
//! `starts=N main_median_us=N main_min_us=N main_max_us=N ops_median_us=N ops_max_us=N poll_us=N`
//! (`ops` is when both listeners had answered; `poll_us` is the mean time from one refused
//! attempt to the next, the resolution). The client does not verify the certificate chain (the generated CA is not known
//! before the start; the time is the server's), but does check the handshake signature.
//! SIGTERM or SIGINT stops the run and the server it started.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Pause after a refused attempt: fine enough against a 50 ms target, coarse enough not to take
/// a core from the server starting on a 2-core machine.
const PAUSE: Duration = Duration::from_micros(100);

/// A start that has not answered by then failed.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Set on SIGTERM or SIGINT: the poll loop then returns, and the running server is killed.
static STOP: AtomicBool = AtomicBool::new(false);

/// Sets [`STOP`] on SIGTERM or SIGINT (load.sh stops its clients with SIGTERM).
fn watch_signals() -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        STOP.store(true, Ordering::SeqCst);
    });
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (gatehouse, config, runs, pair) = match args.as_slice() {
        [g, c, r] => (g, c, r, None),
        [g, c, r, cert, key] => (g, c, r, Some((cert, key))),
        _ => return Err("usage: ready GATEHOUSE CONFIG RUNS [CERT KEY]".into()),
    };
    watch_signals()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = rustls::crypto::ring::default_provider();
    let mut tls = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let base = std::fs::read_to_string(config)?;
    let dir = tempfile::tempdir()?;
    let runs: usize = runs.parse()?;
    if runs == 0 {
        return Err("RUNS must be at least 1".into());
    }
    let (mut main, mut ops) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let (mut refused, mut polling) = (0u64, Duration::ZERO);
    for run in 0..runs {
        let (main_addr, ops_addr) = (free_port()?, free_port()?);
        let config = dir.path().join(format!("ready-{run}.yaml"));
        let errors = dir.path().join(format!("ready-{run}.err"));
        std::fs::write(&config, format!("{base}\nops:\n  listen: {ops_addr}\n"))?;
        let mut command = Command::new(gatehouse);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(main_addr.to_string())
            .arg("--log-format")
            .arg("json")
            // A generated CA is also written to $TMPDIR/gatehouse-ca.pem: keep it in ours.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors)?);
        if let Some((cert, key)) = pair {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let start = Instant::now();
        let mut child = Running(command.spawn()?);
        let mut poll = |ask: &dyn Fn() -> bool| -> Result<Duration, Error> {
            let begun = Instant::now();
            loop {
                let attempt = Instant::now();
                if ask() {
                    polling += attempt - begun;
                    return Ok(start.elapsed());
                }
                refused += 1;
                if let Some(status) = child.0.try_wait()? {
                    let err = std::fs::read_to_string(&errors).unwrap_or_default();
                    return Err(format!("gatehouse exited ({status}) before ready: {err}").into());
                }
                if STOP.load(Ordering::SeqCst) {
                    return Err("interrupted".into());
                }
                if start.elapsed() > GIVE_UP {
                    return Err(format!("not ready after {GIVE_UP:?}").into());
                }
                std::thread::sleep(PAUSE);
            }
        };
        main.push(poll(&|| readyz(main_addr, Some(&tls)))?);
        ops.push(poll(&|| readyz(ops_addr, None))?);
    }
    main.sort_unstable();
    ops.sort_unstable();
    let us = |d: Duration| d.as_micros();
    let median = |v: &[Duration]| us(v[v.len() / 2]);
    println!(
        "starts={runs} main_median_us={} main_min_us={} main_max_us={} ops_median_us={} ops_max_us={} poll_us={}",
        median(&main),
        us(main[0]),
        us(main[runs - 1]),
        median(&ops),
        us(ops[runs - 1]),
        us(polling) / u128::from(refused.max(1)),
    );
    Ok(())
}

/// Kills the server when dropped, whatever the outcome of its start.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free now on 127.0.0.1 (the server binds it a moment later; a clash fails the start).
fn free_port() -> Result<SocketAddr, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// True when `GET /readyz` on `addr` answers 200, over TLS when `tls` is given.
fn readyz(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> bool {
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = Vec::new();
    let read = match tls {
        Some(tls) => {
            let Ok(name) = ServerName::try_from("localhost") else {
                return false;
            };
            let Ok(conn) = rustls::ClientConnection::new(tls.clone(), name) else {
                return false;
            };
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            stream
                .write_all(request)
                .and_then(|()| stream.read_to_end(&mut answer))
        }
        None => tcp
            .write_all(request)
            .and_then(|()| tcp.read_to_end(&mut answer)),
    };
    // A close without close_notify after a whole answer still counts.
    (read.is_ok() || !answer.is_empty()) && answer.starts_with(b"HTTP/1.1 200")
}

/// Accepts any certificate, but checks the handshake's signature with it.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
