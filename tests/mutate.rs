//! `/mutate` over real TLS: every patch returned is decoded and applied with the json-patch
//! crate to the object that was sent, and the result compared with the object the mutations
//! describe.

mod common;

use base64::Engine;
use common::{admission_review as review, Client, Proto, TestServer, BOTH};
use serde_json::{json, Value};

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";
const VERSIONS: [&str; 2] = [V1, V1BETA1];

/// The issue's example, verbatim, with the route switched on.
/// The shipped example (the issue's), so the file users copy is the one tested.
const EXAMPLE: &str = include_str!("../config/examples/mutations.yaml");

/// The same mutations reaching every workload kind.
const WORKLOADS: &str = r#"
routes:
  mutate: true
mutations:
  - name: mark-mutated
    add_labels:
      example-mutated: "true"
  - name: mirror-docker-hub
    match:
      kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ReplicationController]
    rewrite_registries:
      docker.io: registry.my.com/dockerhub
    image_pull_policy: IfNotPresent
"#;

const POD: (&str, &str) = ("", "Pod");

/// A Pod in `namespace` with `metadata` and these containers.
fn pod(namespace: &str, metadata: Value, containers: Value) -> Value {
    let mut metadata = metadata;
    metadata["name"] = json!("web");
    metadata["namespace"] = json!(namespace);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": containers}})
}

/// What /mutate answered.
struct Mutated {
    /// The whole answer.
    answer: Value,
    /// The decoded operations; `None` without a patch.
    ops: Option<Vec<Value>>,
    /// The submitted object with the patch applied (the object itself without one).
    object: Value,
}

/// Posts a review of `object` and checks the envelope: status 200, apiVersion, kind and uid
/// echoed, allowed, patch and patchType together, the patch applying cleanly.
async fn mutate(
    client: &mut Client,
    version: &str,
    gvk: (&str, &str),
    namespace: &str,
    object: &Value,
) -> Mutated {
    mutate_op(client, version, gvk, namespace, "CREATE", object).await
}

async fn mutate_op(
    client: &mut Client,
    version: &str,
    gvk: (&str, &str),
    namespace: &str,
    operation: &str,
    object: &Value,
) -> Mutated {
    let uid = format!("uid-{}-{version}", gvk.1);
    let body = review(version, &uid, gvk, namespace, operation, object);
    let answer = client.post_json("/mutate?timeout=10s", body).await;
    let answer = answer.ok_json();
    assert_eq!(answer["apiVersion"], version);
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], uid.as_str());
    assert_eq!(response["allowed"], true, "{answer}");
    assert!(response.get("status").is_none(), "{answer}");
    let (ops, object) = match (response.get("patch"), response.get("patchType")) {
        (None, None) => (None, object.clone()),
        (Some(patch), Some(patch_type)) => {
            assert_eq!(patch_type, "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(patch.as_str().expect("patch is a string"))
                .expect("patch is base64");
            let ops: Vec<Value> = serde_json::from_slice(&bytes).expect("patch is JSON");
            assert!(!ops.is_empty(), "an empty patch must be no patch");
            (Some(ops.clone()), apply(object, &ops))
        }
        (patch, patch_type) => panic!("patch {patch:?} without patchType {patch_type:?} or back"),
    };
    Mutated {
        answer,
        ops,
        object,
    }
}

/// Applies `ops` with the json-patch crate, failing the test if they do not apply.
fn apply(object: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.to_vec())).expect("an RFC 6902 patch");
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch)
        .unwrap_or_else(|e| panic!("the patch does not apply: {e}\n{ops:#?}\nto {object:#}"));
    out
}

fn paths(ops: &[Value]) -> Vec<&str> {
    ops.iter().filter_map(|op| op["path"].as_str()).collect()
}

#[tokio::test]
async fn seed_001_pod_in_a_non_excluded_namespace_gets_example_mutated() {
    let server = TestServer::start(EXAMPLE).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in VERSIONS {
            let object = pod(
                "team-a",
                json!({}),
                json!([{"name": "app", "image": "registry.my.com/team/app:1.0"}]),
            );
            let result = mutate(&mut client, version, POD, "team-a", &object).await;
            assert_eq!(
                result.object["metadata"]["labels"]["example-mutated"], "true",
                "{proto:?} {version}"
            );
            let mut expected = object.clone();
            expected["metadata"]["labels"] = json!({
                "example-mutated": "true",
                "app.kubernetes.io/managed-by": "gatehouse"
            });
            expected["metadata"]["annotations"] = json!({"gatehouse.dev/admitted": "true"});
            expected["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
            assert_eq!(result.object, expected, "{proto:?} {version}");
        }
    }
}

#[tokio::test]
async fn example_config_each_mutation_both_versions() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    let object = pod(
        "default",
        json!({"labels": {"app": "web"}}),
        json!([
            {"name": "app", "image": "nginx:1.25"},
            {"name": "sidecar", "image": "docker.io/acme/proxy:2", "imagePullPolicy": "Always"},
            {"name": "own", "image": "ghcr.io/acme/tool:3"}
        ]),
    );
    let mut expected = object.clone();
    expected["metadata"]["labels"] = json!({
        "app": "web",
        "example-mutated": "true",
        "app.kubernetes.io/managed-by": "gatehouse"
    });
    expected["metadata"]["annotations"] = json!({"gatehouse.dev/admitted": "true"});
    let containers = &mut expected["spec"]["containers"];
    containers[0]["image"] = json!("registry.my.com/dockerhub/library/nginx:1.25");
    containers[0]["imagePullPolicy"] = json!("IfNotPresent");
    containers[1]["image"] = json!("registry.my.com/dockerhub/acme/proxy:2");
    containers[2]["imagePullPolicy"] = json!("IfNotPresent");
    for version in VERSIONS {
        let result = mutate(&mut client, version, POD, "default", &object).await;
        assert_eq!(result.object, expected, "{version}");
        let audit = &result.answer["response"]["auditAnnotations"];
        assert_eq!(
            audit["image-rewrites"],
            "containers[0] \"app\": nginx:1.25 -> registry.my.com/dockerhub/library/nginx:1.25; \
             containers[1] \"sidecar\": docker.io/acme/proxy:2 -> \
             registry.my.com/dockerhub/acme/proxy:2"
        );
        assert_eq!(
            audit["mutations"],
            "mark-mutated, mirror-docker-hub, pull-policy"
        );
        // Each audit key is valid once the apiserver prefixes the webhook's name.
        for key in audit.as_object().expect("map").keys() {
            assert!(!key.contains('/'), "{key}");
        }
    }
}

