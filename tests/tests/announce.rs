//! Announcing VIPs by BGP (`announce:`) in the `ecmp` lab: BIRD 2 on the
//! router and on both balancer hosts, real BGP sessions, the router's ECMP
//! route built from what the hosts announce. Real clients, real servers,
//! real controllers stopped by signals. And the announce interface of one
//! host in the plain dual-stack lab, with an IPv6 VIP.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use lb_tests::{
    ecmp::{EcmpLab, PORT},
    lab::{serial, wait_for, Lab, Layout, Running, VIP, VIP6},
};

/// The lab's DSR/Maglev VIP over b1..b3 with HTTP health checks (one
/// failure takes a backend down, one success brings it back), and
/// `announce` (the inside of the block).
fn config(announce: &str) -> String {
    let backends: String = (1..=3)
        .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: {PORT} }}\n"))
        .collect();
    format!(
        "sweeper: {{ interval: 1s }}\nannounce: {{ {announce} }}\nvips:\n  - address: {VIP}\n    port: {PORT}\n    forwarding: dsr\n    scheduler: maglev\n    persistence: {{ timeout: 300s }}\n    health_check: {{ kind: http, path: /health, interval: 300ms, timeout: 250ms, rise: 1, fall: 1 }}\n    backends:\n{backends}"
    )
}

/// A client opening a new connection every 5 ms for `ms`.
fn client_loop(lab: &EcmpLab, c: usize, ms: u64) -> Running {
    Running::new(
        lab.spawn_http(
            c,
            &[
                "--count",
                "100000",
                "--interval-ms",
                "5",
                "--for-ms",
                &ms.to_string(),
            ],
        )
        .unwrap(),
    )
    .unwrap()
}

/// Every request the client made succeeded (and there were some).
fn all_served(running: Running, what: &str) {
    let replies = running.finish().unwrap();
    let failed = replies.iter().filter(|r| r.backend().is_none()).count();
    assert!(replies.len() > 20, "{what}: {} requests", replies.len());
    assert_eq!(failed, 0, "{what}: {failed} of {} failed", replies.len());
}

