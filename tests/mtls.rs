//! mTLS (`tls.client_ca`, `tls.client_names`) and the ops listener (`ops.listen`): webhooks
//! answer only clients with a certificate from the client CA carrying an allowed name, while
//! probes are answered over plain HTTP on the ops port without any certificate.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{pod_review, Client, Proto, TestServer, BOTH};
use gatehouse::certs::{self, Issued, KeyType, Name, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA with a serving certificate for localhost and a client certificate (CN kube-apiserver).
fn issue_pki() -> Issued {
    certs::issue(&Request {
        names: &[
            Name::Dns("localhost".into()),
            Name::Ip("127.0.0.1".parse().unwrap()),
        ],
        key_type: KeyType::EcdsaP256,
        validity: None,
        client: true,
    })
    .expect("issue")
}

/// Starts gatehouse serving `pki`'s pair, trusting `client_ca` for clients, with the ops
/// listener on, and `client_names` as given (YAML flow list, or empty for none).
async fn serve(pki: &Issued, client_ca: &str, client_names: &str) -> TestServer {
    serve_reloading(pki, client_ca, client_names, "").await
}

/// [`serve`] with `extra` lines in the `tls:` block (indented).
async fn serve_reloading(
    pki: &Issued,
    client_ca: &str,
    client_names: &str,
    extra: &str,
) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("tls.crt"), &pki.serving.cert).expect("write");
    common::write_key(&path("tls.key"), &pki.serving.key);
    std::fs::write(path("client-ca.crt"), client_ca).expect("write");
    let names = if client_names.is_empty() {
        String::new()
    } else {
        format!("  client_names: {client_names}\n")
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nops:\n  listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n  client_ca: {}\n{names}{extra}",
        path("tls.crt").display(),
        path("tls.key").display(),
        path("client-ca.crt").display(),
    );
    let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("config");
    TestServer::start_with(config, pki.ca.cert.clone(), dir).await
}

/// A client trusting the server's CA, presenting `client` (certificate, key) when given.
fn client_config(
    server_ca: &str,
    client: Option<(&str, &str)>,
    proto: Proto,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).expect("CA"))
        .expect("root");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    config.alpn_protocols = vec![proto.alpn().to_vec()];
    Arc::new(config)
}

/// One HTTP/1.1 GET over TLS; the answer's text, or the error that ended the exchange.
async fn try_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut answer),
    )
    .await
    .map_err(|_| "no answer within 10s".to_owned())?;
    read.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// One plain HTTP/1.1 request to the ops listener; the whole answer.
