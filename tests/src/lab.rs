//! The veth lab: network namespaces joined by bridges in a switch namespace.
//!
//! ```text
//!  one-arm                                two-arm
//!  c1 c2 ──┐                              c1 c2 ── br0 ── eth0 [lb] eth1 ── br1 ── b1 b2 b3
//!  b1 b2 b3 ├─ br0 (switch) ── eth0 [lb]
//! ```
//! Clients 198.18.0.11.. (gateway 198.18.0.1), backends 198.18.1.11..
//! (gateway 198.18.1.1), VIP 198.18.0.100 on the balancer's loopback (its
//! kernel answers ARP for it). Every backend runs `lb-lab-node serve`,
//! answering HTTP and UDP on port 8080 with its name. All addresses are
//! from the benchmarking range 198.18.0.0/15. Namespaces are named
//! `<prefix>-<host>`; a new lab first deletes whatever an interrupted run
//! with the same prefix left behind, and dropping a lab tears it down.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::netns::{delete_all, in_ns, ip, sh};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The VIP's IPv6 address in the switched layouts (dual stack).
pub const VIP6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x100);

/// The lab's IPv6 address of a host with the IPv4 address `a`:
/// 198.18.X.Y is 2001:db8:18:X::Y (X and Y written alike), so
/// 198.18.1.11 is 2001:db8:18:1::11.
#[must_use]
pub fn v6_of(a: Ipv4Addr) -> std::net::Ipv6Addr {
    let [_, _, x, y] = a.octets();
    let hex = |n: u8| u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x18, hex(x), 0, 0, 0, hex(y))
}
pub const BACKEND_PORT: u16 = 8080;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Clients and backends behind the balancer's one interface.
    OneArm,
    /// One-arm as a user builds it by hand, with nothing prepared for XDP:
    /// no program on the balancer's veth peer, the hosts' transmit checksum
    /// offload left on (their default), the VIP configured as a /32 on the
    /// balancer's eth0. The balancer must cope on its own (`--xdp-mode
    /// auto` picks generic mode here).
    Plain,
    /// Clients on one interface, backends on another.
    TwoArm,
    /// No switch: one client wired straight to the balancer's eth0 and one
    /// backend host straight to its eth1 (the benchmark's packet-rate
    /// layout, so that the balancer's cost is not hidden behind bridges).
    /// The client's eth0 runs `lb_pass` and the backend's `lb_sink`.
    PointToPoint,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// Its IPv6 address (switched layouts; see [`v6_of`]).
    #[must_use]
    pub fn addr6(&self) -> std::net::Ipv6Addr {
        v6_of(self.addr)
    }
}

/// One request's outcome as printed by `lb-lab-node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok {
        /// Name of the backend that answered.
        backend: String,
        /// The client address the backend saw.
        seen: Option<SocketAddr>,
        /// Where the reply came from, as the client saw it.
        from: Option<SocketAddr>,
    },
    Err(String),
}

impl Reply {
    #[must_use]
    pub fn backend(&self) -> Option<&str> {
        match self {
            Self::Ok { backend, .. } => Some(backend),
            Self::Err(_) => None,
        }
    }

    /// Parse one line of `lb-lab-node`'s output.
    #[must_use]
    pub fn parse_line(line: &str) -> Self {
        Self::parse(line)
    }

    fn parse(line: &str) -> Self {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ok") => {
                let backend = words.next().unwrap_or_default().to_string();
                let mut seen = None;
                let mut from = None;
                for w in words {
                    if let Some(v) = w.strip_prefix("seen=") {
                        seen = v.parse().ok();
                    } else if let Some(v) = w.strip_prefix("from=") {
                        from = v.parse().ok();
                    }
                }
                Self::Ok {
                    backend,
                    seen,
                    from,
                }
            }
            _ => Self::Err(line.to_string()),
        }
    }
}

/// Where the workspace's binaries are: next to the running executable
/// (`target/<profile>/`), or one level up from a test's `deps/`.
#[must_use]
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

fn bin(name: &str) -> Result<String> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (`cargo build --bins`)",
            path.display()
        );
    }
    Ok(path.to_string_lossy().into_owned())
}

