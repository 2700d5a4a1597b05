//! Helpers the agent's integration tests share: the real binaries, the CLI
//! and polling.

#![allow(dead_code, reason = "each test binary uses a part of these")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A workspace binary beside this package's `sentinelagent`.
pub fn bin(name: &str) -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_sentinelagent"));
    let path = agent.with_file_name(name);
    assert!(
        path.is_file(),
        "{} not built: run the workspace's tests (cargo test --workspace)",
        path.display()
    );
    path
}

/// Runs the real `sentinelcli` on `state_dir`.
pub fn cli(state_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("sentinelcli"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("run sentinelcli")
}

/// Runs `sentinelcli` and parses its JSON output; `None` when it failed.
pub fn cli_json(state_dir: &Path, args: &[&str]) -> Option<Vec<Value>> {
    let out = cli(state_dir, args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `f` until it returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running agent, stopped with SIGTERM (or killed) when dropped.
pub struct Agent {
    pub child: Child,
}

impl Agent {
    pub fn start(state_dir: &Path) -> Agent {
        let child = agent_command()
            .args(["--metrics-listen", "off"])
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--scan-interval", "200ms"])
            // No rules from the host's config directory; alerts (stdout) unseen.
            .arg("--rules-dir")
            .arg(state_dir.join("no-rules"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sentinelagent");
        Agent { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("agent exits after SIGTERM")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `sentinelagent`, reading no configuration from the machine or the
/// person running the tests: no `SENTINELD_*` variable is inherited, and
/// the system and user configuration directories point at a directory
/// that does not exist. Run as root it stays root (`SENTINELD_ALLOW_ROOT`),
/// so it can read the tests' root-only temp directories; the drop itself
/// is tested in `privilege.rs`.
pub fn agent_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sentinelagent"));
    isolate_config(&mut command);
    command.env("SENTINELD_ALLOW_ROOT", "true");
    command
}

/// Keeps `command` (a `sentinelagent`) from reading the machine's or the
/// user's configuration.
pub fn isolate_config(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("SENTINELD_")) {
            command.env_remove(name);
        }
    }
    let nowhere = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-config-here");
    command
        .env("SENTINELD_SYSTEM_CONFIG_DIR", &nowhere)
        .env("XDG_CONFIG_HOME", &nowhere)
}

/// GET `path` from the agent's HTTP endpoint: the status and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}
