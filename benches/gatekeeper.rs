//! The per-request cost of Gatekeeper constraints on a realistic 5.4 KB, three-container Pod
//! AdmissionReview: building the Rego input from the body (once per request), one constraint's
//! evaluation, and every loaded constraint (the tests' four templates, six constraints), each on
//! regorus's interpreter and on its RVM (the policy compiled to bytecode).
//!
//!     cargo bench --bench gatekeeper

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};

use gatehouse::gatekeeper::{self, GatekeeperConfig, RegoEngine, Review};

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");

fn benches(c: &mut Criterion) {
    let config = GatekeeperConfig {
        paths: vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gatekeeper/policies")
        ],
        ..GatekeeperConfig::default()
    };
    // The RVM programs too, so both engines are measured on one load.
    let mut documents = Vec::new();
    for file in std::fs::read_dir(&config.paths[0]).expect("policies") {
        let file = file.expect("entry").path();
        if file.extension().is_some_and(|e| e == "yaml") {
            documents.extend(gatekeeper::read_documents(&file).expect("read"));
        }
    }
    let loaded = gatekeeper::load_documents(documents, config.eval_timeout.0, true)
        .expect("test policies load");
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
    for (name, engine) in [
        ("interpreter", RegoEngine::Interpreter),
        ("rvm", RegoEngine::Rvm),
    ] {
        group.bench_function(format!("one_evaluation_allowed_repos_{name}"), |b| {
            b.iter(|| {
                template
                    .violations_on(engine, review.input(black_box(&repos.parameters)))
                    .expect("compiled")
                    .expect("evaluates")
            })
        });
        group.bench_function(format!("all_constraints_{name}"), |b| {
            b.iter(|| {
                black_box(
                    loaded
                        .evaluate_on(black_box(&review), engine)
                        .expect("compiled"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(gatekeeper_benches, benches);
criterion_main!(gatekeeper_benches);
