//! The command line's arguments and their help (clap).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    api::DEFAULT_SOCKET,
    model::{
        endpoint::{Endpoint, Protocol},
        sched::Scheduler,
    },
};

const EXAMPLES: &str = "\
Examples:
  # Run the balancer on eth0 with a config file (foreground, Ctrl-C detaches):
  lb-ctl attach eth0 --config /etc/lb/lb.yaml

  # From another shell: a sticky VIP, three backends, weighted 2:1:1
  lb-ctl vip add 198.18.0.100:80 --scheduler wrr --persistence-timeout 300s --persistence-netmask 24
  lb-ctl backend add 198.18.0.100:80 198.18.1.11:8080 --weight 2
  lb-ctl backend add 198.18.0.100:80 198.18.1.12:8080
  lb-ctl backend add 198.18.0.100:80 198.18.1.13:8080
  lb-ctl backend list
  lb-ctl conns          # client, VIP, backend, state, idle time
  lb-ctl sessions       # client (prefix), VIP, pinned backend, time left
  lb-ctl stats          # Prometheus text format

Every subcommand but attach and check-config talks to a running `lb-ctl attach`
through --socket (default /run/lb/lb.sock, or $LB_SOCKET).";

/// Layer-4 load balancer with an XDP fast path and source-IP session persistence.
#[derive(Parser)]
#[command(name = "lb-ctl", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Control socket of the running controller.
    #[arg(long, global = true, env = "LB_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load the XDP program on the interfaces, apply the config, and run the
    /// controller in the foreground until SIGINT/SIGTERM, then detach.
    Attach {
        /// Interfaces to attach to (one-arm: one; two-arm: clients' and backends').
        #[arg(required = true, value_name = "IFACE")]
        ifaces: Vec<String>,
        /// YAML config file (see configs/example.yaml); without it the
        /// balancer starts empty and is configured through the socket.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// XDP attach mode. auto: native where every interface can deliver
        /// the frames the program sends (on veth: the peer runs an XDP
        /// program in native mode), generic otherwise. native: in the driver,
        /// fastest; refused, with the reason, where frames would be dropped.
        /// generic: on socket buffers, works on any interface, slower.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: crate::kernel::xdpmode::Requested,
        /// Mount point of the BPF filesystem; maps are pinned in <BPFFS>/lb.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// At SIGINT/SIGTERM, leave the program attached and forwarding with
        /// its pinned tables, so that the next attach takes over without
        /// dropping a packet (restarts, upgrades). Without it the program is
        /// detached and the tables removed. A controller that dies (crash,
        /// kill -9) always leaves the data path running.
        #[arg(long)]
        keep_state: bool,
        /// Serve Prometheus metrics at http://ADDRESS/metrics (for example
        /// 127.0.0.1:9917); `lb-ctl stats` prints the same text.
        #[arg(long, value_name = "ADDRESS:PORT")]
        metrics_address: Option<std::net::SocketAddr>,
        /// Load the XDP program from this eBPF object file instead of the
        /// one built into lb-ctl (a data-path build rolled out on its own,
        /// like Katran's -balancer_prog). Its maps must have this build's
        /// layout; a running program is replaced atomically.
        #[arg(long, value_name = "FILE")]
        program: Option<PathBuf>,
        /// This host's name in the cluster (`cluster:` in the config), when
        /// the hosts share one config file; default: `cluster.node`, else
        /// the host name.
        #[arg(long, env = "LB_NODE", value_name = "NAME")]
        node: Option<String>,
    },
    /// Remove the program, its pinned attachments and tables left running by
    /// `attach --keep-state` or by a controller that died. Live connections
    /// and sessions are dropped. Refused while a controller runs (stop it
    /// with SIGTERM instead).
    Detach {
        /// Interfaces to detach from.
        #[arg(required = true, value_name = "IFACE")]
        ifaces: Vec<String>,
        /// Mount point of the BPF filesystem the state is pinned in.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
    /// Manage virtual services.
    #[command(subcommand)]
    Vip(VipCommand),
    /// Manage the backends of a virtual service.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// List live connections: client, VIP, backend, protocol, state, idle time.
    Conns {
        /// How to print: text (columns for people) or json (for scripts).
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List live persistence sessions: client (prefix), VIP, backend, time left.
    Sessions {
        /// How to print: text (columns for people) or json (for scripts).
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The attachment (interfaces, mode, program and link ids), the tables'
    /// capacity and occupancy, the last sweep, the uptime.
    Status {
        /// How to print: text (columns for people) or json (for scripts).
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the data path's counters in the Prometheus text format.
    Stats,
    /// Re-read the config file of the running controller and apply it (as
    /// SIGHUP does), saying what happened; a refused file changes nothing,
    /// gives its reason and a non-zero exit status. Runtime changes (vip,
    /// backend) not in the file are replaced by it.
    Reload,
    /// The running configuration: dump it, or compare it with a file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Validate a config file without touching the kernel.
    CheckConfig {
        /// The YAML config file to check.
        file: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `lb-ctl completions bash > /etc/bash_completion.d/lb-ctl`.
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages, one per command (lb-ctl.1, lb-ctl-attach.1,
    /// lb-ctl-vip-add.1, …), into DIR.
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the running configuration as YAML that `check-config` accepts
    /// and that recreates it: the file's settings with the VIPs and
    /// backends as they are now, runtime changes included. Keep runtime
    /// changes by writing it to the config file (drain and health
    /// verdicts are state, not configuration).
    Dump,
    /// Show what `lb-ctl reload` of FILE would change in the running
    /// configuration (+ added, - removed, ~ changed, ! refused by a reload).
    /// Exits 0 when nothing would change, 1 when something would (as
    /// diff(1)), 2 or more on an error.
    Diff {
        /// The YAML config file to compare with the running configuration.
        file: PathBuf,
    },
}

/// How listings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Text,
    /// JSON for scripts (one array; `conns` and `sessions`: one object a
    /// line).
    Json,
}

#[derive(Subcommand)]
pub enum VipCommand {
    /// Add a virtual service.
    Add {
        /// VIP address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
        /// rr: backends take turns; wrr: turns in proportion to their
        /// weights; maglev: a consistent hash of the client (the same
        /// backend on every balancer host).
        #[arg(long, value_enum, default_value = "rr")]
        scheduler: Scheduler,
        /// How long a client stays with its backend after its last packet
        /// ("300s", "5m"); 0s turns persistence off.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        persistence_timeout: Duration,
        /// Clients that share this many leading address bits share a backend
        /// (24: a whole /24 sticks together, e.g. behind one NAT pool).
        #[arg(long, default_value_t = 32)]
        persistence_netmask: u8,
        /// The same for IPv6 clients (64: a household's /64, in which
        /// devices rotate temporary addresses).
        #[arg(long, default_value_t = 64)]
        persistence_netmask6: u8,
        /// A session ends this long after it began, even while the client
        /// keeps talking ("8h"); 0s: no limit.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        max_lifetime: Duration,
        /// A name shown in listings and metrics.
        #[arg(long)]
        name: Option<String>,
        /// tcp: the XDP path (layer 4); http: the layer-7 proxy on this
        /// host, listening on VIP:PORT (the address must be local).
        #[arg(long, value_enum, default_value = "tcp")]
        mode: crate::model::services::Mode,
        /// With --mode http: persistence by a cookie of this name, inserted
        /// by the balancer (default attributes; the config file sets them
        /// all).
        #[arg(long, value_name = "NAME")]
        cookie: Option<String>,
    },
    /// Remove a virtual service, its connections and sessions.
    Remove {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// List virtual services.
    List {
        /// How to print: text (columns for people) or json (for scripts).
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Add a backend to a virtual service.
    Add {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The backend's address and port, e.g. 198.18.1.11:8080.
        backend: Endpoint,
        /// Share of new clients under wrr and maglev (1-256).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Remove a backend: it gets no new connection, its sessions move on the
    /// clients' next connection, its established connections continue.
    Remove {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The backend's address and port, e.g. 198.18.1.11:8080.
        backend: Endpoint,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Take a backend out gently: it gets no new client; clients pinned to
    /// it keep using it until their session ends (logged-in users finish),
    /// established connections continue. The log says when it has no live
    /// connection or session left and can be removed safely.
    Drain {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The backend's address and port, e.g. 198.18.1.11:8080.
        backend: Endpoint,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
        /// Move its pinned clients at their next new connection instead.
        #[arg(long)]
        repin: bool,
    },
    /// Put a draining backend back in rotation.
    Enable {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The backend's address and port, e.g. 198.18.1.11:8080.
        backend: Endpoint,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Change a backend's weight (its share of new clients under wrr).
    Weight {
        /// The VIP's address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        /// The backend's address and port, e.g. 198.18.1.11:8080.
        backend: Endpoint,
        /// The backend's weight, 1-256: its share of new clients under wrr and maglev.
        weight: u32,
        /// The VIP's protocol: tcp or udp.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// List backends, of all VIPs or of one: state (up, down, draining),
    /// share of new clients, live connections and sessions, health checks.
    List {
        /// Only the backends of this VIP (address and port, e.g. 198.18.0.100:80).
        vip: Option<Endpoint>,
        /// Only VIPs of this protocol: tcp or udp.
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
        /// How to print: text (columns for people) or json (for scripts).
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}
