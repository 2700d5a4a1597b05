//! Detection end to end with the real binaries: the built-in pack fires on
//! a process started from a temp directory, exactly once across many scans;
//! the alert reaches a file sink and a real local HTTP receiver; a bad rule
//! file is refused while the rules in force keep firing; a new rule file
//! takes effect without a restart (and runs over the processes already
//! live); `sentinelcli query` and `alerts` answer while the agent runs; a
//! shell that execs a payload is stored and caught as the payload.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use common::{cli, cli_json, eventually};

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A child process killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// A local HTTP receiver: answers 200 to every request and keeps the bodies.
fn http_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = Arc::clone(&kept);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    // Request line and headers.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Ok(v) = serde_json::from_slice(&body) {
                        kept.lock().unwrap().push(v);
                    }
                    let stream = reader.get_mut();
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

fn file_alerts(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn for_process<'a>(alerts: &'a [Value], rule: &str, pid: u32) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["rule_id"] == rule && a["process"]["pid"] == pid)
        .collect()
}

/// Starts a copy of /bin/sleep named `name` in `dir`.
fn sleeper(dir: &Path, name: &str) -> Reaped {
    let exe = dir.join(name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    Reaped(Command::new(&exe).arg("300").spawn().unwrap())
}

#[test]
fn rules_fire_once_reach_the_sinks_and_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let alerts_file = dir.path().join("alerts.jsonl");
    let (url, received) = http_receiver();
    // The webhook comes from a config file, the file sink from the flag.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[[sinks]]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout = \"5s\"\n"),
    )
    .unwrap();

    let mut agent = Reaped(
        common::agent_command()
            .args(["--metrics-listen", "off"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--rules-dir")
            .arg(&rules)
            .args(["--scan-interval", "200ms"])
            .arg("--alert-sink")
            .arg(format!("file={}", alerts_file.display()))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sentinelagent"),
    );

    // The temp dir is under /tmp: the built-in rule fires on it.
    let payload = sleeper(dir.path(), "payload");
    let pid = payload.pid();
    let first = eventually(Duration::from_secs(60), || {
        let alerts = file_alerts(&alerts_file);
        let mine = for_process(&alerts, "linux.exec_from_tmp", pid);
        (!mine.is_empty()).then(|| mine[0].clone())
    })
    .expect("the built-in rule fires on a process run from /tmp, into the file sink");
    assert_eq!(first["severity"], "high");
    assert_eq!(first["process"]["name"], "payload");
    assert_eq!(first["parent"]["pid"], std::process::id());
    let id = first["id"].as_str().unwrap().to_owned();

    let webhook = eventually(Duration::from_secs(30), || {
        let got = received.lock().unwrap().clone();
        (!for_process(&got, "linux.exec_from_tmp", pid).is_empty()).then_some(got)
    })
    .expect("the same alert reaches the local HTTP receiver");
    assert_eq!(
        for_process(&webhook, "linux.exec_from_tmp", pid)[0]["id"],
        id
    );

    // Many scans later (200 ms each), still exactly one alert per sink
    // and in the store.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        for_process(&file_alerts(&alerts_file), "linux.exec_from_tmp", pid).len(),
        1
    );
    assert_eq!(
        for_process(&received.lock().unwrap(), "linux.exec_from_tmp", pid).len(),
        1
    );
    let stored = cli_json(
        &state,
        &[
            "alerts",
            "--rule",
            "linux.exec_from_tmp",
            "--format",
            "json",
        ],
    )
    .expect("sentinelcli alerts answers while the agent runs");
    assert_eq!(for_process(&stored, "linux.exec_from_tmp", pid).len(), 1);

    // A bad rule file is refused; the agent keeps running and the rules in
    // force keep firing.
    std::fs::write(
        rules.join("broken.yaml"),
        "rules:\n  - id: broken.rule\n    title: t\n    description: d\n    severity: high\n    tags: []\n    sql: SELECT * FROM processes WHERE nmae = 'x'\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.alive(), "the agent survives a bad rule file");
    let second = sleeper(dir.path(), "payload-two");
    let second_pid = second.pid();
    eventually(Duration::from_secs(30), || {
        let alerts = file_alerts(&alerts_file);
        (!for_process(&alerts, "linux.exec_from_tmp", second_pid).is_empty()).then_some(())
    })
    .expect("the built-in rules keep firing after a bad rule file was refused");

    // A new rule file takes effect without a restart, and runs over the
    // processes already live (the probe started before the rule existed).
    let probe = sleeper(dir.path(), "sentinel-probe");
    let probe_pid = probe.pid();
    let probe_arg = probe_pid.to_string();
    eventually(Duration::from_secs(30), || {
        let rows = cli_json(&state, &["ps", "--pid", &probe_arg, "--format", "json"])?;
        (!rows.is_empty()).then_some(())
    })
    .expect("the probe is stored");
    std::fs::write(
        rules.join("custom.toml"),
        "[[rules]]\nid = \"custom.probe\"\ntitle = \"probe seen\"\ndescription = \"a test rule\"\nseverity = \"low\"\ntags = [\"T1059\"]\nsql = \"SELECT * FROM processes WHERE name = 'sentinel-probe' AND parent_name IS NOT NULL\"\n",
    )
    .unwrap();
    let custom = eventually(Duration::from_secs(30), || {
        let alerts = file_alerts(&alerts_file);
        for_process(&alerts, "custom.probe", probe_pid)
            .first()
            .map(|a| (*a).clone())
    })
    .expect("a new rule file takes effect without restart");
    assert_eq!(custom["severity"], "low");
    assert!(agent.alive());

    // The same SQL dialect over the store, while the agent runs.
    let sql = format!("SELECT pid, name, exe_dir FROM processes WHERE pid = {probe_pid}");
    let rows = cli_json(&state, &["query", &sql, "--format", "json"])
        .expect("sentinelcli query answers while the agent runs");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "sentinel-probe");
    assert_eq!(rows[0]["exe_dir"], dir.path().to_str().unwrap());

    // Every delivery attempt is recorded.
    let out = cli(
        &state,
        &["alerts", "--rule", "custom.probe", "--format", "json"],
    );
    assert!(out.status.success());

    drop(payload);
    drop(second);
    drop(probe);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = eventually(Duration::from_secs(20), || agent.0.try_wait().unwrap())
        .expect("the agent stops after SIGTERM");
    assert!(status.success(), "agent exit status: {status}");
}

