//! What one connection is doing, and when it must close: requests in flight, answers the peer
//! has not taken yet, writes the socket would not accept, and how long it has been idle.
//!
//! hyper bounds none of these for h2: it keeps an answer for as long as the peer keeps its
//! flow-control window shut, and a connection without streams lives as long as it answers
//! pings. One watchdog per connection ([`Activity::verdict`]) turns them into deadlines.
//!
//! Requests only record what they do (under the connection's own, uncontended lock); they never
//! wake the watchdog. Waking it per request cost an extra poll of the whole connection task and
//! a timer re-registration each time. Instead the watchdog never sleeps longer than
//! [`Activity::heartbeat`]: a send or idle deadline that starts after it last looked is at least
//! that far away, so it still sees it in time and then sleeps until exactly that deadline. Only
//! the rare events that must act at once (a close request, a blocked socket) wake it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Once a connection was asked to close (GOAWAY sent), how long it may stay open with no request
/// in flight: enough for a well-behaved peer to read the GOAWAY and answer h2's closing PING.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The deadlines a connection lives by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// The first request must arrive this long after the connection was accepted.
    pub first_request: Duration,
    /// With no request in flight for this long, the connection is closed (h2: GOAWAY first).
    pub idle: Duration,
    /// An answer the peer has not taken within this long closes the connection.
    pub send: Duration,
}

