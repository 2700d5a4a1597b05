//! Enumerating processes.
//!
//! A [`Collector`] refreshes the process table once per scan and reports
//! every live process as an [`Observed`] (the cheap, per-scan fields). The
//! fields that are read once per instance (name, exe, argv, uid) are asked
//! for separately with [`Collector::identity`], only for instances the scan
//! has not seen before. [`SysinfoCollector`] is the portable collector and
//! the fallback; on Linux, [`ProcfsCollector`] reads `/proc` directly and,
//! for the instances it knows, only `/proc/PID/stat`.
//! [`AnyCollector::open`] picks one ([`CollectorKind`], `--collector`).

use std::path::PathBuf;

use sysinfo::{
    Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind,
};

use crate::error::Error;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::ProcfsCollector;
#[cfg(target_os = "linux")]
pub(crate) use linux::descriptor_budget;

/// Longest command line kept for a record, in bytes (all arguments
/// together). Anything past it is cut, so one process cannot make a record
/// (and a frame) grow without bound.
pub const MAX_CMDLINE_BYTES: usize = 64 * 1024;

/// Processes a collector saw but could not report. Normal (a process can
/// exit while it is read), counted so that gaps are visible.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanCounters {
    /// Listed, then gone before it could be read.
    pub vanished: u32,
    /// Present but some of its files could not be read.
    pub unreadable: u32,
}

/// One live process as seen by one scan: the fields that change.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub pid: u32,
    pub ppid: u32,
    /// Unix seconds.
    pub start_time: i64,
    /// One-letter state as in `ps` (`R`, `S`, `D`, `Z`, `T`, `I`, ...), `?`
    /// when unknown.
    pub status: &'static str,
    pub threads: u32,
    pub rss_bytes: u64,
    pub vms_bytes: u64,
    pub cpu_percent: f32,
    /// A kernel thread: it has no executable and no command line.
    pub kernel_thread: bool,
}

/// The fields of a process that are read once per instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub name: String,
    /// The executable path as the collector reports it (without a
    /// ` (deleted)` suffix).
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    pub uid: Option<u32>,
}

/// A source of process tables.
pub trait Collector {
    /// Refreshes the process table and appends every live process to `out`
    /// (which the caller clears). Processes that cannot be read are skipped
    /// and counted in `counters`.
    fn collect(&mut self, out: &mut Vec<Observed>, counters: &mut ScanCounters);

    /// The once-per-instance fields of `pid` as of the last
    /// [`collect`](Collector::collect); `None` when it was not in it.
    /// Called once per new instance (and per exec): a collector may hand
    /// over what it read and read again if asked a second time, so that it
    /// does not keep a copy of every command line the caller keeps too.
    fn identity(&mut self, pid: u32) -> Option<Identity>;

    /// Pids of known instances that exec'd (another program, same pid and
    /// start time) as the last [`collect`](Collector::collect) saw; their
    /// [`identity`](Collector::identity) is the new program's. Empty for a
    /// collector that does not detect it.
    fn exec_changes(&self) -> &[u32] {
        &[]
    }
}

/// Which collector procmond uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectorKind {
    /// `procfs` on Linux, `sysinfo` elsewhere (and where `/proc` cannot be
    /// opened).
    #[default]
    Auto,
    /// The Linux fast path: `/proc` read directly, the full read only for
    /// new instances and after an exec.
    Procfs,
    /// The portable collector.
    Sysinfo,
}

/// The collector chosen at run time.
#[derive(Debug)]
pub enum AnyCollector {
    Sysinfo(SysinfoCollector),
    #[cfg(target_os = "linux")]
    Procfs(ProcfsCollector),
}

impl AnyCollector {
    /// Opens the collector `kind` asks for. `Auto` falls back to `sysinfo`
    /// when `/proc` cannot be opened; an explicit `Procfs` does not.
    pub fn open(kind: CollectorKind) -> Result<AnyCollector, Error> {
        match kind {
            CollectorKind::Sysinfo => Ok(AnyCollector::Sysinfo(SysinfoCollector::new()?)),
            #[cfg(target_os = "linux")]
            CollectorKind::Procfs => Ok(AnyCollector::Procfs(ProcfsCollector::new()?)),
            #[cfg(not(target_os = "linux"))]
            CollectorKind::Procfs => Err(Error::Collector(
                "the procfs collector needs Linux; use --collector sysinfo".into(),
            )),
            #[cfg(target_os = "linux")]
            CollectorKind::Auto => match ProcfsCollector::new() {
                Ok(c) => Ok(AnyCollector::Procfs(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "falling back to the sysinfo collector");
                    Ok(AnyCollector::Sysinfo(SysinfoCollector::new()?))
                }
            },
            #[cfg(not(target_os = "linux"))]
            CollectorKind::Auto => Ok(AnyCollector::Sysinfo(SysinfoCollector::new()?)),
        }
    }

