//! The foundation over real TLS: routes, statuses, both HTTP versions, the latest-tag decision,
//! and the wire examples in tests/data/wire.

mod common;

use bytes::Bytes;
use common::{
    assert_shape_within, image_review, pod_review, raw_http1, wire_example, Proto, TestServer, BOTH,
};
use http::Method;
use http_body_util::Full;

const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

#[tokio::test]
async fn healthz_and_readyz_over_both_protocols() {
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
async fn latest_tag_denied_on_validate_in_both_versions() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in [V1, V1BETA1] {
            for image in ["nginx", "nginx:latest", "docker.io/library/nginx"] {
                let body = pod_review(version, "uid-1", "default", &[image]);
                let answer = client.post_json("/validate?timeout=10s", body).await;
                assert_eq!(answer.status, 200);
                let json = answer.json();
                assert_eq!(json["apiVersion"], version);
                assert_eq!(json["kind"], "AdmissionReview");
                assert_eq!(json["response"]["uid"], "uid-1");
                assert_eq!(json["response"]["allowed"], false, "{image}");
                assert_eq!(json["response"]["status"]["code"], 403);
                let message = json["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    message.contains("Images using latest tag are not allowed"),
                    "{message}"
                );
                assert!(message.contains(image), "{message}");
                assert!(json["response"].get("patch").is_none());
            }
        }
    }
}

#[tokio::test]
async fn pinned_tags_and_digests_allowed_on_validate() {
    let server = TestServer::start("").await;
    let digest = format!("nginx@sha256:{}", "a".repeat(64));
    let tagged_digest = format!("nginx:latest@sha256:{}", "b".repeat(64));
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in [V1, V1BETA1] {
            for image in ["nginx:1.13.8", digest.as_str(), tagged_digest.as_str()] {
                let body = pod_review(version, "uid-2", "default", &[image]);
                let json = client.post_json("/validate", body).await.json();
                assert_eq!(json["apiVersion"], version);
                assert_eq!(json["response"]["uid"], "uid-2");
                assert_eq!(json["response"]["allowed"], true, "{image}: {json}");
                assert!(json["response"].get("status").is_none());
            }
        }
    }
}

#[tokio::test]
async fn every_container_list_is_checked() {
    let server = TestServer::start("").await;
    let mut client = server.client(Proto::Http1).await;
    for list in ["initContainers", "ephemeralContainers"] {
        let mut review: serde_json::Value =
            serde_json::from_str(&pod_review(V1, "u", "default", &["nginx:1.25"])).expect("json");
        review["request"]["object"]["spec"][list] =
            serde_json::json!([{"name": "sneaky", "image": "busybox"}]);
        let json = client
            .post_json("/validate", review.to_string())
            .await
            .json();
        assert_eq!(json["response"]["allowed"], false, "{list}");
        let message = json["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("sneaky") && message.contains("busybox"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn image_review_latest_denied_and_pinned_allowed() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let json = client
            .post_json(
                "/image_policy?timeout=30s",
                image_review("default", &["nginx:1.13.8", "nginx"]),
            )
            .await
            .json();
        assert_eq!(json["apiVersion"], "imagepolicy.k8s.io/v1alpha1");
        assert_eq!(json["kind"], "ImageReview");
        assert_eq!(json["status"]["allowed"], false);
        let reason = json["status"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("Images using latest tag are not allowed"),
            "{reason}"
        );
        let json = client
            .post_json("/image_policy", image_review("default", &["nginx:1.13.8"]))
            .await
            .json();
        assert_eq!(json["status"]["allowed"], true);
        assert!(json["status"].get("reason").is_none());
    }
}

#[tokio::test]
async fn delete_and_connect_are_allowed_without_evaluation() {
    let server = TestServer::start("").await;
    let mut client = server.client(Proto::Http2).await;
    for op in ["DELETE", "CONNECT", "operationValue"] {
        let mut review: serde_json::Value =
            serde_json::from_str(&pod_review(V1, "u", "default", &["nginx"])).expect("json");
        review["request"]["operation"] = op.into();
        let json = client
            .post_json("/validate", review.to_string())
            .await
            .json();
        assert_eq!(json["response"]["allowed"], true, "{op}");
    }
}

#[tokio::test]
async fn malformed_reviews_are_400_with_a_message() {
    let server = TestServer::start("").await;
    let cases: [(&str, &str, &str); 7] = [
        ("/validate", "{\"apiVersion\": ", "line 1 column"),
        (
            "/validate",
            "{\"apiVersion\":\"admission.k8s.io/v2\",\"kind\":\"AdmissionReview\"}",
            "admission.k8s.io/v2",
        ),
        (
            "/validate",
            "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}",
            "Pod",
        ),
        (
            "/validate",
            "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            "request",
        ),
        ("/validate", "[]", "AdmissionReview"),
        (
            "/image_policy",
            "{\"apiVersion\":\"imagepolicy.k8s.io/v1alpha1\",\"kind\":\"ImageReview\"}",
            "spec",
        ),
        (
            "/image_policy",
            "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\"}",
            "authentication.k8s.io/v1",
        ),
    ];
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for (path, body, needle) in cases {
            let answer = client.post_json(path, body.to_owned()).await;
            assert_eq!(answer.status, 400, "{path} {body}");
            let json = answer.json();
            assert_eq!(json["kind"], "Status");
            assert_eq!(json["code"], 400);
            let message = json["message"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{body}: {message}");
        }
    }
}

#[tokio::test]
async fn a_pod_with_a_malformed_spec_is_400_not_allowed() {
    let server = TestServer::start("").await;
    let mut review: serde_json::Value =
        serde_json::from_str(&pod_review(V1, "u", "default", &["nginx"])).expect("json");
    review["request"]["object"]["spec"]["containers"] = "nginx".into();
    let answer = server
        .client(Proto::Http1)
        .await
        .post_json("/validate", review.to_string())
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("Pod object is malformed"));
}

