//! The audit ledger's entry format and its verification: pure functions
//! over the ledger file, shared by procmond (which writes it) and
//! sentinelcli (which checks it). Layout: `docs/audit-ledger.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Name of the ledger's current segment in procmond's state directory.
pub const FILE_NAME: &str = "ledger.log";

/// Digits of the first sequence number in a sealed segment's name.
const SEQ_DIGITS: usize = 20;

/// Name of the sealed segment whose first entry is `first_seq`:
/// `ledger.<first_seq, zero-padded to 20 digits>.log`.
pub fn segment_name(first_seq: u64) -> String {
    format!("ledger.{first_seq:0SEQ_DIGITS$}.log")
}

/// The first sequence number a sealed segment's name gives; `None` for
/// any other name (the current segment [`FILE_NAME`] included).
pub fn sealed_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ledger.")?.strip_suffix(".log")?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The sealed segments in `dir`, oldest (lowest first sequence number)
/// first.
pub fn sealed_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut sealed = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if let Some(seq) = item.file_name().to_str().and_then(sealed_seq) {
            sealed.push((seq, item.path()));
        }
    }
    sealed.sort_unstable();
    Ok(sealed)
}

/// Domain-separation prefix of the entry hash, version 1.
pub const ENTRY_HASH_TAG: &[u8] = b"sentineld-ledger-entry-v1";

/// `prev` of the first entry.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// Longest line read; a longer one is unparseable (an entry is ~430 bytes).
const MAX_LINE: u64 = 4096;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// One scan.
    Scan,
    /// procmond found the chain broken and goes on from here.
    Reset,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::Scan => 0,
            EntryKind::Reset => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EntryKind::Scan => "scan",
            EntryKind::Reset => "reset",
        }
    }
}

/// The contents of an entry before it is chained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry {
    /// The scan's start time, unix milliseconds.
    pub time_ms: i64,
    pub scan_seq: u64,
    pub boot_id: [u8; 16],
    pub process_count: u32,
    pub started: u64,
    pub updated: u64,
    pub exited: u64,
    pub samples: u64,
    /// The scan digest.
    pub digest: [u8; 32],
}

/// One ledger entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub seq: u64,
    pub time_ms: i64,
    pub scan_seq: u64,
    pub boot_id: [u8; 16],
    pub process_count: u32,
    pub started: u64,
    pub updated: u64,
    pub exited: u64,
    pub samples: u64,
    pub digest: [u8; 32],
    pub prev: [u8; 32],
    /// As stored; [`Entry::computed_hash`] is what it should be.
    pub hash: [u8; 32],
}

const FIELDS: [&str; 13] = [
    "seq",
    "kind",
    "time_ms",
    "scan_seq",
    "boot_id",
    "process_count",
    "started",
    "updated",
    "exited",
    "samples",
    "digest",
    "prev",
    "hash",
];

impl Entry {
    /// Chains `new` after `prev` as entry `seq`.
    pub fn seal(kind: EntryKind, seq: u64, new: &NewEntry, prev: [u8; 32]) -> Entry {
        let mut e = Entry {
            kind,
            seq,
            time_ms: new.time_ms,
            scan_seq: new.scan_seq,
            boot_id: new.boot_id,
            process_count: new.process_count,
            started: new.started,
            updated: new.updated,
            exited: new.exited,
            samples: new.samples,
            digest: new.digest,
            prev,
            hash: ZERO_HASH,
        };
        e.hash = e.computed_hash();
        e
    }

