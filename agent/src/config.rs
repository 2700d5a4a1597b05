//! The agent's configuration, in layers, highest precedence first:
//! command-line flags, `SENTINELD_*` environment variables, the user file
//! (`$XDG_CONFIG_HOME/sentineld/config.{toml,yaml,yml}`), the system file
//! (`/etc/sentineld/config.*`), embedded defaults. `--config FILE` names
//! the one file to read instead of the user and system files.
//!
//! Each layer is checked on its own, so an unknown key or a bad value is
//! reported with its file or variable; the layers are then merged (figment)
//! and resolved into an [`AgentConfig`] that cannot be invalid. Where each
//! value came from is kept for `--print-config`.

mod layer;
mod print;
mod sources;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use figment::Figment;
use sentineld_common::layout::StateLayout;
use serde::{Deserialize, Serialize};

use crate::detect::RuleSources;
use crate::sinks::spec::SpecError;
use crate::sinks::{SinkSettings, parse_spec};

pub use layer::{KEYS, Layer};
pub use sources::{ENV_PREFIX, SYSTEM_CONFIG_DIR, SYSTEM_CONFIG_DIR_VAR};
use sources::{EnvLayer, FileLayer, Given, Origin};

/// Default time between scans.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Default bound of collector connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// Default number of processes exported per process by /metrics.
pub const DEFAULT_METRICS_TOP_N: u32 = 50;

/// How the collector is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorMode {
    /// The agent starts procmond itself, restarts it when it dies and stops
    /// it on shutdown.
    Standalone,
    /// procmond is started separately (e.g. its own systemd unit) and
    /// connects to the agent's socket.
    External,
}

/// sentinelagent: stores what procmond collects and serves it to sentinelcli.
///
/// Every setting can also come from SENTINELD_* environment variables and
/// from configuration files (see docs/configuration.md); a flag given here
/// wins over both.
#[derive(Debug, Clone, Parser)]
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
    /// Default: 1s.
    #[arg(long, value_name = "DURATION", value_parser = sentineld_common::time::parse_duration)]
    pub scan_interval: Option<Duration>,

    /// Start and supervise procmond (standalone) or wait for one started
    /// separately (external). Default: standalone.
    #[arg(long, value_enum)]
    pub collector: Option<CollectorMode>,

    /// The procmond executable to start in standalone mode. Default: the
    /// `procmond` beside this executable.
    #[arg(long, value_name = "PATH")]
    pub procmond: Option<PathBuf>,

    /// Most collector connections served at once; more wait to be
    /// accepted. Default: 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_connections: Option<u32>,

    /// Uid allowed to connect to the collector socket (checked with
    /// SO_PEERCRED); repeat for several. Others are refused and counted
    /// (`peer_uid`). Default: this agent's own uid and root.
    #[arg(long = "collector-uid", value_name = "UID")]
    pub collector_uids: Vec<u32>,

    /// Records the collector may send beyond those the agent has
    /// acknowledged (its credit); procmond slows its scans when they run
    /// out. Default: 1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_pending_records: Option<u64>,

    /// Days the store keeps samples, exited processes and scans; older ones
    /// are removed in the background (every hour, and when a reload
    /// changes this). 0 keeps everything. Default: 30.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retention_days: Option<u32>,

    /// Directory of rule files (*.yaml, *.yml, *.toml), watched for changes.
    /// Default: /etc/sentineld/rules.d as root, else
    /// $XDG_CONFIG_HOME/sentineld/rules.d.
    #[arg(long, value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,

    /// Do not load the built-in Linux rule pack.
    #[arg(long)]
    pub no_builtin_rules: bool,

    /// Where alerts go; repeat for several: `stdout`, `file=PATH`, `syslog`,
    /// `syslog=udp://HOST:PORT`, `webhook=URL`. Added to the `[[sinks]]`
    /// of the configuration; with neither, stdout.
    #[arg(long = "alert-sink", value_name = "SPEC")]
    pub alert_sinks: Vec<String>,

    /// Where /metrics and the JSON API are served: a loopback address, or
    /// `off`. Default: 127.0.0.1:9184.
    #[arg(long, value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,

    /// Allow --metrics-listen on an address other than loopback.
    #[arg(long)]
    pub metrics_allow_remote: bool,

    /// Processes exported per process by /metrics: the top N by CPU and
    /// the top N by memory. Default: 50.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub metrics_top_n: Option<u32>,

    /// The user to run as once procmond is started, when started as root.
    /// Default: `sentineld` if that user exists, else `nobody`.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Keep running as root (not recommended: the agent parses rules,
    /// serves HTTP and writes the store).
    #[arg(long)]
    pub allow_root: bool,

    /// File of executable SHA-256 hashes (hex, one per line, `#` comments)
    /// that raise the `hash_denied` column.
    #[arg(long, value_name = "FILE")]
    pub hash_deny_list: Option<PathBuf>,

    /// The configuration file (TOML, or YAML if named *.yaml or *.yml) to
    /// read instead of the user and system files; unknown keys are errors.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the merged configuration, with where each value came from,
    /// and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl AgentArgs {
    /// The flags actually given, as a layer: a flag left out says nothing,
    /// so it never hides a value from a file or the environment.
    fn layer(&self) -> Layer {
        Layer {
            state_dir: self.state_dir.clone(),
            socket: self.socket.clone(),
            scan_interval: self.scan_interval,
            collector: self.collector,
            procmond: self.procmond.clone(),
            max_connections: self.max_connections,
            collector_uids: (!self.collector_uids.is_empty()).then(|| self.collector_uids.clone()),
            max_pending_records: self.max_pending_records,
            retention_days: self.retention_days,
            rules_dir: self.rules_dir.clone(),
            no_builtin_rules: self.no_builtin_rules.then_some(true),
            hash_deny_list: self.hash_deny_list.clone(),
            alert_sinks: (!self.alert_sinks.is_empty()).then(|| self.alert_sinks.clone()),
            sinks: None,
            metrics_listen: self.metrics_listen.clone(),
            metrics_allow_remote: self.metrics_allow_remote.then_some(true),
            metrics_top_n: self.metrics_top_n,
            user: self.user.clone(),
            allow_root: self.allow_root.then_some(true),
        }
    }
}

