//! The Linux fast path: `/proc` read directly, and only what changed.
//!
//! A process's name, executable, command line and user do not change while
//! its instance (pid, start time) lives, except across an `exec`. So each
//! scan lists `/proc` and reads one file per process, `/proc/PID/stat`
//! (parent, state, start time, CPU time, threads, memory), and does the
//! full read (`status` for the uid, `cmdline`, the `exe` link) only for an
//! instance it has not seen before or one that exec'd.
//!
//! ## Exec detection
//! An `exec` keeps the pid and the start time, so it is caught from `stat`
//! alone, by comparing with what the instance showed last time:
//! - its command name (`comm`), which `exec` sets from the new program's
//!   file name;
//! - where its program text and stack are mapped (`startcode`, `endcode`,
//!   `startstack`), which only an `exec` changes, and which differ from one
//!   `exec` to the next even of the same program for a position-independent
//!   executable or with address-space randomisation (the default).
//!
//! Not detected: an `exec` of a program with the same `comm` when the
//! mapping is not visible (a reader without ptrace access to the process
//! sees placeholders; procmond has `CAP_SYS_PTRACE`) or not randomised (a
//! fixed-address executable with randomisation off). A process that
//! renames itself (`prctl(PR_SET_NAME)`) is taken for an `exec` and read
//! again. Changes without an `exec` are not followed: a rewritten command
//! line (`setproctitle`) or a `setuid` keep the values read at the start
//! or at the last `exec`. Kernel threads never exec and some rename
//! themselves as they work (`kworker/...`), so they keep the name they had
//! when first seen.
//!
//! ## Figures
//! Computed as the portable collector does, so records agree whichever
//! collector made them: start time is boot time (`btime` of `/proc/stat`)
//! plus `starttime` / `CLK_TCK`, in Unix seconds; CPU % is the process's
//! CPU time over the wall time since the previous scan, ×100 (per core, so
//! at most 100 × the number of CPUs); resident and virtual memory are the
//! figures `statm` shows, taken from `stat`.
//!
//! ## Cost
//! The directory handle, the `getdents` buffer, the path and the read
//! buffers are kept from scan to scan, so a steady-state scan allocates
//! nothing per process. Each known instance's `stat` stays open between
//! scans (within a share of `RLIMIT_NOFILE`, see [`descriptor_budget`]), so
//! a steady-state scan costs one `pread` per process (past the budget, an
//! `openat`, a `read` and a `close`). The descriptor refers to the process,
//! not to the pid: when the process is gone the read fails, and a reused
//! pid is opened anew.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{Mode, OFlags, RawDir, SeekFrom};

use crate::collect::{Collector, Identity, MAX_CMDLINE_BYTES, Observed, ScanCounters};
use crate::error::Error;
use crate::procfs::{self, Stat};

/// Bytes of `getdents` buffer: about a thousand `/proc` entries per call.
const DENTS_BYTES: usize = 32 * 1024;
/// A `stat` line is a few hundred bytes; one read of this many gets it all.
const STAT_BYTES: usize = 4096;
/// The `Uid:` line is among the first of `status`; the rest (up to the
/// supplementary groups, which can be long) is not needed.
const STATUS_BYTES: usize = 4096;
/// Most bytes of `cmdline` read: enough for [`MAX_CMDLINE_BYTES`] of
/// arguments with as many separators.
const CMDLINE_BYTES: usize = 2 * MAX_CMDLINE_BYTES + 8;
/// Capacity of the list of identities read in one scan kept between scans.
const FRESH_KEPT: usize = 256;

/// What the collector remembers of one live instance.
#[derive(Debug)]
struct Known {
    start_ticks: u64,
    /// utime + stime at the last scan.
    cpu_ticks: u64,
    /// The scan that last saw it.
    seen: u64,
    comm: Vec<u8>,
    exec_signature: Option<[u64; 3]>,
    kernel_thread: bool,
    uid: Option<u32>,
    /// `PID/stat`, kept open while the fd budget allows: the next scans
    /// read it with one `pread` instead of an `openat`, a `read` and a
    /// `close`. It names this instance, not the pid: once the process is
    /// gone it reads nothing, even if the pid is reused.
    stat_fd: Option<OwnedFd>,
}

