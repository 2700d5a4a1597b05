//! User names by uid, cached.
//!
//! Names come from the system's user database (`getpwuid_r`, so NSS sources
//! count too) and are cached, misses included. The cache is dropped when
//! `/etc/passwd` changes (checked at most once per scan) and is bounded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// Most uids remembered; the cache starts over beyond it.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub(crate) struct UserNames {
    names: HashMap<u32, Option<String>>,
    passwd: PathBuf,
    passwd_mtime: Option<SystemTime>,
}

impl UserNames {
    pub(crate) fn new() -> UserNames {
        UserNames::with_passwd(PathBuf::from("/etc/passwd"))
    }

    /// A cache invalidated by changes to `passwd` instead of `/etc/passwd`.
    pub(crate) fn with_passwd(passwd: PathBuf) -> UserNames {
        let passwd_mtime = mtime(&passwd);
        UserNames {
            names: HashMap::new(),
            passwd,
            passwd_mtime,
        }
    }

    /// Drops the cache if the password file changed since the last call.
    pub(crate) fn revalidate(&mut self) {
        let now = mtime(&self.passwd);
        if now != self.passwd_mtime {
            self.passwd_mtime = now;
            self.names.clear();
        }
    }

    /// The name of `uid`, or `None` when the user database has none.
    pub(crate) fn name(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        if self.names.len() >= MAX_ENTRIES {
            self.names.clear();
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        self.names.insert(uid, name.clone());
        name
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.names.len()
    }
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_caches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "x\n").expect("write passwd");
        let mut users = UserNames::with_passwd(passwd.clone());
        let me = nix::unistd::getuid().as_raw();
        let expected = nix::unistd::User::from_uid(nix::unistd::getuid())
            .expect("user database")
            .map(|u| u.name);
        assert_eq!(users.name(me), expected);
        assert_eq!(users.name(me), expected);
        assert_eq!(users.cached(), 1);
        users.revalidate();
        assert_eq!(users.cached(), 1, "unchanged file keeps the cache");

        // A different mtime invalidates.
        let f = std::fs::File::options()
            .write(true)
            .open(&passwd)
            .expect("open passwd");
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .expect("set mtime");
        users.revalidate();
        assert_eq!(users.cached(), 0);
        assert_eq!(users.name(me), expected);
    }
}
