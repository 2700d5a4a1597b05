//! Open file descriptor counts, from `/proc/PID/fd`.
//!
//! Since Linux 6.2 the size that `stat` reports for a `/proc/PID/fd`
//! directory is the number of descriptors the process has open: one system
//! call, whatever the count, and no permission beyond seeing `/proc/PID`.
//! On older kernels the size is 0 and the directory's entries are counted
//! instead, which needs ptrace-read access to the process (procmond's
//! `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`): without it the count of
//! another user's process is `None`, not an error.

#[cfg(target_os = "linux")]
use std::collections::HashMap;
#[cfg(target_os = "linux")]
use std::fmt::Write as _;
#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;
use std::path::Path;

/// Counts the open descriptors of processes.
#[derive(Debug)]
pub struct FdCounter {
    /// The kernel reports the count as the directory's size.
    size_is_count: bool,
    /// `/proc`, and `PID/fd` under it, when counting by size.
    #[cfg(target_os = "linux")]
    proc_dir: Option<OwnedFd>,
    #[cfg(target_os = "linux")]
    path: String,
    /// `/proc/PID/fd` of the instances counted in the last pass, kept
    /// open (`O_PATH`) while the budget allows: the next count is one
    /// `fstat`, without looking the path up again.
    #[cfg(target_os = "linux")]
    held: HashMap<u32, Held>,
    #[cfg(target_os = "linux")]
    max_held: usize,
    pass: u64,
}

#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Held {
    start_time: i64,
    /// `None`: over the budget; counted through the path.
    dir: Option<OwnedFd>,
    pass: u64,
}

impl FdCounter {
    /// Finds out whether this kernel reports the count as the size of
    /// `/proc/PID/fd`: this process holds a descriptor open while it asks.
    pub fn detect() -> FdCounter {
        let size_is_count = std::fs::File::open(super::PROC)
            .and_then(|_held| std::fs::metadata(Path::new(super::PROC).join("self/fd")))
            .is_ok_and(|m| m.is_dir() && m.len() > 0);
        FdCounter {
            size_is_count,
            #[cfg(target_os = "linux")]
            proc_dir: if size_is_count {
                rustix::fs::open(
                    super::PROC,
                    rustix::fs::OFlags::PATH
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ok()
            } else {
                None
            },
            #[cfg(target_os = "linux")]
            path: String::with_capacity(24),
            #[cfg(target_os = "linux")]
            held: HashMap::new(),
            #[cfg(target_os = "linux")]
            max_held: crate::collect::descriptor_budget() / 2,
            pass: 0,
        }
    }

    /// A counter that lists the directory, as on kernels before 6.2 (and
    /// for directories that are not procfs, in tests).
    pub fn listing() -> FdCounter {
        FdCounter {
            size_is_count: false,
            #[cfg(target_os = "linux")]
            proc_dir: None,
            #[cfg(target_os = "linux")]
            path: String::new(),
            #[cfg(target_os = "linux")]
            held: HashMap::new(),
            #[cfg(target_os = "linux")]
            max_held: 0,
            pass: 0,
        }
    }

    /// Whether counts come from the directory's size.
    pub fn uses_size(&self) -> bool {
        self.size_is_count
    }

    /// Open descriptors of the instance (`pid`, `start_time`); `None` when
    /// they cannot be read (the process exited, or belongs to another user
    /// and procmond lacks the privilege). Call [`end_pass`](Self::end_pass)
    /// after counting every live process.
    pub fn count(&mut self, pid: u32, start_time: i64) -> Option<u32> {
        #[cfg(target_os = "linux")]
        if let Some(proc_dir) = &self.proc_dir {
            let held = match self.held.get_mut(&pid) {
                Some(h) if h.start_time == start_time => h,
                _ => {
                    self.path.clear();
                    let _ = write!(self.path, "{pid}/fd");
                    let dir = (self.held.len() < self.max_held)
                        .then(|| {
                            rustix::fs::openat(
                                proc_dir,
                                self.path.as_str(),
                                rustix::fs::OFlags::PATH
                                    | rustix::fs::OFlags::DIRECTORY
                                    | rustix::fs::OFlags::CLOEXEC,
                                rustix::fs::Mode::empty(),
                            )
                            .ok()
                        })
                        .flatten();
                    self.held.insert(
                        pid,
                        Held {
                            start_time,
                            dir,
                            pass: self.pass,
                        },
                    );
                    self.held.get_mut(&pid)?
                }
            };
            held.pass = self.pass;
            let size = match &held.dir {
                Some(dir) => rustix::fs::fstat(dir).ok()?.st_size,
                None => {
                    self.path.clear();
                    let _ = write!(self.path, "{pid}/fd");
                    rustix::fs::statat(proc_dir, self.path.as_str(), rustix::fs::AtFlags::empty())
                        .ok()?
                        .st_size
                }
            };
            // 0 is also what a process without descriptors (a kernel
            // thread, a zombie) reports: the listing below tells.
            if size > 0 {
                return Some(u32::try_from(size).unwrap_or(u32::MAX));
            }
        }
        self.count_in(Path::new(super::PROC), pid)
    }

    /// Forgets the directories of instances not counted since the last
    /// call (they exited).
    pub fn end_pass(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let pass = self.pass;
            self.held.retain(|_, h| h.pass == pass);
        }
        self.pass += 1;
    }