    /// `procfs` or `sysinfo`.
    pub fn name(&self) -> &'static str {
        match self {
            AnyCollector::Sysinfo(_) => "sysinfo",
            #[cfg(target_os = "linux")]
            AnyCollector::Procfs(_) => "procfs",
        }
    }
}

impl Collector for AnyCollector {
    fn collect(&mut self, out: &mut Vec<Observed>, counters: &mut ScanCounters) {
        match self {
            AnyCollector::Sysinfo(c) => c.collect(out, counters),
            #[cfg(target_os = "linux")]
            AnyCollector::Procfs(c) => c.collect(out, counters),
        }
    }

    fn identity(&mut self, pid: u32) -> Option<Identity> {
        match self {
            AnyCollector::Sysinfo(c) => c.identity(pid),
            #[cfg(target_os = "linux")]
            AnyCollector::Procfs(c) => c.identity(pid),
        }
    }

    fn exec_changes(&self) -> &[u32] {
        match self {
            AnyCollector::Sysinfo(c) => c.exec_changes(),
            #[cfg(target_os = "linux")]
            AnyCollector::Procfs(c) => c.exec_changes(),
        }
    }
}

/// The portable collector, over `sysinfo`.
///
/// Executable path, command line and user are read once per process
/// (`UpdateKind::OnlyIfNotSet`); memory and CPU time every scan. Threads are
/// not enumerated as processes; on Linux their count comes from the link
/// count of `/proc/PID/task` (one `stat` call, no file to open and parse).
pub struct SysinfoCollector {
    system: System,
    kind: ProcessRefreshKind,
    #[cfg(target_os = "linux")]
    path_buf: String,
}

impl std::fmt::Debug for SysinfoCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SysinfoCollector")
            .field("processes", &self.system.processes().len())
            .field("kind", &self.kind)
            .finish()
    }
}

impl SysinfoCollector {
    pub fn new() -> Result<SysinfoCollector, Error> {
        let system = System::new().map_err(|e| Error::Collector(e.to_string()))?;
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_exe(UpdateKind::OnlyIfNotSet)
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .with_user(UpdateKind::OnlyIfNotSet)
            .without_tasks();
        Ok(SysinfoCollector {
            system,
            kind,
            #[cfg(target_os = "linux")]
            path_buf: String::with_capacity(32),
        })
    }

    /// Thread count of `pid`; `Err` carries the `stat` error.
    #[cfg(target_os = "linux")]
    fn threads(&mut self, pid: u32) -> std::io::Result<u32> {
        use std::fmt::Write as _;
        use std::os::unix::fs::MetadataExt as _;

        self.path_buf.clear();
        let _ = write!(self.path_buf, "/proc/{pid}/task");
        let meta = std::fs::metadata(&self.path_buf)?;
        // procfs reports 2 + the number of threads as the link count of a
        // process's task directory.
        match meta.nlink().checked_sub(2) {
            Some(n) if n > 0 => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => {
                self.path_buf.truncate(self.path_buf.len() - "task".len());
                self.path_buf.push_str("stat");
                let stat = std::fs::read(&self.path_buf)?;
                Ok(crate::procfs::stat_num_threads(&stat).unwrap_or(0))
            }
        }
    }
}

