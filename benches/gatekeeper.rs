//! The per-request cost of Gatekeeper constraints on a realistic 5.4 KB, three-container Pod
//! AdmissionReview: building the Rego input from the body (once per request), one constraint's
//! evaluation, and every loaded constraint (the tests' four templates, six constraints).
//!
//!     cargo bench --bench gatekeeper

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};

use gatehouse::gatekeeper::{self, GatekeeperConfig, Review};

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");

fn benches(c: &mut Criterion) {
    let config = GatekeeperConfig {
        paths: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gatekeeper/policies")
        ],
        ..GatekeeperConfig::default()
    };
    let loaded = gatekeeper::load(&config).expect("test policies load");
    let mut group = c.benchmark_group("gatekeeper_5k_pod");
    group.throughput(criterion::Throughput::Elements(1));

    group.bench_function("review_from_body", |b| {
        b.iter(|| Review::from_admission(black_box(POD)).expect("review"))
    });

    let review = Review::from_admission(POD).expect("review");
    let repos = loaded
        .constraints()
        .iter()
        .find(|c| c.kind == "GhAllowedRepos")
        .expect("allowed repos constraint");
    let template = loaded
        .templates()
        .iter()
        .find(|t| t.kind == "GhAllowedRepos")
        .expect("allowed repos template");
    group.bench_function("one_evaluation_allowed_repos", |b| {
        b.iter(|| {
            template
                .violations(review.input(black_box(&repos.parameters)))
                .expect("evaluates")
        })
    });

    group.bench_function("all_constraints", |b| {
        b.iter(|| black_box(loaded.evaluate(black_box(&review))))
    });
    group.finish();
}

criterion_group!(gatekeeper_benches, benches);
criterion_main!(gatekeeper_benches);
