//! Wiring: configuration → shared state → TLS → bound socket → listener with the stack, and the
//! ops listener (health routes and metrics over plain HTTP) beside it. The [`Metrics`] are
//! created here and handed to the App (and so to the caches, the authenticator and the
//! reloader), the stack and the listener.

mod ops;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::net::TcpListener;

use crate::app::App;
use crate::certs;
use crate::config::{Config, Limits, Routes};
use crate::config_error::ConfigError;
use crate::error::Response;
use crate::listener::{self, ListenerOptions};
use crate::metrics::Metrics;
use crate::reload::{CurrentApp, CurrentHandlers};
use crate::tls::{self, CurrentTls, TlsError};

/// Why gatehouse could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A server bound to its socket, ready to serve.
#[derive(Debug)]
pub struct Bound {
    current: Arc<CurrentApp>,
    listener: TcpListener,
    options: ListenerOptions,
    local_addr: SocketAddr,
    generated_ca: Option<String>,
    ops: Option<(TcpListener, SocketAddr)>,
    reload: Option<Reload>,
}

/// What the certificate reload task needs (configured files only; a generated pair is fixed).
struct Reload {
    files: tls::TlsFiles,
    contents: tls::Contents,
    current: Arc<CurrentTls>,
    interval: Duration,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the contents: they hold the key.
        f.debug_struct("Reload")
            .field("files", &self.files)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Connections the ops listener serves at once: a few probes and a scraper.
const OPS_MAX_CONNECTIONS: usize = 64;

/// Builds everything from `config` and binds the socket. `insecure_http` serves plain HTTP.
pub async fn bind(config: Config, insecure_http: bool) -> Result<Bound, ServeError> {
    config.validate()?;
    log_effective(&config, insecure_http);
    // One for the server's life: every App a reload builds counts into it.
    let metrics = Arc::new(Metrics::new());
    let mut reload = None;
    let (tls, generated_ca) = if insecure_http {
        (None, None)
    } else {
        match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                tls::check_key_mode(key, config.tls.allow_readable_key)?;
                let files = tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: config.tls.client_ca.clone(),
                    client_names: config.tls.client_names.clone(),
                };
                let (contents, built) = files.load()?;
                let current = Arc::new(CurrentTls::new(built));
                reload = Some(Reload {
                    files,
                    contents,
                    current: current.clone(),
                    interval: config.tls.reload_interval.0,
                });
                (Some(current), None)
            }
            _ => {
                let client = match &config.tls.client_ca {
                    Some(path) => {
                        let pem =
                            tls::read_pem_file(path).map_err(|message| TlsError::ClientCa {
                                path: path.clone(),
                                message,
                            })?;
                        Some(tls::ClientAuth {
                            roots: tls::parse_client_ca(&pem, path)?,
                            names: config.tls.client_names.clone(),
                        })
                    }
                    None => None,
                };
                let pki =
                    certs::generate(&default_names(config.listen)).map_err(TlsError::Generate)?;
                let (chain, key) = tls::parse_pem(&pki.cert_pem, &pki.key_pem)?;
                let not_after = tls::leaf_not_after(&chain);
                let built = tls::Built {
                    config: tls::server_config(chain, key, client.as_ref())?,
                    not_after,
                };
                (Some(Arc::new(CurrentTls::new(built))), Some(pki.ca_pem))
            }
        }
    };
    let (listener, local_addr) = bind_addr(config.listen).await?;
    let ops = match config.ops.listen {
        Some(addr) => Some(bind_addr(addr).await?),
        None => None,
    };
    if config.tls.client_ca.is_some() && ops.is_none() {
        tracing::warn!("tls.client_ca is set and ops.listen is not: kubelet probes present no client certificate and will fail; set ops.listen and point the probes at it");
    }
    let options = ListenerOptions {
        tls,
        handshake_timeout: config.limits.handshake_timeout.0,
        idle_timeout: config.limits.idle_timeout.0,
        send_timeout: config.limits.send_timeout.0,
        max_connections: config.limits.max_connections,
        // In-flight requests end by their own deadline and their answers are taken within the
        // send timeout; give them that plus a margin.
        drain_timeout: config.limits.request_timeout.0
            + config.limits.send_timeout.0
            + Duration::from_secs(1),
        metrics: Some(metrics.clone()),
    };
    let current = crate::reload::current(App::with_metrics(config, metrics)?);
    Ok(Bound {
        current,
        listener,
        options,
        local_addr,
        generated_ca,
        ops,
        reload,
    })
}

