//! `/authenticate` over real TLS against a GitHub mock on 127.0.0.1: identity, groups, the org
//! gate, refusals vs errors, caching, single flight, audiences, versions, and log secrecy.
//!
//! Every test in this binary logs at TRACE (all crates) into one shared buffer, so that the
//! secrecy test can scan what gatehouse and its libraries wrote.

mod common;
#[path = "common/github_mock.rs"]
mod github_mock;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use common::{wire_example, Answer, Client, Proto, TestServer, BOTH};
use github_mock::{Behaviour, MockGithub, MockUser};

const V1: &str = "authentication.k8s.io/v1";
const V1BETA1: &str = "authentication.k8s.io/v1beta1";

// ---- log capture -------------------------------------------------------------------------

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a TRACE subscriber writing into a buffer; returns the buffer.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(buffer.clone());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber in this test binary");
        buffer
    })
    .clone()
}

fn captured() -> String {
    String::from_utf8_lossy(&logs().lock().expect("log buffer")).into_owned()
}

// ---- helpers -----------------------------------------------------------------------------

/// The config for `/authenticate` against `mock`; `github` holds every key but `api_url`,
/// indented for the `github:` block.
fn config(mock: &MockGithub, github: &str) -> String {
    let mut yaml = format!(
        "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: {}\n",
        mock.url()
    );
    for line in github.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("    ");
        yaml.push_str(line.trim());
        yaml.push('\n');
    }
    yaml
}

/// A gatehouse serving `/authenticate` against `mock`.
async fn serve(mock: &MockGithub, github: &str) -> TestServer {
    logs();
    TestServer::start(&config(mock, github)).await
}

/// Like [`serve`], with a request deadline (60s) far beyond what load on a shared test machine
/// can cause: for tests of what a burst does, not of how fast it is answered.
async fn serve_patient(mock: &MockGithub, github: &str) -> TestServer {
    logs();
    // Bursts of up to 1000 reviews are all in flight at once: raise the in-flight cap (256).
    let yaml = format!(
        "{}limits:\n  request_timeout: 60s\n  max_in_flight: 1000\n",
        config(mock, github)
    );
    TestServer::start(&yaml).await
}

fn review(version: &str, token: &str, audiences: &[&str]) -> String {
    let mut spec = json!({ "token": token });
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    json!({ "apiVersion": version, "kind": "TokenReview", "spec": spec }).to_string()
}

/// POSTs a v1 review the way the apiserver does (with `?timeout=30s`).
async fn ask(client: &mut Client, token: &str) -> Value {
    let answer = client
        .post_json("/authenticate?timeout=30s", review(V1, token, &[]))
        .await;
    decided(&answer, V1)
}

/// Asserts an answer is a decision (HTTP 200, a TokenReview in `version`); returns `status`.
fn decided(answer: &Answer, version: &str) -> Value {
    let json = answer.ok_json();
    assert_eq!(json["apiVersion"], version, "{json}");
    assert_eq!(json["kind"], "TokenReview", "{json}");
    assert!(
        json.get("spec").is_none(),
        "the token is never echoed: {json}"
    );
    json["status"].clone()
}

/// Asserts a refusal: not authenticated, no user, no error (the apiserver caches it).
fn assert_refused(status: &Value) {
    assert_eq!(status["authenticated"], false, "{status}");
    assert!(status.get("user").is_none(), "{status}");
    assert!(
        status.get("error").is_none(),
        "a refusal carries no error: {status}"
    );
}

/// Asserts an error answer: not authenticated, no user, `status.error` names GitHub (the
/// apiserver caches neither the answer nor its absence), and the token is not in it.
fn assert_unavailable(status: &Value, token: &str) {
    assert_eq!(status["authenticated"], false, "{status}");
    assert!(status.get("user").is_none(), "{status}");
    assert!(status.get("audiences").is_none(), "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("GitHub "), "{status}");
    assert!(!error.contains(token), "{status}");
}

fn groups(status: &Value) -> Vec<String> {
    status["user"]["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| g.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One h2 connection whose sender can be cloned for concurrent streams.
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

/// Sends one review per entry of `tokens` (repeats allowed) at once over `connections` h2
/// connections; each task yields that answer's `status`.
async fn send_reviews(
    server: &TestServer,
    tokens: &[String],
    connections: usize,
) -> JoinSet<Value> {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(h2(server).await);
    }
    let mut tasks = JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let mut sender = senders[i % connections].clone();
        let body = review(V1, token, &[]);
        tasks.spawn(async move {
            let req = http::Request::builder()
                .method(Method::POST)
                .uri("https://localhost/authenticate?timeout=30s")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            sender.ready().await.expect("h2 ready");
            let response = sender.send_request(req).await.expect("h2 request");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let json: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(json["apiVersion"], V1);
            json["status"].clone()
        });
    }
    tasks
}

/// Every answer of `tasks`.
async fn answers(mut tasks: JoinSet<Value>) -> Vec<Value> {
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.expect("request task"));
    }
    statuses
}

/// Sends `count` reviews for each of `tokens` at once over `connections` h2 connections and
/// returns every answer's `status`.
async fn burst(
    server: &TestServer,
    tokens: &[String],
    count: usize,
    connections: usize,
) -> Vec<Value> {
    let all: Vec<String> = (0..count).flat_map(|_| tokens.iter().cloned()).collect();
    answers(send_reviews(server, &all, connections).await).await
}

