//! One log line per request: method, uri, status, latency, protocol, peer and user. Never the body.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Uri, Version};

use crate::error::Response;

/// The connection's peer, put in request extensions by the listener.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Who a request was decided for, put in response extensions by a handler (never a token).
#[derive(Clone, Debug)]
pub struct LogUser(pub String);

/// Adds the access log.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// Logs each request when its response is ready.
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
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
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            peer,
            start: Instant::now(),
            future: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// Waits for the response, then logs.
    pub struct AccessLogFuture<F> {
        method: Method,
        uri: Uri,
        version: Version,
        peer: Option<SocketAddr>,
        start: Instant,
        #[pin]
        future: F,
    }
}

impl<F> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.future.poll(cx));
        let latency_us = this.start.elapsed().as_micros() as u64;
        let user = response.extensions().get::<LogUser>().map(|u| u.0.as_str());
        tracing::info!(
            target: "gatehouse::access",
            method = %this.method,
            uri = %this.uri,
            status = response.status().as_u16(),
            latency_us,
            protocol = ?this.version,
            peer = this.peer.map(tracing::field::display),
            user,
            "request"
        );
        Poll::Ready(Ok(response))
    }
}
