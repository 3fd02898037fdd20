//! The CLI's conventions, through the built binary and no lab: sysexits exit statuses, completions, the man page,
//! `ssh-config` read back by the real `ssh -G`, and a daemon's log in the journal's form under `JOURNAL_STREAM`.
//! Nothing here dials anything but 127.0.0.0/8.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");

struct Home {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// A temp dir with a config whose bastion allows `targets` on port 22 only, and an EC2 endpoint nobody listens on.
fn home(targets: &str) -> Home {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n\n\
         [daemon]\nsocket = \"{run}/control.sock\"\nlog_file = \"{d}/daemon.log\"\npinned_host_keys = \"{d}/pins\"\n\n\
         [[bastion]]\nname = \"prod\"\ninstance_id = \"i-0123456789abcdef0\"\nknown_hosts = \"{d}/known_hosts\"\n\
         targets = [{targets}]\ntarget_ports = [22]\n",
        run = run.display(),
        d = dir.path().display(),
    );
    std::fs::write(&config, text).unwrap();
    Home { dir, config }
}

fn bastionctl(h: &Home, args: &[&str]) -> Command {
    let mut cmd = Command::new(BASTIONCTL);
    cmd.arg("--config").arg(&h.config).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") || k == "BASTIONCTL_QUIET" || k == "JOURNAL_STREAM" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDLAB")
        .env("AWS_SECRET_ACCESS_KEY", "lab")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", h.dir.path().join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", h.dir.path().join("aws-credentials"))
        .stdin(Stdio::null());
    cmd
}

fn run(h: &Home, args: &[&str]) -> Output {
    bastionctl(h, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A missing identity file (with no agent to fall back on) and `proxy --fdpass` with a stdout that is not a socket
/// are answered before any daemon or EC2 work, with the statuses of the README's table.
#[test]
fn unusable_identity_files_and_fdpass_without_a_socket_start_no_daemon() {
    let h = home("\"10.0.16.0/20\"");
    let socket = h.dir.path().join("run/control.sock");
    let log = h.dir.path().join("daemon.log");
    let fdpass = run(&h, &["proxy", "--fdpass", "10.0.16.5", "22"]);
    let err = text(&fdpass.stderr);
    assert_eq!(fdpass.status.code(), Some(64), "{err}");
    assert!(err.contains("stdout is not a socket") && err.contains("ProxyUseFdpass yes"), "{err}");
    assert!(!socket.exists() && !log.exists(), "--fdpass without a socket started a daemon: {err}");

    let key = h.dir.path().join("no-such-key");
    let mut cfg = std::fs::read_to_string(&h.config).unwrap();
    cfg.push_str(&format!("identity_files = [\"{}\"]\nagent = false\n", key.display()));
    std::fs::write(&h.config, cfg).unwrap();
    for args in [&["proxy", "10.0.16.5", "22"][..], &["up"][..]] {
        let out = run(&h, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains(key.to_str().unwrap()) && err.contains("identity_files"), "{args:?}: {err}");
        assert!(err.contains(h.config.to_str().unwrap()), "{args:?} names the config file: {err}");
        assert!(!socket.exists() && !log.exists(), "{args:?} started a daemon: {err}");
    }
}

#[test]
fn exit_statuses_follow_sysexits() {
    let h = home("\"10.0.16.0/20\"");
    let code = |o: &Output| o.status.code();
    assert_eq!(code(&run(&h, &["--help"])), Some(0));
    assert_eq!(code(&run(&h, &["--no-such-flag"])), Some(64), "usage");
    assert_eq!(code(&run(&h, &["forward", "5432"])), Some(64), "a malformed forward spec is a usage error");

    let missing = Command::new(BASTIONCTL).args(["--config", "/nonexistent/bastionctl.toml", "status"]).output().unwrap();
    assert_eq!(code(&missing), Some(78), "config: {}", text(&missing.stderr));
    std::fs::write(h.dir.path().join("bad.toml"), "[[bastion]]\ninstance_id = \"nope\"\n").unwrap();
    let bad = Command::new(BASTIONCTL).arg("--config").arg(h.dir.path().join("bad.toml")).arg("status").output().unwrap();
    assert_eq!(code(&bad), Some(78), "config: {}", text(&bad.stderr));

    // The target policy, before anything listens or dials: 77, and the key to add.
    let refused = run(&h, &["forward", "0:10.0.16.9:5432"]);
    let err = text(&refused.stderr);
    assert_eq!(code(&refused), Some(77), "{err}");
    assert!(err.contains("add 5432 to target_ports") && err.contains(h.config.to_str().unwrap()), "{err}");
    assert!(refused.stdout.is_empty(), "nothing listened: {}", text(&refused.stdout));
}

/// Mistakes the config alone can tell apart are answered before a daemon is started for them: the socket and the
/// daemon's log never appear.
#[test]
fn usage_mistakes_and_refused_targets_start_no_daemon() {
    let h = home("\"10.0.16.0/20\"");
    let socket = h.dir.path().join("run/control.sock");
    let log = h.dir.path().join("daemon.log");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["up", "nosuch"], 64, "no bastion named `nosuch`"),
        (&["down", "nosuch"], 64, "no bastion named `nosuch`"),
        (&["trust", "nosuch"], 64, "no bastion named `nosuch`"),
        (&["doctor", "nosuch"], 64, "no bastion named `nosuch`"),
        (&["proxy", "10.0.16.5", "0"], 64, "0 is not in 1..=65535"),
        (&["proxy", "bad_host!", "22"], 64, "bad_host!"),
        (&["proxy", "8.8.8.8", "22"], 77, "8.8.8.8 matches none of targets [10.0.16.0/20]"),
        (&["proxy", "10.0.16.5", "5432"], 77, "add 5432 to target_ports"),
        // An IPv6 address and its port are told apart the usual way: `[::1]:22`, not `::1:22`.
        (&["proxy", "::1", "22"], 77, "target [::1]:22 is not allowed"),
    ];
    for (args, want, says) in cases {
        let out = run(&h, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*want), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} does not say `{says}`: {err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout: {}", text(&out.stdout));
        assert!(!socket.exists() && !log.exists(), "{args:?} started a daemon: {err}");
    }
}