/// Waits until `ready` holds, checking every 10 ms for up to 30 s: a bounded wait for something
/// that must happen, never a measure of how fast it happens.
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not the case after 30s: {what}");
}

// ---- identity and groups ------------------------------------------------------------------

/// The seed 004 flow: an active member of `acme` in team `sre`.
#[tokio::test]
async fn seed_flow_user_uid_and_groups_in_the_requests_version() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_seed004",
        MockUser::new("octocat", 583231)
            .member("acme", "active")
            .team("acme", "sre", "Site Reliability"),
    );
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in [V1, V1BETA1] {
            let answer = client
                .post_json(
                    "/authenticate?timeout=30s",
                    review(version, "ghp_seed004", &[]),
                )
                .await;
            let status = decided(&answer, version);
            assert_eq!(status["authenticated"], true, "{status}");
            assert_eq!(status["user"]["username"], "octocat");
            assert_eq!(status["user"]["uid"], "583231");
            assert_eq!(groups(&status), ["github:acme", "github:acme:sre"]);
            assert_eq!(
                status["user"]["extra"]["gatehouse.dev/github-id"],
                json!(["583231"])
            );
            assert_eq!(
                status["user"]["extra"]["gatehouse.dev/github-login"],
                json!(["octocat"])
            );
            assert!(status.get("error").is_none());
            assert!(status.get("audiences").is_none(), "{status}");
        }
    }
    // Four reviews, one conversation: /user, one membership, one page of teams.
    assert_eq!(mock.calls("/user"), 1);
    assert_eq!(mock.calls("/user/memberships/orgs/acme"), 1);
    assert_eq!(mock.calls("/user/teams"), 1);
    assert!(mock.anomalies().is_empty(), "{:?}", mock.anomalies());
}

#[tokio::test]
async fn teams_in_two_allowed_orgs_only_prefixed_slugs() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_twoorgs",
        MockUser::new("alice", 1001)
            .member("acme", "active")
            .member("acme-labs", "active")
            .member("elsewhere", "active")
            .team("acme", "sre", "SRE Team")
            // GitHub's org login casing differs from the configured one: still matched.
            .team("ACME-Labs", "ml-platform", "ML Platform")
            // An org that is not allowed: no group, whatever the membership.
            .team("elsewhere", "admins", "Admins"),
    );
    let server = serve(
        &mock,
        "allowed_orgs: [acme, acme-labs]\nusername_prefix: 'github:'",
    )
    .await;
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_twoorgs").await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], "github:alice");
    assert_eq!(status["user"]["uid"], "1001");
    assert_eq!(
        groups(&status),
        [
            "github:acme",
            "github:acme-labs",
            "github:acme:sre",
            "github:acme-labs:ml-platform"
        ]
    );
    // Display names are never groups; neither is anything from the org that is not allowed.
    let all = groups(&status).join(",");
    assert!(
        !all.contains("ML Platform") && !all.contains("SRE Team") && !all.contains("elsewhere")
    );
    assert_eq!(mock.calls("/user/memberships/orgs/acme-labs"), 1);
    assert_eq!(mock.calls("/user/memberships/orgs/elsewhere"), 0);
}

#[tokio::test]
async fn groups_setting_selects_orgs_teams_or_none() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_groupsmode",
        MockUser::new("bob", 7)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    for (mode, want) in [
        ("orgs", vec!["github:acme"]),
        ("teams", vec!["github:acme:sre"]),
        ("none", vec![]),
    ] {
        let before = mock.calls("/user/teams");
        let server = serve(&mock, &format!("allowed_orgs: [acme]\ngroups: {mode}")).await;
        let mut client = server.client(Proto::Http2).await;
        let status = ask(&mut client, "ghp_groupsmode").await;
        assert_eq!(status["authenticated"], true, "{mode}: {status}");
        assert_eq!(groups(&status), want, "{mode}");
        // `/user/teams` is read only when team groups are wanted.
        let read = mock.calls("/user/teams") - before;
        assert_eq!(read, usize::from(mode == "teams"), "{mode}");
    }
}

#[tokio::test]
async fn a_team_named_system_masters_never_becomes_a_system_group() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_sysmasters",
        MockUser::new("mallory", 666)
            .member("acme", "active")
            .member("system", "active")
            // GitHub's slug for a team named "system:masters" (a hostile slug carrying the
            // name itself is an error: odd_team_slugs_are_errors_not_cached).
            .team("acme", "system-masters", "system:masters")
            // An allowed org literally named `system` with a team `masters`.
            .team("system", "masters", "masters"),
    );
    // The most dangerous configuration that validates: no group prefix, `system` allowed.
    let server = serve(&mock, "allowed_orgs: [acme, system]\ngroup_prefix: ''").await;
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_sysmasters").await;
    assert_eq!(status["authenticated"], true, "{status}");
    let groups = groups(&status);
    assert!(
        groups
            .iter()
            .all(|g| !g.to_ascii_lowercase().starts_with("system:")),
        "{groups:?}"
    );
    assert!(
        groups
            .iter()
            .all(|g| g != "masters" && g != "system-masters"),
        "no bare team names: {groups:?}"
    );
    assert_eq!(groups, ["acme", "system", "acme:system-masters"]);
}

