//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sentineld_common::layout::StateLayout;
use sentineld_common::time::parse_duration;

use crate::collect::CollectorKind;
use crate::daemon::DaemonConfig;
use crate::ledger::LedgerConfig;
use crate::scan::DEFAULT_CHUNK_RECORDS;
use crate::scanner::ScanConfig;
use crate::wal::{SyncPolicy, WalConfig};

/// SentinelD's privileged collector: enumerates and hashes processes and
/// sends them to sentinelagent over its local socket.
#[derive(Debug, Clone, Parser)]
#[command(name = "procmond", version)]
pub struct Args {
    /// State directory; the socket is DIR/sentineld.sock unless --socket is given.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The agent's socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Time between scans.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub scan_interval: Duration,
    /// Time between scans while the agent's credit is out (it is behind or
    /// stalled); what it cannot take yet waits in the write-ahead log.
    /// Default: 5 × --scan-interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub backpressure_interval: Option<Duration>,
    /// Uid the agent may run as (checked with SO_PEERCRED on connect);
    /// repeat for several. Default: procmond's own uid, root, and the owner
    /// of the directory that holds the socket.
    #[arg(long = "agent-uid", value_name = "UID")]
    pub agent_uids: Vec<u32>,
    /// Scan once, print one JSON object per process per line, and exit.
    #[arg(long)]
    pub once: bool,
    /// Largest executable hashed, in bytes (suffixes KiB, MiB, GiB allowed).
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_hash_size: u64,
    /// Largest number of records in one batch sent to the agent.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHUNK_RECORDS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub chunk_records: u32,
    /// Longest a scan waits for the hashes of new executables before sending
    /// them as pending.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    pub hash_wait: Duration,
    /// Most bytes per second read to hash new executables, e.g. `64MiB`
    /// (`/s` optional); 0 for no limit. Known files are never read again.
    #[arg(long, value_name = "BYTES/s", default_value = "256MiB", value_parser = parse_rate)]
    pub hash_rate_limit: u64,
    /// Process collector: `procfs` reads /proc directly, and only
    /// /proc/PID/stat for the processes it already knows (Linux);
    /// `sysinfo` is the portable one; `auto` is procfs on Linux (sysinfo if
    /// /proc cannot be opened) and sysinfo elsewhere.
    #[arg(long, value_enum, value_name = "auto|procfs|sysinfo", default_value_t = CollectorKind::Auto)]
    pub collector: CollectorKind,
    /// Longest one scan spends finding the processes' listening ports;
    /// those not reached keep their last ports and are counted. `off`
    /// turns port discovery off.
    #[arg(long, value_name = "DURATION|off", default_value = "50ms", value_parser = parse_budget)]
    pub port_budget: Duration,
    /// Look for listening ports at every Nth scan (and at every snapshot);
    /// the scans between keep the ports found last. 1: every scan.
    #[arg(long, value_name = "N", default_value_t = crate::enrich::DEFAULT_PORT_EVERY, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub port_every: u32,
    /// Stop when the parent process exits (used by sentinelagent when it
    /// supervises procmond).
    #[arg(long)]
    pub exit_with_parent: bool,
    /// Bound of the write-ahead log that holds what the agent has not
    /// acknowledged; when full, samples are dropped first (counted).
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub wal_max_bytes: u64,
    /// When the write-ahead log is flushed to disk: `every-batch`, or at
    /// most this long after an append (group commit), e.g. `100ms`.
    #[arg(long, value_name = "every-batch|DURATION", default_value = "100ms", value_parser = parse_sync)]
    pub wal_sync: SyncPolicy,
    /// Size past which the audit ledger's current segment (`ledger.log`)
    /// is sealed as `ledger.<first entry>.log` and a new one started
    /// (4KiB to 1GiB).
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_segment_bytes)]
    pub ledger_segment_bytes: u64,
    /// Sealed ledger segments kept; the oldest are removed past it (1 to
    /// 100000). With the defaults about 1 GiB, a month at a 1 s interval.
    #[arg(long, value_name = "N", default_value_t = crate::ledger::DEFAULT_KEEP as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ledger_keep: u32,
}

/// Smallest and largest ledger segment: one entry is ~430 bytes, and the
/// current segment is read whole when procmond starts.
const LEDGER_SEGMENT_BYTES: std::ops::RangeInclusive<u64> = 4096..=(1 << 30);

fn parse_segment_bytes(text: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if LEDGER_SEGMENT_BYTES.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "ledger segment of {n} bytes: use 4KiB to 1GiB (an entry is ~430 bytes, and procmond reads the current segment at start)"
        ))
    }
}

fn parse_budget(text: &str) -> Result<Duration, String> {
    if text == "off" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text).map_err(|e| format!("{e}; or off"))
}

fn parse_rate(text: &str) -> Result<u64, String> {
    parse_size(text.trim().strip_suffix("/s").unwrap_or(text))
}

