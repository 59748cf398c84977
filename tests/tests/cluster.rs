//! Several balancer hosts in the `ecmp` lab: two hosts behind a router's
//! multipath route, DSR backends, Redis in its own namespace. Real
//! clients, real servers, real controllers, a real `redis-server`.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use lb_ctl::{
    kernel::lister::SessionView,
    model::{config::Config, services::Services},
};
use lb_tests::{
    ecmp::{EcmpLab, ANNOUNCE, PORT, REDIS},
    lab::{serial, wait_for, Running, VIP},
};

/// The ecmp lab's config: a `dsr` VIP with `maglev` and persistence over
/// b1..b3, shared through Redis when `cluster` is true.
fn config(cluster: bool) -> String {
    let mut c = format!(
        "sweeper: {{ interval: 1s }}\nvips:\n  - address: {VIP}\n    port: {PORT}\n    forwarding: dsr\n    scheduler: maglev\n    persistence: {{ timeout: 300s }}\n    backends:\n"
    );
    for b in 1..=3 {
        c.push_str(&format!(
            "      - {{ address: 198.18.1.1{b}, port: {PORT} }}\n"
        ));
    }
    if cluster {
        c.push_str(&format!("cluster:\n  store: \"{REDIS}\"\n"));
    }
    c + ANNOUNCE
}

/// The backend (its name, `b1`..) each client reaches, one new
/// connection per request. Fails unless every request of every client
/// succeeded, all of a client's on one backend.
fn backends(lab: &EcmpLab, clients: std::ops::Range<usize>, requests: u32) -> Vec<String> {
    clients
        .map(|c| {
            let r = lab.http(c, requests).unwrap();
            assert_eq!(r.len(), requests as usize, "client {c}: {r:?}");
            let first = r[0].backend();
            assert!(
                first.is_some() && r.iter().all(|x| x.backend() == first),
                "client {c}: every request succeeds, on one backend: {r:?}"
            );
            first.unwrap_or_default().to_string()
        })
        .collect()
}

