//! The apiserver wiring examples in deploy/ parse and point at the routes gatehouse serves.

use std::path::Path;

use serde_json::Value;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn webhook_configurations_register_mutate_before_validate() {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&read("webhooks.yaml")).expect("YAML");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration"
        ]
    );
    let limits = gatehouse::config::Config::default().limits;
    for (doc, path) in docs.iter().zip(["/mutate", "/validate"]) {
        for hook in doc["webhooks"].as_array().expect("webhooks") {
            assert_eq!(hook["clientConfig"]["service"]["path"], path);
            assert_eq!(hook["sideEffects"], "None");
            let versions = hook["admissionReviewVersions"]
                .as_array()
                .expect("versions");
            assert!(versions.contains(&"v1".into()) && versions.contains(&"v1beta1".into()));
            // The apiserver must wait longer than gatehouse's own deadline.
            let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds");
            assert!(timeout > limits.request_timeout.0.as_secs());
        }
    }
}

#[test]
fn apiserver_kubeconfigs_point_at_their_routes() {
    for (file, route) in [
        ("apiserver/image-policy.kubeconfig", "/image_policy"),
        ("apiserver/authn-webhook.kubeconfig", "/authenticate"),
    ] {
        let config: Value = serde_saphyr::from_str(&read(file)).expect("YAML");
        let server = config["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("server");
        assert!(
            server.starts_with("https://") && server.ends_with(route),
            "{file}: {server}"
        );
    }
    let admission: Value =
        serde_saphyr::from_str(&read("apiserver/admission-config.yaml")).expect("YAML");
    let policy = &admission["plugins"][0]["configuration"]["imagePolicy"];
    assert_eq!(admission["plugins"][0]["name"], "ImagePolicyWebhook");
    assert_eq!(policy["defaultAllow"], false);
    assert!(policy["kubeConfigFile"]
        .as_str()
        .is_some_and(|p| p.ends_with("image-policy.kubeconfig")));
}
