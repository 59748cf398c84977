//! The built-in lab as a command: `demo` runs the balancer with real clients
//! and shows who served what; `up`/`down` leave a lab running for exploring
//! by hand. `cargo xtask demo` builds everything and runs `lb-lab demo`.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb_tests::lab::{Lab, Layout, Reply, VIP, VIP6};

/// Where the demo's certificate (for `shop.test`, the HTTPS VIP of
/// `configs/lab.yaml`) and its test CA are made.
const DEMO_TLS: &str = "/run/lb/demo-tls";

/// The demo's certificate and CA, made once.
fn demo_certificates() -> Result<()> {
    let dir = std::path::Path::new(DEMO_TLS);
    if !dir.join("shop.pem").exists() {
        lb_tests::pki::TestCa::new(dir)?.issue("shop", &["shop.test"], "lb demo")?;
    }
    Ok(())
}

#[derive(Parser)]
#[command(about = "The lb veth lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the balancer on the lab with real clients, print which backend
    /// served each request and the tables, and tear the lab down.
    Demo {
        #[arg(long, value_enum, default_value = "one-arm")]
        layout: LayoutArg,
        /// The balancer's config.
        #[arg(long, default_value = "configs/lab.yaml")]
        config: PathBuf,
    },
    /// Build the lab and leave it running.
    Up {
        #[arg(long, value_enum, default_value = "one-arm")]
        layout: LayoutArg,
        /// Also start `lb-ctl attach` with this config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Tear down a lab left by `up`.
    Down,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// Clients and backends behind the balancer's eth0 (peers prepared for
    /// native XDP).
    OneArm,
    /// Clients behind eth0, backends behind eth1.
    TwoArm,
    /// One-arm as a user builds it: nothing prepared for XDP, default
    /// offloads, the VIP on eth0.
    Plain,
    /// Two balancer hosts behind an ECMP router (a DSR VIP with maglev),
    /// three backends set up for direct server return.
    Ecmp,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::OneArm => Self::OneArm,
            LayoutArg::TwoArm => Self::TwoArm,
            LayoutArg::Plain => Self::Plain,
            // Not a single-balancer lab: `demo_ecmp` builds it, and `up`
            // refuses it before getting here.
            LayoutArg::Ecmp => Self::OneArm,
        }
    }
}

