//! IPv6 packet tests: exact frames through the real XDP program (the IPv6
//! path, `lb_xdp6`, tail-called by `lb_xdp`) with BPF_PROG_TEST_RUN, in
//! the packet tests' FIB namespace (`fib`: clients and the VIP on
//! 2001:db8:18::/64, backends on 2001:db8:18:1::/64, all on `d0`).

use std::{net::Ipv6Addr, time::Duration};

use lb_common::{conn6::FlowKey6, Reason};
use lb_ctl::{
    kernel::tables6::raw_addr6,
    model::{
        endpoint::{Endpoint, Protocol, VipId},
        sched::Scheduler,
        services::{Forwarding, Mode, VipSpec},
    },
};
use lb_tests::{
    fib::{B1_MAC, B2_MAC, B3_MAC, C1_MAC, D0_MAC},
    packet::{ACK, SYN},
    packet6::{addrs, raw6, Frame6, B1_6, B2_6, B3_6, C1_6, C1_6B, VIP6},
    testbed::{Bench, XDP_DROP, XDP_PASS, XDP_TX},
};

fn ep6(a: Ipv6Addr, port: u16) -> Endpoint {
    Endpoint {
        addr: a.into(),
        port,
    }
}

fn vip6(proto: Protocol) -> VipId {
    VipId {
        endpoint: ep6(VIP6, 80),
        protocol: proto,
    }
}

/// A VIP on [2001:db8:18::100]:80 with backends B1_6..B3_6:8080, rr.
fn bench(name: &str, proto: Protocol, persistence_secs: u64) -> Bench {
    let mut b = Bench::new(name);
    b.change(|s| {
        s.add_vip(VipSpec {
            name: Some("web6".into()),
            id: vip6(proto),
            scheduler: Scheduler::Rr,
            persistence_timeout: Duration::from_secs(persistence_secs),
            persistence_netmask: 32,
            persistence_netmask6: 64,
            max_lifetime: Duration::ZERO,
            health_check: None,
            mode: Mode::Tcp,
            cookie: None,
            forwarding: Forwarding::Nat,
            tls: None,
        })
        .unwrap();
        for a in [B1_6, B2_6, B3_6] {
            s.add_backend(&vip6(proto), ep6(a, 8080), 1).unwrap();
        }
    });
    b
}

fn mac6(a: Ipv6Addr) -> [u8; 6] {
    match a {
        a if a == B1_6 => B1_MAC,
        a if a == B2_6 => B2_MAC,
        _ => B3_MAC,
    }
}

fn to_vip6(client: (Ipv6Addr, u16), flags: u8) -> Frame6 {
    Frame6::tcp(client, (VIP6, 80), flags).macs(C1_MAC, D0_MAC)
}

/// Send `f` to the VIP: it must leave for a backend, byte for byte as
/// built from scratch; returns the backend.
#[track_caller]
fn forwarded(b: &Bench, f: &Frame6) -> Ipv6Addr {
    let (verdict, out) = b.run(&f.build());
    assert_eq!(verdict, XDP_TX, "reasons: {:?}", reasons(b));
    let backend = addrs(&out).1;
    let expected = Frame6 {
        dst: backend,
        dport: 8080,
        ..f.clone()
    }
    .macs(D0_MAC, mac6(backend))
    .build();
    assert_eq!(out, expected, "forwarded frame");
    backend
}

fn reasons(b: &Bench) -> Vec<(&'static str, u64)> {
    (0..Reason::COUNT)
        .map(|r| (Reason::NAMES[r as usize], b.reason(r)))
        .filter(|x| x.1 > 0)
        .collect()
}

fn key6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> FlowKey6 {
    FlowKey6 {
        src_addr: raw_addr6(src.0),
        dst_addr: raw_addr6(dst.0),
        src_port: src.1.to_be(),
        dst_port: dst.1.to_be(),
        proto: 6,
        _pad: [0; 3],
    }
}

/// SYN, SYN-ACK (sent back from the VIP, exact), ACK: returns the backend.
#[track_caller]
fn connect(b: &Bench, client: (Ipv6Addr, u16)) -> Ipv6Addr {
    let backend = forwarded(b, &to_vip6(client, SYN));
    let reply = Frame6::tcp((backend, 8080), client, SYN | ACK).macs(mac6(backend), D0_MAC);
    let (verdict, out) = b.run(&reply.build());
    assert_eq!(verdict, XDP_TX, "reasons: {:?}", reasons(b));
    let expected = Frame6 {
        src: VIP6,
        sport: 80,
        ..reply
    }
    .macs(D0_MAC, C1_MAC)
    .build();
    assert_eq!(out, expected, "SYN-ACK from the VIP");
    assert_eq!(forwarded(b, &to_vip6(client, ACK)), backend);
    backend
}

