//! Gatekeeper ConstraintTemplates and constraints: refused at load when they cannot be honoured,
//! evaluated through the real server on /validate and /image_policy (HTTP/1.1 and h2, real TLS),
//! and `gatehouse verify` run as the real binary on our own suites.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{admission_review, image_review, pod_review, TestServer, BOTH};
use serde_json::{json, Value};

const V1: &str = "admission.k8s.io/v1";

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gatekeeper")
}

/// Our policies, plus a native latest-tag rule for `default`, so both engines speak at once.
/// A generous time limit: a debug build on a busy machine must not fail a test by time.
fn config() -> String {
    format!(
        "gatekeeper:\n  paths: [{}]\n  eval_timeout: 5s\npolicies:\n  - name: no-latest-tag\n    match:\n      namespaces: [default]\n    images:\n      deny_latest: true\n",
        data().join("policies").display()
    )
}

async fn validate(client: &mut common::Client, body: String) -> Value {
    let answer = client.post_json("/validate?timeout=10s", body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["response"].clone()
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn validate_reports_constraint_and_native_violations_together() {
    let server = TestServer::start(&config()).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let denied = validate(&mut client, pod_review(V1, "u1", "default", &["nginx"])).await;
        assert_eq!(denied["allowed"], false, "{denied}");
        assert_eq!(denied["uid"], "u1");
        assert_eq!(denied["status"]["code"], 403);
        let msg = message(&denied);
        assert!(
            msg.contains(
                "[repos-from-registry-my-com] container <c0> has an invalid image repo <nginx>"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("Images using latest tag are not allowed"),
            "{msg}"
        );

        let allowed = validate(
            &mut client,
            pod_review(V1, "u2", "default", &["registry.my.com/team/app:1.0"]),
        )
        .await;
        assert_eq!(allowed["allowed"], true, "{allowed}");
        assert!(allowed.get("warnings").is_none(), "{allowed}");

        // excludedNamespaces: kube-*
        let excluded = validate(
            &mut client,
            pod_review(V1, "u3", "kube-system", &["quay.io/x:1"]),
        )
        .await;
        assert_eq!(excluded["allowed"], true, "{excluded}");
    }
    server.stop().await;
}

#[tokio::test]
async fn warn_allows_with_warnings_and_dryrun_records_audit_annotations() {
    let server = TestServer::start(&config()).await;
    let mut client = server.client(common::Proto::Http2).await;
    let warned = validate(
        &mut client,
        pod_review(V1, "w", "staging", &["registry.my.com/app:latest"]),
    )
    .await;
    assert_eq!(warned["allowed"], true, "{warned}");
    assert_eq!(
        warned["warnings"],
        json!(["[no-latest-in-staging] container <c0> uses a disallowed tag <latest>; disallowed tags are [\"latest\"]"])
    );
    let observed = validate(
        &mut client,
        pod_review(V1, "d", "observed", &["registry.my.com/app"]),
    )
    .await;
    assert_eq!(observed["allowed"], true, "{observed}");
    assert!(observed.get("warnings").is_none(), "{observed}");
    let note = observed["auditAnnotations"]["gatekeeper-latest-observed"]
        .as_str()
        .expect("audit annotation");
    assert!(note.contains("disallowed tag <latest>"), "{note}");
    server.stop().await;
}

#[tokio::test]
async fn delete_is_judged_on_the_old_object_and_update_on_either() {
    let server = TestServer::start(&config()).await;
    let mut client = server.client(common::Proto::Http1).await;
    let namespace = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments", "labels": labels}});
    // DELETE carries oldObject only; Gatekeeper reviews it as the object.
    let mut review: Value = serde_json::from_str(&admission_review(
        V1,
        "del",
        ("", "Namespace"),
        "",
        "DELETE",
        Value::Null,
    ))
    .expect("json");
    review["request"]["oldObject"] = namespace(json!({}));
    let denied = validate(&mut client, review.to_string()).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(message(&denied).contains("[namespaces-have-an-owner] you must provide labels"));
    // The label value is checked with the constraint's regular expression.
    let good = namespace(json!({"owner": "alice.agilebank.demo"}));
    let bad = namespace(json!({"owner": "alice.agilebank.demo.evil.io"}));
    let create =
        |object: &Value| admission_review(V1, "c", ("", "Namespace"), "", "CREATE", object);
    assert_eq!(validate(&mut client, create(&good)).await["allowed"], true);
    let refused = validate(&mut client, create(&bad)).await;
    assert!(
        message(&refused).contains("does not match the regex"),
        "{refused}"
    );
    // A DELETE without oldObject cannot be reviewed: a 400, never an allow.
    let answer = client
        .post_json(
            "/validate",
            admission_review(V1, "x", ("", "Namespace"), "", "DELETE", Value::Null),
        )
        .await;
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    server.stop().await;
}

#[tokio::test]
async fn image_reviews_are_judged_as_pods_by_image_templates() {
    let server = TestServer::start(&config()).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let answer = client
            .post_json(
                "/image_policy",
                image_review("prod-eu", &["registry.my.com/app:dev", "quay.io/x:1"]),
            )
            .await;
        assert_eq!(answer.status, 200);
        let status = &answer.json()["status"];
        assert_eq!(status["allowed"], false, "{status}");
        let reason = status["reason"].as_str().expect("reason");
        assert!(
            reason.contains("[no-dev-tags] container <image-0> uses a disallowed tag <dev>"),
            "{reason}"
        );
        assert!(reason.contains("[repos-from-registry-my-com] container <image-1> has an invalid image repo <quay.io/x:1>"), "{reason}");
        let ok = client
            .post_json(
                "/image_policy",
                image_review("prod-eu", &["registry.my.com/app:1.2"]),
            )
            .await;
        assert_eq!(ok.json()["status"]["allowed"], true, "{}", ok.json());
    }
    server.stop().await;
}

/// A template whose evaluation cannot finish within the limit.
const SLOW: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: ghslow}
spec:
  crd: {spec: {names: {kind: GhSlow}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package ghslow
        violation[{"msg": "never"}] {
          xs := numbers.range(1, 4000)
          xs[_] == xs[_] + 100000
        }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: GhSlow
metadata: {name: too-slow}
spec:
  enforcementAction: warn
"#;

#[tokio::test]
async fn an_evaluation_past_its_time_limit_denies_naming_the_constraint() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("slow.yaml"), SLOW).expect("write");
    let yaml = format!(
        "gatekeeper:\n  paths: [{}]\n  eval_timeout: 5ms\n",
        dir.path().display()
    );
    let server = TestServer::start(&yaml).await;
    let mut client = server.client(common::Proto::Http1).await;
    let denied = validate(&mut client, pod_review(V1, "s", "a", &["nginx:1"])).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let msg = message(&denied);
    // Even a warn constraint denies when it cannot answer: fail closed.
    assert!(
        msg.contains("[too-slow] evaluation failed, request denied"),
        "{msg}"
    );
    assert!(msg.contains("time limit"), "{msg}");
    server.stop().await;
}

