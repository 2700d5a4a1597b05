use std::process::ExitCode;

use clap::Parser;
use sentineld_agent::config::{AgentArgs, AgentConfig};
use sentineld_agent::detect::ReloadTrigger;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = AgentArgs::parse();
    sentineld_common::logging::init("info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr (the journal under systemd), not also as a log line.
            eprintln!(
                "sentinelagent: error: {}",
                sentineld_common::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = AgentConfig::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let reload = ReloadTrigger::default();
        let requester = reload.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received; reloading rules");
                requester.request();
            }
        });
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            }
            trigger.cancel();
        });
        sentineld_agent::run(config, shutdown, reload).await?;
        anyhow::Ok(())
    })
}
