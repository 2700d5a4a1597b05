//! Least privilege with the real binaries: started as root, the agent starts
//! procmond with its two capabilities, then becomes an unprivileged user
//! with none, and keeps storing scans. Needs root; skipped otherwise.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Agent, agent_command, cli_json, eventually, wait_timeout};

/// `Field:` of `/proc/PID/status` (or of one of its tasks).
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in status"))
        .trim()
        .to_owned()
}

fn cap_mask(status: &str, field: &str) -> u64 {
    u64::from_str_radix(&status_field(status, field), 16).unwrap()
}

/// The children of `pid`, over all its threads.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn the_agent_drops_root_after_starting_procmond() {
    if !is_root() {
        eprintln!("skipped: needs root to test dropping it");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // As /var/lib is: traversable by the user the agent becomes.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = root.path().join("state");
    let mut command = agent_command();
    command.env_remove("SENTINELD_ALLOW_ROOT");
    let child = command
        .args(["--metrics-listen", "off", "--scan-interval", "200ms"])
        .arg("--state-dir")
        .arg(&state)
        .arg("--rules-dir")
        .arg(state.join("no-rules"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Agent { child };
    let pid = agent.pid();

    // The pipeline works after the drop: scans keep arriving.
    let scans = eventually(Duration::from_secs(30), || {
        let scans = cli_json(&state, &["scans", "--format", "json"])?;
        (scans.len() >= 3).then_some(scans)
    });
    assert!(
        scans.is_some(),
        "scans are stored after the agent dropped root"
    );

    // Every thread of the agent: not root, no capabilities, no_new_privs.
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let uids = status_field(&status, "Uid");
        assert!(
            uids.split_whitespace().all(|u| u != "0"),
            "thread {:?} uids {uids}",
            task.file_name()
        );
        assert!(
            status_field(&status, "Groups")
                .split_whitespace()
                .all(|g| g != "0"),
            "{status}"
        );
        // (The bounding set is per thread and cannot grant anything under
        // no_new_privs.)
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(cap_mask(&status, set), 0, "{set} of the agent");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        threads += 1;
    }
    assert!(threads > 1, "the agent's runtime threads were checked");

    // procmond, started before the drop: root, with exactly
    // CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
    let procmond = children(pid);
    assert_eq!(procmond.len(), 1, "one procmond: {procmond:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", procmond[0])).unwrap();
    assert!(status.contains("Name:\tprocmond"), "{status}");
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some("0")
    );
    let two = (1u64 << 2) | (1u64 << 19);
    assert_eq!(cap_mask(&status, "CapEff"), two);
    assert_eq!(cap_mask(&status, "CapPrm"), two);

    // The agent's files are the agent user's; procmond's stay root's.
    let agent_uid: u32 = status_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap(),
        "Uid",
    )
    .split_whitespace()
    .next()
    .unwrap()
    .parse()
    .unwrap();
    let owner = |p: &Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(owner(&state), agent_uid);
    let store = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "redb"))
        .expect("the store file");
    assert_eq!(owner(&store), agent_uid);
    assert_eq!(owner(&state.join("procmond")), 0);

    // SIGTERM stops both: procmond (which the agent can no longer signal)
    // goes with its parent.
    assert!(agent.terminate().success());
    let gone = eventually(Duration::from_secs(20), || {
        (!Path::new(&format!("/proc/{}", procmond[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", procmond[0]))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    assert!(gone.is_some(), "procmond exits with the agent");
}

#[test]
fn a_missing_user_is_a_clear_error() {
    if !is_root() {
        eprintln!("skipped: needs root (without it there is nothing to drop)");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let mut command = agent_command();
    command.env_remove("SENTINELD_ALLOW_ROOT");
    let mut child = command
        .args([
            "--metrics-listen",
            "off",
            "--user",
            "no-such-user-sentineld",
        ])
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20)).expect("the agent exits");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("no-such-user-sentineld"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
    // Nothing was started: no procmond state.
    assert!(!state.path().join("procmond").exists(), "{err}");
}

#[test]
fn a_socket_in_a_world_writable_directory_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut child = agent_command()
        .args(["--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--socket")
        .arg(shared.path().join("agent.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20)).expect("the agent exits");
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("writable by every user"), "{err}");
    assert!(err.contains(&shared.path().display().to_string()), "{err}");
    assert!(!shared.path().join("agent.sock").exists());
}
