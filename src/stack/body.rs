//! Reads the body, at most `limits.max_body` bytes (413 past it), before any parsing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{Rejection, Response};

/// Adds body collection with a size limit.
#[derive(Clone, Copy, Debug)]
pub struct CollectBodyLayer {
    max: u64,
}

impl CollectBodyLayer {
    /// At most `max` bytes per body.
    pub fn new(max: u64) -> Self {
        Self { max }
    }
}

impl<S> tower::Layer<S> for CollectBodyLayer {
    type Service = CollectBody<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CollectBody {
            inner,
            max: self.max,
        }
    }
}

/// Hands the inner service a `Request<Bytes>`.
#[derive(Clone, Debug)]
pub struct CollectBody<S> {
    inner: S,
    max: u64,
}

impl<S, B> tower::Service<Request<B>> for CollectBody<S>
where
    S: tower::Service<Request<Bytes>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is ready-less; take the one poll_ready prepared (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max;
        Box::pin(async move {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // Refuse a declared oversize body without reading a byte of it.
            if declared.is_some_and(|n| n > max) {
                return Ok(Rejection::PayloadTooLarge { limit: max }.into_response());
            }
            let (parts, body) = req.into_parts();
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            let bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    return Ok(Rejection::PayloadTooLarge { limit: max }.into_response())
                }
                Err(e) => return Ok(Rejection::BodyRead(e.to_string()).into_response()),
            };
            inner.call(Request::from_parts(parts, bytes)).await
        })
    }
}
