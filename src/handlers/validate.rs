//! `POST /validate`: a validating AdmissionReview → allow, deny or warn. Never a patch.

use std::borrow::Cow;
use std::collections::HashSet;

use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::policy::{Decision, ImageUse, Subject};
use crate::review::admission::{
    decode_admission, encode_response, AdmissionResponse, Operation, RequestView, Status,
};
use crate::review::object::{ImageSource, PodLocation, PodView};
use crate::review::StrMap;

static NO_LABELS: StrMap<'static> = StrMap::new();

/// Decodes, decides and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    let admission = decode_admission(body)?;
    let request = &admission.request;
    let subject = subject(request);
    let decision = super::decide(app, &subject, "validate").await;
    let decision = super::gatekeeper(app, decision, "validate", subject.namespace, || {
        crate::gatekeeper::Review::from_admission(body)
    })?;
    let response = admission_response(&request.uid, &decision);
    let bytes = encode_response(admission.api_version, response)?;
    crate::outcome::decided(super::decided(&decision));
    Ok(json_response(StatusCode::OK, bytes))
}

/// Projects a request onto what policies read.
///
/// Every image the pod makes the node pull is judged: containers', init containers', ephemeral
/// containers' and image volumes'. On UPDATE only what changed is judged: images that were not
/// already in the old object (same list, same container or volume name, same image), and labels
/// only when they changed. Otherwise tightening a policy would refuse every later update
/// of existing pods (a controller removing a finalizer, `kubectl label`) and leave them stuck.
/// (The ImagePolicyWebhook plugin cannot do this: an ImageReview carries no oldObject.)
pub fn subject<'a>(request: &'a RequestView<'a>) -> Subject<'a> {
    let object = request.object.as_ref();
    let operation = Operation::parse(&request.operation);
    let old = request
        .old_object
        .as_ref()
        .filter(|_| operation == Operation::Update);
    let location = PodLocation::for_kind(&request.kind.group, &request.kind.kind);
    let pod = object.zip(location).map(|(o, l)| o.pod(l));
    let old_pod = old.zip(location).map(|(o, l)| o.pod(l));
    // Indexed once: one lookup per new image keeps UPDATE linear in the two objects.
    let old_images = old_images(old_pod.as_ref());
    let images = match pod.as_ref().and_then(|p| p.spec) {
        Some(spec) => spec
            .images()
            .filter_map(|slot| {
                slot.image.map(|image| ImageUse {
                    name: slot.name,
                    source: slot.source,
                    image,
                })
            })
            .filter(|u| !old_images.contains(&(u.source, u.name, u.image)))
            .collect(),
        None => Vec::new(),
    };
    // Break glass may sit on the object or, for workloads, on the pods it will create.
    let mut annotations = Vec::new();
    if let Some(a) = object.and_then(|o| o.metadata.annotations.as_ref()) {
        annotations.push(a);
    }
    if let Some(a) = pod
        .as_ref()
        .filter(|p| p.location != PodLocation::Pod)
        .and_then(|p| p.metadata)
        .and_then(|m| m.annotations.as_ref())
    {
        annotations.push(a);
    }
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| object.and_then(|o| o.metadata.namespace.as_deref()))
        .unwrap_or("");
    // Absent or null labels are an empty map: label rules still apply (unlike an ImageReview).
    let labels = object
        .and_then(|o| o.metadata.labels.as_ref())
        .unwrap_or(&NO_LABELS);
    let old_labels = old.map(|o| o.metadata.labels.as_ref().unwrap_or(&NO_LABELS));
    // A workload's pods carry its template's labels; judged apart from the object's, and on
    // UPDATE only when they changed.
    let has_template = location.is_some_and(|l| l != PodLocation::Pod);
    let template_labels = pod.as_ref().filter(|_| has_template).map(|p| pod_labels(p));
    let old_template_labels = old_pod
        .as_ref()
        .filter(|_| has_template)
        .map(|p| pod_labels(p));
    Subject {
        operation,
        kind: &request.kind.kind,
        namespace,
        images,
        // Unchanged labels on UPDATE are not judged again.
        labels: (old_labels != Some(labels)).then_some(labels),
        has_template,
        template_labels: template_labels.filter(|t| old_template_labels != Some(*t)),
        annotations,
    }
}

/// A pod's labels; absent or null (or no template at all) is an empty map, never a pass.
fn pod_labels<'v>(pod: &PodView<'v, '_>) -> &'v StrMap<'v> {
    pod.metadata
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&NO_LABELS)
}

/// The images the old pod already pulled, by list, container or volume name, and image.
fn old_images<'v>(old: Option<&PodView<'v, '_>>) -> HashSet<(ImageSource, &'v str, &'v str)> {
    old.and_then(|p| p.spec)
        .map(|spec| {
            spec.images()
                .filter_map(|slot| slot.image.map(|image| (slot.source, slot.name, image)))
                .collect()
        })
        .unwrap_or_default()
}

/// The `response` for a decision, echoing `uid`.
pub fn admission_response<'a>(uid: &'a str, decision: &'a Decision) -> AdmissionResponse<'a> {
    let status = decision.message.as_deref().map(|message| Status {
        status: Some(Cow::Borrowed("Failure")),
        message: Some(Cow::Borrowed(message)),
        reason: Some(Cow::Borrowed("Forbidden")),
        code: Some(403),
        ..Status::default()
    });
    let warnings = (!decision.warnings.is_empty()).then(|| {
        decision
            .warnings
            .iter()
            .map(|w| Cow::Borrowed(w.as_str()))
            .collect()
    });
    let audit_annotations = (!decision.audit.is_empty()).then(|| {
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
