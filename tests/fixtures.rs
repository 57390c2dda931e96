//! Every upstream fixture decodes into gatehouse's wire types and re-encodes to the same JSON:
//! no field dropped or misnamed.

mod common;

use common::fixture;
use gatehouse::review::admission::{decode_admission, AdmissionReview};
use gatehouse::review::image::ImageReview;
use gatehouse::review::token::TokenReview;
use serde_json::value::RawValue;
use serde_json::Value;

fn same_json(original: &[u8], encoded: &[u8], name: &str) {
    let a: Value = serde_json::from_slice(original).expect("fixture JSON");
    let b: Value = serde_json::from_slice(encoded).expect("encoded JSON");
    assert_eq!(a, b, "{name} did not round-trip");
}

#[test]
fn admission_reviews_round_trip() {
    for name in [
        "admission.k8s.io.v1.AdmissionReview.json",
        "admission.k8s.io.v1beta1.AdmissionReview.json",
    ] {
        let bytes = fixture(name);
        let review: AdmissionReview<'_, &RawValue> = serde_json::from_slice(&bytes).expect(name);
        let request = review.request.as_ref().expect("request");
        assert_eq!(request.uid, "uidValue");
        assert_eq!(request.operation, "operationValue");
        assert_eq!(request.kind.kind, "kindValue");
        let response = review.response.as_ref().expect("response");
        assert_eq!(response.uid, "uidValue");
        assert_eq!(response.warnings.as_deref().map(<[_]>::len), Some(1));
        same_json(&bytes, &serde_json::to_vec(&review).expect("encode"), name);
    }
}

#[test]
fn admission_reviews_project_for_decisions() {
    for name in [
        "admission.k8s.io.v1.AdmissionReview.json",
        "admission.k8s.io.v1beta1.AdmissionReview.json",
    ] {
        let bytes = fixture(name);
        let admission = decode_admission(&bytes).expect(name);
        assert_eq!(admission.request.uid, "uidValue");
        let object = admission.request.object.as_ref().expect("object");
        // CustomType has no metadata and a spec of its own shape.
        assert!(object.metadata.labels.is_none());
    }
}

#[test]
fn token_reviews_round_trip() {
    for name in [
        "authentication.k8s.io.v1.TokenReview.json",
        "authentication.k8s.io.v1beta1.TokenReview.json",
    ] {
        let bytes = fixture(name);
        let review: TokenReview<'_> = serde_json::from_slice(&bytes).expect(name);
        let spec = review.spec.as_ref().expect("spec");
        assert_eq!(spec.token.0, "tokenValue");
        assert_eq!(format!("{:?}", spec.token), "<redacted>");
        assert_eq!(spec.audiences, ["audiencesValue"]);
        let status = review.status.as_ref().expect("status");
        assert_eq!(
            status.user.as_ref().expect("user").username,
            "usernameValue"
        );
        same_json(&bytes, &serde_json::to_vec(&review).expect("encode"), name);
    }
}

#[test]
fn image_review_round_trips() {
    let name = "imagepolicy.k8s.io.v1alpha1.ImageReview.json";
    let bytes = fixture(name);
    let review: ImageReview<'_> = serde_json::from_slice(&bytes).expect(name);
    let spec = review.spec.as_ref().expect("spec");
    assert_eq!(spec.containers[0].image, "imageValue");
    assert_eq!(spec.namespace, "namespaceValue");
    same_json(&bytes, &serde_json::to_vec(&review).expect("encode"), name);
}
