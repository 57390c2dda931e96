//! At most `limits.max_in_flight` webhook requests are read and decided at once; past it a
//! request is answered 503 at once instead of queueing. `/healthz` and `/readyz` never count.
//!
//! Hand-written rather than tower's `LoadShed` + `ConcurrencyLimit`: `ConcurrencyLimit` takes its
//! permit in `poll_ready`, before the request (and so its route) is known, so on the shared stack
//! every probe and every 404 would hold a permit and could be shed behind webhook work. Here the
//! permit is taken in `call`, once the router has said which route the request is for.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RejectOr;
use crate::error::{Rejection, Response};
use crate::router::Route;

/// Adds the in-flight cap.
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl InFlightLayer {
    /// At most `limit` webhook requests at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            permits: self.permits.clone(),
            limit: self.limit,
        }
    }
}

/// Holds a permit for each webhook request until its answer is ready.
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<S, B> tower::Service<Request<B>> for InFlight<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RejectOr<Permitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_webhook = req
            .extensions()
            .get::<Route>()
            .is_some_and(|r| r.is_webhook());
        let permit = if is_webhook {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // The access log records the 503; this says why, for whoever turns on debug.
                    tracing::debug!(
                        limit = self.limit,
                        "limits.max_in_flight reached; answered 503"
                    );
                    return RejectOr::reject(Rejection::Overloaded { limit: self.limit });
                }
            }
        } else {
            None
        };
        RejectOr::Inner {
            future: Permitted {
                future: self.inner.call(req),
                _permit: permit,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, holding the request's permit until it completes (or is dropped).
    pub struct Permitted<F> {
        #[pin]
        future: F,
        _permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Permitted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx)
    }
}
