//! Two loads for benches/load.sh that wrk cannot make, over HTTP/1.1 keep-alive connections with
//! TLS (verified against CA), from one client thread like `wrk -t1`:
//!
//!     rate open ADDR PATH BODY CA CONNECTIONS RATE SECONDS
//!     rate fill ADDR CA COUNT CONNECTIONS
//!
//! `open` is an open-loop (constant-rate) run: request i is *due* at start + i / RATE, whether or
//! not earlier answers have come back, and its latency is measured from that due time, so a
//! server that stalls is charged for every request that waited behind the stall (no coordinated
//! omission, as wrk2 does it). A pacer thread releases due requests into one queue; whichever
//! connection is free sends the next (an HTTP/1.1 connection has one request in flight, as in
//! the apiserver's pool). Prints
//! `requests=N errors=N seconds=S p50_us=N p99_us=N p999_us=N max_us=N lag_p99_us=N unsent=N`,
//! where `lag` is how late the pacer released requests (the client's own resolution; a request
//! then waits for a free connection, which counts in its latency) and `unsent` counts
//! requests still queued or unanswered 2 s after the schedule ended; they enter the
//! percentiles with the latency they had reached then (a lower bound).
//!
//! `fill` sends COUNT ImageReviews (`/image_policy`) with COUNT distinct images as fast as
//! CONNECTIONS connections allow, to fill the decision cache with COUNT distinct entries: even i
//! `registry.my.com/load/app-i:1.0` (allowed by config/examples/policies.yaml), odd i
//! `quay.io/load/app-i:1.0` (denied by its trusted-registries). Every answer must be 200 and
//! the expected decision. Prints `requests=N errors=N seconds=S allowed=N denied=N`.
//!
//! Latencies go into a log-linear histogram (exact below 512 µs, then 256 steps per power of
//! two: within 0.4%), so memory is bounded whatever the rate and duration.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: rate open ADDR PATH BODY CA CONNECTIONS RATE SECONDS | rate fill ADDR CA COUNT CONNECTIONS";

/// How long after the schedule ends answers are still waited for.
const DRAIN: Duration = Duration::from_secs(2);

/// Due requests released but not yet sent; past it the pacer waits (the due times it releases
/// later are still the scheduled ones, so no latency is hidden).
const QUEUE: usize = 1 << 16;

/// Largest answer read: the servers measured answer a few hundred bytes.
const MAX_ANSWER: usize = 1 << 20;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["open", addr, path, body, ca, connections, rate, seconds] => {
            let rate: f64 = rate.parse()?;
            let seconds: f64 = seconds.parse()?;
            if !(rate > 0.0 && seconds > 0.0) {
                return Err("RATE and SECONDS must be positive".into());
            }
            open(
                Client::new(addr, ca)?,
                path,
                Bytes::from(std::fs::read(body)?),
                connections.parse()?,
                rate,
                Duration::from_secs_f64(seconds),
            )
        }
        ["fill", addr, ca, count, connections] => {
            fill(Client::new(addr, ca)?, count.parse()?, connections.parse()?)
        }
        _ => Err(USAGE.into()),
    }
}

/// One client thread, like wrk -t1.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Opens keep-alive HTTP/1.1 connections over TLS to one server.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    fn new(addr: &str, ca: &str) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            addr: addr.parse()?,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// POSTs `body` to `path`; the answer's body, or an error for a failure or a status other than 200.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    body: Bytes,
) -> Result<Bytes, Error> {
    sender.ready().await?;
    let request = http::Request::post(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&answer)).into());
    }
    Ok(answer)
}

