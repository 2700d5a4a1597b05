//! Parsers of Linux `/proc` files and their errors.
//!
//! Everything here takes the bytes of a file and returns `None` for content
//! it does not understand; nothing read from `/proc` can make it panic.

use std::io;

/// The fields of a `/proc/PID/stat` line that procmond uses (see
/// `proc_pid_stat(5)`; field numbers are 1-based there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) struct Stat<'a> {
    /// Field 2, the command name without its parentheses (at most 64
    /// bytes, not necessarily UTF-8).
    pub comm: &'a [u8],
    /// Field 3, one letter.
    pub state: u8,
    /// Field 4.
    pub ppid: u32,
    /// Field 9, the kernel's `PF_*` flags.
    pub flags: u64,
    /// Fields 14 and 15, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Field 20.
    pub num_threads: u32,
    /// Field 22, clock ticks after boot.
    pub start_ticks: u64,
    /// Field 23, bytes.
    pub vsize: u64,
    /// Field 24, pages.
    pub rss_pages: u64,
    /// Fields 26 to 28: where the program's text and stack are mapped. They
    /// change only when the process execs; 0 without an address space, and
    /// 1, 1, 0 for a reader without ptrace access to the process.
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
}

/// The `PF_KTHREAD` flag of [`Stat::flags`]: a kernel thread.
pub(crate) const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat<'_> {
    pub(crate) fn kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Where the program is mapped, when the reader can see it: a signature
    /// that changes on every `exec` (for a position-independent executable
    /// or with address-space randomisation, even of the same program).
    pub(crate) fn exec_signature(&self) -> Option<[u64; 3]> {
        (self.start_code > 1).then_some([self.start_code, self.end_code, self.start_stack])
    }
}

/// Parses a `/proc/PID/stat` line.
///
/// The command name (field 2) is in parentheses and may itself hold spaces
/// and parentheses, so it runs from the first `(` to the *last* `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) fn parse_stat(line: &[u8]) -> Option<Stat<'_>> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    if close < open || parse_u32(line[..open].trim_ascii()).is_none() {
        return None;
    }
    let comm = &line[open + 1..close];
    // After the name: field 3 (state) is index 0, field N is index N - 3.
    let mut fields: [&[u8]; 26] = [&[]; 26];
    let mut n = 0;
    for field in line[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .take(fields.len())
    {
        fields[n] = field;
        n += 1;
    }
    if n < fields.len() {
        return None;
    }
    let &[state] = fields[0] else {
        return None;
    };
    Some(Stat {
        comm,
        state,
        ppid: parse_u32(fields[4 - 3])?,
        flags: parse_u64(fields[9 - 3])?,
        utime: parse_u64(fields[14 - 3])?,
        stime: parse_u64(fields[15 - 3])?,
        num_threads: parse_u32(fields[20 - 3])?,
        start_ticks: parse_u64(fields[22 - 3])?,
        vsize: parse_u64(fields[23 - 3])?,
        rss_pages: parse_u64(fields[24 - 3])?,
        start_code: parse_u64(fields[26 - 3])?,
        end_code: parse_u64(fields[27 - 3])?,
        start_stack: parse_u64(fields[28 - 3])?,
    })
}

/// An unsigned decimal number, nothing else (no sign, no spaces); `None`
/// when empty or too large.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

pub(crate) fn parse_u32(digits: &[u8]) -> Option<u32> {
    parse_u64(digits).and_then(|n| u32::try_from(n).ok())
}

/// The real uid on the `Uid:` line of `/proc/PID/status`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) fn status_uid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))?;
    line.split(u8::is_ascii_whitespace)
        .find(|f| !f.is_empty())
        .and_then(parse_u32)
}

/// Boot time (Unix seconds, the `btime` line) and the number of CPUs (the
/// `cpuN` lines) in `/proc/stat`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) fn parse_proc_stat(stat: &[u8]) -> Option<(u64, usize)> {
    let mut btime = None;
    let mut cpus = 0;
    for line in stat.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"btime") {
            btime = rest
                .split(u8::is_ascii_whitespace)
                .find(|f| !f.is_empty())
                .and_then(parse_u64);
        } else if line
            .strip_prefix(b"cpu")
            .and_then(|rest| rest.first())
            .is_some_and(u8::is_ascii_digit)
        {
            cpus += 1;
        }
    }
    Some((btime?, cpus))
}

/// The one-letter state `ps` shows for the state byte of a `stat` line,
/// the same letter the portable collector reports for it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) fn state_code(state: u8) -> &'static str {
    match state {
        b'R' => "R",
        b'S' => "S",
        b'I' => "I",
        b'D' => "D",
        b'Z' => "Z",
        b'T' => "T",
        b't' => "t",
        b'X' | b'x' => "X",
        b'K' => "K",
        b'W' => "W",
        b'P' => "P",
        _ => "?",
    }
}

/// Field 20 (`num_threads`) of a `/proc/PID/stat` line.
///
/// The command name (field 2) is in parentheses and may itself hold spaces
/// and parentheses, so the line is split at the *last* `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "Linux only"))]
pub(crate) fn stat_num_threads(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After the name: field 3 (state) is index 0, so field 20 is index 17.
    rest.split_ascii_whitespace().nth(17)?.parse().ok()
}

