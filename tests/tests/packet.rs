//! Packet tests: frames through the real XDP program with
//! BPF_PROG_TEST_RUN. Every frame's verdict is checked, and every frame
//! whose output the test is about is compared byte for byte with one built
//! from scratch (checksums recomputed by `lb_tests::packet`); frames that
//! only fill tables are checked by verdict and destination.
//!
//! Each test gets its own network namespace with a FIB the program's
//! `bpf_fib_lookup` can use: interface `d0` (one-arm: clients 198.18.0.0/24
//! and backends 198.18.1.0/24) and `e0` (a second arm, 198.18.2.0/24), with
//! permanent neighbour entries so the MAC addresses are known.

use std::{net::Ipv4Addr, time::Duration};

use lb_common::{conn::conn_flags, ConnState, Reason, SessionKey};
use lb_ctl::model::{endpoint::Protocol, sched::Scheduler};
use lb_tests::{
    fib::{
        B1, B1_MAC, B2, B2_MAC, B3, C1, C1_MAC, C2, D0_MAC, E0_MAC, FAR, FAR_MAC, UNRESOLVED, VIP,
    },
    packet::{verify, Frame, ACK, FIN, PSH, RST, SYN},
    testbed::*,
};

#[test]
fn new_flow_is_dnated_and_recorded_in_both_directions() {
    let mut b = Bench::new("new");
    b.vip(Protocol::Tcp, 0, 32);
    let f = to_vip((C1, 40000), SYN);
    assert_forwarded(&b, &f, B1, B1_MAC);
    assert!(
        b.confirmed(key((C1, 40000), (VIP, 80), 6)).is_none(),
        "a SYN is not a connection yet"
    );
    let fwd = b
        .unconfirmed(key((C1, 40000), (VIP, 80), 6))
        .expect("forward entry");
    assert_eq!(
        (fwd.state, fwd.flags & conn_flags::REPLY),
        (ConnState::TCP_SYN, 0)
    );
    assert_eq!(fwd.nat_addr, u32::from_ne_bytes(B1.octets()));
    let rep = b
        .conn(key((B1, 8080), (C1, 40000), 6))
        .expect("reply entry");
    assert_eq!(rep.flags & conn_flags::REPLY, conn_flags::REPLY);
    assert_eq!(rep.nat_addr, u32::from_ne_bytes(VIP.octets()));
    assert_eq!(b.reason(Reason::NEW_CONN), 1);
    assert_eq!(b.reason(Reason::TX), 1);
}

#[test]
fn without_persistence_new_flows_take_turns() {
    let mut b = Bench::new("rr");
    b.vip(Protocol::Tcp, 0, 32);
    let got: Vec<Ipv4Addr> = (0..6).map(|i| new_conn(&b, (C1, 41000 + i))).collect();
    assert_eq!(got, vec![B1, B2, B3, B1, B2, B3]);
}

/// New flows sent alternately from two threads pinned to different CPUs
/// (BPF_PROG_TEST_RUN runs the program on the calling CPU) take turns over
/// the backends: the cursor is one for the whole balancer, not one per CPU.
#[test]
fn round_robin_takes_turns_across_cpus() {
    use std::sync::mpsc;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine has {cpus}"
    );
    let mut b = Bench::new("rr-cpus");
    b.vip(Protocol::Tcp, 300, 32);
    let b = &b;
    // Each thread waits for its turn, opens one connection from a new
    // client and passes the turn (with what it saw) to the other.
    let (to_a, a_turns) = mpsc::channel::<Vec<(usize, Ipv4Addr)>>();
    let (to_b, b_turns) = mpsc::channel::<Vec<(usize, Ipv4Addr)>>();
    let (done, result) = mpsc::channel();
    const ROUNDS: u8 = 6;
    std::thread::scope(|scope| {
        for (cpu, turns, next) in [(0usize, a_turns, to_b.clone()), (1, b_turns, to_a.clone())] {
            let done = done.clone();
            scope.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
                while let Ok(mut seen) = turns.recv() {
                    // SAFETY: sched_getcpu has no preconditions.
                    assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32);
                    let n = seen.len() as u8;
                    let client = Ipv4Addr::new(198, 18, 0, 20 + n);
                    seen.push((cpu, new_conn(b, (client, 40000))));
                    if seen.len() == usize::from(2 * ROUNDS) {
                        done.send(seen).unwrap();
                        return;
                    }
                    if next.send(seen).is_err() {
                        return;
                    }
                }
            });
        }
        // Only the threads hold senders from here on, so a thread that fails
        // ends the other one and this wait instead of hanging.
        to_a.send(Vec::new()).unwrap();
        drop((to_a, to_b, done));
        let seen = result.recv().expect("a thread failed");
        let cpus: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            cpus,
            [0, 1].repeat(usize::from(ROUNDS)),
            "the threads alternate"
        );
        let backends: Vec<Ipv4Addr> = seen.iter().map(|s| s.1).collect();
        assert_eq!(
            backends,
            [B1, B2, B3].repeat(usize::from(2 * ROUNDS) / 3),
            "consecutive new clients take turns whatever CPU they arrive on"
        );
    });
}

