//! The foundation over real TLS: routes, statuses, both HTTP versions, the latest-tag decision.

mod common;

use common::{pod_review, TestServer, BOTH};

#[tokio::test]
async fn healthz_over_both_protocols() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let answer = client.get("/healthz").await;
        assert_eq!(answer.status, 200, "{proto:?}");
        assert_eq!(answer.json()["status"], "ok");
        let answer = client.get("/readyz").await;
        assert_eq!(answer.status, 200, "{proto:?}");
    }
}

#[tokio::test]
async fn latest_tag_denied_on_validate_both_versions() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
            let body = pod_review(version, "uid-1", "default", &["nginx"]);
            let answer = client.post_json("/validate?timeout=10s", body).await;
            assert_eq!(answer.status, 200);
            let json = answer.json();
            assert_eq!(json["apiVersion"], version);
            assert_eq!(json["kind"], "AdmissionReview");
            assert_eq!(json["response"]["uid"], "uid-1");
            assert_eq!(json["response"]["allowed"], false);
            let message = json["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(
                message.contains("Images using latest tag are not allowed"),
                "{message}"
            );
            assert!(message.contains("nginx"), "{message}");
            assert!(json["response"].get("patch").is_none());
        }
    }
}