/// The Linux `/proc` collector (see the module docs).
pub struct ProcfsCollector {
    root: PathBuf,
    dir: OwnedFd,
    dents: Vec<u8>,
    pids: Vec<u32>,
    /// `PID/FILE`, relative to `dir`.
    path: String,
    /// For `stat`.
    stat_buf: Vec<u8>,
    /// For `status` and `cmdline`.
    read_buf: Vec<u8>,
    /// Boxed, as the scanner's tracker is: a table of inline entries
    /// carries its spare capacity (and two tables while growing) at their
    /// size.
    known: HashMap<u32, Box<Known>>,
    /// The identities the last scan read (new instances and execs), by
    /// pid, until [`Collector::identity`] takes them.
    fresh: Vec<(u32, Option<Identity>)>,
    exec_changes: Vec<u32>,
    /// `stat` descriptors kept open (an upper bound between scans, exact
    /// after each), and the most that may be.
    held_fds: usize,
    max_held_fds: usize,
    scan: u64,
    last_scan: Option<Instant>,
    clock_ticks: u64,
    page_size: u64,
    boot_time: u64,
    max_cpu_percent: f32,
}

impl std::fmt::Debug for ProcfsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcfsCollector")
            .field("root", &self.root)
            .field("processes", &self.known.len())
            .field("scan", &self.scan)
            .finish_non_exhaustive()
    }
}

impl ProcfsCollector {
    /// The collector over `/proc`.
    pub fn new() -> Result<ProcfsCollector, Error> {
        ProcfsCollector::at(Path::new("/proc"))
    }

