//! The TTL decision cache: a tower layer in front of a decision service, backed by quick_cache.
//!
//! The key is a hash of the decision's *input* (what the decision reads), never of request bytes
//! and never a secret in the clear: two pods of one Deployment share an entry, and a cached
//! answer is re-encoded around the new request's uid by the caller. Concurrent misses for one
//! key run the decision once (quick_cache's placeholder guard); an error is handed to the calls
//! that waited for it and never cached.
//!
//! quick_cache rather than moka: ~70 B of bookkeeping per entry instead of ~370 B (issue 11's
//! memory target), a read-locked hit, and the same single flight. It has no TTL, so each entry
//! carries the instant it stops being served, checked on every lookup.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quick_cache::sync::{EntryAction, EntryResult};
use serde::Deserialize;

use crate::metrics::{self, Metrics};
use crate::units::HumanDuration;

/// `cache:` in config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long an allowed decision is reused.
    pub allow_ttl: HumanDuration,
    /// How long a denied decision is reused.
    pub deny_ttl: HumanDuration,
    /// Most entries kept; past it, entries used least since they came in go first (S3-FIFO).
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            // The ImagePolicyWebhook plugin's own defaults (allowTTL 300s, denyTTL 30s).
            allow_ttl: HumanDuration(Duration::from_secs(300)),
            deny_ttl: HumanDuration(Duration::from_secs(30)),
            // Bounded memory: a decision is a few hundred bytes.
            max_entries: 100_000,
        }
    }
}

/// A cache key: 128 bits of keyed hash over a decision's input.
pub type CacheKey = u128;

/// A request that names its decision's input.
pub trait Cacheable {
    /// Feeds every field the decision reads (and nothing else) into `state`.
    fn hash_input(&self, state: &mut KeyHasher);
}

/// An answer that says how long it may be reused.
pub trait Expiring {
    /// True for an answer kept for the allow TTL; false for the deny TTL.
    fn is_allow(&self) -> bool;
}

/// Two independently keyed SipHash-1-3 streams, so the 128-bit key is unpredictable to a client
/// (no crafted collisions) and accidental collisions are out of reach.
///
/// Inputs come as many short pieces (a length, a name, a tag); each SipHash `write` has a fixed
/// cost, so pieces gather in a small buffer on the stack and reach both streams in large writes.
pub struct KeyHasher {
    streams: (std::hash::DefaultHasher, std::hash::DefaultHasher),
    buf: [u8; KEY_BUF],
    len: usize,
}

/// Bytes gathered before they are hashed.
const KEY_BUF: usize = 256;

impl KeyHasher {
    fn new(keys: &(std::hash::RandomState, std::hash::RandomState)) -> Self {
        Self {
            streams: (keys.0.build_hasher(), keys.1.build_hasher()),
            buf: [0; KEY_BUF],
            len: 0,
        }
    }

    /// Adds bytes to both streams.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > KEY_BUF {
            self.flush();
            if bytes.len() > KEY_BUF {
                self.streams.0.write(bytes);
                self.streams.1.write(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        let gathered = &self.buf[..self.len];
        self.streams.0.write(gathered);
        self.streams.1.write(gathered);
        self.len = 0;
    }

    /// Adds a string with its length, so ("ab","c") and ("a","bc") differ.
    pub fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    fn finish(mut self) -> CacheKey {
        self.flush();
        (u128::from(self.streams.0.finish()) << 64) | u128::from(self.streams.1.finish())
    }
}

/// An error shared with the calls that waited for it: an `Arc<E>` of any error type (one cache,
/// one slot type), boxed so the slot stays two words (a key and slot take 32 bytes, not 48).
type SharedError = Arc<Box<dyn Any + Send + Sync>>;

/// What the cache holds for a key: an answer and when it stops being served, or (only for the
/// moment it takes to hand it to the waiting calls) the error of the computation they waited on.
#[derive(Clone)]
enum Slot<V> {
    /// Served to lookups made before `until`, in nanoseconds since the cache's epoch (8 bytes
    /// where an `Instant` takes 16).
    Answer { value: V, until: u64 },
    /// Served to no lookup: removed as soon as it is inserted.
    Failed(SharedError),
}

/// The cache and the hash keys it uses; cheap to clone (shared). `K` is the key: by default a
/// keyed hash of the input ([`DecisionCache::key`]); /authenticate keys by SHA-256 of the token.
pub struct DecisionCache<V, K = CacheKey> {
    cache: Arc<quick_cache::sync::Cache<K, Slot<V>>>,
    /// What the slots' expiry instants count from.
    epoch: Instant,
    allow: Duration,
    deny: Duration,
    keys: Arc<(std::hash::RandomState, std::hash::RandomState)>,
    /// Where hits and misses are counted, if anywhere.
    counted: Option<(Arc<Metrics>, metrics::Cache)>,
}

// By hand: a derive would ask for `V: Clone, K: Clone`, which sharing does not need.
impl<V, K> Clone for DecisionCache<V, K> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            epoch: self.epoch,
            allow: self.allow,
            deny: self.deny,
            keys: self.keys.clone(),
            counted: self.counted.clone(),
        }
    }
}

