//! Packet tests of ICMP errors about balanced flows: each error goes
//! through the real XDP program (BPF_PROG_TEST_RUN) and its output is
//! compared byte for byte with the error the other end must get, built
//! from scratch (every checksum computed over the whole message).
//!
//! The translated error must carry, inside, exactly the packet the other
//! end sent: for an error about a reply, the backend's own reply (before
//! the balancer's SNAT); for an error from a backend, the client's own
//! packet (before the DNAT).

use std::{net::Ipv4Addr, time::Duration};

use lb_common::IcmpReason;
use lb_ctl::model::{endpoint::Protocol, sched::Scheduler};
use lb_tests::{
    fib::{B1_MAC, B2_MAC, C1, C1_MAC, C2, D0_MAC, VIP},
    packet::{ip_packet, verify_icmp, Frame, IcmpError, ACK, PSH, SYN},
    testbed::{connect, key, mac_of, to_vip, Bench, XDP_PASS, XDP_TX},
};

/// A router between the balancer and its clients (the error's source).
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// A full-size data segment of the reply direction, as the backend sends
/// it (`from` = the backend) or as the balancer sends it on (`from` = the
/// VIP).
fn reply_segment(from: (Ipv4Addr, u16), client: (Ipv4Addr, u16)) -> Frame {
    Frame {
        payload: vec![0x5a; 1448],
        ..Frame::tcp(from, client, PSH | ACK)
    }
}

/// The first `n` bytes of the IPv4 packet of `f` (an ICMP error carries
/// the start of the packet it is about).
fn head(f: &Frame, n: usize) -> Vec<u8> {
    ip_packet(&f.build())[..n].to_vec()
}

/// Send `input` and expect it out (XDP_TX) as `expected`, byte for byte.
#[track_caller]
fn assert_translated(b: &Bench, input: &IcmpError, expected: &IcmpError) {
    let (verdict, out) = b.run(&input.build());
    assert_eq!(
        verdict,
        XDP_TX,
        "verdict; ICMP counters {:?}",
        b.icmp_counts()
    );
    verify_icmp(&out).unwrap();
    assert_eq!(out, expected.build(), "output frame");
}

/// Send `input` and expect it passed to the kernel untouched, counted
/// under `reason`.
#[track_caller]
fn assert_passed(b: &Bench, input: &[u8], reason: u32) {
    let before = b.icmp(reason);
    let (verdict, out) = b.run(input);
    assert_eq!(verdict, XDP_PASS, "verdict");
    assert_eq!(out, input, "passed untouched");
    assert_eq!(
        b.icmp(reason),
        before + 1,
        "counted as {}; counters {:?}",
        IcmpReason::NAMES[reason as usize],
        b.icmp_counts()
    );
}

/// A router on the way to the client cannot forward a full-size reply
/// ("fragmentation needed", MTU 1400) and tells its source, the VIP. The
/// error reaches the backend about the backend's own segment, so that the
/// backend lowers its path MTU: whole (the TCP checksum carried and
/// patched) and cut to the minimum (IPv4 header and 8 bytes).
#[test]
fn fragmentation_needed_about_a_reply_goes_to_the_backend() {
    let mut b = Bench::new("icmp-fn");
    b.vip(Protocol::Tcp, 300, 32);
    let client = (C1, 40000);
    let backend = connect(&b, client);
    let before = b.confirmed(key(client, (VIP, 80), 6)).unwrap();
    let sent = reply_segment((VIP, 80), client);
    let original = reply_segment((backend, 8080), client);
    // Linux routers carry as much as fits in 576 bytes.
    for len in [576 - 20 - 8, 28] {
        let input =
            IcmpError::frag_needed(ROUTER, VIP, 1400, &head(&sent, len)).macs(ROUTER_MAC, D0_MAC);
        let expected = IcmpError {
            dst: backend,
            embedded: head(&original, len),
            ..input.clone()
        }
        .macs(D0_MAC, mac_of(backend));
        assert_translated(&b, &input, &expected);
    }
    assert_eq!(b.icmp(IcmpReason::TO_BACKEND), 2);
    // Errors neither refresh the connection nor create anything.
    let after = b.confirmed(key(client, (VIP, 80), 6)).unwrap();
    assert_eq!(after.last_seen_ns, before.last_seen_ns, "not refreshed");
    assert_eq!(b.reason(lb_common::Reason::NEW_CONN), 1);
}

/// A UDP datagram to a backend port with no listener: the backend's "port
/// unreachable" reaches the client from the VIP, about the client's own
/// datagram, so that the client's connected socket gets ECONNREFUSED.
#[test]
fn port_unreachable_from_a_backend_goes_to_the_client() {
    let mut b = Bench::new("icmp-pu");
    b.vip(Protocol::Udp, 0, 32);
    let client = (C1, 5353);
    let datagram = Frame::udp(client, (VIP, 80)).macs(C1_MAC, D0_MAC);
    let (verdict, out) = b.run(&datagram.build());
    assert_eq!(verdict, XDP_TX);
    let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let received = Frame {
        dst: backend,
        dport: 8080,
        ..datagram.clone()
    };
    let whole = ip_packet(&received.build()).len();
    let input = IcmpError::port_unreachable(backend, C1, &head(&received, whole))
        .macs(mac_of(backend), D0_MAC);
    let expected = IcmpError {
        src: VIP,
        embedded: head(&datagram, whole),
        ..input.clone()
    }
    .macs(D0_MAC, C1_MAC);
    assert_translated(&b, &input, &expected);
    assert_eq!(b.icmp(IcmpReason::TO_CLIENT), 1);
    // The unconfirmed flow was not confirmed, nor refreshed, by it.
    assert!(b.confirmed(key(client, (VIP, 80), 17)).is_none());
}

