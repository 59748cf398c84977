//! Per-packet cost of the XDP program through BPF_PROG_TEST_RUN, the scale
//! curve, the sweeper over a million entries and the kernel memory per
//! connection.
//!
//! With `repeat`, the kernel runs the program again and again on the buffer
//! it rewrote the round before. A DNAT program would drift onto another path
//! after the first round, so each path is made a fixed point:
//! - established forward: the table holds (client → VIP, DNAT to backend) and
//!   (client → backend, DNAT to VIP), so every repetition is an established
//!   forward packet, alternating between two entries of the same shape;
//! - established reply: likewise (backend → client, SNAT to VIP) and
//!   (VIP → client, SNAT to backend);
//! - pass: a packet to no VIP is not rewritten at all;
//! - new flows cannot be a fixed point (the first repetition records the
//!   connection), so they run once per call on a fresh flow, and the same is
//!   done for the XDP_TX floor: the program's cost is the per-call median
//!   minus the floor's per-call median, plus the floor measured with repeat.

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{bail, Context as _, Result};
use aya::{programs::Xdp, Ebpf};
use lb_common::{conn::conn_flags, ConnState, FlowKey, Session, SessionKey, Settings};
use lb_ctl::{
    kernel::{
        clock::now_ns,
        program::{Dataplane, LoadOptions, PASS_PROGRAM},
    },
    model::{
        endpoint::{Endpoint, Protocol, VipId},
        sched::Scheduler,
        services::{Services, VipSpec},
    },
};

use super::{report::Samples, Plan};
use crate::{
    fib::{self, FibNs, B1, B2, B3, C1, VIP},
    packet::{Frame, ACK, SYN},
};

const XDP_TX: u32 = 3;
const XDP_PASS: u32 = 2;

