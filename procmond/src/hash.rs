//! Hashing executables.
//!
//! The scan *probes* each new instance's executable (one `readlink` and one
//! `stat` of `/proc/PID/exe`, so a deleted or replaced binary is seen as
//! what actually runs), looks its identity up in a bounded cache keyed by
//! (device, inode, size, mtime), and hands cache misses to a worker thread
//! through a bounded queue. The scan waits for the worker only a short,
//! configured time; what is not done by then is reported later. The worker
//! reads under a budget of bytes per second ([`Pace`]), so a burst of new
//! executables (the first scan, a deployment) costs a bounded share of one
//! core, and a new instance of a file already hashed costs a cache lookup.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use sentineld_proto::v1::{ExeInfo, HashStatus};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Default largest executable hashed (256 MiB).
pub const DEFAULT_MAX_HASH_SIZE: u64 = 256 * 1024 * 1024;
/// Default number of digests kept in the cache.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;
/// Default number of hashing jobs queued or running at once.
pub const DEFAULT_QUEUE: usize = 256;
/// Default hashing budget, bytes read and hashed per second (SHA-256 runs
/// at well over 1 GB/s on one core, so this is a fraction of it).
pub const DEFAULT_HASH_RATE: u64 = 256 * 1024 * 1024;

const READ_BUF: usize = 64 * 1024;

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    /// Modification time, unix seconds and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileKey {
    pub fn of(meta: &Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt as _;
        FileKey {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// Copies the identity into the wire record.
    pub fn fill(&self, info: &mut ExeInfo) {
        info.size = self.size;
        info.inode = self.inode;
        info.device = self.device;
        info.mtime = self.mtime;
    }
}

/// The digest of an executable, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOutcome {
    Ok([u8; 32]),
    NoExe,
    TooLarge,
    PermissionDenied,
    Vanished,
    Error(String),
}

impl HashOutcome {
    /// Classifies an I/O error on `/proc/PID/exe` (or on a file).
    pub fn from_io(e: &io::Error) -> HashOutcome {
        if crate::procfs::is_gone(e) {
            HashOutcome::Vanished
        } else if e.kind() == io::ErrorKind::PermissionDenied
            || e.raw_os_error() == Some(nix::libc::EPERM)
        {
            HashOutcome::PermissionDenied
        } else {
            HashOutcome::Error(e.to_string())
        }
    }

    /// Whether the outcome belongs to the file (true for every process that
    /// runs it) rather than to the process it was read through.
    pub fn is_about_the_file(&self) -> bool {
        matches!(self, HashOutcome::Ok(_) | HashOutcome::TooLarge)
    }

    /// Writes status, digest and error into the wire record.
    pub fn fill(&self, info: &mut ExeInfo) {
        info.sha256.clear();
        info.hash_error.clear();
        let status = match self {
            HashOutcome::Ok(digest) => {
                info.sha256.extend_from_slice(digest);
                HashStatus::Ok
            }
            HashOutcome::NoExe => HashStatus::NoExe,
            HashOutcome::TooLarge => HashStatus::TooLarge,
            HashOutcome::PermissionDenied => HashStatus::PermissionDenied,
            HashOutcome::Vanished => HashStatus::Vanished,
            HashOutcome::Error(message) => {
                info.hash_error.clone_from(message);
                HashStatus::Error
            }
        };
        info.set_hash_status(status);
    }
}

/// Splits the ` (deleted)` marker off an exe link target. A memfd
/// (`/memfd:NAME`) has no file on disk either, so it counts as deleted.
pub fn split_deleted(target: &str) -> (&str, bool) {
    match target.strip_suffix(" (deleted)") {
        Some(path) => (path, true),
        None => (target, target.starts_with("/memfd:")),
    }
}