impl<V, K> std::fmt::Debug for DecisionCache<V, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("allow_ttl", &self.allow)
            .field("deny_ttl", &self.deny)
            .finish()
    }
}

/// What a lookup found in a slot.
enum Found<V> {
    /// An answer still fresh at the lookup.
    Fresh(V),
    /// The error of the computation this call waited on.
    Failed(SharedError),
    /// Nothing usable: an expired answer, or an error this call did not wait on.
    Stale,
}

impl<V: Clone> Slot<V> {
    /// What this slot gives a lookup made at `now`; `waited` when it came from the computation
    /// this call waited on (only then is an error its answer).
    fn found(&self, now: u64, waited: bool) -> Found<V> {
        match self {
            Self::Answer { value, until } if now < *until => Found::Fresh(value.clone()),
            Self::Failed(error) if waited => Found::Failed(error.clone()),
            _ => Found::Stale,
        }
    }
}

impl<V, K> DecisionCache<V, K>
where
    V: Expiring + Clone + Send + Sync + 'static,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A cache with the configured TTLs and bound.
    pub fn new(config: &CacheConfig) -> Self {
        Self::with_ttls(config.allow_ttl.0, config.deny_ttl.0, config.max_entries)
    }

    /// A cache keeping allowed answers `allow`, the others `deny`, at most `max_entries`.
    pub fn with_ttls(allow: Duration, deny: Duration, max_entries: u64) -> Self {
        Self {
            cache: Arc::new(bounded(max_entries)),
            epoch: Instant::now(),
            allow,
            deny,
            keys: Arc::new((std::hash::RandomState::new(), std::hash::RandomState::new())),
            counted: None,
        }
    }

    /// Counts this cache's hits and misses in `metrics` as `cache`.
    pub fn counted(mut self, metrics: Arc<Metrics>, cache: metrics::Cache) -> Self {
        self.counted = Some((metrics, cache));
        self
    }

    /// The cached answer for `key`, or `init`'s, run once however many callers miss together,
    /// and whether this call's `init` computed it. An error is returned to every waiting caller
    /// and not cached. An answer is served only to lookups made before its TTL ran out (a call
    /// that waited on the computation gets its answer, however short the TTL).
    pub async fn get_or_try_insert<E, F>(&self, key: K, init: F) -> Result<(V, bool), Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let result = self.lookup(key, init).await;
        // A hit: answered by an entry this call did not compute (one already cached, or one a
        // concurrent miss computed while this call waited). A failed lookup is a miss.
        let computed = result.as_ref().map_or(true, |(_, computed)| *computed);
        if let Some((metrics, cache)) = &self.counted {
            metrics.record_cache(*cache, !computed);
        }
        result
    }

    /// The answer cached for `key` if it is still fresh, counted as a hit; `None` (counted as
    /// nothing: the caller goes on to [`Self::get_or_try_insert`], which counts) otherwise.
    /// Synchronous, so a caller whose miss path is a large future builds that future only on
    /// a miss.
    pub fn get_fresh(&self, key: &K) -> Option<V> {
        let value = self.fresh(key)?;
        if let Some((metrics, cache)) = &self.counted {
            metrics.record_cache(*cache, true);
        }
        Some(value)
    }

    /// The fast path, under a shard's read lock.
    fn fresh(&self, key: &K) -> Option<V> {
        match self.cache.get(key)?.found(self.now(), false) {
            Found::Fresh(value) => Some(value),
            Found::Failed(_) | Found::Stale => None,
        }
    }

    async fn lookup<E, F>(&self, key: K, init: F) -> Result<(V, bool), Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(value) = self.fresh(&key) {
            return Ok((value, false));
        }
        let guard = loop {
            // Waits while another call computes this key, then takes its slot.
            let stale = match self.cache.get_value_or_guard_async(&key).await {
                Err(guard) => break guard,
                Ok(slot) => match slot.found(self.now(), true) {
                    Found::Fresh(value) => return Ok((value, false)),
                    Found::Failed(error) => match error.downcast_ref::<Arc<E>>() {
                        Some(error) => return Err(error.clone()),
                        // One cache only ever sees one error type; were it another, this call
                        // computes its own answer.
                        None => slot,
                    },
                    Found::Stale => slot,
                },
            };
            drop(stale);
            // Expired (or an error being removed): replace it, unless another call just did.
            let now = self.now();
            match self
                .cache
                .entry_async(&key, |_, slot| match slot.found(now, false) {
                    Found::Fresh(value) => EntryAction::Retain(value),
                    Found::Failed(_) | Found::Stale => EntryAction::ReplaceWithGuard,
                })
                .await
            {
                EntryResult::Retained(value) => return Ok((value, false)),
                EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => break guard,
                // Neither is asked for (no Remove action, no timeout): look again.
                EntryResult::Removed(..) | EntryResult::Timeout => continue,
            }
        };
        // Dropping the guard unfilled (this call cancelled) lets a waiting call compute instead.
        match init.await {
            Ok(value) => {
                let ttl = if value.is_allow() {
                    self.allow
                } else {
                    self.deny
                };
                let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
                let until = self.now().saturating_add(ttl);
                let _ = guard.insert(Slot::Answer {
                    value: value.clone(),
                    until,
                });
                Ok((value, true))
            }
            Err(error) => {
                let error = Arc::new(error);
                // The waiting calls take it from the guard; the cache keeps it not a moment.
                let shared: Box<dyn Any + Send + Sync> = Box::new(error.clone());
                let _ = guard.insert(Slot::Failed(Arc::new(shared)));
                self.cache
                    .remove_if(&key, |slot| matches!(slot, Slot::Failed(_)));
                Err(error)
            }
        }
    }

    /// How many answers are cached (expired ones included until they are swept or replaced).
    pub fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    /// How many answers are cached and still served, once expired ones are swept: for a metrics
    /// scrape (one pass over the entries, a shard at a time).
    pub async fn settled_len(&self) -> u64 {
        let now = self.now();
        self.cache
            .retain(|_, slot| matches!(slot, Slot::Answer { until, .. } if now < *until));
        self.len()
    }

    /// Nanoseconds since the epoch: slots' time (saturates after five centuries).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Empties the cache (on config reload).
    pub fn clear(&self) {
        self.cache.clear();
    }
}