fn template(name: &str, kind: &str, rego: &str) -> String {
    let rego: String = rego.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata: {{name: {name}}}\nspec:\n  crd:\n    spec:\n      names: {{kind: {kind}}}\n      validation:\n        openAPIV3Schema:\n          type: object\n          properties:\n            n: {{type: integer}}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n{rego}"
    )
}

fn constraint(kind: &str, spec: &str) -> String {
    format!("apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: {kind}\nmetadata: {{name: c1}}\nspec:\n{spec}")
}

fn load(yaml: &str) -> Result<gatehouse::gatekeeper::Gatekeeper, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, yaml).expect("write");
    let config = gatehouse::gatekeeper::GatekeeperConfig {
        paths: vec![dir.path().to_owned()],
        ..Default::default()
    };
    gatehouse::gatekeeper::load(&config).map_err(|e| e.to_string())
}

#[test]
fn what_cannot_be_honoured_is_refused_at_load_naming_file_and_template() {
    let ok = "package t\nviolation[{\"msg\": \"x\"}] { input.review.object.spec }";
    for (yaml, needles) in [
        (
            template("t", "T", "package t\nviolation[{\"msg\": m}] {\n  m := \n}"),
            vec!["template t", "policy.yaml"],
        ),
        (
            template("t", "T", "package t\nviolation[{\"msg\": \"x\"}] { external_data({\"provider\": \"p\", \"keys\": []}) }"),
            vec!["template t", "external_data"],
        ),
        (
            template("t", "T", "package t\nviolation[{\"msg\": \"x\"}] { data.inventory.cluster[_] }"),
            vec!["template t", "data.inventory", "no cluster state"],
        ),
        (
            template("t", "T", "package t\nviolation[{\"msg\": \"x\"}] { time.now_ns() > 0 }"),
            vec!["template t", "time.now_ns"],
        ),
        (
            template("t", "T", "package t\nviolation[{\"msg\": \"x\"}] { input.review.namespaceObject.metadata.labels.x }"),
            vec!["namespaceObject"],
        ),
        (
            template("t", "T", "package t\ndeny[{\"msg\": \"x\"}] { true }"),
            vec!["no `violation` rule"],
        ),
        (
            format!("{}\n---\n{}", template("t", "T", ok), constraint("T", "  match:\n    namespaceSelector:\n      matchLabels: {a: b}\n")),
            vec!["constraint T/c1", "namespaceSelector", "no cluster state"],
        ),
        (
            format!("{}\n---\n{}", template("t", "T", ok), constraint("T", "  parameters:\n    n: seven\n")),
            vec!["constraint T/c1", "parameters.n: must be of type integer", "openAPIV3Schema"],
        ),
        (
            format!("{}\n---\n{}", template("t", "T", ok), constraint("T", "  parameters:\n    m: 1\n")),
            vec!["parameters.m: unknown field"],
        ),
        (
            format!("{}\n---\n{}", template("t", "T", ok), constraint("T", "  enforcementAction: scoped\n")),
            vec!["scoped"],
        ),
        (
            constraint("Missing", "  parameters: {}\n"),
            vec!["constraint Missing/c1", "no ConstraintTemplate defines kind \"Missing\""],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n".to_owned(),
            vec!["policy.yaml: document 1", "neither a ConstraintTemplate"],
        ),
    ] {
        let err = load(&yaml).expect_err(&yaml);
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
    let loaded = load(&format!(
        "{}\n---\n{}",
        template("t", "T", ok),
        constraint("T", "  parameters: {n: 3}\n")
    ))
    .expect("a valid pair loads");
    assert_eq!(loaded.constraints().len(), 1);
}

#[test]
fn a_bad_policy_stops_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("x.yaml"),
        constraint("Nope", "  parameters: {}\n"),
    )
    .expect("write");
    let yaml = format!("gatekeeper:\n  paths: [{}]\n", dir.path().display());
    let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("config parses");
    let err = gatehouse::app::App::new(config).expect_err("refused");
    assert!(err.to_string().contains("Nope"), "{err}");
}

