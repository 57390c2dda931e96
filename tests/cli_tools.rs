//! The operator commands, run as the real binary: `gatehouse certs` (its certificates serve TLS
//! verified by its CA; keys 0600; nothing overwritten without --force), `gatehouse
//! apiserver-config` (its kubeconfig reaches a running gatehouse), and `gatehouse check` (exit
//! codes and output on allowed, denied, warned and patched manifests, multi-document and List).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{image_review, Proto, TestServer, BOTH};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs the built binary in `dir`, with `stdin` when given.
fn gatehouse(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("gatehouse output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[cfg(unix)]
fn mode(path: impl AsRef<Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    Arc::new(roots)
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

/// Verifies `cert` as a TLS server certificate for `name`, as at `now + after`.
fn verify_server(ca: &str, cert: &str, name: &str, after: Duration) -> Result<(), rustls::Error> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("verifier");
    let now = UnixTime::since_unix_epoch(Duration::from_secs(UnixTime::now().as_secs()) + after);
    verifier
        .verify_server_cert(
            &leaf(cert),
            &[],
            &ServerName::try_from(name.to_owned()).expect("name"),
            &[],
            now,
        )
        .map(|_| ())
}

/// Verifies `cert` as a TLS client certificate.
fn verify_client(ca: &str, cert: &str) -> Result<(), rustls::Error> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("verifier");
    verifier
        .verify_client_cert(&leaf(cert), &[], UnixTime::now())
        .map(|_| ())
}

/// A TLS handshake with `addr` for `name`, trusting only `ca`, then `GET /healthz`.
async fn healthz_as(addr: std::net::SocketAddr, ca: &str, name: &str) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(common::tls_client_config(ca, b"http/1.1"));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).expect("name");
    let mut tls = connector.connect(server_name, tcp).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// gatehouse serving the pair in `pki`, with `extra` configuration.
async fn serve(pki: &Path, extra: &str) -> TestServer {
    let yaml = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{extra}",
        pki.join("tls.crt").display(),
        pki.join("tls.key").display()
    );
    let config = gatehouse::config::Config::from_yaml(&yaml, "test").expect("config");
    TestServer::start_with(
        config,
        read(pki.join("ca.crt")),
        tempfile::tempdir().expect("tmp"),
    )
    .await
}

#[tokio::test]
async fn certs_serve_a_handshake_verified_by_their_ca_for_the_service_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(dir.path(), &["certs"], None);
    assert!(run.status.success(), "{}", stderr(&run));
    let pki = dir.path().join("pki");
    let ca = read(pki.join("ca.crt"));
    // The printed caBundle is the CA, ready to paste.
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    assert!(
        stdout(&run).contains(&format!("caBundle: {bundle}\n")),
        "{}",
        stdout(&run)
    );

    let server = serve(&pki, "").await;
    for name in [
        "gatehouse.gatehouse.svc",
        "gatehouse.gatehouse.svc.cluster.local",
    ] {
        let answer = healthz_as(server.addr, &ca, name).await.expect("handshake");
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
    }
    // Not for other names, and not trusted under another CA.
    let err = healthz_as(server.addr, &ca, "gatehouse.example.com")
        .await
        .expect_err("name not in the certificate");
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    let other = gatehouse::certs::generate(&["gatehouse.gatehouse.svc"]).expect("other CA");
    let err = healthz_as(server.addr, &other.ca_pem, "gatehouse.gatehouse.svc")
        .await
        .expect_err("another CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn certs_for_an_ip_and_p384_serve_http1_and_h2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(
        dir.path(),
        &[
            "certs",
            "--name",
            "127.0.0.1,localhost",
            "--key-type",
            "ecdsa-p384",
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("ECDSA P-384"), "{}", stdout(&run));
    let server = serve(&dir.path().join("pki"), "").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        assert_eq!(client.get("/healthz").await.status, 200, "{proto:?}");
    }
    let answer = healthz_as(server.addr, &server.ca_pem, "127.0.0.1")
        .await
        .expect("IP SAN");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn certs_with_rsa_2048_keys_serve_verified_handshakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(
        dir.path(),
        &[
            "certs",
            "--name",
            "localhost",
            "--key-type",
            "rsa2048",
            "--client",
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).contains("RSA 2048"), "{}", stdout(&run));
    // rsaEncryption (1.2.840.113549.1.1.1) in each certificate's public key.
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    for file in ["ca.crt", "tls.crt", "client.crt"] {
        let pem = std::fs::read(dir.path().join("pki").join(file)).expect(file);
        let der = CertificateDer::from_pem_slice(&pem).expect(file);
        assert!(
            der.windows(RSA_ENCRYPTION.len())
                .any(|w| w == RSA_ENCRYPTION),
            "{file} has no RSA key"
        );
    }
    let server = serve(&dir.path().join("pki"), "").await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        assert_eq!(client.get("/healthz").await.status, 200, "{proto:?}");
    }
    server.stop().await;
}

