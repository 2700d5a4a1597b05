use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;
use sentineld_cli::{Cli, CliError};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) if sentineld_cli::is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) if matches!(e.downcast_ref(), Some(CliError::AuditFailed(_))) => {
            let _ = writeln!(io::stderr(), "sentinelcli: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            // stderr may be closed too; there is nowhere else to say it.
            let _ = writeln!(
                io::stderr(),
                "sentinelcli: error: {}",
                sentineld_cli::error_chain(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let mut out = BufWriter::new(io::stdout().lock());
    sentineld_cli::execute(&cli, &mut out, &mut io::stderr().lock())?;
    out.flush().map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}