const LAB_PREFIX: &str = "lbdemo";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Demo { layout, config } => {
            ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
                .context("installing the Ctrl-C handler")?;
            if matches!(layout, LayoutArg::Ecmp) {
                return demo_ecmp();
            }
            let config = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            demo_certificates()?;
            demo(layout.into(), &config)
        }
        Cmd::Up { layout, config } => {
            if matches!(layout, LayoutArg::Ecmp) {
                bail!("the ecmp layout runs as `lb-lab demo --layout ecmp` (cargo xtask demo --layout ecmp) only");
            }
            let mut lab = Lab::up(LAB_PREFIX, layout.into(), 2, 3)?;
            demo_certificates()?;
            if let Some(c) = config {
                lab.start_balancer(
                    &std::fs::read_to_string(&c).with_context(|| c.display().to_string())?,
                )?;
            }
            println!(
                "lab is up: namespaces {LAB_PREFIX}-*; control socket {}",
                lab.socket.display()
            );
            println!(
                "try: ip netns exec {LAB_PREFIX}-c1 curl -s http://{VIP}/   and   lb-ctl --socket {} conns",
                lab.socket.display()
            );
            // Leave everything running; `down` removes it.
            std::mem::forget(lab);
            Ok(())
        }
        Cmd::Down => {
            let _ = Command::new("pkill")
                .args(["-INT", "-f", &format!("/run/lb/{LAB_PREFIX}.sock")])
                .status();
            std::thread::sleep(std::time::Duration::from_millis(500));
            lb_tests::netns::delete_all(&format!("{LAB_PREFIX}-"));
            let _ = std::fs::remove_file(format!("/run/lb/{LAB_PREFIX}.sock"));
            println!("lab {LAB_PREFIX} removed");
            Ok(())
        }
    }
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn show(replies: &[Reply]) -> String {
    replies
        .iter()
        .map(|r| r.backend().unwrap_or("FAILED").to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Three users behind one address (c1): by cookie (`mode: http`, port
/// 8000) they spread over the backends and each keeps its own; by source
/// IP (port 80) they all land on one. Returns the failed requests.
fn users_behind_one_address(lab: &Lab) -> Result<usize> {
    println!(
        "\n== three users behind ONE address (c1, {}), four requests each, a new connection each ==",
        lab.clients[0].addr
    );
    let mut failures = 0;
    let ca = format!("{DEMO_TLS}/ca.pem");
    let resolve = format!("shop.test:443:{VIP}");
    for (i, (url, what, extra)) in [
        (
            format!("http://{VIP}:8000/"),
            "cookie persistence (mode: http, SRVID)",
            vec![],
        ),
        (
            "https://shop.test/".to_string(),
            "the same over HTTPS (tls:, HTTP/2)",
            vec!["--http2", "--cacert", &ca, "--resolve", &resolve],
        ),
        (
            format!("http://[{VIP6}]:8000/"),
            "the same on an IPv6 VIP",
            vec![],
        ),
        (
            format!("http://{VIP}:80/"),
            "source-IP persistence (layer 4)",
            vec![],
        ),
    ]
    .iter()
    .enumerate()
    {
        println!("-- {url} {what}:");
        for user in ["alice", "bob", "carol"] {
            let jar = lab.workdir.join(format!("demo-jar-{user}-{i}"));
            let mut seen = Vec::new();
            for _ in 0..4 {
                let out = lab
                    .curl(0)
                    .args(extra)
                    .arg("-b")
                    .arg(&jar)
                    .arg("-c")
                    .arg(&jar)
                    .arg(url)
                    .output()?;
                let body = String::from_utf8_lossy(&out.stdout);
                match body.split_whitespace().next() {
                    Some(b) if out.status.success() => seen.push(b.to_string()),
                    _ => {
                        failures += 1;
                        seen.push("FAILED".into());
                    }
                }
            }
            println!("   {user:<6} -> {}", seen.join(" "));
        }
        interrupted()?;
    }
    Ok(failures)
}

/// Kill c1's backend with `kill -9`, show the health check taking it out
/// and c1 moving, then restart it. Returns the failed requests.
fn failover(lab: &mut Lab, dead: &str) -> Result<usize> {
    let Some(i) = lab.backends.iter().position(|b| b.name == dead) else {
        return Ok(0);
    };
    let addr = lab.backends[i].addr;
    println!(
        "\n== kill -9 the server of c1's backend {dead} ({addr}): the health check takes it out =="
    );
    lab.kill_backend(i)?;
    let down = format!("backend {addr}:8080 is down");
    let up = format!("backend {addr}:8080 is up");
    let log_line = |lab: &Lab, what: &str| {
        lab.controller_log()
            .lines()
            .find(|l| l.contains(what))
            .map(|l| l.split_once("] ").map_or(l, |x| x.1).to_string())
    };
    lb_tests::lab::wait_for(std::time::Duration::from_secs(10), || {
        log_line(lab, &down).is_some()
    })?;
    println!("log: {}", log_line(lab, &down).unwrap_or_default());
    let r = lab.http(0, 80, &["--count", "5"])?;
    println!("c1 -> {}   (moved, no failed request)", show(&r));
    let failures = r.iter().filter(|r| r.backend().is_none()).count();
    interrupted()?;
    println!("== restart {dead}: after 2 good checks it takes new clients again ==");
    lab.start_backend(i)?;
    lb_tests::lab::wait_for(std::time::Duration::from_secs(10), || {
        log_line(lab, &up).is_some()
    })?;
    println!("log: {}", log_line(lab, &up).unwrap_or_default());
    print!("{}", lab.ctl(&["backend", "list", &format!("{VIP}:80")])?);
    Ok(failures)
}

/// The router's next hops to the VIP, by host name.
fn hops(lab: &lb_tests::ecmp::EcmpLab) -> String {
    let hops: Vec<&str> = lab
        .next_hops()
        .into_iter()
        .map(|i| lb_tests::ecmp::NODES[i])
        .collect();
    if hops.is_empty() {
        "(no route)".into()
    } else {
        hops.join(" and ")
    }
}

/// Two balancer hosts behind an ECMP router, sharing sessions through
/// Redis: both take clients, every client keeps one backend, a backend
/// added on both hosts and a host stopped (its VIP withdrawn by BGP, then
/// drained) move no client and fail no request, and Redis
/// dying stops nothing.
fn demo_ecmp() -> Result<()> {
    use lb_tests::ecmp::{EcmpLab, PORT, REDIS};
    println!(
        "== building the ecmp lab: a router spreading {VIP} over lb-a and lb-b, DSR backends, Redis =="
    );
    let mut lab = EcmpLab::up("lbdemo-ecmp", 4)?;
    lab.start_redis()?;
    let backends: String = (1..=3)
        .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: {PORT} }}\n"))
        .collect();
    let config = format!(
        "sweeper: {{ interval: 1s }}\nvips:\n  - name: web\n    address: {VIP}\n    port: {PORT}\n    forwarding: dsr\n    scheduler: maglev\n    persistence: {{ timeout: 300s }}\n    backends:\n{backends}cluster:\n  store: \"{REDIS}\"\nannounce: {{ interface: lb-vips, delay: 1s, drain: 3s }}\n"
    );
    println!("== lb-ctl attach eth0 eth1 on both hosts, the same config (forwarding: dsr, scheduler: maglev, cluster.store: {REDIS}, announce: BIRD on each host exports lb-vips to the router's BIRD) ==");
    lab.start_balancers(&config)?;
    println!("router: {VIP} via {}", hops(&lab));
    let mut failures = 0;
    let show = |lab: &EcmpLab, failures: &mut usize| -> Result<()> {
        for c in 0..lab.clients.len() {
            let r = lab.http(c, 6)?;
            *failures += r.iter().filter(|x| x.backend().is_none()).count();
            println!(
                "{} ({}) -> {}",
                lab.clients[c].0.rsplit('-').next().unwrap_or(""),
                lab.clients[c].1,
                show(&r)
            );
        }
        println!(
            "new connections so far: lb-a {}, lb-b {}",
            lab.new_connections(0),
            lab.new_connections(1)
        );
        Ok(())
    };
    println!("\n== both hosts announced: each client opens 6 connections (spread over the hosts by ECMP) ==");
    show(&lab, &mut failures)?;
    interrupted()?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    println!("\n== lb-ctl sessions on lb-b (its own clients and lb-a's, through Redis) ==");
    print!("{}", lab.ctl(1, &["sessions"])?);
    println!("\n== backend b4 (198.18.1.14) added on both hosts: the Maglev table changes ==");
    for i in 0..2 {
        print!(
            "{}: {}",
            lb_tests::ecmp::NODES[i],
            lab.ctl(
                i,
                &[
                    "backend",
                    "add",
                    &format!("{VIP}:{PORT}"),
                    &format!("198.18.1.14:{PORT}")
                ]
            )?
        );
    }
    println!(
        "\n== SIGTERM to lb-b's controller: it withdraws the VIP (BGP), drains 3 s, detaches; a client keeps connecting meanwhile =="
    );
    let running = lab.spawn_http(
        0,
        &[
            "--count",
            "100000",
            "--interval-ms",
            "5",
            "--for-ms",
            "6000",
        ],
    )?;
    lab.stop_balancer(1)?;
    println!("router: {VIP} via {}", hops(&lab));
    let out = running.wait_with_output()?;
    let replies: Vec<lb_tests::lab::Reply> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(lb_tests::lab::Reply::parse_line)
        .collect();
    let failed = replies.iter().filter(|r| r.backend().is_none()).count();
    failures += failed;
    println!(
        "c1's {} requests during the withdrawal: {failed} failed",
        replies.len()
    );
    println!("the same clients again, all through lb-a:");
    show(&lab, &mut failures)?;
    interrupted()?;
    println!("\n== kill -9 Redis: lb-a goes on alone ==");
    lab.kill_redis();
    std::thread::sleep(std::time::Duration::from_secs(2));
    show(&lab, &mut failures)?;
    for line in lab
        .ctl(0, &["status"])?
        .lines()
        .filter(|l| l.starts_with("cluster:"))
    {
        println!("lb-a {line}");
    }
    println!("\n== tearing the lab down ==");
    drop(lab);
    if failures > 0 {
        bail!("{failures} request(s) failed");
    }
    Ok(())
}

fn demo(layout: Layout, config: &str) -> Result<()> {
    println!("== building the {layout:?} lab: 2 clients, balancer, 3 backends ==");
    let mut lab = Lab::up(LAB_PREFIX, layout, 2, 3)?;
    println!(
        "== lb-ctl attach {} --config configs/lab.yaml ==",
        lab.balancer_ifaces().join(" ")
    );
    lab.start_balancer(config)?;
    print!("{}", lab.ctl(&["vip", "list"])?);
    print!("{}", lab.ctl(&["backend", "list"])?);
    interrupted()?;

    println!(
        "\n== sticky VIP {VIP}:80 (persistence 300s): each client opens 10 new connections =="
    );
    let mut failures = 0;
    let mut c1_backend = None;
    for (i, c) in lab.clients.iter().enumerate() {
        let r = lab.http(i, 80, &["--count", "10"])?;
        failures += r.iter().filter(|r| r.backend().is_none()).count();
        println!("{} ({}) -> {}", c.name, c.addr, show(&r));
        if i == 0 {
            c1_backend = r.first().and_then(Reply::backend).map(str::to_string);
        }
        interrupted()?;
    }
    if let Some(dead) = c1_backend {
        failures += failover(&mut lab, &dead)?;
    }
    failures += users_behind_one_address(&lab)?;
    println!(
        "\n== plain VIP {VIP}:81 (no persistence, wrr 2:1:1): client c1 opens 8 connections =="
    );
    let r = lab.http(0, 81, &["--count", "8"])?;
    failures += r.iter().filter(|r| r.backend().is_none()).count();
    println!("c1 -> {}", show(&r));
    println!("\n== UDP VIP {VIP}:53 (persistence 300s): client c2 sends 5 datagrams ==");
    let r = lab.udp(1, 53, &["--count", "5"])?;
    failures += r.iter().filter(|r| r.backend().is_none()).count();
    for x in &r {
        match x {
            Reply::Ok { backend, from, .. } => {
                println!(
                    "c2 <- {backend} (reply source {})",
                    from.map(|f| f.to_string()).unwrap_or_default()
                );
            }
            Reply::Err(e) => println!("c2: FAILED {e}"),
        }
    }
    interrupted()?;

    println!("\n== lb-ctl conns ==");
    print!("{}", lab.ctl(&["conns"])?);
    println!("\n== lb-ctl sessions ==");
    print!("{}", lab.ctl(&["sessions"])?);
    println!("\n== lb-ctl stats (non-zero series) ==");
    for line in lab.ctl(&["stats"])?.lines() {
        if !line.starts_with('#') && !line.ends_with(" 0") {
            println!("{line}");
        }
    }
    let status = lab.stop_balancer()?;
    println!("\n== stopped the controller ({status}); tearing the lab down ==");
    drop(lab);
    if failures > 0 {
        bail!("{failures} request(s) failed");
    }
    Ok(())
}
