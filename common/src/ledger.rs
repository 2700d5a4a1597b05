//! The audit ledger's entry format and its verification: pure functions
//! over the ledger file, shared by procmond (which writes it) and
//! sentinelcli (which checks it). Layout: `docs/audit-ledger.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Name of the ledger in procmond's state directory.
pub const FILE_NAME: &str = "ledger.log";

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

/// Where and how the chain breaks. Lines count from 1.
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

/// A last line without its newline: an append in progress or cut short by
/// a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    pub line: u64,
    pub bytes: u64,
}

/// An entry and its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub line: u64,
    pub entry: Entry,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every line that parses, in file order (also those past a break).
    pub entries: Vec<Located>,
    /// The first place the chain breaks; `None` when it holds.
    pub first_break: Option<Break>,
    /// A last line without a newline, left out of the check.
    pub torn_tail: Option<TornTail>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// Sequence number and stored hash of the last entry.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        self.entries.last().map(|l| (l.entry.seq, l.entry.hash))
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

/// Reads every line, bounding the memory a long line takes.
pub fn read_lines(file: &File) -> io::Result<Vec<RawLine>> {
    let mut reader = BufReader::new(file);
    let mut buf = Vec::with_capacity(512);
    let mut lines = Vec::new();
    let mut start = 0u64;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)? as u64;
        if n == 0 {
            return Ok(lines);
        }
        let mut len = n;
        let mut complete = buf.ends_with(b"\n");
        let mut entry = Entry::parse_line(&buf);
        if !complete && n > MAX_LINE {
            entry = None;
            while !complete {
                buf.clear();
                let m = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf)? as u64;
                if m == 0 {
                    break;
                }
                len += m;
                complete = buf.ends_with(b"\n");
            }
        }
        lines.push(RawLine {
            no: lines.len() as u64 + 1,
            start,
            len,
            complete,
            entry,
        });
        start += len;
    }
}

/// Walks `lines` as a chain that should start at `seq` after `prev`;
/// returns the first break.
pub fn walk(lines: &[RawLine], mut seq: u64, mut prev: [u8; 32]) -> Option<Break> {
    for (i, line) in lines.iter().enumerate() {
        let Some(e) = &line.entry else {
            return Some(Break::Unparseable { line: line.no });
        };
        if e.computed_hash() != e.hash {
            return Some(Break::Edited {
                seq: e.seq,
                line: line.no,
            });
        }
        if e.seq != seq {
            let later = lines[i + 1..]
                .iter()
                .any(|l| l.entry.is_some_and(|later| later.seq == seq));
            return Some(if later || e.seq < seq {
                Break::Reordered {
                    expected_seq: seq,
                    found_seq: e.seq,
                    line: line.no,
                }
            } else {
                Break::Deleted {
                    expected_seq: seq,
                    found_seq: e.seq,
                    line: line.no,
                }
            });
        }
        if e.prev != prev {
            return Some(Break::BadPrev {
                seq: e.seq,
                line: line.no,
            });
        }
        seq = e.seq.saturating_add(1);
        prev = e.hash;
    }
    None
}

/// Checks the whole chain of a ledger (`path` is the file, or the state
/// directory holding [`FILE_NAME`]). Reads only; safe beside the writer.
pub fn verify(path: &Path) -> Result<VerifyReport, LedgerError> {
    let path = if path.is_dir() {
        path.join(FILE_NAME)
    } else {
        path.to_path_buf()
    };
    let file = File::open(&path).map_err(|source| LedgerError::Open {
        path: path.clone(),
        source,
    })?;
    let mut lines = read_lines(&file).map_err(|source| LedgerError::Read {
        path: path.clone(),
        source,
    })?;
    let torn_tail = match lines.last() {
        Some(last) if !last.complete => Some(TornTail {
            line: last.no,
            bytes: last.len,
        }),
        _ => None,
    };
    if torn_tail.is_some() {
        lines.pop();
    }
    Ok(VerifyReport {
        first_break: walk(&lines, 1, ZERO_HASH),
        entries: lines
            .iter()
            .filter_map(|l| l.entry.map(|entry| Located { line: l.no, entry }))
            .collect(),
        torn_tail,
    })
}
