//! Listening TCP and UDP ports (IPv4 and IPv6) per process.
//!
//! Once per scan the kernel's socket tables, `/proc/net/{tcp,tcp6,udp,udp6}`,
//! are read into a map from socket inode to local port: TCP sockets in the
//! `LISTEN` state, and UDP sockets that are bound but not connected (what
//! `ss -l` lists as `UNCONN`). Then each process's descriptors are read
//! (`readlink /proc/PID/fd/N`, `socket:[INODE]`) and its socket inodes
//! looked up. A process's ports are the sorted, deduplicated local ports of
//! its listening sockets, whatever the protocol and address.
//!
//! `/proc/net` shows the socket tables of procmond's own network namespace.
//! A process with a socket missing from them may live in another one (a
//! container): that namespace's tables are read once per scan through
//! `/proc/PID/net/`, the first time one of its processes needs them.
//!
//! Reading every process's descriptors is most of the cost, so it is done
//! in full only when needed. After one complete walk the mapper knows each
//! process's listening sockets; a later pass reads the socket tables (own
//! namespace, and those of other namespaces seen before) and then reads
//! the descriptors of new processes only. A socket that left the tables is
//! dropped from the processes that held it without reading anything. Only
//! a listening socket that appeared and that no new process holds (an
//! older process started listening) starts a full walk, as does every
//! [`FULL_EVERY`]th pass, which catches sockets handed between running
//! processes.
//!
//! Cost is bounded per scan by a time budget. The kernel lists a TCP
//! table's listening sockets first (its listening hash, then the
//! established one), so a TCP table is read only up to its first socket in
//! another state; every table is also cut at [`MAX_TABLE_BYTES`]. Processes
//! are then visited in pid order starting where the previous scan stopped;
//! those not reached before the budget runs out keep the ports found for
//! them before and are counted as skipped, and the next scan starts with
//! them.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Most bytes read of one socket table.
pub const MAX_TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// A full walk at least every this many passes.
pub const FULL_EVERY: u32 = 12;

/// A process instance: pid and start time.
pub type Proc = (u32, i64);

/// Descriptors read between two looks at the clock.
const CLOCK_EVERY: usize = 64;

/// `st` of a listening TCP socket (`TCP_LISTEN`).
const TCP_LISTEN: &str = "0A";
/// `st` of an unconnected UDP socket (`TCP_CLOSE`, as UDP reuses the TCP
/// states).
const UDP_UNCONNECTED: &str = "07";

/// The four socket tables, as named under `/proc/net`.
const TABLES: [(&str, Protocol); 4] = [
    ("tcp", Protocol::Tcp),
    ("tcp6", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("udp6", Protocol::Udp),
];

/// Which table a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What one line of a socket table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A listening socket: its inode and local port.
    Listening { inode: u64, port: u16 },
    /// A TCP socket in another state: the listening ones are all listed.
    OtherTcpState,
    /// The header, a socket that does not listen, or a line that does not
    /// parse.
    Skip,
}

/// Parses one line of `/proc/net/{tcp,tcp6,udp,udp6}`:
///
/// ```text
///   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
///    0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 23043 1 ...
/// ```
///
/// Addresses are hex (32 digits for IPv6), ports 4 hex digits.
pub fn parse_line(line: &[u8], protocol: Protocol) -> Line {
    let Ok(line) = std::str::from_utf8(line) else {
        return Line::Skip;
    };
    let mut fields = line.split_ascii_whitespace();
    let (Some(_sl), Some(local), Some(remote), Some(state)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Line::Skip;
    };
    let listening = match protocol {
        Protocol::Tcp => state == TCP_LISTEN,
        Protocol::Udp => state == UDP_UNCONNECTED && port_of(remote) == Some(0),
    };
    if !listening {
        // The header's `st` is not a state; neither is garbage.
        let is_state = state.len() == 2 && state.bytes().all(|b| b.is_ascii_hexdigit());
        return if protocol == Protocol::Tcp && is_state && port_of(local).is_some() {
            Line::OtherTcpState
        } else {
            Line::Skip
        };
    }
    // tx:rx, tr:when, retrnsmt, uid, timeout, inode.
    let Some(inode) = fields.nth(5).and_then(|f| f.parse::<u64>().ok()) else {
        return Line::Skip;
    };
    match port_of(local) {
        Some(port) if port != 0 && inode != 0 => Line::Listening { inode, port },
        _ => Line::Skip,
    }
}

