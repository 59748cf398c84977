//! Forwarding, for both families: the next hop comes from the kernel's FIB. Out of the same
//! interface by XDP_TX, to another attached interface by redirect, and to
//! the kernel (already rewritten) when the neighbour is not resolved yet or
//! the route leaves through an interface the program does not own.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{conn6::Addr6, BackendHop, NextHop, Reason};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    flow::Cache,
    maps::{NEXT_HOPS, TX_PORTS},
    stats,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Fill the FIB lookup `p` (all zero) for an IPv4 packet (its addresses and `ports` as they are
/// after the rewrite), towards `to` when given (direct server return:
/// the backend, not the packet's VIP destination).
#[inline(always)]
pub fn fib4(p: &mut bpf_fib_lookup, ip: *const Ipv4Hdr, ports: [u16; 2], to: Option<u32>) {
    // SAFETY: the pointer was bounds-checked by `parse`.
    let ip = unsafe { &*ip };
    p.family = AF_INET;
    p.l4_protocol = ip.proto;
    p.sport = ports[0];
    p.dport = ports[1];
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.tot_len);
    p.__bindgen_anon_2.tos = ip.tos;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src_addr);
    p.__bindgen_anon_4.ipv4_dst = to.unwrap_or(u32::from_ne_bytes(ip.dst_addr));
}

/// Fill the FIB lookup `p` (all zero) for an IPv6 packet whose transport protocol is `proto`,
/// as [`fib4`].
#[inline(always)]
pub fn fib6(
    p: &mut bpf_fib_lookup,
    ip: *const Ipv6Hdr,
    proto: u8,
    ports: [u16; 2],
    to: Option<Addr6>,
) {
    // SAFETY: the pointer was bounds-checked by `parse`.
    let ip = unsafe { &*ip };
    p.family = AF_INET6;
    p.l4_protocol = proto;
    p.sport = ports[0];
    p.dport = ports[1];
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.payload_len) + Ipv6Hdr::LEN as u16;
    // The flow label (the traffic class is not part of the lookup).
    p.__bindgen_anon_2.flowinfo = u32::from_ne_bytes(ip.vcf) & u32::from_be(0x000f_ffff);
    p.__bindgen_anon_3.ipv6_src = words(ip.src_addr);
    p.__bindgen_anon_4.ipv6_dst = to.unwrap_or(words(ip.dst_addr));
}

/// An IPv6 address's bytes as [`Addr6`] words.
#[inline(always)]
pub fn words(a: [u8; 16]) -> Addr6 {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Send the (rewritten) packet on along the FIB lookup `fib` fills in
/// ([`fib4`], [`fib6`]: only on a cache miss; `dsr`: it is made
/// towards a direct-server-return backend).
/// The FIB result is cached where `cache` says: used while valid and
/// filled on a miss, so routes and neighbours are at most a second stale.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    cache: Cache,
    dsr: bool,
    fib: impl FnOnce(&mut bpf_fib_lookup),
) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    if !cache.conn.is_null() {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let nh = unsafe { *cache.conn };
        if nh.ifindex != 0 {
            return emit(eth, &nh, ingress);
        }
    } else if let Some(hop) = NEXT_HOPS.get(cache.slot) {
        if hop.serves(ingress, cache.gen, cache.now) {
            let nh = hop.next_hop;
            return emit(eth, &nh, ingress);
        }
    }
    // SAFETY: all-zero is a valid `bpf_fib_lookup`.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib(&mut p);
    p.ifindex = ingress;
    // SAFETY: `p` is a valid, initialised lookup of the right size.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut p, size_of::<bpf_fib_lookup>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let nh = NextHop {
                ifindex: p.ifindex,
                dmac: p.dmac,
                smac: p.smac,
            };
            if !cache.conn.is_null() {
                // SAFETY: as above.
                unsafe { *cache.conn = nh };
            } else if let Some(hop) = NEXT_HOPS.get_ptr_mut(cache.slot) {
                // SAFETY: a map value; two CPUs renewing one backend's hop
                // write the same lookup's result.
                unsafe {
                    *hop = BackendHop {
                        next_hop: nh,
                        ingress,
                        gen: cache.gen,
                        looked_up_ns: cache.now,
                    }
                };
            }
            emit(eth, &nh, ingress)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH if dsr => {
            stats::reason(Reason::DROP_DSR_NO_NEIGH);
            xdp_action::XDP_DROP
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            stats::reason(Reason::PASS_NO_NEIGH);
            xdp_action::XDP_PASS
        }
        _ => {
            stats::reason(Reason::PASS_FIB);
            xdp_action::XDP_PASS
        }
    }
}

/// Write the next hop's MAC addresses and send: XDP_TX out of the ingress
/// interface (`ingress`, read once: the verifier refuses a context
/// pointer the compiler kept at an offset), else a redirect to another attached interface, else (the
/// egress interface is not ours) to the kernel.
#[inline(always)]
fn emit(eth: *mut EthHdr, nh: &NextHop, ingress: u32) -> u32 {
    // SAFETY: bounds-checked by `parse`.
    let eth = unsafe { &mut *eth };
    eth.dst_addr = nh.dmac;
    eth.src_addr = nh.smac;
    if nh.ifindex == ingress {
        stats::reason(Reason::TX);
        xdp_action::XDP_TX
    } else if let Ok(action) = TX_PORTS.redirect(nh.ifindex, 0) {
        stats::reason(Reason::REDIRECT);
        action
    } else {
        stats::reason(Reason::PASS_FIB);
        xdp_action::XDP_PASS
    }
}