/// Issue 8: an answer GitHub never gives (an empty login, a newline in it, id 0...) is an error
/// answer, asked again next time, and never a user; the token is in no log line about it.
#[tokio::test]
async fn odd_github_identities_are_errors_not_cached() {
    let mock = MockGithub::start().await;
    let too_long = "a".repeat(40);
    let odd: Vec<(Value, &str)> = vec![
        (json!({"login": "", "id": 5}), "login"),
        (json!({"login": "octo\ncat", "id": 5}), "login"),
        (json!({"login": "octocat\n", "id": 5}), "login"),
        (json!({"login": "octo cat", "id": 5}), "login"),
        (json!({"login": "system:admin", "id": 5}), "login"),
        (json!({"login": "octo.cat", "id": 5}), "login"),
        (json!({"login": "octocät", "id": 5}), "login"),
        (json!({"login": "-", "id": 5}), "login"),
        (json!({"login": "_acme", "id": 5}), "login"),
        (json!({"login": too_long, "id": 5}), "login"),
        (json!({"login": "octocat", "id": 0}), "id"),
        (json!({"login": "octocat", "id": -1}), "malformed"),
        (json!({"login": "octocat", "id": "583231"}), "malformed"),
        (json!({"login": "octocat", "id": 1.5}), "malformed"),
        (json!({"login": "octocat", "id": null}), "malformed"),
        (json!({"login": "octocat"}), "malformed"),
        (json!({"login": null, "id": 5}), "malformed"),
        (json!({"id": 5}), "malformed"),
        (json!({"login": 5, "id": 5}), "malformed"),
    ];
    let token = |i: usize| format!("ghp_ODDsecret{i:02}");
    for (i, (body, _)) in odd.iter().enumerate() {
        mock.add(
            &token(i),
            MockUser::new("unused", 1)
                .member("acme", "active")
                .team("acme", "sre", "SRE")
                .user_answer(body.clone()),
        );
    }
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    for (i, (body, says)) in odd.iter().enumerate() {
        for (round, proto) in BOTH.into_iter().enumerate() {
            let mut client = server.client(proto).await;
            let status = ask(&mut client, &token(i)).await;
            assert_unavailable(&status, &token(i));
            let error = status["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{body}: {error}");
            assert_eq!(
                mock.calls("/user"),
                2 * i + round + 1,
                "{body}: not cached, GitHub is asked again"
            );
        }
    }
    assert_eq!(
        mock.calls("/user/memberships/orgs/acme"),
        0,
        "no further call on an unusable identity"
    );
    assert!(!captured().contains("ODDsecret"), "a token reached the log");
}

/// Logins GitHub really issues are accepted as they are: today's syntax, accounts from before
/// it, and Enterprise Managed Users (`<handle>_<shortcode>`).
#[tokio::test]
async fn every_login_github_issues_is_accepted() {
    let mock = MockGithub::start().await;
    let longest = "a".repeat(39);
    let logins = [
        "a",
        "Octo-Cat-42",
        longest.as_str(),
        "foo-",
        "gil--",
        "-Jerry-",
        "mona-lisa_acme",
        "acme_admin",
    ];
    for (i, login) in logins.iter().enumerate() {
        mock.add(
            &format!("ghp_login{i}"),
            MockUser::new(login, 100 + i as u64).member("acme", "active"),
        );
    }
    let server = serve(&mock, "allowed_orgs: [acme]\nusername_prefix: 'github:'").await;
    let mut client = server.client(Proto::Http2).await;
    for (i, login) in logins.iter().enumerate() {
        let status = ask(&mut client, &format!("ghp_login{i}")).await;
        assert_eq!(status["authenticated"], true, "{login}: {status}");
        assert_eq!(status["user"]["username"], format!("github:{login}"));
        assert_eq!(status["user"]["uid"], (100 + i).to_string());
    }
}

/// A team slug becomes part of a group name, so one GitHub never sends (`:`, a newline, empty,
/// a space, non-ASCII, absurdly long) is an error answer, not cached, never a cleaned-up group.
#[tokio::test]
async fn odd_team_slugs_are_errors_not_cached() {
    let mock = MockGithub::start().await;
    let long = "t".repeat(256);
    let slugs = [
        "system:masters",
        "sre\nops",
        "",
        "sre ops",
        "sré",
        long.as_str(),
    ];
    for (i, slug) in slugs.iter().enumerate() {
        mock.add(
            &format!("ghp_slug{i}"),
            MockUser::new("teamed", 50)
                .member("acme", "active")
                .team("acme", "sre", "SRE")
                .team("acme", slug, "Odd"),
        );
    }
    // A slug in an org that is not allowed never becomes a group, so it is not judged.
    mock.add(
        "ghp_slugelsewhere",
        MockUser::new("teamed", 50)
            .member("acme", "active")
            .team("acme", "my_team.v2", "My Team")
            .team("elsewhere", "odd:slug", "Odd"),
    );
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    for (i, slug) in slugs.iter().enumerate() {
        for (round, proto) in BOTH.into_iter().enumerate() {
            let mut client = server.client(proto).await;
            let status = ask(&mut client, &format!("ghp_slug{i}")).await;
            assert_unavailable(&status, &format!("ghp_slug{i}"));
            let error = status["error"].as_str().unwrap_or_default();
            assert!(error.contains("team slug"), "{slug:?}: {error}");
            assert_eq!(mock.calls("/user/teams"), 2 * i + round + 1, "{slug:?}");
        }
    }
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_slugelsewhere").await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(groups(&status), ["github:acme", "github:acme:my_team.v2"]);
}