/// A cache that never holds more than `max_entries`. quick_cache splits its capacity evenly
/// over its shards, rounding each share up; here the shard count is chosen as quick_cache
/// would (4 per core, fewer when shards would be small) and the capacity rounded down to a
/// multiple of it, so the shares add up to at most `max_entries`.
fn bounded<K, V>(max_entries: u64) -> quick_cache::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut shards = (cores * 4).next_power_of_two() as u64;
    while shards > 1 && max_entries / shards < 32 {
        shards /= 2;
    }
    let capacity = (max_entries - max_entries % shards).max(1);
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(usize::try_from(capacity).unwrap_or(usize::MAX))
        .weight_capacity(capacity)
        .shards(shards as usize)
        .build();
    match options {
        Ok(options) => quick_cache::sync::Cache::with_options(
            options,
            quick_cache::UnitWeighter,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ),
        // Every option is set, so this is not reached; the plain constructor is the fallback.
        Err(_) => quick_cache::sync::Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX)),
    }
}

impl<V> DecisionCache<V, CacheKey> {
    /// The key for a request: a keyed hash of what its decision reads.
    pub fn key(&self, input: &(impl Cacheable + ?Sized)) -> CacheKey {
        let mut hasher = KeyHasher::new(&self.keys);
        input.hash_input(&mut hasher);
        hasher.finish()
    }
}

/// Puts a [`DecisionCache`] in front of a decision service.
#[derive(Clone, Debug)]
pub struct CacheLayer<V> {
    cache: DecisionCache<V>,
}

impl<V> CacheLayer<V> {
    /// A layer sharing `cache`.
    pub fn new(cache: DecisionCache<V>) -> Self {
        Self { cache }
    }
}

