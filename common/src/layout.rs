//! Where SentinelD keeps its files.
//!
//! With `--state-dir DIR` everything lives under DIR: the store, procmond's
//! files and (unless `--socket` names another path) the collector socket.
//! Without it: `/var/lib/sentineld` and `/run/sentineld` as root, the XDG
//! state and runtime directories otherwise.

use std::path::{Path, PathBuf};

/// File name of the collector socket inside its directory.
pub const SOCKET_NAME: &str = "sentineld.sock";
/// File name of the agent's redb store inside the state directory.
pub const STORE_NAME: &str = "store.redb";
/// Lock file held by the running agent.
pub const LOCK_NAME: &str = "agent.lock";
/// Subdirectory for procmond's own files (WAL, audit ledger).
pub const PROCMOND_DIR: &str = "procmond";

/// The resolved paths of one SentinelD installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl StateLayout {
    /// Resolves the layout from the optional `--state-dir` and `--socket`.
    pub fn resolve(state_dir: Option<&Path>, socket: Option<&Path>) -> StateLayout {
        let (state_dir, default_socket_dir) = match state_dir {
            Some(dir) => (dir.to_path_buf(), dir.to_path_buf()),
            None => (default_state_dir(), default_runtime_dir()),
        };
        let socket = socket.map_or_else(|| default_socket_dir.join(SOCKET_NAME), Path::to_path_buf);
        StateLayout { state_dir, socket }
    }

    pub fn store(&self) -> PathBuf {
        self.state_dir.join(STORE_NAME)
    }

    pub fn lock(&self) -> PathBuf {
        self.state_dir.join(LOCK_NAME)
    }

    pub fn procmond_dir(&self) -> PathBuf {
        self.state_dir.join(PROCMOND_DIR)
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `/var/lib/sentineld` as root, else `$XDG_STATE_HOME/sentineld`
/// (default `~/.local/state/sentineld`).
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/sentineld");
    }
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("sentineld"),
        None => home().join(".local/state/sentineld"),
    }
}

/// `/etc/sentineld` as root, else `$XDG_CONFIG_HOME/sentineld` (default
/// `~/.config/sentineld`): where configuration and rule files live.
pub fn default_config_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/sentineld");
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("sentineld"),
        None => home().join(".config/sentineld"),
    }
}

/// The default rules directory: `rules.d` in the config directory.
pub fn default_rules_dir() -> PathBuf {
    default_config_dir().join("rules.d")
}

/// `/run/sentineld` as root, else `$XDG_RUNTIME_DIR/sentineld`, falling back
/// to the state directory when there is no runtime directory.
pub fn default_runtime_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/sentineld");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("sentineld"),
        None => default_state_dir(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_holds_everything_unless_socket_given() {
        let l = StateLayout::resolve(Some(Path::new("/x")), None);
        assert_eq!(l.socket, Path::new("/x/sentineld.sock"));
        assert_eq!(l.store(), Path::new("/x/store.redb"));
        assert_eq!(l.procmond_dir(), Path::new("/x/procmond"));
        let l = StateLayout::resolve(Some(Path::new("/x")), Some(Path::new("/y/s.sock")));
        assert_eq!(l.socket, Path::new("/y/s.sock"));
        assert_eq!(l.state_dir, Path::new("/x"));
    }
}