#[cfg(unix)]
#[test]
fn certs_keys_are_0600_and_nothing_is_overwritten_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let run = gatehouse(
        dir.path(),
        &["certs", "--client", "--secret", "gatehouse-tls"],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(mode(&pki), 0o700);
    for key in ["ca.key", "tls.key", "client.key", "secret.yaml"] {
        assert_eq!(mode(pki.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.crt", "tls.crt", "client.crt"] {
        assert_eq!(mode(pki.join(cert)), 0o644, "{cert}");
    }

    let before = read(pki.join("ca.crt"));
    let again = gatehouse(dir.path(), &["certs"], None);
    assert_eq!(again.status.code(), Some(1));
    let message = stderr(&again);
    assert!(
        message.contains("pki/ca.crt") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(
        read(pki.join("ca.crt")),
        before,
        "unchanged without --force"
    );

    // --force replaces, and a key loosened meanwhile comes back 0600 (a fresh file, renamed in).
    std::fs::set_permissions(
        pki.join("tls.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let forced = gatehouse(dir.path(), &["certs", "--force"], None);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(read(pki.join("ca.crt")), before, "replaced with --force");
    assert_eq!(mode(pki.join("tls.key")), 0o600);
    // The new serving certificate is signed by the new CA.
    verify_server(
        &read(pki.join("ca.crt")),
        &read(pki.join("tls.crt")),
        "gatehouse.gatehouse.svc",
        Duration::ZERO,
    )
    .expect("new pair");
}

#[test]
fn certs_renew_keeps_the_ca_and_so_the_ca_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = gatehouse(
        dir.path(),
        &["certs", "--ca-days", "30", "--days", "10"],
        None,
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let pki = dir.path().join("pki");
    let (ca, ca_key, old) = (
        read(pki.join("ca.crt")),
        read(pki.join("ca.key")),
        read(pki.join("tls.crt")),
    );
    let bundle = |out: &Output| {
        stdout(out)
            .lines()
            .find_map(|l| l.trim().strip_prefix("caBundle: ").map(str::to_owned))
            .expect("caBundle line")
    };

    let renewed = gatehouse(
        dir.path(),
        &[
            "certs",
            "--renew",
            "--days",
            "20",
            "--secret",
            "gatehouse-tls",
        ],
        None,
    );
    assert!(renewed.status.success(), "{}", stderr(&renewed));
    assert_eq!(read(pki.join("ca.crt")), ca, "the CA is kept");
    assert_eq!(read(pki.join("ca.key")), ca_key);
    assert_eq!(
        bundle(&renewed),
        bundle(&first),
        "the caBundle does not change"
    );
    let new = read(pki.join("tls.crt"));
    assert_ne!(new, old, "a new serving certificate");
    let day = Duration::from_secs(86_400);
    verify_server(&ca, &new, "gatehouse.gatehouse.svc", 19 * day).expect("signed by the old CA");
    let secret: Value = serde_saphyr::from_str(&read(pki.join("secret.yaml"))).expect("YAML");
    let secret_ca = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["ca.crt"].as_str().expect("ca.crt"))
        .expect("base64");
    assert_eq!(secret_ca, ca.into_bytes());

    // Past the CA's own end: refused, nothing replaced.
    let too_long = gatehouse(dir.path(), &["certs", "--renew", "--days", "40"], None);
    assert_eq!(too_long.status.code(), Some(1));
    assert!(
        stderr(&too_long).contains("expires before"),
        "{}",
        stderr(&too_long)
    );
    assert_eq!(read(pki.join("tls.crt")), new);

    // A CA whose key is not the one in ca.key (ca.crt from elsewhere): refused.
    // Long-lived, so the CA's own end is not what refuses it.
    let other = gatehouse::certs::issue(&gatehouse::certs::Request {
        names: &[gatehouse::certs::Name::Dns("x".into())],
        key_type: gatehouse::certs::KeyType::EcdsaP256,
        validity: Some(gatehouse::certs::Validity {
            ca: 3650 * day,
            leaf: day,
        }),
        client: false,
    })
    .expect("other CA");
    std::fs::write(pki.join("ca.crt"), other.ca.cert).expect("swap ca.crt");
    let mismatched = gatehouse(dir.path(), &["certs", "--renew"], None);
    assert_eq!(mismatched.status.code(), Some(1));
    assert!(
        stderr(&mismatched).contains("not a pair"),
        "{}",
        stderr(&mismatched)
    );
    assert_eq!(read(pki.join("tls.crt")), new);
}

#[test]
fn certs_client_certificate_is_for_client_auth_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(dir.path(), &["certs", "--client"], None);
    assert!(run.status.success(), "{}", stderr(&run));
    let pki = dir.path().join("pki");
    let (ca, serving, client) = (
        read(pki.join("ca.crt")),
        read(pki.join("tls.crt")),
        read(pki.join("client.crt")),
    );
    verify_client(&ca, &client).expect("client certificate chains to the CA");
    let err = verify_client(&ca, &serving).expect_err("serving certificate lacks clientAuth");
    assert!(format!("{err:?}").contains("Purpose"), "{err:?}");
    let err = verify_server(&ca, &client, "gatehouse.gatehouse.svc", Duration::ZERO)
        .expect_err("client certificate is no server certificate");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
    // CN=kube-apiserver, as mTLS allow lists name the apiserver.
    let der = leaf(&client);
    assert!(der.windows(14).any(|w| w == b"kube-apiserver"));
}

#[test]
fn certs_validity_follows_days_and_the_ca_outlives_its_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(
        dir.path(),
        &["certs", "--days", "30", "--ca-days", "60"],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let pki = dir.path().join("pki");
    let (ca, cert) = (read(pki.join("ca.crt")), read(pki.join("tls.crt")));
    let day = Duration::from_secs(86_400);
    verify_server(&ca, &cert, "gatehouse.gatehouse.svc", 29 * day).expect("valid on day 29");
    let err = verify_server(&ca, &cert, "gatehouse.gatehouse.svc", 31 * day)
        .expect_err("expired on day 31");
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");

    let refused = gatehouse(
        dir.path(),
        &["certs", "--out-dir", "x", "--days", "90", "--ca-days", "60"],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("--ca-days"),
        "{}",
        stderr(&refused)
    );
    assert!(!dir.path().join("x").exists(), "nothing written");
}

#[test]
fn certs_secret_manifest_holds_the_pair_and_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = gatehouse(
        dir.path(),
        &["certs", "--secret", "webhook-tls", "--namespace", "policy"],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let pki = dir.path().join("pki");
    let secret: Value = serde_saphyr::from_str(&read(pki.join("secret.yaml"))).expect("YAML");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "webhook-tls");
    assert_eq!(secret["metadata"]["namespace"], "policy");
    for (key, file) in [
        ("tls.crt", "tls.crt"),
        ("tls.key", "tls.key"),
        ("ca.crt", "ca.crt"),
    ] {
        let data = secret["data"][key].as_str().expect("base64");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64");
        assert_eq!(decoded, read(pki.join(file)).into_bytes(), "{key}");
    }

    for bad in [
        ["certs", "--out-dir", "y", "--name", "not a name"],
        ["certs", "--out-dir", "y", "--secret", "Bad_Name"],
    ] {
        let refused = gatehouse(dir.path(), &bad, None);
        assert_eq!(refused.status.code(), Some(1), "{bad:?}");
        assert!(!dir.path().join("y").exists(), "{bad:?}: nothing written");
    }
}

/// The `server` URL and CA a kubeconfig's current context uses.
fn kubeconfig_target(kubeconfig: &Value) -> (String, Value, Value) {
    let context = kubeconfig["current-context"]
        .as_str()
        .expect("current-context");
    let context = kubeconfig["contexts"]
        .as_array()
        .expect("contexts")
        .iter()
        .find(|c| c["name"] == context)
        .expect("context");
    let cluster = kubeconfig["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == context["context"]["cluster"])
        .expect("cluster");
    let user = kubeconfig["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == context["context"]["user"])
        .expect("user");
    (
        cluster["cluster"]["server"]
            .as_str()
            .expect("server")
            .to_owned(),
        cluster["cluster"].clone(),
        user["user"].clone(),
    )
}

fn decode(value: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 field"))
        .expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

#[tokio::test]
async fn apiserver_config_kubeconfig_reaches_a_running_gatehouse() {
    let dir = tempfile::tempdir().expect("tempdir");
    // localhost too: the shared test client verifies that name.
    let run = gatehouse(
        dir.path(),
        &["certs", "--name", "127.0.0.1,localhost", "--client"],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let pki = dir.path().join("pki");
    let server = serve(&pki, "").await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let run = gatehouse(
        dir.path(),
        &[
            "apiserver-config",
            "--server",
            &url,
            "--ca",
            "pki/ca.crt",
            "--client-cert",
            "pki/client.crt",
            "--client-key",
            "pki/client.key",
            "--allow-ttl",
            "60",
            "--deny-ttl",
            "10",
            "--retry-backoff",
            "1000",
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stderr(&run), "", "no warning for an IP address");
    let printed = stdout(&run);
    for line in [
        "--authentication-token-webhook-config-file=/etc/kubernetes/gatehouse/authn-webhook.kubeconfig",
        "--admission-control-config-file=/etc/kubernetes/gatehouse/admission-config.yaml",
        "ImagePolicyWebhook",
        "hostPath:",
        "path: /etc/kubernetes/gatehouse",
        "mountPath: /etc/kubernetes/gatehouse",
    ] {
        assert!(printed.contains(line), "{line}:\n{printed}");
    }

    let out = dir.path().join("apiserver");
    let image: Value =
        serde_saphyr::from_str(&read(out.join("image-policy.kubeconfig"))).expect("YAML");
    let (server_url, cluster, user) = kubeconfig_target(&image);
    assert_eq!(server_url, format!("{url}/image_policy"));
    // Self-contained: the CA and the client pair are embedded.
    let ca = decode(&cluster["certificate-authority-data"]);
    assert_eq!(ca, read(pki.join("ca.crt")));
    assert_eq!(
        decode(&user["client-certificate-data"]),
        read(pki.join("client.crt"))
    );
    assert_eq!(
        decode(&user["client-key-data"]),
        read(pki.join("client.key"))
    );
    // What the ImagePolicyWebhook plugin would do with it: verify the URL's host under that CA
    // only, and POST an ImageReview to the URL's path.
    let answer = healthz_as(server.addr, &ca, "127.0.0.1")
        .await
        .expect("URL host verifies");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let path = server_url.trim_start_matches(&url);
    for proto in BOTH {
        let mut client = common::Client::connect(server.addr, &ca, proto).await;
        let answer = client
            .post_json(path, image_review("default", &["nginx:1.25"]))
            .await;
        assert_eq!(answer.status, 200, "{proto:?}");
        assert_eq!(answer.json()["status"]["allowed"], true);
    }

    let authn: Value =
        serde_saphyr::from_str(&read(out.join("authn-webhook.kubeconfig"))).expect("YAML");
    assert_eq!(kubeconfig_target(&authn).0, format!("{url}/authenticate"));
    let admission: Value =
        serde_saphyr::from_str(&read(out.join("admission-config.yaml"))).expect("YAML");
    assert_eq!(admission["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(admission["kind"], "AdmissionConfiguration");
    assert_eq!(admission["plugins"][0]["name"], "ImagePolicyWebhook");
    let policy = &admission["plugins"][0]["configuration"]["imagePolicy"];
    assert_eq!(
        policy["kubeConfigFile"],
        "/etc/kubernetes/gatehouse/image-policy.kubeconfig"
    );
    assert_eq!(policy["allowTTL"], 60);
    assert_eq!(policy["denyTTL"], 10);
    assert_eq!(policy["retryBackoff"], 1000);
    assert_eq!(policy["defaultAllow"], false);
    #[cfg(unix)]
    for file in ["image-policy.kubeconfig", "authn-webhook.kubeconfig"] {
        assert_eq!(mode(out.join(file)), 0o600, "{file} holds a private key");
    }
    server.stop().await;
}

#[test]
fn apiserver_config_by_path_refers_to_the_host_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(gatehouse(dir.path(), &["certs", "--client"], None)
        .status
        .success());
    let args = [
        "apiserver-config",
        "--server",
        "https://10.0.0.5:30443",
        "--ca",
        "pki/ca.crt",
        "--client-cert",
        "pki/client.crt",
        "--client-key",
        "pki/client.key",
        "--by-path",
        "--host-dir",
        "/etc/gh",
        "--out-dir",
        "files",
    ];
    let run = gatehouse(dir.path(), &args, None);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = dir.path().join("files");
    let authn: Value =
        serde_saphyr::from_str(&read(out.join("authn-webhook.kubeconfig"))).expect("YAML");
    let (server, cluster, user) = kubeconfig_target(&authn);
    assert_eq!(server, "https://10.0.0.5:30443/authenticate");
    assert_eq!(cluster["certificate-authority"], "/etc/gh/ca.crt");
    assert_eq!(user["client-certificate"], "/etc/gh/client.crt");
    assert_eq!(user["client-key"], "/etc/gh/client.key");
    assert!(cluster.get("certificate-authority-data").is_none());
    // The referenced files are in the directory to copy.
    let pki = dir.path().join("pki");
    for file in ["ca.crt", "client.crt", "client.key"] {
        assert_eq!(read(out.join(file)), read(pki.join(file)), "{file}");
    }
    #[cfg(unix)]
    assert_eq!(mode(out.join("client.key")), 0o600);
    // Run twice: refused without --force.
    let again = gatehouse(dir.path(), &args, None);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
}

#[test]
fn apiserver_config_warns_about_service_names_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(gatehouse(dir.path(), &["certs"], None).status.success());
    let run = gatehouse(
        dir.path(),
        &[
            "apiserver-config",
            "--server",
            "https://gatehouse.gatehouse.svc",
            "--ca",
            "pki/ca.crt",
        ],
        None,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let warning = stderr(&run);
    assert!(
        warning.contains("warning")
            && warning.contains("cannot resolve")
            && warning.contains("NodePort"),
        "{warning}"
    );

    for (server, ca, needle) in [
        ("http://127.0.0.1:8443", "pki/ca.crt", "https://"),
        (
            "https://127.0.0.1:8443/authenticate",
            "pki/ca.crt",
            "routes",
        ),
        ("https://127.0.0.1:8443", "pki/tls.key", "CERTIFICATE"),
        ("https://127.0.0.1:8443", "pki/missing.crt", "missing.crt"),
    ] {
        let run = gatehouse(
            dir.path(),
            &[
                "apiserver-config",
                "--server",
                server,
                "--ca",
                ca,
                "--out-dir",
                "bad",
            ],
            None,
        );
        assert_eq!(run.status.code(), Some(1), "{server} {ca}");
        assert!(
            stderr(&run).contains(needle),
            "{server} {ca}: {}",
            stderr(&run)
        );
        assert!(!dir.path().join("bad").exists(), "nothing written");
    }
}

const POLICIES: &str = "
policies:
  - name: no-latest
    images:
      deny_latest: true
  - name: mirror-only
    match:
      namespaces: [prod]
    images:
      allowed_registries: [registry.my.com]
  - name: team-label
    enforcement: warn
    match:
      kinds: [Deployment]
    labels:
      required:
        team: \"?*\"
";

const MUTATIONS: &str = "
mutations:
  - name: mirror
    match:
      kinds: [Pod]
    rewrite_registries:
      docker.io: registry.my.com/hub
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).expect("write");
    name.to_owned()
}

fn pod(name: &str, namespace: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  containers:\n    - name: c\n      image: {image}\n"
    )
}

fn json_report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(output), stderr(output)))
}

#[test]
fn check_allows_and_denies_with_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write(dir.path(), "ok.yaml", &pod("web", "default", "nginx:1.25"));
    let run = gatehouse(dir.path(), &["check", &ok], None);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(
        stdout(&run),
        "ok.yaml#1 Pod default/web: allowed\n1 objects: 1 allowed, 0 warned, 0 denied, 0 patched, 0 errors\n"
    );

    // The embedded default: the latest tag is refused, with the server's own message.
    let bad = write(dir.path(), "bad.yaml", &pod("web", "default", "nginx"));
    let run = gatehouse(dir.path(), &["check", &ok, &bad], None);
    assert_eq!(run.status.code(), Some(1));
    let out = stdout(&run);
    assert!(
        out.contains("bad.yaml#1 Pod default/web: denied\n"),
        "{out}"
    );
    assert!(
        out.contains("Images using latest tag are not allowed: container \"c\" uses \"nginx\""),
        "{out}"
    );
    assert!(
        out.ends_with("2 objects: 1 allowed, 0 warned, 1 denied, 0 patched, 0 errors\n"),
        "{out}"
    );
}

#[test]
fn check_reads_multi_document_files_and_lists_of_every_workload_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(dir.path(), "gatehouse.yaml", POLICIES);
    let manifests = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: prod, labels: {team: core}}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: docker.io/library/nginx:1.25}]
