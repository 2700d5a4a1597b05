//! Small readers of Linux `/proc` files and their errors.

use std::io;

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

    #[test]
    fn gone_errors() {
        assert!(is_gone(&io::Error::from(io::ErrorKind::NotFound)));
        assert!(is_gone(&io::Error::from_raw_os_error(nix::libc::ESRCH)));
        assert!(!is_gone(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }
}
