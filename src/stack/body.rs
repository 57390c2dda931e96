//! Reads the body whole before any parsing: at most `limits.max_body` bytes (413 past it), and on
//! webhook routes only a JSON one (415 otherwise, see `content_type`).
//!
//! Hand-written: tower-http's `RequestBodyLimitLayer` wraps every answer in its own body type
//! (the listener takes `Full`) and answers plain text, and `http_body_util::Limited` hides the
//! rest of an oversize body, which is read (within a budget) before answering; neither collects
//! into one `Bytes`. The future is a named state machine, not a boxed `async` block.
//!
//! An answer sent while the client is still sending makes h2 reset the stream after it, and some
//! clients (curl 7 among them) then report a stream error instead of the status. Reading the rest
//! of a refused body first, at most `max_body` bytes of it, lets every client see the answer; the
//! request's deadline bounds the time this takes as the budget bounds the bytes.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, Request};
use http_body::Body;
use tower::BoxError;

use super::content_type;
use crate::error::{Rejection, Response};

/// Adds body collection with a size limit and the content-type check.
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
fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

impl<S, B> tower::Service<Request<B>> for CollectBody<S>
where
    S: tower::Service<Request<Bytes>, Response = Response> + Clone,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CollectFuture<S, S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let max = self.max;
        let declared = declared_length(&req);
        // A body declared over max_body is refused without reading a byte of it: its rest is
        // more than gatehouse reads to let the client see the answer.
        let over = declared.is_some_and(|n| n > max);
        let refused = match content_type::check(&req) {
            Err(rejection) => Some(rejection),
            Ok(()) if over => Some(Rejection::PayloadTooLarge { limit: max }),
            Ok(()) => None,
        };
        let (parts, body) = req.into_parts();
        let state = match refused {
            Some(rejection) => State::Draining {
                budget: (!over).then_some(max),
                rejection: Some(rejection),
            },
            None => {
                // The clone is ready-less; take the one poll_ready prepared (tower's usual dance).
                let clone = self.inner.clone();
                State::Reading {
                    inner: Some(std::mem::replace(&mut self.inner, clone)),
                    parts: Some(parts),
                    collected: Collected::new(declared),
                }
            }
        };
        CollectFuture { body, max, state }
    }
}

/// The most a declared `Content-Length` reserves ahead of the bytes that arrived.
const PRESIZE: u64 = 256 * 1024;

/// A body being collected. Most bodies arrive in one frame: it is kept as it came, and bytes
/// are copied only when there are several frames, into one buffer sized from `Content-Length`.
#[derive(Debug)]
struct Collected {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
    total: u64,
    declared: Option<u64>,
}

impl Collected {
    fn new(declared: Option<u64>) -> Self {
        Self {
            first: None,
            rest: None,
            total: 0,
            declared,
        }
    }

