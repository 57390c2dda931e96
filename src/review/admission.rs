//! `AdmissionReview`, admission.k8s.io v1 and v1beta1 (identical but for the apiVersion string).

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The two AdmissionReview versions the apiserver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionApiVersion {
    /// `admission.k8s.io/v1`
    #[serde(rename = "admission.k8s.io/v1")]
    V1,
    /// `admission.k8s.io/v1beta1`
    #[serde(rename = "admission.k8s.io/v1beta1")]
    V1beta1,
}

/// The only kind this envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionKind {
    /// `AdmissionReview`
    AdmissionReview,
}

/// An AdmissionReview; `O` is how the object is decoded (a projection on the hot path, raw JSON
/// for round trips).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionReview<'a, O> {
    /// Echoed in the answer.
    pub api_version: AdmissionApiVersion,
    /// Echoed in the answer.
    pub kind: AdmissionKind,
    /// What the apiserver asks.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest<'a, O>>,
    /// What the webhook answers.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse<'a>>,
}

/// `request`: the operation under review.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct AdmissionRequest<'a, O> {
    /// Echoed as `response.uid`.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The object's group, version and kind.
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    /// The resource being written.
    #[serde(borrow)]
    pub resource: GroupVersionResource<'a>,
    /// e.g. `ephemeralcontainers`, `status`.
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_str"
    )]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The kind as the client sent it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<GroupVersionKind<'a>>,
    /// The resource as the client sent it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub request_resource: Option<GroupVersionResource<'a>>,
    /// The subresource as the client sent it.
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_str"
    )]
    pub request_sub_resource: Option<Cow<'a, str>>,
    /// The object's name (may be empty on CREATE with generateName).
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_str"
    )]
    pub name: Option<Cow<'a, str>>,
    /// The namespace; absent for cluster-scoped objects.
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_str"
    )]
    pub namespace: Option<Cow<'a, str>>,
    /// CREATE, UPDATE, DELETE or CONNECT (any other string is kept and not evaluated).
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
    /// The requesting user; not read by decisions.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<&'a RawValue>,
    /// The object as it will be stored (absent for DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<O>,
    /// The object before an UPDATE or DELETE, decoded like `object`: on UPDATE, policies judge
    /// only what changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<O>,
    /// True when the apiserver will not persist the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The operation's options (CreateOptions, ...); not read by decisions.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub options: Option<&'a RawValue>,
}

/// A group, version and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionKind<'a> {
    /// "" for the core group.
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    /// e.g. `v1`.
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    /// e.g. `Pod`.
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
}

/// A group, version and resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionResource<'a> {
    /// "" for the core group.
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    /// e.g. `v1`.
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    /// e.g. `pods`.
    #[serde(borrow, default)]
    pub resource: Cow<'a, str>,
}

/// `response`: the webhook's answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse<'a> {
    /// The request's uid; the apiserver rejects an answer without it.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The decision.
    pub allowed: bool,
    /// Why, when refused (the message is shown to the user).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status<'a>>,
    /// Base64 of a JSON Patch (mutating webhooks only).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Cow<'a, str>>,
    /// `JSONPatch`, with `patch` and only with it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<Cow<'a, str>>,
    /// Recorded in the audit log under `<webhook name>/<key>`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    /// Shown to the client (kubectl prints them).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<Cow<'a, str>>>,
}

/// A `metav1.Status`, as carried in `response.status`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Status<'a> {
    /// List metadata; unused by gatehouse.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
    /// `Success` or `Failure`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Cow<'a, str>>,
    /// Human-readable; the apiserver prefixes it with the webhook's name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    /// Machine-readable reason.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    /// Details; unused by gatehouse.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub details: Option<&'a RawValue>,
    /// The HTTP code the apiserver reports to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

/// The operations an admission request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
    /// Anything else: not evaluated, allowed.
    Other,
}

impl Operation {
    /// Parses the wire string; unknown strings are `Other`.
    pub fn parse(s: &str) -> Self {
        match s {
            "CREATE" => Self::Create,
            "UPDATE" => Self::Update,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Other => "OTHER",
        }
    }
}

use super::object::{MetaOnly, ObjectOnly, ObjectView, PodLocation};
use super::{decode, DecodeError};

const WHAT: &str = "AdmissionReview";

impl<'a, O> AdmissionRequest<'a, O> {
    /// The same request with its object converted.
    pub fn map_object<P>(self, f: impl Fn(O) -> P) -> AdmissionRequest<'a, P> {
        AdmissionRequest {
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            request_kind: self.request_kind,
            request_resource: self.request_resource,
            request_sub_resource: self.request_sub_resource,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            user_info: self.user_info,
            object: self.object.map(&f),
            old_object: self.old_object.map(&f),
            dry_run: self.dry_run,
            options: self.options,
        }
    }
}

/// What decisions read of an AdmissionReview, from either decode path.
#[derive(Debug, PartialEq)]
pub struct Admission<'a> {
    /// Echoed in the answer.
    pub api_version: AdmissionApiVersion,
    /// The request.
    pub request: RequestView<'a>,
}

/// The fields of `request` that decisions and answers read; the rest is skipped.
#[derive(Debug, Default, PartialEq)]
pub struct RequestView<'a> {
    /// Echoed as `response.uid`.
    pub uid: Cow<'a, str>,
    /// The object's group, version and kind.
    pub kind: GroupVersionKind<'a>,
    /// e.g. `ephemeralcontainers`.
    pub sub_resource: Option<Cow<'a, str>>,
    /// The object's name.
    pub name: Option<Cow<'a, str>>,
    /// The namespace.
    pub namespace: Option<Cow<'a, str>>,
    /// CREATE, UPDATE, DELETE, CONNECT, or anything else (not evaluated).
    pub operation: Cow<'a, str>,
    /// True when the apiserver will not persist the result.
    pub dry_run: Option<bool>,
    /// The projected object (absent for DELETE).
    pub object: Option<ObjectView<'a>>,
    /// The projected object before an UPDATE.
    pub old_object: Option<ObjectView<'a>>,
}

