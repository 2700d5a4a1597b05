//! Host identity: boot id and host name.

/// The id of the current boot, 16 bytes.
///
/// Linux: `/proc/sys/kernel/random/boot_id`. Elsewhere (or if it cannot be
/// read): derived from the boot time, which is stable for one boot.
pub fn boot_id() -> [u8; 16] {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        && let Some(id) = parse_uuid(text.trim())
    {
        return id;
    }
    let boot = boot_time_secs().unwrap_or(0);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&boot.to_le_bytes());
    id[8..].copy_from_slice(b"sentinld");
    id
}

/// Boot time in unix seconds (Linux: `btime` in `/proc/stat`).
pub fn boot_time_secs() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Parses a textual UUID (`8-4-4-4-12` hex digits) into 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Formats 16 id bytes as a textual UUID.
pub fn format_uuid(id: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The host name, or an empty string when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// This process's CPU seconds and resident bytes, from `/proc/self`
/// (zeros where there is none).
pub fn own_usage() -> (f64, u64) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100.0, |t| t as f64);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the name: state is field 3, utime 14, stime 15.
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| u64::try_from(p).unwrap_or(4096));
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip() {
        let text = "6f1c1f1e-0b2a-4c1e-9a55-0123456789ab";
        let id = parse_uuid(text).expect("valid uuid");
        assert_eq!(format_uuid(&id), text);
        assert!(parse_uuid("not-a-uuid").is_none());
    }

    #[test]
    fn boot_id_is_stable() {
        assert_eq!(boot_id(), boot_id());
    }
}
