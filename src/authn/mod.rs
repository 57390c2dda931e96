//! Token authentication against GitHub for `/authenticate`: token checks, the audience rule, the
//! cache and single flight, and the mapping of a GitHub user to a Kubernetes user and groups.
//!
//! A review ends in one of three ways ([`Decision`]): authenticated, refused (a decision: the
//! token is bad or its owner may not log in; cached for `negative_cache_ttl`), or unavailable
//! (GitHub did not answer usably, or was not asked because `max_concurrent_lookups`
//! conversations were already in progress; never cached, here or by the apiserver, so the next
//! request asks again).
//!
//! The cache holds what GitHub said about a token, keyed by the token's hash alone; the audience
//! rule depends only on the request and the configuration, so it is applied to every review
//! around the cache and never splits one identity into several GitHub conversations.

pub mod config;
pub mod github;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::cache::{DecisionCache, Expiring};
use sha2::{Digest, Sha256};

pub use config::{AuthenticateConfig, GithubConfig, GroupsMode};
pub use github::GithubError;

use crate::config_error::ConfigError;
use crate::metrics::{self, Metrics};
use config::{is_reserved, is_visible_ascii};
use github::{Credential, Github, GithubUser};

/// GitHub tokens are at most 255 characters today; anything far longer is not one.
pub const MAX_TOKEN_LEN: usize = 1024;

/// `status.user.extra` key carrying the GitHub numeric id.
pub const EXTRA_GITHUB_ID: &str = "gatehouse.dev/github-id";
/// `status.user.extra` key carrying the GitHub login.
pub const EXTRA_GITHUB_LOGIN: &str = "gatehouse.dev/github-login";

/// Why a token was refused. Never carries the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Empty, too long, or with whitespace or bytes outside visible ASCII.
    #[error("malformed token")]
    Malformed,
    /// None of `token_prefixes`: not a GitHub token, so GitHub is not asked.
    #[error("not a GitHub token (no configured prefix)")]
    UnknownPrefix,
    /// None of the requested audiences is one this authenticator serves.
    #[error("no requested audience is served")]
    Audience,
    /// GitHub answered 401: revoked, expired or never valid.
    #[error("GitHub rejected the token")]
    BadCredentials,
    /// GitHub answered 403 or 404 to `/user`.
    #[error("GitHub would not say who owns the token")]
    Forbidden,
    /// Not an active member of any allowed org (pending invitations included).
    #[error("not an active member of an allowed org")]
    NotAMember,
    /// The username would fall in Kubernetes' reserved `system:` namespace.
    #[error("username would be reserved (system:)")]
    Reserved,
}

/// A Kubernetes user built from a GitHub user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `username_prefix` + login.
    pub username: String,
    /// GitHub's numeric id: a login can be renamed and re-registered, an id cannot.
    pub uid: String,
    /// Org and team groups, prefixed, none reserved.
    pub groups: Vec<String>,
    /// The GitHub login.
    pub login: String,
}

/// What the cache holds for a token: decisions only, never errors.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// The token's owner may log in.
    Authenticated(Arc<Identity>),
    /// The token's owner may not.
    Refused(Refusal),
}

/// The outcome of one review.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Log in as `identity`; `audiences` goes in `status.audiences`.
    Authenticated {
        /// Who.
        identity: Arc<Identity>,
        /// The intersection of requested and configured audiences (empty when none configured).
        audiences: Vec<String>,
    },
    /// Refused: `authenticated: false` with no error.
    Refused(Refusal),
    /// GitHub could not be asked: `authenticated: false` with `status.error`.
    Unavailable(Arc<GithubError>),
}

/// What the token's hash starts with, so the hash is of no use elsewhere. Short: with a classic
/// 40-character token it fits one SHA-256 block (55 bytes of message), half the work of two.
const KEY_TAG: &[u8] = b"gatehouse:t\0";

/// SHA-256 of the token: the cache never holds a token. Audiences are not part of it: what GitHub
/// says about a token does not depend on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key for `token`.
    pub fn new(token: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(KEY_TAG);
        hash.update(token.as_bytes());
        Self(hash.finalize().into())
    }
}

