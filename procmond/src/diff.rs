//! The set of live process instances, and what changed between two scans.
//!
//! An instance is (pid, start time) within one boot: a pid reused by a new
//! process (another start time) is a new instance and the old one exited.

use std::collections::HashMap;

use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample};

use crate::collect::Observed;

/// Identity of an instance within this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub pid: u32,
    pub start_time: i64,
}

impl InstanceKey {
    pub fn of(o: &Observed) -> InstanceKey {
        InstanceKey {
            pid: o.pid,
            start_time: o.start_time,
        }
    }

    pub fn to_ref(self) -> InstanceRef {
        InstanceRef {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

/// The compact sample of one observation.
pub fn sample_of(o: &Observed) -> Sample {
    Sample {
        instance: Some(InstanceKey::of(o).to_ref()),
        cpu_percent: o.cpu_percent,
        rss_bytes: o.rss_bytes,
        vms_bytes: o.vms_bytes,
        threads: o.threads,
        open_fds: None,
        status: o.status.to_owned(),
        listening_ports: Vec::new(),
        swap_bytes: None,
    }
}

/// Updates the fields an observation carries; the enrichment fields
/// (`open_fds`, `listening_ports`, `swap_bytes`) are the scanner's to set.
fn update_sample(sample: &mut Sample, o: &Observed) {
    sample.cpu_percent = o.cpu_percent;
    sample.rss_bytes = o.rss_bytes;
    sample.vms_bytes = o.vms_bytes;
    sample.threads = o.threads;
    if sample.status != o.status {
        o.status.clone_into(&mut sample.status);
    }
}

#[derive(Debug)]
struct Entry {
    /// The full record; its `sample` is the latest one.
    record: ProcessRecord,
    first_seen: u64,
    last_seen: u64,
    /// A fingerprint of the sample as last sent (in a record or on its
    /// own): eight bytes per process instead of a copy of the sample.
    sent: Option<u64>,
}

/// What one scan changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Instances seen for the first time, by pid.
    pub started: Vec<InstanceKey>,
    /// Instances seen last time and not this time, by pid.
    pub exited: Vec<InstanceKey>,
}

/// The live instances as of the last scan.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Boxed: a record is a few hundred bytes, and a table of them inline
    /// would carry its spare capacity (and, while growing, two tables) at
    /// that size per slot.
    live: HashMap<InstanceKey, Box<Entry>>,
    scan: u64,
    /// Scratch for sample fingerprints.
    buf: Vec<u8>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Applies one scan. `new_record` builds the full record of an instance
    /// seen for the first time (its sample is then set from the
    /// observation); known instances only get their sample updated.
    pub fn apply(
        &mut self,
        observed: &[Observed],
        mut new_record: impl FnMut(&Observed) -> ProcessRecord,
    ) -> Changes {
        self.scan += 1;
        let scan = self.scan;
        let mut changes = Changes::default();
        for o in observed {
            let key = InstanceKey::of(o);
            match self.live.get_mut(&key) {
                Some(entry) => {
                    entry.last_seen = scan;
                    match &mut entry.record.sample {
                        Some(sample) => update_sample(sample, o),
                        None => entry.record.sample = Some(sample_of(o)),
                    }
                }
                None => {
                    let mut record = new_record(o);
                    record.instance = Some(key.to_ref());
                    record.sample = Some(sample_of(o));
                    self.live.insert(
                        key,
                        Box::new(Entry {
                            record,
                            first_seen: scan,
                            last_seen: scan,
                            sent: None,
                        }),
                    );
                    changes.started.push(key);
                }
            }
        }
        self.live.retain(|key, entry| {
            let alive = entry.last_seen == scan;
            if !alive {
                changes.exited.push(*key);
            }
            alive
        });
        changes.started.sort_unstable();
        changes.exited.sort_unstable();
        changes
    }

    /// Whether `key` was first seen by the last scan.
    pub fn is_new(&self, key: &InstanceKey) -> bool {
        self.live
            .get(key)
            .is_some_and(|e| e.first_seen == self.scan)
    }

    pub fn get(&self, key: &InstanceKey) -> Option<&ProcessRecord> {
        self.live.get(key).map(|e| &e.record)
    }

    pub fn get_mut(&mut self, key: &InstanceKey) -> Option<&mut ProcessRecord> {
        self.live.get_mut(key).map(|e| &mut e.record)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Every live instance with its record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&InstanceKey, &ProcessRecord)> {
        self.live.iter().map(|(k, e)| (k, &e.record))
    }

    /// The samples the last scan sends on their own, by pid: of every
    /// instance that was not new in it (a new one's sample travels in its
    /// record), those that differ from the sample last sent, or all of
    /// them when `all`. Remembers them as sent, and the new instances'
    /// samples too.
    pub fn samples_to_send(&mut self, all: bool) -> Vec<Sample> {
        let scan = self.scan;
        let mut out = Vec::new();
        for e in self.live.values_mut() {
            let Some(sample) = &e.record.sample else {
                continue;
            };
            let now = fingerprint(sample, &mut self.buf);
            if e.first_seen != scan && (all || e.sent != Some(now)) {
                out.push(sample.clone());
            }
            e.sent = Some(now);
        }
        out.sort_unstable_by_key(|s| s.instance.map(|i| (i.pid, i.start_time)));
        out
    }

    /// Every live instance's sample went out in its record (a snapshot).
    pub fn mark_all_sent(&mut self) {
        for e in self.live.values_mut() {
            e.sent = e
                .record
                .sample
                .as_ref()
                .map(|s| fingerprint(s, &mut self.buf));
        }
    }
}

/// A 64-bit hash of the sample's encoding (`buf` is scratch). Two samples
/// that differ hash alike once in 2^64; such a sample would be sent at the
/// next scan that sends every sample.
fn fingerprint(sample: &Sample, buf: &mut Vec<u8>) -> u64 {
    use prost::Message as _;
    use std::hash::{DefaultHasher, Hasher as _};
    buf.clear();
    sample.encode(buf).expect("a Vec grows to hold any message");
    let mut h = DefaultHasher::new();
    h.write(buf);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(pid: u32, start_time: i64, rss: u64) -> Observed {
        Observed {
            pid,
            ppid: 1,
            start_time,
            status: "S",
            threads: 1,
            rss_bytes: rss,
            vms_bytes: 2 * rss,
            cpu_percent: 0.5,
            kernel_thread: false,
        }
    }

    fn named(o: &Observed) -> ProcessRecord {
        ProcessRecord {
            name: format!("p{}", o.pid),
            ppid: o.ppid,
            ..ProcessRecord::default()
        }
    }

    fn key(pid: u32, start_time: i64) -> InstanceKey {
        InstanceKey { pid, start_time }
    }

    #[test]
    fn start_sample_exit() {
        let mut t = Tracker::new();
        let c = t.apply(&[obs(10, 100, 1), obs(11, 100, 1)], named);
        assert_eq!(c.started, vec![key(10, 100), key(11, 100)]);
        assert!(c.exited.is_empty());
        assert!(t.is_new(&key(10, 100)));
        assert!(
            t.samples_to_send(true).is_empty(),
            "new instances carry their sample"
        );
        let first = t.get(&key(10, 100)).expect("live");
        assert_eq!(first.name, "p10");
        assert_eq!(first.instance, Some(key(10, 100).to_ref()));
        assert_eq!(first.sample.as_ref().map(|s| s.rss_bytes), Some(1));

        let mut built = 0;
        let c = t.apply(&[obs(10, 100, 5), obs(12, 101, 1)], |o| {
            built += 1;
            named(o)
        });
        assert_eq!(built, 1, "only the new instance is built");
        assert_eq!(c.started, vec![key(12, 101)]);
        assert_eq!(c.exited, vec![key(11, 100)]);
        assert!(!t.is_new(&key(10, 100)));
        let samples = t.samples_to_send(false);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].instance, Some(key(10, 100).to_ref()));
        assert_eq!(samples[0].rss_bytes, 5);
        assert_eq!(samples[0].vms_bytes, 10);
        assert_eq!(t.len(), 2);

