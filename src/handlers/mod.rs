//! The routes' handlers: decode → decide → encode, one file per webhook. Domain logic lives in
//! the decision modules; handlers only translate between the wire and them.

mod authenticate;
pub(crate) mod health;
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

/// Review bodies above this size are decoded, decided and encoded on tokio's blocking pool: a
/// review near `limits.max_body` is milliseconds to seconds of CPU, and on a runtime worker it
/// would hold up `/healthz` and every connection served there (the deadline layer too). Below
/// it (a typical Pod review is 5-20 KiB) the work is a fraction of a millisecond, about what
/// the hand-off to another thread costs, so the hot path stays inline.
pub const INLINE_MAX: usize = 64 * 1024;

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
        handle(self.app.clone(), req)
    }
}

/// Answers `req` with `app`, which the future holds to its end.
pub(crate) fn handle(
    app: Arc<App>,
    req: Request<Bytes>,
) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> {
    Box::pin(async move {
        let route = req.extensions().get::<Route>().copied();
        let body = req.into_body();
        let answer = match route {
            Some(route)
                if cpu_bound(route) && (body.len() > INLINE_MAX || runs_rego(&app, route)) =>
            {
                off_the_runtime(app, route, body).await
            }
            Some(route) => dispatch(&app, route, &body).await,
            // Disabled routes never resolve; this is the stack built without the router.
            None => Err(Rejection::NotFound("this route".to_owned())),
        };
        Ok(answer.unwrap_or_else(Rejection::into_response))
    })
}

/// The routes whose work is computation that grows with the body. `/authenticate` waits on
/// GitHub instead, and must not hold a blocking-pool thread while it does.
fn cpu_bound(route: Route) -> bool {
    matches!(route, Route::Validate | Route::Mutate | Route::ImagePolicy)
}

/// Rego evaluations take up to `gatekeeper.eval_timeout` each: with constraints loaded, the
/// routes that run them never hold a runtime worker while they do.
fn runs_rego(app: &App, route: Route) -> bool {
    matches!(route, Route::Validate | Route::ImagePolicy) && !app.gatekeeper.is_empty()
}

/// Calls the route's handler.
async fn dispatch(app: &App, route: Route, body: &[u8]) -> Result<Response, Rejection> {
    match route {
        Route::Authenticate => authenticate::handle(app, body).await,
        Route::Validate => validate::handle(app, body).await,
        Route::Mutate => mutate::handle(app, body).await,
        Route::ImagePolicy => image_policy::handle(app, body).await,
        Route::Healthz => Ok(health::healthz()),
        Route::Readyz => Ok(health::readyz(app)),
    }
}

/// Runs the handler on the blocking pool. Past the deadline the caller answers 504 and drops
/// this future; the work, linear in the body, ends soon after on its own thread.
async fn off_the_runtime(app: Arc<App>, route: Route, body: Bytes) -> Result<Response, Rejection> {
    let runtime = tokio::runtime::Handle::current();
    // The only await inside is the decision cache (a concurrent identical miss), so blocking this
    // pool thread on it is fine.
    // The request's outcome slot is on this task, not the pool's thread: carry it back.
    let work = tokio::task::spawn_blocking(move || {
        runtime.block_on(crate::outcome::carried(dispatch(&app, route, &body)))
    });
    match work.await {
        Ok((answer, outcome)) => {
            crate::outcome::report(outcome);
            answer
        }
        Err(e) if e.is_panic() => {
            tracing::error!(?route, "handler panicked");
            Err(Rejection::Panic)
        }
        // Cancelled: the runtime is shutting down.
        Err(_) => Err(Rejection::Unavailable),
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

/// The metrics' name for an admission decision: denied, warned (allowed with warnings) or
/// allowed.
pub(crate) fn decided(decision: &Decision) -> crate::metrics::Decision {
    use crate::metrics::Decision as D;
    match (decision.allowed(), decision.warnings.is_empty()) {
        (false, _) => D::Denied,
        (true, false) => D::Warned,
        (true, true) => D::Allowed,
    }
}

/// Runs the policies (through the decision cache) and logs what must be logged on every request,
/// hit or miss: audit-only violations and break-glass use.
pub(crate) async fn decide(app: &App, subject: &Subject<'_>, route: &'static str) -> Arc<Decision> {
    let input = PolicyInput {
        subject,
        policies: &app.policies,
    };
    let decision = crate::cache::infallible(app.decisions.call_shared(&input).await);
    if let Some(ticket) = &decision.break_glass {
        tracing::warn!(route, namespace = subject.namespace, kind = subject.kind, ticket = %ticket, "break-glass annotation bypassed image policies");
    }
    for note in &decision.audit {
        if note.key != "break-glass" {
            tracing::info!(route, namespace = subject.namespace, kind = subject.kind, policy = %note.key, count = note.count, violations = %note.value, "audit-only policy violated");
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's future is allocated and moved whole, whatever its route: one route's
    /// large state (the GitHub lookup's, ~8 KiB) must not make every request pay for it.
    #[test]
    fn a_request_future_stays_small() {
        let app = App::new(crate::config::Config::default()).expect("default config");
        let body = [0u8; 0];
        for route in [
            Route::Authenticate,
            Route::Validate,
            Route::Mutate,
            Route::ImagePolicy,
        ] {
            let size = std::mem::size_of_val(&dispatch(&app, route, &body));
            assert!(
                size <= 2048,
                "{route:?}: the request future takes {size} bytes"
            );
        }
    }
}
