//! procmond's write-ahead log: every scan batch is appended here before it
//! is sent, and stays until the agent acknowledges it.
//!
//! The API is synchronous; the owner runs it on the scan thread or in
//! `spawn_blocking`. One [`Wal`] owns one directory (an advisory lock on
//! `DIR/lock` keeps a second procmond out).
//!
//! # Files
//!
//! ```text
//! DIR/                                  created with mode 0700
//!   lock                                empty; locked while a Wal is open
//!   ack                                 the acknowledgement watermark
//!   wal-00000000000000000001.log        segments, named after their first id
//!   wal-00000000000000004097.log        the last one is the active segment
//! ```
//!
//! A **segment** is a concatenation of entries, nothing else (no header, no
//! footer). An **entry** is one frame of the wire codec
//! ([`sentineld_proto::codec`], `docs/wire-format.md`):
//!
//! ```text
//! offset  size  field
//! 0       4     N, payload length, u32 little-endian (at most MAX_FRAME_LEN)
//! 4       4     CRC-32 (IEEE) of the N payload bytes, u32 little-endian
//! 8       N     prost Envelope {
//!                 version  = PROTOCOL_MAJOR,
//!                 sequence = the entry's WAL id,
//!                 body     = scan_batch: the ScanBatch as appended
//!               }
//! ```
//!
//! The envelope's `sequence` is the entry's **WAL id**: a u64 that starts
//! at 1 and only grows, across segments and restarts. It is *not* the
//! per-connection sequence of the socket: the client numbers the envelopes
//! it sends itself and maps the agent's acks back to WAL ids.
//!
//! The **ack file** is one frame of the same codec holding
//! `Envelope { version, sequence: 0, body: Ack { sequence: W } }`: every
//! entry with an id ≤ W is acknowledged. It is replaced atomically (write
//! `ack.tmp`, fdatasync, rename, fsync of the directory). A missing or
//! invalid ack file reads as W = 0: at worst batches are sent twice, never
//! lost.
//!
//! # Invariants
//!
//! - Ids strictly increase through a segment and from one segment to the
//!   next; a segment's name is ≤ every id it holds and > every id of the
//!   segments before it. Coalescing may remove ids, so ids are not
//!   contiguous.
//! - After [`Wal::open`] there is always at least one segment; only the last
//!   one (the active segment) is ever written to, at its logical length.
//!   The next id is above the active segment's name, every id on disk and
//!   the watermark: an id is never handed out twice while a Wal is open,
//!   and after a restart only an id that coalescing removed from the very
//!   end of the log (and so exists nowhere) can come back.
//! - A segment is deleted only when every entry it holds is acknowledged
//!   (and the watermark was persisted first); an entry is rewritten only by
//!   coalescing, which writes the new segment beside the old one and renames
//!   it over it.
//! - [`Wal::bytes`] is the sum of the segments' sizes and stays ≤
//!   [`WalConfig::max_bytes`] after every append: an append that would go
//!   over first coalesces the backlog, oldest segment first, until there is
//!   room: each segment rewritten loses its acknowledged entries and the
//!   samples of its unacknowledged batches; a batch left with no record
//!   that is not the last chunk of its scan goes entirely; starts, updates,
//!   exits and scan totals are kept. If the backlog has no samples left,
//!   the new batch loses its own. When even that cannot make room, the
//!   append is refused with [`WalError::Full`] and nothing is changed.
//!   Every sample and batch dropped, and every append refused, is counted
//!   in [`WalStats`].
//! - Recovery reads every segment through the codec. A bad frame in the
//!   last segment is a torn tail: the file is truncated there. A bad frame
//!   in an earlier segment ends that segment's readable entries; its bytes
//!   are kept on disk until the entries before them are acknowledged (or
//!   coalescing rewrites the segment). Both are logged and reported in
//!   [`RecoveryReport`].
//!
//! # Durability
//!
//! With [`SyncPolicy::EveryBatch`] an append returns after fdatasync of its
//! segment. With [`SyncPolicy::Interval`] appends are group-committed: an
//! append syncs only when the interval has passed since the last sync, and
//! the owner calls [`Wal::sync_now`] when [`Wal::needs_sync`] says so (on a
//! timer of the interval), so a crash loses at most the last interval of
//! batches. The watermark is persisted on the same schedule, and always
//! before a segment is deleted: a lost ack only means a batch is sent again.

mod format;
#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sentineld_proto::FrameError;
use sentineld_proto::v1::ScanBatch;
use tracing::{debug, info, warn};

