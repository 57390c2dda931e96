//! What a peer can hold, over real TLS: answers it does not read, idle connections, connection
//! slots and requests in flight; and early answers over h2 while the body is still arriving.
//! Each test configures short limits; waits are bounded and generous, and nothing asserts how
//! fast anything was.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::{pod_review, tls_client_config, Client, Proto, TestServer, BOTH};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

const V1: &str = "admission.k8s.io/v1";

/// The longest any wait may take before the test fails: generous, for a loaded machine.
const BOUND: Duration = Duration::from_secs(60);

/// A TLS connection to `addr` offering `alpn`.
async fn tls(addr: SocketAddr, ca_pem: &str, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls_over(tcp, ca_pem, alpn).await
}

async fn tls_over(
    tcp: TcpStream,
    ca_pem: &str,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem, alpn));
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// An h2 connection driven by the `h2` crate, so the test controls flow control and streams.
struct H2 {
    client: h2::client::SendRequest<Bytes>,
    ping: h2::PingPong,
    /// Ends when the server closes the connection.
    closed: JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    /// Connects with `window` as the receive window of every stream (0: never take data).
    async fn connect(addr: SocketAddr, ca_pem: &str, window: u32) -> Self {
        let io = tls(addr, ca_pem, b"h2").await.expect("TLS");
        let (client, mut connection) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake(io)
            .await
            .expect("h2 handshake");
        let ping = connection.ping_pong().expect("ping pong");
        Self {
            client,
            ping,
            closed: tokio::spawn(connection),
        }
    }

    /// GETs `path` and returns the status, reading the body.
    async fn get(&mut self, path: &str) -> u16 {
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        let (response, _) = self.client.send_request(request, true).expect("send");
        let response = timeout(BOUND, response)
            .await
            .expect("answered in time")
            .expect("response");
        let status = response.status().as_u16();
        read_h2_body(response.into_body()).await;
        status
    }
}