    /// Adds a frame's bytes; false once more than `max` have arrived.
    fn push(&mut self, data: Bytes, max: u64) -> bool {
        self.total = self.total.saturating_add(data.len() as u64);
        if self.total > max {
            return false;
        }
        match (&self.first, &mut self.rest) {
            (None, _) => self.first = Some(data),
            (Some(head), None) => {
                // Content-Length is the peer's word: trust it only up to PRESIZE, so two tiny
                // frames cannot make us reserve `max` bytes; past that the buffer grows as bytes come.
                let capacity = self
                    .declared
                    .unwrap_or(self.total)
                    .clamp(self.total, max)
                    .min(self.total.max(PRESIZE));
                let mut buf = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                self.rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
        true
    }

    /// The whole body.
    fn take(&mut self) -> Bytes {
        match (self.first.take(), self.rest.take()) {
            (_, Some(buf)) => buf.freeze(),
            (Some(head), None) => head,
            (None, None) => Bytes::new(),
        }
    }
}

pin_project_lite::pin_project! {
    /// Reads the body, then hands it to the inner service; or answers a rejection.
    pub struct CollectFuture<S, F, B> {
        body: B,
        max: u64,
        #[pin]
        state: State<S, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        /// Reading the body; the inner service is called once it is whole.
        Reading { inner: Option<S>, parts: Option<Parts>, collected: Collected },
        /// Reading and dropping at most `budget` more bytes (none if `None`), then answering.
        Draining { budget: Option<u64>, rejection: Option<Rejection> },
        /// The inner service is answering.
        Calling { #[pin] future: F },
    }
}

impl<S, B> Future for CollectFuture<S, S::Future, B>
where
    S: tower::Service<Request<Bytes>, Response = Response>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Reading {
                    inner,
                    parts,
                    collected,
                } => match ready!(read(this.body, cx, collected, *this.max)) {
                    Ok(bytes) => match (inner.take(), parts.take()) {
                        (Some(mut inner), Some(parts)) => State::Calling {
                            future: inner.call(Request::from_parts(parts, bytes)),
                        },
                        // Polled after completion: a caller bug, answer rather than panic.
                        _ => return Poll::Ready(Ok(Rejection::Panic.into_response())),
                    },
                    Err(ReadError::TooLarge) => State::Draining {
                        budget: Some(*this.max),
                        rejection: Some(Rejection::PayloadTooLarge { limit: *this.max }),
                    },
                    Err(ReadError::Read(e)) => {
                        return Poll::Ready(Ok(Rejection::BodyRead(e).into_response()))
                    }
                },
                StateProj::Draining { budget, rejection } => {
                    ready!(drain(this.body, cx, budget));
                    let rejection = rejection.take().unwrap_or(Rejection::Panic);
                    return Poll::Ready(Ok(rejection.into_response()));
                }
            };
            this.state.set(next);
        }
    }
}

/// Why a body could not be collected.
enum ReadError {
    /// More than the limit arrived.
    TooLarge,
    /// The connection failed while reading.
    Read(String),
}

/// Reads frames into `collected` until the body ends or exceeds `max`.
fn read<B>(
    body: &mut B,
    cx: &mut Context<'_>,
    collected: &mut Collected,
    max: u64,
) -> Poll<Result<Bytes, ReadError>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => return Poll::Ready(Ok(collected.take())),
            Some(Err(e)) => return Poll::Ready(Err(ReadError::Read(e.into().to_string()))),
            Some(Ok(frame)) => {
                // Trailers carry nothing a review needs.
                if let Ok(data) = frame.into_data() {
                    if !collected.push(data, max) {
                        return Poll::Ready(Err(ReadError::TooLarge));
                    }
                }
            }
        }
    }
}

