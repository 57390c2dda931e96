//! `/authenticate` with the token's decision cached (the steady state: the apiserver sends the
//! same tokens again and again): the SHA-256 cache key alone, the authenticator's cache hit
//! alone (prefix checks, SHA-256 key, lookup), and decode → hit → encode through the whole
//! tower stack. The first review is answered by the test suite's local GitHub mock; nothing
//! leaves the machine.
//!
//!     cargo bench --bench authenticate

#[path = "../tests/common/github_mock.rs"]
mod github_mock;

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use gatehouse::app::App;
use gatehouse::authn::Decision;
use gatehouse::config::Config;
use github_mock::{MockGithub, MockUser};
use http_body_util::Full;
use tower::ServiceExt;

const TOKEN: &str = "ghp_bench0123456789abcdefghijklmnopqrstuv";

fn benches(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_mock, app) = runtime.block_on(async {
        let mock = MockGithub::start().await;
        mock.add(
            TOKEN,
            MockUser::new("octocat", 583231)
                .member("acme", "active")
                .team("acme", "sre", "Site Reliability"),
        );
        let yaml = format!(
            "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: {}\n    allowed_orgs: [acme]\n",
            mock.url()
        );
        let app = App::new(Config::from_yaml(&yaml, "bench").expect("config")).expect("app");
        (mock, Arc::new(app))
    });
    let authenticator = app.authenticator.as_ref().expect("authenticator");
    let no_audiences: [&str; 0] = [];
    // The miss: GitHub is asked once, then every review below is a hit.
    let first = runtime.block_on(authenticator.review(TOKEN, &no_audiences));
    assert!(matches!(first, Decision::Authenticated { .. }), "{first:?}");

    let mut group = c.benchmark_group("authenticate");
    // The hit's SHA-256 alone (natively with the CPU's SHA extensions where it has them, which
    // callgrind does not emulate: there it costs several times more).
    group.bench_function("token_cache_key", |b| {
        b.iter(|| black_box(gatehouse::authn::CacheKey::new(black_box(TOKEN))))
    });
    group.bench_function("token_cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(authenticator.review(black_box(TOKEN), &no_audiences).await)
        })
    });
    let body = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{TOKEN}"}}}}"#
    );
    let service =
        gatehouse::server::service::<Full<Bytes>>(gatehouse::reload::current(app.clone()));
    let body = Bytes::from(body);
    group.bench_function("stack_cached", |b| {
        b.to_async(&runtime).iter(|| {
            let request = http::Request::post("/authenticate?timeout=30s")
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
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

criterion_group!(authenticate, benches);
criterion_main!(authenticate);
