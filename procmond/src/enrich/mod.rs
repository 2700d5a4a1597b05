//! Enrichment: what procmond adds to the process table, each part bounded
//! in cost.
//!
//! | what | when | cost |
//! |---|---|---|
//! | container id ([`cgroup`]) | once per instance | one read of `/proc/PID/cgroup`, at most [`cgroup::MAX_CGROUP_BYTES`] |
//! | open file descriptors ([`fds`]) | every scan, every process | one `fstat` of `/proc/PID/fd`, kept open while the descriptor budget allows, else one `stat` of it (Linux 6.2+); else one directory listing |
//! | swapped-out memory ([`swap`]) | while the host has swap in use: every `--port-every`th scan and every snapshot, and once for each new instance; else 0 without reading | one read of `/proc/meminfo` per scan, then one of `/proc/PID/status` per process when due |
//! | listening ports ([`ports`]) | every `--port-every`th scan (default 5) and every snapshot, within a time budget | the socket tables once per pass and network namespace; then one `readlink` per descriptor of new processes only, or of every process when a running one started listening and every 12th pass (procmond's own, which listens on nothing, never) |
//!
//! User names come from the cached passwd lookup in `users.rs`.
//!
//! Nothing here fails a scan: a file that is missing, unreadable or
//! malformed gives no value (`None`, no container, no ports), never an
//! error or a panic.

pub mod cgroup;
pub mod fds;
pub mod ports;
pub mod swap;

use std::io::{self, Read as _};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::enrich::fds::FdCounter;
use crate::enrich::ports::{PortMapper, PortStats};
use crate::enrich::swap::SwapReader;

/// Where the kernel's process files are.
pub const PROC: &str = "/proc";

/// Default time one scan may spend finding listening ports.
pub const DEFAULT_PORT_BUDGET: Duration = Duration::from_millis(50);

/// By default listening ports are looked for at every 5th scan (and every
/// snapshot): a new listener shows within 5 scan intervals.
pub const DEFAULT_PORT_EVERY: u32 = 5;

/// The per-scan enrichment of processes, with its buffers.
#[derive(Debug)]
pub struct Enricher {
    fds: FdCounter,
    ports: PortMapper,
    port_budget: Duration,
    swap: SwapReader,
}

impl Enricher {
    /// An enricher of the processes under `/proc` that spends at most
    /// `port_budget` per scan on listening ports (zero: none are read).
    pub fn new(port_budget: Duration) -> Enricher {
        Enricher {
            fds: FdCounter::detect(),
            ports: PortMapper::new(),
            port_budget,
            swap: SwapReader::new(Path::new(PROC)),
        }
    }

    /// Whether the host has swap in use (unknown counts as in use, so
    /// swap is read rather than guessed).
    pub fn swap_in_use(&mut self) -> bool {
        self.swap.in_use().unwrap_or(true)
    }

    /// Bytes of `pid`'s memory swapped out, when readable.
    pub fn swapped(&mut self, pid: u32) -> Option<u64> {
        self.swap.swapped(pid)
    }

    /// Open descriptors of the instance (`pid`, `start_time`), when
    /// readable. [`end_fd_pass`](Self::end_fd_pass) after the last.
    pub fn open_fds(&mut self, pid: u32, start_time: i64) -> Option<u32> {
        self.fds.count(pid, start_time)
    }

    /// Ends a pass of [`open_fds`](Self::open_fds) over every live
    /// process: what the exited ones held is released.
    pub fn end_fd_pass(&mut self) {
        self.fds.end_pass();
    }

    /// Finds the listening ports of `procs` (pid and start time, sorted;
    /// no kernel threads) within the time budget: `found(i, ports)` for
    /// each `procs[i]` whose ports were read or changed.
    pub fn listening_ports(
        &mut self,
        procs: &[ports::Proc],
        found: impl FnMut(usize, &[u32]),
    ) -> PortStats {
        if self.port_budget.is_zero() {
            return PortStats::default();
        }
        self.ports
            .map(procs, Instant::now() + self.port_budget, found)
    }
}

/// Reads at most `max` bytes of `path` into `buf` (cleared first). When the
/// file is longer, the partial last line is dropped, so a cut never leaves
/// half a line that could parse as something else.
pub(crate) fn read_whole_lines(path: &Path, max: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let file = std::fs::File::open(path)?;
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    file.take(limit).read_to_end(buf)?;
    if buf.len() >= max {
        let keep = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(keep);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_only_when_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut buf = Vec::new();

        std::fs::write(&path, "ab\ncd\nef").unwrap();
        read_whole_lines(&path, 100, &mut buf).unwrap();
        assert_eq!(buf, b"ab\ncd\nef", "a short file is read whole");
        read_whole_lines(&path, 7, &mut buf).unwrap();
        assert_eq!(buf, b"ab\ncd\n", "a cut drops the partial line");
        read_whole_lines(&path, 6, &mut buf).unwrap();
        assert_eq!(buf, b"ab\ncd\n", "a cut right after a newline keeps it");
        read_whole_lines(&path, 2, &mut buf).unwrap();
        assert!(buf.is_empty(), "no whole line fits");
        assert!(read_whole_lines(&dir.path().join("missing"), 10, &mut buf).is_err());
    }
}