#[tokio::test]
async fn any_github_user_with_an_empty_org_list_gets_no_groups() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_anyone",
        MockUser::new("stranger", 42)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    let server = serve(&mock, "allowed_orgs: []").await;
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_anyone").await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], "stranger");
    assert!(groups(&status).is_empty(), "{status}");
    assert_eq!(mock.total(), 1, "only /user");
}

#[tokio::test]
async fn teams_are_read_past_the_first_page() {
    let mock = MockGithub::start().await;
    let mut user = MockUser::new("manyteams", 99).member("acme", "active");
    for i in 0..230 {
        user = user.team("acme", &format!("t{i:03}"), &format!("Team {i}"));
    }
    mock.add("ghp_paginated", user);
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http2).await;
    let status = ask(&mut client, "ghp_paginated").await;
    assert_eq!(status["authenticated"], true);
    let groups = groups(&status);
    assert_eq!(groups.len(), 231, "the org and 230 teams");
    assert!(groups.contains(&"github:acme:t000".to_owned()));
    assert!(groups.contains(&"github:acme:t150".to_owned()), "page 2");
    assert!(groups.contains(&"github:acme:t229".to_owned()), "page 3");
    assert_eq!(mock.calls("/user/teams"), 3, "100 + 100 + 30");
}

#[tokio::test]
async fn github_enterprise_base_path() {
    let mock = MockGithub::start_at("/api/v3").await;
    mock.add(
        "ghp_enterprise",
        MockUser::new("ghe-user", 5)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    assert!(mock.url().ends_with("/api/v3/"));
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_enterprise").await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(groups(&status), ["github:acme", "github:acme:sre"]);
    assert!(mock.anomalies().is_empty(), "{:?}", mock.anomalies());
}

// ---- the org gate -------------------------------------------------------------------------

#[tokio::test]
async fn pending_member_is_refused() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_pending",
        MockUser::new("invitee", 3)
            .member("acme", "pending")
            .team("acme", "sre", "SRE"),
    );
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    assert_refused(&ask(&mut client, "ghp_pending").await);
    assert_eq!(mock.calls("/user/memberships/orgs/acme"), 1);
    assert_eq!(
        mock.calls("/user/teams"),
        0,
        "refused before teams are read"
    );
}

#[tokio::test]
async fn billing_manager_is_not_a_member() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_billing",
        MockUser::new("accountant", 31).member_as("acme", "active", "billing_manager"),
    );
    mock.add(
        "ghp_admin",
        MockUser::new("owner", 32).member_as("acme", "active", "admin"),
    );
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    assert_refused(&ask(&mut client, "ghp_billing").await);
    let status = ask(&mut client, "ghp_admin").await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], "owner");
}

#[tokio::test]
async fn non_member_is_refused() {
    let mock = MockGithub::start().await;
    // Active elsewhere; 404 for both allowed orgs.
    mock.add(
        "ghp_outsider",
        MockUser::new("outsider", 4).member("other", "active"),
    );
    let server = serve(&mock, "allowed_orgs: [acme, acme-labs]").await;
    let mut client = server.client(Proto::Http2).await;
    assert_refused(&ask(&mut client, "ghp_outsider").await);
    assert_eq!(mock.calls("/user/memberships/orgs/acme"), 1);
    assert_eq!(mock.calls("/user/memberships/orgs/acme-labs"), 1);
    // Refusals are cached for negative_cache_ttl.
    assert_refused(&ask(&mut client, "ghp_outsider").await);
    assert_eq!(mock.calls("/user"), 1);
}

#[tokio::test]
async fn bad_credentials_are_refused_and_negatively_cached() {
    let mock = MockGithub::start().await;
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    // The mock answers 401 Bad credentials for a token it does not know.
    assert_refused(&ask(&mut client, "ghp_revoked").await);
    assert_eq!(mock.calls("/user"), 1);
    assert_refused(&ask(&mut client, "ghp_revoked").await);
    assert_eq!(mock.calls("/user"), 1, "the second review made no call");
    assert_eq!(mock.total(), 1);
}

#[tokio::test]
async fn forbidden_without_rate_limit_headers_is_a_refusal() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_blocked",
        MockUser::new("blocked", 8).behaving(Behaviour::Forbidden),
    );
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    assert_refused(&ask(&mut client, "ghp_blocked").await);
    assert_refused(&ask(&mut client, "ghp_blocked").await);
    assert_eq!(mock.calls("/user"), 1, "cached as a refusal");
}

// ---- errors are not decisions -------------------------------------------------------------

async fn assert_error_not_cached(user: MockUser, github: &str, says: &str) {
    let mock = MockGithub::start().await;
    mock.add("ghp_flaky", user);
    let server = serve(&mock, github).await;
    for (i, proto) in BOTH.into_iter().enumerate() {
        let mut client = server.client(proto).await;
        let status = ask(&mut client, "ghp_flaky").await;
        assert_unavailable(&status, "ghp_flaky");
        assert!(
            status["error"].as_str().unwrap_or_default().contains(says),
            "{status}"
        );
        assert_eq!(mock.calls("/user"), i + 1, "errors are never cached");
    }
}

#[tokio::test]
async fn github_500_is_an_error_not_cached() {
    assert_error_not_cached(
        MockUser::new("x", 1).behaving(Behaviour::ServerError),
        "allowed_orgs: [acme]",
        "HTTP 500",
    )
    .await;
}

