//! The validating path for a realistic 5.4 KB, three-container Pod AdmissionReview:
//! decode alone, the policy step alone, and the whole stack without a socket (cache hit).
//!
//!     cargo bench --bench policy

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;
use tower::ServiceExt;

use gatehouse::app::App;
use gatehouse::config::Config;
use gatehouse::review::admission::decode_admission;

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");
const POLICIES: &str = include_str!("../config/examples/policies.yaml");

fn app() -> Arc<App> {
    let config = Config::from_yaml(POLICIES, "policies.yaml").expect("example config");
    Arc::new(App::new(config).expect("app"))
}

fn benches(c: &mut Criterion) {
    let app = app();
    let mut group = c.benchmark_group("validate_5k_pod");
    group.throughput(criterion::Throughput::Elements(1));

    group.bench_function("decode", |b| {
        b.iter(|| {
            let admission = decode_admission(black_box(POD)).expect("decode");
            black_box(admission.request.uid.len())
        })
    });

    // What any serde_json decoder pays to walk the body at all: the floor for `decode`.
    group.bench_function("skip_only", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(POD)).expect("json"))
    });

    // The policy step alone: the example's five policies over three containers.
    let admission = decode_admission(POD).expect("decode");
    let subject = gatehouse::handlers::validate_subject(&admission.request);
    assert_eq!(subject.images.len(), 3);
    group.bench_function("decide_uncached", |b| {
        b.iter(|| black_box(app.policies.decide(black_box(&subject))))
    });

    // The whole tower stack and handler, as a request arrives from the listener.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service =
        gatehouse::server::service::<Full<Bytes>>(gatehouse::reload::current(app.clone()));
    group.bench_function("stack_cached", |b| {
        b.to_async(&runtime).iter(|| {
            let request = http::Request::post("/validate?timeout=10s")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(POD)))
                .expect("request");
            let service = service.clone();
            async move {
                let response = service.oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), 200);
                black_box(response)
            }
        })
    });
    group.finish();
}

criterion_group!(policy, benches);
criterion_main!(policy);
