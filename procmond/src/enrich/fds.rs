//! Open file descriptor counts, from `/proc/PID/fd`.
//!
//! Since Linux 6.2 the size that `stat` reports for a `/proc/PID/fd`
//! directory is the number of descriptors the process has open: one system
//! call, whatever the count, and no permission beyond seeing `/proc/PID`.
//! On older kernels the size is 0 and the directory's entries are counted
//! instead, which needs ptrace-read access to the process (procmond's
//! `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`): without it the count of
//! another user's process is `None`, not an error.

use std::path::Path;

/// Counts the open descriptors of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdCounter {
    /// The kernel reports the count as the directory's size.
    size_is_count: bool,
}

impl FdCounter {
    /// Finds out whether this kernel reports the count as the size of
    /// `/proc/PID/fd`: this process holds a descriptor open while it asks.
    pub fn detect() -> FdCounter {
        let size_is_count = std::fs::File::open(super::PROC)
            .and_then(|_held| std::fs::metadata(Path::new(super::PROC).join("self/fd")))
            .is_ok_and(|m| m.is_dir() && m.len() > 0);
        FdCounter { size_is_count }
    }

    /// A counter that lists the directory, as on kernels before 6.2 (and
    /// for directories that are not procfs, in tests).
    pub fn listing() -> FdCounter {
        FdCounter {
            size_is_count: false,
        }
    }

    /// Whether counts come from the directory's size.
    pub fn uses_size(&self) -> bool {
        self.size_is_count
    }

    /// Open descriptors of `pid`; `None` when they cannot be read (the
    /// process exited, or belongs to another user and procmond lacks the
    /// privilege).
    pub fn count(&self, pid: u32) -> Option<u32> {
        self.count_in(Path::new(super::PROC), pid)
    }

    /// [`count`](FdCounter::count) under the proc root `root`.
    pub fn count_in(&self, root: &Path, pid: u32) -> Option<u32> {
        let dir = root.join(pid.to_string()).join("fd");
        if self.size_is_count {
            let meta = std::fs::metadata(&dir).ok()?;
            // 0 is also what a process without descriptors (a kernel
            // thread, a zombie) reports: the listing below tells.
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
        let detected = FdCounter::detect();
        let by_size = detected.count(me).unwrap();
        // Listing opens one descriptor of its own for the directory.
        let listed = FdCounter::listing().count(me).unwrap();
        assert!(by_size >= 5 + 3, "{by_size}");
        if detected.uses_size() {
            // Other test threads may open and close files in between.
            assert!(listed.abs_diff(by_size) <= 16, "{listed} vs {by_size}");
        }
        drop(extra);
    }
}
