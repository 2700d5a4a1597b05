//! The audit ledger: one hash-chained entry per scan, append-only.
//!
//! procmond appends one entry per scan it hands to the agent to
//! `ledger.log` in its state directory. Each entry holds the scan's counts
//! and a SHA-256 digest of the scan's records ([`ScanDigest`]), and the hash
//! of the entry before it, so deleting, reordering or editing an entry
//! breaks the chain at that entry ([`verify`]). The agent computes the same
//! digest over the batches it receives and stores it with the scan, so
//! `sentinelcli audit verify` can also tell a stored scan that was edited or
//! deleted.
//!
//! # Scan digest (version 1)
//!
//! SHA-256 over these bytes, integers little-endian:
//!
//! ```text
//! "sentineld-scan-digest-v1"            24 bytes, once
//! for every chunk (ScanBatch), in the order sent:
//!   for every entry of `started`:  0x01, u32 length, prost bytes of the ProcessRecord
//!   for every entry of `updated`:  0x02, u32 length, prost bytes of the ProcessRecord
//!   for every entry of `samples`:  0x03, u32 length, prost bytes of the Sample
//!   for every entry of `exited`:   0x04, u32 length, prost bytes of the InstanceRef
//! 0xff
//! scan_seq       u64
//! time_ms        i64
//! snapshot       u8 (0 or 1)
//! process_count  u32
//! duration_us    u64
//! vanished       u32   (stats; zero when absent)
//! unreadable     u32
//! hash_pending   u32
//! ```
//!
//! The trailer fields are taken from the last chunk fed (the one with
//! `last_chunk`, which carries the totals). Chunk numbers and `last_chunk`
//! are not hashed. [`Scan::into_batches`](crate::scan::Scan::into_batches)
//! fills chunks in the order started, updated, samples, exited, which is
//! the order the digest visits each chunk in, so the digest does not depend
//! on where a scan is split into chunks. The receiver hashes the messages it
//! decoded; prost re-encodes known fields exactly, but drops unknown ones,
//! so both ends must know the same protobuf fields (an added field needs a
//! new digest version).
//!
//! # The ledger file
//!
//! `ledger.log`: one entry per line, JSON, fields always in this order:
//!
//! ```text
//! {"seq":1,"kind":"scan","time_ms":1700000000000,"scan_seq":1,"boot_id":"<32 hex>",
//!  "process_count":312,"started":312,"updated":0,"exited":0,"samples":0,
//!  "digest":"<64 hex>","prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! - `seq` runs 1, 2, 3, ... with no gap, across restarts.
//! - `kind` is `scan`, or `reset` for the marker written when procmond found
//!   the chain broken (below).
//! - `time_ms` is the scan's start time (unix milliseconds; for a reset,
//!   when it was written); `scan_seq` is the scan's number in its procmond
//!   session (it restarts at 1 with procmond, and merged scans skip
//!   numbers). A stored scan is found by `(boot_id, scan_seq, time_ms)`.
//! - `digest` is the scan digest above; `prev` is the `hash` of the entry
//!   before (64 zeros for the first); `hash` is the entry hash below.
//! - Hex is lowercase. Unknown or missing fields make the line unparseable.
//!
//! # Entry hash (version 1)
//!
//! SHA-256 over a fixed layout, not over the JSON text, integers
//! little-endian:
//!
//! ```text
//! "sentineld-ledger-entry-v1"  25 bytes
//! kind           u8    0 = scan, 1 = reset
//! seq            u64
//! time_ms        i64
//! scan_seq       u64
//! boot_id        16 bytes
//! process_count  u32
//! started        u64
//! updated        u64
//! exited         u64
//! samples        u64
//! digest         32 bytes
//! prev           32 bytes
//! ```
//!
//! # Writing and recovery
//!
//! The file is opened with `O_APPEND` and an exclusive `flock` (one writer);
//! each entry is one `write` of one line followed by `sync_data`. A failed
//! append is cut back off the file. On open:
//!
//! - A torn last line (no newline, or not a valid entry) is what a crash in
//!   the middle of an append leaves: it is truncated, logged and reported
//!   in [`Recovery::torn`].
//! - History is never rewritten. If the chain is broken (an entry edited,
//!   deleted or moved) since the last reset marker, procmond does not
//!   append silently over the break: it appends a `reset` entry that links
//!   to the last entry that parses (its `seq` + 1, its stored `hash` as
//!   `prev`), logs a warning and reports the break in [`Recovery::reset`].
//!   [`verify`] still reports the original break; the reset only says that
//!   procmond noticed it and where the chain goes on from. A ledger whose
//!   chain since its last reset holds gets no new reset on later opens.
//!
//! Deleting the last entries leaves a chain that holds: that is what the
//! head hash (`sentinelcli audit head`, exported elsewhere) and the store's
//! scans without a ledger entry are for.
//!
//! # Segments and rotation
//!
//! The ledger is a directory of segments: the current one, `ledger.log`,
//! and sealed ones, `ledger.<seq>.log`, where `<seq>` is the `seq` of the
//! segment's first entry, zero-padded to 20 digits (so names sort in chain
//! order). The chain runs through them unchanged: the first entry of a
//! segment has as `prev` the `hash` of the last entry of the one before.
//!
//! - When an append would take `ledger.log` past `--ledger-segment-bytes`
//!   (default 16 MiB), procmond seals it: it creates and locks
//!   `ledger.log.next`, renames `ledger.log` to `ledger.<first seq>.log`,
//!   renames `ledger.log.next` to `ledger.log` and syncs the directory, then
//!   appends. A crash between the renames leaves no `ledger.log` (and a
//!   stray `ledger.log.next`, removed at the next start); that is read as an
//!   empty current segment. A failed rotation is logged and the entry is
//!   appended to the current segment anyway.
//! - At most `--ledger-keep` sealed segments (default 64) are kept; the
//!   oldest are removed after a rotation and at start, and the removal is
//!   logged with the first entry that remains.
//! - At start procmond reads only `ledger.log` (bounded by the segment
//!   size) and the last line of the newest sealed segment, which gives the
//!   head when `ledger.log` is empty, and the link the first entry of
//!   `ledger.log` must follow. The recovery rules below apply to
//!   `ledger.log`; a first entry that does not follow the newest sealed
//!   segment is a break like any other.
//! - `verify` on the directory walks the sealed segments in `seq` order, then
//!   `ledger.log`, as one chain, holding one line at a time. A break names
//!   the segment file and the line in it. A torn last line is only expected
//!   in `ledger.log`; in a sealed segment it is a break.
//! - When the oldest segment kept does not start at entry 1, the older ones
//!   were rotated away: the chain is checked from its first entry, anchored
//!   at that entry's `prev`, and reported as such ("entries before N were
//!   rotated away; checked from entry N, whose prev is HASH: compare with a
//!   head anchored earlier"). That is not a break, so deleting the oldest
//!   segments cannot be told from rotation: that is what a head anchored
//!   elsewhere is for. Cutting lines from the top of the oldest segment, or
//!   deleting every sealed segment, is a break (the first entry is not the
//!   one its file's name, or entry 1, says). Deleting, editing or reordering
//!   a segment in the middle breaks the chain at the next entry.
//!
//! # Layout of this module
//!
//! Three sections: the scan digest (depends on `sha2`, `prost` and the
//! protocol only, so it can move to `sentineld-proto`), the entry format
//! and [`verify`] (only `std`, `sha2`, `hex`, `serde_json` and `thiserror`,
//! so it can move to `sentineld-common` for the CLI, which never links
//! procmond), and the writer, [`Ledger`], which is procmond's alone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sentineld_proto::v1::ScanBatch;
use tracing::{info, warn};

