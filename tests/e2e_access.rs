//! Access control end to end, in the local lab (moto's EC2, real sshds, the real `ssh`): the default target policy
//! (the bastion VPC's CIDR blocks), the owner-only control socket against a second local user, and `bastionctl
//! doctor`. Each test owns its lab. Every wait polls with a deadline.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::{Lab, LabOptions};

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh` or `bastionctl` run (it may start the bastion on a loaded 2-core box).
const RUN_DEADLINE: Duration = Duration::from_secs(90);

async fn lab(configure: impl FnOnce(&mut LabOptions)) -> Lab {
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(60);
    configure(&mut o);
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

async fn run(lab: &Lab, cmd: &mut tokio::process::Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("spawn");
    tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {RUN_DEADLINE:?}\n{}", lab.daemon_log()))
        .expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------------------- policy

/// The real `ssh` through bastionctl (the lab's `private` entry) with another target `HostName`.
fn ssh_to(lab: &Lab, host_name: &str, remote_cmd: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.arg("-F").arg(&lab.files().ssh_config).args(["-o", &format!("HostName={host_name}"), "private", remote_cmd]);
    lab.apply_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_targets_the_vpc_cidr_blocks_are_allowed_and_nothing_else() {
    let lab = lab(|o| o.vpc_default_targets = true).await;
    let vpc = lab.world().vpc_id.clone();

    let out = run(&lab, &mut lab.ssh_command("echo inside")).await;
    assert!(
        out.status.success() && text(&out.stdout) == "inside\n",
        "ssh to the private host (127.0.3.1, inside the VPC's 127.0.3.0/24) failed: {}\nstderr:\n{}\n{}",
        out.status,
        text(&out.stderr),
        lab.daemon_log()
    );

    // Same ssh_config entry, but a target outside every block of the VPC.
    let out = run(&lab, &mut ssh_to(&lab, "127.0.4.1", "echo outside")).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a target outside the VPC was forwarded:\n{stderr}");
    assert!(out.stdout.is_empty(), "stdout on refusal: {:?}", text(&out.stdout));
    let rule = format!("127.0.4.1 matches none of VPC {vpc} CIDR blocks [10.0.0.0/16, 127.0.3.0/24]");
    assert!(stderr.contains(&rule), "the refusal does not name the rule `{rule}`:\n{stderr}");

    // A host name needs a configured pattern; the VPC default has none.
    let out = run(&lab, &mut ssh_to(&lab, "db.internal", "echo name")).await;
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("needs a pattern"), "{}", text(&out.stderr));

    let log = lab.daemon_log();
    assert!(log.contains(&format!("allowing VPC {vpc} CIDR blocks")), "daemon log:\n{log}");
    let lookups = lab.moto_foreign_actions().unwrap().iter().filter(|a| *a == "DescribeVpcs").count();
    assert_eq!(lookups, 1, "the VPC's blocks are looked up once and cached");
}

// ---------------------------------------------------------------------------------------------------------- socket

/// A uid with no passwd entry (so the test changes nothing on the system), for the "second local user".
fn foreign_uid() -> u32 {
    (61000..62000)
        .find(|&u| matches!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)), Ok(None)))
        .expect("a free uid in 61000..62000")
}

/// `cmd` run as `uid` (same gid, no supplementary groups) through util-linux's `setpriv`, with a clean environment.
fn as_user(uid: u32, home: &Path, program: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        "--".into(),
        program.into(),
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", home)
    .stdin(Stdio::null());
    cmd
}

/// A raw control-socket client: connects, sends a status request, prints whatever the daemon answers.
const RAW_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect failed:", e.strerror)
    sys.exit(3)
s.sendall(b'{"v":1,"op":"status"}\n')
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("reply:", data.decode())
"#;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_refuses_a_second_local_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs the tests as root) to act as a second local user with setpriv; run it as root"
    );
    let lab = lab(|_| {}).await;
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));
    let uid = foreign_uid();
    let socket = lab.files().socket.clone();
    let run_dir = socket.parent().unwrap().to_path_buf();
    // The other user may traverse the lab dir and read a copy of the config, nothing more.
    let home = tempfile::tempdir().unwrap();
    chmod(home.path(), 0o755);
    let config = home.path().join("bastionctl.toml");
    std::fs::copy(&lab.files().config, &config).unwrap();
    chmod(&config, 0o644);
    chmod(lab.dir(), 0o711);
    let status = |cmd: &mut tokio::process::Command| {
        cmd.arg("--config").arg(&config).arg("status");
    };

    // 1. The file system stops them: the socket's directory is 0700.
    assert_eq!(std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let mut cmd = as_user(uid, home.path(), BASTIONCTL);
    status(&mut cmd);
    let out = run(&lab, &mut cmd).await;
    assert!(!out.status.success() && out.stdout.is_empty(), "uid {uid} got a status:\n{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    let out = run(&lab, as_user(uid, home.path(), "/usr/bin/python3").args(["-c", RAW_CLIENT]).arg(&socket)).await;
    assert!(
        text(&out.stdout).contains("connect failed: Permission denied"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // 2. With the directory and socket opened up, only the peer-credential check stands.
    chmod(&run_dir, 0o755);
    chmod(&socket, 0o666);
    let out = run(&lab, as_user(uid, home.path(), "/usr/bin/python3").args(["-c", RAW_CLIENT]).arg(&socket)).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("\"forbidden\"") && reply.contains("serves uid 0 only"),
        "raw client got:\n{reply}{}",
        text(&out.stderr)
    );
    assert!(
        !reply.contains("\"status\"") && !reply.contains(lab.instance_id()),
        "the daemon answered uid {uid}: {reply}"
    );
    // bastionctl itself also refuses a socket served by another uid.
    let mut cmd = as_user(uid, home.path(), BASTIONCTL);
    status(&mut cmd);
    let out = run(&lab, &mut cmd).await;
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("is served by uid 0, not by you"), "{}", text(&out.stderr));

    // The daemon logs the second refusal concurrently with that client's exit: poll its log with a deadline.
    let refusals = |log: &str| {
        let line = |l: &&str| {
            l.contains("refused a control connection from another user") && l.contains(&format!("uid={uid}"))
        };
        log.lines().filter(line).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut log = lab.daemon_log();
    while refusals(&log) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = lab.daemon_log();
    }
    assert!(refusals(&log) >= 2, "the daemon log does not show the refusals of uid {uid}:\n{log}");

    // 3. The owner is still served.
    chmod(&run_dir, 0o700);
    chmod(lab.dir(), 0o700);
    let st = lab.daemon_status().await.unwrap_or_else(|e| panic!("owner's status after the refusals: {e:#}\n{log}"));
    assert_eq!(st.len(), 1);
}

// ---------------------------------------------------------------------------------------------------------- doctor

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_in_a_good_lab() {
    let lab = lab(|_| {}).await;
    let out = run(&lab, &mut lab.bastionctl_command(["doctor"])).await;
    let stdout = text(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "doctor failed in a good lab:\n{stdout}\n{}", text(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for expect in [
        "config ",
        "socket directory",
        "AWS credentials resolve",
        &format!("instance {} exists, state stopped", lab.instance_id()),
        "ec2:DescribeInstances allowed",
        "ec2:DescribeAddresses allowed",
        "ec2:DescribeVpcs allowed",
        "ec2:StartInstances allowed",
        "ec2:StopInstances allowed",
        "ec2:GetConsoleOutput allowed",
        "identity file",
        &format!("host key of {} pinned", lab.instance_id()),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with("PASS") && l.contains(expect)),
            "no PASS line with `{expect}`:\n{stdout}"
        );
    }
    assert!(!stdout.contains("testing"), "doctor printed the lab's AWS key/secret:\n{stdout}");
    assert_eq!(lab.instance_state().await.unwrap(), "stopped", "DryRun must not start or stop anything");
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 1, "one StartInstances, with DryRun");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_with_the_fix_for_an_unknown_instance_and_a_missing_key() {
    let lab = lab(|_| {}).await;
    let good = std::fs::read_to_string(&lab.files().config).unwrap();
    let identity = lab.files().identity.display().to_string();
    let bad = good.replace(lab.instance_id(), "i-0000000000000dead").replace(&identity, "/nonexistent/id_ed25519");
    assert_ne!(bad, good);
    let broken = lab.dir().join("broken.toml");
    std::fs::write(&broken, bad).unwrap();

    let mut cmd = lab.bastionctl_command(["doctor"]);
    let cmd = cmd.arg("--config").arg(&broken);
    let out = run(&lab, cmd).await;
    let stdout = text(&out.stdout);
    eprintln!("{stdout}");
    assert!(!out.status.success(), "doctor passed a broken config:\n{stdout}");
    assert!(text(&out.stderr).contains("check(s) failed"), "{}", text(&out.stderr));
    let fail_then_fix = |what: &str, fix: &str| {
        let lines: Vec<&str> = stdout.lines().collect();
        let i = lines.iter().position(|l| l.starts_with("FAIL") && l.contains(what));
        let i = i.unwrap_or_else(|| panic!("no FAIL line with `{what}`:\n{stdout}"));
        assert!(
            lines.get(i + 1).is_some_and(|l| l.contains("fix:") && l.contains(fix)),
            "no fix `{fix}` after `{what}`:\n{stdout}"
        );
    };
    fail_then_fix("instance i-0000000000000dead not found", "correct instance_id");
    fail_then_fix(
        "identity file /nonexistent/id_ed25519 cannot be loaded",
        "ssh-keygen -t ed25519 -f /nonexistent/id_ed25519",
    );
    fail_then_fix("no usable SSH key", "identity_files");
    fail_then_fix("no host key pinned for i-0000000000000dead", "trust lab");
    assert!(stdout.lines().any(|l| l.starts_with("PASS") && l.contains("AWS credentials resolve")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_missing_permission_and_how_to_grant_it() {
    let lab = lab(|o| o.ec2_front = true).await;
    let front = lab.front().expect("the lab runs the EC2 front");
    let denied = |action: &str| bastionctl_lab::Fault::Error {
        status: 403,
        code: "UnauthorizedOperation".into(),
        message: format!("You are not authorized to perform this operation. (ec2:{action})"),
    };
    front.inject("StartInstances", denied("StartInstances"), 1);
    front.inject("GetConsoleOutput", denied("GetConsoleOutput"), 1);

    let out = run(&lab, &mut lab.bastionctl_command(["doctor"])).await;
    let stdout = text(&out.stdout);
    eprintln!("{stdout}");
    assert!(!out.status.success(), "doctor passed with a permission missing:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for action in ["ec2:StartInstances", "ec2:GetConsoleOutput"] {
        let i = lines
            .iter()
            .position(|l| l.starts_with("FAIL") && l.contains(action))
            .unwrap_or_else(|| panic!("no FAIL line naming {action}:\n{stdout}"));
        let fix = lines.get(i + 1).copied().unwrap_or_default();
        assert!(fix.contains("fix:") && fix.contains(action) && fix.contains("iam-policy.json"), "fix for {action}: {fix}");
    }
    for allowed in ["ec2:StopInstances allowed", "ec2:DescribeInstances allowed"] {
        assert!(lines.iter().any(|l| l.starts_with("PASS") && l.contains(allowed)), "no PASS `{allowed}`:\n{stdout}");
    }
    assert_eq!(lab.instance_state().await.unwrap(), "stopped");
}
