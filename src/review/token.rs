//! `TokenReview`, authentication.k8s.io v1 and v1beta1 (identical but for the apiVersion string).
//!
//! An envelope of our own: k8s-openapi's `TokenReview` only accepts v1, and the apiserver's
//! default `--authentication-token-webhook-version` is still v1beta1.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The two TokenReview versions the apiserver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenApiVersion {
    /// `authentication.k8s.io/v1`
    #[serde(rename = "authentication.k8s.io/v1")]
    V1,
    /// `authentication.k8s.io/v1beta1`
    #[serde(rename = "authentication.k8s.io/v1beta1")]
    V1beta1,
}

/// The only kind this envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenReviewKind {
    /// `TokenReview`
    TokenReview,
}

/// A TokenReview, request or answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReview<'a> {
    /// Echoed in the answer.
    pub api_version: TokenApiVersion,
    /// Echoed in the answer.
    pub kind: TokenReviewKind,
    /// Object metadata; not read.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
    /// The token to check.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<TokenReviewSpec<'a>>,
    /// The answer.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenReviewStatus<'a>>,
}

/// `spec`: the bearer token and the audiences the apiserver wants it valid for.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TokenReviewSpec<'a> {
    /// The bearer token; its Debug output is redacted.
    #[serde(borrow, default)]
    pub token: Token<'a>,
    /// Audiences the token must be valid for; empty means the apiserver's own.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<Cow<'a, str>>,
}

/// A bearer token. Never logged: `Debug` prints `<redacted>`.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `status`: who the token belongs to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TokenReviewStatus<'a> {
    /// The decision.
    #[serde(default)]
    pub authenticated: bool,
    /// The user, when authenticated.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo<'a>>,
    /// The audiences the token is valid for (a subset of those asked).
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<Cow<'a, str>>,
    /// Set when the check could not be made; the apiserver does not cache such an answer.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
}

/// `status.user`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo<'a> {
    /// The Kubernetes username.
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub username: Cow<'a, str>,
    /// A stable id for the user.
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    pub uid: Cow<'a, str>,
    /// Kubernetes groups.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Cow<'a, str>>,
    /// Extra attributes.
    #[serde(borrow, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
}
