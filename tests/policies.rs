//! Policies as configuration, over real TLS, through /image_policy and /validate with both
//! AdmissionReview versions: allow, deny, warn, audit, break glass, exclusions, workloads, cache.

mod common;

use std::time::Duration;

use common::{admission_review as review, Proto, TestServer, BOTH};
use serde_json::{json, Value};

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";
const VERSIONS: [&str; 2] = [V1, V1BETA1];

fn example_yaml() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/policies.yaml");
    std::fs::read_to_string(path).expect("config/examples/policies.yaml")
}

fn labelled_pod(images: &[&str], labels: Value, annotations: Value) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": labels, "annotations": annotations},
        "spec": {"containers": containers}
    })
}

fn good_labels() -> Value {
    json!({"example-validation": "true", "team": "sre"})
}

fn pod(images: &[&str]) -> Value {
    labelled_pod(images, good_labels(), json!({}))
}

fn image_review(namespace: &str, images: &[&str], annotations: Value) -> String {
    let containers: Vec<Value> = images.iter().map(|i| json!({"image": i})).collect();
    json!({
        "apiVersion": "imagepolicy.k8s.io/v1alpha1", "kind": "ImageReview",
        "metadata": {"creationTimestamp": null},
        "spec": {"containers": containers, "annotations": annotations, "namespace": namespace},
        "status": {"allowed": false}
    })
    .to_string()
}

/// What a validating answer says, checked for the invariants every answer must keep.
struct Verdict {
    allowed: bool,
    message: String,
    warnings: Vec<String>,
    audit: Value,
}

async fn validate(client: &mut common::Client, version: &str, uid: &str, body: String) -> Verdict {
    let answer = client.post_json("/validate?timeout=10s", body).await;
    let json = answer.ok_json();
    assert_eq!(json["apiVersion"], version);
    assert_eq!(json["kind"], "AdmissionReview");
    let response = &json["response"];
    assert_eq!(response["uid"], uid);
    assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    let allowed = response["allowed"].as_bool().expect("allowed");
    let message = response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !allowed {
        assert_eq!(response["status"]["code"], 403);
    }
    let warnings = response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Verdict {
        allowed,
        message,
        warnings,
        audit: response["auditAnnotations"].clone(),
    }
}

async fn image_policy(client: &mut common::Client, body: String) -> (bool, String, Value) {
    let answer = client.post_json("/image_policy?timeout=30s", body).await;
    assert_eq!(answer.status, 200);
    let json = answer.json();
    assert_eq!(json["apiVersion"], "imagepolicy.k8s.io/v1alpha1");
    assert_eq!(json["kind"], "ImageReview");
    let status = &json["status"];
    (
        status["allowed"].as_bool().expect("allowed"),
        status["reason"].as_str().unwrap_or_default().to_owned(),
        status["auditAnnotations"].clone(),
    )
}

#[tokio::test]
async fn seed_002_only_images_from_registry_my_com() {
    let yaml = "policies:\n  - name: only-mine\n    images:\n      allowed_registries: [registry.my.com]\n";
    let server = TestServer::start(yaml).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let (allowed, reason, _) = image_policy(
            &mut client,
            image_review("default", &["prometheus:2.6.1"], json!({})),
        )
        .await;
        assert!(!allowed);
        assert!(
            reason.contains("docker.io/library/prometheus") && reason.contains("registry.my.com"),
            "{reason}"
        );
        let (allowed, _, _) = image_policy(
            &mut client,
            image_review("default", &["registry.my.com/prometheus:2.6.1"], json!({})),
        )
        .await;
        assert!(allowed);
        for version in VERSIONS {
            let body = review(
                version,
                "u1",
                ("", "Pod"),
                "default",
                "CREATE",
                pod(&["prometheus:2.6.1"]),
            );
            let v = validate(&mut client, version, "u1", body).await;
            assert!(!v.allowed);
            assert!(
                v.message.contains("not from an allowed registry")
                    && v.message.contains("only-mine"),
                "{}",
                v.message
            );
            let body = review(
                version,
                "u2",
                ("", "Pod"),
                "default",
                "CREATE",
                pod(&["registry.my.com/prometheus:2.6.1"]),
            );
            assert!(validate(&mut client, version, "u2", body).await.allowed);
        }
    }
}

#[tokio::test]
async fn example_allows_a_compliant_pod_without_warnings() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http2).await;
    for version in VERSIONS {
        let body = review(
            version,
            "ok",
            ("", "Pod"),
            "default",
            "CREATE",
            pod(&["registry.my.com/app:1.0", "ghcr.io/acme/tool:2"]),
        );
        let v = validate(&mut client, version, "ok", body).await;
        assert!(v.allowed, "{}", v.message);
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }
    let (allowed, reason, _) = image_policy(
        &mut client,
        image_review("default", &["registry.my.com/app:1.0"], json!({})),
    )
    .await;
    assert!(allowed, "{reason}");
}

#[tokio::test]
async fn example_denials_name_policy_container_and_image_and_report_all() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    for version in VERSIONS {
        // Latest tag (docker.io/library is a trusted registry, so only one policy objects).
        let body = review(
            version,
            "d1",
            ("", "Pod"),
            "default",
            "CREATE",
            pod(&["nginx"]),
        );
        let v = validate(&mut client, version, "d1", body).await;
        assert!(!v.allowed);
        assert!(
            v.message
                .contains("Images using latest tag are not allowed"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("container \"c0\"") && v.message.contains("\"nginx\""),
            "{}",
            v.message
        );
        assert!(v.message.contains("no-latest-tag"), "{}", v.message);
        assert!(!v.message.contains("trusted-registries"), "{}", v.message);

        // Two policies object to one image: both are reported.
        let body = review(
            version,
            "d2",
            ("", "Pod"),
            "default",
            "CREATE",
            pod(&["quay.io/evil/miner:1"]),
        );
        let v = validate(&mut client, version, "d2", body).await;
        assert!(!v.allowed);
        assert!(
            v.message.contains("trusted-registries") && v.message.contains("blocked"),
            "{}",
            v.message
        );
        assert!(v.message.contains("quay.io/evil/*"), "{}", v.message);

        // Look-alike hosts and orgs do not pass as trusted ones.
        for image in [
            "registry.my.com.evil.io/app:1.0",
            "registry.my.com:5000/app:1.0",
            "ghcr.io/acme-evil/app:1",
        ] {
            let body = review(
                version,
                "d3",
                ("", "Pod"),
                "default",
                "CREATE",
                pod(&[image]),
            );
            let v = validate(&mut client, version, "d3", body).await;
            assert!(!v.allowed, "{image} must not pass as trusted");
            assert!(v.message.contains("trusted-registries"), "{}", v.message);
        }

        // An image that does not parse is denied with the reason, never allowed.
        let body = review(
            version,
            "d4",
            ("", "Pod"),
            "default",
            "CREATE",
            pod(&["Registry.my.com/App:1"]),
        );
        let v = validate(&mut client, version, "d4", body).await;
        assert!(!v.allowed);
        assert!(
            v.message.contains("invalid image reference"),
            "{}",
            v.message
        );
    }
    let (allowed, reason, _) = image_policy(
        &mut client,
        image_review(
            "default",
            &["nginx:1.25", "docker.io/library/busybox:1.36"],
            json!({}),
        ),
    )
    .await;
    assert!(!allowed);
    assert!(
        reason.contains("blocked") && reason.contains("busybox"),
        "{reason}"
    );
}

