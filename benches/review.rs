//! Micro-benchmarks of the decision path's steps, without a socket:
//! image reference parse + normalise; the policy decision for 1, 3 and 20 containers;
//! decode alone and decode → decide (cached) → encode through the whole tower stack, for the
//! 5.4 KB Pod review with and without `oldObject` (and the same projection decoded by serde_json
//! alone, what the strict reader replaced); and the JSON Patch generation of /mutate.
//!
//!     cargo bench --bench review

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::Full;
use serde_json::Value;
use tower::ServiceExt;

use gatehouse::app::App;
use gatehouse::config::Config;
use gatehouse::handlers::validate_subject as subject;
use gatehouse::mutation::{patch, Target};
use gatehouse::reference::ImageRef;
use gatehouse::review::admission::{
    decode_admission, decode_review, AdmissionReview, Decoded, Operation,
};
use gatehouse::review::object::{ObjectOnly, ObjectView};

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");
const POLICIES: &str = include_str!("../config/examples/policies.yaml");
const MUTATIONS: &str = include_str!("../config/examples/mutations.yaml");

fn app(yaml: &str) -> App {
    App::new(Config::from_yaml(yaml, "bench").expect("config")).expect("app")
}

/// The Pod review with its containers replaced by `n` copies of the first (distinct names and
/// tags), so only the container count changes.
fn pod_with_containers(n: usize) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(POD).expect("pod review");
    let spec = &mut review["request"]["object"]["spec"];
    let first = spec["containers"][0].clone();
    let containers = (0..n)
        .map(|i| {
            let mut c = first.clone();
            c["name"] = Value::from(format!("c{i}"));
            c["image"] = Value::from(format!("registry.my.com/shop/web:1.{i}.0"));
            c
        })
        .collect();
    spec["containers"] = Value::Array(containers);
    serde_json::to_vec(&review).expect("encode")
}

/// The Pod review as an UPDATE whose `oldObject` is the same pod with one image older.
fn pod_update() -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(POD).expect("pod review");
    let request = &mut review["request"];
    request["operation"] = Value::from("UPDATE");
    let mut old = request["object"].clone();
    old["spec"]["containers"][0]["image"] = Value::from("registry.my.com/shop/web:1.41.0");
    request["oldObject"] = old;
    request["options"] =
        serde_json::json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"});
    serde_json::to_vec(&review).expect("encode")
}

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference");
    for (name, image) in [
        ("short_name", "nginx"),
        ("registry_repo_tag", "ghcr.io/acme/exporter:0.9.1"),
        (
            "port_tag_digest",
            "registry.my.com:5000/team/app:1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ] {
        group.bench_function(format!("parse_normalise/{name}"), |b| {
            b.iter(|| {
                let image = ImageRef::parse(black_box(image)).expect("parse");
                black_box((image.domain().len(), image.is_latest()))
            })
        });
    }
    group.finish();
}

fn decide(c: &mut Criterion) {
    let app = app(POLICIES);
    let mut group = c.benchmark_group("decide_uncached");
    for n in [1, 3, 20] {
        let body = pod_with_containers(n);
        let admission = decode_admission(&body).expect("decode");
        let subject = subject(&admission.request);
        assert_eq!(subject.images.len(), n);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("containers_{n}"), |b| {
            b.iter(|| black_box(app.policies.decide(black_box(&subject))))
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let app = Arc::new(app(POLICIES));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service =
        gatehouse::server::service::<Full<Bytes>>(gatehouse::reload::current(app.clone()));
    let update = pod_update();
    let mut group = c.benchmark_group("validate");
    for (name, body) in [("create", POD.to_vec()), ("update_with_old_object", update)] {
        let body = Bytes::from(body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("decode/{name}_{}B", body.len()), |b| {
            b.iter(|| {
                let admission = decode_admission(black_box(&body)).expect("decode");
                black_box(admission.request.uid.len())
            })
        });
        let text = std::str::from_utf8(&body).expect("UTF-8");
        group.bench_function(format!("decode_serde_json/{name}_{}B", body.len()), |b| {
            b.iter(|| {
                let review: AdmissionReview<'_, ObjectOnly<ObjectView<'_>>> =
                    serde_json::from_str(black_box(text)).expect("decode");
                black_box(review.request.map(|r| r.uid.len()))
            })
        });
        let request = || {
            http::Request::post("/validate?timeout=10s")
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("request")
        };
        let first = runtime
            .block_on(service.clone().oneshot(request()))
            .expect("infallible");
        assert_eq!(first.status(), 200);
        group.bench_function(format!("stack_cached/{name}_{}B", body.len()), |b| {
            b.to_async(&runtime).iter(|| {
                let service = service.clone();
                let request = request();
                async move {
                    let response = service.oneshot(request).await.expect("infallible");
                    assert_eq!(response.status(), 200);
                    black_box(response)
                }
            })
        });
    }
    group.finish();
}

fn patch_generation(c: &mut Criterion) {
    let app = app(MUTATIONS);
    let Decoded::Projected(admission) = decode_review(POD).expect("decode") else {
        panic!("the pod review projects");
    };
    let request = &admission.request;
    let target = Target {
        operation: Operation::parse(&request.operation),
        group: &request.kind.group,
        kind: &request.kind.kind,
        namespace: request.namespace.as_deref().unwrap_or(""),
        sub_resource: request.sub_resource.as_deref(),
        object: request.object.as_ref(),
        old_object: request.old_object.as_ref(),
    };
    let outcome = app.mutations.mutate(&target);
    assert!(
        !outcome.patch.is_empty(),
        "the example mutations change the pod"
    );
    let mut group = c.benchmark_group("mutate");
    group.bench_function("patch_generation", |b| {
        b.iter(|| {
            let outcome = app.mutations.mutate(black_box(&target));
            black_box(patch::encode(&outcome.patch).expect("encode"))
        })
    });
    group.finish();
}

criterion_group!(review, reference, decide, round_trip, patch_generation);
criterion_main!(review);
