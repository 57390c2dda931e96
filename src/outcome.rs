//! What a handler tells the access log and the request metrics about its answer: the decision
//! and, on `/authenticate`, who it was for. The access-log layer opens a slot around each
//! request ([`scope`], a tokio task-local the layer's future owns) and reads it when the answer
//! is ready; handlers fill it with [`decided`] and [`user`] without knowing the stack.
//!
//! Response extensions did this before at ~770 instructions and three allocations per request
//! for the decision alone (the extension map, its table, the boxed value), plus two for the user.
//! The slot costs a thread-local swap per poll and allocates nothing.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

use crate::authn::Identity;
use crate::metrics::Decision;

tokio::task_local! {
    static OUTCOME: Outcome;
}

/// A request's decision and user, as far as the handler told them.
#[derive(Default)]
pub struct Outcome {
    decision: Cell<Option<Decision>>,
    user: Cell<Option<User>>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Cell` shows only `Copy` contents; the user is not one.
        f.debug_struct("Outcome")
            .field("decision", &self.decision.get())
            .finish_non_exhaustive()
    }
}

/// Who an `/authenticate` review was decided for (never the token).
#[derive(Clone, Debug)]
pub enum User {
    /// Not authenticated: refused, or GitHub could not be asked.
    Unauthenticated,
    /// The identity the review answered with (shared with the token cache, not copied).
    Identity(Arc<Identity>),
}

/// What the access log shows for a review that did not authenticate.
pub const UNAUTHENTICATED: &str = "unauthenticated";

impl User {
    /// The name the access log shows: the username, or [`UNAUTHENTICATED`].
    pub fn name(&self) -> &str {
        match self {
            Self::Unauthenticated => UNAUTHENTICATED,
            Self::Identity(identity) => &identity.username,
        }
    }
}

impl Outcome {
    /// The decision the handler reported, if any.
    pub fn decision(&self) -> Option<Decision> {
        self.decision.get()
    }

    /// The user the handler reported, if any.
    pub fn take_user(&self) -> Option<User> {
        self.user.take()
    }

    /// Reports everything in `self` into the current request's slot.
    fn report(self) {
        if let Some(decision) = self.decision.get() {
            decided(decision);
        }
        if let Some(user) = self.user.take() {
            self::user(user);
        }
    }
}

/// Runs `future` with an empty slot for its handler to fill; read it back with
/// [`TaskLocalFuture::take_value`] once the future is done.
pub fn scope<F: Future>(future: F) -> TaskLocalFuture<Outcome, F> {
    OUTCOME.scope(Outcome::default(), future)
}

/// Reports the request's decision. Does nothing outside a [`scope`] (a benchmark calling a
/// handler directly).
pub fn decided(decision: Decision) {
    let _ = OUTCOME.try_with(|outcome| outcome.decision.set(Some(decision)));
}

/// Reports who the request was decided for.
pub fn user(user: User) {
    let _ = OUTCOME.try_with(|outcome| outcome.user.set(Some(user)));
}

/// Runs `future` in a slot of its own and returns what it reported, for work moved to another
/// thread (the blocking pool), where the request's slot is not reachable; hand the result to
/// [`report`] back on the request's task.
pub async fn carried<F: Future>(future: F) -> (F::Output, Outcome) {
    let mut scoped = std::pin::pin!(scope(future));
    let output = scoped.as_mut().await;
    (output, scoped.take_value().unwrap_or_default())
}

/// Reports what [`carried`] brought back into the current request's slot.
pub fn report(outcome: Outcome) {
    outcome.report();
}
