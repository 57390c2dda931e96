//! The one place where a failure becomes an HTTP answer.
//!
//! Inside, code returns typed errors; at the edge each becomes a `Rejection`, answered as a
//! Kubernetes `Status` object so that the apiserver's logs (and curl) show the reason. The errors
//! the stack's layers fail a request with (tower's error types) are turned into a `Rejection`
//! here too, by [`Edge`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tower::BoxError;

/// The response type of every gatehouse service.
pub type Response = http::Response<Full<Bytes>>;

/// A request gatehouse will not decide, and the HTTP status that says why.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No route at this path.
    #[error("no webhook at {0}")]
    NotFound(String),
    /// A webhook gatehouse has, switched off in `routes:`; the message names the switch.
    #[error("no webhook at {path}: it is switched off; set `routes.{switch}: true` in the config file to serve it")]
    RouteDisabled {
        /// The path.
        path: String,
        /// The `routes:` key that switches it on.
        switch: &'static str,
    },
    /// The path exists but not for this method.
    #[error("method {method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: http::Method,
        /// The path.
        path: String,
        /// The methods that are allowed (the `Allow` header).
        allow: &'static str,
    },
    /// A webhook route got a body that is not JSON.
    #[error("content-type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    /// The body is larger than `limits.max_body`.
    #[error("request body is larger than limits.max_body ({limit} bytes)")]
    PayloadTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The request body could not be read from the connection.
    #[error("cannot read request body: {0}")]
    BodyRead(String),
    /// The body is not a review gatehouse can decode.
    #[error("{0}")]
    BadRequest(#[from] crate::review::DecodeError),
    /// The request took longer than `limits.request_timeout`.
    #[error("request took longer than limits.request_timeout ({0:?})")]
    Timeout(Duration),
    /// A bug: a handler panicked. The server keeps serving.
    #[error("internal error while handling the request")]
    Panic,
    /// A bug: a layer of the stack failed in a way gatehouse does not expect.
    #[error("internal error while handling the request: {0}")]
    Internal(String),
    /// An answer could not be encoded (a bug).
    #[error("cannot encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
    /// The server is draining and takes no new work.
    #[error("gatehouse is shutting down")]
    Unavailable,
    /// `limits.max_in_flight` webhook requests are already being handled.
    #[error("gatehouse is handling limits.max_in_flight ({limit}) requests already; retry")]
    Overloaded {
        /// The configured cap.
        limit: usize,
    },
}

/// Sent with [`Rejection::Overloaded`]: client-go's REST client, which the apiserver's webhook
/// calls use, waits this many seconds and retries a 5xx carrying `Retry-After` (`checkWait`),
/// so a shed request is retried within the webhook's timeout instead of failing.
const OVERLOADED_RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

impl Rejection {
    /// The HTTP status for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) | Self::RouteDisabled { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Panic | Self::Internal(_) | Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The Kubernetes `Status.reason` for this rejection.
    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::RouteDisabled { .. } => "NotFound",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::PayloadTooLarge { .. } => "RequestEntityTooLarge",
            Self::BodyRead(_) | Self::BadRequest(_) => "BadRequest",
            Self::Timeout(_) => "Timeout",
            Self::Panic | Self::Internal(_) | Self::Encode(_) => "InternalError",
            Self::Unavailable | Self::Overloaded { .. } => "ServiceUnavailable",
        }
    }

    /// What a layer's error means: the deadline fails a request with tower's `Elapsed`, the
    /// in-flight cap with tower's `Overloaded`; nothing else in the stack fails.
    fn from_layer_error(error: &BoxError, limits: EdgeLimits) -> Self {
        if error.is::<tower::timeout::error::Elapsed>() {
            tracing::warn!(timeout = ?limits.request_timeout, "request timed out");
            Self::Timeout(limits.request_timeout)
        } else if error.is::<tower::load_shed::error::Overloaded>() {
            // The access log records the 503; this says why, for whoever turns on debug.
            tracing::debug!(
                limit = limits.max_in_flight,
                "limits.max_in_flight reached; answered 503"
            );
            Self::Overloaded {
                limit: limits.max_in_flight,
            }
        } else {
            Self::Internal(error.to_string())
        }
    }

    /// The answer: a `v1.Status` JSON body with the status code.
    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Status<'a> {
            kind: &'static str,
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            status: &'static str,
            message: &'a str,
            reason: &'static str,
            code: u16,
        }
        let code = self.status();
        let message = self.to_string();
        let body = Status {
            kind: "Status",
            api_version: "v1",
            status: "Failure",
            message: &message,
            reason: self.reason(),
            code: code.as_u16(),
        };
        // Serializing a struct of strings cannot fail; fall back to the bare message anyway.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| message.clone().into_bytes());
        let mut response = json_response(code, Bytes::from(bytes));
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Overloaded { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, OVERLOADED_RETRY_AFTER);
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with the given status and body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = http::Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The limits the [`Edge`] names in its answers.
#[derive(Clone, Copy, Debug)]
pub struct EdgeLimits {
    /// `limits.request_timeout`, which the deadline layer enforces.
    pub request_timeout: Duration,
    /// `limits.max_in_flight`, which the in-flight layer enforces.
    pub max_in_flight: usize,
}

