//! `POST /authenticate`: a TokenReview (v1 or v1beta1) → who owns the token, answered in the
//! request's apiVersion. Every decision is HTTP 200; only an undecodable body is a 400.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::authn::{Decision, Identity, EXTRA_GITHUB_ID, EXTRA_GITHUB_LOGIN};
use crate::error::{json_response, Rejection, Response};
use crate::metrics;
use crate::outcome::{self, User};
use crate::review::token::{
    TokenApiVersion, TokenReview, TokenReviewKind, TokenReviewStatus, UserInfo,
};
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
    // Small: the review boxes its GitHub conversation (~8 KiB) itself, and only on a miss.
    let decision = authenticator.review(&spec.token.0, &spec.audiences).await;
    let bytes = match &decision {
        Decision::Authenticated {
            identity,
            audiences,
        } => encode_authenticated(review.api_version, identity, audiences)?,
        _ => {
            let answer = TokenReview {
                api_version: review.api_version,
                kind: TokenReviewKind::TokenReview,
                metadata: None,
                // Never echoed: it carries the token.
                spec: None,
                status: Some(status(&decision)),
            };
            crate::review::encode(&answer, 256)?
        }
    };
    let user = log(&decision);
    let response = json_response(StatusCode::OK, bytes);
    outcome::user(user);
    outcome::decided(match decision {
        Decision::Authenticated { .. } => metrics::Decision::Authenticated,
        Decision::Refused(_) => metrics::Decision::Unauthenticated,
        Decision::Unavailable(_) => metrics::Decision::Error,
    });
    Ok(response)
}

/// Logs the decision; the name the access log shows.
fn log(decision: &Decision) -> User {
    match decision {
        Decision::Authenticated { identity, .. } => {
            tracing::info!(
                target: "gatehouse::authn",
                user = %identity.username,
                uid = %identity.uid,
                groups = ?identity.groups,
                "authenticated"
            );
            User::Identity(identity.clone())
        }
        Decision::Refused(refusal) => {
            tracing::info!(target: "gatehouse::authn", reason = %refusal, "refused");
            User::Unauthenticated
        }
        Decision::Unavailable(error) => {
            let cause = causes(error.as_ref());
            tracing::warn!(
                target: "gatehouse::authn",
                error = %error,
                cause = (!cause.is_empty()).then_some(cause.as_str()),
                "no decision from GitHub; answered with status.error"
            );
            User::Unauthenticated
        }
    }
}

/// The `status` for a decision, as [`TokenReviewStatus`]: the reference for the wire format,
/// which [`encode_authenticated`] writes without building it.
fn status(decision: &Decision) -> TokenReviewStatus<'_> {
    match decision {
        Decision::Authenticated {
            identity,
            audiences,
        } => TokenReviewStatus {
            authenticated: true,
            user: Some(UserInfo {
                username: Cow::Borrowed(&identity.username),
                uid: Cow::Borrowed(&identity.uid),
                groups: identity
                    .groups
                    .iter()
                    .map(|g| Cow::Borrowed(g.as_str()))
                    .collect(),
                extra: BTreeMap::from([
                    (
                        Cow::Borrowed(EXTRA_GITHUB_ID),
                        vec![Cow::Borrowed(identity.uid.as_str())],
                    ),
                    (
                        Cow::Borrowed(EXTRA_GITHUB_LOGIN),
                        vec![Cow::Borrowed(identity.login.as_str())],
                    ),
                ]),
            }),
            audiences: audiences
                .iter()
                .map(|a| Cow::Borrowed(a.as_str()))
                .collect(),
            error: None,
        },
        Decision::Refused(_) => TokenReviewStatus::default(),
        Decision::Unavailable(error) => TokenReviewStatus {
            error: Some(Cow::Owned(error.to_string())),
            ..TokenReviewStatus::default()
        },
    }
}