pub use sentineld_common::ledger::*;
pub use sentineld_proto::audit::*;

// ---------------------------------------------------------------------------
// The writer: procmond only.
// ---------------------------------------------------------------------------

/// Default size past which the current segment is sealed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// Default number of sealed segments kept.
pub const DEFAULT_KEEP: usize = 64;

/// Name the next current segment is created under before the rotation
/// renames it into place.
const NEXT_NAME: &str = "ledger.log.next";

/// How the ledger is bounded: the current segment is sealed when an append
/// would take it past `segment_bytes`, and at most `keep` sealed segments
/// are kept (the oldest are removed). Validated by procmond's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    pub segment_bytes: u64,
    pub keep: usize,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// What [`Ledger::open`] repaired or noticed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The torn last line that was cut off.
    pub torn: Option<TornTail>,
    /// The break since the last reset (in the current segment, or its link
    /// to the newest sealed one) that made open append a reset entry.
    pub reset: Option<Break>,
}

/// procmond's handle on its ledger: appends one entry per scan, sealing
/// the current segment when it is full.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    config: LedgerConfig,
    /// Length of the current segment after the last good append.
    len: u64,
    /// Sequence number of the current segment's first entry.
    first_seq: Option<u64>,
    head: Option<(u64, [u8; 32])>,
    recovery: Recovery,
}