/// The port of a `HEXADDR:HEXPORT` field.
fn port_of(address: &str) -> Option<u16> {
    let (addr, port) = address.rsplit_once(':')?;
    if !matches!(addr.len(), 8 | 32) || port.len() != 4 {
        return None;
    }
    u16::from_str_radix(port, 16).ok()
}

/// Lines read between two looks at the clock.
const LINES_PER_CLOCK: usize = 1024;

/// The budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfTime;

/// Adds the listening sockets of one table's text to `out`; returns how
/// many. A TCP table is read only up to its first socket in another state.
/// Reading stops at the end of the text, at a read error, or with
/// [`OutOfTime`] at `deadline`.
pub fn parse_table(
    reader: &mut impl BufRead,
    protocol: Protocol,
    out: &mut HashMap<u64, u16>,
    deadline: Instant,
) -> Result<usize, OutOfTime> {
    let mut line = Vec::with_capacity(256);
    let mut found = 0;
    for n in 1.. {
        if n % LINES_PER_CLOCK == 0 && Instant::now() >= deadline {
            return Err(OutOfTime);
        }
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            // A line cut by the size limit is not parsed.
            Ok(_) if line.last() != Some(&b'\n') => break,
            Ok(_) => {}
        }
        match parse_line(&line, protocol) {
            Line::Listening { inode, port } => {
                out.insert(inode, port);
                found += 1;
            }
            Line::OtherTcpState => break,
            Line::Skip => {}
        }
    }
    Ok(found)
}

/// The inode in a descriptor link's target, `socket:[INODE]`.
pub fn socket_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The inode in a namespace link's target, `net:[INODE]`.
fn netns_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What one port pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortStats {
    /// Processes whose descriptors were read.
    pub visited: u32,
    /// Processes not reached before the budget ran out: they keep the
    /// ports found for them before.
    pub skipped: u32,
    /// Network namespaces whose socket tables were read.
    pub namespaces: u32,
    /// Listening sockets in those tables.
    pub listening_sockets: u32,
}

/// How reading one process ended.
enum Walk {
    /// `self.ports` holds its ports.
    Done,
    /// Its descriptors could not be read (gone, or not permitted).
    Unreadable,
    OutOfTime,
}

/// Finds the listening ports of processes; keeps its buffers between
/// scans.
#[derive(Debug)]
pub struct PortMapper {
    root: PathBuf,
    /// Socket inode -> local port, from the tables read this pass.
    listening: HashMap<u64, u16>,
    /// Network namespaces whose tables were read this pass.
    namespaces: HashSet<u64>,
    /// Where the next full walk starts: the first process not visited.
    next_pid: u32,
    inodes: Vec<u64>,
    ports: Vec<u32>,
    /// The listening socket inodes of the last pass.
    known: HashSet<u64>,
    /// The listening socket inodes of each process read since its start
    /// (empty when it has none, or its descriptors could not be read).
    held: HashMap<Proc, Vec<u64>>,
    /// Other network namespaces whose tables every pass reads: namespace
    /// inode -> a process in it.
    others: HashMap<u64, u32>,
    /// A full walk is due or under way (until it has visited everyone).
    full_due: bool,
    /// Passes since the last full walk ended.
    passes: u32,
}

impl Default for PortMapper {
    fn default() -> Self {
        PortMapper::new()
    }
}

impl PortMapper {
    pub fn new() -> PortMapper {
        PortMapper::with_root(Path::new(super::PROC))
    }

    /// A mapper reading the proc tree at `root` instead of `/proc`.
    pub fn with_root(root: &Path) -> PortMapper {
        PortMapper {
            root: root.to_path_buf(),
            listening: HashMap::new(),
            namespaces: HashSet::new(),
            next_pid: 0,
            inodes: Vec::new(),
            ports: Vec::new(),
            known: HashSet::new(),
            held: HashMap::new(),
            others: HashMap::new(),
            full_due: true,
            passes: 0,
        }
    }

