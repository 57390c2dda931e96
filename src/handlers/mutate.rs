//! `POST /mutate`: a mutating AdmissionReview → allowed, with a JSON Patch when the configured
//! mutations change the object. Never a denial: refusing is /validate's job.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::metrics;
use crate::mutation::{patch, Mutations, Outcome, Target};
use crate::review::admission::{
    decode_review, encode_response, AdmissionResponse, Decoded, Operation, RequestView,
};

/// Decodes, mutates and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    let (bytes, decided) = decide(&app.mutations, body)?;
    crate::outcome::decided(decided);
    Ok(json_response(StatusCode::OK, bytes))
}

/// One mutation decision without HTTP: the AdmissionReview body in, the answer's body out.
pub fn answer(mutations: &Mutations, body: &[u8]) -> Result<Bytes, Rejection> {
    decide(mutations, body).map(|(bytes, _)| bytes)
}

/// [`answer`], and the decision for the metrics.
fn decide(mutations: &Mutations, body: &[u8]) -> Result<(Bytes, metrics::Decision), Rejection> {
    // A malformed object is not a 400 here: the envelope is fine, so the apiserver gets an
    // answer it can use (allowed, unpatched, with a warning), never a 500 or a broken patch.
    match decode_review(body)? {
        Decoded::Projected(admission) => {
            let request = &admission.request;
            let outcome = mutations.mutate(&target(request));
            let decided = if !outcome.patch.is_empty() {
                metrics::Decision::Patched
            } else if !outcome.warnings.is_empty() {
                metrics::Decision::Warned
            } else {
                metrics::Decision::Allowed
            };
            let response = admission_response(&request.uid, outcome)?;
            Ok((encode_response(admission.api_version, response)?, decided))
        }
        Decoded::Malformed {
            api_version,
            request,
            error,
        } => {
            let namespace = request.namespace.as_deref().unwrap_or("");
            let operation = Operation::parse(&request.operation);
            // Not ours to comment on when no mutation would have touched it.
            let warnings = mutations
                .in_scope(operation, &request.kind.kind, namespace)
                .then(|| {
                    vec![Cow::Owned(format!(
                        "gatehouse: object not mutated, it cannot be patched: {error}"
                    ))]
                });
            let decided = if warnings.is_some() {
                metrics::Decision::Warned
            } else {
                metrics::Decision::Allowed
            };
            let response = AdmissionResponse {
                uid: Cow::Borrowed(&request.uid),
                allowed: true,
                warnings,
                ..AdmissionResponse::default()
            };
            Ok((encode_response(api_version, response)?, decided))
        }
    }
}

/// Projects a request onto what mutations read.
fn target<'v, 'a>(request: &'v RequestView<'a>) -> Target<'v, 'a> {
    let object = request.object.as_ref();
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| object.and_then(|o| o.metadata.namespace.as_deref()))
        .unwrap_or("");
    Target {
        operation: Operation::parse(&request.operation),
        group: &request.kind.group,
        kind: &request.kind.kind,
        namespace,
        sub_resource: request.sub_resource.as_deref(),
        object,
        old_object: request.old_object.as_ref(),
    }
}

/// The `response`: always allowed; `patch` and `patchType` together or not at all.
fn admission_response<'a>(
    uid: &'a str,
    outcome: Outcome<'_>,
) -> Result<AdmissionResponse<'a>, serde_json::Error> {
    let Outcome {
        patch: ops,
        audit,
        warnings,
    } = outcome;
    let patch = if ops.is_empty() {
        None
    } else {
        Some(Cow::Owned(patch::encode(&ops)?))
    };
    let patch_type = patch.as_ref().map(|_| Cow::Borrowed("JSONPatch"));
    let audit_annotations = (!audit.is_empty()).then(|| {
        audit
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v)))
            .collect()
    });
    let warnings = (!warnings.is_empty()).then(|| warnings.into_iter().map(Cow::Owned).collect());
    Ok(AdmissionResponse {
        uid: Cow::Borrowed(uid),
        allowed: true,
        patch,
        patch_type,
        audit_annotations,
        warnings,
        ..AdmissionResponse::default()
    })
}