---
# a document with comments only is skipped
---
apiVersion: v1
kind: List
items:
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly}
    spec:
      schedule: '0 3 * * *'
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: OnFailure
              containers: [{name: job, image: busybox}]
  - apiVersion: v1
    kind: Service
    metadata: {name: api, namespace: prod}
    spec: {ports: [{port: 80}]}
";
    let file = write(dir.path(), "all.yaml", manifests);
    let run = gatehouse(
        dir.path(),
        &["check", "-c", &config, "-o", "json", &file],
        None,
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let report = json_report(&run);
    let results = report["results"].as_array().expect("results");
    let seen: Vec<(u64, Option<u64>, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["document"].as_u64().expect("document"),
                r["item"].as_u64(),
                r["kind"].as_str().expect("kind"),
                r["verdict"].as_str().expect("verdict"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, None, "Deployment", "denied"),
            (2, Some(0), "CronJob", "denied"),
            (2, Some(1), "Service", "allowed"),
        ]
    );
    // The Deployment's pod template is judged in its namespace; the CronJob's in the default.
    assert!(results[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("mirror-only") && m.contains("docker.io/library/nginx:1.25")));
    assert_eq!(results[1]["namespace"], "default");
    assert!(results[1]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no-latest") && m.contains("busybox")));
    assert_eq!(report["summary"]["objects"], 3);
    assert_eq!(report["summary"]["denied"], 2);
}