    /// The entry hash over every field but `hash` (layout in the module
    /// doc).
    pub fn computed_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(ENTRY_HASH_TAG);
        h.update([self.kind.code()]);
        h.update(self.seq.to_le_bytes());
        h.update(self.time_ms.to_le_bytes());
        h.update(self.scan_seq.to_le_bytes());
        h.update(self.boot_id);
        h.update(self.process_count.to_le_bytes());
        h.update(self.started.to_le_bytes());
        h.update(self.updated.to_le_bytes());
        h.update(self.exited.to_le_bytes());
        h.update(self.samples.to_le_bytes());
        h.update(self.digest);
        h.update(self.prev);
        h.finalize().into()
    }

    /// The entry as one line of the ledger, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"seq\":{},\"kind\":\"{}\",\"time_ms\":{},\"scan_seq\":{},\"boot_id\":\"{}\",\
             \"process_count\":{},\"started\":{},\"updated\":{},\"exited\":{},\"samples\":{},\
             \"digest\":\"{}\",\"prev\":\"{}\",\"hash\":\"{}\"}}\n",
            self.seq,
            self.kind.name(),
            self.time_ms,
            self.scan_seq,
            hex::encode(self.boot_id),
            self.process_count,
            self.started,
            self.updated,
            self.exited,
            self.samples,
            hex::encode(self.digest),
            hex::encode(self.prev),
            hex::encode(self.hash),
        )
    }

    /// Parses one line (with or without its newline). `None` when it is
    /// not exactly an entry: not JSON, a field missing, unknown or of the
    /// wrong type, or hex that is not lowercase of the right length.
    pub fn parse_line(line: &[u8]) -> Option<Entry> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let value: serde_json::Value = serde_json::from_slice(line).ok()?;
        let map = value.as_object()?;
        if map.len() != FIELDS.len() || !FIELDS.iter().all(|f| map.contains_key(*f)) {
            return None;
        }
        let u = |key: &str| map.get(key).and_then(serde_json::Value::as_u64);
        let kind = match map.get("kind")?.as_str()? {
            "scan" => EntryKind::Scan,
            "reset" => EntryKind::Reset,
            _ => return None,
        };
        Some(Entry {
            kind,
            seq: u("seq")?,
            time_ms: map.get("time_ms")?.as_i64()?,
            scan_seq: u("scan_seq")?,
            boot_id: hex_field(map.get("boot_id")?)?,
            process_count: u32::try_from(u("process_count")?).ok()?,
            started: u("started")?,
            updated: u("updated")?,
            exited: u("exited")?,
            samples: u("samples")?,
            digest: hex_field(map.get("digest")?)?,
            prev: hex_field(map.get("prev")?)?,
            hash: hex_field(map.get("hash")?)?,
        })
    }
}

fn hex_field<const N: usize>(value: &serde_json::Value) -> Option<[u8; N]> {
    let text = value.as_str()?;
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    (hex::encode(out) == text).then_some(out)
}

/// Where and how the chain breaks. Lines count from 1, in the file the
/// break is in ([`ChainBreak`] names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The line is not an entry.
    Unparseable { line: u64 },
    /// The entry's contents do not match its hash: it was edited.
    Edited { seq: u64, line: u64 },
    /// Entries are missing before this one (their sequence numbers appear
    /// nowhere later).
    Deleted {
        expected_seq: u64,
        found_seq: u64,
        line: u64,
    },
    /// The entry is out of place: the expected one comes later, or this one
    /// belongs earlier (moved or duplicated).
    Reordered {
        expected_seq: u64,
        found_seq: u64,
        line: u64,
    },
    /// The entry does not link to the one before it (that one, or this
    /// one's `prev`, was replaced with a consistent hash).
    BadPrev { seq: u64, line: u64 },
}

impl Break {
    /// The line (in its file) the break is at.
    pub fn line(&self) -> u64 {
        match *self {
            Break::Unparseable { line }
            | Break::Edited { line, .. }
            | Break::Deleted { line, .. }
            | Break::Reordered { line, .. }
            | Break::BadPrev { line, .. } => line,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Break::Unparseable { line } => write!(f, "line {line} is not a ledger entry"),
            Break::Edited { seq, line } => {
                write!(
                    f,
                    "entry {seq} (line {line}) was edited: its hash does not match"
                )
            }
            Break::Deleted {
                expected_seq,
                found_seq,
                line,
            } if found_seq == expected_seq.saturating_add(1) => {
                write!(f, "entry {expected_seq} is missing before line {line}")
            }
            Break::Deleted {
                expected_seq,
                found_seq,
                line,
            } => write!(
                f,
                "entries {expected_seq} to {} are missing before line {line}",
                found_seq.saturating_sub(1)
            ),
            Break::Reordered {
                expected_seq,
                found_seq,
                line,
            } => write!(
                f,
                "entry {found_seq} is out of place at line {line}, where entry {expected_seq} belongs"
            ),
            Break::BadPrev { seq, line } => write!(
                f,
                "entry {seq} (line {line}) does not link to the entry before it"
            ),
        }
    }
}

/// A break and the segment file it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub file: PathBuf,
    pub at: Break,
}

impl ChainBreak {
    /// The file's name (the segments all live in one directory).
    pub fn file_name(&self) -> String {
        file_name(&self.file)
    }
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file_name(), self.at)
    }
}