#[test]
fn established_flow_keeps_its_backend_and_state_follows_flags() {
    let mut b = Bench::new("est");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 40001);
    assert_eq!(new_conn(&b, c), B1);
    // Other clients move the scheduler on...
    assert_eq!(new_conn(&b, (C2, 50000)), B2);
    // ...but this connection stays on B1. The client's ACK after the
    // backend's SYN-ACK confirms it: it moves to the connection table.
    answer(&b, c, B1);
    assert!(b.confirmed(key(c, (VIP, 80), 6)).is_none());
    assert_forwarded(&b, &to_vip(c, ACK), B1, B1_MAC);
    assert!(b.unconfirmed(key(c, (VIP, 80), 6)).is_none());
    assert!(b.unconfirmed(key((B1, 8080), c, 6)).is_none());
    assert_eq!(b.reason(Reason::CONFIRMED), 1);
    assert_eq!(
        b.confirmed(key(c, (VIP, 80), 6)).unwrap().state,
        ConnState::TCP_ESTABLISHED
    );
    assert_eq!(
        b.confirmed(key((B1, 8080), c, 6)).unwrap().state,
        ConnState::TCP_ESTABLISHED,
        "twin follows"
    );
    assert_forwarded(&b, &to_vip(c, PSH | ACK), B1, B1_MAC);
    assert_forwarded(&b, &to_vip(c, FIN | ACK), B1, B1_MAC);
    assert_eq!(
        b.conn(key(c, (VIP, 80), 6)).unwrap().state,
        ConnState::TCP_CLOSING
    );
    assert_eq!(
        b.conn(key((B1, 8080), c, 6)).unwrap().state,
        ConnState::TCP_CLOSING
    );
    // RST on another connection closes it too.
    let c2 = (C1, 40002);
    new_conn(&b, c2);
    let (v, _) = b.run(&to_vip(c2, RST).build());
    assert_eq!(v, XDP_TX);
    assert_eq!(
        b.conn(key(c2, (VIP, 80), 6)).unwrap().state,
        ConnState::TCP_CLOSING
    );
}

#[test]
fn reply_is_snated_back_to_the_vip() {
    let mut b = Bench::new("reply");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 40003);
    assert_eq!(new_conn(&b, c), B1);
    let reply = Frame::tcp((B1, 8080), c, SYN | ACK).macs(B1_MAC, D0_MAC);
    let (verdict, out) = b.run(&reply.build());
    assert_eq!(verdict, XDP_TX);
    verify(&out).unwrap();
    let expected = Frame {
        src: VIP,
        sport: 80,
        ..reply
    }
    .macs(D0_MAC, C1_MAC)
    .build();
    assert_eq!(out, expected);
    // A backend's packet to a client it has no connection with is not touched.
    let stray = Frame::tcp((B2, 8080), c, ACK).macs(B2_MAC, D0_MAC).build();
    assert_eq!(b.run(&stray), (XDP_PASS, stray.clone()));
}

#[test]
fn persistence_pins_new_connections_of_a_client() {
    let mut b = Bench::new("sticky");
    b.vip(Protocol::Tcp, 300, 32);
    let first = connect(&b, (C1, 42000));
    for port in 42001..42010 {
        assert_eq!(new_conn(&b, (C1, port)), first, "client must stick");
    }
    // Another client is balanced afresh (the scheduler moved on once).
    assert_ne!(new_conn(&b, (C2, 42000)), first);
    assert_eq!(b.reason(Reason::SESSION_HIT), 9);
    let vip_slot = b.services.vip(&vip_id(Protocol::Tcp)).unwrap().slot;
    let s =
        b.dp.tables
            .sessions
            .get(
                &SessionKey {
                    vip_id: vip_slot,
                    client: u32::from_ne_bytes(C1.octets()),
                },
                0,
            )
            .unwrap();
    assert_eq!(s.backend_id, 0);
}

/// The announcements on the `SESSION_EVENTS` ring so far.
fn announced(b: &mut Bench) -> Vec<lb_common::SessionEvent> {
    let ring = b.dp.session_events.as_mut().expect("loaded with the ring");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<lb_common::SessionEvent>());
        // SAFETY: the ring carries `SessionEvent`s; read unaligned.
        out.push(unsafe {
            item.as_ptr()
                .cast::<lb_common::SessionEvent>()
                .read_unaligned()
        });
    }
    out
}

#[test]
fn shared_vips_announce_each_new_session_once_at_confirmation() {
    let mut b = Bench::with_all_limits("announce", 1000, 1000, 1000, true);
    b.vip(Protocol::Tcp, 300, 24);
    // Unconfirmed: a SYN only (a spoofed client) announces nothing.
    let first = new_conn(&b, (C1, 42000));
    assert!(announced(&mut b).is_empty(), "nothing before confirmation");
    answer(&b, (C1, 42000), first);
    assert_forwarded(&b, &to_vip((C1, 42000), ACK), first, mac_of(first));
    let events = announced(&mut b);
    assert_eq!(events.len(), 1, "{events:?}");
    let prefix = Ipv4Addr::new(C1.octets()[0], C1.octets()[1], C1.octets()[2], 0);
    let s = b.session(prefix, false).unwrap();
    let slot = b.services.vip(&vip_id(Protocol::Tcp)).unwrap().slot;
    let client = u32::from_ne_bytes(prefix.octets());
    assert_eq!(
        events[0],
        lb_common::SessionEvent {
            vip_id: slot,
            backend_id: s.backend_id,
            backend_gen: s.backend_gen,
            family: 4,
            _pad: [0; 3],
            client: [client, 0, 0, 0],
            created_ns: s.created_ns,
            last_seen_ns: s.created_ns,
        }
    );
    // The client's next connections renew the session: no new
    // announcement (refresh passes carry those).
    assert_eq!(connect(&b, (C1, 42001)), first);
    assert!(announced(&mut b).is_empty());
}

