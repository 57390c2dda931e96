//! One access-log line: formatted by hand straight into the batching writer's buffer (what a
//! request pays now, JSON and text), against the same line as a tracing event through
//! tracing-subscriber's JSON formatter into the buffer (what it paid before), and that event
//! written with one `write` system call per line to /dev/null (before batching).
//!
//!     cargo bench --bench log
//!
//! Criterion times the calling thread only (wall clock), which misses the writer thread's work
//! and suffers on a busy machine; so it also prints the **process CPU per line** (utime + stime
//! from /proc/self/stat over many lines, the writer thread and the kernel's `write` included)
//! when writing to a temporary file, as a JSON access log to a file does in production.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tracing_subscriber::EnvFilter;

use gatehouse::config::LogFormat;
use gatehouse::logging::{subscriber, AccessLine, BufferLimits, LogBuffer};

/// The fields of a /validate request's line.
fn with_line(f: impl FnOnce(&AccessLine<'_>)) {
    let uri = http::Uri::from_static("/validate?timeout=10s");
    f(&AccessLine {
        method: &http::Method::POST,
        uri: &uri,
        status: 200,
        latency_us: 87,
        version: http::Version::HTTP_11,
        peer: Some(SocketAddr::from(([127, 0, 0, 1], 40312))),
        user: None,
    })
}

/// The line as a tracing event (through the current dispatcher's formatter).
fn access_line() {
    with_line(|line| line.emit());
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log_line");
    let devnull = || std::fs::File::create("/dev/null").expect("/dev/null");

    let (buffer, guard) = LogBuffer::new(devnull(), BufferLimits::default()).expect("buffer");
    for format in [LogFormat::Json, LogFormat::Text] {
        let name = format!("{format:?}_by_hand").to_lowercase();
        group.bench_function(name, |b| {
            b.iter(|| with_line(|line| buffer.access(format, line)))
        });
    }
    let buffered = subscriber(
        LogFormat::Json,
        buffer.clone(),
        false,
        EnvFilter::new("info"),
    );
    group.bench_function("json_buffered", |b| {
        tracing::dispatcher::with_default(&buffered, || b.iter(access_line))
    });
    assert!(buffer.flush(Duration::from_secs(30)));
    // The criterion loop outruns /dev/null's writer only if a write stalls; say so if it did.
    println!(
        "lines dropped by the bound during the run: {}",
        buffer.dropped()
    );
    drop(guard);

    // One write(2) per line, as tracing-subscriber's stdout writer did.
    let direct = subscriber(
        LogFormat::Json,
        Arc::new(devnull()),
        false,
        EnvFilter::new("info"),
    );
    group.bench_function("json_write_per_line", |b| {
        tracing::dispatcher::with_default(&direct, || b.iter(access_line))
    });
    group.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let file = || std::fs::File::create(dir.path().join("access.log")).expect("log file");
    let (buffer, guard) = LogBuffer::new(file(), BufferLimits::default()).expect("buffer");
    let before = process_cpu_seconds();
    for _ in 0..LINES {
        with_line(|line| buffer.access(LogFormat::Json, line));
    }
    assert!(buffer.flush(Duration::from_secs(30)));
    print_cpu("json_by_hand", before, process_cpu_seconds());
    let buffered = subscriber(
        LogFormat::Json,
        buffer.clone(),
        false,
        EnvFilter::new("info"),
    );
    cpu_per_line("json_buffered", &buffered, || {
        assert!(buffer.flush(Duration::from_secs(30)));
    });
    println!("lines dropped: {}", buffer.dropped());
    drop(guard);
    let direct = subscriber(
        LogFormat::Json,
        Arc::new(file()),
        false,
        EnvFilter::new("info"),
    );
    cpu_per_line("json_write_per_line", &direct, || {});
}

/// Lines per CPU measurement: ~1 s of CPU, so the 10 ms tick of /proc is ~1%.
const LINES: u32 = 300_000;

/// Logs [`LINES`] lines through `dispatch`, then `settle` (flush), and prints the process's
/// CPU time per line.
fn cpu_per_line(name: &str, dispatch: &tracing::Dispatch, settle: impl FnOnce()) {
    let before = process_cpu_seconds();
    tracing::dispatcher::with_default(dispatch, || (0..LINES).for_each(|_| access_line()));
    settle();
    print_cpu(name, before, process_cpu_seconds());
}

/// Prints the process CPU per line between two readings.
fn print_cpu(name: &str, before: Option<f64>, after: Option<f64>) {
    match (before, after) {
        (Some(before), Some(after)) => println!(
            "access_log_line/{name}: process CPU per line {:.2} µs ({LINES} lines)",
            (after - before) * 1e6 / f64::from(LINES)
        ),
        _ => println!("access_log_line/{name}: /proc/self/stat unreadable"),
    }
}

/// utime + stime of this process, all threads (Linux; USER_HZ is 100).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

criterion_group!(log, benches);
criterion_main!(log);
