//! The benchmark's markdown: the machine, the route table with absolute figures and ratios, memory, cold start,
//! ciphers, and each goal of issue 9 checked against the figures of this run.

use std::fmt::Write as _;

use super::routes::{Route, RunResult};
use super::stats::{median, median_secs};
use super::{Report, RouteSamples};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// The machine: CPU model and count, AES instructions, memory, kernel, OpenSSH version, load average now.
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|s| s.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("?".to_string(), |kb| format!("{:.1} GiB", kb / MIB));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let ssh = std::process::Command::new("ssh").arg("-V").output().map_or_else(
        |e| format!("unknown ({e})"),
        |o| String::from_utf8_lossy(&o.stderr).trim().to_string(),
    );
    vec![
        ("CPU".into(), format!("{} × {}", cores, model.unwrap_or("unknown"))),
        ("AES instructions".into(), bastionctl_core::config::ciphers::cpu_has_aes().to_string()),
        ("memory".into(), mem_gib),
        ("kernel".into(), kernel.trim().to_string()),
        ("OpenSSH".into(), ssh),
        ("load average before".into(), loadavg()),
    ]
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Derived figures of one route.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Median warm connect, seconds.
    pub connect: f64,
    /// Upload MiB/s (transfer time = median wall time minus the route's median warm connect).
    pub up_mib_s: f64,
    /// Download MiB/s.
    pub down_mib_s: f64,
    /// Client-side CPU seconds per GiB uploaded (route's processes and helper).
    pub up_cpu: Option<f64>,
    /// The same downloading.
    pub down_cpu: Option<f64>,
}

fn rate(bytes: u64, runs: &[RunResult], connect: f64) -> f64 {
    let wall = median_secs(&runs.iter().map(|r| r.wall).collect::<Vec<_>>()).unwrap_or(f64::NAN);
    bytes as f64 / MIB / (wall - connect).max(1e-3)
}

fn cpu_per_gib(bytes: u64, runs: &[RunResult]) -> Option<f64> {
    let cpu: Option<Vec<f64>> = runs.iter().map(|r| r.cpu.map(|c| c.as_secs_f64())).collect();
    median(&cpu?).map(|c| c / (bytes as f64 / GIB))
}