    /// The collector over a procfs mounted at `root` (for instance the
    /// host's, bind-mounted into a container).
    pub fn at(root: &Path) -> Result<ProcfsCollector, Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Collector(format!("{what} {}: {e}", root.display()))
        };
        let dir = open_dir(root).map_err(|e| fail("cannot open", &e))?;
        let stat = std::fs::read(root.join("stat")).map_err(|e| fail("cannot read stat in", &e))?;
        let (boot_time, cpus) =
            procfs::parse_proc_stat(&stat).ok_or_else(|| fail("no btime in the stat of", &""))?;
        Ok(ProcfsCollector {
            root: root.to_path_buf(),
            dir,
            dents: Vec::with_capacity(DENTS_BYTES),
            pids: Vec::new(),
            path: String::with_capacity(32),
            stat_buf: vec![0; STAT_BYTES],
            read_buf: vec![0; STATUS_BYTES],
            known: HashMap::new(),
            fresh: Vec::new(),
            exec_changes: Vec::new(),
            held_fds: 0,
            max_held_fds: (descriptor_budget() / 2).min(MAX_KEPT_STAT),
            scan: 0,
            last_scan: None,
            clock_ticks: rustix::param::clock_ticks_per_second().max(1),
            page_size: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
            boot_time,
            max_cpu_percent: cpus.max(1) as f32 * 100.0,
        })
    }

    /// Lists the pids in the directory, in the order it gives them
    /// (ascending for procfs).
    fn list_pids(&mut self) -> io::Result<()> {
        self.pids.clear();
        if rustix::fs::seek(&self.dir, SeekFrom::Start(0)).is_err() {
            self.dir = open_dir(&self.root)?;
        }
        let mut entries = RawDir::new(&self.dir, self.dents.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            let entry = entry?;
            if let Some(pid) = procfs::parse_u32(entry.file_name().to_bytes()) {
                self.pids.push(pid);
            }
        }
        Ok(())
    }

    /// [`Collector::collect`] as of `now`.
    fn collect_at(&mut self, now: Instant, out: &mut Vec<Observed>, counters: &mut ScanCounters) {
        self.scan += 1;
        self.exec_changes.clear();
        // After a snapshot this held every process: do not keep that much.
        self.fresh.clear();
        self.fresh.shrink_to(FRESH_KEPT);
        let elapsed = self
            .last_scan
            .map(|last| now.saturating_duration_since(last).as_secs_f32())
            .filter(|s| *s > 0.0);
        self.last_scan = Some(now);
        if let Err(e) = self.list_pids() {
            tracing::warn!(root = %self.root.display(), error = %e, "cannot list processes");
        }
        out.reserve(self.pids.len());

        let ProcfsCollector {
            dir,
            pids,
            path,
            stat_buf,
            read_buf,
            known,
            fresh,
            exec_changes,
            held_fds,
            max_held_fds,
            scan,
            clock_ticks,
            page_size,
            boot_time,
            max_cpu_percent,
            ..
        } = self;
        let scan = *scan;
        for &pid in pids.iter() {
            // Through the descriptor kept from an earlier scan; else (the
            // first time, no budget left, or its process gone and the pid
            // maybe reused) opened now, and kept if the budget allows.
            let mut stat_fd = known.get_mut(&pid).and_then(|k| k.stat_fd.take());
            let mut n = None;
            if let Some(fd) = &stat_fd {
                match pread_file(fd, stat_buf, STAT_BYTES) {
                    Ok(len) if len > 0 => n = Some(len),
                    _ => {
                        stat_fd = None;
                        *held_fds = held_fds.saturating_sub(1);
                    }
                }
            }
            let n = match n {
                Some(n) => n,
                None => match open_file(dir, path, pid, "stat")
                    .and_then(|fd| Ok((pread_file(&fd, stat_buf, STAT_BYTES)?, fd)))
                {
                    Ok((n, fd)) => {
                        if *held_fds < *max_held_fds {
                            stat_fd = Some(fd);
                            *held_fds += 1;
                        }
                        n
                    }
                    Err(e) if procfs::is_gone(&e) => {
                        counters.vanished += 1;
                        continue;
                    }
                    Err(_) => {
                        counters.unreadable += 1;
                        continue;
                    }
                },
            };
            let Some(stat) = procfs::parse_stat(&stat_buf[..n]) else {
                counters.unreadable += 1;
                continue;
            };
            let cpu_ticks = stat.utime.saturating_add(stat.stime);
            let mut cpu_percent = 0.0;
            let entry = match known.get_mut(&pid) {
                Some(k) if k.start_ticks == stat.start_ticks => {
                    if let Some(secs) = elapsed {
                        let ticks = cpu_ticks.saturating_sub(k.cpu_ticks) as f32;
                        cpu_percent =
                            (ticks / *clock_ticks as f32 / secs * 100.0).min(*max_cpu_percent);
                    }
                    if exec_changed(k, &stat) {
                        match read_identity(
                            dir,
                            path,
                            read_buf,
                            pid,
                            stat.comm,
                            stat.kernel_thread(),
                        ) {
                            Ok(identity) => {
                                k.uid = identity.uid;
                                fresh.push((pid, Some(identity)));
                            }
                            Err(Gone) => {
                                counters.vanished += 1;
                                continue;
                            }
                        }
                        k.comm.clear();
                        k.comm.extend_from_slice(stat.comm);
                        exec_changes.push(pid);
                    } else if k.uid.is_none() {
                        // Read again until it can be, as the portable
                        // collector does.
                        match read_uid(dir, path, read_buf, pid) {
                            Ok(uid) => k.uid = uid,
                            Err(Gone) => {
                                counters.vanished += 1;
                                continue;
                            }
                        }
                    }
                    if stat.exec_signature().is_some() {
                        k.exec_signature = stat.exec_signature();
                    }
                    k
                }
                _ => {
                    // New, or the pid was reused by a new instance.
                    let kernel_thread = stat.kernel_thread();
                    let identity =
                        match read_identity(dir, path, read_buf, pid, stat.comm, kernel_thread) {
                            Ok(identity) => identity,
                            Err(Gone) => {
                                counters.vanished += 1;
                                continue;
                            }
                        };
                    let known_now = Box::new(Known {
                        start_ticks: stat.start_ticks,
                        cpu_ticks,
                        seen: scan,
                        comm: stat.comm.to_vec(),
                        exec_signature: stat.exec_signature(),
                        kernel_thread,
                        uid: identity.uid,
                        stat_fd: None,
                    });
                    fresh.push((pid, Some(identity)));
                    match known.entry(pid) {
                        std::collections::hash_map::Entry::Occupied(mut o) => {
                            o.insert(known_now);
                            o.into_mut()
                        }
                        std::collections::hash_map::Entry::Vacant(v) => v.insert(known_now),
                    }
                }
            };
            entry.cpu_ticks = cpu_ticks;
            entry.seen = scan;
            entry.stat_fd = stat_fd;
            if entry.uid.is_none() {
                counters.unreadable += 1;
            }
            out.push(Observed {
                pid,
                ppid: stat.ppid,
                start_time: i64::try_from(
                    boot_time.saturating_add(stat.start_ticks / *clock_ticks),
                )
                .unwrap_or(i64::MAX),
                status: procfs::state_code(stat.state),
                threads: stat.num_threads,
                rss_bytes: stat.rss_pages.saturating_mul(*page_size),
                vms_bytes: stat.vsize,
                cpu_percent,
                kernel_thread: stat.kernel_thread(),
            });
        }
        let mut held = 0;
        known.retain(|_, k| {
            let live = k.seen == scan;
            held += usize::from(live && k.stat_fd.is_some());
            live
        });
        *held_fds = held;
        if !fresh.is_sorted_by_key(|f| f.0) {
            fresh.sort_unstable_by_key(|f| f.0);
        }
        if !out.is_sorted_by_key(|o| o.pid) {
            out.sort_unstable_by_key(|o| o.pid);
        }
    }
}

