//! Dropping root: the agent parses rules, serves HTTP and writes the store,
//! so it holds no privilege. Started as root (standalone mode, to start
//! procmond with its capabilities), it becomes an unprivileged user once
//! procmond runs: `--user`, else `sentineld` if that user exists, else
//! `nobody`. `--allow-root` keeps root, with a warning.
//!
//! `no_new_privs` is set at start, before any thread (it is per thread and
//! inherited), so no exec ever raises the agent's privilege. The drop takes
//! the user's primary group as the only group and sets the user id in every
//! thread (glibc applies set*id to all threads); the kernel clears the
//! permitted, effective and ambient sets with it. The bounding set, per
//! thread, is emptied on the dropping thread; with `no_new_privs` it can
//! grant nothing on any thread. The state
//! directory's own files (the store, the lock) are given to the user first,
//! so the next start opens them; procmond's subdirectory stays root's, so
//! the agent can never rewrite procmond's ledger or WAL, and so does the
//! socket, which procmond (root without `CAP_DAC_OVERRIDE`) connects to as
//! its owner.

use std::path::{Path, PathBuf};

use caps::CapSet;
use nix::unistd::{Gid, Uid, User};
use tracing::{info, warn};

/// The default user, when it exists.
pub const DEFAULT_USER: &str = "sentineld";
/// The fallback when it does not.
pub const FALLBACK_USER: &str = "nobody";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "no user {name:?} to run as (--user / user): create it (e.g. with packaging/systemd/sentineld.sysusers.conf), name another, or pass --allow-root"
    )]
    NoSuchUser { name: String },
    #[error(
        "neither the user {DEFAULT_USER:?} nor {FALLBACK_USER:?} exists to run as: create {DEFAULT_USER:?}, pass --user NAME, or --allow-root"
    )]
    NoDefaultUser,
    #[error("cannot look up the user {name:?}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("{name:?} is uid 0: name an unprivileged user, or pass --allow-root to stay root")]
    RootUser { name: String },
    #[error("cannot give {path} to the user {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("cannot drop root to the user {user}: {step}: {source}")]
    Drop {
        user: String,
        step: &'static str,
        source: std::io::Error,
    },
}

/// The user to become.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Whom to become, if anyone: `None` when not running as root, or when
/// `allow_root` keeps root (logged as a warning).
pub fn plan(user: Option<&str>, allow_root: bool) -> Result<Option<Target>, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    if allow_root {
        warn!(
            "running as root (--allow-root): the agent parses rules, serves HTTP and writes \
             the store with every privilege; run it as an unprivileged user instead"
        );
        return Ok(None);
    }
    let user = match user {
        Some(name) => lookup(name)?.ok_or_else(|| PrivilegeError::NoSuchUser {
            name: name.to_owned(),
        })?,
        None => match lookup(DEFAULT_USER)? {
            Some(user) => user,
            None => lookup(FALLBACK_USER)?.ok_or(PrivilegeError::NoDefaultUser)?,
        },
    };
    if user.uid.is_root() {
        return Err(PrivilegeError::RootUser { name: user.name });
    }
    Ok(Some(Target {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    }))
}

fn lookup(name: &str) -> Result<Option<User>, PrivilegeError> {
    User::from_name(name).map_err(|source| PrivilegeError::Lookup {
        name: name.to_owned(),
        source,
    })
}

/// Gives `paths` (those that exist) to `target`, not following links.
pub fn hand_over(paths: &[PathBuf], target: &Target) -> Result<(), PrivilegeError> {
    for path in paths {
        match std::os::unix::fs::lchown(path, Some(target.uid.as_raw()), Some(target.gid.as_raw()))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PrivilegeError::Chown {
                    path: path.clone(),
                    user: target.name.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The entries of `state_dir` the agent owns: the directory and every
/// entry in it but those `kept` (procmond's own directory, the socket).
pub fn owned_paths(state_dir: &Path, kept: &[PathBuf]) -> Vec<PathBuf> {
    let mut paths = vec![state_dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        paths.extend(
            entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| !kept.contains(p)),
        );
    }
    paths
}

/// Sets `no_new_privs`: no exec can raise privilege again. Per thread and
/// inherited, so it is called before the agent starts any thread.
pub fn no_new_privs() -> std::io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)
}

/// Becomes `target` for good, in every thread of the process.
pub fn drop_to(target: &Target) -> Result<(), PrivilegeError> {
    let err = |step: &'static str| {
        let user = target.name.clone();
        move |source: std::io::Error| PrivilegeError::Drop { user, step, source }
    };
    // `no_new_privs` is already set on every thread ([`no_new_privs`]), so
    // no exec can use the bounding set; it is emptied on this thread too
    // (the set is per thread; the others keep theirs, unusable).
    caps::clear(None, CapSet::Bounding)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err("clear the capability bounding set"))?;
    no_new_privs().map_err(err("set no_new_privs"))?;
    // glibc applies each of these to every thread of the process.
    nix::unistd::setgroups(&[target.gid])
        .map_err(std::io::Error::from)
        .map_err(err("setgroups"))?;
    nix::unistd::setgid(target.gid)
        .map_err(std::io::Error::from)
        .map_err(err("setgid"))?;
    nix::unistd::setuid(target.uid)
        .map_err(std::io::Error::from)
        .map_err(err("setuid"))?;
    // setuid(2) from root to another user clears the permitted and
    // effective sets; check rather than trust.
    let left = caps::read(None, CapSet::Permitted)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .map_err(err("read the capabilities left"))?;
    if !left.is_empty() || Uid::current().is_root() || Uid::effective().is_root() {
        return Err(err("check")(std::io::Error::other(format!(
            "still uid {} with {left:?}",
            Uid::current()
        ))));
    }
    info!(
        user = %target.name,
        uid = target.uid.as_raw(),
        gid = target.gid.as_raw(),
        "dropped root: no capabilities, no_new_privs"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        if !Uid::effective().is_root() {
            // Not root: nothing to drop, whatever the name.
            assert!(
                plan(Some("no-such-user-sentineld"), false)
                    .unwrap()
                    .is_none()
            );
            return;
        }
        let e = plan(Some("no-such-user-sentineld"), false).unwrap_err();
        assert!(e.to_string().contains("no-such-user-sentineld"), "{e}");
        assert!(e.to_string().contains("--allow-root"), "{e}");
        let e = plan(Some("root"), false).unwrap_err();
        assert!(matches!(e, PrivilegeError::RootUser { .. }), "{e}");
        assert!(
            plan(Some("no-such-user-sentineld"), true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_agent_owns_its_state_but_not_procmonds() {
        let dir = tempfile::tempdir().unwrap();
        let procmond = dir.path().join("procmond");
        std::fs::create_dir(&procmond).unwrap();
        std::fs::write(dir.path().join("store.redb"), b"").unwrap();
        std::fs::write(dir.path().join("agent.sock"), b"").unwrap();
        let mut paths = owned_paths(dir.path(), &[procmond, dir.path().join("agent.sock")]);
        paths.sort();
        assert_eq!(
            paths,
            vec![dir.path().to_path_buf(), dir.path().join("store.redb")]
        );
    }
}