fn raw(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> FlowKey {
    FlowKey {
        src_addr: raw(src.0),
        dst_addr: raw(dst.0),
        src_port: src.1.to_be(),
        dst_port: dst.1.to_be(),
        proto: 6,
        _pad: [0; 3],
    }
}

pub(super) fn settings(established_ns: u64) -> Settings {
    Settings {
        tcp_syn_ns: 60_000_000_000,
        tcp_established_ns: established_ns,
        tcp_closing_ns: 10_000_000_000,
        udp_ns: 300_000_000_000,
        ..Settings::default()
    }
}

/// A VIP 198.18.0.100:80 (tcp, NAT) over B1..B3:8080 with `scheduler`
/// and persistence `timeout` (/32).
///
/// # Errors
/// When the model refuses it.
pub(super) fn model(scheduler: Scheduler, timeout: std::time::Duration) -> Result<Services> {
    let mut services = Services::default();
    let id = VipId {
        endpoint: Endpoint {
            addr: VIP.into(),
            port: 80,
        },
        protocol: Protocol::Tcp,
    };
    services.add_vip(VipSpec {
        name: None,
        id,
        scheduler,
        persistence_timeout: timeout,
        persistence_netmask: 32,
        persistence_netmask6: 64,
        max_lifetime: std::time::Duration::ZERO,
        health_check: None,
        mode: lb_ctl::model::services::Mode::Tcp,
        cookie: None,
        forwarding: lb_ctl::model::services::Forwarding::Nat,
        tls: None,
    })?;
    for b in [B1, B2, B3] {
        services.add_backend(
            &id,
            Endpoint {
                addr: b.into(),
                port: 8080,
            },
            1,
        )?;
    }
    Ok(services)
}

/// The balancer's program with a persistent VIP 198.18.0.100:80 over
/// B1..B3:8080, and the XDP_TX floor program, in a FIB namespace.
struct Rig {
    dp: Dataplane,
    floor: Ebpf,
    services: Services,
    _fib: FibNs,
}

impl Rig {
    fn new(name: &str, max_entries: u32) -> Result<Self> {
        let fib = FibNs::new(name)?;
        let mut dp = Dataplane::load(&LoadOptions {
            max_connections: max_entries,
            max_sessions: max_entries,
            // The shipped default (`limits.max_half_open`).
            max_half_open: 131_072.min(max_entries),
            pin_dir: None,
            object: None,
            shared: false,
        })?;
        dp.tables.set_settings(&settings(900_000_000_000))?;
        dp.attach(
            &FibNs::ifaces(),
            lb_ctl::kernel::xdpmode::Mode::Native,
            None,
        )?;
        let services = model(Scheduler::Rr, std::time::Duration::from_secs(3600))?;
        dp.tables.apply(&Services::default(), &services)?;
        let mut floor = Ebpf::load(PASS_PROGRAM)?;
        for name in ["lb_tx", "lb_fresh"] {
            let p: &mut Xdp = floor.program_mut(name).context(name)?.try_into()?;
            p.load()?;
        }
        // d0's receive queue, which the floor's runs name too, was
        // registered by attaching the balancer above.
        Ok(Self {
            dp,
            floor,
            services,
            _fib: fib,
        })
    }

    /// Change the VIP's scheduler (its sessions and connections stay).
    fn scheduler(&mut self, scheduler: Scheduler) -> Result<()> {
        let next = model(scheduler, std::time::Duration::from_secs(3600))?;
        self.dp.tables.apply(&self.services, &next)?;
        self.services = next;
        Ok(())
    }

    fn lb(&self) -> Result<&Xdp> {
        Ok(self.dp.program()?)
    }

    fn floor(&self) -> Result<&Xdp> {
        Ok(self.floor.program("lb_tx").context("lb_tx")?.try_into()?)
    }

    /// Kernel-timed ns per new flow in a stream: `lb_fresh` makes every
    /// repetition the SYN of a connection never seen (`miss`: from a new
    /// client address; else a new port of the pinned client C1) and hands
    /// it to the balancer (`to_lb`) or to the floor program. The half-open
    /// and pending tables are emptied first, as confirmations keep them in
    /// steady state.
    fn fresh(&mut self, miss: bool, to_lb: bool, repeat: u32) -> Result<f64> {
        {
            let mut cfg: aya::maps::Array<_, u32> =
                aya::maps::Array::try_from(self.floor.map_mut("FRESH_CFG").context("FRESH_CFG")?)?;
            cfg.set(0, raw(VIP), 0)?;
            cfg.set(1, u32::from(80u16.to_be()), 0)?;
            cfg.set(2, raw(Ipv4Addr::new(198, 19, 0, 0)), 0)?;
            cfg.set(3, u32::from(miss), 0)?;
        }
        let target = if to_lb {
            self.dp.program()?.fd()?.try_clone()?
        } else {
            self.floor()?.fd()?.try_clone()?
        };
        {
            let mut next: aya::maps::ProgramArray<_> = aya::maps::ProgramArray::try_from(
                self.floor.map_mut("FRESH_NEXT").context("FRESH_NEXT")?,
            )?;
            next.set(0, &target, 0)?;
        }
        let t = &mut self.dp.tables;
        t.clear_ways(&|_| true)?;
        let prog: &Xdp = self
            .floor
            .program("lb_fresh")
            .context("lb_fresh")?
            .try_into()?;
        repeated(prog, &client_frame(C1, 1024), repeat, XDP_TX)
    }

    /// The established fixed points (see the module docs).
    fn install_established(&mut self) -> Result<()> {
        let now = now_ns()?;
        let c = (C1, 40000);
        let entry = |nat: (Ipv4Addr, u16), flags: u8| lb_common::Conn {
            last_seen_ns: now,
            nat_addr: raw(nat.0),
            nat_port: nat.1.to_be(),
            state: ConnState::TCP_ESTABLISHED,
            flags,
            backend_id: 0,
            vip_id: 0,
            session_client: raw(C1),
            backend_gen: 1,
            next_hop: lb_common::NextHop::default(),
        };
        let t = &mut self.dp.tables.conns;
        t.insert(key(c, (VIP, 80)), entry((B1, 8080), conn_flags::SESSION), 0)?;
        t.insert(key(c, (B1, 8080)), entry((VIP, 80), conn_flags::SESSION), 0)?;
        t.insert(key((B1, 8080), c), entry((VIP, 80), conn_flags::REPLY), 0)?;
        t.insert(key((VIP, 80), c), entry((B1, 8080), conn_flags::REPLY), 0)?;
        // The fixed-point halves (client -> B1, VIP -> client) must pass
        // the address filter too, as the real halves do.
        self.dp
            .tables
            .filter_in_addresses(&[B1.into()], &[VIP.into()])?;
        Ok(())
    }
}

/// Kernel-timed ns per repetition of `prog` on `frame`, checking the verdict.
fn repeated(prog: &Xdp, frame: &[u8], repeat: u32, want: u32) -> Result<f64> {
    let (verdict, _, d) = fib::run(prog, frame, repeat)?;
    if verdict != want {
        bail!("expected verdict {want}, got {verdict}");
    }
    Ok(d.as_nanos() as f64)
}

/// Median kernel-timed ns of single runs over `frames`.
fn single(prog: &Xdp, frames: impl Iterator<Item = Vec<u8>>, want: u32) -> Result<f64> {
    let mut v = Vec::new();
    for f in frames {
        let (verdict, _, d) = fib::run(prog, &f, 1)?;
        if verdict != want {
            bail!("expected verdict {want}, got {verdict}");
        }
        v.push(d.as_nanos() as f64);
    }
    Ok(super::report::median(&v))
}

fn client_frame(client: Ipv4Addr, port: u16) -> Vec<u8> {
    Frame::tcp((client, port), (VIP, 80), SYN)
        .macs(fib::C1_MAC, fib::D0_MAC)
        .build()
}

/// Per-packet cost of every path, in rounds.
///
/// # Errors
/// When the program cannot be loaded or run.
pub fn per_packet(plan: &Plan, samples: &mut Samples) -> Result<()> {
    let mut rig = Rig::new("lbb-prog", 1_000_000)?;
    rig.install_established()?;
    // Clients with a live session on B1, and fresh ones for misses.
    let now = now_ns()?;
    rig.dp.tables.sessions.insert(
        SessionKey {
            vip_id: 0,
            client: raw(C1),
        },
        Session {
            last_seen_ns: now,
            backend_id: 0,
            backend_gen: 1,
            created_ns: now,
        },
        0,
    )?;
    let established = Frame::tcp((C1, 40000), (VIP, 80), ACK)
        .macs(fib::C1_MAC, fib::D0_MAC)
        .build();
    let reply = Frame::tcp((B1, 8080), (C1, 40000), ACK)
        .macs(fib::B1_MAC, fib::D0_MAC)
        .build();
    let pass = Frame::tcp((C1, 40001), (Ipv4Addr::new(198, 18, 0, 1), 22), SYN).build();
    let mut port: u32 = 0;
    let mut fresh: u32 = 0;
    for round in 0..=plan.rounds {
        let warm = round == 0;
        let mut put = |name: &str, detail: &str, v: f64| {
            if !warm {
                let unit = if name.starts_with("ns_") {
                    "ns"
                } else {
                    "ratio"
                };
                samples.add(name, unit, detail, v);
            }
        };
        let floor = repeated(rig.floor()?, &established, plan.repeat, XDP_TX)?;
        put(
            "ns_floor_xdp_tx",
            "minimal XDP_TX program, BPF_PROG_TEST_RUN repeat",
            floor,
        );
        let pass_ns = repeated(rig.lb()?, &pass, plan.repeat, XDP_PASS)?;
        put(
            "ns_pass",
            "TCP to a non-VIP address: conntrack miss, VIP miss, XDP_PASS",
            pass_ns,
        );
        let est = repeated(rig.lb()?, &established, plan.repeat, XDP_TX)?;
        put(
            "ns_established",
            "established forward: lookup, DNAT, cached next hop, XDP_TX (fixed point)",
            est,
        );
        put(
            "established_over_floor",
            "ns_established / ns_floor_xdp_tx, per round",
            est / floor,
        );
        let rep = repeated(rig.lb()?, &reply, plan.repeat, XDP_TX)?;
        put(
            "ns_reply",
            "established reply: lookup, SNAT, cached next hop, XDP_TX (fixed point)",
            rep,
        );

        // New flows in a stream (see `Rig::fresh`), against the driver
        // handing them to the floor program.
        let n = plan.repeat.min(50_000);
        let hit = rig.fresh(false, true, n)? - rig.fresh(false, false, n)? + floor;
        put(
            "ns_new_session_hit",
            "new connection of a pinned client: session hit, a half-open way written (stream of fresh SYNs, driver-corrected)",
            hit,
        );
        let miss = rig.fresh(true, true, n)? - rig.fresh(true, false, n)? + floor;
        put(
            "ns_new_session_miss",
            "new client of a round-robin VIP: session and pending misses, the turn, a half-open way and a pending way written (stream of fresh SYNs, driver-corrected)",
            miss,
        );
        // A scheduler that hashes a new client (Maglev; weighted VIPs do
        // the same) needs no pending session.
        rig.scheduler(Scheduler::Maglev)?;
        let miss_hashed = rig.fresh(true, true, n)? - rig.fresh(true, false, n)? + floor;
        rig.scheduler(Scheduler::Rr)?;
        put(
            "ns_new_session_miss_maglev",
            "as ns_new_session_miss on a Maglev VIP: the client's hash replaces the pending session",
            miss_hashed,
        );
        // The same paths once per call (cold: the program's code and maps
        // are fetched anew after each system call); the floor the same way.
        let singles = plan.new_flows;
        let floor1 = single(
            rig.floor()?,
            (0..singles).map(|_| established.clone()),
            XDP_TX,
        )?;
        let frames_hit: Vec<Vec<u8>> = (0..singles)
            .map(|_| {
                port = port.wrapping_add(1);
                client_frame(C1, 1024 + (port % 60000) as u16)
            })
            .collect();
        let hit1 = single(rig.lb()?, frames_hit.into_iter(), XDP_TX)? - floor1 + floor;
        put(
            "ns_new_session_hit_single",
            "as ns_new_session_hit, one BPF_PROG_TEST_RUN call per flow (floor-corrected)",
            hit1,
        );
        let frames_miss: Vec<Vec<u8>> = (0..singles)
            .map(|_| {
                fresh += 1;
                // A client never seen: 198.20.x.y.
                let a = Ipv4Addr::new(198, 20, (fresh >> 8) as u8, fresh as u8);
                client_frame(a, 40000)
            })
            .collect();
        let miss1 = single(rig.lb()?, frames_miss.into_iter(), XDP_TX)? - floor1 + floor;
        put(
            "ns_new_session_miss_single",
            "as ns_new_session_miss, one BPF_PROG_TEST_RUN call per flow (floor-corrected)",
            miss1,
        );
        eprintln!(
            "per-packet round {round}{}: floor {floor:.1} pass {pass_ns:.1} est {est:.1} reply {rep:.1} hit {hit:.1} miss {miss:.1} miss_maglev {miss_hashed:.1} (single calls: hit {hit1:.1} miss {miss1:.1}) ns",
            if warm { " (warm-up)" } else { "" }
        );
    }
    Ok(())
}

/// New clients' SYNs through the balancer (`Rig::fresh`) for `time`,
/// nothing else: a steady new-flow stream for a profiler.
pub fn new_flows_for(time: std::time::Duration) -> Result<()> {
    let mut rig = Rig::new("lbb-newflows", 1_000_000)?;
    let start = std::time::Instant::now();
    let mut costs = Vec::new();
    while start.elapsed() < time {
        costs.push(rig.fresh(true, true, 50_000)?);
    }
    costs.sort_by(f64::total_cmp);
    eprintln!(
        "{} streams of 50 000 new clients' SYNs: median {:.0} ns each, driver included",
        costs.len(),
        costs[costs.len() / 2]
    );
    Ok(())
}

/// How long building a Maglev table of 65 537 slots takes for 100
/// backends (median of 11 builds).
pub fn maglev(samples: &mut Samples) {
    let backends: Vec<(u32, u32, String)> = (0..100u32)
        .map(|i| (i, 1, format!("198.18.{}.{}:80", 4 + i / 250, 1 + i % 250)))
        .collect();
    let mut times: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            let table = lb_ctl::model::sched::build_maglev(&backends, lb_common::MAGLEV_SIZE);
            std::hint::black_box(table);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!(
        "maglev: building a {}-slot table for 100 backends takes {median:.2} ms",
        lb_common::MAGLEV_SIZE
    );
    samples.add(
        "maglev_build_100_ms",
        "ms",
        "building a 65 537-slot Maglev table for 100 backends (median of 11)",
        median,
    );
}

/// Established cost with 1k .. `max` entries in both tables, the sweeper
/// over them, and memory per connection.
///
/// # Errors
/// When the program cannot be loaded or run.
pub fn scale(plan: &Plan, samples: &mut Samples) -> Result<()> {
    // Headroom: a preallocated hash map may refuse its last few entries.
    let mut rig = Rig::new("lbb-scale", plan.max_entries + 1024)?;
    rig.install_established()?;
    let established = Frame::tcp((C1, 40000), (VIP, 80), ACK)
        .macs(fib::C1_MAC, fib::D0_MAC)
        .build();
    let now = now_ns()?;
    let mut filled: u32 = 0;
    let sizes: Vec<(u32, &str)> = [
        (1_000, "1k"),
        (10_000, "10k"),
        (100_000, "100k"),
        (1_000_000, "1m"),
    ]
    .into_iter()
    .filter(|(n, _)| *n <= plan.max_entries)
    .collect();
    for (size, label) in &sizes {
        let t = Instant::now();
        while filled < *size {
            let i = filled;
            let k = FlowKey {
                src_addr: raw(Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8)),
                dst_addr: raw(VIP),
                src_port: (1024 + (i >> 16) as u16).to_be(),
                dst_port: 80u16.to_be(),
                proto: 6,
                _pad: [0; 3],
            };
            let c = lb_common::Conn {
                last_seen_ns: now,
                nat_addr: raw(B2),
                nat_port: 8080u16.to_be(),
                state: ConnState::TCP_ESTABLISHED,
                flags: 0,
                backend_id: 1,
                vip_id: 0,
                session_client: k.src_addr,
                backend_gen: 1,
                next_hop: lb_common::NextHop::default(),
            };
            rig.dp
                .tables
                .conns
                .insert(k, c, 0)
                .with_context(|| format!("filling CONNS at {i}"))?;
            rig.dp
                .tables
                .sessions
                .insert(
                    SessionKey {
                        vip_id: 0,
                        client: i.wrapping_add(0x0100_0000),
                    },
                    Session {
                        last_seen_ns: now,
                        backend_id: 1,
                        backend_gen: 1,
                        created_ns: now,
                    },
                    0,
                )
                .with_context(|| format!("filling SESSIONS at {i}"))?;
            filled += 1;
        }
        eprintln!(
            "scale: filled {filled} entries in each table ({:.1?})",
            t.elapsed()
        );
        for round in 0..=plan.rounds {
            let floor = repeated(rig.floor()?, &established, plan.repeat, XDP_TX)?;
            let est = repeated(rig.lb()?, &established, plan.repeat, XDP_TX)?;
            if round > 0 {
                samples.add(
                    &format!("ns_established_{label}"),
                    "ns",
                    &format!("established forward with {size} entries in the connection and persistence tables"),
                    est,
                );
                samples.add(
                    &format!("floor_at_{label}"),
                    "ns",
                    "XDP_TX floor measured alongside",
                    floor,
                );
            }
        }
    }
    let (Some(first), Some(last)) = (sizes.first(), sizes.last()) else {
        return Ok(());
    };
    let ratio = samples.median(&format!("ns_established_{}", last.1))
        / samples.median(&format!("ns_established_{}", first.1));
    samples.add(
        &format!("established_{}_over_{}", last.1, first.1),
        "ratio",
        "median established cost at the largest size over the smallest",
        ratio,
    );

    // Memory per connection, from the map's own accounting (fdinfo memlock).
    if let Some((memlock, max_entries)) = conns_memlock((plan.max_entries + 1024).saturating_mul(2))
    {
        samples.add(
            "bytes_per_connection",
            "bytes",
            "CONNS memlock / connections it holds (2 entries each, preallocated)",
            memlock as f64 / (f64::from(max_entries) / 2.0),
        );
    }

    // The sweeper: first with nothing expired (a steady-state pass), then
    // with everything expired (the connection table's established timeout
    // set to 1 ns; the sessions' VIP gone).
    let mut scan = None;
    let (_, scan_cpu) = timed(|| {
        scan = Some(rig.dp.tables.sweep(&rig.services)?);
        Ok(())
    })?;
    let scan = scan.unwrap_or_default();
    samples.add(
        "sweep_scan_1m_ms",
        "ms",
        &format!(
            "sweep pass over the connection table, {} entries, none expired (wall)",
            scan.connections.scanned
        ),
        scan.connections_elapsed.as_secs_f64() * 1e3,
    );
    samples.add(
        "sweep_scan_cpu_ms",
        "ms",
        "CPU time (user+system) of that pass over both tables",
        scan_cpu,
    );
    rig.dp.tables.set_settings(&settings(1))?;
    let mut report = None;
    let (wall, cpu) = timed(|| {
        report = Some(rig.dp.tables.sweep(&Services::default())?);
        Ok(())
    })?;
    let r = report.unwrap_or_default();
    samples.add(
        "sweep_1m_ms",
        "ms",
        &format!(
            "sweep of the connection table deleting {} expired of {} entries (wall)",
            r.connections.deleted, r.connections.scanned
        ),
        r.connections_elapsed.as_secs_f64() * 1e3,
    );
    samples.add(
        "sweep_both_tables_ms",
        "ms",
        &format!(
            "whole sweep deleting {} connection entries and {} sessions (wall)",
            r.connections.deleted, r.sessions.deleted
        ),
        wall,
    );
    samples.add(
        "sweep_both_tables_cpu_ms",
        "ms",
        "CPU time (user+system) of that whole sweep",
        cpu,
    );
    Ok(())
}

fn cpu_ms() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    u.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
        t(u.user_time()) + t(u.system_time())
    })
}

fn timed(
    f: impl FnOnce() -> Result<(), lb_ctl::kernel::error::DataplaneError>,
) -> Result<(f64, f64)> {
    let c0 = cpu_ms();
    let t = Instant::now();
    f()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, cpu_ms() - c0))
}

/// (memlock, max_entries) of this process's connection table.
fn conns_memlock(max_entries: u32) -> Option<(u64, u32)> {
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>().ok()))
                .flatten()
        };
        if field("map_type:") == Some(1)
            && field("key_size:") == Some(16)
            && field("value_size:") == Some(std::mem::size_of::<lb_common::Conn>() as u64)
            && field("max_entries:") == Some(u64::from(max_entries))
        {
            return field("memlock:").map(|m| (m, max_entries));
        }
    }
    None
}
