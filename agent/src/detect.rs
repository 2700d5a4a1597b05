//! Detection: runs the rules over what the collector reports, off the
//! storage path.
//!
//! The storage thread hands every committed batch to this thread through a
//! bounded channel. The detector keeps its own map of live processes (so a
//! rule can see the parent's name, executable and command line), evaluates
//! the rule set on every new or updated record, and raises at most one alert
//! per (rule, process instance): the alert's id is derived from both, and
//! the store refuses a second alert with the same id, also across restarts.
//! Stored alerts go to the sinks' dispatcher, which never blocks this
//! thread; the delivery attempts it reports are stored here too.
//!
//! Reloads (rules directory changed, SIGHUP) are requested through
//! [`ReloadTrigger`]; a rule set that does not load is refused with every
//! error and the rule set in force stays.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sentineld_proto::v1::{ProcessRecord, Sample, ScanBatch};
use sentineld_proto::view::ProcessView;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use crate::http::ProcessRow;
use crate::observe::AgentState;
use crate::rules::library::{RuleLibrary, sample_rules};
use crate::rules::{Record, RuleSet};
use crate::sinks::{Alert, DeliveryRecord, Dispatcher};
use crate::stats::AgentStats;
use crate::store::{AlertWriter, NewAlert, NewDelivery};

/// Committed batches waiting for the detector. When it is full the storage
/// thread waits, so acknowledgements slow down and the collector's credits
/// hold the backlog: detection is never skipped.
const QUEUE_DEPTH: usize = 64;

/// Most live instances tracked; far above any real host.
const MAX_LIVE: usize = 1 << 20;

/// Most executable paths whose last hash is remembered.
const MAX_EXE_HASHES: usize = 100_000;

/// How often the detector wakes without work, to pick up reloads and
/// delivery records.
const TICK: Duration = Duration::from_millis(200);

/// The live table is published once the batches queued for detection are
/// evaluated, and at least this often while they keep coming.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Directories whose executables are "system binaries" for `hash_changed`.
const SYSTEM_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/lib/",
    "/lib64/",
    "/usr/lib/",
    "/usr/lib64/",
    "/usr/libexec/",
];

/// Where the rules come from; reloads read the same sources.
#[derive(Debug, Clone)]
pub struct RuleSources {
    /// The rules directory; a missing directory holds no rules.
    pub dir: Option<PathBuf>,
    /// Whether the built-in pack is loaded.
    pub builtin: bool,
    /// A file of SHA-256 hashes (hex, one per line, `#` comments) whose
    /// executables raise `hash_denied`.
    pub deny_list: Option<PathBuf>,
}

/// Why the rules or the deny list could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<crate::rules::RuleFileError>),
    #[error("cannot read hash deny list {}: {source}", path.display())]
    DenyListIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "hash deny list {}, line {line}: {text:?} is not a SHA-256 (64 hex digits)",
        path.display()
    )]
    DenyListEntry {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// A loaded rule set with the deny list it goes with.
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    pub deny: HashSet<String>,
    /// The rules that read sample columns, run again when a sample arrives.
    pub on_samples: Option<RuleSet>,
}

/// Loads the rules and the deny list from `sources`; any error fails.
pub fn load(sources: &RuleSources) -> Result<(RuleLibrary, Loaded), LoadError> {
    let (library, rules) =
        RuleLibrary::load(sources.dir.as_deref(), sources.builtin).map_err(LoadError::Rules)?;
    let deny = match &sources.deny_list {
        Some(path) => read_deny_list(path)?,
        None => HashSet::new(),
    };
    Ok((
        library,
        Loaded {
            on_samples: sample_rules(&rules),
            rules,
            deny,
        },
    ))
}

fn read_deny_list(path: &Path) -> Result<HashSet<String>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::DenyListIo {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if entry.len() != 64 || !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(LoadError::DenyListEntry {
                path: path.to_path_buf(),
                line: i + 1,
                text: entry.to_owned(),
            });
        }
        out.insert(entry.to_ascii_lowercase());
    }
    Ok(out)
}

/// Asks the detector to reload its rules. Cheap to clone; requests made
/// before the detector gets to them collapse into one reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadTrigger(Arc<AtomicBool>);

