//! Enrichment end to end with the real binaries: sentinelagent (which starts
//! procmond) in a temp state directory, known child processes, and the
//! HTTP endpoint scraped while the agent runs.
//!
//! The listening child is this test binary run again (through a symlink,
//! so it has a name of our choosing) with [`PROBE_ENV`] set: it binds
//! known sockets, starts known threads, reports them on stdout and waits to
//! be killed. The group members are symlinks to `/bin/sleep`.
//!
//! Run with `cargo test -p sentineld-agent --test enrichment`; procmond and
//! sentinelcli must be built beside sentinelagent (`cargo build
//! --workspace`).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{agent_command, bin, cli, eventually, wait_timeout};

/// Set in the environment of the probe: the helper test below then acts.
const PROBE_ENV: &str = "SENTINELD_ENRICHMENT_PROBE";
/// The probe's name (its symlink's file name, so its `comm`).
const PROBE_NAME: &str = "enrich-probe";
/// Threads the probe starts beside its own.
const PROBE_EXTRA_THREADS: usize = 3;
/// How long to wait for something the agent shows after a few scans.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent, stopped with SIGTERM when dropped (it then stops procmond
/// before the state directory goes away), killed if it does not exit.
struct RunningAgent(Child);

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if wait_timeout(&mut self.0, PATIENCE).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What the probe reports about itself.
#[derive(Debug)]
struct Probe {
    child: Reaped,
    ports: Vec<u64>,
    threads: u64,
    open_fds: u64,
}

/// The probe's body: runs only in the probe process (see the module docs).
#[test]
fn probe_helper() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // IPv6 may be off on the machine: then there is no third port.
    let tcp6 = TcpListener::bind("[::1]:0").ok();
    let mut ports: Vec<u16> = [tcp.local_addr(), udp.local_addr()]
        .into_iter()
        .map(|a| a.unwrap().port())
        .chain(tcp6.iter().map(|l| l.local_addr().unwrap().port()))
        .collect();
    ports.sort_unstable();
    let threads_now = || -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))?
            .trim()
            .parse()
            .ok()
    };
    let before = threads_now().unwrap();
    let (_keep, parked) = std::sync::mpsc::channel::<()>();
    let parked = std::sync::Arc::new(std::sync::Mutex::new(parked));
    for _ in 0..PROBE_EXTRA_THREADS {
        let parked = std::sync::Arc::clone(&parked);
        std::thread::spawn(move || {
            let _ = parked.lock().map(|rx| rx.recv());
        });
    }
    // Every thread is up once the status file counts them.
    let threads = eventually(PATIENCE, || {
        threads_now().filter(|&n| n >= before + PROBE_EXTRA_THREADS)
    })
    .unwrap();
    // Listing the directory holds one descriptor of its own.
    let open_fds = std::fs::read_dir("/proc/self/fd").unwrap().count() - 1;
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    println!(
        "PROBE ports={} threads={threads} fds={open_fds}",
        ports.join(",")
    );
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// Starts the probe under `dir/PROBE_NAME` and reads its report.
fn start_probe(dir: &Path) -> Probe {
    let link = dir.join(PROBE_NAME);
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &link).unwrap();
    let mut child = Reaped(
        Command::new(&link)
            .args(["--exact", "probe_helper", "--nocapture", "--test-threads=1"])
            .env(PROBE_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // libtest's "test probe_helper ... " may precede it on the line.
            if let Some((_, report)) = line.split_once("PROBE ") {
                let _ = tx.send(report.to_owned());
            }
        }
    });
    let report = rx.recv_timeout(PATIENCE).expect("the probe reports");
    let field = |name: &str| {
        report
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .to_owned()
    };
    Probe {
        child,
        ports: field("ports")
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect(),
        threads: field("threads").parse().unwrap(),
        open_fds: field("fds").parse().unwrap(),
    }
}