/// Whether a `/proc/PID/...` error means the process is gone.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_threads_survives_odd_names() {
        let tail = "S 1 2 3 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 7 0 12345 1000 200 0";
        for name in ["sleep", "odd name (x)", "(sd-pam)", ") ) (", "a b) c"] {
            let line = format!("4242 ({name}) {tail}\n");
            assert_eq!(stat_num_threads(line.as_bytes()), Some(7), "{name}");
        }
        assert_eq!(stat_num_threads(b"4242 (short) S 1 2"), None);
        assert_eq!(stat_num_threads(b"no parenthesis"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn num_threads_of_this_process() {
        let stat = std::fs::read("/proc/self/stat").expect("own stat");
        let n = stat_num_threads(&stat).expect("parsable");
        assert!(n >= 1);
    }

    /// A `stat` line of pid 4242 named `name`, with the fields after the
    /// name as on a 6.x kernel.
    fn stat_line(name: &str) -> String {
        format!(
            "4242 ({name}) S 1 4242 4242 0 -1 4194560 1184 0 0 0 17 5 0 0 20 0 3 0 \
             123456 9437184 768 18446744073709551615 94000000000000 94000000100000 \
             140000000000000 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn stat_fields() {
        let line = stat_line("sleep");
        let stat = parse_stat(line.as_bytes()).expect("parsable");
        assert_eq!(
            stat,
            Stat {
                comm: b"sleep",
                state: b'S',
                ppid: 1,
                flags: 4_194_560,
                utime: 17,
                stime: 5,
                num_threads: 3,
                start_ticks: 123_456,
                vsize: 9_437_184,
                rss_pages: 768,
                start_code: 94_000_000_000_000,
                end_code: 94_000_000_100_000,
                start_stack: 140_000_000_000_000,
            }
        );
        assert!(!stat.kernel_thread());
        assert_eq!(
            stat.exec_signature(),
            Some([94_000_000_000_000, 94_000_000_100_000, 140_000_000_000_000])
        );
    }

    #[test]
    fn stat_names_with_spaces_and_parentheses() {
        for name in [
            "(a) b)",
            "odd name (x)",
            "(sd-pam)",
            ") ) (",
            "a b) c",
            "",
            "((",
            "x\ny",
        ] {
            let line = stat_line(name);
            let stat = parse_stat(line.as_bytes()).expect(name);
            assert_eq!(stat.comm, name.as_bytes());
            assert_eq!((stat.ppid, stat.num_threads), (1, 3), "{name}");
        }
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 9 0 0 20 0 1 0 \
                       5 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let stat = parse_stat(kthread.as_bytes()).expect("kthread");
        assert!(stat.kernel_thread());
        assert_eq!(stat.exec_signature(), None);
        assert_eq!(stat.ppid, 0);
    }

    #[test]
    fn malformed_stat_lines_are_refused() {
        let good = stat_line("x");
        // Every cut before field 28 is refused, never a panic.
        let before_28 = good
            .match_indices(' ')
            .nth(26)
            .map(|(i, _)| i)
            .expect("28 fields");
        for cut in 0..=before_28 {
            assert_eq!(parse_stat(&good.as_bytes()[..cut]), None, "{cut}");
        }
        assert!(parse_stat(&good.as_bytes()[..before_28 + 2]).is_some());
        for bad in [
            "no parenthesis",
            ") 4242 (x S 1",
            "abc (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26",
            "",
        ] {
            assert_eq!(parse_stat(bad.as_bytes()), None, "{bad}");
        }
        let negative = good.replace(" 768 ", " -768 ");
        assert_eq!(parse_stat(negative.as_bytes()), None);
        let huge = good.replace(" 1 4242 ", " 99999999999 4242 ");
        assert_eq!(parse_stat(huge.as_bytes()), None);
        let long_state = good.replace(") S ", ") SS ");
        assert_eq!(parse_stat(long_state.as_bytes()), None);
        assert_eq!(parse_stat(&[0xff; 300]), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
    }

    #[test]
    fn uid_from_status() {
        let status = b"Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\n\
                       Uid:\t1000\t1001\t1002\t1003\nGid:\t10\t10\t10\t10\n";
        assert_eq!(status_uid(status), Some(1000));
        assert_eq!(status_uid(b"Name:\tx\nUid:\n"), None);
        assert_eq!(status_uid(b"Uid:\tme\n"), None);
        assert_eq!(status_uid(b""), None);
    }

    #[test]
    fn boot_time_and_cpus() {
        let stat =
            b"cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\nintr 5\nbtime 1790000000\nprocesses 9\n";
        assert_eq!(parse_proc_stat(stat), Some((1_790_000_000, 2)));
        assert_eq!(parse_proc_stat(b"cpu0 1\n"), None);
        assert_eq!(parse_proc_stat(b"btime x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn state_letters_match_the_portable_collector() {
        for b in 0..=u8::MAX {
            let portable = crate::collect::status_code(sysinfo::ProcessStatus::from(b));
            assert_eq!(state_code(b), portable, "{:?}", char::from(b));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_of_this_process() {
        let line = std::fs::read("/proc/self/stat").expect("own stat");
        let stat = parse_stat(&line).expect("parsable");
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw().cast_unsigned());
        assert!(stat.num_threads >= 1 && !stat.kernel_thread());
        assert!(stat.exec_signature().is_some());
    }

    #[test]
    fn gone_errors() {
        assert!(is_gone(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(is_gone(&io::Error::from_raw_os_error(nix::libc::ESRCH)));
        assert!(!is_gone(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }
}
