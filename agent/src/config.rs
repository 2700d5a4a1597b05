//! The agent's command line, resolved into a configuration that cannot be
//! invalid.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sentineld_common::layout::StateLayout;

use crate::detect::RuleSources;
use crate::sinks::spec::SpecError;
use crate::sinks::{SinkSettings, parse_spec};

/// How the collector is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CollectorMode {
    /// The agent starts procmond itself, restarts it when it dies and stops
    /// it on shutdown.
    Standalone,
    /// procmond is started separately (e.g. its own systemd unit) and
    /// connects to the agent's socket.
    External,
}

/// sentinelagent: stores what procmond collects and serves it to sentinelcli.
#[derive(Debug, Parser)]
#[command(name = "sentinelagent", version = sentineld_common::VERSION)]
pub struct AgentArgs {
    /// Directory for the store, procmond's files and (unless --socket is
    /// given) the collector socket. Default: /var/lib/sentineld as root,
    /// the XDG state directory otherwise.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Path of the collector socket. Default: inside --state-dir if given,
    /// else /run/sentineld as root, the XDG runtime directory otherwise.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// How often procmond scans (passed to the procmond the agent starts).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = sentineld_common::time::parse_duration)]
    pub scan_interval: Duration,

    /// Start and supervise procmond (standalone) or wait for one started
    /// separately (external).
    #[arg(long, value_enum, default_value_t = CollectorMode::Standalone)]
    pub collector: CollectorMode,

    /// The procmond executable to start in standalone mode. Default: the
    /// `procmond` beside this executable.
    #[arg(long, value_name = "PATH")]
    pub procmond: Option<PathBuf>,

    /// Most collector connections served at once; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_connections: u32,

    /// Directory of rule files (*.yaml, *.yml, *.toml), watched for changes.
    /// Default: /etc/sentineld/rules.d as root, else
    /// $XDG_CONFIG_HOME/sentineld/rules.d.
    #[arg(long, value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,

    /// Do not load the built-in Linux rule pack.
    #[arg(long)]
    pub no_builtin_rules: bool,

    /// Where alerts go; repeat for several: `stdout`, `file=PATH`, `syslog`,
    /// `syslog=udp://HOST:PORT`, `webhook=URL`. Default: stdout.
    #[arg(long = "alert-sink", value_name = "SPEC")]
    pub alert_sinks: Vec<String>,

    /// Where /metrics and the JSON API are served: a loopback address, or
    /// `off`.
    #[arg(long, value_name = "ADDR|off", default_value = crate::http::DEFAULT_LISTEN)]
    pub metrics_listen: String,

    /// Allow --metrics-listen on an address other than loopback.
    #[arg(long)]
    pub metrics_allow_remote: bool,

    /// Processes exported per process by /metrics: the top N by CPU and
    /// the top N by memory.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub metrics_top_n: u32,

    /// A TOML configuration file. It holds `[[sinks]]` entries (see
    /// docs/alerts.md), added to those given with --alert-sink; unknown keys
    /// are errors.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// File of executable SHA-256 hashes (hex, one per line, `#` comments)
    /// that raise the `hash_denied` column.
    #[arg(long, value_name = "FILE")]
    pub hash_deny_list: Option<PathBuf>,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub layout: StateLayout,
    pub scan_interval: Duration,
    pub collector: CollectorMode,
    /// Set in standalone mode: the procmond executable to supervise.
    pub procmond: Option<PathBuf>,
    pub max_connections: usize,
    /// How long a new connection may take to send its handshake.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for procmond to exit before killing it.
    pub stop_timeout: Duration,
    /// Where the rules come from.
    pub rules: RuleSources,
    /// The alert sinks, validated.
    pub sinks: Vec<SinkSettings>,
    /// Where the HTTP endpoint listens; `None` when off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub metrics_top_n: usize,
}

/// Why the command line cannot be turned into a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "procmond not found at {path}: build the whole workspace (cargo build --release), pass --procmond PATH, or use --collector external"
    )]
    ProcmondMissing { path: PathBuf },
    #[error(
        "cannot find this executable's directory to locate procmond: {0}; pass --procmond PATH"
    )]
    CurrentExe(#[source] std::io::Error),
    #[error("--alert-sink: {0}")]
    Sink(#[from] SpecError),
    #[error("--metrics-listen: {0}")]
    MetricsListen(#[from] crate::http::ListenError),
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    ConfigParse { path: PathBuf, message: String },
    #[error("config file {}: {source}", path.display())]
    ConfigSink {
        path: PathBuf,
        source: crate::sinks::config::ConfigError,
    },
}

/// The configuration file. Unknown keys are errors, so a typo is not
/// silently ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    sinks: Vec<crate::sinks::config::SinkConfig>,
}

/// Reads the sinks of the configuration file at `path`.
fn file_sinks(path: &std::path::Path) -> Result<Vec<SinkSettings>, ConfigError> {
    const MAX_CONFIG_BYTES: u64 = 1 << 20;
    let read = |source| ConfigError::ConfigRead {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError::ConfigParse {
            path: path.to_path_buf(),
            message: format!("{len} bytes; the limit is {MAX_CONFIG_BYTES}"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::ConfigParse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::sinks::config::validate_all(&file.sinks).map_err(|source| ConfigError::ConfigSink {
        path: path.to_path_buf(),
        source,
    })
}

impl AgentConfig {
    pub fn from_args(args: AgentArgs) -> Result<AgentConfig, ConfigError> {
        let layout = StateLayout::resolve(args.state_dir.as_deref(), args.socket.as_deref());
        let procmond = match args.collector {
            CollectorMode::External => None,
            CollectorMode::Standalone => {
                let path = match args.procmond {
                    Some(path) => path,
                    None => {
                        let exe = std::env::current_exe().map_err(ConfigError::CurrentExe)?;
                        exe.with_file_name(format!("procmond{}", std::env::consts::EXE_SUFFIX))
                    }
                };
                if !path.is_file() {
                    return Err(ConfigError::ProcmondMissing { path });
                }
                Some(path)
            }
        };
        let mut sinks: Vec<SinkSettings> = args
            .alert_sinks
            .iter()
            .map(|s| parse_spec(s))
            .collect::<Result<_, _>>()?;
        if let Some(path) = &args.config {
            sinks.extend(file_sinks(path)?);
        }
        if sinks.is_empty() {
            sinks.push(parse_spec("stdout")?);
        }
        Ok(AgentConfig {
            layout,
            scan_interval: args.scan_interval,
            collector: args.collector,
            procmond,
            max_connections: args.max_connections as usize,
            handshake_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            rules: RuleSources {
                dir: Some(
                    args.rules_dir
                        .unwrap_or_else(sentineld_common::layout::default_rules_dir),
                ),
                builtin: !args.no_builtin_rules,
                deny_list: args.hash_deny_list,
            },
            sinks,
            metrics_listen: crate::http::parse_listen(
                &args.metrics_listen,
                args.metrics_allow_remote,
            )?,
            metrics_top_n: args.metrics_top_n as usize,
        })
    }
}
