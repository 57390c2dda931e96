//! Test harness: the real server on 127.0.0.1:0 with certificates generated here, and clients
//! that speak HTTP/1.1 or h2 over TLS trusting only that CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Reads one of our own wire examples in `tests/data/wire/` (see its README).
pub fn wire_example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wire")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Names the directory of the upstream kubernetes/api wire fixtures, which are not in the
/// repository: tests that read them are `#[ignore]`d and run with `--ignored` (as `.ci/run`
/// does) when it is set.
pub const UPSTREAM_FIXTURES_VAR: &str = "GATEHOUSE_UPSTREAM_FIXTURES";

/// Reads one upstream fixture from the directory in [`UPSTREAM_FIXTURES_VAR`]; panics with
/// what to set when it is not given.
pub fn upstream_fixture(name: &str) -> Vec<u8> {
    let Some(dir) = std::env::var_os(UPSTREAM_FIXTURES_VAR) else {
        panic!(
            "{UPSTREAM_FIXTURES_VAR} is not set: point it at the kubernetes/api testdata \
             directory (CI: shared/fixtures/k8s-api beside the clone) to run the upstream fixture tests"
        );
    };
    let path = PathBuf::from(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// Every object-member path in `json` (`response.status.code`; array items share their
/// array's path): the shape of an answer, to compare with a wire example's. Maps whose keys
/// are data (`auditAnnotations`, `extra`) are one path.
pub fn json_paths(json: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    if !matches!(key.as_str(), "auditAnnotations" | "extra") {
                        walk(value, &path, out);
                    }
                    out.insert(path);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, at, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(json, "", &mut out);
    out
}

/// Asserts that `answer` uses only fields the wire example `example` (an answer written to
/// the Kubernetes API's shape) has: a misnamed or invented field fails here.
pub fn assert_shape_within(answer: &serde_json::Value, example: &str) {
    let allowed =
        json_paths(&serde_json::from_slice(&wire_example(example)).expect("wire example is JSON"));
    let extra: Vec<String> = json_paths(answer).difference(&allowed).cloned().collect();
    assert!(
        extra.is_empty(),
        "fields not in {example}: {extra:?}\n{answer}"
    );
}

/// Writes a private key readable by its owner only, as gatehouse requires (`tls.key`).
pub fn write_key(path: &std::path::Path, pem: &str) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).expect("create key file");
    file.write_all(pem.as_bytes()).expect("write key");
}

/// Writes a Secret volume's next version as the kubelet does: the files into a new timestamped
/// directory, a `..data_tmp` symlink to it renamed over `..data` (one atomic swap), the old
/// directory removed. Each file is a symlink through `..data`, made once. Files named `*.key`
/// are written readable by their owner only.
#[cfg(unix)]
pub fn publish_secret(volume: &std::path::Path, version: u32, files: &[(&str, &str)]) {
    let dir_name = format!("..2026_11_30_05_{version:02}_00.{}", 1000 + version);
    let dir = volume.join(&dir_name);
    std::fs::create_dir(&dir).expect("version dir");
    for (name, content) in files {
        if name.ends_with(".key") {
            write_key(&dir.join(name), content);
        } else {
            std::fs::write(dir.join(name), content).expect("write file");
        }
    }
    let old = std::fs::read_link(volume.join("..data")).ok();
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(&dir_name, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = volume.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("file link");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).expect("remove old version");
    }
}

/// A running gatehouse.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate.
    pub ca_pem: String,
    /// Holds the generated files.
    pub dir: tempfile::TempDir,
    /// The server's shared state (for counters).
    pub app: Arc<gatehouse::app::App>,
    /// The ops listener (plain HTTP, health routes), when `ops.listen` is set.
    pub ops_addr: Option<SocketAddr>,
    /// The current TLS configuration and its reload counters.
    pub tls: Option<Arc<gatehouse::tls::CurrentTls>>,
    /// Where the current App is held (for a reloader).
    pub current: Arc<gatehouse::reload::CurrentApp>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// HTTP version a client speaks (negotiated by ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `http/1.1`
    Http1,
    /// `h2`
    Http2,
}

impl Proto {
    /// Its ALPN protocol name.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::Http1 => b"http/1.1",
            Proto::Http2 => b"h2",
        }
    }
}