impl<S, V: Clone> tower::Layer<S> for CacheLayer<V> {
    type Service = Cached<S, V>;
    fn layer(&self, inner: S) -> Self::Service {
        Cached {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// A decision service whose answers are cached by input.
#[derive(Clone, Debug)]
pub struct Cached<S, V> {
    inner: S,
    cache: DecisionCache<V>,
}

/// Takes the request by reference: the input usually borrows from the request body, and on a hit
/// nothing of it needs to be owned.
impl<'r, S, T, V, E> tower::Service<&'r T> for Cached<S, V>
where
    T: Cacheable + Sync + ?Sized,
    S: tower::Service<&'r T, Response = V, Error = E> + Clone + Send + 'r,
    S::Future: Send + 'r,
    E: Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + Unpin + 'static,
{
    type Response = V;
    type Error = Arc<E>;
    type Future = CachedFuture<'r, V, E>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Decision services are always ready; the inner one is readied on a miss.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'r T) -> Self::Future {
        self.call_shared(req)
    }
}

impl<S, V> Cached<S, V> {
    /// [`tower::Service::call`] through a shared reference (the service is always ready), so a
    /// handler holding it in the shared `App` clones nothing to ask it: on a hit, the steady
    /// state, nothing is cloned or allocated at all.
    pub fn call_shared<'r, T, E>(&self, req: &'r T) -> CachedFuture<'r, V, E>
    where
        T: Cacheable + Sync + ?Sized,
        S: tower::Service<&'r T, Response = V, Error = E> + Clone + Send + 'r,
        S::Future: Send + 'r,
        E: Send + Sync + 'static,
        V: Expiring + Clone + Send + Sync + Unpin + 'static,
    {
        let key = self.cache.key(req);
        // A hit, the steady state, allocates no future and clones no handle.
        if let Some(value) = self.cache.get_fresh(&key) {
            return CachedFuture::Hit(Some(value));
        }
        CachedFuture::Lookup(Box::pin(cached_call(
            self.cache.clone(),
            key,
            self.inner.clone(),
            req,
        )))
    }
}

/// What a [`Cached`] service's call gives: the answer found fresh in the cache, or the boxed
/// lookup (the decision on a miss, or the wait for a concurrent one).
pub enum CachedFuture<'r, V, E> {
    /// Found fresh when called; taken by the first poll.
    Hit(Option<V>),
    /// Anything else.
    Lookup(Pin<Box<dyn Future<Output = Result<V, Arc<E>>> + Send + 'r>>),
}

impl<V: Unpin, E> Future for CachedFuture<'_, V, E> {
    type Output = Result<V, Arc<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Hit(value) => match value.take() {
                Some(value) => Poll::Ready(Ok(value)),
                // Polled after it completed: never ready again (no panic on a request path).
                None => Poll::Pending,
            },
            Self::Lookup(lookup) => lookup.as_mut().poll(cx),
        }
    }
}

/// A named async fn rather than an async block: it keeps `'r` concrete for the `Send` checks.
async fn cached_call<'r, S, T, V, E>(
    cache: DecisionCache<V>,
    key: CacheKey,
    inner: S,
    req: &'r T,
) -> Result<V, Arc<E>>
where
    T: ?Sized + Sync,
    S: tower::Service<&'r T, Response = V, Error = E> + Send + 'r,
    S::Future: Send + 'r,
    E: Send + Sync + 'static,
    V: Expiring + Clone + Send + Sync + 'static,
{
    use tower::ServiceExt;
    // Erased so the compiler's Send check does not have to see through a projection over `'r`.
    let init: Pin<Box<dyn Future<Output = Result<V, E>> + Send + 'r>> =
        Box::pin(inner.oneshot(req));
    cache.get_or_try_insert(key, init).await.map(|(v, _)| v)
}