#[tokio::test]
async fn prod_requires_digests() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let pinned = format!("registry.my.com/app@sha256:{}", "c".repeat(64));
    for version in VERSIONS {
        let body = review(
            version,
            "p1",
            ("", "Pod"),
            "prod",
            "CREATE",
            pod(&["registry.my.com/app:1.0"]),
        );
        let v = validate(&mut client, version, "p1", body).await;
        assert!(!v.allowed);
        assert!(
            v.message.contains("without a digest") && v.message.contains("prod-digests"),
            "{}",
            v.message
        );
        let body = review(
            version,
            "p2",
            ("", "Pod"),
            "prod",
            "CREATE",
            pod(&[&pinned]),
        );
        assert!(validate(&mut client, version, "p2", body).await.allowed);
        // Other namespaces do not need digests.
        let body = review(
            version,
            "p3",
            ("", "Pod"),
            "staging",
            "CREATE",
            pod(&["registry.my.com/app:1.0"]),
        );
        assert!(validate(&mut client, version, "p3", body).await.allowed);
    }
    let (allowed, reason, _) = image_policy(
        &mut client,
        image_review("prod", &["registry.my.com/app:1.0"], json!({})),
    )
    .await;
    assert!(!allowed && reason.contains("prod-digests"), "{reason}");
}

#[tokio::test]
async fn excluded_namespaces_skip_only_the_policies_that_exclude_them() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http2).await;
    for version in VERSIONS {
        // kube-system is excluded from no-latest-tag and trusted-registries...
        let body = review(
            version,
            "k1",
            ("", "Pod"),
            "kube-system",
            "CREATE",
            pod(&["k8s.gcr.io/coredns"]),
        );
        let v = validate(&mut client, version, "k1", body).await;
        assert!(v.allowed, "{}", v.message);
        // ...but not from blocked.
        let body = review(
            version,
            "k2",
            ("", "Pod"),
            "kube-system",
            "CREATE",
            pod(&["busybox:1.36"]),
        );
        let v = validate(&mut client, version, "k2", body).await;
        assert!(!v.allowed && v.message.contains("blocked"), "{}", v.message);
    }
    let (allowed, _, _) = image_policy(
        &mut client,
        image_review("kube-system", &["k8s.gcr.io/coredns"], json!({})),
    )
    .await;
    assert!(allowed);
}

#[tokio::test]
async fn warn_policies_allow_with_warnings_on_validate_only() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    for version in VERSIONS {
        let object = labelled_pod(&["registry.my.com/app:1"], json!({"team": ""}), json!({}));
        let body = review(version, "w1", ("", "Pod"), "default", "CREATE", object);
        let v = validate(&mut client, version, "w1", body).await;
        assert!(v.allowed, "{}", v.message);
        assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
        assert!(
            v.warnings.iter().all(|w| w.contains("team-label")),
            "{:?}",
            v.warnings
        );
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("example-validation") && w.contains("\"true\"")));
        assert!(v
            .warnings
            .iter()
            .any(|w| w.contains("\"team\"") && w.contains("non-empty")));
        // Warnings and denials together: both reported.
        let object = labelled_pod(&["nginx"], json!(null), json!({}));
        let body = review(version, "w2", ("", "Pod"), "default", "CREATE", object);
        let v = validate(&mut client, version, "w2", body).await;
        assert!(!v.allowed);
        assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
    }
    // An ImageReview carries no labels: label policies do not apply.
    let (allowed, reason, _) = image_policy(
        &mut client,
        image_review("default", &["registry.my.com/app:1"], json!({})),
    )
    .await;
    assert!(allowed, "{reason}");
}

#[tokio::test]
async fn audit_policies_allow_and_record() {
    let yaml = "policies:\n  - name: digests-audit\n    enforcement: audit\n    images:\n      require_digest: true\n";
    let server = TestServer::start(yaml).await;
    let mut client = server.client(Proto::Http1).await;
    for version in VERSIONS {
        let body = review(
            version,
            "a1",
            ("", "Pod"),
            "default",
            "CREATE",
            pod(&["nginx:1.25"]),
        );
        let v = validate(&mut client, version, "a1", body).await;
        assert!(v.allowed);
        assert!(v.warnings.is_empty());
        let note = v.audit["policy-digests-audit"].as_str().unwrap_or_default();
        assert!(note.contains("without a digest"), "{}", v.audit);
    }
    let (allowed, _, audit) = image_policy(
        &mut client,
        image_review("default", &["nginx:1.25"], json!({})),
    )
    .await;
    assert!(allowed);
    assert!(
        audit["policy-digests-audit"]
            .as_str()
            .unwrap_or_default()
            .contains("nginx:1.25"),
        "{audit}"
    );
}