#[test]
fn check_reports_warnings_without_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(dir.path(), "gatehouse.yaml", POLICIES);
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: nginx:1.25}]\n";
    let run = gatehouse(
        dir.path(),
        &["check", "--config", &config, "-"],
        Some(deployment),
    );
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let out = stdout(&run);
    assert!(
        out.starts_with("<stdin>#1 Deployment default/web: warned\n"),
        "{out}"
    );
    assert!(
        out.contains("  warning: ") && out.contains("team-label"),
        "{out}"
    );
    assert!(out.contains("1 warned, 0 denied"), "{out}");
}

#[test]
fn check_validates_the_mutated_object_and_prints_the_patch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = write(dir.path(), "pod.yaml", &pod("web", "prod", "nginx:1.25"));
    // Policies alone: Docker Hub is not the mirror, so prod refuses the pod.
    let policies = write(dir.path(), "policies.yaml", POLICIES);
    let run = gatehouse(dir.path(), &["check", "-c", &policies, &manifest], None);
    assert_eq!(run.status.code(), Some(1), "{}", stdout(&run));

    // With the mirror mutation, /mutate rewrites the image first and /validate admits the result.
    let both = write(dir.path(), "both.yaml", &format!("{POLICIES}{MUTATIONS}"));
    let run = gatehouse(
        dir.path(),
        &["check", "-c", &both, "-o", "json", &manifest],
        None,
    );
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    let result = &json_report(&run)["results"][0];
    assert_eq!(result["verdict"], "allowed");
    assert_eq!(
        result["patch"],
        serde_json::json!([{"op": "replace", "path": "/spec/containers/0/image",
            "value": "registry.my.com/hub/library/nginx:1.25"}])
    );
    assert_eq!(json_report(&run)["summary"]["patched"], 1);

    let run = gatehouse(dir.path(), &["check", "-c", &both, &manifest], None);
    let out = stdout(&run);
    assert!(
        out.contains("pod.yaml#1 Pod prod/web: allowed, patched\n"),
        "{out}"
    );
    assert!(out.contains("  patch: [{\"op\":\"replace\""), "{out}");
}

