//! `--exit-with-parent`: procmond stops when the process that started it
//! dies. This test binary makes itself a child subreaper, so the orphaned
//! procmond is reparented to it and can be waited for.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

#[tokio::test]
async fn stops_when_its_parent_dies() {
    nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let listener = ListenerOptions::new()
        .name(
            socket
                .as_path()
                .to_fs_name::<GenericFilePath>()
                .expect("socket name"),
        )
        .create_tokio()
        .expect("listen");

    // A shell starts procmond in the background, prints its pid, then
    // becomes `cat` (same pid), which lives until its stdin closes.
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#""$0" --exit-with-parent --socket "$1" --state-dir "$2" & echo $!; exec cat >/dev/null"#)
        .arg(env!("CARGO_BIN_EXE_procmond"))
        .arg(&socket)
        .arg(dir.path().join("procmond"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the parent shell");
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read procmond's pid");
    let pid = Pid::from_raw(line.trim().parse().expect("a pid"));

    // Once procmond connects, the parent-death signal is armed.
    let _conn = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("procmond connects in time")
        .expect("accept");
    parent.kill().expect("kill the parent");
    parent.wait().expect("reap the parent");

    let mut status = WaitStatus::StillAlive;
    for _ in 0..6000 {
        status = waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("wait for procmond");
        if status != WaitStatus::StillAlive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status,
        WaitStatus::Exited(pid, 0),
        "procmond exits cleanly with its parent"
    );
}