#[tokio::test]
async fn no_op_answers_without_patch_or_patch_type() {
    let server = TestServer::start(EXAMPLE).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in VERSIONS {
            // Already carrying everything the mutations set.
            let object = pod(
                "default",
                json!({
                    "labels": {"example-mutated": "true", "app.kubernetes.io/managed-by": "gatehouse"},
                    "annotations": {"gatehouse.dev/admitted": "true"}
                }),
                json!([{"name": "app", "image": "registry.my.com/dockerhub/library/nginx:1.25",
                        "imagePullPolicy": "Always"}]),
            );
            let result = mutate(&mut client, version, POD, "default", &object).await;
            let response = &result.answer["response"];
            assert!(result.ops.is_none(), "{response}");
            assert!(response.get("patchType").is_none());
            assert!(response.get("auditAnnotations").is_none(), "{response}");
            assert!(response.get("warnings").is_none(), "{response}");

            // An excluded namespace: nothing is mutated.
            let object = pod(
                "kube-system",
                json!({}),
                json!([{"name": "dns", "image": "registry.k8s.io/coredns/coredns:v1.11.1",
                        "imagePullPolicy": "IfNotPresent"}]),
            );
            let result = mutate(&mut client, version, POD, "kube-system", &object).await;
            assert!(result.ops.is_none(), "{}", result.answer);
        }
    }
}

/// The example says it leaves the system namespaces alone: no mutation of it may touch a pod
/// there, whatever its images and pull policies.
#[tokio::test]
async fn the_example_leaves_system_namespaces_alone() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    let pod_in = |namespace: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {
                "containers": [{"name": "dns", "image": "docker.io/coredns/coredns:1.11.1"}],
                "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
                "ephemeralContainers": [{"name": "debug", "image": "nicolaka/netshoot:v0.13"}]
            }
        })
    };
    for version in VERSIONS {
        for namespace in ["kube-system", "kube-public", "kube-node-lease"] {
            let object = pod_in(namespace);
            let result = mutate(&mut client, version, POD, namespace, &object).await;
            assert!(result.ops.is_none(), "{namespace}: {}", result.answer);
        }
        // The same pod anywhere else gets every mutation.
        let object = pod_in("team-a");
        let result = mutate(&mut client, version, POD, "team-a", &object).await;
        let spec = &result.object["spec"];
        assert_eq!(
            result.object["metadata"]["labels"]["example-mutated"],
            "true"
        );
        assert_eq!(
            spec["containers"][0]["image"],
            "registry.my.com/dockerhub/coredns/coredns:1.11.1"
        );
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            spec["initContainers"][0]["image"],
            "registry.my.com/dockerhub/library/busybox:1.36"
        );
    }
}

#[tokio::test]
async fn keys_are_escaped_per_rfc_6901() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    // Existing maps, so each key gets its own operation; the object's own odd keys (a `~`,
    // a `/`, a `~1` that must not turn into a `/`) are left exactly as they are.
    let labels = json!({"we~ird": "1", "a/b~c": "2", "x~1y": "3"});
    let annotations = json!({"note/~0": "kept"});
    let object = pod(
        "default",
        json!({"labels": labels, "annotations": annotations}),
        json!([{"name": "app", "image": "registry.my.com/team/app:1", "imagePullPolicy": "Always"}]),
    );
    for version in VERSIONS {
        let result = mutate(&mut client, version, POD, "default", &object).await;
        let ops = result.ops.expect("a patch");
        assert_eq!(
            paths(&ops),
            [
                "/metadata/labels/app.kubernetes.io~1managed-by",
                "/metadata/labels/example-mutated",
                "/metadata/annotations/gatehouse.dev~1admitted",
            ]
        );
        assert!(ops.iter().all(|op| op["op"] == "add"));
        let mut expected = object.clone();
        for (k, v) in [
            ("app.kubernetes.io/managed-by", "gatehouse"),
            ("example-mutated", "true"),
        ] {
            expected["metadata"]["labels"][k] = json!(v);
        }
        expected["metadata"]["annotations"]["gatehouse.dev/admitted"] = json!("true");
        assert_eq!(result.object, expected);
        assert_eq!(result.object["metadata"]["labels"]["x~1y"], "3");
        assert!(result.object["metadata"]["labels"].get("x/y").is_none());
    }
}

