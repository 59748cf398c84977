//! End to end in the veth lab: real clients, real backends, the real
//! controller and XDP program. The tests share the machine's CPUs and a
//! socket directory, so they run one at a time.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use lb_tests::lab::{all_ok, backends_of, serial, wait_for, Lab, Layout, Reply, Running, VIP};

fn config(vips: &str, extra: &str) -> String {
    format!("vips:\n{vips}\n{extra}")
}

/// A VIP block on 198.18.0.100:`port`.
fn vip(
    port: u16,
    proto: &str,
    sched: &str,
    persist: &str,
    mask: u8,
    backends: &[(u8, u32)],
) -> String {
    let mut s = format!(
        "  - address: {VIP}\n    port: {port}\n    protocol: {proto}\n    scheduler: {sched}\n    persistence: {{ timeout: {persist}, netmask: {mask} }}\n    backends:\n"
    );
    for (b, w) in backends {
        s.push_str(&format!(
            "      - {{ address: 198.18.1.{}, port: 8080, weight: {w} }}\n",
            10 + b
        ));
    }
    s
}

#[test]
fn client_sticks_to_one_backend_and_replies_come_from_the_vip() {
    let _g = serial();
    let mut lab = Lab::up("lbe-stick", Layout::Plain, 2, 3).unwrap();
    let cfg = config(
        &(vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)])
            + &vip(8080, "udp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)])),
        "",
    );
    lab.start_balancer(&cfg).unwrap();

    let r1 = lab.http(0, 80, &["--count", "25"]).unwrap();
    all_ok(&r1, &lab);
    let b1: BTreeSet<String> = backends_of(&r1).into_iter().collect();
    assert_eq!(
        b1.len(),
        1,
        "client 1 must stick to one backend over 25 connections: {r1:?}"
    );
    for r in &r1 {
        let Reply::Ok { seen, from, .. } = r else {
            unreachable!()
        };
        assert_eq!(
            seen.unwrap().ip(),
            lab.clients[0].addr,
            "the backend sees the client's real address"
        );
        assert_eq!(
            from.unwrap(),
            format!("{VIP}:80").parse().unwrap(),
            "the client talks to the VIP"
        );
    }
    // A second client is balanced too, and sticks as well.
    let r2 = lab.http(1, 80, &["--count", "20"]).unwrap();
    all_ok(&r2, &lab);
    assert_eq!(
        backends_of(&r2).into_iter().collect::<BTreeSet<_>>().len(),
        1,
        "{r2:?}"
    );

    // UDP: replies carry the VIP as their source, and stick too.
    let u = lab.udp(0, 8080, &["--count", "10"]).unwrap();
    all_ok(&u, &lab);
    for r in &u {
        let Reply::Ok { from, seen, .. } = r else {
            unreachable!()
        };
        assert_eq!(
            from.unwrap(),
            format!("{VIP}:8080").parse().unwrap(),
            "UDP reply source must be the VIP: {u:?}"
        );
        assert_eq!(seen.unwrap().ip(), lab.clients[0].addr);
    }
    assert_eq!(
        backends_of(&u).into_iter().collect::<BTreeSet<_>>().len(),
        1
    );

    let sessions = lab.ctl(&["sessions"]).unwrap();
    assert!(sessions.contains("198.18.0.11/32"), "{sessions}");
    assert!(sessions.contains("198.18.0.12/32"), "{sessions}");
    let conns = lab.ctl(&["conns"]).unwrap();
    assert!(conns.contains("198.18.0.11:"), "{conns}");
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        stats.contains(
            "lb_vip_connections_total{vip=\"198.18.0.100:80\",protocol=\"tcp\",name=\"\"} 45"
        ),
        "{stats}"
    );
    assert!(
        lab.stop_balancer().unwrap().success(),
        "{}",
        lab.controller_log()
    );
}

fn count(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in backends_of(replies) {
        *m.entry(b).or_insert(0) += 1;
    }
    m
}

/// Weighted spread without persistence: one cursor for the whole balancer
/// walks the table b1 b2 b1 b3, so 40 connections split exactly 20:10:10.
fn spread_by_weight(prefix: &str, layout: Layout) -> Lab {
    let mut lab = Lab::up(prefix, layout, 2, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "wrr", "0s", 32, &[(1, 2), (2, 1), (3, 1)]),
        "",
    ))
    .unwrap();
    let r = lab.http(0, 80, &["--count", "40"]).unwrap();
    all_ok(&r, &lab);
    let c = count(&r);
    let share = |b: &str| c.get(b).copied().unwrap_or(0);
    assert_eq!(
        (share("b1"), share("b2"), share("b3")),
        (20, 10, 10),
        "weights 2:1:1 over 40 connections"
    );
    for x in &r {
        let Reply::Ok { seen, .. } = x else {
            unreachable!()
        };
        assert_eq!(seen.unwrap().ip(), lab.clients[0].addr);
    }
    lab
}

#[test]
fn without_persistence_connections_spread_by_weight_two_arm() {
    let _g = serial();
    let lab = spread_by_weight("lbe-wrr", Layout::TwoArm);
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        stats.contains("lb_datapath_events_total{reason=\"redirect\"}"),
        "{stats}"
    );
    assert!(
        !stats.contains("lb_datapath_events_total{reason=\"redirect\"} 0"),
        "two-arm must redirect: {stats}"
    );
}

#[test]
fn without_persistence_connections_spread_by_weight_plain() {
    let _g = serial();
    let lab = spread_by_weight("lbe-wrrp", Layout::Plain);
    // The default attach chose generic mode, and said why.
    let log = lab.controller_log();
    assert!(
        log.contains("in generic mode") && log.contains("runs no XDP program"),
        "{log}"
    );
}