/// What the scan learns about an executable without reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExeProbe {
    /// The executable path, empty when unknown.
    pub path: String,
    pub deleted: bool,
    pub key: Option<FileKey>,
    /// Known without hashing (no exe, too large, unreadable); `None` when
    /// the file must be hashed (or looked up in the cache).
    pub outcome: Option<HashOutcome>,
    /// The file to read to hash it.
    pub read_path: PathBuf,
}

impl ExeProbe {
    fn settled(path: String, outcome: HashOutcome) -> ExeProbe {
        ExeProbe {
            path,
            deleted: false,
            key: None,
            outcome: Some(outcome),
            read_path: PathBuf::new(),
        }
    }

    /// The wire form of what is known so far; a file still to be hashed is
    /// `PENDING`.
    pub fn exe_info(&self) -> ExeInfo {
        let mut info = ExeInfo {
            deleted: self.deleted,
            ..ExeInfo::default()
        };
        if let Some(key) = &self.key {
            key.fill(&mut info);
        }
        match &self.outcome {
            Some(outcome) => outcome.fill(&mut info),
            None => info.set_hash_status(HashStatus::Pending),
        }
        info
    }
}

/// Probes the executable of `pid`.
///
/// `reported` is the path the collector reported (used where there is no
/// `/proc`); `kernel_thread` short-cuts to `NoExe`.
pub fn probe_exe(
    pid: u32,
    reported: Option<&Path>,
    kernel_thread: bool,
    max_size: u64,
) -> ExeProbe {
    let reported_path = reported
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if kernel_thread {
        return ExeProbe::settled(String::new(), HashOutcome::NoExe);
    }
    #[cfg(target_os = "linux")]
    let (read_path, path, deleted) = {
        let link = PathBuf::from(format!("/proc/{pid}/exe"));
        match std::fs::read_link(&link) {
            Ok(target) => {
                let target = target.to_string_lossy();
                let (path, deleted) = split_deleted(&target);
                (link, path.to_owned(), deleted)
            }
            Err(e) => {
                let outcome = match HashOutcome::from_io(&e) {
                    // A process without an exe link (zombie, exiting) is
                    // still listed; one that is gone is not.
                    HashOutcome::Vanished if Path::new(&format!("/proc/{pid}")).exists() => {
                        HashOutcome::NoExe
                    }
                    other => other,
                };
                return ExeProbe::settled(reported_path, outcome);
            }
        }
    };
    #[cfg(not(target_os = "linux"))]
    let (read_path, path, deleted) = {
        let _ = pid;
        match reported {
            Some(p) => (p.to_path_buf(), reported_path.clone(), !p.exists()),
            None => return ExeProbe::settled(String::new(), HashOutcome::NoExe),
        }
    };
    match std::fs::metadata(&read_path) {
        Ok(meta) => {
            let key = FileKey::of(&meta);
            ExeProbe {
                path,
                deleted,
                key: Some(key),
                outcome: (key.size > max_size).then_some(HashOutcome::TooLarge),
                read_path,
            }
        }
        Err(e) => ExeProbe {
            deleted,
            ..ExeProbe::settled(path, HashOutcome::from_io(&e))
        },
    }
}

/// Hashes the file at `path` with SHA-256, refusing one larger than
/// `max_size`. Returns the identity of the file that was read and the
/// outcome; a file that changes while it is read is an error.
pub fn hash_file(path: &Path, max_size: u64) -> (Option<FileKey>, HashOutcome) {
    hash_file_paced(path, max_size, &mut Pace::new(0))
}