#[tokio::test]
async fn labels_absent_null_and_empty() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    let added = json!({"example-mutated": "true", "app.kubernetes.io/managed-by": "gatehouse"});
    for version in VERSIONS {
        for (case, labels, first_op) in [
            // Absent or null: one `add` creates the whole map (adding `/metadata/labels/x`
            // there is the classic patch that fails to apply).
            (
                "absent",
                None,
                json!({"op": "add", "path": "/metadata/labels", "value": added}),
            ),
            (
                "null",
                Some(Value::Null),
                json!({"op": "add", "path": "/metadata/labels", "value": added}),
            ),
            (
                "empty",
                Some(json!({})),
                json!({"op": "add", "path": "/metadata/labels/app.kubernetes.io~1managed-by",
                       "value": "gatehouse"}),
            ),
        ] {
            let mut metadata = json!({"annotations": {"keep": "me"}});
            if let Some(labels) = labels {
                metadata["labels"] = labels;
            }
            let object = pod(
                "default",
                metadata,
                json!([{"name": "app", "image": "quay.io/acme/app:1", "imagePullPolicy": "Never"}]),
            );
            let result = mutate(&mut client, version, POD, "default", &object).await;
            let ops = result.ops.expect("a patch");
            assert_eq!(ops[0], first_op, "{case}");
            let mut expected = object.clone();
            expected["metadata"]["labels"] = added.clone();
            expected["metadata"]["annotations"]["gatehouse.dev/admitted"] = json!("true");
            assert_eq!(result.object, expected, "{case} {version}");
        }
        // No metadata at all: the patch creates it.
        let object = json!({"apiVersion": "v1", "kind": "Pod",
                            "spec": {"containers": [{"name": "a", "image": "quay.io/a/b:1",
                                                     "imagePullPolicy": "Never"}]}});
        let result = mutate(&mut client, version, POD, "default", &object).await;
        assert_eq!(
            result.object["metadata"],
            json!({"labels": added, "annotations": {"gatehouse.dev/admitted": "true"}})
        );
    }
}

#[tokio::test]
async fn overwrite_false_keeps_the_users_value() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    let object = pod(
        "default",
        json!({"labels": {"example-mutated": "false"},
               "annotations": {"gatehouse.dev/admitted": "no"}}),
        json!([{"name": "app", "image": "quay.io/a/b:1", "imagePullPolicy": "Always"}]),
    );
    for version in VERSIONS {
        let result = mutate(&mut client, version, POD, "default", &object).await;
        let ops = result.ops.expect("managed-by is still added");
        assert_eq!(
            ops,
            [
                json!({"op": "add", "path": "/metadata/labels/app.kubernetes.io~1managed-by",
                    "value": "gatehouse"})
            ]
        );
        assert_eq!(
            result.object["metadata"]["labels"]["example-mutated"],
            "false"
        );
        assert_eq!(
            result.object["metadata"]["annotations"]["gatehouse.dev/admitted"],
            "no"
        );
        // The pull policy the user chose stays too.
        assert_eq!(
            result.object["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
    }
}

#[tokio::test]
async fn overwrite_true_replaces() {
    let server = TestServer::start(
        r#"
routes:
  mutate: true
mutations:
  - name: force
    overwrite: true
    add_labels:
      example-mutated: "true"
      team: platform
    add_annotations:
      gatehouse.dev/admitted: "true"
    image_pull_policy: IfNotPresent
"#,
    )
    .await;
    let mut client = server.client(Proto::Http2).await;
    let object = pod(
        "default",
        json!({"labels": {"example-mutated": "false", "team": "platform"},
               "annotations": {"gatehouse.dev/admitted": "no"}}),
        json!([{"name": "app", "image": "quay.io/a/b:1", "imagePullPolicy": "Always"}]),
    );
    for version in VERSIONS {
        let result = mutate(&mut client, version, POD, "default", &object).await;
        let ops = result.ops.expect("a patch");
        assert_eq!(
            ops,
            [
                json!({"op": "replace", "path": "/metadata/labels/example-mutated",
                       "value": "true"}),
                json!({"op": "replace", "path": "/metadata/annotations/gatehouse.dev~1admitted",
                       "value": "true"}),
                json!({"op": "add", "path": "/spec/containers/0/imagePullPolicy",
                       "value": "IfNotPresent"}),
            ]
        );
        let mut expected = object.clone();
        expected["metadata"]["labels"]["example-mutated"] = json!("true");
        expected["metadata"]["annotations"]["gatehouse.dev/admitted"] = json!("true");
        expected["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        assert_eq!(result.object, expected);
        let again = mutate(&mut client, version, POD, "default", &result.object).await;
        assert!(again.ops.is_none(), "{}", again.answer);
    }
}

/// Objects of each shape the mutations touch, for the reinvocation test.
fn assorted_objects() -> Vec<((&'static str, &'static str), Value)> {
    let containers = json!([{"name": "app", "image": "nginx:1.25"}]);
    let template = json!({"spec": {"containers": containers.clone(),
                                    "initContainers": [{"name": "init", "image": "busybox:1.36"}]}});
    let mut with_volumes = pod("default", json!({}), containers.clone());
    with_volumes["spec"]["volumes"] = json!([
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "tools", "image": {"reference": "acme/tools:2"}}
    ]);
    vec![
        (POD, pod("default", json!({}), containers.clone())),
        (POD, with_volumes),
        (
            POD,
            pod(
                "default",
                json!({"labels": null}),
                json!([{"name": "a", "image": "acme/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"}]),
            ),
        ),
        (
            ("apps", "Deployment"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "namespace": "default"},
                   "spec": {"selector": {"matchLabels": {"app": "d"}},
                            "template": {"metadata": {"labels": {"app": "d"}},
                                         "spec": {"containers": containers.clone(),
                                                  "volumes": [{"name": "v", "image":
                                                      {"reference": "busybox:1.36",
                                                       "pullPolicy": "Always"}}]}}}}),
        ),
        (
            ("batch", "CronJob"),
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": "c", "namespace": "default"},
                   "spec": {"schedule": "* * * * *",
                            "jobTemplate": {"spec": {"template": template.clone()}}}}),
        ),
        (
            ("batch", "Job"),
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "j", "namespace": "default"},
                   "spec": {"template": template}}),
        ),
        (
            ("", "ConfigMap"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm", "namespace": "default"}, "data": {"a": "b"}}),
        ),
    ]
}