#[test]
fn check_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(
        dir.path(),
        "good.yaml",
        &pod("web", "default", "nginx:1.25"),
    );
    let cases = [
        ("broken.yaml", "kind: [unclosed\n", "not YAML"),
        (
            "kindless.yaml",
            "metadata: {name: x}\n",
            "no apiVersion or kind",
        ),
        ("scalar.yaml", "just text\n", "not an object"),
    ];
    for (name, text, needle) in cases {
        let file = write(dir.path(), name, text);
        let run = gatehouse(dir.path(), &["check", &good, &file], None);
        assert_eq!(run.status.code(), Some(2), "{name}");
        let out = stdout(&run);
        assert!(out.contains(name) && out.contains(needle), "{name}: {out}");
        // The other file is still checked.
        assert!(
            out.contains("good.yaml#1 Pod default/web: allowed"),
            "{out}"
        );
    }
    let run = gatehouse(dir.path(), &["check", "missing.yaml"], None);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stdout(&run).contains("missing.yaml: error"),
        "{}",
        stdout(&run)
    );

    // A configuration the server would refuse stops check the same way.
    let config = write(dir.path(), "bad-config.yaml", "limits:\n  max_bdy: 1MiB\n");
    let run = gatehouse(dir.path(), &["check", "-c", &config, &good], None);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("max_bdy"), "{}", stderr(&run));
}

