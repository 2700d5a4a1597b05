//! One scan, start to finish: collect, diff against the last scan, hash the
//! executables of new instances, and report.
//!
//! The [`Scanner`] is synchronous and owns everything it needs (collector,
//! instance table, hashing worker, user-name cache); it runs on its own
//! thread in daemon mode and on the main thread for `--once`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sentineld_proto::v1::{ExeInfo, ProcessRecord, ScanStats};
use tracing::{debug, error};

use crate::collect::{Collector, Identity, Observed, ScanCounters};
use crate::diff::{InstanceKey, Tracker};
use crate::enrich::Enricher;
use crate::enrich::ports::PortStats;
use crate::error::Error;
use crate::hash::{self, Done, FileKey, HashOutcome, Hasher, Submit};
use crate::scan::Scan;
use crate::users::UserNames;

/// Default time a scan waits for the hashes of its new instances.
pub const DEFAULT_HASH_WAIT: Duration = Duration::from_millis(250);

/// How scans hash executables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// Executables larger than this are not hashed (`TOO_LARGE`).
    pub max_hash_size: u64,
    /// Longest a daemon scan waits for its hashes before reporting them as
    /// `PENDING`.
    pub hash_wait: Duration,
    /// Digests kept in the cache.
    pub hash_cache_entries: usize,
    /// Hashing jobs queued or running at once.
    pub hash_queue: usize,
    /// Bytes per second the hashing worker reads at most; 0 for no limit.
    pub hash_rate: u64,
    /// The collector [`run_daemon`](crate::run_daemon) and
    /// [`run_once`](crate::run_once) open.
    pub collector: crate::collect::CollectorKind,
    /// Longest one scan spends finding listening ports; zero reads none.
    pub port_budget: Duration,
    /// Listening ports are looked for at every Nth scan (and at every
    /// snapshot); the scans between keep the ports found last. Reading every
    /// process's descriptors is most of a steady-state scan's cost.
    pub port_every: u32,
}

impl Default for ScanConfig {
    fn default() -> ScanConfig {
        ScanConfig {
            max_hash_size: hash::DEFAULT_MAX_HASH_SIZE,
            hash_wait: DEFAULT_HASH_WAIT,
            hash_cache_entries: hash::DEFAULT_CACHE_ENTRIES,
            hash_queue: hash::DEFAULT_QUEUE,
            hash_rate: hash::DEFAULT_HASH_RATE,
            collector: crate::collect::CollectorKind::Auto,
            port_budget: crate::enrich::DEFAULT_PORT_BUDGET,
            port_every: crate::enrich::DEFAULT_PORT_EVERY,
        }
    }
}

/// An instance whose executable is still to be hashed.
#[derive(Debug)]
struct PendingHash {
    key: FileKey,
    read_path: PathBuf,
}

/// The instances waiting for one file's digest.
#[derive(Debug, Default)]
struct Waiters {
    instances: Vec<InstanceKey>,
    /// A job for the file is in the worker's queue.
    queued: bool,
}

/// A known instance's sample is sent when one of its figures changed, and
/// at every this many scans whatever they are, so an idle process still
/// has a point in its history every few intervals.
pub const SAMPLE_EVERY: u64 = 12;

/// Collects, diffs and hashes, one scan per call.
#[derive(Debug)]
pub struct Scanner<C> {
    collector: C,
    hasher: Hasher,
    users: UserNames,
    enricher: Enricher,
    tracker: Tracker,
    config: ScanConfig,
    scan_seq: u64,
    observed: Vec<Observed>,
    pending: HashMap<InstanceKey, PendingHash>,
    waiting: HashMap<FileKey, Waiters>,
    /// Instances whose executable changed under the hashing worker (an
    /// exec the collector had not seen yet): read again at the next scan.
    reread: Vec<InstanceKey>,
    /// The processes whose ports a scan looks for, by pid.
    port_procs: Vec<crate::enrich::ports::Proc>,
}