/// The last component of `path`, for messages.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The oldest sealed segments were removed (rotation): the chain is checked
/// from the first entry kept, anchored at its `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The first entry kept.
    pub first_seq: u64,
    /// Its `prev`: the hash of the last entry rotated away.
    pub prev: [u8; 32],
    /// The oldest segment kept.
    pub file: PathBuf,
}

impl std::fmt::Display for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entries before {n} were rotated away; checked from entry {n}, whose prev is {}: \
             compare with a head anchored earlier",
            hex::encode(self.prev),
            n = self.first_seq
        )
    }
}

/// A last line without its newline: an append in progress or cut short by
/// a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    pub line: u64,
    pub bytes: u64,
}

/// An entry, its segment file and its line in that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: Arc<Path>,
    pub line: u64,
    pub entry: Entry,
}

impl Located {
    /// "FILE line N", for messages.
    pub fn position(&self) -> String {
        format!("{} line {}", file_name(&self.file), self.line)
    }
}

/// What [`verify`] found. Holds no entry but the last: [`verify_each`]
/// hands every entry to its caller as it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The segment files walked, in chain order (sealed ones, then the
    /// current one).
    pub files: Vec<PathBuf>,
    /// Lines that parse as entries (also those past a break).
    pub entries: u64,
    /// The last line that parses.
    pub last: Option<Located>,
    /// Set when the oldest kept segment does not start at entry 1.
    pub rotated: Option<Rotated>,
    /// The first place the chain breaks; `None` when it holds.
    pub first_break: Option<ChainBreak>,
    /// A last line of the current segment without a newline, left out of
    /// the check.
    pub torn_tail: Option<TornTail>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// Sequence number and stored hash of the last entry.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        self.last.as_ref().map(|l| (l.entry.seq, l.entry.hash))
    }
}

/// Why the ledger cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("cannot open the ledger {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "the ledger {} is held by another process: stop the other procmond first",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot read the ledger {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot append to the ledger {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot cut the torn last line off the ledger {}: {source}", path.display())]
    Truncate { path: PathBuf, source: io::Error },
    #[error("cannot seal the ledger segment {}: {source}", path.display())]
    Rotate { path: PathBuf, source: io::Error },
}

/// One line as read (procmond's writer uses these to recover its head).
#[derive(Debug)]
pub struct RawLine {
    /// 1-based line number.
    pub no: u64,
    /// Byte offset of the line in the file.
    pub start: u64,
    /// Length in bytes, newline included.
    pub len: u64,
    /// Ends with a newline.
    pub complete: bool,
    /// The entry, when the line parses as one.
    pub entry: Option<Entry>,
}

/// Reads a ledger file line by line, bounding the memory a long line
/// takes; holds one line at a time.
#[derive(Debug)]
pub struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    no: u64,
    start: u64,
}

impl<R: Read> Lines<R> {
    pub fn new(inner: R) -> Lines<R> {
        Lines {
            reader: BufReader::new(inner),
            buf: Vec::with_capacity(512),
            no: 0,
            start: 0,
        }
    }

    /// The next line; `Ok(None)` at the end of the file.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.buf)? as u64;
        if n == 0 {
            return Ok(None);
        }
        let mut len = n;
        let mut complete = self.buf.ends_with(b"\n");
        let mut entry = Entry::parse_line(&self.buf);
        if !complete && n > MAX_LINE {
            entry = None;
            while !complete {
                self.buf.clear();
                let m = (&mut self.reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut self.buf)? as u64;
                if m == 0 {
                    break;
                }
                len += m;
                complete = self.buf.ends_with(b"\n");
            }
        }
        self.no += 1;
        let line = RawLine {
            no: self.no,
            start: self.start,
            len,
            complete,
            entry,
        };
        self.start += len;
        Ok(Some(line))
    }
}

/// Reads every line of one segment (bounded by the segment size).
pub fn read_lines(file: &File) -> io::Result<Vec<RawLine>> {
    let mut reader = Lines::new(file);
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line()? {
        lines.push(line);
    }
    Ok(lines)
}

/// The last entry of a sealed segment, read from its end only; `None`
/// when its last line is not a whole entry.
pub fn last_entry(path: &Path) -> io::Result<Option<Entry>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(MAX_LINE + 1);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    file.take(MAX_LINE + 1).read_to_end(&mut tail)?;
    let Some(body) = tail.strip_suffix(b"\n") else {
        return Ok(None);
    };
    let line = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if from == 0 => body,
        None => return Ok(None),
    };
    Ok(Entry::parse_line(line))
}