/// Watches the router's next hops in the background: every set it saw.
struct HopWatch {
    seen: Arc<Mutex<Vec<Vec<usize>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HopWatch {
    fn start(lab: &EcmpLab) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let router = lab.router.clone();
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Acquire) {
                let hops = lb_tests::ecmp::next_hops_of(&router);
                let mut s = s.lock().unwrap();
                if s.last() != Some(&hops) {
                    s.push(hops);
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Vec<usize>> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Both hosts announce; SIGTERM on one withdraws its path within its
/// drain while a client loop and a long-lived connection go on untouched;
/// restarted, it announces again only after `announce.delay`.
#[test]
fn a_stopped_host_withdraws_first_and_a_restarted_one_waits_for_its_delay() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-bgp", 2).unwrap();
    let delay = Duration::from_secs(3);
    let drain = Duration::from_secs(3);
    lab.start_balancers(&config("interface: lb-vips, delay: 3s, drain: 3s"))
        .unwrap();
    assert_eq!(lab.next_hops(), vec![0, 1], "two next hops");
    let status = lab.ctl(0, &["status"]).unwrap();
    assert!(
        status.contains("announce:    on lb-vips") && status.contains(&format!("{VIP}")),
        "{status}"
    );
    let metrics = lab.ctl(0, &["stats"]).unwrap();
    assert!(
        metrics.contains(&format!("lb_vip_announced{{address=\"{VIP}\"}} 1")),
        "{metrics}"
    );

    let loop_ = client_loop(&lab, 0, 9000);
    let mut long = Running::new(
        lab.spawn_http(1, &["--keepalive", "--count", "60", "--interval-ms", "100"])
            .unwrap(),
    )
    .unwrap();
    assert!(long.next_reply().unwrap().backend().is_some());
    let sent = Instant::now();
    lab.signal_balancer(0, nix::sys::signal::Signal::SIGTERM);
    lab.wait_next_hops(&[1], drain).unwrap();
    assert!(sent.elapsed() < drain, "withdrawn within the drain");
    lab.wait_balancer(0).unwrap();
    assert!(
        sent.elapsed() >= drain,
        "the controller kept forwarding for its drain before stopping"
    );
    assert_eq!(
        lab.log(0)
            .matches(&format!("VIP address {VIP} withdrawn"))
            .count(),
        1,
        "said once: {}",
        lab.log(0)
    );
    all_served(loop_, "the client loop across the withdrawal");
    all_served(long, "the long-lived connection");

    // Restarted: nothing is announced before its delay.
    let started = Instant::now();
    lab.start_balancer(0).unwrap();
    assert_eq!(lab.next_hops(), vec![1], "not yet");
    let vips = lab.ctl(0, &["vip", "list"]).unwrap();
    assert!(vips.contains("waiting for announce.delay"), "{vips}");
    lab.wait_next_hops(&[0, 1], Duration::from_secs(30))
        .unwrap();
    assert!(
        started.elapsed() >= delay,
        "announced after {:?}, before the delay",
        started.elapsed()
    );
}

/// A controller restarted with `--keep-state` leaves its announcements
/// in place for the next one, which takes them over at once: the route
/// never loses the host, and no request fails. `lb-ctl detach` then
/// withdraws them.
#[test]
fn a_keep_state_restart_never_leaves_the_router() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-bgpk", 1).unwrap();
    lab.keep_state = true;
    lab.start_balancers(&config("interface: lb-vips, delay: 5s, drain: 3s"))
        .unwrap();
    let watch = HopWatch::start(&lab);
    let loop_ = client_loop(&lab, 0, 6000);
    std::thread::sleep(Duration::from_millis(500));
    lab.stop_balancer(0).unwrap();
    lab.start_balancer(0).unwrap();
    let status = lab.ctl(0, &["status"]).unwrap();
    assert!(
        status.contains("kept from the controller before"),
        "{status}"
    );
    all_served(loop_, "the client loop across the restart");
    let seen = watch.finish();
    assert_eq!(seen, vec![vec![0, 1]], "the route never changed");

    // Stopped for good and detached: the announcement goes too.
    lab.stop_balancer(0).unwrap();
    assert_eq!(lab.next_hops(), vec![0, 1], "--keep-state leaves it");
    let done = lab.detach(0).unwrap();
    assert!(
        done.contains(&format!("withdrew the announced VIP address(es) {VIP}")),
        "{done}"
    );
    lab.wait_next_hops(&[1], Duration::from_secs(10)).unwrap();
}

/// A VIP whose backends all fail their checks is announced by neither
/// host, and again once one passes; a reload to `when: always` announces
/// it whatever its backends.
#[test]
fn a_vip_without_a_healthy_backend_is_withdrawn_by_both_hosts() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-bgph", 1).unwrap();
    lab.start_balancers(&config("interface: lb-vips, delay: 0s, drain: 1s"))
        .unwrap();
    for b in 0..3 {
        lab.set_sick(b, true).unwrap();
    }
    lab.wait_next_hops(&[], Duration::from_secs(20)).unwrap();
    for i in 0..2 {
        let json = lab.ctl(i, &["vip", "list", "-o", "json"]).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(rows[0]["announce"]["announced"], false, "{json}");
        assert_eq!(
            rows[0]["announce"]["why"], "no backend up (0 of 3)",
            "{json}"
        );
        assert!(lab
            .ctl(i, &["stats"])
            .unwrap()
            .contains(&format!("lb_vip_announced{{address=\"{VIP}\"}} 0")));
    }
    lab.set_sick(1, false).unwrap();
    lab.wait_next_hops(&[0, 1], Duration::from_secs(20))
        .unwrap();
    let served = lab.http(0, 3).unwrap();
    assert!(
        served.iter().all(|r| r.backend() == Some("b2")),
        "{served:?}"
    );
    // `when: always`, by a reload: announced with every backend down.
    lab.set_sick(1, true).unwrap();
    lab.wait_next_hops(&[], Duration::from_secs(20)).unwrap();
    lab.write_config(&config(
        "interface: lb-vips, when: always, delay: 0s, drain: 1s",
    ))
    .unwrap();
    for i in 0..2 {
        lab.ctl(i, &["reload"]).unwrap();
    }
    lab.wait_next_hops(&[0, 1], Duration::from_secs(20))
        .unwrap();
    wait_for(Duration::from_secs(5), || {
        lab.ctl(0, &["status"])
            .unwrap_or_default()
            .contains("announce.when: always")
    })
    .unwrap();
}

