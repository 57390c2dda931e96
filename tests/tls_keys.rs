//! The serving key may be RSA, ECDSA P-256/P-384 or Ed25519, in PKCS#8, PKCS#1 or SEC1 PEM.

mod common;

use std::path::{Path, PathBuf};

use common::{Proto, TestServer};
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
};

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keys")
        .join(name)
}

/// A CA made here, and a certificate for localhost signed by it for the key in `pkcs8`.
fn cert_for(pkcs8: &str, alg: &'static SignatureAlgorithm) -> (String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("CA cert").pem();
    let issuer = Issuer::new(ca, ca_key);
    let pem = std::fs::read_to_string(key_path(pkcs8)).expect("key file");
    let key = KeyPair::from_pem_and_sign_algo(&pem, alg).expect("load key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    let cert_pem = leaf.signed_by(&key, &issuer).expect("leaf cert").pem();
    (ca_pem, cert_pem)
}

/// The key `name` copied into `dir` readable by its owner only, as gatehouse requires (a
/// checkout leaves tests/data/keys 0644).
fn private_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join("tls.key");
    let pem = std::fs::read_to_string(key_path(name)).expect("key file");
    common::write_key(&path, &pem);
    path
}

/// A config serving `cert` with `key` on an ephemeral port.
fn config(cert: &Path, key: &Path) -> gatehouse::config::Config {
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    );
    gatehouse::config::Config::from_yaml(&yaml, "test").expect("config")
}

async fn serves_with(served_key: &str, pkcs8: &str, alg: &'static SignatureAlgorithm) {
    let (ca_pem, cert_pem) = cert_for(pkcs8, alg);
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, cert_pem).expect("write cert");
    let config = config(&cert, &private_key(dir.path(), served_key));
    let server = TestServer::start_with(config, ca_pem, dir).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let answer = server.client(proto).await.get("/healthz").await;
        assert_eq!(answer.status, 200, "{served_key} over {proto:?}");
    }
}

#[tokio::test]
async fn rsa_pkcs8() {
    serves_with("rsa.pkcs8.pem", "rsa.pkcs8.pem", &PKCS_RSA_SHA256).await;
}

#[tokio::test]
async fn rsa_pkcs1() {
    serves_with("rsa.pkcs1.pem", "rsa.pkcs8.pem", &PKCS_RSA_SHA256).await;
}

#[tokio::test]
async fn ecdsa_p256_pkcs8() {
    serves_with("p256.pkcs8.pem", "p256.pkcs8.pem", &PKCS_ECDSA_P256_SHA256).await;
}

#[tokio::test]
async fn ecdsa_p256_sec1() {
    serves_with("p256.sec1.pem", "p256.pkcs8.pem", &PKCS_ECDSA_P256_SHA256).await;
}

#[tokio::test]
async fn ecdsa_p384_pkcs8() {
    serves_with("p384.pkcs8.pem", "p384.pkcs8.pem", &PKCS_ECDSA_P384_SHA384).await;
}

#[tokio::test]
async fn ecdsa_p384_sec1() {
    serves_with("p384.sec1.pem", "p384.pkcs8.pem", &PKCS_ECDSA_P384_SHA384).await;
}

#[tokio::test]
async fn ed25519_pkcs8() {
    serves_with("ed25519.pkcs8.pem", "ed25519.pkcs8.pem", &PKCS_ED25519).await;
}

#[tokio::test]
async fn key_not_matching_the_certificate_is_refused_at_start() {
    let (_, cert_pem) = cert_for("p256.pkcs8.pem", &PKCS_ECDSA_P256_SHA256);
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, cert_pem).expect("write cert");
    let config = config(&cert, &private_key(dir.path(), "p384.pkcs8.pem"));
    let err = gatehouse::server::bind(config, false)
        .await
        .expect_err("mismatched pair");
    assert!(err.to_string().contains("tls"), "{err}");
}

#[tokio::test]
async fn a_key_file_without_a_key_is_refused_naming_tls_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, cert_for("p256.pkcs8.pem", &PKCS_ECDSA_P256_SHA256).1).expect("cert");
    common::write_key(&key, "not a key\n");
    let config = config(&cert, &key);
    let err = gatehouse::server::bind(config, false)
        .await
        .expect_err("no key");
    assert!(err.to_string().contains("tls.key"), "{err}");
}
