//! What every handler shares: the configuration and the decision engines built from it.

use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use crate::authn::Authenticator;
use crate::cache::{CacheLayer, Cached, DecisionCache};
use crate::config::{Config, ConfigError};
use crate::gatekeeper::Gatekeeper;
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
    /// Token authentication, when `routes.authenticate` is on.
    pub authenticator: Option<Authenticator>,
    /// Gatekeeper constraints for `/validate` and `/image_policy` (empty when none configured).
    pub gatekeeper: Gatekeeper,
    /// False once draining: `/readyz` answers 503 so load balancers stop sending.
    ready: AtomicBool,
}

impl App {
    /// Builds the engines; fails on a configuration that cannot be served.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let authenticator = if config.routes.authenticate {
            Some(Authenticator::new(&config.authenticate.github)?)
        } else {
            None
        };
        let policies = Arc::new(crate::policy::config::compile(
            &config.policies,
            config.break_glass.as_ref(),
        )?);
        config
            .gatekeeper
            .validate(config.limits.request_timeout.0)?;
        let gatekeeper = crate::gatekeeper::load(&config.gatekeeper)
            .map_err(|e| ConfigError::invalid("gatekeeper.paths", e.to_string()))?;
        let decision_cache = DecisionCache::new(&config.cache);
        let decisions =
            tower::Layer::layer(&CacheLayer::new(decision_cache.clone()), PolicyService);
        Ok(Self {
            policies,
            decisions,
            decision_cache,
            mutations: Mutations::compile(&config.mutations)?,
            authenticator,
            gatekeeper,
            config,
            ready: AtomicBool::new(true),
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