impl Collector for ProcfsCollector {
    fn collect(&mut self, out: &mut Vec<Observed>, counters: &mut ScanCounters) {
        self.collect_at(Instant::now(), out, counters);
    }

    /// Hands over what the last scan read; asked again (or for an instance
    /// read in an earlier scan), reads `/proc` again.
    fn identity(&mut self, pid: u32) -> Option<Identity> {
        let k = self.known.get(&pid)?;
        if let Ok(i) = self.fresh.binary_search_by_key(&pid, |f| f.0)
            && let Some(identity) = self.fresh[i].1.take()
        {
            return Some(identity);
        }
        read_identity(
            &self.dir,
            &mut self.path,
            &mut self.read_buf,
            pid,
            &k.comm,
            k.kernel_thread,
        )
        .ok()
    }

    fn exec_changes(&self) -> &[u32] {
        &self.exec_changes
    }
}

/// Whether a known instance exec'd, judging by its `stat` (see the module
/// docs). A process without an address space (a zombie, one exiting) shows
/// no mapping, which is not a change.
fn exec_changed(known: &Known, stat: &Stat<'_>) -> bool {
    if stat.kernel_thread() {
        return false;
    }
    if known.comm != stat.comm {
        return true;
    }
    matches!(
        (known.exec_signature, stat.exec_signature()),
        (Some(before), Some(now)) if before != now
    )
}