/// A log-linear latency histogram in µs: exact below 512, then 256 buckets per power of two.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    /// Values are clamped here (2^40 µs is 12 days).
    const TOP_BIT: u32 = 40;
    const SUB_BITS: u32 = 8;

    fn new() -> Self {
        let buckets = ((Self::TOP_BIT - Self::SUB_BITS + 2) << Self::SUB_BITS) as usize;
        Self {
            counts: vec![0; buckets],
            total: 0,
            max: 0,
        }
    }

    fn index(us: u64) -> usize {
        let us = us.min((1 << Self::TOP_BIT) - 1);
        if us < 2 << Self::SUB_BITS {
            return us as usize;
        }
        let shift = 63 - us.leading_zeros() - Self::SUB_BITS;
        ((shift as usize) << Self::SUB_BITS) + (us >> shift) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn value(index: usize) -> u64 {
        if index < 2 << Self::SUB_BITS {
            return index as u64;
        }
        let shift = (index >> Self::SUB_BITS) - 1;
        let mantissa = ((index & ((1 << Self::SUB_BITS) - 1)) | (1 << Self::SUB_BITS)) as u64;
        ((mantissa + 1) << shift) - 1
    }

    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at or below which `per_mille`‰ of the samples lie (0 when empty).
    fn quantile(&self, per_mille: u64) -> u64 {
        let rank = (self.total * per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(index).min(self.max);
            }
        }
        0
    }
}

/// What one connection saw.
struct Stats {
    latency: Histogram,
    answered: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            answered: 0,
            errors: 0,
            first_error: None,
        }
    }
}

