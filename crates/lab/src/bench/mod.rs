//! The benchmark (issue 9): every route to the same private host side by side in one lab, routes interleaved, with
//! the figures of docs/BENCHMARKS.md: warm connect, throughput both ways (byte count checked), CPU per GiB of the
//! forwarding processes, the daemon's memory idle and with idle channels, cold start overhead, and the cipher micro
//! benchmark. `bastionctl-lab bench` runs it; `--smoke` uses tiny sizes and asserts nothing about speed (CI).

mod channels;
pub mod cipher;
pub mod cpu;
pub mod render;
pub mod routes;
pub mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{Lab, LabOptions};
use routes::{ALL, Groups, Route, Transfer};

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The bastionctl binary under test.
    pub bastionctl: PathBuf,
    /// Warm connects per route (the median is reported).
    pub connects: usize,
    /// Bytes per transfer, each way.
    pub bytes: u64,
    /// Transfers per route and direction (the median is reported).
    pub reps: usize,
    /// Idle channels opened for the memory figure.
    pub channels: usize,
    /// Cold starts (the median is reported).
    pub cold_runs: usize,
    /// Bytes per cipher in the micro benchmark (0: skip it, e.g. with a debug build of the benchmark).
    pub cipher_bytes: u64,
    /// The outer cipher of every route (OpenSSH name); default: the one bastionctl prefers on this CPU. `None`
    /// leaves bastionctl and OpenSSH each at its own default.
    pub outer_cipher: Option<String>,
    /// Set the outer cipher only in the ssh_config (for a bastionctl build without the `ciphers` key).
    pub cipher_ssh_only: bool,
    /// The lab's boot delay (subtracted from the cold start).
    pub boot_delay: Duration,
}

impl BenchOptions {
    /// The full benchmark: 25 connects, 1 GiB × 3 each way, 100 channels, 3 cold starts, 256 MiB per cipher.
    pub fn full(bastionctl: PathBuf) -> BenchOptions {
        BenchOptions {
            bastionctl,
            connects: 25,
            bytes: 1 << 30,
            reps: 3,
            channels: 100,
            cold_runs: 3,
            cipher_bytes: 256 << 20,
            outer_cipher: Some(bastionctl_core::config::ciphers::default_order()[0].to_string()),
            cipher_ssh_only: false,
            boot_delay: Duration::from_secs(1),
        }
    }

    /// The smoke run for CI: every figure once, with tiny sizes.
    pub fn smoke(bastionctl: PathBuf) -> BenchOptions {
        BenchOptions {
            connects: 2,
            bytes: 1 << 20,
            reps: 1,
            channels: 5,
            cold_runs: 1,
            cipher_bytes: 1 << 20,
            boot_delay: Duration::from_millis(300),
            ..BenchOptions::full(bastionctl)
        }
    }
}

/// Samples of one route.
#[derive(Debug, Default, Clone)]
pub struct RouteSamples {
    /// Warm `ssh host true` wall times.
    pub connect: Vec<Duration>,
    /// Upload wall times and CPU.
    pub up: Vec<routes::RunResult>,
    /// Download wall times and CPU.
    pub down: Vec<routes::RunResult>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options it ran with.
    pub opts: BenchOptions,
    /// The routes measured (fdpass is left out for a bastionctl without `proxy --fdpass`).
    pub routes: Vec<Route>,
    /// Per route.
    pub samples: HashMap<Route, RouteSamples>,
    /// Whether CPU was measured (cgroups available).
    pub cpu_measured: bool,
    /// Daemon RSS with the session up and no channel, before any transfer.
    pub rss_idle: cpu::Rss,
    /// Daemon RSS with no channel after the transfers.
    pub rss_after: cpu::Rss,
    /// Daemon RSS with [`BenchOptions::channels`] idle channels open.
    pub rss_channels: cpu::Rss,
    /// Cold `ssh host true` wall times (bastion stopped, no daemon).
    pub cold: Vec<Duration>,
    /// The cipher micro benchmark.
    pub ciphers: Vec<cipher::CipherResult>,
    /// The machine and the run (CPU, memory, kernel, OpenSSH, load average before and after).
    pub machine: Vec<(String, String)>,
    /// Wall time of the whole benchmark.
    pub elapsed: Duration,
}