impl Collector for SysinfoCollector {
    fn collect(&mut self, out: &mut Vec<Observed>, counters: &mut ScanCounters) {
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, self.kind);
        out.reserve(self.system.processes().len());
        // Threads are read outside the borrow of `system`.
        let mut listed: Vec<(Pid, Observed, bool)> =
            Vec::with_capacity(self.system.processes().len());
        for (pid, p) in self.system.processes() {
            if p.thread_kind() == Some(ThreadKind::Userland) {
                continue;
            }
            listed.push((
                *pid,
                Observed {
                    pid: pid.as_u32(),
                    ppid: p.parent().map_or(0, Pid::as_u32),
                    start_time: i64::try_from(p.start_time()).unwrap_or(i64::MAX),
                    status: status_code(p.status()),
                    threads: p
                        .tasks()
                        .map_or(0, |t| u32::try_from(t.len() + 1).unwrap_or(u32::MAX)),
                    rss_bytes: p.memory(),
                    vms_bytes: p.virtual_memory(),
                    cpu_percent: p.cpu_usage(),
                    kernel_thread: p.thread_kind() == Some(ThreadKind::Kernel),
                },
                p.user_id().is_none(),
            ));
        }
        for (_pid, mut observed, no_user) in listed {
            #[cfg(target_os = "linux")]
            match self.threads(observed.pid) {
                Ok(n) => observed.threads = n,
                Err(e) if crate::procfs::is_gone(&e) => {
                    counters.vanished += 1;
                    continue;
                }
                Err(_) => counters.unreadable += 1,
            }
            if no_user && cfg!(target_os = "linux") {
                // `/proc/PID/status` could not be read (or parsed).
                counters.unreadable += 1;
            }
            out.push(observed);
        }
        out.sort_unstable_by_key(|o| o.pid);
    }

    fn identity(&mut self, pid: u32) -> Option<Identity> {
        let p = self.system.process(Pid::from_u32(pid))?;
        Some(Identity {
            name: p.name().to_string_lossy().into_owned(),
            exe: p.exe().map(std::path::Path::to_path_buf),
            cmdline: bounded_cmdline(p.cmd().iter().map(|a| a.to_string_lossy())),
            uid: p.user_id().map(|u| **u),
        })
    }
}

/// Converts argv to strings, keeping at most [`MAX_CMDLINE_BYTES`] in total
/// (the argument that crosses the limit is cut at a character boundary and
/// the rest dropped).
pub(crate) fn bounded_cmdline<'a>(
    args: impl Iterator<Item = std::borrow::Cow<'a, str>>,
) -> Vec<String> {
    let mut left = MAX_CMDLINE_BYTES;
    let mut out = Vec::new();
    for arg in args {
        if left == 0 {
            break;
        }
        if arg.len() <= left {
            left -= arg.len();
            out.push(arg.into_owned());
        } else {
            let mut cut = left;
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(arg[..cut].to_owned());
            left = 0;
        }
    }
    out
}

/// The one-letter state `ps` shows for a status.
pub(crate) fn status_code(status: ProcessStatus) -> &'static str {
    match status {
        ProcessStatus::Run => "R",
        ProcessStatus::Sleep => "S",
        ProcessStatus::Idle => "I",
        ProcessStatus::UninterruptibleDiskSleep => "D",
        ProcessStatus::Zombie => "Z",
        ProcessStatus::Stop => "T",
        ProcessStatus::Tracing => "t",
        ProcessStatus::Dead => "X",
        ProcessStatus::Wakekill => "K",
        ProcessStatus::Waking => "W",
        ProcessStatus::Parked => "P",
        ProcessStatus::LockBlocked => "L",
        ProcessStatus::Suspended => "T",
        ProcessStatus::Unknown(_) => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_is_bounded_at_a_char_boundary() {
        let big = "é".repeat(MAX_CMDLINE_BYTES); // two bytes each
        let args = ["prog".to_owned(), big, "after".to_owned()];
        let out = bounded_cmdline(args.iter().map(|a| std::borrow::Cow::Borrowed(a.as_str())));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], "prog");
        let total: usize = out.iter().map(String::len).sum();
        assert!(total <= MAX_CMDLINE_BYTES, "{total}");
        assert!(total >= MAX_CMDLINE_BYTES - 1, "{total}");
    }

    #[test]
    fn collector_sees_this_process_with_its_threads() {
        let mut collector = SysinfoCollector::new().expect("sysinfo");
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = stop_rx.recv();
        });
        let mut out = Vec::new();
        let mut counters = ScanCounters::default();
        collector.collect(&mut out, &mut counters);
        let me = std::process::id();
        let mine = out.iter().find(|o| o.pid == me).expect("own pid listed");
        assert!(mine.threads >= 2, "{mine:?}");
        assert!(mine.start_time > 1_500_000_000, "{mine:?}");
        assert!(mine.rss_bytes > 0);
        assert!(!mine.kernel_thread);
        // Threads are not listed as processes.
        assert!(out.windows(2).all(|w| w[0].pid < w[1].pid));
        let id = collector.identity(me).expect("identity");
        assert_eq!(id.uid, Some(nix::unistd::getuid().as_raw()));
        assert!(!id.cmdline.is_empty());
        let _ = stop_tx.send(());
        helper.join().expect("helper thread");
    }
}
