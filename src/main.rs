//! `gatehouse`: parse the command line, install the crypto provider, serve.

use std::process::ExitCode;

use base64::Engine;
use clap::Parser;

use gatehouse::cli::{Cli, Command};
use gatehouse::config::{Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for the whole binary (rustls, and octocrab's client through it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Certs(args) => gatehouse::pki::main(&args),
        Command::ApiserverConfig(args) => gatehouse::apiserver_config::main(&args),
        Command::Check(args) => runtime.block_on(gatehouse::check::main(&args)),
        Command::Verify(args) => gatehouse::verify::main(&args),
    }
}

async fn serve(args: gatehouse::cli::ServeArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            // The file's own log.format is unknown here: the flag decides.
            Err(e) => return fatal(args.log_format.unwrap_or_default(), &e),
        },
        None => Config::default(),
    };
    args.apply(&mut config);
    let format = config.log.format;
    // Dropped on every exit path: writes the buffered log lines out.
    let _log = gatehouse::logging::init(format);
    // Before the App is built: from here on SIGHUP asks for a reload instead of ending the process.
    let hangups = gatehouse::reload::Hangups::listen();
    if args.insecure_http {
        tracing::warn!("--insecure-http: serving plain HTTP; kube-apiserver will not call this, and requests travel unencrypted");
    }
    let bound = match gatehouse::server::bind(config, args.insecure_http).await {
        Ok(b) => b,
        Err(e) => return fatal(format, &e),
    };
    let overrides = args.clone();
    let reloader = gatehouse::reload::Reloader::new(
        bound.current().clone(),
        args.config.clone(),
        std::sync::Arc::new(move |config: &mut Config| overrides.apply(config)),
    );
    // Ends with the runtime when serving has stopped.
    tokio::spawn(reloader.run(hangups));
    announce(&bound, format, args.insecure_http);
    bound.serve(shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Says where gatehouse listens and, with a generated certificate, what to trust (also written
/// to `$TMPDIR/gatehouse-ca.pem`). With `--log-format json` that is one JSON event like every
/// other line: a log collector (a container runtime's log file) takes stdout and stderr alike,
/// so only keeping every line JSON keeps it parseable, and the CA stays in the log as fields.
fn announce(bound: &gatehouse::server::Bound, format: LogFormat, insecure_http: bool) {
    let ca = bound.generated_ca();
    let ca_file = ca.and_then(|ca| {
        let path = std::env::temp_dir().join("gatehouse-ca.pem");
        match std::fs::write(&path, ca) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot write the CA file");
                None
            }
        }
    });
    match format {
        LogFormat::Text => {
            let mut text = bound.banner();
            if let Some(path) = &ca_file {
                let path = path.display();
                text.push_str(&format!("CA written to {path} (curl --cacert {path})\n"));
            }
            // Not print!: a closed stdout (`| head`) must not panic the server.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        }
        LogFormat::Json => {
            let scheme = if insecure_http { "http" } else { "https" };
            let ca_bundle = ca.map(|ca| base64::engine::general_purpose::STANDARD.encode(ca));
            tracing::info!(
                listen = %format_args!("{scheme}://{}", bound.local_addr()),
                ca_pem = ca,
                ca_bundle = ca_bundle.as_deref(),
                ca_file = ca_file.as_ref().map(|p| tracing::field::display(p.display())),
                "gatehouse listening"
            );
        }
    }
}

/// Reports why gatehouse cannot start: a JSON event when logging JSON, so that a collector can
/// parse it too, otherwise a line on stderr.
fn fatal(format: LogFormat, error: &dyn std::fmt::Display) -> ExitCode {
    match format {
        LogFormat::Json => {
            // Inert when logging is already set up; otherwise dropped at the end of this arm,
            // which writes the line out.
            let _log = gatehouse::logging::init(format);
            tracing::error!(error = %error, "gatehouse cannot start");
        }
        LogFormat::Text => eprintln!("gatehouse: {error}"),
    }
    ExitCode::FAILURE
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