/// Unwraps the error of an infallible cached service.
pub fn infallible<V>(result: Result<V, Arc<Infallible>>) -> V {
    match result {
        Ok(v) => v,
        Err(never) => match *never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    #[derive(Clone)]
    struct Answer(bool);
    impl Expiring for Answer {
        fn is_allow(&self) -> bool {
            self.0
        }
    }

    struct Input(&'static str);
    impl Cacheable for Input {
        fn hash_input(&self, state: &mut KeyHasher) {
            state.write_str(self.0);
        }
    }

    /// Counts calls; fails for "fail"; yields once so concurrent callers overlap.
    #[derive(Clone)]
    struct Counting(Arc<AtomicUsize>);
    impl<'r> tower::Service<&'r Input> for Counting {
        type Response = Answer;
        type Error = String;
        type Future = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'r>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, input: &'r Input) -> Self::Future {
            let calls = self.0.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if input.0 == "fail" {
                    Err("upstream down".to_owned())
                } else {
                    Ok(Answer(input.0 == "allow"))
                }
            })
        }
    }

    fn cached(calls: &Arc<AtomicUsize>) -> Cached<Counting, Answer> {
        let cache = DecisionCache::new(&CacheConfig::default());
        tower::Layer::layer(&CacheLayer::new(cache), Counting(calls.clone()))
    }

    /// Pieces, however split and however long, hash as the bytes they make up; `write_str`
    /// keeps the split between strings.
    struct Pieces(Vec<Vec<u8>>);
    impl Cacheable for Pieces {
        fn hash_input(&self, state: &mut KeyHasher) {
            for piece in &self.0 {
                state.write(piece);
            }
        }
    }

    #[test]
    fn keys_depend_on_the_bytes_not_on_how_they_were_gathered() {
        let cache = DecisionCache::<Answer>::new(&CacheConfig::default());
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = cache.key(&Pieces(vec![bytes.clone()]));
        for cuts in [
            vec![1, 2, 3],
            vec![255, 256, 257],
            vec![100, 400, 999],
            vec![300],
        ] {
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(bytes[start..cut].to_vec());
                start = cut;
            }
            assert_eq!(cache.key(&Pieces(pieces)), whole);
        }
        let mut other = bytes.clone();
        other[999] ^= 1;
        assert_ne!(cache.key(&Pieces(vec![other])), whole);
        assert_ne!(cache.key(&Input("ab")), cache.key(&Input("abc")));
        struct Two(&'static str, &'static str);
        impl Cacheable for Two {
            fn hash_input(&self, state: &mut KeyHasher) {
                state.write_str(self.0);
                state.write_str(self.1);
            }
        }
        assert_ne!(cache.key(&Two("ab", "c")), cache.key(&Two("a", "bc")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_compute_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = cached(&calls);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                let input = Input("allow");
                service.oneshot(&input).await.map(|a| a.0)
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), Ok(true));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A hit is answered by the call itself: no lookup future is built or boxed for it.
    #[tokio::test]
    async fn a_hit_needs_no_lookup_future() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = cached(&calls);
        let input = Input("allow");
        assert!(matches!(
            service.call_shared(&input),
            CachedFuture::Lookup(_)
        ));
        assert!(service.call_shared(&input).await.expect("allow").0);
        let hit = service.call_shared(&input);
        assert!(matches!(hit, CachedFuture::Hit(Some(_))));
        assert!(hit.await.expect("allow").0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_keys_separate_inputs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = cached(&calls);
        for _ in 0..2 {
            let input = Input("fail");
            let err = service
                .clone()
                .oneshot(&input)
                .await
                .err()
                .map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some("upstream down"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let deny = Input("deny");
        assert!(!service.clone().oneshot(&deny).await.expect("deny").0);
        assert!(!service.clone().oneshot(&deny).await.expect("deny").0);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_expired_answer_is_never_served() {
        let calls = Arc::new(AtomicUsize::new(0));
        let compute = |answer: bool| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Answer(answer))
            }
        };
        // A zero TTL: every lookup after the answer came in is past it.
        let cache =
            DecisionCache::<Answer>::with_ttls(Duration::from_secs(3600), Duration::ZERO, 10);
        for n in 1..=3 {
            let (answer, computed) = infallible(cache.get_or_try_insert(7, compute(false)).await);
            assert!(!answer.0 && computed, "deny {n} recomputed");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A short TTL, waited out: the entry is still stored but not served.
        let cache =
            DecisionCache::<Answer>::with_ttls(Duration::from_millis(50), Duration::ZERO, 10);
        assert!(infallible(cache.get_or_try_insert(7, compute(true)).await).1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.len(), 1, "stored until swept or replaced");
        assert!(
            infallible(cache.get_or_try_insert(7, compute(true)).await).1,
            "recomputed"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // Swept by a scrape once expired: only answers still served are counted.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cache.settled_len().await, 0);
    }

    #[tokio::test]
    async fn entries_stay_within_max_entries_under_churn() {
        // Not a multiple of the shard count: quick_cache alone would round each share up.
        const MAX: u64 = 1001;
        let cache = DecisionCache::<Answer>::with_ttls(
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            MAX,
        );
        for key in 0..20_000u128 {
            let (answer, computed) = infallible(
                cache
                    .get_or_try_insert(
                        key,
                        async move { Ok::<_, Infallible>(Answer(key % 2 == 0)) },
                    )
                    .await,
            );
            assert!(computed && answer.0 == (key % 2 == 0));
            assert!(cache.len() <= MAX, "{} entries after {key}", cache.len());
        }
        assert!(cache.settled_len().await > MAX / 2, "still caching");
        // The newest is kept (S3-FIFO admits new entries).
        let (_, computed) = infallible(
            cache
                .get_or_try_insert(19_999, async { Ok::<_, Infallible>(Answer(false)) })
                .await,
        );
        assert!(!computed);
    }
}