/// The process went away while it was read.
#[derive(Debug)]
struct Gone;

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens `PID/FILE` under `dir` for reading.
fn open_file(dir: &OwnedFd, path: &mut String, pid: u32, file: &str) -> io::Result<OwnedFd> {
    path.clear();
    let _ = write!(path, "{pid}/{file}");
    rustix::fs::openat(
        dir,
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Reads `PID/FILE` under `dir` into `buf` (see [`pread_file`]).
fn read_file(
    dir: &OwnedFd,
    path: &mut String,
    pid: u32,
    file: &str,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<usize> {
    pread_file(&open_file(dir, path, pid, file)?, buf, limit)
}

/// Reads the file `fd` from its start into `buf` (kept zero-filled to its
/// length, grown up to `limit`); returns the number of bytes read. procfs
/// generates the file afresh for a read at offset 0, so a descriptor kept
/// open reads the current state every time.
///
/// A short read ends the file: procfs hands out the whole of a file it has
/// generated to a large enough buffer, so this saves the read that would
/// return 0.
fn pread_file(fd: &OwnedFd, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= limit {
                break;
            }
            buf.resize(buf.len().saturating_mul(2).clamp(64, limit), 0);
        }
        match rustix::io::pread(fd, &mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled < buf.len() {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// Most `stat` files kept open. Each one read holds kernel memory charged
/// to procmond's cgroup (about 2.2 KiB measured: 22 MB for 9,744 of them),
/// which `MemoryMax` counts and RSS does not show; past this many,
/// processes are read with an `openat` per scan.
const MAX_KEPT_STAT: usize = 16_384;

/// Descriptors left for everything else procmond opens (its logs, the
/// socket, executables being hashed, directories read for enrichment).
const FD_RESERVE: u64 = 512;

/// How many descriptors procmond may keep open for reading processes: the
/// soft `RLIMIT_NOFILE`, raised to the hard limit first, less
/// [`FD_RESERVE`]. Half go to `stat` files (here), half to descriptor
/// directories (`enrich::fds`). At the usual hard limits (524,288 under
/// systemd) that covers every process; past it the rest are opened at each
/// scan, as without a budget.
pub(crate) fn descriptor_budget() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // `None` is no limit.
    let below_hard = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let soft = limit.current.unwrap_or(u64::MAX);
    usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
}

/// The real uid from `status`; `None` when it cannot be read.
fn read_uid(
    dir: &OwnedFd,
    path: &mut String,
    buf: &mut Vec<u8>,
    pid: u32,
) -> Result<Option<u32>, Gone> {
    match read_file(dir, path, pid, "status", buf, STATUS_BYTES) {
        Ok(n) => Ok(procfs::status_uid(&buf[..n])),
        Err(e) if procfs::is_gone(&e) => Err(Gone),
        Err(_) => Ok(None),
    }
}

/// The full read of a new instance (or one that exec'd): the name (`comm`
/// from its `stat`), the uid, the command line and the executable.
fn read_identity(
    dir: &OwnedFd,
    path: &mut String,
    buf: &mut Vec<u8>,
    pid: u32,
    comm: &[u8],
    kernel_thread: bool,
) -> Result<Identity, Gone> {
    let uid = read_uid(dir, path, buf, pid)?;
    let name = String::from_utf8_lossy(comm).into_owned();
    if kernel_thread {
        // No address space: no command line and no executable.
        return Ok(Identity {
            name,
            exe: None,
            cmdline: Vec::new(),
            uid,
        });
    }
    let cmdline = match read_file(dir, path, pid, "cmdline", buf, CMDLINE_BYTES) {
        Ok(n) => crate::collect::bounded_cmdline(
            buf[..n]
                .split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy),
        ),
        Err(e) if procfs::is_gone(&e) => return Err(Gone),
        Err(_) => Vec::new(),
    };
    path.clear();
    let _ = write!(path, "{pid}/exe");
    let exe = rustix::fs::readlinkat(dir, path.as_str(), Vec::new())
        .ok()
        .map(|target| {
            let mut bytes = target.into_bytes();
            if bytes.ends_with(b" (deleted)") {
                bytes.truncate(bytes.len() - b" (deleted)".len());
            }
            PathBuf::from(std::ffi::OsString::from_vec(bytes))
        });
    Ok(Identity {
        name,
        exe,
        cmdline,
        uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A procfs-like tree in a temp dir: `stat` with a boot time and two
    /// CPUs, and one directory per process.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    /// What a fixture process shows.
    struct Proc<'a> {
        pid: u32,
        comm: &'a str,
        start_ticks: u64,
        cpu_ticks: u64,
        code: u64,
        cmdline: &'a [u8],
        exe: &'a str,
        uid: u32,
    }

    impl Default for Proc<'_> {
        fn default() -> Self {
            Proc {
                pid: 100,
                comm: "sleep",
                start_ticks: 5_000,
                cpu_ticks: 0,
                code: 0x5000_0000,
                cmdline: b"sleep\x0030\x00",
                exe: "/usr/bin/sleep",
                uid: 1000,
            }
        }
    }

    const BOOT: u64 = 1_790_000_000;

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(
                dir.path().join("stat"),
                format!("cpu  1 2 3\ncpu0 1 2 3\ncpu1 1 2 3\nbtime {BOOT}\n"),
            )
            .expect("write stat");
            std::fs::create_dir(dir.path().join("self")).expect("mkdir self");
            Fixture { dir }
        }

        fn put(&self, p: &Proc<'_>) {
            let d = self.dir.path().join(p.pid.to_string());
            std::fs::create_dir_all(&d).expect("mkdir pid");
            let stat = format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 {utime} 0 0 0 20 0 2 0 \
                 {start} 8192000 300 18446744073709551615 {code} {end} 140000 0 0 0 0 0 0 0 0 0 17 0 0 0\n",
                pid = p.pid,
                comm = p.comm,
                utime = p.cpu_ticks,
                start = p.start_ticks,
                code = p.code,
                end = p.code + 0x1000,
            );
            std::fs::write(d.join("stat"), stat).expect("write stat");
            std::fs::write(
                d.join("status"),
                format!("Name:\t{}\nUid:\t{u}\t{u}\t{u}\t{u}\n", p.comm, u = p.uid),
            )
            .expect("write status");
            std::fs::write(d.join("cmdline"), p.cmdline).expect("write cmdline");
            let _ = std::fs::remove_file(d.join("exe"));
            std::os::unix::fs::symlink(p.exe, d.join("exe")).expect("symlink exe");
        }

        fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.dir.path().join(pid.to_string())).expect("rm pid");
        }

        fn collector(&self) -> ProcfsCollector {
            ProcfsCollector::at(self.dir.path()).expect("collector")
        }
    }

    fn collect(c: &mut ProcfsCollector, now: Instant) -> (Vec<Observed>, ScanCounters) {
        let mut out = Vec::new();
        let mut counters = ScanCounters::default();
        c.collect_at(now, &mut out, &mut counters);
        (out, counters)
    }

    #[test]
    fn reads_a_process_once_and_samples_it_after() {
        let f = Fixture::new();
        f.put(&Proc::default());
        f.put(&Proc {
            pid: 7,
            comm: "(a) b)",
            cmdline: b"a\x00\x00b c\x00",
            exe: "/opt/odd name (x) (deleted)",
            ..Proc::default()
        });
        let mut c = f.collector();
        let t0 = Instant::now();
        let (out, counters) = collect(&mut c, t0);
        assert_eq!(counters, ScanCounters::default());
        assert_eq!(out.iter().map(|o| o.pid).collect::<Vec<_>>(), vec![7, 100]);
        let o = &out[1];
        let ticks = c.clock_ticks;
        assert_eq!(o.start_time, (BOOT + 5_000 / ticks) as i64);
        assert_eq!((o.ppid, o.threads, o.status), (1, 2, "S"));
        assert_eq!(o.rss_bytes, 300 * c.page_size);
        assert_eq!(o.vms_bytes, 8_192_000);
        assert_eq!(o.cpu_percent, 0.0);
        assert!(!o.kernel_thread);

        let odd = c.identity(7).expect("identity");
        assert_eq!(odd.name, "(a) b)");
        assert_eq!(odd.cmdline, vec!["a".to_owned(), "b c".to_owned()]);
        assert_eq!(odd.exe, Some(PathBuf::from("/opt/odd name (x)")));
        assert_eq!(odd.uid, Some(1000));
        let first = c.identity(100).expect("identity");
        assert_eq!(first.cmdline, vec!["sleep", "30"]);

        // Steady state: only `stat` is read. A changed command line is not
        // seen (it is not read), CPU time is.
        f.put(&Proc {
            cpu_ticks: ticks / 2,
            cmdline: b"changed\x00",
            ..Proc::default()
        });
        let (out, _) = collect(&mut c, t0 + Duration::from_secs(1));
        let o = out.iter().find(|o| o.pid == 100).expect("listed");
        assert!((o.cpu_percent - 50.0).abs() < 0.01, "{}", o.cpu_percent);
        assert!(c.fresh.is_empty(), "no identity read: {:?}", c.fresh);
        assert!(c.exec_changes().is_empty());
        // Asked again after handing it over, the collector reads it again.
        assert_eq!(c.identity(100).expect("known").cmdline, vec!["changed"]);
        assert!(c.identity(12345).is_none(), "not listed");

        // CPU % is capped at 100 per CPU.
        f.put(&Proc {
            cpu_ticks: ticks * 50,
            ..Proc::default()
        });
        let (out, _) = collect(&mut c, t0 + Duration::from_secs(2));
        let o = out.iter().find(|o| o.pid == 100).expect("listed");
        assert_eq!(o.cpu_percent, 200.0);

        f.remove(7);
        let (out, _) = collect(&mut c, t0 + Duration::from_secs(3));
        assert_eq!(out.len(), 1);
        assert_eq!(c.identity(7), None);
    }

    #[test]
    fn a_reused_pid_is_a_new_instance() {
        let f = Fixture::new();
        f.put(&Proc::default());
        let mut c = f.collector();
        let t0 = Instant::now();
        collect(&mut c, t0);
        f.put(&Proc {
            start_ticks: 90_000,
            comm: "sleep",
            cmdline: b"sleep\x0099\x00",
            exe: "/tmp/other sleep",
            uid: 0,
            cpu_ticks: 1_000_000,
            ..Proc::default()
        });
        let (out, _) = collect(&mut c, t0 + Duration::from_secs(1));
        assert_eq!(out[0].start_time, (BOOT + 90_000 / c.clock_ticks) as i64);
        // Not a delta against the old instance's CPU time.
        assert_eq!(out[0].cpu_percent, 0.0);
        let id = c.identity(100).expect("identity");
        assert_eq!(id.cmdline, vec!["sleep", "99"]);
        assert_eq!(id.exe, Some(PathBuf::from("/tmp/other sleep")));
        assert_eq!(id.uid, Some(0));
        // A new instance, not an exec.
        assert!(c.exec_changes().is_empty());
    }

    #[test]
    fn an_exec_is_detected_and_read_again() {
        let f = Fixture::new();
        f.put(&Proc::default());
        let mut c = f.collector();
        let t0 = Instant::now();
        collect(&mut c, t0);

        // exec of another program: new comm.
        f.put(&Proc {
            comm: "python3",
            code: 0x6000_0000,
            cmdline: b"python3\x00-c\x00pass\x00",
            exe: "/usr/bin/python3.12",
            ..Proc::default()
        });
        let (out, _) = collect(&mut c, t0 + Duration::from_secs(1));
        assert_eq!(out[0].start_time, (BOOT + 5_000 / c.clock_ticks) as i64);
        assert_eq!(c.exec_changes(), &[100]);
        let id = c.identity(100).expect("identity");
        assert_eq!(id.name, "python3");
        assert_eq!(id.cmdline, vec!["python3", "-c", "pass"]);
        assert_eq!(id.exe, Some(PathBuf::from("/usr/bin/python3.12")));

        let _ = collect(&mut c, t0 + Duration::from_secs(2));
        assert!(c.exec_changes().is_empty(), "reported once");

        // exec of the same program again: same comm, new mapping.
        f.put(&Proc {
            comm: "python3",
            code: 0x7000_0000,
            cmdline: b"python3\x00again\x00",
            exe: "/usr/bin/python3.12",
            ..Proc::default()
        });
        let _ = collect(&mut c, t0 + Duration::from_secs(3));
        assert_eq!(c.exec_changes(), &[100]);
        assert_eq!(
            c.identity(100).expect("identity").cmdline,
            vec!["python3", "again"]
        );

        // A zombie shows no mapping: not an exec.
        f.put(&Proc {
            comm: "python3",
            code: 0,
            ..Proc::default()
        });
        let _ = collect(&mut c, t0 + Duration::from_secs(4));
        assert!(c.exec_changes().is_empty());
    }

    #[test]
    fn kernel_threads_keep_their_first_name() {
        let f = Fixture::new();
        let d = f.dir.path().join("3");
        std::fs::create_dir(&d).expect("mkdir");
        let kworker = |name: &str| {
            format!(
                "3 ({name}) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 0 -20 1 0 \
                 40 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0\n"
            )
        };
        std::fs::write(d.join("stat"), kworker("kworker/0:1-events")).expect("stat");
        std::fs::write(d.join("status"), "Name:\tk\nUid:\t0\t0\t0\t0\n").expect("status");
        let mut c = f.collector();
        let t0 = Instant::now();
        let (out, _) = collect(&mut c, t0);
        assert!(out[0].kernel_thread);
        assert_eq!(out[0].status, "I");
        std::fs::write(d.join("stat"), kworker("kworker/0:1-mm_percpu_wq")).expect("stat");
        let _ = collect(&mut c, t0 + Duration::from_secs(1));
        assert!(c.exec_changes().is_empty());
        let id = c.identity(3).expect("identity");
        assert_eq!(id.name, "kworker/0:1-events");
        assert_eq!((id.exe, id.cmdline, id.uid), (None, Vec::new(), Some(0)));
    }

    #[test]
    fn unreadable_and_malformed_files_are_counted() {
        let f = Fixture::new();
        f.put(&Proc::default());
        f.put(&Proc {
            pid: 200,
            ..Proc::default()
        });
        f.put(&Proc {
            pid: 300,
            ..Proc::default()
        });
        f.put(&Proc {
            pid: 400,
            ..Proc::default()
        });
        let root = f.dir.path();
        std::fs::write(root.join("200/stat"), b"200 (x) S 1 2\n").expect("short stat");
        std::fs::write(root.join("300/status"), b"Name:\tx\n").expect("no Uid");
        std::fs::remove_file(root.join("400/stat")).expect("rm stat");
        // Not processes.
        std::fs::create_dir(root.join("sys")).expect("mkdir");
        std::fs::create_dir(root.join("99999999999")).expect("mkdir");
        let mut c = f.collector();
        let (out, counters) = collect(&mut c, Instant::now());
        assert_eq!(
            out.iter().map(|o| o.pid).collect::<Vec<_>>(),
            vec![100, 300]
        );
        assert_eq!(
            counters,
            ScanCounters {
                vanished: 1,
                unreadable: 2,
            }
        );
        assert_eq!(c.identity(300).expect("listed").uid, None);
        // The uid is read again until it can be.
        f.put(&Proc {
            pid: 300,
            ..Proc::default()
        });
        let (_, counters) = collect(&mut c, Instant::now());
        assert_eq!(counters.unreadable, 1);
        assert_eq!(c.identity(300).expect("listed").uid, Some(1000));
    }

    #[test]
    fn long_command_lines_are_bounded() {
        let f = Fixture::new();
        let mut cmdline = b"prog\x00".to_vec();
        cmdline.extend(std::iter::repeat_n(b'x', 3 * MAX_CMDLINE_BYTES));
        f.put(&Proc {
            cmdline: &cmdline,
            ..Proc::default()
        });
        let mut c = f.collector();
        collect(&mut c, Instant::now());
        let id = c.identity(100).expect("identity");
        assert_eq!(id.cmdline.len(), 2);
        assert_eq!(
            id.cmdline.iter().map(String::len).sum::<usize>(),
            MAX_CMDLINE_BYTES
        );
    }

    #[test]
    fn this_process_on_the_real_proc() {
        let mut c = ProcfsCollector::new().expect("/proc");
        let (out, _) = collect(&mut c, Instant::now());
        let me = std::process::id();
        let mine = out.iter().find(|o| o.pid == me).expect("own pid listed");
        assert!(mine.threads >= 1 && mine.rss_bytes > 0 && !mine.kernel_thread);
        assert!(out.windows(2).all(|w| w[0].pid < w[1].pid));
        let id = c.identity(me).expect("identity");
        assert_eq!(id.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(id.exe.as_deref(), std::env::current_exe().ok().as_deref(),);
        // The handle is reused: a second listing sees the same processes.
        let (again, _) = collect(&mut c, Instant::now());
        assert!(again.iter().any(|o| o.pid == me));
        assert!(again.iter().any(|o| o.pid == 1));
    }

    #[test]
    fn kept_stat_descriptors_follow_a_process_until_it_is_gone() {
        use crate::testutil::{Reaped, copy_sleep, spawn_retrying};
        let tmp = tempfile::tempdir().expect("temp dir");
        let exe = copy_sleep(tmp.path(), "held-stat");
        for budget in [usize::MAX, 0] {
            let mut c = ProcfsCollector::new().expect("/proc");
            c.max_held_fds = budget;
            let mut child = Reaped(spawn_retrying(&exe, &["30"]));
            let pid = child.0.id();
            let (first, _) = collect(&mut c, Instant::now());
            let start = first.iter().find(|o| o.pid == pid).expect("listed");
            let kept = c.known.get(&pid).is_some_and(|k| k.stat_fd.is_some());
            assert_eq!(kept, budget > 0, "budget {budget}");
            assert!(c.held_fds <= budget);

            // Read again through the kept descriptor: the same instance.
            let (second, _) = collect(&mut c, Instant::now());
            let again = second.iter().find(|o| o.pid == pid).expect("listed");
            assert_eq!(again.start_time, start.start_time);

            // Killed and not yet reaped it is a zombie; reaped, it is gone
            // and its descriptor is closed.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill");
            let mut zombie = false;
            for _ in 0..200 {
                let (out, _) = collect(&mut c, Instant::now());
                if out.iter().any(|o| o.pid == pid && o.status == "Z") {
                    zombie = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(zombie, "the killed child shows as a zombie");
            child.0.wait().expect("reap");
            let (out, _) = collect(&mut c, Instant::now());
            assert!(out.iter().all(|o| o.pid != pid), "gone after reaping");
            assert!(!c.known.contains_key(&pid));
            let held = c.known.values().filter(|k| k.stat_fd.is_some()).count();
            assert_eq!(c.held_fds, held, "the count is exact after a scan");
        }
    }
}