/// Positive answers live `cache_ttl` (the cache's allow TTL), refusals `negative_cache_ttl`.
impl Expiring for Verdict {
    fn is_allow(&self) -> bool {
        matches!(self, Self::Authenticated(_))
    }
}

/// How GitHub users become Kubernetes users.
#[derive(Debug)]
struct Naming {
    username_prefix: String,
    group_prefix: String,
    groups: GroupsMode,
}

/// The `/authenticate` decision engine: shared by every request.
pub struct Authenticator {
    github: Arc<Github>,
    cache: DecisionCache<Verdict, CacheKey>,
    naming: Naming,
    token_prefixes: Vec<String>,
    audiences: Vec<String>,
    timeout: Duration,
    /// One permit per GitHub conversation in progress (`max_concurrent_lookups`).
    lookups: Semaphore,
    max_lookups: usize,
    /// Conversations not started because every permit was taken.
    lookups_refused: AtomicU64,
    /// Reviews not answered from the cache at once, waiting on it or on a GitHub conversation.
    reviews_in_flight: AtomicUsize,
    /// The server's metrics (token cache and GitHub calls are counted there too).
    metrics: Arc<Metrics>,
}

/// Counts a review in [`Authenticator::reviews_in_flight`] for as long as it lives, so a review
/// whose client went away is not counted forever.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("github", &self.github)
            .field("cached", &self.cache.len())
            .field("naming", &self.naming)
            .field("token_prefixes", &self.token_prefixes)
            .field("audiences", &self.audiences)
            .field("timeout", &self.timeout)
            .field("max_lookups", &self.max_lookups)
            .field("lookups_refused", &self.lookups_refused)
            .finish()
    }
}

impl Authenticator {
    /// Builds the client and cache from a validated `authenticate.github`, counting into
    /// `metrics`; warns about settings that are allowed but weaken the gate.
    pub fn new(config: &GithubConfig, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let github = Github::new(config, metrics.clone())?;
        if config.allowed_orgs.as_ref().is_none_or(Vec::is_empty) {
            tracing::warn!(
                "authenticate.github.allowed_orgs is empty: ANY GitHub user can authenticate \
                 (as system:authenticated, with no GitHub groups)"
            );
        }
        if let Ok(uri) = config.api_url.parse::<http::Uri>() {
            let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if uri.scheme_str() == Some("http") && !loopback {
                tracing::warn!(api_url = %config.api_url, "authenticate.github.api_url is plain http: tokens cross the network unencrypted");
            }
        }
        let cache = DecisionCache::with_ttls(
            config.cache_ttl.0,
            config.negative_cache_ttl.0,
            config.cache_max_entries,
        )
        .counted(metrics.clone(), metrics::Cache::Token);
        Ok(Self {
            github: Arc::new(github),
            cache,
            naming: Naming {
                username_prefix: config.username_prefix.clone(),
                group_prefix: config.group_prefix.clone(),
                groups: config.groups,
            },
            token_prefixes: config.token_prefixes.clone(),
            audiences: config.audiences.clone(),
            timeout: config.timeout.0,
            lookups: Semaphore::new(config.max_concurrent_lookups),
            max_lookups: config.max_concurrent_lookups,
            lookups_refused: AtomicU64::new(0),
            reviews_in_flight: AtomicUsize::new(0),
            metrics,
        })
    }

    /// GitHub conversations not started because `max_concurrent_lookups` were in progress (each
    /// answered every review waiting on it with `status.error`). For metrics.
    pub fn lookups_refused(&self) -> u64 {
        self.lookups_refused.load(Ordering::Relaxed)
    }

    /// Reviews waiting on the cache or on a GitHub conversation right now. For metrics.
    pub fn reviews_in_flight(&self) -> usize {
        self.reviews_in_flight.load(Ordering::Relaxed)
    }

    /// Tokens in the cache, once its pending bookkeeping has run. For metrics.
    pub async fn cached_tokens(&self) -> u64 {
        self.cache.settled_len().await
    }

