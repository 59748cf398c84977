//! The `ecmp` lab: two balancer hosts behind a router that spreads the VIP
//! over both by ECMP (a multipath route, layer-4 hash), learnt by BGP: BIRD 2
//! runs on the router (AS 65000) and on both hosts (AS 65001), each host
//! exporting the addresses of its announce interface (`lb-vips`), which
//! `lb-ctl` fills (`announce:`); three backends set up for direct server
//! return on a segment both balancers reach.
//!
//! ```text
//!  c1 c2 c3 ── brC ── r ══ eth0 [lb-a] eth1 ──┐
//!                     ║                        ├─ brB ── b1 b2 b3 b4 (VIP on lo)
//!                     ╚═ eth0 [lb-b] eth1 ─────┤    (replies via r)
//!                                              └─ redis
//! ```
//! Clients 198.18.3.11.. (gateway r, 198.18.3.1: the VIP, 198.18.0.100, is
//! not on their segment); r–lb-a 198.18.2.0/30,
//! r–lb-b 198.18.2.4/30; the backend segment 198.18.1.0/24 (r .1, lb-a .2,
//! lb-b .3, Redis .10, backends .11..; b4 serves but is in no config until
//! a test adds it). Both balancers run `lb-ctl attach eth0 eth1` with the
//! same config: a `dsr` VIP with the `maglev` scheduler, so both send every
//! client to the same backend, and a client whose packets move to the
//! other host keeps its backend. With `cluster:` (store [`REDIS`]) they
//! also share sessions through Redis, which runs in its own namespace.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    lab::{bin_dir, wait_for, Reply, VIP},
    netns::{delete_all, in_ns, ip, sh},
};

/// The VIP's port (the backends serve on it: direct server return keeps
/// the destination).
pub const PORT: u16 = 8080;

/// The Redis server's address (`redis://198.18.1.10:6379`).
pub const REDIS: &str = "redis://198.18.1.10:6379";

/// The node names the balancers are started with (`--node`).
pub const NODES: [&str; 2] = ["lb-a", "lb-b"];
pub struct EcmpLab {
    pub prefix: String,
    pub workdir: PathBuf,
    /// The two balancer hosts' namespaces.
    pub balancers: [String; 2],
    pub router: String,
    pub clients: Vec<(String, Ipv4Addr)>,
    children: Vec<Child>,
    controllers: Vec<Option<Child>>,
    redis: Option<Child>,
    /// BIRD on the router and on the two hosts.
    birds: Vec<Child>,
    /// Start the controllers with `--keep-state`.
    pub keep_state: bool,
}

/// The interface the hosts' BIRD exports (`announce.interface`).
pub const ANNOUNCE_IFACE: &str = "lb-vips";

/// The `announce:` block every config of this lab carries: BIRD on each
/// host exports what lb-ctl puts on [`ANNOUNCE_IFACE`]. No start delay by
/// default (the tests of the delay set their own).
pub const ANNOUNCE: &str = "announce: { interface: lb-vips, delay: 0s, drain: 1s }\n";

/// The balancers (0: lb-a, 1: lb-b) the route to the VIP in the router's
/// namespace `router` leads to now; empty without a route.
#[must_use]
pub fn next_hops_of(router: &str) -> Vec<usize> {
    let out = in_ns(router, &["ip", "route", "show", &format!("{VIP}/32")])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    [("198.18.2.2", 0), ("198.18.2.6", 1)]
        .into_iter()
        .filter(|(gw, _)| out.contains(&format!("via {gw} ")))
        .map(|(_, i)| i)
        .collect()
}

/// The router's BGP sessions with the hosts, by host (`birdc disable`).
const PEERS: [&str; 2] = ["lba", "lbb"];