/// Three clients starting at the same moment on a three-backend `rr` VIP
/// land on three different backends, whatever CPU each lands on.
#[test]
fn simultaneous_first_clients_get_different_backends() {
    let _g = serial();
    let mut lab = Lab::up("lbe-three", Layout::Plain, 3, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)]),
        "",
    ))
    .unwrap();
    let started: Vec<_> = (0..3)
        .map(|c| lab.http_background(c, 80, &["--count", "1"]).unwrap())
        .collect();
    let mut got = BTreeSet::new();
    for child in started {
        let r = Lab::replies(child).unwrap();
        all_ok(&r, &lab);
        got.insert(r[0].backend().unwrap().to_string());
    }
    assert_eq!(got.len(), 3, "three clients, three backends: {got:?}");
}

#[test]
fn persistence_expires_after_its_timeout_and_the_client_moves() {
    let _g = serial();
    let mut lab = Lab::up("lbe-exp", Layout::Plain, 2, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "1s", 32, &[(1, 1), (2, 1), (3, 1)]),
        "sweeper:\n  interval: 1s\ntimeouts:\n  tcp_closing: 1s\n",
    ))
    .unwrap();
    // Back to back, the client sticks.
    let quick = lab.http(0, 80, &["--count", "5"]).unwrap();
    all_ok(&quick, &lab);
    assert_eq!(count(&quick).len(), 1, "{quick:?}");
    assert!(lab.ctl(&["sessions"]).unwrap().contains("198.18.0.11/32"));
    // Silent for longer than the timeout: the session is gone (also from the
    // table, once swept) and each connection is balanced afresh.
    // (Expired after 1 s, removed by a sweep within the next second; the
    // bound is generous for a busy machine.)
    wait_for(Duration::from_secs(15), || {
        lab.ctl(&["sessions"])
            .is_ok_and(|s| !s.contains("198.18.0.11/32"))
    })
    .unwrap_or_else(|_| {
        panic!(
            "expired session still listed:\n{}",
            lab.ctl(&["sessions"]).unwrap_or_default()
        )
    });
    let spaced = lab
        .http(0, 80, &["--count", "4", "--interval-ms", "1600"])
        .unwrap();
    all_ok(&spaced, &lab);
    assert!(
        count(&spaced).len() >= 2,
        "after expiry the client must be rebalanced: {spaced:?}"
    );
}

