//! Webhook routes take `application/json` only (415 otherwise), as the apiserver sends.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request};

use super::body::declared_length;
use super::RejectOr;
use crate::error::{Rejection, Response};
use crate::router::Route;

/// Adds the content-type check.
#[derive(Clone, Copy, Debug)]
pub struct ContentTypeLayer {
    max_body: u64,
}

impl ContentTypeLayer {
    /// A refused body of at most `max_body` bytes is read before the 415 is sent.
    pub fn new(max_body: u64) -> Self {
        Self { max_body }
    }
}

impl<S> tower::Layer<S> for ContentTypeLayer {
    type Service = ContentType<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ContentType {
            inner,
            max_body: self.max_body,
        }
    }
}

/// Rejects a webhook request whose body is not declared JSON.
#[derive(Clone, Debug)]
pub struct ContentType<S> {
    inner: S,
    max_body: u64,
}

/// True for `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

impl<S, B> tower::Service<Request<B>> for ContentType<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RejectOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_webhook = req
            .extensions()
            .get::<Route>()
            .is_some_and(|r| r.is_webhook());
        if is_webhook {
            let value = req.headers().get(header::CONTENT_TYPE);
            if !value.is_some_and(|v| is_json(v.as_bytes())) {
                let got = value.map_or_else(
                    || "none".to_owned(),
                    |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
                );
                let rejection = Rejection::UnsupportedMediaType(got);
                if declared_length(&req).is_some_and(|n| n > self.max_body) {
                    return RejectOr::reject(rejection);
                }
                return RejectOr::reject_after(req.into_body(), self.max_body, rejection);
            }
        }
        RejectOr::Inner {
            future: self.inner.call(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"application/json; charset=utf-8"));
        assert!(is_json(b"Application/JSON"));
        assert!(!is_json(b"application/jsonx"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
        assert!(!is_json(b""));
    }
}