fn open_current(path: &Path, truncate: bool) -> Result<File, LedgerError> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let file = options.open(path).map_err(|source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(LedgerError::Locked {
                path: path.to_path_buf(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(LedgerError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    if truncate {
        file.set_len(0).map_err(|source| LedgerError::Truncate {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Ledger {
    /// Opens (or creates) the current segment `dir/ledger.log`, takes the
    /// writer's lock, cuts a torn last line and appends a reset entry if
    /// the chain is broken since the last one (see the module doc). Reads
    /// only the current segment, and the end of the newest sealed one.
    pub fn open(dir: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(dir).map_err(|source| LedgerError::Open {
            path: path.clone(),
            source,
        })?;
        let file = open_current(&path, false)?;
        // A rotation interrupted between its two renames leaves this behind.
        let _ = std::fs::remove_file(dir.join(NEXT_NAME));

        let mut lines = read_lines(&file).map_err(|source| LedgerError::Read {
            path: path.clone(),
            source,
        })?;
        let mut recovery = Recovery::default();
        let mut len = lines.last().map_or(0, |l| l.start + l.len);
        if let Some(last) = lines.last()
            && (!last.complete || last.entry.is_none())
        {
            let torn = TornTail {
                line: last.no,
                bytes: last.len,
            };
            len = last.start;
            file.set_len(len)
                .and_then(|()| file.sync_data())
                .map_err(|source| LedgerError::Truncate {
                    path: path.clone(),
                    source,
                })?;
            warn!(
                path = %path.display(),
                line = torn.line,
                bytes = torn.bytes,
                "ledger: torn last line cut off (an append was interrupted)"
            );
            recovery.torn = Some(torn);
            lines.pop();
        }

        let has_reset = lines
            .iter()
            .any(|l| l.entry.is_some_and(|e| e.kind == EntryKind::Reset));
        // The newest sealed segment gives the head when the current one is
        // empty, and the link its first entry must follow otherwise.
        let sealed_head = if has_reset {
            None
        } else {
            newest_sealed_head(dir)?
        };
        let head = lines
            .iter()
            .rev()
            .find_map(|l| l.entry.map(|e| (e.seq, e.hash)))
            .or(sealed_head);
        let first_seq = lines.iter().find_map(|l| l.entry.map(|e| e.seq));
        let mut ledger = Ledger {
            dir: dir.to_path_buf(),
            path,
            file,
            config,
            len,
            first_seq,
            head,
            recovery,
        };
        let start = sealed_head.map_or((1, ZERO_HASH), |(seq, hash)| (seq.saturating_add(1), hash));
        if let Some(broken) = break_since_last_reset(&lines, start) {
            warn!(
                path = %ledger.path.display(),
                %broken,
                "ledger: the chain is broken; history is kept and a reset entry continues it"
            );
            let reset = NewEntry {
                time_ms: sentineld_common::time::now_millis(),
                scan_seq: 0,
                boot_id: sentineld_common::host::boot_id(),
                process_count: 0,
                started: 0,
                updated: 0,
                exited: 0,
                samples: 0,
                digest: ZERO_HASH,
            };
            ledger.push(EntryKind::Reset, &reset)?;
            ledger.recovery.reset = Some(broken);
        }
        ledger.remove_old_segments();
        Ok(ledger)
    }

    /// The current segment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening repaired or noticed.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Sequence number and hash of the last entry.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        self.head
    }

    /// Appends the entry of one scan and syncs it to disk.
    pub fn append(&mut self, entry: NewEntry) -> Result<Entry, LedgerError> {
        self.push(EntryKind::Scan, &entry)
    }

    /// Appends the entry of the scan sent as `batches` (its chunks, in
    /// order).
    pub fn append_scan(
        &mut self,
        boot_id: [u8; 16],
        batches: &[ScanBatch],
    ) -> Result<Entry, LedgerError> {
        self.append_summary(boot_id, scan_summary(batches))
    }

    /// [`append_scan`](Ledger::append_scan) for a scan whose chunks were
    /// fed to a [`ScanDigest`] as they were made.
    pub fn append_summary(
        &mut self,
        boot_id: [u8; 16],
        s: ScanSummary,
    ) -> Result<Entry, LedgerError> {
        self.append(NewEntry {
            time_ms: s.time_ms,
            scan_seq: s.scan_seq,
            boot_id,
            process_count: s.process_count,
            started: s.started,
            updated: s.updated,
            exited: s.exited,
            samples: s.samples,
            digest: s.digest,
        })
    }

    fn push(&mut self, kind: EntryKind, new: &NewEntry) -> Result<Entry, LedgerError> {
        let (seq, prev) = match self.head {
            Some((seq, hash)) => (seq.saturating_add(1), hash),
            None => (1, ZERO_HASH),
        };
        let entry = Entry::seal(kind, seq, new, prev);
        let line = entry.to_line();
        if self.len > 0 && self.len.saturating_add(line.len() as u64) > self.config.segment_bytes {
            // An entry is never lost to a failed rotation: the current
            // segment grows past its bound and the next append tries again.
            match self.rotate() {
                Ok(()) => self.remove_old_segments(),
                Err(e) => {
                    warn!(error = %e, "ledger: cannot seal the current segment; appending to it")
                }
            }
        }
        let written = (&self.file)
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Leave no partial line for the next append to follow.
            if let Err(e) = self.file.set_len(self.len) {
                warn!(path = %self.path.display(), error = %e, "ledger: cannot cut a failed append off");
            }
            return Err(LedgerError::Write {
                path: self.path.clone(),
                source,
            });
        }
        if self.len == 0 {
            self.first_seq = Some(seq);
        }
        self.len += line.len() as u64;
        self.head = Some((seq, entry.hash));
        Ok(entry)
    }

    /// Seals the current segment as `ledger.<first seq>.log` and starts an
    /// empty one. The new file is created and locked first, so the
    /// writer's lock is never let go; each rename is atomic and the
    /// directory is synced after them. A crash between the renames leaves
    /// no current segment, which open treats as empty (its head comes
    /// from the newest sealed segment).
    fn rotate(&mut self) -> Result<(), LedgerError> {
        let first = self.first_seq.or(self.head.map(|h| h.0)).unwrap_or(1);
        let sealed = self.dir.join(segment_name(first));
        let rotate_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Rotate { path, source }
        };
        if sealed.exists() {
            return Err(LedgerError::Rotate {
                path: sealed,
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let next_path = self.dir.join(NEXT_NAME);
        let next = open_current(&next_path, true)?;
        std::fs::rename(&self.path, &sealed).map_err(rotate_err(&sealed))?;
        std::fs::rename(&next_path, &self.path).map_err(rotate_err(&self.path))?;
        sync_dir(&self.dir).map_err(rotate_err(&self.dir))?;
        info!(
            sealed = %sealed.display(),
            first_seq = first,
            last_seq = self.head.map_or(0, |h| h.0),
            bytes = self.len,
            "ledger: segment sealed"
        );
        self.file = next;
        self.len = 0;
        self.first_seq = None;
        Ok(())
    }

    /// Removes the oldest sealed segments past `keep`; logs the first entry
    /// that remains. Failures are logged: the ledger only grows longer.
    fn remove_old_segments(&self) {
        let sealed = match sealed_segments(&self.dir) {
            Ok(sealed) => sealed,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "ledger: cannot list the sealed segments");
                return;
            }
        };
        let excess = sealed.len().saturating_sub(self.config.keep);
        if excess == 0 {
            return;
        }
        let mut removed = 0usize;
        for (_, path) in &sealed[..excess] {
            match std::fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "ledger: cannot remove an old sealed segment");
                    break;
                }
            }
        }
        if removed == 0 {
            return;
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "ledger: cannot sync the directory");
        }
        let first_kept = sealed
            .get(removed)
            .map_or_else(|| self.first_seq.unwrap_or(0), |(seq, _)| *seq);
        info!(
            removed,
            first_kept_seq = first_kept,
            keep = self.config.keep,
            "ledger: oldest sealed segments removed; entries before first_kept_seq are rotated away"
        );
    }
}

/// Sequence number and hash of the last entry of the newest sealed
/// segment in `dir`, read from its end; `None` when there is none. When
/// its last line is not an entry (sealed segments are never written
/// again, so it was tampered with), the whole segment, which is bounded,
/// is read for the last entry that parses.
fn newest_sealed_head(dir: &Path) -> Result<Option<(u64, [u8; 32])>, LedgerError> {
    let sealed = sealed_segments(dir).map_err(|source| LedgerError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let Some((_, path)) = sealed.last() else {
        return Ok(None);
    };
    let read_err = |source| LedgerError::Read {
        path: path.clone(),
        source,
    };
    if let Some(e) = last_entry(path).map_err(read_err)? {
        return Ok(Some((e.seq, e.hash)));
    }
    warn!(path = %path.display(), "ledger: the newest sealed segment does not end with an entry");
    let file = File::open(path).map_err(read_err)?;
    Ok(read_lines(&file)
        .map_err(read_err)?
        .iter()
        .rev()
        .find_map(|l| l.entry.map(|e| (e.seq, e.hash))))
}

/// The first break in the current segment's chain since its last reset
/// entry, or since its start, which follows entry `start.0 - 1` with hash
/// `start.1` (the newest sealed segment's last, or nothing).
fn break_since_last_reset(lines: &[RawLine], start: (u64, [u8; 32])) -> Option<Break> {
    let reset = lines
        .iter()
        .rposition(|l| l.entry.is_some_and(|e| e.kind == EntryKind::Reset));
    match reset {
        None => walk(lines, start.0, start.1),
        Some(i) => {
            let line = &lines[i];
            let e = line.entry.expect("the reset line parsed");
            if e.computed_hash() != e.hash {
                return Some(Break::Edited {
                    seq: e.seq,
                    line: line.no,
                });
            }
            walk(&lines[i + 1..], e.seq.saturating_add(1), e.hash)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use sentineld_proto::v1::{InstanceRef, ProcessRecord, Sample, ScanStats};
    use tempfile::TempDir;

    use crate::ledger::*;
    use crate::scan::Scan;

    const BOOT: [u8; 16] = [7; 16];

    fn new_entry(n: u64) -> NewEntry {
        NewEntry {
            time_ms: 1_700_000_000_000 + n as i64,
            scan_seq: n,
            boot_id: BOOT,
            process_count: 100 + n as u32,
            started: n,
            updated: 0,
            exited: 1,
            samples: 99,
            digest: [n as u8; 32],
        }
    }

    fn first_break(report: &VerifyReport) -> Option<Break> {
        report.first_break.as_ref().map(|b| b.at)
    }

    fn ledger_with(n: u64) -> (TempDir, Ledger) {
        let dir = TempDir::new().unwrap();
        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        for i in 1..=n {
            ledger.append(new_entry(i)).unwrap();
        }
        (dir, ledger)
    }

    fn lines(dir: &TempDir) -> Vec<String> {
        std::fs::read_to_string(dir.path().join(FILE_NAME))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(dir: &TempDir, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
    }

    #[test]
    fn append_reopen_and_continue() {
        let (dir, ledger) = ledger_with(3);
        let head = ledger.head().unwrap();
        assert_eq!(head.0, 3);
        drop(ledger);

        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(ledger.recovery(), Recovery::default());
        assert_eq!(ledger.head(), Some(head));
        let e4 = ledger.append(new_entry(4)).unwrap();
        assert_eq!((e4.seq, e4.prev), (4, head.1));
        ledger.append(new_entry(5)).unwrap();

        let (report, entries) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        assert_eq!(report.torn_tail, None);
        assert_eq!(report.head(), ledger.head());
        let seqs: Vec<u64> = entries.iter().map(|l| l.entry.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(entries[0].entry.prev, ZERO_HASH);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].entry.prev, pair[0].entry.hash);
        }
        assert_eq!(entries[3].entry, e4);
        assert_eq!(entries[3].line, 4);
    }

    #[test]
    fn empty_and_missing_ledgers() {
        let dir = TempDir::new().unwrap();
        assert!(matches!(verify(dir.path()), Err(LedgerError::Open { .. })));
        let ledger = Ledger::open(&dir.path().join("state"), LedgerConfig::default()).unwrap();
        assert_eq!(ledger.head(), None);
        let (report, entries) = verify(ledger.path()).unwrap();
        assert!(report.is_intact());
        assert!(entries.is_empty());
        assert_eq!(report.head(), None);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let (dir, _ledger) = ledger_with(1);
        let err = Ledger::open(dir.path(), LedgerConfig::default()).unwrap_err();
        assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another process"));
    }

    #[test]
    fn line_format_round_trips() {
        let e = Entry::seal(EntryKind::Scan, 9, &new_entry(9), [3; 32]);
        let line = e.to_line();
        assert!(line.starts_with("{\"seq\":9,\"kind\":\"scan\",\"time_ms\":1700000000009,"));
        assert!(line.ends_with("\"}\n"));
        assert_eq!(Entry::parse_line(line.as_bytes()), Some(e));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["boot_id"], hex::encode(BOOT));

        let extra = line.replacen("{", "{\"note\":1,", 1);
        assert_eq!(Entry::parse_line(extra.as_bytes()), None);
        let upper = line.replace(&hex::encode(e.hash), &hex::encode_upper(e.hash));
        assert_eq!(Entry::parse_line(upper.as_bytes()), None);
        let missing = line.replace(",\"samples\":99", "");
        assert_eq!(Entry::parse_line(missing.as_bytes()), None);
        assert_eq!(Entry::parse_line(b"{\"seq\":1"), None);
    }

    #[test]
    fn every_field_is_in_the_hash() {
        let base = Entry::seal(EntryKind::Scan, 2, &new_entry(2), [1; 32]);
        let edits: Vec<fn(&mut Entry)> = vec![
            |e| e.kind = EntryKind::Reset,
            |e| e.seq += 1,
            |e| e.time_ms += 1,
            |e| e.scan_seq += 1,
            |e| e.boot_id[15] ^= 1,
            |e| e.process_count += 1,
            |e| e.started += 1,
            |e| e.updated += 1,
            |e| e.exited += 1,
            |e| e.samples += 1,
            |e| e.digest[0] ^= 1,
            |e| e.prev[31] ^= 1,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut e = base;
            edit(&mut e);
            assert_ne!(e.computed_hash(), base.hash, "field {i} is not hashed");
        }
    }

    #[test]
    fn an_edited_entry_is_found() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        let mut text = lines(&dir);
        text[2] = text[2].replace("\"process_count\":103", "\"process_count\":3");
        write_lines(&dir, &text);
        let (report, entries) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::Edited { seq: 3, line: 3 })
        );
        assert_eq!(entries.len(), 5);
    }

    #[test]
    fn an_edited_entry_with_a_fresh_hash_breaks_the_next_link() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        let mut text = lines(&dir);
        let mut e = Entry::parse_line(text[2].as_bytes()).unwrap();
        e.process_count = 3;
        e.hash = e.computed_hash();
        text[2] = e.to_line().trim_end().to_owned();
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::BadPrev { seq: 4, line: 4 })
        );
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        let mut text = lines(&dir);
        text.remove(2);
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::Deleted {
                expected_seq: 3,
                found_seq: 4,
                line: 3
            })
        );
        assert_eq!(
            first_break(&report).unwrap().to_string(),
            "entry 3 is missing before line 3"
        );

        let mut text = lines(&dir);
        text.remove(0);
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::Deleted {
                expected_seq: 1,
                found_seq: 2,
                line: 1
            })
        );
    }

    #[test]
    fn reordered_entries_are_found() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        let mut text = lines(&dir);
        text.swap(1, 2);
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::Reordered {
                expected_seq: 2,
                found_seq: 3,
                line: 2
            })
        );

        // A duplicated entry is out of place too.
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        let mut text = lines(&dir);
        text.push(text[1].clone());
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            first_break(&report),
            Some(Break::Reordered {
                expected_seq: 4,
                found_seq: 2,
                line: 4
            })
        );
    }

    #[test]
    fn garbage_in_the_middle_is_unparseable() {
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        let mut text = lines(&dir);
        text.insert(1, "x".repeat(10_000));
        write_lines(&dir, &text);
        let (report, entries) = verify(dir.path()).unwrap();
        assert_eq!(first_break(&report), Some(Break::Unparseable { line: 2 }));
        let seen: Vec<u64> = entries.iter().map(|l| l.line).collect();
        assert_eq!(seen, vec![1, 3, 4], "lines are counted past a long one");
    }

    #[test]
    fn a_torn_last_line_is_cut_off_on_open() {
        let (dir, ledger) = ledger_with(3);
        let head = ledger.head();
        drop(ledger);
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::metadata(&path).unwrap().len();
        let partial =
            &Entry::seal(EntryKind::Scan, 4, &new_entry(4), head.unwrap().1).to_line()[..50];
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(partial.as_bytes()).unwrap();
        drop(f);

        // A reader beside the writer sees an append in progress, not a break.
        let (report, _) = verify(&path).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.torn_tail, Some(TornTail { line: 4, bytes: 50 }));
        assert_eq!(report.head(), head);

        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(
            ledger.recovery(),
            Recovery {
                torn: Some(TornTail { line: 4, bytes: 50 }),
                reset: None
            }
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert_eq!(ledger.head(), head);
        assert_eq!(ledger.append(new_entry(4)).unwrap().seq, 4);
        let (report, entries) = verify(&path).unwrap();
        assert!(report.is_intact());
        assert_eq!((entries.len(), report.torn_tail), (4, None));
    }

    #[test]
    fn an_unparseable_last_line_is_cut_off_on_open() {
        let (dir, ledger) = ledger_with(2);
        drop(ledger);
        let mut text = lines(&dir);
        text.push("{\"seq\":3,\"kind\":".into());
        write_lines(&dir, &text);
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(first_break(&report), Some(Break::Unparseable { line: 3 }));

        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(ledger.recovery().torn.map(|t| t.line), Some(3));
        assert_eq!(ledger.recovery().reset, None);
        drop(ledger);
        assert!(verify(dir.path()).unwrap().0.is_intact());
    }

    #[test]
    fn a_broken_chain_gets_a_reset_once_and_keeps_its_history() {
        let (dir, ledger) = ledger_with(5);
        drop(ledger);
        let mut text = lines(&dir);
        text.remove(1);
        write_lines(&dir, &text);
        let last = Entry::parse_line(text[3].as_bytes()).unwrap();

        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let deleted = Break::Deleted {
            expected_seq: 2,
            found_seq: 3,
            line: 2,
        };
        assert_eq!(ledger.recovery().reset, Some(deleted));
        assert_eq!(ledger.head().map(|h| h.0), Some(6));
        ledger.append(new_entry(7)).unwrap();
        drop(ledger);

        let after = lines(&dir);
        assert_eq!(after[..4], text[..], "history is not rewritten");
        let reset = Entry::parse_line(after[4].as_bytes()).unwrap();
        assert_eq!(reset.kind, EntryKind::Reset);
        assert_eq!((reset.seq, reset.prev), (6, last.hash));

        // The original break stays visible; the reset itself links.
        let (report, entries) = verify(dir.path()).unwrap();
        assert_eq!(first_break(&report), Some(deleted));
        assert_eq!(entries.len(), 6);

        // The chain since the reset holds: no second reset.
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(ledger.recovery(), Recovery::default());
        assert_eq!(ledger.head().map(|h| h.0), Some(7));
    }

    #[test]
    fn a_break_after_a_reset_gets_another_reset() {
        let (dir, ledger) = ledger_with(3);
        drop(ledger);
        let mut text = lines(&dir);
        text.swap(0, 1);
        write_lines(&dir, &text);
        let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        ledger.append(new_entry(5)).unwrap();
        ledger.append(new_entry(6)).unwrap();
        drop(ledger);

        let mut text = lines(&dir);
        text[5] = text[5].replace("\"exited\":1", "\"exited\":2");
        write_lines(&dir, &text);
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(
            ledger.recovery().reset,
            Some(Break::Edited { seq: 6, line: 6 })
        );
        assert_eq!(ledger.head().map(|h| h.0), Some(7));
    }

    // Rotation.

    const TINY: LedgerConfig = LedgerConfig {
        segment_bytes: 4096,
        keep: 100,
    };

    fn rotated_with(n: u64, config: LedgerConfig) -> (TempDir, Ledger, Vec<Entry>) {
        let dir = TempDir::new().unwrap();
        let mut ledger = Ledger::open(dir.path(), config).unwrap();
        let entries = (1..=n)
            .map(|i| ledger.append(new_entry(i)).unwrap())
            .collect();
        (dir, ledger, entries)
    }

    #[test]
    fn the_ledger_rotates_at_its_segment_size_and_stays_one_chain() {
        let (dir, ledger, written) = rotated_with(40, TINY);
        let sealed = sealed_segments(dir.path()).unwrap();
        assert!(sealed.len() >= 3, "{sealed:?}");
        for (seq, path) in &sealed {
            let len = std::fs::metadata(path).unwrap().len();
            assert!(
                len <= TINY.segment_bytes && len > TINY.segment_bytes / 2,
                "{len}"
            );
            let text = std::fs::read_to_string(path).unwrap();
            let first = Entry::parse_line(text.lines().next().unwrap().as_bytes()).unwrap();
            assert_eq!(first.seq, *seq, "{} starts with its entry", path.display());
        }
        // The current segment's first entry links to the last sealed one.
        let current = lines(&dir);
        let first = Entry::parse_line(current[0].as_bytes()).unwrap();
        assert_eq!(first.prev, written[first.seq as usize - 2].hash);

        let (report, entries) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        assert_eq!((report.entries, report.rotated.clone()), (40, None));
        assert_eq!(report.files.len(), sealed.len() + 1);
        assert_eq!(report.head(), ledger.head());
        let seqs: Vec<u64> = entries.iter().map(|l| l.entry.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        assert_eq!(*entries[0].file, *sealed[0].1);
        assert_eq!(entries[0].line, 1);
    }

    #[test]
    fn only_the_newest_sealed_segments_are_kept() {
        let config = LedgerConfig {
            segment_bytes: 4096,
            keep: 2,
        };
        let (dir, ledger, written) = rotated_with(60, config);
        let sealed = sealed_segments(dir.path()).unwrap();
        assert_eq!(sealed.len(), 2, "{sealed:?}");
        let oldest = sealed[0].0;
        assert!(oldest > 1);

        let (report, entries) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        let rotated = report.rotated.clone().unwrap();
        assert_eq!(rotated.first_seq, oldest);
        assert_eq!(rotated.prev, written[oldest as usize - 2].hash);
        assert_eq!(*rotated.file, *sealed[0].1);
        assert!(
            rotated
                .to_string()
                .starts_with(&format!("entries before {oldest} were rotated away"))
        );
        assert_eq!(entries[0].entry.seq, oldest);
        assert_eq!(report.entries, 60 - oldest + 1);
        assert_eq!(report.head(), ledger.head());

        // A smaller keep takes effect when procmond starts again.
        drop(ledger);
        let keep_one = LedgerConfig { keep: 1, ..config };
        let ledger = Ledger::open(dir.path(), keep_one).unwrap();
        assert_eq!(ledger.recovery(), Recovery::default());
        assert_eq!(sealed_segments(dir.path()).unwrap(), sealed[1..]);
    }

    #[test]
    fn a_restart_after_rotation_takes_the_head_from_the_sealed_segment() {
        let (dir, ledger, written) = rotated_with(20, TINY);
        let head = ledger.head().unwrap();
        drop(ledger);

        // Reopened with entries in the current segment.
        let ledger = Ledger::open(dir.path(), TINY).unwrap();
        assert_eq!(
            (ledger.recovery(), ledger.head()),
            (Recovery::default(), Some(head))
        );
        drop(ledger);

        // Reopened right after a rotation: the current segment is missing
        // (a crash between the renames) or empty.
        let first = Entry::parse_line(lines(&dir)[0].as_bytes()).unwrap().seq;
        let current = dir.path().join(FILE_NAME);
        std::fs::rename(&current, dir.path().join(segment_name(first))).unwrap();
        std::fs::write(dir.path().join(NEXT_NAME), "").unwrap();
        let mut ledger = Ledger::open(dir.path(), TINY).unwrap();
        assert_eq!(
            (ledger.recovery(), ledger.head()),
            (Recovery::default(), Some(head))
        );
        assert!(!dir.path().join(NEXT_NAME).exists());
        assert_eq!(std::fs::metadata(&current).unwrap().len(), 0);
        let e = ledger.append(new_entry(21)).unwrap();
        assert_eq!((e.seq, e.prev), (21, written[19].hash));
        drop(ledger);
        let (report, _) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        assert_eq!(report.entries, 21);
    }

    #[test]
    fn a_torn_tail_in_the_current_segment_is_cut_after_rotation() {
        let (dir, ledger, _) = rotated_with(25, TINY);
        let head = ledger.head().unwrap();
        drop(ledger);
        let current = dir.path().join(FILE_NAME);
        let good = std::fs::metadata(&current).unwrap().len();
        let partial = &Entry::seal(EntryKind::Scan, 26, &new_entry(26), head.1).to_line()[..70];
        let mut f = OpenOptions::new().append(true).open(&current).unwrap();
        f.write_all(partial.as_bytes()).unwrap();
        drop(f);
        let (report, _) = verify(dir.path()).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.torn_tail.map(|t| t.bytes), Some(70));

        let ledger = Ledger::open(dir.path(), TINY).unwrap();
        assert_eq!(ledger.recovery().torn.map(|t| t.bytes), Some(70));
        assert_eq!((ledger.recovery().reset, ledger.head()), (None, Some(head)));
        assert_eq!(std::fs::metadata(&current).unwrap().len(), good);
    }

    #[test]
    fn a_current_segment_that_does_not_link_to_the_sealed_one_gets_a_reset() {
        let (dir, ledger, written) = rotated_with(20, TINY);
        drop(ledger);
        // The sealed segment's last entry deleted.
        let (_, newest) = sealed_segments(dir.path()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&newest).unwrap();
        let kept: Vec<&str> = text.lines().collect();
        let last = Entry::parse_line(kept[kept.len() - 1].as_bytes()).unwrap();
        let mut cut = kept[..kept.len() - 1].join("\n");
        cut.push('\n');
        std::fs::write(&newest, cut).unwrap();

        let ledger = Ledger::open(dir.path(), TINY).unwrap();
        let ledger_break = |seq: u64| Break::Deleted {
            expected_seq: seq,
            found_seq: seq + 1,
            line: 1,
        };
        assert_eq!(ledger.recovery().reset, Some(ledger_break(last.seq)));
        assert_eq!(ledger.head().map(|h| h.0), Some(21));
        drop(ledger);
        let (report, _) = verify(dir.path()).unwrap();
        // Reported in the segment after the one cut (the reset may have
        // sealed the current one).
        let b = report.first_break.unwrap();
        assert_eq!(b.at, ledger_break(last.seq));
        assert_ne!(b.file, newest);
        assert_eq!(written.len(), 20);
    }

    // Scan digest.

    fn instance(pid: u32) -> InstanceRef {
        InstanceRef {
            pid,
            start_time: 1000 + i64::from(pid),
        }
    }

    fn sample(pid: u32) -> Sample {
        Sample {
            instance: Some(instance(pid)),
            cpu_percent: 1.5,
            rss_bytes: 4096 * u64::from(pid),
            status: "S".into(),
            ..Sample::default()
        }
    }

    fn record(pid: u32) -> ProcessRecord {
        ProcessRecord {
            instance: Some(instance(pid)),
            ppid: 1,
            name: format!("p{pid}"),
            cmdline: vec![format!("/bin/p{pid}"), "--flag".into()],
            sample: Some(sample(pid)),
            ..ProcessRecord::default()
        }
    }

    fn scan() -> Scan {
        Scan {
            scan_seq: 12,
            time_ms: 1_700_000_000_123,
            duration_us: 900,
            snapshot: false,
            process_count: 40,
            stats: ScanStats {
                vanished: 1,
                unreadable: 0,
                hash_pending: 2,
                ..ScanStats::default()
            },
            started: (1..=5).map(record).collect(),
            exited: (20..=22).map(instance).collect(),
            samples: (6..=15).map(sample).collect(),
            updated: vec![record(30)],
        }
    }

    #[test]
    fn digest_is_deterministic_and_independent_of_chunking() {
        let whole = scan_summary(&scan().into_batches(1000));
        assert_eq!(whole, scan_summary(&scan().into_batches(1000)));
        for chunk in [1, 2, 3, 7, 18, 19] {
            let batches = scan().into_batches(chunk);
            assert_eq!(scan_summary(&batches), whole, "{chunk} records per chunk");
        }
        assert_eq!(
            (whole.scan_seq, whole.time_ms, whole.process_count),
            (12, 1_700_000_000_123, 40)
        );
        assert_eq!(
            (whole.started, whole.updated, whole.exited, whole.samples),
            (5, 1, 3, 10)
        );
        assert_eq!(scan_digest(&scan().into_batches(4)), whole.digest);

        // Incremental, as the agent receives the chunks.
        let mut d = ScanDigest::new();
        for b in &scan().into_batches(3) {
            d.update(b);
        }
        assert_eq!(d.finish(), whole);
    }

    #[test]
    fn digest_changes_with_any_content() {
        let base = scan_digest(&scan().into_batches(4));
        type Edit = fn(&mut Scan);
        let edits: Vec<(&str, Edit)> = vec![
            ("record name", |s| s.started[2].name.push('x')),
            ("nested sample", |s| {
                s.started[0].sample.as_mut().unwrap().rss_bytes += 1;
            }),
            ("sample cpu", |s| s.samples[9].cpu_percent = 1.25),
            ("exited", |s| s.exited[1].start_time += 1),
            ("updated", |s| s.updated[0].ppid = 2),
            ("dropped sample", |s| {
                s.samples.pop();
            }),
            ("moved from updated to started", |s| {
                let r = s.updated.remove(0);
                s.started.push(r);
            }),
            ("order", |s| s.samples.swap(0, 1)),
            ("scan_seq", |s| s.scan_seq += 1),
            ("time_ms", |s| s.time_ms += 1),
            ("snapshot", |s| s.snapshot = true),
            ("process_count", |s| s.process_count += 1),
            ("duration", |s| s.duration_us += 1),
            ("stats", |s| s.stats.vanished += 1),
        ];
        for (what, edit) in edits {
            let mut s = scan();
            edit(&mut s);
            assert_ne!(scan_digest(&s.into_batches(4)), base, "{what}");
        }
    }

    #[test]
    fn an_empty_scan_has_a_digest() {
        let empty = Scan {
            scan_seq: 1,
            ..Scan::default()
        };
        let summary = scan_summary(&empty.into_batches(1000));
        assert_eq!(summary.started + summary.samples, 0);
        assert_ne!(summary.digest, scan_digest(&[]));
    }

    #[test]
    fn append_scan_records_the_summary() {
        let (dir, mut ledger) = ledger_with(0);
        let batches = scan().into_batches(5);
        let e = ledger.append_scan(BOOT, &batches).unwrap();
        let s = scan_summary(&batches);
        assert_eq!(
            (e.kind, e.seq, e.scan_seq, e.time_ms, e.digest),
            (EntryKind::Scan, 1, 12, s.time_ms, s.digest)
        );
        assert_eq!((e.started, e.updated, e.exited, e.samples), (5, 1, 3, 10));
        assert_eq!((e.process_count, e.boot_id), (40, BOOT));
        let (report, entries) = verify(dir.path()).unwrap();
        assert!(report.is_intact());
        assert_eq!(entries[0].entry, e);
    }
}
