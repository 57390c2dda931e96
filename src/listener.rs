//! The listener: accept → TLS handshake (bounded in time) → HTTP/1.1 or h2 on one port →
//! the tower stack. It knows nothing of routes: it serves any `tower::Service`.
//!
//! What a peer can hold is bounded here: connections (`registry`), and per connection the time
//! its requests, answers and idleness may take (`activity`, fed by the wrappers in `track`).

mod activity;
mod on_wake;
mod registry;
mod track;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::error::Response;
use crate::metrics::{HandshakeFailure, Metrics};
use crate::tls::CurrentTls;
use activity::{Activity, CloseRequest, Deadlines, Verdict};
use on_wake::OnWake;
use registry::{Admission, Registry};
use track::{Tracked, WatchedIo};

/// How connections are served.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// TLS configuration, read at each handshake (it may be reloaded); `None` with
    /// `--insecure-http` and on the ops listener.
    pub tls: Option<Arc<CurrentTls>>,
    /// Bound on the TLS handshake and on the wait for a connection's first request.
    pub handshake_timeout: Duration,
    /// Bound on a connection with no request in flight (and on reading request headers).
    pub idle_timeout: Duration,
    /// Bound on the time the peer takes to take an answer.
    pub send_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub drain_timeout: Duration,
    /// Where connections and handshake failures are counted (the webhook listener only).
    pub metrics: Option<Arc<Metrics>>,
}