fn open(
    client: Client,
    path: &str,
    body: Bytes,
    connections: usize,
    rate: f64,
    seconds: Duration,
) -> Result<(), Error> {
    // Requests due within the run; the last is due just before its end.
    let total = (rate * seconds.as_secs_f64()).floor() as u64;
    runtime()?.block_on(async {
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections {
            senders.push(client.connect().await?);
        }
        let (tx, rx) = mpsc::channel::<Instant>(QUEUE);
        let queue = Arc::new(Mutex::new(rx));
        let start = Instant::now() + Duration::from_millis(10);
        let deadline = start + seconds + DRAIN;
        let pacer = std::thread::spawn(move || pace(&tx, start, rate, total, deadline));
        let path: Arc<str> = Arc::from(path);
        let workers: Vec<_> = senders
            .into_iter()
            .map(|sender| {
                tokio::spawn(worker(
                    client.clone(),
                    sender,
                    queue.clone(),
                    path.clone(),
                    body.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut all = Stats::new();
        let mut unsent = 0;
        for handle in workers {
            let (stats, late) = handle.await?;
            all.latency.merge(&stats.latency);
            all.answered += stats.answered;
            all.errors += stats.errors;
            all.first_error = all.first_error.or(stats.first_error);
            unsent += late;
        }
        // Released but never sent, then never released: late by at least deadline - due.
        let mut rx = queue.lock().await;
        rx.close();
        while let Ok(due) = rx.try_recv() {
            all.latency.record(deadline.saturating_duration_since(due));
            unsent += 1;
        }
        let (released, lag) = pacer.join().map_err(|_| "the pacer thread panicked")?;
        for i in released..total {
            all.latency
                .record(deadline.saturating_duration_since(due_at(start, rate, i)));
            unsent += 1;
        }
        if let Some(e) = &all.first_error {
            eprintln!("rate: {} errors, the first: {e}", all.errors);
        }
        println!(
            "requests={} errors={} seconds={:.3} p50_us={} p99_us={} p999_us={} max_us={} lag_p99_us={} unsent={unsent}",
            all.answered,
            all.errors,
            seconds.as_secs_f64(),
            all.latency.quantile(500),
            all.latency.quantile(990),
            all.latency.quantile(999),
            all.latency.max,
            lag.quantile(990),
        );
        Ok(())
    })
}

fn due_at(start: Instant, rate: f64, i: u64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Releases each request at its due time (sleeping in between: ~50-100 µs of timer slack) until
/// all `total` are out or the deadline passes; returns how many it released and how late.
fn pace(
    tx: &mpsc::Sender<Instant>,
    start: Instant,
    rate: f64,
    total: u64,
    deadline: Instant,
) -> (u64, Histogram) {
    let mut lag = Histogram::new();
    let mut released = 0;
    while released < total {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        while released < total {
            let due = due_at(start, rate, released);
            if due > now {
                break;
            }
            // Blocks while the queue is full; an error means the workers are gone.
            if tx.blocking_send(due).is_err() {
                return (released, lag);
            }
            lag.record(due.elapsed());
            released += 1;
        }
        if released < total {
            let wait = due_at(start, rate, released).saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
    (released, lag)
}

/// Sends due requests until the queue closes or the deadline passes; returns its stats and how
/// many of its requests were unanswered at the deadline (recorded as late as they were then).
async fn worker(
    client: Client,
    mut sender: SendRequest<Full<Bytes>>,
    queue: Arc<Mutex<mpsc::Receiver<Instant>>>,
    path: Arc<str>,
    body: Bytes,
    deadline: Instant,
) -> (Stats, u64) {
    let deadline_tokio = tokio::time::Instant::from_std(deadline);
    let mut stats = Stats::new();
    let mut unsent = 0;
    loop {
        let due = {
            let mut rx = queue.lock().await;
            tokio::select! {
                due = rx.recv() => due,
                () = tokio::time::sleep_until(deadline_tokio) => None,
            }
        };
        let Some(due) = due else { break };
        match tokio::time::timeout_at(deadline_tokio, post(&mut sender, &path, body.clone())).await
        {
            Ok(Ok(_)) => {
                stats.latency.record(due.elapsed());
                stats.answered += 1;
            }
            Ok(Err(e)) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| e.to_string());
                // The connection may be unusable; a failed reconnect is one more error.
                match client.connect().await {
                    Ok(fresh) => sender = fresh,
                    Err(e) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            Err(_) => {
                stats
                    .latency
                    .record(deadline.saturating_duration_since(due));
                unsent += 1;
                break;
            }
        }
    }
    (stats, unsent)
}

fn image_review(i: u64) -> (Bytes, bool) {
    let allowed = i.is_multiple_of(2);
    let image = if allowed {
        format!("registry.my.com/load/app-{i}:1.0")
    } else {
        format!("quay.io/load/app-{i}:1.0")
    };
    let body = format!(
        r#"{{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{{"containers":[{{"image":"{image}"}}],"namespace":"team-a"}}}}"#
    );
    (Bytes::from(body), allowed)
}

fn fill(client: Client, count: u64, connections: usize) -> Result<(), Error> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let results = runtime()?.block_on(async {
        let mut loops = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut sender = client.connect().await?;
            let next = next.clone();
            loops.push(tokio::spawn(async move {
                let (mut allowed, mut denied) = (0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, Error>((allowed, denied));
                    }
                    let (body, expect_allowed) = image_review(i);
                    let answer = post(&mut sender, "/image_policy", body).await?;
                    let answer = String::from_utf8_lossy(&answer);
                    let want = if expect_allowed {
                        r#""allowed":true"#
                    } else {
                        r#""allowed":false"#
                    };
                    if !answer.contains(want) {
                        return Err(format!("review {i}: expected {want}, got {answer}").into());
                    }
                    if expect_allowed {
                        allowed += 1;
                    } else {
                        denied += 1;
                    }
                }
            }));
        }
        let mut results = Vec::with_capacity(connections);
        for handle in loops {
            results.push(handle.await?);
        }
        Ok::<_, Error>(results)
    })?;
    let (mut allowed, mut denied) = (0, 0);
    for result in results {
        let (a, d) = result?;
        allowed += a;
        denied += d;
    }
    println!(
        "requests={} errors=0 seconds={:.3} allowed={allowed} denied={denied}",
        allowed + denied,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_contiguous_and_within_half_a_percent() {
        let mut last = 0;
        for us in 0..(1u64 << 20) {
            let index = Histogram::index(us);
            assert!(index == last || index == last + 1, "gap at {us}");
            last = index;
            let top = Histogram::value(index);
            assert!(
                top >= us && top - us <= us / 200,
                "{us} in a bucket up to {top}"
            );
        }
    }
}