async fn ops_request(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect ops");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("ops answer in time")
    .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Asserts the exchange was refused by a TLS alert naming `alert` and got no HTTP answer.
fn assert_refused(result: Result<String, String>, alert: &str, what: &str) {
    match result {
        Ok(answer) => panic!("{what}: expected a TLS refusal, got an answer: {answer:?}"),
        Err(e) => assert!(
            e.contains(alert),
            "{what}: expected the alert {alert}, got: {e}"
        ),
    }
}

#[tokio::test]
async fn the_client_ca_admits_its_clients_on_both_protocols() {
    let pki = issue_pki();
    let server = serve(&pki, &pki.ca.cert, "[kube-apiserver]").await;
    let client = pki.client.as_ref().expect("client pair");
    for proto in BOTH {
        let config = client_config(&pki.ca.cert, Some((&client.cert, &client.key)), proto);
        let mut conn = Client::connect_with(server.addr, config, proto).await;
        let body = pod_review("admission.k8s.io/v1", "u1", "default", &["nginx:latest"]);
        let answer = conn.post_json("/validate", body).await;
        assert_eq!(answer.status, 200, "{proto:?}");
        assert_eq!(answer.json()["response"]["allowed"], false, "{proto:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn clients_without_an_allowed_certificate_are_refused_in_the_handshake() {
    let pki = issue_pki();
    let other = issue_pki();
    let server = serve(&pki, &pki.ca.cert, "[kube-apiserver]").await;
    let ops = server.ops_addr.expect("ops listener");

    // No certificate: TLS 1.3 servers that require one answer `certificate_required`.
    let none = client_config(&pki.ca.cert, None, Proto::Http1);
    assert_refused(
        try_get(server.addr, none, "/healthz").await,
        "CertificateRequired",
        "no certificate",
    );

    // Same name, another CA.
    let foreign = other.client.as_ref().expect("client pair");
    let config = client_config(
        &pki.ca.cert,
        Some((&foreign.cert, &foreign.key)),
        Proto::Http1,
    );
    assert_refused(
        try_get(server.addr, config, "/healthz").await,
        "UnknownCA",
        "another CA's certificate",
    );

    // Meanwhile the probes are answered on the ops port without any certificate.
    for path in ["/healthz", "/readyz"] {
        let answer = ops_request(ops, "GET", path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_without_an_allowed_name_is_refused() {
    let pki = issue_pki();
    // The client certificate's CN is kube-apiserver; only another name is allowed.
    let server = serve(&pki, &pki.ca.cert, "[apiserver-b, apiserver-c]").await;
    let client = pki.client.as_ref().expect("client pair");
    let config = client_config(
        &pki.ca.cert,
        Some((&client.cert, &client.key)),
        Proto::Http1,
    );
    assert_refused(
        try_get(server.addr, config, "/healthz").await,
        "AccessDenied",
        "a name not in tls.client_names",
    );
    wait_for_metric(
        server.ops_addr.expect("ops listener"),
        "gatehouse_tls_handshake_failures_total{reason=\"client_name\"}",
        1,
    )
    .await;
    server.stop().await;

    // The same certificate with its name listed is admitted.
    let server = serve(&pki, &pki.ca.cert, "[apiserver-b, kube-apiserver]").await;
    let config = client_config(
        &pki.ca.cert,
        Some((&client.cert, &client.key)),
        Proto::Http1,
    );
    let answer = try_get(server.addr, config, "/healthz")
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn the_ops_listener_serves_only_the_health_routes() {
    let pki = issue_pki();
    let server = serve(&pki, &pki.ca.cert, "").await;
    let ops = server.ops_addr.expect("ops listener");
    let answer = ops_request(ops, "GET", "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    // Webhooks are never served without a client certificate.
    let answer = ops_request(ops, "POST", "/validate").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = ops_request(ops, "POST", "/readyz").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // Readiness turns 503 on the ops port once the server drains.
    server.app.set_draining();
    let answer = ops_request(ops, "GET", "/readyz").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    server.stop().await;
}

/// Scrapes the ops listener until `series` reads `expected` (bounded: a handshake's failure is
/// counted by the server's task after the client has seen it).
async fn wait_for_metric(ops: SocketAddr, series: &str, expected: u64) {
    let line = format!("{series} {expected}\n");
    let mut last = String::new();
    for _ in 0..400 {
        last = ops_request(ops, "GET", "/metrics").await;
        if last.contains(&line) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{series} never became {expected} within 10s:\n{last}");
}

#[tokio::test]
async fn the_client_ca_reloads_like_the_serving_pair() {
    let (pki, next) = (issue_pki(), issue_pki());
    let server = serve_reloading(&pki, &pki.ca.cert, "", "  reload_interval: 50ms\n").await;
    let ops = server.ops_addr.expect("ops listener");
    let (old_client, new_client) = (
        pki.client.as_ref().expect("client pair"),
        next.client.as_ref().expect("client pair"),
    );
    let with = |client: &certs::Pair| {
        client_config(
            &pki.ca.cert,
            Some((&client.cert, &client.key)),
            Proto::Http1,
        )
    };
    let answer = try_get(server.addr, with(old_client), "/healthz").await;
    assert!(answer.expect("answer").starts_with("HTTP/1.1 200"));
    assert_refused(
        try_get(server.addr, with(new_client), "/healthz").await,
        "UnknownCA",
        "the next CA's client before the rotation",
    );
    wait_for_metric(
        ops,
        "gatehouse_tls_handshake_failures_total{reason=\"bad_client_cert\"}",
        1,
    )
    .await;
    assert_refused(
        try_get(
            server.addr,
            client_config(&pki.ca.cert, None, Proto::Http1),
            "/healthz",
        )
        .await,
        "CertificateRequired",
        "no certificate",
    );
    wait_for_metric(
        ops,
        "gatehouse_tls_handshake_failures_total{reason=\"no_client_cert\"}",
        1,
    )
    .await;

    // Rotated in one rename, as a file written beside and moved over the old one.
    let path = server.dir.path().join("client-ca.crt");
    let staged = server.dir.path().join("client-ca.crt.new");
    std::fs::write(&staged, &next.ca.cert).expect("write");
    std::fs::rename(&staged, &path).expect("rename");
    let tls = server.tls.clone().expect("tls");
    for _ in 0..400 {
        if tls.reloads() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(tls.reloads(), 1, "the new client CA is taken into use");

    let answer = try_get(server.addr, with(new_client), "/healthz")
        .await
        .expect("the next CA's client is admitted");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_refused(
        try_get(server.addr, with(old_client), "/healthz").await,
        "UnknownCA",
        "the old CA's client after the rotation",
    );
    assert_eq!(tls.failures(), 0);
    server.stop().await;
}