    /// One pass over `procs` (sorted, kernel threads left out) until
    /// `deadline`: calls `found(i, ports)` with the sorted listening ports
    /// (empty when none) of each process `procs[i]` whose ports were read
    /// or changed. Processes not reported keep the ports reported before.
    pub fn map(
        &mut self,
        procs: &[Proc],
        deadline: Instant,
        mut found: impl FnMut(usize, &[u32]),
    ) -> PortStats {
        let mut stats = PortStats::default();
        self.listening.clear();
        self.namespaces.clear();
        if let Some(own) = self.read_link("self/ns/net").and_then(|t| netns_inode(&t)) {
            self.namespaces.insert(own);
        }
        if self.load_tables("net", deadline, &mut stats).is_err()
            || self.load_other_namespaces(deadline, &mut stats).is_err()
        {
            stats.skipped = count(procs.len());
            return stats;
        }
        self.held.retain(|k, _| procs.binary_search(k).is_ok());
        self.passes = self.passes.saturating_add(1);
        if self.passes >= FULL_EVERY {
            self.full_due = true;
        }
        if !self.full_due && self.changes(procs, deadline, &mut stats, &mut found) {
            self.remember_listening();
            return stats;
        }
        self.full_due = true;
        self.full_walk(procs, deadline, &mut stats, &mut found);
        self.remember_listening();
        stats
    }

    /// The pass between full walks: drops closed sockets from the
    /// processes that held them, reads the descriptors of new processes.
    /// False when a new listening socket is held by none of them: a full
    /// walk must find it.
    fn changes(
        &mut self,
        procs: &[Proc],
        deadline: Instant,
        stats: &mut PortStats,
        found: &mut impl FnMut(usize, &[u32]),
    ) -> bool {
        let mut unexplained: HashSet<u64> = self
            .listening
            .keys()
            .filter(|inode| !self.known.contains(inode))
            .copied()
            .collect();
        if self
            .known
            .iter()
            .any(|inode| !self.listening.contains_key(inode))
        {
            let listening = &self.listening;
            let ports = &mut self.ports;
            for (key, inodes) in &mut self.held {
                let before = inodes.len();
                inodes.retain(|inode| listening.contains_key(inode));
                if inodes.len() != before
                    && let Ok(i) = procs.binary_search(key)
                {
                    ports_of(listening, inodes, ports);
                    found(i, ports);
                }
            }
        }
        for (i, &key) in procs.iter().enumerate() {
            if self.held.contains_key(&key) {
                continue;
            }
            if Instant::now() >= deadline {
                stats.skipped += 1;
                continue;
            }
            match self.process(key.0, deadline, stats) {
                Walk::Done => {
                    for inode in &self.inodes {
                        unexplained.remove(inode);
                    }
                    self.hold(key);
                    found(i, &self.ports);
                }
                Walk::Unreadable => {
                    self.held.insert(key, Vec::new());
                }
                Walk::OutOfTime => {
                    stats.skipped += 1;
                    continue;
                }
            }
            stats.visited += 1;
        }
        unexplained.is_empty()
    }

    /// Reads every process's descriptors, starting where the last full
    /// walk stopped, until done or `deadline`.
    fn full_walk(
        &mut self,
        procs: &[Proc],
        deadline: Instant,
        stats: &mut PortStats,
        found: &mut impl FnMut(usize, &[u32]),
    ) {
        let start = procs.partition_point(|&(p, _)| p < self.next_pid);
        let order = (start..procs.len()).chain(0..start);
        let mut stopped_at = None;
        for (visited, i) in order.enumerate() {
            if Instant::now() >= deadline {
                stopped_at = Some((visited, i));
                break;
            }
            let key = procs[i];
            match self.process(key.0, deadline, stats) {
                Walk::Done => {
                    self.hold(key);
                    found(i, &self.ports);
                }
                Walk::Unreadable => {
                    self.held.insert(key, Vec::new());
                }
                Walk::OutOfTime => {
                    stopped_at = Some((visited, i));
                    break;
                }
            }
            stats.visited += 1;
        }
        match stopped_at {
            Some((visited, i)) => {
                stats.skipped = count(procs.len() - visited);
                self.next_pid = procs[i].0;
            }
            None => {
                self.next_pid = 0;
                self.full_due = false;
                self.passes = 0;
            }
        }
    }

    /// Records the listening sockets among `self.inodes` as `key`'s.
    fn hold(&mut self, key: Proc) {
        let listening = &self.listening;
        let held = self.held.entry(key).or_default();
        held.clear();
        held.extend(
            self.inodes
                .iter()
                .filter(|inode| listening.contains_key(inode)),
        );
    }