#[tokio::test]
async fn rate_limited_403_is_an_error_not_cached() {
    assert_error_not_cached(
        MockUser::new("x", 1).behaving(Behaviour::RateLimited403),
        "allowed_orgs: [acme]",
        "rate limited (HTTP 403)",
    )
    .await;
}

#[tokio::test]
async fn rate_limited_429_is_an_error_not_cached() {
    assert_error_not_cached(
        MockUser::new("x", 1).behaving(Behaviour::RateLimited429),
        "allowed_orgs: [acme]",
        "rate limited (HTTP 429)",
    )
    .await;
}

#[tokio::test]
async fn slow_github_past_timeout_is_an_error_not_cached() {
    assert_error_not_cached(
        MockUser::new("x", 1)
            .member("acme", "active")
            .delayed(Duration::from_secs(3)),
        "allowed_orgs: [acme]\ntimeout: 200ms",
        "no answer within 200ms",
    )
    .await;
}

#[tokio::test]
async fn unreachable_github_is_an_error() {
    // A port that was just free: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    logs();
    let yaml = format!(
        "routes:\n  authenticate: true\nauthenticate:\n  github:\n    api_url: http://127.0.0.1:{port}/\n    allowed_orgs: [acme]\n"
    );
    let server = TestServer::start(&yaml).await;
    let mut client = server.client(Proto::Http1).await;
    let status = ask(&mut client, "ghp_nowhere").await;
    assert_unavailable(&status, "ghp_nowhere");
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("connection failed"),
        "{status}"
    );
}

// ---- tokens refused without asking GitHub -------------------------------------------------

#[tokio::test]
async fn non_github_and_malformed_tokens_are_refused_without_calls() {
    let mock = MockGithub::start().await;
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let long = format!("ghp_{}", "a".repeat(5000));
    let tokens = [
        // A service-account JWT and an OIDC-ish token: never sent to GitHub.
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln",
        "sha256~openshift",
        "",
        "ghp_with\nnewline",
        "ghp_with\r\nheader-injection: yes",
        "ghp_with space",
        "ghp_tab\there",
        "ghp_nul\0byte",
        "ghp_ünïcode",
        "  ghp_padded",
        long.as_str(),
    ];
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for token in tokens {
            assert_refused(&ask(&mut client, token).await);
        }
    }
    assert_eq!(mock.total(), 0, "GitHub was never called");
    // And nothing panicked: the server still answers.
    let mut client = server.client(Proto::Http1).await;
    assert_eq!(client.get("/healthz").await.status, 200);
}

// ---- cache, expiry, single flight ---------------------------------------------------------

#[tokio::test]
async fn expiry_with_a_short_ttl_asks_again() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_shortttl",
        MockUser::new("eve", 12).member("acme", "active"),
    );
    let server = serve(
        &mock,
        "allowed_orgs: [acme]\ncache_ttl: 300ms\nnegative_cache_ttl: 300ms",
    )
    .await;
    let mut client = server.client(Proto::Http2).await;
    assert_eq!(
        ask(&mut client, "ghp_shortttl").await["authenticated"],
        true
    );
    assert_eq!(
        ask(&mut client, "ghp_shortttl").await["authenticated"],
        true
    );
    assert_eq!(mock.calls("/user"), 1, "cached within the TTL");
    assert_refused(&ask(&mut client, "ghp_unknown").await);
    assert_refused(&ask(&mut client, "ghp_unknown").await);
    assert_eq!(
        mock.calls("/user"),
        2,
        "refusal cached within the negative TTL"
    );
    // Not a timing assertion: waiting past both TTLs so the entries are gone.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        ask(&mut client, "ghp_shortttl").await["authenticated"],
        true
    );
    assert_refused(&ask(&mut client, "ghp_unknown").await);
    assert_eq!(
        mock.calls("/user"),
        4,
        "both expired entries were asked again"
    );
}

#[tokio::test]
async fn a_thousand_concurrent_reviews_make_one_set_of_calls() {
    let mock = MockGithub::start().await;
    // The delay keeps the first conversation open while the others arrive.
    mock.add(
        "ghp_stampede",
        MockUser::new("popular", 77)
            .member("acme", "active")
            .team("acme", "sre", "SRE")
            .delayed(Duration::from_millis(500)),
    );
    let server = serve_patient(&mock, "allowed_orgs: [acme]").await;
    let statuses = burst(&server, &["ghp_stampede".to_owned()], 1000, 10).await;
    assert_eq!(statuses.len(), 1000);
    for status in &statuses {
        assert_eq!(status["authenticated"], true, "{status}");
        assert_eq!(status["user"]["username"], "popular");
    }
    assert_eq!(mock.calls("/user"), 1);
    assert_eq!(mock.calls("/user/memberships/orgs/acme"), 1);
    assert_eq!(mock.calls("/user/teams"), 1);
}

#[tokio::test]
async fn concurrent_reviews_share_one_failing_call() {
    // Errors are not cached, so only single flight can keep this to one call.
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_stampede_err",
        MockUser::new("x", 1)
            .behaving(Behaviour::ServerError)
            .delayed(Duration::from_secs(2)),
    );
    let server = serve_patient(&mock, "allowed_orgs: [acme]").await;
    let statuses = burst(&server, &["ghp_stampede_err".to_owned()], 200, 4).await;
    assert_eq!(statuses.len(), 200);
    for status in &statuses {
        assert_unavailable(status, "ghp_stampede_err");
    }
    assert_eq!(mock.calls("/user"), 1);
}