    /// Reviews `token` for `requested` audiences. Cheap refusals come first and call nobody (the
    /// audience rule among them); then the cache; on a miss one GitHub conversation per token,
    /// however many reviews (with whatever audiences) wait for it.
    pub async fn review<A: AsRef<str>>(&self, token: &str, requested: &[A]) -> Decision {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_visible_ascii(token) {
            return Decision::Refused(Refusal::Malformed);
        }
        if !self.token_prefixes.iter().any(|p| token.starts_with(p)) {
            return Decision::Refused(Refusal::UnknownPrefix);
        }
        let Some(audiences) = self.audiences(requested) else {
            return Decision::Refused(Refusal::Audience);
        };
        let key = CacheKey::new(token);
        // A hit, the steady state, is answered here. The miss path's future (the GitHub
        // conversation, ~8 KiB) is built, boxed and moved only on a miss.
        let verdict = match self.cache.get_fresh(&key) {
            Some(verdict) => {
                tracing::debug!(target: "gatehouse::authn", cached = true, "token review");
                verdict
            }
            None => match Box::pin(self.look_up(token, key)).await {
                Ok(verdict) => verdict,
                Err(error) => return Decision::Unavailable(error),
            },
        };
        match verdict {
            Verdict::Authenticated(identity) => Decision::Authenticated {
                identity,
                audiences,
            },
            Verdict::Refused(refusal) => Decision::Refused(refusal),
        }
    }

    /// The verdict for a token not found fresh in the cache: the cache again (another review
    /// may have just filled it), else one GitHub conversation per missing key, the other reviews
    /// waiting for its result; errors are returned to all of them and cached nowhere.
    async fn look_up(&self, token: &str, key: CacheKey) -> Result<Verdict, Arc<GithubError>> {
        // Visible ASCII always makes a header value; checked anyway rather than assumed. Only
        // a miss needs the header, and every cached verdict was looked up through here.
        let Some(credential) = Credential::new(token) else {
            return Ok(Verdict::Refused(Refusal::Malformed));
        };
        let _in_flight = InFlight::enter(&self.reviews_in_flight);
        let (verdict, computed) = self
            .cache
            .get_or_try_insert(key, self.ask_github(&credential))
            .await?;
        tracing::debug!(target: "gatehouse::authn", cached = !computed, "token review");
        Ok(verdict)
    }

    /// The intersection of requested and configured audiences, in request order; `None` when
    /// both are set and share nothing. With none configured the apiserver checks its own.
    fn audiences<A: AsRef<str>>(&self, requested: &[A]) -> Option<Vec<String>> {
        if self.audiences.is_empty() || requested.is_empty() {
            return Some(Vec::new());
        }
        let common: Vec<String> = requested
            .iter()
            .map(AsRef::as_ref)
            .filter(|a| self.audiences.iter().any(|c| c == a))
            .map(str::to_owned)
            .collect();
        (!common.is_empty()).then_some(common)
    }

