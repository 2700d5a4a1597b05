//! The row a rule sees: one process, flattened, with its parent's identity and
//! the facts the caller computed (hash changes, deny-list hits).

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use sentineld_proto::v1::{HashStatus, ProcessRecord, Sample};
use sentineld_proto::view::{ProcessView, hash_status_name, hex_lower};

use crate::store::Parts;

/// Suffix the kernel appends to `/proc/PID/exe` when the file was unlinked.
const DELETED_SUFFIX: &str = " (deleted)";
/// Prefix of `/proc/PID/exe` for programs run from an anonymous memory file.
const MEMFD_PREFIX: &str = "/memfd:";

/// One process as the rule engine sees it.
///
/// Every `Option` field that is `None` reads as SQL `NULL`. The derived
/// columns (`exe_dir`, `exe_name`, `cmdline_str`, `argc`) are computed from
/// the fields here; `cmdline_str` is built once, on first use, so `cmdline`
/// must not be changed after the record was first evaluated (or reset
/// `cache` when it is).
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Start time, unix seconds.
    pub start_time: i64,
    /// Kernel `comm` name (at most 15 bytes).
    pub name: String,
    /// Path of the executable, as `/proc/PID/exe` reads.
    pub exe: Option<String>,
    /// Argument vector.
    pub cmdline: Vec<String>,
    /// Real user id.
    pub uid: Option<u32>,
    /// User name of `uid`.
    pub user: Option<String>,
    /// Scheduler state, e.g. `running`, `sleeping`, `zombie`.
    pub status: String,
    /// Number of threads.
    pub threads: u32,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Virtual memory size in bytes.
    pub vms_bytes: u64,
    /// CPU usage since the previous sample, in percent of one core.
    pub cpu_percent: f32,
    /// Number of open file descriptors, when readable.
    pub open_fds: Option<u32>,
    /// SHA-256 of the executable, lowercase hex.
    pub sha256: Option<String>,
    /// Why `sha256` is what it is (`ok`, `pending`, `too_large`, ...).
    pub hash_status: String,
    /// The executable was deleted while running (see also [`Record::exe_deleted_any`]).
    pub exe_deleted: bool,
    /// Container id, when the process runs in a container.
    pub container_id: Option<String>,
    /// Local ports of the TCP sockets the process listens on and of its
    /// bound, unconnected UDP sockets (IPv4 and IPv6), sorted, each once.
    pub listening_ports: Vec<u16>,
    /// Parent's `comm` name.
    pub parent_name: Option<String>,
    /// Parent's executable path.
    pub parent_exe: Option<String>,
    /// Parent's user name.
    pub parent_user: Option<String>,
    /// Parent's argument vector joined by single spaces.
    pub parent_cmdline: Option<String>,
    /// A system binary whose hash changed since it was last seen (computed by the caller).
    pub hash_changed: bool,
    /// The executable's SHA-256 is on a deny list (computed by the caller).
    pub hash_denied: bool,
    /// Derived values computed on first use; `Record { .., ..Record::default() }`
    /// starts it empty.
    pub cache: DerivedCache,
}

/// Derived columns a [`Record`] computes once, on first use.
#[derive(Debug, Clone, Default)]
pub struct DerivedCache {
    cmdline_str: OnceLock<String>,
}

impl Record {
    /// Fills the parent columns from the parent's stored record, as
    /// [`Record::from_view`] fills them from the parent's view.
    pub fn set_parent_record(&mut self, parent: &ProcessRecord) {
        self.parent_name = Some(parent.name.clone());
        self.parent_exe = non_empty(&parent.exe).map(str::to_owned);
        self.parent_user = non_empty(&parent.user).map(str::to_owned);
        self.parent_cmdline = Some(parent.cmdline.join(" "));
    }

