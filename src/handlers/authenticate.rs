//! `POST /authenticate`: a TokenReview (v1 or v1beta1) → who owns the token, answered in the
//! request's apiVersion. Every decision is HTTP 200; only an undecodable body is a 400.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::authn::{Decision, EXTRA_GITHUB_ID, EXTRA_GITHUB_LOGIN};
use crate::error::{json_response, Rejection, Response};
use crate::metrics;
use crate::outcome::{self, User};
use crate::review::token::{TokenReview, TokenReviewKind, TokenReviewStatus, UserInfo};
use crate::review::{decode_redacted, DecodeError};

const WHAT: &str = "TokenReview";

/// Decodes, decides and answers one review.
pub async fn handle(app: &App, body: &[u8]) -> Result<Response, Rejection> {
    // Redacted: serde quotes a wrong-typed value, which here may be the token.
    let review: TokenReview<'_> = decode_redacted(WHAT, body)?;
    let spec = review.spec.as_ref().ok_or(DecodeError::Missing {
        what: WHAT,
        field: "spec",
    })?;
    // Only built when `routes.authenticate` is on, and the route resolves only then.
    let authenticator = app
        .authenticator
        .as_ref()
        .ok_or_else(|| Rejection::NotFound("/authenticate".to_owned()))?;
    // Boxed: the review's future (a GitHub lookup on a miss) is ~8 KiB, and inline it would
    // make every route's request future that large, allocated and copied per request.
    let decision = Box::pin(authenticator.review(&spec.token.0, &spec.audiences)).await;
    let (status, user) = answer(&decision);
    let answer = TokenReview {
        api_version: review.api_version,
        kind: TokenReviewKind::TokenReview,
        metadata: None,
        // Never echoed: it carries the token.
        spec: None,
        status: Some(status),
    };
    let bytes = serde_json::to_vec(&answer)?;
    let response = json_response(StatusCode::OK, Bytes::from(bytes));
    outcome::user(user);
    outcome::decided(match decision {
        Decision::Authenticated { .. } => metrics::Decision::Authenticated,
        Decision::Refused(_) => metrics::Decision::Unauthenticated,
        Decision::Unavailable(_) => metrics::Decision::Error,
    });
    Ok(response)
}

/// The `status` for a decision, and the name the access log shows. Logs the decision.
fn answer(decision: &Decision) -> (TokenReviewStatus<'_>, User) {
    match decision {
        Decision::Authenticated {
            identity,
            audiences,
        } => {
            tracing::info!(
                target: "gatehouse::authn",
                user = %identity.username,
                uid = %identity.uid,
                groups = ?identity.groups,
                "authenticated"
            );
            let extra = BTreeMap::from([
                (
                    Cow::Borrowed(EXTRA_GITHUB_ID),
                    vec![Cow::Borrowed(identity.uid.as_str())],
                ),
                (
                    Cow::Borrowed(EXTRA_GITHUB_LOGIN),
                    vec![Cow::Borrowed(identity.login.as_str())],
                ),
            ]);
            let status = TokenReviewStatus {
                authenticated: true,
                user: Some(UserInfo {
                    username: Cow::Borrowed(&identity.username),
                    uid: Cow::Borrowed(&identity.uid),
                    groups: identity
                        .groups
                        .iter()
                        .map(|g| Cow::Borrowed(g.as_str()))
                        .collect(),
                    extra,
                }),
                audiences: audiences
                    .iter()
                    .map(|a| Cow::Borrowed(a.as_str()))
                    .collect(),
                error: None,
            };
            (status, User::Identity(identity.clone()))
        }
        Decision::Refused(refusal) => {
            tracing::info!(target: "gatehouse::authn", reason = %refusal, "refused");
            (TokenReviewStatus::default(), User::Unauthenticated)
        }
        Decision::Unavailable(error) => {
            let cause = causes(error.as_ref());
            tracing::warn!(
                target: "gatehouse::authn",
                error = %error,
                cause = (!cause.is_empty()).then_some(cause.as_str()),
                "no decision from GitHub; answered with status.error"
            );
            let status = TokenReviewStatus {
                error: Some(Cow::Owned(error.to_string())),
                ..TokenReviewStatus::default()
            };
            (status, User::Unauthenticated)
        }
    }
}

/// The chain of sources under an error, for the log line (requests and tokens are in none).
fn causes(error: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = error.source();
    while let Some(e) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}