// ---- versions, audiences, bad requests ----------------------------------------------------

#[tokio::test]
async fn wire_examples_are_answered_in_kind() {
    let mock = MockGithub::start().await;
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http2).await;
    for (file, version) in [
        ("authentication.v1.request.json", V1),
        ("authentication.v1beta1.request.json", V1BETA1),
    ] {
        let body = wire_example(file);
        let sent: Value = serde_json::from_slice(&body).expect("example");
        let token = sent["spec"]["token"].as_str().expect("token").to_owned();
        mock.add(
            &token,
            MockUser::new("octocat", 583231).member("acme", "active"),
        );
        let answer = client.post_json("/authenticate", body).await;
        let status = decided(&answer, version);
        assert_eq!(status["authenticated"], true, "{status}");
        assert_eq!(status["user"]["uid"], "583231", "{status}");
        common::assert_shape_within(
            &answer.json(),
            "authentication.v1.response-authenticated.json",
        );
    }
}

#[tokio::test]
async fn audiences_intersect_when_configured() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_audience",
        MockUser::new("aud", 21).member("acme", "active"),
    );
    let server = serve(&mock, "allowed_orgs: [acme]\naudiences: [gatehouse, other]").await;
    let mut client = server.client(Proto::Http1).await;
    let post = |audiences: &'static [&'static str]| review(V1, "ghp_audience", audiences);

    let status = decided(
        &client
            .post_json("/authenticate", post(&["api", "gatehouse"]))
            .await,
        V1,
    );
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["audiences"], json!(["gatehouse"]));

    let calls = mock.total();
    let status = decided(&client.post_json("/authenticate", post(&["api"])).await, V1);
    assert_refused(&status);
    assert_eq!(
        mock.total(),
        calls,
        "no GitHub call for an audience not served"
    );

    // No audiences asked: the apiserver's own; nothing to intersect.
    let status = decided(&client.post_json("/authenticate", post(&[])).await, V1);
    assert_eq!(status["authenticated"], true, "{status}");
    assert!(status.get("audiences").is_none(), "{status}");

    // Without configured audiences, status.audiences stays empty: the apiserver checks.
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http2).await;
    let status = decided(&client.post_json("/authenticate", post(&["api"])).await, V1);
    assert_eq!(status["authenticated"], true, "{status}");
    assert!(status.get("audiences").is_none(), "{status}");
}