/// More new sessions than the ring holds while nobody reads it: every
/// session is either announced or counted as lost, none vanishes, and the
/// controller's next sweep then publishes every live session.
#[test]
fn a_full_ring_counts_what_it_loses() {
    let mut b = Bench::with_all_limits("ringfull", 30_000, 30_000, 1000, true);
    b.vip(Protocol::Tcp, 300, 32);
    // The controller's side (its store unreachable: nothing listens on
    // port 1 of loopback), with the data path's loss counter.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let cluster = lb_ctl::cluster::store::Cluster::start(
        lb_ctl::model::config::ClusterSettings {
            store: "redis://127.0.0.1:1".into(),
            password: None,
            ca: None,
            node: "test".into(),
            stream: "lb:test".into(),
            stream_max_len: 1000,
        },
        lb_ctl::cluster::Directory::new(&b.services),
        b.dp.tables.sessions_handle().unwrap(),
        None,
        b.dp.session_events_lost.take(),
    )
    .unwrap();
    let now = lb_ctl::kernel::clock::now_ns().unwrap();
    let slot = b.services.vip(&vip_id(Protocol::Tcp)).unwrap().slot;
    // The first pass takes every live session; the next is 75 s away.
    assert_eq!(cluster.due(now).get(&slot), Some(&0));
    assert!(cluster.due(now + 1).is_empty());
    const SESSIONS: u32 = 20_000;
    for i in 0..SESSIONS {
        let client = (
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i),
            40_000,
        );
        let [syn, _, ack] = lb_tests::fib::handshake(b.dp.program().unwrap(), client).unwrap();
        assert_eq!((syn, ack), (XDP_TX, XDP_TX));
    }
    let announced = announced(&mut b).len() as u64;
    // A loss makes the next sweep publish every live session.
    assert_eq!(cluster.due(now + 2).get(&slot), Some(&0));
    let lost = cluster
        .counters
        .ring_lost
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lost > 0 && announced > 10_000,
        "announced {announced}, lost {lost}"
    );
    assert_eq!(announced + lost, u64::from(SESSIONS));
}

#[test]
fn without_cluster_nothing_is_announced() {
    let mut b = Bench::with_all_limits("quiet", 1000, 1000, 1000, false);
    assert!(b.dp.session_events.is_none());
    b.vip(Protocol::Tcp, 300, 32);
    connect(&b, (C1, 42000));
    // The gate the data path reads: neither the VIP nor its connections
    // carry the sharing flag.
    let vip = b.dp.tables.vips.iter().next().unwrap().unwrap().1;
    assert_eq!(vip.flags & lb_common::maps::vip_flags::SHARED, 0);
    let c = b.confirmed(key((C1, 42000), (VIP, 80), 6)).unwrap();
    assert_eq!(c.flags & lb_common::conn::conn_flags::SHARED, 0);
}

#[test]
fn persistence_netmask_groups_clients() {
    let mut b = Bench::new("mask");
    b.vip(Protocol::Tcp, 300, 24);
    let first = new_conn(&b, (C1, 43000));
    assert_eq!(new_conn(&b, (C2, 43000)), first, "same /24, same backend");
    assert_eq!(new_conn(&b, (C2, 43001)), first);
}

#[test]
fn expired_persistence_lets_the_client_move() {
    let mut b = Bench::new("expire");
    b.vip(Protocol::Tcp, 300, 32);
    assert_eq!(connect(&b, (C1, 44000)), B1);
    assert_eq!(new_conn(&b, (C1, 44001)), B1);
    // Backdate the session past its timeout; the sweeper has not run.
    let slot = b.services.vip(&vip_id(Protocol::Tcp)).unwrap().slot;
    let k = SessionKey {
        vip_id: slot,
        client: u32::from_ne_bytes(C1.octets()),
    };
    assert!(b.dp.tables.sessions.get(&k, 0).is_ok());
    // Let the session go idle past its timeout without backdating it (a
    // backdated timestamp would depend on the machine's uptime): shrink the
    // timeout to 1 ms and wait well past it (the clock is coarse).
    b.set_persistence_timeout(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        connect(&b, (C1, 44002)),
        B2,
        "expired session: scheduler decides"
    );
    b.set_persistence_timeout(Duration::from_secs(300));
    assert_eq!(new_conn(&b, (C1, 44003)), B2, "and the new choice sticks");
}

#[test]
fn session_ends_at_its_max_lifetime_even_while_busy() {
    let mut b = Bench::new("lifetime");
    b.vip(Protocol::Tcp, 300, 32);
    // No lifetime: a busy client stays, however long.
    assert_eq!(new_conn(&b, (C1, 44100)), B1);
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(new_conn(&b, (C1, 44101)), B1);
    // A 30 ms lifetime (the VIP is set up again, which starts the session
    // afresh): the client keeps talking, yet after 30 ms it is balanced
    // anew, and the new session sticks.
    b.set_max_lifetime(Duration::from_millis(30));
    let first = new_conn(&b, (C1, 44102));
    assert_eq!(new_conn(&b, (C1, 44103)), first, "within its lifetime");
    std::thread::sleep(Duration::from_millis(40));
    let next = new_conn(&b, (C1, 44104));
    assert_ne!(next, first, "past its lifetime the scheduler decides");
    assert_eq!(
        new_conn(&b, (C1, 44105)),
        next,
        "and the new session sticks"
    );
}

#[test]
fn down_or_draining_backends_get_no_new_client() {
    let mut b = Bench::new("health");
    b.vip(Protocol::Tcp, 300, 32);
    let id = vip_id(Protocol::Tcp);
    let old = (C1, 45100);
    assert_eq!(new_conn(&b, old), B1);
    // Down: C1 is re-pinned at its next connection; B1 takes no new
    // client; C1's established connection to B1 goes on.
    b.change(|s| s.set_down(&id, ep(B1, 8080), true).unwrap());
    let moved = new_conn(&b, (C1, 45101));
    assert_ne!(moved, B1);
    assert_eq!(new_conn(&b, (C1, 45102)), moved);
    for port in 45103..45109 {
        assert_ne!(new_conn(&b, (C2, port)), B1);
    }
    assert_forwarded(&b, &to_vip(old, ACK), B1, B1_MAC);
    // Up again: B1 takes new clients.
    b.change(|s| s.set_down(&id, ep(B1, 8080), false).unwrap());
    let seen: Vec<Ipv4Addr> = (0..3u8)
        .map(|i| new_conn(&b, (Ipv4Addr::new(198, 18, 0, 50 + i), 45110)))
        .collect();
    assert!(seen.contains(&B1), "{seen:?}");
    // Draining: C1 (pinned to `moved`) stays; new clients never get it.
    b.change(|s| s.drain(&id, ep(moved, 8080), false).unwrap());
    assert_eq!(new_conn(&b, (C1, 45111)), moved, "the session is kept");
    for i in 0..6u8 {
        assert_ne!(
            new_conn(&b, (Ipv4Addr::new(198, 18, 0, 60 + i), 45112)),
            moved
        );
    }
    // Draining with re-pinning: C1 moves at its next connection.
    b.change(|s| s.drain(&id, ep(moved, 8080), true).unwrap());
    let again = new_conn(&b, (C1, 45113));
    assert_ne!(again, moved);
    // Every backend down: new connections are dropped and counted.
    b.change(|s| {
        for x in [B1, B2, B3] {
            s.set_down(&id, ep(x, 8080), true).unwrap();
        }
    });
    let (v, _) = b.run(&to_vip((Ipv4Addr::new(198, 18, 0, 70), 45114), SYN).build());
    assert_eq!(v, XDP_DROP);
    assert_eq!(b.reason(Reason::DROP_NO_BACKEND), 1);
}