    /// Builds a record from a stored process and its latest sample, as
    /// [`Record::from_view`] builds it from their view (without a parent),
    /// but taking the strings instead of copying them twice: `sentinelcli
    /// query` builds one per stored instance.
    pub fn from_stored(record: ProcessRecord, latest: Option<Sample>) -> Record {
        let instance = record.instance.unwrap_or_default();
        let sample = latest.or(record.sample).unwrap_or_default();
        let exe_info = record.exe_info.unwrap_or_default();
        let status = exe_info.hash_status();
        let sha256 = (status == HashStatus::Ok && exe_info.sha256.len() == 32)
            .then(|| hex_lower(&exe_info.sha256));
        let some = |s: String| (!s.is_empty()).then_some(s);
        Record {
            pid: instance.pid,
            ppid: record.ppid,
            start_time: instance.start_time,
            name: record.name,
            exe: some(record.exe),
            cmdline: record.cmdline,
            uid: record.uid,
            user: some(record.user),
            status: sample.status,
            threads: sample.threads,
            rss_bytes: sample.rss_bytes,
            vms_bytes: sample.vms_bytes,
            cpu_percent: sample.cpu_percent,
            open_fds: sample.open_fds,
            sha256,
            hash_status: hash_status_name(status).to_owned(),
            exe_deleted: exe_info.deleted,
            container_id: some(record.container_id),
            listening_ports: ports(&sample.listening_ports),
            parent_name: None,
            parent_exe: None,
            parent_user: None,
            parent_cmdline: None,
            hash_changed: false,
            hash_denied: false,
            cache: DerivedCache::default(),
        }
    }

    /// Builds a record from the user-facing view of a process and, when
    /// known, of its parent. `hash_changed` and `hash_denied` are left
    /// false for the caller to fill in.
    pub fn from_view(view: &ProcessView, parent: Option<&ProcessView>) -> Record {
        Record {
            pid: view.pid,
            ppid: view.ppid,
            start_time: parse_start_time(&view.start_time),
            name: view.name.clone(),
            exe: view.exe.clone(),
            cmdline: view.cmdline.clone(),
            uid: view.uid,
            user: view.user.clone(),
            status: view.status.clone(),
            threads: view.threads,
            rss_bytes: view.rss_bytes,
            vms_bytes: view.vms_bytes,
            cpu_percent: view.cpu_percent,
            open_fds: view.open_fds,
            sha256: view.sha256.clone(),
            hash_status: view.hash_status.to_owned(),
            exe_deleted: view.exe_deleted,
            container_id: view.container_id.clone(),
            listening_ports: ports(&view.listening_ports),
            parent_name: parent.map(|p| p.name.clone()),
            parent_exe: parent.and_then(|p| p.exe.clone()),
            parent_user: parent.and_then(|p| p.user.clone()),
            parent_cmdline: parent.map(|p| p.cmdline.join(" ")),
            hash_changed: false,
            hash_denied: false,
            cache: DerivedCache::default(),
        }
    }

    /// The argument vector joined by single spaces (the `cmdline_str` column).
    pub fn cmdline_str(&self) -> &str {
        self.cache
            .cmdline_str
            .get_or_init(|| self.cmdline.join(" "))
    }

    /// The `exe_deleted` column: the flag, or an executable path that shows
    /// the file is gone (`/memfd:...` or a ` (deleted)` suffix).
    pub fn exe_deleted_any(&self) -> bool {
        self.exe_deleted
            || self
                .exe
                .as_deref()
                .is_some_and(|e| e.starts_with(MEMFD_PREFIX) || e.ends_with(DELETED_SUFFIX))
    }

    /// The executable path without the kernel's ` (deleted)` suffix.
    fn exe_path(&self) -> Option<&str> {
        self.exe
            .as_deref()
            .map(|e| e.strip_suffix(DELETED_SUFFIX).unwrap_or(e))
    }

    /// The `exe_dir` column: directory of the executable.
    pub fn exe_dir(&self) -> Option<&str> {
        self.exe_path().map(dirname)
    }

    /// The `exe_name` column: file name of the executable.
    pub fn exe_name(&self) -> Option<&str> {
        self.exe_path().map(basename)
    }