#[tokio::test]
async fn a_custom_resource_of_any_shape_is_allowed_without_evaluation() {
    let server = TestServer::start("").await;
    let review = serde_json::json!({
        "apiVersion": V1, "kind": "AdmissionReview",
        "request": {
            "uid": "cr", "kind": {"group": "example.com", "version": "v1", "kind": "Widget"},
            "resource": {"group": "example.com", "version": "v1", "resource": "widgets"},
            "operation": "CREATE", "userInfo": {},
            "object": {"metadata": {"name": "w"}, "spec": {"containers": "not a list", "template": 7}}
        }
    });
    let json = server
        .client(Proto::Http1)
        .await
        .post_json("/validate", review.to_string())
        .await
        .json();
    assert_eq!(json["response"]["uid"], "cr");
    assert_eq!(json["response"]["allowed"], true);
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let answer = client.post_json("/nope", "{}").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json()["code"], 404);
        // Disabled routes answer as if absent.
        assert_eq!(client.post_json("/mutate", "{}").await.status, 404);
        let answer = client.get("/validate").await;
        assert_eq!(answer.status, 405);
        assert_eq!(
            answer.headers.get("allow").map(|v| v.as_bytes()),
            Some(&b"POST"[..])
        );
        assert_eq!(answer.json()["code"], 405);
        let answer = client.post_json("/healthz", "{}").await;
        assert_eq!(answer.status, 405);
        assert_eq!(
            answer.headers.get("allow").map(|v| v.as_bytes()),
            Some(&b"GET"[..])
        );
    }
}

