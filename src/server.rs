//! Wiring: configuration → shared state → TLS → bound socket → listener with the stack.

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
use crate::reload::{CurrentApp, CurrentHandlers};
use crate::tls::{self, TlsError};

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
}

/// Builds everything from `config` and binds the socket. `insecure_http` serves plain HTTP.
pub async fn bind(config: Config, insecure_http: bool) -> Result<Bound, ServeError> {
    config.validate()?;
    let (tls, generated_ca) = if insecure_http {
        (None, None)
    } else {
        match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = tls::load_pem_files(cert, key)?;
                (Some(tls::server_config(chain, key)?), None)
            }
            _ => {
                let pki =
                    certs::generate(&default_names(config.listen)).map_err(TlsError::Generate)?;
                let (chain, key) = tls::parse_pem(&pki.cert_pem, &pki.key_pem)?;
                (Some(tls::server_config(chain, key)?), Some(pki.ca_pem))
            }
        }
    };
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
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
    };
    let current = crate::reload::current(App::new(config)?);
    Ok(Bound {
        current,
        listener,
        options,
        local_addr,
        generated_ca,
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
    crate::stack::build(limits, routes, CurrentHandlers::new(current.clone()))
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
        let service = service(self.current);
        let drain = async move {
            shutdown.await;
            // Readiness goes first, so anything still routing to us sees 503 and moves on. The
            // flag is shared by every App a reload builds.
            current.load().set_draining();
        };
        listener::serve(self.listener, service, self.options, drain).await;
    }
}
