//! The wrappers that report a connection's [`Activity`]: around the service (a request is in
//! flight from its call until its answer is taken), around each answer (taken once hyper has
//! pulled its last byte) and around the socket (writes it would not accept).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tower::util::Oneshot;

use super::activity::Activity;
use crate::error::Response;
use crate::stack::PeerAddr;

/// Answers are handed to hyper in pieces of this size. hyper polls an h2 answer for its next
/// piece only once the previous one has flow-control capacity, so the rest of a large answer
/// stays here, counted as not yet taken, while the peer keeps its window shut. 16 KiB is h2's
/// default frame size.
const CHUNK: usize = 16 * 1024;

/// One connection's service for hyper: the stack, with each request counted in flight.
///
/// hyper calls a service through `&self`, and tower's `call` takes `&mut self`, so hyper-util's
/// adapter clones the whole stack for each request (an atomic increment and decrement of every
/// `Arc` in it, shared with the other workers' requests). The stack is always ready at once, so
/// this holds one copy per connection and calls it in place, under a lock nobody else takes
/// (hyper calls the service from the connection's task only); a clone answers only if the
/// stack ever is not ready.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: Mutex<S>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl<S> Tracked<S> {
    /// `inner` serving the connection from `peer`.
    pub(crate) fn new(inner: S, activity: Arc<Activity>, peer: SocketAddr) -> Self {
        Self {
            inner: Mutex::new(inner),
            activity,
            peer,
        }
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone,
{
    type Response = http::Response<AnswerBody>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future, Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        let ticket = Ticket::new(self.activity.clone());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cx = Context::from_waker(Waker::noop());
        let call = match inner.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Call::Called {
                future: inner.call(req),
            },
            // Waits for readiness on a copy, as hyper-util's adapter always does.
            Poll::Pending => Call::Waiting {
                future: Oneshot::new(inner.clone(), req),
            },
        };
        TrackedFuture {
            call,
            ticket: Some(ticket),
        }
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
struct Ticket {
    activity: Arc<Activity>,
    answer: Option<(Instant, u64)>,
}

impl Ticket {
    fn new(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self {
            activity,
            answer: None,
        }
    }

    /// The answer is ready: from now on it counts against `limits.send_timeout`.
    fn answering(&mut self) {
        if self.answer.is_none() {
            self.answer = Some(self.activity.answer_started());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.activity.request_ended(self.answer);
    }
}

pin_project_lite::pin_project! {
    /// The stack's future; its answer carries the request's ticket.
    pub(crate) struct TrackedFuture<F, W> {
        #[pin]
        call: Call<F, W>,
        ticket: Option<Ticket>,
    }
}

pin_project_lite::pin_project! {
    /// The stack called in place, or a copy waiting to be ready.
    #[project = CallProj]
    enum Call<F, W> {
        Called { #[pin] future: F },
        Waiting { #[pin] future: W },
    }
}

impl<F, W> Future for TrackedFuture<F, W>
where
    F: Future<Output = Result<Response, Infallible>>,
    W: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<http::Response<AnswerBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(match this.call.project() {
            CallProj::Called { future } => future.poll(cx),
            CallProj::Waiting { future } => future.poll(cx),
        });
        let ticket = this.ticket.take().map(|mut ticket| {
            ticket.answering();
            ticket
        });
        Poll::Ready(Ok(response.map(|body| AnswerBody::new(body, ticket))))
    }
}

/// An answer on its way to the peer; the request ends when hyper drops it.
#[derive(Debug)]
pub(crate) struct AnswerBody {
    rest: Bytes,
    /// Large answers are handed out as copies, so a piece stuck in h2's buffers does not keep
    /// the whole answer alive once this body is gone.
    copy: bool,
    ticket: Option<Ticket>,
}

impl AnswerBody {
    fn new(body: Full<Bytes>, ticket: Option<Ticket>) -> Self {
        let rest = into_bytes(body);
        Self {
            copy: rest.len() > CHUNK,
            rest,
            ticket,
        }
    }
}

/// The bytes of a `Full` body, which has them ready: one poll, no waker needed.
fn into_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    match http_body::Body::poll_frame(body.as_mut(), &mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            this.ticket = None;
            return Poll::Ready(None);
        }
        let chunk = if this.copy {
            let n = this.rest.len().min(CHUNK);
            let chunk = Bytes::copy_from_slice(&this.rest[..n]);
            this.rest.advance(n);
            if this.rest.is_empty() {
                // Release the answer's storage now rather than when hyper drops this body.
                this.rest = Bytes::new();
            }
            chunk
        } else {
            std::mem::take(&mut this.rest)
        };
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

pin_project_lite::pin_project! {
    /// The connection's byte stream, reporting writes the socket would not take.
    #[derive(Debug)]
    pub(crate) struct WatchedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> WatchedIo<T> {
    /// `inner`, reporting to `activity`.
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    fn report<R>(activity: &Activity, poll: &Poll<io::Result<R>>) {
        if poll.is_pending() {
            activity.write_blocked();
        }
    }
}

impl<T: AsyncRead> AsyncRead for WatchedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write(cx, buf);
        Self::report(this.activity, &poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.inner.poll_write_vectored(cx, bufs);
        Self::report(this.activity, &poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_flush(cx);
        match &poll {
            // Partial writes do not count: only a completed flush means all of it reached the socket.
            Poll::Ready(Ok(())) => this.activity.write_flushed(),
            Poll::Pending => this.activity.write_blocked(),
            Poll::Ready(Err(_)) => {}
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.inner.poll_shutdown(cx);
        Self::report(this.activity, &poll);
        poll
    }
}