pub struct Lab {
    pub prefix: String,
    pub layout: Layout,
    pub balancer: Host,
    pub clients: Vec<Host>,
    pub backends: Vec<Host>,
    pub socket: PathBuf,
    pub workdir: PathBuf,
    servers: Vec<Child>,
    /// The `lb-lab-node xdp-pass` helpers on the balancer's veth peers.
    xdp_helpers: Vec<Child>,
    /// `RUST_LOG` for the controller (default: its own, info).
    pub log_filter: Option<String>,
    /// More environment for the controller (`NOTIFY_SOCKET`, …).
    pub env: Vec<(String, String)>,
    controller: Option<Child>,
}

impl Lab {
    /// Build the lab and start the backend servers.
    ///
    /// # Errors
    /// When a namespace, link or server cannot be set up; whatever was made
    /// is torn down again.
    pub fn up(prefix: &str, layout: Layout, clients: usize, backends: usize) -> Result<Self> {
        delete_all(&format!("{prefix}-"));
        let workdir = std::env::temp_dir().join(format!("{prefix}-lab"));
        let _ = sh(&["umount", &workdir.join("bpffs").to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(&workdir)?;
        let host = |name: String, addr| Host {
            ns: format!("{prefix}-{name}"),
            name,
            addr,
        };
        let mut lab = Self {
            prefix: prefix.to_string(),
            layout,
            balancer: host("lb".into(), Ipv4Addr::new(198, 18, 0, 1)),
            clients: (0..clients)
                .map(|i| {
                    host(
                        format!("c{}", i + 1),
                        Ipv4Addr::new(198, 18, 0, 11 + i as u8),
                    )
                })
                .collect(),
            backends: (0..backends)
                .map(|i| {
                    host(
                        format!("b{}", i + 1),
                        Ipv4Addr::new(198, 18, 1, 11 + i as u8),
                    )
                })
                .collect(),
            socket: PathBuf::from(format!("/run/lb/{prefix}.sock")),
            workdir,
            servers: Vec::new(),
            xdp_helpers: Vec::new(),
            log_filter: None,
            env: Vec::new(),
            controller: None,
        };
        lab.build()
            .with_context(|| format!("building the {prefix} lab"))?;
        Ok(lab)
    }

    pub(crate) fn sw(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// A bpffs of the lab's own, outside `/sys` (which `ip netns exec`
    /// remounts): pinned attachments and tables outlive each controller
    /// process, as they do on a host.
    #[must_use]
    pub fn bpffs(&self) -> PathBuf {
        self.workdir.join("bpffs")
    }

    fn build(&mut self) -> Result<()> {
        let node = bin("lb-lab-node")?;
        let bpffs = self.bpffs();
        std::fs::create_dir_all(&bpffs)?;
        sh(&["mount", "-t", "bpf", "bpf", &bpffs.to_string_lossy()])?;
        if self.layout == Layout::PointToPoint {
            self.build_point_to_point(&node)?;
        } else {
            self.build_switched(&node)?;
        }
        self.start_servers(&node)
    }

    fn build_point_to_point(&mut self, node: &str) -> Result<()> {
        if self.clients.len() != 1 || self.backends.len() != 1 {
            bail!("the point-to-point layout has one client and one backend host");
        }
        let lb = self.balancer.ns.clone();
        let (c, b) = (self.clients[0].clone(), self.backends[0].clone());
        for ns in [&lb, &c.ns, &b.ns] {
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
        }
        for (lb_if, host, gw) in [("eth0", &c, "198.18.0.1"), ("eth1", &b, "198.18.1.1")] {
            ip(&format!(
                "link add {lb_if} netns {lb} type veth peer name eth0 netns {}",
                host.ns
            ))?;
            ip(&format!("-n {lb} link set {lb_if} up"))?;
            ip(&format!(
                "-n {} addr add {}/24 dev eth0",
                host.ns, host.addr
            ))?;
            ip(&format!("-n {} link set eth0 up", host.ns))?;
            in_ns(&host.ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
            ip(&format!("-n {} route add default via {gw}", host.ns))?;
        }
        ip(&format!("-n {lb} addr add 198.18.0.1/24 dev eth0"))?;
        ip(&format!("-n {lb} addr add 198.18.1.1/24 dev eth1"))?;
        ip(&format!("-n {lb} addr add {VIP}/32 dev lo"))?;
        let pass =
            hold_xdp(Command::new("ip").args(["netns", "exec", &c.ns, node, "xdp-pass", "eth0"]))?;
        self.xdp_helpers.push(pass);
        let sink = hold_xdp(
            Command::new("ip").args(["netns", "exec", &b.ns, node, "xdp-pass", "--sink", "eth0"]),
        )?;
        self.xdp_helpers.push(sink);
        Ok(())
    }

    fn build_switched(&mut self, node: &str) -> Result<()> {
        let sw = self.sw();
        let lb = self.balancer.ns.clone();
        for ns in [&sw, &lb] {
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
        }
        let one_arm = matches!(self.layout, Layout::OneArm | Layout::Plain);
        let bridges: &[&str] = if one_arm { &["br0"] } else { &["br0", "br1"] };
        for br in bridges {
            ip(&format!("-n {sw} link add {br} type bridge"))?;
            ip(&format!("-n {sw} link set {br} up"))?;
        }
        let backend_br = bridges[bridges.len() - 1];
        // The balancer's arms. Their switch-side peers run an XDP program
        // that passes everything, so that frames the balancer sends with
        // XDP_TX or redirect are accepted there.
        let arms: Vec<(&str, &str, &str)> = match self.layout {
            Layout::OneArm | Layout::Plain => vec![("eth0", "lb0", "br0")],
            Layout::TwoArm | Layout::PointToPoint => {
                vec![("eth0", "lb0", "br0"), ("eth1", "lb1", "br1")]
            }
        };
        for (inside, outside, br) in &arms {
            ip(&format!(
                "link add {inside} netns {lb} type veth peer name {outside} netns {sw}"
            ))?;
            ip(&format!("-n {sw} link set {outside} master {br} up"))?;
            ip(&format!("-n {lb} link set {inside} up"))?;
        }
        let (client_if, backend_if) = if one_arm {
            ("eth0", "eth0")
        } else {
            ("eth0", "eth1")
        };
        ip(&format!("-n {lb} addr add 198.18.0.1/24 dev {client_if}"))?;
        ip(&format!("-n {lb} addr add 198.18.1.1/24 dev {backend_if}"))?;
        let plain = self.layout == Layout::Plain;
        let vip_dev = if plain { "eth0" } else { "lo" };
        ip(&format!("-n {lb} addr add {VIP}/32 dev {vip_dev}"))?;
        // Dual stack: the same plan in 2001:db8:18::/56 (no duplicate
        // address detection, so that the addresses are usable at once).
        ip(&format!(
            "-n {lb} -6 addr add 2001:db8:18::1/64 dev {client_if} nodad"
        ))?;
        ip(&format!(
            "-n {lb} -6 addr add 2001:db8:18:1::1/64 dev {backend_if} nodad"
        ))?;
        // On the clients' interface in every layout: the kernel answers
        // neighbour solicitations only for the interface's own addresses.
        ip(&format!(
            "-n {lb} -6 addr add {VIP6}/128 dev {client_if} nodad"
        ))?;
        let hosts: Vec<(Host, &str, Ipv4Addr)> = self
            .clients
            .iter()
            .map(|h| (h.clone(), "br0", Ipv4Addr::new(198, 18, 0, 1)))
            .chain(
                self.backends
                    .iter()
                    .map(|h| (h.clone(), backend_br, Ipv4Addr::new(198, 18, 1, 1))),
            )
            .collect();
        for (h, br, gw) in hosts {
            let ns = &h.ns;
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!(
                "link add eth0 netns {ns} type veth peer name {} netns {sw}",
                h.name
            ))?;
            ip(&format!("-n {sw} link set {} master {br} up", h.name))?;
            ip(&format!("-n {ns} addr add {}/24 dev eth0", h.addr))?;
            ip(&format!("-n {ns} link set eth0 up"))?;
            // Checksums computed by the sender, not left to offload: a
            // veth frame from a local socket carries only a partial
            // checksum, which native XDP (on the balancer) cannot see as
            // such. The plain layout keeps the default.
            if !plain {
                in_ns(ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
            }
            ip(&format!("-n {ns} route add default via {gw}"))?;
            ip(&format!(
                "-n {ns} -6 addr add {}/64 dev eth0 nodad",
                h.addr6()
            ))?;
            ip(&format!("-n {ns} -6 route add default via {}", v6_of(gw)))?;
        }
        if !plain {
            let pass = hold_xdp(
                Command::new("ip")
                    .args(["netns", "exec", &sw, node, "xdp-pass"])
                    .args(arms.iter().map(|a| a.1)),
            )?;
            self.xdp_helpers.push(pass);
        }
        Ok(())
    }

    fn start_servers(&mut self, _node: &str) -> Result<()> {
        for i in 0..self.backends.len() {
            self.start_backend(i)?;
        }
        Ok(())
    }

    /// Start backend `i`'s server (`lb-lab-node serve`) and wait until it
    /// listens. Its `/health` answers 500 while [`Lab::set_sick`] says so.
    ///
    /// # Errors
    /// When it does not come up within 5 s.
    pub fn start_backend(&mut self, i: usize) -> Result<()> {
        let node = bin("lb-lab-node")?;
        let b = &self.backends[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.workdir.join(format!("{}.log", b.name)))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &b.ns, &node, "serve", "--name", &b.name])
            .arg("--port")
            .arg(BACKEND_PORT.to_string())
            .arg("--sick-file")
            .arg(self.workdir.join(format!("{}.sick", b.name)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a backend server")?;
        if i < self.servers.len() {
            self.servers[i] = child;
        } else {
            self.servers.push(child);
        }
        wait_for(Duration::from_secs(5), || {
            in_ns(&b.ns, &["ss", "-ltn", &format!("sport = :{BACKEND_PORT}")])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LISTEN"))
        })
        .with_context(|| format!("backend {} did not start", b.name))
    }

    /// `kill -9` backend `i`'s server and wait until it is gone.
    ///
    /// # Errors
    /// When it cannot be killed.
    pub fn kill_backend(&mut self, i: usize) -> Result<()> {
        self.servers[i].kill()?;
        self.servers[i].wait()?;
        Ok(())
    }

    /// Make backend `i`'s `/health` answer 500 (`sick`) or 200.
    ///
    /// # Errors
    /// When the marker file cannot be written or removed.
    pub fn set_sick(&self, i: usize, sick: bool) -> Result<()> {
        let path = self.workdir.join(format!("{}.sick", self.backends[i].name));
        if sick {
            std::fs::write(path, "sick\n")?;
        } else if path.exists() {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }

    /// The balancer's interfaces.
    #[must_use]
    pub fn balancer_ifaces(&self) -> Vec<&'static str> {
        match self.layout {
            Layout::OneArm | Layout::Plain => vec!["eth0"],
            Layout::TwoArm | Layout::PointToPoint => vec!["eth0", "eth1"],
        }
    }

    /// Start `lb-ctl attach` in the balancer namespace with this config and
    /// wait until its control socket answers.
    ///
    /// # Errors
    /// When the controller does not come up (its log is in the error).
    pub fn start_balancer(&mut self, config_yaml: &str) -> Result<()> {
        self.start_balancer_with(config_yaml, &[])
    }

    /// [`Lab::start_balancer`] with extra `lb-ctl attach` arguments.
    ///
    /// # Errors
    /// When the controller does not come up (its log is in the error).
    pub fn start_balancer_with(&mut self, config_yaml: &str, extra: &[&str]) -> Result<()> {
        let config = self.workdir.join("lb.yaml");
        std::fs::write(&config, config_yaml)?;
        let log_path = self.workdir.join("lb-ctl.log");
        let log = std::fs::File::create(&log_path)?;
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.balancer.ns.clone(),
            bin("lb-ctl")?,
            "--socket".into(),
            self.socket.to_string_lossy().into_owned(),
            "attach".into(),
        ];
        args.extend(self.balancer_ifaces().iter().map(|s| (*s).to_string()));
        args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
        args.extend([
            "--bpffs".into(),
            self.bpffs().to_string_lossy().into_owned(),
        ]);
        args.extend(extra.iter().map(|s| (*s).to_string()));
        let mut cmd = Command::new("ip");
        cmd.args(&args).stdout(Stdio::null()).stderr(log);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(filter) = &self.log_filter {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd.spawn()?;
        self.controller = Some(child);
        let up = wait_for(Duration::from_secs(30), || {
            if let Some(c) = self.controller.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return true;
                }
            }
            self.ctl(&["vip", "list"]).is_ok()
        });
        if up.is_err() || self.ctl(&["vip", "list"]).is_err() {
            bail!("lb-ctl attach did not come up:\n{}", self.controller_log());
        }
        Ok(())
    }

    /// Kill the XDP helpers on the balancer's veth peers: from now on they
    /// drop what the balancer sends them in native mode, as a peer that
    /// never had an XDP program does.
    pub fn stop_xdp_helpers(&mut self) {
        for mut h in self.xdp_helpers.drain(..) {
            let _ = h.kill();
            let _ = h.wait();
        }
    }

    /// The controller's log so far.
    #[must_use]
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.workdir.join("lb-ctl.log")).unwrap_or_default()
    }

