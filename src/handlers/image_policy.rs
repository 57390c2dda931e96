//! `POST /image_policy`: an ImageReview from the ImagePolicyWebhook admission plugin.

use std::borrow::Cow;

use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::metrics;
use crate::policy::{ImageUse, Subject};
use crate::review::admission::Operation;
use crate::review::image::{ImageReview, ImageReviewKind, ImageReviewStatus};
use crate::review::object::ImageSource;
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
        // The plugin sends pods on CREATE and UPDATE (containers and init containers) and on
        // pods/ephemeralcontainers (the ephemeral ones), never image volumes, and says which in
        // no case: every image it sends is judged.
        operation: Operation::Create,
        kind: "Pod",
        namespace: &spec.namespace,
        images: spec
            .containers
            .iter()
            .map(|c| ImageUse {
                name: "",
                source: ImageSource::Containers,
                image: &c.image,
            })
            .collect(),
        has_template: false,
        template_labels: None,
        labels: None,
        annotations: vec![&spec.annotations],
    };
    let decision = super::decide(app, &subject, "image_policy").await;
    let decision = super::gatekeeper(app, decision, "image_policy", &spec.namespace, || {
        Ok(crate::gatekeeper::Review::from_image_review(spec))
    })?;
    // An ImageReview carries no warnings: allowed or denied.
    let decided = if decision.allowed() {
        metrics::Decision::Allowed
    } else {
        metrics::Decision::Denied
    };
    let answer = ImageReview {
        api_version: review.api_version,
        kind: ImageReviewKind::ImageReview,
        metadata: None,
        spec: None,
        status: Some(ImageReviewStatus {
            allowed: decision.allowed(),
            // The same bounded message as /validate's denial.
            reason: decision.message.as_deref().map(Cow::Borrowed),
            audit_annotations: (!decision.audit.is_empty()).then(|| {
                decision
                    .audit
                    .iter()
                    .map(|note| {
                        (
                            Cow::Borrowed(note.key.as_str()),
                            Cow::Borrowed(note.value.as_str()),
                        )
                    })
                    .collect()
            }),
        }),
    };
    // The answer's strings plus the JSON around them.
    let capacity = 160
        + decision.message.as_ref().map_or(0, String::len)
        + decision
            .audit
            .iter()
            .map(|note| note.key.len() + note.value.len() + 8)
            .sum::<usize>();
    let bytes = crate::review::encode(&answer, capacity)?;
    crate::outcome::decided(decided);
    Ok(json_response(StatusCode::OK, bytes))
}