#[tokio::test]
async fn check_agrees_with_the_running_server() {
    // Same configuration, same object: the server's answer and check's verdict match.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(dir.path(), "gatehouse.yaml", POLICIES);
    let server = TestServer::start(POLICIES).await;
    for (image, allowed) in [("registry.my.com/app:1.0", true), ("nginx:1.25", false)] {
        let manifest = write(dir.path(), "pod.yaml", &pod("web", "prod", image));
        let run = gatehouse(
            dir.path(),
            &["check", "-c", &config, "-o", "json", &manifest],
            None,
        );
        let result = &json_report(&run)["results"][0];
        let review = common::pod_review("admission.k8s.io/v1", "u1", "prod", &[image]);
        let mut client = server.client(Proto::Http1).await;
        let answer = client.post_json("/validate", review).await.json();
        assert_eq!(answer["response"]["allowed"], allowed, "{image}");
        assert_eq!(
            result["verdict"],
            if allowed { "allowed" } else { "denied" },
            "{image}"
        );
        if !allowed {
            // Container names differ (c vs c0); the policy's message is the same text.
            let message = answer["response"]["status"]["message"]
                .as_str()
                .expect("message");
            let checked = result["message"].as_str().expect("message");
            assert_eq!(checked.replace("\"c\"", "\"c0\""), message);
        }
    }
    server.stop().await;
}

