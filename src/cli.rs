//! The command line. Flags override the configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::certs::KeyType;
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
    /// Write a CA, a serving certificate (and optionally an apiserver client certificate).
    Certs(CertsArgs),
    /// Write the kubeconfigs and AdmissionConfiguration kube-apiserver needs for the static
    /// hooks (token authentication, ImagePolicyWebhook), and print the flags and mounts.
    ApiserverConfig(ApiserverConfigArgs),
    /// Decide offline what the configured policies and mutations do to manifests.
    Check(CheckArgs),
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
    /// Also run every case on regorus's RVM (bytecode) and fail one it answers differently
    /// from the interpreter (a comparison: the server runs the interpreter).
    #[arg(long)]
    pub rvm: bool,
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
    /// Serve even if the private key file is readable by other users (warned), for volumes
    /// whose mode cannot be set; same as `tls.allow_readable_key: true`.
    #[arg(long)]
    pub allow_readable_key: bool,
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
            allow_readable_key,
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
        if *allow_readable_key {
            config.tls.allow_readable_key = true;
        }
    }
}

/// `gatehouse certs` flags.
#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt, tls.key (and client.crt, client.key) into;
    /// created mode 0700 when missing.
    #[arg(long, value_name = "DIR", default_value = "pki")]
    pub out_dir: PathBuf,
    /// DNS name or IP address the serving certificate is for; repeat the flag or separate with
    /// commas. The address kube-apiserver dials must be one of them.
    #[arg(
        long = "name",
        value_name = "NAME",
        value_delimiter = ',',
        default_values = ["gatehouse.gatehouse.svc", "gatehouse.gatehouse.svc.cluster.local"]
    )]
    pub names: Vec<String>,
    /// Also write client.crt/client.key for kube-apiserver (CN kube-apiserver, clientAuth), for
    /// mTLS.
    #[arg(long)]
    pub client: bool,
    /// Key algorithm: ECDSA P-256 (default), P-384, or RSA 2048 where a PKI requires RSA.
    #[arg(long, value_enum, value_name = "TYPE", default_value_t)]
    pub key_type: KeyType,
    /// Days the serving and client certificates are valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Days the CA is valid (at least --days).
    #[arg(long, value_name = "DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub ca_days: u32,
    /// Replace files that already exist (by default nothing is overwritten).
    #[arg(long)]
    pub force: bool,
    /// Keep the CA (ca.crt, ca.key in --out-dir) and issue new certificates signed by it,
    /// replacing the old ones: the caBundle and the apiserver files stay as they are.
    #[arg(long, conflicts_with = "ca_days")]
    pub renew: bool,
    /// Also write secret.yaml (mode 0600): a kubernetes.io/tls Secret with this name holding
    /// tls.crt, tls.key and ca.crt.
    #[arg(long, value_name = "NAME")]
    pub secret: Option<String>,
    /// Namespace of the --secret manifest.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "gatehouse",
        requires = "secret"
    )]
    pub namespace: String,
}

/// `gatehouse apiserver-config` flags.
#[derive(Clone, Debug, Args)]
pub struct ApiserverConfigArgs {
    /// gatehouse as kube-apiserver reaches it: https://HOST[:PORT]. HOST must be in the serving
    /// certificate, and resolvable from the apiserver (usually on the host network).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The CA that signed gatehouse's serving certificate (PEM), e.g. pki/ca.crt.
    #[arg(long, value_name = "PATH")]
    pub ca: PathBuf,
    /// Client certificate kube-apiserver presents to gatehouse (mTLS), e.g. pki/client.crt.
    #[arg(long, value_name = "PATH", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key, e.g. pki/client.key.
    #[arg(long, value_name = "PATH", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Directory to write into; copy it to --host-dir on every control-plane node.
    #[arg(long, value_name = "DIR", default_value = "apiserver")]
    pub out_dir: PathBuf,
    /// Where the files live on the control-plane nodes (and in the apiserver's pod).
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/gatehouse")]
    pub host_dir: PathBuf,
    /// Refer to the CA and client files by path under --host-dir (they are copied into
    /// --out-dir) instead of embedding them in the kubeconfigs.
    #[arg(long)]
    pub by_path: bool,
    /// ImagePolicyWebhook allowTTL: seconds the apiserver caches an allow (1-1800).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1800))]
    pub allow_ttl: u32,
    /// ImagePolicyWebhook denyTTL: seconds the apiserver caches a denial (1-1800).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1800))]
    pub deny_ttl: u32,
    /// ImagePolicyWebhook retryBackoff: milliseconds between retries (1-300000).
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=300_000))]
    pub retry_backoff: u32,
    /// Replace files that already exist (by default nothing is overwritten).
    #[arg(long)]
    pub force: bool,
}

/// How `gatehouse check` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckOutput {
    /// One line per object, indented details.
    #[default]
    Text,
    /// One JSON document with every result and the totals.
    Json,
}

/// `gatehouse check` flags.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// YAML configuration file, as for serve; without it, embedded defaults.
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: CheckOutput,
    /// Namespace of objects that name none (kubectl's default).
    #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Manifests: YAML or JSON, several documents, List objects; - reads stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}