/// The embedded defaults. Paths that depend on who runs the agent
/// (state, socket, rules, procmond) and the collector uids are left out
/// and resolved in [`resolve`].
fn defaults() -> Layer {
    Layer {
        scan_interval: Some(DEFAULT_SCAN_INTERVAL),
        collector: Some(CollectorMode::Standalone),
        max_connections: Some(DEFAULT_MAX_CONNECTIONS),
        max_pending_records: Some(crate::server::DEFAULT_PENDING_RECORDS),
        retention_days: Some(crate::retention::DEFAULT_RETENTION_DAYS),
        no_builtin_rules: Some(false),
        alert_sinks: Some(Vec::new()),
        sinks: Some(Vec::new()),
        metrics_listen: Some(crate::http::DEFAULT_LISTEN.to_owned()),
        metrics_allow_remote: Some(false),
        metrics_top_n: Some(DEFAULT_METRICS_TOP_N),
        allow_root: Some(false),
        ..Layer::default()
    }
}

/// Where configuration files and variables are looked for.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Directory of the system file: `/etc/sentineld` unless
    /// `SENTINELD_SYSTEM_CONFIG_DIR` moves it.
    pub system_dir: PathBuf,
    /// Directory of the user file, when there is a home to have one in.
    pub user_dir: Option<PathBuf>,
    /// The environment variables (only `SENTINELD_*` ones are read).
    pub vars: Vec<(OsString, OsString)>,
}