/// Adds the edge conversion (see [`Edge`]).
#[derive(Clone, Copy, Debug)]
pub struct EdgeLayer {
    limits: EdgeLimits,
}

impl EdgeLayer {
    /// Answers naming `limits`.
    pub fn new(limits: EdgeLimits) -> Self {
        Self { limits }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            limits: self.limits,
            not_ready: None,
        }
    }
}

/// Turns the errors of the layers below into `Status` answers: `Elapsed` past the deadline
/// (504), `Overloaded` past the in-flight cap (503 with `Retry-After`). Answers pass as they are.
#[derive(Debug)]
pub struct Edge<S> {
    inner: S,
    limits: EdgeLimits,
    /// What `poll_ready` failed with, answered by the next `call` (none of the layers below
    /// fails there today).
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Edge<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: self.limits,
            not_ready: None,
        }
    }
}

impl<S, R> tower::Service<R> for Edge<S>
where
    S: tower::Service<R, Response = Response>,
    S::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if let Err(error) = ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(error.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let limits = self.limits;
        match self.not_ready.take() {
            Some(error) => EdgeFuture::Failed {
                error: Some(error),
                limits,
            },
            None => EdgeFuture::Inner {
                future: self.inner.call(req),
                limits,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, converted.
    #[project = EdgeProj]
    pub enum EdgeFuture<F> {
        /// The inner service is answering.
        Inner { #[pin] future: F, limits: EdgeLimits },
        /// The inner service was not ready: answered from its error.
        Failed { error: Option<BoxError>, limits: EdgeLimits },
    }
}

impl<F, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (answer, limits) = match self.project() {
            EdgeProj::Inner { future, limits } => {
                (ready!(future.poll(cx)).map_err(Into::into), *limits)
            }
            EdgeProj::Failed { error, limits } => (
                Err(error
                    .take()
                    .unwrap_or_else(|| "polled after completion".into())),
                *limits,
            ),
        };
        Poll::Ready(Ok(answer.unwrap_or_else(|error| {
            Rejection::from_layer_error(&error, limits).into_response()
        })))
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    const LIMITS: EdgeLimits = EdgeLimits {
        request_timeout: Duration::from_secs(7),
        max_in_flight: 3,
    };

    /// What the edge answers for what the inner service returned.
    async fn edge(inner: Result<Response, BoxError>) -> Response {
        let inner = std::sync::Mutex::new(Some(inner));
        let service = tower::service_fn(move |_req: ()| {
            let answer = inner
                .lock()
                .ok()
                .and_then(|mut a| a.take())
                .unwrap_or_else(|| Err("called twice".into()));
            std::future::ready(answer)
        });
        let mut service = EdgeLayer::new(LIMITS).layer(service);
        let Ok(response) = service.ready().await.expect("ready").call(()).await;
        response
    }

    async fn body(response: Response) -> Bytes {
        let Ok(collected) = http_body_util::BodyExt::collect(response.into_body()).await;
        collected.to_bytes()
    }

    async fn status_json(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let body = body(response).await;
        (status, serde_json::from_slice(&body).expect("Status JSON"))
    }

    #[tokio::test]
    async fn load_shed_overload_is_a_503_status_with_retry_after() {
        let response = edge(Err(tower::load_shed::error::Overloaded::new().into())).await;
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        let (status, json) = status_json(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["reason"], "ServiceUnavailable");
        assert!(json["message"]
            .as_str()
            .is_some_and(|m| m.contains("limits.max_in_flight (3)")));
    }

    #[tokio::test]
    async fn timeout_elapsed_is_a_504_timeout_status() {
        let elapsed = tower::timeout::error::Elapsed::new();
        let (status, json) = status_json(edge(Err(elapsed.into())).await).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json["reason"], "Timeout");
        assert_eq!(json["code"], 504);
        assert!(json["message"]
            .as_str()
            .is_some_and(|m| m.contains("limits.request_timeout (7s)")));
    }

    #[tokio::test]
    async fn gatehouses_own_answers_pass_untouched() {
        let own = json_response(
            StatusCode::GATEWAY_TIMEOUT,
            Bytes::from_static(b"{\"a\":1}"),
        );
        let response = edge(Ok(own)).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(&body(response).await[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn an_unexpected_layer_error_is_a_500_status() {
        let (status, json) = status_json(edge(Err("broken".into())).await).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["reason"], "InternalError");
    }
}