#[tokio::test]
async fn reinvocation_on_the_result_yields_no_patch() {
    for config in [EXAMPLE, WORKLOADS] {
        let server = TestServer::start(config).await;
        for proto in BOTH {
            let mut client = server.client(proto).await;
            for version in VERSIONS {
                for (gvk, object) in assorted_objects() {
                    let first = mutate(&mut client, version, gvk, "default", &object).await;
                    assert!(first.ops.is_some(), "{gvk:?}: expected a patch");
                    let second = mutate(&mut client, version, gvk, "default", &first.object).await;
                    assert!(
                        second.ops.is_none(),
                        "{gvk:?} {version}: second run patched: {}",
                        second.answer
                    );
                    // UPDATE of the stored result: still nothing to do.
                    let update = mutate_op(
                        &mut client,
                        version,
                        gvk,
                        "default",
                        "UPDATE",
                        &first.object,
                    )
                    .await;
                    assert!(update.ops.is_none(), "{gvk:?}: {}", update.answer);
                }
            }
        }
    }
}

#[tokio::test]
async fn workload_templates_are_mutated_at_their_template_paths() {
    let server = TestServer::start(WORKLOADS).await;
    let mut client = server.client(Proto::Http1).await;
    let mirrored = "registry.my.com/dockerhub/library/nginx:1.25";
    for version in VERSIONS {
        // Deployment: the pod template, not the Deployment's own metadata.
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}
        });
        let result = mutate(
            &mut client,
            version,
            ("apps", "Deployment"),
            "default",
            &deployment,
        )
        .await;
        let mut expected = deployment.clone();
        expected["spec"]["template"]["metadata"]["labels"]["example-mutated"] = json!("true");
        expected["spec"]["template"]["spec"]["containers"][0] =
            json!({"name": "app", "image": mirrored, "imagePullPolicy": "IfNotPresent"});
        assert_eq!(result.object, expected, "{version}");
        assert_eq!(
            paths(&result.ops.expect("patch")),
            [
                "/spec/template/metadata/labels/example-mutated",
                "/spec/template/spec/containers/0/image",
                "/spec/template/spec/containers/0/imagePullPolicy",
            ]
        );

        // CronJob: spec.jobTemplate.spec.template, whose metadata is absent here.
        let cronjob = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "default"},
            "spec": {"schedule": "0 3 * * *",
                     "jobTemplate": {"spec": {"template": {"spec": {
                         "restartPolicy": "OnFailure",
                         "containers": [{"name": "job", "image": "nginx:1.25"}],
                         "initContainers": [{"name": "prep", "image": "busybox:1.36",
                                             "imagePullPolicy": "Always"}]}}}}}
        });
        let result = mutate(
            &mut client,
            version,
            ("batch", "CronJob"),
            "default",
            &cronjob,
        )
        .await;
        let mut expected = cronjob.clone();
        let template = &mut expected["spec"]["jobTemplate"]["spec"]["template"];
        template["metadata"] = json!({"labels": {"example-mutated": "true"}});
        template["spec"]["containers"][0] =
            json!({"name": "job", "image": mirrored, "imagePullPolicy": "IfNotPresent"});
        template["spec"]["initContainers"][0]["image"] =
            json!("registry.my.com/dockerhub/library/busybox:1.36");
        assert_eq!(result.object, expected, "{version}");

        // The other workload kinds: the same at spec.template.
        for (group, kind) in [
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ReplicaSet"),
            ("batch", "Job"),
            ("", "ReplicationController"),
        ] {
            let object = json!({
                "apiVersion": "v1", "kind": kind, "metadata": {"name": "w", "namespace": "default"},
                "spec": {"template": {"metadata": {"labels": {"app": "w"}},
                                      "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}
            });
            let result = mutate(&mut client, version, (group, kind), "default", &object).await;
            let template = &result.object["spec"]["template"];
            assert_eq!(
                template["metadata"]["labels"]["example-mutated"], "true",
                "{kind}"
            );
            assert_eq!(
                template["spec"]["containers"][0]["image"], mirrored,
                "{kind}"
            );
            assert!(result.object["metadata"].get("labels").is_none(), "{kind}");
        }
    }
}

#[tokio::test]
async fn kinds_not_listed_keep_their_templates_images() {
    // The issue's example lists only Pod for the image mutations: a Deployment gets the
    // labels (mark-mutated has no kinds) but its images are left to its pods.
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}}}
    });
    let result = mutate(
        &mut client,
        V1,
        ("apps", "Deployment"),
        "default",
        &deployment,
    )
    .await;
    let template = &result.object["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["example-mutated"], "true");
    assert_eq!(template["spec"]["containers"][0]["image"], "nginx:1.25");
    assert!(template["spec"]["containers"][0]
        .get("imagePullPolicy")
        .is_none());
}

