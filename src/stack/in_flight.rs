//! At most `limits.max_in_flight` webhook requests are read and decided at once; past it a
//! request is answered 503 at once instead of queueing. `/healthz`, `/readyz` and unknown paths
//! never count, and never wait behind the cap.
//!
//! The cap is tower's `ConcurrencyLimit` behind `LoadShed` (whose `Overloaded` error the edge,
//! `error.rs`, answers as a 503 `Status` with `Retry-After`). `ConcurrencyLimit` takes its permit
//! in `poll_ready`, before the request (and so its route) is known, so it wraps the webhook
//! branch only: this service picks the branch in `call`, from the route the router has put in
//! the request's extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::Request;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::{self, LoadShed};
use tower::BoxError;

use crate::error::Response;
use crate::router::Route;

/// Adds the in-flight cap.
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    permits: Arc<Semaphore>,
}

impl InFlightLayer {
    /// At most `limit` webhook requests at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// Sends webhook requests through the cap, the others straight to the inner service.
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    /// The cap's permits, shared by every clone of the stack.
    permits: Arc<Semaphore>,
}

impl<S, B> tower::Service<Request<B>> for InFlight<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = InFlightFuture<
        load_shed::future::ResponseFuture<
            tower::limit::concurrency::future::ResponseFuture<S::Future>,
        >,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The capped branch is made ready per request, in `call`, once the route is known.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_webhook = req
            .extensions()
            .get::<Route>()
            .is_some_and(|r| r.is_webhook());
        if is_webhook {
            let mut capped = LoadShed::new(ConcurrencyLimit::with_semaphore(
                self.inner.clone(),
                self.permits.clone(),
            ));
            // LoadShed is always ready at once: it only records whether the cap had room (its
            // call then fails with `Overloaded`), so no waker is ever needed here.
            let mut cx = Context::from_waker(Waker::noop());
            match capped.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => InFlightFuture::Capped {
                    future: capped.call(req),
                },
                Poll::Ready(Err(error)) => InFlightFuture::Failed { error: Some(error) },
                Poll::Pending => InFlightFuture::Failed {
                    error: Some(load_shed::error::Overloaded::new().into()),
                },
            }
        } else {
            InFlightFuture::Direct {
                future: self.inner.call(req),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer from either branch.
    #[project = InFlightProj]
    pub enum InFlightFuture<C, D> {
        /// A webhook request: a permit, or `Overloaded` at once.
        Capped { #[pin] future: C },
        /// Any other request.
        Direct { #[pin] future: D },
        /// The capped branch failed to get ready.
        Failed { error: Option<BoxError> },
    }
}

impl<C, D, E> Future for InFlightFuture<C, D>
where
    C: Future<Output = Result<Response, BoxError>>,
    D: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightProj::Capped { future } => future.poll(cx),
            InFlightProj::Direct { future } => future.poll(cx).map_err(Into::into),
            InFlightProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::StatusCode;
    use tokio::sync::oneshot;
    use tower::{Layer, Service};

    use super::*;
    use crate::error::json_response;

    fn request(route: Route) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(route);
        request
    }

    #[tokio::test]
    async fn past_the_cap_webhooks_fail_at_once_and_probes_pass() {
        // The handler holds webhook requests until released; probes answer at once.
        let (release, held) = oneshot::channel::<()>();
        let held = std::sync::Arc::new(tokio::sync::Mutex::new(Some(held)));
        let handler = tower::service_fn(move |req: Request<()>| {
            let held = held.clone();
            async move {
                if req.extensions().get::<Route>() == Some(&Route::Validate) {
                    if let Some(held) = held.lock().await.take() {
                        let _ = held.await;
                    }
                }
                Ok::<_, Infallible>(json_response(StatusCode::OK, Bytes::new()))
            }
        });
        let service = InFlightLayer::new(1).layer(handler);
        let mut first = service.clone();
        let first = tokio::spawn(async move {
            std::future::poll_fn(|cx| first.poll_ready(cx)).await?;
            first.call(request(Route::Validate)).await
        });
        // Wait until the first request holds the one permit.
        let mut overloaded = false;
        for _ in 0..1000 {
            let mut second = service.clone();
            std::future::poll_fn(|cx| second.poll_ready(cx))
                .await
                .expect("ready");
            match second.call(request(Route::Mutate)).await {
                Err(e) if e.is::<tower::load_shed::error::Overloaded>() => {
                    overloaded = true;
                    break;
                }
                _ => tokio::task::yield_now().await,
            }
        }
        assert!(overloaded, "a webhook past the cap must fail at once");
        for route in [Route::Healthz, Route::Readyz] {
            let mut probe = service.clone();
            std::future::poll_fn(|cx| probe.poll_ready(cx))
                .await
                .expect("ready");
            let answer = probe.call(request(route)).await.expect("probes never shed");
            assert_eq!(answer.status(), StatusCode::OK);
        }
        let _ = release.send(());
        let answer = first.await.expect("join").expect("the held one answers");
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
