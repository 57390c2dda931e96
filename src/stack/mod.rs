//! The tower middleware stack shared by every route, outermost first:
//! access log → catch panic → deadline → route → in-flight cap → content type → body limit →
//! handlers.
//!
//! Each hand-written layer is one `Layer` + `Service` pair in a file named after it. The
//! handlers are given by the caller (`server.rs` composes them), so the stack knows nothing of
//! the routes' work.

mod access_log;
mod body;
mod catch_panic;
mod content_type;
mod deadline;
mod in_flight;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tower::ServiceBuilder;

pub use access_log::{AccessLog, AccessLogLayer, LogUser, PeerAddr};
pub use body::{CollectBody, CollectBodyLayer};
pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub use content_type::{ContentType, ContentTypeLayer};
pub use deadline::{Deadline, DeadlineLayer};
pub use in_flight::{InFlight, InFlightLayer, Permitted};

use crate::config::{Limits, Routes};
use crate::error::{Rejection, Response};
use crate::metrics::Metrics;
use crate::router::RouteLayer;

/// Builds the whole stack around `handlers`, which take the collected body and find the
/// resolved route in the request's extensions. `B` is the request body (hyper's `Incoming` on
/// the socket, anything that yields `Bytes` in tests). Limits and routes are read here, once.
/// Requests are recorded in `metrics` by the access-log layer.
pub fn build<B, H>(
    limits: &Limits,
    routes: &Routes,
    metrics: std::sync::Arc<Metrics>,
    handlers: H,
) -> impl tower::Service<http::Request<B>, Response = Response, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    H: tower::Service<http::Request<Bytes>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    H::Future: Send,
{
    ServiceBuilder::new()
        .layer(AccessLogLayer::new(metrics))
        .layer(CatchPanicLayer)
        .layer(DeadlineLayer::new(limits.request_timeout.0))
        .layer(RouteLayer::new(routes.clone()))
        .layer(InFlightLayer::new(limits.max_in_flight))
        .layer(ContentTypeLayer::new(limits.max_body.0))
        .layer(CollectBodyLayer::new(limits.max_body.0))
        .service(handlers)
}

pin_project_lite::pin_project! {
    /// A layer's future: either its own early answer or the inner service's.
    #[project = RejectOrProj]
    pub enum RejectOr<F> {
        /// Answered here, without calling inner.
        Rejected { response: Option<Response> },
        /// Answered here once the rest of the request body is read (see `body::discard`).
        Draining { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        /// Inner is handling it.
        Inner { #[pin] future: F },
    }
}

impl<F> RejectOr<F> {
    /// An early answer from a rejection.
    pub fn reject(rejection: Rejection) -> Self {
        Self::Rejected {
            response: Some(rejection.into_response()),
        }
    }

    /// An early answer sent after reading the rest of `body`, at most `budget` bytes of it.
    pub fn reject_after<B>(body: B, budget: u64, rejection: Rejection) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
    {
        Self::Draining {
            future: Box::pin(async move {
                body::discard(body, budget).await;
                rejection.into_response()
            }),
        }
    }
}

impl<F> Future for RejectOr<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RejectOrProj::Rejected { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled after completion: a caller bug, answer rather than panic.
                None => Poll::Ready(Ok(Rejection::Panic.into_response())),
            },
            RejectOrProj::Draining { future } => future.as_mut().poll(cx).map(Ok),
            RejectOrProj::Inner { future } => future.poll(cx),
        }
    }
}
