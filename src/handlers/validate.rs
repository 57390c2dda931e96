//! `POST /validate`: a validating AdmissionReview → allow, deny or warn. Never a patch.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::policy::{Decision, ImageUse, Subject};
use crate::review::admission::{
    decode_admission, encode_response, AdmissionRequest, AdmissionResponse, Operation, Status,
};
use crate::review::object::{ObjectView, PodLocation};

/// Decodes, decides and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    let admission = decode_admission(body)?;
    let request = &admission.request;
    let subject = subject(request);
    let decision = app.policies.decide(&subject);
    let response = admission_response(&request.uid, &decision);
    let bytes = encode_response(admission.api_version, response)?;
    Ok(json_response(StatusCode::OK, Bytes::from(bytes)))
}

/// Projects a request onto what policies read.
pub fn subject<'a>(request: &'a AdmissionRequest<'a, ObjectView<'a>>) -> Subject<'a> {
    let object = request.object.as_ref();
    let location = PodLocation::for_kind(&request.kind.group, &request.kind.kind);
    let images = match (object, location) {
        (Some(object), Some(location)) => object
            .pod(location)
            .spec
            .map(|spec| {
                spec.containers()
                    .filter_map(|(list, _, c)| {
                        c.image.as_deref().map(|image| ImageUse {
                            container: &c.name,
                            list,
                            image,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| object.and_then(|o| o.metadata.namespace.as_deref()))
        .unwrap_or("");
    Subject {
        operation: Operation::parse(&request.operation),
        kind: &request.kind.kind,
        namespace,
        images,
        labels: object.and_then(|o| o.metadata.labels.as_ref()),
    }
}

/// The `response` for a decision, echoing `uid`.
pub fn admission_response<'a>(uid: &'a str, decision: &Decision) -> AdmissionResponse<'a> {
    let status = decision.message().map(|message| Status {
        status: Some(Cow::Borrowed("Failure")),
        message: Some(Cow::Owned(message)),
        reason: Some(Cow::Borrowed("Forbidden")),
        code: Some(403),
        ..Status::default()
    });
    let warnings = (!decision.warnings.is_empty()).then(|| {
        decision
            .warnings
            .iter()
            .map(|w| Cow::Owned(w.clone()))
            .collect()
    });
    let audit_annotations = (!decision.audit.is_empty()).then(|| {
        decision
            .audit
            .iter()
            .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
            .collect()
    });
    AdmissionResponse {
        uid: Cow::Borrowed(uid),
        allowed: decision.allowed(),
        status,
        warnings,
        audit_annotations,
        ..AdmissionResponse::default()
    }
}
