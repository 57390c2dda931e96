//! `POST /image_policy`: an ImageReview from the ImagePolicyWebhook admission plugin.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::policy::{ImageUse, Subject};
use crate::review::admission::Operation;
use crate::review::image::{ImageReview, ImageReviewKind, ImageReviewStatus};
use crate::review::object::ContainerList;
use crate::review::{decode, DecodeError};

const WHAT: &str = "ImageReview";

/// Decodes, decides and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    let review: ImageReview<'_> = decode(WHAT, body)?;
    let spec = review.spec.as_ref().ok_or(DecodeError::Missing {
        what: WHAT,
        field: "spec",
    })?;
    let subject = Subject {
        // The plugin runs on pod CREATE (and ephemeral container updates); it says which in neither case.
        operation: Operation::Create,
        kind: "Pod",
        namespace: &spec.namespace,
        images: spec
            .containers
            .iter()
            .map(|c| ImageUse {
                container: "",
                list: ContainerList::Containers,
                image: &c.image,
            })
            .collect(),
        labels: None,
        annotations: vec![&spec.annotations],
    };
    let decision = super::decide(app, &subject, "image_policy").await;
    let decision = super::gatekeeper(app, decision, "image_policy", &spec.namespace, || {
        Ok(crate::gatekeeper::Review::from_image_review(spec))
    })?;
    let answer = ImageReview {
        api_version: review.api_version,
        kind: ImageReviewKind::ImageReview,
        metadata: None,
        spec: None,
        status: Some(ImageReviewStatus {
            allowed: decision.allowed(),
            reason: decision.message().map(Cow::Owned),
            audit_annotations: (!decision.audit.is_empty()).then(|| {
                decision
                    .audit
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect()
            }),
        }),
    };
    let bytes = serde_json::to_vec(&answer)?;
    Ok(json_response(StatusCode::OK, Bytes::from(bytes)))
}
