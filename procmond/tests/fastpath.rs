//! The Linux `/proc` fast path and the portable sysinfo collector agree on
//! the same host: the same processes, with the same identity and figures.

#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::time::Duration;

use procmond::collect::{
    AnyCollector, Collector, CollectorKind, Identity, Observed, ProcfsCollector, ScanCounters,
    SysinfoCollector,
};

use common::{Reaped, copy_sleep, spawn_retrying};

fn collect(c: &mut impl Collector) -> Vec<Observed> {
    let mut out = Vec::new();
    c.collect(&mut out, &mut ScanCounters::default());
    out
}

fn find(out: &[Observed], pid: u32) -> &Observed {
    out.iter()
        .find(|o| o.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not listed"))
}

#[test]
fn both_collectors_report_the_same_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A long argument, and a name with spaces and parentheses (which
    // `stat` shows unquoted). sleep's arguments must be numbers: it exits
    // on any other, and a zombie has no command line.
    let exe = copy_sleep(dir.path(), "odd (name) x");
    let long = format!("{}30", "0".repeat(5000));
    let children = [
        Reaped(spawn_retrying(Path::new("/bin/sleep"), &["30"])),
        Reaped(spawn_retrying(&exe, &["31", "0.5"])),
        Reaped(spawn_retrying(&exe, &[&long])),
    ];
    let me = std::process::id();
    let mut pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    // Each child asleep before the two reads, so both see the same state
    // (a child just exec'd is still running its start-up).
    for &pid in &pids {
        let asleep = (0..400).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('S')));
            if state == Some(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
            false
        });
        assert!(asleep, "pid {pid} never went to sleep");
    }
    pids.push(me);

    let mut fast = ProcfsCollector::new().expect("/proc");
    let mut portable = SysinfoCollector::new().expect("sysinfo");
    let fast_out = collect(&mut fast);
    let portable_out = collect(&mut portable);

    for &pid in &pids {
        let (f, p) = (find(&fast_out, pid), find(&portable_out, pid));
        assert_eq!(
            (f.ppid, f.start_time, f.kernel_thread),
            (p.ppid, p.start_time, p.kernel_thread),
            "pid {pid}"
        );
        let (fi, pi) = (
            fast.identity(pid).expect("fast identity"),
            portable.identity(pid).expect("portable identity"),
        );
        assert_eq!(fi, pi, "pid {pid}");
        // Sleeping children keep their figures; this process's threads and
        // memory may move between the two reads.
        if pid != me {
            assert_eq!((f.threads, f.status), (p.threads, p.status), "pid {pid}");
            assert_eq!(f.vms_bytes, p.vms_bytes, "pid {pid}");
        }
        let rss = f.rss_bytes.abs_diff(p.rss_bytes);
        assert!(
            rss <= 8 << 20,
            "pid {pid}: rss {} vs {}",
            f.rss_bytes,
            p.rss_bytes
        );
    }
    let odd = fast.identity(pids[1]).expect("identity");
    assert_eq!(
        odd,
        Identity {
            name: "odd (name) x".into(),
            exe: Some(exe.clone()),
            cmdline: vec![
                exe.to_string_lossy().into_owned(),
                "31".into(),
                "0.5".into()
            ],
            uid: Some(nix::unistd::getuid().as_raw()),
        }
    );
    assert_eq!(fast.identity(pids[2]).expect("identity").cmdline[1], long);

    // Every process both list (those that did not come or go between the
    // two reads) is the same instance with the same identity: kernel
    // threads, pid 1, other users' processes.
    // Only processes that started a while ago: one just forked may exec
    // between the two reads (a busy machine starts many).
    let settled = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("seconds fit")
        - 10;
    let mut compared = 0;
    for f in fast_out.iter().filter(|f| f.start_time < settled) {
        let Ok(i) = portable_out.binary_search_by_key(&f.pid, |p| p.pid) else {
            continue;
        };
        let p = &portable_out[i];
        if p.start_time != f.start_time {
            continue; // the pid was reused in between
        }
        assert_eq!(
            (f.ppid, f.kernel_thread),
            (p.ppid, p.kernel_thread),
            "pid {}",
            f.pid
        );
        let (fi, pi) = (fast.identity(f.pid), portable.identity(f.pid));
        let (Some(fi), Some(pi)) = (fi, pi) else {
            continue;
        };
        // Kernel threads (kworker/...) rename themselves as they work.
        if !f.kernel_thread {
            assert_eq!(fi.name, pi.name, "pid {}", f.pid);
        }
        assert_eq!((&fi.exe, fi.uid), (&pi.exe, pi.uid), "pid {}", f.pid);
        compared += 1;
    }
    // At least pid 1 and the kernel threads.
    assert!(compared >= 2, "{compared}");

    // No threads listed as processes.
    let tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .expect("own tasks")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != me)
        .collect();
    for tid in tids {
        assert!(fast_out.iter().all(|o| o.pid != tid), "thread {tid} listed");
    }
}

#[test]
fn cpu_usage_agrees() {
    // A child that spins for a while.
    let mut spinner = Reaped(
        std::process::Command::new("/bin/sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh"),
    );
    let pid = spinner.0.id();
    // Some CPU time first: sysinfo measures nothing for a process that had
    // none at its previous refresh.
    std::thread::sleep(Duration::from_millis(300));
    let mut fast = ProcfsCollector::new().expect("/proc");
    let mut portable = SysinfoCollector::new().expect("sysinfo");
    collect(&mut fast);
    collect(&mut portable);
    std::thread::sleep(Duration::from_millis(500));
    let f = find(&collect(&mut fast), pid).cpu_percent;
    let p = find(&collect(&mut portable), pid).cpu_percent;
    let _ = spinner.0.kill();
    // Both measured over (about) the same half second, on a shared
    // machine: each is somewhere between none and one core (give or take
    // the jitter of when each read its clock and the process's ticks).
    for cpu in [f, p] {
        assert!((0.0..=110.0).contains(&cpu), "{f} {p}");
    }
    assert!(f > 0.0 && p > 0.0, "{f} {p}");
}

#[test]
fn auto_is_procfs_on_linux() {
    let c = AnyCollector::open(CollectorKind::Auto).expect("open");
    assert_eq!(c.name(), "procfs");
    let c = AnyCollector::open(CollectorKind::Sysinfo).expect("open");
    assert_eq!(c.name(), "sysinfo");
}
