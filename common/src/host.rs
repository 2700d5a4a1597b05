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
