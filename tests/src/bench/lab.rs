//! Throughput and connection rate through the veth lab in its point-to-point
//! layout (the client wired to the balancer's eth0, one backend host with the
//! three backend addresses wired to eth1): this balancer against nftables
//! DNAT, HAProxy in TCP mode and plain routing, with the same client command
//! for every variant, alternating within each round.

use std::{net::Ipv4Addr, process::Command, thread, time::Duration};

use anyhow::{bail, Context as _, Result};

use super::{report::Samples, Plan};
use crate::{
    lab::{bin_dir, hold_xdp, Lab, Layout, VIP},
    netns::in_ns,
};

/// UDP port of the packet-rate test (backends drop it in prerouting).
const SINK_PORT: u16 = 9;
/// TCP port nginx serves on the backends, and the VIP's port.
const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;
const FLOWS: u32 = 32;

const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 1, 11),
    Ipv4Addr::new(198, 18, 1, 12),
    Ipv4Addr::new(198, 18, 1, 13),
];

/// How traffic crosses the balancer host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// lb's XDP program.
    Xdp,
    /// nftables DNAT in prerouting (with conntrack).
    Nftables,
    /// HAProxy in TCP mode on the balancer host.
    Haproxy,
    /// No balancing: the client talks to one backend, routed by the kernel.
    Direct,
    /// lb's layer-7 proxy (`mode: http`) with cookie persistence.
    LbHttp,
    /// HAProxy `mode http` with `cookie SRVID insert indirect nocache`.
    HaproxyHttp,
    /// [`Variant::LbHttp`] behind TLS (`tls:`, port 443).
    LbHttps,
    /// [`Variant::HaproxyHttp`] behind TLS (`bind ... ssl crt`, the same
    /// certificate).
    HaproxyHttps,
}

impl Variant {
    const fn name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Nftables => "nftables",
            Self::Haproxy => "haproxy",
            Self::Direct => "direct",
            Self::LbHttp => "lb_http",
            Self::HaproxyHttp => "haproxy_http",
            Self::LbHttps => "lb_https",
            Self::HaproxyHttps => "haproxy_https",
        }
    }
}

struct BenchLab {
    lab: Lab,
    active: Option<Variant>,
    /// Helpers that hold XDP programs: `lb_pass` on the client's switch
    /// port and `lb_sink` on the backends (switched layout).
    helpers: Vec<std::process::Child>,
    /// `lb_pass` on the balancer's eth0 while the kernel balances
    /// (point-to-point layout): a veth device accepts the generator's XDP_TX
    /// frames only when it runs XDP.
    pass: Option<std::process::Child>,
    lb_mac: String,
    /// The `limits:` line of the balancer's config.
    xdp_limits: &'static str,
}

/// The balancer's limits for the packet and connection rates.
const LIMITS: &str = "limits: { max_connections: 1000000, max_sessions: 100000 }";
/// The balancer's limits under the flood: a small connection table, as in
/// the measurement that opened the work on floods.
const FLOOD_LIMITS: &str =
    "limits: { max_connections: 4096, max_sessions: 4096, max_half_open: 16384 }";

