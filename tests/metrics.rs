#![cfg(unix)]
//! `/metrics` on the ops listener: a known sequence of requests, handshakes and reloads against
//! the real server yields exactly the expected counters; no token, user, org or image reaches a
//! label; the certificate expiry gauge follows the serving certificate through a rotation.

mod common;
#[path = "common/github_mock.rs"]
mod github_mock;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{image_review, pod_review, tls_client_config, Client, Proto, TestServer};
use github_mock::{Behaviour, MockGithub, MockUser};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// 2031-05-17T00:00:00Z and 2032-08-09T00:00:00Z, in seconds since the epoch: the notAfter of
/// the two serving certificates, computed apart from gatehouse.
const FIRST_NOT_AFTER: (i32, u8, u8, i64) = (2031, 5, 17, 1_936_742_400);
const SECOND_NOT_AFTER: (i32, u8, u8, i64) = (2032, 8, 9, 1_975_622_400);

/// A CA and a serving pair for localhost and 127.0.0.1 valid until the given day (UTC midnight).
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki((year, month, day, _): (i32, u8, u8, i64)) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.not_after = rcgen::date_time_ymd(year, month, day);
    let cert = leaf.signed_by(&key, &issuer).expect("leaf").pem();
    Pki {
        ca: ca_pem,
        cert,
        key: key.serialize_pem(),
    }
}

/// What the server and its config file share: `/authenticate` against `mock` for org acme.
fn webhook_yaml(mock: &MockGithub) -> String {
    format!(
        "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: {}\n    allowed_orgs: [acme]\n",
        mock.url()
    )
}

/// Starts gatehouse on a Secret-like volume holding `first`, with the ops listener, reloading
/// the pair every 50ms, and `extra` appended to the config.
async fn serve(first: &Pki, extra: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = dir.path().join("tls");
    std::fs::create_dir(&volume).expect("volume");
    common::publish_secret(
        &volume,
        1,
        &[("tls.crt", &first.cert), ("tls.key", &first.key)],
    );
    let yaml = format!(
        "listen: 127.0.0.1:0\nops:\n  listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n  reload_interval: 50ms\n{extra}",
        volume.join("tls.crt").display(),
        volume.join("tls.key").display(),
    );
    let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("config");
    TestServer::start_with(config, first.ca.clone(), dir).await
}

