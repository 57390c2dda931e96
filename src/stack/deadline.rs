//! `limits.request_timeout`: a request not answered within it fails with tower's `Elapsed`,
//! which the edge (`error.rs`) answers 504. The body is read below this layer, so a body that
//! never arrives times out too.
//!
//! Hand-written: tower's `Timeout` creates its timer in `call` for every request, though most
//! are answered at their first poll (the body came with the head) and never need it; creating
//! one reads the clock and updates the runtime handle's reference count, shared by every
//! worker. This one reads the clock in `call` (the deadline counts from there, as tower's does:
//! an h2 stream waiting for its first poll, or synchronous work before the first await, spends
//! the request's time) and creates the timer only when the answer is not ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::timeout::error::Elapsed;
use tower::BoxError;

/// Adds the request deadline.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// Requests end after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails requests not answered within the timeout with `Elapsed`.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> tower::Service<R> for Deadline<S>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        DeadlineFuture {
            future: self.inner.call(req),
            deadline: Instant::now() + self.timeout,
            sleep: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner answer, and the timer once it was not ready at once.
    pub struct DeadlineFuture<F> {
        #[pin]
        future: F,
        deadline: Instant,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(answer) = this.future.poll(cx) {
            return Poll::Ready(answer.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        Poll::Ready(Err(Elapsed::new().into()))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;

    #[tokio::test]
    async fn an_answer_ready_at_once_creates_no_timer_and_a_late_one_fails() {
        let mut service = DeadlineLayer::new(Duration::from_millis(50)).layer(tower::service_fn(
            |late: bool| async move {
                if late {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>("answer")
            },
        ));
        let mut ready_now = std::pin::pin!(service.call(false));
        assert!(ready_now.sleep.is_none());
        let answer = std::future::poll_fn(|cx| ready_now.as_mut().poll(cx)).await;
        assert_eq!(answer.ok(), Some("answer"));
        assert!(
            ready_now.sleep.is_none(),
            "a timer for an answer ready at once"
        );

        let late = tokio::time::timeout(Duration::from_secs(60), service.call(true));
        let error = late
            .await
            .expect("the deadline passed")
            .expect_err("an error");
        assert!(error.is::<Elapsed>(), "{error}");
    }

    #[tokio::test]
    async fn the_deadline_counts_from_the_call_not_the_first_poll() {
        let timeout = Duration::from_millis(20);
        let mut service = DeadlineLayer::new(timeout).layer(tower::service_fn(|()| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(())
        }));
        let mut late = std::pin::pin!(service.call(()));
        // Waiting to be polled (an h2 stream in the run queue) spends the request's time.
        tokio::time::sleep(timeout * 2).await;
        let first = std::future::poll_fn(|cx| Poll::Ready(late.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(Err(error)) => assert!(error.is::<Elapsed>(), "{error}"),
            Poll::Ready(Ok(())) => panic!("answered"),
            Poll::Pending => panic!("the deadline restarted at the first poll"),
        }
    }
}