/// The stack around the handlers of the current App: limits and routes as the App in `current`
/// has them now (they are read at start only; a reload keeps them). `B` is the request body.
pub fn service<B>(
    current: Arc<CurrentApp>,
) -> impl tower::Service<
    http::Request<B>,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send
       + 'static
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let app = current.load();
    let (limits, routes): (&Limits, &Routes) = (&app.config.limits, &app.config.routes);
    crate::stack::build(
        limits,
        routes,
        app.metrics.clone(),
        CurrentHandlers::new(current.clone()),
    )
}

/// Logs the configuration in effect (file and flags merged), without secrets: the break-glass
/// value is only said to be set, and GitHub's URL (which could carry credentials) is left out.
fn log_effective(config: &Config, insecure_http: bool) {
    let tls = &config.tls;
    let github = &config.authenticate.github;
    tracing::info!(
        listen = %config.listen,
        ops_listen = ?config.ops.listen,
        insecure_http,
        tls_cert = ?tls.cert,
        tls_key = ?tls.key,
        tls_client_ca = ?tls.client_ca,
        tls_client_names = ?tls.client_names,
        tls_reload_interval = %tls.reload_interval,
        tls_allow_readable_key = tls.allow_readable_key,
        limits = ?config.limits,
        routes = ?config.routes,
        cache = ?config.cache,
        policies = config.policies.len(),
        mutations = config.mutations.len(),
        gatekeeper_paths = ?config.gatekeeper.paths,
        break_glass = config.break_glass.is_some(),
        github_allowed_orgs = ?github.allowed_orgs,
        github_groups = ?github.groups,
        "effective configuration"
    );
}

/// Binds `addr`; returns the socket and the address actually bound.
async fn bind_addr(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Names for a generated certificate: localhost, loopback, and the listen address if specific.
fn default_names(listen: SocketAddr) -> Vec<&'static str> {
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        // Leaked once per process start: rcgen takes &str and the set is tiny.
        names.push(Box::leak(ip.to_string().into_boxed_str()));
    }
    names
}

impl Bound {
    /// The address actually bound (the port is chosen by the OS for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The ops listener's address, when `ops.listen` is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(|(_, addr)| *addr)
    }

    /// The current TLS configuration and its reload counters; `None` with `--insecure-http`.
    pub fn tls(&self) -> Option<&Arc<CurrentTls>> {
        self.options.tls.as_ref()
    }

    /// The generated CA certificate (PEM), when no certificate was configured.
    pub fn generated_ca(&self) -> Option<&str> {
        self.generated_ca.as_deref()
    }

    /// The App serving new requests now.
    pub fn app(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Where the current App is held, for the reloader.
    pub fn current(&self) -> &Arc<CurrentApp> {
        &self.current
    }

    /// Where it listens and what to trust, for the operator.
    pub fn banner(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut out = format!("gatehouse listening on {scheme}://{}\n", self.local_addr);
        if let Some(addr) = self.ops_addr() {
            out.push_str(&format!(
                "health probes and metrics on http://{addr} (/healthz, /readyz, /metrics)\n"
            ));
        }
        if let Some(ca) = &self.generated_ca {
            let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
            out.push_str("generated a serving certificate for localhost, 127.0.0.1 and ::1; trust this CA:\n");
            out.push_str(ca);
            out.push_str("webhook configuration (clientConfig):\n");
            out.push_str(&format!("  caBundle: {bundle}\n"));
        }
        out
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let current = self.current.clone();
        let ops_service = ops::service(self.current.clone(), self.options.tls.clone());
        let service = service(self.current);
        let drain = async move {
            shutdown.await;
            // Readiness goes first, so anything still routing to us sees 503 and moves on. The
            // flag is shared by every App a reload builds.
            current.load().set_draining();
        };
        // The ops listener outlives the webhook listener's drain, so probes see /readyz turn
        // 503 while in-flight webhook requests finish.
        let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
        let ops_task = self.ops.map(|(ops_listener, _)| {
            let options = ListenerOptions {
                tls: None,
                max_connections: OPS_MAX_CONNECTIONS,
                drain_timeout: Duration::from_secs(1),
                // Probes and scrapes are not the webhook traffic the metrics describe.
                metrics: None,
                ..self.options.clone()
            };
            let stop = async move {
                let _ = ops_stopped.await;
            };
            tokio::spawn(listener::serve(ops_listener, ops_service, options, stop))
        });
        let reload = self
            .reload
            .map(|r| tokio::spawn(tls::watch(r.files, r.current, r.contents, r.interval)));
        listener::serve(self.listener, service, self.options, drain).await;
        if let Some(task) = reload {
            task.abort();
        }
        let _ = stop_ops.send(());
        if let Some(task) = ops_task {
            let _ = task.await;
        }
    }
}
