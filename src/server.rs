//! Wiring: configuration → shared state → TLS → bound socket → listener with the stack.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::net::TcpListener;

use crate::app::App;
use crate::certs;
use crate::config::{Config, ConfigError};
use crate::listener::{self, ListenerOptions};
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
    app: Arc<App>,
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
    let app = Arc::new(App::new(config)?);
    Ok(Bound {
        app,
        listener,
        options,
        local_addr,
        generated_ca,
    })
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

    /// The shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
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
        let app = self.app.clone();
        let service = crate::stack::build(self.app);
        let drain = async move {
            shutdown.await;
            // Readiness goes first, so anything still routing to us sees 503 and moves on.
            app.set_draining();
        };
        listener::serve(self.listener, service, self.options, drain).await;
    }
}
