#![cfg(unix)]
//! Certificate rotation without restart: the serving pair is read again every
//! `tls.reload_interval`; a Secret volume's `..data` symlink swap is picked up for new
//! handshakes while open connections finish, and a broken pair is refused with the old one kept.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{tls_client_config, Client, Proto, TestServer};
use gatehouse::certs;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// A CA and a serving pair for localhost.
fn pair() -> certs::GeneratedPki {
    certs::generate(&["localhost", "127.0.0.1"]).expect("generate")
}

/// Publishes `cert` and `key` as the Secret volume's next version (see
/// [`common::publish_secret`]).
fn publish(volume: &Path, version: u32, cert: &str, key: &str) {
    common::publish_secret(volume, version, &[("tls.crt", cert), ("tls.key", key)]);
}

/// Starts gatehouse on a Secret-like volume holding `first`, reloading every 50ms.
async fn serve(first: &certs::GeneratedPki) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    publish(dir.path(), 1, &first.cert_pem, &first.key_pem);
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n  reload_interval: 50ms\n",
        dir.path().join("tls.crt").display(),
        dir.path().join("tls.key").display(),
    );
    let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("config");
    TestServer::start_with(config, first.ca_pem.clone(), dir).await
}

/// Whether a TLS handshake trusting only `ca_pem` succeeds.
async fn handshake_trusting(server: &TestServer, ca_pem: &str) -> bool {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem, b"http/1.1"));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.is_ok()
}

/// Waits (bounded) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within 10s");
}

#[tokio::test]
async fn a_data_symlink_swap_is_served_to_new_handshakes_while_open_connections_finish() {
    let (first, second) = (pair(), pair());
    let server = serve(&first).await;
    let mut open = Client::connect(server.addr, &first.ca_pem, Proto::Http2).await;
    assert_eq!(open.get("/healthz").await.status, 200);
    assert!(!handshake_trusting(&server, &second.ca_pem).await);

    publish(server.dir.path(), 2, &second.cert_pem, &second.key_pem);
    let tls = server.tls.clone().expect("tls");
    wait_until("the new pair is taken into use", || tls.reloads() == 1).await;

    assert!(
        handshake_trusting(&server, &second.ca_pem).await,
        "new handshakes get the new certificate"
    );
    assert!(
        !handshake_trusting(&server, &first.ca_pem).await,
        "and no longer the old one"
    );
    // The connection opened before the swap goes on with its certificate.
    assert_eq!(open.get("/healthz").await.status, 200);
    let mut fresh = Client::connect(server.addr, &second.ca_pem, Proto::Http1).await;
    assert_eq!(fresh.get("/readyz").await.status, 200);
    assert_eq!(tls.failures(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_broken_pair_is_refused_and_the_old_one_kept() {
    let (first, second, third) = (pair(), pair(), pair());
    let server = serve(&first).await;
    let tls = server.tls.clone().expect("tls");
    let volume = server.dir.path().to_owned();

    // A key that does not match its certificate.
    publish(&volume, 2, &second.cert_pem, &third.key_pem);
    wait_until("the mismatched pair is refused", || tls.failures() == 1).await;
    assert!(handshake_trusting(&server, &first.ca_pem).await);

    // A half-written key file (cut in the middle of its PEM block).
    let half = &second.key_pem[..second.key_pem.len() / 2];
    publish(&volume, 3, &second.cert_pem, half);
    wait_until("the half-written key is refused", || tls.failures() == 2).await;
    assert!(handshake_trusting(&server, &first.ca_pem).await);

    // Not a certificate at all.
    publish(&volume, 4, "not PEM\n", &second.key_pem);
    wait_until("the garbage certificate is refused", || tls.failures() == 3).await;
    assert!(handshake_trusting(&server, &first.ca_pem).await);
    assert_eq!(tls.reloads(), 0, "nothing broken was taken into use");

    // Repaired: taken into use.
    publish(&volume, 5, &second.cert_pem, &second.key_pem);
    wait_until("the repaired pair is taken into use", || tls.reloads() == 1).await;
    assert!(handshake_trusting(&server, &second.ca_pem).await);
    assert_eq!(tls.failures(), 3, "each broken version is reported once");
    server.stop().await;
}

/// Writes a pair with the key at `mode` and returns the config for it.
fn config_with_key_mode(dir: &Path, mode: u32, extra: &str) -> gatehouse::config::Config {
    use std::os::unix::fs::PermissionsExt;
    let pki = pair();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &pki.cert_pem).expect("write cert");
    common::write_key(&key, &pki.key_pem);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{extra}",
        cert.display(),
        key.display()
    );
    gatehouse::config::Config::from_yaml(&yaml, "test").expect("config")
}

#[tokio::test]
async fn a_world_readable_key_stops_startup_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The Kubernetes Secret volume default (0644).
    let config = config_with_key_mode(dir.path(), 0o644, "");
    let err = gatehouse::server::bind(config, false)
        .await
        .expect_err("a world-readable key must stop startup");
    let message = err.to_string();
    assert!(
        message.contains("tls.key") && message.contains("0644"),
        "{message}"
    );
    assert!(message.contains("allow_readable_key"), "{message}");

    let config = config_with_key_mode(dir.path(), 0o644, "  allow_readable_key: true\n");
    let bound = gatehouse::server::bind(config, false).await;
    assert!(bound.is_ok(), "allowed explicitly: {:?}", bound.err());

    let config = config_with_key_mode(dir.path(), 0o600, "");
    let bound = gatehouse::server::bind(config, false).await;
    assert!(bound.is_ok(), "0600: {:?}", bound.err());
}
