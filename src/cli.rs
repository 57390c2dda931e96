//! The command line. Flags override the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// gatehouse: one hardened TLS webhook server for kube-apiserver (token authentication,
/// ImagePolicyWebhook, validating and mutating admission).
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhooks over HTTPS.
    Serve(ServeArgs),
    /// Run Gatekeeper test suites (gator's suite.yaml) against gatehouse's evaluation.
    Verify(VerifyArgs),
}

/// `gatehouse verify` arguments.
#[derive(Clone, Debug, Default, Args)]
pub struct VerifyArgs {
    /// Suite files (`kind: Suite`); paths inside are relative to each suite.
    #[arg(required = true, value_name = "SUITE.yaml")]
    pub suites: Vec<PathBuf>,
    /// List every case, not only failures.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `gatehouse serve` flags.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// YAML configuration file (see config/gatehouse.yaml); without it, embedded defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Serving certificate chain (PEM); without it, one is generated at start.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (local experiments only; the apiserver requires HTTPS).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// Log format [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl ServeArgs {
    /// Applies the flags over a configuration.
    pub fn apply(&self, config: &mut Config) {
        // Exhaustive: a new flag is a compile error here until it is wired.
        let Self {
            config: _,
            listen,
            tls_cert,
            tls_key,
            insecure_http: _,
            log_format,
        } = self;
        if let Some(listen) = listen {
            config.listen = *listen;
        }
        if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
            config.tls.cert = Some(cert.clone());
            config.tls.key = Some(key.clone());
        }
        if let Some(format) = log_format {
            config.log.format = *format;
        }
    }
}
