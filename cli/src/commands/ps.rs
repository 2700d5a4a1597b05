//! `sentinelcli ps`: the processes alive at the latest scan.

use std::path::Path;

use sentineld_proto::view::ProcessView;
use serde::Serialize;

use crate::args::PsArgs;
use crate::output::{self, Column, csv_opt};
use crate::tree::{Node, tree_order};
use crate::{CliError, Context, Format};

/// CSV columns, in the order of the JSON object's fields.
pub(crate) const FIELDS: &[&str] = &[
    "pid",
    "ppid",
    "name",
    "exe",
    "cmdline",
    "start_time",
    "uid",
    "user",
    "status",
    "threads",
    "rss_bytes",
    "vms_bytes",
    "swap_bytes",
    "cpu_percent",
    "open_fds",
    "sha256",
    "hash_status",
    "hash_error",
    "exe_deleted",
    "container_id",
    "listening_ports",
];

/// The extra column of `--tree`.
const DEPTH: &str = "depth";

const COLUMNS: &[Column] = &[
    Column::right("PID"),
    Column::right("PPID"),
    Column::left("USER"),
    Column::right("CPU%"),
    Column::right("RSS"),
    Column::right("THREADS"),
    Column::left("SHA256"),
    Column::left("COMMAND"),
];

/// The table's columns with `--ports`.
const COLUMNS_WITH_PORTS: &[Column] = &[
    Column::right("PID"),
    Column::right("PPID"),
    Column::left("USER"),
    Column::right("CPU%"),
    Column::right("RSS"),
    Column::right("THREADS"),
    Column::left("SHA256"),
    Column::left("PORTS"),
    Column::left("COMMAND"),
];

/// Hex digits of the hash shown in a table.
const SHA256_SHOWN: usize = 12;

/// One process as printed: the shared view, plus its depth with `--tree`.
#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    view: ProcessView,
    #[serde(skip_serializing_if = "Option::is_none")]
    depth: Option<usize>,
}

/// The `ps` filters, prepared once.
#[derive(Debug)]
struct Filter<'a> {
    name: Option<String>,
    pid: Option<u32>,
    user: Option<&'a str>,
    sha256: Option<&'a str>,
}

