//! Forwarding: the next hop comes from the kernel's FIB. Out of the same
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
use lb_common::Reason;

use crate::{maps::TX_PORTS, parse::Packet, stats};

const AF_INET: u8 = 2;

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet) -> u32 {
    // SAFETY: the pointers were bounds-checked by `parse`.
    let (ip, ports) = unsafe { (&*pkt.ip, *pkt.ports) };
    // SAFETY: all-zero is a valid `bpf_fib_lookup`.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = ip.proto;
    p.sport = ports[0];
    p.dport = ports[1];
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.tot_len);
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_2.tos = ip.tos;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src_addr);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.dst_addr);
    // SAFETY: `p` is a valid, initialised lookup of the right size.
    let rc = unsafe { fib_lookup(ctx.as_ptr(), &mut p, size_of::<bpf_fib_lookup>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // SAFETY: bounds-checked by `parse`.
            let eth = unsafe { &mut *pkt.eth };
            eth.dst_addr = p.dmac;
            eth.src_addr = p.smac;
            if p.ifindex == ctx.ingress_ifindex() as u32 {
                stats::reason(Reason::TX);
                xdp_action::XDP_TX
            } else if let Ok(action) = TX_PORTS.redirect(p.ifindex, 0) {
                stats::reason(Reason::REDIRECT);
                action
            } else {
                stats::reason(Reason::PASS_FIB);
                xdp_action::XDP_PASS
            }
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
