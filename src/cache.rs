//! The TTL decision cache: a tower layer in front of a decision service, backed by moka.
//!
//! The key is a hash of the decision's *input* (what the decision reads), never of request bytes
//! and never a secret in the clear: two pods of one Deployment share an entry, and a cached
//! answer is re-encoded around the new request's uid by the caller. Concurrent misses for one
//! key run the decision once (moka's `try_get_with`); errors are never cached.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    /// Most entries kept; the least recently used go first.
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
pub struct KeyHasher(std::hash::DefaultHasher, std::hash::DefaultHasher);

impl KeyHasher {
    /// Adds bytes to both streams.
    pub fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    /// Adds a string with its length, so ("ab","c") and ("a","bc") differ.
    pub fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }

    fn finish(&self) -> CacheKey {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

/// Per-entry expiry: allow TTL for allowed answers, deny TTL otherwise.
struct ByOutcome {
    allow: Duration,
    deny: Duration,
}

impl<K, V: Expiring> moka::Expiry<K, V> for ByOutcome {
    fn expire_after_create(&self, _key: &K, value: &V, _created_at: Instant) -> Option<Duration> {
        Some(if value.is_allow() {
            self.allow
        } else {
            self.deny
        })
    }
}

/// The cache and the hash keys it uses; cheap to clone (shared). `K` is the key: by default a
/// keyed hash of the input ([`DecisionCache::key`]); /authenticate keys by SHA-256 of the token.
#[derive(Clone)]
pub struct DecisionCache<V, K = CacheKey> {
    cache: moka::future::Cache<K, V>,
    keys: Arc<(std::hash::RandomState, std::hash::RandomState)>,
    /// Where hits and misses are counted, if anywhere.
    counted: Option<(Arc<Metrics>, metrics::Cache)>,
}

impl<V, K> std::fmt::Debug for DecisionCache<V, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl<V, K> DecisionCache<V, K>
where
    V: Expiring + Clone + Send + Sync + 'static,
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    /// A cache with the configured TTLs and bound.
    pub fn new(config: &CacheConfig) -> Self {
        Self::with_ttls(config.allow_ttl.0, config.deny_ttl.0, config.max_entries)
    }

    /// A cache keeping allowed answers `allow`, the others `deny`, at most `max_entries`.
    pub fn with_ttls(allow: Duration, deny: Duration, max_entries: u64) -> Self {
        let cache = moka::future::Cache::<K, V>::builder()
            .max_capacity(max_entries)
            .expire_after(ByOutcome { allow, deny })
            .build();
        Self {
            cache,
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
    /// and not cached.
    pub async fn get_or_try_insert<E, F>(&self, key: K, init: F) -> Result<(V, bool), Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let entry = self.cache.entry(key).or_try_insert_with(init).await;
        // A hit: answered by an entry this call did not compute (one already cached, or one a
        // concurrent miss computed while this call waited). A failed lookup is a miss.
        let computed = entry.as_ref().map_or(true, |e| e.is_fresh());
        if let Some((metrics, cache)) = &self.counted {
            metrics.record_cache(*cache, !computed);
        }
        let entry = entry?;
        Ok((entry.into_value(), computed))
    }

    /// How many answers are cached (approximate, for diagnostics).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// How many answers are cached, once the cache's pending bookkeeping (inserts, expiries)
    /// has run: for a metrics scrape, which should not lag the requests it follows.
    pub async fn settled_len(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// True when nothing is cached (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the cache (on config reload).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

impl<V> DecisionCache<V, CacheKey> {
    /// The key for a request: a keyed hash of what its decision reads.
    pub fn key(&self, input: &(impl Cacheable + ?Sized)) -> CacheKey {
        let mut hasher = KeyHasher(self.keys.0.build_hasher(), self.keys.1.build_hasher());
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
    V: Expiring + Clone + Send + Sync + 'static,
{
    type Response = V;
    type Error = Arc<E>;
    type Future = Pin<Box<dyn Future<Output = Result<V, Arc<E>>> + Send + 'r>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Decision services are always ready; the inner one is readied on a miss.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'r T) -> Self::Future {
        let key = self.cache.key(req);
        Box::pin(cached_call(
            self.cache.clone(),
            key,
            self.inner.clone(),
            req,
        ))
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
}