#[test]
fn completions_and_man_page_cover_every_subcommand() {
    let h = home("\"10.0.16.0/20\"");
    let bash = run(&h, &["completions", "bash"]);
    assert!(bash.status.success());
    let script = h.dir.path().join("bastionctl.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", text(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        let out = run(&h, &["completions", shell]);
        assert!(out.status.success() && text(&out.stdout).contains("ssh-config"), "{shell}");
    }
    let man = run(&h, &["man"]);
    let page = text(&man.stdout);
    assert!(man.status.success() && page.contains(".TH bastionctl"), "{page:.200}");
    for sub in ["proxy", "daemon", "forward", "ssh\\-config", "completions", "status"] {
        assert!(text(&bash.stdout).contains(&sub.replace('\\', "")), "bash completion lacks {sub}");
        assert!(page.contains(sub), "man page lacks {sub}");
    }
}

/// `ssh -G` prints the options ssh would use for a host, resolved from the given file alone.
fn ssh_g(config: &Path, host: &str) -> String {
    let out = Command::new("ssh").arg("-G").arg("-F").arg(config).arg(host).output().expect("ssh is installed");
    assert!(out.status.success(), "ssh -G {host}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn ssh_config_output_is_read_by_the_real_ssh() {
    let h = home("\"10.0.16.0/20\", \"10.0.99.7\", \"*.internal\"");
    let out = run(&h, &["ssh-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    let file = h.dir.path().join("ssh_config");
    std::fs::write(&file, &generated).unwrap();
    let expected = format!("proxycommand {BASTIONCTL} --config {} proxy --fdpass %h %p", h.config.display());
    for host in ["10.0.16.1", "10.0.31.254", "10.0.99.7", "ip-10-0-16-5.eu-west-1.compute.internal"] {
        let resolved = ssh_g(&file, host);
        assert!(resolved.lines().any(|l| l == expected), "ssh -G {host} lacks `{expected}`:\n{generated}\n{resolved}");
        assert!(resolved.lines().any(|l| l == "proxyusefdpass yes"), "ssh -G {host}: no fd passing:\n{resolved}");
    }
    for outside in ["10.0.32.1", "10.0.15.255", "10.0.99.8", "web.example.com"] {
        let resolved = ssh_g(&file, outside);
        assert!(!resolved.contains("proxycommand"), "{outside} must not go through bastionctl:\n{generated}");
    }
    // The directives, not the comments, must leave the user's options alone.
    let lower: String = generated.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n").to_ascii_lowercase();
    for owned in ["user ", "identityfile", "serveralive", "hostname ", "port "] {
        assert!(!lower.contains(owned), "ssh-config sets `{owned}`, which the user owns:\n{generated}");
    }
}

/// `0.0.0.0/0` becomes a comment, not `Host *`, and a `%` in the config's path is written `%%` in the ProxyCommand
/// (ssh_config expands `%` tokens there).
#[test]
fn ssh_config_leaves_other_hosts_alone_and_escapes_percent() {
    let h = home("\"0.0.0.0/0\", \"10.0.16.0/24\"");
    let odd = h.dir.path().join("100%h");
    std::fs::create_dir(&odd).unwrap();
    let config = odd.join("config.toml");
    std::fs::copy(&h.config, &config).unwrap();
    let h = Home { dir: h.dir, config: config.clone() };
    let out = run(&h, &["ssh-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    assert!(!generated.lines().any(|l| l.trim() == "Host *" || l.contains(" * ")), "{generated}");
    assert!(generated.contains("# 0.0.0.0/0: not included"), "{generated}");
    let escaped = config.display().to_string().replace('%', "%%");
    assert!(generated.contains(&format!("--config '{escaped}' proxy")), "{generated}");
    let file = h.dir.path().join("ssh_config");
    std::fs::write(&file, &generated).unwrap();
    assert!(!ssh_g(&file, "web.example.com").contains("proxycommand"), "every host captured:\n{generated}");
    assert!(ssh_g(&file, "10.0.16.9").contains("proxycommand"), "{generated}");
}

/// Runs the daemon with stderr to `log` until it says it is ready, then stops it; returns the log.
fn daemon_log(h: &Home, journal: bool, name: &str) -> String {
    let log = h.dir.path().join(name);
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = bastionctl(h, &["daemon"]);
    cmd.stdout(Stdio::null()).stderr(file).env_remove("NO_COLOR").env("RUST_LOG", "bastionctl=debug");
    // The journal's stream is this file, or (journal = false) some other stream the daemon inherited the variable of.
    let stream = if journal { format!("{}:{}", meta.dev(), meta.ino()) } else { format!("{}:{}", meta.dev(), meta.ino() + 1) };
    cmd.env("JOURNAL_STREAM", stream);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("daemon ready") {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited:\n{}", std::fs::read_to_string(&log).unwrap());
        assert!(Instant::now() < deadline, "daemon not ready:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit {status}");
    std::fs::read_to_string(&log).unwrap()
}

fn has_timestamp(line: &str) -> bool {
    // tracing's default time format: 2026-12-02T02:30:00.123456Z
    line.as_bytes().windows(11).any(|w| {
        w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[7] == b'-' && w[10] == b'T'
    })
}

#[test]
fn under_journal_stream_the_daemon_logs_priorities_and_no_timestamp() {
    let h = home("\"10.0.16.0/20\"");
    let journal = daemon_log(&h, true, "journal.log");
    let lines: Vec<&str> = journal.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let prio = l.strip_prefix('<').and_then(|r| r.split_once('>')).map(|(p, _)| p);
        assert!(matches!(prio, Some("3" | "4" | "6" | "7")), "no syslog priority prefix: {l:?}\n{journal}");
        assert!(!has_timestamp(l), "a second timestamp in the journal: {l:?}");
        assert!(!l.contains('\u{1b}'), "colour escapes in the journal: {l:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("<6>") && l.contains("daemon ready")), "{journal}");
    assert!(!lines.iter().any(|l| l.contains(" INFO ")), "the priority replaces the level name:\n{journal}");

    // A stderr that is not the journal's stream keeps its timestamps, even with JOURNAL_STREAM inherited.
    let plain = daemon_log(&h, false, "plain.log");
    assert!(plain.lines().filter(|l| !l.is_empty()).all(|l| has_timestamp(l) && !l.starts_with('<')), "{plain}");
}

/// A reader that stops early (`completions bash | head -3`) ends the output quietly: no panic, exit 0.
#[test]
fn completions_and_man_into_a_closed_pipe_exit_cleanly() {
    let h = home("\"10.0.16.0/20\"");
    for args in [&["completions", "bash"][..], &["man"], &["ssh-config"]] {
        let mut child = bastionctl(&h, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before the text is written
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: exit {:?}: {}", out.status.code(), text(&out.stderr));
        assert!(text(&out.stderr).is_empty(), "{args:?}: {}", text(&out.stderr));
    }
}

/// Output to a full disk is an error that says so (exit 74, EX_IOERR), not a panic.
#[test]
fn output_to_a_full_disk_is_a_clear_error() {
    let h = home("\"10.0.16.0/20\"");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = bastionctl(&h, &["ssh-config"]).stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot write to stdout: No space left on device"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

/// `BASTIONCTL_CONFIG=` (set but empty) counts as unset, as empty variables do for OpenSSH and the AWS CLI: the
/// default path is used, not refused as a missing value.
#[test]
fn an_empty_config_variable_counts_as_unset() {
    let h = home("\"10.0.16.0/20\"");
    let out = Command::new(BASTIONCTL)
        .args(["status"])
        .env("BASTIONCTL_CONFIG", "")
        .env("XDG_CONFIG_HOME", h.dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-dir/bastionctl/config.toml"), "{}", text(&out.stderr));
}

/// A bastion name with a control character is a config error (names reach terminals, logs and ssh_config
/// comments), and the refusal shows it escaped, never the raw ESC.
#[test]
fn a_control_character_in_a_name_is_refused_and_shown_escaped() {
    let h = home("\"10.0.16.0/24\"");
    let text_cfg = std::fs::read_to_string(&h.config).unwrap().replace("name = \"prod\"", "name = \"pr\\u001bod\"");
    std::fs::write(&h.config, text_cfg).unwrap();
    let out = run(&h, &["ssh-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(!out.stderr.contains(&0x1b), "raw ESC on stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pr\\u{1b}od"), "{}", text(&out.stderr));
}