impl ReloadTrigger {
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// A committed batch for the detector.
#[derive(Debug)]
pub(crate) struct Committed {
    pub boot_id: [u8; 16],
    pub batch: ScanBatch,
}

/// The storage thread's side of the channel.
#[derive(Debug, Clone)]
pub(crate) struct DetectHandle {
    tx: SyncSender<Committed>,
}

impl DetectHandle {
    /// Hands a committed batch over, waiting while the detector's queue is
    /// full. Returns false when the detector has stopped.
    pub(crate) fn send(&self, committed: Committed) -> bool {
        match self.tx.try_send(committed) {
            Ok(()) => true,
            Err(TrySendError::Full(committed)) => {
                debug!("detector queue full; storage waits");
                self.tx.send(committed).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Which rules an evaluation runs.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// Every rule: the instance is new or changed.
    All,
    /// Only those reading sample columns: just a sample arrived.
    OnSamples,
}

/// What the detector remembers of a live instance.
#[derive(Debug)]
struct Live {
    boot_id: [u8; 16],
    /// Without its sample, which is `latest`.
    record: ProcessRecord,
    latest: Option<Sample>,
    /// Alert ids raised for this instance (so a long-lived match does not
    /// cost a store lookup every scan).
    fired: HashSet<String>,
    /// Its row in the published process table, made at the first
    /// publication after `record` or `latest` changed and shared by every
    /// publication until the next change.
    row: Option<Arc<ProcessRow>>,
}

impl Live {
    fn view(&self) -> ProcessView {
        ProcessView::new(&self.record, self.latest.as_ref())
    }

    fn start_time(&self) -> i64 {
        self.record.instance.map_or(0, |i| i.start_time)
    }

    /// Its row in the published process table.
    fn row(&mut self) -> Arc<ProcessRow> {
        if let Some(row) = &self.row {
            return Arc::clone(row);
        }
        let v = self.view();
        let row = Arc::new(ProcessRow {
            pid: v.pid,
            name: v.name,
            user: v.user,
            container_id: v.container_id,
            cpu_percent: v.cpu_percent,
            rss_bytes: v.rss_bytes,
            vms_bytes: v.vms_bytes,
            swap_bytes: v.swap_bytes,
            threads: v.threads,
            open_fds: v.open_fds,
            listening_ports: v.listening_ports,
            exe: v.exe,
            cmdline: v.cmdline,
            start_time: v.start_time,
        });
        self.row = Some(Arc::clone(&row));
        row
    }
}

/// The detector's state, owned by its thread.
struct Detector {
    sources: RuleSources,
    library: RuleLibrary,
    loaded: Loaded,
    /// Boxed: an entry is about 600 bytes, and a table of them inline
    /// carries its spare capacity at that size per slot (and two tables
    /// while it grows): 9 MB of the agent's peak at 10,000 processes.
    live: HashMap<u32, Box<Live>>,
    exe_hashes: HashMap<String, [u8; 32]>,
    writer: AlertWriter,
    /// Taken at shutdown, so the sinks see their last sender go.
    dispatcher: Option<Dispatcher>,
    deliveries: tokio::sync::mpsc::Receiver<DeliveryRecord>,
    stats: Arc<AgentStats>,
    host: String,
    /// The rules directory's watch; started at a reload if the directory
    /// appeared after start.
    watcher: Option<notify::RecommendedWatcher>,
    trigger: ReloadTrigger,
    /// Where the live process table is published for the HTTP endpoint.
    state: Arc<AgentState>,
    /// The scans completed since the last publication: their durations,
    /// and the collector's figures with the last.
    unpublished: Option<(Vec<u64>, crate::observe::CollectorSelf)>,
}

/// Starts the detection thread.
#[allow(
    clippy::too_many_arguments,
    reason = "each is a distinct piece the thread owns"
)]
pub(crate) fn spawn(
    sources: RuleSources,
    (library, loaded): (RuleLibrary, Loaded),
    writer: AlertWriter,
    dispatcher: Dispatcher,
    deliveries: tokio::sync::mpsc::Receiver<DeliveryRecord>,
    stats: Arc<AgentStats>,
    reload: ReloadTrigger,
    state: Arc<AgentState>,
) -> std::io::Result<(DetectHandle, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_DEPTH);
    let exe_hashes = match writer.exe_hashes() {
        Ok(list) => list.into_iter().collect(),
        Err(e) => {
            warn!(error = %e, "cannot read remembered executable hashes; starting without");
            HashMap::new()
        }
    };
    let mut detector = Detector {
        sources,
        library,
        loaded,
        live: HashMap::new(),
        exe_hashes,
        writer,
        dispatcher: Some(dispatcher),
        deliveries,
        stats,
        host: sentineld_common::host::hostname(),
        watcher: None,
        trigger: reload.clone(),
        state,
        unpublished: None,
    };
    detector.watch_rules_dir();
    detector.record_rule_set();
    let thread = std::thread::Builder::new()
        .name("detect".into())
        .spawn(move || detector.run(&rx, &reload))?;
    Ok((DetectHandle { tx }, thread))
}

impl Detector {
    fn run(&mut self, rx: &Receiver<Committed>, reload: &ReloadTrigger) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(committed) => {
                    self.on_batch(committed);
                    // What is queued behind it first: under load, a
                    // publication per scan would be rows nobody reads.
                    let until = Instant::now() + PUBLISH_EVERY;
                    while Instant::now() < until {
                        let Ok(committed) = rx.try_recv() else { break };
                        self.on_batch(committed);
                    }
                    if let Some((durations_us, collector)) = self.unpublished.take() {
                        self.publish(&durations_us, collector);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if reload.take() {
                self.reload();
            }
            self.store_deliveries();
        }
        // The sinks drain on shutdown (their token is cancelled, or this
        // was the last dispatcher); store what they report until they end.
        self.dispatcher = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !self.deliveries.is_closed() {
            self.store_deliveries();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.store_deliveries();
        debug!("detector stopped");
    }

    fn watch_rules_dir(&mut self) {
        if self.watcher.is_none()
            && let Some(dir) = &self.sources.dir
        {
            self.watcher = watch(dir, self.trigger.clone());
        }
    }

    fn reload(&mut self) {
        self.watch_rules_dir();
        let reload = self.library.reload();
        let refused = !reload.refused.is_empty();
        for e in &reload.refused {
            error!("rule file refused; its last good version (if any) stays in force: {e}");
        }
        let deny = match &self.sources.deny_list {
            Some(path) => match read_deny_list(path) {
                Ok(deny) => deny,
                Err(e) => {
                    error!("hash deny list not reloaded; the previous one stays in force: {e}");
                    self.loaded.deny.clone()
                }
            },
            None => HashSet::new(),
        };
        if refused {
            self.stats
                .rule_reload_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let Some(rules) = reload.set else {
            error!(
                rules = self.loaded.rules.len(),
                "rules not reloaded; the rule set in force stays"
            );
            if deny != self.loaded.deny {
                info!(hashes = deny.len(), "hash deny list reloaded");
                self.loaded.deny = deny;
            }
            return;
        };
        self.stats.rule_reloads.fetch_add(1, Ordering::Relaxed);
        if rules.digest() == self.loaded.rules.digest() && deny == self.loaded.deny {
            info!(rules = rules.len(), "rules reloaded; unchanged");
            return;
        }
        let previous = self.loaded.rules.len();
        self.loaded = Loaded {
            on_samples: sample_rules(&rules),
            rules,
            deny,
        };
        info!(
            rules = self.loaded.rules.len(),
            previous,
            digest = %self.loaded.rules.digest_hex(),
            "rules reloaded; running them over the live processes"
        );
        self.record_rule_set();
        let pids: Vec<u32> = self.live.keys().copied().collect();
        self.evaluate(&pids, Which::All);
    }

    fn record_rule_set(&self) {
        let rules = &self.loaded.rules;
        let json = serde_json::json!({
            "time": sentineld_common::time::rfc3339_millis(sentineld_common::time::now_millis()),
            "digest": rules.digest_hex(),
            "rules": rules
                .rules()
                .iter()
                .map(|r| serde_json::json!({
                    "id": r.id(),
                    "enabled": r.enabled(),
                    "source": r.source().display().to_string(),
                }))
                .collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        if let Err(e) = self.writer.insert_rule_set(&bytes) {
            warn!(error = %e, "cannot record the loaded rule set in the store");
        }
    }

    fn on_batch(&mut self, committed: Committed) {
        let Committed { boot_id, batch } = committed;
        let (last_chunk, duration_us) = (batch.last_chunk, batch.duration_us);
        let collector = batch.stats.as_ref().map(|s| crate::observe::CollectorSelf {
            wal_bytes: s.wal_bytes,
            cpu_seconds: s.self_cpu_seconds,
            rss_bytes: s.self_rss_bytes,
            missing_capabilities: s.missing_capabilities.clone(),
        });
        if batch.snapshot && batch.chunk == 0 {
            // A new session: what was live may have exited meanwhile.
            self.live.retain(|_, l| l.boot_id == boot_id);
        }
        for exited in &batch.exited {
            if self
                .live
                .get(&exited.pid)
                .is_some_and(|l| l.start_time() == exited.start_time)
            {
                self.live.remove(&exited.pid);
            }
        }
        let mut changed = Vec::with_capacity(batch.started.len() + batch.updated.len());
        for mut record in batch.started.into_iter().chain(batch.updated) {
            let Some(instance) = record.instance else {
                continue;
            };
            if self.live.len() >= MAX_LIVE && !self.live.contains_key(&instance.pid) {
                warn!(pid = instance.pid, "live process table full; not evaluated");
                continue;
            }
            let latest = record.sample.take();
            let entry = self.live.entry(instance.pid);
            let fired = match &entry {
                std::collections::hash_map::Entry::Occupied(o)
                    if o.get().start_time() == instance.start_time =>
                {
                    o.get().fired.clone()
                }
                _ => HashSet::new(),
            };
            entry.insert_entry(Box::new(Live {
                boot_id,
                record,
                latest,
                fired,
                row: None,
            }));
            changed.push(instance.pid);
        }
        let mut sampled = Vec::new();
        for sample in batch.samples {
            let Some(instance) = sample.instance else {
                continue;
            };
            if let Some(live) = self.live.get_mut(&instance.pid)
                && live.start_time() == instance.start_time
            {
                live.latest = Some(sample);
                live.row = None;
                if self.loaded.on_samples.is_some() {
                    sampled.push(instance.pid);
                }
            }
        }
        // Parents first seen in this batch are in the map before any child
        // is evaluated.
        self.evaluate(&changed, Which::All);
        if !sampled.is_empty() {
            self.evaluate(&sampled, Which::OnSamples);
        }
        if last_chunk {
            let collector = collector.unwrap_or_default();
            match &mut self.unpublished {
                Some((durations, last)) => {
                    durations.push(duration_us);
                    *last = collector;
                }
                None => self.unpublished = Some((vec![duration_us], collector)),
            }
        }
    }

    /// Publishes the live process table for the HTTP endpoint.
    fn publish(&mut self, durations_us: &[u64], collector: crate::observe::CollectorSelf) {
        let starts: Vec<i64> = self.live.values().map(|live| live.start_time()).collect();
        let rows = self.live.values_mut().map(|live| live.row()).collect();
        self.state
            .publish_scan(rows, &starts, durations_us, collector);
    }

    /// Evaluates the rule set on the live instances `pids`, stores new
    /// alerts and hands them to the sinks.
    fn evaluate(&mut self, pids: &[u32], which: Which) {
        let rules = match which {
            Which::All => &self.loaded.rules,
            Which::OnSamples => match &self.loaded.on_samples {
                Some(rules) => rules,
                None => return,
            },
        };
        if pids.is_empty() || rules.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut raised: Vec<(u32, Alert)> = Vec::new();
        let mut new_hashes: Vec<(String, [u8; 32])> = Vec::new();
        for &pid in pids {
            let Some(live) = self.live.get(&pid) else {
                continue;
            };
            // The record straight from the stored protobufs (one copy of
            // each string); the user-facing views only for an alert.
            let parent = self.parent_of(live);
            let mut record = Record::from_stored(live.record.clone(), live.latest.clone());
            if let Some(parent) = parent {
                record.set_parent_record(&parent.record);
            }
            if let Some(sha) = &record.sha256 {
                let denied = self.loaded.deny.contains(sha);
                let mut changed = false;
                if let (Some(exe), Ok(bytes)) = (&record.exe, hex_32(sha))
                    && is_system_path(exe)
                    && !record.exe_deleted
                {
                    match self.exe_hashes.get(exe) {
                        Some(previous) if *previous != bytes => {
                            changed = true;
                            new_hashes.push((exe.clone(), bytes));
                        }
                        Some(_) => {}
                        None => new_hashes.push((exe.clone(), bytes)),
                    }
                }
                record.hash_denied = denied;
                record.hash_changed = changed;
            }
            let mut views = None;
            for rule in rules.matching(&record) {
                let id = alert_id(rule.id(), live.boot_id, pid, live.start_time());
                if live.fired.contains(&id) {
                    continue;
                }
                let (process, parent) = views
                    .get_or_insert_with(|| {
                        (
                            serde_json::to_value(live.view()).unwrap_or_default(),
                            parent.map(|p| serde_json::to_value(p.view()).unwrap_or_default()),
                        )
                    })
                    .clone();
                raised.push((
                    pid,
                    Alert {
                        id,
                        rule_id: rule.id().to_owned(),
                        title: rule.title().to_owned(),
                        description: rule.description().to_owned(),
                        severity: rule.severity(),
                        tags: rule.tags().to_vec(),
                        time: sentineld_common::time::rfc3339_millis(
                            sentineld_common::time::now_millis(),
                        ),
                        host: self.host.clone(),
                        process,
                        parent,
                    },
                ));
            }
        }
        let took = started.elapsed();
        self.stats.observe_rule_eval(took, pids.len());
        self.state.observe_rule_eval(took.as_secs_f64());
        self.remember_hashes(new_hashes);
        if raised.is_empty() {
            return;
        }
        self.raise(raised);
    }

    fn parent_of(&self, live: &Live) -> Option<&Live> {
        let parent = self.live.get(&live.record.ppid)?;
        let expected = live.record.parent_start_time;
        (expected == 0 || parent.start_time() == expected).then_some(parent)
    }

    fn remember_hashes(&mut self, new_hashes: Vec<(String, [u8; 32])>) {
        if new_hashes.is_empty() {
            return;
        }
        let entries: Vec<(&str, [u8; 32])> =
            new_hashes.iter().map(|(p, h)| (p.as_str(), *h)).collect();
        if let Err(e) = self.writer.put_exe_hashes(&entries) {
            warn!(error = %e, "cannot remember executable hashes");
        }
        for (path, hash) in new_hashes {
            if self.exe_hashes.len() < MAX_EXE_HASHES || self.exe_hashes.contains_key(&path) {
                self.exe_hashes.insert(path, hash);
            }
        }
    }

    fn raise(&mut self, raised: Vec<(u32, Alert)>) {
        let json: Vec<Vec<u8>> = raised
            .iter()
            .map(|(_, a)| serde_json::to_vec(a).unwrap_or_default())
            .collect();
        let new: Vec<NewAlert<'_>> = raised
            .iter()
            .zip(&json)
            .map(|((_, a), j)| NewAlert { id: &a.id, json: j })
            .collect();
        let stored = match self.writer.insert_alerts(&new) {
            Ok(stored) => stored,
            Err(e) => {
                // Not marked fired: the next evaluation tries again.
                error!(error = %e, alerts = raised.len(), "cannot store alerts");
                return;
            }
        };
        for ((pid, alert), seq) in raised.into_iter().zip(stored) {
            if let Some(live) = self.live.get_mut(&pid) {
                live.fired.insert(alert.id.clone());
            }
            let Some(seq) = seq else {
                continue;
            };
            self.stats.count_alert(alert.severity);
            warn!(
                alert = %alert.id,
                seq,
                rule = %alert.rule_id,
                severity = %alert.severity,
                pid,
                "{}",
                alert.title
            );
            if let Some(dispatcher) = &self.dispatcher {
                dispatcher.send(Arc::new(alert));
            }
        }
    }

    fn store_deliveries(&mut self) {
        let mut records = Vec::new();
        while let Ok(record) = self.deliveries.try_recv() {
            records.push(record);
            if records.len() >= 1000 {
                break;
            }
        }
        if records.is_empty() {
            return;
        }
        let json: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap_or_default())
            .collect();
        let new: Vec<NewDelivery<'_>> = records
            .iter()
            .zip(&json)
            .map(|(r, j)| NewDelivery {
                alert_id: &r.alert_id,
                json: j,
            })
            .collect();
        if let Err(e) = self.writer.insert_deliveries(&new) {
            warn!(error = %e, records = new.len(), "cannot store alert delivery records");
        }
    }
}

/// The stable id of the alert `rule` raises on an instance: the first 16
/// bytes of SHA-256 over the rule id, boot id, pid and start time, in hex.
pub fn alert_id(rule: &str, boot_id: [u8; 16], pid: u32, start_time: i64) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(boot_id);
    h.update(pid.to_le_bytes());
    h.update(start_time.to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

fn is_system_path(exe: &str) -> bool {
    SYSTEM_DIRS.iter().any(|d| exe.starts_with(d))
}

fn hex_32(s: &str) -> Result<[u8; 32], ()> {
    let bytes = hex::decode(s).map_err(|_| ())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ())
}

/// Watches the rules directory and requests a reload when a file in it
/// changes. Returns `None` (and logs why) when it cannot watch; SIGHUP
/// still reloads.
fn watch(dir: &Path, trigger: ReloadTrigger) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    if !dir.is_dir() {
        info!(
            dir = %dir.display(),
            "rules directory does not exist; create it and send SIGHUP to load and watch it"
        );
        return None;
    }
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !event.kind.is_access() => trigger.request(),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "rules directory watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the rules directory; SIGHUP reloads");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        warn!(dir = %dir.display(), error = %e, "cannot watch the rules directory; SIGHUP reloads");
        return None;
    }
    info!(dir = %dir.display(), "watching the rules directory");
    Some(watcher)
}
