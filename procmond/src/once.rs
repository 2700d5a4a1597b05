//! `procmond --once`: one scan printed as JSON lines.

use std::io::{self, Write};
use std::time::Duration;

use sentineld_proto::v1::ProcessRecord;
use sentineld_proto::view::ProcessView;

use crate::collect::AnyCollector;
use crate::error::Error;
use crate::scanner::{ScanConfig, Scanner};

/// How long `--once` waits for executables to be hashed.
pub const ONCE_HASH_WAIT: Duration = Duration::from_secs(10);

/// Scans once and writes every process to `out` as one JSON object
/// ([`ProcessView`]) per line, by pid. A closed output (broken pipe) ends
/// the listing early and is not an error.
pub fn run_once(config: &ScanConfig, out: &mut dyn Write) -> Result<(), Error> {
    let mut scanner = Scanner::new(AnyCollector::open(config.collector)?, config.clone())?;
    // Two refreshes some time apart, so CPU usage is measured; hashing
    // starts with the first.
    scanner.scan(false, Duration::ZERO);
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    let scan = scanner.scan(true, ONCE_HASH_WAIT.max(config.hash_wait));
    write_views(&scan.started, out)
}

/// Writes each record as a JSON line.
pub fn write_views(records: &[ProcessRecord], out: &mut dyn Write) -> Result<(), Error> {
    match try_write(records, out) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::Output),
    }
}

fn try_write(records: &[ProcessRecord], out: &mut dyn Write) -> io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, &ProcessView::new(record, None))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentineld_proto::v1::{InstanceRef, Sample};

    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(nix::libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record(pid: u32) -> ProcessRecord {
        ProcessRecord {
            instance: Some(InstanceRef {
                pid,
                start_time: 1_790_000_000,
            }),
            name: "a \"quoted\" name".into(),
            sample: Some(Sample {
                threads: 3,
                status: "S".into(),
                ..Sample::default()
            }),
            ..ProcessRecord::default()
        }
    }

    #[test]
    fn one_json_object_per_line() {
        let mut out = Vec::new();
        write_views(&[record(1), record(2)], &mut out).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["pid"], 2);
        assert_eq!(lines[0]["name"], "a \"quoted\" name");
        assert_eq!(lines[0]["threads"], 3);
    }

    #[test]
    fn broken_pipe_is_not_an_error() {
        assert!(write_views(&[record(1)], &mut ClosedPipe).is_ok());
        assert!(matches!(
            write_views(&[record(1)], &mut Full),
            Err(Error::Output(_))
        ));
    }
}