/// The figures of `s`.
pub fn figures(bytes: u64, s: &RouteSamples) -> Figures {
    let connect = median_secs(&s.connect).unwrap_or(f64::NAN);
    Figures {
        connect,
        up_mib_s: rate(bytes, &s.up, connect),
        down_mib_s: rate(bytes, &s.down, connect),
        up_cpu: cpu_per_gib(bytes, &s.up),
        down_cpu: cpu_per_gib(bytes, &s.down),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 { format!("{:.2}", a / b) } else { "–".into() }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The whole report as markdown.
pub fn markdown(r: &Report) -> String {
    let f = |route| r.samples.get(&route).map(|s| figures(r.opts.bytes, s)).unwrap_or_default();
    let (direct, jump, master) = (f(Route::Direct), f(Route::Jump), f(Route::JumpMaster));
    let fwd = |x: Option<f64>, base: Option<f64>| x.zip(base).map(|(a, b)| a - b);
    let mut out = String::new();
    let _ = writeln!(out, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let o = &r.opts;
    let _ = writeln!(
        out,
        "\nRun: {} warm connects per route, {} × {:.0} MiB each way per route, routes interleaved; outer cipher {}; \
         bastionctl binary `{}`; took {:.0} s.\n",
        o.connects,
        o.reps,
        o.bytes as f64 / MIB,
        o.outer_cipher.as_deref().unwrap_or("each side's default"),
        o.bastionctl.display(),
        r.elapsed.as_secs_f64(),
    );
    let _ = writeln!(out, "## Routes\n");
    let _ = writeln!(
        out,
        "Throughput: bytes over (median wall time − the route's median warm connect). CPU: all client-side processes \
         of the route (one cgroup) plus the daemon's or ControlMaster's delta, per GiB; *forwarding* CPU is that minus \
         the direct route's (the user's ssh alone).{}\n",
        if r.cpu_measured { "" } else { " **CPU not measured: no writable cgroup hierarchy.**" }
    );
    let _ = writeln!(
        out,
        "| route | warm connect ms | ÷ `ssh -J` | ÷ ControlMaster | up MiB/s | ÷ `ssh -J` | down MiB/s | ÷ `ssh -J` | \
         fwd CPU s/GiB up | ÷ `ssh -W` | fwd CPU s/GiB down | ÷ `ssh -W` |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let jw_up = fwd(jump.up_cpu, direct.up_cpu);
    let jw_down = fwd(jump.down_cpu, direct.down_cpu);
    for &route in &r.routes {
        let x = f(route);
        let (up, down) = match route {
            Route::Direct => (None, None),
            _ => (fwd(x.up_cpu, direct.up_cpu), fwd(x.down_cpu, direct.down_cpu)),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} |",
            route.label(),
            x.connect * 1000.0,
            ratio(x.connect, jump.connect),
            ratio(x.connect, master.connect),
            x.up_mib_s,
            ratio(x.up_mib_s, jump.up_mib_s),
            x.down_mib_s,
            ratio(x.down_mib_s, jump.down_mib_s),
            opt(up, 2),
            up.zip(jw_up).map_or("–".into(), |(a, b)| ratio(a, b)),
            opt(down, 2),
            down.zip(jw_down).map_or("–".into(), |(a, b)| ratio(a, b)),
        );
    }
    let _ = writeln!(out, "\nClient-side CPU s/GiB before subtracting the direct route:\n");
    let _ = writeln!(out, "| route | up | down |\n|---|---|---|");
    for &route in &r.routes {
        let x = f(route);
        let _ = writeln!(out, "| {} | {} | {} |", route.label(), opt(x.up_cpu, 2), opt(x.down_cpu, 2));
    }
    memory_and_cold(&mut out, r, f(Route::Proxy).connect);
    ciphers(&mut out, r);
    goals(&mut out, r);
    out
}

fn memory_and_cold(out: &mut String, r: &Report, warm: f64) {
    let n = r.opts.channels.max(1);
    let idle = if r.rss_after.total >= r.rss_idle.total { r.rss_after } else { r.rss_idle };
    let per = (r.rss_channels.total as f64 - idle.total as f64) / n as f64;
    let per_anon = (r.rss_channels.anon as f64 - idle.anon as f64) / n as f64;
    let mib = |x: u64| x as f64 / MIB;
    let _ = writeln!(
        out,
        "\n## Daemon memory (RSS from /proc)\n\nAnonymous is `RssAnon` (heap, stacks); the rest of the RSS is file-backed, \
         mostly the binary's code pages, shared with the page cache.\n\n| state | RSS | anonymous |\n|---|---|---|\n\
         | idle, session up, before any transfer | {:.1} MiB | {:.1} MiB |\n\
         | idle after the transfers | {:.1} MiB | {:.1} MiB |\n| {} idle channels open | {:.1} MiB | {:.1} MiB |\n\
         | per open channel | {:.1} KiB | {:.1} KiB |",
        mib(r.rss_idle.total),
        mib(r.rss_idle.anon),
        mib(r.rss_after.total),
        mib(r.rss_after.anon),
        r.opts.channels,
        mib(r.rss_channels.total),
        mib(r.rss_channels.anon),
        per / 1024.0,
        per_anon / 1024.0,
    );
    let cold = median_secs(&r.cold).unwrap_or(f64::NAN);
    let boot = r.opts.boot_delay.as_secs_f64();
    let runs: Vec<String> = r.cold.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect();
    let _ = writeln!(
        out,
        "\n## Cold start\n\n`ssh private true` with the bastion stopped and no daemon running: runs {} s, median {:.2} s; \
         minus the lab's boot delay ({:.2} s) and the median warm connect ({:.3} s): **overhead {:.2} s** (this includes \
         the lab agent's poll of moto, up to 0.1 s).",
        runs.join(", "),
        cold,
        boot,
        warm,
        cold - boot - warm,
    );
}

fn ciphers(out: &mut String, r: &Report) {
    if r.ciphers.is_empty() {
        let _ = writeln!(out, "\n## Outer session ciphers\n\nNot measured in this run (`--cipher-bytes 0`).");
        return;
    }
    let _ = writeln!(
        out,
        "\n## Outer session ciphers (in-process russh client and server, one channel, {:.0} MiB each)\n\n\
         | cipher | MiB/s | CPU s/GiB (both ends) |\n|---|---|---|",
        r.opts.cipher_bytes as f64 / MIB
    );
    for c in &r.ciphers {
        let _ = writeln!(out, "| {} | {:.0} | {:.2} |", c.name, c.bytes_per_sec / MIB, c.cpu_per_gib);
    }
}

fn goals(out: &mut String, r: &Report) {
    let f = |route| r.samples.get(&route).map(|s| figures(r.opts.bytes, s));
    let (Some(direct), Some(jump), Some(master)) = (f(Route::Direct), f(Route::Jump), f(Route::JumpMaster)) else {
        return;
    };
    let _ = writeln!(out, "\n## Goals (issue 9)\n\n| route | goal | this run | met |\n|---|---|---|---|");
    let mut row = |route: &str, goal: &str, value: String, met: Option<bool>| {
        let met = met.map_or("–", |m| if m { "yes" } else { "**no**" });
        let _ = writeln!(out, "| {route} | {goal} | {value} | {met} |");
    };
    let fwd = |x: Option<f64>, b: Option<f64>| x.zip(b).map(|(a, b)| a - b);
    for route in [Route::Proxy, Route::Fdpass] {
        let Some(x) = f(route) else { continue };
        let name = route.label();
        let (cm, j) = (x.connect / master.connect, x.connect / jump.connect);
        row(name, "warm connect ≤ 1.0× ControlMaster", format!("{cm:.2}×"), Some(cm <= 1.0));
        row(name, "warm connect ≤ 0.65× `ssh -J`", format!("{j:.2}×"), Some(j <= 0.65));
        let (u, d) = (x.up_mib_s / jump.up_mib_s, x.down_mib_s / jump.down_mib_s);
        row(name, "throughput ≥ 1.1× `ssh -J`, up", format!("{u:.2}×"), Some(u >= 1.1));
        row(name, "throughput ≥ 1.1× `ssh -J`, down", format!("{d:.2}×"), Some(d >= 1.1));
        for (dir, mine, theirs) in [
            ("up", fwd(x.up_cpu, direct.up_cpu), fwd(jump.up_cpu, direct.up_cpu)),
            ("down", fwd(x.down_cpu, direct.down_cpu), fwd(jump.down_cpu, direct.down_cpu)),
        ] {
            let q = mine.zip(theirs).map(|(a, b)| a / b);
            row(name, &format!("forwarding CPU ≤ 0.8× `ssh -W`, {dir}"), opt(q, 2) + "×", q.map(|q| q <= 0.8));
        }
    }
    let idle_bytes = r.rss_idle.total.max(r.rss_after.total);
    let idle = idle_bytes as f64 / MIB;
    let anon = r.rss_idle.anon.max(r.rss_after.anon) as f64 / MIB;
    row("daemon", "RSS idle ≤ 12 MiB", format!("{idle:.1} MiB ({anon:.1} MiB anonymous)"), Some(idle <= 12.0));
    let per = (r.rss_channels.total as f64 - idle_bytes as f64) / r.opts.channels.max(1) as f64 / 1024.0;
    row("daemon", "≤ 64 KiB per open channel", format!("{per:.1} KiB"), Some(per <= 64.0));
    let warm = f(Route::Proxy).map_or(f64::NAN, |x| x.connect);
    let cold = median_secs(&r.cold).unwrap_or(f64::NAN) - r.opts.boot_delay.as_secs_f64() - warm;
    row("bastionctl", "cold start overhead ≤ 0.3 s", format!("{cold:.2} s"), Some(cold <= 0.3));
}
