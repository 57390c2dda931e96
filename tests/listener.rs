//! The listener over real TLS, around a stand-in for the stack: what it does per request on a
//! keep-alive connection (HTTP/1.1 and h2), and how it bounds a request head that never
//! completes now that hyper runs no header-read timer.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{tls_client_config, Client, Proto, TestServer, BOTH};
use gatehouse::error::{json_response, Response};
use gatehouse::listener::{self, ListenerOptions};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The longest any wait may take before the test fails: generous, for a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

/// A stand-in for the stack that answers 200 and counts how often it is cloned.
#[derive(Debug)]
struct Counted {
    clones: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
        }
    }
}

impl tower::Service<Request<Incoming>> for Counted {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Incoming>) -> Self::Future {
        Box::pin(async { Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"))) })
    }
}

/// Serves `service` over TLS on an ephemeral port until the returned sender is dropped; returns
/// the address and the CA to trust.
async fn serve(service: Counted) -> (SocketAddr, String, tokio::sync::oneshot::Sender<()>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = gatehouse::certs::generate(&["localhost"]).expect("certs");
    let (chain, key) = gatehouse::tls::parse_pem(&pki.cert_pem, &pki.key_pem).expect("pem");
    let built = gatehouse::tls::Built {
        config: gatehouse::tls::server_config(chain, key, None).expect("TLS config"),
        not_after: None,
    };
    let options = ListenerOptions {
        tls: Some(Arc::new(gatehouse::tls::CurrentTls::new(built))),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
        send_timeout: Duration::from_secs(10),
        max_connections: 16,
        drain_timeout: Duration::from_secs(1),
        metrics: None,
    };
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(listener::serve(socket, service, options, async move {
        let _ = stopped.await;
    }));
    (addr, pki.ca_pem, stop)
}

#[tokio::test]
async fn requests_on_a_connection_call_the_stack_in_place_not_a_clone_each() {
    const REQUESTS: usize = 50;
    for proto in BOTH {
        let clones = Arc::new(AtomicUsize::new(0));
        let (addr, ca_pem, _stop) = serve(Counted {
            clones: clones.clone(),
        })
        .await;
        let mut client = Client::connect(addr, &ca_pem, proto).await;
        for _ in 0..REQUESTS {
            assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
        }
        // One copy per connection (the listener hands each its own), none per request.
        let clones = clones.load(Ordering::SeqCst);
        assert!(
            clones <= 2,
            "{proto:?}: the stack was cloned {clones} times for {REQUESTS} requests"
        );
    }
}

/// Writes `bytes` and then waits until the server closes the connection; returns what it sent.
async fn wait_for_close<T>(io: &mut T) -> Vec<u8>
where
    T: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(BOUND, io.read(&mut buf))
            .await
            .expect("the server must close a connection whose request head never completes")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_closed_after_idle_timeout() {
    // A first request far from the wait for it (2 × handshake_timeout = 120 s): only the idle
    // deadline can close these connections within the test's bound.
    let server = TestServer::start("limits:\n  idle_timeout: 1s\n  handshake_timeout: 60s\n").await;
    let connector =
        tokio_rustls::TlsConnector::from(tls_client_config(&server.ca_pem, b"http/1.1"));
    let name = ServerName::try_from("localhost").expect("name");
    let partial = b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-ty";

    // On a new connection.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut io = connector.connect(name.clone(), tcp).await.expect("TLS");
    io.write_all(partial).await.expect("write");
    io.flush().await.expect("flush");
    wait_for_close(&mut io).await;

    // After a request answered on the same connection.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut io = connector.connect(name, tcp).await.expect("TLS");
    io.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    io.write_all(partial).await.expect("write");
    io.flush().await.expect("flush");
    let got = wait_for_close(&mut io).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(got.matches("HTTP/1.1").count(), 1, "{got}");

    // The server still serves.
    let mut client = server.client(Proto::Http1).await;
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
}
