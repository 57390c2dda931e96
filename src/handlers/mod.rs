//! The routes' handlers: decode → decide → encode, one file per webhook. Domain logic lives in
//! the decision modules; handlers only translate between the wire and them.

mod authenticate;
mod health;
mod image_policy;
/// Public for the benchmark, which measures one mutation decision without HTTP.
pub mod mutate;
mod validate;

pub use validate::subject as validate_subject;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;

use crate::app::App;
use crate::error::{Rejection, Response};
use crate::policy::{Decision, PolicyInput, Subject};
use crate::router::Route;

/// Dispatches a request, its route already resolved, to its handler.
#[derive(Clone, Debug)]
pub struct Handlers {
    app: Arc<App>,
}

impl Handlers {
    /// Handlers sharing `app`.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

impl tower::Service<Request<Bytes>> for Handlers {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let app = self.app.clone();
        Box::pin(async move {
            let route = req.extensions().get::<Route>().copied();
            let body = req.into_body();
            let answer = match route {
                Some(Route::Authenticate) => authenticate::handle(&app, &body).await,
                Some(Route::Validate) => validate::handle(&app, &body).await,
                Some(Route::Mutate) => mutate::handle(&app, &body).await,
                Some(Route::ImagePolicy) => image_policy::handle(&app, &body).await,
                Some(Route::Healthz) => Ok(health::healthz()),
                Some(Route::Readyz) => Ok(health::readyz(&app)),
                // Disabled routes never resolve; this is the stack built without the router.
                None => Err(Rejection::NotFound("this route".to_owned())),
            };
            Ok(answer.unwrap_or_else(Rejection::into_response))
        })
    }
}

/// Adds the Gatekeeper constraints' violations to a native decision. Not cached: templates read
/// the whole review. `review` builds the Rego input once, only when constraints are loaded.
pub(crate) fn gatekeeper(
    app: &App,
    decision: Arc<Decision>,
    route: &'static str,
    namespace: &str,
    review: impl FnOnce() -> Result<crate::gatekeeper::Review, crate::gatekeeper::ReviewError>,
) -> Result<Arc<Decision>, Rejection> {
    if app.gatekeeper.is_empty() {
        return Ok(decision);
    }
    let review =
        review().map_err(|crate::gatekeeper::ReviewError::Decode(e)| Rejection::BadRequest(e))?;
    let violations = app.gatekeeper.evaluate(&review);
    if violations.is_empty() {
        return Ok(decision);
    }
    crate::gatekeeper::log_dryrun(&violations, route, namespace);
    let mut merged = Decision::clone(&decision);
    crate::gatekeeper::merge(&violations, &mut merged);
    Ok(Arc::new(merged))
}

/// Runs the policies (through the decision cache) and logs what must be logged on every request,
/// hit or miss: audit-only violations and break-glass use.
pub(crate) async fn decide(app: &App, subject: &Subject<'_>, route: &'static str) -> Arc<Decision> {
    use tower::ServiceExt;
    let input = PolicyInput {
        subject,
        policies: &app.policies,
    };
    let decision = crate::cache::infallible(app.decisions.clone().oneshot(&input).await);
    if let Some(ticket) = &decision.break_glass {
        tracing::warn!(route, namespace = subject.namespace, kind = subject.kind, ticket = %ticket, "break-glass annotation bypassed image policies");
    }
    for (key, violations) in &decision.audit {
        if key != "break-glass" {
            tracing::info!(route, namespace = subject.namespace, kind = subject.kind, policy = %key, violations = %violations, "audit-only policy violated");
        }
    }
    decision
}