#[tokio::test]
async fn rewriting_covers_init_and_ephemeral_containers() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {
            "containers": [
                {"name": "app", "image": format!("nginx:1.25@{digest}"), "imagePullPolicy": "Always"},
                {"name": "odd", "image": "NGINX:1.25", "imagePullPolicy": "Always"},
                {"name": "noimage", "imagePullPolicy": "Always"}
            ],
            "initContainers": [
                {"name": "setup", "image": "index.docker.io/library/busybox:1.36",
                 "imagePullPolicy": "Always"}
            ],
            "ephemeralContainers": [
                {"name": "debug", "image": "docker.io/nicolaka/netshoot:v0.13",
                 "imagePullPolicy": "Always"}
            ]
        }
    });
    for version in VERSIONS {
        // Every list, as at CREATE (ephemeral containers on their subresource: see below).
        let result = mutate_op(&mut client, version, POD, "team-a", "CREATE", &object).await;
        let spec = &result.object["spec"];
        assert_eq!(
            spec["containers"][0]["image"],
            format!("registry.my.com/dockerhub/library/nginx:1.25@{digest}")
        );
        // Does not parse: left for /validate to refuse.
        assert_eq!(spec["containers"][1]["image"], "NGINX:1.25");
        assert!(spec["containers"][2].get("image").is_none());
        assert_eq!(
            spec["initContainers"][0]["image"],
            "registry.my.com/dockerhub/library/busybox:1.36"
        );
        assert_eq!(
            spec["ephemeralContainers"][0]["image"],
            "registry.my.com/dockerhub/nicolaka/netshoot:v0.13"
        );
        // The labels and annotations the example adds outside the system namespaces aside.
        let ops: Vec<Value> = result
            .ops
            .expect("patch")
            .into_iter()
            .filter(|op| {
                !op["path"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("/metadata")
            })
            .collect();
        assert_eq!(
            paths(&ops),
            [
                "/spec/containers/0/image",
                "/spec/initContainers/0/image",
                "/spec/ephemeralContainers/0/image",
            ]
        );
        assert!(ops.iter().all(|op| op["op"] == "replace"));
        let audit = result.answer["response"]["auditAnnotations"]["image-rewrites"]
            .as_str()
            .expect("audit")
            .to_owned();
        for needle in [
            "containers[0] \"app\"",
            "initContainers[0] \"setup\": index.docker.io/library/busybox:1.36 -> \
             registry.my.com/dockerhub/library/busybox:1.36",
            "ephemeralContainers[0] \"debug\"",
        ] {
            assert!(audit.contains(needle), "{audit}");
        }
        assert!(!audit.contains("odd"), "{audit}");
    }
}

/// Image volumes (`volumes[].image`) are pulled like container images, so the mirror rewrites
/// them and `image_pull_policy` sets their `pullPolicy`, in Pods and pod templates; a running
/// Pod's volumes are immutable and never patched.
#[tokio::test]
async fn image_volumes_are_rewritten_like_containers() {
    let yaml = "routes:\n  mutate: true\nmutations:\n  - name: mirror\n    match:\n      kinds: [Pod, Deployment]\n    rewrite_registries:\n      docker.io: registry.my.com/dockerhub\n    image_pull_policy: Always\n    overwrite: true\n";
    let server = TestServer::start(yaml).await;
    let mut client = server.client(Proto::Http2).await;
    let volumes = json!([
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "tools", "image": {"reference": "busybox:1.36", "pullPolicy": "IfNotPresent"}},
        {"name": "mine", "image": {"reference": "registry.my.com/data:1"}},
        {"name": "odd", "image": {"reference": "NGINX:1", "pullPolicy": "Always"}},
        {"name": "unset", "image": {}}
    ]);
    let mut object = pod(
        "default",
        json!({}),
        json!([{"name": "a", "image": "registry.my.com/app:1", "imagePullPolicy": "Always"}]),
    );
    object["spec"]["volumes"] = volumes.clone();
    for version in VERSIONS {
        let result = mutate(&mut client, version, POD, "default", &object).await;
        assert_eq!(
            paths(result.ops.as_deref().unwrap_or_default()),
            [
                "/spec/volumes/1/image/reference",
                "/spec/volumes/1/image/pullPolicy",
                "/spec/volumes/2/image/pullPolicy",
                "/spec/volumes/4/image/pullPolicy",
            ]
        );
        let mut expected = object.clone();
        expected["spec"]["volumes"][1]["image"] = json!({
            "reference": "registry.my.com/dockerhub/library/busybox:1.36", "pullPolicy": "Always"
        });
        expected["spec"]["volumes"][2]["image"]["pullPolicy"] = json!("Always");
        expected["spec"]["volumes"][4]["image"] = json!({"pullPolicy": "Always"});
        assert_eq!(result.object, expected);
        let audit = &result.answer["response"]["auditAnnotations"]["image-rewrites"];
        assert_eq!(
            audit,
            "volumes[1] \"tools\": busybox:1.36 -> registry.my.com/dockerhub/library/busybox:1.36"
        );
        // Reinvoked on its own output: nothing more.
        let again = mutate(&mut client, version, POD, "default", &result.object).await;
        assert!(again.ops.is_none(), "{}", again.answer);

        // UPDATE of the running Pod: volumes are immutable, never patched.
        let mut body: Value =
            serde_json::from_str(&review(version, "upd", POD, "default", "UPDATE", &object))
                .expect("json");
        body["request"]["oldObject"] = object.clone();
        let answer = client.post_json("/mutate", body.to_string()).await.json();
        assert!(answer["response"].get("patch").is_none(), "{answer}");

        // A Deployment's template: its image volumes follow, as its containers do.
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [], "volumes": volumes.clone()}}}
        });
        let result = mutate(
            &mut client,
            version,
            ("apps", "Deployment"),
            "default",
            &deployment,
        )
        .await;
        assert_eq!(
            result.object["spec"]["template"]["spec"]["volumes"][1]["image"]["reference"],
            "registry.my.com/dockerhub/library/busybox:1.36"
        );
    }
}