#[test]
fn backend_add_serves_new_clients() {
    let _g = serial();
    let mut lab = Lab::up("lbe-add", Layout::Plain, 2, 3).unwrap();
    lab.start_balancer(&config(
        &(vip(80, "tcp", "rr", "300s", 32, &[(1, 1)]) + &vip(81, "tcp", "rr", "0s", 32, &[(1, 1)])),
        "",
    ))
    .unwrap();
    let before = lab.http(0, 80, &["--count", "3"]).unwrap();
    all_ok(&before, &lab);
    assert_eq!(backends_of(&before), vec!["b1"; 3]);
    for port in ["80", "81"] {
        let vip_port = format!("{VIP}:{port}");
        let out = lab
            .ctl(&["backend", "add", &vip_port, "198.18.1.12:8080"])
            .unwrap();
        assert!(out.contains("added backend 198.18.1.12:8080"), "{out}");
    }
    let listing = lab.ctl(&["backend", "list", &format!("{VIP}:80")]).unwrap();
    assert!(listing.contains("198.18.1.12:8080"), "{listing}");
    // The pinned client stays; new connections of a plain VIP use b2 too.
    let sticky = lab.http(0, 80, &["--count", "4"]).unwrap();
    assert_eq!(backends_of(&sticky), vec!["b1"; 4]);
    let plain = lab.http(1, 81, &["--count", "6"]).unwrap();
    all_ok(&plain, &lab);
    assert!(
        count(&plain).get("b2").copied().unwrap_or(0) >= 2,
        "the new backend must serve: {plain:?}"
    );
    // Bad input is refused with a clear error and changes nothing.
    let err = lab
        .ctl(&["backend", "add", &format!("{VIP}:80"), "198.18.1.12:8080"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = lab
        .ctl(&[
            "backend",
            "add",
            &format!("{VIP}:80"),
            "198.18.1.13:8080",
            "--weight",
            "0",
        ])
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight 0"), "{err}");
    let err = lab
        .ctl(&["backend", "add", "198.18.0.200:80", "198.18.1.13:8080"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = lab
        .ctl(&["backend", "add", &format!("{VIP}:80"), "198.18.1.13"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("ADDRESS:PORT"), "{err}");
    // The same backends, states and weights (live counts have moved on).
    let columns = |l: &str| -> Vec<Vec<String>> {
        l.lines()
            .map(|r| r.split_whitespace().take(5).map(String::from).collect())
            .collect()
    };
    assert_eq!(
        columns(&lab.ctl(&["backend", "list", &format!("{VIP}:80")]).unwrap()),
        columns(&listing)
    );
}

#[test]
fn removing_the_pinned_backend_repins_without_a_failed_request() {
    let _g = serial();
    let mut lab = Lab::up("lbe-rm", Layout::Plain, 2, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)]),
        "",
    ))
    .unwrap();
    let first = lab.http(0, 80, &["--count", "1"]).unwrap();
    all_ok(&first, &lab);
    let pinned = first[0].backend().unwrap().to_string();
    let pinned_addr = lab.backends.iter().find(|b| b.name == pinned).unwrap().addr;
    let mut client = Running::new(
        lab.http_background(0, 80, &["--count", "30", "--interval-ms", "100"])
            .unwrap(),
    )
    .unwrap();
    // Served by the pinned backend before the removal...
    for _ in 0..3 {
        assert_eq!(
            client.next_reply().unwrap().backend(),
            Some(pinned.as_str())
        );
    }
    lab.ctl(&[
        "backend",
        "remove",
        &format!("{VIP}:80"),
        &format!("{pinned_addr}:8080"),
    ])
    .unwrap();
    // ...and still running after it.
    assert!(client.is_running(), "the removal happened under load");
    let r = client.finish().unwrap();
    all_ok(&r, &lab);
    assert_eq!(r.len(), 30);
    let seq = backends_of(&r);
    let switch = seq
        .iter()
        .position(|b| *b != pinned)
        .expect("the client must move off the removed backend");
    assert!(switch > 0, "it was pinned before the removal: {seq:?}");
    let new = &seq[switch];
    assert!(
        seq[switch..].iter().all(|b| b == new),
        "re-pinned to one backend: {seq:?}"
    );
    let sessions = lab.ctl(&["sessions"]).unwrap();
    assert!(
        sessions.contains("198.18.0.11/32") && !sessions.contains(&format!("{pinned_addr}:8080")),
        "{sessions}"
    );
}

#[test]
fn idle_entries_are_swept() {
    let _g = serial();
    let mut lab = Lab::up("lbe-sweep", Layout::OneArm, 2, 3).unwrap();
    // The per-sweep line is at debug level.
    lab.log_filter = Some("lb_ctl=debug".into());
    lab.start_balancer(&config(
        &(vip(80, "tcp", "rr", "0s", 32, &[(1, 1), (2, 1)])
            + &vip(8080, "udp", "rr", "0s", 32, &[(1, 1)])),
        "timeouts:\n  tcp_closing: 1s\n  udp: 2s\nsweeper:\n  interval: 1s\n",
    ))
    .unwrap();
    all_ok(&lab.http(0, 80, &["--count", "3"]).unwrap(), &lab);
    all_ok(&lab.udp(1, 8080, &["--count", "2"]).unwrap(), &lab);
    let conns = lab.ctl(&["conns"]).unwrap();
    assert!(
        conns.contains("198.18.0.11:") && conns.contains("CLOSING"),
        "{conns}"
    );
    assert!(
        conns.contains("198.18.0.12:") && conns.contains("udp"),
        "{conns}"
    );
    wait_for(Duration::from_secs(8), || {
        lab.ctl(&["conns"]).is_ok_and(|c| c.lines().count() == 1)
    })
    .unwrap_or_else(|_| {
        panic!(
            "entries not swept:\n{}\n{}",
            lab.ctl(&["conns"]).unwrap_or_default(),
            lab.controller_log()
        )
    });
    // A listing leaves expired entries out at once; the sweeper deletes
    // them at its next pass (once a second here): wait for it.
    wait_for(Duration::from_secs(8), || {
        lab.controller_log()
            .lines()
            .any(|l| l.contains("sweep: deleted") && !l.contains("deleted 0 of"))
    })
    .unwrap_or_else(|_| panic!("no sweep deleted them:\n{}", lab.controller_log()));
}

#[test]
fn long_lived_connection_survives_changes_to_other_backends() {
    let _g = serial();
    let mut lab = Lab::up("lbe-long", Layout::OneArm, 2, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "0s", 32, &[(1, 1), (2, 1)]),
        "",
    ))
    .unwrap();
    let client = lab
        .http_background(
            0,
            80,
            &["--keepalive", "--count", "30", "--interval-ms", "100"],
        )
        .unwrap();
    // Find the connection's backend, then change every other backend.
    let mut backend = None;
    wait_for(Duration::from_secs(5), || {
        let conns = lab.ctl(&["conns"]).unwrap_or_default();
        backend = conns
            .lines()
            .skip(1)
            .find_map(|l| l.split_whitespace().nth(2).map(str::to_string));
        backend.is_some()
    })
    .unwrap();
    let backend = backend.unwrap();
    let vip_port = format!("{VIP}:80");
    let other = if backend == "198.18.1.11:8080" {
        "198.18.1.12:8080"
    } else {
        "198.18.1.11:8080"
    };
    lab.ctl(&[
        "backend",
        "add",
        &vip_port,
        "198.18.1.13:8080",
        "--weight",
        "3",
    ])
    .unwrap();
    lab.ctl(&["backend", "remove", &vip_port, other]).unwrap();
    lab.ctl(&[
        "vip",
        "add",
        &format!("{VIP}:443"),
        "--persistence-timeout",
        "10s",
    ])
    .unwrap();
    lab.ctl(&["backend", "add", &format!("{VIP}:443"), other])
        .unwrap();
    let r = Lab::replies(client).unwrap();
    all_ok(&r, &lab);
    assert_eq!(r.len(), 30);
    let seen: BTreeSet<_> = r
        .iter()
        .map(|x| match x {
            Reply::Ok { backend, seen, .. } => (backend.clone(), *seen),
            Reply::Err(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "one connection, one backend throughout: {seen:?}"
    );
}

#[test]
fn attach_refuses_bad_input_and_leaves_nothing_attached() {
    let _g = serial();
    let mut lab = Lab::up("lbe-bad", Layout::OneArm, 1, 1).unwrap();
    let err = lab.start_balancer("vips:\n  - {address: 198.18.0.100, port: 80, backends: [{address: 198.18.1.11, port: 0}]}\n").unwrap_err();
    assert!(format!("{err:#}").contains("port 0"), "{err:#}");
    let err = lab
        .start_balancer("vips: []\nlimits: {max_connections: 10, colour: red}\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown field `colour`"),
        "{err:#}"
    );
    let link = lb_tests::netns::in_ns(&lab.balancer.ns, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "nothing may stay attached"
    );
    // An unknown interface is named.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.balancer.ns])
        .arg(lb_tests::lab::bin_dir().join("lb-ctl"))
        .args([
            "--socket",
            "/run/lb/lbe-bad-2.sock",
            "attach",
            "eth0",
            "nosuch0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interface \"nosuch0\" does not exist"));
    let link = lb_tests::netns::in_ns(&lab.balancer.ns, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "nothing may stay attached"
    );
    // A good config still works afterwards, and SIGINT detaches cleanly.
    lab.start_balancer_with(
        &config(&vip(80, "tcp", "rr", "0s", 32, &[(1, 1)]), ""),
        &["--metrics-address", "127.0.0.1:9917"],
    )
    .unwrap();
    all_ok(&lab.http(0, 80, &["--count", "2"]).unwrap(), &lab);
    let scrape = lb_tests::netns::in_ns(
        &lab.balancer.ns,
        &[
            "curl",
            "-sf",
            "--max-time",
            "5",
            "http://127.0.0.1:9917/metrics",
        ],
    )
    .unwrap();
    let scrape = String::from_utf8_lossy(&scrape.stdout);
    assert!(
        scrape.contains(
            "lb_vip_connections_total{vip=\"198.18.0.100:80\",protocol=\"tcp\",name=\"\"} 2"
        ),
        "{scrape}"
    );
    assert!(lab.stop_balancer().unwrap().success());
    let link = lb_tests::netns::in_ns(&lab.balancer.ns, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "SIGINT must detach"
    );
}

