//! A panic in a handler becomes a 500 for that request; the server keeps serving.
//!
//! Hand-written rather than tower-http's `CatchPanicLayer`, which boxes every answer's body
//! (`UnsyncBoxBody`: an allocation per request) where the listener takes gatehouse's `Full`.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;

use crate::error::{Rejection, Response};

/// Adds panic catching.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// Turns a panic, in `call` or while polling, into a 500.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for CatchPanic<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => CatchPanicFuture::Running { future },
            Err(_) => {
                tracing::error!("handler panicked; answered 500");
                CatchPanicFuture::Done
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, or the record that it panicked.
    #[project = CatchPanicProj]
    pub enum CatchPanicFuture<F> {
        /// Still running.
        Running { #[pin] future: F },
        /// Panicked (or finished): answer 500 if polled.
        Done,
    }
}

impl<F, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = match self.as_mut().project() {
            CatchPanicProj::Running { future } => {
                catch_unwind(AssertUnwindSafe(|| future.poll(cx)))
            }
            CatchPanicProj::Done => return Poll::Ready(Ok(Rejection::Panic.into_response())),
        };
        match polled {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("handler panicked; answered 500");
                // Never poll a future that panicked again.
                self.set(CatchPanicFuture::Done);
                Poll::Ready(Ok(Rejection::Panic.into_response()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn panics_in_call_and_in_poll_become_500() {
        let mut in_call = CatchPanic {
            inner: tower::service_fn(
                |_req: Request<()>| -> std::future::Ready<Result<Response, Infallible>> {
                    panic!("boom in call")
                },
            ),
        };
        let response = in_call
            .ready()
            .await
            .expect("ready")
            .call(Request::new(()))
            .await;
        assert_eq!(response.map(|r| r.status().as_u16()).ok(), Some(500));

        let mut in_poll = CatchPanic {
            inner: tower::service_fn(|_req: Request<()>| async {
                if true {
                    panic!("boom in poll");
                }
                Ok::<Response, Infallible>(Rejection::Panic.into_response())
            }),
        };
        let response = in_poll
            .ready()
            .await
            .expect("ready")
            .call(Request::new(()))
            .await;
        assert_eq!(response.map(|r| r.status().as_u16()).ok(), Some(500));
    }
}