/// The announce interface on one host (the plain, dual-stack lab; no BGP
/// daemon needed to see it): an IPv4 VIP's /32 and an IPv6 `mode: http`
/// VIP's /128 are put on it, the IPv6 one withdrawn while its backends
/// fail their checks (over IPv6) and put back when they pass; both stay
/// through a `kill -9` of the controller and the next controller's delay,
/// and are withdrawn at a stop.
#[test]
fn ipv6_and_ipv4_vip_addresses_are_announced_kept_through_a_crash_and_withdrawn() {
    let _g = serial();
    let mut lab = Lab::up("lba-six", Layout::Plain, 1, 3).unwrap();
    let backends = |v6: bool| -> String {
        lab.backends
            .iter()
            .map(|b| {
                let addr = if v6 {
                    b.addr6().to_string()
                } else {
                    b.addr.to_string()
                };
                format!("      - {{ address: \"{addr}\", port: 8080 }}\n")
            })
            .collect()
    };
    let config = format!(
        "announce: {{ interface: lb-vips, delay: 0s, drain: 0s }}\nvips:\n  - address: {VIP}\n    port: 80\n    backends:\n{}  - address: \"{VIP6}\"\n    port: 8000\n    mode: http\n    health_check: {{ kind: http, path: /health, interval: 300ms, timeout: 250ms, rise: 1, fall: 1 }}\n    backends:\n{}",
        backends(false),
        backends(true)
    );
    lab.start_balancer(&config).unwrap();
    let held = |lab: &Lab| {
        let out = lb_tests::netns::in_ns(
            &lab.balancer.ns,
            &["ip", "-o", "addr", "show", "dev", "lb-vips"],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
        (
            out.contains(&format!("inet {VIP}/32")),
            out.contains(&format!("inet6 {VIP6}/128")),
        )
    };
    wait_for(Duration::from_secs(10), || held(&lab) == (true, true))
        .unwrap_or_else(|_| panic!("{:?}\n{}", held(&lab), lab.controller_log()));
    for i in 0..3 {
        lab.set_sick(i, true).unwrap();
    }
    wait_for(Duration::from_secs(10), || held(&lab) == (true, false))
        .unwrap_or_else(|_| panic!("{:?}\n{}", held(&lab), lab.controller_log()));
    let metric = lab
        .metric(&format!("lb_vip_announced{{address=\"{VIP6}\"}}"))
        .unwrap();
    assert_eq!(metric, 0.0);
    lab.set_sick(1, false).unwrap();
    wait_for(Duration::from_secs(10), || held(&lab) == (true, true))
        .unwrap_or_else(|_| panic!("{:?}\n{}", held(&lab), lab.controller_log()));
    // kill -9: the addresses stay (a crash must not tell the routers
    // anything); the next controller keeps them at once, within its delay.
    lab.kill_balancer().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(held(&lab), (true, true), "a crash withdraws nothing");
    lab.start_balancer(&config.replace("delay: 0s", "delay: 60s"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        held(&lab),
        (true, true),
        "kept through the next controller's delay:\n{}",
        lab.controller_log()
    );
    lab.signal_balancer(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    wait_for(Duration::from_secs(10), || held(&lab) == (false, false))
        .unwrap_or_else(|_| panic!("{:?}\n{}", held(&lab), lab.controller_log()));
}
