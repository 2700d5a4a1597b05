//! sentineld-load: raises the host to N processes, runs the whole system
//! (sentinelagent, which starts procmond) on it, and reports what it cost.
//!
//! ```sh
//! cargo build --release --workspace
//! ./target/release/sentineld-load --processes 1000
//! ./target/release/sentineld-load --processes 10000 --churn 50 --duration 60s
//! ```
//!
//! It starts `--processes` idle children (itself, in a child mode: every
//! `--threads-every`th with 4 threads, every `--long-cmdline-every`th with a
//! 4 KiB command line), replaces `--churn` of them per second (one exits,
//! one starts), starts `--probes` programs from a temp directory that the
//! built-in rule `linux.exec_from_tmp` catches, and measures over
//! `--duration` after a warm-up:
//!
//! - scan duration p50/p99 (procmond's own figure, from the stored scans);
//! - procmond's and the agent's CPU (% of one core) and peak RSS (`VmHWM`);
//! - records stored per second (`sentineld_records_stored_total`);
//! - alert latency: from a probe's start to its alert on the stdout sink;
//! - WAL depth: the largest size of procmond's write-ahead log.
//!
//! Every process it starts it stops by its pid (the children also exit by
//! themselves when this tool goes away); the agent is stopped with SIGTERM.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use sentineld_benches::{millis, quantile, sibling_binary, terminate};

/// The kernel's USER_HZ: the unit of `/proc/PID/stat` CPU times on every
/// mainstream Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// The first argument of a load child.
const CHILD_FLAG: &str = "--load-child";

#[derive(Debug, Parser)]
#[command(name = "sentineld-load")]
struct Args {
    /// Idle processes to hold alive (besides the host's own).
    #[arg(long, default_value_t = 1000)]
    processes: usize,
    /// Every Nth process runs 4 threads; 0 for none.
    #[arg(long, default_value_t = 10)]
    threads_every: usize,
    /// Every Nth process has a 4 KiB command line; 0 for none.
    #[arg(long, default_value_t = 10)]
    long_cmdline_every: usize,
    /// Processes replaced per second (one exits, a new one starts).
    #[arg(long, default_value_t = 10.0)]
    churn: f64,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "30s", value_parser = sentineld_common::time::parse_duration)]
    duration: Duration,
    /// The agent's --scan-interval.
    #[arg(long, default_value = "1s")]
    scan_interval: String,
    /// Alert probes started during the measurement, evenly spread.
    #[arg(long, default_value_t = 10)]
    probes: usize,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        run_child(argv.get(2).and_then(|t| t.parse().ok()).unwrap_or(1));
        return Ok(());
    }
    let args = Args::parse();
    let report = run(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&args, &report);
    }
    Ok(())
}

