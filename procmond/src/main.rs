//! procmond: parses arguments, sets up logging and signals, and runs the
//! library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use procmond::{Args, ParentWatch};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    sentineld_common::logging::init("info");
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "procmond: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.exit_with_parent && procmond::exit_with_parent()? == ParentWatch::ParentGone {
        return Ok(ExitCode::SUCCESS);
    }
    if args.once {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        procmond::run_once(&args.scan_config(), &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = args.daemon_config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(cancel_on_signal(cancel.clone()));
        procmond::run_daemon(config, cancel).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `cancel` on SIGTERM or SIGINT.
async fn cancel_on_signal(cancel: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let signal = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    };
    // Cancel before logging: a log write to a closed stderr must not be able
    // to stop the shutdown.
    cancel.cancel();
    tracing::info!(signal, "stopping");
}