#[test]
fn removed_backend_loses_sessions_but_keeps_established_flows() {
    let mut b = Bench::new("remove");
    b.vip(Protocol::Tcp, 300, 32);
    let old = (C1, 45000);
    assert_eq!(new_conn(&b, old), B1);
    b.change(|s| {
        s.remove_backend(&vip_id(Protocol::Tcp), ep(B1, 8080))
            .unwrap();
    });
    // The client's next connection is re-pinned to a serving backend.
    let moved = new_conn(&b, (C1, 45001));
    assert_ne!(moved, B1);
    assert_eq!(new_conn(&b, (C1, 45002)), moved);
    // The established connection to B1 is not cut.
    assert_forwarded(&b, &to_vip(old, ACK), B1, B1_MAC);
    // Changes to other backends leave established flows alone.
    let keep = (C2, 45003);
    let kb = new_conn(&b, keep);
    b.change(|s| {
        s.add_backend(&vip_id(Protocol::Tcp), ep(B1, 8081), 1)
            .unwrap();
    });
    assert_forwarded(&b, &to_vip(keep, ACK), kb, mac_of(kb));
}

#[test]
fn expired_connection_counts_as_absent() {
    let mut b = Bench::new("connexp");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 46000);
    assert_eq!(new_conn(&b, c), B1);
    let k = key(c, (VIP, 80), 6);
    assert!(b.conn(k).is_some());
    // Let the half-open entry go idle past the SYN timeout without
    // backdating it (that would depend on the machine's uptime): shrink the
    // timeout to 1 ms and wait well past it (the clock is coarse).
    b.set_syn_timeout(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(new_conn(&b, c), B2, "a stale entry must not pin the flow");
    // The sweeper deletes expired entries and keeps live ones: C1's new
    // half-open connection expires under the 1 ms SYN timeout, C2's
    // established one (900 s) does not.
    let rk = key((B2, 8080), c, 6);
    assert!(b.conn(rk).is_some());
    b.set_syn_timeout(Duration::from_secs(60));
    let live = (C2, 46001);
    connect(&b, live);
    b.set_syn_timeout(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(30));
    let report = b.dp.tables.sweep(&b.services).unwrap();
    // C1's unconfirmed flows expired under the 1 ms SYN timeout: no live
    // one is left (the data path reuses their ways); C2's connection is
    // established and kept.
    assert_eq!(report.half_open.left(), 0, "{report:?}");
    assert_eq!(report.connections.deleted, 0);
    assert_eq!(report.connections.left(), 2);
    assert!(b.confirmed(key(live, (VIP, 80), 6)).is_some());
}

#[test]
fn udp_checksums_are_patched_and_zero_stays_zero() {
    let mut b = Bench::new("udp");
    b.vip(Protocol::Udp, 0, 32);
    let f = Frame::udp((C1, 5353), (VIP, 80)).macs(C1_MAC, D0_MAC);
    let (v, out) = b.run(&f.build());
    assert_eq!(v, XDP_TX);
    verify(&out).unwrap();
    assert_eq!(
        out,
        Frame {
            dst: B1,
            dport: 8080,
            ..f.clone()
        }
        .macs(D0_MAC, B1_MAC)
        .build()
    );
    assert_eq!(
        b.conn(key((C1, 5353), (VIP, 80), 17)).unwrap().state,
        ConnState::UDP
    );

    let mut nock = Frame::udp((C1, 5354), (VIP, 80)).macs(C1_MAC, D0_MAC);
    nock.udp_no_checksum = true;
    let (v, out) = b.run(&nock.build());
    assert_eq!(v, XDP_TX);
    assert_eq!(
        out,
        Frame {
            dst: B2,
            dport: 8080,
            ..nock.clone()
        }
        .macs(D0_MAC, B2_MAC)
        .build()
    );
    assert_eq!(
        &out[40..42],
        &[0, 0],
        "a datagram without checksum keeps none"
    );
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let mut b = Bench::new("pass");
    b.vip(Protocol::Tcp, 0, 32);
    let cases: Vec<(Vec<u8>, u32)> = vec![
        // TCP to the balancer itself and to the VIP on another port.
        (
            Frame::tcp((C1, 1000), (Ipv4Addr::new(198, 18, 0, 1), 22), SYN).build(),
            Reason::PASS_NOT_VIP,
        ),
        (
            Frame::tcp((C1, 1000), (VIP, 81), SYN).build(),
            Reason::PASS_NOT_VIP,
        ),
        // UDP to a TCP-only VIP.
        (
            Frame::udp((C1, 1000), (VIP, 80)).build(),
            Reason::PASS_NOT_VIP,
        ),
        // ICMP echo to the VIP.
        (
            {
                let mut f = Frame::udp((C1, 0x0800), (VIP, 0)).build();
                f[23] = 1;
                f
            },
            Reason::PASS_NOT_TCP_UDP,
        ),
        // ARP.
        (
            {
                let mut f = vec![0xff; 6];
                f.extend_from_slice(&C1_MAC);
                f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
                f.extend_from_slice(&C1_MAC);
                f.extend_from_slice(&C1.octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&VIP.octets());
                f
            },
            Reason::PASS_NOT_IP,
        ),
    ];
    for (frame, reason) in cases {
        let before = b.reason(reason);
        assert_eq!(b.run(&frame), (XDP_PASS, frame.clone()));
        assert_eq!(
            b.reason(reason),
            before + 1,
            "reason {}",
            Reason::NAMES[reason as usize]
        );
    }
    assert_eq!(b.reason(Reason::NEW_CONN), 0);
}

