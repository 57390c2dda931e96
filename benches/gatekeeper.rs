//! The per-request cost of Gatekeeper constraints on a realistic 5.4 KB, three-container Pod
//! AdmissionReview: building the Rego input from the body (once per request), one evaluation of
//! each of three templates, and every loaded constraint (the tests' four templates, six
//! constraints), each on regorus's interpreter (the request path) and on its RVM (the policy
//! compiled to bytecode, compared only; setup prints where the two answer differently).
//!
//!     cargo bench --bench gatekeeper

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use gatehouse::gatekeeper::{self, RegoEngine, Review};

const POD: &[u8] = include_bytes!("../tests/data/pod-admission-review.json");

fn benches(c: &mut Criterion) {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gatekeeper/policies");
    let mut documents = Vec::new();
    for file in std::fs::read_dir(policies).expect("policies") {
        let file = file.expect("entry").path();
        if file.extension().is_some_and(|e| e == "yaml") {
            documents.extend(gatekeeper::read_documents(&file).expect("read"));
        }
    }
    // With the RVM programs, so both engines are measured on one load; a time limit no busy
    // machine reaches (the bench measures cost, not the limit).
    let loaded = gatekeeper::load_documents(documents, Duration::from_secs(10), true)
        .expect("test policies load");
    let mut group = c.benchmark_group("gatekeeper_5k_pod");
    group.throughput(criterion::Throughput::Elements(1));

    group.bench_function("review_from_body", |b| {
        b.iter(|| Review::from_admission(black_box(POD)).expect("review"))
    });

    let review = Review::from_admission(POD).expect("review");
    let engines = [
        ("interpreter", RegoEngine::Interpreter),
        ("rvm", RegoEngine::Rvm),
    ];
    for (name, kind) in [
        ("allowed_repos", "GhAllowedRepos"),
        ("container_limits", "GhContainerLimits"),
        ("disallowed_tags", "GhDisallowedTags"),
    ] {
        let constraint = loaded
            .constraints()
            .iter()
            .find(|c| c.kind == kind)
            .expect("constraint");
        let template = loaded
            .templates()
            .iter()
            .find(|t| t.kind == kind)
            .expect("template");
        let run = |engine| {
            template
                .violations_on(engine, review.input(black_box(&constraint.parameters)))
                .expect("compiled")
                .expect("evaluates")
        };
        // A cost is comparable only where both do the same work: say where they differ.
        let (a, b) = (run(RegoEngine::Interpreter), run(RegoEngine::Rvm));
        if a != b {
            eprintln!(
                "{name}: the engines answer differently on this pod: interpreter {a:?}, rvm {b:?}"
            );
        }
        for (engine_name, engine) in engines {
            group.bench_function(format!("one_evaluation_{name}_{engine_name}"), |b| {
                b.iter(|| run(engine))
            });
        }
    }
    for (engine_name, engine) in engines {
        group.bench_function(format!("all_constraints_{engine_name}"), |b| {
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