impl<C: Collector> Scanner<C> {
    /// Starts the hashing worker.
    pub fn new(collector: C, config: ScanConfig) -> Result<Scanner<C>, Error> {
        let hasher = Hasher::start(
            config.max_hash_size,
            config.hash_cache_entries,
            config.hash_queue,
            config.hash_rate,
        )?;
        Ok(Scanner {
            collector,
            hasher,
            users: UserNames::new(),
            enricher: Enricher::new(config.port_budget),
            tracker: Tracker::new(),
            config,
            scan_seq: 0,
            observed: Vec::new(),
            pending: HashMap::new(),
            waiting: HashMap::new(),
            reread: Vec::new(),
            port_procs: Vec::new(),
        })
    }

    pub fn config(&self) -> &ScanConfig {
        &self.config
    }

    /// Live instances after the last scan.
    pub fn live(&self) -> usize {
        self.tracker.len()
    }

    /// Instances whose hash is not known yet.
    pub fn hashes_pending(&self) -> usize {
        self.pending.len()
    }

    /// Digests in the cache.
    pub fn hashes_cached(&self) -> usize {
        self.hasher.cache_len()
    }

    /// Runs one scan, waiting at most `hash_wait` for the hashes it needs:
    /// those of new instances or, for a `snapshot`, of every live instance.
    pub fn scan(&mut self, snapshot: bool, hash_wait: Duration) -> Scan {
        let mut scan = self.scan_deferred(snapshot, hash_wait);
        if snapshot {
            scan.started = self.snapshot_records().into_iter().cloned().collect();
        }
        scan
    }

    /// Every live instance's record, by pid: a snapshot's `started`, for a
    /// caller that clones them one chunk at a time as it sends them.
    pub fn snapshot_records(&self) -> Vec<&ProcessRecord> {
        let mut records: Vec<(&InstanceKey, &ProcessRecord)> = self.tracker.iter().collect();
        records.sort_unstable_by_key(|(k, _)| **k);
        records.into_iter().map(|(_, r)| r).collect()
    }

    /// [`scan`](Self::scan), except that a snapshot's `started` is left
    /// empty: the caller takes the records from
    /// [`snapshot_records`](Self::snapshot_records) as it sends them,
    /// rather than holding a copy of every record at once.
    pub fn scan_deferred(&mut self, snapshot: bool, hash_wait: Duration) -> Scan {
        let started_at = Instant::now();
        let time_ms = sentineld_common::time::now_millis();
        self.scan_seq += 1;

        let mut observed = std::mem::take(&mut self.observed);
        observed.clear();
        let mut counters = ScanCounters::default();
        self.collector.collect(&mut observed, &mut counters);
        if !observed.is_sorted_by_key(|o| o.pid) {
            observed.sort_unstable_by_key(|o| o.pid);
        }
        self.users.revalidate();

        let mut new_pending = Vec::new();
        let changes = {
            let Scanner {
                collector,
                hasher,
                users,
                tracker,
                ..
            } = self;
            let all = &observed;
            tracker.apply(&observed, |o| {
                let identity = collector.identity(o.pid).unwrap_or_default();
                new_record(o, identity, all, hasher, users, &mut new_pending)
            })
        };
        let execs = self.reread_execs(&observed, &mut new_pending);
        let every = u64::from(self.config.port_every.max(1));
        let ports_due = snapshot || (self.scan_seq - 1).is_multiple_of(every);
        let ports = self.enrich(&observed, ports_due);
        self.observed = observed;

        for key in changes.exited.iter().chain(&execs) {
            self.forget_pending(key);
        }
        for (instance, pending) in new_pending {
            self.waiting
                .entry(pending.key)
                .or_default()
                .instances
                .push(instance);
            self.pending.insert(instance, pending);
        }
        let mut updated = self.wait_for_hashes(snapshot, &changes.started, hash_wait);
        updated.extend_from_slice(&execs);

        // `changes.started` is sorted.
        let started: Vec<ProcessRecord> = if snapshot {
            Vec::new()
        } else {
            changes
                .started
                .iter()
                .filter_map(|k| self.tracker.get(k).cloned())
                .collect()
        };
        updated.sort_unstable();
        updated.dedup();
        let scan = Scan {
            scan_seq: self.scan_seq,
            time_ms,
            duration_us: u64::try_from(started_at.elapsed().as_micros()).unwrap_or(u64::MAX),
            snapshot,
            process_count: u32::try_from(self.tracker.len()).unwrap_or(u32::MAX),
            stats: ScanStats {
                vanished: counters.vanished,
                unreadable: counters.unreadable,
                hash_pending: u32::try_from(self.pending.len()).unwrap_or(u32::MAX),
                ports_skipped: ports.skipped,
                // Filled in when the scan is recorded.
                ..ScanStats::default()
            },
            samples: if snapshot {
                self.tracker.mark_all_sent();
                Vec::new()
            } else {
                self.tracker
                    .samples_to_send(self.scan_seq.is_multiple_of(SAMPLE_EVERY))
            },
            updated: updated
                .iter()
                .filter_map(|k| self.tracker.get(k).cloned())
                .collect(),
            exited: changes.exited.iter().map(|k| k.to_ref()).collect(),
            started,
        };
        debug!(
            scan_seq = scan.scan_seq,
            snapshot,
            processes = scan.process_count,
            started = scan.started.len(),
            exited = scan.exited.len(),
            updated = scan.updated.len(),
            hash_pending = scan.stats.hash_pending,
            vanished = counters.vanished,
            unreadable = counters.unreadable,
            ports_visited = ports.visited,
            ports_skipped = ports.skipped,
            duration_us = scan.duration_us,
            "scan done"
        );
        scan
    }