#[test]
fn a_bad_rule_file_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("bad.yaml"),
        "rules:\n  - id: bad.one\n    title: t\n    description: d\n    severity: high\n    tags: []\n    sql: DELETE FROM processes\n",
    )
    .unwrap();
    let out = common::agent_command()
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--rules-dir")
        .arg(&rules)
        .output()
        .expect("run sentinelagent");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("bad.one"), "{stderr}");
}

#[test]
fn a_bad_sink_spec_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::agent_command()
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--alert-sink", "kafka=broker:9092"])
        .output()
        .expect("run sentinelagent");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kafka=broker:9092"), "{stderr}");
    assert!(stderr.contains("webhook="), "{stderr}");
    assert_eq!(stderr.matches("accepted forms").count(), 1, "{stderr}");
}

#[test]
fn a_config_file_with_an_unknown_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nkind = \"stdout\"\n\n[colour]\nred = 1\n",
    )
    .unwrap();
    let out = common::agent_command()
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run sentinelagent");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.toml"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
}

#[test]
fn a_shell_that_execs_a_payload_is_caught_after_the_exec() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let alerts_file = dir.path().join("alerts.jsonl");
    let _agent = Reaped(
        common::agent_command()
            .args(["--metrics-listen", "off"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--rules-dir")
            .arg(dir.path().join("no-rules"))
            .args(["--scan-interval", "200ms"])
            .arg("--alert-sink")
            .arg(format!("file={}", alerts_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sentinelagent"),
    );
    let payload = dir.path().join("payload-exec");
    std::fs::copy("/bin/sleep", &payload).unwrap();
    // The shell is seen (and stored) as itself first, then becomes the
    // payload: same pid, same start time.
    let shell = Reaped(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _; exec {} 300", payload.display()))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = shell.pid();
    let name_of = |pid: u32| {
        let rows = cli_json(&state, &["ps", "--format", "json"])?;
        rows.iter()
            .find(|r| r["pid"] == pid)
            .and_then(|r| r["name"].as_str().map(str::to_owned))
    };
    let before = eventually(Duration::from_secs(60), || name_of(pid))
        .expect("the shell is stored before it execs");
    assert_eq!(before, "sh");
    let mut shell = shell;
    shell.0.stdin.take().unwrap().write_all(b"go\n").unwrap();

    let alert = eventually(Duration::from_secs(60), || {
        let alerts = file_alerts(&alerts_file);
        for_process(&alerts, "linux.exec_from_tmp", pid)
            .first()
            .map(|a| (*a).clone())
    })
    .expect("the rule fires on the program the shell exec'd");
    assert_eq!(alert["process"]["name"], "payload-exec", "{alert}");
    let after = eventually(Duration::from_secs(30), || {
        name_of(pid).filter(|n| n == "payload-exec")
    });
    assert!(after.is_some(), "the store holds the new program");
}