/// Reads an h2 body to its end, giving the window back as it goes.
async fn read_h2_body(mut body: h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = timeout(BOUND, body.data()).await.expect("body in time") {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Reads from `io` until `pattern` has arrived; panics on EOF or after [`BOUND`].
async fn read_until<T: AsyncRead + Unpin>(io: &mut T, pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(pattern.len()).any(|w| w == pattern) {
        let n = timeout(BOUND, io.read(&mut buf))
            .await
            .expect("read in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before {:?}: {}",
            pattern,
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A request the server has started reading (it said `100 Continue`, which hyper sends when the
/// body is first read) and that stays in flight until [`Held::finish`] sends its body.
struct Held {
    io: TlsStream<TcpStream>,
    body: String,
}

impl Held {
    async fn start(server: &TestServer) -> Self {
        let body = pod_review(V1, "held", "default", &["nginx:1.25"]);
        let mut io = tls(server.addr, &server.ca_pem, b"http/1.1")
            .await
            .expect("TLS: the connection must be served");
        let head = format!(
            "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nexpect: 100-continue\r\n\r\n",
            body.len()
        );
        io.write_all(head.as_bytes()).await.expect("write");
        io.flush().await.expect("flush");
        let got = read_until(&mut io, b"\r\n\r\n").await;
        assert!(
            got.starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        Self { io, body }
    }

    /// Sends the body; returns the answer's status.
    async fn finish(mut self) -> u16 {
        self.io
            .write_all(self.body.as_bytes())
            .await
            .expect("write");
        self.io.flush().await.expect("flush");
        let head = read_until(&mut self.io, b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head);
        head.get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head}"))
    }
}

#[tokio::test]
async fn past_max_in_flight_webhooks_get_a_fast_503_and_probes_still_answer() {
    let server = TestServer::start("limits:\n  max_in_flight: 2\n  request_timeout: 60s\n").await;
    let first = Held::start(&server).await;
    let second = Held::start(&server).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        let review = pod_review(V1, "u", "default", &["nginx:1.25"]);
        // Bounded: a queued request would wait for the held ones (60s) and fail here.
        let answer = timeout(BOUND, client.post_json("/validate", review))
            .await
            .expect("a request past the cap is answered, not queued");
        assert_eq!(answer.status, 503, "{proto:?}");
        assert_eq!(
            answer.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let json = answer.json();
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["code"], 503);
        assert_eq!(json["reason"], "ServiceUnavailable");
        assert!(
            json["message"]
                .as_str()
                .unwrap_or_default()
                .contains("limits.max_in_flight (2)"),
            "{json}"
        );
        // Probes and unknown paths never count against the cap, nor wait behind it.
        assert_eq!(client.get("/healthz").await.status, 200, "{proto:?}");
        assert_eq!(client.get("/readyz").await.status, 200, "{proto:?}");
        assert_eq!(client.post_json("/nope", "{}").await.status, 404);
    }
    assert_eq!(first.finish().await, 200);
    // One slot is free again.
    let mut client = server.client(Proto::Http2).await;
    let review = pod_review(V1, "u", "default", &["nginx:1.25"]);
    assert_eq!(client.post_json("/validate", review).await.status, 200);
    assert_eq!(second.finish().await, 200);
}

#[tokio::test]
async fn an_idle_h2_connection_gets_goaway_and_is_closed_but_a_busy_one_stays() {
    let server = TestServer::start("limits:\n  idle_timeout: 1s\n").await;

    // A stream still sending its body is work in flight: the connection outlives idle_timeout.
    let mut busy = H2::connect(server.addr, &server.ca_pem, 65_535).await;
    let body = pod_review(V1, "slow", "default", &["nginx:1.25"]);
    let request = http::Request::post("https://localhost/validate")
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (response, mut stream) = busy.client.send_request(request, false).expect("send");
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    stream
        .send_data(Bytes::copy_from_slice(head), false)
        .expect("first half");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .send_data(Bytes::copy_from_slice(tail), true)
        .expect("second half: the connection must still be open");
    let response = timeout(BOUND, response)
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.status(), 200);
    read_h2_body(response.into_body()).await;

    // Idle now: GOAWAY, then the server closes it (the connection task ends without an error).
    let ended = timeout(BOUND, busy.closed)
        .await
        .expect("an idle h2 connection must be closed after idle_timeout")
        .expect("join");
    assert!(ended.is_ok(), "closed without GOAWAY: {ended:?}");

    // The same for a connection that made one request and went quiet.
    let mut quiet = H2::connect(server.addr, &server.ca_pem, 65_535).await;
    assert_eq!(quiet.get("/healthz").await, 200);
    let ended = timeout(BOUND, quiet.closed)
        .await
        .expect("an idle h2 connection must be closed after idle_timeout")
        .expect("join");
    assert!(ended.is_ok(), "closed without GOAWAY: {ended:?}");
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let server = TestServer::start("limits:\n  max_connections: 2\n  request_timeout: 60s\n").await;
    let mut idle = H2::connect(server.addr, &server.ca_pem, 65_535).await;
    assert_eq!(idle.get("/healthz").await, 200);
    let busy = Held::start(&server).await;

    // At the cap, a newcomer is served: the idle connection is told to go (GOAWAY) and closes.
    let newcomer = Held::start(&server).await;
    let ended = timeout(BOUND, idle.closed)
        .await
        .expect("the idle connection must be evicted")
        .expect("join");
    assert!(ended.is_ok(), "evicted without GOAWAY: {ended:?}");

    // Both connections now have a request in flight: one more is refused, neither is evicted.
    assert!(
        tls(server.addr, &server.ca_pem, b"http/1.1").await.is_err(),
        "a connection past the cap must be refused when none is idle"
    );
    // Both counted in the metrics, when the listener decided (before either peer noticed).
    let metrics = server
        .app
        .metrics
        .encode(&Default::default())
        .expect("metrics");
    assert!(
        metrics.contains("\ngatehouse_connections_evicted_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ngatehouse_connections_refused_total 1\n"),
        "{metrics}"
    );
    assert_eq!(busy.finish().await, 200);
    assert_eq!(newcomer.finish().await, 200);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_requests_in_flight_finish() {
    let server = TestServer::start("limits:\n  request_timeout: 30s\n").await;
    let mut idle = H2::connect(server.addr, &server.ca_pem, 65_535).await;
    assert_eq!(idle.get("/healthz").await, 200);
    let held = Held::start(&server).await;
    let app = server.app.clone();
    let stopping = tokio::spawn(server.stop());
    // The idle connection is told to go (GOAWAY) and closes...
    let ended = timeout(BOUND, idle.closed)
        .await
        .expect("an idle connection must close on shutdown")
        .expect("join");
    assert!(ended.is_ok(), "closed without GOAWAY: {ended:?}");
    assert!(!app.is_ready());
    // ...while the request in flight is still answered, and then the server stops.
    assert_eq!(held.finish().await, 200);
    timeout(BOUND, stopping)
        .await
        .expect("the drain must end once nothing is in flight")
        .expect("join");
}

#[tokio::test]
async fn early_answers_over_h2_arrive_whole_while_the_body_is_still_coming() {
    let server = TestServer::start("limits:\n  max_body: 4KiB\n").await;
    let mut h2 = H2::connect(server.addr, &server.ca_pem, 65_535).await;
    // (content type, declared length, bytes sent before the pause, after it, expected status)
    let cases = [
        ("text/plain", true, 1500, 1500, 415),
        // No length declared (as h2 allows): the limit is found while reading, and the rest,
        // within max_body, is read before the answer.
        ("application/json", false, 5000, 1000, 413),
    ];
    for (content_type, declare, before, after, expected) in cases {
        let mut request =
            http::Request::post("https://localhost/validate").header("content-type", content_type);
        if declare {
            request = request.header("content-length", before + after);
        }
        let (response, mut stream) = h2
            .client
            .send_request(request.body(()).expect("request"), false)
            .expect("send");
        stream
            .send_data(Bytes::from(vec![b'x'; before]), false)
            .expect("first part");
        // Give a server that answers early the chance to do so (and reset the stream) before the
        // rest is sent.
        let mut response = std::pin::pin!(response);
        let early = timeout(Duration::from_millis(500), &mut response)
            .await
            .ok();
        let rest = stream.send_data(Bytes::from(vec![b'x'; after]), true);
        let response = match early {
            Some(response) => response,
            None => timeout(BOUND, response).await.expect("answer in time"),
        }
        .expect("an answer, not a stream error");
        assert_eq!(response.status().as_u16(), expected, "{content_type}");
        let body = read_h2_body(response.into_body()).await;
        let json: serde_json::Value = serde_json::from_slice(&body).expect("Status JSON");
        assert_eq!(json["code"], expected);
        // Any RST_STREAM the server sent before answering this PING has arrived after it.
        timeout(BOUND, h2.ping.ping(h2::Ping::opaque()))
            .await
            .expect("pong in time")
            .expect("pong");
        let reset = std::future::poll_fn(|cx| Poll::Ready(stream.poll_reset(cx))).await;
        assert!(
            reset.is_pending(),
            "{expected}: the server reset the stream ({reset:?}) instead of reading the body"
        );
        assert!(
            rest.is_ok(),
            "{expected}: the rest of the body was refused: {rest:?}"
        );
    }
    assert_eq!(h2.get("/healthz").await, 200);
}

/// The real binary, for what only a separate process shows: its resident memory (read from
/// Linux's /proc).
#[cfg(target_os = "linux")]
struct Spawned {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
    output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl Spawned {
    async fn start(extra_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = gatehouse::certs::generate(&["localhost", "127.0.0.1"]).expect("certs");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, &pki.cert_pem).expect("write cert");
        common::write_key(&key, &pki.key_pem);
        // A port the OS just handed out; the server binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config: PathBuf = dir.path().join("gatehouse.yaml");
        let yaml = format!(
            "listen: {addr}\ntls:\n  cert: {}\n  key: {}\n{extra_yaml}",
            cert.display(),
            key.display()
        );
        std::fs::write(&config, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            // Memory blocks from 64 KiB up are mapped and unmapped one by one, so resident
            // memory shows what is live rather than what the allocator keeps for reuse.
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().expect("output").push(line);
                }
            });
        }
        let spawned = Self {
            child,
            addr,
            ca_pem: pki.ca_pem,
            output,
            _dir: dir,
        };
        let up = timeout(BOUND, async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "gatehouse did not listen: {:?}",
            spawned.lines()
        );
        spawned
    }

    fn lines(&self) -> Vec<String> {
        self.output.lock().expect("output").clone()
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

#[cfg(target_os = "linux")]
impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DELETE review (allowed without evaluation) whose answer echoes a `uid` of `size` bytes:
/// a large answer that costs the server almost nothing to decide.
#[cfg(target_os = "linux")]
fn large_answer_review(size: usize) -> String {
    let uid = "u".repeat(size);
    serde_json::json!({
        "apiVersion": V1, "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "operation": "DELETE", "userInfo": {"username": "a"}
        }
    })
    .to_string()
}

/// Reads until the peer closes; returns how many bytes came. Panics after [`BOUND`].
#[cfg(target_os = "linux")]
async fn read_to_close<T: AsyncRead + Unpin>(mut io: T) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match timeout(BOUND, io.read(&mut buf))
            .await
            .expect("the server must have closed the connection")
        {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_stop_reading_are_cut_off_and_their_answers_freed() {
    const MIB: usize = 1024 * 1024;
    // HTTP/1.1 answers larger than what the kernel takes off our hands for a peer that does not
    // read (the socket send buffer can grow to tcp_wmem's maximum, 4 MiB by default), so the
    // rest stays in the server until it gives up.
    let kernel = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|v| v.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 * MIB);
    let h1_answer = kernel + 2 * MIB;
    // A long request deadline: the debug build decodes these bodies slowly on a busy machine.
    let server = Spawned::start(&format!(
        "limits:\n  send_timeout: 1s\n  request_timeout: 60s\n  max_body: {}\n",
        h1_answer + MIB
    ))
    .await;
    let h1_review = large_answer_review(h1_answer);
    let h2_review = large_answer_review(MIB / 2);

    // One large answer read normally, so the baseline includes what serving one costs.
    let mut client = Client::connect(server.addr, &server.ca_pem, Proto::Http1).await;
    let answer = client.post_json("/validate", h1_review.clone()).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() > h1_answer);
    let baseline = server.rss_kib();

    // 20 HTTP/1.1 peers send a request with such an answer and never read.
    let request = format!(
        "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{h1_review}",
        h1_review.len()
    );
    let mut unread = Vec::new();
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().expect("socket");
        // A small receive buffer: less of the answer sits in the kernel, more in the server.
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        let tcp = socket.connect(server.addr).await.expect("connect");
        let mut io = tls_over(tcp, &server.ca_pem, b"http/1.1")
            .await
            .expect("TLS");
        io.write_all(request.as_bytes()).await.expect("write");
        io.flush().await.expect("flush");
        unread.push(io);
    }
    // One h2 peer with a zero receive window opens 100 streams with 512 KiB answers.
    let shut = H2::connect(server.addr, &server.ca_pem, 0).await;
    let body = Bytes::from(h2_review);
    let mut streams = Vec::new();
    for _ in 0..100 {
        let ready = timeout(BOUND, shut.client.clone().ready()).await;
        let Ok(Ok(mut client)) = ready else {
            break; // the server already closed it
        };
        let request = http::Request::post("https://localhost/validate")
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let Ok((response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        let _ = stream.send_data(body.clone(), true);
        // Kept: dropping them would cancel the streams.
        streams.push((response, stream));
    }

    // Meanwhile a well-behaved client is served on both protocols.
    for proto in BOTH {
        let mut client = Client::connect(server.addr, &server.ca_pem, proto).await;
        assert_eq!(client.get("/healthz").await.status, 200);
        let review = pod_review(V1, "u", "default", &["nginx:1.25"]);
        assert_eq!(client.post_json("/validate", review).await.status, 200);
    }
    let stuck = server.rss_kib();

    // Each peer is cut off once an answer waited past the send timeout: 20 + 1 connections.
    let cut = timeout(BOUND, async {
        loop {
            let lines = server.lines();
            let n = lines
                .iter()
                .filter(|l| l.contains("does not read its answers"))
                .count();
            if n >= 21 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let after = server.rss_kib();
    eprintln!("resident KiB: baseline {baseline}, with stuck peers {stuck}, after the send timeout {after}");
    assert!(
        cut.is_ok(),
        "every peer that stops reading must be cut off after the send timeout; log:\n{}",
        server.lines().join("\n")
    );
    let ended = timeout(BOUND, shut.closed).await.expect("h2 peer closed");
    assert!(ended.is_ok(), "join");
    for io in unread {
        // Closed before a whole answer arrived: what the kernel had taken, then the end.
        assert!(read_to_close(io).await < h1_answer);
    }
    // What the stuck peers pinned is gone (before the fix: +200 MiB, and growing).
    assert!(
        after <= baseline + 32 * 1024,
        "resident memory grew from {baseline} KiB to {after} KiB"
    );
    drop(streams);
    // And the server still serves.
    let mut client = Client::connect(server.addr, &server.ca_pem, Proto::Http2).await;
    assert_eq!(client.get("/healthz").await.status, 200);
}
