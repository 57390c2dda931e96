//! The one place where a failure becomes an HTTP answer.
//!
//! Inside, code returns typed errors; at the edge each becomes a `Rejection`, answered as a
//! Kubernetes `Status` object so that the apiserver's logs (and curl) show the reason.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use serde::Serialize;

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
            Self::Panic | Self::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::Panic | Self::Encode(_) => "InternalError",
            Self::Unavailable | Self::Overloaded { .. } => "ServiceUnavailable",
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
