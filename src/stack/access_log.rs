//! One log line per request: method, uri, status, latency, protocol, peer and user. Never the body.
//! The same place records the request in the metrics (route, status, decision, latency): it sees
//! every answer, the stack's own rejections included. Handlers report the decision and user
//! through [`crate::outcome`], a slot this layer's future opens around the request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Uri, Version};
use tokio::task::futures::TaskLocalFuture;

use crate::error::Response;
use crate::logging::{self, AccessLine};
use crate::metrics::{self, Metrics};
use crate::outcome::{self, Outcome};
use crate::router::Route;

/// The connection's peer, put in request extensions by the listener.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Adds the access log and the request metrics.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    metrics: Arc<Metrics>,
}

impl AccessLogLayer {
    /// Logs, and records into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Logs and records each request when its response is ready.
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<Request<B>> for AccessLog<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        AccessLogFuture {
            route: route_label(req.uri().path()),
            metrics: self.metrics.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            peer,
            start: Instant::now(),
            future: outcome::scope(self.inner.call(req)),
        }
    }
}

pin_project_lite::pin_project! {
    /// Waits for the response, then logs and records.
    pub struct AccessLogFuture<F> {
        route: metrics::Route,
        metrics: Arc<Metrics>,
        method: Method,
        uri: Uri,
        version: Version,
        peer: Option<SocketAddr>,
        start: Instant,
        #[pin]
        future: TaskLocalFuture<Outcome, F>,
    }
}

impl<F> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(response) = std::task::ready!(this.future.as_mut().poll(cx));
        let elapsed = this.start.elapsed();
        let reported = this.future.take_value().unwrap_or_default();
        let decision = reported.decision().unwrap_or(match this.route {
            metrics::Route::Healthz | metrics::Route::Readyz | metrics::Route::Other => {
                metrics::Decision::None
            }
            // A webhook answered without a decision: rejected, timed out, failed.
            _ => metrics::Decision::Error,
        });
        let status = response.status().as_u16();
        this.metrics
            .record_request(*this.route, status, decision, elapsed);
        let user = reported.take_user();
        logging::access(&AccessLine {
            method: this.method,
            uri: this.uri,
            status,
            latency_us: elapsed.as_micros() as u64,
            version: *this.version,
            peer: *this.peer,
            user: user.as_ref().map(outcome::User::name),
        });
        Poll::Ready(Ok(response))
    }
}

/// The metrics' name for the route at `path`, switched on or not; `other` for any other path.
fn route_label(path: &str) -> metrics::Route {
    match Route::at(path) {
        Some(Route::Authenticate) => metrics::Route::Authenticate,
        Some(Route::ImagePolicy) => metrics::Route::ImagePolicy,
        Some(Route::Validate) => metrics::Route::Validate,
        Some(Route::Mutate) => metrics::Route::Mutate,
        Some(Route::Healthz) => metrics::Route::Healthz,
        Some(Route::Readyz) => metrics::Route::Readyz,
        None => metrics::Route::Other,
    }
}