/// Starts `dir/name`, a symlink to `/bin/sleep`.
fn start_sleep(dir: &Path, name: &str) -> Reaped {
    let link = dir.join(name);
    std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
    Reaped(
        Command::new(&link)
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// GET `path`: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    common::http_get(addr, path)
}

fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = get(addr, path)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The process object of `pid` in `/api/processes`, once `ready` holds.
fn api_process(addr: SocketAddr, pid: u32, ready: impl Fn(&Value) -> bool) -> Option<Value> {
    eventually(PATIENCE, || {
        let list = get_json(addr, "/api/processes")?;
        let row = list["processes"]
            .as_array()?
            .iter()
            .find(|p| p["pid"] == pid)?
            .clone();
        ready(&row).then_some(row)
    })
}

/// A per-process series of the Prometheus text: `(labels, value)` of the
/// lines of `metric` whose labels include `pid="PID"`.
fn series(text: &str, metric: &str, pid: u32) -> Vec<(String, f64)> {
    let pid_label = format!("pid=\"{pid}\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            labels
                .split(',')
                .any(|l| l == pid_label)
                .then(|| (labels.to_owned(), value.trim().parse().unwrap()))
        })
        .collect()
}

/// The user name of this process's uid, as the agent should report it.
fn my_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name)
}

/// Whether a cgroup file names a container: a run of 64 hex digits.
fn names_a_container(cgroup: &str) -> bool {
    cgroup
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() == 64)
}