#[tokio::test]
async fn break_glass_bypasses_image_policies_on_both_routes_but_not_labels() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http2).await;
    let ticket = json!({"mycluster.image-policy.k8s.io/ticket-1234": "break-glass"});
    let (allowed, reason, audit) = image_policy(
        &mut client,
        image_review("default", &["nginx", "quay.io/evil/x:1"], ticket.clone()),
    )
    .await;
    assert!(allowed, "{reason}");
    let note = audit["break-glass"].as_str().unwrap_or_default();
    assert!(
        note.contains("mycluster.image-policy.k8s.io/ticket-1234")
            && note.contains("no-latest-tag"),
        "{audit}"
    );
    // Keys the apiserver prefixes itself: no slash.
    assert!(audit
        .as_object()
        .is_some_and(|m| m.keys().all(|k| !k.contains('/'))));
    for version in VERSIONS {
        let object = labelled_pod(&["nginx"], json!({}), ticket.clone());
        let body = review(version, "b1", ("", "Pod"), "default", "CREATE", object);
        let v = validate(&mut client, version, "b1", body).await;
        assert!(v.allowed, "{}", v.message);
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("break-glass") && w.contains("ticket-1234")),
            "{:?}",
            v.warnings
        );
        // Label policies are not bypassed: the team-label warnings stay.
        assert!(
            v.warnings.iter().any(|w| w.contains("team-label")),
            "{:?}",
            v.warnings
        );
        assert!(v.audit["break-glass"]
            .as_str()
            .unwrap_or_default()
            .contains("ticket-1234"));
        // Another value is not break glass.
        let object = labelled_pod(
            &["nginx"],
            good_labels(),
            json!({"mycluster.image-policy.k8s.io/ticket-1234": "please"}),
        );
        let body = review(version, "b2", ("", "Pod"), "default", "CREATE", object);
        assert!(!validate(&mut client, version, "b2", body).await.allowed);
    }
    // A deny label policy is not bypassed either.
    let yaml = "break_glass:\n  value: break-glass\npolicies:\n  - name: owner\n    labels:\n      required:\n        owner: \"?*\"\n";
    let strict = TestServer::start(yaml).await;
    let mut client = strict.client(Proto::Http1).await;
    let object = labelled_pod(&["nginx:1"], json!({}), ticket);
    let v = validate(
        &mut client,
        V1,
        "b3",
        review(V1, "b3", ("", "Pod"), "default", "CREATE", object),
    )
    .await;
    assert!(!v.allowed && v.message.contains("owner"), "{}", v.message);
}

fn template(images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .map(|i| json!({"name": "app", "image": i}))
        .collect();
    json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": containers}})
}

#[tokio::test]
async fn workload_kinds_are_checked_on_their_pod_templates() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let meta = json!({"name": "w", "labels": good_labels()});
    let cases = [
        (
            ("apps", "Deployment"),
            json!({"metadata": meta, "spec": {"replicas": 2, "template": template(&["nginx"])}}),
        ),
        (
            ("apps", "StatefulSet"),
            json!({"metadata": meta, "spec": {"template": template(&["nginx"])}}),
        ),
        (
            ("apps", "DaemonSet"),
            json!({"metadata": meta, "spec": {"template": template(&["nginx"])}}),
        ),
        (
            ("apps", "ReplicaSet"),
            json!({"metadata": meta, "spec": {"template": template(&["nginx"])}}),
        ),
        (
            ("batch", "Job"),
            json!({"metadata": meta, "spec": {"template": template(&["nginx"])}}),
        ),
        (
            ("", "ReplicationController"),
            json!({"metadata": meta, "spec": {"template": template(&["nginx"])}}),
        ),
        (
            ("batch", "CronJob"),
            json!({"metadata": meta, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template(&["nginx"])}}}}),
        ),
    ];
    for version in VERSIONS {
        for (gvk, object) in &cases {
            let body = review(version, "wk", *gvk, "default", "CREATE", object.clone());
            let v = validate(&mut client, version, "wk", body).await;
            assert!(!v.allowed, "{gvk:?} with nginx must be refused at once");
            assert!(
                v.message
                    .contains("Images using latest tag are not allowed"),
                "{gvk:?}: {}",
                v.message
            );
            let fixed = object.to_string().replace("\"nginx\"", "\"nginx:1.25\"");
            let body = review(
                version,
                "wk",
                *gvk,
                "default",
                "CREATE",
                serde_json::from_str::<Value>(&fixed).expect("json"),
            );
            let v = validate(&mut client, version, "wk", body).await;
            assert!(v.allowed, "{gvk:?}: {}", v.message);
        }
    }
}

#[tokio::test]
async fn ephemeral_containers_are_checked_on_their_subresource() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    for version in VERSIONS {
        let mut object = pod(&["registry.my.com/app:1"]);
        object["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "busybox:1.36"}]);
        let mut body: Value = serde_json::from_str(&review(
            version,
            "e1",
            ("", "Pod"),
            "default",
            "UPDATE",
            object,
        ))
        .expect("json");
        body["request"]["subResource"] = "ephemeralcontainers".into();
        let v = validate(&mut client, version, "e1", body.to_string()).await;
        assert!(!v.allowed);
        assert!(
            v.message.contains("ephemeral container \"debugger\"") && v.message.contains("blocked"),
            "{}",
            v.message
        );
    }
}

#[tokio::test]
async fn dry_run_is_decided_the_same() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let mut body: Value = serde_json::from_str(&review(
        V1,
        "dr",
        ("", "Pod"),
        "default",
        "CREATE",
        pod(&["nginx"]),
    ))
    .expect("json");
    body["request"]["dryRun"] = true.into();
    assert!(
        !validate(&mut client, V1, "dr", body.to_string())
            .await
            .allowed
    );
}