impl Environment {
    /// This process's environment.
    pub fn from_process() -> Environment {
        let vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with(ENV_PREFIX)))
            .collect();
        let system_dir = std::env::var_os(SYSTEM_CONFIG_DIR_VAR)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(SYSTEM_CONFIG_DIR), PathBuf::from);
        Environment {
            system_dir,
            user_dir: sources::user_config_dir(
                std::env::var_os("XDG_CONFIG_HOME"),
                std::env::var_os("HOME"),
            ),
            vars,
        }
    }
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
    /// Uids allowed to connect as the collector; never empty.
    pub collector_uids: Vec<u32>,
    /// The credit granted to the collector, in records.
    pub max_pending_records: u64,
    /// Days the store keeps what is no longer live; 0 keeps everything.
    pub retention_days: u32,
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
    /// Who to become after starting procmond when started as root; `None`:
    /// `sentineld` if it exists, else `nobody` ([`crate::privilege`]).
    pub user: Option<String>,
    /// Stay root (with a warning) instead.
    pub allow_root: bool,
}

/// What a configuration read again (SIGHUP) changes in the running one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The alert sinks differ: they can be replaced at run time.
    pub sinks: bool,
    /// The scan interval differs: the supervised procmond can be restarted
    /// with it (standalone mode).
    pub scan_interval: bool,
    /// The retention period differs: applied at once (a retention pass
    /// runs with it).
    pub retention_days: bool,
    /// Keys whose new value takes effect only when the agent restarts.
    pub need_restart: Vec<&'static str>,
}

impl AgentConfig {
    /// Compares the running configuration with `new`.
    pub fn changes(&self, new: &AgentConfig) -> Changes {
        let mut need_restart = Vec::new();
        let mut differs = |key, changed: bool| {
            if changed {
                need_restart.push(key);
            }
        };
        differs("state_dir", self.layout.state_dir != new.layout.state_dir);
        differs("socket", self.layout.socket != new.layout.socket);
        differs("collector", self.collector != new.collector);
        differs("procmond", self.procmond != new.procmond);
        differs(
            "max_connections",
            self.max_connections != new.max_connections,
        );
        differs("collector_uids", self.collector_uids != new.collector_uids);
        differs(
            "max_pending_records",
            self.max_pending_records != new.max_pending_records,
        );
        differs("rules_dir", self.rules.dir != new.rules.dir);
        differs("no_builtin_rules", self.rules.builtin != new.rules.builtin);
        differs(
            "hash_deny_list",
            self.rules.deny_list != new.rules.deny_list,
        );
        differs("metrics_listen", self.metrics_listen != new.metrics_listen);
        differs("metrics_top_n", self.metrics_top_n != new.metrics_top_n);
        differs("user", self.user != new.user);
        differs("allow_root", self.allow_root != new.allow_root);
        Changes {
            sinks: self.sinks != new.sinks,
            scan_interval: self.scan_interval != new.scan_interval,
            retention_days: self.retention_days != new.retention_days,
            need_restart,
        }
    }
}

/// Why the configuration cannot be used. Each names the file, variable or
/// flag, the key, and what is expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "procmond not found at {path}: build the whole workspace (cargo build --release), set `procmond` (--procmond PATH), or use collector = external (--collector external)"
    )]
    ProcmondMissing { path: PathBuf },
    #[error(
        "cannot find this executable's directory to locate procmond: {0}; pass --procmond PATH"
    )]
    CurrentExe(#[source] std::io::Error),
    #[error("{origin}: {error}")]
    Spec { origin: String, error: SpecError },
    #[error("{origin}: {error}")]
    Sinks {
        origin: String,
        error: crate::sinks::config::ConfigError,
    },
    #[error("{origin}: {error}")]
    MetricsListen {
        origin: String,
        error: crate::http::ListenError,
    },
    #[error(
        "cannot read config file {}: {source} (fix it, or name another with --config FILE)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file {}: unknown format; name it *.toml, *.yaml or *.yml",
        path.display()
    )]
    Format { path: PathBuf },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "both {} and {} exist; keep one of them",
        first.display(),
        second.display()
    )]
    Ambiguous { first: PathBuf, second: PathBuf },
    #[error(
        "{origin}: unknown key `{key}`{}{}; the keys are listed in docs/configuration.md",
        within.as_deref().map(|w| format!(" in {w}")).unwrap_or_default(),
        suggestion.as_deref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
    )]
    UnknownKey {
        origin: String,
        key: String,
        /// The entry holding the key, e.g. `sinks #2`.
        within: Option<String>,
        suggestion: Option<String>,
    },
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// The configuration, with the merged layers it was resolved from.
#[derive(Debug)]
pub struct Loaded {
    pub config: AgentConfig,
    figment: Figment,
    merged: Layer,
    /// The files looked for, and the one read from each place.
    searched: Vec<Searched>,
}