fn verify(suites: &[PathBuf]) -> (bool, String) {
    verify_with(&[], suites)
}

fn verify_with(flags: &[&str], suites: &[PathBuf]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("verify")
        .args(flags)
        .args(suites)
        .output()
        .expect("run gatehouse verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_passes_our_suites_and_fails_a_wrong_one() {
    let suites = [
        "allowed-repos",
        "disallowed-tags",
        "required-labels",
        "container-limits",
        "negation",
    ]
    .map(|s| data().join("suites").join(s).join("suite.yaml"));
    let (ok, out) = verify(&suites);
    assert!(ok, "{out}");
    assert!(out.contains("24 passed, 0 failed"), "{out}");
    assert!(
        out.contains("tags-must-be-strings (constraint refused, as expected)"),
        "{out}"
    );

    let (ok, out) = verify(&[data().join("suites/expected-to-fail/suite.yaml")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL says-allowed-but-is-denied: got 1 violations but want none"),
        "{out}"
    );
}

/// The differential check over our own suites: every case on regorus's interpreter and on its
/// RVM. They differ exactly where template.rs's unit test pins regorus 0.14.1's RVM bugs (bare
/// function facts in the allowed-repos lib: three wrong allows; an assignment from an absent
/// label in the negation suite: a wrong denial), which is why requests use the interpreter.
#[test]
fn verify_rvm_compares_both_engines_on_every_case_of_our_suites() {
    for (suite, cases, differ) in [
        ("allowed-repos", 5, 3),
        ("disallowed-tags", 6, 0),
        ("required-labels", 4, 0),
        ("container-limits", 5, 0),
        ("negation", 4, 1),
    ] {
        let (ok, out) = verify_with(
            &["--rvm"],
            &[data().join("suites").join(suite).join("suite.yaml")],
        );
        let line = format!("cases run on both engines, {differ} answered differently");
        assert!(
            out.contains(&format!("; {cases} {line}")),
            "{suite}: want {cases} cases, {differ} different: {out}"
        );
        assert_eq!(ok, differ == 0, "{suite}: {out}");
        if differ > 0 {
            assert!(
                out.contains("the RVM answers differently from the interpreter: interpreter ["),
                "{out}"
            );
        }
    }
}