        let c = t.apply(&[], named);
        assert_eq!(c.exited, vec![key(10, 100), key(12, 101)]);
        assert!(t.is_empty());
    }

    #[test]
    fn unchanged_samples_are_sent_only_when_all_are_asked_for() {
        let mut t = Tracker::new();
        t.apply(&[obs(10, 100, 1), obs(11, 100, 1)], named);
        assert!(t.samples_to_send(false).is_empty());
        t.apply(&[obs(10, 100, 1), obs(11, 100, 2)], named);
        let sent = t.samples_to_send(false);
        assert_eq!(sent.len(), 1, "only 11 changed");
        assert_eq!(sent[0].instance, Some(key(11, 100).to_ref()));
        t.apply(&[obs(10, 100, 1), obs(11, 100, 2)], named);
        assert!(t.samples_to_send(false).is_empty(), "nothing changed");
        t.apply(&[obs(10, 100, 1), obs(11, 100, 2)], named);
        assert_eq!(t.samples_to_send(true).len(), 2, "all when asked");

        // After a snapshot, the next scan sends only what changed since.
        t.apply(&[obs(10, 100, 3), obs(11, 100, 2)], named);
        t.mark_all_sent();
        t.apply(&[obs(10, 100, 3), obs(11, 100, 2)], named);
        assert!(t.samples_to_send(false).is_empty());
    }

    #[test]
    fn reused_pid_is_a_new_instance() {
        let mut t = Tracker::new();
        t.apply(&[obs(42, 100, 1)], named);
        let c = t.apply(&[obs(42, 130, 1)], named);
        assert_eq!(c.started, vec![key(42, 130)]);
        assert_eq!(c.exited, vec![key(42, 100)]);
        assert!(t.get(&key(42, 100)).is_none());
        assert!(t.is_new(&key(42, 130)));
    }

    #[test]
    fn status_changes_reach_the_sample() {
        let mut t = Tracker::new();
        t.apply(&[obs(7, 1, 1)], named);
        let mut zombie = obs(7, 1, 1);
        zombie.status = "Z";
        zombie.threads = 0;
        t.apply(&[zombie], named);
        let s = &t.samples_to_send(false)[0];
        assert_eq!((s.status.as_str(), s.threads), ("Z", 0));
    }
}