/// What the watchdog decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Stop taking requests (h2 GOAWAY, HTTP/1.1 no keep-alive) and close when in-flight ones end.
    Shutdown(&'static str),
    /// Close the socket now.
    Close(&'static str),
    /// Close the socket now: the peer is not taking its answers.
    Stalled(&'static str),
}

/// Why the listener asked a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    /// The server is draining.
    Drain,
    /// A new connection needs its slot (`limits.max_connections`).
    Evict,
    /// The drain timed out: close now.
    Abort,
}

#[derive(Debug)]
struct State {
    /// Requests from the service call until their answer's body is dropped.
    requests: usize,
    /// Answers handed to hyper and not yet taken by the peer: when each started, and a
    /// sequence number, as two can start in the same instant. At most one per open stream.
    answers: Vec<(Instant, u64)>,
    next_answer: u64,
    /// Whether a request has arrived at all.
    served: bool,
    /// When `requests` last dropped to zero (or the connection opened).
    idle_since: Instant,
    /// What the listener asked for, if anything.
    close: Option<CloseRequest>,
    /// When this connection was told to shut down (GOAWAY sent).
    closing_since: Option<Instant>,
}

/// One connection's activity, shared by its task and the wrappers that report it.
#[derive(Debug)]
pub(crate) struct Activity {
    deadlines: Deadlines,
    opened: Instant,
    state: Mutex<State>,
    /// When the socket first refused a write that is still not flushed: nanoseconds after
    /// `opened`, plus one so that zero means "not blocked". An atomic: it is touched on every
    /// flush.
    write_blocked: AtomicU64,
    /// Wakes the watchdog for a close request or a blocked socket (never per request).
    changed: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub(crate) fn new(deadlines: Deadlines) -> Self {
        let opened = Instant::now();
        Self {
            deadlines,
            opened,
            state: Mutex::new(State {
                requests: 0,
                answers: Vec::new(),
                next_answer: 0,
                served: false,
                idle_since: opened,
                close: None,
                closing_since: None,
            }),
            write_blocked: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated (each update
        // is one statement), so a poisoned lock is still good to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request arrived (ended by [`Self::request_ended`]).
    pub(crate) fn request_started(&self) {
        let mut state = self.state();
        state.requests += 1;
        state.served = true;
    }

    /// A request ended (its answer was taken, or it was abandoned); `answer` is its answer's key.
    /// The idle deadline starts now; the watchdog finds it within [`Self::heartbeat`].
    pub(crate) fn request_ended(&self, answer: Option<(Instant, u64)>) {
        let mut state = self.state();
        if let Some(i) = answer.and_then(|key| state.answers.iter().position(|a| *a == key)) {
            state.answers.swap_remove(i);
        }
        state.requests = state.requests.saturating_sub(1);
        if state.requests == 0 {
            state.idle_since = Instant::now();
        }
    }

    /// A request's answer was handed to hyper; returns its key for [`Self::request_ended`].
    /// Its send deadline starts now; the watchdog finds it within [`Self::heartbeat`].
    pub(crate) fn answer_started(&self) -> (Instant, u64) {
        let mut state = self.state();
        let key = (Instant::now(), state.next_answer);
        state.next_answer += 1;
        state.answers.push(key);
        key
    }

    /// The longest the watchdog sleeps without looking again: no longer than any deadline a
    /// request can start (send, idle, and the close grace once shutting down), so one that
    /// starts after it looked is never missed.
    fn heartbeat(&self) -> Duration {
        let beat = self.deadlines.send.min(self.deadlines.idle);
        if self.state().closing_since.is_some() {
            beat.min(CLOSE_GRACE)
        } else {
            beat
        }
    }

    /// The socket would not take a write.
    pub(crate) fn write_blocked(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            let since = self.opened.elapsed().as_nanos();
            let since = u64::try_from(since).unwrap_or(u64::MAX - 1) + 1;
            self.write_blocked.store(since, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Everything written so far reached the socket.
    pub(crate) fn write_flushed(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// Asks the connection to close (see [`CloseRequest`]); an abort overrides a drain.
    pub(crate) fn request_close(&self, why: CloseRequest) {
        let mut state = self.state();
        if state.close != Some(CloseRequest::Abort) {
            state.close = Some(why);
        }
        drop(state);
        self.changed.notify_one();
    }

    /// True if the connection may be evicted for a new one: nothing in flight, not closing.
    /// Returns since when it has been idle.
    pub(crate) fn evictable_since(&self) -> Option<Instant> {
        let state = self.state();
        (state.requests == 0 && state.close.is_none() && state.closing_since.is_none())
            .then_some(state.idle_since)
    }

    /// The connection was told to shut down (GOAWAY sent).
    pub(crate) fn shutting_down(&self) {
        let mut state = self.state();
        if state.closing_since.is_none() {
            state.closing_since = Some(Instant::now());
        }
    }

    /// True once the listener asked this connection to close.
    pub(crate) fn close_requested(&self) -> bool {
        self.state().close.is_some()
    }

    /// Resolves when the listener asks this connection to close (used before hyper runs).
    pub(crate) async fn wait_close_request(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.close_requested() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves with what to do next, once a deadline passes.
    pub(crate) async fn verdict(&self) -> Verdict {
        loop {
            // Registered before reading the state, so no close request between the two is missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let look_again = now + self.heartbeat();
            let at = match self.next(now) {
                Some((at, verdict)) if at <= now => return verdict,
                Some((at, _)) => at.min(look_again),
                None => look_again,
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = notified => {}
            }
        }
    }

    /// The earliest deadline and what happens at it.
    fn next(&self, now: Instant) -> Option<(Instant, Verdict)> {
        let d = self.deadlines;
        let state = self.state();
        let mut next: Option<(Instant, Verdict)> = None;
        let mut consider = |at: Instant, verdict: Verdict| {
            if next.is_none_or(|(earliest, _)| at < earliest) {
                next = Some((at, verdict));
            }
        };
        match state.close {
            Some(CloseRequest::Abort) => return Some((now, Verdict::Close("drain timed out"))),
            Some(CloseRequest::Drain) if state.closing_since.is_none() => {
                consider(now, Verdict::Shutdown("draining"));
            }
            Some(CloseRequest::Evict) if state.closing_since.is_none() => {
                consider(
                    now,
                    Verdict::Shutdown("evicted for a new connection at max_connections"),
                );
            }
            _ => {}
        }
        if !state.served {
            consider(
                self.opened + d.first_request,
                Verdict::Close("no request within twice limits.handshake_timeout"),
            );
        }
        if let Some(started) = state.answers.iter().map(|(at, _)| *at).min() {
            consider(
                started + d.send,
                Verdict::Stalled("answer not taken within limits.send_timeout"),
            );
        }
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            consider(
                self.opened + Duration::from_nanos(blocked - 1) + d.send,
                Verdict::Stalled("socket not writable for limits.send_timeout"),
            );
        }
        if state.requests == 0 {
            match state.closing_since {
                None => consider(
                    state.idle_since + d.idle,
                    Verdict::Shutdown("idle for limits.idle_timeout"),
                ),
                // Told to close and nothing in flight: a peer that keeps it open is cut off.
                Some(closing) => consider(
                    closing.max(state.idle_since) + CLOSE_GRACE,
                    Verdict::Close("still open after shutdown"),
                ),
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines {
            first_request: Duration::from_secs(20),
            idle: Duration::from_secs(120),
            send: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn the_earliest_deadline_decides() {
        let activity = Activity::new(deadlines());
        let opened = activity.opened;
        // Nothing yet: the first request is awaited.
        assert_eq!(
            activity.next(opened).map(|(at, _)| at),
            Some(opened + Duration::from_secs(20))
        );
        activity.request_started();
        // Busy and no answer yet: no deadline at all (the request's own deadline applies).
        assert_eq!(activity.next(opened), None);
        let key = activity.answer_started();
        let (at, verdict) = activity.next(opened).expect("send deadline");
        assert_eq!(at, key.0 + Duration::from_secs(10));
        assert!(matches!(verdict, Verdict::Stalled(_)));
        activity.request_ended(Some(key));
        let (_, verdict) = activity.next(opened).expect("idle deadline");
        assert!(matches!(verdict, Verdict::Shutdown(_)));
        assert!(activity.evictable_since().is_some());
        activity.request_close(CloseRequest::Evict);
        assert!(activity.evictable_since().is_none());
        let now = Instant::now();
        assert!(matches!(activity.next(now), Some((at, Verdict::Shutdown(_))) if at == now));
        activity.shutting_down();
        let (at, verdict) = activity.next(now).expect("grace");
        assert!(at > now);
        assert!(matches!(verdict, Verdict::Close(_)));
        activity.request_close(CloseRequest::Abort);
        assert!(matches!(activity.next(now), Some((at, Verdict::Close(_))) if at == now));
    }

    /// Counts wake-ups of the task polling the watchdog.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `verdict` once with `waker`.
    fn poll_once(
        verdict: &mut std::pin::Pin<&mut impl std::future::Future<Output = Verdict>>,
        waker: &std::task::Waker,
    ) -> std::task::Poll<Verdict> {
        verdict
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
    }

    #[tokio::test]
    async fn requests_never_wake_the_watchdog_yet_their_deadlines_hold() {
        let short = Deadlines {
            first_request: Duration::from_secs(20),
            idle: Duration::from_millis(600),
            send: Duration::from_millis(300),
        };
        let counter = std::sync::Arc::new(CountingWaker(0.into()));
        let waker = std::task::Waker::from(counter.clone());
        let bound = Duration::from_secs(10);

        // A stalled answer is caught once its send deadline passes, though nothing woke the
        // watchdog when it started.
        let activity = Activity::new(short);
        let mut verdict = std::pin::pin!(activity.verdict());
        assert!(poll_once(&mut verdict, &waker).is_pending());
        for _ in 0..3 {
            activity.request_started();
            let key = activity.answer_started();
            activity.request_ended(Some(key));
        }
        activity.request_started();
        let stalled = activity.answer_started();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "a request woke the watchdog"
        );
        let v = tokio::time::timeout(bound, verdict)
            .await
            .expect("send deadline");
        assert_eq!(
            v,
            Verdict::Stalled("answer not taken within limits.send_timeout")
        );
        assert!(Instant::now() >= stalled.0 + short.send);

        // The idle deadline, started by the last request's end, is found the same way.
        let activity = Activity::new(short);
        let mut verdict = std::pin::pin!(activity.verdict());
        assert!(poll_once(&mut verdict, &waker).is_pending());
        activity.request_started();
        let key = activity.answer_started();
        activity.request_ended(Some(key));
        let idle_since = Instant::now();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "a request woke the watchdog"
        );
        let v = tokio::time::timeout(bound, verdict)
            .await
            .expect("idle deadline");
        assert_eq!(v, Verdict::Shutdown("idle for limits.idle_timeout"));
        assert!(Instant::now() >= idle_since + short.idle);
    }

    #[tokio::test]
    async fn a_blocked_write_has_a_deadline_until_flushed() {
        let activity = Activity::new(deadlines());
        activity.request_started();
        assert_eq!(activity.next(Instant::now()), None);
        activity.write_blocked();
        assert!(matches!(
            activity.next(Instant::now()),
            Some((_, Verdict::Stalled(_)))
        ));
        activity.write_flushed();
        assert_eq!(activity.next(Instant::now()), None);
    }
}