    /// Reads one column. Allocation-free: text borrows from the record.
    #[inline]
    pub(crate) fn get(&self, column: Column) -> Val<'_> {
        fn text(s: &str) -> Val<'_> {
            Val::Text(Cow::Borrowed(s))
        }
        fn opt_text(s: Option<&str>) -> Val<'_> {
            s.map_or(Val::Null, text)
        }
        match column {
            Column::Pid => Val::Int(i64::from(self.pid)),
            Column::Ppid => Val::Int(i64::from(self.ppid)),
            Column::StartTime => Val::Int(self.start_time),
            Column::Name => text(&self.name),
            Column::Exe => opt_text(self.exe.as_deref()),
            Column::Cmdline => Val::TextList(&self.cmdline),
            Column::Uid => self.uid.map_or(Val::Null, |u| Val::Int(i64::from(u))),
            Column::User => opt_text(self.user.as_deref()),
            Column::Status => text(&self.status),
            Column::Threads => Val::Int(i64::from(self.threads)),
            Column::RssBytes => Val::Int(clamp_u64(self.rss_bytes)),
            Column::VmsBytes => Val::Int(clamp_u64(self.vms_bytes)),
            Column::CpuPercent => Val::Float(f64::from(self.cpu_percent)),
            Column::OpenFds => self.open_fds.map_or(Val::Null, |n| Val::Int(i64::from(n))),
            Column::Sha256 => opt_text(self.sha256.as_deref()),
            Column::HashStatus => text(&self.hash_status),
            Column::ExeDeleted => Val::Bool(self.exe_deleted_any()),
            Column::ContainerId => opt_text(self.container_id.as_deref()),
            Column::ListeningPorts => Val::IntList(&self.listening_ports),
            Column::ParentName => opt_text(self.parent_name.as_deref()),
            Column::ParentExe => opt_text(self.parent_exe.as_deref()),
            Column::ParentUser => opt_text(self.parent_user.as_deref()),
            Column::ParentCmdline => opt_text(self.parent_cmdline.as_deref()),
            Column::HashChanged => Val::Bool(self.hash_changed),
            Column::HashDenied => Val::Bool(self.hash_denied),
            Column::ExeDir => opt_text(self.exe_dir()),
            Column::ExeName => opt_text(self.exe_name()),
            Column::CmdlineStr => text(self.cmdline_str()),
            Column::Argc => Val::Int(i64::try_from(self.cmdline.len()).unwrap_or(i64::MAX)),
        }
    }
}

/// The ports of a sample that are ports (the wire has `uint32`).
fn ports(ports: &[u32]) -> Vec<u16> {
    ports
        .iter()
        .filter_map(|&p| u16::try_from(p).ok())
        .collect()
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn clamp_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Parses the view's RFC 3339 start time (or, as the view falls back to,
/// plain unix seconds); 0 when neither.
fn parse_start_time(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .or_else(|_| s.parse::<i64>())
        .unwrap_or(0)
}

/// The last component of a path (`/usr/bin/ls` → `ls`); trailing slashes
/// are ignored, `/` stays `/`.
pub(crate) fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "" } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Everything before the last component (`/usr/bin/ls` → `/usr/bin`,
/// `/ls` → `/`, `ls` → `.`).
pub(crate) fn dirname(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" };
    }
    match trimmed.rfind('/') {
        None => ".",
        Some(i) => {
            let dir = trimmed[..i].trim_end_matches('/');
            if dir.is_empty() { "/" } else { dir }
        }
    }
}

/// SQL type of a column or expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqlType {
    /// `TRUE`/`FALSE`.
    Bool,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// UTF-8 text.
    Text,
    /// A list of text values (`cmdline`).
    TextList,
    /// A list of integers (`listening_ports`).
    IntList,
    /// The type of a bare `NULL` literal.
    Null,
}

impl SqlType {
    /// Lowercase name used in error messages and `sentinelcli` help.
    pub fn name(self) -> &'static str {
        match self {
            SqlType::Bool => "boolean",
            SqlType::Int => "integer",
            SqlType::Float => "float",
            SqlType::Text => "text",
            SqlType::TextList => "text list",
            SqlType::IntList => "integer list",
            SqlType::Null => "null",
        }
    }

    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, SqlType::Int | SqlType::Float)
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! columns {
    ($($variant:ident => $name:literal, $ty:ident, $doc:literal;)*) => {
        /// Every column of the `processes` table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Column {
            $(#[doc = $doc] $variant,)*
        }

        impl Column {
            /// All columns, in `SELECT *` order.
            pub const ALL: &'static [Column] = &[$(Column::$variant,)*];

            /// The SQL name.
            pub fn name(self) -> &'static str {
                match self { $(Column::$variant => $name,)* }
            }

            /// The SQL type.
            pub fn sql_type(self) -> SqlType {
                match self { $(Column::$variant => SqlType::$ty,)* }
            }

            /// One-line description, for `sentinelcli` help.
            pub fn description(self) -> &'static str {
                match self { $(Column::$variant => $doc,)* }
            }

            /// Looks a column up by its SQL name (exact, lowercase).
            pub fn from_name(name: &str) -> Option<Column> {
                match name { $($name => Some(Column::$variant),)* _ => None }
            }
        }
    };
}

