//! procmond under a service manager (`Type=notify`): READY=1 once the
//! first scan is recorded, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1
//! on SIGTERM. A datagram socket in a temp directory stands in for systemd.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Reads notifications until one contains `want` or `limit` passes.
fn wait_for(socket: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.lines().any(|l| l == want);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {limit:?}; got {seen:?}");
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut procmond = Command::new(env!("CARGO_BIN_EXE_procmond"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        // No agent listens there: procmond scans and keeps its log anyway.
        .arg("--socket")
        .arg(dir.path().join("agent.sock"))
        .args(["--scan-interval", "30s"])
        .env("NOTIFY_SOCKET", &notify)
        // 600 ms: a ping is due every 300 ms, far more often than the scans.
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let seen = wait_for(&socket, "READY=1", Duration::from_secs(60));
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    // Pings keep coming while the scan thread waits for its next scan.
    for _ in 0..3 {
        wait_for(&socket, "WATCHDOG=1", Duration::from_secs(10));
    }

    let pid = nix::unistd::Pid::from_raw(i32::try_from(procmond.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(&socket, "STOPPING=1", Duration::from_secs(30));
    assert!(procmond.wait().unwrap().success());
}