/// A load child: `threads` threads in all, idle, until this tool goes away.
fn run_child(threads: usize) {
    for _ in 1..threads {
        std::thread::spawn(|| {
            loop {
                std::thread::park();
            }
        });
    }
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The children, oldest first; each is stopped by its pid.
struct Children {
    exe: PathBuf,
    args: Args2,
    live: Mutex<VecDeque<Child>>,
    started: AtomicU64,
}

/// The parts of [`Args`] a child's shape depends on.
#[derive(Clone, Copy)]
struct Args2 {
    threads_every: usize,
    long_cmdline_every: usize,
}

impl Children {
    fn spawn_one(&self) -> std::io::Result<()> {
        let n = usize::try_from(self.started.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
        let threads = if self.args.threads_every > 0 && n % self.args.threads_every == 0 {
            4
        } else {
            1
        };
        let mut cmd = Command::new(&self.exe);
        cmd.arg(CHILD_FLAG).arg(threads.to_string());
        if self.args.long_cmdline_every > 0 && n % self.args.long_cmdline_every == 0 {
            cmd.arg(format!("--pad={}", "x".repeat(4096)));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.lock().push_back(child);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Child>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the oldest child.
    fn retire_one(&self) {
        let oldest = self.lock().pop_front();
        if let Some(mut child) = oldest {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop_all(&self) {
        let all: Vec<Child> = self.lock().drain(..).collect();
        for mut child in all {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The agent, stopped with SIGTERM by its pid when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            terminate(self.0.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    host_processes: usize,
    spawn_seconds: f64,
    window_seconds: f64,
    scans: usize,
    scan_p50_ms: f64,
    scan_p99_ms: f64,
    scan_max_ms: f64,
    procmond_cpu_percent: f64,
    agent_cpu_percent: f64,
    procmond_peak_rss_mib: f64,
    agent_peak_rss_mib: f64,
    records_stored: u64,
    records_per_second: f64,
    alerts_seen: usize,
    alert_latency_p50_ms: f64,
    alert_latency_max_ms: f64,
    wal_peak_bytes: u64,
    churned: u64,
}

fn run(args: &Args) -> Result<Report, Box<dyn std::error::Error>> {
    let agent_bin = sibling_binary("sentinelagent")?;
    let cli_bin = sibling_binary("sentinelcli")?;
    // Under /tmp, so that the probes run from a temp directory.
    let dir = tempfile::Builder::new()
        .prefix("sentineld-load")
        .tempdir_in("/tmp")?;
    // As /var/lib is: an agent started as root drops to an unprivileged
    // user once procmond runs, and still reaches its state.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let state = dir.path().join("state");
    let probe = dir.path().join("load-probe");
    std::fs::copy("/bin/sleep", &probe)?;

    let children = Arc::new(Children {
        exe: std::env::current_exe()?,
        args: Args2 {
            threads_every: args.threads_every,
            long_cmdline_every: args.long_cmdline_every,
        },
        live: Mutex::new(VecDeque::with_capacity(args.processes)),
        started: AtomicU64::new(0),
    });
    let spawn_start = Instant::now();
    for i in 0..args.processes {
        if let Err(e) = children.spawn_one() {
            return Err(format!(
                "could not start load process {i}: {e} (raise `ulimit -u` or pid_max)"
            )
            .into());
        }
    }
    let spawn_seconds = spawn_start.elapsed().as_secs_f64();
    eprintln!(
        "sentineld-load: {} processes started in {spawn_seconds:.1} s",
        args.processes
    );

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    let mut agent_child = Command::new(&agent_bin)
        .arg("--state-dir")
        .arg(&state)
        .arg("--rules-dir")
        .arg(dir.path().join("no-rules"))
        .args(["--scan-interval", &args.scan_interval])
        .args(["--metrics-listen", &listen])
        .args(["--alert-sink", "stdout"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = agent_child.stdout.take().ok_or("no stdout")?;
    let agent = Agent(agent_child);
    let agent_pid = agent.0.id();

    // Alerts for the probes, by pid, as they leave the stdout sink.
    let (alert_tx, alert_rx) = mpsc::channel::<(u64, Instant)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["rule_id"] == "linux.exec_from_tmp"
                && let Some(pid) = v["process"]["pid"].as_u64()
            {
                let _ = alert_tx.send((pid, at));
            }
        }
    });

    // Warm-up: procmond started, its snapshot stored, a few scans after.
    let warm = Instant::now();
    let scan_rows = |cli: &Path| -> Vec<serde_json::Value> {
        Command::new(cli)
            .arg("--state-dir")
            .arg(&state)
            .args(["scans", "--format", "json", "--limit", "100000"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    };
    while scan_rows(&cli_bin).len() < 3 {
        if warm.elapsed() > Duration::from_secs(300) {
            return Err("no scans stored after 5 minutes of warm-up".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let procmond_pid =
        child_named(agent_pid, "procmond").ok_or("the agent's procmond was not found")?;
    let first_scan_id = scan_rows(&cli_bin)
        .iter()
        .filter_map(|s| s["scan_id"].as_u64())
        .max()
        .unwrap_or(0);

    // The window.
    let t0 = Instant::now();
    let cpu0 = (cpu_ticks(procmond_pid), cpu_ticks(agent_pid));
    let stored0 = metric(port, "sentineld_records_stored_total").unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churner = (args.churn > 0.0).then(|| {
        let (children, stop, churned) = (
            Arc::clone(&children),
            Arc::clone(&stop),
            Arc::clone(&churned),
        );
        let every = Duration::from_secs_f64(1.0 / args.churn);
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                children.retire_one();
                if children.spawn_one().is_ok() {
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    });
    let wal_dir = state.join("procmond").join("wal");
    let mut wal_peak = 0u64;
    let mut probes: HashMap<u64, (Child, Instant)> = HashMap::new();
    let mut latencies = Vec::new();
    let probe_every = args
        .duration
        .checked_div(u32::try_from(args.probes.max(1))?);
    let mut next_probe = t0;
    let mut probes_started = 0;
    while t0.elapsed() < args.duration {
        if probes_started < args.probes
            && let Some(every) = probe_every
            && Instant::now() >= next_probe
        {
            let child = Command::new(&probe).arg("600").spawn()?;
            probes.insert(u64::from(child.id()), (child, Instant::now()));
            probes_started += 1;
            next_probe += every;
        }
        while let Ok((pid, at)) = alert_rx.try_recv() {
            if let Some((mut child, started)) = probes.remove(&pid) {
                latencies.push(at.duration_since(started));
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        wal_peak = wal_peak.max(dir_bytes(&wal_dir));
        std::thread::sleep(Duration::from_millis(100));
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu1 = (cpu_ticks(procmond_pid), cpu_ticks(agent_pid));
    let stored1 = metric(port, "sentineld_records_stored_total").unwrap_or(stored0);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = churner {
        let _ = t.join();
    }
    let peak = (peak_rss(procmond_pid), peak_rss(agent_pid));
    let mut durations: Vec<Duration> = scan_rows(&cli_bin)
        .iter()
        .filter(|s| s["scan_id"].as_u64().is_some_and(|id| id > first_scan_id))
        .filter_map(|s| s["duration_us"].as_u64())
        .map(Duration::from_micros)
        .collect();
    durations.sort();
    latencies.sort();

    for (_, (mut child, _)) in probes.drain() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.stop_all();
    drop(agent);
    // procmond, root while the agent dropped to nobody, stops on its own
    // once the agent has gone; the state directory it writes to is removed
    // (when this returns) only after it has.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{procmond_pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }

    let cpu = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (b.saturating_sub(a) as f64 / TICKS_PER_SECOND) / window * 100.0,
        _ => f64::NAN,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let records = (stored1 - stored0).max(0.0);
    Ok(Report {
        host_processes: count_processes(),
        spawn_seconds,
        window_seconds: window,
        scans: durations.len(),
        scan_p50_ms: ms(quantile(&durations, 0.5)),
        scan_p99_ms: ms(quantile(&durations, 0.99)),
        scan_max_ms: ms(quantile(&durations, 1.0)),
        procmond_cpu_percent: cpu(cpu0.0, cpu1.0),
        agent_cpu_percent: cpu(cpu0.1, cpu1.1),
        procmond_peak_rss_mib: peak.0.map_or(f64::NAN, |b| b as f64 / 1_048_576.0),
        agent_peak_rss_mib: peak.1.map_or(f64::NAN, |b| b as f64 / 1_048_576.0),
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative counter"
        )]
        records_stored: records as u64,
        records_per_second: records / window,
        alerts_seen: latencies.len(),
        alert_latency_p50_ms: ms(quantile(&latencies, 0.5)),
        alert_latency_max_ms: ms(quantile(&latencies, 1.0)),
        wal_peak_bytes: wal_peak,
        churned: churned.load(Ordering::Relaxed),
    })
}

fn print_table(args: &Args, r: &Report) {
    println!(
        "sentineld-load: {} load processes ({} on the host at the end), churn {}/s, scan interval {}, {:.0} s measured",
        args.processes, r.host_processes, args.churn, args.scan_interval, r.window_seconds
    );
    let rows = [
        (
            "scan duration p50 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} ms over {} scans",
                r.scan_p50_ms, r.scan_p99_ms, r.scan_max_ms, r.scans
            ),
        ),
        (
            "CPU, % of one core: procmond / agent",
            format!(
                "{:.2} % / {:.2} %",
                r.procmond_cpu_percent, r.agent_cpu_percent
            ),
        ),
        (
            "peak RSS: procmond / agent",
            format!(
                "{:.1} MiB / {:.1} MiB",
                r.procmond_peak_rss_mib, r.agent_peak_rss_mib
            ),
        ),
        (
            "records stored",
            format!("{} ({:.0}/s)", r.records_stored, r.records_per_second),
        ),
        (
            "alert latency p50 / max",
            format!(
                "{} / {} ({} of {} probes alerted)",
                millis(Duration::from_secs_f64(r.alert_latency_p50_ms / 1000.0)),
                millis(Duration::from_secs_f64(r.alert_latency_max_ms / 1000.0)),
                r.alerts_seen,
                args.probes
            ),
        ),
        ("WAL peak", format!("{} bytes", r.wal_peak_bytes)),
        ("processes replaced", r.churned.to_string()),
    ];
    for (what, value) in rows {
        println!("  {what:<38} {value}");
    }
}

/// The pid of a child of `ppid` whose command name is `name`.
fn child_named(ppid: u32, name: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((comm, fields)) = stat_of(pid) else {
            continue;
        };
        if comm == name && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
            return Some(pid);
        }
    }
    None
}

/// `/proc/PID/stat` split into the command name and the fields after it
/// (the first of which is the state).
fn stat_of(pid: u32) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest = text.get(close + 1..)?;
    Some((comm, rest.split_whitespace().map(str::to_owned).collect()))
}

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let (_, f) = stat_of(pid)?;
    // Fields 14 and 15 of stat; index 0 here is field 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size (`VmHWM`) of `pid`, bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn count_processes() -> usize {
    std::fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|s| s.parse::<u32>().is_ok())
            })
            .count()
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// One value of the agent's `/metrics` (a plain HTTP/1.0 GET).
fn metric(port: u16, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