    /// Stop the controller with SIGINT, as an operator would, and return its
    /// exit status.
    ///
    /// # Errors
    /// When it does not stop within 10 s.
    pub fn stop_balancer(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.controller.take() else {
            bail!("no controller running")
        };
        // `ip netns exec` execs, so the child's pid is the controller's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("lb-ctl did not stop within 10 s of SIGINT");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Set the backends up for direct server return, as the README says a
    /// user does: the VIP on their loopback, `arp_ignore=1` and
    /// `arp_announce=2` so that they neither answer nor announce it, and a
    /// route to the clients' segment that does not go through the
    /// balancer (one-arm: the clients are on the same bridge).
    ///
    /// # Errors
    /// When a command fails.
    pub fn prepare_dsr_backends(&self) -> Result<()> {
        for b in &self.backends {
            ip(&format!("-n {} addr add {VIP}/32 dev lo", b.ns))?;
            in_ns(
                &b.ns,
                &[
                    "sh",
                    "-c",
                    "for i in all eth0; do echo 1 > /proc/sys/net/ipv4/conf/$i/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$i/arp_announce; done",
                ],
            )?;
            ip(&format!("-n {} route add 198.18.0.0/24 dev eth0", b.ns))?;
        }
        Ok(())
    }

    /// Send `signal` to the controller.
    ///
    /// # Errors
    /// When no controller runs.
    pub fn signal_balancer(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let Some(child) = self.controller.as_ref() else {
            bail!("no controller running")
        };
        // `ip netns exec` execs, so the child's pid is the controller's.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        Ok(())
    }

    /// Kill the controller with SIGKILL (a crash, an OOM kill) and wait for
    /// it to be gone.
    ///
    /// # Errors
    /// When no controller runs.
    pub fn kill_balancer(&mut self) -> Result<()> {
        let Some(mut child) = self.controller.take() else {
            bail!("no controller running")
        };
        child.kill()?;
        child.wait()?;
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }

    /// Run `lb-ctl ARGS...` in the balancer's namespace and return its
    /// output, failing with it when lb-ctl fails.
    ///
    /// # Errors
    /// With lb-ctl's output when it fails.
    pub fn ctl_in_ns(&self, args: &[&str]) -> Result<std::process::Output> {
        let ctl = bin("lb-ctl")?;
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.balancer.ns, &ctl])
            .args(["--socket", &self.socket.to_string_lossy()])
            .args(args)
            .output()?)
    }

    /// Run `lb-ctl --socket <lab socket> ARGS...` and return its stdout.
    ///
    /// # Errors
    /// With lb-ctl's message when it fails.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let ctl = bin("lb-ctl")?;
        let socket = self.socket.to_string_lossy().into_owned();
        let mut v = vec![ctl.as_str(), "--socket", socket.as_str()];
        v.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&sh(&v)?.stdout).into_owned())
    }

    fn client_args(
        &self,
        kind: &str,
        client: usize,
        port: u16,
        extra: &[&str],
    ) -> Result<Vec<String>> {
        let mut v = vec![
            "netns".to_string(),
            "exec".into(),
            self.clients[client].ns.clone(),
            bin("lb-lab-node")?,
            kind.into(),
            format!("{VIP}:{port}"),
        ];
        v.extend(extra.iter().map(|s| (*s).to_string()));
        Ok(v)
    }

    /// curl on client host `client`: quiet, bounded to 5 s.
    #[must_use]
    pub fn curl(&self, client: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.clients[client].ns])
            .args(["curl", "-s", "--max-time", "5"]);
        c
    }

    /// The value of one series of the balancer's metrics (`lb-ctl stats`),
    /// written as in the exposition format: `name{label="value",…}`.
    ///
    /// # Errors
    /// When lb-ctl fails, or the series is not there.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let stats = self.ctl(&["stats"])?;
        let prefix = format!("{series} ");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .with_context(|| format!("no sample {series} in:\n{stats}"))?
            .trim()
            .parse()
            .with_context(|| format!("the value of {series}"))
    }

    /// Run HTTP requests from client `client` to the VIP and wait for them.
    ///
    /// # Errors
    /// When the client cannot run, or fails (a failed request is a reply,
    /// not a failure of the client).
    pub fn http(&self, client: usize, port: u16, extra: &[&str]) -> Result<Vec<Reply>> {
        let out = Command::new("ip")
            .args(self.client_args("http", client, port, extra)?)
            .output()?;
        parse_replies(&out)
    }

    /// Start HTTP requests from a client in the background.
    ///
    /// # Errors
    /// When the client cannot start.
    pub fn http_background(&self, client: usize, port: u16, extra: &[&str]) -> Result<Child> {
        Ok(Command::new("ip")
            .args(self.client_args("http", client, port, extra)?)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Collect the replies of a background client.
    ///
    /// # Errors
    /// When it cannot be waited for.
    pub fn replies(child: Child) -> Result<Vec<Reply>> {
        parse_replies(&child.wait_with_output()?)
    }

    /// Send UDP datagrams from client `client` to the VIP.
    ///
    /// # Errors
    /// When the client cannot run.
    pub fn udp(&self, client: usize, port: u16, extra: &[&str]) -> Result<Vec<Reply>> {
        let out = Command::new("ip")
            .args(self.client_args("udp", client, port, extra)?)
            .output()?;
        parse_replies(&out)
    }
}

/// A client running in the background, whose replies are read as they
/// come: a test waits for the first one (the client is connected and
/// served) instead of sleeping, and can check that it is still running.
pub struct Running {
    child: Child,
    lines: std::io::BufReader<std::process::ChildStdout>,
    replies: Vec<Reply>,
}

impl Running {
    /// Follow `child`, started with a piped stdout.
    ///
    /// # Errors
    /// When its stdout was not piped.
    pub fn new(mut child: Child) -> Result<Self> {
        let out = child
            .stdout
            .take()
            .context("the client's stdout is not piped")?;
        Ok(Self {
            child,
            lines: std::io::BufReader::new(out),
            replies: Vec::new(),
        })
    }

    /// Wait for the client's next reply.
    ///
    /// # Errors
    /// When the client ended without one.
    pub fn next_reply(&mut self) -> Result<Reply> {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut self.lines, &mut line)? == 0 {
            bail!("the client ended after {} replies", self.replies.len());
        }
        let r = Reply::parse(line.trim_end());
        self.replies.push(r.clone());
        Ok(r)
    }

    /// Whether the client is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every reply, once the client has ended.
    ///
    /// # Errors
    /// When the client failed.
    pub fn finish(mut self) -> Result<Vec<Reply>> {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.lines, &mut rest)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the lab client failed ({status})");
        }
        self.replies.extend(rest.lines().map(Reply::parse));
        Ok(self.replies)
    }
}

