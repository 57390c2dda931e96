//! A future polled only when something it waits on woke it.
//!
//! A connection task selects over hyper's connection and the watchdog. `select!` polls every
//! branch each time the task wakes, and the socket wakes it two or more times per request, so
//! the watchdog's timer and notification were polled that often for nothing (~500 instructions
//! a request). [`OnWake`] hands the inner future a waker of its own that records the wake-up
//! before waking the task, and skips the poll when nothing was recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The inner future's waker: records the wake-up, then wakes the task.
#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// `future`, polled on its first poll, when the task polling it changes, and after it woke.
    #[derive(Debug)]
    pub(crate) struct OnWake<F> {
        #[pin]
        future: F,
        flag: Arc<Flag>,
        // `flag` as a waker, made once.
        waker: Waker,
        // The task waker `flag` forwards to, as last handed over.
        task: Option<Waker>,
    }
}

impl<F> OnWake<F> {
    /// Wraps `future`.
    pub(crate) fn new(future: F) -> Self {
        let flag = Arc::new(Flag::default());
        Self {
            future,
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            // First poll, or another task: forward to it, and poll to register with it.
            *this
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            *this.task = Some(cx.waker().clone());
            this.flag.woken.store(true, Ordering::Release);
        }
        // Cleared before polling: a wake-up during the poll is recorded for the next one.
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking whoever polled it last when set.
    #[derive(Default)]
    struct Gate {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.ready.store(true, Ordering::SeqCst);
            if let Some(w) = self.waker.lock().expect("lock").take() {
                w.wake();
            }
        }

        fn polls(&self) -> usize {
            self.polls.load(Ordering::SeqCst)
        }

        async fn wait(&self) {
            std::future::poll_fn(|cx| {
                self.polls.fetch_add(1, Ordering::SeqCst);
                if self.ready.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                *self.waker.lock().expect("lock") = Some(cx.waker().clone());
                Poll::Pending
            })
            .await
        }
    }

    /// Counts wake-ups of the task.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_it_woke_and_passes_its_wake_up_on() {
        let gate = Gate::default();
        let task = Arc::new(Task::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(OnWake::new(gate.wait()));

        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(gate.polls(), 1, "the first poll reaches the inner future");
        // The task is woken for other reasons (the socket): the inner future is left alone.
        for _ in 0..10 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(gate.polls(), 1, "polled though nothing woke it");

        gate.open();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was not woken");
        assert!(future.as_mut().poll(&mut cx).is_ready());
        assert_eq!(gate.polls(), 2);
    }

    #[test]
    fn a_new_task_gets_a_poll_and_the_wake_ups() {
        let gate = Gate::default();
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let mut future = std::pin::pin!(OnWake::new(gate.wait()));
        let waker = Waker::from(first.clone());
        assert!(future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let waker = Waker::from(second.clone());
        assert!(future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(
            gate.polls(),
            2,
            "a new task must register with the inner future"
        );
        gate.open();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