    /// Open descriptors of `pid` under the proc root `root`, through the
    /// path.
    pub fn count_in(&self, root: &Path, pid: u32) -> Option<u32> {
        let dir = root.join(pid.to_string()).join("fd");
        if self.size_is_count {
            let meta = std::fs::metadata(&dir).ok()?;
            if meta.len() > 0 {
                return Some(u32::try_from(meta.len()).unwrap_or(u32::MAX));
            }
        }
        let mut n: u32 = 0;
        for entry in std::fs::read_dir(&dir).ok()? {
            if entry.is_ok() {
                n = n.saturating_add(1);
            }
        }
        Some(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn counts_entries_of_a_fixture_tree() {
        let root = tempfile::tempdir().unwrap();
        let fd = root.path().join("42/fd");
        std::fs::create_dir_all(&fd).unwrap();
        for (i, target) in ["/dev/null", "socket:[123]", "pipe:[9]"].iter().enumerate() {
            std::os::unix::fs::symlink(target, fd.join(i.to_string())).unwrap();
        }
        std::fs::create_dir_all(root.path().join("43/fd")).unwrap();
        let counter = FdCounter::listing();
        assert_eq!(counter.count_in(root.path(), 42), Some(3));
        assert_eq!(counter.count_in(root.path(), 43), Some(0));
        assert_eq!(counter.count_in(root.path(), 44), None, "no such process");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_unreadable_directory_is_none() {
        let root = tempfile::tempdir().unwrap();
        let fd = root.path().join("42/fd");
        std::fs::create_dir_all(&fd).unwrap();
        // A regular file where the directory should be: listing fails as
        // it would without permission.
        std::fs::remove_dir(&fd).unwrap();
        std::fs::write(&fd, "").unwrap();
        assert_eq!(FdCounter::listing().count_in(root.path(), 42), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn both_ways_agree_on_this_process() {
        let me = std::process::id();
        let extra: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let mut detected = FdCounter::detect();
        let by_size = detected.count(me, 0).unwrap();
        // Listing opens one descriptor of its own for the directory.
        let listed = FdCounter::listing().count(me, 0).unwrap();
        assert!(by_size >= 5 + 3, "{by_size}");
        if detected.uses_size() {
            // Other test threads may open and close files in between.
            assert!(listed.abs_diff(by_size) <= 16, "{listed} vs {by_size}");
        }
        drop(extra);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_kept_directory_counts_what_is_open_now() {
        let me = std::process::id();
        let mut counter = FdCounter::detect();
        if !counter.uses_size() {
            println!("skipped: this kernel does not report descriptor counts as sizes");
            return;
        }
        let before = counter.count(me, 7).unwrap();
        assert!(counter.held.get(&me).is_some_and(|h| h.dir.is_some()));
        let extra: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        // Through the kept directory: the new descriptors are counted
        // (other test threads open and close a few meanwhile).
        let with = counter.count(me, 7).unwrap();
        assert!(with >= before + 64 - 16, "{before} then {with}");
        drop(extra);
        counter.end_pass();
        // Another instance on the same pid is looked up again.
        counter.count(me, 8).unwrap();
        assert_eq!(counter.held.get(&me).map(|h| h.start_time), Some(8));
        // An instance not counted in a pass is forgotten at its end.
        counter.end_pass();
        counter.end_pass();
        assert!(counter.held.is_empty());
    }
}
