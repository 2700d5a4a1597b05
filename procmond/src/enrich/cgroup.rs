//! Container ids from `/proc/PID/cgroup`.
//!
//! Each line of the file is `hierarchy-ID:controllers:path` (cgroup v1; the
//! unified v2 hierarchy is the line `0::/path`). Container runtimes put
//! every container in a cgroup directory named after its 64-hex-digit id:
//!
//! | runtime                    | directory                                  |
//! |----------------------------|--------------------------------------------|
//! | Docker, cgroupfs driver    | `/docker/<id>`                             |
//! | Docker, systemd driver     | `/system.slice/docker-<id>.scope`          |
//! | Kubernetes, cgroupfs       | `/kubepods/<qos>/pod<uid>/<id>`            |
//! | containerd, systemd        | `.../kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | CRI-O                      | `/crio/<id>`, `crio-<id>.scope`            |
//! | Podman                     | `libpod-<id>.scope`, `/libpod_parent/libpod-<id>` |
//!
//! A directory counts when it is exactly 64 lowercase hex digits, or
//! `<runtime>-<id>` with an optional `.scope` suffix. Below the container's
//! own directory there may be more (Podman's `libpod-<id>.scope/container`,
//! a systemd inside the container's `.../init.scope`), so a path is searched
//! from its deepest directory up, and the deepest match wins: for nested
//! containers (Docker in Docker) that is the innermost one.
//!
//! Podman and CRI-O run each container's monitor, `conmon`, in a sibling
//! scope, `libpod-conmon-<id>.scope` or `crio-conmon-<id>.scope`. conmon is
//! a host process that supervises the container, not part of it (it is not
//! in the container's namespaces and outlives its processes), so it gets no
//! container id; the strict `<runtime>-<64 hex>` form rejects it since
//! `conmon-<id>` is not an id.
//!
//! Paths are relative to the *reader's* cgroup namespace: procmond must run
//! in the host's cgroup namespace to see these directories at all.

use std::path::Path;

/// Most bytes of a cgroup file read. Real files are a few hundred bytes.
pub const MAX_CGROUP_BYTES: usize = 64 * 1024;

/// Length of a container id in hex digits.
const ID_LEN: usize = 64;

/// Prefixes of `<runtime>-<id>[.scope]` directory names.
const RUNTIME_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The container id named in the text of a `/proc/PID/cgroup` file, or
/// `None` for a process outside any container (see the module docs for the
/// forms recognised). The first line holding an id wins.
pub fn container_id(cgroup_file_text: &str) -> Option<String> {
    cgroup_file_text
        .lines()
        .find_map(|line| line.splitn(3, ':').nth(2).and_then(path_container_id))
        .map(str::to_owned)
}

/// The container id of process `pid`, from `/proc/PID/cgroup`; `None` when
/// it is in no container or the file cannot be read (process gone).
pub fn read_container_id(pid: u32) -> Option<String> {
    read_container_id_in(Path::new(crate::enrich::PROC), pid)
}

/// [`read_container_id`] under the proc root `root`.
pub(crate) fn read_container_id_in(root: &Path, pid: u32) -> Option<String> {
    let mut buf = Vec::new();
    let path = root.join(pid.to_string()).join("cgroup");
    crate::enrich::read_whole_lines(&path, MAX_CGROUP_BYTES, &mut buf).ok()?;
    container_id(&String::from_utf8_lossy(&buf))
}

/// The id in the deepest directory of `path` that names a container.
fn path_container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(directory_id)
}

