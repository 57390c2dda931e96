//! One JSON access-log line, as the access log layer emits it: formatted and handed to the
//! batching writer (what a request pays now), against formatted and written with one `write`
//! system call per line to /dev/null (what it paid before). The difference is the syscall.
//!
//!     cargo bench --bench log

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tracing_subscriber::EnvFilter;

use gatehouse::config::LogFormat;
use gatehouse::logging::{subscriber, BufferLimits, LogBuffer};

fn access_line() {
    let peer: SocketAddr = ([127, 0, 0, 1], 40312).into();
    tracing::info!(
        target: "gatehouse::access",
        method = %http::Method::POST,
        uri = %"/validate?timeout=10s",
        status = 200u16,
        latency_us = 87u64,
        protocol = ?http::Version::HTTP_11,
        peer = Some(tracing::field::display(peer)),
        user = None::<&str>,
        "request"
    );
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log_line");
    let devnull = || std::fs::File::create("/dev/null").expect("/dev/null");

    let (buffer, guard) = LogBuffer::new(devnull(), BufferLimits::default()).expect("buffer");
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
}

criterion_group!(log, benches);
criterion_main!(log);
