//! `POST /mutate`: a mutating AdmissionReview → allowed, with a JSON Patch when the configured
//! mutations change the object. Never a denial: refusing is /validate's job.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::de::IgnoredAny;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};
use crate::mutation::{patch, Mutations, Outcome, Target};
use crate::review::admission::{
    encode_response, Admission, AdmissionApiVersion, AdmissionRequest, AdmissionResponse,
    AdmissionReview, Operation, RequestView,
};
use crate::review::object::{MetaOnly, ObjectOnly, ObjectView, PodLocation};
use crate::review::{decode, DecodeError};

const WHAT: &str = "AdmissionReview";

/// Decodes, mutates and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    let bytes = answer(&app.mutations, body)?;
    Ok(json_response(StatusCode::OK, Bytes::from(bytes)))
}

/// One mutation decision without HTTP: the AdmissionReview body in, the answer's body out.
pub fn answer(mutations: &Mutations, body: &[u8]) -> Result<Vec<u8>, Rejection> {
    match decode_mutable(body)? {
        Decoded::Mutable(admission) => {
            let request = &admission.request;
            let outcome = mutations.mutate(&target(request));
            let response = admission_response(&request.uid, outcome)?;
            Ok(encode_response(admission.api_version, response)?)
        }
        Decoded::Unpatchable {
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
            let response = AdmissionResponse {
                uid: Cow::Borrowed(&request.uid),
                allowed: true,
                warnings,
                ..AdmissionResponse::default()
            };
            Ok(encode_response(api_version, response)?)
        }
    }
}

/// A review as /mutate reads it.
enum Decoded<'a> {
    /// The object projected, every part a patch may touch known to be a JSON object.
    Mutable(Admission<'a>),
    /// A well-formed envelope whose object no patch can safely address (say, `metadata` is a
    /// string): answered allowed, unpatched, with a warning, never a 500 or a broken patch.
    Unpatchable {
        api_version: AdmissionApiVersion,
        request: AdmissionRequest<'a, IgnoredAny>,
        error: DecodeError,
    },
}

/// Decodes in one pass on the usual path; further passes only for a malformed object.
///
/// Unlike `decode_admission`, the object itself must be a JSON object, and a malformed object
/// is not a 400: the envelope is fine, so the apiserver deserves an answer it can use.
fn decode_mutable(body: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let first = match decode::<AdmissionReview<'_, ObjectOnly<ObjectView<'_>>>>(WHAT, body) {
        Ok(review) => {
            return Ok(Decoded::Mutable(Admission {
                api_version: review.api_version,
                request: required(review.request)?.map_object(|o| o.0).into(),
            }))
        }
        Err(e) => e,
    };
    // A custom resource's spec may have any shape; its metadata is still patchable.
    if let Ok(review) = decode::<AdmissionReview<'_, ObjectOnly<MetaOnly<'_>>>>(WHAT, body) {
        if let Some(request) = review.request {
            if PodLocation::for_kind(&request.kind.group, &request.kind.kind).is_none() {
                return Ok(Decoded::Mutable(Admission {
                    api_version: review.api_version,
                    request: request
                        .map_object(|o| ObjectView {
                            metadata: o.0.metadata,
                            spec: None,
                        })
                        .into(),
                }));
            }
        }
    }
    // A malformed envelope (no uid, wrong apiVersion, not JSON) is a 400, as on every route.
    let review = decode::<AdmissionReview<'_, IgnoredAny>>(WHAT, body)?;
    let request = required(review.request)?;
    let error = match first {
        DecodeError::Json { source, .. } => DecodeError::Object {
            what: WHAT,
            kind: request.kind.kind.to_string(),
            source,
        },
        other => other,
    };
    Ok(Decoded::Unpatchable {
        api_version: review.api_version,
        request,
        error,
    })
}

fn required<T>(request: Option<T>) -> Result<T, DecodeError> {
    request.ok_or(DecodeError::Missing {
        what: WHAT,
        field: "request",
    })
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