#[test]
fn truncated_and_malformed_input_passes_untouched_and_is_counted() {
    let mut b = Bench::new("bad");
    b.vip(Protocol::Tcp, 0, 32);
    let good = to_vip((C1, 47000), SYN).build();
    let mut cases: Vec<(Vec<u8>, u32)> = vec![
        // (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.)
        (good[..14].to_vec(), Reason::PASS_TRUNCATED), // Ethernet header only
        (good[..30].to_vec(), Reason::PASS_TRUNCATED), // inside IPv4
        (good[..40].to_vec(), Reason::PASS_TRUNCATED), // inside TCP
        (good[..good.len() - 1].to_vec(), Reason::PASS_TRUNCATED), // shorter than tot_len
    ];
    let mut f = good.clone();
    f[14] = 0x44; // IHL 4
    cases.push((f, Reason::PASS_MALFORMED));
    let mut f = good.clone();
    f[14] = 0x65; // version 6 in an IPv4 ethertype
    cases.push((f, Reason::PASS_MALFORMED));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&10u16.to_be_bytes()); // tot_len below the header
    cases.push((f, Reason::PASS_MALFORMED));
    let mut f = good.clone();
    f[46] = 0x40; // TCP data offset 4
    cases.push((f, Reason::PASS_MALFORMED));
    let mut f = good.clone();
    f[14] = 0x46; // IHL 6: options
    cases.push((f, Reason::PASS_IP_OPTIONS));
    let mut f = good.clone();
    f[20] = 0x20; // more fragments
    cases.push((f, Reason::PASS_FRAGMENT));
    let mut f = good.clone();
    f[20] = 0x00;
    f[21] = 0x10; // fragment offset
    cases.push((f, Reason::PASS_FRAGMENT));
    for (i, (frame, reason)) in cases.into_iter().enumerate() {
        let before = b.reason(reason);
        assert_eq!(b.run(&frame), (XDP_PASS, frame.clone()), "case {i}");
        assert_eq!(
            b.reason(reason),
            before + 1,
            "case {i}: reason {}",
            Reason::NAMES[reason as usize]
        );
    }
    assert_eq!(b.reason(Reason::NEW_CONN), 0, "nothing was tracked");
}

#[test]
fn vip_without_backends_drops() {
    let mut b = Bench::new("empty");
    b.vip_with(Protocol::Tcp, Scheduler::Rr, 0, 32, &[]);
    let (v, _) = b.run(&to_vip((C1, 48000), SYN).build());
    assert_eq!(v, XDP_DROP);
    assert_eq!(b.reason(Reason::DROP_NO_BACKEND), 1);
}

#[test]
fn full_connection_table_drops_new_flows_only() {
    let mut b = Bench::with_limits("full", 1, 1000);
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 49000);
    assert_eq!(connect(&b, c), B1);
    // The next handshake goes through the half-open table, but the table
    // of established connections has no room for it: its confirming ACK
    // is dropped and nothing of it is kept.
    let late = (C1, 49001);
    assert_eq!(new_conn(&b, late), B2);
    answer(&b, late, B2);
    let (v, _) = b.run(&to_vip(late, ACK).build());
    assert_eq!(v, XDP_DROP);
    assert_eq!(b.reason(Reason::DROP_CONN_TABLE_FULL), 1);
    assert!(
        b.conn(key(late, (VIP, 80), 6)).is_none() && b.conn(key((B2, 8080), late, 6)).is_none(),
        "no half-recorded connection"
    );
    assert_forwarded(&b, &to_vip(c, ACK), B1, B1_MAC);
}

/// A flood of spoofed SYNs (nobody completes their handshakes) fills the
/// half-open table only: no established connection is evicted, no session
/// is created, a legitimate handshake completes, and the flood's entries
/// expire on the half-open timeout.
#[test]
fn a_syn_flood_fills_only_the_half_open_table() {
    let mut b = Bench::with_all_limits("flood", 1000, 1000, 64, false);
    b.vip(Protocol::Tcp, 300, 32);
    let est = (C1, 50000);
    assert_eq!(connect(&b, est), B1);
    for i in 0..1000u16 {
        let spoofed = (Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8), 1024 + i);
        let (v, _) = b.run(&to_vip(spoofed, SYN).build());
        assert_eq!(v, XDP_TX, "forwarded to a backend");
    }
    assert_eq!(
        b.dp.tables.conns.keys().count(),
        2,
        "only the established connection"
    );
    // The flood cycled through the half-open and pending tables: its
    // first flows were evicted to make room for its last ones (only its
    // own kind: the established connection is still there, above).
    let spoofed = |i: u16| (Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8), 1024 + i);
    let flow = |i| key(spoofed(i), (VIP, 80), 6);
    assert!(
        b.unconfirmed(flow(0)).is_none(),
        "the first flow was evicted"
    );
    assert!(b.unconfirmed(flow(999)).is_some(), "the last flow is there");
    assert!(
        b.session(spoofed(0).0, true).is_none(),
        "the first pending session was evicted"
    );
    assert!(
        b.session(spoofed(999).0, true).is_some(),
        "the last one is there"
    );
    assert_eq!(
        b.dp.tables.sessions.keys().count(),
        1,
        "spoofed SYNs leave no session"
    );
    // A real client still gets through, and the established flow goes on.
    connect(&b, (C2, 50001));
    assert!(b.session(C2, false).is_some());
    assert_forwarded(&b, &to_vip(est, ACK), B1, B1_MAC);
    // The flood's entries expire on the half-open timeout; the connection
    // table keeps its (900 s) entries.
    b.set_syn_timeout(Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(30));
    let late = (Ipv4Addr::new(198, 19, 3, 231), 1024 + 999);
    let synack = Frame::tcp((B1, 8080), late, SYN | ACK)
        .macs(B1_MAC, D0_MAC)
        .build();
    assert_eq!(
        b.run(&synack).0,
        XDP_PASS,
        "an expired half-open entry is gone"
    );
    let report = b.dp.tables.sweep(&b.services).unwrap();
    assert_eq!(report.half_open.left(), 0, "{report:?}");
    assert_eq!(report.connections.left(), 4);
    assert_forwarded(&b, &to_vip(est, ACK), B1, B1_MAC);
}