/// [`hash_file`], waiting between reads as `pace` says.
pub(crate) fn hash_file_paced(
    path: &Path,
    max_size: u64,
    pace: &mut Pace,
) -> (Option<FileKey>, HashOutcome) {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return (None, HashOutcome::from_io(&e)),
    };
    let before = match file.metadata() {
        Ok(m) => FileKey::of(&m),
        Err(e) => return (None, HashOutcome::from_io(&e)),
    };
    if before.size > max_size {
        return (Some(before), HashOutcome::TooLarge);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (Some(before), HashOutcome::from_io(&e)),
        };
        total += n as u64;
        if total > max_size {
            return (Some(before), HashOutcome::TooLarge);
        }
        hasher.update(&buf[..n]);
        let wait = pace.consume(n as u64, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    match file.metadata() {
        Ok(m) if FileKey::of(&m) == before && total == before.size => {
            (Some(before), HashOutcome::Ok(hasher.finalize().into()))
        }
        Ok(m) => (
            Some(FileKey::of(&m)),
            HashOutcome::Error("executable changed while it was read".into()),
        ),
        Err(e) => (Some(before), HashOutcome::from_io(&e)),
    }
}

/// A budget of bytes per second for the hashing worker: a token bucket
/// that holds at most a quarter of a second's worth (and at least one
/// read), so an idle worker starts the next file at once but the average
/// over any second stays near the rate.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    /// Bytes per second; 0 for no limit.
    rate: u64,
    /// Bytes that can be read now without waiting; negative when owed.
    credit: f64,
    last: Option<Instant>,
}

impl Pace {
    /// A budget of `rate` bytes per second; 0 for none.
    pub(crate) fn new(rate: u64) -> Pace {
        Pace {
            rate,
            credit: 0.0,
            last: None,
        }
    }

    fn burst(&self) -> f64 {
        (self.rate as f64 / 4.0).max(READ_BUF as f64)
    }

    /// Accounts for `bytes` read at `now`; returns how long to wait before
    /// reading more.
    pub(crate) fn consume(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let rate = self.rate as f64;
        let refilled = match self.last {
            None => self.burst(),
            Some(last) => self.credit + now.saturating_duration_since(last).as_secs_f64() * rate,
        };
        self.credit = refilled.min(self.burst()) - bytes as f64;
        self.last = Some(now);
        if self.credit >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.credit / rate)
        }
    }
}

/// A bounded map from file identity to digest. When full, the least
/// recently used entry is evicted.
#[derive(Debug)]
pub(crate) struct HashCache {
    map: HashMap<FileKey, ([u8; 32], u64)>,
    tick: u64,
    capacity: usize,
}

impl HashCache {
    pub(crate) fn new(capacity: usize) -> HashCache {
        HashCache {
            map: HashMap::new(),
            tick: 0,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&mut self, key: &FileKey) -> Option<[u8; 32]> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(digest, used)| {
            *used = tick;
            *digest
        })
    }

    pub(crate) fn insert(&mut self, key: FileKey, digest: [u8; 32]) {
        self.tick += 1;
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            // Misses are rare (a new binary), so a linear search for the
            // oldest entry costs little and needs no second structure.
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, (digest, self.tick));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A finished hashing job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    /// The key the job was submitted under.
    pub key: FileKey,
    /// The process whose exe link was read.
    pub pid: u32,
    /// The identity of the file actually read, when it could be opened.
    pub read: Option<FileKey>,
    pub outcome: HashOutcome,
}

#[derive(Debug)]
struct Job {
    key: FileKey,
    pid: u32,
    path: PathBuf,
}

/// Result of [`Hasher::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submit {
    Queued,
    /// The queue is full: submit again later.
    Full,
    /// The worker is gone (it never is in normal operation).
    Stopped,
}

/// The hashing worker thread, its bounded queue and the digest cache.
#[derive(Debug)]
pub(crate) struct Hasher {
    jobs: SyncSender<Job>,
    results: Receiver<Done>,
    cache: HashCache,
    max_size: u64,
    /// Jobs submitted and not yet received back; at most `queue`.
    outstanding: usize,
    queue: usize,
}

