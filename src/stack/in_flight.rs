//! At most `limits.max_in_flight` webhook requests are read and decided at once; past it a
//! request is answered 503 at once instead of queueing. `/healthz`, `/readyz` and unknown paths
//! never count, and never wait behind the cap.
//!
//! Hand-written: tower's `ConcurrencyLimit` behind `LoadShed` does the same, but it takes its
//! permit in `poll_ready`, before the request (and so its route) is known, so it had to be
//! built per request around a clone of the inner service once the route was. That cost two more
//! atomic reference-count updates per request on memory every worker touches (the semaphore's,
//! the App's) and about a thousand instructions of moves. Here the permit is taken in `call`,
//! from the route the router has put in the request's extensions; past the cap the error is
//! still tower's `Overloaded`, which the edge (`error.rs`) answers as a 503 `Status` with
//! `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::load_shed::error::Overloaded;
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
    S: tower::Service<Request<B>, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = BoxError;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_webhook = req
            .extensions()
            .get::<Route>()
            .is_some_and(|r| r.is_webhook());
        let permit = if is_webhook {
            // Never closed, so failing means no permit is left: shed, do not wait.
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return InFlightFuture::Overloaded,
            }
        } else {
            None
        };
        InFlightFuture::Called {
            future: self.inner.call(req),
            _permit: permit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, holding a webhook's permit until it is ready; or `Overloaded` at once.
    #[project = InFlightProj]
    pub enum InFlightFuture<F> {
        /// Answering; the permit (webhooks only) is given back when this is dropped.
        Called { #[pin] future: F, _permit: Option<OwnedSemaphorePermit> },
        /// Past the cap.
        Overloaded,
    }
}

impl<F, E> Future for InFlightFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            InFlightProj::Called { future, .. } => future.poll(cx).map_err(Into::into),
            InFlightProj::Overloaded => Poll::Ready(Err(Overloaded::new().into())),
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

    /// A handler answering 200 that counts how often it is cloned.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Self(self.0.clone())
        }
    }

    impl tower::Service<Request<()>> for Counted {
        type Response = Response;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(json_response(StatusCode::OK, Bytes::new())))
        }
    }

    #[tokio::test]
    async fn webhooks_take_a_permit_without_cloning_the_inner_service() {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut service = InFlightLayer::new(1).layer(Counted(clones.clone()));
        // One permit: each request must give it back for the next to pass.
        for _ in 0..10 {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .expect("ready");
            let answer = service
                .call(request(Route::Validate))
                .await
                .expect("within the cap");
            assert_eq!(answer.status(), StatusCode::OK);
        }
        assert_eq!(clones.load(std::sync::atomic::Ordering::SeqCst), 0);
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