impl Drop for BenchLab {
    fn drop(&mut self) {
        for mut h in self.helpers.drain(..).chain(self.pass.take()) {
            let _ = h.kill();
            let _ = h.wait();
        }
        for b in &self.lab.backends {
            if let Ok(p) =
                std::fs::read_to_string(self.lab.workdir.join(format!("nginx-{}.pid", b.name)))
            {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
        }
    }
}

/// The backends as config YAML lines (with `port`) or as an nft map body.
fn backends_list(port: Option<u16>) -> String {
    match port {
        Some(p) => BACKENDS
            .iter()
            .map(|b| format!("      - {{ address: {b}, port: {p} }}\n"))
            .collect(),
        None => BACKENDS
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{i} : {b}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

impl BenchLab {
    /// The lab for the packet rate ([`Layout::TwoArm`]: client and backends
    /// behind bridges) or the connection rate ([`Layout::PointToPoint`]).
    fn up(layout: Layout) -> Result<Self> {
        let prefix = if layout == Layout::PointToPoint {
            "lbbp"
        } else {
            "lbbs"
        };
        Self::up_with(layout, prefix, LIMITS)
    }

    fn up_with(layout: Layout, prefix: &str, xdp_limits: &'static str) -> Result<Self> {
        let hosts = if layout == Layout::PointToPoint { 1 } else { 3 };
        let lab = Lab::up(prefix, layout, 1, hosts)?;
        let lb = lab.balancer.ns.clone();
        let node = bin_dir().join("lb-lab-node");
        let mut helpers = Vec::new();
        if layout == Layout::PointToPoint {
            // One backend host answers on all three backend addresses.
            for addr in &BACKENDS[1..] {
                crate::netns::ip(&format!(
                    "-n {} addr add {addr}/24 dev eth0",
                    lab.backends[0].ns
                ))?;
            }
        } else {
            let sw = format!("{}-sw", lab.prefix);
            let port = &lab.clients[0].name;
            // Receive Packet Steering on the client's switch port: all that
            // follows the generator (bridges, balancer, backends) runs on
            // CPU 1; the generator is pinned to CPU 0.
            in_ns(
                &sw,
                &[
                    "sh",
                    "-c",
                    &format!("echo 2 > /sys/class/net/{port}/queues/rx-0/rps_cpus"),
                ],
            )?;
            helpers.push(hold_xdp(
                Command::new("ip")
                    .args(["netns", "exec", &sw])
                    .arg(&node)
                    .args(["xdp-pass", port]),
            )?);
            for b in &lab.backends {
                helpers.push(hold_xdp(
                    Command::new("ip")
                        .args(["netns", "exec", &b.ns])
                        .arg(&node)
                        .args(["xdp-pass", "--sink", "eth0"]),
                )?);
            }
        }
        in_ns(&lb, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        let c = &lab.clients[0].ns;
        in_ns(c, &["sh", "-c", "echo 1024 65535 > /proc/sys/net/ipv4/ip_local_port_range; echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse"])?;
        // No TIME_WAIT sockets: with a new connection per request, those left
        // by one variant would slow the next one down.
        in_ns(
            &lb,
            &["sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_max_tw_buckets"],
        )?;
        let dir = lab.workdir.display().to_string();
        for b in &lab.backends {
            in_ns(
                &b.ns,
                &["sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_max_tw_buckets"],
            )?;
            let conf = lab.workdir.join(format!("nginx-{}.conf", b.name));
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 1;\npid {dir}/nginx-{n}.pid;\nerror_log {dir}/nginx-{n}.err;\ndaemon on;\n\
                     events {{ worker_connections 16384; }}\n\
                     http {{ access_log off; client_body_temp_path {dir}/tmp-{n}; proxy_temp_path {dir}/tmp-{n};\n\
                     fastcgi_temp_path {dir}/tmp-{n}; uwsgi_temp_path {dir}/tmp-{n}; scgi_temp_path {dir}/tmp-{n};\n\
                     server {{ listen {HTTP_PORT} backlog=8192 reuseport; keepalive_requests 1000000;\n\
                     location / {{ return 200 \"$server_addr\\n\"; }} }} }}\n",
                    n = b.name
                ),
            )?;
            in_ns(&b.ns, &["nginx", "-c", &conf.to_string_lossy()])
                .context("starting nginx on a backend")?;
        }
        let mac = in_ns(&lb, &["cat", "/sys/class/net/eth0/address"])?;
        let lb_mac = String::from_utf8_lossy(&mac.stdout).trim().to_string();
        Ok(Self {
            lab,
            active: None,
            helpers,
            pass: None,
            lb_mac,
            xdp_limits,
        })
    }

    fn lb_ns(&self) -> String {
        self.lab.balancer.ns.clone()
    }

    /// Switch the balancer host to `v`, undoing the previous variant.
    fn switch(&mut self, v: Variant) -> Result<()> {
        if self.active == Some(v) {
            return Ok(());
        }
        self.switch_inner(v)?;
        if self.lab.layout != Layout::PointToPoint {
            return Ok(());
        }
        // Threaded NAPI on the balancer's eth0 (its receive path exists once
        // an XDP program is attached), the thread pinned to CPU 1: the
        // generator and wrk (pinned to CPU 0) fill the device's ring, and the
        // balancer (XDP, or the kernel's stack) drains it on the other core.
        let before = napi_threads();
        in_ns(
            &self.lb_ns(),
            &[
                "sh",
                "-c",
                "echo 0 > /sys/class/net/eth0/threaded; echo 1 > /sys/class/net/eth0/threaded",
            ],
        )?;
        thread::sleep(Duration::from_millis(100));
        for pid in napi_threads().into_iter().filter(|p| !before.contains(p)) {
            crate::netns::sh(&["taskset", "-pc", "1", &pid])?;
        }
        Ok(())
    }

    fn switch_inner(&mut self, v: Variant) -> Result<()> {
        match self.active.take() {
            Some(Variant::Xdp) => {
                self.lab.stop_balancer()?;
            }
            Some(Variant::Nftables) => {
                in_ns(&self.lb_ns(), &["nft", "delete table ip lbbench"])?;
            }
            Some(Variant::LbHttp | Variant::LbHttps) => {
                self.lab.stop_balancer()?;
            }
            Some(Variant::Haproxy | Variant::HaproxyHttp | Variant::HaproxyHttps) => {
                let pid = std::fs::read_to_string(self.lab.workdir.join("haproxy.pid"))?;
                for p in pid.split_whitespace() {
                    let _ = Command::new("kill").arg(p).status();
                }
                thread::sleep(Duration::from_millis(300));
            }
            Some(Variant::Direct) | None => {}
        }
        if let Some(mut h) = self.pass.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        if !matches!(v, Variant::Xdp | Variant::LbHttp | Variant::LbHttps)
            && self.lab.layout == Layout::PointToPoint
        {
            let node = bin_dir().join("lb-lab-node");
            self.pass = Some(crate::lab::hold_xdp(
                Command::new("ip")
                    .args(["netns", "exec", &self.lb_ns()])
                    .arg(node)
                    .args(["xdp-pass", "eth0"]),
            )?);
        }
        match v {
            Variant::Xdp => {
                let config = format!(
                    "vips:\n  - address: {VIP}\n    port: {SINK_PORT}\n    protocol: udp\n    backends:\n{}\
                     \n  - address: {VIP}\n    port: {HTTP_PORT}\n    protocol: tcp\n    persistence: {{ timeout: 300s, netmask: 32 }}\n    backends:\n{}\
                     {}\n",
                    backends_list(Some(SINK_PORT)),
                    backends_list(Some(HTTP_PORT)),
                    self.xdp_limits,
                );
                self.lab.start_balancer(&config)?;
            }
            Variant::Nftables => {
                let map = backends_list(None);
                in_ns(&self.lb_ns(), &["nft", &format!(
                    "add table ip lbbench; add chain ip lbbench pre {{ type nat hook prerouting priority dstnat; policy accept; }}; \
                     add rule ip lbbench pre ip daddr {VIP} udp dport {SINK_PORT} dnat to numgen inc mod 3 map {{ {map} }}; \
                     add rule ip lbbench pre ip daddr {VIP} tcp dport {HTTP_PORT} dnat to jhash ip saddr mod 3 map {{ {map} }}"
                )])?;
            }
            Variant::LbHttp | Variant::LbHttps => {
                let (port, tls) = if v == Variant::LbHttps {
                    let c = self.certificate()?;
                    (
                        HTTPS_PORT,
                        format!(
                            "    tls: {{ certificates: [ {{ cert: {}, key: {} }} ] }}\n",
                            c.cert.display(),
                            c.key.display()
                        ),
                    )
                } else {
                    (HTTP_PORT, String::new())
                };
                let config = format!(
                    "vips:\n  - address: {VIP}\n    port: {port}\n    mode: http\n    persistence:\n      cookie: {{ name: SRVID }}\n{tls}    backends:\n{}\
                     http:\n  cookie_key_file: {}\n",
                    backends_list(Some(HTTP_PORT)),
                    self.lab.workdir.join("cookie.key").display()
                );
                self.lab.start_balancer(&config)?;
            }
            Variant::Haproxy | Variant::HaproxyHttp | Variant::HaproxyHttps => {
                let cfg = self.lab.workdir.join("haproxy.cfg");
                let http = v != Variant::Haproxy;
                let bind = if v == Variant::HaproxyHttps {
                    // HAProxy takes the key in the certificate's file.
                    let c = self.certificate()?;
                    let both = self.lab.workdir.join("haproxy-cert.pem");
                    std::fs::write(
                        &both,
                        std::fs::read_to_string(&c.cert)? + &std::fs::read_to_string(&c.key)?,
                    )?;
                    format!(
                        "{VIP}:{HTTPS_PORT} ssl crt {} alpn h2,http/1.1",
                        both.display()
                    )
                } else {
                    format!("{VIP}:{HTTP_PORT}")
                };
                let servers: String = BACKENDS
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let cookie = if http {
                            format!(" cookie b{}", i + 1)
                        } else {
                            String::new()
                        };
                        format!("  server b{} {b}:{HTTP_PORT}{cookie}\n", i + 1)
                    })
                    .collect();
                let (mode, balance) = if http {
                    (
                        "http\n  option http-keep-alive",
                        "roundrobin\n  cookie SRVID insert indirect nocache",
                    )
                } else {
                    ("tcp", "source")
                };
                std::fs::write(
                    &cfg,
                    format!(
                        "global\n  maxconn 8000\n  nbthread 1\ndefaults\n  mode {mode}\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                         frontend f\n  bind {bind}\n  default_backend b\nbackend b\n  balance {balance}\n{servers}"
                    ),
                )?;
                let pid = self.lab.workdir.join("haproxy.pid");
                in_ns(
                    &self.lb_ns(),
                    &[
                        "haproxy",
                        "-D",
                        "-f",
                        &cfg.to_string_lossy(),
                        "-p",
                        &pid.to_string_lossy(),
                    ],
                )?;
                thread::sleep(Duration::from_millis(300));
            }
            Variant::Direct => {}
        }
        self.active = Some(v);
        Ok(())
    }

    /// The certificate of the HTTPS variants (made by a test CA at first
    /// use; ECDSA P-256).
    fn certificate(&self) -> Result<crate::pki::ServerCert> {
        let dir = self.lab.workdir.join("pki");
        let cert = crate::pki::ServerCert {
            cert: dir.join("shop.pem"),
            key: dir.join("shop.key"),
        };
        if !cert.cert.exists() {
            crate::pki::TestCa::new(&dir)?.issue("shop", &["shop.test"], "lb bench")?;
        }
        Ok(cert)
    }

    /// Packet-rate datagrams the backends received (and dropped in XDP).
    fn backend_rx(&self) -> Result<u64> {
        let mut sum = 0;
        for b in &self.lab.backends {
            let out = in_ns(&b.ns, &["ethtool", "-S", "eth0"])?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut parts = line.split(':');
                let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if name.trim().starts_with("rx_queue_") && name.trim().ends_with("_xdp_drops") {
                    sum += value.trim().parse::<u64>()?;
                }
            }
        }
        Ok(sum)
    }
}

/// Process ids of the kernel's NAPI threads.
fn napi_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.starts_with("napi/").then_some(pid)
        })
        .collect()
}

/// Busy and total CPU time of the machine, in ns.
fn cpu_busy_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    let hz = 100u64; // USER_HZ
    Ok(busy * 1_000_000_000 / hz)
}

/// Packet rate: one UDP generator, counted where the backends receive.
///
/// # Errors
/// When the lab or a variant cannot be set up.
pub fn run(plan: &Plan, samples: &mut Samples, only: Option<Part>) -> Result<()> {
    if only.is_none_or(|p| p == Part::Packets) {
        packet_rate(plan, samples)?;
    }
    if only.is_none_or(|p| p == Part::Connections) {
        connection_rate(plan, samples)?;
    }
    if only.is_none_or(|p| p == Part::Http) {
        http_rate(plan, samples)?;
    }
    if only.is_none_or(|p| p == Part::Flood) {
        flood(plan, samples)?;
    }
    Ok(())
}

/// The lab's scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// UDP packet rate (two-arm lab).
    Packets,
    /// TCP connection and request rates (point-to-point lab).
    Connections,
    /// HTTP and HTTPS rates through the layer-7 proxies (point-to-point
    /// lab).
    Http,
    /// A spoofed SYN flood (point-to-point lab).
    Flood,
}

