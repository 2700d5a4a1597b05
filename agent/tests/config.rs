//! Layered configuration with the real binary: a flag beats the
//! environment, which beats the user file, which beats the system file,
//! which beats the defaults, and `--print-config` says where each value
//! came from; bad files and variables are refused with their key and
//! source; SIGHUP applies a changed configuration.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{agent_command, eventually, wait_timeout};

/// A temp directory holding a system and a user configuration directory.
struct Dirs {
    root: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::create_dir_all(root.path().join("xdg/sentineld")).unwrap();
        Dirs { root }
    }

    fn system(&self, name: &str) -> PathBuf {
        self.root.path().join("etc").join(name)
    }

    fn user(&self, name: &str) -> PathBuf {
        self.root.path().join("xdg/sentineld").join(name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `sentinelagent` reading only this directory's files.
    fn agent(&self) -> Command {
        let mut command = agent_command();
        command
            .env("SENTINELD_SYSTEM_CONFIG_DIR", self.root.path().join("etc"))
            .env("XDG_CONFIG_HOME", self.root.path().join("xdg"));
        command
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `--print-config` and returns its output; it must succeed.
fn print_config(command: &mut Command) -> String {
    let out = command.arg("--print-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

/// The line of `key` in `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    printed
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

#[test]
fn flag_over_environment_over_user_file_over_system_file_over_default() {
    let dirs = Dirs::new();
    let system = dirs.system("config.toml");
    let user = dirs.user("config.yaml");
    std::fs::write(
        &system,
        "collector = \"external\"\nscan_interval = \"5s\"\nmetrics_top_n = 5\nmax_connections = 5\n",
    )
    .unwrap();
    std::fs::write(&user, "scan_interval: 4s\nmetrics_top_n: 4\n").unwrap();

    let mut all = dirs.agent();
    all.env("SENTINELD_SCAN_INTERVAL", "3s")
        .args(["--scan-interval", "2s"]);
    let printed = print_config(&mut all);
    assert_eq!(
        line(&printed, "scan_interval"),
        "scan_interval = \"2s\"  # flag --scan-interval"
    );
    assert_eq!(
        line(&printed, "metrics_top_n"),
        format!("metrics_top_n = 4  # user file {}", user.display())
    );
    assert_eq!(
        line(&printed, "max_connections"),
        format!("max_connections = 5  # system file {}", system.display())
    );
    assert_eq!(
        line(&printed, "collector"),
        format!(
            "collector = \"external\"  # system file {}",
            system.display()
        )
    );
    assert_eq!(
        line(&printed, "metrics_listen"),
        "metrics_listen = \"127.0.0.1:9184\"  # default"
    );
    assert_eq!(
        line(&printed, "max_pending_records"),
        "max_pending_records = 1000  # default"
    );

    // Peel the layers off one by one.
    let mut env = dirs.agent();
    env.env("SENTINELD_SCAN_INTERVAL", "3s");
    assert_eq!(
        line(&print_config(&mut env), "scan_interval"),
        "scan_interval = \"3s\"  # environment SENTINELD_SCAN_INTERVAL"
    );
    assert_eq!(
        line(&print_config(&mut dirs.agent()), "scan_interval"),
        format!("scan_interval = \"4s\"  # user file {}", user.display())
    );
    std::fs::remove_file(&user).unwrap();
    assert_eq!(
        line(&print_config(&mut dirs.agent()), "scan_interval"),
        format!("scan_interval = \"5s\"  # system file {}", system.display())
    );
    std::fs::write(&system, "collector = \"external\"\n").unwrap();
    let printed = print_config(&mut dirs.agent());
    assert_eq!(
        line(&printed, "scan_interval"),
        "scan_interval = \"1s\"  # default"
    );
    assert_eq!(
        line(&printed, "metrics_top_n"),
        "metrics_top_n = 50  # default"
    );
}

#[test]
fn flags_left_out_do_not_mask_files_and_print_config_is_a_config_file() {
    let dirs = Dirs::new();
    let user = dirs.user("config.toml");
    std::fs::write(
        &user,
        "collector = \"external\"\nmetrics_listen = \"off\"\nno_builtin_rules = true\n\
         [[sinks]]\nkind = \"file\"\npath = \"/var/tmp/alerts.jsonl\"\nkeep = 2\n",
    )
    .unwrap();
    let printed = print_config(&mut dirs.agent());
    let from_user = format!("# user file {}", user.display());
    assert_eq!(
        line(&printed, "metrics_listen"),
        format!("metrics_listen = \"off\"  {from_user}")
    );
    assert_eq!(
        line(&printed, "no_builtin_rules"),
        format!("no_builtin_rules = true  {from_user}")
    );
    assert!(
        printed.contains(&format!("[[sinks]]  {from_user}\n")),
        "{printed}"
    );

    // What it prints reads back as a configuration file with the same
    // values.
    let again = dirs.path("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let mut named = dirs.agent();
    named.arg("--config").arg(&again);
    let reprinted = print_config(&mut named);
    for key in [
        "metrics_listen",
        "no_builtin_rules",
        "collector",
        "state_dir",
    ] {
        let value = |text: &str| line(text, key).split("  #").next().unwrap().to_owned();
        assert_eq!(value(&printed), value(&reprinted), "{key}");
    }
}

#[test]
fn a_named_file_replaces_the_user_and_system_files() {
    let dirs = Dirs::new();
    std::fs::write(dirs.system("config.toml"), "metrics_top_n = 5\n").unwrap();
    std::fs::write(dirs.user("config.toml"), "max_connections = 4\n").unwrap();
    let named = dirs.path("agent.yml");
    std::fs::write(&named, "collector: external\nmetrics_top_n: 7\n").unwrap();
    let mut command = dirs.agent();
    command.arg("--config").arg(&named);
    let printed = print_config(&mut command);
    assert_eq!(
        line(&printed, "metrics_top_n"),
        format!("metrics_top_n = 7  # config file {}", named.display())
    );
    assert_eq!(
        line(&printed, "max_connections"),
        "max_connections = 8  # default"
    );
}

/// Runs the agent expecting it to refuse its configuration; returns stderr.
fn refused(command: &mut Command) -> String {
    let out = command
        .args(["--state-dir", "/nonexistent/never-created"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    stderr(&out)
}

#[test]
fn a_typo_a_wrong_type_and_a_bad_value_name_the_key_and_the_file() {
    let dirs = Dirs::new();
    let user = dirs.user("config.toml");
    let cases: [(&str, &[&str]); 5] = [
        (
            "scan_intervall = \"2s\"\n",
            &[
                "unknown key `scan_intervall`",
                "did you mean `scan_interval`",
            ],
        ),
        (
            "metrics_top_n = \"many\"\n",
            &["`metrics_top_n`", "an integer from 1 to 10000"],
        ),
        (
            "scan_interval = 5\n",
            &["`scan_interval`", "a duration with a unit, such as 1s"],
        ),
        (
            "collector = \"inline\"\n",
            &["`collector`", "standalone, external"],
        ),
        (
            "[[sinks]]\nkind = \"stdout\"\ncolour = \"red\"\n",
            &["unknown key `colour` in sinks #1"],
        ),
    ];
    for (text, wants) in cases {
        std::fs::write(&user, text).unwrap();
        let err = refused(&mut dirs.agent());
        assert!(err.contains(&user.display().to_string()), "{text}: {err}");
        for want in wants {
            assert!(err.contains(want), "{text}: {err}");
        }
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }

    // The same checks hold for a YAML file and for the environment.
    std::fs::remove_file(&user).unwrap();
    let yaml = dirs.system("config.yaml");
    std::fs::write(&yaml, "max_connections: 0\n").unwrap();
    let err = refused(&mut dirs.agent());
    assert!(err.contains(&yaml.display().to_string()), "{err}");
    assert!(err.contains("an integer from 1 to 1024"), "{err}");
    std::fs::remove_file(&yaml).unwrap();

    let mut env = dirs.agent();
    env.env("SENTINELD_METRICS_TOPN", "3");
    let err = refused(&mut env);
    assert!(err.contains("SENTINELD_METRICS_TOPN"), "{err}");
    assert!(err.contains("SENTINELD_METRICS_TOP_N?"), "{err}");
    let mut env = dirs.agent();
    env.env("SENTINELD_SCAN_INTERVAL", "soon");
    let err = refused(&mut env);
    assert!(err.contains("environment SENTINELD_SCAN_INTERVAL"), "{err}");
    assert!(err.contains("expected e.g. 1s"), "{err}");
}

#[test]
fn an_unreadable_or_missing_file_is_a_clear_error() {
    let dirs = Dirs::new();
    // A directory where the file is expected cannot be read, even by root.
    std::fs::create_dir(dirs.system("config.toml")).unwrap();
    let err = refused(&mut dirs.agent());
    assert!(err.contains("cannot read config file"), "{err}");
    assert!(
        err.contains(&dirs.system("config.toml").display().to_string()),
        "{err}"
    );
    std::fs::remove_dir(dirs.system("config.toml")).unwrap();

    let missing = dirs.path("missing.toml");
    let mut named = dirs.agent();
    named.arg("--config").arg(&missing);
    let err = refused(&mut named);
    assert!(err.contains(&missing.display().to_string()), "{err}");

    if !nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let locked = dirs.user("config.toml");
        std::fs::write(&locked, "").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = refused(&mut dirs.agent());
        assert!(err.contains("cannot read config file"), "{err}");
        assert!(err.contains("ermission denied"), "{err}");
    }

    std::fs::write(dirs.system("config.toml"), "").unwrap();
    std::fs::write(dirs.system("config.yaml"), "").unwrap();
    let err = refused(&mut dirs.agent());
    assert!(err.contains("keep one of them"), "{err}");
}

/// Starts a copy of /bin/sleep from `dir` (under /tmp: the built-in
/// `linux.exec_from_tmp` rule fires on it).
fn sleeper(dir: &Path, name: &str) -> std::process::Child {
    let exe = dir.join(name);
    std::fs::copy("/bin/sleep", &exe).unwrap();
    Command::new(&exe).arg("300").spawn().unwrap()
}

fn alerts_for(path: &Path, pid: u32) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|a| a["process"]["pid"] == pid)
        .count()
}

#[test]
fn sighup_replaces_the_sinks_and_names_what_needs_a_restart() {
    let dirs = Dirs::new();
    let first = dirs.path("first.jsonl");
    let second = dirs.path("second.jsonl");
    let user = dirs.user("config.toml");
    let config = |sink: &Path, top_n: u32| {
        format!(
            "metrics_listen = \"off\"\nmetrics_top_n = {top_n}\n\
             [[sinks]]\nkind = \"file\"\npath = \"{}\"\n",
            sink.display()
        )
    };
    std::fs::write(&user, config(&first, 10)).unwrap();
    let state = dirs.path("state");
    let log = dirs.path("agent.log");
    let mut agent = dirs
        .agent()
        .arg("--state-dir")
        .arg(&state)
        .arg("--rules-dir")
        .arg(dirs.path("no-rules"))
        .args(["--scan-interval", "200ms"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap());

    let mut one = sleeper(dirs.root.path(), "payload-one");
    let fired = eventually(Duration::from_secs(60), || {
        (alerts_for(&first, one.id()) > 0).then_some(())
    });
    assert!(fired.is_some(), "the first file sink gets the alert");

    std::fs::write(&user, config(&second, 20)).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloaded = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("alert sinks reloaded").then_some(text)
    })
    .expect("the sinks are reloaded on SIGHUP");
    assert!(
        reloaded.contains("take effect when the agent restarts")
            && reloaded.contains("metrics_top_n"),
        "{reloaded}"
    );

    let mut two = sleeper(dirs.root.path(), "payload-two");
    let fired = eventually(Duration::from_secs(60), || {
        (alerts_for(&second, two.id()) > 0).then_some(())
    });
    assert!(fired.is_some(), "the new file sink gets the next alert");
    assert_eq!(alerts_for(&first, two.id()), 0, "the old sink is gone");

    // A broken file on SIGHUP leaves the running configuration alone.
    std::fs::write(&user, "metrics_top_n = \"many\"\n").unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let kept = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("configuration not reloaded").then_some(text)
    })
    .expect("a bad configuration is refused at reload");
    assert!(kept.contains("metrics_top_n"), "{kept}");
    assert!(
        matches!(agent.try_wait(), Ok(None)),
        "the agent keeps running"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_timeout(&mut agent, Duration::from_secs(20)).expect("agent stops");
    assert!(status.success());
    for child in [&mut one, &mut two] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