/// A new client's parallel first connections share one backend through
/// its pending session; the session itself is recorded only when one of
/// them is confirmed.
#[test]
fn parallel_first_connections_share_a_pending_session() {
    let mut b = Bench::new("pending");
    b.vip(Protocol::Tcp, 300, 32);
    let first = new_conn(&b, (C1, 51000));
    assert_eq!(new_conn(&b, (C1, 51001)), first);
    assert_eq!(new_conn(&b, (C1, 51002)), first);
    assert_eq!(b.reason(Reason::PENDING_HIT), 2);
    assert!(b.session(C1, false).is_none(), "not confirmed yet");
    assert_eq!(b.session(C1, true).unwrap().backend_id, 0);
    answer(&b, (C1, 51001), first);
    assert_forwarded(&b, &to_vip((C1, 51001), ACK), first, mac_of(first));
    assert_eq!(b.session(C1, false).unwrap().backend_id, 0);
    assert_eq!(new_conn(&b, (C1, 51003)), first);
    assert_eq!(b.reason(Reason::SESSION_HIT), 1);
}

/// UDP: a flow is confirmed by the client's next datagram after the
/// backend's answer.
#[test]
fn udp_flow_is_confirmed_by_the_next_datagram_after_an_answer() {
    let mut b = Bench::new("udpc");
    b.vip(Protocol::Udp, 0, 32);
    let c = (C1, 5400);
    let f = Frame::udp(c, (VIP, 80)).macs(C1_MAC, D0_MAC).build();
    assert_eq!(b.run(&f).0, XDP_TX);
    assert_eq!(b.run(&f).0, XDP_TX, "a second datagram before any answer");
    let k = key(c, (VIP, 80), 17);
    assert!(b.unconfirmed(k).is_some() && b.confirmed(k).is_none());
    let answer = Frame::udp((B1, 8080), c).macs(B1_MAC, D0_MAC).build();
    assert_eq!(b.run(&answer).0, XDP_TX);
    assert!(
        b.confirmed(k).is_none(),
        "the answer alone confirms nothing"
    );
    assert_eq!(b.run(&f).0, XDP_TX);
    assert!(b.confirmed(k).is_some() && b.unconfirmed(k).is_none());
    assert!(b.confirmed(key((B1, 8080), c, 17)).is_some());
    assert_eq!(b.reason(Reason::CONFIRMED), 1);
}

/// Where the controller's Maglev table sends connection `c` (no
/// persistence: the whole 5-tuple is hashed).
fn maglev_expected(b: &Bench, c: (Ipv4Addr, u16)) -> Ipv4Addr {
    let v = b.services.vip(&vip_id(Protocol::Tcp)).unwrap();
    let slot = lb_common::maglev_slot(
        v.slot,
        u32::from_ne_bytes(c.0.octets()),
        u32::from_ne_bytes(VIP.octets()),
        (u32::from(c.1.to_be()) << 16) | u32::from(80u16.to_be()),
        6,
    );
    let id = v.table[slot as usize];
    v.backends
        .iter()
        .find(|x| x.slot == id)
        .unwrap()
        .endpoint
        .v4()
}

/// A Maglev VIP sends each connection where the table built by the
/// controller points, also a packet that arrives mid-flow with no entry
/// (a flow that moved from another host); removing a backend moves only
/// its own flows (and very few others).
#[test]
fn maglev_follows_the_table_and_removal_moves_few_flows() {
    let mut b = Bench::new("maglev");
    b.vip_with(
        Protocol::Tcp,
        Scheduler::Maglev,
        0,
        32,
        &[(B1, 1), (B2, 1), (B3, 1)],
    );
    let flows: Vec<(Ipv4Addr, u16)> = (0..60u16)
        .map(|i| (Ipv4Addr::new(198, 18, 0, 11 + (i % 2) as u8), 52000 + i))
        .collect();
    let mut before = Vec::new();
    for (i, &c) in flows.iter().enumerate() {
        let want = maglev_expected(&b, c);
        // Half as new connections, half as packets of flows this host has
        // never seen (mid-flow ACKs).
        if i % 2 == 0 {
            assert_eq!(new_conn(&b, c), want, "{c:?}");
        } else {
            assert_forwarded(&b, &to_vip(c, ACK), want, mac_of(want));
        }
        before.push(want);
    }
    let spread: std::collections::BTreeSet<_> = before.iter().collect();
    assert_eq!(spread.len(), 3, "{before:?}");
    b.change(|s| {
        s.remove_backend(&vip_id(Protocol::Tcp), ep(B3, 8080))
            .unwrap();
    });
    let mut moved = 0;
    for (&c, &was) in flows.iter().zip(&before) {
        let now = maglev_expected(&b, (c.0, c.1 + 1000));
        let again = maglev_expected(&b, c);
        assert_ne!(again, B3);
        if was != B3 && again != was {
            moved += 1;
        }
        // The data path agrees with the new table on new flows.
        assert_eq!(new_conn(&b, (c.0, c.1 + 1000)), now);
    }
    assert!(moved <= 1, "{moved} flows of the other backends moved");
}

