//! The configuration file: typed, every key documented in `config/gatehouse.yaml`.
//!
//! Unknown keys and wrong types are errors that name the key and line; gatehouse refuses to start
//! on them rather than run with a policy the operator did not mean.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::authn::AuthenticateConfig;
use crate::cache::CacheConfig;
use crate::gatekeeper::GatekeeperConfig;
use crate::mutation::MutationConfig;
use crate::policy::config::{BreakGlassConfig, PolicyConfig};
use crate::units::{ByteSize, HumanDuration};

pub use crate::config_error::ConfigError;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serving certificate and key.
    #[serde(deserialize_with = "null_as_default")]
    pub tls: TlsConfig,
    /// Request limits.
    #[serde(deserialize_with = "null_as_default")]
    pub limits: Limits,
    /// Logging.
    #[serde(deserialize_with = "null_as_default")]
    pub log: LogConfig,
    /// Which webhooks are served; a disabled route answers 404.
    #[serde(deserialize_with = "null_as_default")]
    pub routes: Routes,
    /// The annotation value that lets a request through image policies (off when absent).
    pub break_glass: Option<BreakGlassConfig>,
    /// Image and label policies, in order; none means the built-in latest-tag rule.
    #[serde(deserialize_with = "null_as_default")]
    pub policies: Vec<PolicyConfig>,
    /// The decision cache.
    #[serde(deserialize_with = "null_as_default")]
    pub cache: CacheConfig,
    /// What `/mutate` changes, in order.
    #[serde(deserialize_with = "null_as_default")]
    pub mutations: Vec<MutationConfig>,
    /// `/authenticate`: token authentication against GitHub.
    #[serde(deserialize_with = "null_as_default")]
    pub authenticate: AuthenticateConfig,
    /// Gatekeeper ConstraintTemplates and constraints, beside the native policies.
    #[serde(deserialize_with = "null_as_default")]
    pub gatekeeper: GatekeeperConfig,
    /// The plain-HTTP listener for probes (no client certificate needed).
    #[serde(deserialize_with = "null_as_default")]
    pub ops: OpsConfig,
}

/// A section left empty (`tls:` with every key commented out) is YAML null: read it as defaults.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            log: LogConfig::default(),
            routes: Routes::default(),
            break_glass: None,
            policies: Vec::new(),
            cache: CacheConfig::default(),
            mutations: Vec::new(),
            authenticate: AuthenticateConfig::default(),
            gatekeeper: GatekeeperConfig::default(),
            ops: OpsConfig::default(),
        }
    }
}

/// `tls:`: PEM files; with neither, gatehouse generates a certificate at start.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) for client certificates: when set, every TLS client must present a
    /// certificate chained to it (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Names (CN or DNS SAN) a client certificate must carry, one of; empty: any name.
    pub client_names: Vec<String>,
    /// How often the files are read again; changed contents are taken into use without restart.
    pub reload_interval: HumanDuration,
    /// Serve even if the key file is readable by other users (warned); for volumes whose mode
    /// cannot be set.
    pub allow_readable_key: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            client_names: Vec::new(),
            // cert-manager renews weeks before expiry and the kubelet refreshes a Secret volume
            // within about a minute: 10s adds little to that, and a read of two small files
            // every 10s costs nothing.
            reload_interval: HumanDuration(Duration::from_secs(10)),
            allow_readable_key: false,
        }
    }
}

/// `ops:`: a plain-HTTP listener serving only `/healthz` and `/readyz`, for kubelet probes
/// (and Prometheus), which present no client certificate.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address of the ops listener; off when absent.
    pub listen: Option<SocketAddr>,
}

/// `limits:`: bounds on what one request may cost.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted; larger answers 413.
    pub max_body: ByteSize,
    /// Deadline for one request, body read included; past it answers 504.
    pub request_timeout: HumanDuration,
    /// Deadline for a TLS handshake; the first request must start within twice this.
    pub handshake_timeout: HumanDuration,
    /// How long a keep-alive connection may sit idle (or trickle request headers).
    pub idle_timeout: HumanDuration,
    /// Most connections served at once; at the cap the longest-idle one is closed for a new one.
    pub max_connections: usize,
    /// How long the peer has to take an answer; a connection that does not is closed.
    pub send_timeout: HumanDuration,
    /// Most webhook requests being read or decided at once; more answer 503 at once.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // The apiserver caps admission request bodies at 3 MiB (etcd's object limit is 1.5 MiB
            // and a review carries object and oldObject); 4 MiB leaves room without inviting abuse.
            max_body: ByteSize(4 << 20),
            // Under the apiserver's default 10s webhook timeout, so it gets our answer, not its own.
            request_timeout: HumanDuration(Duration::from_secs(9)),
            // A peer that cannot finish a handshake in 10s is not the apiserver.
            handshake_timeout: HumanDuration(Duration::from_secs(10)),
            // Longer than Go's 90s IdleConnTimeout: the apiserver closes idle connections first,
            // so it never sends a request on one we are closing (which would fail the call).
            idle_timeout: HumanDuration(Duration::from_secs(120)),
            // Far above what apiservers open; bounds file descriptors against a flood.
            max_connections: 10_000,
            // The apiserver reads an answer as soon as it arrives and gives up on a webhook call
            // after its timeout (default 10s): a peer still not reading after 10s is not waiting
            // for the answer, so the memory it pins is released.
            send_timeout: HumanDuration(Duration::from_secs(10)),
            // Decisions take well under a millisecond, so even a burst of pod creations keeps
            // far fewer in flight; 256 leaves room for TokenReviews waiting on GitHub, and
            // 256 × max_body (1 GiB at 4 MiB) bounds the request bodies held at once.
            max_in_flight: 256,
        }
    }
}