/// Issue 6: what GitHub says about a token is cached by the token alone. Twenty different
/// audience lists are one GitHub conversation, and each answer carries its own intersection
/// (a subset of what that review asked for), or a refusal when it asks for nothing served.
#[tokio::test]
async fn twenty_audience_lists_make_one_set_of_github_calls() {
    let mock = MockGithub::start().await;
    mock.add(
        "ghp_manyaudiences",
        MockUser::new("aud", 23)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    let api = "https://kubernetes.default.svc";
    let server = serve(
        &mock,
        &format!("allowed_orgs: [acme]\naudiences: [gatehouse, '{api}']"),
    )
    .await;
    for i in 0..20 {
        let mut client = server.client(BOTH[i % 2]).await;
        let other = format!("aud-{i}");
        let (asked, served): (Vec<&str>, Vec<&str>) = match i % 3 {
            0 => (vec![&other, "gatehouse"], vec!["gatehouse"]),
            1 => (vec![api, &other], vec![api]),
            _ => (vec!["gatehouse", &other, api], vec!["gatehouse", api]),
        };
        let answer = client
            .post_json("/authenticate", review(V1, "ghp_manyaudiences", &asked))
            .await;
        let status = decided(&answer, V1);
        assert_eq!(status["authenticated"], true, "{asked:?}: {status}");
        assert_eq!(status["audiences"], json!(served), "{asked:?}");
    }
    let calls = (
        mock.calls("/user"),
        mock.calls("/user/memberships/orgs/acme"),
        mock.calls("/user/teams"),
    );
    assert_eq!(
        calls,
        (1, 1, 1),
        "one conversation for twenty audience lists"
    );
    // The cached identity does not reach a review for audiences gatehouse does not serve.
    let mut client = server.client(Proto::Http2).await;
    let answer = client
        .post_json(
            "/authenticate",
            review(V1BETA1, "ghp_manyaudiences", &["aud-x", "aud-y"]),
        )
        .await;
    assert_refused(&decided(&answer, V1BETA1));
    assert_eq!(mock.total(), 3, "and no call for it");

    // Without configured audiences the apiserver checks them: still one conversation.
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    for i in 0..20 {
        let other = format!("aud-{i}");
        let answer = client
            .post_json(
                "/authenticate",
                review(V1, "ghp_manyaudiences", &[&other, api]),
            )
            .await;
        let status = decided(&answer, V1);
        assert_eq!(status["authenticated"], true, "{status}");
        assert!(status.get("audiences").is_none(), "{status}");
    }
    assert_eq!(
        mock.total(),
        6,
        "one more conversation for the second server"
    );
}

/// Issue 6: at most `max_concurrent_lookups` GitHub conversations at once. With GitHub holding
/// every answer, four tokens (one of them asked five times: single flight, one slot) take the
/// four slots; 36 more tokens are answered at once, while GitHub still holds the four, with an
/// uncached `status.error`; once GitHub answers, each of them succeeds when asked again.
#[tokio::test]
async fn github_lookups_past_the_cap_are_answered_at_once_with_an_uncached_error() {
    const CAP: usize = 4;
    const TOKENS: usize = 40;
    let mock = MockGithub::start().await;
    let token = |i: usize| format!("ghp_fanout{i:02}");
    for i in 0..TOKENS {
        mock.add(
            &token(i),
            MockUser::new(&format!("fan{i:02}"), 1000 + i as u64)
                .member("acme", "active")
                .team("acme", "sre", "SRE"),
        );
    }
    // GitHub's budget is long enough that the held conversations outlast any load on the
    // machine: they must still be open when the other tokens are refused.
    let server = serve_patient(
        &mock,
        &format!("allowed_orgs: [acme]\nmax_concurrent_lookups: {CAP}\ntimeout: 30s"),
    )
    .await;
    let authenticator = server.app.authenticator.as_ref().expect("route is on");
    mock.hold();

    let first: Vec<String> = [0, 0, 0, 0, 0, 1, 2, 3].map(token).to_vec();
    let mut held = send_reviews(&server, &first, 2).await;
    eventually(
        "four conversations held by GitHub, eight reviews waiting",
        || mock.open_tokens().len() == CAP && authenticator.reviews_in_flight() == first.len(),
    )
    .await;

    let rest: Vec<String> = (CAP..TOKENS).map(token).collect();
    let refused = answers(send_reviews(&server, &rest, 4).await).await;
    assert_eq!(refused.len(), TOKENS - CAP);
    for status in &refused {
        assert_unavailable(status, "ghp_fanout");
        let error = status["error"].as_str().unwrap_or_default();
        assert!(error.contains("max_concurrent_lookups"), "{status}");
    }
    assert!(
        held.try_join_next().is_none(),
        "the first four are still waiting on GitHub"
    );
    assert_eq!(authenticator.lookups_refused(), (TOKENS - CAP) as u64);
    assert_eq!(
        mock.calls("/user"),
        CAP,
        "refused lookups never reach GitHub"
    );
    assert!(captured().contains("GitHub lookup refused"), "logged");

    mock.release();
    let statuses = answers(held).await;
    assert_eq!(statuses.len(), first.len());
    for status in &statuses {
        assert_eq!(status["authenticated"], true, "{status}");
    }
    assert_eq!(
        mock.calls("/user"),
        CAP,
        "token 0's five reviews shared one conversation"
    );
    assert_eq!(mock.peak_conversations(), CAP);

    // Not cached: asked again (one at a time, under the cap), every refused token succeeds.
    for (n, i) in (CAP..TOKENS).enumerate() {
        let mut client = server.client(BOTH[n % 2]).await;
        let status = ask(&mut client, &token(i)).await;
        assert_eq!(status["authenticated"], true, "{status}");
        assert_eq!(status["user"]["username"], format!("fan{i:02}"));
    }
    assert_eq!(mock.calls("/user"), TOKENS);
    assert_eq!(mock.peak_conversations(), CAP);
    assert_eq!(authenticator.reviews_in_flight(), 0);
}

#[tokio::test]
async fn undecodable_reviews_are_400() {
    let mock = MockGithub::start().await;
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for body in [
            "not json".to_owned(),
            json!({"apiVersion": "authentication.k8s.io/v2", "kind": "TokenReview", "spec": {"token": "ghp_x"}}).to_string(),
            json!({"apiVersion": V1, "kind": "SubjectAccessReview", "spec": {"token": "ghp_x"}}).to_string(),
            json!({"apiVersion": V1, "kind": "TokenReview"}).to_string(),
            json!({"apiVersion": V1, "kind": "TokenReview", "spec": {"token": 5}}).to_string(),
        ] {
            let answer = client.post_json("/authenticate", body.clone()).await;
            assert_eq!(answer.status, 400, "{body}");
            assert_eq!(answer.json()["reason"], "BadRequest", "{body}");
        }
    }
    assert_eq!(mock.total(), 0);
}

/// A token in the wrong place is still never quoted back: serde would print the value.
#[tokio::test]
async fn malformed_reviews_never_quote_the_token() {
    let mock = MockGithub::start().await;
    let server = serve(&mock, "allowed_orgs: [acme]").await;
    let mut client = server.client(Proto::Http1).await;
    let secret = "ghp_SECRETvalue123";
    for body in [
        json!({"apiVersion": V1, "kind": "TokenReview", "spec": secret}).to_string(),
        json!({"apiVersion": V1, "kind": "TokenReview", "spec": {"token": [secret]}}).to_string(),
        json!({"apiVersion": secret, "kind": "TokenReview"}).to_string(),
    ] {
        let answer = client.post_json("/authenticate", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("line 1 column"), "{text}");
    }
    assert_eq!(mock.total(), 0);
}

#[tokio::test]
async fn route_is_off_by_default() {
    logs();
    let server = TestServer::start("").await;
    let mut client = server.client(Proto::Http1).await;
    let answer = client
        .post_json("/authenticate", review(V1, "ghp_off", &[]))
        .await;
    assert_eq!(answer.status, 404);
}

