//! The cache's effect, measured by the GitHub mock's counter: 10,000 TokenReviews over 100
//! distinct tokens, sent 256 at a time over 8 h2 connections, once with the default TTLs and
//! once with caching off (TTL 0, so only single flight coalesces).
//!
//! `cargo test --release --test authenticate_measure -- --ignored --nocapture`

mod common;
#[path = "common/github_mock.rs"]
mod github_mock;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use common::TestServer;
use github_mock::{MockGithub, MockUser};

const REVIEWS: usize = 10_000;
const TOKENS: usize = 100;
const IN_FLIGHT: usize = 256;
const CONNECTIONS: usize = 8;

async fn h2(server: &TestServer) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let connector =
        tokio_rustls::TlsConnector::from(common::tls_client_config(&server.ca_pem, b"h2"));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// Runs the load against a fresh gatehouse; returns (GitHub calls, authenticated answers, seconds).
async fn run(mock: &MockGithub, ttls: &str) -> (usize, usize, f64) {
    // All 100 tokens are new at once; the cap on GitHub conversations is not what is measured
    // here, so it admits them all.
    let yaml = format!(
        "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: {}\n    allowed_orgs: [acme]\n    max_concurrent_lookups: {TOKENS}\n{ttls}",
        mock.url()
    );
    let server = TestServer::start(&yaml).await;
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(h2(&server).await);
    }
    let before = mock.total();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..REVIEWS {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let mut sender = senders[i % CONNECTIONS].clone();
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": format!("ghp_measure{:03}", i % TOKENS)},
        })
        .to_string();
        tasks.spawn(async move {
            let req = http::Request::builder()
                .method(Method::POST)
                .uri("https://localhost/authenticate?timeout=30s")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            sender.ready().await.expect("h2 ready");
            let response = sender.send_request(req).await.expect("h2 request");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            drop(permit);
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            json["status"]["authenticated"] == true
        });
    }
    let mut authenticated = 0;
    while let Some(ok) = tasks.join_next().await {
        authenticated += usize::from(ok.expect("task"));
    }
    let seconds = start.elapsed().as_secs_f64();
    (mock.total() - before, authenticated, seconds)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn github_calls_per_10k_reviews_over_100_tokens() {
    let mock = MockGithub::start().await;
    for t in 0..TOKENS {
        mock.add(
            &format!("ghp_measure{t:03}"),
            MockUser::new(&format!("user{t:03}"), 10_000 + t as u64)
                .member("acme", "active")
                .team("acme", "sre", "SRE"),
        );
    }
    let (cached, ok_cached, s_cached) = run(&mock, "").await;
    let (uncached, ok_uncached, s_uncached) =
        run(&mock, "    cache_ttl: 0s\n    negative_cache_ttl: 0s\n").await;
    println!(
        "{REVIEWS} reviews, {TOKENS} tokens, {IN_FLIGHT} in flight over {CONNECTIONS} h2 connections, \
         3 GitHub calls per conversation (/user, 1 membership, 1 teams page)"
    );
    println!(
        "cache on  (cache_ttl 5m):  {cached} GitHub calls ({ok_cached} authenticated) in {s_cached:.2}s"
    );
    println!(
        "cache off (ttl 0s, single flight only): {uncached} GitHub calls ({ok_uncached} authenticated) in {s_uncached:.2}s"
    );
    println!(
        "without cache or single flight: {} GitHub calls",
        REVIEWS * 3
    );
    assert_eq!(ok_cached, REVIEWS);
    assert_eq!(ok_uncached, REVIEWS);
    assert_eq!(cached, TOKENS * 3, "one conversation per token");
    assert!(uncached >= cached);
}