columns! {
    Pid => "pid", Int, "process id";
    Ppid => "ppid", Int, "parent process id";
    StartTime => "start_time", Int, "start time, unix seconds";
    Name => "name", Text, "kernel comm name, at most 15 bytes";
    Exe => "exe", Text, "executable path";
    Cmdline => "cmdline", TextList, "argument vector";
    Uid => "uid", Int, "real user id";
    User => "user", Text, "user name";
    Status => "status", Text, "scheduler state";
    Threads => "threads", Int, "number of threads";
    RssBytes => "rss_bytes", Int, "resident set size in bytes";
    VmsBytes => "vms_bytes", Int, "virtual memory size in bytes";
    CpuPercent => "cpu_percent", Float, "cpu usage in percent of one core";
    OpenFds => "open_fds", Int, "number of open file descriptors";
    Sha256 => "sha256", Text, "sha-256 of the executable, lowercase hex";
    HashStatus => "hash_status", Text, "why sha256 is what it is";
    ExeDeleted => "exe_deleted", Bool, "executable deleted while running, or run from memfd";
    ContainerId => "container_id", Text, "container id";
    ListeningPorts => "listening_ports", IntList, "ports the process listens on";
    ParentName => "parent_name", Text, "parent's comm name";
    ParentExe => "parent_exe", Text, "parent's executable path";
    ParentUser => "parent_user", Text, "parent's user name";
    ParentCmdline => "parent_cmdline", Text, "parent's argv joined by spaces";
    HashChanged => "hash_changed", Bool, "system binary whose hash changed since last seen";
    HashDenied => "hash_denied", Bool, "sha256 is on a deny list";
    ExeDir => "exe_dir", Text, "directory of the executable";
    ExeName => "exe_name", Text, "file name of the executable";
    CmdlineStr => "cmdline_str", Text, "argv joined by single spaces";
    Argc => "argc", Int, "number of arguments";
}

impl Column {
    /// The parts of a stored process [`Record::from_stored`] fills this
    /// column from: a reader that decodes only those reads it right.
    pub fn stored_parts(self) -> Parts {
        let none = Parts::default();
        match self {
            // From the instance, ppid and uid, always decoded; the parent
            // columns from the parent's record; the hash facts from the
            // caller.
            Column::Pid
            | Column::Ppid
            | Column::StartTime
            | Column::Uid
            | Column::ParentName
            | Column::ParentExe
            | Column::ParentUser
            | Column::ParentCmdline
            | Column::HashChanged
            | Column::HashDenied => none,
            Column::Name => Parts { name: true, ..none },
            Column::Exe | Column::ExeDir | Column::ExeName => Parts { exe: true, ..none },
            Column::ExeDeleted => Parts {
                exe: true,
                exe_info: true,
                ..none
            },
            Column::Cmdline | Column::CmdlineStr | Column::Argc => Parts {
                cmdline: true,
                ..none
            },
            Column::User => Parts { user: true, ..none },
            Column::Sha256 | Column::HashStatus => Parts {
                exe_info: true,
                ..none
            },
            Column::ContainerId => Parts {
                container_id: true,
                ..none
            },
            Column::Status
            | Column::Threads
            | Column::RssBytes
            | Column::VmsBytes
            | Column::CpuPercent
            | Column::OpenFds
            | Column::ListeningPorts => Parts {
                sample: true,
                ..none
            },
        }
    }

