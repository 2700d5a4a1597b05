//! Helpers shared by procmond's integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Starts `exe args`. A copy of a binary that was just written can be
/// briefly "text file busy" while another test thread forks (the child
/// holds the writable descriptor until it execs), so that error is retried.
pub fn spawn_retrying(exe: &Path, args: &[&str]) -> Child {
    let mut tries = 0;
    loop {
        match Command::new(exe).args(args).spawn() {
            Ok(child) => {
                wait_for_exec(child.id(), exe);
                return child;
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {}: {e}", exe.display()),
        }
    }
}

/// Waits until `/proc/PID/exe` names `exe`. `spawn` can return while the
/// kernel is still switching the child from the forked image to the new
/// one, so the child briefly still shows the test binary.
fn wait_for_exec(pid: u32, exe: &Path) {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    // The kernel names the resolved file (`/bin` is often a link to
    // `/usr/bin`).
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    for _ in 0..1000 {
        if std::fs::read_link(&link).is_ok_and(|target| target == exe) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("pid {pid} never ran {}", exe.display());
}

/// Copies `/bin/sleep` into `dir` under `name`.
pub fn copy_sleep(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    std::fs::copy("/bin/sleep", &exe).expect("copy /bin/sleep");
    exe
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

/// Kills and reaps the child when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
