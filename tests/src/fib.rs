//! A namespace with a FIB the XDP program's `bpf_fib_lookup` can use, for
//! running the program with BPF_PROG_TEST_RUN (packet tests, benchmarks).
//!
//! Interface `d0` carries clients (198.18.0.0/24) and backends
//! (198.18.1.0/24) — the one-arm case — and `e0` a second arm
//! (198.18.2.0/24). Neighbours are permanent, so MAC addresses are known.

use std::net::Ipv4Addr;

use anyhow::Result;
use aya::programs::{TestRun, TestRunOptions, Xdp};

use crate::netns::{in_ns, ip, Netns};

pub const D0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const E0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
pub const C1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
pub const B1_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x11];
pub const B2_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x12];
pub const B3_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x13];
pub const FAR_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 0x21];
pub const VIP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const C1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
pub const C2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
pub const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
pub const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);
pub const B3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 13);
pub const FAR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
/// A backend address with no neighbour entry.
pub const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 99);

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The namespace; the calling thread has entered it.
pub struct FibNs {
    pub ns: Netns,
}

impl FibNs {
    /// Create namespace `name`, and move the calling thread into it and onto
    /// CPU 0 (the scheduler's cursor and the counters are per CPU).
    ///
    /// # Errors
    /// When a namespace, link or neighbour cannot be set up.
    pub fn new(name: &str) -> Result<Self> {
        let mut set = nix::sched::CpuSet::new();
        set.set(0)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
        let ns = Netns::new(name)?;
        let n = &ns.0;
        let mut cmds = vec![
            format!(
                "-n {n} link add d0 address {} type veth peer name d1",
                mac(D0_MAC)
            ),
            format!(
                "-n {n} link add e0 address {} type veth peer name e1",
                mac(E0_MAC)
            ),
        ];
        for dev in ["d0", "d1", "e0", "e1"] {
            cmds.push(format!("-n {n} link set {dev} up"));
        }
        cmds.push(format!("-n {n} addr add 198.18.0.1/24 dev d0"));
        cmds.push(format!("-n {n} addr add 198.18.1.1/24 dev d0"));
        cmds.push(format!("-n {n} addr add 198.18.2.1/24 dev e0"));
        for (addr, m, dev) in [
            (C1, C1_MAC, "d0"),
            (C2, C1_MAC, "d0"),
            (B1, B1_MAC, "d0"),
            (B2, B2_MAC, "d0"),
            (B3, B3_MAC, "d0"),
            (VIP, VIP_MAC, "d0"),
            (FAR, FAR_MAC, "e0"),
        ] {
            cmds.push(format!(
                "-n {n} neigh add {addr} lladdr {} dev {dev} nud permanent",
                mac(m)
            ));
        }
        // IPv6: clients and the VIP on 2001:db8:18::/64, backends on
        // 2001:db8:18:1::/64, both on d0.
        cmds.push(format!("-n {n} addr add 2001:db8:18::1/64 dev d0 nodad"));
        cmds.push(format!("-n {n} addr add 2001:db8:18:1::1/64 dev d0 nodad"));
        for (addr, m) in [
            (crate::packet6::C1_6, C1_MAC),
            (crate::packet6::C1_6B, C1_MAC),
            (crate::packet6::B1_6, B1_MAC),
            (crate::packet6::B2_6, B2_MAC),
            (crate::packet6::B3_6, B3_MAC),
        ] {
            cmds.push(format!(
                "-n {n} neigh add {addr} lladdr {} dev d0 nud permanent",
                mac(m)
            ));
        }
        for c in cmds {
            ip(&c)?;
        }
        in_ns(n, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        in_ns(
            n,
            &[
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
            ],
        )?;
        crate::netns::enter(n)?;
        Ok(Self { ns })
    }

    /// The interfaces to attach the program to, so that test runs may name
    /// `d0` as their ingress interface.
    #[must_use]
    pub fn ifaces() -> Vec<String> {
        vec!["d0".to_string(), "e0".to_string()]
    }
}

/// One BPF_PROG_TEST_RUN of `prog` on `frame`, received on `d0`: the
/// verdict, the output frame and the kernel's time per repetition.
///
/// # Errors
/// When the kernel refuses the run.
pub fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, Vec<u8>, std::time::Duration)> {
    let ifindex = nix::net::if_::if_nametoindex("d0")?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let r = prog.test_run(opts)?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out, r.duration))
}

/// A whole TCP handshake of `client` with the VIP (198.18.0.100:80) through
/// the balancer's program: the client's SYN, the SYN-ACK of the backend it
/// went to, the client's ACK (which confirms the flow and records the
/// session). Returns the three verdicts.
///
/// # Errors
/// When a run fails.
pub fn handshake(prog: &Xdp, client: (Ipv4Addr, u16)) -> Result<[u32; 3]> {
    use crate::packet::{Frame, ACK, SYN};
    let syn = Frame::tcp(client, (VIP, 80), SYN).macs(C1_MAC, D0_MAC);
    let (v1, out, _) = run(prog, &syn.build(), 1)?;
    let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let mac = match backend {
        b if b == B1 => B1_MAC,
        b if b == B2 => B2_MAC,
        _ => B3_MAC,
    };
    let syn_ack = Frame::tcp((backend, 8080), client, SYN | ACK).macs(mac, D0_MAC);
    let (v2, _, _) = run(prog, &syn_ack.build(), 1)?;
    let ack = Frame::tcp(client, (VIP, 80), ACK).macs(C1_MAC, D0_MAC);
    let (v3, _, _) = run(prog, &ack.build(), 1)?;
    Ok([v1, v2, v3])
}