/// Same decision input, different uid and generated name: the second answer comes from the
/// cache and is identical but for the uid.
#[tokio::test]
async fn cache_hits_are_indistinguishable_from_misses() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let cases = [
        (
            "allow",
            labelled_pod(&["registry.my.com/app:1"], good_labels(), json!({})),
        ),
        ("deny", labelled_pod(&["nginx"], good_labels(), json!({}))),
        (
            "warn",
            labelled_pod(&["registry.my.com/app:1"], json!({"app": "x"}), json!({})),
        ),
    ];
    for (what, object) in cases {
        for (version, namespace) in [(V1, "team-a"), (V1BETA1, "team-b")] {
            let before = server.app.policies.evaluations();
            let mut first_object = object.clone();
            first_object["metadata"]["name"] = "web-7d4b9-abcde".into();
            let first = client
                .post_json(
                    "/validate",
                    review(
                        version,
                        "first",
                        ("", "Pod"),
                        namespace,
                        "CREATE",
                        first_object,
                    ),
                )
                .await
                .json();
            let mut second_object = object.clone();
            second_object["metadata"]["name"] = "web-7d4b9-fghij".into();
            let second = client
                .post_json(
                    "/validate",
                    review(
                        version,
                        "second",
                        ("", "Pod"),
                        namespace,
                        "CREATE",
                        second_object,
                    ),
                )
                .await
                .json();
            assert_eq!(
                server.app.policies.evaluations() - before,
                1,
                "{what}: the second answer must be a cache hit"
            );
            assert_eq!(first["response"]["uid"], "first");
            assert_eq!(second["response"]["uid"], "second");
            let mut expected = first.clone();
            expected["response"]["uid"] = "second".into();
            assert_eq!(second, expected, "{what} {version}");
        }
    }
    // A label the policies do not read does not split the cache; one they read does.
    let before = server.app.policies.evaluations();
    let mut a = labelled_pod(&["registry.my.com/app:2"], good_labels(), json!({}));
    a["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = "db-0".into();
    let mut b = a.clone();
    b["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = "db-1".into();
    let mut c = a.clone();
    c["metadata"]["labels"]["team"] = "dba".into();
    for (uid, object) in [("a", a), ("b", b), ("c", c)] {
        validate(
            &mut client,
            V1,
            uid,
            review(V1, uid, ("", "Pod"), "default", "CREATE", object),
        )
        .await;
    }
    assert_eq!(server.app.policies.evaluations() - before, 2);
}

#[tokio::test]
async fn concurrent_identical_misses_are_decided_once() {
    let server = std::sync::Arc::new(TestServer::start(&example_yaml()).await);
    let before = server.app.policies.evaluations();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = server.client(Proto::Http2).await;
            let uid = format!("c{i}");
            let body = review(
                V1,
                &uid,
                ("", "Pod"),
                "default",
                "CREATE",
                pod(&["registry.my.com/burst:1"]),
            );
            validate(&mut client, V1, &uid, body).await.allowed
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    assert_eq!(server.app.policies.evaluations() - before, 1);
}

#[test]
fn config_mistakes_stop_startup_naming_policy_and_key() {
    use gatehouse::config::Config;
    let load = |yaml: &str| -> String {
        match Config::from_yaml(yaml, "x.yaml").map(gatehouse::app::App::new) {
            Err(e) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("accepted: {yaml}"),
        }
    };
    let cases = [
        ("policies:\n  - name: a\n    match:\n      namespaces: [\"Prod[\"]\n    images:\n      deny_latest: true\n", "Prod["),
        ("policies:\n  - name: a\n    enforcement: maybe\n    images:\n      deny_latest: true\n", "maybe"),
        ("policies:\n  - name: \"\"\n    images:\n      deny_latest: true\n", "policies[0]"),
        ("policies:\n  - name: a\n    images:\n      deny_latest: true\n  - name: a\n    images:\n      require_digest: true\n", "policies[1] (\"a\").name"),
        ("policies:\n  - name: a\n    images:\n      allowed_registries: [\"Registry.My.Com/X\"]\n", "Registry.My.Com/X"),
        ("policies:\n  - name: a\n    images:\n      allowed_registries: []\n", "allowed_registries"),
        ("policies:\n  - name: a\n    match:\n      kinds: [Pod]\n", "checks nothing"),
        ("policies:\n  - name: a\n    images:\n      deny_lates: true\n", "deny_lates"),
        ("policies:\n  - name: a\n    labels:\n      required:\n        \"bad key!\": x\n", "bad key!"),
        ("break_glass:\n  value: \"\"\n", "break_glass.value"),
        ("policies:\n  - name: a\n    images:\n      denied: [docker.io/busybox]\n", "docker.io/library/busybox"),
        ("policies:\n  - name: a\n    images:\n      deny_latest: true\n    exempt_images: [\"registry.k8s.io*\"]\n", "policies[0].exempt_images[0]: invalid image pattern \"registry.k8s.io*\""),
        ("policies:\n  - name: a\n    labels:\n      required:\n        a: x\n    exempt_images: [ghcr.io/acme]\n", "policies[0] (\"a\").exempt_images"),
    ];
    for (yaml, needle) in cases {
        let message = load(yaml);
        assert!(message.contains(needle), "{yaml:?}: {message}");
    }
}

#[tokio::test]
async fn example_config_runs() {
    let server = TestServer::start(&example_yaml()).await;
    assert_eq!(server.app.policies.policies().len(), 5);
    let answer = server.client(Proto::Http1).await.get("/readyz").await;
    assert_eq!(answer.status, 200);
}

/// On UPDATE only what changed is judged: an old pod that no longer complies can still have a
/// finalizer removed or a label changed, but a new image or new labels are held to the rules.
#[tokio::test]
async fn updates_judge_only_what_changed() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let update = |version: &str, uid: &str, old: &Value, new: &Value| {
        let mut body: Value = serde_json::from_str(&review(
            version,
            uid,
            ("", "Pod"),
            "default",
            "UPDATE",
            new.clone(),
        ))
        .expect("json");
        body["request"]["oldObject"] = old.clone();
        body.to_string()
    };
    for version in VERSIONS {
        // Created before the policy: latest tag, no team label. A controller removes a finalizer.
        let old = labelled_pod(&["nginx"], json!({"app": "x"}), json!({}));
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!([]);
        let v = validate(
            &mut client,
            version,
            "u1",
            update(version, "u1", &old, &new),
        )
        .await;
        assert!(v.allowed, "{}", v.message);
        assert!(
            v.warnings.is_empty(),
            "unchanged labels are not judged again: {:?}",
            v.warnings
        );
        // A changed image is judged.
        let mut changed = labelled_pod(&["nginx:1.25"], good_labels(), json!({}));
        let was = changed.clone();
        changed["spec"]["containers"][0]["image"] = "busybox:1.36".into();
        let v = validate(
            &mut client,
            version,
            "u2",
            update(version, "u2", &was, &changed),
        )
        .await;
        assert!(!v.allowed && v.message.contains("blocked"), "{}", v.message);
        // Changed labels are judged.
        let relabelled = labelled_pod(&["nginx:1.25"], json!({"app": "y"}), json!({}));
        let v = validate(
            &mut client,
            version,
            "u3",
            update(version, "u3", &was, &relabelled),
        )
        .await;
        assert!(v.allowed);
        assert!(
            v.warnings.iter().any(|w| w.contains("team-label")),
            "{:?}",
            v.warnings
        );
    }
}