/// Balancer `i`'s sessions: client -> backend address.
fn sessions(lab: &EcmpLab, i: usize) -> BTreeMap<Ipv4Addr, String> {
    lab.ctl(i, &["sessions", "-o", "json"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<SessionView>(l).ok())
        .filter_map(|s| Some((s.client, s.backend?.to_string())))
        .collect()
}

/// Which backend (name) the Maglev table of `services` gives `client`.
fn maglev_choice(services: &Services, client: Ipv4Addr) -> String {
    let v = services.vips().next().unwrap();
    let slot = lb_common::maglev_slot(v.slot, u32::from_ne_bytes(client.octets()), 0, 0, 0);
    let id = v.table[slot as usize];
    let b = v.backends.iter().find(|b| b.slot == id).unwrap();
    format!("b{}", b.endpoint.v4().octets()[3] - 10)
}

/// The point of sharing: a client pinned on lb-a keeps its backend on
/// lb-b after the backend set changed (so Maglev alone would move it)
/// and lb-a went away; a connection opened before the withdrawal still
/// works after it.
#[test]
fn shared_sessions_keep_clients_on_another_host_after_the_backend_set_changed() {
    let _g = serial();
    // Clients 16..20 come only at the end, as new clients.
    let mut lab = EcmpLab::up("lbm-cls", 20).unwrap();
    lab.start_redis().unwrap();
    lab.start_balancers(&config(true)).unwrap();
    lab.route_via(&[0]).unwrap();
    let pinned = backends(&lab, 0..16, 2);
    // lb-b learns every session through Redis.
    let addrs: Vec<Ipv4Addr> = lab.clients.iter().map(|c| c.1).collect();
    wait_for(Duration::from_secs(10), || {
        let s = sessions(&lab, 1);
        addrs[..16].iter().all(|a| s.contains_key(a))
    })
    .unwrap_or_else(|_| {
        panic!(
            "lb-b has lb-a's sessions: {:?}\n{}",
            sessions(&lab, 1),
            lab.log(1)
        )
    });
    // Adding b4 on both hosts changes the Maglev table: some clients'
    // slots now point elsewhere.
    let (_, mut model) = Config::parse(&config(false), "test").unwrap();
    let vip = model.vips().next().unwrap().spec.id;
    model
        .add_backend(&vip, format!("198.18.1.14:{PORT}").parse().unwrap(), 1)
        .unwrap();
    let movers: Vec<usize> = (0..16)
        .filter(|&c| maglev_choice(&model, addrs[c]) != pinned[c])
        .collect();
    assert!(
        !movers.is_empty(),
        "some client's Maglev slot changes with b4"
    );
    for i in 0..2 {
        lab.ctl(
            i,
            &[
                "backend",
                "add",
                &format!("{VIP}:{PORT}"),
                &format!("198.18.1.14:{PORT}"),
            ],
        )
        .unwrap();
    }
    // A long-lived connection through lb-a, across the withdrawal: its
    // first answer comes before the withdrawal.
    let mut long = Running::new(
        lab.spawn_http(
            movers[0],
            &["--keepalive", "--count", "100", "--interval-ms", "100"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        long.next_reply().unwrap().backend(),
        Some(pinned[movers[0]].as_str()),
        "the connection is open and served through lb-a"
    );
    lab.route_via(&[1]).unwrap();
    assert!(long.is_running(), "the connection spans the withdrawal");
    let before_b = lab.new_connections(1);
    let after = backends(&lab, 0..16, 3);
    assert_eq!(
        after, pinned,
        "every client keeps its backend on lb-b (movers: {movers:?})"
    );
    assert!(lab.new_connections(1) > before_b, "lb-b served them");
    let replies = long.finish().unwrap();
    assert_eq!(replies.len(), 100, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|r| r.backend() == Some(pinned[movers[0]].as_str())),
        "the connection opened before the withdrawal goes on: {replies:?}"
    );
    // New clients (no session anywhere) follow the new table on lb-b.
    let fresh = backends(&lab, 16..20, 2);
    let want: Vec<String> = (16..20)
        .map(|c| maglev_choice(&model, lab.clients[c].1))
        .collect();
    assert_eq!(fresh, want, "new clients follow the table with b4");
    let status = lab.ctl(1, &["status"]).unwrap();
    assert!(
        status.contains("store redis://198.18.1.10:6379 reachable"),
        "{status}"
    );
}

/// Redis dies (`kill -9`): both hosts go on forwarding, say so, and when
/// it returns (empty), the sessions created meanwhile reach the other host.
#[test]
fn stopping_redis_keeps_forwarding_and_sessions_catch_up() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-clr", 8).unwrap();
    lab.start_redis().unwrap();
    lab.start_balancers(&config(true)).unwrap();
    let before = backends(&lab, 0..4, 4);
    lab.kill_redis();
    for i in 0..2 {
        wait_for(Duration::from_secs(10), || {
            lab.log(i).contains("unreachable")
        })
        .unwrap_or_else(|_| panic!("host {i} says Redis is unreachable: {}", lab.log(i)));
    }
    for (i, node) in [(0, "lb-a"), (1, "lb-b")] {
        let stats = lab.ctl(i, &["stats"]).unwrap();
        assert!(
            stats.contains(&format!("lb_cluster_store_up{{node=\"{node}\"}} 0")),
            "{node} exports the store as down: {stats}"
        );
    }
    // Forwarding goes on, on both hosts, for known and new clients.
    assert_eq!(
        backends(&lab, 0..4, 3),
        before,
        "known clients keep their backends"
    );
    lab.route_via(&[0]).unwrap();
    // (`backends` fails unless every request succeeds.)
    backends(&lab, 4..8, 3);
    let fresh: Vec<Ipv4Addr> = lab.clients[4..8].iter().map(|c| c.1).collect();
    assert!(
        fresh.iter().all(|a| !sessions(&lab, 1).contains_key(a)),
        "lb-b cannot know them yet"
    );
    lab.start_redis().unwrap();
    for i in 0..2 {
        // Once at the start, once now.
        wait_for(Duration::from_secs(10), || {
            lab.log(i).matches("reachable as node").count() >= 2
        })
        .unwrap_or_else(|_| panic!("host {i} reconnects: {}", lab.log(i)));
    }
    // lb-a publishes its live sessions again; lb-b installs them.
    wait_for(Duration::from_secs(15), || {
        let s = sessions(&lab, 1);
        fresh.iter().all(|a| s.contains_key(a))
    })
    .unwrap_or_else(|_| panic!("lb-b catches up: {:?}\n{}", sessions(&lab, 1), lab.log(1)));
    let on_b = sessions(&lab, 1);
    let on_a = sessions(&lab, 0);
    for a in &fresh {
        assert_eq!(on_b[a], on_a[a], "{a}: the same backend on both hosts");
    }
    let stats = lab.ctl(1, &["stats"]).unwrap();
    assert!(
        stats.contains("lb_cluster_store_up{node=\"lb-b\"} 1"),
        "{}\n{}",
        lab.log(1),
        stats
            .lines()
            .filter(|l| l.starts_with("lb_cluster"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Removing a backend on both hosts moves only that backend's clients,
/// whichever host they reach.
#[test]
fn removing_a_backend_on_both_hosts_moves_only_its_clients() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-clm", 12).unwrap();
    lab.start_redis().unwrap();
    lab.start_balancers(&config(true)).unwrap();
    let before = backends(&lab, 0..12, 3);
    let (a, b) = (lab.new_connections(0), lab.new_connections(1));
    assert!(a > 0 && b > 0, "both hosts take connections: {a} and {b}");
    let gone = before[0].clone();
    let addr = format!("198.18.1.1{}:{PORT}", &gone[1..]);
    for i in 0..2 {
        lab.ctl(i, &["backend", "remove", &format!("{VIP}:{PORT}"), &addr])
            .unwrap();
    }
    let after = backends(&lab, 0..12, 3);
    for c in 0..12 {
        if before[c] == gone {
            assert_ne!(after[c], gone, "client {c} leaves the removed {gone}");
        } else {
            assert_eq!(after[c], before[c], "client {c} keeps {}", before[c]);
        }
    }
    // And stays put when its packets move to the other host.
    lab.route_via(&[1]).unwrap();
    assert_eq!(backends(&lab, 0..12, 2), after);
    lab.route_via(&[0]).unwrap();
    assert_eq!(backends(&lab, 0..12, 2), after);
}

/// A host whose Redis is not there yet starts and forwards anyway, says
/// so, and joins when Redis comes: what it holds reaches the other host.
#[test]
fn hosts_start_without_redis_and_join_when_it_comes() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-cln", 2).unwrap();
    lab.start_balancers(&config(true)).unwrap();
    lab.route_via(&[0]).unwrap();
    // (`backends` fails unless every request succeeds.)
    let pinned = backends(&lab, 0..2, 3);
    wait_for(Duration::from_secs(10), || {
        lab.log(0).contains("unreachable")
    })
    .unwrap_or_else(|_| panic!("lb-a says Redis is unreachable: {}", lab.log(0)));
    let status = lab.ctl(0, &["status"]).unwrap();
    assert!(status.contains("UNREACHABLE (going on alone)"), "{status}");
    lab.start_redis().unwrap();
    let addrs: Vec<Ipv4Addr> = lab.clients.iter().map(|c| c.1).collect();
    wait_for(Duration::from_secs(15), || {
        let s = sessions(&lab, 1);
        addrs.iter().all(|a| s.contains_key(a))
    })
    .unwrap_or_else(|_| panic!("lb-b gets lb-a's sessions: {}", lab.log(1)));
    lab.route_via(&[1]).unwrap();
    assert_eq!(backends(&lab, 0..2, 2), pinned);
}

/// `kill -9` of a host's controller: its data path goes on forwarding and
/// recording sessions nobody announces; the restarted controller takes
/// over and its first sweep publishes them, so the other host learns them.
#[test]
fn sessions_made_while_a_controller_was_dead_are_shared_after_its_restart() {
    let _g = serial();
    let mut lab = EcmpLab::up("lbm-clk", 6).unwrap();
    lab.start_redis().unwrap();
    lab.start_balancers(&config(true)).unwrap();
    lab.route_via(&[0]).unwrap();
    lab.kill_balancer(0);
    // (`backends` fails unless every request succeeds.)
    let pinned = backends(&lab, 0..6, 3);
    let addrs: Vec<Ipv4Addr> = lab.clients.iter().map(|c| c.1).collect();
    assert!(
        addrs.iter().all(|a| !sessions(&lab, 1).contains_key(a)),
        "nobody announced them"
    );
    lab.start_balancer(0).unwrap();
    assert!(
        lab.log(0).contains("took over the running data path"),
        "{}",
        lab.log(0)
    );
    wait_for(Duration::from_secs(15), || {
        let s = sessions(&lab, 1);
        addrs.iter().all(|a| s.contains_key(a))
    })
    .unwrap_or_else(|_| panic!("lb-b learns them: {:?}\n{}", sessions(&lab, 1), lab.log(0)));
    let on_b = sessions(&lab, 1);
    for (c, a) in addrs.iter().enumerate() {
        assert_eq!(
            on_b[a],
            format!("198.18.1.1{}:{PORT}", &pinned[c][1..]),
            "{a}"
        );
    }
    lab.route_via(&[1]).unwrap();
    assert_eq!(backends(&lab, 0..6, 2), pinned);
}
