//! procmond keeps only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH and sets
//! no_new_privs. Needs root (CI runs as root); skipped with a reason
//! otherwise.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::process::{Command, Stdio};
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};

/// CAP_DAC_READ_SEARCH is bit 2, CAP_SYS_PTRACE bit 19.
const KEPT: u64 = (1 << 2) | (1 << 19);

fn status_field(pid: u32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

#[tokio::test]
async fn keeps_only_the_capabilities_it_needs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to start procmond with every capability");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = ListenerOptions::new()
        .name(socket.as_path().to_fs_name::<GenericFilePath>().unwrap())
        .create_tokio()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--state-dir")
        .arg(dir.path().join("procmond"))
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Once it connects, it has long finished reducing its privileges.
    let _conn = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("procmond connects in time")
        .unwrap();
    let pid = child.id();
    let read = |key| {
        let v = status_field(pid, key).unwrap_or_default();
        u64::from_str_radix(&v, 16).unwrap_or(u64::MAX)
    };
    let (eff, prm, bnd, inh) = (
        read("CapEff:"),
        read("CapPrm:"),
        read("CapBnd:"),
        read("CapInh:"),
    );
    let nnp = status_field(pid, "NoNewPrivs:");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(eff, KEPT, "effective set {eff:x}");
    assert_eq!(prm, KEPT, "permitted set {prm:x}");
    assert_eq!(bnd, KEPT, "bounding set {bnd:x}");
    assert_eq!(inh, 0, "inheritable set {inh:x}");
    assert_eq!(nnp.as_deref(), Some("1"), "no_new_privs");
}
