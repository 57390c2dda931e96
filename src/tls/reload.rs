//! Certificate rotation without restart: the one place holding the current rustls
//! configuration, and the task that re-reads the files every `tls.reload_interval`.
//!
//! Files are polled, not watched: a Kubernetes Secret volume replaces its files by swapping a
//! `..data` symlink, which an inotify watch on the files sees as one delete and then nothing.
//! Contents are compared, so an unchanged file costs a read and nothing else. New handshakes get
//! the new configuration; open connections keep the one they were accepted with and finish.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

use super::{parse_chain, parse_client_ca, parse_key, read_pem_file, server_config};
use super::{ClientAuth, TlsError};

/// The files a TLS configuration is built from, and the client names to check.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `tls.cert`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `tls.client_ca`.
    pub client_ca: Option<PathBuf>,
    /// `tls.client_names`.
    pub client_names: Vec<String>,
}

/// The files' contents as read, compared to tell a change. No `Debug`: it holds the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    /// Reads every file (each at most [`super::MAX_PEM_FILE`] bytes).
    pub fn read(&self) -> Result<Contents, TlsError> {
        let cert = read_pem_file(&self.cert).map_err(|message| TlsError::Cert {
            path: self.cert.clone(),
            message,
        })?;
        let key = read_pem_file(&self.key).map_err(|message| TlsError::Key {
            path: self.key.clone(),
            message,
        })?;
        let client_ca = match &self.client_ca {
            Some(path) => Some(read_pem_file(path).map_err(|message| TlsError::ClientCa {
                path: path.clone(),
                message,
            })?),
            None => None,
        };
        Ok(Contents {
            cert,
            key,
            client_ca,
        })
    }

    /// Builds a configuration from `contents`: refuses a truncated file, a key that does not
    /// match the certificate (rustls checks), an empty CA bundle.
    pub fn build(&self, contents: &Contents) -> Result<Built, TlsError> {
        let chain = parse_chain(&contents.cert, &self.cert)?;
        let not_after = leaf_not_after(&chain);
        let key = parse_key(&contents.key, &self.key)?;
        let client = match (&self.client_ca, &contents.client_ca) {
            (Some(path), Some(pem)) => Some(ClientAuth {
                roots: parse_client_ca(pem, path)?,
                names: self.client_names.clone(),
            }),
            _ => None,
        };
        Ok(Built {
            config: server_config(chain, key, client.as_ref())?,
            not_after,
        })
    }

    /// Reads and builds, as at start.
    pub fn load(&self) -> Result<(Contents, Built), TlsError> {
        let contents = self.read()?;
        let config = self.build(&contents)?;
        Ok((contents, config))
    }
}

/// A rustls configuration and when its certificate expires.
#[derive(Debug)]
pub struct Built {
    /// The configuration.
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's notAfter, seconds since the epoch; `None` if it cannot be read.
    pub not_after: Option<i64>,
}

/// The notAfter of the first certificate of `chain` (the leaf), for the expiry metric.
pub fn leaf_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .first()
        .and_then(|leaf| crate::pki::not_after(leaf.as_ref()))
}

/// No notAfter known (the certificate could not be read for it).
const UNKNOWN: i64 = i64::MIN;

/// The rustls configuration new handshakes use, its certificate's expiry, and how reloading it
/// went.
#[derive(Debug)]
pub struct CurrentTls {
    config: RwLock<Arc<ServerConfig>>,
    not_after: AtomicI64,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl CurrentTls {
    /// Starts with `built`.
    pub fn new(built: Built) -> Self {
        Self {
            config: RwLock::new(built.config),
            not_after: AtomicI64::new(built.not_after.unwrap_or(UNKNOWN)),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The configuration for a new handshake.
    pub fn get(&self) -> Arc<ServerConfig> {
        // A writer cannot panic while holding the lock (it only assigns), so poisoning is
        // impossible; read through it anyway rather than panic on the accept path.
        match self.config.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, built: Built) {
        match self.config.write() {
            Ok(mut guard) => *guard = built.config,
            Err(poisoned) => *poisoned.into_inner() = built.config,
        }
        self.not_after
            .store(built.not_after.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// When the certificate new handshakes get expires (seconds since the epoch), if known.
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|&t| t != UNKNOWN)
    }

    /// Changed files taken into use since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Changed files refused (unreadable, broken, not a pair) since start; each distinct
    /// problem counts once.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Re-reads `files` every `interval` and swaps `current` when their contents changed and make a
/// usable configuration; otherwise logs why once and keeps serving the old one. `applied` is
/// what `current` was built from. Runs until dropped.
pub async fn watch(
    files: TlsFiles,
    current: Arc<CurrentTls>,
    mut applied: Contents,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // What was last refused: a broken pair or a missing file is reported once, not every tick.
    let mut refused: Option<Contents> = None;
    let mut read_error: Option<String> = None;
    loop {
        ticker.tick().await;
        let reader = files.clone();
        let read = match tokio::task::spawn_blocking(move || reader.read()).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "certificate reload: the read task failed");
                continue;
            }
        };
        let contents = match read {
            Ok(contents) => {
                read_error = None;
                contents
            }
            Err(e) => {
                let message = e.to_string();
                if read_error.as_ref() != Some(&message) {
                    current.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %message, "certificate files unreadable; still serving the previous certificate");
                    read_error = Some(message);
                }
                continue;
            }
        };
        if contents == applied || refused.as_ref() == Some(&contents) {
            continue;
        }
        match files.build(&contents) {
            Ok(built) => {
                current.set(built);
                applied = contents;
                refused = None;
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
            }
            Err(e) => {
                current.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "certificate files changed but are unusable; still serving the previous certificate");
                refused = Some(contents);
            }
        }
    }
}