    /// The GitHub conversation for one key, bounded by `timeout` as a whole and by
    /// `max_concurrent_lookups` in number.
    async fn ask_github(&self, credential: &Credential) -> Result<Verdict, GithubError> {
        // Taken inside the single flight, so the reviews sharing a conversation share its
        // permit. No queue: past the cap the answer is an error at once (not cached, so the
        // apiserver asks again on the user's next request) instead of a wait that a flood of
        // new tokens could make as long as it likes.
        let Ok(_permit) = self.lookups.try_acquire() else {
            let refused = self.lookups_refused.fetch_add(1, Ordering::Relaxed) + 1;
            // Also counted process-wide: this authenticator (and its count) is replaced when a
            // reload changes `authenticate.github`, the metric must not go back.
            self.metrics.record_lookup_refused();
            tracing::warn!(
                target: "gatehouse::authn",
                max_concurrent_lookups = self.max_lookups,
                lookups_refused = refused,
                "GitHub lookup refused: max_concurrent_lookups conversations already in progress"
            );
            return Err(GithubError::Busy(self.max_lookups));
        };
        match tokio::time::timeout(self.timeout, self.github.identify(credential)).await {
            Err(_) => Err(GithubError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(error),
            Ok(Ok(Err(refusal))) => Ok(Verdict::Refused(refusal)),
            Ok(Ok(Ok(user))) => Ok(self.naming.verdict(user)),
        }
    }
}

impl Naming {
    /// The Kubernetes user for a GitHub user who passed the org gate.
    fn verdict(&self, user: GithubUser) -> Verdict {
        let username = format!("{}{}", self.username_prefix, user.login);
        if is_reserved(&username) {
            return Verdict::Refused(Refusal::Reserved);
        }
        let mut groups: Vec<String> = Vec::new();
        if self.groups.orgs() {
            groups.extend(
                user.orgs
                    .iter()
                    .map(|org| format!("{}{org}", self.group_prefix)),
            );
        }
        if self.groups.teams() {
            // Slugs were checked against GitHub's syntax when read (github::is_team_slug).
            for (org, slug) in &user.teams {
                groups.push(format!("{}{org}:{slug}", self.group_prefix));
            }
        }
        // Whatever the configuration and whatever GitHub says, never a system: group.
        groups.retain(|g| {
            let keep = !is_reserved(g);
            if !keep {
                tracing::warn!(login = %user.login, group = %g, "reserved group not emitted");
            }
            keep
        });
        groups.dedup();
        Verdict::Authenticated(Arc::new(Identity {
            username,
            uid: user.id.to_string(),
            groups,
            login: user.login,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(prefix: &str, groups: GroupsMode) -> Naming {
        Naming {
            username_prefix: String::new(),
            group_prefix: prefix.to_owned(),
            groups,
        }
    }

    fn user(orgs: &[&str], teams: &[(&str, &str)]) -> GithubUser {
        GithubUser {
            login: "octocat".to_owned(),
            id: 583231,
            orgs: orgs.iter().map(|s| s.to_string()).collect(),
            teams: teams
                .iter()
                .map(|(o, t)| (o.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn groups(v: Verdict) -> Vec<String> {
        match v {
            Verdict::Authenticated(i) => i.groups.clone(),
            Verdict::Refused(r) => panic!("refused: {r}"),
        }
    }

    #[test]
    fn groups_by_mode() {
        let u = || user(&["acme"], &[("acme", "sre")]);
        let n = |m| groups(naming("github:", m).verdict(u()));
        assert_eq!(n(GroupsMode::Both), ["github:acme", "github:acme:sre"]);
        assert_eq!(n(GroupsMode::Orgs), ["github:acme"]);
        assert_eq!(n(GroupsMode::Teams), ["github:acme:sre"]);
        assert!(n(GroupsMode::None).is_empty());
    }

    #[test]
    fn never_a_system_group() {
        // An allowed org named `system` with an empty prefix and a team `masters`.
        let g = groups(
            naming("", GroupsMode::Both).verdict(user(&["system"], &[("system", "masters")])),
        );
        assert_eq!(g, ["system"]);
    }

    #[test]
    fn reserved_username_is_refused() {
        let n = Naming {
            username_prefix: String::new(),
            group_prefix: String::new(),
            groups: GroupsMode::None,
        };
        let mut u = user(&[], &[]);
        u.login = "system:admin".to_owned();
        assert!(matches!(n.verdict(u), Verdict::Refused(Refusal::Reserved)));
    }

    /// A review's future is what a cache hit, the steady state, allocates and moves: the GitHub
    /// conversation (~8 KiB) must sit behind a box built on a miss only, not inline in it.
    #[tokio::test]
    async fn a_review_future_stays_small() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let authenticator = Authenticator::new(&GithubConfig::default(), Arc::new(Metrics::new()))
            .expect("authenticator");
        let no_audiences: [&str; 0] = [];
        let size = std::mem::size_of_val(&authenticator.review("ghp_x", &no_audiences));
        assert!(size <= 512, "a review's future takes {size} bytes");
    }

    #[test]
    fn a_classic_tokens_key_is_one_sha256_block() {
        // A classic personal access token: "ghp_" and 36 characters.
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        assert_eq!(token.len(), 40);
        // One 64-byte block holds 55 message bytes plus the padding byte and 64-bit length.
        assert!(KEY_TAG.len() + token.len() <= 55);
    }

    #[test]
    fn cache_key_is_the_tokens_hash() {
        let a = CacheKey::new("ghp_a");
        assert_eq!(a, CacheKey::new("ghp_a"));
        assert_ne!(a, CacheKey::new("ghp_b"));
        assert!(!format!("{a:?}").contains("ghp_a"));
    }
}
