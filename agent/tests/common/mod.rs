//! Helpers the agent's integration tests share: the real binaries, the CLI
//! and polling.

#![allow(dead_code, reason = "each test binary uses a part of these")]

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
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
        let pid = Pid::from_raw(i32::try_from(self.pid()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
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

/// A child process, killed (by its pid) and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        kill(pid, signal).unwrap();
    }

    /// SIGKILL and reap.
    pub fn crash(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// The agent in external collector mode: its store in `state`, listening on
/// `socket`, logging to `log`. No HTTP endpoint unless `extra` asks for one
/// (`--metrics-listen ADDR`).
pub fn external_agent(state: &Path, socket: &Path, log: &Path, extra: &[&str]) -> Reaped {
    let rules = state.parent().unwrap_or(state).join("no-rules");
    let mut command = agent_command();
    if !extra.contains(&"--metrics-listen") {
        command.args(["--metrics-listen", "off"]);
    }
    Reaped(
        command
            .args(["--collector", "external", "--no-builtin-rules"])
            .arg("--state-dir")
            .arg(state)
            .arg("--socket")
            .arg(socket)
            .arg("--rules-dir")
            .arg(rules)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// procmond, started separately: its state (write-ahead log, ledger) in
/// `state`, sending to `socket`, logging to `log`.
pub fn procmond(state: &Path, socket: &Path, log: &Path, extra: &[&str]) -> Reaped {
    Reaped(
        Command::new(bin("procmond"))
            .arg("--state-dir")
            .arg(state)
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Copies `/bin/sleep` to `dir/name`, so its processes are named `name`.
pub fn probe_exe(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    exe
}

/// Starts `exe secs`. A binary just copied can be briefly "text file busy"
/// while another test thread forks (the child holds the copy's descriptor
/// until it execs), so that error is retried.
pub fn spawn_probe(exe: &Path, secs: &str) -> Child {
    let mut tries = 0;
    loop {
        match Command::new(exe).arg(secs).stdin(Stdio::null()).spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 200 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {}: {e}", exe.display()),
        }
    }
}

/// Every instance named `name` in the store of `state`, live or exited:
/// (pid, start time) → rows.
pub fn stored_instances(state: &Path, name: &str) -> BTreeMap<(u64, i64), usize> {
    stored_where(state, &format!("name = '{name}'"))
}

/// Every instance in the store of `state`, live or exited, that meets the
/// SQL `condition`: (pid, start time) → rows.
pub fn stored_where(state: &Path, condition: &str) -> BTreeMap<(u64, i64), usize> {
    let sql = format!("SELECT pid, start_time FROM processes WHERE {condition}");
    let rows = cli_json(state, &["query", &sql, "--all", "--format", "json"]).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for row in rows {
        let pid = row["pid"].as_u64().unwrap_or(0);
        let start = row["start_time"].as_i64().unwrap_or(0);
        *seen.entry((pid, start)).or_insert(0) += 1;
    }
    seen
}

/// Rows per pid of the instances named `name` in the store of `state`.
pub fn stored_pids(state: &Path, name: &str) -> HashMap<u64, usize> {
    let mut pids = HashMap::new();
    for ((pid, _), n) in stored_instances(state, name) {
        *pids.entry(pid).or_insert(0) += n;
    }
    pids
}

/// A log file's text so far; empty when it cannot be read.
pub fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Lines of `log` that contain every one of `parts`.
pub fn log_lines(log: &Path, parts: &[&str]) -> usize {
    log_text(log)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Waits up to `limit` until `log` has a line containing every one of `parts`.
pub fn wait_for_line(log: &Path, parts: &[&str], limit: Duration) -> bool {
    eventually(limit, || (log_lines(log, parts) > 0).then_some(())).is_some()
}

/// A loopback address with a port free a moment ago.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