/// An image volume is pulled by the kubelet like a container image, so it is judged like one:
/// in Pods and every pod template, with the volume named in the violation.
#[tokio::test]
async fn image_volumes_are_judged_in_pods_and_templates() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http2).await;
    let volumes = json!([
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "v", "image": {"reference": "quay.io/evil/payload:latest", "pullPolicy": "Always"}}
    ]);
    let spec = json!({"containers": [{"name": "app", "image": "registry.my.com/app:1"}],
                      "volumes": volumes});
    let tmpl = json!({"metadata": {"labels": good_labels()}, "spec": spec});
    let meta = json!({"name": "w", "labels": good_labels()});
    let cases = [
        (("", "Pod"), json!({"metadata": meta, "spec": spec})),
        (
            ("apps", "Deployment"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("apps", "StatefulSet"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("apps", "DaemonSet"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("apps", "ReplicaSet"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("batch", "Job"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("", "ReplicationController"),
            json!({"metadata": meta, "spec": {"template": tmpl}}),
        ),
        (
            ("batch", "CronJob"),
            json!({"metadata": meta, "spec": {"jobTemplate": {"spec": {"template": tmpl}}}}),
        ),
    ];
    for version in VERSIONS {
        for (gvk, object) in &cases {
            let body = review(version, "iv", *gvk, "default", "CREATE", object.clone());
            let v = validate(&mut client, version, "iv", body).await;
            assert!(!v.allowed, "{gvk:?}: an image volume must not slip through");
            assert!(
                v.message.contains(
                    "image volume \"v\" uses \"quay.io/evil/payload:latest\", which matches \
                     denied pattern quay.io/evil/* (policy \"blocked\")"
                ) && v.message.contains("not from an allowed registry"),
                "{gvk:?}: {}",
                v.message
            );
            let fixed = object
                .to_string()
                .replace("quay.io/evil/payload:latest", "registry.my.com/data:1");
            let body = review(
                version,
                "iv",
                *gvk,
                "default",
                "CREATE",
                serde_json::from_str::<Value>(&fixed).expect("json"),
            );
            let v = validate(&mut client, version, "iv", body).await;
            assert!(v.allowed, "{gvk:?}: {}", v.message);
        }
    }
}

/// On UPDATE an image volume already in oldObject (same name, same reference) is not judged
/// again; a changed or added one is.
#[tokio::test]
async fn updates_judge_only_new_image_volumes() {
    let server = TestServer::start(&example_yaml()).await;
    let mut client = server.client(Proto::Http1).await;
    let with_volume = |name: &str, reference: &str| {
        let mut p = pod(&["registry.my.com/app:1"]);
        p["spec"]["volumes"] = json!([{"name": name, "image": {"reference": reference}}]);
        p
    };
    let update = |old: &Value, new: &Value| {
        let mut body: Value = serde_json::from_str(&review(
            V1,
            "uv",
            ("", "Pod"),
            "default",
            "UPDATE",
            new.clone(),
        ))
        .expect("json");
        body["request"]["oldObject"] = old.clone();
        body.to_string()
    };
    // Created before the policy: an update (a finalizer removed) goes through.
    let old = with_volume("v", "busybox:1.36");
    let v = validate(&mut client, V1, "uv", update(&old, &old)).await;
    assert!(v.allowed, "{}", v.message);
    // Another reference, or the same one under another name: judged.
    for new in [
        with_volume("v", "quay.io/evil/x:1"),
        with_volume("w", "busybox:1.36"),
    ] {
        let v = validate(&mut client, V1, "uv", update(&old, &new)).await;
        assert!(!v.allowed && v.message.contains("blocked"), "{}", v.message);
    }
    // A container of the same name and image is not an image volume: judged.
    let mut new = old.clone();
    new["spec"]["volumes"] = json!([]);
    new["spec"]["containers"] = json!([{"name": "v", "image": "busybox:1.36"}]);
    let v = validate(&mut client, V1, "uv", update(&old, &new)).await;
    assert!(
        !v.allowed && v.message.contains("container \"v\""),
        "{}",
        v.message
    );
}

/// `limits.max_body`'s default: the largest review a peer may send.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Appends comma-separated `{"name":…,"image":…}` items to `out` until it is `size` bytes
/// long, and returns how many; names are c0, c1, … or all "c".
fn fill_containers(out: &mut String, size: usize, unique: bool, image: &str) -> usize {
    let mut count = 0;
    while out.len() < size {
        if count > 0 {
            out.push(',');
        }
        let name = if unique {
            format!("c{count}")
        } else {
            "c".to_owned()
        };
        out.push_str(&format!(r#"{{"name":"{name}","image":"{image}"}}"#));
        count += 1;
    }
    count
}

/// An ImageReview just under [`MAX_BODY`] of `image`, and how many images it holds.
fn max_body_image_review(image: &str) -> (String, usize) {
    let mut body = String::from(
        r#"{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"default","containers":["#,
    );
    let item = format!(r#"{{"image":"{image}"}}"#);
    let mut count = 0;
    while body.len() + item.len() + 64 < MAX_BODY {
        if count > 0 {
            body.push(',');
        }
        body.push_str(&item);
        count += 1;
    }
    body.push_str("]}}");
    (body, count)
}

/// As many violating images as fit in `limits.max_body` (a 3.5 MB ImageReview of 250,000 images
/// got a 21.5 MB denial): the answer stays under 16 KiB (denial, warnings and audit notes of at
/// most 4 KiB each, plus JSON escaping and the envelope), lists the first violations in full
/// and ends with how many more there are.
#[tokio::test]
async fn huge_reviews_get_bounded_answers() {
    const BOUND: usize = 16 * 1024;
    let yaml = "policies:\n  - name: no-latest\n    images:\n      deny_latest: true\n  - name: latest-warn\n    enforcement: warn\n    images:\n      deny_latest: true\n  - name: digests-audit\n    enforcement: audit\n    images:\n      require_digest: true\n";
    let server = TestServer::start(yaml).await;
    let mut client = server.client(Proto::Http2).await;
    // Every listed violation names its policy once; the rest are counted.
    let check = |text: &str, policy: &str, count: usize| {
        let listed = text.matches(&format!("(policy \"{policy}\")")).count();
        assert!((1..=10).contains(&listed), "{listed} listed: {text}");
        let more = format!("; and {} more violations", count - listed);
        assert!(text.ends_with(&more), "{text}");
    };

    let (body, count) = max_body_image_review("nginx");
    let answer = client.post_json("/image_policy", body).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() < BOUND, "{} bytes", answer.body.len());
    let json = answer.json();
    assert_eq!(json["status"]["allowed"], false);
    let reason = json["status"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("Images using latest tag are not allowed: image uses \"nginx\""));
    check(reason, "no-latest", count);
    let audit = json["status"]["auditAnnotations"]["policy-digests-audit"]
        .as_str()
        .expect("audit note");
    assert!(
        audit.starts_with(&format!("{count} violations: ")),
        "{audit}"
    );
    check(audit, "digests-audit", count);

    let mut object = String::from(r#"{"metadata":{"name":"p"},"spec":{"containers":["#);
    let start = object.len();
    let count = fill_containers(&mut object, start + MAX_BODY - 4096, true, "nginx");
    object.push_str("]}}");
    let body = review(
        V1,
        "huge",
        ("", "Pod"),
        "default",
        "CREATE",
        serde_json::from_str::<Value>(&object).expect("json"),
    );
    assert!(body.len() <= MAX_BODY);
    let answer = client.post_json("/validate", body).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() < BOUND, "{} bytes", answer.body.len());
    let json = answer.json();
    let response = &json["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(message
        .starts_with("Images using latest tag are not allowed: container \"c0\" uses \"nginx\""));
    check(message, "no-latest", count);
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(warnings.len() <= 11, "{} warnings", warnings.len());
    assert_eq!(
        warnings.last(),
        Some(&json!(format!(
            "and {} more warnings not shown",
            count - (warnings.len() - 1)
        )))
    );
    let audit = response["auditAnnotations"]["policy-digests-audit"]
        .as_str()
        .expect("audit note");
    check(audit, "digests-audit", count);
}

/// gatehouse on a runtime of its own with one worker thread, its clients on another: work done
/// on that worker would stop everything else the server does (`/healthz` included) until it
/// ended, so a test sees whether a request's work stays off it.
struct OneWorker {
    server: Option<TestServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OneWorker {
    fn start(yaml: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let server = runtime.block_on(TestServer::start(yaml));
        Self {
            server: Some(server),
            runtime: Some(runtime),
        }
    }

    /// The server, until `take` moves it out.
    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("server")
    }
}

impl Drop for OneWorker {
    fn drop(&mut self) {
        drop(self.server.take());
        // Without waiting: a failing test must report, not wait for a worker stuck in work.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime the test's clients run on.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime")
}

/// A Pod review just under [`MAX_BODY`]: containers (unique or duplicate names) using a
/// compliant image, then one named "last" using `nginx` (latest tag). On UPDATE, oldObject
/// holds as many containers with another compliant image, so every new image is judged.
fn max_body_pod_review(uid: &str, operation: &str, unique: bool) -> String {
    let objects = if operation == "UPDATE" { 2 } else { 1 };
    // Room for the envelope and the "last" container.
    let per_object = (MAX_BODY - 2048) / objects;
    let labels = r#"{"example-validation":"true","team":"sre"}"#;
    let object = |image: &str, last: bool| {
        let mut out = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","labels":{labels}}},"spec":{{"containers":["#
        );
        let start = out.len();
        fill_containers(&mut out, start + per_object - 200, unique, image);
        if last {
            out.push_str(r#",{"name":"last","image":"nginx"}"#);
        }
        out.push_str("]}}");
        out
    };
    let mut body = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"namespace":"default","operation":"{operation}","userInfo":{{"username":"alice"}},"object":{}"#,
        object("registry.my.com/app:2", true)
    );
    if operation == "UPDATE" {
        body.push_str(&format!(
            r#","oldObject":{}"#,
            object("registry.my.com/app:1", false)
        ));
    }
    body.push_str("}}");
    assert!(body.len() <= MAX_BODY && body.len() > MAX_BODY - 8192);
    body
}

/// Sends `body` to `path` on a connection of its own while another connection asks for
/// `/healthz` until the answer arrives; each healthz answer must come within a generous bound.
/// Returns the answer and how many healthz answers were asked for once `deciding` said the
/// decision had started and arrived before the answer.
async fn decided_while_healthz_answers(
    server: &TestServer,
    proto: Proto,
    path: &'static str,
    body: String,
    deciding: impl Fn() -> bool,
) -> (common::Answer, usize) {
    let mut health = server.client(Proto::Http2).await;
    let mut client = server.client(proto).await;
    let big = tokio::spawn(async move { client.post_json(path, body).await });
    let mut answered = 0;
    while !big.is_finished() {
        let during = deciding();
        let answer = tokio::time::timeout(Duration::from_secs(30), health.get("/healthz"))
            .await
            .expect("/healthz must be answered while a large review is decided");
        assert_eq!(answer.status, 200);
        if during && !big.is_finished() {
            answered += 1;
        }
    }
    let answer = tokio::time::timeout(Duration::from_secs(120), big)
        .await
        .expect("the review is answered")
        .expect("client task");
    (answer, answered)
}

/// The largest allowed reviews, of containers with unique and with duplicate names, on CREATE
/// and on UPDATE (every image new, so each is looked up in oldObject): each is decided
/// correctly within the default deadline, and `/healthz` is answered meanwhile, several times
/// once the decision has started (on the single worker, work done there would allow none).
#[test]
fn max_body_reviews_are_decided_while_healthz_answers() {
    let yaml = format!(
        "{}\nroutes:\n  mutate: true\nmutations:\n  - name: mirror\n    match:\n      kinds: [Pod]\n    rewrite_registries:\n      docker.io: registry.my.com/dockerhub\n",
        example_yaml()
    );
    let server = OneWorker::start(&yaml);
    let app = server.server().app.clone();
    // Counts policy evaluations: a decision has started once it moves.
    let started = || {
        let before = app.policies.evaluations();
        let app = app.clone();
        move || app.policies.evaluations() > before
    };
    client_runtime().block_on(async {
        for (i, (operation, unique)) in [
            ("CREATE", true),
            ("CREATE", false),
            ("UPDATE", true),
            ("UPDATE", false),
        ]
        .into_iter()
        .enumerate()
        {
            let uid = format!("big-{i}");
            let proto = if i % 2 == 0 { Proto::Http1 } else { Proto::Http2 };
            let body = max_body_pod_review(&uid, operation, unique);
            let (answer, healthz) =
                decided_while_healthz_answers(server.server(), proto, "/validate", body, started())
                    .await;
            let what = format!("{operation} unique={unique}");
            assert_eq!(answer.status, 200, "{what}: {}", String::from_utf8_lossy(&answer.body));
            let json = answer.json();
            assert_eq!(json["response"]["uid"], uid.as_str());
            assert_eq!(json["response"]["allowed"], false, "{what}");
            assert_eq!(
                json["response"]["status"]["message"],
                "Images using latest tag are not allowed: container \"last\" uses \"nginx\" \
                 (policy \"no-latest-tag\")",
                "{what}"
            );
            assert!(healthz > 1, "{what}: {healthz} /healthz answers while it was decided");
        }

        // /mutate: kubectl debug of a pod with as many ephemeral containers as fit; only the
        // new one is rewritten.
        let mut old = String::from(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[],"ephemeralContainers":["#,
        );
        let start = old.len();
        let count = fill_containers(&mut old, start + MAX_BODY / 2 - 2048, true, "busybox:1.36");
        let new = format!(r#"{old},{{"name":"new","image":"busybox:1.36"}}]}}}}"#);
        old.push_str("]}}");
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"m","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"subResource":"ephemeralcontainers","namespace":"default","operation":"UPDATE","object":{new},"oldObject":{old}}}}}"#
        );
        assert!(body.len() <= MAX_BODY);
        // Mutations are not counted: any /healthz answer while it is outstanding.
        let (answer, healthz) =
            decided_while_healthz_answers(server.server(), Proto::Http2, "/mutate", body, || true)
                .await;
        assert_eq!(answer.status, 200);
        let patch = answer.json()["response"]["patch"]
            .as_str()
            .map(|p| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, p))
            .expect("a patch")
            .expect("base64");
        let ops: Value = serde_json::from_slice(&patch).expect("ops");
        assert_eq!(
            ops,
            json!([{"op": "replace", "path": format!("/spec/ephemeralContainers/{count}/image"),
                    "value": "registry.my.com/dockerhub/library/busybox:1.36"}])
        );
        assert!(healthz > 0, "/mutate: no /healthz answer while it was decided");

        // /image_policy: as many images as fit.
        let (body, _) = max_body_image_review("registry.my.com/app:1");
        let (answer, healthz) = decided_while_healthz_answers(
            server.server(),
            Proto::Http1,
            "/image_policy",
            body,
            started(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["status"]["allowed"], true);
        assert!(healthz > 1, "/image_policy: {healthz} /healthz answers while it was decided");
    });
}

/// Shutdown while the largest review is being decided: the review is answered and the server
/// stops, instead of hanging until the work ends.
#[test]
fn shutdown_during_a_max_body_review_finishes_it_and_stops() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut one = OneWorker::start(&example_yaml());
    let server = one.server.take().expect("server");
    client_runtime().block_on(async move {
        let body = max_body_pod_review("stop", "UPDATE", false);
        let connector = tokio_rustls::TlsConnector::from(common::tls_client_config(
            &server.ca_pem,
            b"http/1.1",
        ));
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS");
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.expect("write");
        // Written whole: the server has read the head (and most of the body) by now, so the
        // request is in flight when shutdown starts.
        tls.write_all(body.as_bytes()).await.expect("write");
        tls.flush().await.expect("flush");
        tokio::time::timeout(Duration::from_secs(60), server.stop())
            .await
            .expect("shutdown must not hang on a review being decided");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut answer))
            .await
            .expect("the in-flight review is answered")
            .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(r#""uid":"stop","allowed":false"#),
            "{answer}"
        );
    });
    drop(one);
}

/// A label value by regular expression (anchored, linear time): judged on `/validate`, with the
/// regex named in the message. Label rules never apply to an ImageReview, which carries no labels.
#[tokio::test]
async fn label_values_by_regex_on_validate_not_image_reviews() {
    let yaml = r#"
policies:
  - name: owner-domain
    labels:
      required:
        owner: {regex: "[a-z]+\\.agilebank\\.demo"}
"#;
    let server = TestServer::start(yaml).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in VERSIONS {
            let with = |owner: &str| {
                let object = labelled_pod(&["nginx:1.25"], json!({"owner": owner}), json!({}));
                review(version, "rx", ("", "Pod"), "default", "CREATE", object)
            };
            let v = validate(&mut client, version, "rx", with("app.agilebank.demo")).await;
            assert!(v.allowed, "{}", v.message);
            // Anchored: a prefix or suffix around a match is not a match.
            for bad in [
                "evil-app.agilebank.demo.x",
                "x.agilebank.demo-x",
                "App.agilebank.demo",
            ] {
                let v = validate(&mut client, version, "rx", with(bad)).await;
                assert!(!v.allowed, "{bad}");
                assert_eq!(
                    v.message,
                    format!(
                        "Pod must have label \"owner\" with a value matching regex \
                         \"[a-z]+\\\\.agilebank\\\\.demo\"; it has {bad:?} (policy \"owner-domain\")"
                    )
                );
            }
            let object = labelled_pod(&["nginx:1.25"], json!({}), json!({}));
            let body = review(version, "rx", ("", "Pod"), "default", "CREATE", object);
            let v = validate(&mut client, version, "rx", body).await;
            assert!(
                !v.allowed && v.message.contains("it has none"),
                "{}",
                v.message
            );
        }
        // An ImageReview has no labels: the label rule does not judge it.
        let (allowed, reason, _) = image_policy(
            &mut client,
            image_review("default", &["nginx:1.25"], json!({})),
        )
        .await;
        assert!(allowed, "{reason}");
    }
}

/// `exempt_images`: the images a policy does not judge, on both routes, matched on the
/// normalised name: another spelling of an exempt image is exempt, a sibling path or a deeper
/// repository is not, and another policy still judges the exempt image.
#[tokio::test]
async fn exempt_images_on_both_routes() {
    let yaml = r#"
policies:
  - name: trusted
    images:
      allowed_registries: [registry.my.com]
      deny_latest: true
    exempt_images: ["registry.k8s.io/pause*", ghcr.io/acme]
  - name: pinned-pause
    match:
      namespaces: [prod]
    images:
      deny_latest: true
"#;
    let server = TestServer::start(yaml).await;
    let exempt = [
        "registry.k8s.io/pause:3.9",
        "registry.k8s.io/pause-amd64:3.9",
        "REGISTRY.K8S.IO:443/pause:3.9",
        "ghcr.io/acme/app:1",
        "registry.my.com/app:1",
    ];
    let judged = [
        "registry.k8s.io/pause/evil:1",
        "registry.k8s.io:5000/pause:3.9",
        "registry.k8s.io.evil.io/pause:3.9",
        "ghcr.io/acme-evil/app:1",
        "ghcr.io/acmeevil:1",
    ];
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for image in exempt {
            let (allowed, reason, _) =
                image_policy(&mut client, image_review("default", &[image], json!({}))).await;
            assert!(allowed, "{image}: {reason}");
            for version in VERSIONS {
                let body = review(
                    version,
                    "ex",
                    ("", "Pod"),
                    "default",
                    "CREATE",
                    pod(&[image]),
                );
                let v = validate(&mut client, version, "ex", body).await;
                assert!(v.allowed, "{image}: {}", v.message);
            }
        }
        for image in judged {
            let (allowed, reason, _) =
                image_policy(&mut client, image_review("default", &[image], json!({}))).await;
            assert!(!allowed, "{image}");
            assert!(reason.contains("not from an allowed registry"), "{reason}");
            for version in VERSIONS {
                let body = review(
                    version,
                    "ex",
                    ("", "Pod"),
                    "default",
                    "CREATE",
                    pod(&[image]),
                );
                let v = validate(&mut client, version, "ex", body).await;
                assert!(!v.allowed, "{image}");
                assert!(v.message.contains("(policy \"trusted\")"), "{}", v.message);
            }
        }
        // Exempt from "trusted" only: "pinned-pause" still refuses the untagged pause in prod.
        let (allowed, reason, _) = image_policy(
            &mut client,
            image_review("prod", &["registry.k8s.io/pause"], json!({})),
        )
        .await;
        assert!(!allowed);
        assert!(
            reason.contains("(policy \"pinned-pause\")") && !reason.contains("trusted"),
            "{reason}"
        );
        let body = review(
            V1,
            "ex",
            ("", "Pod"),
            "prod",
            "CREATE",
            pod(&["registry.k8s.io/pause"]),
        );
        let v = validate(&mut client, V1, "ex", body).await;
        assert!(!v.allowed);
        assert!(
            v.message.contains("(policy \"pinned-pause\")") && !v.message.contains("trusted"),
            "{}",
            v.message
        );
    }
}

/// `labels.on`: a label rule reads a workload's pod template (`template`), its own labels
/// (`object`, the default) or both, through the server with a Deployment and a CronJob. The
/// cache key covers the template's labels, and on UPDATE each location is judged only when its
/// labels changed.
#[tokio::test]
async fn label_rules_read_pod_templates_of_workloads() {
    let yaml = r#"
policies:
  - name: pods-team
    match:
      namespaces: [tpl]
    labels:
      on: template
      required:
        team: "?*"
  - name: both-owner
    match:
      namespaces: [both]
    labels:
      on: both
      required:
        owner: {regex: "[a-z]+"}
  - name: object-app
    match:
      namespaces: [obj]
    labels:
      required:
        app: "*"
"#;
    let server = TestServer::start(yaml).await;
    let deployment = |own: Value, pods: Value| {
        json!({"metadata": {"name": "d", "labels": own}, "spec": {"template": {
            "metadata": {"labels": pods},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}})
    };
    let cronjob = |own: Value, pods: Value| {
        json!({"metadata": {"name": "c", "labels": own}, "spec": {"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": {"metadata": {"labels": pods},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}}}})
    };
    type Build = dyn Fn(Value, Value) -> Value;
    let workloads: [(&str, (&str, &str), &Build); 2] = [
        ("Deployment", ("apps", "Deployment"), &deployment),
        ("CronJob", ("batch", "CronJob"), &cronjob),
    ];
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for (kind, gvk, build) in workloads {
            for version in VERSIONS {
                let mut send = async |ns: &str, op: &str, object: Value, old: Option<Value>| {
                    let mut body: Value =
                        serde_json::from_str(&review(version, "lt", gvk, ns, op, object))
                            .expect("json");
                    if let Some(old) = old {
                        body["request"]["oldObject"] = old;
                    }
                    validate(&mut client, version, "lt", body.to_string()).await
                };
                // on: template. The object's own label does not satisfy the pods' rule; twice,
                // so the second answer may come from the cache, which must not confuse the two.
                for _ in 0..2 {
                    let v = send(
                        "tpl",
                        "CREATE",
                        build(json!({"team": "sre"}), json!({})),
                        None,
                    )
                    .await;
                    assert!(!v.allowed, "{kind}");
                    assert_eq!(
                        v.message,
                        format!(
                            "{kind} pod template must have label \"team\" with a non-empty \
                             value; it has none (policy \"pods-team\")"
                        )
                    );
                    // Same object labels, different template labels: a different cache entry.
                    let v = send("tpl", "CREATE", build(json!({}), json!({})), None).await;
                    assert!(!v.allowed, "{kind}");
                    let v = send(
                        "tpl",
                        "CREATE",
                        build(json!({}), json!({"team": "sre"})),
                        None,
                    )
                    .await;
                    assert!(v.allowed, "{kind}: {}", v.message);
                }
                // A template without metadata at all has no labels: refused.
                let mut bare = build(json!({}), json!({}));
                let template = if kind == "CronJob" {
                    &mut bare["spec"]["jobTemplate"]["spec"]["template"]
                } else {
                    &mut bare["spec"]["template"]
                };
                template.as_object_mut().map(|t| t.remove("metadata"));
                let v = send("tpl", "CREATE", bare, None).await;
                assert!(!v.allowed && v.message.contains("it has none"), "{kind}");
                // on: both: each location judged and named.
                let v = send(
                    "both",
                    "CREATE",
                    build(json!({}), json!({"owner": "Bad"})),
                    None,
                )
                .await;
                assert!(!v.allowed);
                assert!(
                    v.message
                        .contains(&format!("{kind} must have label \"owner\""))
                        && v.message.contains(&format!(
                            "{kind} pod template must have label \"owner\" with a value \
                             matching regex \"[a-z]+\"; it has \"Bad\""
                        )),
                    "{}",
                    v.message
                );
                let ok = build(json!({"owner": "ops"}), json!({"owner": "ops"}));
                let v = send("both", "CREATE", ok.clone(), None).await;
                assert!(v.allowed, "{}", v.message);
                // The default (object) does not read the template.
                let v = send("obj", "CREATE", build(json!({"app": "x"}), json!({})), None).await;
                assert!(v.allowed, "{}", v.message);
                let v = send("obj", "CREATE", build(json!({}), json!({"app": "x"})), None).await;
                assert!(!v.allowed && v.message.starts_with(&format!("{kind} must have")));
                // UPDATE: a location whose labels did not change is not judged again; one that
                // changed is.
                let old = build(json!({"owner": "ops"}), json!({}));
                let mut scaled = old.clone();
                scaled["metadata"]["annotations"] = json!({"note": "scaled"});
                let v = send("both", "UPDATE", scaled, Some(old.clone())).await;
                assert!(v.allowed, "unchanged template labels: {}", v.message);
                let v = send(
                    "both",
                    "UPDATE",
                    build(json!({"owner": "ops"}), json!({"owner": "X"})),
                    Some(old.clone()),
                )
                .await;
                assert!(!v.allowed);
                assert!(
                    v.message.contains("pod template must have label")
                        && !v.message.contains(&format!("{kind} must have label")),
                    "{}",
                    v.message
                );
                let v = send(
                    "both",
                    "UPDATE",
                    ok.clone(),
                    Some(build(json!({}), json!({"owner": "ops"}))),
                )
                .await;
                assert!(v.allowed, "{}", v.message);
            }
        }
    }
}
