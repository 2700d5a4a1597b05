//! Swapped-out memory per process: `VmSwap` of `/proc/PID/status`.
//!
//! Reading `status` costs about as much as the rest of a steady-state
//! scan of the process, so it is read only while the host has swap in use
//! (`SwapTotal` above `SwapFree` in `/proc/meminfo`, one small read per
//! scan). With no swap in use no process has anything swapped out, and
//! every process's swap is 0 without reading.

use std::path::{Path, PathBuf};

/// `status` is read up to here: `VmSwap` is in its first half.
const STATUS_BYTES: usize = 4096;
/// `/proc/meminfo` is about 1.5 KiB.
const MEMINFO_BYTES: usize = 8192;

/// Reads swap figures under a proc root, with one reused buffer.
#[derive(Debug)]
pub struct SwapReader {
    root: PathBuf,
    buf: Vec<u8>,
}

impl SwapReader {
    /// A reader of the processes under `root` (`/proc`, or a fixture).
    pub fn new(root: &Path) -> SwapReader {
        SwapReader {
            root: root.to_path_buf(),
            buf: Vec::with_capacity(STATUS_BYTES),
        }
    }

    /// Whether any swap is in use on the host; `None` when
    /// `/proc/meminfo` cannot be read or lacks the two lines.
    pub fn in_use(&mut self) -> Option<bool> {
        super::read_whole_lines(&self.root.join("meminfo"), MEMINFO_BYTES, &mut self.buf).ok()?;
        let total = kib_field(&self.buf, b"SwapTotal:")?;
        let free = kib_field(&self.buf, b"SwapFree:")?;
        Some(total > free)
    }

    /// Bytes of `pid`'s memory swapped out; `None` when its `status`
    /// cannot be read or has no `VmSwap` line (kernel threads).
    pub fn swapped(&mut self, pid: u32) -> Option<u64> {
        let path = self.root.join(pid.to_string()).join("status");
        super::read_whole_lines(&path, STATUS_BYTES, &mut self.buf).ok()?;
        kib_field(&self.buf, b"VmSwap:").map(|kib| kib.saturating_mul(1024))
    }
}

/// The value of a `Name:   123 kB` line, in KiB.
fn kib_field(text: &[u8], name: &[u8]) -> Option<u64> {
    let rest = text
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(name))?;
    let digits = rest
        .split(u8::is_ascii_whitespace)
        .find(|f| !f.is_empty())?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n\
        SwapCached:            0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n";

    #[test]
    fn swap_in_use_from_meminfo() {
        let root = tempfile::tempdir().unwrap();
        let mut reader = SwapReader::new(root.path());
        assert_eq!(reader.in_use(), None, "no meminfo");
        std::fs::write(root.path().join("meminfo"), MEMINFO).unwrap();
        assert_eq!(reader.in_use(), Some(false), "all swap free");
        std::fs::write(
            root.path().join("meminfo"),
            MEMINFO.replace("SwapFree:        2097148", "SwapFree:        2000000"),
        )
        .unwrap();
        assert_eq!(reader.in_use(), Some(true));
        std::fs::write(root.path().join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        assert_eq!(reader.in_use(), None, "no swap lines");
    }

    #[test]
    fn vm_swap_from_status() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("42");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("status"),
            "Name:\tpostgres\nUid:\t70\t70\t70\t70\nVmRSS:\t  1024 kB\nVmSwap:\t     12 kB\nThreads:\t1\n",
        )
        .unwrap();
        let mut reader = SwapReader::new(root.path());
        assert_eq!(reader.swapped(42), Some(12 * 1024));
        assert_eq!(reader.swapped(43), None, "no such process");
        std::fs::write(dir.join("status"), "Name:\tkthreadd\nVmSwap:\tlots kB\n").unwrap();
        assert_eq!(reader.swapped(42), None, "malformed");
        std::fs::write(dir.join("status"), "Name:\tkthreadd\n").unwrap();
        assert_eq!(reader.swapped(42), None, "kernel thread: no VmSwap");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_on_the_real_proc() {
        let mut reader = SwapReader::new(Path::new(super::super::PROC));
        assert!(reader.in_use().is_some());
        assert!(reader.swapped(std::process::id()).is_some());
    }
}