    /// Sets the enrichment fields of every live instance's sample: open
    /// descriptors; swapped-out memory (0 while the host has no swap in
    /// use, else read when `ports_due` and for new instances, kept in the
    /// scans between); and, when `ports_due`, listening ports within the
    /// time budget (those the budget does not reach, and every process in
    /// the scans between, keep their last ports). Kernel threads have none
    /// of these.
    fn enrich(&mut self, observed: &[Observed], ports_due: bool) -> PortStats {
        let Scanner {
            enricher,
            tracker,
            port_procs,
            ..
        } = self;
        port_procs.clear();
        let own_pid = std::process::id();
        let swap_in_use = enricher.swap_in_use();
        for o in observed.iter().filter(|o| !o.kernel_thread) {
            let key = InstanceKey::of(o);
            if let Some(sample) = tracker.get_mut(&key).and_then(|r| r.sample.as_mut()) {
                sample.open_fds = enricher.open_fds(o.pid, o.start_time);
                if !swap_in_use {
                    sample.swap_bytes = Some(0);
                } else if ports_due || sample.swap_bytes.is_none() {
                    sample.swap_bytes = enricher.swapped(o.pid);
                }
                // procmond listens on nothing, and holds two descriptors
                // per process: a full port walk would read each of them.
                if key.pid != own_pid {
                    port_procs.push((key.pid, key.start_time));
                }
            }
        }
        enricher.end_fd_pass();
        if !ports_due {
            return PortStats::default();
        }
        enricher.listening_ports(port_procs, |i, ports| {
            if let Some(sample) = port_procs
                .get(i)
                .and_then(|&(pid, start_time)| tracker.get_mut(&InstanceKey { pid, start_time }))
                .and_then(|r| r.sample.as_mut())
                && sample.listening_ports != ports
            {
                sample.listening_ports.clear();
                sample.listening_ports.extend_from_slice(ports);
            }
        })
    }