/// The data path outlives the controller: `kill -9` and a restart with
/// `--keep-state`, then a SIGTERM with `--keep-state` and another start
/// (as in an upgrade), under continuous new connections and with one
/// long-lived connection open. No request fails, the client keeps its
/// backend, the long-lived connection still works.
#[test]
fn the_data_path_outlives_controller_restarts() {
    let _g = serial();
    let mut lab = Lab::up("lbe-keep", Layout::Plain, 2, 3).unwrap();
    let bpffs = lab.bpffs();
    let cfg = config(
        &vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)]),
        "",
    );
    lab.start_balancer_with(&cfg, &["--keep-state"]).unwrap();
    // Client 2 first, so that a fresh start would give client 1 another
    // backend than the one it is pinned to.
    all_ok(&lab.http(1, 80, &["--count", "1"]).unwrap(), &lab);
    let first = lab.http(0, 80, &["--count", "1"]).unwrap();
    all_ok(&first, &lab);
    let pinned = first[0].backend().unwrap().to_string();
    // A long-lived connection: one request every 100 ms over one socket.
    // It and the new connections below must outlast every step; the
    // requests are many enough for the slowest machine, and each step
    // waits for answers instead of sleeping.
    let mut long = Running::new(
        lab.http_background(
            0,
            80,
            &["--count", "150", "--keepalive", "--interval-ms", "100"],
        )
        .unwrap(),
    )
    .unwrap();
    // Continuous new connections, one every 20 ms.
    let mut busy = Running::new(
        lab.http_background(0, 80, &["--count", "750", "--interval-ms", "20"])
            .unwrap(),
    )
    .unwrap();
    // Answers through each step: a failed one shows in the end.
    let progress = |busy: &mut Running, long: &mut Running, step: &str| {
        for _ in 0..5 {
            busy.next_reply().unwrap();
        }
        long.next_reply().unwrap();
        assert!(
            busy.is_running() && long.is_running(),
            "the load still runs after {step}"
        );
    };
    progress(&mut busy, &mut long, "the start");
    // The promise: no packet of theirs goes to the kernel, nor is dropped
    // for want of a VIP or backend, through the restarts and the upgrade
    // (a dropped SYN would be hidden by the client's retransmission).
    let lost = |lab: &Lab| {
        ["pass_not_vip", "drop_no_backend", "drop_conn_table_full"].map(|r| {
            lab.metric(&format!("lb_datapath_events_total{{reason=\"{r}\"}}"))
                .unwrap()
        })
    };
    let lost_before = lost(&lab);
    let prog_before = xdp_prog_id(&lab);
    lab.kill_balancer().unwrap();
    assert!(
        bpffs.join("lb/links/eth0").exists()
            && bpffs
                .join(format!("lb/v{}/SESSIONS", lb_common::LAYOUT_VERSION))
                .exists(),
        "the attachment and the tables stay pinned"
    );
    assert_eq!(
        xdp_prog_id(&lab),
        prog_before,
        "still attached after kill -9"
    );
    progress(&mut busy, &mut long, "kill -9 of the controller");
    lab.start_balancer_with(&cfg, &["--keep-state"]).unwrap();
    assert!(
        lab.controller_log()
            .contains("took over the running data path on eth0"),
        "{}",
        lab.controller_log()
    );
    let prog_after = xdp_prog_id(&lab);
    let tag_default = prog_tag(prog_after);
    assert_ne!(
        prog_after, prog_before,
        "the new program replaced the old one"
    );
    progress(&mut busy, &mut long, "the takeover");
    // Stop with --keep-state (as before an upgrade) and start again.
    assert!(lab.stop_balancer().unwrap().success());
    assert_eq!(
        xdp_prog_id(&lab),
        prog_after,
        "--keep-state leaves it attached"
    );
    // The upgrade: a changed program build replaces the running one
    // through the pinned link, on the kept tables.
    let variant = lab.workdir.join("lb-variant.o");
    std::fs::write(&variant, lb_tests::VARIANT_PROGRAM).unwrap();
    lab.start_balancer_with(
        &cfg,
        &["--keep-state", "--program", variant.to_str().unwrap()],
    )
    .unwrap();
    let prog_upgraded = xdp_prog_id(&lab);
    assert_ne!(prog_upgraded, prog_after);
    assert_ne!(
        prog_tag(prog_upgraded),
        tag_default,
        "another build (instruction stream) runs now"
    );
    progress(&mut busy, &mut long, "the upgrade");
    assert_eq!(lost(&lab), lost_before, "no packet lost to the kernel");
    let busy = busy.finish().unwrap();
    let long = long.finish().unwrap();
    all_ok(&busy, &lab);
    all_ok(&long, &lab);
    assert_eq!(busy.len(), 750);
    assert_eq!(
        backends_of(&busy),
        vec![pinned.clone(); 750],
        "the client stays"
    );
    assert_eq!(backends_of(&long), vec![pinned.clone(); 150]);
    let sessions = lab.ctl(&["sessions"]).unwrap();
    assert!(sessions.contains("198.18.0.11/32"), "{sessions}");
    // `detach` is refused while a controller runs.
    let out = lab
        .ctl_in_ns(&["detach", "eth0", "--bpffs", bpffs.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a controller is running"));
    // Stopped with --keep-state, then detached: nothing is left.
    assert!(lab.stop_balancer().unwrap().success());
    let out = lab
        .ctl_in_ns(&["detach", "eth0", "--bpffs", bpffs.to_str().unwrap()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(xdp_prog_id(&lab), 0, "detach removes the program");
    assert!(!bpffs.join("lb").exists());
    // Without --keep-state, SIGINT detaches and removes the pins.
    lab.start_balancer(&cfg).unwrap();
    assert!(lab.stop_balancer().unwrap().success());
    assert_eq!(xdp_prog_id(&lab), 0);
    assert!(!bpffs.join("lb").exists(), "{}", lab.controller_log());
}

/// The time of an env_logger line (`[2026-11-26T00:32:35.123Z INFO  …]`),
/// date included (a run may cross midnight).
fn log_time(line: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(line.get(1..25)?).ok()
}

/// The control socket answers while the sweeper deletes 2 M expired
/// connection entries: changes made through it are logged while the sweep
/// runs (between its start and its end as its own log line reports them).
#[test]
fn control_socket_answers_during_a_two_million_entry_sweep() {
    let _g = serial();
    let mut lab = Lab::up("lbe-sweep2m", Layout::Plain, 1, 2).unwrap();
    // The per-sweep line is at debug level.
    lab.log_filter = Some("lb_ctl=debug".into());
    let cfg = |sweep: &str| {
        config(
            &vip(80, "tcp", "rr", "0s", 32, &[(1, 1)]),
            &format!(
                "limits: {{ max_connections: 1000000 }}\ntimeouts: {{ tcp_syn: 1s }}\nsweeper: {{ interval: {sweep} }}\n"
            ),
        )
    };
    // Fill the pinned table while no sweep can run, then start a controller
    // that sweeps after a second.
    lab.start_balancer_with(&cfg("1h"), &["--keep-state"])
        .unwrap();
    let path = lab
        .bpffs()
        .join(format!("lb/v{}/CONNS", lb_common::LAYOUT_VERSION));
    let data = aya::maps::MapData::from_pin(&path).unwrap();
    let mut conns: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::Conn> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    let now = lb_ctl::kernel::clock::now_ns().unwrap();
    const ENTRIES: u32 = 2_000_000;
    // The kernel may refuse the last few entries of a full preallocated
    // map (README, "Limits"): fill it as far as it goes.
    let mut inserted = 0u32;
    for i in 0..ENTRIES {
        let key = lb_common::FlowKey {
            src_addr: u32::from_ne_bytes([198, 19, 0, 0]) ^ (i >> 16).to_be(),
            dst_addr: u32::from_ne_bytes(VIP.octets()),
            src_port: (i as u16).to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        };
        let conn = lb_common::Conn {
            last_seen_ns: now,
            state: lb_common::ConnState::TCP_SYN,
            ..lb_common::Conn::default()
        };
        if conns.insert(key, conn, 0).is_err() {
            break;
        }
        inserted += 1;
    }
    assert!(
        inserted >= ENTRIES - 1000,
        "only {inserted} of {ENTRIES} entries fit"
    );
    drop(conns);
    assert!(lab.stop_balancer().unwrap().success());
    lab.start_balancer_with(&cfg("1s"), &["--keep-state"])
        .unwrap();
    let vip80 = format!("{VIP}:80");
    let swept = |log: &str| {
        log.lines()
            .find(|l| l.contains(&format!("sweep: deleted {inserted} of")))
            .map(String::from)
    };
    let start = std::time::Instant::now();
    let mut i = 0u32;
    let sweep_line = loop {
        if let Some(l) = swept(&lab.controller_log()) {
            break l;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no sweep");
        let verb = if i.is_multiple_of(2) { "add" } else { "remove" };
        // As many changes as the socket takes: the sweep's window is what
        // it is, however fast the machine.
        lab.ctl(&["backend", verb, &vip80, "198.18.1.12:8080"])
            .unwrap();
        i += 1;
    };
    // "… in 1.293s" / "in 850.301ms": the sweep's own duration.
    let took = sweep_line.rsplit(" in ").next().unwrap();
    let took_ms = if let Some(ms) = took.strip_suffix("ms") {
        ms.parse::<f64>().unwrap()
    } else {
        took.strip_suffix('s').unwrap().parse::<f64>().unwrap() * 1000.0
    };
    let end = log_time(&sweep_line).unwrap();
    let began = end - Duration::from_secs_f64(took_ms / 1000.0);
    // Strictly inside the window (log times have millisecond resolution).
    let margin = Duration::from_millis(2);
    let during: Vec<String> = lab
        .controller_log()
        .lines()
        .filter(|l| l.contains("backend 198.18.1.12:8080"))
        .filter(|l| log_time(l).is_some_and(|t| t > began + margin && t + margin < end))
        .map(String::from)
        .collect();
    assert!(
        !during.is_empty(),
        "no change was served during the {took} sweep ({sweep_line})\n{}",
        lab.controller_log()
    );
}

/// The tag (hash of the instructions) of BPF program `id`.
fn prog_tag(id: u32) -> String {
    let out =
        lb_tests::netns::sh(&["bpftool", "-j", "prog", "show", "id", &id.to_string()]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tag"].as_str().unwrap().to_string()
}

/// A spoofed SYN flood (raw sockets, sources from a /17 of the lab's range,
/// bounded in count and time) against a sticky VIP with small tables: a
/// real client's new connections go through during it and at once after
/// it, a long-lived connection opened before it goes on, and no spoofed
/// source gets a session.
#[test]
fn a_spoofed_syn_flood_does_not_deny_service() {
    let _g = serial();
    let mut lab = Lab::up("lbe-flood", Layout::Plain, 2, 2).unwrap();
    const HALF_OPEN: u64 = 8192;
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1)]),
        &format!(
            "limits: {{ max_connections: 4096, max_half_open: {HALF_OPEN} }}\nsweeper: {{ interval: 1s }}\n"
        ),
    ))
    .unwrap();
    all_ok(&lab.http(0, 80, &["--count", "1"]).unwrap(), &lab);
    let long = lab
        .http_background(
            0,
            80,
            &["--count", "50", "--keepalive", "--interval-ms", "100"],
        )
        .unwrap();
    let flood = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.clients[1].ns])
        .arg(lb_tests::lab::bin_dir().join("lb-lab-node"))
        .args([
            "syn-flood",
            &format!("{VIP}:80"),
            "--sources",
            "198.19.0.0/17",
        ])
        .args(["--count", "1000000", "--seconds", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut flood = flood;
    // The flood is under way: the data path has scheduled its SYNs.
    let new_conns = |lab: &Lab| {
        lab.metric("lb_datapath_events_total{reason=\"new_conn\"}")
            .unwrap_or(0.0)
    };
    let before_flood = new_conns(&lab);
    wait_for(Duration::from_secs(10), || {
        new_conns(&lab) > before_flood + 1000.0
    })
    .expect("the flood reaches the balancer");
    let during = lab
        .http(
            0,
            80,
            &[
                "--count",
                "100",
                "--interval-ms",
                "10",
                "--timeout-ms",
                "3000",
            ],
        )
        .unwrap();
    assert!(
        matches!(flood.try_wait(), Ok(None)),
        "the flood lasted the whole measurement"
    );
    let out = flood.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let sent: u64 = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sent > 2 * HALF_OPEN,
        "the flood must outgrow the half-open table: {report}"
    );
    assert_eq!(during.len(), 100, "one line per connection: {during:?}");
    let ok = during.iter().filter(|r| r.backend().is_some()).count();
    assert!(
        ok * 100 >= during.len() * 99,
        "{ok} of {} connections during the flood ({report}): {during:?}",
        during.len()
    );
    let after = lab
        .http(0, 80, &["--count", "20", "--timeout-ms", "1000"])
        .unwrap();
    all_ok(&after, &lab);
    let long = Lab::replies(long).unwrap();
    all_ok(&long, &lab);
    assert_eq!(long.len(), 50);
    let sessions = lab.ctl(&["sessions"]).unwrap();
    assert!(
        sessions.contains("198.18.0.11/32") && !sessions.contains("198.19."),
        "{sessions}"
    );
    let stats = lab.ctl(&["stats"]).unwrap();
    assert!(
        metric(&lab, "lb_datapath_events_total{reason=\"new_conn\"}") > HALF_OPEN,
        "{stats}"
    );
}

