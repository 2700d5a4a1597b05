//! procmond: parses arguments, sets up logging and signals, and runs the
//! library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use procmond::{Args, ParentWatch};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = Args::parse();
    sentineld_common::logging::init("info");
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "procmond: error: {}",
                sentineld_common::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    // First, while procmond has a single thread: capabilities are per thread.
    let privileges = procmond::privilege::restrict();
    if args.exit_with_parent && procmond::exit_with_parent()? == ParentWatch::ParentGone {
        return Ok(ExitCode::SUCCESS);
    }
    if args.once {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        procmond::run_once(&args.scan_config(), &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    procmond::privilege::log(&privileges);
    let config = args.daemon_config();
    let args_exit_with_parent = args.exit_with_parent;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        // Handlers are installed before the daemon starts, so a SIGTERM
        // (from the agent, or the parent-death signal) is never met by the
        // default action.
        let terminate = signal(SignalKind::terminate())?;
        let interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(cancel_on_signal(terminate, interrupt, cancel.clone()));
        if args_exit_with_parent {
            tokio::spawn(cancel_when_orphaned(nix::unistd::getppid(), cancel.clone()));
        }
        procmond::run_daemon(config, cancel).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `cancel` once procmond's parent is gone. The parent-death signal
/// does not cover it all: the kernel checks it like a kill(2) from the
/// exiting parent, so an agent that dropped root cannot deliver it to a
/// root procmond.
async fn cancel_when_orphaned(parent: nix::unistd::Pid, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => return,
        }
        if nix::unistd::getppid() != parent {
            cancel.cancel();
            tracing::info!(
                parent = parent.as_raw(),
                "the parent process is gone; stopping"
            );
            return;
        }
    }
}

/// Cancels `cancel` on SIGTERM or SIGINT.
async fn cancel_on_signal(mut terminate: Signal, mut interrupt: Signal, cancel: CancellationToken) {
    let signal = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    // Cancel before logging: a log write to a closed stderr must not be able
    // to stop the shutdown.
    cancel.cancel();
    tracing::info!(signal, "stopping");
}