    /// Reads again the record of each known instance that exec'd another
    /// program since the last scan (same pid and start time, new
    /// executable, name and command line), as the collector saw it or as
    /// the hashing worker found it, keeping its latest sample; the scan
    /// sends it as updated, and its new executable is hashed as a new
    /// instance's would be. Returns their keys.
    fn reread_execs(
        &mut self,
        observed: &[Observed],
        new_pending: &mut Vec<(InstanceKey, PendingHash)>,
    ) -> Vec<InstanceKey> {
        let Scanner {
            collector,
            hasher,
            users,
            tracker,
            reread,
            ..
        } = self;
        let mut execs = Vec::new();
        let mut pids = collector.exec_changes().to_vec();
        pids.extend(reread.drain(..).map(|k| k.pid));
        for pid in pids {
            let Ok(i) = observed.binary_search_by_key(&pid, |o| o.pid) else {
                continue;
            };
            let o = &observed[i];
            let key = InstanceKey::of(o);
            // A new instance's record was read in this scan already; one
            // reported twice is read once.
            if tracker.is_new(&key) || tracker.get(&key).is_none() || execs.contains(&key) {
                continue;
            }
            // Gone since it was listed: keep the record it has rather
            // than one with nothing read.
            let Some(identity) = collector.identity(pid) else {
                continue;
            };
            let mut record = new_record(o, identity, observed, hasher, users, new_pending);
            if let Some(current) = tracker.get_mut(&key) {
                record.sample = current.sample.take();
                *current = record;
                execs.push(key);
            }
        }
        if !execs.is_empty() {
            debug!(
                processes = execs.len(),
                "exec'd another program: records read again"
            );
        }
        execs
    }

    /// Drops an exited instance from the hashing bookkeeping.
    fn forget_pending(&mut self, instance: &InstanceKey) {
        let Some(pending) = self.pending.remove(instance) else {
            return;
        };
        if let Some(w) = self.waiting.get_mut(&pending.key) {
            w.instances.retain(|k| k != instance);
            if w.instances.is_empty() && !w.queued {
                self.waiting.remove(&pending.key);
            }
        }
    }

    /// Receives finished hashes until the ones this scan needs are in or
    /// `wait` has passed. Returns the instances reported before whose
    /// record changed.
    fn wait_for_hashes(
        &mut self,
        snapshot: bool,
        started: &[InstanceKey],
        wait: Duration,
    ) -> Vec<InstanceKey> {
        let deadline = Instant::now() + wait;
        let mut updated = Vec::new();
        loop {
            while let Some(done) = self.hasher.try_recv() {
                self.finish(done, snapshot, &mut updated);
            }
            self.submit_waiting();
            let needed = if snapshot {
                !self.pending.is_empty()
            } else {
                started.iter().any(|k| self.pending.contains_key(k))
            };
            if !needed || !self.hasher.busy() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.hasher.recv_timeout(left) {
                Some(done) => self.finish(done, snapshot, &mut updated),
                None => break,
            }
        }
        updated
    }

    /// Queues a job for every file that waits without one, while the queue
    /// has room.
    fn submit_waiting(&mut self) {
        let mut stopped = false;
        for (key, w) in &mut self.waiting {
            if w.queued {
                continue;
            }
            let Some(pending) = w.instances.first().and_then(|k| self.pending.get(k)) else {
                continue;
            };
            let pid = w.instances[0].pid;
            match self.hasher.submit(*key, pid, pending.read_path.clone()) {
                Submit::Queued => w.queued = true,
                Submit::Full => break,
                Submit::Stopped => {
                    stopped = true;
                    break;
                }
            }
        }
        if stopped {
            error!("the hashing worker stopped: executables are no longer hashed");
            let failed: Vec<InstanceKey> = self.pending.keys().copied().collect();
            for k in failed {
                self.pending.remove(&k);
                if let Some(r) = self.tracker.get_mut(&k) {
                    HashOutcome::Error("hashing worker stopped".into())
                        .fill(r.exe_info.get_or_insert_default());
                }
            }
            self.waiting.clear();
        }
    }

    /// Applies a finished job to the instances waiting for it.
    fn finish(&mut self, done: Done, snapshot: bool, updated: &mut Vec<InstanceKey>) {
        let Some(waiters) = self.waiting.remove(&done.key) else {
            return;
        };
        // The file read through /proc/PID/exe is not the one probed: the
        // process exec'd in between (or was caught in the middle of an
        // exec when probed). Its digest says nothing about the probed file.
        let changed = done.read.is_some_and(|read| read != done.key);
        let (settled, others): (Vec<InstanceKey>, Vec<InstanceKey>) =
            if !changed && done.outcome.is_about_the_file() {
                (waiters.instances, Vec::new())
            } else {
                // Read through one process: another process running the
                // same file may still be readable.
                waiters
                    .instances
                    .into_iter()
                    .partition(|k| k.pid == done.pid)
            };
        for k in settled {
            self.pending.remove(&k);
            if changed {
                // Its whole record, not only the executable, is read again
                // at the next scan, when the collector has seen the exec.
                self.reread.push(k);
                continue;
            }
            if let Some(record) = self.tracker.get_mut(&k) {
                done.outcome.fill(record.exe_info.get_or_insert_default());
            }
            if !snapshot && self.tracker.get(&k).is_some() && !self.tracker.is_new(&k) {
                updated.push(k);
            }
        }
        if !others.is_empty() {
            self.waiting.insert(
                done.key,
                Waiters {
                    instances: others,
                    queued: false,
                },
            );
        }
    }
}