/// Legitimate connections while a spoofed SYN flood runs, lb against
/// nftables (conntrack), in the point-to-point lab: the flood (raw socket,
/// sources from 198.19.0.0/17, paced, bounded by time) and the legitimate
/// client share the client host. A fresh lab for every run, so that no variant inherits the last
/// flood's state (conntrack entries live in the balancer's namespace).
fn flood(plan: &Plan, samples: &mut Samples) -> Result<()> {
    for round in 0..=plan.rounds {
        let warm = round == 0;
        for v in [Variant::Xdp, Variant::Nftables] {
            let mut bl = BenchLab::up_with(Layout::PointToPoint, "lbbf", FLOOD_LIMITS)?;
            // The spoofed sources are routable, as on the Internet: the
            // backends' SYN-ACKs go back out towards the client side (whose
            // host drops them), instead of dying in the balancer's stack.
            crate::netns::ip(&format!(
                "-n {} route add 198.19.0.0/16 via {}",
                bl.lb_ns(),
                bl.lab.clients[0].addr
            ))?;
            bl.switch(v)?;
            let client = bl.lab.clients[0].ns.clone();
            let flood = Command::new("ip")
                .args(["netns", "exec", &client, "taskset", "-c", "0"])
                .arg(bin_dir().join("lb-lab-node"))
                .args(["syn-flood", &format!("{VIP}:{HTTP_PORT}")])
                .args(["--sources", "198.19.0.0/17", "--count", "100000000"])
                .args(["--seconds", &(plan.seconds + 1).to_string()])
                .args(["--rate", &FLOOD_RATE.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("starting the SYN flood")?;
            thread::sleep(Duration::from_millis(500));
            // Sequential new connections, each given 1 s, for the flood's
            // duration.
            let legit = in_ns(
                &client,
                &[
                    "taskset",
                    "-c",
                    "0",
                    &bin_dir().join("lb-lab-node").to_string_lossy(),
                    "http",
                    &format!("{VIP}:{HTTP_PORT}"),
                    "--count",
                    "1000000",
                    "--timeout-ms",
                    "1000",
                    "--for-ms",
                    &(plan.seconds * 1000).to_string(),
                ],
            )?;
            let out = flood.wait_with_output()?;
            let lines = String::from_utf8_lossy(&legit.stdout).to_string();
            let ok = lines.lines().filter(|l| l.starts_with("ok ")).count() as f64;
            let total = lines.lines().count() as f64;
            let ratio = ok / total.max(1.0);
            let cps = ok / plan.seconds as f64;
            let report = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let mut words = report.split_whitespace();
            let sent: f64 = words.nth(1).and_then(|x| x.parse().ok()).unwrap_or(0.0);
            let secs: f64 = words.nth(1).and_then(|x| x.parse().ok()).unwrap_or(1.0);
            eprintln!(
                "flood round {round} {}: legit {cps:.0} conn/s, {ok} of {total} succeeded ({ratio:.4}), flood {:.0} SYN/s",
                v.name(),
                sent / secs
            );
            if !warm {
                let n = v.name();
                samples.add(
                    &format!("flood_legit_cps_{n}"),
                    "connections/s",
                    &format!("sequential new connections (1 s timeout each) during a {FLOOD_RATE} SYN/s spoofed flood, via {n}"),
                    cps,
                );
                samples.add(
                    &format!("flood_legit_success_ratio_{n}"),
                    "ratio",
                    &format!(
                        "succeeded / attempted legitimate connections during the flood, via {n}"
                    ),
                    ratio,
                );
                samples.add(
                    &format!("flood_syn_rate_{n}"),
                    "SYN/s",
                    &format!("spoofed SYNs sent (raw socket, paced to {FLOOD_RATE}/s), via {n}"),
                    sent / secs,
                );
            }
            drop(bl);
        }
    }
    Ok(())
}

/// The flood's rate: that of the measurement that opened the work on
/// floods (137 000 SYN/s from one raw-socket sender).
const FLOOD_RATE: u64 = 80_000;

/// UDP packet rate through the switched two-arm lab.
fn packet_rate(plan: &Plan, samples: &mut Samples) -> Result<()> {
    let mut bl = BenchLab::up(Layout::TwoArm)?;
    let node = bin_dir().join("lb-lab-node").to_string_lossy().into_owned();
    let client = bl.lab.clients[0].ns.clone();
    let src = bl.lab.clients[0].addr.to_string();
    for round in 0..=plan.rounds {
        let warm = round == 0;
        for v in [Variant::Xdp, Variant::Nftables, Variant::Direct] {
            bl.switch(v)?;
            let dst = if v == Variant::Direct {
                BACKENDS[0]
            } else {
                VIP
            };
            let rx0 = bl.backend_rx()?;
            let cpu0 = cpu_busy_ns()?;
            let out = in_ns(
                &client,
                &[
                    "taskset",
                    "-c",
                    "0",
                    &node,
                    "xdp-flood",
                    "--iface",
                    "eth0",
                    "--dst-mac",
                    &bl.lb_mac,
                    "--src",
                    &src,
                    "--dst",
                    &format!("{dst}:{SINK_PORT}"),
                    "--flows",
                    &FLOWS.to_string(),
                    "--seconds",
                    &plan.seconds.to_string(),
                ],
            )?;
            let cpu = cpu_busy_ns()? - cpu0;
            thread::sleep(Duration::from_millis(200));
            let rx = bl.backend_rx()? - rx0;
            let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let secs: f64 = sent
                .rsplit(' ')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(plan.seconds as f64);
            let pps = rx as f64 / secs;
            eprintln!(
                "pps round {round} {}: {pps:.0} pps delivered ({sent}), {:.0} CPU ns/packet",
                v.name(),
                cpu as f64 / rx.max(1) as f64
            );
            if !warm {
                let name = if v == Variant::Direct {
                    "route"
                } else {
                    v.name()
                };
                samples.add(
                    &format!("pps_{name}"),
                    "packets/s",
                    &format!(
                        "UDP 64-byte frames, {FLOWS} flows, delivered to the backends ({name})"
                    ),
                    pps,
                );
                samples.add(
                    &format!("cpu_ns_per_packet_{name}"),
                    "ns",
                    "machine CPU time (both cores, generator included) per delivered packet",
                    cpu as f64 / rx.max(1) as f64,
                );
            }
        }
    }
    Ok(())
}

/// TCP connection rate and latency with wrk, point-to-point lab.
fn connection_rate(plan: &Plan, samples: &mut Samples) -> Result<()> {
    rates(
        plan,
        samples,
        &[
            Variant::Direct,
            Variant::Xdp,
            Variant::Nftables,
            Variant::Haproxy,
        ],
    )
}

/// HTTP and HTTPS request and connection rates through the layer-7
/// proxies (lb `mode: http`, HAProxy `mode http`), point-to-point lab.
fn http_rate(plan: &Plan, samples: &mut Samples) -> Result<()> {
    rates(
        plan,
        samples,
        &[
            Variant::LbHttp,
            Variant::HaproxyHttp,
            Variant::LbHttps,
            Variant::HaproxyHttps,
        ],
    )
}

/// wrk through each of `variants` in turn, a new connection per request
/// and kept alive, alternating within each round.
fn rates(plan: &Plan, samples: &mut Samples, variants: &[Variant]) -> Result<()> {
    let mut bl = BenchLab::up(Layout::PointToPoint)?;
    let client = bl.lab.clients[0].ns.clone();
    for round in 0..=plan.rounds {
        let warm = round == 0;
        for &v in variants {
            bl.switch(v)?;
            let target = match v {
                Variant::Direct => format!("http://{}:{HTTP_PORT}/", BACKENDS[0]),
                Variant::LbHttps | Variant::HaproxyHttps => format!("https://{VIP}:{HTTPS_PORT}/"),
                _ => format!("http://{VIP}:{HTTP_PORT}/"),
            };
            for (mode, close) in [("close", true), ("keepalive", false)] {
                let w = wrk(&client, &target, close, plan.seconds)?;
                eprintln!(
                    "tcp round {round} {} {mode}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms errors {}",
                    v.name(),
                    w.rps,
                    w.p50_ms,
                    w.p99_ms,
                    w.errors
                );
                if !warm {
                    record(samples, v, close, &w);
                }
            }
        }
    }
    bl.switch(Variant::Direct)?;
    Ok(())
}

/// The samples of one wrk run through `v`.
fn record(samples: &mut Samples, v: Variant, close: bool, w: &Wrk) {
    let (mode, what) = if close {
        ("close", "new connection per request (Connection: close)")
    } else {
        ("keepalive", "keep-alive")
    };
    let n = v.name();
    let (name, unit) = if close {
        (format!("cps_{n}"), "connections/s")
    } else {
        (format!("rps_keepalive_{n}"), "requests/s")
    };
    let detail = format!("wrk -t1 -c{WRK_CONNS}, {what}, via {n}");
    samples.add(&name, unit, &detail, w.rps);
    samples.add(
        &format!("p50_ms_{mode}_{n}"),
        "ms",
        &format!("wrk latency p50, {what}, via {n}"),
        w.p50_ms,
    );
    samples.add(
        &format!("p99_ms_{mode}_{n}"),
        "ms",
        &format!("wrk latency p99, {what}, via {n}"),
        w.p99_ms,
    );
    samples.add(
        &format!("errors_{mode}_{n}"),
        "count",
        &format!("wrk socket errors and non-2xx, {what}, via {n}"),
        w.errors as f64,
    );
}

const WRK_CONNS: u32 = 16;

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn wrk(ns: &str, url: &str, close: bool, seconds: u64) -> Result<Wrk> {
    wrk_with(ns, url, close, seconds, WRK_CONNS, None)
}

fn wrk_with(
    ns: &str,
    url: &str,
    close: bool,
    seconds: u64,
    conns: u32,
    timeout: Option<&str>,
) -> Result<Wrk> {
    let mut args = vec![
        "taskset".to_string(),
        "-c".into(),
        "0".into(),
        "wrk".into(),
        "-t1".into(),
        format!("-c{conns}"),
        format!("-d{seconds}s"),
        "--latency".into(),
    ];
    if let Some(t) = timeout {
        args.extend(["--timeout".into(), t.into()]);
    }
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(url.to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_ns(ns, &refs)?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse()?,
            ["50%", v] => w.p50_ms = ms(v).unwrap_or(f64::NAN),
            ["99%", v] => w.p99_ms = ms(v).unwrap_or(f64::NAN),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", v] => w.errors += v.parse::<u64>()?,
            _ => {}
        }
    }
    if !w.rps.is_finite() {
        bail!("wrk printed no request rate:\n{text}");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 2s test @ http://198.18.0.100/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us   5.00ms   80.00%\n  Latency Distribution\n     50%  1.02ms\n     75%    1.20ms\n     90%    1.50ms\n     99%  850.00us\n  28000 requests in 2.00s, 3.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  14000.50\nTransfer/sec:      1.50MB\n";
        let w = parse_wrk(text).unwrap();
        assert!((w.rps - 14000.5).abs() < 1e-9);
        assert!((w.p50_ms - 1.02).abs() < 1e-9);
        assert!((w.p99_ms - 0.85).abs() < 1e-9);
        assert_eq!(w.errors, 3);
    }
}
