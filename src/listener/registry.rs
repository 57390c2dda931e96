//! The open connections: at most `limits.max_connections`, the longest-idle one making room for a
//! new one at the cap, and all of them drained together at shutdown.
//!
//! Eviction rather than reaping alone: idle connections are already closed after
//! `limits.idle_timeout`, but that must stay above the apiserver's 90s pool timeout, so peers
//! that connect and idle could hold every slot for minutes at a time. Evicting the longest-idle
//! connection (never one with a request in flight) when a new one arrives at the cap means idle
//! peers only hold slots nobody else needs. An evicted apiserver connection costs nothing: Go
//! retries a request on a new connection when the server closed an idle one (HTTP/1.1) or sent
//! GOAWAY (h2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::activity::{Activity, CloseRequest};
use crate::metrics::Metrics;

/// Whether a new connection may be served.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A slot is free.
    Now(OwnedSemaphorePermit),
    /// An idle connection was asked to close; its slot is the new one's once it has.
    AfterEviction,
    /// Every connection has a request in flight: refuse the new one.
    Refused,
}

/// All open connections.
#[derive(Debug)]
pub(crate) struct Registry {
    slots: Arc<Semaphore>,
    open: Mutex<Open>,
    next_id: AtomicU64,
    emptied: Notify,
    /// Where open connections, evictions and refusals are counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug, Default)]
struct Open {
    connections: HashMap<u64, Arc<Activity>>,
    /// Set by [`Registry::close_all`]: applies to connections registered later too.
    closing: Option<CloseRequest>,
}

/// A connection's place in the registry; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<Registry>,
    id: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(metrics) = &self.registry.metrics {
            metrics.connection_closed();
        }
        let mut open = self.registry.open();
        open.connections.remove(&self.id);
        if open.connections.is_empty() {
            self.registry.emptied.notify_waiters();
        }
    }
}

impl Registry {
    /// Room for `max` connections, counted in `metrics` if given.
    pub(crate) fn new(max: usize, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            open: Mutex::new(Open::default()),
            next_id: AtomicU64::new(0),
            emptied: Notify::new(),
            metrics,
        })
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // Map inserts and removes cannot be left half-done by a panic: keep using it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a free slot, or makes one by evicting the longest-idle connection.
    pub(crate) fn admit(&self) -> Admission {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Admission::Now(permit);
        }
        let open = self.open();
        let victim = open
            .connections
            .values()
            .filter_map(|activity| activity.evictable_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        let admission = match victim {
            Some((_, activity)) => {
                activity.request_close(CloseRequest::Evict);
                Admission::AfterEviction
            }
            None => Admission::Refused,
        };
        if let Some(metrics) = &self.metrics {
            match admission {
                Admission::AfterEviction => metrics.connection_evicted(),
                _ => metrics.connection_refused(),
            }
        }
        admission
    }

    /// Waits at most `bound` for a slot, after an eviction. Released slots go to waiters first
    /// (tokio's semaphore is fair), so a newer connection cannot take this one's.
    pub(crate) async fn wait_slot(&self, bound: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(bound, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Records a connection holding `permit`.
    pub(crate) fn register(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        activity: Arc<Activity>,
    ) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open();
        if let Some(why) = open.closing {
            activity.request_close(why);
        }
        open.connections.insert(id, activity);
        drop(open);
        if let Some(metrics) = &self.metrics {
            metrics.connection_opened();
        }
        Slot {
            registry: self.clone(),
            id,
            _permit: permit,
        }
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.open().connections.len()
    }

    /// Asks every connection, open now or registered later, to close (`why`).
    pub(crate) fn close_all(&self, why: CloseRequest) {
        let mut open = self.open();
        open.closing = Some(why);
        for activity in open.connections.values() {
            activity.request_close(why);
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn emptied(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open().connections.is_empty() {
                return;
            }
            notified.await;
        }
    }
}