/// Direct server return in the one-arm lab: the backends hold the VIP and
/// answer the clients straight over the bridge; the client sees the VIP
/// answer, the backend sees the client, the client sticks, and no reply
/// passes through the balancer.
#[test]
fn direct_server_return_answers_from_the_backends() {
    let _g = serial();
    let mut lab = Lab::up("lbe-dsr", Layout::OneArm, 2, 3).unwrap();
    lab.prepare_dsr_backends().unwrap();
    lab.start_balancer(&format!(
        "vips:\n  - address: {VIP}\n    port: 8080\n    forwarding: dsr\n    persistence: {{ timeout: 300s }}\n    backends:\n{}",
        (1..=3)
            .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: 8080 }}\n"))
            .collect::<String>()
    ))
    .unwrap();
    let passed_before = metric(&lab, "lb_datapath_events_total{reason=\"pass_not_vip\"}");
    let replies = lab.http(0, 8080, &["--count", "10"]).unwrap();
    all_ok(&replies, &lab);
    let first = replies[0].backend().unwrap().to_string();
    for r in &replies {
        let Reply::Ok {
            backend,
            seen,
            from,
        } = r
        else {
            unreachable!()
        };
        assert_eq!(*backend, first, "sticky");
        assert_eq!(
            seen.unwrap().ip(),
            std::net::IpAddr::V4(lab.clients[0].addr)
        );
        assert_eq!(from.unwrap(), format!("{VIP}:8080").parse().unwrap());
    }
    let other = lab.http(1, 8080, &["--count", "3"]).unwrap();
    all_ok(&other, &lab);
    assert_ne!(
        other[0].backend().unwrap(),
        first,
        "round robin for a new client"
    );
    assert_eq!(
        metric(&lab, "lb_datapath_events_total{reason=\"pass_not_vip\"}"),
        passed_before,
        "no reply came through the balancer"
    );
    // A backend on another port is refused.
    let err = lab
        .ctl(&["backend", "add", &format!("{VIP}:8080"), "198.18.1.14:9090"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be the VIP's (8080)"), "{err}");
}

/// Two balancer hosts behind an ECMP router with the same config (a `dsr`
/// VIP with `maglev`): both take clients, every client stays on one
/// backend whichever host its connections reach, and when one host is
/// withdrawn no client changes backend.
#[test]
fn two_hosts_behind_ecmp_agree_and_a_withdrawal_moves_no_client() {
    let _g = serial();
    let mut lab = lb_tests::ecmp::EcmpLab::up("lbm-ecmp", 23).unwrap();
    lab.start_balancers(&format!(
        "{}vips:\n  - address: {VIP}\n    port: {}\n    forwarding: dsr\n    scheduler: maglev\n    persistence: {{ timeout: 300s }}\n    backends:\n{}",
        lb_tests::ecmp::ANNOUNCE,
        lb_tests::ecmp::PORT,
        (1..=3)
            .map(|b| format!("      - {{ address: 198.18.1.1{b}, port: {} }}\n", lb_tests::ecmp::PORT))
            .collect::<String>()
    ))
    .unwrap();
    let mut backend_of = Vec::new();
    // Twenty client addresses, five connections each.
    for c in 0..20 {
        let r = lab.http(c, 5).unwrap();
        assert!(r.iter().all(|x| x.backend().is_some()), "client {c}: {r:?}");
        let first = r[0].backend().unwrap().to_string();
        assert!(
            r.iter().all(|x| x.backend() == Some(first.as_str())),
            "client {c} stays on one backend across both hosts: {r:?}"
        );
        backend_of.push(first);
    }
    let (a, b) = (lab.new_connections(0), lab.new_connections(1));
    assert!(a > 0 && b > 0, "both hosts take connections: {a} and {b}");
    // lb-b is withdrawn: every packet now reaches lb-a, which has never
    // seen some of these clients; none changes backend.
    lab.route_via(&[0]).unwrap();
    for (c, want) in backend_of.iter().enumerate() {
        let r = lab.http(c, 3).unwrap();
        assert!(
            r.iter().all(|x| x.backend() == Some(want.as_str())),
            "client {c} keeps {want}: {r:?}"
        );
    }
    assert_eq!(lab.new_connections(1), b, "lb-b sees nothing any more");
    // Clients that only lb-b knows (it alone is announced while they
    // connect) move to lb-a, which has never seen them, arriving there in
    // the opposite order: each keeps its backend (no shared state needed,
    // while the backend set is unchanged).
    lab.route_via(&[1]).unwrap();
    let mut on_b = Vec::new();
    for c in 20..23 {
        let r = lab.http(c, 2).unwrap();
        assert!(r.iter().all(|x| x.backend().is_some()), "client {c}: {r:?}");
        on_b.push(r[0].backend().unwrap().to_string());
    }
    let before_a = lab.new_connections(0);
    lab.route_via(&[0]).unwrap();
    for c in (20..23).rev() {
        let r = lab.http(c, 2).unwrap();
        assert!(
            r.iter().all(|x| x.backend() == Some(on_b[c - 20].as_str())),
            "client {c} keeps {} on the other host: {r:?}",
            on_b[c - 20]
        );
    }
    assert!(lab.new_connections(0) > before_a, "lb-a served them");
}

/// The id of the XDP program on the balancer's eth0 (0: none).
fn xdp_prog_id(lab: &Lab) -> u32 {
    let out = lb_tests::netns::in_ns(
        &lab.balancer.ns,
        &["ip", "-j", "-d", "link", "show", "eth0"],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["xdp"]["prog"]["id"].as_u64().unwrap_or(0) as u32
}

/// Pinned maps of another shape or layout are refused, naming what differs;
/// an explicit native attach that would drop frames is refused, naming the
/// interface, the reason and the fix.
#[test]
fn attach_refuses_foreign_pins_and_impossible_native_mode() {
    let _g = serial();
    let mut lab = Lab::up("lbe-pins", Layout::Plain, 1, 1).unwrap();
    let bpffs = lab.bpffs();
    let cfg = config(&vip(80, "tcp", "rr", "0s", 32, &[(1, 1)]), "");
    let err = lab
        .start_balancer_with(&cfg, &["--xdp-mode", "native"])
        .unwrap_err();
    let msg = format!("{err:#}");
    for part in [
        "eth0",
        "runs no XDP program",
        "--xdp-mode generic",
        "--xdp-mode auto",
    ] {
        assert!(msg.contains(part), "{part:?} missing: {msg}");
    }
    assert_eq!(xdp_prog_id(&lab), 0);
    // A CONNS map of another value size where this build keeps its own.
    let dir = bpffs.join(format!("lb/v{}", lb_common::LAYOUT_VERSION));
    std::fs::create_dir_all(&dir).unwrap();
    lb_tests::netns::sh(&[
        "bpftool",
        "map",
        "create",
        dir.join("CONNS").to_str().unwrap(),
        "type",
        "hash",
        "key",
        "16",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "CONNS",
    ])
    .unwrap();
    let err = lab.start_balancer(&cfg).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is not the CONNS this build expects")
            && msg.contains("value size 8 bytes (this build: 48)"),
        "{msg}"
    );
    assert_eq!(xdp_prog_id(&lab), 0, "nothing attached");
    let accept_local = lb_tests::netns::in_ns(
        &lab.balancer.ns,
        &["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"],
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&accept_local.stdout).trim(),
        "0",
        "a refused attach leaves the interface settings as they were"
    );
    std::fs::remove_file(dir.join("CONNS")).unwrap();
    // Tables of an older layout (pinned straight in lb/) are refused too.
    lb_tests::netns::sh(&[
        "bpftool",
        "map",
        "create",
        bpffs.join("lb/SESSIONS").to_str().unwrap(),
        "type",
        "hash",
        "key",
        "8",
        "value",
        "16",
        "entries",
        "16",
        "name",
        "SESSIONS",
    ])
    .unwrap();
    let err = lab.start_balancer(&cfg).unwrap_err();
    assert!(format!("{err:#}").contains("layout v1"), "{err:#}");
    // `detach` clears them, and the next attach works.
    let out = lab
        .ctl_in_ns(&["detach", "eth0", "--bpffs", bpffs.to_str().unwrap()])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    lab.start_balancer(&cfg).unwrap();
    all_ok(&lab.http(0, 80, &["--count", "2"]).unwrap(), &lab);
    // A second controller on the same tables (another socket) is refused:
    // it would take the running one's links over.
    let second = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.balancer.ns])
        .arg(lb_tests::lab::bin_dir().join("lb-ctl"))
        .args(["--socket", "/run/lb/lbe-pins-second.sock", "attach", "eth0"])
        .args(["--bpffs", bpffs.to_str().unwrap()])
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        msg.contains("another lb-ctl attach (pid") && msg.contains("/run/lb/lbe-pins.sock"),
        "{msg}"
    );
    all_ok(&lab.http(0, 80, &["--count", "2"]).unwrap(), &lab);
}