    /// Reads the tables of the namespaces found in earlier passes, through
    /// a process still in each. A namespace whose process is gone is
    /// forgotten and a full walk made due: it finds the namespace again
    /// through another process, and its sockets must not pass for closed.
    fn load_other_namespaces(
        &mut self,
        deadline: Instant,
        stats: &mut PortStats,
    ) -> Result<(), OutOfTime> {
        let others = std::mem::take(&mut self.others);
        for (ns, pid) in others {
            if self.namespaces.contains(&ns) {
                continue;
            }
            let link = format!("{pid}/ns/net");
            if self.read_link(&link).and_then(|t| netns_inode(&t)) == Some(ns) {
                self.load_tables(&format!("{pid}/net"), deadline, stats)?;
                self.namespaces.insert(ns);
                self.others.insert(ns, pid);
            } else {
                self.full_due = true;
            }
        }
        Ok(())
    }

    fn remember_listening(&mut self) {
        self.known.clear();
        self.known.extend(self.listening.keys());
    }

    /// Finds the listening ports of `pid` (into `self.ports`).
    fn process(&mut self, pid: u32, deadline: Instant, stats: &mut PortStats) -> Walk {
        let walk = self.socket_inodes(pid, deadline);
        if !matches!(walk, Walk::Done) {
            return walk;
        }
        if !self.lookup() {
            // A socket not in the tables read so far: a client socket, or
            // the process lives in another network namespace.
            let link = format!("{pid}/ns/net");
            match self.read_link(&link).and_then(|t| netns_inode(&t)) {
                Some(ns) if self.namespaces.insert(ns) => {
                    self.others.insert(ns, pid);
                    if self
                        .load_tables(&format!("{pid}/net"), deadline, stats)
                        .is_err()
                    {
                        return Walk::OutOfTime;
                    }
                    self.lookup();
                }
                Some(_) => {}
                None if !self.root.join(pid.to_string()).exists() => return Walk::Unreadable,
                None => {}
            }
        }
        self.ports.sort_unstable();
        self.ports.dedup();
        Walk::Done
    }

    /// Reads the socket inodes of `pid`'s descriptors into `self.inodes`.
    fn socket_inodes(&mut self, pid: u32, deadline: Instant) -> Walk {
        self.inodes.clear();
        let Ok(entries) = std::fs::read_dir(self.root.join(format!("{pid}/fd"))) else {
            return Walk::Unreadable;
        };
        for (n, entry) in entries.enumerate() {
            if n % CLOCK_EVERY == CLOCK_EVERY - 1 && Instant::now() >= deadline {
                return Walk::OutOfTime;
            }
            // A descriptor closed in between is simply not there.
            if let Ok(entry) = entry
                && let Ok(target) = std::fs::read_link(entry.path())
                && let Some(inode) = socket_inode(target.as_os_str().as_bytes())
            {
                self.inodes.push(inode);
            }
        }
        Walk::Done
    }

    /// Looks `self.inodes` up into `self.ports`; false when one is unknown.
    fn lookup(&mut self) -> bool {
        self.ports.clear();
        let mut all_known = true;
        for inode in &self.inodes {
            match self.listening.get(inode) {
                Some(&port) => self.ports.push(u32::from(port)),
                None => all_known = false,
            }
        }
        all_known
    }

    /// Reads the four tables under `root/dir` (`net`, or `PID/net`).
    fn load_tables(
        &mut self,
        dir: &str,
        deadline: Instant,
        stats: &mut PortStats,
    ) -> Result<(), OutOfTime> {
        stats.namespaces += 1;
        for (name, protocol) in TABLES {
            // A kernel without IPv6 has no tcp6 and udp6.
            let Ok(file) = std::fs::File::open(self.root.join(dir).join(name)) else {
                continue;
            };
            let mut reader = BufReader::with_capacity(64 * 1024, file.take(MAX_TABLE_BYTES));
            let found = parse_table(&mut reader, protocol, &mut self.listening, deadline)?;
            stats.listening_sockets = stats.listening_sockets.saturating_add(count(found));
        }
        Ok(())
    }

    fn read_link(&self, relative: &str) -> Option<Vec<u8>> {
        std::fs::read_link(self.root.join(relative))
            .ok()
            .map(|t| t.as_os_str().as_bytes().to_vec())
    }
}