/// A Maglev table swap under traffic drops nothing: while one thread sends
/// new flows through the program, another removes and re-adds a backend
/// over and over (each change writes only the slots that change); every
/// packet leaves for one of the backends, with that backend's MAC.
#[test]
fn maglev_table_swap_under_traffic_drops_nothing() {
    let mut b = Bench::new("mgswap");
    b.vip_with(
        Protocol::Tcp,
        Scheduler::Maglev,
        0,
        32,
        &[(B1, 1), (B2, 1), (B3, 1)],
    );
    let with_b3 = b.services.clone();
    let mut without_b3 = with_b3.clone();
    without_b3
        .remove_backend(&vip_id(Protocol::Tcp), ep(B3, 8080))
        .unwrap();
    let (prog, tables) = b.dp.program_and_tables().unwrap();
    let swapping = std::sync::atomic::AtomicBool::new(true);
    const SWAPS: usize = 40;
    let (sent, verdicts) = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            let mut sent = 0u32;
            let mut bad = Vec::new();
            let mut seen = std::collections::BTreeMap::<Ipv4Addr, u32>::new();
            // Until the swaps are done, and at least 5000 flows.
            while swapping.load(std::sync::atomic::Ordering::Acquire) || sent < 5000 {
                let client = (
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 8, 0)) + sent / 50_000),
                    (10_000 + sent % 50_000) as u16,
                );
                let f = to_vip(client, SYN);
                let (verdict, out, _) = lb_tests::fib::run(prog, &f.build(), 1).unwrap();
                let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
                if verdict != XDP_TX
                    || ![B1, B2, B3].contains(&backend)
                    || out != expect_forward(&f, backend, mac_of(backend))
                {
                    bad.push((client, verdict, backend));
                }
                *seen.entry(backend).or_default() += 1;
                sent += 1;
            }
            (sent, bad, seen)
        });
        for i in 0..SWAPS {
            let (from, to) = if i % 2 == 0 {
                (&with_b3, &without_b3)
            } else {
                (&without_b3, &with_b3)
            };
            tables.apply(from, to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        swapping.store(false, std::sync::atomic::Ordering::Release);
        let (sent, bad, seen) = traffic.join().unwrap();
        (sent, (bad, seen))
    });
    let (bad, seen) = verdicts;
    assert!(
        bad.is_empty(),
        "{} of {sent} packets went wrong: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(seen.len(), 3, "all three backends took flows: {seen:?}");
    assert_eq!(b.reason(Reason::DROP_NO_BACKEND), 0);
}

/// Direct server return: a packet to a `dsr` VIP leaves with its
/// addresses, ports and checksums as they were, only the MAC addresses
/// rewritten for the backend; only the forward direction is recorded, and
/// the client's ACK confirms the flow (the SYN-ACK never passes here).
#[test]
fn dsr_rewrites_only_the_mac_addresses() {
    let mut b = Bench::new("dsr");
    b.dsr_vip(Scheduler::Rr, 300);
    b.change(|s| {
        // A backend port other than the VIP's is refused.
        assert!(s
            .add_backend(&vip_id(Protocol::Tcp), ep(B3, 8080), 1)
            .unwrap_err()
            .to_string()
            .contains("must be the VIP's (80)"));
    });
    let c = (C1, 53000);
    for (flags, what) in [(SYN, "SYN"), (ACK, "ACK"), (PSH | ACK, "data")] {
        let f = to_vip(c, flags);
        let (verdict, out) = b.run(&f.build());
        assert_eq!(verdict, XDP_TX, "{what}");
        assert_eq!(
            out,
            f.clone().macs(D0_MAC, B1_MAC).build(),
            "{what}: only the MACs change"
        );
    }
    let fwd = key(c, (VIP, 80), 6);
    assert!(b.confirmed(fwd).is_some(), "the client's ACK confirmed it");
    assert!(b.unconfirmed(fwd).is_none());
    assert!(b.conn(key((B1, 80), c, 6)).is_none(), "no reply half");
    assert!(b.session(C1, false).is_some());
    // The client's next connection sticks to B1.
    let f = to_vip((C1, 53001), SYN);
    let (_, out) = b.run(&f.build());
    assert_eq!(out, f.macs(D0_MAC, B1_MAC).build());
    // A backend whose neighbour is unresolved: dropped and counted (the
    // kernel could not forward a packet addressed to its own VIP).
    b.change(|s| {
        s.remove_backend(&vip_id(Protocol::Tcp), ep(B1, 80))
            .unwrap();
        s.remove_backend(&vip_id(Protocol::Tcp), ep(B2, 80))
            .unwrap();
        s.add_backend(&vip_id(Protocol::Tcp), ep(UNRESOLVED, 80), 1)
            .unwrap();
    });
    let (v, _) = b.run(&to_vip((C2, 53002), SYN).build());
    assert_eq!(v, XDP_DROP);
    assert_eq!(b.reason(Reason::DROP_DSR_NO_NEIGH), 1);
}

#[test]
fn full_session_table_still_serves() {
    let mut b = Bench::with_limits("sfull", 1000, 1);
    b.vip(Protocol::Tcp, 300, 32);
    connect(&b, (C1, 49100));
    // C2's session finds no room; its connection is served all the same.
    connect(&b, (C2, 49100));
    assert_eq!(b.reason(Reason::SESSION_TABLE_FULL), 1);
}

#[test]
fn unresolved_neighbour_hands_the_rewritten_packet_to_the_kernel() {
    let mut b = Bench::new("noneigh");
    b.vip_with(Protocol::Tcp, Scheduler::Rr, 0, 32, &[(UNRESOLVED, 1)]);
    let f = to_vip((C1, 49200), SYN);
    let (v, out) = b.run(&f.build());
    assert_eq!(v, XDP_PASS);
    // Rewritten, MACs untouched: the kernel forwards it and resolves ARP.
    assert_eq!(
        out,
        Frame {
            dst: UNRESOLVED,
            dport: 8080,
            ..f.clone()
        }
        .build()
    );
    assert_eq!(b.reason(Reason::PASS_NO_NEIGH), 1);
}

