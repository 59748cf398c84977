//! The packet tests' bench: the real XDP program loaded into a namespace
//! with a FIB (`fib`), a model of the VIPs applied to its maps as the
//! controller applies it, and helpers that send frames through it with
//! BPF_PROG_TEST_RUN and compare the output byte for byte.
#![allow(clippy::missing_panics_doc, clippy::must_use_candidate)]

use std::{net::Ipv4Addr, time::Duration};

use lb_common::{FlowKey, Reason, SessionKey};
use lb_ctl::{
    kernel::program::{Dataplane, LoadOptions},
    model::{
        endpoint::{Endpoint, Protocol, VipId},
        sched::Scheduler,
        services::{Services, VipSpec},
    },
};

use crate::packet::{verify, Frame, ACK, SYN};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

use crate::fib::{B1, B1_MAC, B2, B2_MAC, B3, B3_MAC, C1_MAC, D0_MAC, VIP};

pub fn ep(a: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint::from((a, port))
}

pub fn vip_id(proto: Protocol) -> VipId {
    VipId {
        endpoint: ep(VIP, 80),
        protocol: proto,
    }
}

pub struct Bench {
    pub dp: Dataplane,
    pub services: Services,
    _fib: crate::fib::FibNs,
}

impl Bench {
    pub fn new(name: &str) -> Self {
        Self::with_limits(name, 1000, 1000)
    }

    pub fn with_limits(name: &str, max_connections: u32, max_sessions: u32) -> Self {
        Self::with_all_limits(name, max_connections, max_sessions, 1000, false)
    }

    /// `shared`: as with `cluster:` (sessions announced on the ring).
    pub fn with_all_limits(
        name: &str,
        max_connections: u32,
        max_sessions: u32,
        max_half_open: u32,
        shared: bool,
    ) -> Self {
        let fib = crate::fib::FibNs::new(&format!("lbt-pkt-{name}")).unwrap();
        let mut dp = Dataplane::load(&LoadOptions {
            max_connections,
            max_sessions,
            max_half_open,
            pin_dir: None,
            object: None,
            shared,
        })
        .unwrap();
        dp.tables
            .set_settings(&lb_common::Settings {
                tcp_syn_ns: 60_000_000_000,
                tcp_established_ns: 900_000_000_000,
                tcp_closing_ns: 10_000_000_000,
                udp_ns: 300_000_000_000,
                ..lb_common::Settings::default()
            })
            .unwrap();
        // Attaching registers the interfaces' receive queues (test_run needs
        // them for an ingress interface) and fills the redirect map.
        dp.attach(
            &["d0".to_string(), "e0".to_string()],
            lb_ctl::kernel::xdpmode::Mode::Native,
            None,
        )
        .unwrap();
        Self {
            dp,
            services: Services::default(),
            _fib: fib,
        }
    }

    pub fn change(&mut self, edit: impl FnOnce(&mut Services)) {
        let mut next = self.services.clone();
        edit(&mut next);
        self.dp.tables.apply(&self.services, &next).unwrap();
        self.services = next;
    }

    /// A VIP on 198.18.0.100:80 with backends B1..B3:8080, round robin.
    pub fn vip(&mut self, proto: Protocol, persistence_secs: u64, netmask: u8) {
        self.vip_with(
            proto,
            Scheduler::Rr,
            persistence_secs,
            netmask,
            &[(B1, 1), (B2, 1), (B3, 1)],
        );
    }

    /// A VIP on 198.18.0.100:80 with these (backend, weight) on port 8080.
    pub fn vip_with(
        &mut self,
        proto: Protocol,
        scheduler: Scheduler,
        persistence_secs: u64,
        netmask: u8,
        backends: &[(Ipv4Addr, u32)],
    ) {
        self.change(|s| {
            s.add_vip(VipSpec {
                name: Some("web".into()),
                id: vip_id(proto),
                scheduler,
                persistence_timeout: Duration::from_secs(persistence_secs),
                persistence_netmask: netmask,
                persistence_netmask6: 64,
                max_lifetime: std::time::Duration::ZERO,
                health_check: None,
                mode: lb_ctl::model::services::Mode::Tcp,
                cookie: None,
                forwarding: lb_ctl::model::services::Forwarding::Nat,
                tls: None,
            })
            .unwrap();
            for &(b, w) in backends {
                s.add_backend(&vip_id(proto), ep(b, 8080), w).unwrap();
            }
        });
    }