impl EcmpLab {
    /// Build the lab with `clients` clients and three backends.
    ///
    /// # Errors
    /// When a namespace, link or server cannot be set up.
    pub fn up(prefix: &str, clients: usize) -> Result<Self> {
        delete_all(&format!("{prefix}-"));
        let workdir = std::env::temp_dir().join(format!("{prefix}-lab"));
        for i in 0..2 {
            let _ = sh(&[
                "umount",
                &workdir.join(format!("bpffs{i}")).to_string_lossy(),
            ]);
        }
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)?;
        let mut lab = Self {
            prefix: prefix.into(),
            workdir,
            balancers: [format!("{prefix}-lba"), format!("{prefix}-lbb")],
            router: format!("{prefix}-r"),
            clients: (0..clients)
                .map(|i| {
                    (
                        format!("{prefix}-c{}", i + 1),
                        Ipv4Addr::new(198, 18, 3, 11 + i as u8),
                    )
                })
                .collect(),
            children: Vec::new(),
            controllers: vec![None, None],
            redis: None,
            birds: Vec::new(),
            keep_state: false,
        };
        lab.build().context("building the ecmp lab")?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let p = self.prefix.clone();
        let sw = format!("{p}-sw");
        let r = self.router.clone();
        for ns in [&sw, &r, &self.balancers[0], &self.balancers[1]] {
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
        }
        for br in ["brC", "brB"] {
            ip(&format!("-n {sw} link add {br} type bridge"))?;
            ip(&format!("-n {sw} link set {br} up"))?;
        }
        // The router: clients' gateway, ECMP over the balancers, and the
        // backends' gateway (their replies go straight to the clients).
        ip(&format!(
            "link add eth0 netns {r} type veth peer name r-c netns {sw}"
        ))?;
        ip(&format!("-n {sw} link set r-c master brC up"))?;
        ip(&format!("-n {r} addr add 198.18.3.1/24 dev eth0"))?;
        ip(&format!(
            "link add eth3 netns {r} type veth peer name r-b netns {sw}"
        ))?;
        ip(&format!("-n {sw} link set r-b master brB up"))?;
        ip(&format!("-n {r} addr add 198.18.1.1/24 dev eth3"))?;
        for (i, lb) in self.balancers.iter().enumerate() {
            let rif = format!("eth{}", i + 1);
            let (raddr, laddr) = if i == 0 {
                ("198.18.2.1/30", "198.18.2.2/30")
            } else {
                ("198.18.2.5/30", "198.18.2.6/30")
            };
            ip(&format!(
                "link add {rif} netns {r} type veth peer name eth0 netns {lb}"
            ))?;
            ip(&format!("-n {r} addr add {raddr} dev {rif}"))?;
            ip(&format!("-n {lb} addr add {laddr} dev eth0"))?;
            ip(&format!("-n {r} link set {rif} up"))?;
            ip(&format!("-n {lb} link set eth0 up"))?;
            ip(&format!(
                "link add eth1 netns {lb} type veth peer name lb{i} netns {sw}"
            ))?;
            ip(&format!("-n {sw} link set lb{i} master brB up"))?;
            ip(&format!("-n {lb} addr add 198.18.1.{}/24 dev eth1", 2 + i))?;
            ip(&format!("-n {lb} link set eth1 up"))?;
            ip(&format!("-n {lb} addr add {VIP}/32 dev lo"))?;
            let gw = if i == 0 { "198.18.2.1" } else { "198.18.2.5" };
            ip(&format!("-n {lb} route add default via {gw}"))?;
        }
        for dev in ["eth0", "eth3"] {
            ip(&format!("-n {r} link set {dev} up"))?;
        }
        in_ns(
            &r,
            &[
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv4/fib_multipath_hash_policy; \
                 for i in all default eth3; do echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done",
            ],
        )?;
        self.start_birds()?;
        for (ns, addr) in self.clients.clone() {
            let name = ns.trim_start_matches(&format!("{p}-")).to_string();
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!(
                "link add eth0 netns {ns} type veth peer name {name} netns {sw}"
            ))?;
            ip(&format!("-n {sw} link set {name} master brC up"))?;
            ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
            ip(&format!("-n {ns} link set eth0 up"))?;
            ip(&format!("-n {ns} route add default via 198.18.3.1"))?;
        }
        let redis = format!("{p}-redis");
        ip(&format!("netns add {redis}"))?;
        ip(&format!("-n {redis} link set lo up"))?;
        ip(&format!(
            "link add eth0 netns {redis} type veth peer name redis netns {sw}"
        ))?;
        ip(&format!("-n {sw} link set redis master brB up"))?;
        ip(&format!("-n {redis} addr add 198.18.1.10/24 dev eth0"))?;
        ip(&format!("-n {redis} link set eth0 up"))?;
        let node = bin_dir().join("lb-lab-node");
        for i in 0..4u8 {
            let ns = format!("{p}-b{}", i + 1);
            let addr = Ipv4Addr::new(198, 18, 1, 11 + i);
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!(
                "link add eth0 netns {ns} type veth peer name b{} netns {sw}",
                i + 1
            ))?;
            ip(&format!("-n {sw} link set b{} master brB up", i + 1))?;
            ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
            ip(&format!("-n {ns} link set eth0 up"))?;
            ip(&format!("-n {ns} route add default via 198.18.1.1"))?;
            // Direct server return: the VIP on lo, never answered or
            // announced by ARP.
            ip(&format!("-n {ns} addr add {VIP}/32 dev lo"))?;
            in_ns(
                &ns,
                &[
                    "sh",
                    "-c",
                    "for i in all eth0; do echo 1 > /proc/sys/net/ipv4/conf/$i/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$i/arp_announce; done",
                ],
            )?;
            let child = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&node)
                .args(["serve", "--name", &format!("b{}", i + 1), "--port"])
                .arg(PORT.to_string())
                .arg("--sick-file")
                .arg(self.sick_file(usize::from(i)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.children.push(child);
            wait_for(Duration::from_secs(5), || {
                in_ns(&ns, &["ss", "-ltn", &format!("sport = :{PORT}")])
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
            })?;
        }
        Ok(())
    }

    /// BIRD on the router (ECMP over what both hosts announce) and on
    /// each host (exporting the announce interface's addresses).
    fn start_birds(&mut self) -> Result<()> {
        let router = format!(
            "router id 198.18.2.1;\n\
             protocol device {{ }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
             template bgp host {{\n  local as 65000;\n  hold time 6; keepalive time 2; connect retry time 1;\n  \
             ipv4 {{ import all; export none; }};\n}}\n\
             protocol bgp {} from host {{ neighbor 198.18.2.2 as 65001; }}\n\
             protocol bgp {} from host {{ neighbor 198.18.2.6 as 65001; }}\n",
            PEERS[0], PEERS[1]
        );
        self.start_bird(&self.router.clone(), "r", &router)?;
        for (i, ns) in self.balancers.clone().iter().enumerate() {
            let (me, peer) = if i == 0 {
                ("198.18.2.2", "198.18.2.1")
            } else {
                ("198.18.2.6", "198.18.2.5")
            };
            let host = format!(
                "router id {me};\n\
                 protocol device {{ }}\n\
                 protocol direct vips {{ ipv4; interface \"{ANNOUNCE_IFACE}\"; }}\n\
                 protocol bgp uplink {{\n  local as 65001; neighbor {peer} as 65000;\n  \
                 hold time 6; keepalive time 2; connect retry time 1;\n  \
                 ipv4 {{ import none; export where proto = \"vips\"; }};\n}}\n"
            );
            self.start_bird(ns, &format!("h{i}"), &host)?;
        }
        Ok(())
    }

    fn bird_socket(&self, name: &str) -> PathBuf {
        self.workdir.join(format!("bird-{name}.ctl"))
    }

    fn start_bird(&mut self, ns: &str, name: &str, config: &str) -> Result<()> {
        let conf = self.workdir.join(format!("bird-{name}.conf"));
        std::fs::write(&conf, config)?;
        // `bird -p`: parse the config only, saying what is wrong.
        sh(&["bird", "-p", "-c", conf.to_str().unwrap_or_default()])
            .with_context(|| format!("bird refuses {}", conf.display()))?;
        let socket = self.bird_socket(name);
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bird (scripts/setup.sh installs bird2)")?;
        self.birds.push(child);
        wait_for(Duration::from_secs(10), || socket.exists())
            .with_context(|| format!("bird in {ns} did not start: {}", conf.display()))
    }

    /// `birdc` on the router.
    fn birdc(&self, args: &[&str]) -> Result<String> {
        let socket = self.bird_socket("r");
        let mut v = vec!["birdc", "-s", socket.to_str().unwrap_or_default()];
        v.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&sh(&v)?.stdout).into_owned())
    }

    /// The balancers (0: lb-a, 1: lb-b) the router's route to the VIP
    /// leads to now; empty without a route.
    #[must_use]
    pub fn next_hops(&self) -> Vec<usize> {
        next_hops_of(&self.router)
    }

    /// Wait until the router's route to the VIP leads to exactly `hosts`.
    ///
    /// # Errors
    /// When it does not within `within`, saying what the router has.
    pub fn wait_next_hops(&self, hosts: &[usize], within: Duration) -> Result<()> {
        wait_for(within, || self.next_hops() == hosts).with_context(|| {
            format!(
                "the router's route to {VIP} leads to {:?}, not {hosts:?}; BGP: {}",
                self.next_hops(),
                self.birdc(&["show", "protocols"]).unwrap_or_default()
            )
        })
    }

    /// Take the VIP from these balancers only (0: lb-a, 1: lb-b), as an
    /// operator does at the router: its BGP sessions with these are
    /// enabled and, once their paths are in, those with the others
    /// disabled (`birdc enable`/`disable`); returns when the router's route
    /// leads to exactly them (both hosts announce the VIP).
    ///
    /// # Errors
    /// When `birdc` fails or the route does not follow.
    pub fn route_via(&self, hosts: &[usize]) -> Result<()> {
        // Make before break: the new paths first, then the old ones go.
        for &i in hosts {
            self.birdc(&["enable", PEERS[i]])?;
        }
        wait_for(Duration::from_secs(30), || {
            let now = self.next_hops();
            hosts.iter().all(|h| now.contains(h))
        })
        .with_context(|| format!("the router did not learn the VIP from {hosts:?}"))?;
        for i in (0..PEERS.len()).filter(|i| !hosts.contains(i)) {
            self.birdc(&["disable", PEERS[i]])?;
        }
        self.wait_next_hops(hosts, Duration::from_secs(30))
    }

    /// Start Redis (empty, nothing saved to disk) in its namespace.
    ///
    /// # Errors
    /// When it does not come up.
    pub fn start_redis(&mut self) -> Result<()> {
        self.start_redis_with(&[])
    }

    /// [`EcmpLab::start_redis`] with more `redis-server` arguments (a
    /// password, TLS: the listening port stays 6379).
    ///
    /// # Errors
    /// When it does not come up.
    pub fn start_redis_with(&mut self, extra: &[&str]) -> Result<()> {
        let ns = format!("{}-redis", self.prefix);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "redis-server",
                "--bind",
                "198.18.1.10",
            ])
            .args(["--port", "6379", "--save", "", "--appendonly", "no"])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/setup.sh installs it)")?;
        self.redis = Some(child);
        wait_for(Duration::from_secs(10), || {
            in_ns(&ns, &["ss", "-ltn", "sport = :6379"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
        })
    }

    /// Kill Redis (`kill -9`): what it held is gone.
    pub fn kill_redis(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Balancer `i`'s log so far.
    #[must_use]
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.workdir.join(format!("lb-{i}.log"))).unwrap_or_default()
    }

    fn socket(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/run/lb/{}-{i}.sock", self.prefix))
    }

    /// Start `lb-ctl attach eth0 eth1` on both balancers with `config`.
    ///
    /// # Errors
    /// When a controller does not come up.
    pub fn start_balancers(&mut self, config: &str) -> Result<()> {
        if !config.contains("announce:") {
            bail!("an ecmp lab config announces its VIPs (see ANNOUNCE): {config}");
        }
        std::fs::write(self.workdir.join("lb.yaml"), config)?;
        for i in 0..2 {
            self.start_balancer(i)?;
        }
        // Both announce the VIP (its backends are up at the start).
        self.wait_next_hops(&[0, 1], Duration::from_secs(30))
    }

    /// Start (or restart, taking over its data path) the controller of
    /// balancer `i` with the config `start_balancers` wrote.
    ///
    /// # Errors
    /// When it does not come up.
    pub fn start_balancer(&mut self, i: usize) -> Result<()> {
        let path = self.workdir.join("lb.yaml");
        let ctl = bin_dir().join("lb-ctl");
        let bpffs = self.workdir.join(format!("bpffs{i}"));
        if !std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .contains(&format!(" {} bpf ", bpffs.display()))
        {
            std::fs::create_dir_all(&bpffs)?;
            sh(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
        }
        // Appended to: a restarted controller's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.workdir.join(format!("lb-{i}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.balancers[i]])
            .arg(&ctl)
            .arg("--socket")
            .arg(self.socket(i))
            .args(["attach", "eth0", "eth1", "--node", NODES[i], "--config"])
            .arg(&path)
            .arg("--bpffs")
            .arg(&bpffs)
            .args(self.keep_state.then_some("--keep-state"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.controllers[i] = Some(child);
        let socket = self.socket(i);
        if wait_for(Duration::from_secs(30), || {
            crate::netns::sh(&[
                &ctl.to_string_lossy(),
                "--socket",
                &socket.to_string_lossy(),
                "vip",
                "list",
            ])
            .is_ok()
        })
        .is_err()
        {
            bail!(
                "lb-ctl on {} did not come up: {}",
                self.balancers[i],
                self.log(i)
            );
        }
        Ok(())
    }

    /// Stop the controller of balancer `i` with SIGTERM (it withdraws its
    /// VIPs, drains, detaches) and wait until it has exited.
    ///
    /// # Errors
    /// When it does not exit within a minute.
    pub fn stop_balancer(&mut self, i: usize) -> Result<()> {
        self.signal_balancer(i, nix::sys::signal::Signal::SIGTERM);
        self.wait_balancer(i)
    }

    /// Send `signal` to the controller of balancer `i`.
    pub fn signal_balancer(&self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.controllers[i] {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// Wait until the controller of balancer `i` has exited.
    ///
    /// # Errors
    /// When it does not exit within a minute.
    pub fn wait_balancer(&mut self, i: usize) -> Result<()> {
        let Some(mut c) = self.controllers[i].take() else {
            return Ok(());
        };
        let exited = wait_for(Duration::from_secs(60), || {
            c.try_wait().is_ok_and(|s| s.is_some())
        });
        if exited.is_err() {
            let _ = c.kill();
            let _ = c.wait();
            bail!(
                "lb-ctl on {} did not stop: {}",
                self.balancers[i],
                self.log(i)
            );
        }
        Ok(())
    }

    /// Rewrite the config both controllers were started with (`reload`
    /// makes them read it).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_config(&self, config: &str) -> Result<()> {
        Ok(std::fs::write(self.workdir.join("lb.yaml"), config)?)
    }

    /// `lb-ctl detach eth0 eth1` for balancer `i` (its controller stopped).
    ///
    /// # Errors
    /// With lb-ctl's message.
    pub fn detach(&self, i: usize) -> Result<String> {
        let bpffs = self.workdir.join(format!("bpffs{i}"));
        let out = in_ns(
            &self.balancers[i],
            &[
                bin_dir().join("lb-ctl").to_str().unwrap_or_default(),
                "--socket",
                self.socket(i).to_str().unwrap_or_default(),
                "detach",
                "eth0",
                "eth1",
                "--bpffs",
                bpffs.to_str().unwrap_or_default(),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// While this file exists, backend `b` (0: b1) answers `GET /health`
    /// with 500.
    #[must_use]
    pub fn sick_file(&self, b: usize) -> PathBuf {
        self.workdir.join(format!("sick-b{}", b + 1))
    }

    /// Make backend `b` (0: b1) fail its HTTP health checks, or pass them.
    ///
    /// # Errors
    /// When the file cannot be written or removed.
    pub fn set_sick(&self, b: usize, sick: bool) -> Result<()> {
        let path = self.sick_file(b);
        if sick {
            std::fs::write(path, "")?;
        } else if path.exists() {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// `kill -9` the controller of balancer `i`: its data path goes on.
    pub fn kill_balancer(&mut self, i: usize) {
        if let Some(mut c) = self.controllers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `lb-ctl ARGS` against balancer `i`.
    ///
    /// # Errors
    /// With lb-ctl's message.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let ctl = bin_dir().join("lb-ctl");
        let socket = self.socket(i);
        let mut v = vec![
            ctl.to_str().unwrap_or_default(),
            "--socket",
            socket.to_str().unwrap_or_default(),
        ];
        v.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&sh(&v)?.stdout).into_owned())
    }

    /// New connections balancer `i` scheduled so far.
    #[must_use]
    pub fn new_connections(&self, i: usize) -> u64 {
        self.ctl(i, &["stats"])
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("lb_datapath_events_total{reason=\"new_conn\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// `lb-lab-node http` from client `c` with `args`, running on its own
    /// (read its output with `wait_with_output`).
    ///
    /// # Errors
    /// When the client cannot start.
    pub fn spawn_http(&self, c: usize, args: &[&str]) -> Result<Child> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.clients[c].0])
            .arg(bin_dir().join("lb-lab-node"))
            .args(["http", &format!("{VIP}:{PORT}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// `count` HTTP requests from client `c`, a new connection each.
    ///
    /// # Errors
    /// When the client cannot run.
    pub fn http(&self, c: usize, count: u32) -> Result<Vec<Reply>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.clients[c].0])
            .arg(bin_dir().join("lb-lab-node"))
            .args(["http", &format!("{VIP}:{PORT}"), "--count"])
            .arg(count.to_string())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Reply::parse_line)
            .collect())
    }
}

impl Drop for EcmpLab {
    fn drop(&mut self) {
        for c in self.controllers.iter_mut().filter_map(Option::take) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let mut c = c;
            let _ = c.wait();
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_redis();
        for mut c in self.birds.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        delete_all(&format!("{}-", self.prefix));
        for i in 0..2 {
            let _ = sh(&[
                "umount",
                &self.workdir.join(format!("bpffs{i}")).to_string_lossy(),
            ]);
            let _ = std::fs::remove_file(self.socket(i));
        }
    }
}
