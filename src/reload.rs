//! Config reload: the one place that holds the current [`App`], and the one path that replaces it.
//!
//! On SIGHUP, and when the config file's content changes (polled every [`POLL_INTERVAL`]: a
//! ConfigMap volume swaps a `..data` symlink, which a watch on the file itself misses), the file
//! is read, validated and built into a whole new App on the blocking pool, away from the request
//! path. Only a valid App is swapped in; otherwise the error is logged and the old App keeps
//! serving. Each request loads the current App once ([`CurrentHandlers`]) and holds that `Arc`
//! to its end, so it sees one configuration, and in-flight requests finish on the one they
//! started with. Settings the listener and the stack read at start are kept at their running
//! values and named in a warning ([`keep_restart_only`]).

use std::convert::Infallible;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;

use crate::app::App;
use crate::config::Config;
use crate::config_error::ConfigError;
use crate::error::Response;
use crate::handlers::Handlers;
use crate::metrics::ReloadOutcome;

/// The App serving new requests; replaced whole by a reload.
pub type CurrentApp = ArcSwap<App>;

/// How often the config file's content is compared with the one last loaded.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Largest config file read on a reload (policies are small; this bounds a runaway file).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Makes `app` the current App of a new holder.
pub fn current(app: impl Into<Arc<App>>) -> Arc<CurrentApp> {
    Arc::new(ArcSwap::new(app.into()))
}

/// The handlers, on whichever App is current when a request reaches them.
#[derive(Clone, Debug)]
pub struct CurrentHandlers {
    current: Arc<CurrentApp>,
}

impl CurrentHandlers {
    /// Handlers reading `current` once per request.
    pub fn new(current: Arc<CurrentApp>) -> Self {
        Self { current }
    }
}

impl tower::Service<Request<Bytes>> for CurrentHandlers {
    type Response = Response;
    type Error = Infallible;
    type Future = <Handlers as tower::Service<Request<Bytes>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        // The one read of the current App for this request; the Arc lives as long as it does.
        Handlers::new(self.current.load_full()).call(req)
    }
}

/// Why a reload was refused (the running App is untouched).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config file {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The new configuration is invalid or cannot be built (policy, mutation, constraint...).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a reload attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new App is current; these changed settings need a restart and kept their running values.
    Applied {
        /// Dotted keys, e.g. `listen`, `limits.max_body`.
        restart_only: Vec<&'static str>,
    },
    /// A poll found the same content as last time.
    Unchanged,
    /// Started without a config file: nothing to reload.
    NoFile,
}

/// The file's content as last seen by a reload, so that a poll acts only on a change and a
/// refused or unreadable file is reported once, not every poll.
#[derive(Debug, PartialEq)]
enum Seen {
    Content(Vec<u8>),
    Unreadable,
}

/// Command-line settings applied over the file on every load, as at start.
pub type Overrides = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Reloads the config file into the current App.
#[derive(Clone)]
pub struct Reloader {
    current: Arc<CurrentApp>,
    path: Option<PathBuf>,
    overrides: Overrides,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for `path` (none: started without a config file), the file's current content
    /// taken as the one already loaded.
    pub fn new(current: Arc<CurrentApp>, path: Option<PathBuf>, overrides: Overrides) -> Self {
        let seen = path
            .as_deref()
            .map(|p| read_bounded(p).map_or(Seen::Unreadable, Seen::Content));
        Self {
            current,
            path,
            overrides,
            seen: Arc::new(Mutex::new(seen)),
        }
    }

    /// Reads the file and, when `force`d (SIGHUP) or its content changed, builds and swaps in a
    /// new App. Blocking: file I/O and policy compilation. Applied and refused reloads are
    /// counted in the metrics (the App's, which every App a reload builds shares).
    pub fn reload(&self, force: bool) -> Result<Outcome, ReloadError> {
        let result = self.try_reload(force);
        let counted = match &result {
            Ok(Outcome::Applied { .. }) => Some(ReloadOutcome::Ok),
            Err(_) => Some(ReloadOutcome::Error),
            Ok(Outcome::Unchanged | Outcome::NoFile) => None,
        };
        if let Some(outcome) = counted {
            self.current.load().metrics.record_config_reload(outcome);
        }
        result
    }