fn parse_sync(text: &str) -> Result<SyncPolicy, String> {
    if text == "every-batch" {
        return Ok(SyncPolicy::EveryBatch);
    }
    parse_duration(text)
        .map(SyncPolicy::Interval)
        .map_err(|e| format!("{e}; or every-batch"))
}

impl Args {
    pub fn scan_config(&self) -> ScanConfig {
        ScanConfig {
            max_hash_size: self.max_hash_size,
            hash_wait: self.hash_wait,
            hash_rate: self.hash_rate_limit,
            collector: self.collector,
            port_budget: self.port_budget,
            port_every: self.port_every,
            ..ScanConfig::default()
        }
    }

    pub fn daemon_config(&self) -> DaemonConfig {
        let layout = StateLayout::resolve(self.state_dir.as_deref(), self.socket.as_deref());
        // Given --state-dir DIR, procmond's files live in DIR itself (the
        // agent passes its own DIR/procmond); otherwise beside the agent's.
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| sentineld_common::layout::default_state_dir().join("procmond"));
        DaemonConfig {
            state_dir,
            wal: WalConfig {
                max_bytes: self.wal_max_bytes,
                sync: self.wal_sync,
                ..WalConfig::default()
            },
            ledger: LedgerConfig {
                segment_bytes: self.ledger_segment_bytes,
                keep: self.ledger_keep as usize,
            },
            socket: layout.socket,
            scan_interval: self.scan_interval,
            backpressure_interval: self
                .backpressure_interval
                .unwrap_or(self.scan_interval.saturating_mul(5)),
            agent_uids: self.agent_uids.clone(),
            chunk_records: self.chunk_records as usize,
            scan: self.scan_config(),
        }
    }
}

/// Parses a byte count: a plain number or one with a binary suffix (`K`,
/// `KiB`, `M`, `MiB`, `G`, `GiB`, case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected bytes, e.g. 1048576 or 256MiB"))?;
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn defaults_and_layout() {
        let args = Args::parse_from(["procmond", "--state-dir", "/x"]);
        assert_eq!(args.max_hash_size, 256 << 20);
        assert_eq!(args.chunk_records, 1000);
        assert_eq!(args.scan_interval, Duration::from_secs(1));
        let d = args.daemon_config();
        assert_eq!(d.socket, PathBuf::from("/x/sentineld.sock"));
        assert_eq!(d.scan.hash_wait, Duration::from_millis(250));
        assert_eq!(d.scan.port_budget, crate::enrich::DEFAULT_PORT_BUDGET);
        assert!(Args::try_parse_from(["procmond", "--chunk-records", "0"]).is_err());
        assert_eq!(d.scan.collector, CollectorKind::Auto);
        assert_eq!(d.scan.hash_rate, 256 << 20);
        assert_eq!(d.ledger, LedgerConfig::default());
    }

    #[test]
    fn ledger_bounds() {
        let args = Args::parse_from([
            "procmond",
            "--ledger-segment-bytes",
            "64KiB",
            "--ledger-keep",
            "3",
        ]);
        assert_eq!(
            args.daemon_config().ledger,
            LedgerConfig {
                segment_bytes: 64 << 10,
                keep: 3
            }
        );
        for bad in [
            ["--ledger-segment-bytes", "0"],
            ["--ledger-segment-bytes", "100"],
            ["--ledger-segment-bytes", "2GiB"],
            ["--ledger-keep", "0"],
            ["--ledger-keep", "1000000"],
        ] {
            let err = Args::try_parse_from(["procmond", bad[0], bad[1]]).unwrap_err();
            assert!(err.to_string().contains(bad[0]), "{err}");
        }
        let err = Args::try_parse_from(["procmond", "--ledger-segment-bytes", "0"]).unwrap_err();
        assert!(err.to_string().contains("4KiB to 1GiB"), "{err}");
    }

    #[test]
    fn collector_and_hash_rate() {
        let args = Args::parse_from([
            "procmond",
            "--collector",
            "sysinfo",
            "--hash-rate-limit",
            "64MiB/s",
        ]);
        let scan = args.scan_config();
        assert_eq!(scan.collector, CollectorKind::Sysinfo);
        assert_eq!(scan.hash_rate, 64 << 20);
        let args = Args::parse_from(["procmond", "--collector=procfs", "--hash-rate-limit=0"]);
        assert_eq!(args.scan_config().collector, CollectorKind::Procfs);
        assert_eq!(args.scan_config().hash_rate, 0);
        assert!(Args::try_parse_from(["procmond", "--collector", "ps"]).is_err());
        assert!(Args::try_parse_from(["procmond", "--hash-rate-limit", "fast"]).is_err());
        let off = Args::parse_from(["procmond", "--port-budget", "off"]);
        assert_eq!(off.scan_config().port_budget, Duration::ZERO);
        assert!(Args::try_parse_from(["procmond", "--port-budget", "0s"]).is_err());
    }
}