/// The wire form of a probe, with the digest from the cache when it is
/// there; otherwise, when the file must be hashed, what to hash.
fn exe_info(probe: hash::ExeProbe, hasher: &mut Hasher) -> (ExeInfo, Option<PendingHash>) {
    let mut info = probe.exe_info();
    let mut pending = None;
    if probe.outcome.is_none()
        && let Some(key) = probe.key
    {
        match hasher.cached(&key) {
            Some(digest) => HashOutcome::Ok(digest).fill(&mut info),
            None => {
                pending = Some(PendingHash {
                    key,
                    read_path: probe.read_path,
                });
            }
        }
    }
    (info, pending)
}

/// Builds the full record of an instance seen for the first time. Its
/// executable is probed; a file to hash that is not in the cache is added
/// to `new_pending` and the record says `PENDING`.
fn new_record(
    o: &Observed,
    identity: Identity,
    all: &[Observed],
    hasher: &mut Hasher,
    users: &mut UserNames,
    new_pending: &mut Vec<(InstanceKey, PendingHash)>,
) -> ProcessRecord {
    let probe = hash::probe_exe(
        o.pid,
        identity.exe.as_deref(),
        o.kernel_thread,
        hasher.max_size(),
    );
    let exe = if probe.path.is_empty() {
        identity
            .exe
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        probe.path.clone()
    };
    let (exe_info, pending) = exe_info(probe, hasher);
    if let Some(pending) = pending {
        new_pending.push((InstanceKey::of(o), pending));
    }
    let parent_start_time = all
        .binary_search_by_key(&o.ppid, |p| p.pid)
        .ok()
        .map_or(0, |i| all[i].start_time);
    ProcessRecord {
        instance: Some(InstanceKey::of(o).to_ref()),
        ppid: o.ppid,
        name: identity.name,
        exe,
        cmdline: identity.cmdline,
        uid: identity.uid,
        user: identity.uid.and_then(|u| users.name(u)).unwrap_or_default(),
        exe_info: Some(exe_info),
        container_id: if o.kernel_thread {
            String::new()
        } else {
            crate::enrich::cgroup::read_container_id(o.pid).unwrap_or_default()
        },
        parent_start_time,
        sample: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Reaped, copy_sleep, spawn_retrying};
    use sentineld_proto::v1::HashStatus;
    use sha2::{Digest as _, Sha256};

    /// A collector that reports what the test tells it to.
    #[derive(Debug, Default)]
    struct Fake {
        procs: Vec<Observed>,
        names: HashMap<u32, String>,
        execs: Vec<u32>,
    }

    impl Collector for Fake {
        fn collect(&mut self, out: &mut Vec<Observed>, counters: &mut ScanCounters) {
            out.extend(self.procs.iter().cloned());
            counters.vanished = 1;
        }

        fn identity(&mut self, pid: u32) -> Option<Identity> {
            Some(Identity {
                name: self.names.get(&pid)?.clone(),
                exe: None,
                cmdline: vec![format!("cmd-{pid}")],
                uid: Some(0),
            })
        }

        fn exec_changes(&self) -> &[u32] {
            &self.execs
        }
    }

    fn observed(pid: u32, ppid: u32, kernel_thread: bool) -> Observed {
        Observed {
            pid,
            ppid,
            start_time: 1_000 + i64::from(pid),
            status: "S",
            threads: 1,
            rss_bytes: 4096,
            vms_bytes: 8192,
            cpu_percent: 0.0,
            kernel_thread,
        }
    }

    fn scanner(procs: Vec<Observed>) -> Scanner<Fake> {
        let names = procs
            .iter()
            .map(|o| (o.pid, format!("p{}", o.pid)))
            .collect();
        Scanner::new(
            Fake {
                procs,
                names,
                execs: Vec::new(),
            },
            ScanConfig::default(),
        )
        .expect("scanner")
    }

    fn pid_of(r: &ProcessRecord) -> u32 {
        r.instance.map_or(0, |i| i.pid)
    }

    fn status(r: &ProcessRecord) -> HashStatus {
        r.exe_info
            .as_ref()
            .map_or(HashStatus::Unspecified, |i| i.hash_status())
    }

    #[test]
    fn a_deferred_snapshot_sends_the_same_records_one_at_a_time() {
        let procs = vec![
            observed(30, 2, true),
            observed(2, 0, true),
            observed(10, 2, true),
        ];
        let mut whole = scanner(procs.clone());
        let mut deferred = scanner(procs);
        whole.scan(false, Duration::ZERO);
        deferred.scan(false, Duration::ZERO);
        let mut expected = whole.scan(true, Duration::ZERO);
        let mut scan = deferred.scan_deferred(true, Duration::ZERO);
        assert!(scan.snapshot && scan.started.is_empty());
        scan.started = deferred.snapshot_records().into_iter().cloned().collect();
        assert_eq!(
            scan.started.iter().map(pid_of).collect::<Vec<_>>(),
            vec![2, 10, 30],
            "by pid"
        );
        (scan.time_ms, scan.duration_us) = (expected.time_ms, expected.duration_us);
        expected.stats.hash_pending = scan.stats.hash_pending;
        assert_eq!(scan, expected);
    }

    #[test]
    fn started_samples_snapshot_and_exit() {
        let mut s = scanner(vec![observed(2, 0, true), observed(10, 2, true)]);
        let first = s.scan(false, Duration::ZERO);
        assert_eq!(first.scan_seq, 1);
        assert!(!first.snapshot);
        assert_eq!(
            first.started.iter().map(pid_of).collect::<Vec<_>>(),
            vec![2, 10]
        );
        assert!(first.samples.is_empty(), "a start carries its own sample");
        assert_eq!(first.process_count, 2);
        assert_eq!(first.stats.vanished, 1);
        let kthread = &first.started[1];
        assert_eq!(kthread.name, "p10");
        assert_eq!(kthread.cmdline, vec!["cmd-10".to_owned()]);
        assert_eq!(kthread.parent_start_time, 1_002);
        assert_eq!(kthread.user, "root");
        assert_eq!(status(kthread), HashStatus::NoExe);
        assert!(kthread.sample.is_some());

        let second = s.scan(false, Duration::ZERO);
        assert!(second.started.is_empty());
        assert!(second.samples.is_empty(), "nothing changed");
        s.collector.procs[1].rss_bytes = 8192;
        let changed = s.scan(false, Duration::ZERO);
        assert_eq!(changed.samples.len(), 1, "only what changed");
        assert_eq!(changed.samples[0].rss_bytes, 8192);
        while s.scan_seq + 1 < SAMPLE_EVERY {
            assert!(s.scan(false, Duration::ZERO).samples.is_empty());
        }
        let every = s.scan(false, Duration::ZERO);
        assert_eq!(every.samples.len(), 2, "all at every SAMPLE_EVERYth scan");

        let snap = s.scan(true, Duration::ZERO);
        assert!(snap.snapshot);
        assert_eq!(snap.started.len(), 2);
        assert!(snap.samples.is_empty());

        s.collector.procs.retain(|o| o.pid != 10);
        let exit = s.scan(false, Duration::ZERO);
        assert_eq!(
            exit.exited.iter().map(|i| i.pid).collect::<Vec<_>>(),
            vec![10]
        );
        assert!(exit.samples.is_empty(), "the snapshot sent them");
        assert_eq!(exit.process_count, 1);
        assert_eq!(exit.scan_seq, SAMPLE_EVERY + 2);
    }

    #[test]
    fn an_exec_of_a_process_gone_before_it_is_read_keeps_its_record() {
        let mut s = scanner(vec![observed(2, 0, true), observed(40, 2, false)]);
        s.scan(false, Duration::ZERO);
        // Reported as exec'd, but nothing can be read of it any more.
        s.collector.names.remove(&40);
        s.collector.execs = vec![40];
        let second = s.scan(false, Duration::ZERO);
        assert!(second.updated.is_empty(), "{:?}", second.updated);
        let key = InstanceKey {
            pid: 40,
            start_time: 1_040,
        };
        assert_eq!(s.tracker.get(&key).unwrap().name, "p40");
    }

    #[test]
    fn an_exec_is_sent_as_an_update_with_the_new_program() {
        let mut s = scanner(vec![observed(2, 0, true), observed(40, 2, false)]);
        let first = s.scan(false, Duration::ZERO);
        assert_eq!(first.started[1].name, "p40");

        s.collector.names.insert(40, "payload".into());
        s.collector.execs = vec![40];
        let second = s.scan(false, Duration::ZERO);
        assert!(second.started.is_empty(), "same instance: not a start");
        assert_eq!(second.updated.len(), 1, "{:?}", second.updated);
        let record = &second.updated[0];
        assert_eq!((pid_of(record), record.name.as_str()), (40, "payload"));
        assert!(record.sample.is_some(), "the sample is kept");

        // Without an exec nothing is read again.
        s.collector.names.insert(40, "other".into());
        s.collector.execs.clear();
        let third = s.scan(false, Duration::ZERO);
        assert!(third.updated.is_empty());
        assert_eq!(
            s.tracker
                .get(&InstanceKey {
                    pid: 40,
                    start_time: 1_040
                })
                .unwrap()
                .name,
            "payload"
        );
    }

    #[test]
    fn vanished_process_is_recorded_as_vanished() {
        // Far above any pid_max, so no such process.
        let mut s = scanner(vec![observed(0x7fff_fff0, 1, false)]);
        let scan = s.scan(false, Duration::ZERO);
        assert_eq!(status(&scan.started[0]), HashStatus::Vanished);
        assert_eq!(s.hashes_pending(), 0);
    }

    #[test]
    fn late_hash_is_sent_as_an_update() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = copy_sleep(dir.path(), "late hash");
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).expect("read copy")).into();
        let child = Reaped(spawn_retrying(&exe, &["30"]));
        let pid = child.0.id();
        let mut s = scanner(vec![observed(pid, 1, false)]);

        let first = s.scan(false, Duration::ZERO);
        assert_eq!(status(&first.started[0]), HashStatus::Pending);
        assert_eq!(first.started[0].exe, exe.to_string_lossy());
        assert_eq!(first.stats.hash_pending, 1);

        let mut update = None;
        for _ in 0..3000 {
            let scan = s.scan(false, Duration::ZERO);
            assert!(scan.started.is_empty());
            if let Some(r) = scan.updated.first() {
                update = Some(r.clone());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let update = update.expect("the hash arrives as an update");
        assert_eq!(pid_of(&update), pid);
        let info = update.exe_info.expect("exe info");
        assert_eq!(info.hash_status(), HashStatus::Ok);
        assert_eq!(info.sha256, digest.to_vec());
        assert_eq!(s.hashes_pending(), 0);
        let after = s.scan(false, Duration::ZERO);
        assert!(after.updated.is_empty(), "an update is sent once");
        assert_eq!(after.stats.hash_pending, 0);
    }

    #[test]
    fn one_file_is_hashed_once_for_many_processes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = copy_sleep(dir.path(), "shared");
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).expect("read copy")).into();
        let a = Reaped(spawn_retrying(&exe, &["30"]));
        let b = Reaped(spawn_retrying(&exe, &["31"]));
        let mut s = scanner(vec![
            observed(a.0.id(), 1, false),
            observed(b.0.id(), 1, false),
        ]);
        let scan = s.scan(false, Duration::from_secs(120));
        assert_eq!(scan.started.len(), 2);
        for r in &scan.started {
            let info = r.exe_info.as_ref().expect("exe info");
            assert_eq!(info.hash_status(), HashStatus::Ok, "{r:?}");
            assert_eq!(info.sha256, digest.to_vec());
        }
        assert_eq!(s.hashes_cached(), 1);

        // A later process running the same file is served from the cache.
        let c = Reaped(spawn_retrying(&exe, &["32"]));
        s.collector.procs.push(observed(c.0.id(), 1, false));
        let scan = s.scan(false, Duration::ZERO);
        assert_eq!(scan.started.len(), 1);
        assert_eq!(status(&scan.started[0]), HashStatus::Ok);
    }

    fn record_of(s: &Scanner<Fake>, pid: u32) -> &ProcessRecord {
        s.tracker
            .iter()
            .find(|(k, _)| k.pid == pid)
            .map(|(_, r)| r)
            .expect("live instance")
    }

    #[test]
    fn a_digest_of_another_file_is_not_taken() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = copy_sleep(dir.path(), "swapped");
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).expect("read copy")).into();
        let child = Reaped(spawn_retrying(&exe, &["30"]));
        let pid = child.0.id();
        let mut s = scanner(vec![observed(pid, 1, false)]);
        s.scan(false, Duration::ZERO);
        // No scan runs between the submission and `finish` below, so the
        // real result stays in the worker's channel.
        let probed = *s.pending.values().next().map(|p| &p.key).expect("pending");

        // The worker read another file through /proc/PID/exe (as after an
        // exec): its digest is not taken, and the whole record is read
        // again at the next scan.
        let other = FileKey {
            inode: probed.inode + 1,
            ..probed
        };
        let mut updated = Vec::new();
        s.finish(
            Done {
                key: probed,
                pid,
                read: Some(other),
                outcome: HashOutcome::Ok([1; 32]),
            },
            false,
            &mut updated,
        );
        assert_eq!(status(record_of(&s, pid)), HashStatus::Pending);
        assert!(updated.is_empty(), "nothing to send before the re-read");
        assert_eq!(s.hashes_pending(), 0);

        let next = s.scan(false, Duration::ZERO);
        assert_eq!(
            next.updated.iter().map(pid_of).collect::<Vec<_>>(),
            vec![pid],
            "the record is read again and sent"
        );
        for _ in 0..3000 {
            if status(record_of(&s, pid)) == HashStatus::Ok {
                break;
            }
            s.scan(false, Duration::ZERO);
            std::thread::sleep(Duration::from_millis(10));
        }
        let info = record_of(&s, pid).exe_info.clone().expect("exe info");
        assert_eq!(info.hash_status(), HashStatus::Ok, "{info:?}");
        assert_eq!(info.sha256, digest.to_vec());
    }

    #[test]
    fn a_vanished_reader_does_not_settle_other_processes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = copy_sleep(dir.path(), "shared vanishing");
        let digest: [u8; 32] = Sha256::digest(std::fs::read(&exe).expect("read copy")).into();
        let a = Reaped(spawn_retrying(&exe, &["30"]));
        let b = Reaped(spawn_retrying(&exe, &["31"]));
        let (pa, pb) = (a.0.id(), b.0.id());
        let mut s = scanner(vec![observed(pa, 1, false), observed(pb, 1, false)]);
        s.scan(false, Duration::ZERO);
        let key = *s.pending.values().next().map(|p| &p.key).expect("pending");
        let mut updated = Vec::new();
        s.finish(
            Done {
                key,
                pid: pa,
                read: None,
                outcome: HashOutcome::Vanished,
            },
            false,
            &mut updated,
        );
        assert_eq!(status(record_of(&s, pa)), HashStatus::Vanished);
        assert_eq!(status(record_of(&s, pb)), HashStatus::Pending);
        assert_eq!(s.hashes_pending(), 1);

        // The other process's hash still arrives.
        for _ in 0..3000 {
            if s.hashes_pending() == 0 {
                break;
            }
            s.scan(false, Duration::ZERO);
            std::thread::sleep(Duration::from_millis(10));
        }
        let info = record_of(&s, pb).exe_info.clone().expect("exe info");
        assert_eq!(info.hash_status(), HashStatus::Ok, "{info:?}");
        assert_eq!(info.sha256, digest.to_vec());
    }
}