impl Hasher {
    /// Starts the worker thread, which reads at most `rate` bytes per
    /// second (0: no limit).
    pub(crate) fn start(
        max_size: u64,
        cache_entries: usize,
        queue: usize,
        rate: u64,
    ) -> Result<Hasher, Error> {
        let queue = queue.max(1);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(queue);
        // At most `queue` jobs are outstanding, so at most that many results
        // wait here.
        let (result_tx, results) = mpsc::sync_channel::<Done>(queue);
        std::thread::Builder::new()
            .name("procmond-hash".into())
            .spawn(move || {
                let mut pace = Pace::new(rate);
                while let Ok(job) = job_rx.recv() {
                    let (read, outcome) = hash_file_paced(&job.path, max_size, &mut pace);
                    let done = Done {
                        key: job.key,
                        pid: job.pid,
                        read,
                        outcome,
                    };
                    if result_tx.send(done).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Thread {
                what: "hashing",
                source,
            })?;
        Ok(Hasher {
            jobs,
            results,
            cache: HashCache::new(cache_entries),
            max_size,
            outstanding: 0,
            queue,
        })
    }

    pub(crate) fn max_size(&self) -> u64 {
        self.max_size
    }

    pub(crate) fn cached(&mut self, key: &FileKey) -> Option<[u8; 32]> {
        self.cache.get(key)
    }

    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Queues hashing of the file `key` names, read through `path`
    /// (normally `/proc/PID/exe` of `pid`).
    pub(crate) fn submit(&mut self, key: FileKey, pid: u32, path: PathBuf) -> Submit {
        if self.outstanding >= self.queue {
            return Submit::Full;
        }
        match self.jobs.try_send(Job { key, pid, path }) {
            Ok(()) => {
                self.outstanding += 1;
                Submit::Queued
            }
            Err(TrySendError::Full(_)) => Submit::Full,
            Err(TrySendError::Disconnected(_)) => Submit::Stopped,
        }
    }

    /// Whether any submitted job has not been received back.
    pub(crate) fn busy(&self) -> bool {
        self.outstanding > 0
    }

    /// A finished job, waiting at most `timeout` for one.
    pub(crate) fn recv_timeout(&mut self, timeout: Duration) -> Option<Done> {
        if self.outstanding == 0 {
            return None;
        }
        match self.results.recv_timeout(timeout) {
            Ok(done) => Some(self.received(done)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A finished job, if one is ready.
    pub(crate) fn try_recv(&mut self) -> Option<Done> {
        match self.results.try_recv() {
            Ok(done) => Some(self.received(done)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    fn received(&mut self, done: Done) -> Done {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let (HashOutcome::Ok(digest), Some(read)) = (&done.outcome, &done.read) {
            self.cache.insert(*read, *digest);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn temp_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(contents).expect("write temp file");
        f.flush().expect("flush");
        f
    }

    #[test]
    fn hashes_a_file() {
        let contents = b"#!/bin/sh\necho hello\n".repeat(10_000);
        let f = temp_file(&contents);
        let (key, outcome) = hash_file(f.path(), DEFAULT_MAX_HASH_SIZE);
        assert_eq!(outcome, HashOutcome::Ok(sha256(&contents)));
        assert_eq!(key.expect("key").size, contents.len() as u64);
        let (_, empty) = hash_file(temp_file(b"").path(), 0);
        assert_eq!(empty, HashOutcome::Ok(sha256(b"")));
    }

    #[test]
    fn too_large_is_not_read() {
        let f = temp_file(&[7u8; 1000]);
        assert_eq!(hash_file(f.path(), 999).1, HashOutcome::TooLarge);
        assert!(matches!(hash_file(f.path(), 1000).1, HashOutcome::Ok(_)));
    }

    #[test]
    fn missing_file_and_error_statuses() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            hash_file(&dir.path().join("gone"), 10).1,
            HashOutcome::Vanished
        );
        // A directory opens but cannot be read.
        assert!(matches!(
            hash_file(dir.path(), 1 << 20).1,
            HashOutcome::Error(_)
        ));
        let denied = io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(HashOutcome::from_io(&denied), HashOutcome::PermissionDenied);
        let eperm = io::Error::from_raw_os_error(nix::libc::EPERM);
        assert_eq!(HashOutcome::from_io(&eperm), HashOutcome::PermissionDenied);
        let esrch = io::Error::from_raw_os_error(nix::libc::ESRCH);
        assert_eq!(HashOutcome::from_io(&esrch), HashOutcome::Vanished);
        let eio = io::Error::from_raw_os_error(nix::libc::EIO);
        assert!(matches!(HashOutcome::from_io(&eio), HashOutcome::Error(m) if !m.is_empty()));
    }

    #[test]
    fn outcomes_fill_the_wire_record() {
        let mut info = ExeInfo::default();
        HashOutcome::Ok([3; 32]).fill(&mut info);
        assert_eq!(
            (info.hash_status(), info.sha256.len()),
            (HashStatus::Ok, 32)
        );
        HashOutcome::Error("boom".into()).fill(&mut info);
        assert_eq!(info.hash_status(), HashStatus::Error);
        assert!(info.sha256.is_empty());
        assert_eq!(info.hash_error, "boom");
        HashOutcome::TooLarge.fill(&mut info);
        assert_eq!(info.hash_status(), HashStatus::TooLarge);
        assert!(info.hash_error.is_empty());
    }

    #[test]
    fn deleted_marker() {
        assert_eq!(split_deleted("/usr/bin/sleep"), ("/usr/bin/sleep", false));
        assert_eq!(
            split_deleted("/tmp/odd name (x) (deleted)"),
            ("/tmp/odd name (x)", true)
        );
        assert_eq!(
            split_deleted("/tmp/odd name (x)"),
            ("/tmp/odd name (x)", false)
        );
        assert_eq!(
            split_deleted("/memfd:payload (deleted)"),
            ("/memfd:payload", true)
        );
        assert_eq!(split_deleted("/memfd:payload"), ("/memfd:payload", true));
    }

    #[test]
    fn probe_of_a_running_deleted_binary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = dir.path().join("odd name (x)");
        std::fs::copy("/bin/sleep", &exe).expect("copy /bin/sleep");
        let expected = sha256(&std::fs::read(&exe).expect("read copy"));
        let mut child = crate::testutil::spawn_retrying(&exe, &["30"]);
        let pid = child.id();

        let live = probe_exe(pid, None, false, DEFAULT_MAX_HASH_SIZE);
        assert_eq!(live.path, exe.to_string_lossy());
        assert!(!live.deleted);
        assert_eq!(live.outcome, None);

        std::fs::remove_file(&exe).expect("delete copy");
        let gone = probe_exe(pid, None, false, DEFAULT_MAX_HASH_SIZE);
        assert_eq!(gone.path, exe.to_string_lossy());
        assert!(gone.deleted);
        assert_eq!(gone.key, live.key);
        let (_, outcome) = hash_file(&gone.read_path, DEFAULT_MAX_HASH_SIZE);
        assert_eq!(outcome, HashOutcome::Ok(expected));
        let info = gone.exe_info();
        assert_eq!(info.hash_status(), HashStatus::Pending);
        assert!(info.deleted);

        let small = probe_exe(pid, None, false, 10);
        assert_eq!(small.outcome, Some(HashOutcome::TooLarge));

        child.kill().expect("kill child");
        child.wait().expect("reap child");
        let reaped = probe_exe(pid, None, false, DEFAULT_MAX_HASH_SIZE);
        assert_eq!(reaped.outcome, Some(HashOutcome::Vanished));
        assert_eq!(
            probe_exe(2, None, true, DEFAULT_MAX_HASH_SIZE).outcome,
            Some(HashOutcome::NoExe)
        );
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let key = |inode| FileKey {
            device: 1,
            inode,
            size: 10,
            mtime: 0,
            mtime_nsec: 0,
        };
        let mut cache = HashCache::new(2);
        cache.insert(key(1), [1; 32]);
        cache.insert(key(2), [2; 32]);
        assert_eq!(cache.get(&key(1)), Some([1; 32]));
        cache.insert(key(3), [3; 32]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key(2)), None);
        assert_eq!(cache.get(&key(1)), Some([1; 32]));
        assert_eq!(cache.get(&key(3)), Some([3; 32]));
    }

    #[test]
    fn pace_keeps_to_its_rate() {
        const MIB: u64 = 1 << 20;
        // 10 MiB in 64 KiB reads at 1 MiB/s, waiting as told (the clock is
        // simulated): ten seconds, less the quarter-second burst.
        let mut pace = Pace::new(MIB);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..160 {
            now += pace.consume(64 * 1024, now);
        }
        let took = (now - t0).as_secs_f64();
        assert!((9.74..=9.76).contains(&took), "{took}");

        // Idle time refills at most the burst.
        now += Duration::from_secs(3600);
        let mut waited = Duration::ZERO;
        for _ in 0..16 {
            let wait = pace.consume(64 * 1024, now);
            waited += wait;
            now += wait;
        }
        let waited = waited.as_secs_f64();
        assert!((0.74..=0.76).contains(&waited), "{waited}");

        // No budget: never waits.
        let mut free = Pace::new(0);
        assert!((0..1000).all(|_| free.consume(1 << 30, t0).is_zero()));
    }

    #[test]
    fn a_paced_hash_is_the_same_hash() {
        let contents = vec![5u8; 3 * READ_BUF + 17];
        let f = temp_file(&contents);
        // A budget that allows the whole file in the first burst: no wait.
        let (_, outcome) =
            hash_file_paced(f.path(), DEFAULT_MAX_HASH_SIZE, &mut Pace::new(1 << 30));
        assert_eq!(outcome, HashOutcome::Ok(sha256(&contents)));
    }

    #[test]
    fn a_new_instance_of_a_known_file_reuses_its_digest() {
        let contents = vec![1u8; 1000];
        let f = temp_file(&contents);
        let key = FileKey::of(&std::fs::metadata(f.path()).expect("stat"));
        let mut hasher =
            Hasher::start(DEFAULT_MAX_HASH_SIZE, 16, 4, DEFAULT_HASH_RATE).expect("worker");
        assert_eq!(
            hasher.submit(key, 1, f.path().to_path_buf()),
            Submit::Queued
        );
        hasher
            .recv_timeout(Duration::from_secs(60))
            .expect("job done");
        assert_eq!(hasher.cached(&key), Some(sha256(&contents)));
        // Same device, inode, size and mtime: the digest is reused. Any
        // other mtime is another version of the file.
        let touched = FileKey {
            mtime_nsec: key.mtime_nsec + 1,
            ..key
        };
        assert_eq!(hasher.cached(&touched), None);
    }

    #[test]
    fn worker_hashes_and_caches() {
        let contents = vec![9u8; 300_000];
        let f = temp_file(&contents);
        let key = FileKey::of(&std::fs::metadata(f.path()).expect("stat"));
        let mut hasher = Hasher::start(DEFAULT_MAX_HASH_SIZE, 16, 1, 0).expect("worker");
        assert_eq!(hasher.cached(&key), None);
        assert_eq!(
            hasher.submit(key, 1, f.path().to_path_buf()),
            Submit::Queued
        );
        assert_eq!(hasher.submit(key, 1, f.path().to_path_buf()), Submit::Full);
        let done = hasher
            .recv_timeout(Duration::from_secs(60))
            .expect("job done");
        assert_eq!(done.outcome, HashOutcome::Ok(sha256(&contents)));
        assert!(!hasher.busy());
        assert_eq!(hasher.cached(&key), Some(sha256(&contents)));
        assert_eq!(hasher.recv_timeout(Duration::from_secs(60)), None);
    }
}