#[test]
fn ipv6_flows_are_translated_both_ways_and_confirmed() {
    let b = bench("v6-nat", Protocol::Tcp, 0);
    let c = (C1_6, 40000);
    let backend = connect(&b, c);
    assert_eq!(b.reason(Reason::CONFIRMED), 1);
    let fwd = b.dp.tables.v6.conns.get(&key6(c, (VIP6, 80)), 0).unwrap();
    assert_eq!(fwd.nat_addr, raw_addr6(backend));
    let rep =
        b.dp.tables
            .v6
            .conns
            .get(&key6((backend, 8080), c), 0)
            .unwrap();
    assert_eq!(rep.nat_addr, raw_addr6(VIP6));
    // Established data both ways.
    assert_eq!(forwarded(&b, &to_vip6(c, ACK)), backend);
    let data = Frame6::tcp((backend, 8080), c, ACK).macs(mac6(backend), D0_MAC);
    let (verdict, out) = b.run(&data.build());
    assert_eq!(verdict, XDP_TX);
    let expected = Frame6 {
        src: VIP6,
        sport: 80,
        ..data
    }
    .macs(D0_MAC, C1_MAC)
    .build();
    assert_eq!(out, expected);
    // Without persistence, new flows take turns.
    let next: Vec<Ipv6Addr> = (1..4)
        .map(|i| forwarded(&b, &to_vip6((C1_6, 40000 + i), SYN)))
        .collect();
    assert_eq!(next.len(), 3);
    assert!(next.contains(&B1_6) && next.contains(&B2_6) && next.contains(&B3_6));
}

#[test]
fn ipv6_clients_of_one_64_share_a_session() {
    let b = bench("v6-sticky", Protocol::Tcp, 300);
    let first = connect(&b, (C1_6, 41000));
    for port in 41001..41004 {
        assert_eq!(connect(&b, (C1_6, port)), first, "same client");
    }
    // Another address of the same /64 (a temporary address) sticks too.
    assert_eq!(connect(&b, (C1_6B, 41000)), first, "same /64");
    assert!(b.reason(Reason::SESSION_HIT) >= 4);
}

#[test]
fn ipv6_extension_headers_are_skipped_and_kept() {
    let b = bench("v6-ext", Protocol::Tcp, 0);
    // Hop-by-Hop (PadN) then Destination Options (PadN), 8 bytes each.
    let pad = vec![0u8, 1, 4, 0, 0, 0, 0];
    let f = Frame6 {
        ext: vec![(0, pad.clone()), (60, pad)],
        ..to_vip6((C1_6, 42000), SYN)
    };
    forwarded(&b, &f);
}

#[test]
fn ipv6_fragments_unknown_headers_and_neighbour_discovery_pass_untouched() {
    let b = bench("v6-pass", Protocol::Tcp, 0);
    // A Fragment header (first fragment, more to come).
    let frag = Frame6 {
        ext: vec![(44, vec![0, 0, 1, 0, 0, 0, 42])],
        ..to_vip6((C1_6, 43000), SYN)
    }
    .build();
    assert_eq!(b.run(&frag), (XDP_PASS, frag.clone()));
    assert_eq!(b.reason(Reason::PASS_FRAGMENT), 1);
    // ESP.
    let esp = raw6(C1_MAC, D0_MAC, C1_6, VIP6, &[], 50, &[0; 16]);
    assert_eq!(b.run(&esp), (XDP_PASS, esp.clone()));
    assert_eq!(b.reason(Reason::PASS_IPV6_UNSUPPORTED), 1);
    // A neighbour solicitation for the VIP.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.octets());
    let sol = raw6(C1_MAC, D0_MAC, C1_6, VIP6, &[], 58, &ns);
    assert_eq!(b.run(&sol), (XDP_PASS, sol.clone()));
    assert_eq!(b.reason(Reason::PASS_NOT_TCP_UDP), 1);
    assert_eq!(b.reason(Reason::NEW_CONN), 0);
}

#[test]
fn ipv6_udp_is_balanced_and_a_zero_checksum_dropped() {
    let b = bench("v6-udp", Protocol::Udp, 300);
    let f = Frame6::udp((C1_6, 5353), (VIP6, 80)).macs(C1_MAC, D0_MAC);
    let backend = forwarded(&b, &f);
    let zero = Frame6 {
        udp_no_checksum: true,
        sport: 5354,
        ..f
    }
    .build();
    assert_eq!(b.run(&zero).0, XDP_DROP);
    assert_eq!(b.reason(Reason::DROP_UDP_ZERO_CHECKSUM), 1);
    assert_eq!(b.reason(Reason::NEW_CONN), 1, "the dropped one is no flow");
    assert_ne!(backend, VIP6);
}