/// A place a configuration file was looked for.
#[derive(Debug, Clone)]
struct Searched {
    origin: Origin,
    /// The directory searched (or the file named by `--config`).
    place: PathBuf,
    found: Option<PathBuf>,
}

/// Reads every layer for `args` in `env`, checks each, merges them and
/// resolves the result.
pub fn load(args: &AgentArgs, env: &Environment) -> Result<Loaded, ConfigError> {
    let defaults = Given {
        origin: Origin::Default,
        layer: defaults(),
    };
    let mut files = Vec::new();
    let mut searched = Vec::new();
    match &args.config {
        Some(path) => {
            files.push(FileLayer::read(Origin::NamedFile, path)?);
            searched.push(Searched {
                origin: Origin::NamedFile,
                place: path.clone(),
                found: Some(path.clone()),
            });
        }
        None => {
            let places = [
                (Origin::SystemFile, Some(env.system_dir.clone())),
                (Origin::UserFile, env.user_dir.clone()),
            ];
            for (origin, dir) in places {
                let Some(dir) = dir else { continue };
                let found = sources::find_in(&dir)?;
                if let Some(path) = &found {
                    files.push(FileLayer::read(origin, path)?);
                }
                searched.push(Searched {
                    origin,
                    place: dir,
                    found,
                });
            }
        }
    }
    let environment = EnvLayer::new(&env.vars)?;
    let flags = Given {
        origin: Origin::Flag,
        layer: args.layer(),
    };

    check(&defaults)?;
    for file in &files {
        check(file)?;
    }
    check(&environment)?;
    check(&flags)?;

    let mut figment = Figment::from(&defaults);
    for file in &files {
        figment = figment.merge(file);
    }
    let figment = figment.merge(&environment).merge(&flags);
    let merged: Layer = figment
        .extract()
        .map_err(|e| from_figment(e, figment.metadata().next()))?;
    let config = resolve(&merged, &figment)?;
    Ok(Loaded {
        config,
        figment,
        merged,
        searched,
    })
}

/// Checks one layer alone: unknown keys, types and bounds (while
/// deserializing), then the sinks and sink specs it gives.
fn check<P: figment::Provider>(provider: &P) -> Result<(), ConfigError> {
    let figment = Figment::from(provider);
    let md = provider.metadata();
    let layer: Layer = figment.extract().map_err(|e| from_figment(e, Some(&md)))?;
    if let Some(specs) = &layer.alert_sinks {
        let origin = sources::describe(&md, "alert_sinks");
        for spec in specs {
            parse_spec(spec).map_err(|error| ConfigError::Spec {
                origin: origin.clone(),
                error,
            })?;
        }
    }
    if let Some(sinks) = &layer.sinks {
        crate::sinks::config::validate_all(sinks).map_err(|error| ConfigError::Sinks {
            origin: sources::describe_layer(&md),
            error,
        })?;
    }
    Ok(())
}

/// Turns a figment error into one naming its source, key and the
/// expected form.
fn from_figment(error: figment::Error, fallback: Option<&figment::Metadata>) -> ConfigError {
    let md = error.metadata.clone().or_else(|| fallback.cloned());
    let top = error.path.first().cloned().unwrap_or_default();
    let origin = match &md {
        Some(md) if !top.is_empty() => sources::describe(md, &top),
        Some(md) => sources::describe_layer(md),
        None => "configuration".to_owned(),
    };
    let key = key_path(&error.path);
    match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            let parent = &error.path[..error.path.len().saturating_sub(1)];
            ConfigError::UnknownKey {
                origin,
                key: field.clone(),
                within: (!parent.is_empty()).then(|| key_path(parent)),
                suggestion: parent
                    .is_empty()
                    .then(|| sources::suggest(field))
                    .flatten()
                    .map(|k| format!("`{k}`")),
            }
        }
        figment::error::Kind::UnknownVariant(found, expected) => ConfigError::Invalid {
            origin,
            key,
            message: format!(
                "unknown value `{found}`, expected one of: {}",
                expected.join(", ")
            ),
        },
        kind => ConfigError::Invalid {
            origin,
            key,
            message: kind.to_string(),
        },
    }
}