/// `kubectl debug` on a pod that already has ephemeral containers (added before the mutation
/// existed, or while gatehouse was down): the apiserver refuses any change to an existing one,
/// so only the new one may be rewritten, or every later `kubectl debug` of the pod fails.
#[tokio::test]
async fn existing_ephemeral_containers_are_never_patched() {
    let yaml = "routes:\n  mutate: true\nmutations:\n  - name: mirror\n    match:\n      kinds: [Pod]\n    rewrite_registries:\n      docker.io: registry.my.com/dockerhub\n    image_pull_policy: Always\n    overwrite: true\n";
    let server = TestServer::start(yaml).await;
    let mut client = server.client(Proto::Http1).await;
    let mut old = pod(
        "default",
        json!({}),
        json!([{"name": "app", "image": "registry.my.com/app:1", "imagePullPolicy": "Always"}]),
    );
    old["spec"]["volumes"] = json!([{"name": "v", "image": {"reference": "busybox:1.36"}}]);
    old["spec"]["ephemeralContainers"] = json!([
        {"name": "debug-1", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent"},
        {"name": "debug-2", "image": "nicolaka/netshoot:v0.13"}
    ]);
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"]
        .as_array_mut()
        .expect("list")
        .push(
            json!({"name": "debug-3", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent"}),
        );
    for version in VERSIONS {
        let mut body: Value =
            serde_json::from_str(&review(version, "dbg", POD, "default", "UPDATE", &new))
                .expect("json");
        body["request"]["subResource"] = "ephemeralcontainers".into();
        body["request"]["oldObject"] = old.clone();
        let answer = client.post_json("/mutate", body.to_string()).await.json();
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().expect("a patch"))
            .expect("base64");
        let ops: Vec<Value> = serde_json::from_slice(&patch).expect("ops");
        assert_eq!(
            paths(&ops),
            [
                "/spec/ephemeralContainers/2/image",
                "/spec/ephemeralContainers/2/imagePullPolicy",
            ]
        );
        let patched = apply(&new, &ops);
        let mut expected = new.clone();
        expected["spec"]["ephemeralContainers"][2] = json!({"name": "debug-3",
            "image": "registry.my.com/dockerhub/library/busybox:1.36", "imagePullPolicy": "Always"});
        // Existing ephemeral containers, containers and volumes: exactly as they were.
        assert_eq!(patched, expected);

        // Without oldObject nothing tells which exist: none is touched.
        body["request"]
            .as_object_mut()
            .expect("request")
            .remove("oldObject");
        let answer = client.post_json("/mutate", body.to_string()).await.json();
        assert!(answer["response"].get("patch").is_none(), "{answer}");
    }
}

#[tokio::test]
async fn delete_connect_and_unmatched_requests_get_no_patch() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    let object = pod(
        "default",
        json!({}),
        json!([{"name": "a", "image": "nginx:1.25"}]),
    );
    for version in VERSIONS {
        for operation in ["DELETE", "CONNECT", "SOMETHING"] {
            let result = mutate_op(&mut client, version, POD, "default", operation, &object).await;
            assert!(result.ops.is_none(), "{operation}: {}", result.answer);
        }
        // DELETE as the apiserver sends it: no object, the old one in oldObject.
        let body = json!({
            "apiVersion": version, "kind": "AdmissionReview",
            "request": {"uid": "del", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "default", "operation": "DELETE",
                        "object": null, "oldObject": object}
        });
        let answer = client.post_json("/mutate", body.to_string()).await.json();
        assert_eq!(answer["response"], json!({"uid": "del", "allowed": true}));
        // A kind no mutation selects in that namespace.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "x", "namespace": "kube-system"}});
        let result = mutate(&mut client, version, ("", "ConfigMap"), "kube-system", &cm).await;
        assert!(result.ops.is_none(), "{}", result.answer);
    }
}

/// On UPDATE a patch may only touch what the apiserver lets change: never a running Pod's
/// images or pull policy, never a Job's template. Workload templates still follow.
#[tokio::test]
async fn updates_never_patch_immutable_or_restarting_fields() {
    let yaml = "routes:\n  mutate: true\nmutations:\n  - name: everything\n    match:\n      kinds: [Pod, Job, Deployment]\n    add_labels:\n      example-mutated: \"true\"\n    rewrite_registries:\n      docker.io: registry.my.com/dockerhub\n    image_pull_policy: Always\n    overwrite: true\n";
    let server = TestServer::start(yaml).await;
    let mut client = server.client(Proto::Http1).await;
    let running = pod(
        "default",
        json!({"labels": {"app": "x"}}),
        json!([{"name": "a", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent"}]),
    );
    for version in VERSIONS {
        // CREATE: everything applies.
        let created = mutate(&mut client, version, POD, "default", &running).await;
        assert_eq!(
            created.object["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        // UPDATE of a running pod: labels only.
        let updated = mutate_op(&mut client, version, POD, "default", "UPDATE", &running).await;
        assert_eq!(
            paths(updated.ops.as_deref().unwrap_or_default()),
            ["/metadata/labels/example-mutated"]
        );
        assert_eq!(
            updated.object["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
        // kubectl debug: an UPDATE of pods/ephemeralcontainers; only ephemeral containers move.
        let mut debugged = running.clone();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox:1.36"}]);
        let mut body: Value =
            serde_json::from_str(&review(version, "eph", POD, "default", "UPDATE", &debugged))
                .expect("json");
        body["request"]["subResource"] = "ephemeralcontainers".into();
        body["request"]["oldObject"] = running.clone();
        let answer = client.post_json("/mutate", body.to_string()).await.json();
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().expect("patch"))
            .expect("base64");
        let ops: Vec<Value> = serde_json::from_slice(&patch).expect("ops");
        let patched = apply(&debugged, &ops);
        assert_eq!(
            patched["spec"]["ephemeralContainers"][0]["image"],
            "registry.my.com/dockerhub/library/busybox:1.36"
        );
        assert_eq!(
            patched["spec"]["containers"][0],
            debugged["spec"]["containers"][0]
        );
        // UPDATE of a Job (a finalizer removed, say): its template is immutable, no patch.
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "nginx:1.25"}]}}}});
        let result = mutate_op(
            &mut client,
            version,
            ("batch", "Job"),
            "default",
            "UPDATE",
            &job,
        )
        .await;
        assert!(result.ops.is_none(), "{}", result.answer);
        // UPDATE of a Deployment: its template follows (the change is the user's rollout).
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "a", "image": "nginx:1.26"}]}}}});
        let result = mutate_op(
            &mut client,
            version,
            ("apps", "Deployment"),
            "default",
            "UPDATE",
            &deployment,
        )
        .await;
        assert_eq!(
            result.object["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.my.com/dockerhub/library/nginx:1.26"
        );
    }
}

