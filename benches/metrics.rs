//! What recording one request in the metrics costs: the access-log layer's `record_request`
//! (three relaxed atomic adds and a bucket search), and the handler's part, putting the
//! decision in the response's extensions and the layer reading it back (the one allocation: a
//! response's extension map is created on first insert). A scrape is measured for scale.
//!
//!     cargo bench --bench metrics
//!
//! For instruction counts, which a busy machine does not disturb:
//!
//!     valgrind --tool=callgrind target/release/deps/metrics-* --bench --profile-time 1 record

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use gatehouse::error::json_response;
use gatehouse::metrics::{Decision, Metrics, Route, Sample};

fn benches(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record_request", |b| {
        b.iter(|| {
            metrics.record_request(
                black_box(Route::Validate),
                black_box(200),
                black_box(Decision::Allowed),
                black_box(Duration::from_micros(180)),
            )
        })
    });
    group.bench_function("decision_extension", |b| {
        b.iter_batched(
            || json_response(http::StatusCode::OK, Bytes::from_static(b"{}")),
            |mut response| {
                response.extensions_mut().insert(Decision::Allowed);
                black_box(response.extensions().get::<Decision>().copied());
                response
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("scrape", |b| {
        b.iter(|| black_box(metrics.encode(&Sample::default())))
    });
    group.finish();
}

criterion_group!(metrics_benches, benches);
criterion_main!(metrics_benches);