/// The sorted, deduplicated ports of `inodes` into `out`.
fn ports_of(listening: &HashMap<u64, u16>, inodes: &[u64], out: &mut Vec<u32>) {
    out.clear();
    out.extend(
        inodes
            .iter()
            .filter_map(|inode| listening.get(inode).map(|&p| u32::from(p))),
    );
    out.sort_unstable();
    out.dedup();
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use std::time::Duration;

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0
";

    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:A1B2 06 00000000:00000000 03:00000ABC 00000000     0        0 0 3 0000000000000000
";

    const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 3001 2 0000000000000000 0
  200: 0100007F:C350 0100007F:0035 01 00000000:00000000 00:00000000 00000000  1000        0 3002 2 0000000000000000 0
  300: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3003 2 0000000000000000 0
";

    const UDP6: &str = "\
   sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  500: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 4001 2 0000000000000000 0
";

    fn parse(text: &str, protocol: Protocol) -> HashMap<u64, u16> {
        let mut out = HashMap::new();
        parse_table(&mut text.as_bytes(), protocol, &mut out, far()).unwrap();
        out
    }

    #[test]
    fn tcp_listeners_up_to_the_first_other_state() {
        let map = parse(TCP, Protocol::Tcp);
        // Inode 1004 follows an established socket: the kernel never lists
        // it there, and reading stops at the first other state.
        assert_eq!(map, HashMap::from([(1001, 22), (1002, 8080)]));
        let map = parse(TCP6, Protocol::Tcp);
        assert_eq!(map, HashMap::from([(2001, 22), (2002, 8081)]));
    }

    #[test]
    fn udp_bound_and_unconnected() {
        assert_eq!(
            parse(UDP, Protocol::Udp),
            HashMap::from([(3001, 53), (3003, 68)])
        );
        assert_eq!(parse(UDP6, Protocol::Udp), HashMap::from([(4001, 5353)]));
    }

    #[test]
    fn odd_lines_are_skipped() {
        for line in [
            "",
            "\n",
            "garbage",
            "   0: 00000000:0016",
            "   0: 00000000:0016 00000000:0000 0A",
            "   0: 00000000:0016 00000000:0000 0A 0:0 0:0 0 0 0 notanumber",
            "   0: 00000000:0000 00000000:0000 0A 0:0 0:0 0 0 0 77",
            "   0: 00000000:0016 00000000:0000 0A 0:0 0:0 0 0 0 0",
            "   0: 0000:0016 00000000:0000 0A 0:0 0:0 0 0 0 77",
            "   0: 00000000:XYZW 00000000:0000 0A 0:0 0:0 0 0 0 77",
            "   0: 00000000:00016 00000000:0000 0A 0:0 0:0 0 0 0 77",
            "   0: 00000000:0016 00000000:0000 0A 0:0 0:0 0 0 0 99999999999999999999999",
        ] {
            assert_eq!(
                parse_line(line.as_bytes(), Protocol::Tcp),
                Line::Skip,
                "{line:?}"
            );
            assert_eq!(
                parse_line(line.as_bytes(), Protocol::Udp),
                Line::Skip,
                "{line:?}"
            );
        }
        assert_eq!(parse_line(&[0xff, 0xfe, b'\n'], Protocol::Tcp), Line::Skip);
        let header = TCP.lines().next().unwrap();
        assert_eq!(parse_line(header.as_bytes(), Protocol::Tcp), Line::Skip);
    }

    #[test]
    fn descriptor_and_namespace_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        for other in [
            &b"socket:[]"[..],
            b"socket:[12a]",
            b"socket:[1",
            b"pipe:[12]",
            b"/dev/null",
            b"anon_inode:[eventfd]",
        ] {
            assert_eq!(socket_inode(other), None);
        }
        assert_eq!(netns_inode(b"net:[4026531833]"), Some(4_026_531_833));
        assert_eq!(netns_inode(b"mnt:[4026531833]"), None);
    }

    /// A proc tree: own namespace `net:[1]` with `TCP`/`UDP`, process 10
    /// (ports 22 and 53, a pipe), 11 (a client socket), 12 (no fd
    /// directory), and 20 in namespace `net:[2]` with its own tables.
    fn fixture() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mkdir = |p: &str| std::fs::create_dir_all(r.join(p)).unwrap();
        let link = |target: &str, p: &str| std::os::unix::fs::symlink(target, r.join(p)).unwrap();
        mkdir("net");
        std::fs::write(r.join("net/tcp"), TCP).unwrap();
        std::fs::write(r.join("net/udp"), UDP).unwrap();
        mkdir("self/ns");
        link("net:[1]", "self/ns/net");
        for pid in [10, 11, 20] {
            mkdir(&format!("{pid}/fd"));
            mkdir(&format!("{pid}/ns"));
        }
        mkdir("12");
        link("socket:[1001]", "10/fd/3");
        link("pipe:[77]", "10/fd/4");
        link("socket:[3001]", "10/fd/5");
        link("socket:[3001]", "10/fd/6");
        link("/dev/null", "10/fd/0");
        link("net:[1]", "10/ns/net");
        link("socket:[1003]", "11/fd/3");
        link("net:[1]", "11/ns/net");
        link("socket:[2002]", "20/fd/3");
        link("socket:[4001]", "20/fd/4");
        link("net:[2]", "20/ns/net");
        mkdir("20/net");
        std::fs::write(r.join("20/net/tcp6"), TCP6).unwrap();
        std::fs::write(r.join("20/net/udp6"), UDP6).unwrap();
        root
    }

    /// `TCP` with one more listening socket, listed first.
    fn with_listener(inode: u64, port: u16) -> String {
        let (header, rest) = TCP.split_once('\n').unwrap();
        format!(
            "{header}\n  9: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n{rest}"
        )
    }

    /// Instances of `pids`, all started at 0.
    fn procs(pids: &[u32]) -> Vec<Proc> {
        pids.iter().map(|&p| (p, 0)).collect()
    }

    /// One pass: what it reported, by pid, and its stats.
    fn pass(mapper: &mut PortMapper, pids: &[Proc]) -> (Vec<(u32, Vec<u32>)>, PortStats) {
        let mut got = Vec::new();
        let stats = mapper.map(pids, far(), |i, ports| {
            got.push((pids[i].0, ports.to_vec()))
        });
        (got, stats)
    }

    #[test]
    fn after_a_full_walk_only_new_processes_and_closed_sockets_are_read() {
        let root = fixture();
        let r = root.path();
        let mut mapper = PortMapper::with_root(r);
        let mut pids = procs(&[10, 11, 12, 20]);
        let (_, stats) = pass(&mut mapper, &pids);
        assert_eq!(stats.visited, 4, "the first pass is a full walk");

        let (got, stats) = pass(&mut mapper, &pids);
        assert_eq!((got, stats.visited), (vec![], 0), "nothing changed");
        assert_eq!(stats.namespaces, 2, "both namespaces' tables read");

        // A new process with a new listener: only it is read.
        std::fs::create_dir_all(r.join("30/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[1005]", r.join("30/fd/3")).unwrap();
        let tcp = with_listener(1005, 0x1F40);
        std::fs::write(r.join("net/tcp"), &tcp).unwrap();
        pids.push((30, 0));
        let (got, stats) = pass(&mut mapper, &pids);
        assert_eq!(got, vec![(30, vec![8000])]);
        assert_eq!(stats.visited, 1);

        // A pid reused by a new instance is read again.
        pids[1] = (11, 5);
        let (got, stats) = pass(&mut mapper, &pids);
        assert_eq!((got, stats.visited), (vec![(11, vec![])], 1));

        // Process 10 closes its port 22: reported without reading.
        let closed: String = tcp
            .lines()
            .filter(|l| !l.contains(" 1001 1 "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(r.join("net/tcp"), closed).unwrap();
        let (got, stats) = pass(&mut mapper, &pids);
        assert_eq!((got, stats.visited), (vec![(10, vec![53])], 0));
    }

    #[test]
    fn a_running_process_that_starts_listening_is_found_by_a_full_walk() {
        let root = fixture();
        let r = root.path();
        let mut mapper = PortMapper::with_root(r);
        let pids = procs(&[10, 11, 12, 20]);
        pass(&mut mapper, &pids);
        std::os::unix::fs::symlink("socket:[1006]", r.join("11/fd/4")).unwrap();
        std::fs::write(r.join("net/tcp"), with_listener(1006, 0x1F41)).unwrap();
        let (got, stats) = pass(&mut mapper, &pids);
        assert_eq!(stats.visited, 4, "a new socket no new process holds");
        assert!(got.contains(&(11, vec![8001])), "{got:?}");
    }

    #[test]
    fn every_twelfth_pass_and_a_lost_namespace_walk_everything() {
        let root = fixture();
        let mut mapper = PortMapper::with_root(root.path());
        let pids = procs(&[10, 11, 12, 20]);
        let visits: Vec<u32> = (0..=FULL_EVERY)
            .map(|_| pass(&mut mapper, &pids).1.visited)
            .collect();
        let mut want = vec![0; visits.len()];
        want[0] = 4;
        want[usize::try_from(FULL_EVERY).unwrap()] = 4;
        assert_eq!(visits, want);

        // The process through which namespace 2 was read is gone.
        std::fs::remove_dir_all(root.path().join("20")).unwrap();
        let (_, stats) = pass(&mut mapper, &procs(&[10, 11, 12]));
        assert_eq!(stats.visited, 3, "a full walk finds the namespace again");
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn maps_processes_to_their_ports_across_namespaces() {
        let root = fixture();
        let mut mapper = PortMapper::with_root(root.path());
        let pids = procs(&[10, 11, 12, 20]);
        let mut got = Vec::new();
        let stats = mapper.map(&pids, far(), |i, ports| {
            got.push((pids[i].0, ports.to_vec()))
        });
        assert_eq!(
            got,
            vec![(10, vec![22, 53]), (11, vec![]), (20, vec![5353, 8081])]
        );
        assert_eq!(stats.visited, 4);
        assert_eq!(stats.skipped, 0);
        assert_eq!(stats.namespaces, 2, "own and process 20's");
        assert_eq!(stats.listening_sockets, 4 + 3);
    }

    #[test]
    fn over_budget_skips_and_resumes_where_it_stopped() {
        let root = fixture();
        let mut mapper = PortMapper::with_root(root.path());
        let pids = procs(&[10, 11, 12, 20]);
        let stats = mapper.map(&pids, Instant::now(), |_, _| panic!("nothing visited"));
        assert_eq!(stats.skipped, 4);
        assert_eq!(stats.visited, 0);

        // A pass that stops after the first process resumes at the second.
        mapper.next_pid = 11;
        let mut got = Vec::new();
        let stats = mapper.map(&pids, far(), |i, _| got.push(pids[i].0));
        assert_eq!(got, vec![11, 20, 10], "starts at 11 and wraps around");
        assert_eq!(stats.skipped, 0);
        assert_eq!(mapper.next_pid, 0);
    }

    #[test]
    fn a_cut_table_keeps_its_whole_lines() {
        // A long table read through a limit: nothing past it, no panic.
        let mut text = String::from(UDP.lines().next().unwrap());
        text.push('\n');
        for i in 0..10_000 {
            text.push_str(&format!(
                "  {i}: 00000000:{:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 {} 2 0 0\n",
                i % 65_000 + 1,
                100_000 + i
            ));
        }
        let mut out = HashMap::new();
        let n = parse_table(
            &mut BufReader::new(text.as_bytes().take(50_000)),
            Protocol::Udp,
            &mut out,
            far(),
        )
        .unwrap();
        assert!(n > 100 && n < 10_000, "{n}");
        assert_eq!(n, out.len());
        // The line cut in the middle is not read: its inode would be wrong.
        for (inode, port) in &out {
            let i = inode - 100_000;
            assert_eq!(u64::from(*port), i % 65_000 + 1, "inode {inode}");
        }
        let past = Instant::now();
        assert_eq!(
            parse_table(&mut text.as_bytes(), Protocol::Udp, &mut out, past),
            Err(OutOfTime),
            "a long table is cut at the deadline"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_a_listener_of_this_process() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp_port = u32::from(tcp.local_addr().unwrap().port());
        let udp_port = u32::from(udp.local_addr().unwrap().port());
        let me = std::process::id();
        let mut mapper = PortMapper::new();
        let mut mine = None;
        let stats = mapper.map(&[(me, 0)], far(), |_, ports| mine = Some(ports.to_vec()));
        let mine = mine.expect("own descriptors are readable");
        assert!(mine.contains(&tcp_port), "{mine:?} lacks {tcp_port}");
        assert!(mine.contains(&udp_port), "{mine:?} lacks {udp_port}");
        assert!(stats.listening_sockets >= 2);
    }
}