    fn try_reload(&self, force: bool) -> Result<Outcome, ReloadError> {
        let Some(path) = &self.path else {
            return Ok(Outcome::NoFile);
        };
        let read = read_bounded(path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let now = match &read {
                Ok(bytes) => Seen::Content(bytes.clone()),
                Err(_) => Seen::Unreadable,
            };
            if !force && seen.as_ref() == Some(&now) {
                return Ok(Outcome::Unchanged);
            }
            *seen = Some(now);
        }
        let bytes = read?;
        let origin = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: format!("not UTF-8: {e}"),
        })?;
        let mut config = Config::from_yaml(text, &origin)?;
        (self.overrides)(&mut config);
        let running = self.current.load_full();
        let restart_only = keep_restart_only(&mut config, &running.config);
        config.validate()?;
        let app = App::reload(config, &running)?;
        self.current.store(Arc::new(app));
        Ok(Outcome::Applied { restart_only })
    }

    /// Reloads on every SIGHUP and on every content change seen by a poll; runs until the
    /// process ends. Never fails: a refused reload is logged and the old App kept.
    pub async fn run(self, mut hangups: Hangups) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the file was just loaded.
        poll.tick().await;
        loop {
            let force = tokio::select! {
                () = hangups.recv() => true,
                _ = poll.tick() => false,
            };
            let trigger = if force { "SIGHUP" } else { "file change" };
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload(force)).await {
                Ok(Ok(Outcome::Applied { restart_only })) => {
                    tracing::info!(trigger, "configuration reloaded");
                    if !restart_only.is_empty() {
                        tracing::warn!(
                            trigger,
                            settings = %restart_only.join(", "),
                            "changed settings take effect only on restart; their running values stay"
                        );
                    }
                }
                Ok(Ok(Outcome::NoFile)) if force => {
                    tracing::info!(trigger, "started without a config file: nothing to reload");
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(
                    trigger,
                    error = %error,
                    "configuration reload refused; still serving the previous configuration"
                ),
                Err(_) => tracing::error!(
                    trigger,
                    "configuration reload failed unexpectedly; still serving the previous configuration"
                ),
            }
        }
    }
}

