//! Packet tests of the new-flow path (`lb_common::handshake`): one entry
//! per unconfirmed flow in a fixed set, found by both directions; a full
//! set gives up its least recently used flow; a pure SYN skips the
//! connection table yet a reused tuple goes to its new flow; a Maglev
//! VIP's first connections agree without a pending session.

use std::net::Ipv4Addr;

use lb_common::{
    handshake::{handshake_set, Handshake},
    Reason,
};
use lb_ctl::model::{endpoint::Protocol, sched::Scheduler};
use lb_tests::{
    fib::{B1, B1_MAC, B2, B2_MAC, C1, D0_MAC, VIP},
    packet::{Frame, ACK, FIN, SYN},
    testbed::*,
};

const XDP_PASS: u32 = 2;

/// Every written way of the half-open table.
fn ways(b: &Bench) -> Vec<Handshake> {
    b.dp.tables.half_open_ways().unwrap()
}

/// `n` ports of client C1 whose flows share one set of the half-open table.
fn ports_in_one_set(b: &Bench, n: usize) -> Vec<u16> {
    let s = b.dp.tables.settings().unwrap();
    let c1 = u32::from_ne_bytes(C1.octets());
    let set = |p: u16| handshake_set(&s, c1, p.to_be(), 6);
    let first = 20000;
    let ports: Vec<u16> = (first..60000)
        .filter(|&p| set(p) == set(first))
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "the table has more than one set");
    ports
}

#[test]
fn one_entry_per_unconfirmed_flow_answers_the_syn_ack() {
    let mut b = Bench::new("hs-one");
    b.vip(Protocol::Tcp, 0, 32);
    let c = (C1, 41000);
    assert_eq!(new_conn(&b, c), B1);
    let held = ways(&b);
    assert_eq!(held.len(), 1, "one way, no reply entry: {held:?}");
    // The backend's SYN-ACK finds it all the same, and goes out from the VIP.
    answer(&b, c, B1);
    assert_forwarded(&b, &to_vip(c, ACK), B1, B1_MAC);
    assert!(b.confirmed(key(c, (VIP, 80), 6)).is_some());
    assert!(b.confirmed(key((B1, 8080), c, 6)).is_some(), "reply half");
    assert!(ways(&b).is_empty(), "confirming frees the way");
}

#[test]
fn a_full_set_gives_up_its_least_recently_used_flow() {
    let mut b = Bench::new("hs-full");
    b.vip(Protocol::Tcp, 0, 32);
    let ports = ports_in_one_set(&b, 5);
    let backends: Vec<Ipv4Addr> = ports.iter().map(|&p| new_conn(&b, (C1, p))).collect();
    assert_eq!(b.reason(Reason::HALF_OPEN_EVICTED), 1);
    assert_eq!(ways(&b).len(), 4);
    // The first flow went: its SYN-ACK is nobody's (left to the kernel).
    let lost = Frame::tcp((backends[0], 8080), (C1, ports[0]), SYN | ACK)
        .macs(mac_of(backends[0]), D0_MAC)
        .build();
    assert_eq!(b.run(&lost), (XDP_PASS, lost.clone()));
    assert!(b.unconfirmed(key((C1, ports[0]), (VIP, 80), 6)).is_none());
    // The four others complete their handshakes.
    for (&p, &backend) in ports.iter().zip(&backends).skip(1) {
        answer(&b, (C1, p), backend);
        assert_forwarded(&b, &to_vip((C1, p), ACK), backend, mac_of(backend));
    }
    assert_eq!(b.reason(Reason::CONFIRMED), 4);
}

#[test]
fn a_reused_tuple_goes_to_its_new_flow() {
    let mut b = Bench::new("hs-reuse");
    b.vip_with(Protocol::Tcp, Scheduler::Rr, 0, 32, &[(B1, 1), (B2, 1)]);
    let c = (C1, 42000);
    assert_eq!(connect(&b, c), B1);
    // The client closes; its entry lingers in the connection table.
    assert_forwarded(&b, &to_vip(c, FIN | ACK), B1, B1_MAC);
    // The same tuple opens again: the SYN skips the connection table and
    // takes the next turn.
    assert_eq!(new_conn(&b, c), B2);
    answer(&b, c, B2);
    // The client's ACK belongs to the new flow, not the closed one.
    assert_forwarded(&b, &to_vip(c, ACK), B2, B2_MAC);
    let now = b.confirmed(key(c, (VIP, 80), 6)).unwrap();
    assert_eq!(
        now.nat_addr,
        u32::from_ne_bytes(B2.octets()),
        "the connection table follows the new flow"
    );
    assert_forwarded(&b, &to_vip(c, ACK), B2, B2_MAC);
}

#[test]
fn a_maglev_clients_first_connections_agree_without_a_pending_session() {
    let mut b = Bench::new("hs-maglev");
    b.vip_with(
        Protocol::Tcp,
        Scheduler::Maglev,
        300,
        32,
        &[(B1, 1), (B2, 1)],
    );
    let first = new_conn(&b, (C1, 43000));
    for p in 43001..43006 {
        assert_eq!(new_conn(&b, (C1, p)), first);
    }
    assert!(b.dp.tables.pending_entries().unwrap().is_empty());
    assert_eq!(b.reason(Reason::PENDING_HIT), 0);
    assert!(b.session(C1, false).is_none(), "not confirmed yet");
}

#[test]
fn a_weighted_vip_hashes_new_clients_in_proportion_to_the_weights() {
    let mut b = Bench::new("hs-wrr");
    b.vip_with(Protocol::Tcp, Scheduler::Wrr, 300, 32, &[(B1, 3), (B2, 1)]);
    // A client's parallel first connections agree, without a pending
    // session.
    let first = new_conn(&b, (C1, 44000));
    for p in 44001..44004 {
        assert_eq!(new_conn(&b, (C1, p)), first);
    }
    assert!(b.dp.tables.pending_entries().unwrap().is_empty());
    // New clients spread by the weights (3:1; 400 clients).
    let client = |i: u16| Ipv4Addr::new(198, 18, 3 + (i / 200) as u8, 1 + (i % 200) as u8);
    let on_b1 = (0..400u16)
        .filter(|&i| new_conn(&b, (client(i), 44100)) == B1)
        .count();
    assert!((240..=360).contains(&on_b1), "{on_b1} of 400 on B1");
}
