//! The listener: accept → TLS handshake (bounded in time) → HTTP/1.1 or h2 on one port →
//! the tower stack. It knows nothing of routes: it serves any `tower::Service`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
    /// Bound on the TLS handshake and on the wait for a connection's first request.
    pub handshake_timeout: Duration,
    /// Bound on an idle keep-alive connection (and on reading request headers).
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub drain_timeout: Duration,
}

/// Accept errors such as EMFILE are transient: wait this long and accept again rather than exit.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// h2 PING interval and answer deadline: a peer that vanished (no FIN) is found within ~40s.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// See [`H2_PING_INTERVAL`].
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

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
    let slots = Arc::new(Semaphore::new(options.max_connections));
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
        // Over the cap, close at once: waiting would stall accept for everyone else.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = options.max_connections, "connection limit reached; closing");
            continue;
        };
        let watcher = graceful.watcher();
        let service = service.clone();
        let acceptor = acceptor.clone();
        let options = options.clone();
        tokio::spawn(
            async move {
                serve_connection(tcp, peer, acceptor, &options, service, watcher).await;
                drop(slot);
            }
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
    options: &ListenerOptions,
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
    // Set by the first request: until then the connection lives on the handshake deadline.
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let service = service.map_request(move |mut req: http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(PeerAddr(peer));
        req
    });
    let hyper_service = TowerToHyperService::new(service);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper applies this to idle keep-alive connections too, so it is the idle timeout.
        .header_read_timeout(options.idle_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);

    let connection = async {
        match acceptor {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp));
                let tls = match handshake.await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return Ok(());
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return Ok(());
                    }
                };
                // ALPN decided the protocol: no sniffing the first bytes (which has no deadline).
                let builder = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => builder.http2_only(),
                    _ => builder.http1_only(),
                };
                let conn = builder.serve_connection(TokioIo::new(tls), hyper_service);
                watcher.watch(conn.into_owned()).await
            }
            None => {
                let conn = builder.serve_connection(TokioIo::new(tcp), hyper_service);
                watcher.watch(conn.into_owned()).await
            }
        }
    };
    let first_request_deadline = async {
        tokio::time::sleep(options.handshake_timeout * 2).await;
        if started.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = first_request_deadline => {
            tracing::debug!(%peer, "no request within the handshake deadline; closing");
        }
    }
}