/// The answer that authenticates `identity`: the same bytes as a [`TokenReview`] carrying
/// [`status`]'s answer (a test holds the two to the same bytes), written straight into one
/// buffer sized for it: no map or lists built per request, no serializer state per member. The
/// steady state of `/authenticate`, so worth the second spelling.
fn encode_authenticated(
    api_version: TokenApiVersion,
    identity: &Identity,
    audiences: &[String],
) -> Result<Bytes, serde_json::Error> {
    // The strings plus the JSON around them (escapes only make it grow once).
    let strings = 2 * identity.uid.len()
        + identity.username.len()
        + identity.login.len()
        + identity.groups.iter().map(|g| g.len() + 3).sum::<usize>()
        + audiences.iter().map(|a| a.len() + 3).sum::<usize>();
    let mut out = Vec::with_capacity(224 + strings);
    let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s);
    out.extend_from_slice(br#"{"apiVersion":"#);
    serde_json::to_writer(&mut out, &api_version)?;
    out.extend_from_slice(br#","kind":"TokenReview","status":{"authenticated":true,"user":{"#);
    // Empty strings and lists are left out, as `UserInfo` leaves them out.
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, name: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(name);
    };
    if !identity.username.is_empty() {
        member(&mut out, br#""username":"#);
        string(&mut out, &identity.username)?;
    }
    if !identity.uid.is_empty() {
        member(&mut out, br#""uid":"#);
        string(&mut out, &identity.uid)?;
    }
    if !identity.groups.is_empty() {
        member(&mut out, br#""groups":"#);
        serde_json::to_writer(&mut out, &identity.groups)?;
    }
    // In key order, as the map `UserInfo::extra` is.
    member(&mut out, br#""extra":{"#);
    string(&mut out, EXTRA_GITHUB_ID)?;
    out.extend_from_slice(b":[");
    string(&mut out, &identity.uid)?;
    out.extend_from_slice(b"],");
    string(&mut out, EXTRA_GITHUB_LOGIN)?;
    out.extend_from_slice(b":[");
    string(&mut out, &identity.login)?;
    out.extend_from_slice(b"]}}");
    if !audiences.is_empty() {
        out.extend_from_slice(br#","audiences":"#);
        serde_json::to_writer(&mut out, audiences)?;
    }
    out.extend_from_slice(b"}}");
    // At its exact length `Bytes` adopts the allocation (see `review::encode`).
    Ok(Bytes::from(out.into_boxed_slice()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn authenticated(identity: Identity, audiences: &[&str]) -> Decision {
        Decision::Authenticated {
            identity: Arc::new(identity),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The authenticated answer written from borrowed views is byte for byte the TokenReview
    /// the shared wire types give, whatever is empty, escaped or absent.
    #[test]
    fn authenticated_answer_is_the_token_reviews_bytes() {
        let full = Identity {
            username: "github:octocat".to_owned(),
            uid: "583231".to_owned(),
            groups: vec!["github:acme".to_owned(), "github:acme:sre".to_owned()],
            login: "octocat".to_owned(),
        };
        let cases = [
            authenticated(full.clone(), &[]),
            authenticated(
                full.clone(),
                &["https://kubernetes.default.svc", "gatehouse"],
            ),
            authenticated(
                Identity {
                    groups: Vec::new(),
                    ..full.clone()
                },
                &["a"],
            ),
            authenticated(
                Identity {
                    username: "quote\"back\\slash\u{1}é".to_owned(),
                    uid: String::new(),
                    groups: vec!["tab\t".to_owned()],
                    login: String::new(),
                },
                &[],
            ),
        ];
        for version in [TokenApiVersion::V1, TokenApiVersion::V1beta1] {
            for decision in &cases {
                let Decision::Authenticated {
                    identity,
                    audiences,
                } = decision
                else {
                    unreachable!()
                };
                let reference = serde_json::to_vec(&TokenReview {
                    api_version: version,
                    kind: TokenReviewKind::TokenReview,
                    metadata: None,
                    spec: None,
                    status: Some(status(decision)),
                })
                .expect("encode");
                let written = encode_authenticated(version, identity, audiences).expect("encode");
                assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&reference)
                );
            }
        }
    }
}