#[tokio::test]
async fn a_disabled_route_names_its_switch_and_an_unknown_path_does_not() {
    let server = TestServer::start("routes:\n  validate: false\n").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for (path, switch) in [
            ("/authenticate", "`routes.authenticate: true`"),
            ("/mutate", "`routes.mutate: true`"),
            ("/validate", "`routes.validate: true`"),
        ] {
            // Whatever the method: switching the route on is the first thing to fix.
            for answer in [client.post_json(path, "{}").await, client.get(path).await] {
                assert_eq!(answer.status, 404, "{proto:?} {path}");
                let json = answer.json();
                assert_eq!(json["reason"], "NotFound");
                assert_eq!(json["code"], 404);
                let message = json["message"].as_str().unwrap_or_default();
                assert!(
                    message.starts_with(&format!("no webhook at {path}")),
                    "{message}"
                );
                assert!(message.contains(switch), "{message}");
            }
        }
        let body = image_review("default", &["nginx:1.25"]);
        assert_eq!(client.post_json("/image_policy", body).await.status, 200);
        // A path gatehouse has no webhook for is a plain 404.
        let answer = client.post_json("/image-policy", "{}").await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.json()["message"], "no webhook at /image-policy");
    }
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut req = client.request(Method::POST, "/validate");
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let body = pod_review(V1, "u", "default", &["nginx:1.25"]);
            let answer = client
                .send(req.body(Full::new(Bytes::from(body))).expect("req"))
                .await;
            assert_eq!(answer.status, 415, "{content_type:?}");
            assert_eq!(answer.json()["code"], 415);
        }
        let req = client
            .request(Method::POST, "/validate")
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(pod_review(
                V1,
                "u",
                "default",
                &["nginx:1.25"],
            ))))
            .expect("req");
        assert_eq!(client.send(req).await.status, 200);
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = TestServer::start("limits:\n  max_body: 1KiB\n").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let big = pod_review(V1, "u", "default", &["nginx:1.25"; 40]);
        assert!(big.len() > 1024);
        let answer = client.post_json("/validate", big).await;
        assert_eq!(answer.status, 413, "{proto:?}");
        let json = answer.json();
        assert_eq!(json["code"], 413);
        assert!(json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_body"));
        // The connection stays usable for the next request.
        let small = pod_review(V1, "u", "default", &["nginx:1.25"]);
        assert_eq!(
            client.post_json("/validate", small).await.status,
            200,
            "{proto:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_504_at_the_deadline() {
    let server = TestServer::start("limits:\n  request_timeout: 200ms\n").await;
    let request = b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"apiVersion\"";
    let response = raw_http1(&server, request, 64 * 1024).await;
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
}

#[tokio::test]
async fn wire_examples_get_well_formed_answers() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        // (example, version, uid, allowed under the built-in latest-tag rule)
        for (name, version, uid, allowed) in [
            (
                "admission.v1.pod-create.json",
                V1,
                "3b9f2c4e-71d5-4a0b-9e8c-5d6f7a8b9c01",
                true,
            ),
            (
                "admission.v1.pod-update.json",
                V1,
                "e5a7c9d1-3b4f-4a6c-8e0d-2f4a6b8c0d1e",
                true,
            ),
            // `kubectl run --image=busybox`: implicitly :latest.
            (
                "admission.v1beta1.pod-create.json",
                V1BETA1,
                "0d2f4b6a-8c1e-4a3b-9d5f-7b9d1f3a5c7e",
                false,
            ),
            // `kubectl debug` adds busybox:1.36.1 on pods/ephemeralcontainers.
            (
                "admission.v1beta1.pod-ephemeralcontainers.json",
                V1BETA1,
                "9c1e3a5b-7d9f-4b1d-a3c5-e7f9a1b3c5d7",
                true,
            ),
        ] {
            let answer = client
                .post_json("/validate?timeout=10s", wire_example(name))
                .await;
            assert_eq!(
                answer.status,
                200,
                "{name}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            let json = answer.json();
            assert_eq!(json["apiVersion"], version, "{name}");
            assert_eq!(json["kind"], "AdmissionReview");
            assert_eq!(json["response"]["uid"], uid, "{name}");
            assert_eq!(json["response"]["allowed"], allowed, "{name}: {json}");
            assert_shape_within(&json, "admission.v1.response-denied.json");
            if !allowed {
                assert_eq!(json["response"]["status"]["code"], 403);
                let message = json["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    message.contains("\"debug\"") && message.contains("busybox"),
                    "{message}"
                );
            }
        }
        let answer = client
            .post_json(
                "/image_policy",
                wire_example("imagepolicy.v1alpha1.request.json"),
            )
            .await;
        assert_eq!(answer.status, 200);
        let json = answer.json();
        assert_eq!(json["apiVersion"], "imagepolicy.k8s.io/v1alpha1");
        assert_eq!(json["kind"], "ImageReview");
        assert_shape_within(&json, "imagepolicy.v1alpha1.response-denied.json");
        // "redis" is implicitly :latest; the pinned images alone would pass.
        assert_eq!(json["status"]["allowed"], false);
        let reason = json["status"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("\"redis\""), "{reason}");
        assert!(!reason.contains("checkout"), "{reason}");
    }
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let server = TestServer::start("").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for i in 0..50 {
            let uid = format!("uid-{i}");
            let json = client
                .post_json(
                    "/validate",
                    pod_review(V1, &uid, "default", &["nginx:1.25"]),
                )
                .await
                .json();
            assert_eq!(json["response"]["uid"], uid.as_str());
        }
    }
}

/// A peer that connects and says nothing is disconnected (whatever ALPN it offered); an idle
/// keep-alive connection that did work is kept well past that deadline.
#[tokio::test]
async fn silent_connections_close_and_idle_keep_alive_ones_stay() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start("limits:\n  handshake_timeout: 200ms\n").await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let connector =
            tokio_rustls::TlsConnector::from(common::tls_client_config(&server.ca_pem, alpn));
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        let mut buf = [0u8; 256];
        // Bounded so a regression fails instead of hanging; the server's own deadline is 400ms.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue, // h2 SETTINGS from the server
                }
            }
        })
        .await;
        assert_eq!(
            closed.ok(),
            Some(true),
            "a silent {} connection must be closed",
            String::from_utf8_lossy(alpn)
        );
    }
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let body = pod_review(V1, "k1", "default", &["nginx:1.25"]);
        assert_eq!(client.post_json("/validate", body).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let body = pod_review(V1, "k2", "default", &["nginx:1.25"]);
        assert_eq!(
            client.post_json("/validate", body).await.status,
            200,
            "{proto:?} idle keep-alive was closed"
        );
    }
}