/// `scan_interval`; `sinks #2 url` for a key of the second `[[sinks]]`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() {
            out.push(' ');
        }
        match segment.parse::<usize>() {
            Ok(index) => out.push_str(&format!("#{}", index + 1)),
            Err(_) => out.push_str(segment),
        }
    }
    out
}

/// The merged layer as an [`AgentConfig`]; what depends on several keys is
/// checked here.
fn resolve(merged: &Layer, figment: &Figment) -> Result<AgentConfig, ConfigError> {
    let origin = |key: &str| {
        figment
            .find_metadata(key)
            .map_or_else(|| "default".to_owned(), |md| sources::describe(md, key))
    };
    let layout = StateLayout::resolve(merged.state_dir.as_deref(), merged.socket.as_deref());
    let collector = merged.collector.unwrap_or(CollectorMode::Standalone);
    let procmond = match collector {
        CollectorMode::External => None,
        CollectorMode::Standalone => {
            let path = match &merged.procmond {
                Some(path) => path.clone(),
                None => default_procmond()?,
            };
            if !path.is_file() {
                return Err(ConfigError::ProcmondMissing { path });
            }
            Some(path)
        }
    };
    let mut sinks = Vec::new();
    for spec in merged.alert_sinks.iter().flatten() {
        sinks.push(parse_spec(spec).map_err(|error| ConfigError::Spec {
            origin: origin("alert_sinks"),
            error,
        })?);
    }
    if let Some(configs) = &merged.sinks {
        sinks.extend(
            crate::sinks::config::validate_all(configs).map_err(|error| ConfigError::Sinks {
                origin: origin("sinks"),
                error,
            })?,
        );
    }
    if sinks.is_empty() {
        sinks.push(parse_spec("stdout").map_err(|error| ConfigError::Spec {
            origin: "default".to_owned(),
            error,
        })?);
    }
    let listen = merged
        .metrics_listen
        .as_deref()
        .unwrap_or(crate::http::DEFAULT_LISTEN);
    let metrics_listen =
        crate::http::parse_listen(listen, merged.metrics_allow_remote.unwrap_or(false)).map_err(
            |error| ConfigError::MetricsListen {
                origin: origin("metrics_listen"),
                error,
            },
        )?;
    Ok(AgentConfig {
        layout,
        scan_interval: merged.scan_interval.unwrap_or(DEFAULT_SCAN_INTERVAL),
        collector,
        procmond,
        max_connections: merged.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) as usize,
        collector_uids: match &merged.collector_uids {
            Some(uids) if !uids.is_empty() => uids.clone(),
            _ => crate::server::default_collector_uids(),
        },
        max_pending_records: merged
            .max_pending_records
            .unwrap_or(crate::server::DEFAULT_PENDING_RECORDS),
        retention_days: merged
            .retention_days
            .unwrap_or(crate::retention::DEFAULT_RETENTION_DAYS),
        handshake_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        rules: RuleSources {
            dir: Some(
                merged
                    .rules_dir
                    .clone()
                    .unwrap_or_else(sentineld_common::layout::default_rules_dir),
            ),
            builtin: !merged.no_builtin_rules.unwrap_or(false),
            deny_list: merged.hash_deny_list.clone(),
        },
        sinks,
        metrics_listen,
        metrics_top_n: merged.metrics_top_n.unwrap_or(DEFAULT_METRICS_TOP_N) as usize,
        user: merged.user.clone(),
        allow_root: merged.allow_root.unwrap_or(false),
    })
}

/// The `procmond` beside this executable.
fn default_procmond() -> Result<PathBuf, ConfigError> {
    let exe = std::env::current_exe().map_err(ConfigError::CurrentExe)?;
    Ok(exe.with_file_name(format!("procmond{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests;
