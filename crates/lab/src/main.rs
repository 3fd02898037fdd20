//! `bastionctl-lab`: the local lab as a demo and a playground.
//!
//! - `bastionctl-lab demo`: builds the lab, runs `ssh private 'echo ok; hostname'` through the stopped bastion, shows
//!   the instance start, then waits for the idle stop and shows the bastion stopped and its sshd gone.
//! - `bastionctl-lab shell`: builds the lab and keeps it up until Ctrl-C, printing the commands to use and every
//!   change of the bastion's state.
//! - `bastionctl-lab bench [--smoke]`: the benchmark of docs/BENCHMARKS.md in a lab of its own.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bastionctl_lab::bench::{self, BenchOptions};
use bastionctl_lab::{Lab, LabOptions};
use clap::{Parser, Subcommand};

/// The local lab: moto's EC2, a stopped bastion played by a real sshd, a private host, and the real ssh client.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The bastionctl binary to use (default: `bastionctl` next to this program).
    #[arg(long, global = true, env = "BASTIONCTL_BIN")]
    bastionctl: Option<PathBuf>,
    /// Stop the bastion after it has had no open channel for this long.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// How long the bastion "boots" after EC2 says running, before its sshd answers.
    #[arg(long, global = true, default_value = "2s", value_parser = humantime::parse_duration)]
    boot_delay: Duration,
    /// Leave the bastion's host key out of the daemon's known_hosts, to see how an unknown key is refused.
    #[arg(long, global = true)]
    untrusted_bastion_key: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run ssh through the stopped bastion, watch it start, then watch it stop when idle.
    Demo,
    /// Keep the lab up until Ctrl-C and print how to use it.
    Shell,
    /// Render the reliability table from the rows the fault tests recorded (`$BASTIONCTL_REPORT_DIR`, default
    /// `target/reliability`) to stdout or `--out FILE`; builds no lab.
    Report {
        /// Write here instead of stdout (e.g. docs/RELIABILITY.md).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The benchmark (docs/BENCHMARKS.md): every route side by side in a lab of its own; prints a markdown table.
    Bench {
        /// Tiny sizes and one run of each figure, to keep the benchmark working in CI (asserts nothing about speed).
        #[arg(long)]
        smoke: bool,
        /// Also write the markdown here (scripts/bench.sh writes docs/BENCHMARKS.md).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The outer session's cipher on every route (OpenSSH name), e.g. chacha20-poly1305@openssh.com. Default:
        /// the one bastionctl prefers on this CPU.
        #[arg(long)]
        outer_cipher: Option<String>,
        /// Set the outer cipher only for OpenSSH (for a bastionctl build that predates the `ciphers` key).
        #[arg(long)]
        cipher_ssh_only: bool,
        /// Bytes per transfer each way (default 1 GiB; smoke 1 MiB).
        #[arg(long)]
        bytes: Option<u64>,
        /// Transfers per route and direction (default 3).
        #[arg(long)]
        reps: Option<usize>,
        /// Warm connects per route (default 25).
        #[arg(long)]
        connects: Option<usize>,
        /// Bytes per cipher in the micro benchmark (default 256 MiB; 0 skips it: its figures mean nothing from a
        /// debug build of this program).
        #[arg(long)]
        cipher_bytes: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastionctl-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Report { out } = &cli.command {
        return report(out.as_deref());
    }
    let bastionctl = match cli.bastionctl {
        Some(p) => p,
        None => std::env::current_exe()?.parent().context("no parent dir of this program")?.join("bastionctl"),
    };
    if !bastionctl.exists() {
        bail!("{} not found: build it (cargo build) or pass --bastionctl PATH", bastionctl.display());
    }
    if let Command::Bench { smoke, out, outer_cipher, cipher_ssh_only, bytes, reps, connects, cipher_bytes } = cli.command
    {
        let mut o = match smoke {
            true => BenchOptions::smoke(bastionctl),
            false => BenchOptions::full(bastionctl),
        };
        o.outer_cipher = outer_cipher.or(o.outer_cipher);
        o.cipher_ssh_only = cipher_ssh_only;
        o.bytes = bytes.unwrap_or(o.bytes);
        o.reps = reps.unwrap_or(o.reps);
        o.connects = connects.unwrap_or(o.connects);
        o.cipher_bytes = cipher_bytes.unwrap_or(o.cipher_bytes);
        return bench(o, out.as_deref()).await;
    }
    let mut opts = LabOptions::new(bastionctl);
    opts.idle_timeout = cli.idle_timeout;
    opts.boot_delay = cli.boot_delay;
    opts.trust_bastion_key = !cli.untrusted_bastion_key;
    step("Starting the lab: moto (EC2), a stopped bastion, a private host, generated keys");
    let lab = Lab::start(opts).await?;
    step(&format!("Lab ready in {}", lab.dir().display()));
    say(&format!(
        "bastion instance {} (Name={}), Elastic IP {}",
        lab.instance_id(),
        lab.world().name_tag,
        lab.bastion_addr()
    ));
    say(&format!("private host {} (ssh_config reaches it only through the bastion)", lab.private_addr()));
    // On Ctrl-C or SIGTERM the lab still drops, which stops every process it started.
    tokio::select! {
        r = async {
            match cli.command {
                Command::Demo => demo(&lab).await,
                Command::Shell => shell(&lab).await,
                Command::Report { .. } | Command::Bench { .. } => unreachable!("handled before the lab starts"),
            }
        } => r,
        _ = shutdown_signal() => {
            step("Interrupted: stopping the lab");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn step(s: &str) {
    println!("\n==> {s}");
}

fn say(s: &str) {
    println!("    {s}");
}

async fn show_state(lab: &Lab) -> anyhow::Result<()> {
    let sshd = if lab.bastion_sshd_running() { "running" } else { "not running" };
    say(&format!("EC2 (moto) says the bastion is: {}; bastion sshd: {sshd}", lab.instance_state().await?));
    Ok(())
}

async fn demo(lab: &Lab) -> anyhow::Result<()> {
    show_state(lab).await?;
    let remote = "echo ok; hostname";
    step(&format!("Running: ssh -F {} private '{remote}'", lab.files().ssh_config.display()));
    say("(bastionctl's progress lines come on stderr; the remote command's output follows)");
    let t0 = Instant::now();
    let child = lab.ssh_command(remote).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let out = child.wait_with_output().await?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        say(&format!("remote says: {line}"));
    }
    if !out.status.success() {
        bail!("ssh failed ({}); daemon log:\n{}", out.status, lab.daemon_log());
    }
    say(&format!("ssh finished in {:.1} s", t0.elapsed().as_secs_f64()));
    show_state(lab).await?;
    let marker = lab.direct_tcpip_marker();
    if let Some(line) = lab.bastion_log().lines().find(|l| l.contains(&marker)) {
        say(&format!("bastion sshd log: {}", line.trim()));
    }
    let idle = lab.options().idle_timeout;
    step(&format!("No connection is open now; waiting for the idle stop ({} s)", idle.as_secs()));
    let t1 = Instant::now();
    lab.wait_instance_state("stopped", idle + Duration::from_secs(60)).await?;
    say(&format!("stopped after {:.1} s idle", t1.elapsed().as_secs_f64()));
    lab.wait_bastion_sshd(false, Duration::from_secs(10)).await?;
    show_state(lab).await?;
    step("Done: the bastion started on demand and stopped when idle");
    Ok(())
}

async fn shell(lab: &Lab) -> anyhow::Result<()> {
    let f = lab.files();
    step("The lab stays up until Ctrl-C. Try:");
    say(&format!("{} private 'echo ok; hostname'", f.lab_ssh.display()));
    say(&format!("{} status", f.lab_bastionctl.display()));
    say(&format!("{} private-jump true     # OpenSSH ProxyJump, for comparison", f.lab_ssh.display()));
    say(&format!("daemon log: {}", f.daemon_log.display()));
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let sshd = if lab.bastion_sshd_running() { "up" } else { "down" };
        let state = lab.instance_state().await.unwrap_or_else(|e| format!("unknown ({e:#})"));
        let now = format!("bastion {state}, sshd {sshd}");
        if now != last {
            say(&now);
            last = now;
        }
    }
}

fn report(out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use bastionctl_lab::report;
    let dir = report::dir();
    let rows = report::read_all().with_context(|| format!("cannot read the rows in {}", dir.display()))?;
    if rows.is_empty() {
        bail!("no rows in {}: run the fault tests first (scripts/reliability.sh)", dir.display());
    }
    let md = report::render_markdown(&rows);
    match out {
        Some(path) => std::fs::write(path, md).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{md}"),
    }
    Ok(())
}

async fn bench(opts: BenchOptions, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    eprintln!("bastionctl-lab: benchmarking {} (load average {})", opts.bastionctl.display(), bench::render::loadavg());
    let report = bench::run(opts).await?;
    let md = format!("# Benchmarks\n\nWritten by `scripts/bench.sh` (`bastionctl-lab bench`).\n\n{}", bench::render::markdown(&report));
    if let Some(path) = out {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{md}");
    Ok(())
}
