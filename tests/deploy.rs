//! deploy/ and the Dockerfile: every file parses, the kustomize base and overlays hang together
//! (ports, paths, names, the configuration `serve` loads), the apiserver examples are exactly
//! what `gatehouse apiserver-config` writes, and `kubectl kustomize` renders them when kubectl
//! is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("YAML: {e}\n{text}"))
}

/// Every object the base's resource files hold.
fn base_objects() -> Vec<Value> {
    let kustomization = yaml("deploy/base/kustomization.yaml");
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|r| yaml_docs(&read(&format!("deploy/base/{}", r.as_str().expect("path")))))
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn gatehouse_config(yaml: &str) -> gatehouse::config::Config {
    gatehouse::config::Config::from_yaml(yaml, "deploy").expect("the loader `serve` uses")
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut stack = vec![root().join("deploy")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.to_string_lossy();
            if [".yaml", ".yml", ".kubeconfig"]
                .iter()
                .any(|e| name.ends_with(e))
            {
                let text = std::fs::read_to_string(&path).expect("read");
                let docs = yaml_docs(&text);
                assert!(!docs.is_empty(), "{name}: no document");
                seen += 1;
            }
        }
    }
    assert!(seen >= 15, "only {seen} YAML files found");
}

#[test]
fn base_lists_every_object_the_deployment_needs() {
    // `kubectl kustomize deploy/` renders the base.
    assert_eq!(
        yaml("deploy/kustomization.yaml")["resources"],
        serde_json::json!(["base"])
    );
    let objects = base_objects();
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "MutatingWebhookConfiguration",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        ]
    );
    let kustomization = yaml("deploy/base/kustomization.yaml");
    assert_eq!(kustomization["namespace"], "gatehouse");
    assert_eq!(find(&objects, "Namespace")["metadata"]["name"], "gatehouse");
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], "gatehouse-config");
    assert_eq!(generator["files"], serde_json::json!(["config.yaml"]));
    let sa = find(&objects, "ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false);
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let objects = base_objects();
    let deployment = find(&objects, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    let anti = &pod["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&anti["labelSelector"]["matchLabels"], labels);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["serviceAccountName"],
        find(&objects, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // The Dockerfile's numeric user.
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);

    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // No shell in the image: the kubelet's own sleep, and long enough to matter.
    let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64();
    assert!(sleep.is_some_and(|s| s >= 3), "preStop sleep: {sleep:?}");
    // Grace covers the sleep and the drain (request_timeout + 1s).
    let limits = gatehouse::config::Config::default().limits;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(grace > sleep.unwrap_or(0) + limits.request_timeout.0.as_secs() + 1);
    for key in ["requests", "limits"] {
        assert!(container["resources"][key]["memory"].is_string(), "{key}");
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path);
        // The ops listener: the kubelet has no client certificate for the webhook port.
        assert_eq!(get["scheme"], "HTTP");
        assert_eq!(get["port"], "ops");
    }
}

#[test]
fn configmap_config_loads_and_matches_the_deployment() {
    let objects = base_objects();
    let pod = &find(&objects, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(port["name"], "webhook");
    let ops_port = &container["ports"][1];
    assert_eq!(ops_port["name"], "ops");

    let config = gatehouse_config(&read("deploy/base/config.yaml"));
    assert_eq!(
        Some(config.listen.port()),
        port["containerPort"].as_u64().map(|p| p as u16)
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "must listen on the pod IP"
    );
    // The probes' port is the ops listener's.
    let ops = config.ops.listen.expect("ops.listen set for the probes");
    assert_eq!(
        Some(ops.port()),
        ops_port["containerPort"].as_u64().map(|p| p as u16)
    );
    assert!(ops.ip().is_unspecified(), "the kubelet probes the pod IP");
    // Both webhook configurations are registered: both routes must answer.
    assert!(config.routes.validate && config.routes.mutate);

    let mount = |volume: &str| {
        container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount for {volume}"))
            .to_owned()
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    // --config names the generated ConfigMap's file under its mount.
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        ["--config", &format!("{}/config.yaml", mount("config"))]
    );
    assert_eq!(volume("config")["configMap"]["name"], "gatehouse-config");
    // The TLS files are the Secret's keys under its mount, readable by the pod's group only.
    let tls = volume("tls");
    assert_eq!(tls["secret"]["secretName"], "gatehouse-tls");
    assert_eq!(tls["secret"]["defaultMode"], 0o440);
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let dir = mount("tls");
    assert_eq!(config.tls.cert, Some(format!("{dir}/tls.crt").into()));
    assert_eq!(config.tls.key, Some(format!("{dir}/tls.key").into()));
}

#[test]
fn service_and_webhooks_point_at_the_pods_and_routes() {
    let objects = base_objects();
    let service = find(&objects, "Service");
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["port"], 443);
    assert_eq!(port["targetPort"], "webhook");
    // Prometheus scrapes the ops listener, never the webhook port.
    let metrics = &service["spec"]["ports"][1];
    assert_eq!(metrics["name"], "metrics");
    assert_eq!(metrics["targetPort"], "ops");

    let limits = gatehouse::config::Config::default().limits;
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let mutating = kinds
        .iter()
        .position(|k| *k == "MutatingWebhookConfiguration");
    let validating = kinds
        .iter()
        .position(|k| *k == "ValidatingWebhookConfiguration");
    assert!(
        mutating < validating,
        "mutating first, as the apiserver runs it"
    );
    for (kind, path) in [
        ("MutatingWebhookConfiguration", "/mutate"),
        ("ValidatingWebhookConfiguration", "/validate"),
    ] {
        for hook in find(&objects, kind)["webhooks"]
            .as_array()
            .expect("webhooks")
        {
            let target = &hook["clientConfig"]["service"];
            assert_eq!(target["path"], path, "{kind}");
            assert_eq!(target["name"], service["metadata"]["name"]);
            assert_eq!(target["namespace"], "gatehouse");
            assert_eq!(target["port"], port["port"]);
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(
                hook["admissionReviewVersions"],
                serde_json::json!(["v1", "v1beta1"])
            );
            assert!(hook["failurePolicy"].is_string(), "explicit failurePolicy");
            // The apiserver must wait longer than gatehouse's own deadline.
            let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds");
            assert!(timeout > limits.request_timeout.0.as_secs() && timeout <= 30);
            let selector = &hook["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(selector["key"], "kubernetes.io/metadata.name");
            assert_eq!(selector["operator"], "NotIn");
            assert_eq!(
                selector["values"],
                serde_json::json!(["kube-system", "gatehouse"])
            );
            let resources: Vec<&str> = hook["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .flat_map(|r| r["resources"].as_array().expect("resources"))
                .filter_map(Value::as_str)
                .collect();
            assert!(resources.contains(&"pods") && resources.contains(&"pods/ephemeralcontainers"));
            if path == "/validate" {
                for workload in [
                    "deployments",
                    "statefulsets",
                    "daemonsets",
                    "replicasets",
                    "jobs",
                    "cronjobs",
                    "replicationcontrollers",
                ] {
                    assert!(resources.contains(&workload), "{workload}");
                }
            }
        }
    }
    // Only the webhook and ops ports are open.
    let policy = find(&objects, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["ports"],
        serde_json::json!([
            {"port": 8443, "protocol": "TCP"},
            {"port": 9090, "protocol": "TCP"}
        ])
    );
    let pdb = find(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn overlays_supply_the_certificate_and_the_ca_bundle() {
    let cm = yaml("deploy/overlays/cert-manager/kustomization.yaml");
    assert_eq!(
        cm["resources"],
        serde_json::json!(["../../base", "certificates.yaml"])
    );
    let patch = &cm["patches"][0];
    assert_eq!(
        patch["target"]["kind"],
        "(Validating|Mutating)WebhookConfiguration"
    );
    assert!(patch["patch"]
        .as_str()
        .is_some_and(|p| p.contains("cert-manager.io/inject-ca-from: gatehouse/gatehouse-tls")));
    let certs = yaml_docs(&read("deploy/overlays/cert-manager/certificates.yaml"));
    let serving = certs
        .iter()
        .find(|c| c["kind"] == "Certificate" && c["metadata"]["name"] == "gatehouse-tls")
        .expect("serving Certificate");
    assert_eq!(serving["spec"]["secretName"], "gatehouse-tls");
    assert_eq!(
        serving["spec"]["dnsNames"],
        serde_json::json!([
            "gatehouse.gatehouse.svc",
            "gatehouse.gatehouse.svc.cluster.local"
        ])
    );
    let issuer = serving["spec"]["issuerRef"]["name"]
        .as_str()
        .expect("issuer");
    let ca_issuer = certs
        .iter()
        .find(|c| c["kind"] == "Issuer" && c["metadata"]["name"] == issuer)
        .expect("CA issuer");
    let ca_secret = &ca_issuer["spec"]["ca"]["secretName"];
    assert!(certs.iter().any(|c| c["kind"] == "Certificate"
        && c["spec"]["isCA"] == true
        && &c["spec"]["secretName"] == ca_secret));

    let files = yaml("deploy/overlays/gatehouse-certs/kustomization.yaml");
    assert_eq!(
        files["resources"],
        serde_json::json!(["../../base", "pki/secret.yaml"])
    );
    let replacement = &files["replacements"][0];
    assert_eq!(replacement["source"]["fieldPath"], "data.ca\\.crt");
    assert_eq!(replacement["targets"].as_array().map(Vec::len), Some(2));
    // Keys written there never reach git.
    assert_eq!(
        read("deploy/overlays/gatehouse-certs/.gitignore").trim(),
        "pki/"
    );
}

/// Runs the built binary.
fn gatehouse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse")
}

#[test]
fn apiserver_examples_are_what_apiserver_config_writes() {
    // The invocation deploy/README.md documents for these files.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let out = dir.path().join("apiserver");
    let run = gatehouse(&[
        "certs",
        "--out-dir",
        pki.to_str().expect("utf-8"),
        "--name",
        "127.0.0.1",
    ]);
    assert!(run.status.success(), "{run:?}");
    let run = gatehouse(&[
        "apiserver-config",
        "--server",
        "https://127.0.0.1:8443",
        "--ca",
        pki.join("ca.crt").to_str().expect("utf-8"),
        "--by-path",
        "--out-dir",
        out.to_str().expect("utf-8"),
    ]);
    assert!(run.status.success(), "{run:?}");
    for file in [
        "authn-webhook.kubeconfig",
        "image-policy.kubeconfig",
        "admission-config.yaml",
    ] {
        let written = std::fs::read_to_string(out.join(file)).expect("written");
        assert_eq!(
            written,
            read(&format!("deploy/apiserver/{file}")),
            "deploy/apiserver/{file} differs from what the command writes"
        );
    }
    assert_eq!(
        std::fs::read(out.join("ca.crt")).expect("copied CA"),
        std::fs::read(pki.join("ca.crt")).expect("CA")
    );
}

#[test]
fn dockerfile_builds_release_onto_a_nonroot_base() {
    let dockerfile = read("Dockerfile");
    // One instruction per logical line: comments dropped, `\` continuations joined.
    let joined = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(i, rest)| (i.to_ascii_uppercase(), rest.trim().to_owned()))
        .collect();
    let of = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    // The builder's Rust is the crate's rust-version.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("rust-version");
    assert!(
        of("ARG").contains(&format!("RUST_VERSION={rust_version}").as_str()),
        "ARG RUST_VERSION={rust_version}"
    );
    let froms = of("FROM");
    assert_eq!(froms.len(), 2, "multi-stage: builder and runtime");
    assert!(froms[0].starts_with("rust:${RUST_VERSION}") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("gcr.io/distroless/") && froms[1].contains(":nonroot"));
    assert!(of("RUN")
        .iter()
        .any(|r| r.contains("cargo build --release --locked")));
    // Nothing runs in the final stage: it has no shell.
    let final_stage = dockerfile.rsplit_once("\nFROM ").expect("final stage").1;
    assert!(!final_stage
        .lines()
        .any(|l| l.trim_start().starts_with("RUN ")));
    let user = of("USER");
    assert_eq!(
        user.last().copied(),
        Some("65532:65532"),
        "numeric, non-root"
    );
    assert_eq!(of("EXPOSE"), ["8443 9090"]);
    assert_eq!(of("ENTRYPOINT"), [r#"["/gatehouse", "serve"]"#]);
    let ignore = read(".dockerignore");
    for entry in ["target", ".git", "pki"] {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim_start_matches('/').trim_end_matches('/') == entry),
            "{entry}"
        );
    }
}

/// `kubectl kustomize DIR`, or `None` (with the reason printed) when kubectl is not installed:
/// CI images may lack it, and the checks above hold without it.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(o) => o,
        Err(e) => {
            println!("skipped: kubectl is not installed ({e}); `kubectl kustomize` not checked");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(yaml_docs(&String::from_utf8(output.stdout).expect("UTF-8")))
}

fn rendered_config_loads(objects: &[Value]) {
    let configmap = find(objects, "ConfigMap");
    let name = configmap["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("gatehouse-config-"), "hashed name: {name}");
    let deployment = find(objects, "Deployment");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert!(volumes
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["configMap"]["name"] == name));
    gatehouse_config(
        configmap["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
    );
}

#[test]
fn kubectl_kustomize_renders_the_base_and_cert_manager_overlay() {
    let Some(base) = kustomize(&root().join("deploy")) else {
        return;
    };
    assert_eq!(base.len(), 9);
    rendered_config_loads(&base);
    assert!(base.iter().all(|o| o["kind"] == "Namespace"
        || o["kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        || o["metadata"]["namespace"] == "gatehouse"));

    let Some(cm) = kustomize(&root().join("deploy/overlays/cert-manager")) else {
        return;
    };
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(&cm, kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "gatehouse/gatehouse-tls"
        );
    }
    assert_eq!(cm.iter().filter(|o| o["kind"] == "Certificate").count(), 2);
    rendered_config_loads(&cm);
}

#[test]
fn kubectl_kustomize_sets_the_ca_bundle_from_gatehouse_certs() {
    // A copy of deploy/, so the keys are written outside the repository.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("deploy"), &dir.path().join("deploy"));
    let overlay = dir.path().join("deploy/overlays/gatehouse-certs");
    let pki = overlay.join("pki");
    let run = gatehouse(&[
        "certs",
        "--out-dir",
        pki.to_str().expect("utf-8"),
        "--secret",
        "gatehouse-tls",
    ]);
    assert!(run.status.success(), "{run:?}");
    let Some(objects) = kustomize(&overlay) else {
        return;
    };
    let ca = std::fs::read(pki.join("ca.crt")).expect("ca.crt");
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for hook in find(&objects, kind)["webhooks"]
            .as_array()
            .expect("webhooks")
        {
            assert_eq!(hook["clientConfig"]["caBundle"], bundle.as_str(), "{kind}");
        }
    }
    let secret = find(&objects, "Secret");
    assert_eq!(secret["metadata"]["name"], "gatehouse-tls");
    assert_eq!(secret["metadata"]["namespace"], "gatehouse");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    rendered_config_loads(&objects);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_name() == "pki" {
            // Someone's local keys: the test writes its own.
            continue;
        }
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn mtls_overlay_admits_only_the_apiserver_and_tells_it_which_certificate_to_present() {
    let overlay = yaml("deploy/overlays/mtls/kustomization.yaml");
    assert_eq!(
        overlay["resources"],
        serde_json::json!(["../../base", "pki/secret.yaml"])
    );
    assert_eq!(overlay["configMapGenerator"][0]["name"], "gatehouse-config");
    assert_eq!(overlay["configMapGenerator"][0]["behavior"], "replace");
    assert_eq!(
        overlay["replacements"][0]["source"]["fieldPath"],
        "data.ca\\.crt"
    );
    assert_eq!(
        read("deploy/overlays/mtls/.gitignore").trim(),
        "pki/",
        "keys never reach git"
    );

    // The base's configuration plus the client CA (the Secret's ca.crt, under the TLS mount)
    // and the apiserver's name; nothing else differs.
    let base = gatehouse_config(&read("deploy/base/config.yaml"));
    let mtls = gatehouse_config(&read("deploy/overlays/mtls/config.yaml"));
    assert_eq!(mtls.tls.client_ca, Some("/etc/gatehouse/tls/ca.crt".into()));
    assert_eq!(
        mtls.tls.client_names,
        [gatehouse::certs::CLIENT_COMMON_NAME]
    );
    assert_eq!(mtls.ops.listen, base.ops.listen, "probes need the ops port");
    let strip = |yaml: String| -> Vec<String> {
        yaml.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter(|l| !l.contains("client_ca:") && !l.contains("client_names:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        strip(read("deploy/overlays/mtls/config.yaml")),
        strip(read("deploy/base/config.yaml"))
    );

    // kube-apiserver's side: both webhook plugins read the kubeconfig, whose user is named after
    // the Service's DNS name (port 443) and holds the client pair.
    let admission = yaml("deploy/overlays/mtls/apiserver/admission-config.yaml");
    assert_eq!(admission["kind"], "AdmissionConfiguration");
    let plugins: Vec<&str> = admission["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        plugins,
        ["ValidatingAdmissionWebhook", "MutatingAdmissionWebhook"]
    );
    for plugin in admission["plugins"].as_array().expect("plugins") {
        assert_eq!(
            plugin["configuration"]["kind"],
            "WebhookAdmissionConfiguration"
        );
        assert_eq!(
            plugin["configuration"]["kubeConfigFile"],
            "/etc/kubernetes/gatehouse/webhook-client.kubeconfig"
        );
    }
    let kubeconfig = yaml("deploy/overlays/mtls/apiserver/webhook-client.kubeconfig");
    let service = find(&base_objects(), "Service").clone();
    let user = &kubeconfig["users"][0];
    assert_eq!(
        user["name"],
        format!(
            "{}.gatehouse.svc",
            service["metadata"]["name"].as_str().expect("name")
        )
    );
    assert_eq!(
        service["spec"]["ports"][0]["port"], 443,
        "no :port in the name"
    );
    assert!(user["user"]["client-certificate"].is_string());
    assert!(user["user"]["client-key"].is_string());
}

#[test]
fn kubectl_kustomize_renders_the_mtls_overlay_with_the_client_ca_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root().join("deploy"), &dir.path().join("deploy"));
    let overlay = dir.path().join("deploy/overlays/mtls");
    let pki = overlay.join("pki");
    let run = gatehouse(&[
        "certs",
        "--out-dir",
        pki.to_str().expect("utf-8"),
        "--secret",
        "gatehouse-tls",
        "--client",
    ]);
    assert!(run.status.success(), "{run:?}");
    let Some(objects) = kustomize(&overlay) else {
        return;
    };
    rendered_config_loads(&objects);
    // One ConfigMap: the overlay's replaced the base's, and it is the one mounted.
    let configmaps: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .collect();
    assert_eq!(configmaps.len(), 1);
    let config = gatehouse_config(
        configmaps[0]["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
    );
    assert!(config.tls.client_ca.is_some());
    let bundle = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(pki.join("ca.crt")).expect("ca.crt"));
    let hook = &find(&objects, "ValidatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(hook["clientConfig"]["caBundle"], bundle.as_str());
}