#[tokio::test]
async fn unpatchable_objects_are_allowed_with_a_warning_and_no_patch() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    let cases = [
        (
            "metadata is a string",
            json!({"kind": "Pod", "metadata": "x", "spec": {}}),
        ),
        (
            "metadata is an array",
            json!({"kind": "Pod", "metadata": [], "spec": {}}),
        ),
        (
            "metadata is positional",
            json!({"kind": "Pod", "metadata": ["p", "default"]}),
        ),
        ("metadata is null", json!({"kind": "Pod", "metadata": null})),
        (
            "labels is a string",
            json!({"kind": "Pod", "metadata": {"labels": "x"}}),
        ),
        (
            "a label is a number",
            json!({"kind": "Pod", "metadata": {"labels": {"a": 1}}}),
        ),
        ("the object is an array", json!([{"metadata": {}}])),
        ("the object is a string", json!("pod")),
        (
            "a container is an array",
            json!({"kind": "Pod", "metadata": {},
                                           "spec": {"containers": [["app", "nginx:1.25"]]}}),
        ),
        (
            "containers is a string",
            json!({"kind": "Pod", "metadata": {},
                                          "spec": {"containers": "nginx"}}),
        ),
    ];
    for version in VERSIONS {
        for (case, object) in &cases {
            let result = mutate(&mut client, version, POD, "default", object).await;
            let response = &result.answer["response"];
            assert!(result.ops.is_none(), "{case}: {response}");
            let warnings = response["warnings"].as_array().expect("a warning");
            assert_eq!(warnings.len(), 1, "{case}");
            let warning = warnings[0].as_str().unwrap_or_default();
            assert!(
                warning.starts_with("gatehouse: object not mutated"),
                "{case}: {warning}"
            );
        }
        // The same object, but no mutation in scope (excluded namespace, a kind not listed):
        // nothing to say.
        let object = json!({"kind": "ConfigMap", "metadata": "x"});
        let result = mutate(
            &mut client,
            version,
            ("", "ConfigMap"),
            "kube-system",
            &object,
        )
        .await;
        assert!(
            result.answer["response"].get("warnings").is_none(),
            "{}",
            result.answer
        );
    }
}

#[tokio::test]
async fn custom_resources_with_any_spec_are_still_labelled() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    let object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": "w", "namespace": "default"},
                        "spec": {"containers": "not a list", "template": [1, 2]}});
    for version in VERSIONS {
        let result = mutate(
            &mut client,
            version,
            ("example.com", "Widget"),
            "default",
            &object,
        )
        .await;
        assert_eq!(
            result.object["metadata"]["labels"]["example-mutated"],
            "true"
        );
        assert_eq!(result.object["spec"], object["spec"]);
    }
}

#[tokio::test]
async fn malformed_reviews_are_400() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http1).await;
    let object = pod("default", json!({}), json!([]));
    let good: Value =
        serde_json::from_str(&review(V1, "u", POD, "default", "CREATE", &object)).expect("json");
    let mut no_uid = good.clone();
    no_uid["request"]
        .as_object_mut()
        .expect("map")
        .remove("uid");
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v2");
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("TokenReview");
    let mut no_request = good.clone();
    no_request.as_object_mut().expect("map").remove("request");
    let mut no_kind = good.clone();
    no_kind["request"]
        .as_object_mut()
        .expect("map")
        .remove("kind");
    for (case, body) in [
        ("not JSON", "{not json".to_owned()),
        ("empty", String::new()),
        ("no uid", no_uid.to_string()),
        ("wrong apiVersion", wrong_version.to_string()),
        ("wrong kind", wrong_kind.to_string()),
        ("no request", no_request.to_string()),
        ("no request.kind", no_kind.to_string()),
    ] {
        let answer = client.post_json("/mutate", body).await;
        assert_eq!(
            answer.status,
            400,
            "{case}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["reason"], "BadRequest", "{case}");
    }
}

#[tokio::test]
async fn wire_examples_are_answered() {
    let server = TestServer::start(EXAMPLE).await;
    let mut client = server.client(Proto::Http2).await;
    for (name, version, list, index) in [
        ("admission.v1.pod-create.json", V1, "containers", 1),
        // `kubectl debug`: the new ephemeral container goes through the mirror.
        (
            "admission.v1beta1.pod-ephemeralcontainers.json",
            V1BETA1,
            "ephemeralContainers",
            0,
        ),
    ] {
        let body = common::wire_example(name);
        let sent: Value = serde_json::from_slice(&body).expect("example");
        let answer = client.post_json("/mutate", body).await;
        assert_eq!(answer.status, 200, "{name}");
        let json = answer.json();
        assert_eq!(json["apiVersion"], version);
        assert_eq!(json["response"]["uid"], sent["request"]["uid"]);
        assert_eq!(json["response"]["allowed"], true);
        common::assert_shape_within(&json, "admission.v1beta1.response-patched.json");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(json["response"]["patch"].as_str().expect("a patch"))
            .expect("base64");
        let ops: Vec<Value> = serde_json::from_slice(&patch).expect("JSON Patch");
        let object = apply(&sent["request"]["object"], &ops);
        let image = &object["spec"][list][index]["image"];
        assert!(
            image
                .as_str()
                .unwrap_or_default()
                .starts_with("registry.my.com/dockerhub/"),
            "{name}: {image}"
        );
    }
}

