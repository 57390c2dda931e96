//! `gatehouse`: parse the command line, install the crypto provider, serve.

use std::process::ExitCode;

use clap::Parser;

use gatehouse::cli::{Cli, Command};
use gatehouse::config::Config;

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
    }
}

async fn serve(args: gatehouse::cli::ServeArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("gatehouse: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    args.apply(&mut config);
    let _log = gatehouse::logging::init(config.log.format);
    if args.insecure_http {
        tracing::warn!("--insecure-http: serving plain HTTP; kube-apiserver will not call this, and requests travel unencrypted");
    }
    let bound = match gatehouse::server::bind(config, args.insecure_http).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", bound.banner());
    if let Some(ca) = bound.generated_ca() {
        let path = std::env::temp_dir().join("gatehouse-ca.pem");
        match std::fs::write(&path, ca) {
            Ok(()) => println!(
                "CA written to {} (curl --cacert {})",
                path.display(),
                path.display()
            ),
            Err(e) => tracing::warn!(error = %e, "cannot write the CA file"),
        }
    }
    bound.serve(shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