/// The replies a finished `lb-lab-node` client printed, one a line; an
/// error when the client itself failed (its exit status and stderr).
///
/// # Errors
/// When the client exited unsuccessfully.
pub fn parse_replies(out: &std::process::Output) -> Result<Vec<Reply>> {
    if !out.status.success() {
        bail!(
            "the lab client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(Reply::parse)
        .collect())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop_balancer();
        for mut s in self.servers.drain(..).chain(self.xdp_helpers.drain(..)) {
            let _ = s.kill();
            let _ = s.wait();
        }
        delete_all(&format!("{}-", self.prefix));
        let _ = sh(&["umount", &self.bpffs().to_string_lossy()]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Start an `lb-lab-node xdp-pass` helper and wait until it has attached.
///
/// # Errors
/// When it cannot attach.
pub fn hold_xdp(cmd: &mut Command) -> Result<Child> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting an XDP helper")?;
    let mut ready = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)?;
    }
    if ready.trim() != "ready" {
        let _ = child.kill();
        bail!("an XDP helper could not be attached: {cmd:?}");
    }
    Ok(child)
}

/// Poll `ready` every 50 ms until it holds or `timeout` passes.
///
/// # Errors
/// On timeout.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {timeout:?}")
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lab tests of one test binary run one at a time (they share the
/// machine's CPUs and the socket directory): each holds this guard.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The backend that answered each request ("FAILED" for a failure).
#[must_use]
pub fn backends_of(replies: &[Reply]) -> Vec<String> {
    replies
        .iter()
        .map(|r| r.backend().unwrap_or("FAILED").to_string())
        .collect()
}

/// Every request succeeded, and there was at least one (else fail with
/// the controller's log).
#[track_caller]
pub fn all_ok(replies: &[Reply], lab: &Lab) {
    assert!(
        !replies.is_empty(),
        "the client printed no reply\ncontroller log:\n{}",
        lab.controller_log()
    );
    assert!(
        replies.iter().all(|r| matches!(r, Reply::Ok { .. })),
        "failed requests: {replies:?}\ncontroller log:\n{}",
        lab.controller_log()
    );
}

/// A child process killed (and reaped) when this is dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