/// Whether `bastionctl` has `proxy --fdpass`.
async fn has_fdpass(bastionctl: &std::path::Path) -> bool {
    let out = tokio::process::Command::new(bastionctl).args(["proxy", "--help"]).output().await;
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--fdpass"))
}

/// Runs the benchmark in a lab of its own.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Report> {
    let began = Instant::now();
    let mut machine = render::machine();
    let mut lab_opts = LabOptions::new(&opts.bastionctl);
    lab_opts.idle_timeout = Duration::from_secs(3600);
    lab_opts.boot_delay = opts.boot_delay;
    lab_opts.outer_ciphers = opts.outer_cipher.clone().map(|c| vec![c]);
    lab_opts.outer_ciphers_ssh_only = opts.cipher_ssh_only;
    let lab = Lab::start(lab_opts).await.context("the lab did not start")?;
    let routes: Vec<Route> = match has_fdpass(&opts.bastionctl).await {
        true => ALL.to_vec(),
        false => ALL.iter().copied().filter(|&r| r != Route::Fdpass).collect(),
    };
    let groups = Groups::create();
    let daemon = lab.start_daemon().await?;
    let daemon_pid = daemon.pid().context("the daemon has no pid")?;
    if let Some(g) = &groups.daemon {
        g.add(daemon_pid)?;
    }
    // Warm up: the first bastionctl connect starts the bastion; the first ControlMaster connect starts the master.
    routes::run(&lab, &groups, Route::Proxy, Transfer::Connect).await.context("first connect")?;
    routes::start_master(&lab, &groups).await?;
    for &r in &routes {
        routes::run(&lab, &groups, r, Transfer::Connect).await?;
    }
    let rss_idle = cpu::rss(daemon_pid)?;
    let mut samples: HashMap<Route, RouteSamples> = routes.iter().map(|&r| (r, RouteSamples::default())).collect();
    for _ in 0..opts.connects {
        for &r in &routes {
            let res = routes::run(&lab, &groups, r, Transfer::Connect).await?;
            samples.get_mut(&r).expect("route").connect.push(res.wall);
        }
    }
    for _ in 0..opts.reps {
        for &r in &routes {
            let up = routes::run(&lab, &groups, r, Transfer::Up(opts.bytes)).await?;
            let down = routes::run(&lab, &groups, r, Transfer::Down(opts.bytes)).await?;
            let s = samples.get_mut(&r).expect("route");
            s.up.push(up);
            s.down.push(down);
        }
    }
    let rss_after = cpu::rss(daemon_pid)?;
    let open = channels::open_idle(&lab, opts.channels).await?;
    let rss_channels = cpu::rss(daemon_pid)?;
    drop(open);
    routes::stop_master(&lab).await;
    drop(daemon);
    let cold = cold_starts(&lab, &opts).await?;
    let ciphers = match opts.cipher_bytes {
        0 => Vec::new(),
        n => cipher::run_all(&lab, n, if n >= 64 << 20 { 3 } else { 1 }).await?,
    };
    machine.push(("load average after".into(), render::loadavg()));
    Ok(Report {
        cpu_measured: groups.available(),
        opts,
        routes,
        samples,
        rss_idle,
        rss_after,
        rss_channels,
        cold,
        ciphers,
        machine,
        elapsed: began.elapsed(),
    })
}

/// `ssh host true` through bastionctl with the bastion stopped and no daemon running (the proxy starts one).
async fn cold_starts(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    let groups = Groups::default();
    for _ in 0..opts.cold_runs {
        lab.stop_daemon().await;
        lab.ec2().stop_instances().instance_ids(lab.instance_id()).send().await.context("StopInstances")?;
        lab.wait_instance_state("stopped", Duration::from_secs(60)).await?;
        lab.wait_bastion_sshd(false, Duration::from_secs(30)).await?;
        let res = routes::run(lab, &groups, Route::Proxy, Transfer::Connect).await.context("cold start")?;
        out.push(res.wall);
    }
    lab.stop_daemon().await;
    Ok(out)
}