    /// A `forwarding: dsr` TCP VIP on 198.18.0.100:80 with backends B1 and
    /// B2 on port 80 (a DSR backend serves the VIP's own port).
    pub fn dsr_vip(&mut self, scheduler: Scheduler, persistence_secs: u64) {
        self.change(|s| {
            s.add_vip(VipSpec {
                name: Some("dsr".into()),
                id: vip_id(Protocol::Tcp),
                scheduler,
                persistence_timeout: Duration::from_secs(persistence_secs),
                persistence_netmask: 32,
                persistence_netmask6: 64,
                max_lifetime: Duration::ZERO,
                health_check: None,
                mode: lb_ctl::model::services::Mode::Tcp,
                cookie: None,
                forwarding: lb_ctl::model::services::Forwarding::Dsr,
                tls: None,
            })
            .unwrap();
            for b in [B1, B2] {
                s.add_backend(&vip_id(Protocol::Tcp), ep(b, 80), 1).unwrap();
            }
        });
    }

    /// Rewrite the TCP VIP's persistence timeout in place (its sessions
    /// are kept, as after a configuration change).
    pub fn set_persistence_timeout(&mut self, timeout: Duration) {
        let key = lb_common::VipKey {
            addr: u32::from_ne_bytes(VIP.octets()),
            port: 80u16.to_be(),
            proto: Protocol::Tcp.number(),
            _pad: 0,
        };
        let mut info = self.dp.tables.vips.get(&key, 0).unwrap();
        info.persist_timeout_ns = u64::try_from(timeout.as_nanos()).unwrap();
        self.dp.tables.vips.insert(key, info, 0).unwrap();
    }

    /// Give the VIP's sessions this lifetime (0: none).
    pub fn set_max_lifetime(&mut self, lifetime: Duration) {
        let id = vip_id(Protocol::Tcp);
        self.change(|s| {
            let mut spec = s.vip(&id).unwrap().spec.clone();
            let backends = s.vip(&id).unwrap().backends.clone();
            spec.max_lifetime = lifetime;
            s.remove_vip(&id).unwrap();
            s.add_vip(spec).unwrap();
            for b in backends {
                s.add_backend(&id, b.endpoint, b.weight).unwrap();
            }
        });
    }

    /// Make the connection table's SYN timeout `timeout` (the others stay).
    pub fn set_syn_timeout(&mut self, timeout: Duration) {
        let mut s = self.dp.tables.settings.get(&0, 0).unwrap();
        s.tcp_syn_ns = u64::try_from(timeout.as_nanos()).unwrap();
        self.dp.tables.set_settings(&s).unwrap();
    }

    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let (verdict, out, _) = crate::fib::run(self.dp.program().unwrap(), frame, 1).unwrap();
        (verdict, out)
    }

    pub fn reason(&self, slot: u32) -> u64 {
        self.dp.tables.reasons.get(&slot, 0).unwrap().iter().sum()
    }

    /// One ICMP counter ([`lb_common::IcmpReason`]), summed over the CPUs.
    pub fn icmp(&self, slot: u32) -> u64 {
        self.dp
            .tables
            .icmp_stats
            .get(&slot, 0)
            .unwrap()
            .iter()
            .sum()
    }

    /// Every ICMP counter that is not zero, by name.
    pub fn icmp_counts(&self) -> Vec<(&'static str, u64)> {
        (0..lb_common::IcmpReason::COUNT)
            .map(|r| (lb_common::IcmpReason::NAMES[r as usize], self.icmp(r)))
            .filter(|x| x.1 > 0)
            .collect()
    }

    /// The entry of `key` in either flow table.
    pub fn conn(&self, key: FlowKey) -> Option<lb_common::Conn> {
        self.confirmed(key).or_else(|| self.unconfirmed(key))
    }

    /// The entry of `key` in the connection table (confirmed flows).
    pub fn confirmed(&self, key: FlowKey) -> Option<lb_common::Conn> {
        self.dp.tables.conns.get(&key, 0).ok()
    }

    /// The entry of `key` in the table of unconfirmed flows.
    pub fn unconfirmed(&self, key: FlowKey) -> Option<lb_common::Conn> {
        self.dp.tables.half_open_entry(&key).unwrap()
    }

    /// The client's session, confirmed or pending.
    pub fn session(&self, client: Ipv4Addr, pending: bool) -> Option<lb_common::Session> {
        let k = SessionKey {
            vip_id: self.services.vip(&vip_id(Protocol::Tcp)).unwrap().slot,
            client: u32::from_ne_bytes(client.octets()),
        };
        if pending {
            let all = self.dp.tables.pending_entries().unwrap();
            all.into_iter().find(|(key, _)| *key == k).map(|(_, s)| s)
        } else {
            self.dp.tables.sessions.get(&k, 0).ok()
        }
    }
}

