//! The listener: accept → TLS handshake (bounded in time) → HTTP/1.1 or h2 on one port →
//! the tower stack. It knows nothing of routes: it serves any `tower::Service`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::error::Response;
use crate::stack::PeerAddr;

/// How connections are served.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// TLS configuration; `None` only with `--insecure-http`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bound on the TLS handshake and on reading request headers.
    pub handshake_timeout: Duration,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub drain_timeout: Duration,
}

/// Accept errors such as EMFILE are transient: wait this long and accept again rather than exit.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `service` on `listener` until `shutdown` resolves, then drains: idle keep-alive
/// connections close at once, in-flight requests get `drain_timeout` to finish.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        let service = service.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(
            serve_connection(tcp, peer, acceptor, handshake_timeout, service, watcher)
                .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

async fn serve_connection<S>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tower::Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Webhook answers are small and latency-bound: do not wait to coalesce segments.
    let _ = tcp.set_nodelay(true);
    let service = service.map_request(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req
    });
    let hyper_service = TowerToHyperService::new(service);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());

    let result = match acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls), hyper_service);
            watcher.watch(conn.into_owned()).await
        }
        None => {
            let conn = builder.serve_connection(TokioIo::new(tcp), hyper_service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