impl<'a> Filter<'a> {
    fn new(args: &'a PsArgs) -> Filter<'a> {
        Filter {
            name: args.name.as_deref().map(str::to_lowercase),
            pid: args.pid,
            user: args.user.as_deref(),
            sha256: args.sha256.as_deref(),
        }
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.pid.is_none() && self.user.is_none() && self.sha256.is_none()
    }

    fn matches(&self, view: &ProcessView) -> bool {
        if self.pid.is_some_and(|pid| pid != view.pid) {
            return false;
        }
        if let Some(needle) = &self.name {
            let exe_name = view
                .exe
                .as_deref()
                .and_then(|exe| Path::new(exe).file_name())
                .map(|n| n.to_string_lossy().to_lowercase());
            let found = view.name.to_lowercase().contains(needle.as_str())
                || exe_name.is_some_and(|n| n.contains(needle.as_str()));
            if !found {
                return false;
            }
        }
        if let Some(user) = self.user {
            let by_name = view.user.as_deref() == Some(user);
            let by_uid = user.parse::<u32>().is_ok_and(|uid| view.uid == Some(uid));
            if !by_name && !by_uid {
                return false;
            }
        }
        if let Some(prefix) = self.sha256
            && !view
                .sha256
                .as_deref()
                .is_some_and(|h| h.starts_with(prefix))
        {
            return false;
        }
        true
    }
}

pub(crate) fn run(ctx: &mut Context<'_>, args: &PsArgs) -> Result<(), CliError> {
    let filter = Filter::new(args);
    let mut shown: Vec<(Node, ProcessView)> = ctx
        .reader
        .live()?
        .iter()
        .filter_map(|p| {
            let view = p.view();
            filter.matches(&view).then(|| {
                let start_time = p.record.instance.map_or(0, |i| i.start_time);
                (
                    Node {
                        pid: view.pid,
                        ppid: view.ppid,
                        start_time,
                    },
                    view,
                )
            })
        })
        .collect();
    shown.sort_by_key(|(node, _)| node.pid);

    let rows: Vec<Row> = if args.tree {
        let nodes: Vec<Node> = shown.iter().map(|(node, _)| *node).collect();
        let order = tree_order(&nodes);
        let mut views: Vec<Option<ProcessView>> =
            shown.into_iter().map(|(_, view)| Some(view)).collect();
        order
            .into_iter()
            .filter_map(|(i, depth)| {
                let view = views.get_mut(i)?.take()?;
                Some(Row {
                    view,
                    depth: Some(depth),
                })
            })
            .collect()
    } else {
        shown
            .into_iter()
            .map(|(_, view)| Row { view, depth: None })
            .collect()
    };

    if rows.is_empty() {
        let note = if !filter.is_empty() {
            "no process matches the filters".to_owned()
        } else if ctx.reader.scans(Some(1))?.is_empty() {
            format!(
                "{} holds no scan yet: is sentinelagent running with this --state-dir?",
                ctx.store_path.display()
            )
        } else {
            "the latest scan holds no process".to_owned()
        };
        ctx.note(&note);
    }

    match ctx.format {
        Format::Json => output::write_json(ctx.out, &rows)?,
        Format::Csv => {
            let mut header = FIELDS.to_vec();
            if args.tree {
                header.push(DEPTH);
            }
            output::write_csv(ctx.out, &header, rows.iter().map(csv_row))?;
        }
        Format::Table if rows.is_empty() => {}
        Format::Table => {
            let cells: Vec<Vec<String>> = rows.iter().map(|r| table_row(r, args.ports)).collect();
            let columns = if args.ports {
                COLUMNS_WITH_PORTS
            } else {
                COLUMNS
            };
            output::write_table(ctx.out, columns, &cells)?;
        }
    }
    Ok(())
}

fn csv_row(row: &Row) -> Vec<String> {
    let v = &row.view;
    let mut fields = vec![
        v.pid.to_string(),
        v.ppid.to_string(),
        v.name.clone(),
        csv_opt(v.exe.as_deref()),
        output::join_cmdline(&v.cmdline),
        v.start_time.clone(),
        csv_opt(v.uid),
        csv_opt(v.user.as_deref()),
        v.status.clone(),
        v.threads.to_string(),
        v.rss_bytes.to_string(),
        v.vms_bytes.to_string(),
        csv_opt(v.swap_bytes),
        v.cpu_percent.to_string(),
        csv_opt(v.open_fds),
        csv_opt(v.sha256.as_deref()),
        v.hash_status.to_owned(),
        csv_opt(v.hash_error.as_deref()),
        v.exe_deleted.to_string(),
        csv_opt(v.container_id.as_deref()),
        join_ports(&v.listening_ports, " "),
    ];
    if let Some(depth) = row.depth {
        fields.push(depth.to_string());
    }
    fields
}

/// Ports joined by `sep`; empty when there are none.
fn join_ports(ports: &[u32], sep: &str) -> String {
    ports
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// The table cells of a row; with `ports`, the PORTS cell before COMMAND
/// (comma-separated, `-` when none).
fn table_row(row: &Row, ports: bool) -> Vec<String> {
    let v = &row.view;
    let user = match (&v.user, v.uid) {
        (Some(user), _) => user.clone(),
        (None, Some(uid)) => uid.to_string(),
        (None, None) => "-".to_owned(),
    };
    let sha256 = v
        .sha256
        .as_deref()
        .map_or("-", |h| h.get(..SHA256_SHOWN).unwrap_or(h))
        .to_owned();
    let command = if v.cmdline.is_empty() {
        format!("[{}]", v.name)
    } else {
        output::join_cmdline(&v.cmdline)
    };
    let command = match row.depth {
        Some(depth) if depth > 0 => format!("{}\\_ {command}", "   ".repeat(depth - 1)),
        _ => command,
    };
    let mut cells = vec![
        v.pid.to_string(),
        v.ppid.to_string(),
        user,
        format!("{:.1}", v.cpu_percent),
        output::human_bytes(v.rss_bytes),
        v.threads.to_string(),
        sha256,
    ];
    if ports {
        cells.push(if v.listening_ports.is_empty() {
            "-".to_owned()
        } else {
            join_ports(&v.listening_ports, ",")
        });
    }
    cells.push(command);
    cells
}

#[cfg(test)]
mod tests {
    use sentineld_proto::v1::{ExeInfo, HashStatus, InstanceRef, ProcessRecord, Sample};

    use super::*;

    fn view(
        pid: u32,
        name: &str,
        exe: &str,
        user: &str,
        uid: u32,
        sha: Option<[u8; 32]>,
    ) -> ProcessView {
        let record = ProcessRecord {
            instance: Some(InstanceRef {
                pid,
                start_time: 1_700_000_000,
            }),
            ppid: 1,
            name: name.to_owned(),
            exe: exe.to_owned(),
            cmdline: vec![exe.to_owned(), "--flag".to_owned()],
            uid: Some(uid),
            user: user.to_owned(),
            exe_info: Some(ExeInfo {
                sha256: sha.map(|s| s.to_vec()).unwrap_or_default(),
                hash_status: if sha.is_some() {
                    HashStatus::Ok
                } else {
                    HashStatus::Pending
                } as i32,
                ..ExeInfo::default()
            }),
            sample: Some(Sample {
                threads: 3,
                rss_bytes: 2048,
                ..Sample::default()
            }),
            ..ProcessRecord::default()
        };
        ProcessView::new(&record, None)
    }

    fn args() -> PsArgs {
        PsArgs::default()
    }

    #[test]
    fn csv_fields_are_the_json_fields() {
        let row = Row {
            view: view(1, "init", "/sbin/init", "root", 0, None),
            depth: None,
        };
        let json = serde_json::to_value(&row).expect("view serializes");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        assert_eq!(csv_row(&row).len(), FIELDS.len());
    }

    #[test]
    fn depth_appears_only_in_tree_rows() {
        let row = Row {
            view: view(1, "init", "/sbin/init", "root", 0, None),
            depth: Some(2),
        };
        let json = serde_json::to_value(&row).expect("serializes");
        assert_eq!(json["depth"], 2);
        assert_eq!(json["pid"], 1);
        assert_eq!(csv_row(&row).last().map(String::as_str), Some("2"));
    }

    #[test]
    fn name_filter_is_a_case_insensitive_substring_of_name_or_exe() {
        let v = view(10, "nginx: worker", "/usr/sbin/NGINX-bin", "www", 33, None);
        let by = |name: &str| {
            let a = PsArgs {
                name: Some(name.to_owned()),
                ..args()
            };
            Filter::new(&a).matches(&v)
        };
        assert!(by("Worker"));
        assert!(by("nginx-BIN"));
        assert!(!by("apache"));
        // The directory is not part of the file name.
        assert!(!by("sbin"));
    }

    #[test]
    fn user_filter_takes_a_name_or_a_uid() {
        let v = view(10, "sshd", "/usr/sbin/sshd", "root", 0, None);
        let by = |user: &str| {
            let a = PsArgs {
                user: Some(user.to_owned()),
                ..args()
            };
            Filter::new(&a).matches(&v)
        };
        assert!(by("root"));
        assert!(by("0"));
        assert!(!by("ROOT"));
        assert!(!by("1000"));
    }

    #[test]
    fn sha256_filter_is_a_prefix_and_skips_missing_hashes() {
        let hashed = view(10, "a", "/a", "u", 1, Some([0xab; 32]));
        let pending = view(11, "b", "/b", "u", 1, None);
        let a = PsArgs {
            sha256: Some("abab".to_owned()),
            ..args()
        };
        assert!(Filter::new(&a).matches(&hashed));
        assert!(!Filter::new(&a).matches(&pending));
        let a = PsArgs {
            sha256: Some("ba".to_owned()),
            ..args()
        };
        assert!(!Filter::new(&a).matches(&hashed));
    }

    #[test]
    fn filters_combine_with_and() {
        let v = view(10, "sshd", "/usr/sbin/sshd", "root", 0, None);
        let a = PsArgs {
            pid: Some(10),
            name: Some("ssh".to_owned()),
            ..args()
        };
        assert!(Filter::new(&a).matches(&v));
        let a = PsArgs {
            pid: Some(11),
            name: Some("ssh".to_owned()),
            ..args()
        };
        assert!(!Filter::new(&a).matches(&v));
        assert!(Filter::new(&args()).is_empty());
    }

    #[test]
    fn table_row_shortens_hash_and_indents_tree() {
        let row = Row {
            view: view(10, "a", "/bin/a", "", 1000, Some([0x01; 32])),
            depth: Some(2),
        };
        let cells = table_row(&row, false);
        assert_eq!(cells[2], "1000");
        assert_eq!(cells[4], "2.0K");
        assert_eq!(cells[6], "010101010101");
        assert_eq!(cells[7], "   \\_ /bin/a --flag");

        let mut kernel = view(2, "kthreadd", "", "root", 0, None);
        kernel.cmdline.clear();
        let cells = table_row(
            &Row {
                view: kernel,
                depth: None,
            },
            false,
        );
        assert_eq!(cells[6], "-");
        assert_eq!(cells[7], "[kthreadd]");
    }

    #[test]
    fn ports_column_and_field() {
        let mut v = view(10, "nginx", "/usr/sbin/nginx", "root", 0, None);
        v.listening_ports = vec![80, 443, 8443];
        let row = Row {
            view: v,
            depth: None,
        };
        let cells = table_row(&row, true);
        assert_eq!(cells.len(), COLUMNS_WITH_PORTS.len());
        assert_eq!(COLUMNS_WITH_PORTS[7].header, "PORTS");
        assert_eq!(cells[7], "80,443,8443");
        assert_eq!(cells[8], "/usr/sbin/nginx --flag");
        assert_eq!(table_row(&row, false).len(), COLUMNS.len());
        assert_eq!(
            csv_row(&row).last().map(String::as_str),
            Some("80 443 8443")
        );
        let json = serde_json::to_value(&row).expect("serializes");
        assert_eq!(json["listening_ports"], serde_json::json!([80, 443, 8443]));

        let quiet = Row {
            view: view(11, "sleep", "/bin/sleep", "root", 0, None),
            depth: None,
        };
        assert_eq!(table_row(&quiet, true)[7], "-");
        assert_eq!(csv_row(&quiet).last().map(String::as_str), Some(""));
    }
}