#[test]
fn backend_behind_another_attached_interface_is_redirected() {
    let mut b = Bench::new("twoarm");
    b.vip_with(Protocol::Tcp, Scheduler::Rr, 0, 32, &[(FAR, 1)]);
    let f = to_vip((C1, 49300), SYN);
    let (v, out) = b.run(&f.build());
    assert_eq!(v, XDP_REDIRECT);
    verify(&out).unwrap();
    assert_eq!(
        out,
        Frame {
            dst: FAR,
            dport: 8080,
            ..f.clone()
        }
        .macs(E0_MAC, FAR_MAC)
        .build()
    );
    assert_eq!(b.reason(Reason::REDIRECT), 1);
}

#[test]
fn weighted_vip_spreads_by_weight() {
    let mut b = Bench::new("wrr");
    b.vip_with(Protocol::Tcp, Scheduler::Wrr, 0, 32, &[(B1, 3), (B2, 1)]);
    let got: Vec<Ipv4Addr> = (0..8).map(|i| new_conn(&b, (C1, 49400 + i))).collect();
    assert_eq!(got.iter().filter(|&&a| a == B1).count(), 6);
    assert_eq!(got.iter().filter(|&&a| a == B2).count(), 2);
}

#[test]
fn removing_a_vip_purges_its_state() {
    let mut b = Bench::new("vipdel");
    b.vip(Protocol::Tcp, 300, 32);
    new_conn(&b, (C1, 49500));
    b.change(|s| {
        s.remove_vip(&vip_id(Protocol::Tcp)).unwrap();
    });
    assert!(b.conn(key((C1, 49500), (VIP, 80), 6)).is_none());
    assert_eq!(b.dp.tables.sessions.keys().count(), 0);
    let f = to_vip((C1, 49500), ACK).build();
    assert_eq!(b.run(&f), (XDP_PASS, f.clone()));
}

#[test]
fn established_flows_cache_the_next_hop_for_a_second() {
    let mut b = Bench::new("nhcache");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 49600);
    assert_eq!(connect(&b, c), B1);
    assert_forwarded(&b, &to_vip(c, ACK), B1, B1_MAC);
    let cached = b.conn(key(c, (VIP, 80), 6)).unwrap().next_hop;
    assert_eq!((cached.dmac, cached.smac), (B1_MAC, D0_MAC));
    // The neighbour moves; within the second the cached next hop is used...
    let moved = [0x02, 0, 0, 0, 1, 0x99];
    lb_tests::netns::ip(&format!(
        "-n lbt-pkt-nhcache neigh replace {B1} lladdr 02:00:00:00:01:99 dev d0 nud permanent"
    ))
    .unwrap();
    assert_forwarded(&b, &to_vip(c, ACK), B1, B1_MAC);
    // ...and the next refresh looks it up again.
    let k = key(c, (VIP, 80), 6);
    let mut e = b.conn(k).unwrap();
    e.last_seen_ns -= 2_000_000_000;
    b.dp.tables.conns.insert(k, e, 0).unwrap();
    assert_forwarded(&b, &to_vip(c, ACK), B1, moved);
    assert_eq!(b.conn(k).unwrap().next_hop.dmac, moved);
    // The refresh renews the reply half's cache too.
    let reply = Frame::tcp((B1, 8080), c, ACK).macs(B1_MAC, D0_MAC).build();
    let rk = key((B1, 8080), c, 6);
    b.run(&reply);
    assert_ne!(b.conn(rk).unwrap().next_hop.ifindex, 0);
    let mut r = b.conn(rk).unwrap();
    r.next_hop.dmac = [0x02, 0, 0, 0, 0, 0xee];
    b.dp.tables.conns.insert(rk, r, 0).unwrap();
    let mut e = b.conn(k).unwrap();
    e.last_seen_ns -= 2_000_000_000;
    b.dp.tables.conns.insert(k, e, 0).unwrap();
    assert_forwarded(&b, &to_vip(c, ACK), B1, moved);
    assert_eq!(
        b.conn(rk).unwrap().next_hop.ifindex,
        0,
        "the twin must look its next hop up again"
    );
    let (_, out) = b.run(&reply);
    assert_eq!(&out[0..6], &C1_MAC, "the reply uses a fresh next hop");
}

/// Traffic that is neither to a VIP address nor from a backend address
/// goes to the kernel at once (the address filter); a backend that was
/// removed keeps its bit, so its established connections still get their
/// replies through.
#[test]
fn the_address_filter_passes_other_traffic_and_keeps_removed_backends() {
    let mut b = Bench::new("filter");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 46000);
    assert_eq!(connect(&b, c), B1);
    let before = b.reason(Reason::PASS_NOT_VIP);
    // Between two addresses that are no VIP and no backend: even with a
    // connection entry of its tuple planted in the table, the packet never
    // reaches the table.
    let other = Frame::tcp((C2, 40000), (FAR, 22), SYN).macs(C1_MAC, D0_MAC);
    let planted = b.confirmed(key(c, (VIP, 80), 6)).unwrap();
    b.dp.tables
        .conns
        .insert(key((C2, 40000), (FAR, 22), 6), planted, 0)
        .unwrap();
    let (v, out) = b.run(&other.build());
    assert_eq!((v, out), (XDP_PASS, other.build()));
    assert_eq!(b.reason(Reason::PASS_NOT_VIP), before + 1);
    // B1 leaves the VIP; its connection's replies still go out from the VIP.
    b.change(|s| {
        s.remove_backend(&vip_id(Protocol::Tcp), ep(B1, 8080))
            .unwrap();
    });
    let reply = Frame::tcp((B1, 8080), c, PSH | ACK).macs(B1_MAC, D0_MAC);
    let (v, out) = b.run(&reply.build());
    assert_eq!(v, XDP_TX);
    assert_eq!(
        out,
        Frame {
            src: VIP,
            sport: 80,
            ..reply
        }
        .macs(D0_MAC, C1_MAC)
        .build()
    );
}