/// Both versions, for tests that run over each.
pub const BOTH: [Proto; 2] = [Proto::Http1, Proto::Http2];

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestServer {
    /// Starts gatehouse with `extra_yaml` added to a config that sets `listen` and `tls`.
    pub async fn start(extra_yaml: &str) -> Self {
        install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = gatehouse::certs::generate(&["localhost", "127.0.0.1"]).expect("generate certs");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, &pki.cert_pem).expect("write cert");
        write_key(&key, &pki.key_pem);
        let yaml = format!(
            "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{extra_yaml}",
            cert.display(),
            key.display()
        );
        let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("test config");
        Self::start_with(config, pki.ca_pem, dir).await
    }

    /// Starts gatehouse with a ready configuration whose TLS files are signed by `ca_pem`.
    pub async fn start_with(
        config: gatehouse::config::Config,
        ca_pem: String,
        dir: tempfile::TempDir,
    ) -> Self {
        install_provider();
        let bound = gatehouse::server::bind(config, false).await.expect("bind");
        let addr = bound.local_addr();
        let ops_addr = bound.ops_addr();
        let tls = bound.tls().cloned();
        let app = bound.app().clone();
        let current = bound.current().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            ca_pem,
            dir,
            app,
            ops_addr,
            tls,
            current,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A new connection speaking `proto`.
    pub async fn client(&self, proto: Proto) -> Client {
        Client::connect(self.addr, &self.ca_pem, proto).await
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to the server; requests on it reuse the connection (keep-alive).
pub struct Client {
    sender: Sender,
    /// The protocol ALPN settled on.
    pub proto: Proto,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// Asserts a 200 (showing the body otherwise) and returns the body as JSON.
    pub fn ok_json(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A TLS client config trusting only `ca_pem`, offering one ALPN protocol.
pub fn tls_client_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

impl Client {
    /// Connects over TLS and performs the HTTP handshake for `proto`.
    pub async fn connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Self {
        Self::connect_with(addr, tls_client_config(ca_pem, proto.alpn()), proto).await
    }

    /// Connects with a ready TLS configuration (a client certificate, say) offering
    /// `proto.alpn()`.
    pub async fn connect_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        proto: Proto,
    ) -> Self {
        let alpn = proto.alpn();
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            negotiated.as_deref(),
            Some(alpn),
            "ALPN must settle on {proto:?}"
        );
        let io = TokioIo::new(tls);
        let sender = match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Proto::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("h2");
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Self { sender, proto }
    }

    /// Sends any request.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.expect("h1 ready");
                s.send_request(req).await.expect("h1 request")
            }
            Sender::H2(s) => {
                s.ready().await.expect("h2 ready");
                s.send_request(req).await.expect("h2 request")
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POSTs a JSON body to `path` (which may carry a query).
    pub async fn post_json(&mut self, path: &str, body: impl Into<Bytes>) -> Answer {
        let req = self
            .request(Method::POST, path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))
            .expect("request");
        self.send(req).await
    }

    /// GETs `path`.
    pub async fn get(&mut self, path: &str) -> Answer {
        let req = self
            .request(Method::GET, path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.send(req).await
    }

    /// A request builder with the URI form each protocol expects.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let builder = Request::builder().method(method);
        match self.proto {
            // h2 needs :scheme and :authority, so an absolute URI.
            Proto::Http2 => builder.uri(format!("https://localhost{path}")),
            Proto::Http1 => builder.uri(path).header(http::header::HOST, "localhost"),
        }
    }
}

/// An AdmissionReview carrying `object` of kind `(group, kind)`, as the apiserver sends it.
pub fn admission_review(
    version: &str,
    uid: &str,
    (group, kind): (&str, &str),
    namespace: &str,
    operation: &str,
    object: impl std::borrow::Borrow<serde_json::Value>,
) -> String {
    let resource = format!("{}s", kind.to_lowercase());
    serde_json::json!({
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object.borrow(),
            "dryRun": false
        }
    })
    .to_string()
}

/// An AdmissionReview for a Pod with the given images (containers named c0, c1, ...).
pub fn pod_review(api_version: &str, uid: &str, namespace: &str, images: &[&str]) -> String {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": containers}
    });
    admission_review(api_version, uid, ("", "Pod"), namespace, "CREATE", pod)
}

/// An ImageReview for the given images.
pub fn image_review(namespace: &str, images: &[&str]) -> String {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .map(|i| serde_json::json!({"image": i}))
        .collect();
    serde_json::json!({
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "metadata": {"creationTimestamp": null},
        "spec": {"containers": containers, "namespace": namespace},
        "status": {"allowed": false}
    })
    .to_string()
}

/// Writes raw bytes on a fresh TLS (HTTP/1.1) connection and reads until the server closes or
/// `max` bytes arrive: for requests a well-behaved client cannot send (a body that never comes).
pub async fn raw_http1(server: &TestServer, request: &[u8], max: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector =
        tokio_rustls::TlsConnector::from(tls_client_config(&server.ca_pem, b"http/1.1"));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(request).await.expect("write");
    tls.flush().await.expect("flush");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < max {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
