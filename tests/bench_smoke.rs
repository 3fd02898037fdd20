//! The benchmark's smoke run (issue 9): every route and figure of `bastionctl-lab bench` once, with tiny sizes, on
//! the debug build, so the benchmark keeps working. It asserts that every figure was measured, nothing about speed.

use std::time::Duration;

use bastionctl_lab::bench::{self, BenchOptions, routes::Route};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_measures_every_route_and_figure() {
    let opts = BenchOptions::smoke(env!("CARGO_BIN_EXE_bastionctl").into());
    let report = bench::run(opts.clone()).await.unwrap_or_else(|e| panic!("bench --smoke failed: {e:#}"));
    assert_eq!(report.routes, bench::routes::ALL.to_vec(), "every route, fdpass included");
    for route in &report.routes {
        let s = &report.samples[route];
        assert_eq!(s.connect.len(), opts.connects, "{route:?}");
        assert_eq!((s.up.len(), s.down.len()), (opts.reps, opts.reps), "{route:?}");
        assert!(s.connect.iter().all(|d| *d > Duration::ZERO));
        if report.cpu_measured {
            assert!(s.up.iter().chain(&s.down).all(|r| r.cpu.is_some_and(|c| c > Duration::ZERO)), "{route:?}: {s:?}");
        }
    }
    assert!(report.rss_idle.total > 0 && report.rss_channels.total > 0);
    assert!(report.rss_idle.anon > 0 && report.rss_idle.anon <= report.rss_idle.total);
    assert_eq!(report.cold.len(), opts.cold_runs);
    assert_eq!(report.ciphers.len(), bastionctl::config::ciphers::SUPPORTED.len());
    assert!(report.ciphers.iter().all(|c| c.bytes_per_sec > 0.0));
    let md = bench::render::markdown(&report);
    for heading in ["## Machine", "## Routes", "## Daemon memory", "## Cold start", "## Outer session ciphers", "## Goals"] {
        assert!(md.contains(heading), "no {heading} in:\n{md}");
    }
    for route in bench::routes::ALL {
        assert!(md.contains(route.label()), "no row for {route:?}:\n{md}");
    }
    assert!(!md.contains("NaN"), "a figure is missing:\n{md}");
    let _ = Route::Direct;
}
