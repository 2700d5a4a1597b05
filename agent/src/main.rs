use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use sentineld_agent::config::{self, AgentArgs, Environment};
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
    let loaded = config::load(&args, &Environment::from_process())?;
    if args.print_config {
        let mut out = std::io::stdout().lock();
        return match out.write_all(loaded.render().as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    let config = loaded.config;
    // Before any thread starts (it is per thread, and inherited): the agent
    // never gains privilege through exec. procmond, started as root, keeps
    // root's capabilities (nothing is gained) and restricts itself.
    sentineld_agent::privilege::no_new_privs()?;
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
        let (updates, updates_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received; reloading the configuration and the rules");
                sentineld_common::notify::reloading();
                requester.request();
                let args = args.clone();
                let read = tokio::task::spawn_blocking(move || {
                    config::load(&args, &Environment::from_process())
                })
                .await;
                match read {
                    Ok(Ok(loaded)) => {
                        // A reload still being applied makes this one wait.
                        if updates.send(loaded.config).await.is_err() {
                            break;
                        }
                    }
                    Ok(Err(e)) => tracing::error!(
                        "configuration not reloaded; the one in force stays: {}",
                        sentineld_common::error_chain(&e)
                    ),
                    Err(e) => tracing::error!(error = %e, "configuration not reloaded"),
                }
                sentineld_common::notify::ready("reloaded");
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
        sentineld_agent::run(config, shutdown, reload, updates_rx).await?;
        anyhow::Ok(())
    })
}