use crate::wal::format::{
    ACK_FILE, BadEntry, LOCK_FILE, TMP_SUFFIX, decode_ack, droppable_without_samples, encode_ack,
    encode_entry, parse_segment_name, read_entry, reclaimable, segment_name, stripped,
};

/// Default size at which the active segment is rotated (8 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default bound of the whole WAL on disk (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// When appended entries reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fdatasync after every append.
    EveryBatch,
    /// Group commit: fdatasync at most once per interval (see
    /// [`Wal::needs_sync`]).
    Interval(Duration),
}

/// How a [`Wal`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// A segment is rotated before an append would take it past this size
    /// (a single entry larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Bound of all segments together.
    pub max_bytes: u64,
    pub sync: SyncPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
        }
    }
}

/// Counters since the WAL was opened (gauges for `bytes` and
/// `entries_unacked`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Entries appended.
    pub appended: u64,
    /// Entries acknowledged.
    pub acked: u64,
    /// Bytes of all segments on disk.
    pub bytes: u64,
    /// Entries not yet acknowledged.
    pub entries_unacked: u64,
    /// Samples removed by coalescing (from the backlog or from the batch
    /// being appended), including those of dropped batches.
    pub samples_dropped: u64,
    /// Unacknowledged batches removed entirely by coalescing.
    pub batches_dropped: u64,
    /// Appends refused with [`WalError::Full`]; their batches are in
    /// neither count above.
    pub appends_refused: u64,
    /// fdatasync calls on segment data.
    pub syncs: u64,
    /// Segments truncated at a torn or corrupt tail when opening.
    pub torn_tail_truncations: u64,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Valid entries found (acknowledged or not).
    pub entries: u64,
    /// Entries above the watermark, to be replayed.
    pub unacked: u64,
    /// The persisted watermark: entries up to this id were acknowledged.
    pub acked_through: u64,
    /// Bytes cut off the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// The first segment found with a bad frame, torn tail included.
    pub corrupt_segment: Option<PathBuf>,
    /// The ack file existed but was not valid; the watermark was reset to
    /// 0 (acknowledged batches still on disk are replayed once more).
    pub ack_file_invalid: bool,
}

impl RecoveryReport {
    /// Whether anything was wrong on disk.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0 && self.corrupt_segment.is_none() && !self.ack_file_invalid
    }
}

/// Why the WAL cannot do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("invalid WAL settings for {dir}: {reason}")]
    Config { dir: PathBuf, reason: &'static str },
    #[error(
        "the WAL directory {dir} is used by another procmond: stop it, or give this one another --state-dir"
    )]
    Locked { dir: PathBuf },
    #[error("no space left for the WAL in {dir}: free space or lower --wal-max-bytes")]
    NoSpace {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the WAL in {dir} is full ({bytes} of {max} bytes, {need} more needed) even with every sample dropped: is sentinelagent running and acknowledging? otherwise raise --wal-max-bytes"
    )]
    Full {
        dir: PathBuf,
        bytes: u64,
        max: u64,
        need: u64,
    },
    #[error("a batch cannot be written to the WAL in {dir}: {source} (lower --chunk-records)")]
    Encode {
        dir: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error(
        "the WAL segment {path} changed under procmond or is damaged at byte {offset}: {reason} (restart procmond to recover it)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl WalError {
    /// A short, stable name for metrics labels and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            WalError::Config { .. } => "config",
            WalError::Locked { .. } => "locked",
            WalError::NoSpace { .. } => "no_space",
            WalError::Io { .. } => "io",
            WalError::Full { .. } => "full",
            WalError::Encode { .. } => "encode",
            WalError::Corrupt { .. } => "corrupt",
        }
    }
}