impl<'a> From<AdmissionRequest<'a, ObjectView<'a>>> for RequestView<'a> {
    fn from(r: AdmissionRequest<'a, ObjectView<'a>>) -> Self {
        Self {
            uid: r.uid,
            kind: r.kind,
            sub_resource: r.sub_resource,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            dry_run: r.dry_run,
            object: r.object,
            old_object: r.old_object,
        }
    }
}

/// How an AdmissionReview decoded.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// The object projected onto what decisions read.
    Projected(Admission<'a>),
    /// A sound envelope around an object that is not what its kind requires (a Pod whose spec
    /// is not a PodSpec, `metadata` that is not an object). Each route decides what that means:
    /// a 400 on /validate, an unpatched answer on /mutate.
    Malformed {
        /// Echoed in the answer.
        api_version: AdmissionApiVersion,
        /// The request, without its object.
        request: RequestView<'a>,
        /// What is wrong with the object.
        error: DecodeError,
    },
}

/// Decodes an AdmissionReview in one pass, projecting the object onto what decisions read.
///
/// Further passes happen only for a malformed object: a custom resource's `spec` may have any
/// shape (say `containers: "x"`), so the review is decoded again reading only metadata, which
/// is well-formed for every Kubernetes object; for kinds whose pods policies read, or when even
/// metadata is malformed, the envelope alone is decoded and the object reported as malformed.
/// A malformed envelope (not JSON, no uid, wrong apiVersion) is an error.
pub fn decode_review(body: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    // ObjectOnly: serde would otherwise read a struct from an array, field by field.
    let first = match decode::<AdmissionReview<'_, ObjectOnly<ObjectView<'_>>>>(WHAT, body) {
        Ok(review) => {
            return into_admission(AdmissionReview {
                api_version: review.api_version,
                kind: review.kind,
                request: review.request.map(|r| r.map_object(|o| o.0)),
                response: review.response,
            })
            .map(Decoded::Projected)
        }
        Err(e) => e,
    };
    if let Ok(review) = decode::<AdmissionReview<'_, ObjectOnly<MetaOnly<'_>>>>(WHAT, body) {
        let custom = review
            .request
            .as_ref()
            .is_some_and(|r| PodLocation::for_kind(&r.kind.group, &r.kind.kind).is_none());
        if custom {
            return into_admission(AdmissionReview {
                api_version: review.api_version,
                kind: review.kind,
                request: review.request.map(|r| {
                    r.map_object(|o| ObjectView {
                        metadata: o.0.metadata,
                        spec: None,
                    })
                }),
                response: review.response,
            })
            .map(Decoded::Projected);
        }
    }
    let review = decode::<AdmissionReview<'_, serde::de::IgnoredAny>>(WHAT, body)?;
    let request = review.request.ok_or(DecodeError::Missing {
        what: WHAT,
        field: "request",
    })?;
    let error = match first {
        DecodeError::Json { source, .. } => DecodeError::Object {
            what: WHAT,
            kind: request.kind.kind.to_string(),
            source,
        },
        other => other,
    };
    let mut request: RequestView<'_> = request.map_object(|_| ObjectView::default()).into();
    request.object = None;
    request.old_object = None;
    Ok(Decoded::Malformed {
        api_version: review.api_version,
        request,
        error,
    })
}

/// Decodes an AdmissionReview for a decision: a malformed object is an error (a 400).
pub fn decode_admission(body: &[u8]) -> Result<Admission<'_>, DecodeError> {
    match decode_review(body)? {
        Decoded::Projected(admission) => Ok(admission),
        Decoded::Malformed { error, .. } => Err(error),
    }
}

fn into_admission<'a>(
    review: AdmissionReview<'a, ObjectView<'a>>,
) -> Result<Admission<'a>, DecodeError> {
    let request = review.request.ok_or(DecodeError::Missing {
        what: WHAT,
        field: "request",
    })?;
    Ok(Admission {
        api_version: review.api_version,
        request: request.into(),
    })
}

/// Encodes an answer in the request's version, with `uid` echoed, into a buffer sized for it.
pub fn encode_response(
    api_version: AdmissionApiVersion,
    response: AdmissionResponse<'_>,
) -> Result<Bytes, serde_json::Error> {
    let capacity = response.encoded_len_hint();
    super::encode(
        &AdmissionReview::<'_, &RawValue> {
            api_version,
            kind: AdmissionKind::AdmissionReview,
            request: None,
            response: Some(response),
        },
        capacity,
    )
}

impl AdmissionResponse<'_> {
    /// About how long the whole encoded AdmissionReview is: its strings plus the JSON around
    /// them (escapes make it longer, which only costs one reallocation).
    fn encoded_len_hint(&self) -> usize {
        let strings = |list: &mut dyn Iterator<Item = usize>| list.map(|n| n + 8).sum::<usize>();
        let status = self.status.as_ref().map_or(0, |s| {
            96 + s.message.as_ref().map_or(0, |m| m.len())
                + s.reason.as_ref().map_or(0, |r| r.len())
        });
        128 + self.uid.len()
            + status
            + self.patch.as_ref().map_or(0, |p| p.len() + 48)
            + self
                .warnings
                .as_ref()
                .map_or(0, |w| 16 + strings(&mut w.iter().map(|w| w.len())))
            + self.audit_annotations.as_ref().map_or(0, |a| {
                24 + strings(&mut a.iter().map(|(k, v)| k.len() + v.len() + 3))
            })
    }
}