/// Walks `lines` (one segment held in memory) as a chain that should start
/// at `seq` after `prev`; returns the first break.
pub fn walk(lines: &[RawLine], seq: u64, prev: [u8; 32]) -> Option<Break> {
    let mut chain = Chain::new(seq, Some(prev));
    for line in lines {
        chain.step(line);
    }
    chain.finish()
}

/// The chain check, fed one line at a time and holding O(1) state: a gap
/// in `seq` is a deletion unless the missing entry shows up later (then
/// it was moved), which is settled by the lines that follow.
struct Chain {
    seq: u64,
    /// `None`: anchor at the first entry's `prev` (rotated ledger).
    prev: Option<[u8; 32]>,
    first_break: Option<Break>,
    /// Set while a gap's missing entry may still show up later.
    gap: Option<u64>,
}

impl Chain {
    fn new(seq: u64, prev: Option<[u8; 32]>) -> Chain {
        Chain {
            seq,
            prev,
            first_break: None,
            gap: None,
        }
    }

    /// Checks one line; true when it is the first break.
    fn step(&mut self, line: &RawLine) -> bool {
        if self.first_break.is_some() {
            if let (Some(missing), Some(e)) = (self.gap, line.entry)
                && e.seq == missing
                && let Some(Break::Deleted {
                    expected_seq,
                    found_seq,
                    line: at,
                }) = self.first_break
            {
                self.first_break = Some(Break::Reordered {
                    expected_seq,
                    found_seq,
                    line: at,
                });
                self.gap = None;
            }
            return false;
        }
        let Some(e) = &line.entry else {
            self.first_break = Some(Break::Unparseable { line: line.no });
            return true;
        };
        if e.computed_hash() != e.hash {
            self.first_break = Some(Break::Edited {
                seq: e.seq,
                line: line.no,
            });
            return true;
        }
        if e.seq != self.seq {
            self.first_break = Some(if e.seq < self.seq {
                Break::Reordered {
                    expected_seq: self.seq,
                    found_seq: e.seq,
                    line: line.no,
                }
            } else {
                self.gap = Some(self.seq);
                Break::Deleted {
                    expected_seq: self.seq,
                    found_seq: e.seq,
                    line: line.no,
                }
            });
            return true;
        }
        if self.prev.is_some_and(|prev| e.prev != prev) {
            self.first_break = Some(Break::BadPrev {
                seq: e.seq,
                line: line.no,
            });
            return true;
        }
        self.seq = e.seq.saturating_add(1);
        self.prev = Some(e.hash);
        false
    }

    fn finish(self) -> Option<Break> {
        self.first_break
    }
}

/// Checks the whole chain of a ledger and hands every entry that parses to
/// `each`, in chain order, as it reads (so memory does not grow with the
/// ledger). `path` is procmond's state directory (every sealed segment in
/// sequence order, then [`FILE_NAME`], walked as one chain) or one segment
/// file (checked alone: from entry 1, or for a sealed segment from its
/// first entry). When the oldest sealed segment kept does not start at
/// entry 1, the check starts at its first entry, anchored at its `prev`
/// ([`VerifyReport::rotated`]): that is rotation, not a break. Reads only;
/// safe beside the writer.
pub fn verify_each(
    path: &Path,
    mut each: impl FnMut(&Located),
) -> Result<VerifyReport, LedgerError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LedgerError::Read { path, source }
    };
    let (files, first_named) = if path.is_dir() {
        let sealed = sealed_segments(path).map_err(read_err(path))?;
        let first = sealed.first().map(|(seq, _)| *seq);
        let mut files: Vec<PathBuf> = sealed.into_iter().map(|(_, p)| p).collect();
        let current = path.join(FILE_NAME);
        // Right after a rotation the current segment may not exist yet.
        if files.is_empty() || current.exists() {
            files.push(current);
        }
        (files, first)
    } else {
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(sealed_seq);
        (vec![path.to_path_buf()], first)
    };

    let anchored = first_named.is_some_and(|seq| seq > 1);
    let mut chain = Chain::new(
        first_named.unwrap_or(1).max(1),
        (!anchored).then_some(ZERO_HASH),
    );
    let mut report = VerifyReport {
        files: Vec::with_capacity(files.len()),
        entries: 0,
        last: None,
        rotated: None,
        first_break: None,
        torn_tail: None,
    };
    let count = files.len();
    for (i, path) in files.into_iter().enumerate() {
        let file = File::open(&path).map_err(|source| LedgerError::Open {
            path: path.clone(),
            source,
        })?;
        let shared: Arc<Path> = Arc::from(path.as_path());
        let is_current = i + 1 == count;
        let mut lines = Lines::new(file);
        let mut pending = lines.next_line().map_err(read_err(&path))?;
        while let Some(line) = pending {
            pending = lines.next_line().map_err(read_err(&path))?;
            if is_current && pending.is_none() && !line.complete {
                report.torn_tail = Some(TornTail {
                    line: line.no,
                    bytes: line.len,
                });
                break;
            }
            if anchored
                && report.entries == 0
                && report.first_break.is_none()
                && let Some(e) = line.entry
                && Some(e.seq) == first_named
            {
                report.rotated = Some(Rotated {
                    first_seq: e.seq,
                    prev: e.prev,
                    file: path.clone(),
                });
            }
            if chain.step(&line) {
                report.first_break = chain.first_break.map(|at| ChainBreak {
                    file: path.clone(),
                    at,
                });
            }
            if let Some(entry) = line.entry {
                let located = Located {
                    file: Arc::clone(&shared),
                    line: line.no,
                    entry,
                };
                each(&located);
                report.entries += 1;
                report.last = Some(located);
            }
        }
        report.files.push(path);
    }
    // A gap may have turned out to be a move.
    if let (Some(b), Some(at)) = (&mut report.first_break, chain.finish()) {
        b.at = at;
    }
    Ok(report)
}

