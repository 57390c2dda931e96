//! `ImageReview`, imagepolicy.k8s.io/v1alpha1, as sent by the ImagePolicyWebhook admission plugin.
//! No published crate has it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::StrMap;

/// The one ImageReview version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageApiVersion {
    /// `imagepolicy.k8s.io/v1alpha1`
    #[serde(rename = "imagepolicy.k8s.io/v1alpha1")]
    V1alpha1,
}

/// The only kind this envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageReviewKind {
    /// `ImageReview`
    ImageReview,
}

/// An ImageReview, request or answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReview<'a> {
    /// Echoed in the answer.
    pub api_version: ImageApiVersion,
    /// Echoed in the answer.
    pub kind: ImageReviewKind,
    /// Object metadata; not read.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
    /// The pod's images, annotations and namespace.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ImageReviewSpec<'a>>,
    /// The answer (the apiserver also sends `{"allowed": false}` in requests).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ImageReviewStatus<'a>>,
}

/// `spec`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ImageReviewSpec<'a> {
    /// Containers then init containers (or only the ephemeral ones, for that subresource).
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ImageReviewContainerSpec<'a>>,
    /// Only the pod annotations whose key contains `.image-policy.k8s.io/`.
    #[serde(
        borrow,
        default,
        skip_serializing_if = "StrMap::is_empty",
        deserialize_with = "super::str_map"
    )]
    pub annotations: StrMap<'a>,
    /// The pod's namespace.
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub namespace: Cow<'a, str>,
}

/// `spec.containers[]`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ImageReviewContainerSpec<'a> {
    /// The image reference as written in the pod.
    #[serde(borrow, default)]
    pub image: Cow<'a, str>,
}

/// `status`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReviewStatus<'a> {
    /// The decision.
    #[serde(default)]
    pub allowed: bool,
    /// Why, when refused; the apiserver shows it to the user.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
    /// Keys without a prefix; the apiserver prefixes `imagepolicywebhook.image-policy.k8s.io/`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}