#[tokio::test]
async fn mutate_is_off_unless_switched_on() {
    let server = TestServer::start("").await;
    let mut client = server.client(Proto::Http1).await;
    let body = review(
        V1,
        "u",
        POD,
        "default",
        "CREATE",
        pod("d", json!({}), json!([])),
    );
    assert_eq!(client.post_json("/mutate", body).await.status, 404);
}

// --- configuration ------------------------------------------------------------------------

/// The error startup reports: parsing, then building the engines (as `server::bind` does).
fn config_error(yaml: &str) -> String {
    match gatehouse::config::Config::from_yaml(yaml, "test").and_then(gatehouse::app::App::new) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_issue_example_loads_and_means_what_it_says() {
    let config = gatehouse::config::Config::from_yaml(EXAMPLE, "test").expect("example");
    assert_eq!(config.mutations.len(), 3);
    let first = &config.mutations[0];
    assert_eq!(first.name, "mark-mutated");
    assert!(!first.overwrite);
    assert_eq!(
        first.add_labels["app.kubernetes.io/managed-by"],
        "gatehouse"
    );
    assert_eq!(
        config.mutations[1].rewrite_registries["docker.io"],
        "registry.my.com/dockerhub"
    );
    assert_eq!(
        config.mutations[2].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    // Every entry commented out is YAML null: no mutations.
    let config = gatehouse::config::Config::from_yaml("mutations:\n", "test").expect("null");
    assert!(config.mutations.is_empty());
}

#[test]
fn config_errors_name_the_mutation_and_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("- name: ''\n  add_labels: {a: b}", &["mutations[0].name", "must not be empty"]),
        (
            "- name: a\n  add_labels: {a: b}\n- name: a\n  add_labels: {c: d}",
            &["mutations[1].name", "\"a\"", "mutations[0]"],
        ),
        (
            "- name: m\n  add_labels: {x: y}\n- name: bad\n  add_labels: {\"a~b\": v}",
            &["mutations[1].add_labels[\"a~b\"]", "mutation \"bad\"", "label key"],
        ),
        (
            "- name: bad\n  add_labels: {\"Example.com/x\": v}",
            &["add_labels[\"Example.com/x\"]", "DNS subdomain"],
        ),
        (
            "- name: bad\n  add_labels: {ok: \"not valid!\"}",
            &["add_labels[\"ok\"]", "label value"],
        ),
        (
            &format!("- name: bad\n  add_labels: {{ok: {}}}", "a".repeat(64)),
            &["add_labels[\"ok\"]", "63"],
        ),
        (
            "- name: bad\n  add_annotations: {\"/x\": v}",
            &["add_annotations[\"/x\"]", "annotation key"],
        ),
        (
            "- name: pp\n  image_pull_policy: Sometimes",
            &["mutations[0].image_pull_policy", "mutation \"pp\"", "Sometimes", "IfNotPresent"],
        ),
        (
            "- name: mirror\n  rewrite_registries: {\"Docker.io\": r.my.com/hub}",
            &["rewrite_registries[\"Docker.io\"]", "mutation \"mirror\"", "lowercase"],
        ),
        (
            "- name: mirror\n  rewrite_registries: {docker.io: mirror}",
            &["rewrite_registries[\"docker.io\"]", "target \"mirror\"", "registry"],
        ),
        (
            "- name: mirror\n  rewrite_registries: {docker.io: \"r.my.com/hub:1\"}",
            &["rewrite_registries[\"docker.io\"]", "target"],
        ),
        (
            "- name: loop\n  rewrite_registries: {registry.my.com: registry.my.com/mirror}",
            &["rewrite_registries[\"registry.my.com\"]", "its own key", "reinvokes"],
        ),
        (
            "- name: a\n  rewrite_registries: {docker.io: r.my.com/hub}\n\
             - name: b\n  rewrite_registries: {r.my.com: docker.io/mirror}",
            &["mutations[0].rewrite_registries[\"docker.io\"]", "mutation \"b\""],
        ),
        (
            "- name: dup\n  rewrite_registries: {nginx: r.my.com/a, docker.io/library/nginx: r.my.com/b}",
            &["mutation \"dup\"", "same prefix"],
        ),
        ("- name: idle", &["mutations[0]:", "does nothing"]),
        (
            "- name: del\n  match: {operations: [DELETE]}\n  add_labels: {a: b}",
            &["mutations[0].match.operations", "CREATE and UPDATE"],
        ),
        (
            "- name: none\n  match: {operations: []}\n  add_labels: {a: b}",
            &["mutations[0].match.operations", "never applies"],
        ),
    ];
    for (yaml, needles) in cases {
        let message = config_error(&format!("mutations:\n{yaml}\n"));
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{yaml:?}: {message:?} lacks {needle:?}"
            );
        }
    }
    // Typos are caught by the schema, with the line.
    let message = config_error("mutations:\n- name: a\n  add_label: {a: b}\n");
    assert!(message.contains("add_label"), "{message}");
}