/// Reads and drops what is left of `body` until it ends, fails or sends more than `budget`.
fn drain<B>(body: &mut B, cx: &mut Context<'_>, budget: &mut Option<u64>) -> Poll<()>
where
    B: Body<Data = Bytes> + Unpin,
{
    while let Some(left) = *budget {
        *budget = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) => left.checked_sub(data.len() as u64),
                None => Some(left),
            },
            None | Some(Err(_)) => None,
        };
    }
    Poll::Ready(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http::StatusCode;
    use http_body::Frame;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::error::json_response;
    use crate::router::Route;

    /// A body handing out `frames` one per poll, counting how many were taken.
    struct Frames {
        frames: VecDeque<Bytes>,
        taken: Arc<Mutex<usize>>,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let frame = self.frames.pop_front();
            if frame.is_some() {
                if let Ok(mut taken) = self.taken.lock() {
                    *taken += 1;
                }
            }
            Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
        }
    }

    /// The stack's body layer (4 KiB at most) around a handler that echoes the collected body,
    /// and what the handler saw.
    async fn serve(
        frames: Vec<Bytes>,
        content_type: &str,
        declared: Option<usize>,
    ) -> (StatusCode, Option<Bytes>, usize) {
        let seen = Arc::new(Mutex::new(None));
        let handler = {
            let seen = seen.clone();
            tower::service_fn(move |req: Request<Bytes>| {
                let seen = seen.clone();
                async move {
                    if let Ok(mut seen) = seen.lock() {
                        *seen = Some(req.body().clone());
                    }
                    Ok::<_, Infallible>(json_response(StatusCode::OK, Bytes::new()))
                }
            })
        };
        let taken = Arc::new(Mutex::new(0));
        let mut request = Request::post("/validate").header("content-type", content_type);
        if let Some(n) = declared {
            request = request.header("content-length", n);
        }
        let mut request = request
            .body(Frames {
                frames: frames.into(),
                taken: taken.clone(),
            })
            .expect("request");
        request.extensions_mut().insert(Route::Validate);
        let mut service = CollectBodyLayer::new(4096).layer(handler);
        let response = ServiceExt::<Request<Frames>>::ready(&mut service)
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("infallible");
        let seen = seen.lock().ok().and_then(|mut s| s.take());
        let taken = taken.lock().map(|t| *t).unwrap_or_default();
        (response.status(), seen, taken)
    }

    #[test]
    fn a_declared_length_reserves_at_most_presize_ahead_of_the_bytes() {
        let max = 4 * 1024 * 1024;
        let mut honest = Collected::new(Some(6000));
        assert!(honest.push(Bytes::from_static(b"a"), max));
        assert!(honest.push(Bytes::from_static(b"b"), max));
        assert_eq!(honest.rest.as_ref().map(BytesMut::capacity), Some(6000));
        // A peer declaring max_body and sending two bytes gets no 4 MiB buffer.
        let mut liar = Collected::new(Some(max));
        assert!(liar.push(Bytes::from_static(b"a"), max));
        assert!(liar.push(Bytes::from_static(b"b"), max));
        let capacity = liar.rest.as_ref().map_or(0, BytesMut::capacity);
        assert!(capacity <= PRESIZE as usize, "{capacity}");
        assert_eq!(liar.take().as_ref(), b"ab");
    }

    #[tokio::test]
    async fn one_frame_reaches_the_handler_without_a_copy() {
        let frame = Bytes::from(vec![b'{'; 3000]);
        let (status, seen, _) = serve(vec![frame.clone()], "application/json", Some(3000)).await;
        assert_eq!(status, StatusCode::OK);
        let seen = seen.expect("handler called");
        assert_eq!(seen.as_ptr(), frame.as_ptr(), "the frame was copied");
        assert_eq!(seen.len(), 3000);
    }

    #[tokio::test]
    async fn several_frames_are_joined_in_order() {
        let frames = vec![
            Bytes::from_static(b"{\"a\":"),
            Bytes::from_static(b"1"),
            Bytes::from_static(b"}"),
        ];
        let (status, seen, taken) = serve(frames, "application/json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(taken, 3);
    }

    #[tokio::test]
    async fn past_max_body_the_rest_is_read_within_max_body_then_413() {
        // 3 KiB frames against 4 KiB: the second crosses the limit; the third and fourth (6 KiB
        // more) are read and dropped, crossing the budget; the fifth is never asked for.
        let frames = vec![Bytes::from(vec![b' '; 3072]); 6];
        let (status, seen, taken) = serve(frames, "application/json", None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(seen.is_none(), "the handler must not run");
        assert_eq!(taken, 4);
    }

    #[tokio::test]
    async fn a_body_declared_over_max_body_is_not_read() {
        let frames = vec![Bytes::from(vec![b' '; 3072]); 2];
        let (status, seen, taken) = serve(frames, "application/json", Some(6144)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(seen.is_none());
        assert_eq!(taken, 0);
        // Not JSON either: the content type is named first, still without reading.
        let frames = vec![Bytes::from(vec![b' '; 3072]); 2];
        let (status, _, taken) = serve(frames, "text/plain", Some(6144)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(taken, 0);
    }

    #[tokio::test]
    async fn a_refused_content_type_is_answered_after_reading_the_body() {
        let frames = vec![Bytes::from(vec![b' '; 1000]); 3];
        let (status, seen, taken) = serve(frames, "text/plain", Some(3000)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(seen.is_none());
        assert_eq!(taken, 3);
    }
}