/// `log:`: output format.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `routes:`: one switch per webhook.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routes {
    /// `POST /authenticate` (TokenReview).
    pub authenticate: bool,
    /// `POST /image_policy` (ImageReview).
    pub image_policy: bool,
    /// `POST /validate` (validating AdmissionReview).
    pub validate: bool,
    /// `POST /mutate` (mutating AdmissionReview).
    pub mutate: bool,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            // Off until it is configured: an authenticator must be asked for, never assumed.
            authenticate: false,
            image_policy: true,
            validate: true,
            mutate: false,
        }
    }
}

impl Config {
    /// Parses a YAML document; `origin` names it in errors.
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file is the defaults, not an error.
        let config: Config = if yaml.trim().is_empty() {
            Config::default()
        } else {
            crate::yaml::from_str(yaml).map_err(|message| ConfigError::Parse {
                path: origin.to_owned(),
                message,
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&yaml, &path.display().to_string())
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "tls.key",
                    "tls.cert is set, so tls.key is required",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "tls.cert",
                    "tls.key is set, so tls.cert is required",
                ))
            }
            _ => {}
        }
        if !self.tls.client_names.is_empty() && self.tls.client_ca.is_none() {
            return Err(ConfigError::invalid(
                "tls.client_names",
                "names are checked on client certificates, which are asked for only when \
                 tls.client_ca is set",
            ));
        }
        if self.tls.client_names.iter().any(|n| n.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "tls.client_names",
                "an empty name matches nothing",
            ));
        }
        if self.tls.reload_interval.0.is_zero() {
            return Err(ConfigError::invalid(
                "tls.reload_interval",
                "must be greater than 0",
            ));
        }
        if let Some(ops) = self.ops.listen {
            if ops == self.listen && ops.port() != 0 {
                return Err(ConfigError::invalid(
                    "ops.listen",
                    "must differ from listen",
                ));
            }
        }
        if self.limits.max_body.0 == 0 {
            return Err(ConfigError::invalid(
                "limits.max_body",
                "must be greater than 0",
            ));
        }
        if self.limits.request_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "limits.request_timeout",
                "must be greater than 0",
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(ConfigError::invalid(
                "cache.max_entries",
                "must be greater than 0",
            ));
        }
        if self.limits.idle_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "limits.idle_timeout",
                "must be greater than 0",
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::invalid(
                "limits.max_connections",
                "must be greater than 0",
            ));
        }
        if self.limits.send_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "limits.send_timeout",
                "must be greater than 0",
            ));
        }
        if self.limits.max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "limits.max_in_flight",
                "must be greater than 0",
            ));
        }
        if self.limits.handshake_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "limits.handshake_timeout",
                "must be greater than 0",
            ));
        }
        self.authenticate
            .validate(self.routes.authenticate, self.limits.request_timeout.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_states_the_limits_defaults() {
        let shipped = Config::from_yaml(
            include_str!("../config/gatehouse.yaml"),
            "config/gatehouse.yaml",
        )
        .expect("config/gatehouse.yaml loads");
        let (shipped, default) = (shipped.limits, Limits::default());
        assert_eq!(shipped.max_body, default.max_body);
        assert_eq!(shipped.request_timeout, default.request_timeout);
        assert_eq!(shipped.handshake_timeout, default.handshake_timeout);
        assert_eq!(shipped.idle_timeout, default.idle_timeout);
        assert_eq!(shipped.max_connections, default.max_connections);
        assert_eq!(shipped.send_timeout, default.send_timeout);
        assert_eq!(shipped.max_in_flight, default.max_in_flight);
    }

    #[test]
    fn zero_limits_are_refused_naming_the_key() {
        for key in ["send_timeout: 0s", "max_in_flight: 0"] {
            let err = Config::from_yaml(&format!("limits:\n  {key}\n"), "x.yaml").expect_err(key);
            let name = key.split(':').next().unwrap_or_default();
            assert!(
                err.to_string().contains(&format!("limits.{name}")),
                "{key}: {err}"
            );
        }
    }
}
