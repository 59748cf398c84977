//! Publication latency of shared sessions (`cluster:`): a session created
//! by host A's data path is visible in host B's persistence table how long
//! after?
//!
//! Both hosts run in this process on one machine, as the controller runs
//! them: A's program (through BPF_PROG_TEST_RUN, in a FIB namespace) takes
//! handshakes of never-seen clients at a steady rate; its ring reader and
//! publisher put each new session on a Redis stream (a real `redis-server`
//! on loopback); B's subscriber reads it and installs it into B's own
//! table. The lag is B's wall clock at installation minus the session's
//! creation time as A announced it (the same clock; its resolution is the
//! coarse monotonic clock's, a few ms). Every session of a round is
//! counted: how many arrived, and the median and 99th percentile of their
//! lags.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_ctl::{
    cluster::{store::Cluster, Directory},
    kernel::program::{Dataplane, LoadOptions},
    model::{config::ClusterSettings as Settings, sched::Scheduler, services::Services},
};

use super::{report::Samples, Plan};
use crate::fib::{self, FibNs};

/// New sessions per second on host A (the figure).
pub const RATE: u64 = 5_000;
const REDIS_PORT: u16 = 16_379;
/// Persistence timeout of the benchmark's VIP: a round's sessions have
/// expired before the next round reuses the client addresses.
const TIMEOUT: Duration = Duration::from_secs(3);

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host(services: &Services, attach: bool) -> Result<Dataplane> {
    let mut dp = Dataplane::load(&LoadOptions {
        max_connections: 262_144,
        max_sessions: 262_144,
        max_half_open: 131_072,
        pin_dir: None,
        object: None,
        shared: true,
    })?;
    dp.tables
        .set_settings(&super::prog::settings(900_000_000_000))?;
    if attach {
        dp.attach(
            &FibNs::ifaces(),
            lb_ctl::kernel::xdpmode::Mode::Native,
            None,
        )?;
    }
    dp.tables.apply(&Services::default(), services)?;
    Ok(dp)
}

fn settings(node: &str) -> Settings {
    Settings {
        store: format!("redis://127.0.0.1:{REDIS_PORT}"),
        password: None,
        ca: None,
        node: node.into(),
        stream: "lb-bench:sessions".into(),
        stream_max_len: 1_000_000,
    }
}

/// Measure: `plan.rounds` rounds (after a warm-up) of `plan.seconds` at
/// [`RATE`] new sessions per second.
///
/// # Errors
/// When Redis, a program or a namespace cannot be set up.
pub fn publish_latency(plan: &Plan, samples: &mut Samples) -> Result<()> {
    let redis = Redis(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs it)")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _in_runtime = runtime.enter();
    let fib_ns = FibNs::new("lbb-cluster")?;
    let model = super::prog::model(Scheduler::Maglev, TIMEOUT)?;
    let mut a = host(&model, true)?;
    let b = host(&model, false)?;
    let a_ring = a.session_events.take();
    let a_sessions = a.tables.sessions_handle()?;
    let b_sessions = b.tables.sessions_handle()?;
    let a_lost = a.session_events_lost.take();
    let _a = Cluster::start(
        settings("bench-a"),
        Directory::new(&model),
        a_sessions,
        a_ring,
        a_lost,
    )?;
    let host_b = Cluster::start(
        settings("bench-b"),
        Directory::new(&model),
        b_sessions,
        None,
        None,
    )?;
    let per_round = RATE * plan.seconds;
    if per_round > 65_536 {
        bail!("{per_round} sessions a round do not fit 198.19.0.0/16");
    }
    let reachable = Instant::now();
    while host_b.counters.state() != lb_ctl::cluster::store::UP {
        if reachable.elapsed() > Duration::from_secs(10) {
            bail!("redis-server on 127.0.0.1:{REDIS_PORT} did not answer");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..=plan.rounds {
        lb_ctl::sync::lock(&host_b.counters.lags).clear();
        let installed_before = host_b
            .counters
            .installed
            .load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        for i in 0..per_round {
            // Paced: session i starts at i / RATE seconds.
            let due = start + Duration::from_micros(i * 1_000_000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i as u32);
            fib::handshake(a.program()?, (client, 40_000 + round as u16))?;
        }
        let offered = start.elapsed().as_secs_f64();
        // Every session arrives, or a second passes.
        let wait = Instant::now();
        let installed = || {
            host_b
                .counters
                .installed
                .load(std::sync::atomic::Ordering::Relaxed)
                - installed_before
        };
        while installed() < per_round && wait.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let arrived = installed();
        let lags: Vec<f64> = lb_ctl::sync::lock(&host_b.counters.lags)
            .iter()
            .map(|&ms| f64::from(ms))
            .collect();
        let q = |p: f64| {
            let mut v = lags.clone();
            v.sort_by(f64::total_cmp);
            v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "cluster round {round}: {per_round} sessions in {offered:.2} s ({:.0}/s), {arrived} installed on B, lag p50 {} ms p99 {} ms",
            per_round as f64 / offered,
            q(0.5),
            q(0.99)
        );
        if round > 0 {
            samples.add(
                "cluster_publish_lag_p50_ms",
                "ms",
                "new session on host A -> installed in host B's table via Redis, median (5000/s)",
                q(0.5),
            );
            samples.add(
                "cluster_publish_lag_p99_ms",
                "ms",
                "new session on host A -> installed in host B's table via Redis, 99th percentile (5000/s; target <= 100)",
                q(0.99),
            );
            samples.add(
                "cluster_delivered_ratio",
                "ratio",
                "sessions installed on host B within 1 s of the round's end / sessions created on A",
                arrived as f64 / per_round as f64,
            );
            samples.add(
                "cluster_offered_rate",
                "sessions/s",
                "new sessions per second achieved on host A (target 5000)",
                per_round as f64 / offered,
            );
        }
        // The round's sessions expire before their addresses return.
        std::thread::sleep(TIMEOUT + Duration::from_millis(500));
    }
    drop(fib_ns);
    drop(redis);
    Ok(())
}
