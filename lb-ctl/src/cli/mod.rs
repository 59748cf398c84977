//! The `lb-ctl` command line: its arguments and help (clap), each
//! command as a call of the API's client (or, for `attach`, `detach` and
//! `check-config`, of the layers below), and the printing of the answers.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    api::{client, DEFAULT_SOCKET},
    controller::report::{BackendRow, Status},
    daemon::{self, options::AttachOptions},
    kernel::lister::{ConnView, SessionView},
    model::{
        config::Config,
        endpoint::{Endpoint, Protocol, VipId},
        sched::Scheduler,
        services::{Vip, VipSpec},
    },
};
use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

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
struct Cli {
    /// Control socket of the running controller.
    #[arg(long, global = true, env = "LB_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List live persistence sessions: client (prefix), VIP, backend, time left.
    Sessions {
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The attachment (interfaces, mode, program and link ids), the tables'
    /// capacity and occupancy, the last sweep, the uptime.
    Status {
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the data path's counters in the Prometheus text format.
    Stats,
    /// Validate a config file without touching the kernel.
    CheckConfig { file: PathBuf },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `lb-ctl completions bash > /etc/bash_completion.d/lb-ctl`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), e.g. `lb-ctl man > /usr/local/share/man/man1/lb-ctl.1`.
    Man,
}

/// How listings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Aligned columns for people.
    Text,
    /// JSON for scripts (one array; `conns` and `sessions`: one object a
    /// line).
    Json,
}