/// The backend answers the client's SYN: the SYN-ACK is sent back from the
/// VIP.
#[track_caller]
pub fn answer(b: &Bench, client: (Ipv4Addr, u16), backend: Ipv4Addr) {
    let reply = Frame::tcp((backend, 8080), client, SYN | ACK).macs(mac_of(backend), D0_MAC);
    let (verdict, out) = b.run(&reply.build());
    assert_eq!(verdict, XDP_TX);
    let expected = Frame {
        src: VIP,
        sport: 80,
        ..reply
    }
    .macs(D0_MAC, C1_MAC)
    .build();
    assert_eq!(out, expected, "SYN-ACK from the VIP");
}

/// A whole handshake (SYN, SYN-ACK, ACK): returns the backend.
#[track_caller]
pub fn connect(b: &Bench, client: (Ipv4Addr, u16)) -> Ipv4Addr {
    let backend = new_conn(b, client);
    answer(b, client, backend);
    assert_forwarded(b, &to_vip(client, ACK), backend, mac_of(backend));
    backend
}

pub fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes(src.0.octets()),
        dst_addr: u32::from_ne_bytes(dst.0.octets()),
        src_port: src.1.to_be(),
        dst_port: dst.1.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// The frame a client sends to the VIP.
pub fn to_vip(client: (Ipv4Addr, u16), flags: u8) -> Frame {
    Frame::tcp(client, (VIP, 80), flags).macs(C1_MAC, D0_MAC)
}

/// What must leave for `backend`: destination rewritten, MACs from the FIB.
pub fn expect_forward(f: &Frame, backend: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    Frame {
        dst: backend,
        dport: 8080,
        ..f.clone()
    }
    .macs(D0_MAC, mac)
    .build()
}

/// Assert the frame went out (XDP_TX) to `backend`, byte for byte.
#[track_caller]
pub fn assert_forwarded(b: &Bench, f: &Frame, backend: Ipv4Addr, mac: [u8; 6]) {
    let (verdict, out) = b.run(&f.build());
    assert_eq!(verdict, XDP_TX, "verdict");
    verify(&out).unwrap();
    assert_eq!(out, expect_forward(f, backend, mac), "output frame");
}

pub fn mac_of(backend: Ipv4Addr) -> [u8; 6] {
    match backend {
        a if a == B1 => B1_MAC,
        a if a == B2 => B2_MAC,
        _ => B3_MAC,
    }
}

/// Send a SYN and return the backend it was sent to.
pub fn new_conn(b: &Bench, client: (Ipv4Addr, u16)) -> Ipv4Addr {
    let f = to_vip(client, SYN);
    let (verdict, out) = b.run(&f.build());
    assert_eq!(
        verdict,
        XDP_TX,
        "reasons: {:?}",
        (0..Reason::COUNT)
            .map(|r| (Reason::NAMES[r as usize], b.reason(r)))
            .filter(|x| x.1 > 0)
            .collect::<Vec<_>>()
    );
    verify(&out).unwrap();
    let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    assert_eq!(out, expect_forward(&f, backend, mac_of(backend)));
    backend
}
