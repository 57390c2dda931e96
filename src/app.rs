//! What every handler shares: the configuration and the decision engines built from it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::authn::Authenticator;
use crate::cache::{CacheLayer, Cached, DecisionCache};
use crate::config::Config;
use crate::config_error::ConfigError;
use crate::gatekeeper::Gatekeeper;
use crate::metrics::{self, Metrics};
use crate::mutation::Mutations;
use crate::policy::{Decision, Policies, PolicyService};

/// Shared state, built once from a validated configuration.
#[derive(Debug)]
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// Image and admission policies.
    pub policies: Arc<Policies>,
    /// The policy decision behind its TTL cache (shared by /image_policy and /validate).
    pub decisions: Cached<PolicyService, Arc<Decision>>,
    /// The cache itself, to empty on reload.
    pub decision_cache: DecisionCache<Arc<Decision>>,
    /// Mutations for `/mutate`.
    pub mutations: Mutations,
    /// Token authentication, when `routes.authenticate` is on. Shared with the next App when a
    /// reload leaves `authenticate.github` unchanged (see [`App::reload`]).
    pub authenticator: Option<Arc<Authenticator>>,
    /// Gatekeeper constraints for `/validate` and `/image_policy` (empty when none configured).
    pub gatekeeper: Gatekeeper,
    /// The server's metrics, shared by every App a reload builds.
    pub metrics: Arc<Metrics>,
    /// False once draining: `/readyz` answers 503 so load balancers stop sending. Shared by every
    /// App a reload builds, so a reload during the drain cannot make the server ready again.
    ready: Arc<AtomicBool>,
}

impl App {
    /// Builds the engines with metrics of their own; fails on a configuration that cannot be
    /// served.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// Builds the engines, counting into `metrics`.
    pub fn with_metrics(config: Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let authenticator = if config.routes.authenticate {
            Some(Arc::new(Authenticator::new(
                &config.authenticate.github,
                metrics.clone(),
            )?))
        } else {
            None
        };
        Self::build(
            config,
            authenticator,
            Arc::new(AtomicBool::new(true)),
            metrics,
        )
    }

    /// Builds the App for a reloaded `config` beside `running`: new engines and a new (empty)
    /// decision cache, the same readiness flag. The authenticator, and with it the token cache,
    /// is kept when `authenticate.github` is unchanged: an `Authenticator` is built from that
    /// section alone, so every answer it cached is the answer a new one would give, and keeping
    /// it spares GitHub a burst of lookups for every token in use after an unrelated reload.
    pub fn reload(config: Config, running: &App) -> Result<Self, ConfigError> {
        let authenticator = match &running.authenticator {
            Some(kept)
                if config.routes.authenticate
                    && config.authenticate.github == running.config.authenticate.github =>
            {
                Some(kept.clone())
            }
            _ if config.routes.authenticate => Some(Arc::new(Authenticator::new(
                &config.authenticate.github,
                running.metrics.clone(),
            )?)),
            _ => None,
        };
        Self::build(
            config,
            authenticator,
            running.ready.clone(),
            running.metrics.clone(),
        )
    }

    fn build(
        config: Config,
        authenticator: Option<Arc<Authenticator>>,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let policies = Arc::new(crate::policy::config::compile(
            &config.policies,
            config.break_glass.as_ref(),
        )?);
        config
            .gatekeeper
            .validate(config.limits.request_timeout.0)?;
        let gatekeeper = crate::gatekeeper::load(&config.gatekeeper)
            .map_err(|e| ConfigError::invalid("gatekeeper.paths", e.to_string()))?;
        let decision_cache =
            DecisionCache::new(&config.cache).counted(metrics.clone(), metrics::Cache::Decision);
        let decisions =
            tower::Layer::layer(&CacheLayer::new(decision_cache.clone()), PolicyService);
        Ok(Self {
            policies,
            decisions,
            decision_cache,
            mutations: Mutations::compile(&config.mutations)?,
            authenticator,
            gatekeeper,
            metrics,
            config,
            ready,
        })
    }

    /// True while the server takes new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Marks the server as draining.
    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}
