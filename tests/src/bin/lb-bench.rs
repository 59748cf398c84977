//! `lb-bench`: the benchmark. Run it through `cargo xtask bench [--quick]`,
//! which installs the peers (nftables, HAProxy, nginx, wrk) and builds in
//! release mode. Writes `target/bench/results.json`, `samples.json`,
//! `report.md` and the plots. Not part of the test suite.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};
use clap::Parser;
use lb_tests::bench::{cluster, lab, prog, report, Plan};

#[derive(Parser)]
#[command(
    about = "lb benchmark: per-packet cost, scale, packet and connection rates against nftables and HAProxy"
)]
struct Cli {
    /// A shorter run (under five minutes) with the same rounds.
    #[arg(long)]
    quick: bool,
    /// Where to write the results.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Skip the lab (packet and connection rates).
    #[arg(long)]
    no_lab: bool,
    /// Skip the BPF_PROG_TEST_RUN part.
    #[arg(long)]
    no_prog: bool,
    /// Skip the scale curve and the sweeper (the slowest part of the
    /// BPF_PROG_TEST_RUN benchmark).
    #[arg(long)]
    no_scale: bool,
    /// Skip the publication latency of shared sessions (Redis).
    #[arg(long)]
    no_cluster: bool,
    /// Of the lab part, run only this scenario.
    #[arg(long, value_enum)]
    only: Option<lab::Part>,
    /// Only run new clients' SYNs through the balancer for this many
    /// seconds and print their cost, to profile the new-flow path: e.g.
    /// `perf record -a -g -- lb-bench --new-flows-for 10`.
    #[arg(long, value_name = "SECONDS")]
    new_flows_for: Option<u64>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let haproxy = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    format!("Machine: {cores} cores, {cpu}, Linux {kernel}. Peer: {haproxy}.")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(seconds) = cli.new_flows_for {
        return prog::new_flows_for(std::time::Duration::from_secs(seconds));
    }
    let mut samples = report::Samples::default();
    let machine = machine();
    eprintln!("{machine} Plan: {plan:?}");
    if !cli.no_prog {
        prog::per_packet(&plan, &mut samples).context("per-packet benchmark")?;
        prog::maglev(&mut samples);
        if !cli.no_scale {
            prog::scale(&plan, &mut samples).context("scale benchmark")?;
        }
    }
    if !cli.no_cluster {
        cluster::publish_latency(&plan, &mut samples).context("cluster benchmark")?;
    }
    if !cli.no_lab {
        lab::run(&plan, &mut samples, cli.only).context("lab benchmark")?;
    }
    let mut metrics = samples.metrics();
    let ratio = |a: &str, b: &str| samples.median(a) / samples.median(b);
    for (name, value, detail) in [
        (
            "pps_ratio_vs_nftables",
            ratio("pps_xdp", "pps_nftables"),
            "median pps_xdp / median pps_nftables",
        ),
        (
            "cps_ratio_vs_haproxy",
            ratio("cps_xdp", "cps_haproxy"),
            "median cps_xdp / median cps_haproxy",
        ),
        (
            "cps_ratio_vs_nftables",
            ratio("cps_xdp", "cps_nftables"),
            "median cps_xdp / median cps_nftables",
        ),
        (
            "http_rps_ratio_vs_haproxy",
            ratio("rps_keepalive_lb_http", "rps_keepalive_haproxy_http"),
            "median keep-alive requests/s, lb mode http (cookie) / HAProxy mode http (cookie insert)",
        ),
        (
            "http_p99_ratio_vs_haproxy",
            ratio("p99_ms_keepalive_lb_http", "p99_ms_keepalive_haproxy_http"),
            "median keep-alive p99 latency, lb mode http / HAProxy mode http",
        ),
        (
            "http_cps_ratio_vs_haproxy",
            ratio("cps_lb_http", "cps_haproxy_http"),
            "median new connections/s, lb mode http / HAProxy mode http",
        ),
        (
            "https_rps_ratio_vs_haproxy",
            ratio("rps_keepalive_lb_https", "rps_keepalive_haproxy_https"),
            "median keep-alive requests/s over TLS, lb mode http / HAProxy mode http (same certificate)",
        ),
        (
            "https_p99_ratio_vs_haproxy",
            ratio("p99_ms_keepalive_lb_https", "p99_ms_keepalive_haproxy_https"),
            "median keep-alive p99 latency over TLS, lb mode http / HAProxy mode http",
        ),
        (
            "https_cps_ratio_vs_haproxy",
            ratio("cps_lb_https", "cps_haproxy_https"),
            "median new TLS connections/s (a full handshake each), lb mode http / HAProxy mode http",
        ),
        (
            "flood_success_ratio_vs_nftables",
            ratio(
                "flood_legit_success_ratio_xdp",
                "flood_legit_success_ratio_nftables",
            ),
            "median legitimate success ratio during the SYN flood, lb / nftables",
        ),
        (
            "p99_ratio_vs_direct",
            ratio("p99_ms_close_xdp", "p99_ms_close_direct"),
            "median p99 latency (Connection: close) via lb / direct to one backend",
        ),
    ] {
        if value.is_finite() {
            metrics.push(report::Metric {
                metric: name.into(),
                value,
                unit: "ratio".into(),
                detail: detail.into(),
            });
        }
    }
    report::write(&cli.out, &metrics, &samples, &machine)?;
    let plot = Command::new("/usr/bin/python3")
        .arg("scripts/plot.py")
        .arg(&cli.out)
        .status();
    if !plot.is_ok_and(|s| s.success()) {
        eprintln!(
            "lb-bench: plotting failed (python3-matplotlib missing?); the tables are written"
        );
    }
    for m in &metrics {
        println!("{:<28} {:>14.3} {}", m.metric, m.value, m.unit);
    }
    println!("wrote {}/results.json and report.md", cli.out.display());
    Ok(())
}
