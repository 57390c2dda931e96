//! Reads the body, at most `limits.max_body` bytes (413 past it), before any parsing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, Request};
use http_body_util::BodyExt;

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

/// The `Content-Length` a request declares, if it is a number.
pub(super) fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads and drops what is left of `body`, at most `budget` bytes.
///
/// An answer sent while the client is still sending makes h2 reset the stream after it, and
/// some clients (curl 7 among them) then report a stream error instead of the status. Reading
/// the rest first lets every client see the answer. Callers run under the request's deadline,
/// which bounds the time this takes as `budget` bounds the bytes.
pub(super) async fn discard<B>(body: B, budget: u64)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = pin!(body);
    let mut read: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len() as u64);
            if read > budget {
                return;
            }
        }
    }
}

/// Why a body could not be collected.
enum Collect {
    /// More than the limit arrived.
    TooLarge,
    /// The connection failed while reading.
    Read(String),
}

/// Reads all of `body` if it is at most `max` bytes, leaving the rest unread otherwise.
async fn collect<B>(
    body: &mut Pin<&mut B>,
    max: u64,
    declared: Option<u64>,
) -> Result<Bytes, Collect>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Most bodies arrive in one frame: keep it as is, and copy only when there are several.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Collect::Read(e.into().to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a review needs
        };
        total = total.saturating_add(data.len() as u64);
        if total > max {
            return Err(Collect::TooLarge);
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let capacity = declared.unwrap_or(total).clamp(total, max);
                let mut buf = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
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
            let declared = declared_length(&req);
            // Refuse a declared oversize body without reading a byte of it: its rest is over
            // max_body, more than gatehouse reads to let the client see the answer.
            if declared.is_some_and(|n| n > max) {
                return Ok(Rejection::PayloadTooLarge { limit: max }.into_response());
            }
            let (parts, body) = req.into_parts();
            let mut body = pin!(body);
            match collect(&mut body, max, declared).await {
                Ok(bytes) => inner.call(Request::from_parts(parts, bytes)).await,
                Err(Collect::TooLarge) => {
                    discard(body, max).await;
                    Ok(Rejection::PayloadTooLarge { limit: max }.into_response())
                }
                Err(Collect::Read(e)) => Ok(Rejection::BodyRead(e).into_response()),
            }
        })
    }
}
