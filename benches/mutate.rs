//! One `/mutate` decision: decode the AdmissionReview (projection), compute the JSON Patch,
//! encode the answer; for a realistic ~5 KB, 3-container Pod review and the issue's example
//! mutations (labels, annotation, registry rewrite, pull policy). Run with
//! `cargo bench --bench mutate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse::config::Config;
use gatehouse::handlers::mutate::answer;
use gatehouse::mutation::Mutations;
use serde_json::json;

const CONFIG: &str = r#"
mutations:
  - name: mark-mutated
    match:
      exclude_namespaces: [kube-system, kube-public, kube-node-lease]
    add_labels:
      example-mutated: "true"
      app.kubernetes.io/managed-by: gatehouse
    add_annotations:
      gatehouse.dev/admitted: "true"
  - name: mirror-docker-hub
    match:
      kinds: [Pod]
    rewrite_registries:
      docker.io: registry.my.com/dockerhub
  - name: pull-policy
    match:
      kinds: [Pod]
    image_pull_policy: IfNotPresent
"#;

fn container(name: &str, image: &str, port: u16) -> serde_json::Value {
    json!({
        "name": name,
        "image": image,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}
        ],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": true},
            {"name": "kube-api-access-7xk2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
        ],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 1,
                          "successThreshold": 1, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port, "scheme": "HTTP"},
                           "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}
    })
}

/// A Pod CREATE as a ReplicaSet controller sends it, about 5 KB.
fn review() -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8b6c5d-",
            "namespace": "shop",
            "creationTimestamp": null,
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d", "tier": "frontend",
                       "app.kubernetes.io/name": "web", "app.kubernetes.io/version": "2.4.1"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
                            "kubectl.kubernetes.io/default-container": "app"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
                                 "uid": "5b2d7c1e-8f3a-4e6b-9d0c-1a2b3c4d5e6f", "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "web-config", "defaultMode": 420}},
                {"name": "kube-api-access-7xk2p", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ], "defaultMode": 420}}
            ],
            "initContainers": [container("migrate", "ghcr.io/acme/shop-migrate:2.4.1", 8081)],
            "containers": [
                container("app", "ghcr.io/acme/shop-web:2.4.1", 8080),
                container("proxy", "nginx:1.25.3", 8443)
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "web",
            "serviceAccount": "web",
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "0c2b7d4e-1f3a-4b5c-8d6e-7f8a9b0c1d2e",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("review")
}

fn bench(c: &mut Criterion) {
    let config = Config::from_yaml(CONFIG, "bench").expect("config");
    let mutations = Mutations::compile(&config.mutations).expect("mutations");
    let body = review();
    // Prove the review exercises every mutation before timing it.
    let out = answer(&mutations, &body).expect("answer");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    assert!(
        text.contains("registry.my.com/dockerhub/library/nginx:1.25.3"),
        "{text}"
    );

    let mut group = c.benchmark_group("mutate");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(format!("pod_3_containers_{}B", body.len()), |b| {
        b.iter(|| answer(black_box(&mutations), black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