/// One scrape of the ops listener: the `Content-Type` and the body.
async fn scrape(ops: SocketAddr) -> (String, String) {
    let mut tcp = TcpStream::connect(ops).await.expect("connect ops");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("scrape answered in time")
        .expect("read");
    let answer = String::from_utf8(answer).expect("UTF-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (content_type, body.to_owned())
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// Scrapes until `series` has `expected` (bounded): for what is counted by another task after
/// the client has seen its outcome (a handshake's failure, a connection's close).
async fn wait_for(ops: SocketAddr, series: &str, expected: f64) -> String {
    for _ in 0..400 {
        let (_, text) = scrape(ops).await;
        if value(&text, series) == Some(expected) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, text) = scrape(ops).await;
    panic!("{series} never became {expected} within 10s:\n{text}");
}

/// Asserts each `(series, value)`.
fn assert_values(text: &str, expected: &[(&str, f64)]) {
    for (series, want) in expected {
        assert_eq!(value(text, series), Some(*want), "{series}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_sequence_yields_exact_counters() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_metricsmember",
        MockUser::new("octometrics", 4242)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    let first = pki(FIRST_NOT_AFTER);
    let server = serve(&first, &webhook_yaml(&mock)).await;
    let ops = server.ops_addr.expect("ops listener");

    // A config reload applied (a new cache size), then one refused (not YAML).
    let file = server.dir.path().join("gatehouse.yaml");
    let reloader = gatehouse::reload::Reloader::new(
        server.current.clone(),
        Some(file.clone()),
        Arc::new(|_: &mut gatehouse::config::Config| {}),
    );
    std::fs::write(
        &file,
        format!("{}cache:\n  max_entries: 1000\n", webhook_yaml(&mock)),
    )
    .expect("write");
    reloader.reload(true).expect("a good reload");
    std::fs::write(&file, "policies: [\n").expect("write");
    reloader.reload(true).expect_err("a bad reload");

    // /validate: two allowed (h2, then the same pod over HTTP/1.1: a cache hit), one denied.
    let allowed = |uid| pod_review("admission.k8s.io/v1", uid, "default", &["nginx:1.25"]);
    let mut h2 = server.client(Proto::Http2).await;
    let answer = h2.post_json("/validate", allowed("u1")).await.ok_json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut h1 = server.client(Proto::Http1).await;
    let answer = h1.post_json("/validate", allowed("u2")).await.ok_json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let denied = pod_review("admission.k8s.io/v1", "u3", "default", &["nginx:latest"]);
    let answer = h1.post_json("/validate", denied).await.ok_json();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    // /image_policy: allowed.
    let answer = h2
        .post_json("/image_policy", image_review("default", &["nginx:1.25"]))
        .await
        .ok_json();
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    // A path gatehouse does not serve.
    assert_eq!(h1.post_json("/nope", "{}").await.status, 404);
    // /authenticate: a token GitHub does not know, then a member twice (the second cached).
    let token = |t: &str| {
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}})
            .to_string()
    };
    let answer = h2
        .post_json("/authenticate", token("ghp_metricsunknown"))
        .await
        .ok_json();
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    for _ in 0..2 {
        let answer = h1
            .post_json("/authenticate", token("ghp_metricsmember"))
            .await
            .ok_json();
        assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    }
    // A client that does not trust the server's CA (a wrong caBundle) ends the handshake with
    // an alert; a plain-HTTP client sends no TLS at all.
    let stranger = pki(FIRST_NOT_AFTER);
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(&stranger.ca, b"http/1.1"));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    assert!(connector.connect(name, tcp).await.is_err());
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut sink)).await;
    drop((h1, h2));

    let (content_type, _) = scrape(ops).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    wait_for(
        ops,
        "gatehouse_tls_handshake_failures_total{reason=\"protocol\"}",
        1.0,
    )
    .await;
    wait_for(
        ops,
        "gatehouse_tls_handshake_failures_total{reason=\"client_alert\"}",
        1.0,
    )
    .await;
    let text = wait_for(ops, "gatehouse_connections_open", 0.0).await;
    let requests = |route: &str, code: &str, decision: &str| {
        format!(
            "gatehouse_requests_total{{route=\"{route}\",code=\"{code}\",decision=\"{decision}\"}}"
        )
    };
    let expected = [
        (requests("validate", "200", "allowed"), 2.0),
        (requests("validate", "200", "denied"), 1.0),
        (requests("image_policy", "200", "allowed"), 1.0),
        (requests("other", "404", "none"), 1.0),
        (requests("authenticate", "200", "unauthenticated"), 1.0),
        (requests("authenticate", "200", "authenticated"), 2.0),
        (
            "gatehouse_request_duration_seconds_count{route=\"validate\"}".to_owned(),
            3.0,
        ),
        (
            "gatehouse_request_duration_seconds_bucket{le=\"+Inf\",route=\"authenticate\"}"
                .to_owned(),
            3.0,
        ),
        (
            "gatehouse_cache_lookups_total{cache=\"decision\",result=\"hit\"}".to_owned(),
            1.0,
        ),
        (
            "gatehouse_cache_lookups_total{cache=\"decision\",result=\"miss\"}".to_owned(),
            3.0,
        ),
        (
            "gatehouse_cache_lookups_total{cache=\"token\",result=\"hit\"}".to_owned(),
            1.0,
        ),
        (
            "gatehouse_cache_lookups_total{cache=\"token\",result=\"miss\"}".to_owned(),
            2.0,
        ),
        (
            "gatehouse_cache_entries{cache=\"decision\"}".to_owned(),
            3.0,
        ),
        // The refusal is cached too (negative_cache_ttl).
        ("gatehouse_cache_entries{cache=\"token\"}".to_owned(), 2.0),
        (
            "gatehouse_github_requests_total{endpoint=\"user\",outcome=\"unauthorized\"}"
                .to_owned(),
            1.0,
        ),
        (
            "gatehouse_github_requests_total{endpoint=\"user\",outcome=\"ok\"}".to_owned(),
            1.0,
        ),
        (
            "gatehouse_github_requests_total{endpoint=\"org_membership\",outcome=\"ok\"}"
                .to_owned(),
            1.0,
        ),
        (
            "gatehouse_github_requests_total{endpoint=\"teams\",outcome=\"ok\"}".to_owned(),
            1.0,
        ),
        ("gatehouse_github_lookups_refused_total".to_owned(), 0.0),
        (
            "gatehouse_tls_handshake_failures_total{reason=\"no_client_cert\"}".to_owned(),
            0.0,
        ),
        (
            "gatehouse_config_reloads_total{outcome=\"ok\"}".to_owned(),
            1.0,
        ),
        (
            "gatehouse_config_reloads_total{outcome=\"error\"}".to_owned(),
            1.0,
        ),
        (
            "gatehouse_tls_reloads_total{outcome=\"ok\"}".to_owned(),
            0.0,
        ),
        (
            "gatehouse_tls_reloads_total{outcome=\"error\"}".to_owned(),
            0.0,
        ),
        (
            "gatehouse_tls_cert_not_after_seconds".to_owned(),
            FIRST_NOT_AFTER.3 as f64,
        ),
        (
            format!(
                "gatehouse_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ];
    let expected: Vec<(&str, f64)> = expected.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    assert_values(&text, &expected);
    // Nothing else was counted as a request: the sum of every requests series is 8.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("gatehouse_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 8.0, "{text}");
    // No token, login, org, image, namespace or raw path anywhere in the scrape.
    for secret in [
        "ghp_",
        "metricsmember",
        "metricsunknown",
        "octometrics",
        "acme",
        "nginx",
        "default",
        "/nope",
        "4242",
    ] {
        assert!(!text.contains(secret), "{secret} in the scrape:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    assert!(mock.anomalies().is_empty(), "{:?}", mock.anomalies());
    server.stop().await;
}

#[tokio::test]
async fn the_expiry_gauge_follows_the_serving_certificate() {
    let (first, second) = (pki(FIRST_NOT_AFTER), pki(SECOND_NOT_AFTER));
    let server = serve(&first, "").await;
    let ops = server.ops_addr.expect("ops listener");
    let (_, text) = scrape(ops).await;
    assert_values(
        &text,
        &[(
            "gatehouse_tls_cert_not_after_seconds",
            FIRST_NOT_AFTER.3 as f64,
        )],
    );
    let volume = server.dir.path().join("tls");
    common::publish_secret(
        &volume,
        2,
        &[("tls.crt", &second.cert), ("tls.key", &second.key)],
    );
    let text = wait_for(ops, "gatehouse_tls_reloads_total{outcome=\"ok\"}", 1.0).await;
    assert_values(
        &text,
        &[
            (
                "gatehouse_tls_cert_not_after_seconds",
                SECOND_NOT_AFTER.3 as f64,
            ),
            ("gatehouse_tls_reloads_total{outcome=\"error\"}", 0.0),
        ],
    );
    // Served: a client trusting only the new CA connects.
    let mut client = Client::connect(server.addr, &second.ca, Proto::Http1).await;
    assert_eq!(client.get("/healthz").await.status, 200);
    // A broken pair is counted as an error and changes nothing.
    common::publish_secret(
        &volume,
        3,
        &[("tls.crt", &first.cert), ("tls.key", &second.key)],
    );
    let text = wait_for(ops, "gatehouse_tls_reloads_total{outcome=\"error\"}", 1.0).await;
    assert_values(
        &text,
        &[(
            "gatehouse_tls_cert_not_after_seconds",
            SECOND_NOT_AFTER.3 as f64,
        )],
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_served_on_the_ops_listener_only() {
    let first = pki(FIRST_NOT_AFTER);
    let server = serve(&first, "").await;
    let mut client = Client::connect(server.addr, &first.ca, Proto::Http1).await;
    // The webhook listener does not serve it: an unknown path there.
    assert_eq!(client.get("/metrics").await.status, 404);
    let (_, text) = scrape(server.ops_addr.expect("ops")).await;
    assert_eq!(
        value(
            &text,
            "gatehouse_requests_total{route=\"other\",code=\"404\",decision=\"none\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // Without /authenticate there is no token cache to report.
    assert!(!text.contains("cache=\"token\"} "), "{text}");
    server.stop().await;
}

/// A review too large to decide on a runtime worker is decided on the blocking pool, away from
/// the request's task: its decision is counted all the same (not as an error).
#[tokio::test]
async fn a_decision_made_on_the_blocking_pool_is_counted() {
    let first = pki(FIRST_NOT_AFTER);
    let server = serve(&first, "").await;
    let mut review: serde_json::Value = serde_json::from_str(&pod_review(
        "admission.k8s.io/v1",
        "u1",
        "default",
        &["nginx:1.25"],
    ))
    .expect("review");
    // Past handlers::INLINE_MAX with an annotation no policy reads.
    let padding = "x".repeat(gatehouse::handlers::INLINE_MAX + 1024);
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({ "example.com/padding": padding });
    let body = review.to_string();
    assert!(body.len() > gatehouse::handlers::INLINE_MAX);
    let mut client = Client::connect(server.addr, &first.ca, Proto::Http1).await;
    let answer = client.post_json("/validate", body).await.ok_json();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let (_, text) = scrape(server.ops_addr.expect("ops")).await;
    assert_values(
        &text,
        &[(
            "gatehouse_requests_total{route=\"validate\",code=\"200\",decision=\"allowed\"}",
            1.0,
        )],
    );
    assert!(!text.contains("decision=\"error\""), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn mutate_counts_patched_and_allowed() {
    let first = pki(FIRST_NOT_AFTER);
    let yaml = "routes:\n  mutate: true\nmutations:\n  - name: mark\n    match:\n      exclude_namespaces: [kube-system]\n    add_labels:\n      marked: \"true\"\n";
    let server = serve(&first, yaml).await;
    let mut client = Client::connect(server.addr, &first.ca, Proto::Http2).await;
    for (namespace, patched) in [("team-a", true), ("kube-system", false)] {
        let review = pod_review("admission.k8s.io/v1", "u1", namespace, &["nginx:1.25"]);
        let answer = client.post_json("/mutate", review).await.ok_json();
        assert_eq!(
            answer["response"].get("patch").is_some(),
            patched,
            "{answer}"
        );
    }
    let (_, text) = scrape(server.ops_addr.expect("ops")).await;
    assert_values(
        &text,
        &[
            (
                "gatehouse_requests_total{route=\"mutate\",code=\"200\",decision=\"patched\"}",
                1.0,
            ),
            (
                "gatehouse_requests_total{route=\"mutate\",code=\"200\",decision=\"allowed\"}",
                1.0,
            ),
        ],
    );
    assert!(
        !text.contains("team-a") && !text.contains("marked"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn github_timeouts_and_errors_are_counted_by_endpoint() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_metricsslow",
        MockUser::new("slow", 1)
            .member("acme", "active")
            .delayed(Duration::from_secs(3)),
    );
    mock.add(
        "ghp_metricsbroken",
        MockUser::new("broken", 2).behaving(Behaviour::ServerError),
    );
    let first = pki(FIRST_NOT_AFTER);
    let yaml = format!("{}    timeout: 200ms\n", webhook_yaml(&mock));
    let server = serve(&first, &yaml).await;
    let mut client = Client::connect(server.addr, &first.ca, Proto::Http1).await;
    for token in ["ghp_metricsslow", "ghp_metricsbroken"] {
        let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
        let answer = client
            .post_json("/authenticate", review.to_string())
            .await
            .ok_json();
        assert!(answer["status"]["error"].is_string(), "{answer}");
    }
    let (_, text) = scrape(server.ops_addr.expect("ops")).await;
    assert_values(
        &text,
        &[
            (
                "gatehouse_github_requests_total{endpoint=\"user\",outcome=\"timeout\"}",
                1.0,
            ),
            (
                "gatehouse_github_requests_total{endpoint=\"user\",outcome=\"server_error\"}",
                1.0,
            ),
            (
                "gatehouse_requests_total{route=\"authenticate\",code=\"200\",decision=\"error\"}",
                2.0,
            ),
            // Errors are not cached: both lookups missed, nothing is kept.
            (
                "gatehouse_cache_lookups_total{cache=\"token\",result=\"miss\"}",
                2.0,
            ),
            ("gatehouse_cache_entries{cache=\"token\"}", 0.0),
        ],
    );
    server.stop().await;
}