/// `gatehouse check` evaluates Gatekeeper constraints offline by the server's own code: with
/// `gatekeeper.paths` set to the project's templates, a Pod and a Deployment from another
/// registry are denied by the allowed-repos constraint, a Namespace without its owner label by
/// the required-labels one, each message naming its constraint; a warn constraint warns; a
/// compliant Pod is allowed.
#[test]
fn check_evaluates_gatekeeper_constraints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gatekeeper/policies");
    let config = write(
        dir.path(),
        "gatehouse.yaml",
        &format!(
            "policies:\n  - name: pinned\n    images:\n      deny_latest: true\n\
             gatekeeper:\n  paths: [{:?}]\n",
            templates.display().to_string()
        ),
    );
    let manifests = format!(
        "{}---\n{}---\n{}---\n{}---\n{}",
        pod("good", "default", "registry.my.com/app:1.0"),
        pod("elsewhere", "default", "docker.io/library/nginx:1.25"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: quay.io/x/web:1}]\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {owner: Bob}}\n",
        pod("staged", "staging", "registry.my.com/app:latest"),
    );
    let file = write(dir.path(), "all.yaml", &manifests);
    let run = gatehouse(
        dir.path(),
        &["check", "-c", &config, "-o", "json", &file],
        None,
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let report = json_report(&run);
    let results = report["results"].as_array().expect("results");
    let verdicts: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default(),
                r["verdict"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("good", "allowed"),
            ("elsewhere", "denied"),
            ("web", "denied"),
            ("team-a", "denied"),
            ("staged", "denied"),
        ],
        "{report}"
    );
    let message = |i: usize| {
        results[i]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        message(1).contains(
            "[repos-from-registry-my-com] container <c> has an invalid image repo \
             <docker.io/library/nginx:1.25>"
        ),
        "{}",
        message(1)
    );
    assert!(
        message(2).contains("[repos-from-registry-my-com] container <web>"),
        "{}",
        message(2)
    );
    assert!(
        message(3).contains("[namespaces-have-an-owner] label <owner: Bob> does not match"),
        "{}",
        message(3)
    );
    // Native policies and constraints together: the native denial and the warn constraint's
    // warning are both reported.
    assert!(message(4).contains("(policy \"pinned\")"), "{}", message(4));
    let warnings = results[4]["warnings"].to_string();
    assert!(warnings.contains("[no-latest-in-staging]"), "{report}");
}