#[derive(Subcommand)]
enum VipCommand {
    /// Add a virtual service.
    Add {
        /// VIP address and port, e.g. 198.18.0.100:80.
        vip: Endpoint,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
        /// rr: backends take turns; wrr: turns in proportion to their weights.
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
        vip: Endpoint,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// List virtual services.
    List {
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Add a backend to a virtual service.
    Add {
        vip: Endpoint,
        backend: Endpoint,
        /// Share of new clients under wrr (1-256).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Remove a backend: it gets no new connection, its sessions move on the
    /// clients' next connection, its established connections continue.
    Remove {
        vip: Endpoint,
        backend: Endpoint,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Take a backend out gently: it gets no new client; clients pinned to
    /// it keep using it until their session ends (logged-in users finish),
    /// established connections continue. The log says when it has no live
    /// connection or session left and can be removed safely.
    Drain {
        vip: Endpoint,
        backend: Endpoint,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
        /// Move its pinned clients at their next new connection instead.
        #[arg(long)]
        repin: bool,
    },
    /// Put a draining backend back in rotation.
    Enable {
        vip: Endpoint,
        backend: Endpoint,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// Change a backend's weight (its share of new clients under wrr).
    Weight {
        vip: Endpoint,
        backend: Endpoint,
        weight: u32,
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
    },
    /// List backends, of all VIPs or of one: state (up, down, draining),
    /// share of new clients, live connections and sessions, health checks.
    List {
        vip: Option<Endpoint>,
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

/// Run the command line.
#[must_use]
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-ctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let socket = cli.socket;
    let call = |method: &str, path: &str, body: Option<serde_json::Value>| {
        client::call(&socket, method, path, body.as_ref())
    };
    let vip_path =
        |vip: Endpoint, protocol: Protocol| format!("/v1/vips/{vip}{}", protocol_query(protocol));
    let backend_path = |vip: Endpoint, backend: Endpoint, protocol: Protocol, tail: &str| {
        format!(
            "/v1/vips/{vip}/backends/{backend}{tail}{}",
            protocol_query(protocol)
        )
    };
    let done = |reply: client::Reply| -> Result<()> {
        println!("{}", reply.json::<crate::api::server::Done>()?.message);
        Ok(())
    };
    match cli.command {
        Command::Attach {
            ifaces,
            config,
            xdp_mode,
            bpffs,
            keep_state,
            metrics_address,
            program,
            node,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(daemon::run(AttachOptions {
                ifaces,
                config,
                xdp_mode,
                socket,
                bpffs,
                keep_state,
                metrics_address,
                program,
                node,
            }))
        }
        Command::Detach { ifaces, bpffs } => {
            if call("GET", "/v1/status", None).is_ok() {
                bail!(
                    "a controller is running (it answers on {}); stop it with SIGTERM, which \
                     detaches unless it was started with --keep-state",
                    socket.display()
                );
            }
            for line in daemon::detach::detach(&ifaces, &bpffs)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let (config, services) = Config::load(&file)?;
            println!(
                "{}: valid; {} VIP(s), {} backend(s); max {} connections, {} sessions",
                file.display(),
                services.vips().count(),
                services.vips().map(|v| v.backends.len()).sum::<usize>(),
                config.limits.max_connections,
                config.limits.max_sessions
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "lb-ctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Vip(VipCommand::Add {
            vip,
            protocol,
            scheduler,
            persistence_timeout,
            persistence_netmask,
            max_lifetime,
            name,
            mode,
            cookie,
        }) => {
            let spec = VipSpec {
                name,
                id: VipId {
                    endpoint: vip,
                    protocol,
                },
                scheduler,
                persistence_timeout,
                persistence_netmask,
                max_lifetime,
                health_check: None,
                mode,
                cookie: cookie
                    .as_deref()
                    .map(crate::model::cookie::CookieSpec::named),
                forwarding: crate::model::services::Forwarding::Nat,
            };
            done(call("POST", "/v1/vips", Some(serde_json::to_value(spec)?))?)
        }
        Command::Vip(VipCommand::Remove { vip, protocol }) => {
            done(call("DELETE", &vip_path(vip, protocol), None)?)
        }
        Command::Vip(VipCommand::List { output }) => {
            let vips: Vec<Vip> = call("GET", "/v1/vips", None)?.json()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&vips)?),
                Output::Text => print_vips(&vips),
            }
            Ok(())
        }
        Command::Backend(BackendCommand::Add {
            vip,
            backend,
            weight,
            protocol,
        }) => done(call(
            "POST",
            &format!("/v1/vips/{vip}/backends{}", protocol_query(protocol)),
            Some(serde_json::json!({ "backend": backend, "weight": weight })),
        )?),
        Command::Backend(BackendCommand::Remove {
            vip,
            backend,
            protocol,
        }) => done(call(
            "DELETE",
            &backend_path(vip, backend, protocol, ""),
            None,
        )?),
        Command::Backend(BackendCommand::Weight {
            vip,
            backend,
            weight,
            protocol,
        }) => done(call(
            "PUT",
            &backend_path(vip, backend, protocol, ""),
            Some(serde_json::json!({ "weight": weight })),
        )?),
        Command::Backend(BackendCommand::Drain {
            vip,
            backend,
            protocol,
            repin,
        }) => done(call(
            "POST",
            &backend_path(vip, backend, protocol, "/drain"),
            Some(serde_json::json!({ "repin": repin })),
        )?),
        Command::Backend(BackendCommand::Enable {
            vip,
            backend,
            protocol,
        }) => done(call(
            "POST",
            &backend_path(vip, backend, protocol, "/enable"),
            None,
        )?),
        Command::Backend(BackendCommand::List {
            vip,
            protocol,
            output,
        }) => {
            let mut query = Vec::new();
            if let Some(v) = vip {
                query.push(format!("vip={v}"));
            }
            if let Some(p) = protocol {
                query.push(format!("protocol={}", p.as_str()));
            }
            let path = if query.is_empty() {
                "/v1/backends".to_string()
            } else {
                format!("/v1/backends?{}", query.join("&"))
            };
            let rows: Vec<BackendRow> = call("GET", &path, None)?.json()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => print_backends(&rows),
            }
            Ok(())
        }
        Command::Conns { output } => {
            let reply = call("GET", "/v1/connections", None)?;
            if output == Output::Json {
                print!("{}", reply.text()?);
                return Ok(());
            }
            let conns: Vec<ConnView> = reply.lines()?;
            println!(
                "{:<22} {:<22} {:<22} {:<5} {:<16} {:>8} {:>9}",
                "CLIENT", "VIP", "BACKEND", "PROTO", "STATE", "IDLE", "EXPIRES"
            );
            for c in conns {
                println!(
                    "{:<22} {:<22} {:<22} {:<5} {:<16} {:>8} {:>9}",
                    c.client.to_string(),
                    c.vip.to_string(),
                    c.backend.to_string(),
                    c.protocol.as_str(),
                    if c.confirmed {
                        c.state.clone()
                    } else {
                        format!("{}(new)", c.state)
                    },
                    secs(c.idle),
                    secs(c.expires_in)
                );
            }
            Ok(())
        }
        Command::Sessions { output } => {
            let reply = call("GET", "/v1/sessions", None)?;
            if output == Output::Json {
                print!("{}", reply.text()?);
                return Ok(());
            }
            let sessions: Vec<SessionView> = reply.lines()?;
            println!(
                "{:<20} {:<22} {:<5} {:<22} {:>9} {:>9}",
                "CLIENT", "VIP", "PROTO", "BACKEND", "TIME LEFT", "AGE"
            );
            for s in sessions {
                println!(
                    "{:<20} {:<22} {:<5} {:<22} {:>9} {:>9}",
                    format!("{}/{}", s.client, s.netmask),
                    s.vip.to_string(),
                    s.protocol.as_str(),
                    s.backend
                        .map_or_else(|| "(removed)".to_string(), |b| b.to_string()),
                    secs(s.time_left),
                    secs(s.age)
                );
            }
            Ok(())
        }
        Command::Status { output } => {
            let status: Status = call("GET", "/v1/status", None)?.json()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Output::Text => print_status(&status),
            }
            Ok(())
        }
        Command::Stats => {
            print!("{}", call("GET", "/metrics", None)?.text()?);
            Ok(())
        }
    }
}

/// `?protocol=udp` for UDP (TCP is the API's default).
fn protocol_query(p: Protocol) -> String {
    match p {
        Protocol::Tcp => String::new(),
        Protocol::Udp => "?protocol=udp".into(),
    }
}

fn print_status(s: &Status) {
    println!(
        "interfaces:  {} ({} mode: {})",
        s.interfaces.join(", "),
        s.mode,
        s.mode_reason
    );
    println!(
        "program:     id {}; links {}",
        s.program_id
            .map_or_else(|| "?".to_string(), |i| i.to_string()),
        if s.link_ids.is_empty() {
            "-".to_string()
        } else {
            s.link_ids
                .iter()
                .map(|(i, id)| format!("{i}: {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("services:    {} VIP(s), {} backend(s)", s.vips, s.backends);
    if let Some(c) = &s.cluster {
        let received = |what: &str| {
            c.received
                .iter()
                .find(|(n, _)| n == what)
                .map_or(0, |(_, v)| *v)
        };
        println!(
            "cluster:     node {}, store {} {}; published {} (dropped {}), installed {} of the others', \
             publication lag p99 {}",
            c.node,
            c.store,
            if c.up { "reachable" } else { "UNREACHABLE (going on alone)" },
            c.published,
            c.publish_dropped,
            received("installed"),
            c.lag_p99_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"))
        );
    }
    println!("uptime:      {}s", s.uptime_seconds);
    println!(
        "{:<12} {:>12} {:>12} {:>6}",
        "TABLE", "ENTRIES", "CAPACITY", "USED"
    );
    for t in &s.tables {
        println!(
            "{:<12} {:>12} {:>12} {:>5.1}%",
            t.name,
            t.entries,
            t.capacity,
            100.0 * t.entries as f64 / t.capacity.max(1) as f64
        );
    }
    match &s.last_sweep {
        Some(w) => println!(
            "last sweep:  {:.1}s ago, took {:.3}s, deleted {}",
            w.seconds_ago,
            w.duration_seconds,
            w.deleted
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!("last sweep:  none yet (table occupancy is counted by the sweeps)"),
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn print_vips(vips: &[Vip]) {
    println!(
        "{:<12} {:<22} {:<5} {:<5} {:>11} {:>5} {:>8}",
        "NAME", "VIP", "PROTO", "SCHED", "PERSISTENCE", "MASK", "BACKENDS"
    );
    for v in vips {
        println!(
            "{:<12} {:<22} {:<5} {:<5} {:>11} {:>5} {:>8}",
            v.spec.name.as_deref().unwrap_or("-"),
            v.spec.id.endpoint.to_string(),
            v.spec.id.protocol.as_str(),
            v.spec.scheduler.as_str(),
            if v.spec.persistence_timeout.is_zero() {
                "off".to_string()
            } else {
                secs(v.spec.persistence_timeout)
            },
            format!("/{}", v.spec.persistence_netmask),
            v.backends.len()
        );
    }
}

fn print_backends(rows: &[BackendRow]) {
    println!(
        "{:<22} {:<5} {:<22} {:<14} {:>6} {:>6} {:>6} {:>8} {:>11}  LAST FAILED CHECK",
        "VIP", "PROTO", "BACKEND", "STATE", "WEIGHT", "SHARE", "CONNS", "SESSIONS", "CHECKS OK/F"
    );
    for r in rows {
        println!(
            "{:<22} {:<5} {:<22} {:<14} {:>6} {:>5}% {:>6} {:>8} {:>11}  {}",
            r.vip.endpoint.to_string(),
            r.vip.protocol.as_str(),
            r.backend.to_string(),
            r.state,
            r.weight,
            r.share,
            r.connections,
            r.sessions,
            r.checks
                .map_or_else(|| "-".to_string(), |(ok, failed)| format!("{ok}/{failed}")),
            r.last_error.as_deref().unwrap_or("")
        );
    }
    let mut vips: Vec<VipId> = rows.iter().map(|r| r.vip).collect();
    vips.dedup();
    for v in vips {
        let mut of_vip = rows.iter().filter(|r| r.vip == v);
        if of_vip.clone().all(|r| r.share == 0) {
            if of_vip.all(|r| r.state.starts_with("down")) {
                println!("VIP {v}: no backend up (new connections are dropped)");
            } else {
                println!("VIP {v}: no backend takes new clients (new connections are dropped)");
            }
        }
    }
}
