//! User names by uid, cached.
//!
//! Names come from the system's user database (`getpwuid_r`, so NSS sources
//! count too) and are cached, misses included. The cache is dropped when
//! `/etc/passwd` changes (checked at most once per scan, by one `stat`:
//! modification and change times, size and inode, so an edit in place, a
//! replacement by rename and a copy that keeps the old times all count)
//! and is bounded.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

/// Most uids remembered; the cache starts over beyond it.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub(crate) struct UserNames {
    names: HashMap<u32, Option<String>>,
    passwd: PathBuf,
    passwd_stamp: Option<Stamp>,
}

/// What tells one version of the password file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
    inode: (u64, u64),
}

impl UserNames {
    pub(crate) fn new() -> UserNames {
        UserNames::with_passwd(PathBuf::from("/etc/passwd"))
    }

    /// A cache invalidated by changes to `passwd` instead of `/etc/passwd`.
    pub(crate) fn with_passwd(passwd: PathBuf) -> UserNames {
        let passwd_stamp = stamp(&passwd);
        UserNames {
            names: HashMap::new(),
            passwd,
            passwd_stamp,
        }
    }

    /// Drops the cache if the password file changed since the last call.
    pub(crate) fn revalidate(&mut self) {
        let now = stamp(&self.passwd);
        if now != self.passwd_stamp {
            self.passwd_stamp = now;
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

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp {
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        size: m.size(),
        inode: (m.dev(), m.ino()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

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

        // A new file renamed over the old one, with the same size and
        // modification time, invalidates too (its inode differs).
        let next = dir.path().join("passwd.new");
        std::fs::write(&next, "x\n").expect("write new passwd");
        std::fs::File::options()
            .write(true)
            .open(&next)
            .expect("open new passwd")
            .set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .expect("set mtime");
        users.revalidate();
        assert_eq!(users.cached(), 1);
        std::fs::rename(&next, &passwd).expect("replace passwd");
        users.revalidate();
        assert_eq!(users.cached(), 0, "a replaced file drops the cache");

        // A file that disappears drops it as well.
        assert_eq!(users.name(me), expected);
        std::fs::remove_file(&passwd).expect("remove passwd");
        users.revalidate();
        assert_eq!(users.cached(), 0);
    }
}