    /// The parts [`Column::stored_parts`] names for every column `reads`
    /// says is read.
    pub fn parts_read_by(reads: impl Fn(Column) -> bool) -> Parts {
        Column::ALL
            .iter()
            .filter(|&&c| reads(c))
            .fold(Parts::default(), |parts, c| parts.union(c.stored_parts()))
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value during evaluation; text and lists borrow from the record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'r> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(Cow<'r, str>),
    TextList(&'r [String]),
    IntList(&'r [u16]),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use crate::rules::record::{Column, Record, basename, dirname};

    #[test]
    fn basename_and_dirname() {
        for (path, dir, base) in [
            ("/usr/bin/ls", "/usr/bin", "ls"),
            ("/ls", "/", "ls"),
            ("ls", ".", "ls"),
            ("/", "/", "/"),
            ("", ".", ""),
            ("/a/b/", "/a", "b"),
            ("//a//b", "//a", "b"),
        ] {
            assert_eq!(dirname(path), dir, "dirname({path})");
            assert_eq!(basename(path), base, "basename({path})");
        }
    }

    #[test]
    fn derived_columns() {
        let mut r = Record {
            exe: Some("/tmp/x (deleted)".into()),
            cmdline: vec!["a".into(), "b c".into()],
            ..Record::default()
        };
        assert!(r.exe_deleted_any());
        assert_eq!(r.exe_dir(), Some("/tmp"));
        assert_eq!(r.exe_name(), Some("x"));
        assert_eq!(r.cmdline_str(), "a b c");
        r.exe = Some("/memfd:payload".into());
        assert!(r.exe_deleted_any());
        r.exe = Some("/usr/bin/true".into());
        assert!(!r.exe_deleted_any());
        assert_eq!(Column::from_name("exe_name"), Some(Column::ExeName));
        assert_eq!(Column::from_name("nope"), None);
        for c in Column::ALL {
            assert_eq!(Column::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn from_view_copies_fields_and_parent() {
        let view = sentineld_proto::view::ProcessView {
            pid: 10,
            ppid: 1,
            name: "sh".into(),
            exe: Some("/bin/sh".into()),
            cmdline: vec!["sh".into(), "-c".into(), "id".into()],
            start_time: "2024-01-02T03:04:05Z".into(),
            uid: Some(0),
            user: Some("root".into()),
            status: "running".into(),
            threads: 1,
            rss_bytes: 1,
            vms_bytes: 2,
            swap_bytes: None,
            cpu_percent: 0.5,
            open_fds: None,
            sha256: None,
            hash_status: "pending",
            hash_error: None,
            exe_deleted: false,
            container_id: Some("c0ffee".into()),
            listening_ports: vec![22, 70_000, 8080],
        };
        let mut parent = view.clone();
        parent.name = "nginx".into();
        parent.cmdline = vec!["nginx:".into(), "worker".into()];
        let r = Record::from_view(&view, Some(&parent));
        assert_eq!(r.start_time, 1_704_164_645);
        assert_eq!(r.parent_name.as_deref(), Some("nginx"));
        assert_eq!(r.parent_cmdline.as_deref(), Some("nginx: worker"));
        assert_eq!(r.hash_status, "pending");
        assert_eq!(r.container_id.as_deref(), Some("c0ffee"));
        assert_eq!(r.listening_ports, vec![22, 8080], "not a port: dropped");
        let orphan = Record::from_view(&view, None);
        assert_eq!(orphan.parent_name, None);
    }

    #[test]
    fn from_stored_is_from_view_without_the_copies() {
        use sentineld_proto::v1::{ExeInfo, HashStatus, InstanceRef, ProcessRecord, Sample};
        use sentineld_proto::view::ProcessView;

        let sample = |status: &str, rss: u64| Sample {
            status: status.into(),
            threads: 3,
            rss_bytes: rss,
            vms_bytes: 2 * rss,
            cpu_percent: 1.5,
            open_fds: Some(7),
            listening_ports: vec![22, 70_000, 443],
            ..Sample::default()
        };
        let full = ProcessRecord {
            instance: Some(InstanceRef {
                pid: 42,
                start_time: 1_704_164_645,
            }),
            ppid: 7,
            name: "sshd".into(),
            exe: "/usr/sbin/sshd (deleted)".into(),
            cmdline: vec!["sshd:".into(), "alice".into()],
            uid: Some(1000),
            user: "alice".into(),
            exe_info: Some(ExeInfo {
                sha256: vec![0xab; 32],
                hash_status: HashStatus::Ok.into(),
                deleted: true,
                ..ExeInfo::default()
            }),
            container_id: "c0ffee".into(),
            parent_start_time: 99,
            sample: Some(sample("sleeping", 10)),
        };
        let pending = ProcessRecord {
            exe_info: Some(ExeInfo {
                sha256: vec![0xab; 32],
                hash_status: HashStatus::Pending.into(),
                ..ExeInfo::default()
            }),
            ..full.clone()
        };
        let bare = ProcessRecord {
            instance: Some(InstanceRef {
                pid: 1,
                // Past what RFC 3339 can show: the view prints plain seconds.
                start_time: i64::MAX,
            }),
            ..ProcessRecord::default()
        };
        for (record, latest) in [
            (full.clone(), None),
            (full.clone(), Some(sample("running", 20))),
            (pending, None),
            (bare.clone(), None),
            (ProcessRecord::default(), Some(sample("zombie", 0))),
        ] {
            let expected = Record::from_view(&ProcessView::new(&record, latest.as_ref()), None);
            let got = Record::from_stored(record.clone(), latest);
            // Every field, so a column added to one and not the other fails.
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{record:?}");
        }
        for parent in [full, bare] {
            let view = ProcessView::new(&parent, None);
            let expected = Record::from_view(&view, Some(&view));
            let mut got = Record::from_stored(parent.clone(), None);
            got.set_parent_record(&parent);
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{parent:?}");
        }
    }
}