fn start_agent(dir: &Path) -> (RunningAgent, SocketAddr) {
    // Fail with a clear message when the other binaries are not built.
    bin("procmond");
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let agent = RunningAgent(
        agent_command()
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--rules-dir")
            .arg(dir.join("no-rules"))
            // Every process is exported, so an idle child has series too.
            .args(["--scan-interval", "200ms", "--metrics-top-n", "10000"])
            .arg("--metrics-listen")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (agent, addr)
}

#[test]
fn metrics_and_api_show_a_known_child_until_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start_agent(dir.path());
    let probe = start_probe(dir.path());
    let pid = probe.child.0.id();

    // The API: pid, name, user, threads, descriptors and ports.
    let row = api_process(addr, pid, |row| {
        row["listening_ports"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            && row["threads"] == probe.threads
            && row["open_fds"] == probe.open_fds
    });
    let Some(row) = row else {
        panic!(
            "the API never showed pid {pid} with ports {:?}, {} threads and {} descriptors: {:?}",
            probe.ports,
            probe.threads,
            probe.open_fds,
            get_json(addr, &format!("/api/processes?name={PROBE_NAME}"))
        );
    };
    assert_eq!(row["name"], PROBE_NAME, "{row}");
    assert_eq!(row["user"], my_user(), "{row}");
    let ports: Vec<u64> = row["listening_ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(ports, probe.ports, "{row}");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    if names_a_container(&cgroup) {
        let id = row["container_id"].as_str().unwrap();
        assert!(id.len() == 64 && cgroup.contains(id), "{id} in {cgroup}");
    } else {
        assert!(row["container_id"].is_null(), "{row} in {cgroup}");
    }

    // /metrics: the same figures, labelled with name, pid, user and
    // container id.
    let (status, metrics) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let threads = series(&metrics, "sentineld_process_threads", pid);
    assert_eq!(threads.len(), 1, "{threads:?}");
    let (labels, value) = &threads[0];
    assert_eq!(*value, probe.threads as f64);
    let container = row["container_id"].as_str().unwrap_or("");
    assert_eq!(
        *labels,
        format!(
            "name=\"{PROBE_NAME}\",pid=\"{pid}\",user=\"{}\",container_id=\"{container}\"",
            my_user()
        )
    );
    let fds = series(&metrics, "sentineld_process_open_fds", pid);
    assert_eq!(fds.len(), 1, "{fds:?}");
    assert_eq!(fds[0].1, probe.open_fds as f64);
    assert_eq!(
        series(&metrics, "sentineld_process_cpu_percent", pid).len(),
        1
    );
    let memory = series(&metrics, "sentineld_process_memory_bytes", pid);
    assert!(
        memory
            .iter()
            .any(|(l, v)| l.ends_with("kind=\"rss\"") && *v > 0.0),
        "{memory:?}"
    );
    // Swap is known for every user process: its VmSwap, or 0 when the
    // host has no swap in use.
    let swapped = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap()
        * 1024.0;
    let swap: Vec<f64> = memory
        .iter()
        .filter(|(l, _)| l.ends_with("kind=\"swap\""))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(swap, vec![swapped], "{memory:?}");
    assert_eq!(row["swap_bytes"].as_f64(), Some(swapped), "{row}");

    // The ports reached the store: the history (read from it) and the CLI.
    let history = eventually(PATIENCE, || {
        let h = get_json(addr, &format!("/api/processes/{pid}/history?limit=1"))?;
        (h["points"][0]["listening_ports"].as_array()?.len() == probe.ports.len()).then_some(h)
    });
    assert!(history.is_some(), "no stored sample with the ports");
    let state = dir.path().join("state");
    let out = cli(&state, &["ps", "--ports", "--pid", &pid.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let joined: Vec<String> = probe.ports.iter().map(u64::to_string).collect();
    assert!(table.lines().next().unwrap().contains("PORTS"), "{table}");
    assert!(table.contains(&joined.join(",")), "{table}");

    // Once it exits (and is reaped), its series and row are gone.
    drop(probe.child);
    let gone = eventually(PATIENCE, || {
        let (_, metrics) = get(addr, "/metrics")?;
        let list = get_json(addr, "/api/processes")?;
        let listed = list["processes"]
            .as_array()?
            .iter()
            .any(|p| p["pid"] == pid);
        let has_series = metrics
            .lines()
            .any(|l| l.starts_with("sentineld_process_") && l.contains(&format!("pid=\"{pid}\"")));
        (!listed && !has_series).then_some(())
    });
    assert!(
        gone.is_some(),
        "pid {pid} is still exported after it exited"
    );
}

#[test]
fn groups_aggregate_three_instances_of_one_base_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = start_agent(dir.path());
    let members = [
        start_sleep(dir.path(), "enrgrp"),
        start_sleep(dir.path(), "enrgrp-worker"),
        start_sleep(dir.path(), "enrgrp:pool"),
    ];
    // Same prefix, not the same base name.
    let other = start_sleep(dir.path(), "enrgrpx");
    let pids: BTreeSet<u64> = members.iter().map(|m| u64::from(m.0.id())).collect();

    let group = eventually(PATIENCE, || {
        let g = get_json(addr, "/api/groups?base=enrgrp")?;
        (g["count"] == 3).then_some(g)
    })
    .expect("the group gathers its three members");
    let rows = group["members"].as_array().unwrap();
    let got: BTreeSet<u64> = rows.iter().map(|m| m["pid"].as_u64().unwrap()).collect();
    assert_eq!(got, pids, "{group}");
    assert!(
        !got.contains(&u64::from(other.0.id())),
        "enrgrpx is not in the group"
    );
    let sum = |field: &str| rows.iter().map(|m| m[field].as_u64().unwrap()).sum::<u64>();
    let rss = sum("rss_bytes");
    assert!(rss > 0);
    assert_eq!(group["rss_bytes_total"], rss);
    assert_eq!(group["rss_bytes_avg"], rss / 3);
    assert_eq!(group["vms_bytes_total"], sum("vms_bytes"));
    let cpu: f64 = rows
        .iter()
        .map(|m| m["cpu_percent"].as_f64().unwrap())
        .sum();
    let total = group["cpu_percent_total"].as_f64().unwrap();
    assert!((total - cpu).abs() < 1e-3, "{total} vs {cpu}");
    for m in rows {
        assert_eq!(m["user"], my_user(), "{m}");
        assert_eq!(m["threads"], 1, "{m}");
        assert_eq!(m["listening_ports"], serde_json::json!([]), "{m}");
    }
}