/// [`verify_each`], keeping every entry: for tests and small ledgers.
pub fn verify(path: &Path) -> Result<(VerifyReport, Vec<Located>), LedgerError> {
    let mut entries = Vec::new();
    let report = verify_each(path, |l| entries.push(l.clone()))?;
    Ok((report, entries))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::{Path, PathBuf};

    use tempfile::TempDir;

    use crate::ledger::*;

    fn chain(n: u64) -> Vec<Entry> {
        let mut prev = ZERO_HASH;
        (1..=n)
            .map(|seq| {
                let new = NewEntry {
                    time_ms: 1_000 * seq as i64,
                    scan_seq: seq,
                    boot_id: [7; 16],
                    process_count: 10,
                    started: 1,
                    updated: 0,
                    exited: 0,
                    samples: 9,
                    digest: [seq as u8; 32],
                };
                let e = Entry::seal(EntryKind::Scan, seq, &new, prev);
                prev = e.hash;
                e
            })
            .collect()
    }

    /// Entries 1..=20 in sealed segments of 5 (1, 6, 11) and the current
    /// segment (16..=20).
    fn segmented() -> (TempDir, Vec<Entry>) {
        let dir = TempDir::new().unwrap();
        let entries = chain(20);
        for part in entries.chunks(5) {
            let name = if part[0].seq == 16 {
                FILE_NAME.to_owned()
            } else {
                segment_name(part[0].seq)
            };
            let text: String = part.iter().map(Entry::to_line).collect();
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        (dir, entries)
    }

    fn segment(dir: &TempDir, first: u64) -> PathBuf {
        dir.path().join(segment_name(first))
    }

    fn first_break(dir: &Path) -> Option<(String, Break)> {
        let (report, _) = verify(dir).unwrap();
        report.first_break.map(|b| (b.file_name(), b.at))
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(42), "ledger.00000000000000000042.log");
        assert_eq!(sealed_seq(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(sealed_seq("ledger.log"), None);
        assert_eq!(sealed_seq("ledger.42.log"), None);
        assert_eq!(sealed_seq("ledger.0000000000000000004x.log"), None);
    }

    #[test]
    fn an_intact_ledger_is_one_chain_across_segments() {
        let (dir, entries) = segmented();
        let (report, seen) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        assert_eq!((report.entries, report.rotated.clone()), (20, None));
        assert_eq!(report.files.len(), 4);
        assert_eq!(report.head(), Some((20, entries[19].hash)));
        assert_eq!(seen.len(), 20);
        assert_eq!(
            (file_name(&seen[7].file), seen[7].line),
            (segment_name(6), 3)
        );

        // Right after a rotation there is no current segment yet.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let (report, _) = verify(dir.path()).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.head(), Some((15, entries[14].hash)));
    }

    #[test]
    fn an_edited_entry_in_a_sealed_segment_names_its_file_and_line() {
        let (dir, _) = segmented();
        let path = segment(&dir, 6);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("\"process_count\":10", "\"process_count\":11", 2),
        )
        .unwrap();
        let (file, at) = first_break(dir.path()).unwrap();
        assert_eq!(
            (file.as_str(), at),
            (segment_name(6).as_str(), Break::Edited { seq: 6, line: 1 })
        );
        let (report, _) = verify(dir.path()).unwrap();
        assert_eq!(
            report.first_break.unwrap().to_string(),
            "ledger.00000000000000000006.log: entry 6 (line 1) was edited: its hash does not match"
        );
    }

    #[test]
    fn a_deleted_middle_segment_is_a_break() {
        let (dir, _) = segmented();
        std::fs::remove_file(segment(&dir, 6)).unwrap();
        let (file, at) = first_break(dir.path()).unwrap();
        assert_eq!(file, segment_name(11));
        assert_eq!(
            at,
            Break::Deleted {
                expected_seq: 6,
                found_seq: 11,
                line: 1
            }
        );
        assert_eq!(at.to_string(), "entries 6 to 10 are missing before line 1");
    }

    #[test]
    fn reordered_segments_are_a_break() {
        let (dir, _) = segmented();
        let (a, b) = (segment(&dir, 6), segment(&dir, 11));
        let tmp = dir.path().join("swap");
        std::fs::rename(&a, &tmp).unwrap();
        std::fs::rename(&b, &a).unwrap();
        std::fs::rename(&tmp, &b).unwrap();
        let (file, at) = first_break(dir.path()).unwrap();
        assert_eq!(file, segment_name(6));
        assert_eq!(
            at,
            Break::Reordered {
                expected_seq: 6,
                found_seq: 11,
                line: 1
            }
        );
    }

    #[test]
    fn deleted_oldest_segments_are_rotation_not_a_break() {
        let (dir, entries) = segmented();
        std::fs::remove_file(segment(&dir, 1)).unwrap();
        std::fs::remove_file(segment(&dir, 6)).unwrap();
        let (report, seen) = verify(dir.path()).unwrap();
        assert!(report.is_intact(), "{:?}", report.first_break);
        let rotated = report.rotated.unwrap();
        assert_eq!((rotated.first_seq, rotated.prev), (11, entries[9].hash));
        assert_eq!(
            rotated.to_string(),
            format!(
                "entries before 11 were rotated away; checked from entry 11, whose prev is {}: \
                 compare with a head anchored earlier",
                hex::encode(entries[9].hash)
            )
        );
        assert_eq!((report.entries, seen[0].entry.seq), (10, 11));

        // Lines cut from the top of the oldest kept segment are not.
        let path = segment(&dir, 11);
        let text = std::fs::read_to_string(&path).unwrap();
        let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, rest).unwrap();
        let (file, at) = first_break(dir.path()).unwrap();
        assert_eq!((file, at.line()), (segment_name(11), 1));
        assert!(matches!(
            at,
            Break::Deleted {
                expected_seq: 11,
                found_seq: 12,
                ..
            }
        ));
    }

    #[test]
    fn a_torn_tail_counts_only_in_the_current_segment() {
        let (dir, entries) = segmented();
        let partial = &chain(21)[20].to_line()[..40];
        let current = dir.path().join(FILE_NAME);
        let mut text = std::fs::read_to_string(&current).unwrap();
        text.push_str(partial);
        std::fs::write(&current, &text).unwrap();
        let (report, _) = verify(dir.path()).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.torn_tail, Some(TornTail { line: 6, bytes: 40 }));
        assert_eq!(report.head(), Some((20, entries[19].hash)));

        let sealed = segment(&dir, 11);
        let mut text = std::fs::read_to_string(&sealed).unwrap();
        text.push_str(partial);
        std::fs::write(&sealed, text).unwrap();
        assert_eq!(
            first_break(dir.path()),
            Some((segment_name(11), Break::Unparseable { line: 6 }))
        );
    }

    #[test]
    fn the_last_entry_is_read_from_the_end() {
        let (dir, entries) = segmented();
        assert_eq!(last_entry(&segment(&dir, 6)).unwrap(), Some(entries[9]));
        let path = segment(&dir, 1);
        std::fs::write(&path, "not an entry\n").unwrap();
        assert_eq!(last_entry(&path).unwrap(), None);
    }
}
