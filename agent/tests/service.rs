//! sentinelagent under a service manager (`Type=notify`): READY=1 once the
//! store is open and the socket bound, WATCHDOG=1 at half of
//! WATCHDOG_USEC, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on
//! SIGTERM. A datagram socket in a temp directory stands in for systemd.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{agent_command, wait_timeout};

/// Reads notifications until one has the line `want` or `limit` passes.
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
fn ready_watchdog_reload_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let state = dir.path().join("state");
    let mut agent = agent_command()
        .args(["--collector", "external", "--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(&state)
        .arg("--rules-dir")
        .arg(dir.path().join("no-rules"))
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    wait_for(&socket, "READY=1", Duration::from_secs(60));
    assert!(
        state.join("sentineld.sock").exists(),
        "ready only once the socket is bound"
    );
    for _ in 0..3 {
        wait_for(&socket, "WATCHDOG=1", Duration::from_secs(10));
    }

    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&socket, "RELOADING=1", Duration::from_secs(30));
    wait_for(&socket, "READY=1", Duration::from_secs(30));

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(&socket, "STOPPING=1", Duration::from_secs(30));
    let status = wait_timeout(&mut agent, Duration::from_secs(20)).expect("agent stops");
    assert!(status.success());
}