/// A `forwarding: dsr` backend's reply leaves from the VIP without passing
/// the balancer; a router's error about it comes back to the VIP, and goes
/// unchanged to the MAC address of the backend holding the flow, or, for a
/// flow the table does not know, of the backend a mid-flow packet would
/// reach (here the Maglev table's), checked against a real packet after.
#[test]
fn errors_about_dsr_replies_go_to_the_backend_unchanged() {
    let mut b = Bench::new("icmp-dsr");
    b.dsr_vip(Scheduler::Maglev, 0);
    let client = (C1, 53000);
    let first = to_vip(client, SYN);
    let (_, out) = b.run(&first.build());
    let held_by: [u8; 6] = out[0..6].try_into().unwrap();
    b.run(&to_vip(client, ACK).build());
    let sent = reply_segment((VIP, 80), client);
    let input =
        IcmpError::frag_needed(ROUTER, VIP, 1400, &head(&sent, 28)).macs(ROUTER_MAC, D0_MAC);
    assert_translated(&b, &input, &input.clone().macs(D0_MAC, held_by));

    let unknown = (C2, 41000);
    let sent = reply_segment((VIP, 80), unknown);
    let input =
        IcmpError::frag_needed(ROUTER, VIP, 1400, &head(&sent, 28)).macs(ROUTER_MAC, D0_MAC);
    let (verdict, out) = b.run(&input.build());
    assert_eq!(verdict, XDP_TX);
    let mac: [u8; 6] = out[0..6].try_into().unwrap();
    assert!(mac == B1_MAC || mac == B2_MAC, "{mac:?}");
    assert_eq!(out, input.clone().macs(D0_MAC, mac).build());
    assert!(
        b.conn(key(unknown, (VIP, 80), 6)).is_none(),
        "the error created no entry"
    );
    let (_, out) = b.run(&to_vip(unknown, ACK).build());
    assert_eq!(out[0..6], mac, "a mid-flow packet goes to the same backend");
    assert_eq!(b.icmp(IcmpReason::TO_DSR_BACKEND), 2);
}

/// Errors about no balanced flow, or too short or too strange to match
/// one, go to the kernel untouched, each counted by its reason.
#[test]
fn unmatched_truncated_and_malformed_errors_pass_untouched() {
    let mut b = Bench::new("icmp-pass");
    b.vip(Protocol::Tcp, 300, 32);
    connect(&b, (C1, 40000));
    let about = |client| head(&reply_segment((VIP, 80), client), 48);
    let error = |embedded: Vec<u8>| {
        IcmpError::frag_needed(ROUTER, VIP, 1400, &embedded).macs(ROUTER_MAC, D0_MAC)
    };
    // No such flow: another client, another port.
    assert_passed(
        &b,
        &error(about((C2, 40000))).build(),
        IcmpReason::UNMATCHED,
    );
    assert_passed(
        &b,
        &error(about((C1, 40001))).build(),
        IcmpReason::UNMATCHED,
    );
    // Shorter than an IPv4 header and 8 bytes.
    let mut short = about((C1, 40000));
    short.truncate(27);
    assert_passed(&b, &error(short).build(), IcmpReason::TRUNCATED);
    // The embedded packet is not IPv4, or not TCP/UDP.
    let mut v6 = about((C1, 40000));
    v6[0] = 0x65;
    assert_passed(&b, &error(v6).build(), IcmpReason::MALFORMED);
    let mut gre = about((C1, 40000));
    gre[9] = 47;
    assert_passed(&b, &error(gre).build(), IcmpReason::NOT_TCP_UDP);
    // Not addressed to the source of the packet it is about.
    let mut misaddressed = error(about((C1, 40000)));
    misaddressed.dst = C2;
    assert_passed(&b, &misaddressed.build(), IcmpReason::MALFORMED);
    // A non-first fragment has no ports to match.
    let mut fragment = about((C1, 40000));
    fragment[6..8].copy_from_slice(&[0x00, 0x10]);
    assert_passed(&b, &error(fragment).build(), IcmpReason::UNSUPPORTED);
    // An echo request is no error: passed, and not counted as one.
    let mut echo = error(about((C1, 40000)));
    echo.icmp_type = 8;
    echo.code = 0;
    let (verdict, out) = b.run(&echo.build());
    assert_eq!((verdict, out), (XDP_PASS, echo.build()));
    assert_eq!(b.icmp_counts().iter().map(|c| c.1).sum::<u64>(), 7);
    assert_eq!(b.reason(lb_common::Reason::PASS_NOT_TCP_UDP), 8);
}

/// An error about a connection that has expired finds nothing: it passes
/// untouched, and does not bring the connection back.
#[test]
fn an_error_about_an_expired_flow_passes() {
    let mut b = Bench::new("icmp-exp");
    b.vip(Protocol::Tcp, 300, 32);
    let client = (C1, 40000);
    connect(&b, client);
    let sent = reply_segment((VIP, 80), client);
    let input =
        IcmpError::frag_needed(ROUTER, VIP, 1400, &head(&sent, 28)).macs(ROUTER_MAC, D0_MAC);
    // Established connections now expire after 1 ns.
    let mut s = b.dp.tables.settings.get(&0, 0).unwrap();
    s.tcp_established_ns = 1;
    b.dp.tables.set_settings(&s).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_passed(&b, &input.build(), IcmpReason::UNMATCHED);
    assert_eq!(b.icmp(IcmpReason::TO_BACKEND), 0);
}
