//! `gatehouse apiserver-config`: the files kube-apiserver reads for the two hooks configured by
//! flag rather than by API object (token authentication and the ImagePolicyWebhook admission
//! plugin), field for field as the Kubernetes documentation shows them, and the flags and
//! static-pod mount that make the apiserver read them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use rustls_pki_types::pem::{PemObject, SectionKind};

use crate::cli::ApiserverConfigArgs;
use crate::files::{self, FileError, OutFile};

/// Why the apiserver files were not written.
#[derive(Debug, thiserror::Error)]
pub enum ApiserverConfigError {
    /// `--server` is not an `https://host[:port]` URL.
    #[error("--server {url:?}: {reason}")]
    Server {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--host-dir` is relative or not plain text.
    #[error("--host-dir {0}: must be an absolute path without quotes, '#' or line breaks")]
    HostDir(PathBuf),
    /// A PEM input is not what its flag needs.
    #[error("{flag} {path}: {reason}")]
    Pem {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Files could not be read or written.
    #[error(transparent)]
    Files(#[from] FileError),
    /// Standard output or error is gone.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `gatehouse apiserver-config`: instructions on stdout, warnings and errors on stderr.
pub fn main(args: &ApiserverConfigArgs) -> ExitCode {
    match run(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse apiserver-config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The kubeconfig for `--authentication-token-webhook-config-file`.
pub const AUTHN_KUBECONFIG: &str = "authn-webhook.kubeconfig";
/// The kubeconfig the ImagePolicyWebhook plugin reads.
pub const IMAGE_POLICY_KUBECONFIG: &str = "image-policy.kubeconfig";
/// The AdmissionConfiguration for `--admission-control-config-file`.
pub const ADMISSION_CONFIG: &str = "admission-config.yaml";

/// PEM inputs are a few KiB; anything past this is the wrong file.
const MAX_PEM: u64 = 1 << 20;

/// Writes the files and prints what to do with them.
pub fn run(
    args: &ApiserverConfigArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), ApiserverConfigError> {
    // Exhaustive: a new flag is a compile error here until it is wired.
    let ApiserverConfigArgs {
        server,
        ca,
        client_cert,
        client_key,
        out_dir,
        host_dir,
        by_path,
        allow_ttl,
        deny_ttl,
        retry_backoff,
        force,
    } = args;
    let (base, host) = parse_server(server)?;
    let host_dir_str = host_dir
        .to_str()
        .filter(|s| host_dir.is_absolute() && !s.contains(['"', '\'', '#', '\n', '\r', '\\']))
        .ok_or_else(|| ApiserverConfigError::HostDir(host_dir.clone()))?
        .trim_end_matches('/');
    let ca_pem = read_pem("--ca", ca, Expect::Certificates)?;
    let client = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some((
            read_pem("--client-cert", cert, Expect::Certificates)?,
            read_pem("--client-key", key, Expect::PrivateKey)?,
        )),
        _ => None,
    };

    let credentials = if *by_path {
        Credentials::Paths {
            dir: host_dir_str,
            client: client.is_some(),
        }
    } else {
        Credentials::Embedded {
            ca: &ca_pem,
            client: client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        }
    };
    let host_path = |name: &str| format!("{host_dir_str}/{name}");
    let authn_flags = format!(
        "# How kube-apiserver reaches gatehouse's POST /authenticate:\n\
         # kube-apiserver --authentication-token-webhook-config-file={}\n\
         #   --authentication-token-webhook-version=v1   (v1beta1, the default, works too)\n\
         #   --authentication-token-webhook-cache-ttl=2m\n",
        host_path(AUTHN_KUBECONFIG)
    );
    let image_flags = format!(
        "# How the ImagePolicyWebhook admission plugin reaches gatehouse's POST /image_policy;\n\
         # named by kubeConfigFile in {}.\n",
        host_path(ADMISSION_CONFIG)
    );
    // Kubeconfigs that embed a client key are secrets; the others are kept as private anyway,
    // like kubeadm's /etc/kubernetes/*.conf.
    let mut files = vec![
        OutFile::secret(
            AUTHN_KUBECONFIG,
            kubeconfig(&authn_flags, &format!("{base}/authenticate"), &credentials),
        ),
        OutFile::secret(
            IMAGE_POLICY_KUBECONFIG,
            kubeconfig(&image_flags, &format!("{base}/image_policy"), &credentials),
        ),
        OutFile::public(
            ADMISSION_CONFIG,
            admission_config(
                &host_path(IMAGE_POLICY_KUBECONFIG),
                &host_path(ADMISSION_CONFIG),
                *allow_ttl,
                *deny_ttl,
                *retry_backoff,
            ),
        ),
    ];
    if *by_path {
        files.push(OutFile::public("ca.crt", ca_pem.clone()));
        if let Some((cert, key)) = &client {
            files.push(OutFile::public("client.crt", cert.clone()));
            files.push(OutFile::secret("client.key", key.clone()));
        }
    }
    if let Some(warning) = service_name_warning(&host) {
        writeln!(err, "warning: {warning}")?;
    }
    let written = files::write_all(out_dir, &files, *force)?;
    for path in &written {
        writeln!(out, "wrote {}", path.display())?;
    }
    write!(out, "{}", instructions(host_dir_str, out_dir))?;
    Ok(())
}

/// How the kubeconfigs carry the CA and the client pair.
enum Credentials<'a> {
    /// Inline (`*-data`, base64): the files are self-contained.
    Embedded {
        ca: &'a [u8],
        client: Option<(&'a [u8], &'a [u8])>,
    },
    /// By path in the host directory (`ca.crt`, `client.crt`, `client.key`).
    Paths { dir: &'a str, client: bool },
}

/// Checks `--server` and returns it without a trailing slash, and its host.
fn parse_server(url: &str) -> Result<(String, String), ApiserverConfigError> {
    let fail = |reason| ApiserverConfigError::Server {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| fail("not a URL (https://host[:port])"))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail(
            "must start with https:// (kube-apiserver sends tokens and pods only over TLS)",
        ));
    }
    let authority = uri
        .authority()
        .ok_or(fail("has no host (https://host[:port])"))?;
    if authority.as_str().contains('@') {
        return Err(fail("must not carry credentials"));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(fail(
            "give only https://host[:port]: the routes (/authenticate, /image_policy) are added",
        ));
    }
    let host = authority.host().to_owned();
    if host.is_empty() {
        return Err(fail("has no host (https://host[:port])"));
    }
    Ok((format!("https://{}", authority.as_str()), host))
}

/// A cluster Service name is resolved by cluster DNS, which an apiserver on the host network
/// (every kubeadm control plane) does not use.
fn service_name_warning(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (host.ends_with(".svc") || host.contains(".svc.")).then(|| {
        format!(
            "{host} is a cluster Service name: kube-apiserver runs on the host network and \
             usually cannot resolve it (\"dial tcp: lookup {host}: no such host\"). Use an address \
             the control-plane host reaches (gatehouse on the host at 127.0.0.1, a node IP with a \
             NodePort, a load balancer) and put it in the certificate (gatehouse certs --name)."
        )
    })
}

#[derive(Clone, Copy)]
enum Expect {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks it holds what `flag` needs.
fn read_pem(
    flag: &'static str,
    path: &Path,
    expect: Expect,
) -> Result<Vec<u8>, ApiserverConfigError> {
    let bytes = files::read_limited(path, MAX_PEM)?;
    let fail = |reason: String| ApiserverConfigError::Pem {
        flag,
        path: path.to_owned(),
        reason,
    };
    let mut kinds = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, _) = section.map_err(|e| fail(format!("not PEM: {e}")))?;
        kinds.push(kind);
    }
    let ok = match expect {
        Expect::Certificates => {
            !kinds.is_empty() && kinds.iter().all(|k| *k == SectionKind::Certificate)
        }
        Expect::PrivateKey => {
            kinds.len() == 1
                && matches!(
                    kinds[0],
                    SectionKind::PrivateKey
                        | SectionKind::RsaPrivateKey
                        | SectionKind::EcPrivateKey
                )
        }
    };
    if !ok {
        return Err(fail(match expect {
            Expect::Certificates => "expected PEM CERTIFICATE blocks only".to_owned(),
            Expect::PrivateKey => "expected one PEM private key".to_owned(),
        }));
    }
    Ok(bytes)
}

/// A kubeconfig as the webhook documentation shows it: one cluster (gatehouse), one user (the
/// apiserver), one context joining them.
fn kubeconfig(header: &str, server: &str, credentials: &Credentials<'_>) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (ca, user) = match credentials {
        Credentials::Embedded { ca, client } => (
            format!("certificate-authority-data: {}", b64(ca)),
            match client {
                Some((cert, key)) => format!(
                    "\n      client-certificate-data: {}\n      client-key-data: {}",
                    b64(cert),
                    b64(key)
                ),
                None => " {}".to_owned(),
            },
        ),
        Credentials::Paths { dir, client } => (
            format!("certificate-authority: {dir}/ca.crt"),
            if *client {
                format!(
                    "\n      client-certificate: {dir}/client.crt\n      client-key: {dir}/client.key"
                )
            } else {
                " {}".to_owned()
            },
        ),
    };
    format!(
        "{header}\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         \x20 - name: gatehouse\n\
         \x20   cluster:\n\
         \x20     server: {server}\n\
         \x20     {ca}\n\
         users:\n\
         \x20 - name: kube-apiserver\n\
         \x20   user:{user}\n\
         contexts:\n\
         \x20 - name: gatehouse\n\
         \x20   context:\n\
         \x20     cluster: gatehouse\n\
         \x20     user: kube-apiserver\n\
         current-context: gatehouse\n"
    )
}

/// The AdmissionConfiguration enabling the ImagePolicyWebhook plugin.
fn admission_config(
    kubeconfig: &str,
    itself: &str,
    allow_ttl: u32,
    deny_ttl: u32,
    retry_backoff: u32,
) -> String {
    format!(
        "# kube-apiserver --enable-admission-plugins=...,ImagePolicyWebhook\n\
         #   --admission-control-config-file={itself}\n\
         # If the apiserver already has an --admission-control-config-file, add this plugin entry\n\
         # to that file instead: it takes only one.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: AdmissionConfiguration\n\
         plugins:\n\
         \x20 - name: ImagePolicyWebhook\n\
         \x20   configuration:\n\
         \x20     imagePolicy:\n\
         \x20       kubeConfigFile: {kubeconfig}\n\
         \x20       # Seconds the apiserver caches an allow and a denial; gatehouse's own decision\n\
         \x20       # cache defaults to the same (cache.allow_ttl 5m, cache.deny_ttl 30s).\n\
         \x20       allowTTL: {allow_ttl}\n\
         \x20       denyTTL: {deny_ttl}\n\
         \x20       # Milliseconds between retries of a failed call.\n\
         \x20       retryBackoff: {retry_backoff}\n\
         \x20       # Fail closed: an unreachable gatehouse refuses pods rather than admitting anything.\n\
         \x20       defaultAllow: false\n"
    )
}

/// The flags and the kubeadm static-pod mount that make the apiserver read the files.
fn instructions(host_dir: &str, out_dir: &Path) -> String {
    format!(
        "\n\
         Copy {out} to {host_dir} on every control-plane node (owned by root, mode 0700), then add to\n\
         kube-apiserver (kubeadm: /etc/kubernetes/manifests/kube-apiserver.yaml, spec.containers[0].command):\n\
         \n\
         \x20   # token authentication (POST /authenticate)\n\
         \x20   - --authentication-token-webhook-config-file={host_dir}/{AUTHN_KUBECONFIG}\n\
         \x20   - --authentication-token-webhook-version=v1\n\
         \x20   - --authentication-token-webhook-cache-ttl=2m\n\
         \x20   # ImagePolicyWebhook (POST /image_policy): append to the existing plugin list\n\
         \x20   - --enable-admission-plugins=NodeRestriction,ImagePolicyWebhook\n\
         \x20   - --admission-control-config-file={host_dir}/{ADMISSION_CONFIG}\n\
         \n\
         and mount the directory into the apiserver's pod (same file):\n\
         \n\
         \x20   spec.containers[0].volumeMounts:\n\
         \x20   - name: gatehouse\n\
         \x20     mountPath: {host_dir}\n\
         \x20     readOnly: true\n\
         \x20   spec.volumes:\n\
         \x20   - name: gatehouse\n\
         \x20     hostPath:\n\
         \x20       path: {host_dir}\n\
         \x20       type: Directory\n\
         \n\
         The kubelet restarts the apiserver when the manifest changes. Without the mount it exits with\n\
         \"no such file or directory\" for the files above.\n",
        out = out_dir.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("https://127.0.0.1:8443/").unwrap(),
            ("https://127.0.0.1:8443".to_owned(), "127.0.0.1".to_owned())
        );
        assert_eq!(
            parse_server("https://gatehouse.example.com").unwrap().0,
            "https://gatehouse.example.com"
        );
        assert_eq!(
            parse_server("https://[::1]:8443").unwrap().0,
            "https://[::1]:8443"
        );
        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://127.0.0.1:8443/authenticate",
            "https://127.0.0.1:8443?x=1",
            "https://user:pw@127.0.0.1",
            "https:///x",
            "not a url",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn warns_on_service_names_only() {
        for host in [
            "gatehouse.gatehouse.svc",
            "gatehouse.gatehouse.svc.cluster.local",
            "GATEHOUSE.GATEHOUSE.SVC.",
            "x.y.svc.k8s.example",
        ] {
            assert!(service_name_warning(host).is_some(), "{host}");
        }
        for host in [
            "127.0.0.1",
            "gatehouse.example.com",
            "svc.example.com",
            "[::1]",
        ] {
            assert!(service_name_warning(host).is_none(), "{host}");
        }
    }
}
