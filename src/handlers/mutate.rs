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
    decode_review, encode_response, AdmissionApiVersion, AdmissionResponse, Decoded, Operation,
    RequestView,
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
            Ok((
                encode_answer(admission.api_version, &request.uid, &outcome)?,
                decided,
            ))
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

/// The answer: the AdmissionReview around an allowed `response` with the outcome's patch,
/// audit annotations and warnings, written as `serde_json` writes [`AdmissionResponse`] (a test
/// holds the two to the same bytes) into one buffer sized for it. The patch's base64 goes in
/// as it is encoded: its alphabet needs no escaping, so it is neither copied into a `String`
/// first nor scanned for escapes.
fn encode_answer(
    api_version: AdmissionApiVersion,
    uid: &str,
    outcome: &Outcome<'_>,
) -> Result<Bytes, serde_json::Error> {
    let patch = if outcome.patch.is_empty() {
        None
    } else {
        Some(patch::to_json(&outcome.patch)?)
    };
    let strings = |list: &mut dyn Iterator<Item = usize>| list.map(|n| n + 8).sum::<usize>();
    let capacity = 128
        + uid.len()
        + patch
            .as_ref()
            .map_or(0, |p| patch::base64_len(p.len()) + 40)
        + strings(&mut outcome.audit.iter().map(|(k, v)| k.len() + v.len()))
        + strings(&mut outcome.warnings.iter().map(String::len));
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(br#"{"apiVersion":"#);
    serde_json::to_writer(&mut out, &api_version)?;
    out.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
    serde_json::to_writer(&mut out, uid)?;
    out.extend_from_slice(br#","allowed":true"#);
    if let Some(json) = patch {
        out.extend_from_slice(br#","patch":""#);
        patch::append_base64(&json, &mut out)?;
        out.extend_from_slice(br#"","patchType":"JSONPatch""#);
    }
    if !outcome.audit.is_empty() {
        out.extend_from_slice(br#","auditAnnotations":{"#);
        // In key order, as a map serialises (for a key given twice, its last value).
        let mut last: Option<&str> = None;
        let mut first = true;
        while let Some((key, value)) = outcome
            .audit
            .iter()
            .rev()
            .filter(|(key, _)| last.is_none_or(|last| *key > last))
            .min_by_key(|(key, _)| *key)
        {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, key)?;
            out.push(b':');
            serde_json::to_writer(&mut out, value)?;
            last = Some(key);
        }
        out.push(b'}');
    }
    if !outcome.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        serde_json::to_writer(&mut out, &outcome.warnings)?;
    }
    out.extend_from_slice(b"}}");
    // At its exact length `Bytes` adopts the allocation (see `review::encode`).
    Ok(Bytes::from(out.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation::patch::{Op, PatchOp, PatchValue};
    use crate::review::admission::encode_response;
    use std::collections::BTreeMap;

    /// The answer as the shared wire types write it: the reference for [`encode_answer`].
    fn reference(api_version: AdmissionApiVersion, uid: &str, outcome: &Outcome<'_>) -> Bytes {
        let patch = (!outcome.patch.is_empty()).then(|| {
            let json = serde_json::to_vec(&outcome.patch).expect("patch");
            Cow::Owned(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                json,
            ))
        });
        let response = AdmissionResponse {
            uid: Cow::Borrowed(uid),
            allowed: true,
            patch_type: patch.as_ref().map(|_| Cow::Borrowed("JSONPatch")),
            patch,
            audit_annotations: (!outcome.audit.is_empty()).then(|| {
                outcome
                    .audit
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(v.as_str())))
                    .collect::<BTreeMap<_, _>>()
            }),
            warnings: (!outcome.warnings.is_empty()).then(|| {
                outcome
                    .warnings
                    .iter()
                    .map(|w| Cow::Borrowed(w.as_str()))
                    .collect()
            }),
            ..AdmissionResponse::default()
        };
        encode_response(api_version, response).expect("encode")
    }

    /// Whatever the outcome holds (nothing, a patch, audit notes in any order or repeated,
    /// warnings, strings that need escaping), the answer is byte for byte the wire types'.
    #[test]
    fn answers_are_the_wire_types_bytes() {
        let nasty = "q\"b\\s\u{1}é\n";
        let op = |path: &str| PatchOp {
            op: Op::Replace,
            path: path.to_owned(),
            value: PatchValue::String(Cow::Borrowed(nasty)),
        };
        let outcomes = [
            Outcome::default(),
            Outcome {
                patch: vec![op("/spec/containers/0/image"), op("/metadata/labels/a")],
                audit: vec![
                    ("mutations", "a, b".to_owned()),
                    ("image-rewrites", nasty.to_owned()),
                ],
                warnings: vec![nasty.to_owned(), "second".to_owned()],
            },
            Outcome {
                patch: Vec::new(),
                audit: vec![
                    ("b", "1".to_owned()),
                    ("a", "2".to_owned()),
                    ("c", "3".to_owned()),
                    ("a", "4".to_owned()),
                ],
                warnings: vec!["only".to_owned()],
            },
            Outcome {
                patch: vec![op("/metadata")],
                audit: Vec::new(),
                warnings: Vec::new(),
            },
        ];
        for version in [AdmissionApiVersion::V1, AdmissionApiVersion::V1beta1] {
            for uid in ["705ab4f5-6393-11e8-b7cc-42010a800002", "", nasty] {
                for outcome in &outcomes {
                    let written = encode_answer(version, uid, outcome).expect("encode");
                    assert_eq!(
                        String::from_utf8_lossy(&written),
                        String::from_utf8_lossy(&reference(version, uid, outcome))
                    );
                }
            }
        }
    }
}