fn directory_id(name: &str) -> Option<&str> {
    if is_id(name) {
        return Some(name);
    }
    let name = name.strip_suffix(".scope").unwrap_or(name);
    RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .filter(|id| is_id(id))
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const ID: &str = "3f2d5e6a8b9c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn id_of(text: &str) -> Option<String> {
        container_id(&text.replace("<id>", ID))
    }

    #[test]
    fn container_forms() {
        let cases = [
            // Docker, cgroup v1, cgroupfs driver.
            "12:pids:/docker/<id>\n11:memory:/docker/<id>\n1:name=systemd:/docker/<id>\n",
            // Docker, cgroup v2, systemd driver.
            "0::/system.slice/docker-<id>.scope\n",
            // Kubernetes, cgroupfs driver, v1.
            "10:cpu,cpuacct:/kubepods/besteffort/pod6e5f1c2a-1b2c-4d5e-8f90-a1b2c3d4e5f6/<id>\n",
            // Kubernetes, systemd driver, containerd, v2.
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6e5f1c2a_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-<id>.scope\n",
            // Kubernetes, systemd driver, docker.
            "0::/kubepods.slice/kubepods-pod6e5f1c2a_1b2c.slice/docker-<id>.scope\n",
            // CRI-O.
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crio-<id>.scope\n",
            "4:memory:/crio/<id>\n",
            "0::/kubepods/burstable/pod1/crio-<id>\n",
            // Podman, rootful, systemd.
            "0::/machine.slice/libpod-<id>.scope\n",
            "0::/machine.slice/libpod-<id>.scope/container\n",
            // Podman, cgroupfs.
            "0::/libpod_parent/libpod-<id>\n",
            // Podman, rootless.
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope\n",
            // systemd inside a container.
            "0::/system.slice/docker-<id>.scope/init.scope\n",
            // Hybrid: the v2 line says nothing, a v1 line does.
            "1:name=systemd:/docker/<id>\n0::/\n",
            // GitHub Actions job container: a bare id under any parent.
            "0::/actions_job/<id>\n",
        ];
        for case in cases {
            assert_eq!(id_of(case).as_deref(), Some(ID), "{case}");
        }
    }

    #[test]
    fn no_container() {
        let cases = [
            "0::/user.slice/user-1000.slice/session-2.scope\n",
            "0::/system.slice/sshd.service\n",
            "0::/init.scope\n",
            "0::/\n",
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-8e1c.scope\n",
            // Podman's and CRI-O's container monitors run beside the container.
            "0::/machine.slice/libpod-conmon-<id>.scope\n",
            "0::/kubepods.slice/kubepods-pod1.slice/crio-conmon-<id>.scope\n",
            // Not quite ids: too short, too long, upper case, other runtime.
            "0::/docker/3f2d5e6a8b9c\n",
            "0::/docker/<id>0\n",
            "0::/system.slice/docker-<id>.service\n",
            "0::/system.slice/rkt-<id>.scope\n",
            "",
            "garbage without colons\n",
        ];
        for case in cases {
            assert_eq!(id_of(case), None, "{case}");
        }
        assert_eq!(
            container_id(&format!("0::/docker/{}\n", ID.to_uppercase())),
            None
        );
    }

    #[test]
    fn real_hybrid_file_without_container() {
        // A sandbox's own /proc/self/cgroup: a 32-digit id is not a container id.
        let text = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
                    4:memory:/process_api/6b81b57aab351d407b60c3443f1d85e8\n3:cpuset:/\n\
                    2:cpuacct:/\n1:cpu:/\n0::/\n";
        assert_eq!(container_id(text), None);
    }

    #[test]
    fn nested_containers_give_the_innermost() {
        let outer = "a".repeat(64);
        let text = format!("0::/docker/{outer}/docker/{ID}\n");
        assert_eq!(container_id(&text).as_deref(), Some(ID));
    }

    #[test]
    fn reads_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("7")).unwrap();
        std::fs::write(
            dir.path().join("7/cgroup"),
            format!("0::/system.slice/docker-{ID}.scope\n"),
        )
        .unwrap();
        assert_eq!(read_container_id_in(dir.path(), 7).as_deref(), Some(ID));
        assert_eq!(read_container_id_in(dir.path(), 8), None, "no such process");

        // A file cut at the limit loses its partial last line: a longer name
        // cut right after 64 hex digits must not look like an id.
        let filler = format!("1:x:/{}\n", "y".repeat(MAX_CGROUP_BYTES - 6 - 11 - 64));
        let text = format!("{filler}0::/docker/{ID}{}\n", "f".repeat(100));
        std::fs::write(dir.path().join("7/cgroup"), text).unwrap();
        assert_eq!(read_container_id_in(dir.path(), 7), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_cgroup() {
        // Whatever this test runs in, reading must not fail loudly.
        let _ = read_container_id(std::process::id());
    }
}