/// Accept errors such as EMFILE are transient: wait this long and accept again rather than exit.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// h2 PING interval and answer deadline: a peer that vanished (no FIN) is found within ~40s.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// See [`H2_PING_INTERVAL`].
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one h2 connection may have open (hyper's default is 200). RFC 9113 §6.5.2 advises no
/// fewer than 100 so as not to limit parallelism, and the apiserver is not starved by it: Go's
/// HTTP/2 client opens another connection when every stream of its connections is busy
/// (`StrictMaxConcurrentStreams` is false unless set, and Kubernetes does not set it). It bounds
/// what one connection holds: 100 answers, each for at most `limits.send_timeout`.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Bytes h2 buffers per stream beyond what the peer's window has accepted (hyper's default is
/// 400 KiB). Answers are handed over in 16 KiB pieces, so 64 KiB keeps a few frames ready to
/// send without holding much for a peer that does not read.
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// Largest h2 request header block: the apiserver sends a handful of short headers; 16 KiB
/// (hyper's default, stated here on purpose) refuses header floods.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// Request bytes one h2 connection (and each stream) may send before we read them: hyper's
/// defaults, stated on purpose. Unread request bytes held per connection stay under 1 MiB.
const H2_WINDOW: u32 = 1024 * 1024;

/// HTTP/1.1 read and write buffer per connection (hyper's default is ~400 KiB): request heads
/// from the apiserver are far smaller, and answers are handed over in 16 KiB pieces.
const H1_MAX_BUF: usize = 64 * 1024;

/// Once the drain has timed out and every connection is told to close at once, how long to wait
/// for their tasks to end.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// hyper's connection builders, configured once: one per protocol ALPN can settle on, and one
/// that detects the protocol for plain HTTP. HTTP/1.1 over TLS is served by hyper's own builder,
/// as in the floor: hyper-util's detecting one wraps the socket in one more reader.
///
/// No HTTP/1.1 builder has a timer, so none runs hyper's header-read timeout: it armed a timer
/// for every request head (a boxed sleep, a timer-wheel insert when the head was not whole yet
/// and a removal when it was: on a keep-alive connection, every request). The watchdog bounds
/// the same thing without a per-request timer: a head that never completes leaves no request
/// in flight, so the connection is closed once `limits.idle_timeout` has passed (one that never
/// had a request a second of grace later, or at `2 × limits.handshake_timeout` if sooner).
struct Protocols {
    http1: http1::Builder,
    http2: auto::Builder<TokioExecutor>,
    detect: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new() -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // Inert without a timer; said so that adding one does not turn hyper's 30 s on.
            .header_read_timeout(None)
            .max_buf_size(H1_MAX_BUF)
            // One buffer per answer: rustls makes one record of it either way, but given the
            // head and the body as two slices it first collects them into a new Vec (a malloc
            // per answer) where hyper's copy of a small body costs less.
            .writev(false)
            .keep_alive(true);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .header_read_timeout(None)
            .max_buf_size(H1_MAX_BUF)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .initial_connection_window_size(H2_WINDOW)
            .initial_stream_window_size(H2_WINDOW)
            .adaptive_window(false);
        Self {
            http1,
            http2: builder.clone().http2_only(),
            detect: builder,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains: idle connections close
/// at once, in-flight requests get `drain_timeout` to finish.
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
    let registry = Registry::new(options.max_connections, options.metrics.clone());
    let protocols = Arc::new(Protocols::new());
    let tls = options.tls.clone();
    let deadlines = Deadlines {
        first_request: options.handshake_timeout * 2,
        idle: options.idle_timeout,
        send: options.send_timeout,
    };
    let mut shutdown = pin!(shutdown);
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
        let admission = registry.admit();
        if let Admission::AfterEviction = admission {
            tracing::info!(%peer, max = options.max_connections, "connection limit reached; closing the longest-idle connection for a new one");
        }
        if let Admission::Refused = admission {
            // Every connection has a request in flight: close at once, waiting would stall
            // accept for everyone else.
            tracing::warn!(%peer, max = options.max_connections, "connection limit reached and no connection is idle; closing");
            continue;
        }
        let registry = registry.clone();
        let protocols = protocols.clone();
        let service = service.clone();
        // The configuration current at accept: this connection keeps it if the files rotate.
        let acceptor = tls.as_ref().map(|tls| TlsAcceptor::from(tls.get()));
        let handshake_timeout = options.handshake_timeout;
        let metrics = options.metrics.clone();
        tokio::spawn(
            async move {
                let permit = match admission {
                    Admission::Now(permit) => permit,
                    // The evicted connection's slot frees within its shutdown grace; a slot that
                    // does not free within a handshake's time is not worth waiting for.
                    _ => match registry.wait_slot(handshake_timeout).await {
                        Some(permit) => permit,
                        None => {
                            tracing::debug!("no connection slot freed in time; closing");
                            return;
                        }
                    },
                };
                let activity = Arc::new(Activity::new(deadlines));
                let _slot = registry.register(permit, activity.clone());
                let connection = Connection {
                    peer,
                    activity,
                    handshake_timeout,
                    metrics,
                };
                connection.serve(tcp, acceptor, &protocols, service).await;
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    tracing::info!(connections = registry.len(), "draining");
    registry.close_all(CloseRequest::Drain);
    if tokio::time::timeout(options.drain_timeout, registry.emptied())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
        registry.close_all(CloseRequest::Abort);
        let _ = tokio::time::timeout(ABORT_WAIT, registry.emptied()).await;
    }
}

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    activity: Arc<Activity>,
    handshake_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl Connection {
    async fn serve<S>(
        &self,
        tcp: TcpStream,
        acceptor: Option<TlsAcceptor>,
        protocols: &Protocols,
        service: S,
    ) where
        S: tower::Service<http::Request<Incoming>, Response = Response, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let peer = self.peer;
        // Webhook answers are small and latency-bound: do not wait to coalesce segments.
        let _ = tcp.set_nodelay(true);
        let service = Tracked::new(service, self.activity.clone(), peer);
        let Some(acceptor) = acceptor else {
            let io = TokioIo::new(WatchedIo::new(tcp, self.activity.clone()));
            self.drive(protocols.detect.serve_connection(io, service))
                .await;
            return;
        };
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp));
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    self.handshake_failed(HandshakeFailure::classify(&e));
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    self.handshake_failed(HandshakeFailure::Timeout);
                    return;
                }
            },
            () = self.activity.wait_close_request() => {
                tracing::debug!(%peer, "closed during the TLS handshake");
                return;
            }
        };
        // ALPN decided the protocol: no sniffing the first bytes (which has no deadline).
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(WatchedIo::new(tls, self.activity.clone()));
        if h2 {
            self.drive(protocols.http2.serve_connection(io, service))
                .await;
        } else {
            self.drive(protocols.http1.serve_connection(io, service))
                .await;
        }
    }

    fn handshake_failed(&self, reason: HandshakeFailure) {
        if let Some(metrics) = &self.metrics {
            metrics.record_handshake_failure(reason);
        }
    }

    /// Runs hyper's connection until it ends or the watchdog closes it.
    async fn drive<C>(&self, connection: C)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let peer = self.peer;
        let mut connection = pin!(connection);
        loop {
            // The watchdog is polled only when its own timer or notification fired, not each
            // time the connection's socket wakes this task (twice or more per request).
            let verdict = OnWake::new(self.activity.verdict());
            tokio::select! {
                // No random start: the connection is what wakes this task nearly every time.
                biased;
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                verdict = verdict => match verdict {
                    Verdict::Shutdown(why) => {
                        tracing::debug!(%peer, why, "closing gracefully");
                        self.activity.shutting_down();
                        connection.as_mut().graceful_shutdown();
                    }
                    Verdict::Close(why) => {
                        tracing::debug!(%peer, why, "closing");
                        return;
                    }
                    Verdict::Stalled(why) => {
                        tracing::info!(%peer, why, "closing a connection that does not read its answers");
                        return;
                    }
                },
            }
        }
    }
}
