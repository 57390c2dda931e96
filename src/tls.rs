//! The TLS side of the listener: rustls, TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, and
//! client certificates when `tls.client_ca` is set.

mod client_auth;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN, in order of preference: the apiserver's admission client speaks HTTP/1.1, others h2.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a serving certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("tls.cert {path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file is unreadable, not PEM, or holds no supported key.
    #[error("tls.key {path}: {message} (PKCS#8, PKCS#1 or SEC1 PEM expected)")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The client CA file is unreadable, not PEM, or holds no usable CA certificate.
    #[error("tls.client_ca {path}: {message}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file may be read by users other than its owner (see [`check_key_mode`]).
    #[error("tls.key {path}: mode {mode:04o} lets other users read the private key; chmod 0600 it (0640 or 0440 if owned by root, as in a Secret volume with fsGroup and defaultMode 0440), or set tls.allow_readable_key / pass --allow-readable-key")]
    KeyReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the pair (unsupported key type, key not matching the certificate).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the default certificate failed.
    #[error("tls: cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Largest certificate, key or CA file read: a bound on what a wrong path (a log file, a device)
/// can make gatehouse hold. Real bundles are a few KiB.
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// Reads a whole PEM file, at most [`MAX_PEM_FILE`] bytes.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!("larger than {MAX_PEM_FILE} bytes"));
    }
    Ok(bytes)
}

/// Refuses a private key other users can read, with PostgreSQL's rule: never by others; by
/// the group only when root owns the file, since then an administrator granted that group on
/// purpose (a Kubernetes Secret volume with `fsGroup` is root-owned and always group-readable:
/// the kubelet adds g+r to every file). `allow` turns the refusal into a warning, for volumes
/// whose mode cannot be set. Follows symlinks (`tls.key -> ..data/tls.key`).
pub fn check_key_mode(path: &Path, allow: bool) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| TlsError::Key {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mode = meta.mode() & 0o7777;
        let too_open = if meta.uid() == 0 {
            mode & 0o007 != 0
        } else {
            mode & 0o077 != 0
        };
        if too_open {
            if allow {
                tracing::warn!(key = %path.display(), mode = format!("{mode:04o}"), "the private key is readable by other users; serving anyway because tls.allow_readable_key is set");
            } else {
                return Err(TlsError::KeyReadable {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, allow);
    Ok(())
}

/// Parses a PEM certificate chain (leaf first); `path` names it in errors.
pub fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".to_owned()));
    }
    Ok(chain)
}

/// Parses a PEM private key; `path` names it in errors (the key itself never appears).
pub fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Parses a PEM CA bundle for client certificates; `path` names it in errors.
pub fn parse_client_ca(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::ClientCa {
        path: path.to_owned(),
        message,
    };
    let roots = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if roots.is_empty() {
        return Err(err("no CERTIFICATE block found".to_owned()));
    }
    Ok(roots)
}

/// Parses PEM text (a generated pair) into DER.
pub fn parse_pem(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: "<generated>".into(),
            message: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Key {
        path: "<generated>".into(),
        message: e.to_string(),
    })?;
    Ok((chain, key))
}

pub use client_auth::cert_names;
pub use reload::{leaf_not_after, watch, Built, Contents, CurrentTls, TlsFiles};

/// Who may connect, when `tls.client_ca` is set.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    /// CA certificates client certificates must chain to.
    pub roots: Vec<CertificateDer<'static>>,
    /// Names (CN or DNS SAN) of which the client certificate must carry one; empty: any.
    pub names: Vec<String>,
}

/// A rustls server configuration for one certificate chain and key, verifying client
/// certificates when `client` is given.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: Option<&ClientAuth>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let mut roots = rustls::RootCertStore::empty();
            for root in &client.roots {
                roots.add(root.clone())?;
            }
            // Mandatory: a client without a certificate is refused in the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: "<tls.client_ca>".into(),
                    message: e.to_string(),
                })?;
            if client.names.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(client_auth::NamedClients::new(
                    verifier,
                    client.names.clone(),
                )))
            }
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