/// Maps an I/O error on `path` to a [`WalError`]; a full disk is
/// [`WalError::NoSpace`] for the whole directory.
fn io_error(dir: &Path, op: &'static str, path: &Path, source: io::Error) -> WalError {
    if source.kind() == io::ErrorKind::StorageFull {
        WalError::NoSpace {
            dir: dir.to_path_buf(),
            source,
        }
    } else {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where one entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u64,
    offset: u64,
    len: u64,
    /// Bytes saved by dropping its samples (see [`format::reclaimable`]).
    reclaim: u64,
}

impl Entry {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// One segment file and the index of its readable entries.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes of the file (for a non-last segment, possibly more than its
    /// entries cover: an unreadable remainder kept on disk).
    len: u64,
    entries: Vec<Entry>,
}

impl Segment {
    fn last_id(&self) -> Option<u64> {
        self.entries.last().map(|e| e.id)
    }
}

/// The write-ahead log. See the module documentation.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    /// Ordered by first id; never empty; the last is the active segment.
    segments: Vec<Segment>,
    /// Write handle of the active segment.
    active: File,
    /// The active file may hold bytes past its logical length (a failed
    /// write); cut them before it stops being the last segment.
    active_needs_trim: bool,
    next_id: u64,
    /// Every id ≤ this is acknowledged.
    acked: u64,
    /// The watermark on disk.
    acked_on_disk: u64,
    /// Entries were written to the active segment since its last sync.
    dirty: bool,
    /// The last append had to make room (logs once per episode).
    full: bool,
    last_sync: Instant,
    bytes: u64,
    stats: WalStats,
    /// Moves whenever coalescing rewrites an unacknowledged entry.
    backlog_version: u64,
    /// Held for the lifetime of the Wal: the directory's advisory lock.
    _lock: File,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, recovering what a
    /// previous run left: torn tails are truncated, acknowledged segments
    /// deleted, and the rest indexed for [`Wal::unacked`].
    pub fn open(dir: &Path, config: WalConfig) -> Result<(Wal, RecoveryReport), WalError> {
        let dir = dir.to_path_buf();
        if config.segment_bytes == 0 {
            return Err(WalError::Config {
                dir,
                reason: "the segment size must be above 0",
            });
        }
        if config.max_bytes == 0 {
            return Err(WalError::Config {
                dir,
                reason: "the WAL bound (--wal-max-bytes) must be above 0",
            });
        }
        create_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let mut report = RecoveryReport::default();
        let mut stats = WalStats::default();

        let mut names = list_segments(&dir)?;
        names.sort_unstable();
        let (acked, ack_invalid) = read_ack(&dir)?;
        report.acked_through = acked;
        report.ack_file_invalid = ack_invalid;

        let mut segments = Vec::with_capacity(names.len());
        let mut last_id = 0u64;
        let count = names.len();
        for (i, first) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let segment = recover_segment(&dir, first, &mut last_id, is_last, &mut report)?;
            if is_last && report.truncated_bytes > 0 {
                stats.torn_tail_truncations += 1;
            }
            segments.push(segment);
        }
        report.segments = segments.len();
        report.entries = segments.iter().map(|s| s.entries.len() as u64).sum();
        report.unacked = segments
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|e| e.id > acked)
            .count() as u64;

        let floor = segments.last().map_or(1, |s| s.first);
        let next_id = floor
            .max(last_id.saturating_add(1))
            .max(acked.saturating_add(1));
        if segments.is_empty() {
            let path = dir.join(segment_name(next_id));
            create_segment(&dir, &path)?;
            sync_dir(&dir)?;
            segments.push(Segment {
                first: next_id,
                path,
                len: 0,
                entries: Vec::new(),
            });
        }
        let active = open_active(&dir, segments.last().map(|s| s.path.as_path()))?;
        let bytes = segments.iter().map(|s| s.len).sum();
        stats.entries_unacked = report.unacked;
        stats.bytes = bytes;
        let mut wal = Wal {
            dir,
            config,
            segments,
            active,
            active_needs_trim: false,
            next_id,
            acked,
            acked_on_disk: acked,
            dirty: false,
            full: false,
            last_sync: Instant::now(),
            bytes,
            stats,
            backlog_version: 0,
            _lock: lock,
        };
        wal.delete_acked_segments()?;
        info!(
            dir = %wal.dir.display(),
            segments = report.segments,
            entries = report.entries,
            unacked = report.unacked,
            acked_through = acked,
            truncated_bytes = report.truncated_bytes,
            "write-ahead log opened"
        );
        Ok((wal, report))
    }

    /// Appends `batch`, returning its WAL id. Syncs according to the
    /// policy, rotates the active segment by size, and coalesces the backlog
    /// when the bound would be exceeded.
    ///
    /// [`WalError::Full`] means the batch was not written (and is counted
    /// in [`WalStats::appends_refused`]).
    pub fn append(&mut self, batch: &ScanBatch) -> Result<u64, WalError> {
        let id = self.next_id;
        let mut frame = self.encode(id, batch)?;
        let mut reclaim = reclaimable(id, batch) as u64;
        let over = self.over_by(frame.len() as u64);
        if over > 0 {
            let stripped;
            (frame, stripped) = self.make_room(over, id, batch, frame)?;
            if stripped {
                reclaim = 0;
            }
        } else if self.full {
            self.full = false;
            info!(dir = %self.dir.display(), "the WAL has room again");
        }
        let len = frame.len() as u64;
        let active_len = self.active_segment().len;
        if active_len > 0 && active_len.saturating_add(len) > self.config.segment_bytes {
            self.rotate()?;
        }
        self.write_active(&frame)?;
        let segment = self.active_segment_mut();
        let offset = segment.len;
        segment.entries.push(Entry {
            id,
            offset,
            len,
            reclaim,
        });
        segment.len += len;
        self.bytes += len;
        self.next_id += 1;
        self.dirty = true;
        let due = match self.config.sync {
            SyncPolicy::EveryBatch => true,
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
        };
        if due && let Err(e) = self.sync_now() {
            self.unappend(offset);
            return Err(e);
        }
        self.stats.appended += 1;
        self.stats.entries_unacked += 1;
        Ok(id)
    }

    /// Takes back the entry just written at `offset` of the active segment
    /// after its sync failed, so that an error from [`Wal::append`] always
    /// means "not in the log". Its id is not reused.
    fn unappend(&mut self, offset: u64) {
        let segment = self.active_segment_mut();
        let len = segment.len - offset;
        segment.entries.pop();
        segment.len = offset;
        self.bytes -= len;
        if self.active.set_len(offset).is_err() {
            self.active_needs_trim = true;
        }
    }

    /// Marks every entry with an id ≤ `up_to_id` acknowledged, deletes the
    /// segments that leaves with nothing to send, and starts a fresh active
    /// segment when the current one is fully acknowledged and at least a
    /// quarter full. Ids above the last appended one are clamped; an older
    /// watermark is ignored.
    pub fn ack(&mut self, up_to_id: u64) -> Result<(), WalError> {
        let up_to = up_to_id.min(self.next_id - 1);
        if up_to <= self.acked {
            return Ok(());
        }
        let newly = self
            .segments
            .iter()
            .flat_map(|s| &s.entries)
            .skip_while(|e| e.id <= self.acked)
            .take_while(|e| e.id <= up_to)
            .count() as u64;
        self.acked = up_to;
        self.stats.acked += newly;
        self.stats.entries_unacked -= newly;
        let active = self.active_segment();
        let reset = active.last_id().is_some_and(|last| last <= up_to)
            && active.len >= (self.config.segment_bytes / 4).max(1);
        if reset {
            self.rotate()?;
        }
        let deleted = self.delete_acked_segments()?;
        if !deleted && self.config.sync == SyncPolicy::EveryBatch {
            self.persist_ack()?;
        }
        Ok(())
    }

    /// Every unacknowledged batch, oldest first, read from disk as the
    /// iterator goes. The iterator stops after its first error.
    pub fn unacked(&self) -> Unacked<'_> {
        self.unacked_after(0)
    }

    /// Like [`Wal::unacked`], starting after WAL id `after` (to replay in
    /// slices without holding the Wal).
    pub fn unacked_after(&self, after: u64) -> Unacked<'_> {
        Unacked {
            wal: self,
            floor: after.max(self.acked),
            segment: 0,
            entry: 0,
            reader: None,
            done: false,
        }
    }

    /// Up to `max` unacknowledged batches with an id above `after`.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<(u64, ScanBatch)>, WalError> {
        self.unacked_after(after).take(max).collect()
    }

    /// fdatasyncs the active segment if it has unsynced entries, and
    /// persists the watermark if it moved.
    pub fn sync_now(&mut self) -> Result<(), WalError> {
        if self.dirty {
            self.active
                .sync_data()
                .map_err(|e| io_error(&self.dir, "sync", &self.active_segment().path, e))?;
            self.stats.syncs += 1;
            self.dirty = false;
        }
        self.persist_ack()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Whether the owner should call [`Wal::sync_now`]: something is
    /// unsynced and the policy's interval has passed.
    pub fn needs_sync(&self) -> bool {
        let pending = self.dirty || self.acked_on_disk != self.acked;
        pending
            && match self.config.sync {
                SyncPolicy::EveryBatch => true,
                SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            }
    }

    /// Bytes of all segments on disk.
    /// Changes whenever coalescing rewrites an unacknowledged entry: a
    /// reader holding entries it read earlier reads them again when this
    /// has moved, and can keep them as long as it has not.
    pub fn backlog_version(&self) -> u64 {
        self.backlog_version
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The configured bound of [`Wal::bytes`].
    pub fn max_bytes(&self) -> u64 {
        self.config.max_bytes
    }

    /// Every entry with an id ≤ this is acknowledged.
    pub fn acked_through(&self) -> u64 {
        self.acked
    }

    /// The id the next append will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes: self.bytes,
            ..self.stats
        }
    }

    fn active_segment(&self) -> &Segment {
        self.segments
            .last()
            .expect("a Wal always has an active segment")
    }

    fn active_segment_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a Wal always has an active segment")
    }

    fn encode(&self, id: u64, batch: &ScanBatch) -> Result<Vec<u8>, WalError> {
        encode_entry(id, batch).map_err(|source| WalError::Encode {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Bytes by which appending `len` more would exceed the bound.
    fn over_by(&self, len: u64) -> u64 {
        self.bytes
            .saturating_add(len)
            .saturating_sub(self.config.max_bytes)
    }

    /// Frees at least `over` bytes by coalescing the backlog and, last, by
    /// dropping the samples of the batch being appended; returns the frame
    /// to write. Nothing is changed when that could not free enough.
    fn make_room(
        &mut self,
        over: u64,
        id: u64,
        batch: &ScanBatch,
        frame: Vec<u8>,
    ) -> Result<(Vec<u8>, bool), WalError> {
        let backlog: u64 = self
            .segments
            .iter()
            .map(|s| {
                // Bytes past the readable entries go too.
                let tail = s.len - s.entries.last().map_or(0, Entry::end);
                tail + s
                    .entries
                    .iter()
                    .map(|e| if e.id <= self.acked { e.len } else { e.reclaim })
                    .sum::<u64>()
            })
            .sum();
        let own = if batch.samples.is_empty() {
            0
        } else {
            frame.len() as u64 - self.encode(id, &stripped(batch))?.len() as u64
        };
        if backlog.saturating_add(own) < over {
            return Err(self.refuse(over));
        }
        self.coalesce(over)?;
        let over = self.over_by(frame.len() as u64);
        if over == 0 {
            return Ok((frame, false));
        }
        let frame = self.encode(id, &stripped(batch))?;
        let over = self.over_by(frame.len() as u64);
        if over > 0 {
            return Err(self.refuse(over));
        }
        self.stats.samples_dropped += batch.samples.len() as u64;
        debug!(
            dir = %self.dir.display(),
            id,
            samples = batch.samples.len(),
            "the WAL is full: the new batch's samples dropped"
        );
        Ok((frame, true))
    }

    fn refuse(&mut self, over: u64) -> WalError {
        self.stats.appends_refused += 1;
        WalError::Full {
            dir: self.dir.clone(),
            bytes: self.bytes,
            max: self.config.max_bytes,
            need: over,
        }
    }

    /// Rewrites segments oldest first until at least `want` bytes are
    /// freed or the backlog has nothing more to give.
    ///
    /// A segment is coalesced as a whole (every sample in it goes, not just
    /// enough of them): rewriting it costs the same either way, and the
    /// room made lasts for many appends instead of one.
    fn coalesce(&mut self, want: u64) -> Result<(), WalError> {
        let mut freed = 0u64;
        let mut i = 0;
        let (samples_before, batches_before) =
            (self.stats.samples_dropped, self.stats.batches_dropped);
        while freed < want && i < self.segments.len() {
            freed += self.rewrite_segment(i)?;
            let segment = &self.segments[i];
            if segment.len == 0 && i + 1 < self.segments.len() {
                remove_file(&self.dir, &segment.path)?;
                self.segments.remove(i);
            } else {
                i += 1;
            }
        }
        sync_dir(&self.dir)?;
        let samples = self.stats.samples_dropped - samples_before;
        let batches = self.stats.batches_dropped - batches_before;
        if self.full {
            debug!(dir = %self.dir.display(), freed, samples, batches, "the WAL is full: backlog coalesced");
        } else {
            // Once per episode: while the agent stays away every append may
            // coalesce again.
            self.full = true;
            warn!(
                dir = %self.dir.display(),
                freed,
                samples_dropped = samples,
                batches_dropped = batches,
                "the WAL is full: unacknowledged samples are dropped, oldest first (starts and exits are kept)"
            );
        }
        Ok(())
    }

    /// Rewrites segment `i` without its acknowledged entries, its
    /// unreadable remainder and the samples of its unacknowledged entries;
    /// returns the bytes freed.
    fn rewrite_segment(&mut self, i: usize) -> Result<u64, WalError> {
        let acked = self.acked;
        let segment = &self.segments[i];
        let end = segment.entries.last().map_or(0, Entry::end);
        let has_work = segment.len > end
            || segment
                .entries
                .iter()
                .any(|e| e.id <= acked || e.reclaim > 0);
        if !has_work {
            return Ok(0);
        }
        let path = segment.path.clone();
        let old_len = segment.len;
        let data = read_prefix(&self.dir, &path, end)?;
        let mut out = Vec::with_capacity(data.len());
        let mut entries = Vec::with_capacity(segment.entries.len());
        let mut freed = old_len - end;
        let (mut samples, mut batches) = (0u64, 0u64);
        for e in &segment.entries {
            let raw = usize::try_from(e.offset)
                .ok()
                .zip(usize::try_from(e.end()).ok())
                .and_then(|(from, to)| data.get(from..to))
                .ok_or_else(|| WalError::Corrupt {
                    path: path.clone(),
                    offset: e.offset,
                    reason: "the file is shorter than its index".to_owned(),
                })?;
            if e.id <= acked {
                freed += e.len;
                continue;
            }
            if e.reclaim > 0 {
                let batch = decode_raw(&path, e, raw)?;
                samples += batch.samples.len() as u64;
                if droppable_without_samples(&batch) {
                    batches += 1;
                    freed += e.len;
                    continue;
                }
                let frame = self.encode(e.id, &stripped(&batch))?;
                freed += e.len.saturating_sub(frame.len() as u64);
                entries.push(Entry {
                    id: e.id,
                    offset: out.len() as u64,
                    len: frame.len() as u64,
                    reclaim: 0,
                });
                out.extend_from_slice(&frame);
            } else {
                entries.push(Entry {
                    offset: out.len() as u64,
                    ..*e
                });
                out.extend_from_slice(raw);
            }
        }
        let is_active = i + 1 == self.segments.len();
        let tmp = tmp_path(&path);
        write_new_file(&self.dir, &tmp, &out)?;
        fs::rename(&tmp, &path).map_err(|e| io_error(&self.dir, "rename", &tmp, e))?;
        if is_active {
            self.active = open_active(&self.dir, Some(&path))?;
            self.active_needs_trim = false;
            // The rewrite was synced as a whole.
            self.dirty = false;
        }
        let new_len = out.len() as u64;
        let segment = &mut self.segments[i];
        segment.entries = entries;
        segment.len = new_len;
        self.bytes = self.bytes - old_len + new_len;
        self.stats.samples_dropped += samples;
        self.stats.batches_dropped += batches;
        self.stats.entries_unacked -= batches;
        if samples > 0 || batches > 0 {
            self.backlog_version += 1;
        }
        debug!(path = %path.display(), old_len, new_len, samples, batches, "WAL segment coalesced");
        Ok(freed)
    }

    /// Writes `frame` at the active segment's logical end.
    fn write_active(&mut self, frame: &[u8]) -> Result<(), WalError> {
        let at = self.active_segment().len;
        let result = self
            .active
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.active.write_all(frame));
        if let Err(e) = result {
            // Best effort: cut the partial entry now; if that fails too, the
            // next write overwrites it and rotation or recovery cuts the rest.
            if self.active.set_len(at).is_err() {
                self.active_needs_trim = true;
            }
            return Err(io_error(&self.dir, "write", &self.active_segment().path, e));
        }
        Ok(())
    }

    /// Starts a new active segment named after the next id; the old one is
    /// synced (and trimmed) first, so only the last segment can be torn.
    fn rotate(&mut self) -> Result<(), WalError> {
        let old = self.active_segment();
        let old_path = old.path.clone();
        let old_len = old.len;
        if self.active_needs_trim {
            self.active
                .set_len(old_len)
                .map_err(|e| io_error(&self.dir, "truncate", &old_path, e))?;
            self.active_needs_trim = false;
            self.dirty = true;
        }
        if self.dirty {
            self.active
                .sync_data()
                .map_err(|e| io_error(&self.dir, "sync", &old_path, e))?;
            self.stats.syncs += 1;
            self.dirty = false;
        }
        let path = self.dir.join(segment_name(self.next_id));
        self.active = create_segment(&self.dir, &path)?;
        sync_dir(&self.dir)?;
        debug!(path = %path.display(), "WAL segment started");
        self.segments.push(Segment {
            first: self.next_id,
            path,
            len: 0,
            entries: Vec::new(),
        });
        Ok(())
    }

    /// Deletes the leading segments (never the active one) whose entries
    /// are all acknowledged, persisting the watermark first. Returns whether
    /// any was deleted.
    fn delete_acked_segments(&mut self) -> Result<bool, WalError> {
        let doomed = self
            .segments
            .iter()
            .take(self.segments.len() - 1)
            .take_while(|s| s.last_id().is_none_or(|last| last <= self.acked))
            .count();
        if doomed == 0 {
            return Ok(false);
        }
        self.persist_ack()?;
        for segment in self.segments.drain(..doomed) {
            remove_file(&self.dir, &segment.path)?;
            self.bytes -= segment.len;
            debug!(path = %segment.path.display(), "acknowledged WAL segment deleted");
        }
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Replaces the ack file if the watermark moved since it was written.
    fn persist_ack(&mut self) -> Result<(), WalError> {
        if self.acked_on_disk == self.acked {
            return Ok(());
        }
        let bytes = encode_ack(self.acked).map_err(|source| WalError::Encode {
            dir: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(ACK_FILE);
        let tmp = tmp_path(&path);
        write_new_file(&self.dir, &tmp, &bytes)?;
        fs::rename(&tmp, &path).map_err(|e| io_error(&self.dir, "rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        self.acked_on_disk = self.acked;
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if (self.dirty || self.acked_on_disk != self.acked)
            && let Err(e) = self.sync_now()
        {
            warn!(dir = %self.dir.display(), error = %e, "cannot sync the WAL on close");
        }
    }
}

/// Iterator over unacknowledged batches; see [`Wal::unacked`].
#[derive(Debug)]
pub struct Unacked<'a> {
    wal: &'a Wal,
    /// Entries with an id ≤ this are skipped.
    floor: u64,
    segment: usize,
    entry: usize,
    reader: Option<BufReader<File>>,
    done: bool,
}

impl Iterator for Unacked<'_> {
    type Item = Result<(u64, ScanBatch), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.advance();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl Unacked<'_> {
    fn advance(&mut self) -> Option<Result<(u64, ScanBatch), WalError>> {
        loop {
            let segment = self.wal.segments.get(self.segment)?;
            if self.reader.is_none() {
                self.entry = segment.entries.partition_point(|e| e.id <= self.floor);
                let Some(first) = segment.entries.get(self.entry) else {
                    self.segment += 1;
                    continue;
                };
                match open_at(&self.wal.dir, &segment.path, first.offset) {
                    Ok(reader) => self.reader = Some(reader),
                    Err(e) => return Some(Err(e)),
                }
            }
            let (Some(e), Some(reader)) = (segment.entries.get(self.entry), self.reader.as_mut())
            else {
                self.reader = None;
                self.segment += 1;
                continue;
            };
            self.entry += 1;
            let bad = |reason: String| WalError::Corrupt {
                path: segment.path.clone(),
                offset: e.offset,
                reason,
            };
            return Some(match read_entry(reader) {
                Ok(Some(read)) if read.id == e.id && read.len as u64 == e.len => {
                    Ok((read.id, read.batch))
                }
                Ok(Some(read)) => Err(bad(format!("found entry {} where {} was", read.id, e.id))),
                Ok(None) => Err(bad("the file ends before its last entry".to_owned())),
                Err(BadEntry::Io(source)) => {
                    Err(io_error(&self.wal.dir, "read", &segment.path, source))
                }
                Err(other) => Err(bad(other.to_string())),
            });
        }
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it is missing.
fn create_dir(dir: &Path) -> Result<(), WalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_error(dir, "create the WAL directory", dir, e))
}

/// Takes the directory's advisory lock.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(dir, "open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_error(dir, "lock", &path, e)),
    }
}

/// First ids of the segment files in `dir`; leftover temporary files are
/// deleted on the way.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let read = fs::read_dir(dir).map_err(|e| io_error(dir, "list", dir, e))?;
    let mut firsts = Vec::new();
    for item in read {
        let item = item.map_err(|e| io_error(dir, "list", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = parse_segment_name(name) {
            firsts.push(first);
        } else if name.ends_with(TMP_SUFFIX) {
            // An unfinished rewrite: the file it was to replace is intact.
            info!(path = %item.path().display(), "unfinished WAL rewrite removed");
            remove_file(dir, &item.path())?;
        }
    }
    Ok(firsts)
}

/// The persisted watermark, and whether an ack file was present but
/// invalid.
fn read_ack(dir: &Path) -> Result<(u64, bool), WalError> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(io_error(dir, "read", &path, e)),
    };
    match decode_ack(&bytes) {
        Some(acked) => Ok((acked, false)),
        None => {
            warn!(
                path = %path.display(),
                "the WAL ack file is invalid: acknowledged batches may be sent again"
            );
            Ok((0, true))
        }
    }
}

/// Reads and indexes one segment. A bad frame ends the segment; in the last
/// segment the file is truncated there.
fn recover_segment(
    dir: &Path,
    first: u64,
    last_id: &mut u64,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<Segment, WalError> {
    let path = dir.join(segment_name(first));
    let file = File::open(&path).map_err(|e| io_error(dir, "open", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error(dir, "stat", &path, e))?
        .len();
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let bad = loop {
        match read_entry(&mut reader) {
            Ok(None) => break None,
            Ok(Some(read)) if read.id < first || read.id <= *last_id => {
                break Some(format!(
                    "entry id {} out of order (segment starts at {first}, previous id {})",
                    read.id, *last_id
                ));
            }
            Ok(Some(read)) => {
                let len = read.len as u64;
                entries.push(Entry {
                    id: read.id,
                    offset,
                    len,
                    reclaim: reclaimable(read.id, &read.batch) as u64,
                });
                *last_id = read.id;
                offset += len;
            }
            Err(BadEntry::Io(e)) => return Err(io_error(dir, "read", &path, e)),
            Err(other) => break Some(other.to_string()),
        }
    };
    let mut segment = Segment {
        first,
        path,
        len,
        entries,
    };
    let Some(reason) = bad else {
        return Ok(segment);
    };
    if report.corrupt_segment.is_none() {
        report.corrupt_segment = Some(segment.path.clone());
    }
    if is_last {
        let cut = len - offset;
        warn!(
            path = %segment.path.display(),
            offset,
            truncated_bytes = cut,
            reason = %reason,
            "torn or corrupt tail of the WAL truncated"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .map_err(|e| io_error(dir, "open", &segment.path, e))?;
        file.set_len(offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(dir, "truncate", &segment.path, e))?;
        segment.len = offset;
        report.truncated_bytes += cut;
    } else {
        warn!(
            path = %segment.path.display(),
            offset,
            unreadable_bytes = len - offset,
            reason = %reason,
            "corrupt WAL segment: the entries after this point cannot be replayed; the file is kept until the entries before it are acknowledged"
        );
    }
    Ok(segment)
}

fn private_options() -> OpenOptions {
    #[allow(unused_mut, reason = "the mode is only set on unix")]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Creates an empty segment file (it must not exist).
fn create_segment(dir: &Path, path: &Path) -> Result<File, WalError> {
    private_options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error(dir, "create", path, e))
}

/// The write handle of the active segment.
fn open_active(dir: &Path, path: Option<&Path>) -> Result<File, WalError> {
    let path = path.expect("a Wal always has an active segment");
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error(dir, "open", path, e))
}

/// Writes `bytes` to a fresh `path` (replacing a leftover) and syncs it.
fn write_new_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), WalError> {
    let mut file = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_error(dir, "create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(dir, "write", path, e))
}

/// The first `len` bytes of `path`.
fn read_prefix(dir: &Path, path: &Path, len: u64) -> Result<Vec<u8>, WalError> {
    let file = File::open(path).map_err(|e| io_error(dir, "open", path, e))?;
    let mut data = Vec::new();
    file.take(len)
        .read_to_end(&mut data)
        .map_err(|e| io_error(dir, "read", path, e))?;
    Ok(data)
}

/// A buffered reader of `path` positioned at `offset`.
fn open_at(dir: &Path, path: &Path, offset: u64) -> Result<BufReader<File>, WalError> {
    let mut file = File::open(path).map_err(|e| io_error(dir, "open", path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(dir, "read", path, e))?;
    Ok(BufReader::new(file))
}

/// Decodes an indexed entry's bytes.
fn decode_raw(path: &Path, e: &Entry, mut raw: &[u8]) -> Result<ScanBatch, WalError> {
    let bad = |reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: e.offset,
        reason,
    };
    match read_entry(&mut raw) {
        Ok(Some(read)) if read.id == e.id => Ok(read.batch),
        Ok(Some(read)) => Err(bad(format!("found entry {} where {} was", read.id, e.id))),
        Ok(None) => Err(bad("the entry is missing".to_owned())),
        Err(other) => Err(bad(other.to_string())),
    }
}

fn remove_file(dir: &Path, path: &Path) -> Result<(), WalError> {
    fs::remove_file(path).map_err(|e| io_error(dir, "delete", path, e))
}

/// `path` with [`TMP_SUFFIX`] appended.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Makes creations, renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "sync the directory", dir, e))?;
    }
    Ok(())
}