/// SIGHUP deliveries. Created before the server starts: from then on SIGHUP no longer ends the
/// process (its default), it asks for a reload.
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Takes over SIGHUP; logs and carries on without it if the handler cannot be installed.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot handle SIGHUP; reload only on file change");
                    None
                }
            };
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next SIGHUP (never, without a handler).
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Reads at most [`MAX_CONFIG_BYTES`] of `path`.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ReloadError> {
    let read = |source| ReloadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReloadError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Puts back, in `new`, the settings read only at start (the socket, TLS, the listener's and
/// the stack's limits, routes, log format), and returns the keys that differed. Applying them
/// halfway (a new `max_body` in the App but the old one in the stack) would be worse than not
/// at all.
pub fn keep_restart_only(new: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+ => $key:literal) => {
            if new.$($field).+ != running.$($field).+ {
                kept.push($key);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(listen => "listen");
    keep!(tls => "tls");
    keep!(ops => "ops");
    keep!(limits.max_body => "limits.max_body");
    keep!(limits.request_timeout => "limits.request_timeout");
    keep!(limits.handshake_timeout => "limits.handshake_timeout");
    keep!(limits.idle_timeout => "limits.idle_timeout");
    keep!(limits.max_connections => "limits.max_connections");
    keep!(limits.send_timeout => "limits.send_timeout");
    keep!(limits.max_in_flight => "limits.max_in_flight");
    // Any limit added later and not listed above.
    keep!(limits => "limits");
    keep!(log => "log");
    keep!(routes.authenticate => "routes.authenticate");
    keep!(routes.image_policy => "routes.image_policy");
    keep!(routes.validate => "routes.validate");
    keep!(routes.mutate => "routes.mutate");
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(yaml: &str) -> App {
        App::new(Config::from_yaml(yaml, "test").expect("config")).expect("app")
    }

    fn reloader(current: &Arc<CurrentApp>, path: &Path) -> Reloader {
        Reloader::new(
            current.clone(),
            Some(path.to_owned()),
            Arc::new(|_: &mut Config| {}),
        )
    }

    const ONE_POLICY: &str =
        "policies:\n- name: only-internal\n  images:\n    allowed_registries: [registry.internal]\n";

    #[test]
    fn a_request_holding_the_old_app_keeps_it_across_a_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, "").expect("write");
        let current = current(app(""));
        let reloader = reloader(&current, &path);
        // What a request does first: one load, held to its end.
        let in_flight = current.load_full();
        std::fs::write(&path, ONE_POLICY).expect("write");
        assert_eq!(
            reloader.reload(false).expect("reload"),
            Outcome::Applied {
                restart_only: vec![]
            }
        );
        assert!(in_flight.config.policies.is_empty());
        assert_eq!(current.load().config.policies.len(), 1);
        assert!(!Arc::ptr_eq(&in_flight, &current.load_full()));
        // A new decision cache: nothing the old policies decided is reused.
        assert_eq!(current.load().decision_cache.len(), 0);
    }

    #[test]
    fn a_poll_without_a_change_builds_nothing_and_a_bad_file_keeps_the_old_app() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, ONE_POLICY).expect("write");
        let current = current(app(ONE_POLICY));
        let reloader = reloader(&current, &path);
        let before = current.load_full();
        assert_eq!(reloader.reload(false).expect("poll"), Outcome::Unchanged);
        std::fs::write(&path, "policies: [\n").expect("write");
        assert!(matches!(
            reloader.reload(false),
            Err(ReloadError::Config(_))
        ));
        // Reported once: the next poll sees the same bad content.
        assert_eq!(reloader.reload(false).expect("poll"), Outcome::Unchanged);
        std::fs::write(&path, "policies:\n- name: 'Not A Name'\n").expect("write");
        assert!(reloader.reload(true).is_err());
        assert!(Arc::ptr_eq(&before, &current.load_full()));
    }

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, "").expect("write");
        let current = current(app(""));
        let reloader = reloader(&current, &path);
        std::fs::write(
            &path,
            "listen: 127.0.0.1:9999\nlimits:\n  max_body: 1KiB\nlog:\n  format: json\nroutes:\n  mutate: true\n",
        )
        .expect("write");
        assert_eq!(
            reloader.reload(true).expect("reload"),
            Outcome::Applied {
                restart_only: vec!["listen", "limits.max_body", "log", "routes.mutate"]
            }
        );
        let now = current.load();
        let defaults = Config::default();
        assert_eq!(now.config.listen, defaults.listen);
        assert_eq!(now.config.limits, defaults.limits);
        assert_eq!(now.config.routes, defaults.routes);
    }

    // The GitHub client is built inside the runtime (as on the reloader's blocking thread).
    #[tokio::test]
    async fn the_token_cache_survives_only_reloads_that_leave_github_alone() {
        let github =
            "routes:\n  authenticate: true\nauthenticate:\n  github:\n    allowed_orgs: [acme]\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, github).expect("write");
        let current = current(app(github));
        let reloader = reloader(&current, &path);
        let first = current.load_full();
        let authn = |app: &App| app.authenticator.clone().expect("authenticator");
        std::fs::write(&path, format!("{github}{ONE_POLICY}")).expect("write");
        reloader.reload(false).expect("unrelated reload");
        assert!(Arc::ptr_eq(&authn(&first), &authn(&current.load())));
        std::fs::write(
            &path,
            github.replace("[acme]", "[acme, other]") + ONE_POLICY,
        )
        .expect("write");
        reloader.reload(false).expect("authenticate reload");
        assert!(!Arc::ptr_eq(&authn(&first), &authn(&current.load())));
    }

    #[test]
    fn readiness_is_shared_with_the_next_app() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, "").expect("write");
        let current = current(app(""));
        current.load().set_draining();
        std::fs::write(&path, ONE_POLICY).expect("write");
        reloader(&current, &path).reload(false).expect("reload");
        assert!(!current.load().is_ready());
    }
}