#[test]
fn startup_refuses_unusable_configs() {
    let parse = |yaml: &str| gatehouse::config::Config::from_yaml(yaml, "test").map(|_| ());
    // On without saying who may log in.
    let err = parse("routes: {authenticate: true}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("authenticate.github.allowed_orgs"), "{err}");
    // Unknown keys anywhere in the block.
    let err = parse("authenticate: {github: {allowed_orgs: [a], orgs: [b]}}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("orgs"), "{err}");
    let err = parse("authenticate: {gitlab: {}}").unwrap_err().to_string();
    assert!(err.contains("gitlab"), "{err}");
    // A GitHub budget that does not fit in the request deadline, when the route is served.
    let err = parse(
        "routes: {authenticate: true}\nlimits: {request_timeout: 2s}\nauthenticate: {github: {allowed_orgs: [a], timeout: 5s}}",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("authenticate.github.timeout"), "{err}");
    // Off, the same numbers are fine: nothing will wait on GitHub.
    assert!(parse(
        "limits: {request_timeout: 2s}\nauthenticate: {github: {allowed_orgs: [a], timeout: 5s}}"
    )
    .is_ok());
    assert!(
        parse("routes: {authenticate: true}\nauthenticate: {github: {allowed_orgs: []}}").is_ok()
    );
    // The block exactly as the issue documents it.
    let documented = r#"
routes:
  authenticate: true
authenticate:
  github:
    api_url: https://api.github.com/          # GitHub Enterprise: https://ghe.example.com/api/v3/
    allowed_orgs: [acme, acme-labs]           # empty list: any GitHub user (logged as a warning at start)
    username_prefix: ""                       # "" keeps the seed's behaviour (user = login); e.g. "github:"
    groups: both                              # teams | orgs | both | none
    group_prefix: "github:"                   # groups are github:<org> and github:<org>:<team-slug>
    token_prefixes: [ghp_, github_pat_, gho_, ghu_]   # other bearer tokens are refused without calling GitHub
    timeout: 5s                               # total GitHub time for one review, well under the apiserver's 30s
    cache_ttl: 5m
    negative_cache_ttl: 30s
    audiences: []                             # when set: the audiences this authenticator answers for
"#;
    let config =
        gatehouse::config::Config::from_yaml(documented, "issue").expect("documented config");
    let github = &config.authenticate.github;
    assert_eq!(
        github.allowed_orgs.as_deref(),
        Some(&["acme".to_owned(), "acme-labs".to_owned()][..])
    );
    assert_eq!(github.timeout.0, Duration::from_secs(5));
    assert_eq!(github.cache_ttl.0, Duration::from_secs(300));
    assert_eq!(github.negative_cache_ttl.0, Duration::from_secs(30));
    // Outside a runtime, building octocrab's client would panic: an error instead.
    assert!(gatehouse::app::App::new(config.clone()).is_err());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(async { gatehouse::app::App::new(config) });
    assert!(
        app.is_ok_and(|a| a.authenticator.is_some()),
        "builds the authenticator"
    );
}

// ---- secrecy ------------------------------------------------------------------------------

#[tokio::test]
async fn the_token_appears_nowhere_in_the_logs() {
    let buffer = logs();
    let mock = MockGithub::start().await;
    let good = "ghp_S3CRETgoodTOKENx1";
    let pending = "ghp_S3CRETpendingTOKENx2";
    let failing = "ghp_S3CRETfailingTOKENx3";
    let slow = "ghp_S3CRETslowTOKENx4";
    let unknown = "ghp_S3CRETunknownTOKENx5";
    let broken = "ghp_S3CRETbroken\nTOKENx6";
    let foreign = "eyJS3CRETforeignTOKENx7";
    mock.add(
        good,
        MockUser::new("loggeduser", 31)
            .member("acme", "active")
            .team("acme", "sre", "SRE"),
    );
    mock.add(
        pending,
        MockUser::new("pendinguser", 32).member("acme", "pending"),
    );
    mock.add(
        failing,
        MockUser::new("x", 33).behaving(Behaviour::RateLimited403),
    );
    mock.add(slow, MockUser::new("y", 34).delayed(Duration::from_secs(2)));
    let server = serve(&mock, "allowed_orgs: [acme]\ntimeout: 300ms").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for token in [good, pending, failing, slow, unknown, broken, foreign] {
            let answer = client
                .post_json(
                    "/authenticate?timeout=30s",
                    review(V1BETA1, token, &["aud"]),
                )
                .await;
            assert_eq!(answer.status, 200);
            assert!(!String::from_utf8_lossy(&answer.body).contains("S3CRET"));
        }
        // A 400 path too.
        let answer = client
            .post_json("/authenticate", format!("{{\"apiVersion\":\"{V1}\",\"kind\":\"TokenReview\",\"spec\":{{\"token\":\"{good}\",\"audiences\":5}}}}"))
            .await;
        assert_eq!(answer.status, 400);
    }
    // The capture works: the access log line for the good token names the user...
    let logs = String::from_utf8_lossy(&buffer.lock().expect("log buffer")).into_owned();
    assert!(
        logs.contains("user=\"loggeduser\"") || logs.contains("user=loggeduser"),
        "access log shows the user"
    );
    assert!(
        logs.contains("unauthenticated"),
        "access log shows refusals"
    );
    assert!(
        logs.contains("GitHub answered"),
        "TRACE/DEBUG lines were captured"
    );
    // ...and no token, nor its secret part, appears anywhere.
    for token in [good, pending, failing, slow, unknown, broken, foreign] {
        assert!(!logs.contains(token), "token leaked into the logs");
    }
    assert!(
        !logs.contains("S3CRET"),
        "a token fragment leaked into the logs"
    );
    assert!(!captured().contains("S3CRET"));
}
