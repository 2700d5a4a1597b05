//! Nothing is lost while the agent is away: procmond (started separately,
//! `--collector external`) keeps scanning into its write-ahead log, and the
//! agent stores what happened meanwhile once it is back.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, cli_json, eventually};

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(state: &Path, socket: &Path) -> Reaped {
    Reaped(
        common::agent_command()
            .args(["--metrics-listen", "off"])
            .arg("--state-dir")
            .arg(state)
            .arg("--socket")
            .arg(socket)
            .args(["--collector", "external", "--no-builtin-rules"])
            .arg("--rules-dir")
            .arg(state.join("no-rules"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn terminate(child: &mut Reaped) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = eventually(Duration::from_secs(20), || child.0.try_wait().unwrap())
        .expect("stops after SIGTERM");
    assert!(status.success(), "{status}");
}

fn stored(state: &Path, name: &str) -> Vec<serde_json::Value> {
    let sql = format!("SELECT pid, name FROM processes WHERE name = '{name}'");
    cli_json(state, &["query", &sql, "--all", "--format", "json"]).unwrap_or_default()
}

#[test]
fn processes_seen_while_the_agent_was_away_are_stored_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("agent.sock");
    let mut first = agent(&state, &socket);
    let _procmond = Reaped(
        Command::new(bin("procmond"))
            .arg("--state-dir")
            .arg(dir.path().join("procmond"))
            .arg("--socket")
            .arg(&socket)
            .args(["--scan-interval", "200ms"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let exe = dir.path().join("wal-before");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let _before = Reaped(Command::new(&exe).arg("300").spawn().unwrap());
    eventually(Duration::from_secs(60), || {
        (!stored(&state, "wal-before").is_empty()).then_some(())
    })
    .expect("the external procmond feeds the agent");
    terminate(&mut first);

    // While the agent is away, a process starts and exits.
    let exe = dir.path().join("wal-away");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let mut away = Command::new(&exe).arg("1").spawn().unwrap();
    let away_pid = away.id();
    away.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let mut second = agent(&state, &socket);
    let rows = eventually(Duration::from_secs(60), || {
        let rows = stored(&state, "wal-away");
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the process seen while the agent was away is stored after it returns");
    assert_eq!(rows[0]["pid"], away_pid);
    terminate(&mut second);
}
