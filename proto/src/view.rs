//! The user-facing view of a process: the JSON object that
//! `procmond --once`, `sentinelcli ps --format json` and the agent's API
//! print. One definition, so every surface names fields the same way.

use serde::Serialize;

use crate::v1::{HashStatus, ProcessRecord, Sample};

/// One process as users see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessView {
    pub pid: u32,
    pub ppid: u32,
    pub name: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    /// RFC 3339, UTC.
    pub start_time: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub status: String,
    pub threads: u32,
    pub rss_bytes: u64,
    pub vms_bytes: u64,
    /// Swapped-out memory; null when unknown.
    pub swap_bytes: Option<u64>,
    pub cpu_percent: f32,
    pub open_fds: Option<u32>,
    /// Lowercase hex, or null when the hash is missing (see `hash_status`).
    pub sha256: Option<String>,
    pub hash_status: &'static str,
    pub hash_error: Option<String>,
    pub exe_deleted: bool,
    pub container_id: Option<String>,
    /// Ports it listens on (TCP) or has bound unconnected (UDP), sorted.
    pub listening_ports: Vec<u32>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Stable lowercase name of a hash status, as shown to users.
pub fn hash_status_name(status: HashStatus) -> &'static str {
    match status {
        HashStatus::Unspecified => "unknown",
        HashStatus::Ok => "ok",
        HashStatus::NoExe => "no_exe",
        HashStatus::TooLarge => "too_large",
        HashStatus::PermissionDenied => "permission_denied",
        HashStatus::Pending => "pending",
        HashStatus::Vanished => "vanished",
        HashStatus::Error => "error",
    }
}

/// Lowercase hex of `bytes`, as `hex::encode` gives it, without its
/// character-by-character collecting (the agent renders a view of every
/// live process each scan): through a stack buffer for up to 32 bytes.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut buf = [0_u8; 64];
    let Some(out) = buf.get_mut(..bytes.len() * 2) else {
        return hex::encode(bytes);
    };
    if hex::encode_to_slice(bytes, out).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8_lossy(out).into_owned()
}

/// Formats unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

impl ProcessView {
    /// Builds the view from a full record and, when newer than the record's
    /// own first sample, the latest sample.
    pub fn new(record: &ProcessRecord, latest: Option<&Sample>) -> ProcessView {
        let instance = record.instance.unwrap_or_default();
        let sample = latest
            .or(record.sample.as_ref())
            .cloned()
            .unwrap_or_default();
        let exe = record.exe_info.clone().unwrap_or_default();
        let status = exe.hash_status();
        let sha256 =
            (status == HashStatus::Ok && exe.sha256.len() == 32).then(|| hex_lower(&exe.sha256));
        ProcessView {
            pid: instance.pid,
            ppid: record.ppid,
            name: record.name.clone(),
            exe: non_empty(&record.exe),
            cmdline: record.cmdline.clone(),
            start_time: rfc3339(instance.start_time),
            uid: record.uid,
            user: non_empty(&record.user),
            status: sample.status.clone(),
            threads: sample.threads,
            rss_bytes: sample.rss_bytes,
            vms_bytes: sample.vms_bytes,
            swap_bytes: sample.swap_bytes,
            cpu_percent: sample.cpu_percent,
            open_fds: sample.open_fds,
            sha256,
            hash_status: hash_status_name(status),
            hash_error: non_empty(&exe.hash_error),
            exe_deleted: exe.deleted,
            container_id: non_empty(&record.container_id),
            listening_ports: sample.listening_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::view::hex_lower;

    #[test]
    fn hex_lower_is_hex_encode() {
        for len in [0, 1, 31, 32, 33, 100] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(hex_lower(&bytes), hex::encode(&bytes), "{len} bytes");
        }
    }
}