/// The value of one sample line of `lb-ctl stats` (Prometheus text) whose
/// name and labels start with `prefix`; 0 when there is none.
fn metric(lab: &Lab, prefix: &str) -> u64 {
    lab.ctl(&["stats"])
        .unwrap()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A native attach whose veth peer stops taking XDP frames afterwards:
/// the driver's drops show up as `lb_device_xdp_errors_total` and the log
/// warns, naming the interface and the fix.
#[test]
fn device_xdp_errors_are_exported_and_warned_about() {
    let _g = serial();
    let mut lab = Lab::up("lbe-xdperr", Layout::OneArm, 1, 1).unwrap();
    lab.start_balancer(&config(&vip(80, "tcp", "rr", "0s", 32, &[(1, 1)]), ""))
        .unwrap();
    assert!(
        lab.controller_log().contains("in native mode"),
        "the prepared peer allows native mode: {}",
        lab.controller_log()
    );
    all_ok(&lab.http(0, 80, &["--count", "2"]).unwrap(), &lab);
    let tx_errors =
        "lb_device_xdp_errors_total{interface=\"eth0\",statistic=\"rx_queue_0_xdp_tx_errors\"}";
    assert!(
        lab.ctl(&["stats"]).unwrap().contains(tx_errors),
        "the veth's counter is exported"
    );
    assert_eq!(metric(&lab, tx_errors), 0);
    lab.stop_xdp_helpers();
    let lost = lab
        .http(0, 80, &["--count", "2", "--timeout-ms", "500"])
        .unwrap();
    assert!(lost.iter().all(|r| r.backend().is_none()), "{lost:?}");
    assert!(metric(&lab, tx_errors) > 0);
    wait_for(Duration::from_secs(10), || {
        lab.controller_log().contains("eth0: the driver dropped")
    })
    .unwrap_or_else(|_| panic!("no warning: {}", lab.controller_log()));
    assert!(lab.controller_log().contains("--xdp-mode generic"));
}

/// Clients whose neighbour entry the balancer does not hold (fresh
/// addresses, never seen before) connect: the first reply goes through the
/// kernel, which resolves the neighbour, and later connections take the
/// fast path.
fn fresh_client_addresses_connect(prefix: &str, layout: Layout) {
    let mut lab = Lab::up(prefix, layout, 1, 3).unwrap();
    lab.start_balancer(&config(
        &vip(80, "tcp", "rr", "300s", 32, &[(1, 1), (2, 1), (3, 1)]),
        "",
    ))
    .unwrap();
    // The client talks to the VIP first from its own address, so it holds
    // the VIP's MAC address and the new addresses send no ARP request the
    // balancer could learn them from (as on a busy segment).
    all_ok(&lab.http(0, 80, &["--count", "1"]).unwrap(), &lab);
    let ns = lab.clients[0].ns.clone();
    let curl = |addr: &str| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "3"])
            .args(["--interface", addr, &format!("http://{VIP}:80/")])
            .output()
            .unwrap()
    };
    for i in 0..5u8 {
        let addr = format!("198.18.0.{}", 31 + i);
        lb_tests::netns::ip(&format!("-n {ns} addr add {addr}/24 dev eth0")).unwrap();
        let first = curl(&addr);
        assert!(
            first.status.success(),
            "{addr}: {}\n{}",
            String::from_utf8_lossy(&first.stderr),
            lab.ctl(&["stats"]).unwrap()
        );
        let unresolved = no_neigh(&lab);
        let again = curl(&addr);
        assert!(again.status.success(), "{addr} again");
        assert_eq!(
            no_neigh(&lab),
            unresolved,
            "{addr}: the next connection takes the fast path"
        );
    }
    assert!(no_neigh(&lab) >= 1, "the unresolved case was exercised");
}

fn no_neigh(lab: &Lab) -> u64 {
    let stats = lab.ctl(&["stats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("lb_datapath_events_total{reason=\"pass_no_neigh\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn fresh_client_addresses_connect_plain() {
    let _g = serial();
    fresh_client_addresses_connect("lbe-neigh", Layout::Plain);
}

#[test]
fn fresh_client_addresses_connect_two_arm() {
    let _g = serial();
    fresh_client_addresses_connect("lbe-neigh2", Layout::TwoArm);
}
